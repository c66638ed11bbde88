//! Log compaction end to end: librdkafka writes a compacted topic and reads back the latest
//! value of each key; keyless records are refused as Kafka refuses them; `__consumer_offsets`
//! stays bounded under a long commit loop and its offsets survive a restart.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;
use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use vltava_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use vltava_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use vltava_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use vltava_protocol::messages::*;
use vltava_protocol::{ApiKey, ErrorCode, StrBytes};

const SEGMENT_BYTES: usize = 65_536;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn create_compacted(rt: &tokio::runtime::Runtime, addr: SocketAddr, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = client_config(addr).create().unwrap();
    let segment = SEGMENT_BYTES.to_string();
    let t = NewTopic::new(name, partitions, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("segment.bytes", &segment)
        .set("min.cleanable.dirty.ratio", "0.01")
        .set("delete.retention.ms", "2000");
    let res = rt
        .block_on(admin.create_topics(&[t], &AdminOptions::new()))
        .unwrap();
    assert!(res[0].is_ok(), "{res:?}");
}

fn send(
    producer: &rdkafka::producer::BaseProducer<Deliveries>,
    topic: &str,
    key: &str,
    value: Option<&[u8]>,
) {
    let mut record = BaseRecord::<str, [u8], ()>::to(topic).key(key);
    if let Some(v) = value {
        record = record.payload(v);
    }
    send_retrying(producer, record);
}

/// Every record of partition 0 from the beginning to the high watermark: (offset, key,
/// value), read by a consumer of `group` with librdkafka's defaults.
fn read_all(addr: SocketAddr, topic: &str, group: &str) -> Vec<(i64, String, Option<Vec<u8>>)> {
    let consumer: BaseConsumer = client_config(addr).set("group.id", group).create().unwrap();
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out: Vec<(i64, String, Option<Vec<u8>>)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.last().is_none_or(|(o, _, _)| o + 1 < high) {
        assert!(
            Instant::now() < deadline,
            "read stalled at {:?}",
            out.last()
        );
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            out.push((
                m.offset(),
                String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
                m.payload().map(<[u8]>::to_vec),
            ));
        }
    }
    out
}

/// 100,000 updates over 1,000 keys and 100 tombstones, through librdkafka with its defaults.
/// Once cleaned, reading from the start gives the latest value of each live key once, at
/// increasing offsets; tombstones stay until `delete.retention.ms`, then go; a group's
/// committed offset is untouched by the cleaning.
#[test]
fn a_compacted_topic_keeps_the_latest_value_of_each_key() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[("log.cleaner.backoff.ms", "100")]);
    let addr = broker.local_addr;
    create_compacted(&rt, addr, "kv", 1);

    let producer = checked_producer(&client_config(addr));
    let mut latest: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
    for i in 0..100_000 {
        let key = format!("key-{}", i % 1000);
        let value = format!("value-{i}").into_bytes();
        send(&producer, "kv", &key, Some(&value));
        latest.insert(key, Some(value));
    }
    for k in 0..100 {
        let key = format!("key-{}", k * 10);
        send(&producer, "kv", &key, None);
        latest.insert(key, None);
    }
    flush_delivered(&producer, 100_100, Duration::from_secs(60));
    // A record larger than a segment, in a batch of its own, rolls the log, so every update
    // is in a sealed, cleanable segment.
    let filler = vec![b'f'; SEGMENT_BYTES];
    send(&producer, "kv", "filler", Some(&filler));
    flush_delivered(&producer, 1, Duration::from_secs(60));

    // A consumer group commits a position before cleaning.
    let consumer: BaseConsumer = client_config(addr)
        .set("group.id", "readers")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("kv", 0, Offset::Offset(4242))
        .unwrap();
    consumer.commit(&tpl, CommitMode::Sync).unwrap();

    let expect = |tombstones: bool| -> Vec<(String, Option<Vec<u8>>)> {
        let mut e: Vec<_> = latest
            .iter()
            .filter(|(_, v)| tombstones || v.is_some())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        e.push(("filler".into(), Some(filler.clone())));
        e.sort();
        e
    };
    let wait_for = |want: Vec<(String, Option<Vec<u8>>)>, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = read_all(addr, "kv", "reader-check");
            assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "offsets increase");
            let mut seen: Vec<_> = got.into_iter().map(|(_, k, v)| (k, v)).collect();
            seen.sort();
            if seen == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {} records read, {} expected",
                seen.len(),
                want.len()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    // Cleaned: one record per key, tombstones kept for now.
    wait_for(expect(true), "first cleaning");

    // Past delete.retention.ms, the next cleaning (a new roll makes the log dirty) drops
    // the tombstones.
    std::thread::sleep(Duration::from_millis(2100));
    send(&producer, "kv", "filler", Some(&filler));
    flush_delivered(&producer, 1, Duration::from_secs(60));
    // The first filler stays: the second one is in the active segment, which the cleaner's
    // map never covers.
    let mut after = expect(false);
    after.push(("filler".into(), Some(filler.clone())));
    after.sort();
    wait_for(after, "tombstones expire");

    let committed = consumer
        .committed_offsets(
            {
                let mut t = TopicPartitionList::new();
                t.add_partition("kv", 0);
                t
            },
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(
        committed.find_partition("kv", 0).unwrap().offset(),
        Offset::Offset(4242)
    );

    // `vltava cleaner-status` reads the cleaner's position from the data dir.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vltava"))
        .args(["cleaner-status", "--topic", "kv", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("kv "))
        .unwrap_or_else(|| panic!("no row for kv in {text}"))
        .split_whitespace()
        .collect();
    // Cleaned up to the active segment, which holds only the second filler.
    assert_eq!(row[1], "0");
    assert_eq!(row[2], "100101", "{text}");

    // `vltava topic describe` asks the broker (DescribeLogDirs) for the same position.
    let describe = |format: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vltava"))
            .args(["topic", "describe", "kv", "-o", format, "-b"])
            .arg(addr.to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let json: serde_json::Value = serde_json::from_str(&describe("json")).unwrap();
    let cleaner = &json["partitions"][0]["cleaner"];
    assert_eq!(cleaner["clean_offset"], 100101, "{json}");
    let ratio = cleaner["dirty_ratio"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&ratio), "{json}");
    let table = describe("table");
    assert!(table.contains("CLEANED TO"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().nth(4) == Some("100101")),
        "{table}"
    );
    rt.block_on(broker.shutdown());
}

/// A compacted topic refuses a batch with keyless records: INVALID_RECORD with a record
/// error per keyless record (its index in the batch) and a message; the other partition of
/// the same request is appended.
#[test]
fn keyless_records_are_refused_by_a_compacted_topic() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[]);
    create_compacted(&rt, broker.local_addr, "kv", 2);
    let mut c = RawClient::connect(broker.local_addr);
    let batch =
        |recs: &[vltava_record::RecordSpec<'_>]| Bytes::from(vltava_record::build_batch(0, recs));
    let keyless = batch(&[
        (Some(b"a"), Some(b"1"), 1),
        (None, Some(b"2"), 1),
        (Some(b"b"), Some(b"3"), 1),
        (None, Some(b"4"), 1),
    ]);
    let keyed = batch(&[(Some(b"a"), Some(b"1"), 1)]);
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s("kv")))
            .with_partition_data(vec![
                PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(keyless)),
                PartitionProduceData::default()
                    .with_index(1)
                    .with_records(Some(keyed)),
            ])]);
    let resp: ProduceResponse = c.call(ApiKey::Produce, 9, &req);
    let parts = &resp.responses[0].partition_responses;
    assert_eq!(parts[0].error_code, ErrorCode::InvalidRecord.code());
    let indexes: Vec<i32> = parts[0]
        .record_errors
        .iter()
        .map(|e| e.batch_index)
        .collect();
    assert_eq!(indexes, vec![1, 3]);
    assert!(parts[0].record_errors[0]
        .batch_index_error_message
        .as_deref()
        .is_some_and(|m| m.contains("without key")));
    assert!(parts[0]
        .error_message
        .as_deref()
        .is_some_and(|m| m.contains("2 record errors")));
    assert_eq!((parts[1].error_code, parts[1].base_offset), (0, 0));

    // librdkafka sees the same refusal as a failed delivery.
    let producer = checked_producer(&client_config(broker.local_addr));
    producer
        .send(
            BaseRecord::<(), [u8], ()>::to("kv")
                .partition(0)
                .payload(&b"v"[..]),
        )
        .unwrap();
    let _ = producer.flush(Duration::from_secs(10));
    let reports = producer.context().take();
    assert_eq!(reports.len(), 1);
    assert!(
        matches!(&reports[0], Err(e) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::InvalidRecord)),
        "{reports:?}"
    );
    rt.block_on(broker.shutdown());
}

fn commit(c: &mut RawClient, group: &str, offset: i64) {
    let topics = vec![OffsetCommitRequestTopic::default()
        .with_name(TopicName(s("t")))
        .with_partitions(
            (0..10)
                .map(|p| {
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset + i64::from(p))
                })
                .collect(),
        )];
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(s(""))
        .with_topics(topics);
    let r: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 8, &req);
    assert!(r.topics[0].partitions.iter().all(|p| p.error_code == 0));
}

fn committed(c: &mut RawClient, group: &str) -> Vec<i64> {
    let req = OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(Some(vec![OffsetFetchRequestTopics::default()
            .with_name(TopicName(s("t")))
            .with_partition_indexes((0..10).collect())]))]);
    let r: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 8, &req);
    r.groups[0].topics[0]
        .partitions
        .iter()
        .map(|p| p.committed_offset)
        .collect()
}

fn offsets_topic_bytes(broker: &vltava_broker::BrokerHandle) -> u64 {
    broker
        .broker
        .partitions
        .topic("__consumer_offsets")
        .iter()
        .map(|p| p.size_bytes())
        .sum()
}

/// 100,000 offset commits (10 groups, 1,000 commits of 10 partitions each, in parallel):
/// the cleaner keeps `__consumer_offsets` near its live size, and every group's offsets are
/// right after a restart.
#[test]
fn consumer_offsets_stay_bounded_under_a_long_commit_loop() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let overrides = [
        ("log.cleaner.backoff.ms", "100"),
        ("offsets.topic.segment.bytes", "65536"),
    ];
    let broker = start_broker(&rt, dir.path(), &overrides);
    let addr = broker.local_addr;
    RawClient::connect(addr).create_topic("t", 10);
    const COMMITS: i64 = 1000;
    // Two rounds of 100,000 commits: the topic's size after the second is within the same
    // bound as after the first, so it does not grow with the number of commits.
    for round in 0..2 {
        std::thread::scope(|scope| {
            for g in 0..10 {
                scope.spawn(move || {
                    let mut c = RawClient::connect(addr);
                    for i in 0..COMMITS {
                        commit(&mut c, &format!("group-{g}"), i * 100);
                    }
                });
            }
        });
        let records: i64 = broker
            .broker
            .partitions
            .topic("__consumer_offsets")
            .iter()
            .map(|p| p.offsets().log_end_offset.get())
            .sum();
        assert!(records >= (round + 1) * 100_000);
        // Cleaned down to the live records plus each used partition's uncleaned tail: its
        // active segment and what the dirty ratio leaves, about three segments.
        let bound = 10 * 3 * 65_536;
        let deadline = Instant::now() + Duration::from_secs(30);
        while offsets_topic_bytes(&broker) > bound {
            assert!(
                Instant::now() < deadline,
                "__consumer_offsets holds {} bytes after {records} records",
                offsets_topic_bytes(&broker),
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "__consumer_offsets holds {} bytes after {records} records",
            offsets_topic_bytes(&broker)
        );
    }
    rt.block_on(broker.shutdown());

    let broker = start_broker(&rt, dir.path(), &overrides);
    let mut c = RawClient::connect(broker.local_addr);
    for g in 0..10 {
        let want: Vec<i64> = (0..10).map(|p| (COMMITS - 1) * 100 + p).collect();
        assert_eq!(committed(&mut c, &format!("group-{g}")), want, "group-{g}");
    }
    rt.block_on(broker.shutdown());
}
