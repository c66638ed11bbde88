//! Large produce requests of one partition go from the socket to the log through a pipe
//! (`produce.splice.min.bytes`): real clients at their defaults read back what they wrote,
//! exactly-once producers keep their guarantees, compressed batches and bad records take
//! the ordinary path's checks.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;
use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const BASE_TS: i64 = 1_700_000_000_000;

/// Bytes that went through a pipe, from the broker's metrics.
fn spliced(broker: &vltava_broker::BrokerHandle) -> u64 {
    let mut text = String::new();
    broker.broker.partitions.topic_metrics.render(&mut text);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("vltava_server_brokertopicmetrics_splicedbytesin_total ")?
                .parse()
                .ok()
        })
        .expect("the series is rendered")
}

/// A value of record `i`: ~1 KiB that does not compress to nothing.
fn value(i: usize) -> Vec<u8> {
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = format!("value-{i}-").into_bytes();
    while v.len() < 1000 + i % 50 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b'a' + (x % 26) as u8);
    }
    v
}

fn produce(config: &rdkafka::ClientConfig, topic: &str, n: usize) {
    let producer = checked_producer(config);
    for i in 0..n {
        let key = format!("key-{i}");
        let v = value(i);
        let headers = OwnedHeaders::new().insert(Header {
            key: "i",
            value: Some(&i.to_string()),
        });
        let record = BaseRecord::to(topic)
            .key(&key)
            .payload(&v)
            .headers(headers)
            .timestamp(BASE_TS + i as i64);
        send_retrying(&producer, record);
    }
    flush_delivered(&producer, n, Duration::from_secs(60));
}

/// Reads partition 0 from the start: every record once, in order, at dense offsets.
fn consume_and_check(addr: SocketAddr, topic: &str, n: usize, read_committed: bool) {
    let consumer: BaseConsumer = client_config(addr)
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .set(
            "isolation.level",
            if read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut next = 0usize;
    let mut last_offset = -1;
    let deadline = Instant::now() + Duration::from_secs(120);
    while next < n {
        assert!(Instant::now() < deadline, "timed out with {next} of {n}");
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        assert_eq!(m.payload().unwrap(), &value(next)[..], "record {next}");
        assert_eq!(m.key().unwrap(), format!("key-{next}").as_bytes());
        let h = m.headers().unwrap().get(0);
        assert_eq!((h.key, h.value), ("i", Some(next.to_string().as_bytes())));
        assert_eq!(m.timestamp().to_millis(), Some(BASE_TS + next as i64));
        // Transaction markers take offsets of their own.
        assert!(m.offset() > last_offset);
        if !read_committed {
            assert_eq!(m.offset(), last_offset + 1, "offsets are dense");
        }
        last_offset = m.offset();
        next += 1;
    }
}

fn one_partition(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    topic: &str,
    configs: &[(&str, &str)],
) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        client_config(addr).create().unwrap();
    let mut t = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let res = rt
        .block_on(admin.create_topics(&[t], &AdminOptions::new()))
        .unwrap();
    assert!(res[0].is_ok(), "{res:?}");
}

const N: usize = 30_000;

/// librdkafka at its defaults (acks=all, 1 MB batches, 5 ms linger) fills large batches;
/// they take the pipe, and come back whole, before and after a restart.
#[test]
fn large_batches_take_the_pipe_and_read_back_intact() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[]);
    let addr = broker.local_addr;
    one_partition(&rt, addr, "piped", &[]);
    produce(&client_config(addr), "piped", N);
    let piped = spliced(&broker);
    assert!(
        piped > (N as u64 * 1000) / 2,
        "most of {N} KiB went through a pipe, not {piped} bytes"
    );
    consume_and_check(addr, "piped", N, false);
    rt.block_on(broker.shutdown());
    let broker = start_broker(&rt, dir.path(), &[]);
    consume_and_check(broker.local_addr, "piped", N, false);
    rt.block_on(broker.shutdown());
}

/// With `produce.splice.min.bytes=-1` nothing takes a pipe, and the same records come back.
#[test]
fn the_pipe_can_be_turned_off() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[("produce.splice.min.bytes", "-1")]);
    let addr = broker.local_addr;
    one_partition(&rt, addr, "unpiped", &[]);
    produce(&client_config(addr), "unpiped", 5_000);
    assert_eq!(spliced(&broker), 0);
    consume_and_check(addr, "unpiped", 5_000, false);
    rt.block_on(broker.shutdown());
}

/// Compressed batches, a topic that recompresses, LogAppendTime and a compacted topic: the
/// first two and the last are read into memory for their checks, LogAppendTime stamps
/// piped batches, and every record comes back.
#[test]
fn compressed_compacted_and_log_append_time_topics_read_back_intact() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[]);
    let addr = broker.local_addr;
    for (topic, configs, producer_codec) in [
        ("lz4-in", vec![], "lz4"),
        ("to-zstd", vec![("compression.type", "zstd")], "none"),
        ("compacted", vec![("cleanup.policy", "compact")], "none"),
    ] {
        one_partition(&rt, addr, topic, &configs);
        produce(
            client_config(addr).set("compression.type", producer_codec),
            topic,
            4_000,
        );
        consume_and_check(addr, topic, 4_000, false);
    }
    let before = spliced(&broker);
    one_partition(
        &rt,
        addr,
        "stamped",
        &[("message.timestamp.type", "LogAppendTime")],
    );
    produce(&client_config(addr), "stamped", 4_000);
    assert!(
        spliced(&broker) > before,
        "LogAppendTime batches take the pipe"
    );
    let consumer: BaseConsumer = client_config(addr)
        .set("group.id", "unused")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("stamped", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while read < 4_000 {
        assert!(Instant::now() < deadline, "timed out with {read}");
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            assert_eq!(m.payload().unwrap(), &value(read)[..]);
            match m.timestamp() {
                rdkafka::Timestamp::LogAppendTime(t) => assert!(t > BASE_TS + 1_000_000),
                other => panic!("{other:?}"),
            }
            read += 1;
        }
    }
    // A consumer of a group left for after the broker would wait out its session.
    drop(consumer);
    rt.block_on(broker.shutdown());
}

/// A transactional producer's large batches: read_committed sees the committed ones only.
#[test]
fn transactions_through_the_pipe_commit_and_abort() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[]);
    let addr = broker.local_addr;
    one_partition(&rt, addr, "txn-piped", &[]);
    let producer: rdkafka::producer::BaseProducer = client_config(addr)
        .set("transactional.id", "piper")
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    let send = |i: usize, tag: &str| {
        let v = if tag == "keep" {
            value(i)
        } else {
            b"aborted".to_vec()
        };
        let key = format!("key-{i}");
        let headers = OwnedHeaders::new().insert(Header {
            key: "i",
            value: Some(&i.to_string()),
        });
        let r = BaseRecord::to("txn-piped")
            .key(&key)
            .payload(&v)
            .headers(headers)
            .timestamp(BASE_TS + i as i64);
        send_retrying(&producer, r);
    };
    let before = spliced(&broker);
    let mut kept = 0;
    for round in 0..4 {
        producer.begin_transaction().unwrap();
        let tag = if round % 2 == 0 { "keep" } else { "drop" };
        for j in 0..3_000 {
            send(if tag == "keep" { kept + j } else { j }, tag);
        }
        // Delivery reports are served before the transaction ends, as librdkafka asks.
        producer.flush(Duration::from_secs(30)).unwrap();
        if tag == "keep" {
            producer
                .commit_transaction(Duration::from_secs(30))
                .unwrap();
            kept += 3_000;
        } else {
            producer.abort_transaction(Duration::from_secs(30)).unwrap();
        }
    }
    assert!(
        spliced(&broker) > before,
        "transactional batches take the pipe"
    );
    consume_and_check(addr, "txn-piped", kept, true);
    rt.block_on(broker.shutdown());
}

/// Bad records in a large request get the ordinary path's answers and leave the log as it
/// was; a request cut short in its records closes the connection and appends nothing.
#[test]
fn bad_records_in_a_pipe_get_kafkas_errors() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[]);
    let addr = broker.local_addr;
    let mut raw = RawClient::connect(addr);
    raw.create_topic("raw-piped", 1);
    let big = vec![b'v'; 200_000];
    let good = || {
        Bytes::from(vltava_record::build_batch(
            0,
            &[(None, Some(&big[..]), BASE_TS)],
        ))
    };
    assert_eq!(raw.produce_batch("raw-piped", 1, good()), (0, 0));
    let piped = spliced(&broker);
    assert!(piped >= 200_000, "{piped}");
    // A flipped byte in the records: CORRUPT_MESSAGE, nothing appended.
    let mut bad = good().to_vec();
    bad[100_000] ^= 1;
    assert_eq!(raw.produce_batch("raw-piped", 1, bad.into()).0, 2);
    // Trailing bytes that are not a whole batch: CORRUPT_MESSAGE too.
    let mut trailing = good().to_vec();
    trailing.extend_from_slice(&[0u8; 10]);
    assert_eq!(raw.produce_batch("raw-piped", 1, trailing.into()).0, 2);
    // Larger than the topic's max.message.bytes: MESSAGE_TOO_LARGE.
    let huge = vec![b'h'; 1_100_000];
    let too_large = Bytes::from(vltava_record::build_batch(
        0,
        &[(None, Some(&huge[..]), BASE_TS)],
    ));
    assert_eq!(raw.produce_batch("raw-piped", 1, too_large).0, 10);
    // A piped batch above a topic's own max.message.bytes: MESSAGE_TOO_LARGE.
    one_partition(&rt, addr, "small-max", &[("max.message.bytes", "100000")]);
    assert_eq!(raw.produce_batch("small-max", 1, good()).0, 10);
    assert_eq!(spliced(&broker), piped, "nothing refused was counted");
    // The connection still works and the log goes on where it was.
    assert_eq!(raw.produce_batch("raw-piped", 1, good()), (0, 1));

    // A frame that ends in the middle of its records: the connection closes, nothing lands.
    let mut cut = RawClient::connect(addr);
    let frame = {
        use vltava_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        use vltava_protocol::messages::{ProduceRequest, TopicName};
        let req = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(vltava_protocol::StrBytes::from_string(
                    "raw-piped".into(),
                )))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(good()))])]);
        vltava_protocol::encode_request(vltava_protocol::ApiKey::Produce, 9, 1, None, &req).unwrap()
    };
    cut.send_raw(&frame[..150_000]);
    cut.stream.shutdown(std::net::Shutdown::Write).unwrap();
    cut.closed_within(Duration::from_secs(10)).unwrap();
    assert_eq!(raw.produce_batch("raw-piped", 1, good()), (0, 2));
    rt.block_on(broker.shutdown());
}
