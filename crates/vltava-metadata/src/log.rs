//! The durable metadata log: one record per line, `<crc32c hex> <json>\n`, fsynced per append.
//! A torn last line (a crash mid-write) is cut on open; a bad line with good lines after it is
//! corruption of acknowledged records and stops the open instead.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{MetadataError, MetadataImage, MetadataRecord};

pub struct MetadataLog {
    path: PathBuf,
    file: File,
    /// Set after a failed write or fsync: what reached the disk is unknown, so nothing more
    /// is appended after it.
    poisoned: bool,
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

/// How many complete lines in `bytes` are valid records on their own (used to tell a torn
/// tail from corruption in the middle).
fn parse_all_lines(bytes: &[u8]) -> usize {
    bytes
        .split(|b| *b == b'\n')
        .skip(1) // the bad line itself
        .filter(|line| {
            let mut l = line.to_vec();
            l.push(b'\n');
            !parse(&l).0.is_empty()
        })
        .count()
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
        // Whole lines that still parse after the bad one were acknowledged after it: only a
        // torn write at the very end may be cut.
        let later_records = parse_all_lines(&bytes[valid..]);
        if later_records > 0 {
            return Err(MetadataError::Corrupt {
                path: path.to_path_buf(),
                position: valid,
                later_records,
            });
        }
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
                poisoned: false,
            },
            image,
        ))
    }

    /// Appends records durably: one write, one fsync. A failure poisons the log.
    pub fn append(&mut self, records: &[MetadataRecord]) -> Result<(), MetadataError> {
        if self.poisoned {
            return Err(MetadataError::Poisoned {
                path: self.path.clone(),
            });
        }
        let mut buf = Vec::new();
        for r in records {
            let body = serde_json::to_vec(r)?;
            buf.extend_from_slice(format!("{:08x} ", crc32c::crc32c(&body)).as_bytes());
            buf.extend_from_slice(&body);
            buf.push(b'\n');
        }
        let written = self
            .file
            .write_all(&buf)
            .map_err(io("write", &self.path))
            .and_then(|()| self.file.sync_data().map_err(io("fsync", &self.path)));
        if written.is_err() {
            self.poisoned = true;
            tracing::error!(path = %self.path.display(), "metadata log write failed; it accepts no more records");
        }
        written
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Makes the next append fail as a failed write would (tests of the poisoning).
    #[doc(hidden)]
    pub fn poison_for_test(&mut self) {
        self.poisoned = true;
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
        let (mut log, _) = MetadataLog::open(&path).unwrap();
        let id = Uuid::new_v4();
        log.append(&[MetadataRecord::TopicRecord {
            name: "a".into(),
            topic_id: id,
        }])
        .unwrap();
        drop(log);
        let (_, img) = MetadataLog::open(&path).unwrap();
        assert!(img.topic("a").is_some());
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"deadbeef {\"type\":\"Topic").unwrap();
        drop(f);
        let (mut log, img2) = MetadataLog::open(&path).unwrap();
        assert_eq!(img, img2);
        log.append(&[MetadataRecord::RemoveTopicRecord { topic_id: id }])
            .unwrap();
        let (_, img3) = MetadataLog::open(&path).unwrap();
        assert!(img3.topics.is_empty());
    }

    #[test]
    fn a_bad_line_before_good_ones_stops_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.log");
        let (mut log, _) = MetadataLog::open(&path).unwrap();
        for i in 0..3 {
            log.append(&[MetadataRecord::TopicRecord {
                name: format!("t{i}"),
                topic_id: Uuid::from_u128(i),
            }])
            .unwrap();
        }
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        // Flip a byte inside the first record's JSON.
        bytes[12] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        match MetadataLog::open(&path) {
            Err(MetadataError::Corrupt { later_records, .. }) => assert_eq!(later_records, 2),
            other => panic!("expected Corrupt, got {:?}", other.map(|(_, i)| i)),
        }
        // Nothing was cut.
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_poisoned_log_refuses_appends() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = MetadataLog::open(&dir.path().join("metadata.log")).unwrap();
        log.poison_for_test();
        assert!(matches!(
            log.append(&[MetadataRecord::RemoveTopicRecord {
                topic_id: Uuid::nil()
            }]),
            Err(MetadataError::Poisoned { .. })
        ));
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
