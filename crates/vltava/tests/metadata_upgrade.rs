//! A data dir from before the metadata quorum keeps its metadata in
//! `__cluster_metadata/metadata.log`; the first start with the quorum imports it once.

use crate::common;

use std::path::PathBuf;

#[test]
fn a_pre_quorum_metadata_log_is_imported_once() {
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("__cluster_metadata");
    std::fs::create_dir_all(&meta).unwrap();
    // The committed fixture of the pre-quorum format: topic "orders" (2 partitions), a
    // topic config, and a topic "gone" created and removed.
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../vltava-metadata/tests/fixtures/v0/metadata.log");
    std::fs::copy(&fixture, meta.join("metadata.log")).unwrap();

    let rt = common::runtime();
    for run in 0..2 {
        let broker = common::start_broker(&rt, dir.path(), &[]);
        let image = broker.broker.controller.image();
        let orders = image.topic("orders").expect("imported topic");
        assert_eq!(orders.partitions.len(), 2, "run {run}");
        assert_eq!(
            image.topic_configs("orders").unwrap()["retention.ms"],
            "86400000"
        );
        assert!(image.topic("gone").is_none());
        assert!(broker.broker.partitions.get("orders", 0).is_some());
        assert!(!meta.join("metadata.log").exists());
        assert!(meta.join("metadata.log.imported").exists());
        assert!(meta.join("raft.log").exists());
        rt.block_on(broker.shutdown());
    }
}
