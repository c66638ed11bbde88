//! Wire-level behaviour: pipelining order, long-poll wake-up and its answer at shutdown, fetch
//! errors and size limits, topic ids (Fetch, DeleteTopics), ListOffsets specs,
//! DescribeTopicPartitions, OffsetForLeaderEpoch.

use std::time::{Duration, Instant};

use crate::common::*;
use bytes::Bytes;
use vltava_protocol::messages::create_topics_request::CreatableTopic;
use vltava_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use vltava_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use vltava_protocol::messages::*;
use vltava_protocol::{decode_response, encode_request, ApiKey, ErrorCode, StrBytes};
use vltava_record::{build_batch, Batches};

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn create(c: &mut RawClient, name: &str) -> CreateTopicsResponse {
    let mut t = CreatableTopic::default();
    t.name = topic(name);
    t.num_partitions = 1;
    t.replication_factor = 1;
    c.call(
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default().with_topics(vec![t]),
    )
}

fn produce_req(name: &str, value: &[u8], acks: i16) -> ProduceRequest {
    let batch = build_batch(0, &[(None, Some(value), 5)]);
    let pd = PartitionProduceData::default()
        .with_index(0)
        .with_records(Some(Bytes::from(batch)));
    let td = TopicProduceData::default()
        .with_name(topic(name))
        .with_partition_data(vec![pd]);
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![td])
}

fn fetch_req(t: FetchTopic, offset: i64, max_wait_ms: i32) -> FetchRequest {
    let fp = FetchPartition::default()
        .with_partition(0)
        .with_fetch_offset(offset)
        .with_partition_max_bytes(1 << 20);
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![t.with_partitions(vec![fp])])
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[]);
    let mut c = RawClient::connect(broker.local_addr);
    create(&mut c, "pipe");
    // 50 produces and metadata requests in one write; answers must come back in order.
    let mut wire = Vec::new();
    for i in 0..50 {
        let frame = if i % 5 == 4 {
            encode_request(ApiKey::Metadata, 12, i, None, &MetadataRequest::default()).unwrap()
        } else {
            encode_request(
                ApiKey::Produce,
                9,
                i,
                None,
                &produce_req("pipe", format!("v{i}").as_bytes(), -1),
            )
            .unwrap()
        };
        wire.extend_from_slice(&frame);
    }
    c.send_raw(&wire);
    let mut expected_offset = 0;
    for i in 0..50 {
        let body = c.read_frame().unwrap();
        if i % 5 == 4 {
            let (corr, _): (i32, MetadataResponse) =
                decode_response(ApiKey::Metadata, 12, body).unwrap();
            assert_eq!(corr, i);
        } else {
            let (corr, r): (i32, ProduceResponse) =
                decode_response(ApiKey::Produce, 9, body).unwrap();
            assert_eq!(corr, i);
            assert_eq!(
                r.responses[0].partition_responses[0].base_offset,
                expected_offset
            );
            expected_offset += 1;
        }
    }
    // acks=0 gets no answer, but its record is appended before the next request runs.
    let f = encode_request(
        ApiKey::Produce,
        9,
        100,
        None,
        &produce_req("pipe", b"silent", 0),
    )
    .unwrap();
    c.send_raw(&f);
    let resp: ProduceResponse = c.call(ApiKey::Produce, 9, &produce_req("pipe", b"loud", 1));
    assert_eq!(
        resp.responses[0].partition_responses[0].base_offset,
        expected_offset + 1
    );
    rt.block_on(broker.shutdown());
}

#[test]
fn shutdown_answers_a_waiting_fetch() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[]);
    let mut c = RawClient::connect(broker.local_addr);
    create(&mut c, "quiet");
    let fetcher = std::thread::spawn(move || {
        let resp: FetchResponse = c.call(
            ApiKey::Fetch,
            12,
            &fetch_req(FetchTopic::default().with_topic(topic("quiet")), 0, 60_000),
        );
        (resp, Instant::now())
    });
    // Let the fetch reach the broker and start waiting for data that never comes.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !fetcher.is_finished(),
        "a fetch with max_wait_ms 60000 and nothing to return was answered at once"
    );
    let shutdown_started = Instant::now();
    rt.block_on(broker.shutdown());
    let (resp, answered) = fetcher
        .join()
        .expect("the waiting fetch got its answer before the broker closed");
    assert!(answered >= shutdown_started, "answered before the shutdown");
    let part = &resp.responses[0].partitions[0];
    assert_eq!(part.error_code, 0);
    assert_eq!(part.high_watermark, 0);
    assert!(part.records.as_ref().is_none_or(|r| r.is_empty()));
}

#[test]
fn fetch_long_poll_wakes_on_new_data() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[]);
    let addr = broker.local_addr;
    let mut c = RawClient::connect(addr);
    let topic_id = create(&mut c, "poll").topics[0].topic_id;
    let producer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut p = RawClient::connect(addr);
        let sent = Instant::now();
        let _: ProduceResponse = p.call(ApiKey::Produce, 9, &produce_req("poll", b"wake", 1));
        sent
    });
    let started = Instant::now();
    // v16 addresses the topic by id.
    let resp: FetchResponse = c.call(
        ApiKey::Fetch,
        16,
        &fetch_req(FetchTopic::default().with_topic_id(topic_id), 0, 30_000),
    );
    let waited = started.elapsed();
    let produce_sent = producer.join().unwrap();
    assert!(
        produce_sent < started + waited,
        "the fetch was answered before the produce that should wake it was sent"
    );
    let part = &resp.responses[0].partitions[0];
    assert_eq!(part.error_code, 0);
    assert_eq!(part.high_watermark, 1);
    let records = part.records.clone().unwrap();
    assert_eq!(Batches::new(&records).count(), 1);
    assert!(
        waited < Duration::from_secs(20),
        "the fetch was woken by the append, not its 30 s timeout"
    );

    // With nothing past the fetch offset, the fetch waits out max_wait_ms and answers empty.
    let started = Instant::now();
    let resp: FetchResponse = c.call(
        ApiKey::Fetch,
        12,
        &fetch_req(FetchTopic::default().with_topic(topic("poll")), 1, 500),
    );
    let waited = started.elapsed();
    let part = &resp.responses[0].partitions[0];
    assert_eq!((part.error_code, part.high_watermark), (0, 1));
    assert!(part.records.as_ref().is_none_or(|r| r.is_empty()));
    assert!(
        waited >= Duration::from_millis(500),
        "answered after {waited:?}, before its max_wait_ms of 500"
    );

    // Out of range and unknown topics get their error codes.
    let resp: FetchResponse = c.call(
        ApiKey::Fetch,
        12,
        &fetch_req(FetchTopic::default().with_topic(topic("poll")), 7, 0),
    );
    let part = &resp.responses[0].partitions[0];
    assert_eq!(part.error_code, ErrorCode::OffsetOutOfRange.code());
    assert_eq!((part.log_start_offset, part.high_watermark), (0, 1));
    let resp: FetchResponse = c.call(
        ApiKey::Fetch,
        12,
        &fetch_req(FetchTopic::default().with_topic(topic("nope")), 0, 0),
    );
    assert_eq!(
        resp.responses[0].partitions[0].error_code,
        ErrorCode::UnknownTopicOrPartition.code()
    );
    let resp: FetchResponse = c.call(
        ApiKey::Fetch,
        16,
        &fetch_req(
            FetchTopic::default().with_topic_id(uuid::Uuid::from_u128(1)),
            0,
            0,
        ),
    );
    assert_eq!(
        resp.responses[0].partitions[0].error_code,
        ErrorCode::UnknownTopicId.code()
    );
    rt.block_on(broker.shutdown());
}

#[test]
fn topic_ids_leader_epochs_and_partition_descriptions() {
    use vltava_protocol::messages::delete_topics_request::DeleteTopicState;
    use vltava_protocol::messages::describe_topic_partitions_request::TopicRequest;
    use vltava_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[]);
    let mut c = RawClient::connect(broker.local_addr);
    let topic_id = create(&mut c, "ids").topics[0].topic_id;
    for _ in 0..3 {
        let r: ProduceResponse = c.call(ApiKey::Produce, 9, &produce_req("ids", b"v", 1));
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    }

    let describe = |c: &mut RawClient, name: &str| -> DescribeTopicPartitionsResponse {
        c.call(
            ApiKey::DescribeTopicPartitions,
            0,
            &DescribeTopicPartitionsRequest::default()
                .with_topics(vec![TopicRequest::default().with_name(topic(name))])
                .with_response_partition_limit(2000),
        )
    };
    let d = describe(&mut c, "ids");
    let t = &d.topics[0];
    assert_eq!(
        (t.error_code, t.topic_id, t.is_internal),
        (0, topic_id, false)
    );
    assert_eq!(t.partitions.len(), 1);
    let p = &t.partitions[0];
    assert_eq!((p.partition_index, p.leader_id.0), (0, 1));
    assert_eq!(p.isr_nodes.iter().map(|b| b.0).collect::<Vec<_>>(), [1]);

    // The end offset of the leader's epoch is the log end; an unknown partition says so.
    let epoch_of = |c: &mut RawClient, partition: i32| -> (i16, i32, i64) {
        let r: OffsetForLeaderEpochResponse = c.call(
            ApiKey::OffsetForLeaderEpoch,
            4,
            &OffsetForLeaderEpochRequest::default()
                .with_replica_id(vltava_protocol::messages::BrokerId(-1))
                .with_topics(vec![OffsetForLeaderTopic::default()
                    .with_topic(topic("ids"))
                    .with_partitions(vec![OffsetForLeaderPartition::default()
                        .with_partition(partition)
                        .with_current_leader_epoch(-1)
                        .with_leader_epoch(p.leader_epoch)])]),
        );
        let e = &r.topics[0].partitions[0];
        (e.error_code, e.leader_epoch, e.end_offset)
    };
    assert_eq!(epoch_of(&mut c, 0), (0, p.leader_epoch, 3));
    assert_eq!(
        epoch_of(&mut c, 7).0,
        ErrorCode::UnknownTopicOrPartition.code()
    );

    // DeleteTopics v6 by id: an unknown id is refused, the real one deletes the topic.
    let delete = |c: &mut RawClient, id: uuid::Uuid| -> i16 {
        let r: DeleteTopicsResponse = c.call(
            ApiKey::DeleteTopics,
            6,
            &DeleteTopicsRequest::default()
                .with_topics(vec![DeleteTopicState::default().with_topic_id(id)])
                .with_timeout_ms(5000),
        );
        r.responses[0].error_code
    };
    assert_eq!(
        delete(&mut c, uuid::Uuid::from_u128(7)),
        ErrorCode::UnknownTopicId.code()
    );
    assert_eq!(delete(&mut c, topic_id), 0);
    assert_eq!(
        describe(&mut c, "ids").topics[0].error_code,
        ErrorCode::UnknownTopicOrPartition.code()
    );
    rt.block_on(broker.shutdown());
}

#[test]
fn list_offsets_specs_and_fetch_size_limits() {
    use vltava_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[]);
    let mut c = RawClient::connect(broker.local_addr);
    create(&mut c, "specs");
    // One record per batch; timestamps out of order, so the newest is not the last.
    for ts in [5, 50, 20] {
        let mut req = produce_req("specs", &[b'x'; 100], 1);
        req.topic_data[0].partition_data[0].records = Some(Bytes::from(build_batch(
            0,
            &[(None, Some(&[b'x'; 100]), ts)],
        )));
        let r: ProduceResponse = c.call(ApiKey::Produce, 9, &req);
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    }
    let list = |c: &mut RawClient, spec: i64| -> (i64, i64) {
        let r: ListOffsetsResponse = c.call(
            ApiKey::ListOffsets,
            7,
            &ListOffsetsRequest::default()
                .with_replica_id(vltava_protocol::messages::BrokerId(-1))
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(topic("specs"))
                    .with_partitions(vec![ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_current_leader_epoch(-1)
                        .with_timestamp(spec)])]),
        );
        let p = &r.topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        (p.offset, p.timestamp)
    };
    assert_eq!(list(&mut c, -2).0, 0, "earliest");
    assert_eq!(list(&mut c, -1).0, 3, "latest");
    assert_eq!(list(&mut c, -3), (1, 50), "max timestamp");
    assert_eq!(list(&mut c, 10), (1, 50), "first at or after 10");
    assert_eq!(list(&mut c, 51).0, -1, "none that new");

    // partition_max_bytes smaller than one batch still returns that one whole batch (KIP-74);
    // room for two batches returns two.
    let fetch_with = |c: &mut RawClient, partition_max: i32| -> Vec<i64> {
        let mut req = fetch_req(FetchTopic::default().with_topic(topic("specs")), 0, 0);
        req.topics[0].partitions[0].partition_max_bytes = partition_max;
        let r: FetchResponse = c.call(ApiKey::Fetch, 12, &req);
        let records = r.responses[0].partitions[0]
            .records
            .clone()
            .unwrap_or_default();
        Batches::new(&records)
            .map(|b| b.unwrap().0.base_offset)
            .collect()
    };
    assert_eq!(fetch_with(&mut c, 1), [0]);
    let one_batch = build_batch(0, &[(None, Some(&[b'x'; 100]), 5)]).len() as i32;
    assert_eq!(fetch_with(&mut c, 2 * one_batch), [0, 1]);
    assert_eq!(fetch_with(&mut c, 1 << 20), [0, 1, 2]);
    rt.block_on(broker.shutdown());
}
