//! Kafka's BrokerTopicMetrics (`kafka.server:type=BrokerTopicMetrics`): records and bytes in,
//! bytes out, bytes rejected, produce and fetch requests and their failures, for all topics
//! and per topic; and replication bytes in and out, for all topics only, as Kafka has them.
//!
//! Counters only, as relaxed atomic adds; rates are the scraper's business. A hosted
//! partition holds its topic's counters, so counting needs no lookup; a topic's series go
//! away once no partition of it is hosted here, as Kafka drops a topic's metrics.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

#[derive(Debug, Default)]
pub struct TopicCounters {
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    produce_requests: AtomicU64,
    failed_produce_requests: AtomicU64,
    fetch_requests: AtomicU64,
    failed_fetch_requests: AtomicU64,
    bytes_rejected: AtomicU64,
    replication_bytes_in: AtomicU64,
    replication_bytes_out: AtomicU64,
    /// Vltava's own: bytes in that went through a pipe (`crate::splice`).
    spliced_bytes_in: AtomicU64,
}

/// The series, in render order: (name after `kafka_server_brokertopicmetrics_`, help, reader,
/// whether Kafka has it per topic too).
type Series = (
    &'static str,
    &'static str,
    fn(&TopicCounters) -> &AtomicU64,
    bool,
);
const SERIES: [Series; 10] = [
    (
        "messagesin_total",
        "Records appended by producers (MessagesInPerSec)",
        |c| &c.messages_in,
        true,
    ),
    (
        "bytesin_total",
        "Record batch bytes appended by producers (BytesInPerSec)",
        |c| &c.bytes_in,
        true,
    ),
    (
        "bytesout_total",
        "Record batch bytes sent to consumers; followers' fetches not counted (BytesOutPerSec)",
        |c| &c.bytes_out,
        true,
    ),
    (
        "totalproducerequests_total",
        "Partitions in produce requests (TotalProduceRequestsPerSec)",
        |c| &c.produce_requests,
        true,
    ),
    (
        "failedproducerequests_total",
        "Partitions in produce requests answered with an error (FailedProduceRequestsPerSec)",
        |c| &c.failed_produce_requests,
        true,
    ),
    (
        "totalfetchrequests_total",
        "Partitions in fetch requests, consumers' and followers' (TotalFetchRequestsPerSec)",
        |c| &c.fetch_requests,
        true,
    ),
    (
        "failedfetchrequests_total",
        "Partitions in fetch requests answered with an error (FailedFetchRequestsPerSec)",
        |c| &c.failed_fetch_requests,
        true,
    ),
    (
        "bytesrejected_total",
        "Record batch bytes of produce requests refused as invalid or too large (BytesRejectedPerSec)",
        |c| &c.bytes_rejected,
        true,
    ),
    (
        "replicationbytesin_total",
        "Record batch bytes appended as a follower (ReplicationBytesInPerSec)",
        |c| &c.replication_bytes_in,
        false,
    ),
    (
        "replicationbytesout_total",
        "Record batch bytes sent to followers (ReplicationBytesOutPerSec)",
        |c| &c.replication_bytes_out,
        false,
    ),
];

/// One topic's counters and the all-topics ones, counted together.
#[derive(Debug, Clone)]
pub struct TopicStats {
    topic: Arc<TopicCounters>,
    all: Arc<TopicCounters>,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl TopicStats {
    /// One partition of a produce request: appended (`records` records in `bytes` bytes,
    /// none for a retried duplicate) or failed.
    pub fn produced(&self, outcome: Result<(u64, u64), ()>) {
        for c in [&*self.topic, &*self.all] {
            add(&c.produce_requests, 1);
            match outcome {
                Ok((records, bytes)) => {
                    add(&c.messages_in, records);
                    add(&c.bytes_in, bytes);
                }
                Err(()) => add(&c.failed_produce_requests, 1),
            }
        }
    }

    /// One partition of a fetch: `bytes` of records sent (to a consumer; a follower's are
    /// replication bytes out, not bytes out), or failed.
    pub fn fetched(&self, outcome: Result<u64, ()>, follower: bool) {
        for c in [&*self.topic, &*self.all] {
            add(&c.fetch_requests, 1);
            match outcome {
                Ok(bytes) if !follower => add(&c.bytes_out, bytes),
                Ok(bytes) => add(&c.replication_bytes_out, bytes),
                Err(()) => add(&c.failed_fetch_requests, 1),
            }
        }
    }

    /// A produce payload of `bytes` refused by validation (CRC, format, size, keyless records
    /// for a compacted topic).
    pub fn rejected(&self, bytes: u64) {
        for c in [&*self.topic, &*self.all] {
            add(&c.bytes_rejected, bytes);
        }
    }

    /// `bytes` of the records just counted in went from the socket to the log through a
    /// pipe, never into the broker's memory.
    pub fn spliced(&self, bytes: u64) {
        add(&self.all.spliced_bytes_in, bytes);
    }

    /// `bytes` of fetched batches appended as a follower.
    pub fn replicated_in(&self, bytes: u64) {
        for c in [&*self.topic, &*self.all] {
            add(&c.replication_bytes_in, bytes);
        }
    }
}

#[derive(Debug, Default)]
pub struct BrokerTopicMetrics {
    all: Arc<TopicCounters>,
    topics: Mutex<HashMap<Arc<str>, Arc<TopicCounters>>>,
}

impl BrokerTopicMetrics {
    /// The counters a partition of `topic` counts into.
    pub fn topic(&self, topic: &Arc<str>) -> TopicStats {
        let counters = Arc::clone(self.topics.lock().entry(Arc::clone(topic)).or_default());
        TopicStats {
            topic: counters,
            all: Arc::clone(&self.all),
        }
    }

    /// A partition of a produce answered with an error before it reached a hosted
    /// partition (unknown topic, not authorized, too few replicas...): all topics only.
    pub fn produce_refused(&self) {
        add(&self.all.produce_requests, 1);
        add(&self.all.failed_produce_requests, 1);
    }

    /// A partition of a fetch answered with an error before it reached a hosted partition:
    /// all topics only.
    pub fn fetch_refused(&self) {
        add(&self.all.fetch_requests, 1);
        add(&self.all.failed_fetch_requests, 1);
    }

    /// Appends every series in Prometheus' text format: the all-topics value unlabelled,
    /// then one per hosted topic, sorted by name. Topics no partition here holds any more
    /// are dropped first.
    pub fn render(&self, out: &mut String) {
        let mut topics: Vec<(Arc<str>, Arc<TopicCounters>)> = {
            let mut map = self.topics.lock();
            map.retain(|_, c| Arc::strong_count(c) > 1);
            map.iter()
                .map(|(t, c)| (Arc::clone(t), Arc::clone(c)))
                .collect()
        };
        topics.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, help, read, per_topic) in SERIES {
            let full = format!("kafka_server_brokertopicmetrics_{name}");
            let _ = writeln!(out, "# HELP {full} {help}");
            let _ = writeln!(out, "# TYPE {full} counter");
            let _ = writeln!(out, "{full} {}", read(&self.all).load(Ordering::Relaxed));
            for (topic, c) in topics.iter().filter(|_| per_topic) {
                let _ = writeln!(
                    out,
                    "{full}{{topic=\"{}\"}} {}",
                    escape(topic),
                    read(c).load(Ordering::Relaxed)
                );
            }
        }
        let full = "vltava_server_brokertopicmetrics_splicedbytesin_total";
        let _ = writeln!(
            out,
            "# HELP {full} Record batch bytes appended by producers that went from the socket to the log through a pipe, never copied into the broker's memory (Vltava's own; produce.splice.min.bytes)"
        );
        let _ = writeln!(out, "# TYPE {full} counter");
        let _ = writeln!(
            out,
            "{full} {}",
            self.all.spliced_bytes_in.load(Ordering::Relaxed)
        );
    }
}

/// A label value as Prometheus' text format wants it. Kafka's topic names never need it
/// ([a-zA-Z0-9._-]), but a metrics page must not break on a name that would.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn counts_per_topic_and_for_all_topics() {
        let m = BrokerTopicMetrics::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let (sa, sb) = (m.topic(&a), m.topic(&b));
        sa.produced(Ok((10, 1000)));
        sa.produced(Err(()));
        sb.produced(Ok((5, 300)));
        sa.fetched(Ok(700), false);
        sa.fetched(Ok(900), true);
        sb.fetched(Err(()), false);
        m.produce_refused();
        m.fetch_refused();
        let mut text = String::new();
        m.render(&mut text);
        let p = "kafka_server_brokertopicmetrics_";
        let v = |s: &str| value(&text, &format!("{p}{s}")).unwrap_or_else(|| panic!("{s}\n{text}"));
        assert_eq!(v("messagesin_total"), 15);
        assert_eq!(v("messagesin_total{topic=\"a\"}"), 10);
        assert_eq!(v("bytesin_total"), 1300);
        assert_eq!(v("bytesin_total{topic=\"b\"}"), 300);
        assert_eq!(v("totalproducerequests_total"), 4);
        assert_eq!(v("failedproducerequests_total"), 2);
        assert_eq!(v("failedproducerequests_total{topic=\"a\"}"), 1);
        assert_eq!(
            v("bytesout_total"),
            700,
            "followers' bytes are not bytes out"
        );
        assert_eq!(v("totalfetchrequests_total"), 4);
        assert_eq!(v("totalfetchrequests_total{topic=\"a\"}"), 2);
        assert_eq!(v("failedfetchrequests_total"), 2);
        assert_eq!(v("failedfetchrequests_total{topic=\"b\"}"), 1);
        assert!(text.contains("# TYPE kafka_server_brokertopicmetrics_bytesout_total counter\n"));
        assert_eq!(v("replicationbytesout_total"), 900);
        assert!(
            !text.contains("replicationbytesout_total{"),
            "all topics only, as in Kafka"
        );
    }

    #[test]
    fn rejected_and_replicated_bytes() {
        let m = BrokerTopicMetrics::default();
        let t: Arc<str> = "t".into();
        let s = m.topic(&t);
        s.rejected(120);
        s.replicated_in(4000);
        s.replicated_in(96);
        let mut text = String::new();
        m.render(&mut text);
        let p = "kafka_server_brokertopicmetrics_";
        let v = |s: &str| value(&text, &format!("{p}{s}"));
        assert_eq!(v("bytesrejected_total"), Some(120));
        assert_eq!(v("bytesrejected_total{topic=\"t\"}"), Some(120));
        assert_eq!(v("replicationbytesin_total"), Some(4096));
        assert_eq!(v("replicationbytesin_total{topic=\"t\"}"), None);
    }

    #[test]
    fn a_topic_no_partition_holds_is_dropped_but_all_topics_keeps_its_counts() {
        let m = BrokerTopicMetrics::default();
        let t: Arc<str> = "gone".into();
        m.topic(&t).produced(Ok((3, 30)));
        let mut text = String::new();
        m.render(&mut text);
        assert!(!text.contains("topic=\"gone\""), "{text}");
        assert_eq!(
            value(&text, "kafka_server_brokertopicmetrics_messagesin_total"),
            Some(3)
        );
        let held = m.topic(&t);
        held.produced(Ok((1, 1)));
        text.clear();
        m.render(&mut text);
        assert_eq!(
            value(
                &text,
                "kafka_server_brokertopicmetrics_messagesin_total{topic=\"gone\"}"
            ),
            Some(1)
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
