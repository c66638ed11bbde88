use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use proptest::prelude::*;
use vltava_record::{BatchAttributes, BatchBuilder, Batches, Compression};

use super::*;
use crate::fs::FsFile;
use crate::sim::SimFs;
use crate::{LogConfig, OpenOptions};
use vltava_types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId};

const DIR: &str = "/data/t-0";
const SEGMENT_MS: i64 = 1_000_000;
const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

/// One produce in a test: records of `(key, value)`, or a roll before it.
#[derive(Debug, Clone)]
enum Op {
    Batch(Vec<(u8, Option<u8>)>),
    Roll,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let record = (0u8..12, prop::option::weighted(0.8, any::<u8>()));
    let op = prop_oneof![
        6 => prop::collection::vec(record, 1..5).prop_map(Op::Batch),
        1 => Just(Op::Roll),
    ];
    prop::collection::vec(op, 1..60)
}

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        segment_ms: SEGMENT_MS,
        compact: true,
        delete_retention: false,
        delete_retention_ms: 1000,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

fn sim_fs() -> SimFs {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new("/data")).unwrap();
    fs.sync_dir(Path::new("/")).unwrap();
    fs
}

fn open_log(fs: Arc<dyn Fs>, cfg: &LogConfig, recovery_point: i64) -> Log {
    let opts = OpenOptions {
        clean_shutdown: false,
        recovery_point: Offset::new(recovery_point),
        log_start_offset: Offset::new(0),
    };
    Log::open_with(fs, Path::new(DIR), cfg.clone(), opts, 0).unwrap()
}

/// A record as stored: `(offset, key, value)`.
type Rec = (i64, Vec<u8>, Option<Vec<u8>>);

/// What each batch looked like when appended, by base offset: producer fields and last offset.
type BatchIds = BTreeMap<i64, (i64, i16, i32, i64)>;

/// Appends `ops` with `codec`; returns every record and the batches' identities. Values are
/// `[value; 20]` so compression has something to do.
fn append_ops(log: &Log, ops: &[Op], codec: Compression, now: &mut i64) -> (Vec<Rec>, BatchIds) {
    let mut recs = Vec::new();
    let mut ids = BatchIds::new();
    // Sequences follow on from batch to batch, as an idempotent producer's do.
    let mut seq = 0;
    for op in ops {
        match op {
            Op::Roll => *now += SEGMENT_MS,
            Op::Batch(records) => {
                let base_sequence = seq;
                seq += records.len() as i32;
                let mut b = BatchBuilder::new(BatchAttributes {
                    producer_id: 7,
                    producer_epoch: 3,
                    base_sequence,
                    compression: codec,
                    ..BatchAttributes::default()
                });
                for (k, v) in records {
                    let value = v.map(|v| vec![v; 20]);
                    b.push(*now, Some(&[*k]), value.as_deref(), &[]);
                }
                let bytes = b.finish();
                let info = log
                    .append_as_leader::<StorageError, _>(
                        &bytes,
                        LeaderEpoch::new(0),
                        *now,
                        crate::accept_all,
                    )
                    .unwrap();
                ids.insert(
                    info.base_offset.get(),
                    (7, 3, base_sequence, info.last_offset.get()),
                );
                for (j, (k, v)) in records.iter().enumerate() {
                    recs.push((
                        info.base_offset.plus(j as i64).get(),
                        vec![*k],
                        v.map(|v| vec![v; 20]),
                    ));
                }
                *now += 1;
            }
        }
    }
    (recs, ids)
}

/// Every record of the log, checking each batch's CRC, codec and identity on the way.
fn read_back(log: &Log, codec: Compression, ids: &BatchIds) -> Vec<Rec> {
    let mut out: Vec<Rec> = Vec::new();
    let mut offset = log.offsets().log_start_offset;
    loop {
        let r = log
            .read(offset, Offset::new(i64::MAX), 1 << 20, true)
            .unwrap();
        if r.records.is_empty() {
            return out;
        }
        for item in Batches::new(&r.records) {
            let (h, range) = item.unwrap();
            let bytes = &r.records[range];
            assert_eq!(
                vltava_record::compute_crc(bytes),
                h.crc,
                "CRC at {}",
                h.base_offset
            );
            assert_eq!(h.compression(), codec, "codec of batch {}", h.base_offset);
            let id = ids
                .get(&h.base_offset)
                .expect("a batch keeps its base offset");
            assert_eq!(
                (
                    h.producer_id,
                    h.producer_epoch,
                    h.base_sequence,
                    h.last_offset()
                ),
                *id,
                "batch {} keeps its producer fields and last offset",
                h.base_offset
            );
            for rec in vltava_record::read_records(bytes, 1 << 30).unwrap() {
                let rec = rec.unwrap();
                let o = h.base_offset + i64::from(rec.offset_delta);
                assert!(
                    out.last().is_none_or(|l| l.0 < o),
                    "offset {o} out of order or repeated"
                );
                out.push((
                    o,
                    rec.key.unwrap().into_owned(),
                    rec.value.map(|v| v.into_owned()),
                ));
            }
            offset = Offset::new(h.next_offset());
        }
    }
}

/// The model: below `bound`, the latest record per key (tombstones only if `tombstones`);
/// from `bound` on, everything.
fn model(recs: &[Rec], bound: i64, tombstones: bool) -> Vec<Rec> {
    let mut latest: BTreeMap<&[u8], i64> = BTreeMap::new();
    for (o, k, _) in recs.iter().filter(|r| r.0 < bound) {
        latest.insert(k, *o);
    }
    recs.iter()
        .filter(|(o, k, v)| {
            *o >= bound || (latest[k.as_slice()] == *o && (tombstones || v.is_some()))
        })
        .cloned()
        .collect()
}

fn request(now_ms: i64, map_entries: usize) -> CleanRequest<'static> {
    CleanRequest {
        now_ms,
        upper_bound: Offset::new(i64::MAX),
        map_entries,
        transactions: Transactions::Unknown,
    }
}

/// Cleans until the clean offset reaches the active segment (several passes when the map
/// is small). Returns the active segment's base.
fn clean_fully(log: &Log, now_ms: i64, map_entries: usize) -> i64 {
    let active = *log.segment_bases().last().unwrap();
    let mut passes = 0;
    loop {
        let stats = log
            .clean(&request(now_ms, map_entries), &mut |_| {})
            .unwrap();
        passes += 1;
        assert!(passes < 1000, "cleaning makes no progress");
        if stats.is_none() || log.clean_offset() >= Offset::new(active) {
            return active;
        }
    }
}

fn check_codec(ops: Vec<Op>, codec: Compression, segment_bytes: u64, map_entries: usize) {
    let fs = sim_fs();
    let cfg = config(segment_bytes);
    let log = open_log(Arc::new(fs.clone()), &cfg, 0);
    let mut now = 1_000;
    let (recs, ids) = append_ops(&log, &ops, codec, &mut now);
    let flushed = log.flush().unwrap();
    log.recovery_point_written(flushed);
    assert_eq!(read_back(&log, codec, &ids), recs);

    // First cleaning: the latest record of each key stays, tombstones too.
    let bound = clean_fully(&log, now, map_entries);
    assert_eq!(read_back(&log, codec, &ids), model(&recs, bound, true));

    // Not yet delete.retention.ms after the point passed them: tombstones stay.
    let _ = log.clean(
        &request(now + cfg.delete_retention_ms - 1, map_entries),
        &mut |_| {},
    );
    assert_eq!(read_back(&log, codec, &ids), model(&recs, bound, true));

    // delete.retention.ms later: they are gone, the rest is as it was.
    let _ = log.clean(
        &request(now + cfg.delete_retention_ms, map_entries),
        &mut |_| {},
    );
    assert_eq!(read_back(&log, codec, &ids), model(&recs, bound, false));

    // The cleaned log survives a power loss and reloads (indexes, offsets) to the same
    // records.
    let expected = read_back(&log, codec, &ids);
    let flushed = log.flush().unwrap();
    drop(log);
    fs.crash();
    let log = open_log(Arc::new(fs), &cfg, flushed.get());
    assert_eq!(read_back(&log, codec, &ids), expected);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn cleaned_log_equals_the_model_for_every_codec(
        ops in ops(),
        codec in 0usize..5,
        segment_bytes in prop_oneof![Just(200u64), Just(600), Just(5000)],
        map_entries in prop_oneof![Just(2usize), Just(5), Just(1000)],
    ) {
        check_codec(ops, CODECS[codec], segment_bytes, map_entries);
    }
}

/// A [`SimFs`] that loses power at its `n`th changing operation once armed: the operation
/// fails, the disk keeps only what was durable, and every later operation fails too.
#[derive(Debug, Clone)]
struct CrashFs {
    sim: SimFs,
    shared: Arc<CrashState>,
}

#[derive(Debug, Default)]
struct CrashState {
    /// Operations left before the crash; `usize::MAX` when not armed.
    left: AtomicUsize,
    crashed: AtomicBool,
}

impl CrashFs {
    fn new(sim: SimFs) -> Self {
        let shared = Arc::new(CrashState::default());
        shared.left.store(usize::MAX, Ordering::SeqCst);
        Self { sim, shared }
    }

    fn arm(&self, n: usize) {
        self.shared.left.store(n, Ordering::SeqCst);
    }

    fn crashed(&self) -> bool {
        self.shared.crashed.load(Ordering::SeqCst)
    }
}

impl CrashState {
    fn step(&self, sim: &SimFs) -> io::Result<()> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(io::Error::other("power lost"));
        }
        let left = self.left.load(Ordering::SeqCst);
        if left == usize::MAX {
            return Ok(());
        }
        if left <= 1 {
            self.crashed.store(true, Ordering::SeqCst);
            sim.crash();
            return Err(io::Error::other("power lost"));
        }
        self.left.store(left - 1, Ordering::SeqCst);
        Ok(())
    }
}

#[derive(Debug)]
struct CrashFile {
    inner: Box<dyn FsFile>,
    sim: SimFs,
    shared: Arc<CrashState>,
}

impl FsFile for CrashFile {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.shared.step(&self.sim)?;
        self.inner.write_all_at(buf, pos)
    }
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.shared.step(&self.sim)?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.shared.step(&self.sim)?;
        self.inner.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.shared.step(&self.sim)?;
        self.inner.sync_all()
    }
}

impl Fs for CrashFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>> {
        if matches!(mode, OpenMode::Create | OpenMode::Truncate) {
            self.shared.step(&self.sim)?;
        }
        Ok(Box::new(CrashFile {
            inner: self.sim.open(path, mode)?,
            sim: self.sim.clone(),
            shared: Arc::clone(&self.shared),
        }))
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.sim.read_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.sim.exists(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.sim.create_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.shared.step(&self.sim)?;
        self.sim.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.shared.step(&self.sim)?;
        self.sim.remove_file(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.shared.step(&self.sim)?;
        self.sim.sync_dir(path)
    }
}

/// The last record of each key, tombstones included: what a consumer reading from the start
/// ends up believing.
fn final_state(recs: &[Rec]) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    recs.iter()
        .map(|(_, k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Writes a log of overwrites and tombstones over several segments, all flushed.
fn crash_fixture(
    fs: Arc<dyn Fs>,
    cfg: &LogConfig,
    codec: Compression,
) -> (Log, Vec<Rec>, BatchIds) {
    let log = open_log(fs, cfg, 0);
    let mut ops = Vec::new();
    for i in 0..40u8 {
        ops.push(Op::Batch(vec![
            (i % 7, Some(i)),
            ((i * 3) % 11, (i % 5 != 0).then_some(i)),
        ]));
        if i % 9 == 8 {
            ops.push(Op::Roll);
        }
    }
    let mut now = 1_000;
    let (recs, ids) = append_ops(&log, &ops, codec, &mut now);
    let flushed = log.flush().unwrap();
    log.recovery_point_written(flushed);
    (log, recs, ids)
}

/// Power loss at every file operation of a cleaning, in turn: after reopening, every batch
/// passes its CRC, no offset appears twice, every record the cleaned log must keep is there,
/// every key ends as it did, and cleaning resumes to exactly the model.
#[test]
fn power_loss_at_every_step_of_a_cleaning_loses_nothing() {
    let cfg = config(600);
    let codec = Compression::Lz4;
    let mut completed = false;
    for n in 1..400 {
        let sim = sim_fs();
        let crash = CrashFs::new(sim.clone());
        let (log, recs, ids) = crash_fixture(Arc::new(crash.clone()), &cfg, codec);
        let flushed = log.offsets().flushed_offset;
        let bound = *log.segment_bases().last().unwrap();
        let must_keep = model(&recs, bound, true);
        crash.arm(n);
        let result = log.clean(&request(10_000, 1000), &mut |_| {});
        let crashed = crash.crashed();
        assert_eq!(result.is_err(), crashed, "step {n}: {result:?}");
        drop(log);
        if !crashed {
            sim.crash();
        }
        let log = open_log(Arc::new(sim.clone()), &cfg, flushed.get());
        let got = read_back(&log, codec, &ids);
        for r in &must_keep {
            assert!(got.contains(r), "step {n}: record {r:?} lost");
        }
        for r in &got {
            assert!(recs.contains(r), "step {n}: record {r:?} never written");
        }
        assert_eq!(final_state(&got), final_state(&recs), "step {n}");
        log.recovery_point_written(flushed);
        log.init_clean_offset(Offset::new(0), 10_000);
        clean_fully(&log, 10_000, 1000);
        assert_eq!(
            read_back(&log, codec, &ids),
            must_keep,
            "step {n}: resumed cleaning"
        );
        if !crashed {
            completed = true;
            assert!(n > 10, "a cleaning takes more than a few file operations");
            break;
        }
    }
    assert!(
        completed,
        "the cleaning never completed within the steps tried"
    );
}

/// A read that took its segments before a swap still reads the old bytes after it.
#[test]
fn reads_in_flight_keep_the_replaced_segments() {
    let cfg = config(600);
    let sim = sim_fs();
    let (log, recs, _) = crash_fixture(Arc::new(sim.clone()), &cfg, Compression::None);
    let old: Vec<Arc<Segment>> = log.inner.lock().segments.values().cloned().collect();
    let before: Vec<Vec<u8>> = old
        .iter()
        .map(|s| s.read_range(0, s.size() as usize).unwrap())
        .collect();
    log.set_config(config(100_000));
    log.clean(&request(10_000, 1000), &mut |_| {})
        .unwrap()
        .unwrap();
    assert!(log.segment_count() < old.len(), "segments were grouped");
    for (seg, bytes) in old.iter().zip(&before) {
        assert_eq!(&seg.read_range(0, seg.size() as usize).unwrap(), bytes);
        // Even after the handle cache turned over.
        for other in log.inner.lock().segments.values() {
            other.log_file().unwrap();
        }
        assert_eq!(&seg.read_range(0, seg.size() as usize).unwrap(), bytes);
    }
    assert!(!recs.is_empty());
}

/// The offset map holds at most its budget of keys; a dirty part with more keys is cleaned
/// in several passes, each moving the clean offset forward.
#[test]
fn a_small_map_cleans_in_several_passes() {
    let cfg = config(600);
    let (log, recs, ids) = crash_fixture(Arc::new(sim_fs()), &cfg, Compression::Zstd);
    let mut ends = Vec::new();
    let active = *log.segment_bases().last().unwrap();
    while log.clean_offset() < Offset::new(active) {
        let stats = log
            .clean(&request(10_000, 4), &mut |_| {})
            .unwrap()
            .unwrap();
        ends.push(stats.end_offset);
    }
    assert!(ends.len() > 3, "{ends:?}");
    assert!(ends.windows(2).all(|w| w[0] < w[1]), "{ends:?}");
    assert_eq!(
        read_back(&log, Compression::Zstd, &ids),
        model(&recs, active, true)
    );
}

/// Aborted transactions given as input are removed; without transaction state, transactional
/// batches and control batches are kept whole.
#[test]
fn transactional_batches_follow_the_transaction_input() {
    let cfg = config(100_000);
    let log = open_log(Arc::new(sim_fs()), &cfg, 0);
    let seq = std::cell::Cell::new(0);
    let append = |txn: bool, key: u8, value: u8| {
        let mut b = BatchBuilder::new(BatchAttributes {
            producer_id: 9,
            producer_epoch: 0,
            base_sequence: seq.replace(seq.get() + 1),
            transactional: txn,
            ..BatchAttributes::default()
        });
        b.push(1, Some(&[key]), Some(&[value]), &[]);
        log.append_as_leader::<StorageError, _>(
            &b.finish(),
            LeaderEpoch::new(0),
            1,
            crate::accept_all,
        )
        .unwrap()
        .base_offset
    };
    let committed = append(false, 1, 1); // superseded by the aborted write only if it counted
    let aborted = append(true, 1, 2);
    let marker_offset = log
        .append_txn_marker(
            ProducerId::new(9),
            ProducerEpoch::new(0),
            vltava_record::TransactionResult::Abort,
            0,
            LeaderEpoch::new(0),
            1,
        )
        .unwrap()
        .base_offset;
    // Roll so everything above is in a sealed segment.
    log.append_as_leader::<StorageError, _>(
        &vltava_record::build_batch(0, &[(Some(&b"z"[..]), Some(&b"z"[..]), 1 + SEGMENT_MS)]),
        LeaderEpoch::new(0),
        1 + SEGMENT_MS,
        crate::accept_all,
    )
    .unwrap();
    log.recovery_point_written(log.flush().unwrap());
    let offsets = |log: &Log| -> Vec<Offset> {
        let r = log
            .read(Offset::new(0), Offset::new(i64::MAX), 1 << 20, true)
            .unwrap();
        Batches::new(&r.records)
            .map(|b| Offset::new(b.unwrap().0.base_offset))
            .collect()
    };
    log.clean(&request(5, 1000), &mut |_| {}).unwrap();
    assert_eq!(offsets(&log), vec![committed, aborted, marker_offset]);

    // The log's own record of the abort, as the broker passes it.
    let list = log.aborted_transactions(Offset::new(0), Offset::new(5));
    assert_eq!(
        list.iter()
            .map(|t| (t.producer_id, t.first_offset, t.last_offset))
            .collect::<Vec<_>>(),
        vec![(ProducerId::new(9), aborted, marker_offset)]
    );
    log.init_clean_offset(Offset::new(0), 5);
    let req = CleanRequest {
        transactions: Transactions::Aborted(&list),
        ..request(5, 1000)
    };
    log.clean(&req, &mut |_| {}).unwrap();
    assert_eq!(
        offsets(&log),
        vec![committed, marker_offset],
        "the marker stays while the pass that removed its batches is within delete.retention.ms"
    );

    // Once no batch of its transaction is left and delete.retention.ms has passed, the
    // marker goes too. More data makes the log dirty again.
    let later = 1 + 2 * SEGMENT_MS + cfg.delete_retention_ms;
    log.append_as_leader::<StorageError, _>(
        &vltava_record::build_batch(0, &[(Some(&b"y"[..]), Some(&b"y"[..]), later)]),
        LeaderEpoch::new(0),
        later,
        crate::accept_all,
    )
    .unwrap();
    log.recovery_point_written(log.flush().unwrap());
    let req = CleanRequest {
        transactions: Transactions::Aborted(&list),
        ..request(later, 1000)
    };
    log.clean(&req, &mut |_| {}).unwrap();
    let after = offsets(&log);
    // The marker went; the record after it (in what was the next segment) is read next.
    assert_eq!(after, vec![committed, marker_offset.next()]);
}

/// A crash between writing `.cleaned` files and swapping leaves the originals; a committed
/// `.swap` is finished at the next open.
#[test]
fn recovery_finishes_a_committed_swap_and_drops_an_uncommitted_one() {
    let cfg = config(600);
    let sim = sim_fs();
    let (log, recs, ids) = crash_fixture(Arc::new(sim.clone()), &cfg, Compression::None);
    let flushed = log.offsets().flushed_offset;
    let bases = log.segment_bases();
    drop(log);
    let dir = Path::new(DIR);
    // A stray `.cleaned` file: ignored and removed.
    let cleaned = Segment::log_path_with(dir, bases[0], ".cleaned");
    sim.open(&cleaned, OpenMode::Truncate)
        .unwrap()
        .sync_data()
        .unwrap();
    // A committed swap of the first two segments holding only the second one's batches.
    let second = sim.read(&SegmentFile::Log.path(dir, bases[1])).unwrap();
    let swap = Segment::log_path_with(dir, bases[0], ".swap");
    let f = sim.open(&swap, OpenMode::Truncate).unwrap();
    f.write_all_at(&second, 0).unwrap();
    f.sync_data().unwrap();
    sim.sync_dir(dir).unwrap();
    sim.crash();
    let log = open_log(Arc::new(sim.clone()), &cfg, flushed.get());
    let names = sim.read_dir(dir).unwrap();
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with(".swap") || n.ends_with(".cleaned")),
        "{names:?}"
    );
    assert_eq!(log.segment_bases()[0], bases[0]);
    assert!(!log.segment_bases().contains(&bases[1]));
    let first_kept = recs.iter().position(|r| r.0 >= bases[1]).unwrap();
    assert_eq!(
        read_back(&log, Compression::None, &ids),
        recs[first_kept..].to_vec()
    );
}

/// Cleaner throughput on the real file system: ~100 MB of dirty log (1,000,000 records of
/// 100 bytes over 10,000 keys, in batches of 100) cleaned in one pass, uncompressed and lz4.
/// Run with `cargo test -p vltava-storage cleaner_throughput -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn cleaner_throughput() {
    for codec in [Compression::None, Compression::Lz4] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes: 64 << 20,
            compact: true,
            ..LogConfig::default()
        };
        let log = Log::open(
            dir.path(),
            cfg,
            OpenOptions {
                clean_shutdown: false,
                recovery_point: Offset::new(0),
                log_start_offset: Offset::new(0),
            },
            0,
        )
        .unwrap();
        let value = [b'v'; 80];
        for b in 0..10_000u32 {
            let mut builder = BatchBuilder::new(BatchAttributes {
                compression: codec,
                ..BatchAttributes::default()
            });
            for r in 0..100u32 {
                let key = format!("key-{:08}", (b * 100 + r) % 10_000);
                builder.push(1, Some(key.as_bytes()), Some(&value), &[]);
            }
            log.append_as_leader::<StorageError, _>(
                &builder.finish(),
                LeaderEpoch::new(0),
                1,
                crate::accept_all,
            )
            .unwrap();
        }
        // One more batch in a new segment, so everything above is sealed and cleanable.
        let last = vltava_record::build_batch(0, &[(Some(&b"k"[..]), Some(&b"v"[..]), 1)]);
        log.append_as_leader::<StorageError, _>(
            &last,
            LeaderEpoch::new(0),
            1 + 7 * 24 * 3600 * 1000,
            crate::accept_all,
        )
        .unwrap();
        log.recovery_point_written(log.flush().unwrap());
        let dirty = log.size_bytes();
        let started = std::time::Instant::now();
        let stats = log
            .clean(&request(10, 1 << 20), &mut |_| {})
            .unwrap()
            .unwrap();
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{codec:?}: cleaned {:.1} MB of dirty log in {:.3} s = {:.0} MB/s ({} records removed, {} bytes written)",
            dirty as f64 / 1e6,
            secs,
            dirty as f64 / 1e6 / secs,
            stats.records_removed,
            stats.bytes_written
        );
        assert_eq!(stats.records_removed, 990_000);
    }
}

/// `cleanup.policy=compact,delete`: the cleaner compacts and time retention still deletes
/// old segments; retention leaves a log alone while a cleaning holds it.
#[test]
fn compact_and_delete_together() {
    let cfg = LogConfig {
        delete_retention: true,
        retention_ms: 10_000,
        ..config(600)
    };
    let (log, recs, ids) = crash_fixture(Arc::new(sim_fs()), &cfg, Compression::Gzip);
    let bound = clean_fully(&log, 2_000, 1000);
    assert_eq!(
        read_back(&log, Compression::Gzip, &ids),
        model(&recs, bound, true)
    );
    let before = log.segment_count();
    {
        let _cleaning = log.cleaner.lock();
        assert_eq!(
            log.enforce_retention(1_000_000).unwrap(),
            0,
            "skipped while cleaning"
        );
    }
    assert!(log.enforce_retention(1_000_000).unwrap() > 0);
    assert!(log.segment_count() < before);
    assert!(log.offsets().log_start_offset > Offset::new(0));
}

/// `max.compaction.lag.ms` rolls the active segment of a compacted log and makes a log due
/// whatever its dirty ratio once a dirty record is older than the lag.
#[test]
fn max_compaction_lag_rolls_and_makes_a_log_due() {
    let cfg = LogConfig {
        min_cleanable_dirty_ratio: 0.99,
        max_compaction_lag_ms: 1000,
        segment_ms: i64::MAX / 2,
        ..config(1 << 20)
    };
    let log = open_log(Arc::new(sim_fs()), &cfg, 0);
    let put = |key: u8, t: i64| {
        let b = vltava_record::build_batch(0, &[(Some(&[key][..]), Some(&b"v"[..]), t)]);
        log.append_as_leader::<StorageError, _>(&b, LeaderEpoch::new(0), t, crate::accept_all)
            .unwrap();
    };
    for k in 0..20 {
        put(k, 10);
    }
    put(100, 2000);
    assert_eq!(log.segment_count(), 2, "rolled after the lag");
    log.recovery_point_written(log.flush().unwrap());
    log.clean(&request(2000, 1000), &mut |_| {})
        .unwrap()
        .unwrap();
    assert_eq!(log.clean_offset(), Offset::new(20));
    put(101, 2001);
    put(102, 3100);
    assert_eq!(log.segment_count(), 3);
    log.recovery_point_written(log.flush().unwrap());
    let c = log.cleanable(2500, Offset::new(i64::MAX)).unwrap();
    assert!(c.dirty_ratio < 0.99 && !c.due, "{c:?}");
    let c = log.cleanable(3100, Offset::new(i64::MAX)).unwrap();
    assert!(c.due, "{c:?}");
}
