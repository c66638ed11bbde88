//! A metadata log written by this code is committed beside this test; it must keep opening
//! to the same image, so a change to the record format cannot slip by.

use std::path::PathBuf;

use uuid::Uuid;
use vltava_metadata::{MetadataDelta, MetadataImage, MetadataLog, MetadataRecord, ResourceType};
use vltava_types::{LeaderEpoch, NodeId};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v0/metadata.log")
}

fn records() -> Vec<MetadataRecord> {
    let orders = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    let gone = Uuid::from_u128(7);
    vec![
        MetadataRecord::TopicRecord {
            name: "orders".into(),
            topic_id: orders,
        },
        MetadataRecord::PartitionRecord {
            topic_id: orders,
            partition_id: 0,
            replicas: vec![NodeId::new(1)],
            isr: vec![NodeId::new(1)],
            leader: NodeId::new(1),
            leader_epoch: LeaderEpoch::new(0),
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        },
        MetadataRecord::PartitionRecord {
            topic_id: orders,
            partition_id: 1,
            replicas: vec![NodeId::new(2), NodeId::new(1)],
            isr: vec![NodeId::new(2)],
            leader: NodeId::new(2),
            leader_epoch: LeaderEpoch::new(3),
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        },
        MetadataRecord::ConfigRecord {
            resource_type: ResourceType::Topic,
            resource_name: "orders".into(),
            name: "retention.ms".into(),
            value: Some("86400000".into()),
        },
        MetadataRecord::ConfigRecord {
            resource_type: ResourceType::Broker,
            resource_name: String::new(),
            name: "log.retention.ms".into(),
            value: None,
        },
        MetadataRecord::TopicRecord {
            name: "gone".into(),
            topic_id: gone,
        },
        MetadataRecord::RemoveTopicRecord { topic_id: gone },
    ]
}

/// Rewrites the fixture: `cargo test -p vltava-metadata --test fixtures -- --ignored`.
#[test]
#[ignore]
fn generate_fixture() {
    let path = fixture();
    let _ = std::fs::remove_file(&path);
    let (mut log, _) = MetadataLog::open(&path).unwrap();
    log.append(&records()).unwrap();
}

#[test]
fn the_committed_metadata_log_opens_to_the_same_image() {
    let bytes = std::fs::read(fixture()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("metadata.log");
    std::fs::write(&copy, &bytes).unwrap();
    let (_, image) = MetadataLog::open(&copy).unwrap();
    let (expected, _) = MetadataDelta::apply(&MetadataImage::default(), &records());
    assert_eq!(image, expected);
    // Opening rewrote nothing.
    assert_eq!(std::fs::read(&copy).unwrap(), bytes);
    // One line per record, each "<crc32c as 8 hex digits> <json>".
    let text = String::from_utf8(bytes).unwrap();
    assert_eq!(text.lines().count(), records().len());
    let first = text.lines().next().unwrap();
    assert_eq!(first.find(' '), Some(8));
    assert!(
        first[9..].starts_with(r#"{"type":"TopicRecord","name":"orders","topic_id":"01234567-89ab-cdef-0123-456789abcdef"}"#),
        "{first}"
    );
}
