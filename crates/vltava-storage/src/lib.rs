//! Vltava's storage engine: one segmented, indexed log per partition, in Kafka's on-disk layout.
//!
//! ```text
//! <data dir>/<topic>-<partition>/00000000000000000000.log        record batches as received
//!                                00000000000000000000.index      sparse offset -> position
//!                                00000000000000000000.timeindex  sparse timestamp -> offset
//!                                00000000000000000000.txnindex   aborted transactions ended here
//!                                00000000000000000100.snapshot   producer state at offset 100
//!                                leader-epoch-checkpoint         first offset of each leader epoch
//! <data dir>/recovery-point-offset-checkpoint, log-start-offset-checkpoint,
//!            cleaner-offset-checkpoint
//! ```
//!
//! Storage knows nothing of the network or of request types. Time is passed in as `now_ms`,
//! so every decision (roll, retention) is testable without a clock, and every file operation
//! goes through [`fs::Fs`], so a test can run the same code over `sim::SimFs` (with the
//! `sim` feature outside this crate) and cut the power at any point.

pub mod checkpoint;
pub mod cleaner;
pub mod epoch;
pub mod fs;
pub mod index;
mod log;
pub mod producer_state;
mod segment;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
#[cfg(target_os = "linux")]
mod sys;

use std::path::{Path, PathBuf};

pub use cleaner::{CleanRequest, CleanStats, Cleanable, Transactions};
pub use epoch::{EpochEntry, LeaderEpochCache, UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};
pub use fs::{BodySource, Fs, FsFile, OpenMode, StdFs};
pub use log::{
    accept_all, AppendInfo, FileRegion, Log, LogConfig, LogOffsets, OpenOptions, ProducerInfo,
    ReadResult, RegionRead, TxnGuard,
};
use thiserror::Error;
pub use vltava_record::RecordError;

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("log {dir} failed a write or fsync earlier and accepts no more writes")]
    Poisoned { dir: PathBuf },
    #[error("offset {offset} is outside [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error("corrupt batch in {path} at byte {position}: {source}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        #[source]
        source: RecordError,
    },
    #[error("bad checkpoint file {path}: {reason}")]
    BadCheckpoint { path: PathBuf, reason: &'static str },
    #[error("follower batch at offset {actual} does not start at the log end offset {expected}")]
    UnexpectedAppendOffset { expected: i64, actual: i64 },
    #[error("offset {offset} is inside the batch {batch_base_offset}..={batch_last_offset}, not at its start")]
    NotBatchBoundary {
        offset: i64,
        batch_base_offset: i64,
        batch_last_offset: i64,
    },
    /// The batch breaks the producer's sequence, epoch or transaction rules.
    #[error(transparent)]
    Producer(#[from] producer_state::ProducerError),
}

pub(crate) fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> StorageError {
    StorageError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Makes a directory's entries (files created, renamed or removed in it) durable: an fsync of
/// a file covers its bytes but not the name that reaches it.
pub fn sync_dir(path: &Path) -> Result<(), StorageError> {
    sync_dir_in(&StdFs, path)
}

/// [`sync_dir`] on the file system `fs`.
pub fn sync_dir_in(fs: &dyn Fs, path: &Path) -> Result<(), StorageError> {
    fs.sync_dir(path).map_err(|e| io_err("fsync dir", path, e))
}

/// Kafka's partition directory name.
pub fn partition_dir_name(topic: &str, partition: i32) -> String {
    format!("{topic}-{partition}")
}

#[cfg(test)]
mod power_loss;
#[cfg(test)]
mod tests;
