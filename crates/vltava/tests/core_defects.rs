//! Defects found by trying the broker as a new user would, each pinned by a test.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use vltava_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use vltava_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use vltava_protocol::messages::delete_topics_request::DeleteTopicState;
use vltava_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use vltava_protocol::messages::metadata_request::MetadataRequestTopic;
use vltava_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use vltava_protocol::messages::*;
use vltava_protocol::{ApiKey, ErrorCode, StrBytes};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn create(
    c: &mut RawClient,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
    validate_only: bool,
) -> CreateTopicsResponse {
    let t = CreatableTopic::default()
        .with_name(TopicName(s(name)))
        .with_num_partitions(partitions)
        .with_replication_factor(1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(s(k))
                        .with_value(Some(s(v)))
                })
                .collect(),
        );
    c.call(
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default()
            .with_topics(vec![t])
            .with_timeout_ms(5000)
            .with_validate_only(validate_only),
    )
}

fn produce_batch(c: &mut RawClient, topic: &str, values: &[&str]) {
    let values: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
    assert_eq!(c.produce_values(topic, -1, &values).0, 0);
}

fn topic_exists(c: &mut RawClient, name: &str) -> bool {
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(s(name))))
        ]))
        .with_allow_auto_topic_creation(false);
    let resp: MetadataResponse = c.call(ApiKey::Metadata, 12, &req);
    resp.topics[0].error_code == 0
}

#[test]
fn consumers_from_earliest_after_delete_records_inside_a_batch() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[]);
    let mut c = RawClient::connect(broker.local_addr);
    assert_eq!(create(&mut c, "del", 1, &[], false).topics[0].error_code, 0);
    // One batch holding offsets 0..10.
    let values: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    produce_batch(&mut c, "del", &refs);
    let req = DeleteRecordsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(TopicName(s("del")))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(4)])]);
    let resp: DeleteRecordsResponse = c.call(ApiKey::DeleteRecords, 2, &req);
    assert_eq!(resp.topics[0].partitions[0].low_watermark, 4);

    // A Fetch at the new log start gets the batch that holds it.
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(s("del")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(4)
                .with_partition_max_bytes(1 << 20)])]);
    let resp: FetchResponse = c.call(ApiKey::Fetch, 12, &req);
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(p.log_start_offset, 4);
    assert!(!p.records.as_ref().unwrap().is_empty());

    // And librdkafka, starting at "earliest", reads from offset 4.
    let consumer: BaseConsumer = client_config(broker.local_addr)
        .set("group.id", "del-earliest")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("del", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while got.len() < 6 && std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            got.push((m.offset(), m.payload().unwrap().to_vec()));
        }
    }
    let want: Vec<(i64, Vec<u8>)> = (4..10).map(|i| (i, format!("v{i}").into_bytes())).collect();
    assert_eq!(got, want);
    drop(consumer);
    rt.block_on(broker.shutdown());
}

#[test]
fn a_partition_named_ten_times_is_fetched_once_within_fetch_max_bytes() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    // A small broker cap, so the bound is visible with little data.
    let broker = start_broker(&rt, dir.path(), &[("fetch.max.bytes", "65536")]);
    let mut c = RawClient::connect(broker.local_addr);
    assert_eq!(create(&mut c, "amp", 1, &[], false).topics[0].error_code, 0);
    let big = "x".repeat(10_000);
    for _ in 0..30 {
        produce_batch(&mut c, "amp", &[&big]);
    }
    let part = FetchPartition::default()
        .with_partition(0)
        .with_fetch_offset(0)
        .with_partition_max_bytes(i32::MAX);
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(i32::MAX)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(s("amp")))
            .with_partitions(vec![part; 10])]);
    let resp: FetchResponse = c.call(ApiKey::Fetch, 12, &req);
    assert_eq!(resp.responses.len(), 1);
    assert_eq!(resp.responses[0].partitions.len(), 1, "duplicates merged");
    let bytes = resp.responses[0].partitions[0]
        .records
        .as_ref()
        .map_or(0, Bytes::len);
    assert!(
        bytes > 0 && bytes <= 65_536,
        "response held {bytes} record bytes"
    );
    rt.block_on(broker.shutdown());
}

#[test]
fn creation_limits_are_checked_up_front_and_all_or_nothing() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[]);
    let mut c = RawClient::connect(broker.local_addr);
    let r = create(&mut c, "huge", 100_000, &[], false);
    assert_eq!(
        r.topics[0].error_code,
        ErrorCode::PolicyViolation.code(),
        "{:?}",
        r.topics[0].error_message
    );
    assert!(!topic_exists(&mut c, "huge"));
    // The broker keeps serving and can still create topics.
    assert_eq!(
        create(&mut c, "small", 2, &[], false).topics[0].error_code,
        0
    );
    assert!(topic_exists(&mut c, "small"));
    rt.block_on(broker.shutdown());
}

#[test]
fn validate_only_reports_the_requested_configs() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[]);
    let mut c = RawClient::connect(broker.local_addr);
    let r = create(&mut c, "dry", 1, &[("retention.ms", "12345")], true);
    assert_eq!(r.topics[0].error_code, 0);
    let configs: BTreeMap<String, Option<String>> = r.topics[0]
        .configs
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
        .collect();
    assert_eq!(configs["retention.ms"].as_deref(), Some("12345"));
    assert!(!topic_exists(&mut c, "dry"));
    // A config the broker would not apply is refused rather than claimed.
    let r = create(&mut c, "pre", 1, &[("preallocate", "true")], false);
    assert_eq!(r.topics[0].error_code, ErrorCode::InvalidConfig.code());
    rt.block_on(broker.shutdown());
}

/// `compression.type` naming a codec: every batch is stored in it, whatever the producer
/// sent, with its records intact; `producer` keeps batches as they came.
#[test]
fn a_topic_compression_type_rewrites_batches_with_that_codec() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[]);
    let mut c = RawClient::connect(broker.local_addr);
    let r = create(&mut c, "zs", 1, &[("compression.type", "zstd")], false);
    assert_eq!(r.topics[0].error_code, 0);
    assert_eq!(c.produce_values("zs", -1, &[b"one", b"two"]), (0, 0));
    // librdkafka with lz4 too.
    let producer =
        checked_producer(client_config(broker.local_addr).set("compression.type", "lz4"));
    producer
        .send(
            rdkafka::producer::BaseRecord::<(), _>::to("zs")
                .partition(0)
                .payload("three"),
        )
        .unwrap();
    flush_delivered(&producer, 1, Duration::from_secs(20));
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(s("zs")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let resp: FetchResponse = c.call(ApiKey::Fetch, 12, &req);
    let records = resp.responses[0].partitions[0].records.clone().unwrap();
    let mut values = Vec::new();
    for item in vltava_record::Batches::new(&records) {
        let (h, range) = item.unwrap();
        assert_eq!(h.compression(), vltava_record::Compression::Zstd);
        for r in vltava_record::read_records(&records[range], 1 << 20).unwrap() {
            values.push(r.unwrap().value.unwrap().to_vec());
        }
    }
    assert_eq!(values, [&b"one"[..], b"two", b"three"]);
    rt.block_on(broker.shutdown());
}

#[test]
fn internal_topics_cannot_be_deleted() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[]);
    let mut c = RawClient::connect(broker.local_addr);
    let req = DeleteTopicsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![
            DeleteTopicState::default().with_name(Some(TopicName(s("__consumer_offsets"))))
        ]);
    let resp: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, 6, &req);
    assert_eq!(
        resp.responses[0].error_code,
        ErrorCode::InvalidTopicException.code()
    );
    assert!(topic_exists(&mut c, "__consumer_offsets"));
    rt.block_on(broker.shutdown());
}

#[test]
fn offset_for_leader_epoch_answers_undefined_for_a_future_epoch() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[]);
    let mut c = RawClient::connect(broker.local_addr);
    assert_eq!(create(&mut c, "ep", 1, &[], false).topics[0].error_code, 0);
    produce_batch(&mut c, "ep", &["a", "b"]);
    let ask = |c: &mut RawClient, epoch: i32| -> (i16, i32, i64) {
        let req = OffsetForLeaderEpochRequest::default().with_topics(vec![
            OffsetForLeaderTopic::default()
                .with_topic(TopicName(s("ep")))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(-1)
                    .with_leader_epoch(epoch)]),
        ]);
        let resp: OffsetForLeaderEpochResponse = c.call(ApiKey::OffsetForLeaderEpoch, 4, &req);
        let e = &resp.topics[0].partitions[0];
        (e.error_code, e.leader_epoch, e.end_offset)
    };
    assert_eq!(ask(&mut c, 0), (0, 0, 2));
    assert_eq!(ask(&mut c, 5), (0, -1, -1));
    rt.block_on(broker.shutdown());
}
