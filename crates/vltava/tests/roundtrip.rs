//! librdkafka (through the `rdkafka` crate) produces and consumes against a real broker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};

const BASE_TS: i64 = 1_700_000_000_000;

fn create_topic(rt: &tokio::runtime::Runtime, addr: SocketAddr, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = client_config(addr).create().unwrap();
    let res = rt
        .block_on(admin.create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        ))
        .unwrap();
    assert!(res[0].is_ok(), "{res:?}");
}

fn produce(addr: SocketAddr, topic: &str, n: usize, compression: &str) {
    let producer = checked_producer(
        client_config(addr)
            .set("compression.type", compression)
            .set("acks", "all")
            .set("linger.ms", "5"),
    );
    for i in 0..n {
        let key = format!("key-{}", i % 1000);
        let value = format!("value-{i}-{}", "x".repeat(i % 50));
        let headers = OwnedHeaders::new().insert(Header {
            key: "i",
            value: Some(&i.to_string()),
        });
        let record = BaseRecord::to(topic)
            .key(&key)
            .payload(&value)
            .headers(headers)
            .timestamp(BASE_TS + i as i64);
        send_retrying(&producer, record);
    }
    flush_delivered(&producer, n, Duration::from_secs(60));
}

/// Reads every partition from the beginning until `n` records arrived; checks each record.
fn consume_and_check(addr: SocketAddr, topic: &str, partitions: i32, n: usize) {
    let consumer: BaseConsumer = client_config(addr)
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut seen = vec![false; n];
    let mut next_offset: HashMap<i32, i64> = HashMap::new();
    let mut key_partition: HashMap<String, i32> = HashMap::new();
    let mut count = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while count < n {
        assert!(
            Instant::now() < deadline,
            "timed out with {count} of {n} records"
        );
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        let value = std::str::from_utf8(m.payload().unwrap()).unwrap();
        let i: usize = value.split('-').nth(1).unwrap().parse().unwrap();
        assert_eq!(value, format!("value-{i}-{}", "x".repeat(i % 50)));
        let key = std::str::from_utf8(m.key().unwrap()).unwrap().to_string();
        assert_eq!(key, format!("key-{}", i % 1000));
        let h = m.headers().unwrap().get(0);
        assert_eq!((h.key, h.value), ("i", Some(i.to_string().as_bytes())));
        assert_eq!(m.timestamp().to_millis(), Some(BASE_TS + i as i64));
        let expected = next_offset.entry(m.partition()).or_insert(0);
        assert_eq!(m.offset(), *expected, "offsets are dense and in order");
        *expected += 1;
        assert_eq!(
            *key_partition.entry(key).or_insert(m.partition()),
            m.partition(),
            "a key always maps to one partition"
        );
        assert!(!seen[i], "record {i} delivered twice");
        seen[i] = true;
        count += 1;
    }
}

fn round_trip(compression: &str) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[]);
    let addr = broker.local_addr;
    let topic = format!("rt-{compression}");
    create_topic(&rt, addr, &topic, 3);
    produce(addr, &topic, 100_000, compression);
    consume_and_check(addr, &topic, 3, 100_000);
    rt.block_on(broker.shutdown());

    // A clean restart serves the same log.
    let broker = start_broker(&rt, dir.path(), &[]);
    consume_and_check(broker.local_addr, &topic, 3, 100_000);
    rt.block_on(broker.shutdown());
}

#[test]
fn round_trip_uncompressed() {
    round_trip("none");
}

#[test]
fn round_trip_gzip() {
    round_trip("gzip");
}

#[test]
fn round_trip_snappy() {
    round_trip("snappy");
}

#[test]
fn round_trip_lz4() {
    round_trip("lz4");
}

#[test]
fn round_trip_zstd() {
    round_trip("zstd");
}

#[test]
fn restart_after_sigterm_reads_everything_back() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let broker = BrokerProcess::start(dir.path(), &[]);
    create_topic(&rt, broker.addr, "restart", 2);
    produce(broker.addr, "restart", 20_000, "lz4");
    broker.terminate();
    assert!(
        dir.path().join(".vltava_cleanshutdown").exists(),
        "clean shutdown leaves its marker"
    );
    let broker = BrokerProcess::start(dir.path(), &[]);
    consume_and_check(broker.addr, "restart", 2, 20_000);
}
