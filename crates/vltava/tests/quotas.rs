//! Client quotas end to end: `vltava quota` and the raw APIs set and describe them, a
//! librdkafka producer with its defaults is held to its `producer_byte_rate` and told so in
//! `throttle_time_ms`, a consumer to its `consumer_byte_rate`, and new connections over an
//! address's `connection_creation_rate` are closed.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, ProducerContext};
use rdkafka::{ClientContext, Statistics};
use vltava_protocol::messages::*;
use vltava_protocol::{encode_request, ApiKey, StrBytes};

fn vltava(addr: std::net::SocketAddr, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vltava"))
        .args(args)
        .args(["-b", &addr.to_string()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn quotas_are_set_described_and_checked() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[]);
    let addr = broker.local_addr;
    let set = |args: &[&str]| {
        let mut all = vec!["quota", "set"];
        all.extend_from_slice(args);
        vltava(addr, &all)
    };
    let (ok, _, err) = set(&[
        "--user",
        "alice",
        "--add",
        "producer_byte_rate=1048576,consumer_byte_rate=2097152",
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = set(&["--client-id-default", "--add", "request_percentage=12.5"]);
    assert!(ok, "{err}");
    let (ok, _, err) = set(&["--ip", "10.0.0.1", "--add", "connection_creation_rate=5"]);
    assert!(ok, "{err}");
    // Kafka's checks: a fractional byte rate, a key of another entity kind, an empty name.
    let (ok, _, err) = set(&["--user", "alice", "--add", "producer_byte_rate=10.5"]);
    assert!(!ok && err.contains("InvalidRequest"), "{err}");
    let (ok, _, err) = set(&["--user", "alice", "--add", "connection_creation_rate=5"]);
    assert!(!ok && err.contains("Invalid configuration key"), "{err}");
    let (ok, _, err) = set(&["--user", "", "--add", "producer_byte_rate=5"]);
    assert!(!ok && err.contains("Empty user"), "{err}");
    // validate_only changes nothing.
    let (ok, _, err) = set(&[
        "--user",
        "bob",
        "--add",
        "producer_byte_rate=5",
        "--validate-only",
    ]);
    assert!(ok, "{err}");

    let (ok, out, err) = vltava(addr, &["quota", "describe", "-o", "json"]);
    assert!(ok, "{err}");
    let all: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        all,
        serde_json::json!([
            {"entity": {"client-id": null}, "quotas": {"request_percentage": 12.5}},
            {"entity": {"ip": "10.0.0.1"}, "quotas": {"connection_creation_rate": 5.0}},
            {"entity": {"user": "alice"},
             "quotas": {"consumer_byte_rate": 2097152.0, "producer_byte_rate": 1048576.0}},
        ])
    );
    let (ok, out, _) = vltava(addr, &["quota", "describe", "--user", "alice"]);
    assert!(ok);
    assert!(
        out.contains("user=alice") && !out.contains("client-id"),
        "{out}"
    );

    let (ok, _, err) = set(&["--user", "alice", "--remove", "producer_byte_rate"]);
    assert!(ok, "{err}");
    let (_, out, _) = vltava(
        addr,
        &["quota", "describe", "--user", "alice", "-o", "json"],
    );
    let alice: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        alice,
        serde_json::json!([{"entity": {"user": "alice"}, "quotas": {"consumer_byte_rate": 2097152.0}}])
    );

    // The raw API: filters with Kafka's match types and their errors.
    let mut raw = RawClient::connect(addr);
    let component = |t: &str, match_type: i8, name: Option<&str>| {
        describe_client_quotas_request::ComponentData::default()
            .with_entity_type(StrBytes::from_string(t.into()))
            .with_match_type(match_type)
            .with_match(name.map(|n| StrBytes::from_string(n.into())))
    };
    let describe = |raw: &mut RawClient, c: Vec<_>, strict| -> DescribeClientQuotasResponse {
        raw.call(
            ApiKey::DescribeClientQuotas,
            1,
            &DescribeClientQuotasRequest::default()
                .with_components(c)
                .with_strict(strict),
        )
    };
    let r = describe(&mut raw, vec![component("client-id", 1, None)], true);
    assert_eq!(r.error_code, 0);
    assert_eq!(r.entries.unwrap().len(), 1);
    let r = describe(&mut raw, vec![component("user", 2, None)], false);
    assert_eq!(r.entries.unwrap().len(), 1);
    let r = describe(&mut raw, vec![component("user", 0, None)], false);
    assert_eq!(r.error_code, 42, "INVALID_REQUEST for EXACT without a name");
    let r = describe(
        &mut raw,
        vec![component("user", 2, None), component("user", 1, None)],
        false,
    );
    assert_eq!(r.error_code, 42, "INVALID_REQUEST for a type named twice");
    let r = describe(&mut raw, vec![component("group", 2, None)], false);
    assert_eq!(
        r.error_code, 35,
        "UNSUPPORTED_VERSION for an unknown entity type"
    );
    rt.block_on(broker.shutdown());
}

/// Delivered payload bytes with the time each delivery report arrived, and the largest
/// throttle librdkafka's statistics saw.
#[derive(Clone, Default)]
struct Metered {
    delivered: Arc<Mutex<Vec<(Instant, usize)>>>,
    throttle_max: Arc<Mutex<i64>>,
}

impl ClientContext for Metered {
    fn stats(&self, stats: Statistics) {
        for b in stats.brokers.values() {
            if let Some(t) = &b.throttle {
                let mut m = self.throttle_max.lock().unwrap();
                *m = (*m).max(t.max);
            }
        }
    }
}

impl ProducerContext for Metered {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        // Records still queued when the test drops the producer are purged: not counted.
        if let Ok(m) = result {
            let len = m.payload().map_or(0, <[u8]>::len);
            self.delivered.lock().unwrap().push((Instant::now(), len));
        }
    }
}

#[test]
fn a_producer_over_its_byte_rate_is_held_to_it() {
    const RATE: usize = 2 * 1024 * 1024;
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[]);
    let addr = broker.local_addr;
    RawClient::connect(addr).create_topic("metered", 1);
    let (ok, _, err) = vltava(
        addr,
        &[
            "quota",
            "set",
            "--client-id",
            "metered-producer",
            "--add",
            &format!("producer_byte_rate={RATE}"),
        ],
    );
    assert!(ok, "{err}");

    let mut config = client_config(addr);
    // Statistics only report what librdkafka saw; nothing about producing changes.
    config
        .set("client.id", "metered-producer")
        .set("statistics.interval.ms", "500");
    let context = Metered::default();
    let producer: BaseProducer<Metered> = config.create_with_context(context.clone()).unwrap();
    let payload = vec![b'x'; 1000];
    let start = Instant::now();
    // As fast as librdkafka takes them, for 23 s.
    while start.elapsed() < Duration::from_secs(23) {
        match producer.send(BaseRecord::<(), _>::to("metered").payload(&payload)) {
            Ok(()) => {}
            Err((e, _)) => {
                assert_eq!(
                    e.rdkafka_error_code(),
                    Some(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    "{e}"
                );
                producer.poll(Duration::from_millis(5));
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.poll(Duration::from_millis(600));
    let delivered = context.delivered.lock().unwrap().clone();
    // Kafka lets a new client send its measuring span's worth (ten seconds of its rate) at
    // once, and the throttles after that burst are computed over a span that cannot grow yet,
    // so the first span runs over; from then on the client is held to its rate. The check is
    // the ten seconds after the first span (11 s: quota.window.num windows of 1 s).
    let first = delivered.first().expect("deliveries").0;
    let in_span = |from: Instant, to: Instant| -> usize {
        delivered
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, n)| n)
            .sum()
    };
    let from = first + Duration::from_secs(11);
    let rate = in_span(from, from + Duration::from_secs(10)) as f64 / 10.0;
    let total: usize = delivered.iter().map(|(_, n)| n).sum();
    assert!(
        (rate - RATE as f64).abs() <= RATE as f64 * 0.2,
        "delivered {rate:.0} B/s over 10 s against a quota of {RATE} B/s ({total} bytes in all)"
    );
    let throttled = *context.throttle_max.lock().unwrap();
    assert!(throttled > 0, "librdkafka saw no throttle_time_ms");
    drop(producer);
    rt.block_on(broker.shutdown());
}

/// Three one-second windows: a measuring span of 2 s keeps a test short.
const SHORT_WINDOWS: [(&str, &str); 2] = [
    ("quota.window.num", "3"),
    ("quota.window.size.seconds", "1"),
];

#[test]
fn a_consumer_over_its_byte_rate_waits() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &SHORT_WINDOWS);
    let addr = broker.local_addr;
    RawClient::connect(addr).create_topic("slow", 1);
    let producer = checked_producer(&client_config(addr));
    let payload = vec![b'y'; 1000];
    // Batches of 20 kB: an answer holds whole batches, and the quota cannot split one.
    for _ in 0..20 {
        for _ in 0..20 {
            producer
                .send(BaseRecord::<(), _>::to("slow").payload(&payload))
                .unwrap();
        }
        flush_delivered(&producer, 20, Duration::from_secs(30));
    }
    let (ok, _, err) = vltava(
        addr,
        &[
            "quota",
            "set",
            "--user-default",
            "--add",
            "consumer_byte_rate=100000",
        ],
    );
    assert!(ok, "{err}");
    let consumer: BaseConsumer = client_config(addr)
        .set("group.id", "slow-readers")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["slow"]).unwrap();
    let start = Instant::now();
    let mut n = 0;
    while n < 400 && start.elapsed() < Duration::from_secs(60) {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            m.unwrap();
            n += 1;
        }
    }
    let took = start.elapsed();
    assert_eq!(n, 400);
    // Unthrottled this takes a fraction of a second. At 100 kB/s over a span of two to
    // three windows, an answer holds at most the span's 200 kB, and the next one waits until
    // it fits within the quota: 400 kB take three answers and two waits.
    assert!(
        took >= Duration::from_secs(4),
        "400 kB at a quota of 100 kB/s took only {took:?}"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
    drop(consumer);
    rt.block_on(broker.shutdown());
}

#[test]
fn connections_over_the_address_rate_are_closed() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &SHORT_WINDOWS);
    let addr = broker.local_addr;
    let (ok, _, err) = vltava(
        addr,
        &[
            "quota",
            "set",
            "--ip",
            "127.0.0.1",
            "--add",
            "connection_creation_rate=2",
        ],
    );
    assert!(ok, "{err}");
    // Two per second over a 2 s span: four connections are served, then they are closed.
    let answered = |raw: &mut RawClient| {
        raw.stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let frame = encode_request(
            ApiKey::ApiVersions,
            0,
            1,
            Some("c"),
            &ApiVersionsRequest::default(),
        )
        .unwrap();
        use std::io::Write;
        raw.stream.write_all(&frame).is_ok() && raw.read_frame().is_some()
    };
    // All eight arrive within the span; the broker judges each as it accepts it.
    let mut conns: Vec<RawClient> = (0..8).map(|_| RawClient::connect(addr)).collect();
    let served = conns.iter_mut().map(answered).filter(|ok| *ok).count();
    assert_eq!(served, 4, "served {served} of 8");
    // Once the span has passed, this address may connect again.
    std::thread::sleep(Duration::from_secs(3));
    assert!(answered(&mut RawClient::connect(addr)));
    rt.block_on(broker.shutdown());
}
