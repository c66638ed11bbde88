//! The Raft log on disk: `raft.log` holds one entry per line, `<crc32c hex> <json>\n`,
//! fsynced before openraft is told an append is durable; `raft-state.json` holds the vote
//! (fsynced: a vote forgotten in a crash could elect two leaders in one term), the last
//! purged log id and the committed log id (not fsynced: it only saves re-applying entries
//! at start and is recomputed by the leader otherwise).
//!
//! A torn last line is cut on open; a bad line with good lines after it is corruption of
//! acknowledged entries and stops the open.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::type_config::alias::{LogIdOf, VoteOf};
use openraft::OptionalSend;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::{Entry, TypeConfig};

const LOG_FILE: &str = "raft.log";
const STATE_FILE: &str = "raft-state.json";

#[derive(Default, Serialize, Deserialize)]
struct State {
    vote: Option<VoteOf<TypeConfig>>,
    last_purged: Option<LogIdOf<TypeConfig>>,
    committed: Option<LogIdOf<TypeConfig>>,
}

struct Inner {
    dir: PathBuf,
    file: File,
    /// Entries in the file, with the byte offset where each one's line ends.
    entries: BTreeMap<u64, (Entry, u64)>,
    /// Where the entries start in the file (0 unless purged lines remain before them).
    len: u64,
    state: State,
    /// A failed write or fsync: what reached the disk is unknown, so nothing more is written.
    poisoned: bool,
}

/// The file-backed Raft log; clones share one log.
#[derive(Clone)]
pub struct LogStore(Arc<Mutex<Inner>>);

fn line(entry: &Entry) -> io::Result<Vec<u8>> {
    let json = serde_json::to_vec(entry).map_err(io::Error::other)?;
    let mut out = format!("{:08x} ", crc32c::crc32c(&json)).into_bytes();
    out.extend_from_slice(&json);
    out.push(b'\n');
    Ok(out)
}

fn parse_line(line: &[u8]) -> Option<Entry> {
    let sp = line.iter().position(|b| *b == b' ')?;
    let crc = u32::from_str_radix(std::str::from_utf8(&line[..sp]).ok()?, 16).ok()?;
    let body = &line[sp + 1..];
    (crc32c::crc32c(body) == crc)
        .then(|| serde_json::from_slice(body).ok())
        .flatten()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `dir/name` atomically: a temporary file, fsynced, renamed over it.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8], durable: bool) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    if durable {
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

impl LogStore {
    /// Opens (or creates) the log in `dir`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let state: State = match std::fs::read(dir.join(STATE_FILE)) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", dir.join(STATE_FILE).display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(e),
        };
        let path = dir.join(LOG_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut entries = BTreeMap::new();
        let mut pos = 0usize;
        while let Some(nl) = bytes[pos..].iter().position(|b| *b == b'\n') {
            let Some(entry) = parse_line(&bytes[pos..pos + nl]) else {
                break;
            };
            pos += nl + 1;
            entries.insert(entry.index(), (entry, pos as u64));
        }
        if pos < bytes.len() {
            let later = bytes[pos..]
                .split(|b| *b == b'\n')
                .skip(1)
                .filter(|l| parse_line(l).is_some())
                .count();
            if later > 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is corrupt at byte {pos}, before {later} later entries; refusing to drop them",
                        path.display()
                    ),
                ));
            }
            tracing::warn!(path = %path.display(), at = pos, "cutting a torn tail off the raft log");
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)?;
        file.set_len(pos as u64)?;
        file.sync_all()?;
        sync_dir(dir)?;
        // Entries at or below the purge point may linger after a crash mid-purge.
        if let Some(p) = &state.last_purged {
            entries = entries.split_off(&(p.index + 1));
        }
        Ok(Self(Arc::new(Mutex::new(Inner {
            dir: dir.to_path_buf(),
            file,
            entries,
            len: pos as u64,
            state,
            poisoned: false,
        }))))
    }

    /// The committed log id recorded before the last stop.
    pub fn committed(&self) -> Option<LogIdOf<TypeConfig>> {
        self.0.lock().state.committed
    }

    /// Whether the log holds nothing at all: a node that never joined a quorum.
    pub fn is_empty(&self) -> bool {
        let g = self.0.lock();
        g.entries.is_empty() && g.state.last_purged.is_none() && g.state.vote.is_none()
    }
}

impl Inner {
    fn check(&self) -> io::Result<()> {
        if self.poisoned {
            return Err(io::Error::other(
                "the raft log failed a write or fsync earlier and accepts no more",
            ));
        }
        Ok(())
    }

    fn save_state(&mut self, durable: bool) -> io::Result<()> {
        let bytes = serde_json::to_vec(&self.state).map_err(io::Error::other)?;
        write_atomic(&self.dir, STATE_FILE, &bytes, durable).inspect_err(|_| self.poisoned = true)
    }

    fn append(&mut self, entries: Vec<Entry>) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.check()?;
        let mut buf = Vec::new();
        let mut ends = Vec::with_capacity(entries.len());
        for e in &entries {
            buf.extend_from_slice(&line(e)?);
            ends.push(self.len + buf.len() as u64);
        }
        let result = self
            .file
            .write_all_at(&buf, self.len)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = result {
            self.poisoned = true;
            return Err(e);
        }
        self.len += buf.len() as u64;
        for (e, end) in entries.into_iter().zip(ends) {
            self.entries.insert(e.index(), (e, end));
        }
        Ok(())
    }

    fn truncate_after(&mut self, last: Option<u64>) -> io::Result<()> {
        self.check()?;
        let start = last.map_or(0, |i| i + 1);
        let removed = self.entries.split_off(&start);
        if removed.is_empty() {
            return Ok(());
        }
        let keep = self.entries.values().next_back().map_or_else(
            // Everything in the file went: keep only what precedes the first removed line.
            || {
                removed
                    .values()
                    .next()
                    .map_or(0, |(e, end)| end - line_len(e))
            },
            |(_, end)| *end,
        );
        let result = self.file.set_len(keep).and_then(|()| self.file.sync_all());
        if let Err(e) = result {
            self.poisoned = true;
            return Err(e);
        }
        self.len = keep;
        Ok(())
    }

    fn purge(&mut self, upto: LogIdOf<TypeConfig>) -> io::Result<()> {
        self.check()?;
        self.entries = self.entries.split_off(&(upto.index + 1));
        self.state.last_purged = Some(upto);
        // The purge point is durable before the file shrinks, so a crash in between only
        // leaves lines that opening skips.
        self.save_state(true)?;
        let mut buf = Vec::new();
        let mut rebuilt = BTreeMap::new();
        for (idx, (e, _)) in std::mem::take(&mut self.entries) {
            buf.extend_from_slice(&line(&e)?);
            rebuilt.insert(idx, (e, buf.len() as u64));
        }
        write_atomic(&self.dir, LOG_FILE, &buf, true).inspect_err(|_| self.poisoned = true)?;
        self.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join(LOG_FILE))
            .inspect_err(|_| self.poisoned = true)?;
        self.entries = rebuilt;
        self.len = buf.len() as u64;
        Ok(())
    }
}

fn line_len(e: &Entry) -> u64 {
    line(e).map_or(0, |l| l.len() as u64)
}

/// Runs blocking file work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self
            .0
            .lock()
            .entries
            .range(range)
            .map(|(_, (e, _))| e.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<TypeConfig>>, io::Error> {
        Ok(self.0.lock().state.vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let g = self.0.lock();
        let last = g
            .entries
            .values()
            .next_back()
            .map(|(e, _)| e.log_id())
            .or_else(|| g.state.last_purged);
        Ok(LogState {
            last_purged_log_id: g.state.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<TypeConfig>) -> Result<(), io::Error> {
        let me = self.clone();
        let vote = *vote;
        blocking(move || {
            let mut g = me.0.lock();
            g.check()?;
            g.state.vote = Some(vote);
            g.save_state(true)
        })
        .await
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogIdOf<TypeConfig>>,
    ) -> Result<(), io::Error> {
        let me = self.clone();
        blocking(move || {
            let mut g = me.0.lock();
            g.check()?;
            g.state.committed = committed;
            g.save_state(false)
        })
        .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<TypeConfig>>, io::Error> {
        Ok(self.0.lock().state.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let me = self.clone();
        let result = blocking(move || me.0.lock().append(entries)).await;
        match result {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate_after(
        &mut self,
        last_log_id: Option<LogIdOf<TypeConfig>>,
    ) -> Result<(), io::Error> {
        let me = self.clone();
        blocking(move || me.0.lock().truncate_after(last_log_id.map(|l| l.index))).await
    }

    async fn purge(&mut self, log_id: LogIdOf<TypeConfig>) -> Result<(), io::Error> {
        let me = self.clone();
        blocking(move || me.0.lock().purge(log_id)).await
    }
}
