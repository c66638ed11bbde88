use std::fs::OpenOptions as FsOpen;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use vltava_record::{build_batch, validate, BatchHeader, Batches};

use crate::sim::{Fault, SimFs};
use crate::*;
use vltava_record::TransactionResult;
use vltava_types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId};

/// Plain leader appends with no producer-state checks, as most tests want.
trait AppendExt {
    fn append(
        &self,
        batches: &mut [u8],
        epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError>;
}

impl AppendExt for Log {
    fn append(
        &self,
        batches: &mut [u8],
        epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        self.append_as_leader(batches, LeaderEpoch::new(epoch), now_ms, accept_all)
    }
}

fn batch(n: usize, ts: i64, payload: usize) -> Vec<u8> {
    let value = vec![b'x'; payload];
    let recs: Vec<_> = (0..n)
        .map(|i| (None, Some(value.as_slice()), ts + i as i64))
        .collect();
    build_batch(0, &recs)
}

fn open(dir: &std::path::Path, cfg: LogConfig, clean: bool) -> Log {
    Log::open(
        dir,
        cfg,
        OpenOptions {
            clean_shutdown: clean,
            recovery_point: Offset::new(0),
            log_start_offset: Offset::new(0),
        },
        0,
    )
    .unwrap()
}

fn read_all(log: &Log) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut offset = log.offsets().log_start_offset;
    loop {
        let r = log
            .read(offset, Offset::new(i64::MAX), 1 << 20, true)
            .unwrap();
        if r.records.is_empty() {
            return out;
        }
        for item in Batches::new(&r.records) {
            let (h, _) = item.unwrap();
            out.push((h.base_offset, h.last_offset()));
            offset = Offset::new(h.next_offset());
        }
    }
}

#[test]
fn append_assigns_offsets_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default(), true);
    for i in 0..10 {
        let mut b = batch(3, i, 10);
        let info = log.append(&mut b, 0, 0).unwrap();
        assert_eq!(info.base_offset, Offset::new(i * 3));
        assert_eq!(info.last_offset, Offset::new(i * 3 + 2));
    }
    assert_eq!(log.offsets().log_end_offset, Offset::new(30));
    let r = log
        .read(Offset::new(4), Offset::new(i64::MAX), 1 << 20, true)
        .unwrap();
    let first = BatchHeader::parse(&r.records).unwrap();
    assert_eq!(
        first.base_offset, 3,
        "read starts at the batch containing the offset"
    );
    validate(&r.records, usize::MAX).unwrap();
    assert_eq!(read_all(&log).len(), 10);
    assert!(log
        .read(Offset::new(30), Offset::new(i64::MAX), 100, true)
        .unwrap()
        .records
        .is_empty());
    assert!(matches!(
        log.read(Offset::new(31), Offset::new(i64::MAX), 100, true),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn max_bytes_returns_whole_batches_and_at_least_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default(), true);
    for _ in 0..5 {
        log.append(&mut batch(1, 0, 1000), 0, 0).unwrap();
    }
    let r = log
        .read(Offset::new(0), Offset::new(i64::MAX), 2500, true)
        .unwrap();
    assert_eq!(Batches::new(&r.records).count(), 2);
    let r = log
        .read(Offset::new(0), Offset::new(i64::MAX), 10, true)
        .unwrap();
    assert_eq!(
        Batches::new(&r.records).count(),
        1,
        "KIP-74: first batch even if over max_bytes"
    );
    let r = log
        .read(Offset::new(0), Offset::new(i64::MAX), 10, false)
        .unwrap();
    assert!(r.records.is_empty());
}

#[test]
fn rolls_by_size_and_time_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 3000,
        segment_ms: 1000,
        ..LogConfig::default()
    };
    let log = open(dir.path(), cfg.clone(), true);
    for _ in 0..10 {
        log.append(&mut batch(1, 0, 1000), 0, 0).unwrap();
    }
    assert_eq!(log.segment_count(), 5);
    log.append(&mut batch(1, 0, 10), 0, 5000).unwrap();
    assert_eq!(log.segment_count(), 6, "segment.ms rolls an old segment");
    log.close().unwrap();
    drop(log);
    let log = open(dir.path(), cfg, true);
    assert_eq!(log.offsets().log_end_offset, Offset::new(11));
    assert_eq!(read_all(&log).len(), 11);
}

#[test]
fn torn_tail_is_truncated_on_unclean_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default(), true);
    for _ in 0..5 {
        log.append(&mut batch(2, 0, 100), 0, 0).unwrap();
    }
    drop(log);
    let seg = dir.path().join("00000000000000000000.log");
    let good_len = std::fs::metadata(&seg).unwrap().len();
    // Half a batch, as a crash in the middle of a write leaves it.
    let half = &batch(2, 0, 100)[..70];
    FsOpen::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(half)
        .unwrap();
    let log = open(dir.path(), LogConfig::default(), false);
    assert_eq!(log.offsets().log_end_offset, Offset::new(10));
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), good_len);
    let info = log.append(&mut batch(1, 0, 5), 0, 0).unwrap();
    assert_eq!(info.base_offset, Offset::new(10));
    assert_eq!(read_all(&log).len(), 6);
}

#[test]
fn corrupt_batch_truncates_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default(), true);
    let mut positions = Vec::new();
    for _ in 0..4 {
        positions.push(log.size_bytes());
        log.append(&mut batch(1, 0, 50), 0, 0).unwrap();
    }
    drop(log);
    let seg = dir.path().join("00000000000000000000.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[positions[2] as usize + 70] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let log = open(dir.path(), LogConfig::default(), false);
    assert_eq!(log.offsets().log_end_offset, Offset::new(2));
}

/// Removes or damages index files after a clean close, reopens, and checks that lookups are
/// right and that the offset index was written again.
fn reopen_after(damage: impl Fn(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        index_interval_bytes: 100,
        ..LogConfig::default()
    };
    let log = open(dir.path(), cfg.clone(), true);
    for i in 0..50 {
        log.append(&mut batch(1, i, 100), 0, 0).unwrap();
    }
    log.close().unwrap();
    drop(log);
    damage(dir.path());
    let log = open(dir.path(), cfg, true);
    assert_eq!(log.offsets().log_end_offset, Offset::new(50));
    let r = log
        .read(Offset::new(37), Offset::new(i64::MAX), 1, true)
        .unwrap();
    assert_eq!(BatchHeader::parse(&r.records).unwrap().base_offset, 37);
    assert_eq!(
        log.offset_for_timestamp(20).unwrap(),
        Some((Offset::new(20), 20))
    );
    log.close().unwrap();
    let idx = std::fs::read(dir.path().join("00000000000000000000.index")).unwrap();
    assert!(
        idx.len() >= 8 * 10,
        "offset index rewritten: {} bytes",
        idx.len()
    );
    let tidx = std::fs::read(dir.path().join("00000000000000000000.timeindex")).unwrap();
    assert!(
        tidx.len() >= 12 * 10,
        "time index rewritten: {} bytes",
        tidx.len()
    );
}

#[test]
fn missing_offset_index_is_rebuilt() {
    reopen_after(|d| std::fs::remove_file(d.join("00000000000000000000.index")).unwrap());
}

#[test]
fn missing_time_index_is_rebuilt() {
    reopen_after(|d| std::fs::remove_file(d.join("00000000000000000000.timeindex")).unwrap());
}

#[test]
fn garbage_indexes_are_rebuilt() {
    reopen_after(|d| {
        std::fs::remove_file(d.join("00000000000000000000.index")).unwrap();
        std::fs::write(d.join("00000000000000000000.timeindex"), b"garbage").unwrap();
    });
}

#[test]
fn timestamps_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        index_interval_bytes: 1,
        segment_bytes: 2000,
        ..LogConfig::default()
    };
    let log = open(dir.path(), cfg, true);
    for i in 0..20 {
        log.append(&mut batch(1, 1000 + i * 10, 200), 0, 0).unwrap();
    }
    assert_eq!(
        log.offset_for_timestamp(0).unwrap(),
        Some((Offset::new(0), 1000))
    );
    assert_eq!(
        log.offset_for_timestamp(1055).unwrap(),
        Some((Offset::new(6), 1060))
    );
    assert_eq!(
        log.offset_for_timestamp(1190).unwrap(),
        Some((Offset::new(19), 1190))
    );
    assert_eq!(log.offset_for_timestamp(5000).unwrap(), None);
    assert_eq!(log.max_timestamp(), Some((Offset::new(19), 1190)));

    // Inside a batch the answer is the first record at or after the target, not the batch.
    log.append(&mut batch(5, 2000, 10), 0, 0).unwrap(); // offsets 20..25, ts 2000..2004
    assert_eq!(
        log.offset_for_timestamp(2000).unwrap(),
        Some((Offset::new(20), 2000))
    );
    assert_eq!(
        log.offset_for_timestamp(2003).unwrap(),
        Some((Offset::new(23), 2003))
    );
    assert_eq!(
        log.offset_for_timestamp(1500).unwrap(),
        Some((Offset::new(20), 2000))
    );
    assert_eq!(log.offset_for_timestamp(2005).unwrap(), None);
}

#[test]
fn retention_by_time_and_size_and_delete_records() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 2500,
        retention_ms: 1000,
        retention_bytes: -1,
        ..LogConfig::default()
    };
    let log = open(dir.path(), cfg.clone(), true);
    for i in 0..10 {
        log.append(&mut batch(1, i * 100, 1000), 0, 0).unwrap();
    }
    let segs = log.segment_count();
    assert_eq!(segs, 5);
    // Segment max timestamps are 100, 300, 500, ...; at now=1450 those <450 are expired.
    let deleted = log.enforce_retention(1450).unwrap();
    assert_eq!(deleted, 2);
    assert_eq!(log.offsets().log_start_offset, Offset::new(4));
    assert!(matches!(
        log.read(Offset::new(0), Offset::new(i64::MAX), 100, true),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    // Everything expired: the active segment is rolled and deleted too.
    log.enforce_retention(100_000).unwrap();
    assert_eq!(log.offsets().log_start_offset, Offset::new(10));
    assert_eq!(log.offsets().log_end_offset, Offset::new(10));
    assert_eq!(log.segment_count(), 1);

    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 2500,
        retention_ms: -1,
        retention_bytes: 3000,
        ..LogConfig::default()
    };
    let log = open(dir.path(), cfg, true);
    for _ in 0..10 {
        log.append(&mut batch(1, 0, 1000), 0, 0).unwrap();
    }
    log.enforce_retention(0).unwrap();
    assert!(
        log.size_bytes() <= 3000 + 2500,
        "size retention keeps about retention.bytes"
    );
    assert_eq!(log.offsets().log_start_offset, Offset::new(6));

    assert_eq!(
        log.delete_records_before(Offset::new(8)).unwrap(),
        Offset::new(8)
    );
    assert!(log
        .read(Offset::new(7), Offset::new(i64::MAX), 100, true)
        .is_err());
    assert_eq!(
        BatchHeader::parse(
            &log.read(Offset::new(8), Offset::new(i64::MAX), 100, true)
                .unwrap()
                .records
        )
        .unwrap()
        .base_offset,
        8
    );
    log.enforce_retention(0).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert!(log.delete_records_before(Offset::new(11)).is_err());

    // cleanup.policy=compact: time and size never delete.
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 2500,
        retention_ms: 1,
        retention_bytes: 1,
        delete_retention: false,
        ..LogConfig::default()
    };
    let log = open(dir.path(), cfg, true);
    for i in 0..10 {
        log.append(&mut batch(1, i, 1000), 0, 0).unwrap();
    }
    assert_eq!(log.enforce_retention(1_000_000).unwrap(), 0);
}

#[test]
fn flush_reports_durable_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default(), true);
    log.append(&mut batch(5, 0, 10), 0, 0).unwrap();
    assert_eq!(log.offsets().flushed_offset, Offset::new(0));
    assert_eq!(log.flush().unwrap(), Offset::new(5));
    assert_eq!(log.offsets().flushed_offset, Offset::new(5));
}

#[test]
fn log_append_time_stamps_batches() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        log_append_time: true,
        ..LogConfig::default()
    };
    let log = open(dir.path(), cfg, true);
    let info = log.append(&mut batch(2, 5, 10), 0, 777).unwrap();
    assert_eq!(info.log_append_time, 777);
    let r = log
        .read(Offset::new(0), Offset::new(i64::MAX), 1000, true)
        .unwrap();
    validate(&r.records, usize::MAX).unwrap();
    assert!(BatchHeader::parse(&r.records).unwrap().is_log_append_time());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Whatever the batch sizes and segment size, offsets are dense, every batch reads back,
    /// and a reopen (clean or not) sees the same log.
    #[test]
    fn log_invariants(sizes in prop::collection::vec((1usize..5, 1usize..700), 1..40), seg in 500u64..5000, clean in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig { segment_bytes: seg, index_interval_bytes: 300, ..LogConfig::default() };
        let log = open(dir.path(), cfg.clone(), true);
        let mut expect = Vec::new();
        let mut next = 0;
        for (n, payload) in &sizes {
            let info = log.append(&mut batch(*n, 0, *payload), 0, 0).unwrap();
            prop_assert_eq!(info.base_offset.get(), next);
            expect.push((next, next + *n as i64 - 1));
            next += *n as i64;
        }
        prop_assert_eq!(read_all(&log), expect.clone());
        if clean { log.close().unwrap(); }
        drop(log);
        let log = open(dir.path(), cfg, clean);
        prop_assert_eq!(log.offsets().log_end_offset.get(), next);
        prop_assert_eq!(read_all(&log), expect.clone());
        for (base, last) in &expect {
            let r = log.read(Offset::new(*last), Offset::new(i64::MAX), 1, true).unwrap();
            prop_assert_eq!(BatchHeader::parse(&r.records).unwrap().base_offset, *base);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// A region names exactly the bytes a read returns, for any start, byte limit and
    /// visibility limit, with the index skipping batches or not, and its next offset is
    /// the one after the last batch read.
    #[test]
    fn regions_hold_what_reads_return(
        sizes in prop::collection::vec((1usize..5, 1usize..700), 1..40),
        seg in 500u64..20_000,
        interval in prop::sample::select(vec![1u64, 300, 4096]),
        probes in prop::collection::vec((0usize..200, 0usize..8000, 0usize..200, any::<bool>()), 1..20),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig { segment_bytes: seg, index_interval_bytes: interval, ..LogConfig::default() };
        let log = open(dir.path(), cfg, true);
        for (n, payload) in &sizes {
            log.append(&mut batch(*n, 0, *payload), 0, 0).unwrap();
        }
        let end = log.offsets().log_end_offset.get() as usize;
        for (from, max_bytes, visible, min_one) in probes {
            let from = Offset::new((from % (end + 1)) as i64);
            let max_offset = Offset::new((visible % (end + 1)) as i64);
            let read = log.read(from, max_offset, max_bytes, min_one).unwrap();
            let region = log.read_region(from, max_offset, max_bytes, min_one).unwrap();
            let bytes = region.region.as_ref().map(|r| r.read().unwrap()).unwrap_or_default();
            prop_assert_eq!(&bytes[..], &read.records[..]);
            prop_assert!(region.region.as_ref().is_none_or(|r| r.fd().is_some()));
            let next = Batches::new(&read.records).map_while(Result::ok).last()
                .map_or(from.get(), |(h, _)| h.next_offset());
            prop_assert_eq!(region.next_offset.get(), next);
            prop_assert_eq!(region.log_end_offset, read.log_end_offset);
        }
    }
}

/// The partition directory the simulated-disk tests use.
const SIM_DIR: &str = "/data/t-0";

/// A fresh simulated disk with a durable, empty data directory.
fn sim_fs() -> SimFs {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new("/data")).unwrap();
    fs.sync_dir(Path::new("/")).unwrap();
    fs
}

fn sim_open(fs: &SimFs, cfg: LogConfig) -> Log {
    let opts = OpenOptions {
        clean_shutdown: true,
        recovery_point: Offset::new(0),
        log_start_offset: Offset::new(0),
    };
    Log::open_with(Arc::new(fs.clone()), Path::new(SIM_DIR), cfg, opts, 0).unwrap()
}

/// Writeback is asked for once per byte appended: each call covers what was appended since
/// the last one, in the active segment, and after a truncation it starts again at the cut.
#[test]
fn writeback_starts_on_each_byte_once_and_again_after_a_cut() {
    let fs = sim_fs();
    let log = sim_open(&fs, LogConfig::default());
    let ranges = |fs: &SimFs| -> Vec<(u64, u64)> {
        fs.take_writebacks()
            .into_iter()
            .inspect(|(path, _, _)| assert!(path.to_string_lossy().ends_with(".log"), "{path:?}"))
            .map(|(_, pos, len)| (pos, len))
            .collect()
    };
    let first = batch(3, 0, 100).len() as u64;
    log.append(&mut batch(3, 0, 100), 0, 0).unwrap();
    log.start_writeback();
    assert_eq!(ranges(&fs), [(0, first)]);
    // Nothing new: nothing asked.
    log.start_writeback();
    assert_eq!(ranges(&fs), []);
    let second = batch(2, 0, 300).len() as u64;
    log.append(&mut batch(2, 0, 300), 0, 0).unwrap();
    let third = batch(1, 0, 50).len() as u64;
    log.append(&mut batch(1, 0, 50), 0, 0).unwrap();
    log.start_writeback();
    assert_eq!(ranges(&fs), [(first, second + third)]);
    // Cut back to the first batch; what is appended there is asked for again.
    log.truncate_to(Offset::new(3)).unwrap();
    log.append(&mut batch(1, 0, 70), 0, 0).unwrap();
    log.start_writeback();
    assert_eq!(ranges(&fs), [(first, batch(1, 0, 70).len() as u64)]);
}

/// A segment cut at open (an invalid tail after an unclean stop) asks for writeback again
/// from the cut, not from the file's old length.
#[test]
fn writeback_starts_at_a_recovery_cut() {
    let fs = sim_fs();
    let log = sim_open(&fs, LogConfig::default());
    log.append(&mut batch(3, 0, 100), 0, 0).unwrap();
    log.flush().unwrap();
    let valid = batch(3, 0, 100).len() as u64;
    log.close().unwrap();
    drop(log);
    // A kilobyte of junk behind the last batch, as a torn write would leave.
    let name = fs
        .read_dir(Path::new(SIM_DIR))
        .unwrap()
        .into_iter()
        .find(|n| n.ends_with(".log"))
        .unwrap();
    let f = fs
        .open(&Path::new(SIM_DIR).join(name), crate::fs::OpenMode::Write)
        .unwrap();
    f.write_all_at(&[0xa5; 1024], valid).unwrap();
    f.sync_data().unwrap();
    drop(f);
    let opts = OpenOptions {
        clean_shutdown: false,
        recovery_point: Offset::new(0),
        log_start_offset: Offset::new(0),
    };
    let log = Log::open_with(
        Arc::new(fs.clone()),
        Path::new(SIM_DIR),
        LogConfig::default(),
        opts,
        0,
    )
    .unwrap();
    assert_eq!(log.offsets().log_end_offset, Offset::new(3));
    fs.take_writebacks();
    let added = batch(1, 0, 50).len() as u64;
    log.append(&mut batch(1, 0, 50), 0, 0).unwrap();
    log.start_writeback();
    let ranges: Vec<(u64, u64)> = fs
        .take_writebacks()
        .into_iter()
        .map(|(_, pos, len)| (pos, len))
        .collect();
    assert_eq!(ranges, [(valid, added)]);
}

#[test]
fn a_failed_fsync_poisons_the_log() {
    let fs = sim_fs();
    let log = sim_open(&fs, LogConfig::default());
    log.append(&mut batch(1, 0, 100), 0, 0).unwrap();
    assert_eq!(log.flush().unwrap(), Offset::new(1));
    log.append(&mut batch(1, 1, 100), 0, 0).unwrap();
    fs.fail_next(Fault::Sync);
    assert!(matches!(
        log.flush(),
        Err(StorageError::Io { op: "fsync", .. })
    ));
    assert!(log.is_poisoned());
    // Nothing more is accepted or claimed durable: what reached the disk is unknown.
    assert!(matches!(
        log.append(&mut batch(1, 2, 100), 0, 0),
        Err(StorageError::Poisoned { .. })
    ));
    assert!(matches!(log.flush(), Err(StorageError::Poisoned { .. })));
    // Reads of what was written still work.
    let r = log
        .read(Offset::new(0), Offset::new(i64::MAX), 1 << 20, true)
        .unwrap();
    assert_eq!(Batches::new(&r.records).count(), 2);
}

fn open_with(dir: &Path, cfg: LogConfig, clean: bool, recovery_point: i64) -> Log {
    Log::open(
        dir,
        cfg,
        OpenOptions {
            clean_shutdown: clean,
            recovery_point: Offset::new(recovery_point),
            log_start_offset: Offset::new(0),
        },
        0,
    )
    .unwrap()
}

/// Every epoch from -1 to `max`, answered by OffsetForLeaderEpoch.
fn epoch_answers(log: &Log, max: i32) -> Vec<(i32, (i32, i64))> {
    (-1..=max)
        .map(|e| {
            let (epoch, end) = log.end_offset_for_epoch(LeaderEpoch::new(e));
            (e, (epoch.get(), end.get()))
        })
        .collect()
}

#[test]
fn truncating_at_the_log_end_forgets_an_epoch_started_there() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default(), true);
    log.append(&mut batch(2, 100, 10), 0, 0).unwrap();
    // Leader in epoch 3 without appending anything, then a follower again.
    log.assign_leader_epoch(LeaderEpoch::new(3)).unwrap();
    assert_eq!(log.leader_epochs().last().map(|e| e.epoch), Some(3));
    log.truncate_to(Offset::new(2)).unwrap();
    let entries: Vec<_> = log
        .leader_epochs()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect();
    assert_eq!(entries, [(0, 0)]);
    assert_eq!(log.offsets().log_end_offset, Offset::new(2));
    drop(log);
    let log = open(dir.path(), LogConfig::default(), true);
    assert_eq!(log.leader_epochs().len(), 1, "the checkpoint was rewritten");
}

#[test]
fn epochs_follow_leader_appends_truncation_and_follower_appends() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 400,
        index_interval_bytes: 1,
        ..LogConfig::default()
    };
    let log = open(dir.path(), cfg.clone(), true);
    // Epoch 0: offsets 0..4, epoch 1: 4..10, epoch 2: 10..13; segments roll as they go.
    for (epoch, n) in [(0, 2), (0, 2), (1, 3), (1, 3), (2, 3)] {
        log.append(&mut batch(n, 100, 50), epoch, 0).unwrap();
    }
    assert!(log.segment_count() > 2);
    let entries = |log: &Log| {
        log.leader_epochs()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect::<Vec<_>>()
    };
    assert_eq!(entries(&log), [(0, 0), (1, 4), (2, 10)]);
    assert_eq!(
        epoch_answers(&log, 3),
        [
            (-1, (-1, -1)),
            (0, (0, 4)),
            (1, (1, 10)),
            (2, (2, 13)),
            (3, (-1, -1))
        ]
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("leader-epoch-checkpoint")).unwrap(),
        "0\n3\n0 0\n1 4\n2 10\n"
    );
    log.flush().unwrap();

    // A follower truncates into epoch 1, at the start of its second batch.
    assert!(matches!(
        log.truncate_to(Offset::new(8)),
        Err(StorageError::NotBatchBoundary {
            offset: 8,
            batch_base_offset: 7,
            batch_last_offset: 9
        })
    ));
    log.truncate_to(Offset::new(7)).unwrap();
    assert_eq!(log.offsets().log_end_offset, Offset::new(7));
    assert_eq!(log.offsets().flushed_offset, Offset::new(7));
    assert_eq!(entries(&log), [(0, 0), (1, 4)]);
    assert_eq!(read_all(&log), [(0, 1), (2, 3), (4, 6)]);

    // It then copies the new leader's epoch 3 batches, offsets and epochs unchanged.
    let mut leader_batch = batch(2, 200, 50);
    vltava_record::set_base_offset(&mut leader_batch, 7);
    vltava_record::set_partition_leader_epoch(&mut leader_batch, 3);
    let mut wrong = leader_batch.clone();
    vltava_record::set_base_offset(&mut wrong, 6);
    assert!(matches!(
        log.append_as_follower(&wrong, 0, accept_all),
        Err(StorageError::UnexpectedAppendOffset {
            expected: 7,
            actual: 6
        })
    ));
    let info = log
        .append_as_follower(&leader_batch, 0, accept_all)
        .unwrap();
    assert_eq!((info.base_offset.get(), info.last_offset.get()), (7, 8));
    let mut next = batch(1, 300, 50);
    vltava_record::set_base_offset(&mut next, 9);
    vltava_record::set_partition_leader_epoch(&mut next, 3);
    log.append_as_follower(&next, 0, accept_all).unwrap();
    let expect = [
        (-1, (-1, -1)),
        (0, (0, 4)),
        (1, (1, 7)),
        (2, (1, 7)),
        (3, (3, 10)),
        (4, (-1, -1)),
    ];
    assert_eq!(epoch_answers(&log, 4), expect);
    let r = log
        .read(Offset::new(7), Offset::new(i64::MAX), 1 << 20, true)
        .unwrap();
    let h = BatchHeader::parse(&r.records).unwrap();
    assert_eq!((h.base_offset, h.partition_leader_epoch), (7, 3));

    // The cache and the truncated indexes survive a reopen, clean or not.
    log.close().unwrap();
    drop(log);
    for clean in [true, false] {
        let log = open_with(dir.path(), cfg.clone(), clean, 0);
        assert_eq!(log.offsets().log_end_offset, Offset::new(10));
        assert_eq!(epoch_answers(&log, 4), expect);
        assert_eq!(read_all(&log), [(0, 1), (2, 3), (4, 6), (7, 8), (9, 9)]);
        assert_eq!(
            log.offset_for_timestamp(250).unwrap(),
            Some((Offset::new(9), 300))
        );
    }
}

#[test]
fn epoch_cache_is_cut_to_the_log_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default(), true);
    log.append(&mut batch(2, 0, 10), 4, 0).unwrap();
    log.close().unwrap();
    drop(log);
    // An entry at the log end (a leader elected, nothing written) and one past it.
    std::fs::write(
        dir.path().join("leader-epoch-checkpoint"),
        "0\n3\n4 0\n5 2\n6 9\n",
    )
    .unwrap();
    let log = open(dir.path(), LogConfig::default(), true);
    assert_eq!(
        log.leader_epochs(),
        [EpochEntry {
            epoch: 4,
            start_offset: 0
        }]
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("leader-epoch-checkpoint")).unwrap(),
        "0\n1\n4 0\n"
    );
}

#[test]
fn the_validator_sees_assigned_headers_and_can_refuse() {
    #[derive(Debug)]
    #[allow(dead_code)] // `Storage` only carries the error back to the caller.
    enum ProduceError {
        Storage(StorageError),
        Refused { producer_id: i64, base_offset: i64 },
    }
    impl From<StorageError> for ProduceError {
        fn from(e: StorageError) -> Self {
            Self::Storage(e)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default(), true);
    log.append(&mut batch(3, 0, 10), 0, 0).unwrap();
    let mut two = batch(2, 0, 10);
    two.extend_from_slice(&batch(4, 0, 10));
    let mut seen = Vec::new();
    let info = log
        .append_as_leader::<ProduceError, _>(&two.clone(), LeaderEpoch::new(7), 0, |h| {
            seen.push((
                h.base_offset,
                h.last_offset(),
                h.partition_leader_epoch,
                h.record_count,
            ));
            Ok(())
        })
        .unwrap();
    assert_eq!(seen, [(3, 4, 7, 2), (5, 8, 7, 4)]);
    assert_eq!(info.last_offset, Offset::new(8));
    let before = (log.offsets(), log.size_bytes(), log.leader_epochs());
    let refused = log.append_as_leader(&two, LeaderEpoch::new(9), 0, |h| {
        if h.base_offset > 9 {
            Err(ProduceError::Refused {
                producer_id: h.producer_id,
                base_offset: h.base_offset,
            })
        } else {
            Ok(())
        }
    });
    assert!(matches!(
        refused,
        Err(ProduceError::Refused {
            producer_id: -1,
            base_offset: 11
        })
    ));
    assert_eq!(
        (log.offsets(), log.size_bytes(), log.leader_epochs()),
        before,
        "a refused append writes nothing, not even its epoch"
    );
}

#[test]
fn reads_stop_below_max_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default(), true);
    for _ in 0..4 {
        log.append(&mut batch(3, 0, 10), 0, 0).unwrap(); // 0..3, 3..6, 6..9, 9..12
    }
    let bases = |r: ReadResult| {
        Batches::new(&r.records)
            .map(|b| b.unwrap().0.base_offset)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        bases(
            log.read(Offset::new(0), Offset::new(12), 1 << 20, true)
                .unwrap()
        ),
        [0, 3, 6, 9]
    );
    assert_eq!(
        bases(
            log.read(Offset::new(0), Offset::new(9), 1 << 20, true)
                .unwrap()
        ),
        [0, 3, 6]
    );
    // A batch straddling the bound is held back, even as the first batch of a min_one read.
    assert_eq!(
        bases(
            log.read(Offset::new(0), Offset::new(8), 1 << 20, true)
                .unwrap()
        ),
        [0, 3]
    );
    assert_eq!(
        bases(
            log.read(Offset::new(6), Offset::new(8), 1 << 20, true)
                .unwrap()
        ),
        Vec::<i64>::new()
    );
    assert_eq!(
        bases(
            log.read(Offset::new(7), Offset::new(7), 1 << 20, true)
                .unwrap()
        ),
        Vec::<i64>::new()
    );
    let r = log.read(Offset::new(4), Offset::new(6), 1, true).unwrap();
    assert_eq!(r.log_end_offset, Offset::new(12));
    assert_eq!(bases(r), [3]);
}

#[test]
fn fetch_at_a_log_start_inside_a_batch_returns_that_batch() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 300,
        ..LogConfig::default()
    };
    let log = open(dir.path(), cfg.clone(), true);
    for _ in 0..6 {
        log.append(&mut batch(5, 0, 20), 0, 0).unwrap(); // 0..5, 5..10, ...
    }
    assert!(log.segment_count() > 2);
    assert_eq!(
        log.delete_records_before(Offset::new(7)).unwrap(),
        Offset::new(7)
    );
    log.enforce_retention(0).unwrap();
    let check = |log: &Log| {
        let start = log.offsets().log_start_offset;
        assert_eq!(start, Offset::new(7));
        let r = log.read(start, Offset::new(i64::MAX), 1, true).unwrap();
        let h = BatchHeader::parse(&r.records).unwrap();
        assert_eq!((h.base_offset, h.last_offset()), (5, 9));
    };
    check(&log);
    log.close().unwrap();
    drop(log);
    let reopened = Log::open(
        dir.path(),
        cfg,
        OpenOptions {
            clean_shutdown: true,
            recovery_point: Offset::new(30),
            log_start_offset: Offset::new(7),
        },
        0,
    )
    .unwrap();
    check(&reopened);
}

/// Flips a byte inside the last batch of the segment at `base`, so its CRC no longer matches.
fn corrupt_last_batch(dir: &Path, base: i64) -> u64 {
    let path = dir.join(format!("{base:020}.log"));
    let mut bytes = std::fs::read(&path).unwrap();
    let last = Batches::new(&bytes).last().unwrap().unwrap().1;
    bytes[last.end - 3] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    bytes.len() as u64
}

fn segment_bases(dir: &Path) -> Vec<i64> {
    let mut bases: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            name.strip_suffix(".log").and_then(|s| s.parse().ok())
        })
        .collect();
    bases.sort_unstable();
    bases
}

/// Ten segments of two batches each (offsets 0..20), written and flushed.
fn ten_segments(dir: &Path) -> LogConfig {
    let cfg = LogConfig {
        segment_bytes: 250,
        ..LogConfig::default()
    };
    let log = open(dir, cfg.clone(), true);
    for i in 0..20 {
        log.append(&mut batch(1, i, 50), 0, 0).unwrap();
    }
    log.close().unwrap();
    assert_eq!(segment_bases(dir), (0..20).step_by(2).collect::<Vec<_>>());
    cfg
}

#[test]
fn a_bad_old_batch_after_a_clean_stop_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ten_segments(dir.path());
    let len = corrupt_last_batch(dir.path(), 4);
    // Missing indexes force the whole segment to be re-read.
    std::fs::remove_file(dir.path().join(format!("{:020}.index", 4))).unwrap();
    let log = open_with(dir.path(), cfg.clone(), true, 20);
    assert_eq!(log.offsets().log_end_offset, Offset::new(20));
    assert_eq!(segment_bases(dir.path()).len(), 10, "no segment deleted");
    assert_eq!(
        std::fs::metadata(dir.path().join(format!("{:020}.log", 4)))
            .unwrap()
            .len(),
        len,
        "the damaged segment is not cut"
    );
    assert_eq!(read_all(&log).len(), 20);
    // The offsets after it are not reused.
    assert_eq!(
        log.append(&mut batch(1, 0, 5), 0, 0).unwrap().base_offset,
        Offset::new(20)
    );
    log.close().unwrap();
    drop(log);

    // Same after an unclean stop: the segment is below the recovery point.
    let log = open_with(dir.path(), cfg, false, 21);
    assert_eq!(log.offsets().log_end_offset, Offset::new(21));
    assert_eq!(read_all(&log).len(), 21);
}

#[test]
fn an_unclean_stop_cuts_only_above_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ten_segments(dir.path());
    // The segment holding the recovery point (10) has a bad batch below it (offset 9 is in
    // segment 8, fully flushed) and the last segments are unflushed.
    corrupt_last_batch(dir.path(), 8);
    let log = open_with(dir.path(), cfg.clone(), false, 10);
    assert_eq!(
        log.offsets().log_end_offset,
        Offset::new(20),
        "bad batch below the recovery point kept"
    );
    assert_eq!(segment_bases(dir.path()).len(), 10);
    drop(log);

    // Now a bad batch above the recovery point: cut there, later (unflushed) segments go.
    corrupt_last_batch(dir.path(), 14);
    let log = open_with(dir.path(), cfg, false, 10);
    assert_eq!(log.offsets().log_end_offset, Offset::new(15));
    assert_eq!(segment_bases(dir.path()), [0, 2, 4, 6, 8, 10, 12, 14]);
    assert_eq!(read_all(&log).len(), 15);
    assert!(!log.is_poisoned());
}

#[test]
fn a_failed_roll_poisons_the_log_and_reopen_recovers_it() {
    let fs = sim_fs();
    let cfg = LogConfig {
        segment_bytes: 250,
        ..LogConfig::default()
    };
    let log = sim_open(&fs, cfg);
    log.append(&mut batch(1, 0, 50), 0, 0).unwrap();
    log.append(&mut batch(1, 0, 50), 0, 0).unwrap();
    assert_eq!(log.flush().unwrap(), Offset::new(2));
    fs.fail_next(Fault::Create);
    assert!(matches!(
        log.append(&mut batch(1, 0, 50), 0, 0),
        Err(StorageError::Io { op: "create", .. })
    ));
    assert!(log.is_poisoned());
    assert!(matches!(
        log.append(&mut batch(1, 0, 50), 0, 0),
        Err(StorageError::Poisoned { .. })
    ));
    assert!(matches!(
        log.truncate_to(Offset::new(1)),
        Err(StorageError::Poisoned { .. })
    ));
    log.reopen(0).unwrap();
    assert!(!log.is_poisoned());
    assert_eq!(log.offsets().log_end_offset, Offset::new(2));
    assert_eq!(
        log.append(&mut batch(1, 0, 50), 0, 0).unwrap().base_offset,
        Offset::new(2)
    );
    assert_eq!(read_all(&log).len(), 3);
}

#[test]
fn reopen_after_a_failed_fsync_drops_what_was_never_durable() {
    let fs = sim_fs();
    let log = sim_open(&fs, LogConfig::default());
    log.append(&mut batch(2, 0, 50), 0, 0).unwrap();
    assert_eq!(log.flush().unwrap(), Offset::new(2));
    log.append(&mut batch(3, 0, 50), 1, 0).unwrap();
    fs.fail_next(Fault::Sync);
    assert!(log.flush().is_err());
    log.reopen(0).unwrap();
    assert_eq!(log.offsets().log_end_offset, Offset::new(2));
    assert_eq!(log.offsets().flushed_offset, Offset::new(2));
    assert_eq!(
        log.leader_epochs(),
        [EpochEntry {
            epoch: 0,
            start_offset: 0
        }],
        "the epoch that only the lost batch started is gone too"
    );
    assert_eq!(
        log.append(&mut batch(1, 0, 5), 1, 0).unwrap().base_offset,
        Offset::new(2)
    );
    assert_eq!(log.flush().unwrap(), Offset::new(3));
}

/// A batch of `n` records from producer `pid` starting at sequence `seq`.
fn producer_batch(pid: i64, epoch: i16, seq: i32, n: usize, txn: bool) -> Vec<u8> {
    let mut b = vltava_record::BatchBuilder::new(vltava_record::BatchAttributes {
        producer_id: pid,
        producer_epoch: epoch,
        base_sequence: seq,
        transactional: txn,
        ..Default::default()
    });
    for i in 0..n {
        b.push(1_000 + i as i64, Some(b"k"), Some(b"v"), &[]);
    }
    b.finish()
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 300,
        ..LogConfig::default()
    }
}

#[test]
fn a_retried_batch_gets_its_original_offsets_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_segments(), true);
    let mut first = producer_batch(7, 0, 0, 3, false);
    let sent = first.clone();
    assert_eq!(
        log.append(&mut first, 0, 0).unwrap().base_offset,
        Offset::new(0)
    );
    // Enough other batches to roll segments several times (each roll snapshots state).
    for i in 0..6 {
        let mut b = producer_batch(8, 0, i * 2, 2, false);
        log.append(&mut b, 0, 0).unwrap();
    }
    let mut retry = sent.clone();
    let dup = log.append(&mut retry, 0, 0).unwrap();
    assert!(dup.duplicate);
    assert_eq!((dup.base_offset.get(), dup.last_offset.get()), (0, 2));
    let end = log.offsets().log_end_offset;
    assert!(log.segment_count() > 2);
    // Unclean stop: state comes from the latest snapshot plus a replay of the tail.
    drop(log);
    let log = open(dir.path(), small_segments(), false);
    assert_eq!(log.offsets().log_end_offset, end);
    let mut retry = producer_batch(8, 0, 10, 2, false);
    let dup = log.append(&mut retry, 0, 0).unwrap();
    assert!(dup.duplicate, "the last batch is known after replay");
    assert_eq!(dup.base_offset, end.plus(-2));
    let mut next = producer_batch(8, 0, 13, 1, false);
    assert!(matches!(
        log.append(&mut next, 0, 0),
        Err(StorageError::Producer(
            producer_state::ProducerError::OutOfOrderSequence { expected: 12, .. }
        ))
    ));
    let mut next = producer_batch(8, 0, 12, 1, false);
    assert!(!log.append(&mut next, 0, 0).unwrap().duplicate);
    // A clean stop writes a snapshot at the log end and replays nothing.
    log.close().unwrap();
    drop(log);
    let log = open(dir.path(), small_segments(), true);
    let mut retry = producer_batch(8, 0, 12, 1, false);
    assert!(log.append(&mut retry, 0, 0).unwrap().duplicate);
}

#[test]
fn an_idempotent_payload_holds_exactly_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default(), true);
    let mut two = producer_batch(1, 0, 0, 1, false);
    two.extend(producer_batch(1, 0, 1, 1, false));
    assert!(matches!(
        log.append(&mut two, 0, 0),
        Err(StorageError::Producer(
            producer_state::ProducerError::MultipleBatches
        ))
    ));
    assert_eq!(log.offsets().log_end_offset, Offset::new(0));
}

#[test]
fn aborted_transactions_are_indexed_and_survive_rolls_truncation_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_segments(), true);
    // Producer 1 opens a transaction at 0; producer 2 writes plainly.
    log.append(&mut producer_batch(1, 0, 0, 2, true), 0, 0)
        .unwrap();
    log.append(&mut producer_batch(2, 0, 0, 1, false), 0, 0)
        .unwrap();
    assert_eq!(log.first_unstable_offset(), Some(Offset::new(0)));
    log.append(&mut producer_batch(1, 0, 2, 1, true), 0, 0)
        .unwrap();
    let m = log
        .append_txn_marker(
            ProducerId::new(1),
            ProducerEpoch::new(0),
            TransactionResult::Abort,
            3,
            LeaderEpoch::new(0),
            5,
        )
        .unwrap();
    assert_eq!(m.base_offset, Offset::new(4));
    assert_eq!(log.first_unstable_offset(), None);
    let aborted = log.aborted_transactions(Offset::new(0), Offset::new(100));
    assert_eq!(aborted.len(), 1);
    assert_eq!(
        (aborted[0].first_offset.get(), aborted[0].last_offset.get()),
        (0, 4)
    );
    assert!(log
        .aborted_transactions(Offset::new(5), Offset::new(100))
        .is_empty());
    // A second transaction that commits, then one left open.
    log.append(&mut producer_batch(1, 0, 3, 1, true), 0, 0)
        .unwrap();
    log.append_txn_marker(
        ProducerId::new(1),
        ProducerEpoch::new(0),
        TransactionResult::Commit,
        3,
        LeaderEpoch::new(0),
        5,
    )
    .unwrap();
    // An older coordinator is fenced; an older producer epoch too.
    assert!(matches!(
        log.append_txn_marker(
            ProducerId::new(1),
            ProducerEpoch::new(0),
            TransactionResult::Abort,
            2,
            LeaderEpoch::new(0),
            5
        ),
        Err(StorageError::Producer(
            producer_state::ProducerError::CoordinatorFenced { .. }
        ))
    ));
    log.append(&mut producer_batch(3, 0, 0, 1, true), 0, 0)
        .unwrap();
    let open_at = log.offsets().log_end_offset.plus(-1);
    for i in 0..8 {
        log.append(&mut producer_batch(4, 0, i, 1, false), 0, 0)
            .unwrap();
    }
    assert!(
        log.segment_count() > 2,
        "the markers are in sealed segments"
    );
    assert_eq!(log.first_unstable_offset(), Some(open_at));
    let end = log.offsets().log_end_offset;
    // Unclean restart: the sealed segments' .txnindex files plus the replayed tail.
    drop(log);
    let log = open(dir.path(), small_segments(), false);
    assert_eq!(log.offsets().log_end_offset, end);
    assert_eq!(log.first_unstable_offset(), Some(open_at));
    assert_eq!(log.aborted_transactions(Offset::new(0), end).len(), 1);
    // Abort the open one, then truncate back below its marker: it is open again.
    let marker = log
        .append_txn_marker(
            ProducerId::new(3),
            ProducerEpoch::new(0),
            TransactionResult::Abort,
            3,
            LeaderEpoch::new(0),
            5,
        )
        .unwrap();
    assert_eq!(
        log.aborted_transactions(Offset::new(0), Offset::new(i64::MAX))
            .len(),
        2
    );
    assert_eq!(log.first_unstable_offset(), None);
    log.truncate_to(marker.base_offset).unwrap();
    assert_eq!(
        log.aborted_transactions(Offset::new(0), Offset::new(i64::MAX))
            .len(),
        1
    );
    assert_eq!(log.first_unstable_offset(), Some(open_at));
    // Clean restart keeps all of it.
    log.append_txn_marker(
        ProducerId::new(3),
        ProducerEpoch::new(0),
        TransactionResult::Abort,
        3,
        LeaderEpoch::new(0),
        5,
    )
    .unwrap();
    log.close().unwrap();
    drop(log);
    let log = open(dir.path(), small_segments(), true);
    let all = log.aborted_transactions(Offset::new(0), Offset::new(i64::MAX));
    assert_eq!(
        all.iter().map(|t| t.producer_id.get()).collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert_eq!(log.first_unstable_offset(), None);
    let producers = log.producers();
    assert_eq!(producers.len(), 4);
    assert_eq!(log.remove_expired_producers(i64::MAX / 2, 1000), 4);
}

#[test]
fn a_corrupt_snapshot_falls_back_to_an_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_segments(), true);
    for i in 0..16 {
        log.append(&mut producer_batch(5, 0, i, 1, false), 0, 0)
            .unwrap();
    }
    drop(log);
    let mut snaps: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snapshot"))
        .collect();
    snaps.sort();
    assert!(snaps.len() >= 2);
    std::fs::write(snaps.last().unwrap(), b"garbage").unwrap();
    let log = open(dir.path(), small_segments(), false);
    let mut retry = producer_batch(5, 0, 15, 1, false);
    assert!(log.append(&mut retry, 0, 0).unwrap().duplicate);
}

/// What producer state says about a log, comparable across a reopen: each producer's epoch,
/// last sequence, coordinator epoch and open transaction, the first unstable offset and every
/// aborted transaction.
type ProducerSummary = (
    Vec<ProducerInfo>,
    Option<Offset>,
    Vec<(ProducerId, Offset, Offset)>,
);

fn producer_summary(log: &Log) -> ProducerSummary {
    let mut producers = log.producers();
    // The timestamps are the batches' own, so they survive too; keep them in the comparison.
    producers.sort_by_key(|p| p.producer_id);
    let aborted = log
        .aborted_transactions(Offset::new(0), Offset::new(i64::MAX))
        .into_iter()
        .map(|t| (t.producer_id, t.first_offset, t.last_offset))
        .collect();
    (producers, log.first_unstable_offset(), aborted)
}

#[derive(Debug, Clone)]
enum ProducerOp {
    Data { pid: i64, txn: bool, n: usize },
    Marker { pid: i64, commit: bool },
    Reopen { clean: bool },
    Truncate { back: usize },
}

fn producer_op() -> impl Strategy<Value = ProducerOp> {
    prop_oneof![
        6 => (1i64..4, any::<bool>(), 1usize..4).prop_map(|(pid, txn, n)| ProducerOp::Data { pid, txn, n }),
        2 => (1i64..4, any::<bool>()).prop_map(|(pid, commit)| ProducerOp::Marker { pid, commit }),
        1 => any::<bool>().prop_map(|clean| ProducerOp::Reopen { clean }),
        1 => (1usize..6).prop_map(|back| ProducerOp::Truncate { back }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// Whatever producers, transactions, markers, rolls, truncations and restarts (clean or
    /// not) a log sees, the producer state rebuilt from its snapshots, `.txnindex` files and a
    /// replay of its tail is the state it had.
    #[test]
    fn producer_state_survives_reopen_and_truncation(ops in prop::collection::vec(producer_op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = small_segments();
        let mut log = open(dir.path(), cfg.clone(), true);
        let mut seq = std::collections::HashMap::<i64, i32>::new();
        let mut boundaries: Vec<i64> = Vec::new();
        for op in ops {
            match op {
                ProducerOp::Data { pid, txn, n } => {
                    let s = *seq.get(&pid).unwrap_or(&0);
                    let mut b = producer_batch(pid, 0, s, n, txn);
                    let before = log.offsets().log_end_offset;
                    if log.append(&mut b, 0, 0).is_ok() {
                        seq.insert(pid, s + n as i32);
                        boundaries.push(before.get());
                    }
                }
                ProducerOp::Marker { pid, commit } => {
                    let result = if commit { TransactionResult::Commit } else { TransactionResult::Abort };
                    let before = log.offsets().log_end_offset;
                    if log.append_txn_marker(ProducerId::new(pid), ProducerEpoch::new(0), result, 0, LeaderEpoch::new(0), 0).is_ok() {
                        boundaries.push(before.get());
                    }
                }
                ProducerOp::Reopen { clean } => {
                    let want = producer_summary(&log);
                    if clean { log.close().unwrap(); } else { log.flush().unwrap(); }
                    drop(log);
                    log = open(dir.path(), cfg.clone(), clean);
                    prop_assert_eq!(producer_summary(&log), want);
                }
                ProducerOp::Truncate { back } => {
                    if boundaries.len() >= back {
                        let to = boundaries[boundaries.len() - back];
                        boundaries.truncate(boundaries.len() - back);
                        log.truncate_to(Offset::new(to)).unwrap();
                        // Sequences after a truncation are whatever the rebuilt state says.
                        for p in log.producers() {
                            seq.insert(p.producer_id.get(), p.last_sequence.wrapping_add(1));
                        }
                        for pid in 1..4 {
                            if !log.producers().iter().any(|p| p.producer_id == ProducerId::new(pid)) {
                                seq.remove(&pid);
                            }
                        }
                    }
                }
            }
        }
        let want = producer_summary(&log);
        log.flush().unwrap();
        drop(log);
        let log = open(dir.path(), cfg, false);
        prop_assert_eq!(producer_summary(&log), want);
    }
}

/// KIP-890's verification guard: a transactional batch verified before its transaction
/// ended (a marker written meanwhile) cannot open a new transaction, which nothing would
/// ever end; a guard still current opens one, and once it is open no guard is needed.
#[test]
fn a_marker_during_verification_refuses_the_verified_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default(), true);
    let verified = |log: &Log, seq: i32, guard| {
        log.append_as_leader_guarded::<StorageError, _>(
            &producer_batch(1, 0, seq, 1, true),
            LeaderEpoch::new(0),
            0,
            crate::accept_all,
            Some(guard),
        )
    };
    let stale = log.start_txn_verification(ProducerId::new(1));
    // The coordinator ends the transaction (a timeout abort) before the batch lands.
    log.append_txn_marker(
        ProducerId::new(1),
        ProducerEpoch::new(0),
        TransactionResult::Abort,
        0,
        LeaderEpoch::new(0),
        5,
    )
    .unwrap();
    assert!(matches!(
        verified(&log, 0, stale),
        Err(StorageError::Producer(
            producer_state::ProducerError::InvalidTxnState { .. }
        ))
    ));
    assert_eq!(log.first_unstable_offset(), None, "nothing holds the LSO");
    assert_eq!(
        log.offsets().log_end_offset,
        Offset::new(1),
        "only the marker was written"
    );

    let fresh = log.start_txn_verification(ProducerId::new(1));
    let info = verified(&log, 0, fresh).unwrap();
    assert_eq!(log.first_unstable_offset(), Some(info.base_offset));
    // The transaction is open here: a guard from before is no obstacle now.
    verified(&log, 1, stale).unwrap();
    // A failed verification's guard is dropped: it opens nothing afterwards.
    let unused = log.start_txn_verification(ProducerId::new(2));
    log.end_txn_verification(unused);
    assert!(log
        .append_as_leader_guarded::<StorageError, _>(
            &producer_batch(2, 0, 0, 1, true),
            LeaderEpoch::new(0),
            0,
            crate::accept_all,
            Some(unused),
        )
        .is_err());
}

#[test]
fn a_follower_copies_the_gaps_of_a_compacted_leader() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default(), true);
    // The leader's cleaner removed the batches at 2..=4 and 7.
    let at = |base: i64, n: usize| {
        let mut b = batch(n, 100 + base, 10);
        vltava_record::set_base_offset(&mut b, base);
        vltava_record::set_partition_leader_epoch(&mut b, 0);
        b
    };
    let mut fetched = at(0, 2);
    fetched.extend(at(5, 2));
    let info = log.append_as_follower(&fetched, 0, accept_all).unwrap();
    assert_eq!((info.base_offset.get(), info.last_offset.get()), (0, 6));
    let info = log.append_as_follower(&at(8, 1), 0, accept_all).unwrap();
    assert_eq!((info.base_offset.get(), info.last_offset.get()), (8, 8));
    assert_eq!(log.offsets().log_end_offset, Offset::new(9));
    assert_eq!(read_all(&log), [(0, 1), (5, 6), (8, 8)]);
    // A read from inside a gap starts at the next batch.
    let r = log
        .read(Offset::new(3), Offset::new(i64::MAX), 1 << 20, true)
        .unwrap();
    assert_eq!(BatchHeader::parse(&r.records).unwrap().base_offset, 5);
    // Still below the end: refused.
    assert!(matches!(
        log.append_as_follower(&at(7, 1), 0, accept_all),
        Err(StorageError::UnexpectedAppendOffset {
            expected: 9,
            actual: 7
        })
    ));
    log.flush().unwrap();
    drop(log);
    let log = open(dir.path(), LogConfig::default(), false);
    assert_eq!(log.offsets().log_end_offset, Offset::new(9));
    assert_eq!(read_all(&log), [(0, 1), (5, 6), (8, 8)]);
}

#[test]
fn a_follower_behind_the_leaders_log_start_starts_over_there() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default(), true);
    for i in 0..3 {
        log.append(&mut batch(2, 100 + i, 10), 1, 0).unwrap();
    }
    log.flush().unwrap();
    assert!(
        log.truncate_fully_and_start_at(Offset::new(6), 0).is_err(),
        "not past the end"
    );
    log.truncate_fully_and_start_at(Offset::new(100), 0)
        .unwrap();
    let o = log.offsets();
    assert_eq!(
        (
            o.log_start_offset.get(),
            o.log_end_offset.get(),
            o.flushed_offset.get()
        ),
        (100, 100, 100)
    );
    assert!(read_all(&log).is_empty());
    assert!(
        log.leader_epochs().is_empty(),
        "the dropped records' epochs are gone"
    );
    let mut b = batch(1, 500, 10);
    vltava_record::set_base_offset(&mut b, 100);
    vltava_record::set_partition_leader_epoch(&mut b, 4);
    log.append_as_follower(&b, 0, accept_all).unwrap();
    assert_eq!(read_all(&log), [(100, 100)]);
    // Retention removes the old segments; a reopen finds the log where it was.
    log.enforce_retention(0).unwrap();
    log.flush().unwrap();
    drop(log);
    let log = open(dir.path(), LogConfig::default(), false);
    let o = log.offsets();
    assert_eq!(
        (o.log_start_offset.get(), o.log_end_offset.get()),
        (100, 101)
    );
    assert_eq!(read_all(&log), [(100, 100)]);
}

#[test]
fn index_entries_reach_their_files_at_flush_seal_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        index_interval_bytes: 1,
        ..LogConfig::default()
    };
    let index_len = |name: &str| {
        std::fs::metadata(dir.path().join(name))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let log = open(dir.path(), cfg.clone(), true);
    for i in 0..10 {
        log.append(&mut batch(1, i, 100), 0, 0).unwrap();
    }
    // Appends keep their entries in memory: a small batch costs one write.
    assert_eq!(index_len("00000000000000000000.index"), 0);
    assert_eq!(index_len("00000000000000000000.timeindex"), 0);
    log.flush().unwrap();
    assert_eq!(index_len("00000000000000000000.index"), 10 * 8);
    assert_eq!(index_len("00000000000000000000.timeindex"), 10 * 12);
    for i in 10..15 {
        log.append(&mut batch(1, i, 100), 0, 0).unwrap();
    }
    log.close().unwrap();
    drop(log);
    assert_eq!(index_len("00000000000000000000.index"), 15 * 8);
    // The files are trusted at the next open and lookups use them.
    let log = open(dir.path(), cfg, true);
    assert_eq!(
        log.offset_for_timestamp(12).unwrap(),
        Some((Offset::new(12), 12))
    );
    let r = log
        .read(Offset::new(13), Offset::new(i64::MAX), 1, true)
        .unwrap();
    assert_eq!(BatchHeader::parse(&r.records).unwrap().base_offset, 13);
    log.close().unwrap();
}

/// The bodies of streamed batches, from memory, as the broker's pipe gives them.
struct Bodies<'a> {
    bytes: Vec<u8>,
    at: usize,
    fail: &'a std::cell::Cell<bool>,
}

impl BodySource for Bodies<'_> {
    fn write_to(&mut self, file: &dyn FsFile, pos: u64, len: usize) -> std::io::Result<()> {
        if self.fail.get() {
            return Err(std::io::Error::other("the pipe broke"));
        }
        file.write_all_at(&self.bytes[self.at..self.at + len], pos)?;
        self.at += len;
        Ok(())
    }
}

/// Streams `payload` through the validator: its batches and their bodies back to back.
fn streamed(payload: &[u8]) -> (Vec<vltava_record::stream::StreamedBatch>, Vec<u8>) {
    let mut v = vltava_record::stream::StreamValidator::new(1 << 20);
    v.feed(payload).unwrap();
    let (_, batches) = v.finish().unwrap();
    let mut bodies = Vec::new();
    let mut at = 0;
    for b in &batches {
        at += vltava_record::HEADER_LEN;
        bodies.extend_from_slice(&payload[at..at + b.body_len]);
        at += b.body_len;
    }
    (batches, bodies)
}

/// A log written with streamed appends holds, byte for byte, what in-memory appends write,
/// and answers the same, across rolls, LogAppendTime, producer ids and retries.
#[test]
fn streamed_appends_write_what_in_memory_appends_write() {
    for log_append_time in [false, true] {
        let cfg = LogConfig {
            log_append_time,
            ..small_segments()
        };
        let (mem_fs, str_fs) = (sim_fs(), sim_fs());
        let (mem, str_log) = (sim_open(&mem_fs, cfg.clone()), sim_open(&str_fs, cfg));
        let fail = std::cell::Cell::new(false);
        let mut payloads = [
            [batch(3, 10, 40), batch(1, 20, 200)].concat(),
            producer_batch(5, 0, 0, 2, false),
            producer_batch(5, 0, 0, 2, false), // a retry: a duplicate
            producer_batch(5, 0, 2, 4, false),
            batch(2, 30, 500),
        ];
        for (i, p) in payloads.iter_mut().enumerate() {
            let now = 1_000 + i as i64;
            let a = mem
                .append_as_leader_guarded(p, LeaderEpoch::new(3), now, accept_all, None)
                .unwrap();
            let (batches, bytes) = streamed(p);
            let mut bodies = Bodies {
                bytes,
                at: 0,
                fail: &fail,
            };
            let b = str_log
                .append_streamed_as_leader(
                    &batches,
                    &mut bodies,
                    LeaderEpoch::new(3),
                    now,
                    accept_all,
                    None,
                )
                .unwrap();
            assert_eq!(a, b, "append {i}");
        }
        assert!(mem.segment_count() > 1, "the appends rolled segments");
        assert_eq!(mem.offsets(), str_log.offsets());
        let all = |log: &Log| {
            log.read(Offset::new(0), Offset::new(i64::MAX), 1 << 20, true)
                .unwrap()
                .records
        };
        let mut offset = Offset::new(0);
        while offset < mem.offsets().log_end_offset {
            let r = |log: &Log| {
                log.read(offset, Offset::new(i64::MAX), 1 << 20, true)
                    .unwrap()
            };
            let (x, y) = (r(&mem), r(&str_log));
            assert_eq!(x.records, y.records);
            validate(&y.records, 1 << 20).unwrap();
            let last = Batches::new(&y.records).last().unwrap().unwrap().0;
            offset = Offset::new(last.next_offset());
        }
        assert!(!all(&str_log).is_empty());
        // A body that cannot be written poisons the log, as any failed write does.
        fail.set(true);
        let p = batch(1, 40, 10);
        let (batches, bytes) = streamed(&p);
        let mut bodies = Bodies {
            bytes,
            at: 0,
            fail: &fail,
        };
        let e = str_log.append_streamed_as_leader::<StorageError, _>(
            &batches,
            &mut bodies,
            LeaderEpoch::new(3),
            2_000,
            accept_all,
            None,
        );
        assert!(e.is_err());
        assert!(str_log.is_poisoned());
    }
}

/// Bytes the file system has allocated to a file past its last block (its extent tree's
/// blocks count too, hence the slack in the checks).
fn allocated_past_end(path: &Path) -> u64 {
    let len = std::fs::metadata(path).unwrap().len();
    allocated(path).saturating_sub(len.next_multiple_of(4096))
}

/// Bytes the file system has allocated to a file.
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// A large active segment has blocks allocated ahead of its writes, and gives them back when
/// it rolls and when the log closes; the bytes read back are the bytes written.
#[test]
fn blocks_reserved_ahead_are_released_on_roll_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe");
    let f = std::fs::File::create(&probe).unwrap();
    crate::fs::FsFile::reserve(&f, 0, 1 << 20).unwrap();
    if allocated(&probe) < 1 << 20 {
        eprintln!("skipped: this file system does not allocate ahead");
        return;
    }
    drop(f);
    std::fs::remove_file(&probe).unwrap();
    let cfg = LogConfig {
        segment_bytes: 6 << 20,
        ..LogConfig::default()
    };
    let log = open(dir.path(), cfg.clone(), true);
    let first = dir.path().join("00000000000000000000.log");
    // Batches of about 64 KiB: 96 fill the first segment; 24 more leave 1.5 MiB in the next.
    let append = |n: usize| {
        for _ in 0..n {
            log.append(&mut batch(64, 0, 1000), 0, 0).unwrap();
        }
    };
    const SLACK: u64 = 8 << 10;
    append(48);
    assert!(allocated_past_end(&first) > 64 << 10);
    append(72);
    assert_eq!(log.segment_count(), 2);
    assert!(allocated_past_end(&first) <= SLACK, "rolled");
    let second = dir.path().join(format!(
        "{}.log",
        crate::segment::file_stem(*segment_bases(dir.path()).last().unwrap())
    ));
    assert!(allocated_past_end(&second) > 64 << 10);
    log.close().unwrap();
    assert!(allocated_past_end(&second) <= SLACK, "closed");
    drop(log);
    let log = open(dir.path(), cfg, true);
    let read = read_all(&log);
    assert_eq!(read.len(), 120);
    assert_eq!(read.last().unwrap().1, 120 * 64 - 1);
}

#[test]
fn reservations_run_an_eighth_of_the_segment_ahead_between_one_and_eight_mib() {
    use crate::segment::reserve_until;
    const MIB: u64 = 1 << 20;
    assert_eq!(
        reserve_until(MIB - 1, 0),
        None,
        "small segments reserve nothing"
    );
    assert_eq!(reserve_until(MIB, 0), Some(2 * MIB));
    assert_eq!(reserve_until(2 * MIB, 2 * MIB), None, "reserved far enough");
    assert_eq!(reserve_until(16 * MIB + 1, 16 * MIB), Some(18 * MIB + 1));
    assert_eq!(reserve_until(512 * MIB, 0), Some(520 * MIB));
}
