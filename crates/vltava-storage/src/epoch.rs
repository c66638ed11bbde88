//! The leader-epoch cache: for each leader epoch, the first offset written in it.
//!
//! A follower asks the leader where its last epoch ended (OffsetForLeaderEpoch) and truncates
//! anything past that before fetching, so divergent tails left by a failed leader are removed.
//! Persisted per partition directory in Kafka's `leader-epoch-checkpoint` format: a version
//! line `0`, a count line, then `<epoch> <start_offset>` lines, in increasing order.

use std::path::Path;

use crate::fs::Fs;
use crate::{io_err, StorageError};

/// File name inside the partition directory, as Kafka names it.
pub const LEADER_EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";
/// Kafka's `UNDEFINED_EPOCH`: no epoch is known.
pub const UNDEFINED_EPOCH: i32 = -1;
/// Kafka's `UNDEFINED_EPOCH_OFFSET`: no end offset is known.
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// The start of one leader epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// Epoch entries, strictly increasing in both epoch and start offset.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset`. Entries that would break monotonicity
    /// (same or newer epoch, or same or later start) are dropped first, as Kafka does: they
    /// describe a history this log no longer has. Returns whether the cache changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        assert!(
            epoch >= 0 && start_offset >= 0,
            "invalid epoch entry {epoch} at {start_offset}"
        );
        if let Some(last) = self.entries.last() {
            if last.epoch == epoch && start_offset >= last.start_offset {
                return false;
            }
        }
        while self
            .entries
            .last()
            .is_some_and(|e| e.epoch >= epoch || e.start_offset >= start_offset)
        {
            let gone = self.entries.pop().expect("checked");
            if gone.start_offset != start_offset {
                tracing::warn!(
                    epoch,
                    start_offset,
                    dropped_epoch = gone.epoch,
                    dropped_start_offset = gone.start_offset,
                    "new leader epoch entry drops a conflicting one"
                );
            }
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// OffsetForLeaderEpoch, with Kafka's answers: `(epoch, end_offset)` where `epoch` is the
    /// largest known epoch `<= requested` and `end_offset` is the start of the next higher
    /// epoch, or `log_end_offset` for the latest epoch. A requested epoch newer than every
    /// known one (or `UNDEFINED_EPOCH`, or an empty cache) gets `(UNDEFINED_EPOCH,
    /// UNDEFINED_EPOCH_OFFSET)`. One older than the first known epoch gets the requested epoch
    /// and the first epoch's start offset: that history was deleted, and the follower should
    /// replicate from the leader's start.
    pub fn end_offset_for(&self, requested_epoch: i32, log_end_offset: i64) -> (i32, i64) {
        const UNDEFINED: (i32, i64) = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        if requested_epoch == UNDEFINED_EPOCH {
            return UNDEFINED;
        }
        if self.latest_epoch() == Some(requested_epoch) {
            return (requested_epoch, log_end_offset);
        }
        let higher = self.entries.partition_point(|e| e.epoch <= requested_epoch);
        let Some(next) = self.entries.get(higher) else {
            return UNDEFINED;
        };
        match higher.checked_sub(1).map(|i| self.entries[i]) {
            Some(floor) => (floor.epoch, next.start_offset),
            None => (requested_epoch, next.start_offset),
        }
    }

    /// Drops entries starting at or after `end_offset` (the log was truncated there).
    /// Returns whether the cache changed.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let keep = self
            .entries
            .partition_point(|e| e.start_offset < end_offset);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// The log now starts at `start_offset`: the epoch in force there starts there, and older
    /// entries go. Returns whether the cache changed.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let below = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        if below == 0 {
            return false;
        }
        let epoch = self.entries[below - 1].epoch;
        let changed = below > 1 || self.entries[0].start_offset != start_offset;
        self.entries.drain(..below - 1);
        self.entries[0] = EpochEntry {
            epoch,
            start_offset,
        };
        changed
    }

    pub fn encode(&self) -> String {
        let mut text = format!("0\n{}\n", self.entries.len());
        for e in &self.entries {
            text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        text
    }

    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let mut cache = Self::default();
        for line in crate::checkpoint::entry_lines(text)? {
            let mut parts = line.split(' ');
            let epoch: i32 = parts
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or("bad epoch")?;
            let start_offset: i64 = parts
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or("bad start offset")?;
            if parts.next().is_some() {
                return Err("extra field");
            }
            if epoch < 0 || start_offset < 0 {
                return Err("negative epoch or offset");
            }
            if cache
                .entries
                .last()
                .is_some_and(|l| l.epoch >= epoch || l.start_offset >= start_offset)
            {
                return Err("entries not increasing");
            }
            cache.entries.push(EpochEntry {
                epoch,
                start_offset,
            });
        }
        Ok(cache)
    }

    /// Reads `dir`'s checkpoint; a missing file is an empty cache (a new or pre-epoch log).
    pub fn read(fs: &dyn Fs, dir: &Path) -> Result<Self, StorageError> {
        let path = dir.join(LEADER_EPOCH_CHECKPOINT);
        let text = match fs.read(&path) {
            Ok(t) => String::from_utf8(t).map_err(|_| StorageError::BadCheckpoint {
                path: path.clone(),
                reason: "not UTF-8",
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(io_err("read", &path, e)),
        };
        Self::parse(&text).map_err(|reason| StorageError::BadCheckpoint { path, reason })
    }

    /// Replaces `dir`'s checkpoint atomically: a crash leaves the old file or the new one,
    /// never a mix, and the rename itself is made durable.
    pub fn write(&self, fs: &dyn Fs, dir: &Path) -> Result<(), StorageError> {
        let path = dir.join(LEADER_EPOCH_CHECKPOINT);
        let tmp = dir.join(format!("{LEADER_EPOCH_CHECKPOINT}.tmp"));
        crate::checkpoint::replace_file(fs, &tmp, &path, self.encode().as_bytes())?;
        crate::sync_dir_in(fs, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::default();
        for &(e, s) in entries {
            assert!(c.assign(e, s));
        }
        c
    }

    #[test]
    fn end_offsets_for_past_current_and_unknown_epochs() {
        // Epochs 1 and 3 wrote data; 2 and 4 never did.
        let c = cache(&[(1, 0), (3, 10), (5, 20)]);
        let leo = 30;
        // The latest epoch ends at the log end.
        assert_eq!(c.end_offset_for(5, leo), (5, 30));
        // A past epoch ends where the next one starts.
        assert_eq!(c.end_offset_for(1, leo), (1, 10));
        assert_eq!(c.end_offset_for(3, leo), (3, 20));
        // An epoch with no entry answers the largest epoch below it.
        assert_eq!(c.end_offset_for(2, leo), (1, 10));
        assert_eq!(c.end_offset_for(4, leo), (3, 20));
        // Newer than any known epoch, or undefined: nothing is known.
        assert_eq!(c.end_offset_for(6, leo), (-1, -1));
        assert_eq!(c.end_offset_for(UNDEFINED_EPOCH, leo), (-1, -1));
        // Older than the first: Kafka answers the requested epoch and the first start offset.
        assert_eq!(c.end_offset_for(0, leo), (0, 0));
        let trimmed = cache(&[(3, 10), (5, 20)]);
        assert_eq!(trimmed.end_offset_for(1, leo), (1, 10));
        // Nothing known at all.
        assert_eq!(LeaderEpochCache::default().end_offset_for(0, 5), (-1, -1));
    }

    #[test]
    fn assign_keeps_entries_monotonic() {
        let mut c = cache(&[(0, 0), (1, 5)]);
        assert!(
            !c.assign(1, 7),
            "same epoch at a later offset changes nothing"
        );
        assert!(c.assign(1, 3), "same epoch earlier moves its start");
        assert_eq!(c.entries(), &cache(&[(0, 0), (1, 3)]).entries);
        assert!(
            c.assign(2, 3),
            "a new epoch at the same offset replaces the empty one"
        );
        assert_eq!(c.entries(), &cache(&[(0, 0), (2, 3)]).entries);
    }

    #[test]
    fn truncation_from_both_ends() {
        let mut c = cache(&[(0, 0), (1, 5), (2, 9)]);
        assert!(!c.truncate_from_end(10));
        assert!(c.truncate_from_end(9));
        assert_eq!(c.latest_epoch(), Some(1));
        assert!(c.truncate_from_start(6));
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: 1,
                start_offset: 6
            }]
        );
        assert!(!c.truncate_from_start(6));
        assert!(!c.truncate_from_start(2));
    }

    #[test]
    fn checkpoint_round_trips_and_rejects_garbage() {
        let c = cache(&[(0, 0), (2, 7), (5, 100)]);
        assert_eq!(c.encode(), "0\n3\n0 0\n2 7\n5 100\n");
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            LeaderEpochCache::read(&crate::StdFs, dir.path()).unwrap(),
            LeaderEpochCache::default()
        );
        c.write(&crate::StdFs, dir.path()).unwrap();
        assert_eq!(
            LeaderEpochCache::read(&crate::StdFs, dir.path()).unwrap(),
            c
        );
        for bad in [
            "1\n0\n",
            "0\n2\n0 0\n",
            "0\n1\n0\n",
            "0\n2\n3 0\n2 5\n",
            "0\n1\n-1 0\n",
        ] {
            assert!(LeaderEpochCache::parse(bad).is_err(), "{bad:?}");
        }
    }
}
