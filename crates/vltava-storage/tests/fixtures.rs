//! Committed on-disk fixtures: a partition directory and a recovery checkpoint written by
//! this code, opened and checked byte for byte, so a change to any on-disk format (segment,
//! offset index, time index, leader-epoch checkpoint, offset checkpoint) fails here first.
//!
//! Regenerate (only for a deliberate format change) with
//! `cargo test -p vltava-storage --test fixtures -- --ignored generate_fixtures`.

use std::path::{Path, PathBuf};

use vltava_record::{build_batch, BatchHeader, Batches};
use vltava_storage::{accept_all, checkpoint, EpochEntry, Log, LogConfig, OpenOptions};
use vltava_types::{LeaderEpoch, Offset};

const TOPIC: &str = "orders";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v0")
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 300,
        index_interval_bytes: 1,
        ..LogConfig::default()
    }
}

/// One record: key, value, timestamp.
type Rec = (&'static str, &'static str, i64);

/// `(leader epoch, records)` per produce request.
fn appends() -> Vec<(i32, Vec<Rec>)> {
    vec![
        (0, vec![("k0", "a", 1_000), ("k1", "b", 1_001)]),
        (0, vec![("k2", "c", 1_005)]),
        (
            2,
            vec![("k3", "d", 2_000), ("k4", "e", 2_002), ("k5", "f", 2_001)],
        ),
        (2, vec![("k6", "g", 2_010)]),
        (5, vec![("k7", "h", 3_000), ("k8", "i", 3_003)]),
    ]
}

#[test]
#[ignore = "writes the committed fixtures; run by hand for a deliberate format change"]
fn generate_fixtures() {
    let root = fixtures();
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join(vltava_storage::partition_dir_name(TOPIC, 0));
    let opts = OpenOptions {
        clean_shutdown: true,
        recovery_point: Offset::new(0),
        log_start_offset: Offset::new(0),
    };
    let log = Log::open(&dir, config(), opts, 0).unwrap();
    for (epoch, records) in appends() {
        let specs: Vec<_> = records
            .iter()
            .map(|(k, v, ts)| (Some(k.as_bytes()), Some(v.as_bytes()), *ts))
            .collect();
        log.append_as_leader(
            &build_batch(0, &specs),
            LeaderEpoch::new(epoch),
            0,
            accept_all,
        )
        .unwrap();
    }
    log.close().unwrap();
    let mut cp = checkpoint::Checkpoint::new();
    cp.insert((TOPIC.to_string(), 0), log.offsets().flushed_offset.get());
    checkpoint::write(&root.join("recovery-point-offset-checkpoint"), &cp).unwrap();
}

/// Copies the fixture tree so that opening it cannot change the committed files.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

const FILES: [&str; 7] = [
    "00000000000000000000.index",
    "00000000000000000000.log",
    "00000000000000000000.timeindex",
    "00000000000000000006.index",
    "00000000000000000006.log",
    "00000000000000000006.timeindex",
    "leader-epoch-checkpoint",
];

/// Big-endian entries: `.index` (relative offset u32, position u32), `.timeindex` (max
/// timestamp i64, relative offset u32).
const INDEXES: &[(&str, &str)] = &[
    (
        "00000000000000000000.index",
        concat!(
            "00000000_00000000",
            "00000002_00000051",
            "00000003_00000098"
        ),
    ),
    (
        "00000000000000000000.timeindex",
        concat!(
            "00000000000003e9_00000000",
            "00000000000003ed_00000002",
            "00000000000007d2_00000003"
        ),
    ),
    (
        "00000000000000000006.index",
        concat!("00000000_00000000", "00000001_00000047"),
    ),
    (
        "00000000000000000006.timeindex",
        concat!("00000000000007da_00000000", "0000000000000bbb_00000001"),
    ),
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn committed_fixtures_open_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&fixtures(), tmp.path());
    let dir = tmp.path().join("orders-0");
    let file = |name: &str| std::fs::read(dir.join(name)).unwrap();

    // The file set and the text formats, exactly.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(names, FILES);
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("recovery-point-offset-checkpoint")).unwrap(),
        "0\n1\norders 0 9\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("leader-epoch-checkpoint")).unwrap(),
        "0\n3\n0 0\n2 3\n5 7\n"
    );
    // Index files: relative offset and position; max timestamp so far and relative offset.
    for (name, expect) in INDEXES {
        assert_eq!(hex(&file(name)), expect.replace('_', ""), "{name}");
    }

    let recovery = checkpoint::read(&tmp.path().join("recovery-point-offset-checkpoint")).unwrap();
    let recovery_point = recovery[&(TOPIC.to_string(), 0)];
    for clean in [true, false] {
        let log = Log::open(
            &dir,
            config(),
            OpenOptions {
                clean_shutdown: clean,
                recovery_point: Offset::new(recovery_point),
                log_start_offset: Offset::new(0),
            },
            0,
        )
        .unwrap();
        let o = log.offsets();
        assert_eq!(
            (o.log_start_offset, o.log_end_offset, o.flushed_offset),
            (Offset::new(0), Offset::new(9), Offset::new(9))
        );
        assert_eq!(
            log.leader_epochs(),
            [(0, 0), (2, 3), (5, 7)].map(|(epoch, start_offset)| EpochEntry {
                epoch,
                start_offset
            })
        );
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch::new(0)),
            (LeaderEpoch::new(0), Offset::new(3))
        );
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch::new(1)),
            (LeaderEpoch::new(0), Offset::new(3))
        );
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch::new(2)),
            (LeaderEpoch::new(2), Offset::new(7))
        );
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch::new(5)),
            (LeaderEpoch::new(5), Offset::new(9))
        );
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch::new(6)),
            (LeaderEpoch::new(-1), Offset::new(-1))
        );

        // Every stored byte comes back as written, batch by batch.
        let mut stored = Vec::new();
        for name in FILES.iter().filter(|n| n.ends_with(".log")) {
            stored.extend_from_slice(&file(name));
        }
        let mut read = Vec::new();
        let mut headers = Vec::new();
        let mut offset = 0;
        while offset < 9 {
            let r = log
                .read(Offset::new(offset), Offset::new(9), 1 << 20, true)
                .unwrap();
            for item in Batches::new(&r.records) {
                let (h, range) = item.unwrap();
                read.extend_from_slice(&r.records[range]);
                headers.push(h);
                offset = h.next_offset();
            }
        }
        assert_eq!(hex(&read), hex(&stored));
        let summary: Vec<_> = headers
            .iter()
            .map(|h: &BatchHeader| {
                (
                    h.base_offset,
                    h.last_offset(),
                    h.partition_leader_epoch,
                    h.base_timestamp,
                    h.max_timestamp,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (0, 1, 0, 1_000, 1_001),
                (2, 2, 0, 1_005, 1_005),
                (3, 5, 2, 2_000, 2_002),
                (6, 6, 2, 2_010, 2_010),
                (7, 8, 5, 3_000, 3_003),
            ]
        );
        assert_eq!(
            log.offset_for_timestamp(2_001).unwrap(),
            Some((Offset::new(4), 2_002))
        );
        assert_eq!(
            log.offset_for_timestamp(2_005).unwrap(),
            Some((Offset::new(6), 2_010))
        );
        // Only the timestamp: after a reopen its offset comes from the time index, which
        // holds batch starts, while a live log answers the batch's last offset.
        assert_eq!(log.max_timestamp().map(|(_, ts)| ts), Some(3_003));
        log.close().unwrap();
    }
    // Opening and closing, clean or not, rewrote nothing.
    for name in FILES {
        assert_eq!(
            file(name),
            std::fs::read(fixtures().join("orders-0").join(name)).unwrap(),
            "{name} changed on open"
        );
    }
}
