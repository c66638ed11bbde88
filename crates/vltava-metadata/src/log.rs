//! The durable metadata log: one record per line, `<crc32c hex> <json>\n`, fsynced per append.
//! A torn or corrupt tail (a crash mid-write) is cut at the first bad line on open.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{MetadataError, MetadataImage, MetadataRecord};

pub struct MetadataLog {
    path: PathBuf,
    file: File,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> MetadataError + 'a {
    move |source| MetadataError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Parses the valid prefix of a metadata log; returns the records and its byte length.
pub fn parse(bytes: &[u8]) -> (Vec<MetadataRecord>, usize) {
    let mut records = Vec::new();
    let mut pos = 0;
    while let Some(nl) = bytes[pos..].iter().position(|b| *b == b'\n') {
        let line = &bytes[pos..pos + nl];
        let Some(sp) = line.iter().position(|b| *b == b' ') else {
            break;
        };
        let Some(crc) = std::str::from_utf8(&line[..sp])
            .ok()
            .and_then(|s| u32::from_str_radix(s, 16).ok())
        else {
            break;
        };
        let body = &line[sp + 1..];
        if crc32c::crc32c(body) != crc {
            break;
        }
        let Ok(record) = serde_json::from_slice(body) else {
            break;
        };
        records.push(record);
        pos += nl + 1;
    }
    (records, pos)
}

impl MetadataLog {
    /// Opens (or creates) the log and replays it into an image.
    pub fn open(path: &Path) -> Result<(Self, MetadataImage), MetadataError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io("create dir", parent))?;
        }
        let created = !path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io("open", path))?;
        if created {
            // Appends fsync the file; the directory entry that names it needs its own fsync.
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(io("fsync dir", parent))?;
            }
        }
        let bytes = std::fs::read(path).map_err(io("read", path))?;
        let (records, valid) = parse(&bytes);
        if valid < bytes.len() {
            tracing::warn!(path = %path.display(), valid, total = bytes.len(), "truncating torn metadata log tail");
            file.set_len(valid as u64).map_err(io("truncate", path))?;
            file.sync_all().map_err(io("fsync", path))?;
        }
        let mut image = MetadataImage::default();
        for r in &records {
            image.apply(r);
        }
        Ok((
            Self {
                path: path.to_path_buf(),
                file,
            },
            image,
        ))
    }

    /// Appends records durably (one write, one fsync) and applies them to `image`.
    pub fn append(
        &mut self,
        records: &[MetadataRecord],
        image: &mut MetadataImage,
    ) -> Result<(), MetadataError> {
        let mut buf = Vec::new();
        for r in records {
            let body = serde_json::to_vec(r)?;
            buf.extend_from_slice(format!("{:08x} ", crc32c::crc32c(&body)).as_bytes());
            buf.extend_from_slice(&body);
            buf.push(b'\n');
        }
        self.file.write_all(&buf).map_err(io("write", &self.path))?;
        self.file.sync_data().map_err(io("fsync", &self.path))?;
        for r in records {
            image.apply(r);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn replays_and_cuts_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta/metadata.log");
        let (mut log, mut img) = MetadataLog::open(&path).unwrap();
        let id = Uuid::new_v4();
        log.append(
            &[MetadataRecord::TopicRecord {
                name: "a".into(),
                topic_id: id,
            }],
            &mut img,
        )
        .unwrap();
        drop(log);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"deadbeef {\"type\":\"Topic").unwrap();
        drop(f);
        let (mut log, mut img2) = MetadataLog::open(&path).unwrap();
        assert_eq!(img, img2);
        log.append(
            &[MetadataRecord::RemoveTopicRecord { topic_id: id }],
            &mut img2,
        )
        .unwrap();
        let (_, img3) = MetadataLog::open(&path).unwrap();
        assert!(img3.topics.is_empty());
    }

    #[test]
    fn garbage_never_panics() {
        for bytes in [
            &b"\n\n"[..],
            b"zz {}\n",
            b"00000000 \n",
            b" x\n",
            &[0xff, b' ', b'\n'],
        ] {
            let (r, _) = parse(bytes);
            assert!(r.is_empty());
        }
    }
}
