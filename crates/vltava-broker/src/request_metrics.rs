//! Kafka's request metrics (`kafka.network:type=RequestMetrics,name=TotalTimeMs`): how long
//! the broker held each request, from its last byte read to its answer's last byte written,
//! by request type. This is the broker's share of a client's latency; linger and the network
//! are the client's.
//!
//! Recording is a few relaxed atomic adds, so it stays on for every request. Times fall into
//! fixed buckets, four per doubling (each bound 19 % above the last), and are rendered as a
//! Prometheus histogram under the names the JMX exporter gives Kafka's MBeans. The buckets
//! are cumulative since start: a bench takes two scrapes and reads quantiles from their
//! difference.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vltava_protocol::ApiKey;

/// The first bucket's bound, in microseconds: a request answered from memory takes about this.
const FIRST_BOUND_US: f64 = 8.0;
const PER_DOUBLING: usize = 4;
/// 8 µs × 2^23 ≈ 67 s: anything slower goes into the last, unbounded bucket.
const BOUNDED: usize = 23 * PER_DOUBLING + 1;
/// Kafka's API keys fit below this; others are not recorded.
const KEYS: usize = 128;

/// The upper bound of bucket `i`, in microseconds.
fn bound_us(i: usize) -> f64 {
    FIRST_BOUND_US * (i as f64 / PER_DOUBLING as f64).exp2()
}

/// The bucket of a time: the first whose bound is not below it.
fn bucket(us: f64) -> usize {
    if us <= FIRST_BOUND_US {
        return 0;
    }
    let i = ((us / FIRST_BOUND_US).log2() * PER_DOUBLING as f64).ceil() as usize;
    // Rounding in log2 may land one off; the bounds themselves decide.
    let i = if i > 0 && us <= bound_us(i - 1) {
        i - 1
    } else {
        i
    };
    if us > bound_us(i) {
        (i + 1).min(BOUNDED)
    } else {
        i.min(BOUNDED)
    }
}

/// Counts of times in fixed buckets, and their sum.
pub struct TimeHistogram {
    count: AtomicU64,
    sum_us: AtomicU64,
    /// `BOUNDED` bounded buckets and the unbounded one; not cumulative.
    buckets: [AtomicU64; BOUNDED + 1],
}

impl Default for TimeHistogram {
    fn default() -> Self {
        TimeHistogram {
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl TimeHistogram {
    pub fn record(&self, time: Duration) {
        let us = time.as_secs_f64() * 1e6;
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us as u64, Ordering::Relaxed);
        self.buckets[bucket(us)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The `_bucket`, `_sum` and `_count` lines of histogram `name` (times in milliseconds),
    /// with `labels` (`key="value"` pairs, or empty) on each.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let le = if i == BOUNDED {
                "+Inf".to_string()
            } else {
                format_ms(bound_us(i))
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let labels = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum_ms = self.sum_us.load(Ordering::Relaxed) as f64 / 1000.0;
        let _ = writeln!(out, "{name}_sum{labels} {sum_ms}");
        // The count is the buckets' total, as Prometheus requires, even while times are
        // recorded during the render.
        let _ = writeln!(out, "{name}_count{labels} {cumulative}");
    }
}

/// The parts of a request's total time, as Kafka's RequestMetrics split it, in order: read
/// and waiting to be handled (a produce behind its connection's earlier appends); being
/// handled (the append, finding a fetch's batches); waiting on something else (the fsync
/// and the followers for acks=all, new data for a long-polling fetch); answered and waiting
/// to be written (encoding, earlier answers of the connection); being written.
const PARTS: [(&str, &str); 5] = [
    (
        "requestqueuetimems",
        "Time a request waited to be handled after it was read, in milliseconds.",
    ),
    (
        "localtimems",
        "Time the broker spent handling a request, in milliseconds.",
    ),
    (
        "remotetimems",
        "Time a request waited on durability, followers or new data, in milliseconds.",
    ),
    (
        "responsequeuetimems",
        "Time an answer waited to be written, in milliseconds.",
    ),
    (
        "responsesendtimems",
        "Time spent writing an answer, in milliseconds.",
    ),
];

#[derive(Default)]
struct KeyTimes {
    total: TimeHistogram,
    parts: [TimeHistogram; 5],
}

impl KeyTimes {
    fn record(&self, timer: &RequestTimer, written: Duration, write_start: Instant) {
        self.total.record(written);
        let marks = [
            timer.local_start.load(Ordering::Relaxed),
            timer.local_end.load(Ordering::Relaxed),
            timer.remote_end.load(Ordering::Relaxed),
        ];
        if marks.contains(&0) {
            return;
        }
        let write_start = write_start
            .saturating_duration_since(timer.read_at)
            .as_nanos() as u64;
        let written = written.as_nanos() as u64;
        let bounds = [
            0,
            marks[0],
            marks[1],
            marks[2],
            write_start.max(marks[2]),
            written.max(write_start),
        ];
        for (i, part) in self.parts.iter().enumerate() {
            part.record(Duration::from_nanos(
                bounds[i + 1].saturating_sub(bounds[i]),
            ));
        }
    }
}

/// When one request reached each stage, in nanoseconds after its last byte was read (0: not
/// reached). The handler's side sets them; the connection's writer records them once the
/// answer is written.
pub struct RequestTimer {
    pub key: Option<ApiKey>,
    /// For a fetch: whether a follower sent it (Kafka's FetchFollower) or a consumer
    /// (FetchConsumer).
    from_follower: Option<bool>,
    pub read_at: Instant,
    local_start: AtomicU64,
    local_end: AtomicU64,
    remote_end: AtomicU64,
}

impl RequestTimer {
    pub fn new(key: Option<ApiKey>, read_at: Instant) -> Self {
        RequestTimer {
            key,
            from_follower: None,
            read_at,
            local_start: AtomicU64::new(0),
            local_end: AtomicU64::new(0),
            remote_end: AtomicU64::new(0),
        }
    }

    /// Marks a fetch as a follower's (`Some(true)`) or a consumer's.
    pub fn fetch_from(mut self, follower: Option<bool>) -> Self {
        self.from_follower = follower;
        self
    }

    fn mark(&self, at: &AtomicU64) {
        let ns = self.read_at.elapsed().as_nanos().max(1) as u64;
        at.store(ns, Ordering::Relaxed);
    }

    pub fn local_started(&self) {
        self.mark(&self.local_start);
    }

    pub fn local_ended(&self) {
        self.mark(&self.local_end);
    }

    pub fn remote_ended(&self) {
        self.mark(&self.remote_end);
    }
}

/// Request counts, total times and their parts, by API key; fetches also by who sent them,
/// as Kafka keeps `FetchConsumer` and `FetchFollower` beside `Fetch`.
pub struct RequestMetrics {
    by_key: Box<[KeyTimes]>,
    fetch_consumer: KeyTimes,
    fetch_follower: KeyTimes,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            by_key: (0..KEYS).map(|_| KeyTimes::default()).collect(),
            fetch_consumer: KeyTimes::default(),
            fetch_follower: KeyTimes::default(),
        }
    }
}

impl RequestMetrics {
    /// Records one request of type `key` that the broker held for `total` (tests; requests
    /// served go through `record_timer`).
    #[cfg(test)]
    fn record(&self, key: ApiKey, total: Duration) {
        if let Some(t) = self.by_key.get(key as usize) {
            t.total.record(total);
        }
    }

    /// Records a request whose answer was written from `write_start` to now. Its parts are
    /// recorded when the handler marked them all; answers made without a handler (SASL
    /// steps) count only in the total.
    pub fn record_timer(&self, timer: &RequestTimer, write_start: Instant) {
        let Some(t) = timer.key.and_then(|k| self.by_key.get(k as usize)) else {
            return;
        };
        let by_sender = match timer.from_follower {
            Some(true) => Some(&self.fetch_follower),
            Some(false) => Some(&self.fetch_consumer),
            None => None,
        };
        let written = timer.read_at.elapsed();
        for t in std::iter::once(t).chain(by_sender) {
            t.record(timer, written, write_start);
        }
    }

    /// Prometheus text: `kafka_network_requestmetrics_requests_total`, the
    /// `kafka_network_requestmetrics_totaltimems` histogram and one histogram per part, for
    /// each request type seen.
    pub fn render(&self, out: &mut String) {
        let seen: Vec<(String, &KeyTimes)> = self
            .by_key
            .iter()
            .enumerate()
            .filter_map(|(k, t)| Some((format!("{:?}", ApiKey::try_from(k as i16).ok()?), t)))
            .chain([
                ("FetchConsumer".to_string(), &self.fetch_consumer),
                ("FetchFollower".to_string(), &self.fetch_follower),
            ])
            .filter(|(_, t)| t.total.count() > 0)
            .collect();
        out.push_str(
            "# HELP kafka_network_requestmetrics_requests_total Requests answered, by type.\n",
        );
        out.push_str("# TYPE kafka_network_requestmetrics_requests_total counter\n");
        for (name, t) in &seen {
            let _ = writeln!(
                out,
                "kafka_network_requestmetrics_requests_total{{request=\"{name}\"}} {}",
                t.total.count()
            );
        }
        out.push_str("# HELP kafka_network_requestmetrics_totaltimems Time from a request's last byte read to its answer's last byte written, in milliseconds.\n");
        out.push_str("# TYPE kafka_network_requestmetrics_totaltimems histogram\n");
        for (name, t) in &seen {
            t.total.render(
                out,
                "kafka_network_requestmetrics_totaltimems",
                &format!("request=\"{name}\""),
            );
        }
        for (i, (part, help)) in PARTS.iter().enumerate() {
            let _ = writeln!(out, "# HELP kafka_network_requestmetrics_{part} {help}");
            let _ = writeln!(out, "# TYPE kafka_network_requestmetrics_{part} histogram");
            for (name, t) in &seen {
                if t.parts[i].count() > 0 {
                    t.parts[i].render(
                        out,
                        &format!("kafka_network_requestmetrics_{part}"),
                        &format!("request=\"{name}\""),
                    );
                }
            }
        }
    }
}

/// Kafka's `kafka.log:type=LogFlushStats,name=LogFlushRateAndTimeMs`: each fsync of a
/// partition's log that made new offsets durable, and how long it took.
pub fn render_log_flushes(flushes: &TimeHistogram, out: &mut String) {
    out.push_str("# HELP kafka_log_logflushstats_logflushrateandtimems Time of each log flush (fsync) that made new offsets durable, in milliseconds.\n");
    out.push_str("# TYPE kafka_log_logflushstats_logflushrateandtimems histogram\n");
    flushes.render(out, "kafka_log_logflushstats_logflushrateandtimems", "");
}

/// A bound in milliseconds, with enough digits that neighbouring bounds differ.
fn format_ms(us: f64) -> String {
    format!("{:.4}", us / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_time_lands_in_the_first_bucket_bounding_it() {
        for i in 0..2000u32 {
            let us = 1.07f64.powi(i as i32) * 0.5;
            let b = bucket(us);
            if b < BOUNDED {
                assert!(us <= bound_us(b), "{us} above bucket {b}");
            }
            if b > 0 {
                assert!(us > bound_us(b - 1), "{us} fits bucket {}", b - 1);
            }
        }
        assert_eq!(bucket(0.0), 0);
        assert_eq!(bucket(bound_us(5)), 5);
        assert_eq!(bucket(1e12), BOUNDED);
    }

    #[test]
    fn rendered_histogram_is_cumulative_and_ends_with_the_count() {
        let m = RequestMetrics::default();
        m.record(ApiKey::Produce, Duration::from_micros(100));
        m.record(ApiKey::Produce, Duration::from_micros(100));
        m.record(ApiKey::Produce, Duration::from_millis(3));
        m.record(ApiKey::Fetch, Duration::from_secs(500));
        let mut text = String::new();
        m.render(&mut text);
        assert!(
            text.contains("kafka_network_requestmetrics_requests_total{request=\"Produce\"} 3\n")
        );
        assert!(text.contains("kafka_network_requestmetrics_requests_total{request=\"Fetch\"} 1\n"));
        assert!(!text.contains("request=\"Metadata\""));
        let produce: Vec<(f64, u64)> = text
            .lines()
            .filter(|l| {
                l.starts_with("kafka_network_requestmetrics_totaltimems_bucket{request=\"Produce\"")
            })
            .map(|l| {
                let le = l.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                (le, l.rsplit(' ').next().unwrap().parse().unwrap())
            })
            .collect();
        assert_eq!(produce.len(), BOUNDED + 1);
        assert!(produce
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        let at = |ms: f64| produce.iter().find(|(le, _)| *le >= ms).unwrap().1;
        assert_eq!(at(0.085), 0);
        assert_eq!(at(0.12), 2);
        assert_eq!(at(2.8), 2);
        assert_eq!(at(3.6), 3);
        assert!(text
            .contains("kafka_network_requestmetrics_totaltimems_count{request=\"Produce\"} 3\n"));
        assert!(text
            .contains("kafka_network_requestmetrics_totaltimems_sum{request=\"Produce\"} 3.2\n"));
        assert!(text.contains(
            "kafka_network_requestmetrics_totaltimems_bucket{request=\"Fetch\",le=\"+Inf\"} 1\n"
        ));
    }

    #[test]
    fn an_unlabelled_histogram_renders_without_braces_on_sum_and_count() {
        let h = TimeHistogram::default();
        h.record(Duration::from_millis(1));
        let mut text = String::new();
        render_log_flushes(&h, &mut text);
        assert!(
            text.contains("kafka_log_logflushstats_logflushrateandtimems_bucket{le=\"+Inf\"} 1\n")
        );
        assert!(text.contains("kafka_log_logflushstats_logflushrateandtimems_sum 1\n"));
        assert!(text.contains("kafka_log_logflushstats_logflushrateandtimems_count 1\n"));
    }

    #[test]
    fn a_timed_request_is_split_into_its_parts() {
        let now = Instant::now();
        let read_at = now.checked_sub(Duration::from_millis(100)).unwrap();
        let timer = RequestTimer::new(Some(ApiKey::Produce), read_at);
        let ms = |n: u64| n * 1_000_000;
        timer.local_start.store(ms(10), Ordering::Relaxed);
        timer.local_end.store(ms(30), Ordering::Relaxed);
        timer.remote_end.store(ms(60), Ordering::Relaxed);
        let m = RequestMetrics::default();
        m.record_timer(&timer, read_at + Duration::from_millis(70));
        // Unmarked (a SASL step): only the total.
        m.record_timer(&RequestTimer::new(Some(ApiKey::Produce), read_at), now);
        let mut text = String::new();
        m.render(&mut text);
        let sum = |name: &str| -> f64 {
            let prefix = format!("kafka_network_requestmetrics_{name}_sum{{request=\"Produce\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
                .unwrap_or_else(|| panic!("no {name}: {text}"))
        };
        assert_eq!(sum("requestqueuetimems"), 10.0);
        assert_eq!(sum("localtimems"), 20.0);
        assert_eq!(sum("remotetimems"), 30.0);
        assert_eq!(sum("responsequeuetimems"), 10.0);
        assert!(sum("responsesendtimems") >= 30.0);
        assert!(sum("totaltimems") >= 200.0);
        assert!(text
            .contains("kafka_network_requestmetrics_totaltimems_count{request=\"Produce\"} 2\n"));
        assert!(text
            .contains("kafka_network_requestmetrics_localtimems_count{request=\"Produce\"} 1\n"));
    }

    #[test]
    fn fetches_also_count_by_who_sent_them() {
        let m = RequestMetrics::default();
        let at = Instant::now();
        let fetch =
            |follower| RequestTimer::new(Some(ApiKey::Fetch), at).fetch_from(Some(follower));
        m.record_timer(&fetch(true), at);
        m.record_timer(&fetch(false), at);
        m.record_timer(&fetch(false), at);
        m.record_timer(&RequestTimer::new(Some(ApiKey::Produce), at), at);
        let mut text = String::new();
        m.render(&mut text);
        for (name, n) in [
            ("Fetch", 3),
            ("FetchConsumer", 2),
            ("FetchFollower", 1),
            ("Produce", 1),
        ] {
            assert!(
                text.contains(&format!(
                    "kafka_network_requestmetrics_requests_total{{request=\"{name}\"}} {n}\n"
                )),
                "{name}: {text}"
            );
        }
    }
}
