//! A `__consumer_offsets` partition written by this code is committed beside this test: a
//! segment with its indexes, holding committed offsets, a KIP-848 group epoch and tombstones
//! in Kafka's binary layouts. It must keep reading back the same, so neither the segment
//! format nor the record layouts can change unnoticed.

use std::path::PathBuf;

use uuid::Uuid;
use vltava_coordinator::records::{OffsetValue, Record, TopicIds};
use vltava_storage::{accept_all, Log, LogConfig, OpenOptions};
use vltava_types::{LeaderEpoch, Offset};

struct NoTopics;

impl TopicIds for NoTopics {
    fn topic_id(&self, _: &str) -> Option<Uuid> {
        None
    }
    fn topic_name(&self, _: Uuid) -> Option<String> {
        None
    }
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v0/__consumer_offsets-0")
}

fn records() -> Vec<Record> {
    let offset = |p: i32, o: i64| Record::Offset {
        group: "billing".into(),
        topic: "orders".into(),
        partition: p,
        value: Some(OffsetValue {
            offset: o,
            leader_epoch: 3,
            metadata: Some("m".into()),
            commit_timestamp_ms: 1_700_000_000_000,
        }),
    };
    vec![
        offset(0, 42),
        offset(1, 7),
        Record::ConsumerGroupMetadata {
            group: "kip848".into(),
            epoch: Some(5),
        },
        Record::Offset {
            group: "billing".into(),
            topic: "orders".into(),
            partition: 1,
            value: None,
        },
        Record::ConsumerGroupMetadata {
            group: "old".into(),
            epoch: None,
        },
    ]
}

/// Rewrites the fixture: `cargo test -p vltava --test offsets_fixture -- --ignored`.
#[test]
#[ignore]
fn generate_fixture() {
    let dir = fixture();
    let _ = std::fs::remove_dir_all(&dir);
    let opts = OpenOptions {
        clean_shutdown: false,
        recovery_point: Offset::new(0),
        log_start_offset: Offset::new(0),
    };
    let log = Log::open(&dir, LogConfig::default(), opts, 1_700_000_000_000).unwrap();
    // One batch per record, as the coordinator writes them.
    for r in records() {
        let (k, v) = r.encode(&NoTopics).unwrap();
        let batch =
            vltava_record::build_batch(0, &[(Some(k.as_slice()), v.as_deref(), 1_700_000_000_000)]);
        log.append_as_leader(&batch, LeaderEpoch::new(0), 1_700_000_000_000, accept_all)
            .unwrap();
    }
    log.close().unwrap();
}

#[test]
fn the_committed_offsets_partition_reads_back_the_same_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("__consumer_offsets-0");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixture()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let files = |dir: &std::path::Path| -> std::collections::BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().to_string(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    };
    let before = files(&dir);
    let opts = OpenOptions {
        clean_shutdown: true,
        recovery_point: Offset::new(5),
        log_start_offset: Offset::new(0),
    };
    let log = Log::open(&dir, LogConfig::default(), opts, 1_700_000_000_000).unwrap();
    assert_eq!(log.offsets().log_end_offset, Offset::new(5));
    let read = log
        .read(Offset::new(0), Offset::new(i64::MAX), 1 << 20, true)
        .unwrap();
    let mut got = Vec::new();
    for item in vltava_record::Batches::new(&read.records) {
        let (h, range) = item.unwrap();
        assert_eq!(h.partition_leader_epoch, 0);
        for r in vltava_record::uncompressed_records(&read.records[range]).unwrap() {
            got.extend(Record::decode(r.key.unwrap(), r.value, &NoTopics).unwrap());
        }
    }
    assert_eq!(got, records());
    // The first key is Kafka's OffsetCommitKey v1: version, group, topic, partition.
    let (key, _) = records()[0].encode(&NoTopics).unwrap();
    let mut want = vec![0, 1, 0, 7];
    want.extend_from_slice(b"billing");
    want.extend_from_slice(&[0, 6]);
    want.extend_from_slice(b"orders");
    want.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(key, want);
    drop(log);
    // Opening a cleanly closed partition rewrote nothing.
    assert_eq!(files(&dir), before);
}
