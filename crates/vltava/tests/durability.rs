//! `kill -9` during an acks=all produce: every acknowledged record survives, and the log
//! stays readable and writable.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// An acknowledged record: partition, offset, value.
type Acked = (i32, i64, Vec<u8>);

/// Acknowledged records, and how many deliveries failed.
#[derive(Clone, Default)]
struct Acks(Arc<Mutex<Vec<Acked>>>, Arc<AtomicUsize>);

impl ClientContext for Acks {}
impl ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => self.0.lock().unwrap().push((
                m.partition(),
                m.offset(),
                m.payload().unwrap().to_vec(),
            )),
            Err(_) => {
                self.1.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[test]
fn kill_9_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["num.partitions=2"]);
    let addr = broker.addr;
    let acks = Acks::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producer_thread = {
        let (acks, stop) = (acks.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let producer: BaseProducer<Acks> = client_config(addr)
                .set("acks", "all")
                .set("linger.ms", "1")
                .set("message.timeout.ms", "5000")
                .create_with_context(acks)
                .unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let value = format!("record-{i}");
                let key = (i % 17).to_string();
                if producer
                    .send(BaseRecord::to("durable").key(&key).payload(&value))
                    .is_ok()
                {
                    i += 1;
                }
                producer.poll(Duration::ZERO);
                if producer.in_flight_count() > 10_000 {
                    producer.poll(Duration::from_millis(5));
                }
            }
            // Let the client notice the dead broker and fail what is left.
            let _ = producer.flush(Duration::from_secs(10));
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while acks.0.lock().unwrap().len() < 20_000 {
        assert!(Instant::now() < deadline, "producer made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    broker.kill9();
    stop.store(true, Ordering::Relaxed);
    producer_thread.join().unwrap();
    let acked: Vec<_> = acks.0.lock().unwrap().clone();
    // The producer never waits for its acks, so the kill catches records in flight: they fail
    // (after message.timeout.ms) rather than being acknowledged. Without any, the kill came
    // between requests and the test would not have tried the hard case.
    let failed = acks.1.load(Ordering::Relaxed);
    assert!(failed > 0, "no produce was in flight at the kill");

    let broker = BrokerProcess::start(dir.path(), &[]);
    let consumer: BaseConsumer = client_config(broker.addr)
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("durable", 0, Offset::Beginning)
        .unwrap();
    tpl.add_partition_offset("durable", 1, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let want: HashMap<(i32, i64), Vec<u8>> =
        acked.into_iter().map(|(p, o, v)| ((p, o), v)).collect();
    let last_wanted: HashMap<i32, i64> = want.keys().fold(HashMap::new(), |mut m, (p, o)| {
        let e = m.entry(*p).or_insert(-1);
        *e = (*e).max(*o);
        m
    });
    let mut got: HashMap<(i32, i64), Vec<u8>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let reached = |got: &HashMap<(i32, i64), Vec<u8>>| {
        last_wanted
            .iter()
            .all(|(p, last)| got.contains_key(&(*p, *last)))
    };
    while !reached(&got) {
        assert!(
            Instant::now() < deadline,
            "acknowledged records missing after restart: have {} of {}",
            got.len(),
            want.len()
        );
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            got.insert((m.partition(), m.offset()), m.payload().unwrap().to_vec());
        }
    }
    for (k, v) in &want {
        assert_eq!(
            got.get(k),
            Some(v),
            "acknowledged record at {k:?} lost or changed"
        );
    }

    // The recovered log still takes writes.
    let producer = checked_producer(client_config(broker.addr).set("acks", "all"));
    producer
        .send(
            BaseRecord::to("durable")
                .partition(0)
                .key("k")
                .payload("after"),
        )
        .unwrap();
    flush_delivered(&producer, 1, Duration::from_secs(10));
}
