//! Power-loss tests: the real log code over [`SimFs`], crashed at random points.
//!
//! Each seed runs a random sequence of leader appends, flushes, checkpoints, segment rolls,
//! DeleteRecords with retention and truncations, then cuts the power, reopens the log as a
//! broker would after an unclean stop (recovery point and log start from the last durable
//! checkpoint files) and checks what a client was promised: every offset below a value a
//! successful `flush()` returned is there with the same bytes, the log reads end to end with
//! dense offsets, and the leader-epoch cache agrees with the batches. Several crash cycles
//! run per seed. A failure prints the seed; `VLTAVA_SEED=<n>` reruns just that one, and
//! `VLTAVA_TRACE=1` prints each step.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use vltava_record::{build_batch, Batches};

use crate::checkpoint::{self, Checkpoint};
use crate::segment::SEALED_HANDLES_PER_LOG;
use crate::sim::{Rng, SimFs};
use crate::*;
use vltava_types::{LeaderEpoch, Offset};

const DIR: &str = "/data/t-0";
const RECOVERY_CHECKPOINT: &str = "/data/recovery-point-offset-checkpoint";
const LOG_START_CHECKPOINT: &str = "/data/log-start-offset-checkpoint";

fn key() -> (String, i32) {
    ("t".to_string(), 0)
}

fn sim_fs() -> SimFs {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new("/data")).unwrap();
    fs.sync_dir(Path::new("/")).unwrap();
    fs
}

/// Opens the log as the broker does at start: offsets from its checkpoint files.
fn open(fs: &SimFs, cfg: &LogConfig, clean_shutdown: bool, now_ms: i64) -> Log {
    let read = |p: &str| {
        checkpoint::read_with(fs, Path::new(p))
            .unwrap()
            .get(&key())
            .copied()
            .unwrap_or(0)
    };
    let opts = OpenOptions {
        clean_shutdown,
        recovery_point: Offset::new(read(RECOVERY_CHECKPOINT)),
        log_start_offset: Offset::new(read(LOG_START_CHECKPOINT)),
    };
    Log::open_with(
        Arc::new(fs.clone()),
        Path::new(DIR),
        cfg.clone(),
        opts,
        now_ms,
    )
    .unwrap()
}

/// Writes both checkpoint files as the broker's periodic task does.
fn write_checkpoints(fs: &SimFs, log: &Log) {
    let o = log.offsets();
    for (path, value) in [
        (RECOVERY_CHECKPOINT, o.flushed_offset),
        (LOG_START_CHECKPOINT, o.log_start_offset),
    ] {
        let cp: Checkpoint = [(key(), value.get())].into_iter().collect();
        checkpoint::write_with(fs, Path::new(path), &cp).unwrap();
    }
}

/// Every batch from the log start to the log end: `(base offset, bytes)`.
fn read_all(log: &Log) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    let o = log.offsets();
    let mut offset = o.log_start_offset;
    while offset < o.log_end_offset {
        let r = log
            .read(offset, Offset::new(i64::MAX), 1 << 20, true)
            .unwrap();
        assert!(
            !r.records.is_empty(),
            "no batch at {offset} below the log end"
        );
        for item in Batches::new(&r.records) {
            let (h, range) = item.unwrap();
            out.push((h.base_offset, r.records[range].to_vec()));
            offset = Offset::new(h.next_offset());
        }
    }
    out
}

/// What the test knows of the log: the batches it holds and what was promised durable.
struct Model {
    /// Batches by base offset, as stored (offsets and epoch assigned).
    batches: BTreeMap<i64, Vec<u8>>,
    /// The highest offset a successful `flush()` returned, lowered by truncations.
    durable: i64,
    epoch: i32,
    now_ms: i64,
}

fn random_config(rng: &mut Rng) -> LogConfig {
    LogConfig {
        segment_bytes: 300 + rng.below(1500) as u64,
        segment_ms: 10_000,
        retention_ms: if rng.coin() { -1 } else { 60_000 },
        retention_bytes: if rng.coin() { -1 } else { 4_000 },
        index_interval_bytes: 1 + rng.below(400) as u64,
        ..LogConfig::default()
    }
}

fn trace(f: impl FnOnce() -> String) {
    if std::env::var_os("VLTAVA_TRACE").is_some() {
        eprintln!("{}", f());
    }
}

/// One random step against the live log.
fn step(rng: &mut Rng, fs: &SimFs, log: &Log, m: &mut Model) {
    let o = log.offsets();
    if std::env::var_os("VLTAVA_TRACE").is_some() {
        eprintln!("{o:?} segments {}", log.segment_count());
    }
    match rng.below(100) {
        0..=54 => {
            if rng.below(20) == 0 {
                m.epoch += 1;
            }
            let n = 1 + rng.below(4);
            let payload = vec![b'v'; 1 + rng.below(200)];
            let recs: Vec<_> = (0..n)
                .map(|i| (None, Some(payload.as_slice()), m.now_ms + i as i64))
                .collect();
            let mut b = build_batch(0, &recs);
            let info = log
                .append_as_leader(&b, LeaderEpoch::new(m.epoch), m.now_ms, accept_all)
                .unwrap();
            // The model keeps the batch as the log must store it.
            vltava_record::set_base_offset(&mut b, info.base_offset.get());
            vltava_record::set_partition_leader_epoch(&mut b, m.epoch);
            m.batches.insert(info.base_offset.get(), b);
            trace(|| format!("append {info:?}"));
        }
        55..=69 => {
            let flushed = log.flush().unwrap();
            assert_eq!(flushed, o.log_end_offset);
            m.durable = m.durable.max(flushed.get());
            trace(|| format!("flush {flushed}"));
        }
        70..=77 => {
            trace(|| "checkpoint".into());
            write_checkpoints(fs, log)
        }
        78..=83 => {
            let span = o.log_end_offset.since(o.log_start_offset) as usize;
            let target = o.log_start_offset.plus(rng.below(span + 1) as i64);
            log.delete_records_before(target).unwrap();
            let n = log.enforce_retention(m.now_ms).unwrap();
            trace(|| format!("delete records before {target}, {n} segments deleted"));
        }
        84..=89 => {
            let bases: Vec<i64> = m
                .batches
                .range(o.log_start_offset.get()..)
                .map(|(b, _)| *b)
                .chain([o.log_end_offset.get()])
                .collect();
            let offset = bases[rng.below(bases.len())];
            log.truncate_to(Offset::new(offset)).unwrap();
            trace(|| format!("truncate to {offset}"));
            m.batches.split_off(&offset);
            m.durable = m.durable.min(offset);
            // As Kafka's LogManager.truncateTo does: the recovery point checkpoint must not
            // stay above the cut, or new unflushed batches there would count as durable.
            write_checkpoints(fs, log);
        }
        _ => m.now_ms += 1 + rng.below(20_000) as i64,
    }
}

/// Checks a log reopened after a crash against what was promised, and brings the model in
/// line with it.
fn check_recovered(log: &Log, m: &mut Model, start_before: i64) {
    let o = log.offsets();
    assert!(!log.is_poisoned(), "recovered log refuses writes");
    assert!(
        o.log_end_offset >= Offset::new(m.durable),
        "flushed data lost: log end {} below the flushed offset {}",
        o.log_end_offset,
        m.durable
    );
    assert!(
        o.log_start_offset <= Offset::new(start_before),
        "log start moved forward: {} > {start_before}",
        o.log_start_offset
    );
    let batches = read_all(log);
    let mut next = None;
    for (base, bytes) in &batches {
        let h = vltava_record::BatchHeader::parse(bytes).unwrap();
        if let Some(n) = next {
            assert_eq!(*base, n, "offsets are not dense");
        } else {
            assert!(
                *base <= o.log_start_offset.get() && h.last_offset() >= o.log_start_offset.get()
            );
        }
        next = Some(h.next_offset());
        match m.batches.get(base) {
            Some(expected) => assert!(expected == bytes, "batch at {base} changed"),
            None => panic!("batch at {base} was never appended (or was truncated away)"),
        }
    }
    assert_eq!(
        next.unwrap_or(o.log_start_offset.get()),
        o.log_end_offset.get()
    );
    // Nothing below the flushed offset is missing (from where the log started before).
    let from = start_before.max(o.log_start_offset.get());
    for (base, _) in m.batches.range(from..m.durable.max(from)) {
        assert!(
            batches.iter().any(|(b, _)| b == base),
            "flushed batch at {base} is gone"
        );
    }
    // The epoch cache: increasing, within the log, and naming each batch's epoch.
    let epochs = log.leader_epochs();
    for w in epochs.windows(2) {
        assert!(w[0].epoch < w[1].epoch && w[0].start_offset < w[1].start_offset);
    }
    if let Some(last) = epochs.last() {
        assert!(last.start_offset <= o.log_end_offset.get());
    }
    for (base, bytes) in &batches {
        let h = vltava_record::BatchHeader::parse(bytes).unwrap();
        if let Some(e) = epochs.iter().rev().find(|e| e.start_offset <= *base) {
            assert_eq!(
                e.epoch, h.partition_leader_epoch,
                "epoch cache disagrees with the batch at {base}"
            );
        }
    }
    m.batches.split_off(&o.log_end_offset.get());
    m.durable = o.flushed_offset.get();
    m.epoch = m.epoch.max(epochs.last().map_or(0, |e| e.epoch));
}

/// One seed: a few crash cycles. Returns how many offsets were appended but lost to crashes.
fn run(seed: u64, torn: bool) -> i64 {
    let mut rng = Rng::new(seed);
    let fs = sim_fs();
    let cfg = random_config(&mut rng);
    let mut m = Model {
        batches: BTreeMap::new(),
        durable: 0,
        epoch: 0,
        now_ms: 0,
    };
    let mut lost = 0;
    let mut log = open(&fs, &cfg, false, 0);
    write_checkpoints(&fs, &log);
    for _ in 0..1 + rng.below(3) {
        for _ in 0..rng.below(80) {
            step(&mut rng, &fs, &log, &mut m);
        }
        let before = log.offsets();
        trace(|| format!("crash at {before:?}"));
        drop(log);
        if torn {
            fs.crash_torn(rng.next());
        } else {
            fs.crash();
        }
        log = open(&fs, &cfg, false, m.now_ms);
        trace(|| {
            let mut names = fs.read_dir(Path::new(DIR)).unwrap();
            names.sort();
            let sizes: Vec<_> = names
                .iter()
                .map(|n| (n.clone(), fs.read(&Path::new(DIR).join(n)).unwrap().len()))
                .collect();
            format!("reopened at {:?}: {sizes:?}", log.offsets())
        });
        check_recovered(&log, &mut m, before.log_start_offset.get());
        // As the broker does once its logs are loaded, before it serves anything.
        write_checkpoints(&fs, &log);
        lost += before.log_end_offset.since(log.offsets().log_end_offset);
    }
    lost
}

/// Runs `f` over many seeds (or `VLTAVA_SEED` alone; `VLTAVA_SEEDS=<n>` runs `n` from the
/// same start for a longer search), naming the seed that fails.
fn for_seeds(seeds: std::ops::Range<u64>, mut f: impl FnMut(u64)) {
    let seeds: Vec<u64> = match (std::env::var("VLTAVA_SEED"), std::env::var("VLTAVA_SEEDS")) {
        (Ok(s), _) => vec![s.parse().expect("VLTAVA_SEED is a number")],
        (_, Ok(n)) => (seeds.start..seeds.start + n.parse::<u64>().expect("a number")).collect(),
        _ => seeds.collect(),
    };
    for seed in seeds {
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(seed))) {
            eprintln!("power-loss test failed with seed {seed}; rerun with VLTAVA_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}

#[test]
fn flushed_data_survives_power_loss() {
    for_seeds(0..300, |seed| {
        run(seed, false);
    });
}

#[test]
fn flushed_data_survives_torn_writes() {
    for_seeds(1_000_000..1_000_300, |seed| {
        run(seed, true);
    });
}

/// The simulation really drops what was not synced: without this, every test above would
/// pass against a broker that never fsyncs.
#[test]
fn unflushed_data_can_be_lost() {
    let mut lost = 0;
    for_seeds(0..40, |seed| lost += run(seed, false));
    assert!(lost > 0, "no seed lost any unflushed offset");
}

/// Descriptors do not grow with segments: only the active segment holds its three files,
/// plus a bounded few sealed ones (unsynced or cached after a read).
#[test]
fn open_files_do_not_grow_with_segments() {
    let bound = 3 + 2 + SEALED_HANDLES_PER_LOG;
    let mut counts = Vec::new();
    for batches in [20, 400] {
        let fs = sim_fs();
        let cfg = LogConfig {
            segment_bytes: 200,
            ..LogConfig::default()
        };
        let log = open(&fs, &cfg, true, 0);
        for i in 0..batches {
            let b = build_batch(0, &[(None, Some(&[b'x'; 100][..]), i)]);
            log.append_as_leader(&b, LeaderEpoch::new(0), 0, accept_all)
                .unwrap();
            assert!(fs.open_files() <= bound, "{} open", fs.open_files());
        }
        assert!(log.segment_count() as i64 >= batches / 2);
        log.close().unwrap();
        drop(log);
        let log = open(&fs, &cfg, true, 0);
        assert_eq!(
            fs.open_files(),
            3,
            "a reopened log opens its active segment only"
        );
        assert_eq!(read_all(&log).len() as i64, batches);
        assert!(fs.open_files() <= 3 + SEALED_HANDLES_PER_LOG);
        counts.push(fs.open_files());
        drop(log);
        assert_eq!(fs.open_files(), 0);
    }
    assert_eq!(counts[0], counts[1]);
}
