//! The broker's Prometheus endpoint counts and times the requests real clients send.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::BaseRecord;

pub(crate) fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

/// The value of the line that starts with `name` (its labels included), if any.
pub(crate) fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn broker_serves_request_and_topic_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (guard, announced) =
        BrokerProcess::start_announcing(dir.path(), &["metrics.listeners=http://127.0.0.1:0"], 1);
    let broker = guard.addr;
    let metrics: SocketAddr = announced[0]
        .strip_prefix("vltava: metrics on http://")
        .and_then(|r| r.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{announced:?}"))
        .parse()
        .unwrap();

    let before = scrape(metrics);
    assert_eq!(
        value(
            &before,
            "kafka_network_requestmetrics_requests_total{request=\"Produce\"}"
        ),
        None
    );
    // librdkafka at its defaults: acks=all, so each produce waits for the fsync.
    let producer = checked_producer(&client_config(broker));
    for i in 0..50 {
        producer
            .send(BaseRecord::<str, str>::to("metered").payload(&format!("r{i}")))
            .unwrap();
    }
    flush_delivered(&producer, 50, Duration::from_secs(30));
    drop(producer);
    // A consumer reads them back: its fetches count as Fetch and FetchConsumer.
    let consumer: BaseConsumer = client_config(broker)
        .set("group.id", "metered-readers")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["metered"]).unwrap();
    let mut read = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while read < 50 && std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            m.unwrap();
            read += 1;
        }
    }
    assert_eq!(read, 50);
    drop(consumer);

    let text = scrape(metrics);
    let produced = value(
        &text,
        "kafka_network_requestmetrics_requests_total{request=\"Produce\"}",
    )
    .unwrap();
    assert!(produced >= 1.0, "{text}");
    assert!(value(
        &text,
        "kafka_network_requestmetrics_requests_total{request=\"Metadata\"}"
    )
    .is_some_and(|n| n >= 1.0));
    let fetches = value(
        &text,
        "kafka_network_requestmetrics_requests_total{request=\"Fetch\"}",
    )
    .unwrap();
    assert!(fetches >= 1.0, "{text}");
    // Both counts move together; a fetch the closed consumer left waiting may land between
    // the two reads of one scrape.
    let by_consumers = value(
        &text,
        "kafka_network_requestmetrics_requests_total{request=\"FetchConsumer\"}",
    )
    .unwrap();
    assert!((fetches - by_consumers).abs() <= 1.0, "{text}");
    assert_eq!(
        value(
            &text,
            "kafka_network_requestmetrics_requests_total{request=\"FetchFollower\"}"
        ),
        None
    );
    // The histogram holds every produce, cumulatively, and its count is the +Inf bucket's.
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(
                "kafka_network_requestmetrics_totaltimems_bucket{request=\"Produce\",le=\"",
            )?;
            let (le, n) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, n.parse().ok()?))
        })
        .collect();
    assert!(buckets.len() > 50, "{text}");
    assert!(buckets
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    let total = buckets.last().unwrap().1;
    assert!(
        total >= produced - 1.0 && total <= produced,
        "{total} of {produced}"
    );
    assert_eq!(
        value(
            &text,
            "kafka_network_requestmetrics_totaltimems_count{request=\"Produce\"}"
        ),
        Some(total)
    );
    // A produce takes some time, and not minutes.
    let sum = value(
        &text,
        "kafka_network_requestmetrics_totaltimems_sum{request=\"Produce\"}",
    )
    .unwrap();
    assert!(sum > 0.0 && sum / total < 10_000.0, "{sum} ms over {total}");
    assert_eq!(
        buckets.iter().find(|(le, _)| *le >= 60_000.0).unwrap().1,
        total,
        "a produce over a minute: {text}"
    );
    // Each produce went through the handler, so its parts were timed too; with acks=all
    // the remote part is the wait for the fsync.
    for part in [
        "requestqueuetimems",
        "localtimems",
        "remotetimems",
        "responsequeuetimems",
        "responsesendtimems",
    ] {
        assert_eq!(
            value(
                &text,
                &format!("kafka_network_requestmetrics_{part}_count{{request=\"Produce\"}}")
            ),
            Some(total),
            "{part}"
        );
    }
    // acks=all made the broker fsync, and each such flush was timed.
    assert!(
        value(&text, "kafka_log_logflushstats_logflushrateandtimems_count")
            .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    // BrokerTopicMetrics: every record in once, and every batch out at least once, since the
    // consumer read the topic from its start.
    let topic = |name: &str| {
        value(
            &text,
            &format!("kafka_server_brokertopicmetrics_{name}{{topic=\"metered\"}}"),
        )
        .unwrap_or_else(|| panic!("{name}: {text}"))
    };
    assert_eq!(topic("messagesin_total"), 50.0, "{text}");
    let bytes_in = topic("bytesin_total");
    assert!(bytes_in > 50.0 * 2.0 + 61.0, "{text}");
    assert!(topic("bytesout_total") >= bytes_in, "{text}");
    assert!(topic("totalproducerequests_total") >= 1.0, "{text}");
    assert!(topic("totalfetchrequests_total") >= 1.0, "{text}");
    assert_eq!(topic("failedproducerequests_total"), 0.0, "{text}");
    assert_eq!(topic("failedfetchrequests_total"), 0.0, "{text}");
    // The all-topics series include the topic's.
    assert!(
        value(&text, "kafka_server_brokertopicmetrics_messagesin_total").is_some_and(|n| n >= 50.0),
        "{text}"
    );
    // One broker leads every partition it hosts, each with its one replica in sync, which
    // is also min.insync.replicas (1).
    let gauge = |name: &str| {
        value(&text, &format!("kafka_server_replicamanager_{name}"))
            .unwrap_or_else(|| panic!("no {name}: {text}"))
    };
    assert!(gauge("partitioncount") >= 1.0, "{text}");
    assert_eq!(gauge("leadercount"), gauge("partitioncount"), "{text}");
    assert_eq!(
        gauge("atminisrpartitioncount"),
        gauge("partitioncount"),
        "{text}"
    );
    assert_eq!(gauge("underreplicatedpartitions"), 0.0, "{text}");
    assert_eq!(gauge("underminisrpartitioncount"), 0.0, "{text}");
    assert_eq!(gauge("offlinereplicacount"), 0.0, "{text}");
    assert_eq!(
        value(
            &text,
            "kafka_server_brokertopicmetrics_replicationbytesout_total"
        ),
        Some(0.0),
        "no followers: {text}"
    );

    // A batch whose CRC does not match is refused, and its bytes count as rejected.
    let mut batch = vltava_record::build_batch(0, &[(None, Some(b"spoiled".as_slice()), 0)]);
    let last = batch.len() - 1;
    batch[last] ^= 0xff;
    let len = batch.len() as f64;
    let mut raw = RawClient::connect(broker);
    assert_eq!(
        raw.produce_batch("metered", -1, bytes::Bytes::from(batch))
            .0,
        2,
        "CORRUPT_MESSAGE"
    );
    let text = scrape(metrics);
    assert_eq!(
        value(
            &text,
            "kafka_server_brokertopicmetrics_bytesin_total{topic=\"metered\"}"
        ),
        Some(bytes_in),
        "{text}"
    );
    let rejected = |series: &str| {
        value(
            &text,
            &format!("kafka_server_brokertopicmetrics_bytesrejected_total{series}"),
        )
    };
    assert_eq!(rejected("{topic=\"metered\"}"), Some(len), "{text}");
    assert_eq!(rejected(""), Some(len), "{text}");
    guard.terminate();
}
