//! Topic administration, configs, offsets, auto-creation and retention through librdkafka.

use std::time::{Duration, Instant};

use crate::common::*;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic,
    OwnedResourceSpecifier, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

fn admin(addr: std::net::SocketAddr) -> AdminClient<DefaultClientContext> {
    client_config(addr).create().unwrap()
}

fn produce_n(addr: std::net::SocketAddr, topic: &str, n: usize, ts: Option<i64>) {
    let p = checked_producer(
        client_config(addr)
            .set("acks", "1")
            .set("batch.num.messages", "1"),
    );
    for i in 0..n {
        let v = format!("v{i}-{}", "p".repeat(200));
        let mut r = BaseRecord::to(topic).key("k").payload(&v);
        if let Some(ts) = ts {
            r = r.timestamp(ts);
        }
        p.send(r).unwrap();
        p.poll(Duration::ZERO);
    }
    flush_delivered(&p, n, Duration::from_secs(30));
}

fn opts() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))
}

#[test]
fn topic_lifecycle_and_configs() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[("log.retention.hours", "48")]);
    let a = admin(broker.local_addr);

    let validate = opts().validate_only(true);
    let r = rt
        .block_on(a.create_topics(
            &[NewTopic::new("ghost", 3, TopicReplication::Fixed(1))],
            &validate,
        ))
        .unwrap();
    assert!(r[0].is_ok());
    let md = a
        .inner()
        .fetch_metadata(None, Duration::from_secs(5))
        .unwrap();
    assert!(
        md.topics().iter().all(|t| t.name() != "ghost"),
        "validate_only creates nothing"
    );

    let t = NewTopic::new("orders", 3, TopicReplication::Fixed(1))
        .set("cleanup.policy", "delete")
        .set("retention.ms", "3600000");
    let r = rt.block_on(a.create_topics(&[t], &opts())).unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    let r = rt
        .block_on(a.create_topics(
            &[NewTopic::new("orders", 1, TopicReplication::Fixed(1))],
            &opts(),
        ))
        .unwrap();
    assert_eq!(
        r[0],
        Err(("orders".into(), RDKafkaErrorCode::TopicAlreadyExists))
    );
    let r = rt
        .block_on(a.create_topics(
            &[NewTopic::new("rf3", 1, TopicReplication::Fixed(3))],
            &opts(),
        ))
        .unwrap();
    assert_eq!(
        r[0],
        Err(("rf3".into(), RDKafkaErrorCode::InvalidReplicationFactor))
    );

    let md = a
        .inner()
        .fetch_metadata(Some("orders"), Duration::from_secs(5))
        .unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 3);

    // DescribeConfigs reports the topic override, the static broker setting and defaults.
    let r = rt
        .block_on(a.describe_configs(&[ResourceSpecifier::Topic("orders")], &opts()))
        .unwrap();
    let res = r[0].as_ref().unwrap();
    let get = |name: &str| res.entries.iter().find(|e| e.name == name).unwrap();
    assert_eq!(get("retention.ms").value.as_deref(), Some("3600000"));
    assert_eq!(get("retention.ms").source, ConfigSource::DynamicTopic);
    assert_eq!(get("segment.bytes").source, ConfigSource::Default);
    assert_eq!(get("segment.bytes").value.as_deref(), Some("1073741824"));
    let r = rt
        .block_on(a.describe_configs(&[ResourceSpecifier::Topic("billing")], &opts()))
        .unwrap();
    // rust-rdkafka drops per-resource errors (bad_input.rs checks the error code itself).
    assert!(
        r[0].as_ref().is_ok_and(|c| c.entries.is_empty()),
        "unknown topic has no configs"
    );

    let r = rt
        .block_on(a.describe_configs(&[ResourceSpecifier::Broker(1)], &opts()))
        .unwrap();
    let res = r[0].as_ref().unwrap();
    let ret = res
        .entries
        .iter()
        .find(|e| e.name == "log.retention.ms")
        .unwrap();
    assert_eq!(ret.value.as_deref(), Some("172800000"));
    assert_eq!(ret.source, ConfigSource::StaticBroker);

    // AlterConfigs replaces the overrides; the topic now uses the broker's retention.
    let alter = AlterConfig::new(ResourceSpecifier::Topic("orders")).set("segment.ms", "60000");
    let r = rt.block_on(a.alter_configs(&[alter], &opts())).unwrap();
    assert_eq!(r[0], Ok(OwnedResourceSpecifier::Topic("orders".into())));
    let r = rt
        .block_on(a.describe_configs(&[ResourceSpecifier::Topic("orders")], &opts()))
        .unwrap();
    let res = r[0].as_ref().unwrap();
    let ret = res
        .entries
        .iter()
        .find(|e| e.name == "retention.ms")
        .unwrap();
    assert_eq!(ret.value.as_deref(), Some("172800000"));
    assert_eq!(ret.source, ConfigSource::StaticBroker);
    let seg = res.entries.iter().find(|e| e.name == "segment.ms").unwrap();
    assert_eq!(seg.value.as_deref(), Some("60000"));
    let bad = AlterConfig::new(ResourceSpecifier::Topic("orders")).set("segment.ms", "-5");
    // rust-rdkafka reports every AlterConfigs resource as Ok; check the refusal by its effect.
    rt.block_on(a.alter_configs(&[bad], &opts())).unwrap();
    let r = rt
        .block_on(a.describe_configs(&[ResourceSpecifier::Topic("orders")], &opts()))
        .unwrap();
    let seg = r[0]
        .as_ref()
        .unwrap()
        .entries
        .iter()
        .find(|e| e.name == "segment.ms")
        .unwrap();
    assert_eq!(
        seg.value.as_deref(),
        Some("60000"),
        "invalid value was refused"
    );

    let r = rt
        .block_on(a.create_partitions(&[NewPartitions::new("orders", 5)], &opts()))
        .unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    let r = rt
        .block_on(a.create_partitions(&[NewPartitions::new("orders", 2)], &opts()))
        .unwrap();
    assert_eq!(
        r[0],
        Err(("orders".into(), RDKafkaErrorCode::InvalidPartitions))
    );
    let md = a
        .inner()
        .fetch_metadata(Some("orders"), Duration::from_secs(5))
        .unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 5);

    let r = rt.block_on(a.delete_topics(&["orders"], &opts())).unwrap();
    assert!(r[0].is_ok());
    let r = rt.block_on(a.delete_topics(&["orders"], &opts())).unwrap();
    assert_eq!(
        r[0],
        Err(("orders".into(), RDKafkaErrorCode::UnknownTopicOrPartition))
    );
    assert!(
        !dir.path().join("orders-0").exists() || {
            std::thread::sleep(Duration::from_millis(200));
            !dir.path().join("orders-0").exists()
        }
    );
    rt.block_on(broker.shutdown());

    // Metadata survives a restart.
    let broker = start_broker(&rt, dir.path(), &[]);
    let md = admin(broker.local_addr)
        .inner()
        .fetch_metadata(None, Duration::from_secs(5))
        .unwrap();
    let names: Vec<&str> = md.topics().iter().map(|t| t.name()).collect();
    assert_eq!(
        names,
        vec!["__consumer_offsets", "__transaction_state"],
        "deleted topic stays deleted; the internal topics remain"
    );
    rt.block_on(broker.shutdown());
}

#[test]
fn auto_create_follows_broker_config() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[("num.partitions", "4")]);
    produce_n(broker.local_addr, "auto-made", 10, None);
    let md = admin(broker.local_addr)
        .inner()
        .fetch_metadata(Some("auto-made"), Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        md.topics()[0].partitions().len(),
        4,
        "created with num.partitions"
    );
    rt.block_on(broker.shutdown());

    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[("auto.create.topics.enable", "false")]);
    let p = checked_producer(client_config(broker.local_addr).set("message.timeout.ms", "3000"));
    p.send(BaseRecord::to("not-there").key("k").payload("v"))
        .unwrap();
    // The message times out after 3 s at the latest, so the flush ends with its report.
    p.flush(Duration::from_secs(10)).unwrap();
    let reports = p.context().take();
    let md = admin(broker.local_addr)
        .inner()
        .fetch_metadata(Some("not-there"), Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        md.topics()[0].error(),
        Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
    );
    assert!(
        matches!(reports[..], [Err(_)]),
        "one failed delivery for a topic that cannot be created: {reports:?}"
    );
    rt.block_on(broker.shutdown());
}

#[test]
fn offsets_delete_records_and_retention() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(
        &rt,
        dir.path(),
        &[("log.retention.check.interval.ms", "100")],
    );
    let addr = broker.local_addr;
    let a = admin(addr);
    let t = NewTopic::new("ret", 1, TopicReplication::Fixed(1))
        .set("segment.bytes", "2000")
        .set("retention.ms", "-1");
    assert!(rt.block_on(a.create_topics(&[t], &opts())).unwrap()[0].is_ok());
    let old = 1_000_000_000_000; // 2001: far past any retention
    produce_n(addr, "ret", 50, Some(old));
    produce_n(addr, "ret", 50, None);

    let consumer: BaseConsumer = client_config(addr)
        .set("group.id", "unused")
        .create()
        .unwrap();
    assert_eq!(
        consumer
            .fetch_watermarks("ret", 0, Duration::from_secs(5))
            .unwrap(),
        (0, 100)
    );
    // ListOffsets by timestamp: the first record at or after `now - 1h` is the first new one.
    let mut tpl = TopicPartitionList::new();
    let an_hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 3_600_000;
    tpl.add_partition_offset("ret", 0, Offset::Offset(an_hour_ago))
        .unwrap();
    let found = consumer
        .offsets_for_times(tpl, Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        found.find_partition("ret", 0).unwrap().offset(),
        Offset::Offset(50)
    );

    // DeleteRecords moves the log start offset.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("ret", 0, Offset::Offset(10))
        .unwrap();
    let r = rt.block_on(a.delete_records(&tpl, &opts())).unwrap();
    assert_eq!(
        r.find_partition("ret", 0).unwrap().offset(),
        Offset::Offset(10)
    );
    assert_eq!(
        consumer
            .fetch_watermarks("ret", 0, Duration::from_secs(5))
            .unwrap(),
        (10, 100)
    );

    // Time retention deletes the segments holding only 2001 records.
    let alter = AlterConfig::new(ResourceSpecifier::Topic("ret"))
        .set("segment.bytes", "2000")
        .set("retention.ms", "86400000");
    assert!(rt.block_on(a.alter_configs(&[alter], &opts())).unwrap()[0].is_ok());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (low, high) = consumer
            .fetch_watermarks("ret", 0, Duration::from_secs(5))
            .unwrap();
        assert_eq!(high, 100);
        if low >= 45 {
            assert!(
                low <= 50,
                "no segment with current records was deleted (low = {low})"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention did not run (low = {low})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let segments = std::fs::read_dir(dir.path().join("ret-0"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log")
        });
    assert!(
        segments.count() < 100 * 250 / 2000,
        "old segment files are gone"
    );
    rt.block_on(broker.shutdown());

    // The log start offset survives a restart.
    let broker = start_broker(&rt, dir.path(), &[]);
    let consumer: BaseConsumer = client_config(broker.local_addr)
        .set("group.id", "unused")
        .create()
        .unwrap();
    let (low, high) = consumer
        .fetch_watermarks("ret", 0, Duration::from_secs(5))
        .unwrap();
    assert!((45..=50).contains(&low) && high == 100, "({low}, {high})");
    rt.block_on(broker.shutdown());
}
