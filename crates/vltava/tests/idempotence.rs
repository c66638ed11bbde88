//! Idempotent producers end to end: a batch whose answer is lost on the way back is retried by
//! the client, and the log holds it once, because the broker recognises the retry by the
//! producer's id, epoch and sequence numbers and answers with the original offsets.

mod common;

use std::time::{Duration, Instant};

use common::*;
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
        .log_end_offset;
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
