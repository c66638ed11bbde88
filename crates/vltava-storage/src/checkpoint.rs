//! Kafka's offset checkpoint files (`recovery-point-offset-checkpoint`,
//! `log-start-offset-checkpoint`): a version line `0`, a count line, then
//! `topic partition offset` lines. Written atomically via a temp file and rename.

use std::collections::BTreeMap;
use std::path::Path;

use crate::fs::{Fs, OpenMode, StdFs};
use crate::{io_err, StorageError};

pub type Checkpoint = BTreeMap<(String, i32), i64>;

/// Reads a checkpoint from the real file system; a missing file is an empty checkpoint.
pub fn read(path: &Path) -> Result<Checkpoint, StorageError> {
    read_with(&StdFs, path)
}

/// [`read()`] on the file system `fs`.
pub fn read_with(fs: &dyn Fs, path: &Path) -> Result<Checkpoint, StorageError> {
    let bad = |reason| StorageError::BadCheckpoint {
        path: path.to_path_buf(),
        reason,
    };
    let text = match fs.read(path) {
        Ok(t) => String::from_utf8(t).map_err(|_| bad("not UTF-8"))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Checkpoint::new()),
        Err(e) => return Err(io_err("read", path, e)),
    };
    parse(&text).map_err(bad)
}

/// The entry lines of a Kafka checkpoint file (a version line `0`, a count line, then that
/// many entries), shared by the offset checkpoints and the leader-epoch checkpoint.
pub(crate) fn entry_lines(text: &str) -> Result<Vec<&str>, &'static str> {
    let mut lines = text.lines();
    if lines.next() != Some("0") {
        return Err("unknown version");
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or("bad count")?;
    let entries: Vec<&str> = lines.take(count).collect();
    if entries.len() != count {
        return Err("fewer entries than the count says");
    }
    Ok(entries)
}

pub fn parse(text: &str) -> Result<Checkpoint, &'static str> {
    let lines = entry_lines(text)?;
    let count = lines.len();
    let mut out = Checkpoint::new();
    for line in lines {
        let mut parts = line.rsplitn(3, ' ');
        let offset = parts
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or("bad offset")?;
        let partition = parts
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or("bad partition")?;
        let topic = parts.next().ok_or("missing topic")?;
        out.insert((topic.to_string(), partition), offset);
    }
    if out.len() != count {
        return Err("fewer entries than the count says");
    }
    Ok(out)
}

/// Replaces the checkpoint at `path` on the real file system, durably.
pub fn write(path: &Path, entries: &Checkpoint) -> Result<(), StorageError> {
    write_with(&StdFs, path, entries)
}

/// [`write()`] on the file system `fs`.
pub fn write_with(fs: &dyn Fs, path: &Path, entries: &Checkpoint) -> Result<(), StorageError> {
    let tmp = path.with_extension("tmp");
    let mut text = format!("0\n{}\n", entries.len());
    for ((topic, partition), offset) in entries {
        text.push_str(&format!("{topic} {partition} {offset}\n"));
    }
    replace_file(fs, &tmp, path, text.as_bytes())?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => crate::sync_dir_in(fs, dir),
        _ => crate::sync_dir_in(fs, Path::new(".")),
    }
}

/// Writes `bytes` to `tmp`, fsyncs it and renames it over `path`, so a crash leaves the old
/// file or the new one, never a mix. The caller syncs the directory to make the rename
/// durable.
pub(crate) fn replace_file(
    fs: &dyn Fs,
    tmp: &Path,
    path: &Path,
    bytes: &[u8],
) -> Result<(), StorageError> {
    let f = fs
        .open(tmp, OpenMode::Truncate)
        .map_err(|e| io_err("create", tmp, e))?;
    f.write_all_at(bytes, 0)
        .map_err(|e| io_err("write", tmp, e))?;
    f.sync_all().map_err(|e| io_err("fsync", tmp, e))?;
    fs.rename(tmp, path).map_err(|e| io_err("rename", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_garbage() {
        let mut c = Checkpoint::new();
        c.insert(("orders".into(), 0), 42);
        c.insert(("a-b".into(), 3), 7);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cp");
        write(&p, &c).unwrap();
        assert_eq!(read(&p).unwrap(), c);
        assert!(parse("1\n0\n").is_err());
        assert!(parse("0\n2\nt 0 1\n").is_err());
        assert!(parse("0\n1\nt x 1\n").is_err());
        assert_eq!(
            read(&dir.path().join("missing")).unwrap(),
            Checkpoint::new()
        );
    }
}
