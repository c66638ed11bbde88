//! Idempotent producers end to end: a batch whose answer is lost on the way back is retried by
//! the client, and the log holds it once, because the broker recognises the retry by the
//! producer's id, epoch and sequence numbers and answers with the original offsets.

use std::time::{Duration, Instant};

use crate::common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::BaseRecord;
use rdkafka::{Message, Offset, TopicPartitionList};

/// Produces `n` values through a proxy that cuts the connection after the broker answered the
/// first `cuts` Produce requests, then reads the partition back.
fn produce_through_cuts(idempotent: bool, n: usize, cuts: usize) -> (Vec<i64>, Vec<String>) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let mut proxy = CutProxy::bind(cuts);
    let advertised = format!("PLAINTEXT://{}", proxy.addr);
    let broker = start_broker(&rt, dir.path(), &[("advertised.listeners", &advertised)]);
    proxy.run(broker.local_addr);
    let mut c = RawClient::connect(broker.local_addr);
    c.create_topic("idem", 1);

    let producer = checked_producer(
        client_config(proxy.addr)
            .set("enable.idempotence", idempotent.to_string())
            .set("acks", "all")
            .set("linger.ms", "20")
            .set("batch.num.messages", "10"),
    );
    for i in 0..n {
        let v = format!("v{i}");
        producer
            .send(BaseRecord::<(), _>::to("idem").partition(0).payload(&v))
            .unwrap();
        // Spread the values over many batches, so several are in flight at a cut.
        if i % 10 == 9 {
            producer.poll(Duration::from_millis(5));
        }
    }
    let reports = flush_delivered(&producer, n, Duration::from_secs(60));
    assert_eq!(
        proxy.cuts_left.load(std::sync::atomic::Ordering::Acquire),
        0,
        "every cut happened"
    );
    let offsets = reports.iter().map(|(_, o)| *o).collect();
    drop(producer);

    let consumer: BaseConsumer = client_config(broker.local_addr)
        .set("group.id", "idem-check")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("idem", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let end = broker
        .broker
        .partitions
        .get("idem", 0)
        .unwrap()
        .offsets()
        .log_end_offset
        .get();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (got.len() as i64) < end && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            got.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
    }
    drop(consumer);
    rt.block_on(broker.shutdown());
    (offsets, got)
}

#[test]
fn a_retried_batch_is_stored_once_with_librdkafka() {
    let n = 300;
    let (offsets, got) = produce_through_cuts(true, n, 3);
    let want: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
    assert_eq!(got, want, "each value once, in order");
    // Each value's reported offset is where it is stored, retried or not.
    assert_eq!(offsets, (0..n as i64).collect::<Vec<_>>());
}

/// The same cuts without idempotence store retried batches twice: what the test above
/// checks is the broker's doing, not an accident of timing.
#[test]
fn without_idempotence_the_same_cuts_duplicate_batches() {
    let n = 300;
    let (_, got) = produce_through_cuts(false, n, 3);
    assert!(
        got.len() > n,
        "expected duplicates without idempotence, read {} values",
        got.len()
    );
}

/// Produces one raw payload to `topic`-0; returns the error code and base offset.
fn produce_raw(c: &mut RawClient, topic: &str, records: Vec<u8>) -> (i16, i64) {
    use vltava_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use vltava_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(vltava_protocol::StrBytes::from_string(
                topic.into(),
            )))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(bytes::Bytes::from(records)))])]);
    let resp: ProduceResponse = c.call(vltava_protocol::ApiKey::Produce, 9, &req);
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn producer_batch(pid: i64, epoch: i16, seq: i32, n: usize) -> Vec<u8> {
    let mut b = vltava_record::BatchBuilder::new(vltava_record::BatchAttributes {
        producer_id: pid,
        producer_epoch: epoch,
        base_sequence: seq,
        ..Default::default()
    });
    for i in 0..n {
        b.push(1_000 + i as i64, None, Some(b"v"), &[]);
    }
    b.finish()
}

/// Every producer-state refusal reaches the client as Kafka's error code, and nothing of a
/// refused payload is written.
#[test]
fn sequence_epoch_and_batch_errors_get_kafka_codes() {
    use vltava_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};
    use vltava_protocol::ErrorCode;
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[]);
    let mut c = RawClient::connect(broker.local_addr);
    c.create_topic("errs", 1);
    let init: InitProducerIdResponse = c.call(
        vltava_protocol::ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id((-1).into())
            .with_producer_epoch(-1),
    );
    assert_eq!(init.error_code, 0);
    let pid = init.producer_id.0;
    assert_eq!(init.producer_epoch, 0);

    assert_eq!(
        produce_raw(&mut c, "errs", producer_batch(pid, 0, 0, 3)),
        (0, 0)
    );
    // The retry: success with the original offset, nothing appended.
    assert_eq!(
        produce_raw(&mut c, "errs", producer_batch(pid, 0, 0, 3)),
        (0, 0)
    );
    // A gap.
    assert_eq!(
        produce_raw(&mut c, "errs", producer_batch(pid, 0, 7, 1)).0,
        ErrorCode::OutOfOrderSequenceNumber.code()
    );
    // A new epoch that does not start at sequence 0.
    assert_eq!(
        produce_raw(&mut c, "errs", producer_batch(pid, 1, 5, 1)).0,
        ErrorCode::OutOfOrderSequenceNumber.code()
    );
    assert_eq!(
        produce_raw(&mut c, "errs", producer_batch(pid, 1, 0, 1)),
        (0, 3)
    );
    // The old epoch is fenced.
    assert_eq!(
        produce_raw(&mut c, "errs", producer_batch(pid, 0, 3, 1)).0,
        ErrorCode::InvalidProducerEpoch.code()
    );
    // Two batches in one payload from an idempotent producer.
    let mut two = producer_batch(pid, 1, 1, 1);
    two.extend(producer_batch(pid, 1, 2, 1));
    assert_eq!(
        produce_raw(&mut c, "errs", two).0,
        ErrorCode::InvalidRecord.code()
    );
    // A control batch from a client.
    let marker = vltava_record::write_end_txn_marker(
        &vltava_record::MarkerBatch {
            base_offset: 0,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: 1,
            timestamp: 1_000,
        },
        vltava_record::EndTxnMarker {
            result: vltava_record::TransactionResult::Commit,
            coordinator_epoch: 0,
        },
    );
    assert_eq!(
        produce_raw(&mut c, "errs", marker).0,
        ErrorCode::InvalidRecord.code()
    );
    let end = broker
        .broker
        .partitions
        .get("errs", 0)
        .unwrap()
        .offsets()
        .log_end_offset
        .get();
    assert_eq!(end, 4, "only the two accepted batches were written");
    // Producer ids come from blocks recorded in the metadata log: a restart never reuses one.
    rt.block_on(broker.shutdown());
    let broker = start_broker(&rt, dir.path(), &[]);
    let mut c = RawClient::connect(broker.local_addr);
    let again: InitProducerIdResponse = c.call(
        vltava_protocol::ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id((-1).into())
            .with_producer_epoch(-1),
    );
    assert!(
        again.producer_id.0 > pid,
        "{} after {pid}",
        again.producer_id.0
    );
    // The partition still knows the producer after the restart: the retry is a duplicate.
    assert_eq!(
        produce_raw(&mut c, "errs", producer_batch(pid, 1, 0, 1)),
        (0, 3)
    );
    rt.block_on(broker.shutdown());
}
