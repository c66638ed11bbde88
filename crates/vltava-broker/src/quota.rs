//! Client quota enforcement (KIP-13, KIP-124, KIP-219, KIP-612): each client's bytes, handler
//! time and new connections are metered over sampled windows and compared with the quota the
//! metadata image gives it; a client over its quota is told how long to wait
//! (`throttle_time_ms`) and its connection is muted for that long.
//!
//! Pure: every call takes the time, in milliseconds of a monotonic clock.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use vltava_metadata::quota::{MeterKey, QuotaKey, QuotaTable};

/// `quota.window.num` samples of `quota.window.size.seconds` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaWindows {
    pub samples: u32,
    pub window_ms: u64,
}

impl Default for QuotaWindows {
    fn default() -> Self {
        Self {
            samples: 11,
            window_ms: 1000,
        }
    }
}

/// A rate over the last `samples` windows, measured as Kafka's `Rate` does: the span is
/// never taken as shorter than `samples - 1` whole windows, so a client's first burst is
/// spread over that span rather than judged over the few milliseconds it took.
#[derive(Debug, Default)]
struct Rate {
    samples: VecDeque<(u64, f64)>,
    last_ms: u64,
}

impl Rate {
    fn purge(&mut self, now: u64, w: QuotaWindows) {
        let keep = u64::from(w.samples) * w.window_ms;
        while let Some(&(start, _)) = self.samples.front() {
            if start + keep <= now {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    fn record(&mut self, value: f64, now: u64, w: QuotaWindows) {
        self.purge(now, w);
        match self.samples.back_mut() {
            Some((start, v)) if now < *start + w.window_ms => *v += value,
            _ => self.samples.push_back((now, value)),
        }
        self.last_ms = now;
    }

    /// Per second, as it will be at `at` (≥ the last record) if nothing more is recorded.
    fn rate_at(&self, at: u64, w: QuotaWindows) -> f64 {
        let keep = u64::from(w.samples) * w.window_ms;
        let alive = || self.samples.iter().filter(|s| s.0 + keep > at);
        let total: f64 = alive().map(|s| s.1).sum();
        let oldest = alive().next().map_or(at, |s| s.0);
        let mut elapsed = at.saturating_sub(oldest);
        let full = elapsed / w.window_ms;
        let min_full = u64::from(w.samples.saturating_sub(1));
        if full < min_full {
            elapsed += (min_full - full) * w.window_ms;
        }
        total * 1000.0 / elapsed.max(1) as f64
    }

    /// How long until the rate is back within `bound`: the delay that brings the client
    /// under its quota. Kafka approximates it as `(observed - bound) / bound * span`, which
    /// assumes the span grows while the client waits; while a meter is younger than its
    /// span, the span does not grow (it is held at `samples - 1` windows), and that
    /// approximation lets a client run a third over its quota. This searches the actual
    /// rate forward instead, in steps of a hundredth of a window, up to the whole span.
    fn throttle_ms(&mut self, bound: f64, now: u64, w: QuotaWindows) -> u64 {
        self.purge(now, w);
        if self.rate_at(now, w) <= bound {
            return 0;
        }
        let limit = u64::from(w.samples) * w.window_ms;
        let step = (w.window_ms / 100).max(1);
        let mut wait = step;
        while wait < limit {
            if self.rate_at(now + wait, w) <= bound {
                return wait;
            }
            wait += step;
        }
        limit
    }
}

/// Meters idle this long are forgotten, as Kafka expires quota sensors.
const METER_IDLE_MS: u64 = 3_600_000;

/// The broker's quota state: the image's quotas and a meter per metered client.
#[derive(Debug, Default)]
pub struct ClientQuotas {
    windows: QuotaWindows,
    table: RwLock<Arc<QuotaTable>>,
    /// Any quota at all: without one, requests skip every lookup.
    active: AtomicBool,
    meters: Mutex<Meters>,
}

#[derive(Debug, Default)]
struct Meters {
    clients: HashMap<(QuotaKey, MeterKey), Rate>,
    ips: HashMap<std::net::IpAddr, Rate>,
    records: u64,
}

impl Meters {
    /// Now and then, drops meters nobody has used for an hour.
    fn sweep(&mut self, now: u64) {
        self.records += 1;
        if self.records.is_multiple_of(4096) {
            self.clients
                .retain(|_, r| now.saturating_sub(r.last_ms) < METER_IDLE_MS);
            self.ips
                .retain(|_, r| now.saturating_sub(r.last_ms) < METER_IDLE_MS);
        }
    }
}

impl ClientQuotas {
    pub fn new(windows: QuotaWindows) -> Self {
        Self {
            windows,
            ..Self::default()
        }
    }

    /// Takes the quotas of a new image.
    pub fn update(&self, table: QuotaTable) {
        self.active.store(!table.is_empty(), Ordering::Release);
        *self.table.write() = Arc::new(table);
    }

    /// Whether any quota is set: without one, nothing is metered.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    fn lookup(&self, key: QuotaKey, user: &str, client_id: &str) -> Option<(f64, MeterKey)> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        self.table.read().lookup(key, user, client_id)
    }

    /// The client's quota of `key`, if it has one.
    pub fn quota(&self, key: QuotaKey, user: &str, client_id: &str) -> Option<f64> {
        self.lookup(key, user, client_id).map(|(v, _)| v)
    }

    /// Adds `value` to the client's meter for `key` and returns how long it must now wait
    /// (0 when within its quota or without one).
    pub fn record(&self, key: QuotaKey, user: &str, client_id: &str, value: f64, now: u64) -> u64 {
        let Some((bound, meter)) = self.lookup(key, user, client_id) else {
            return 0;
        };
        let w = self.windows;
        let mut meters = self.meters.lock();
        meters.sweep(now);
        let rate = meters.clients.entry((key, meter)).or_default();
        rate.record(value, now, w);
        let throttle = rate.throttle_ms(bound, now, w);
        // Kafka bounds the request quota's throttle by one window; byte rates are unbounded.
        if key == QuotaKey::RequestPercentage {
            throttle.min(w.window_ms)
        } else {
            throttle
        }
    }

    /// Takes back `value` recorded at `now`: a fetch over its quota is answered empty, so
    /// its bytes were never sent.
    pub fn unrecord(&self, key: QuotaKey, user: &str, client_id: &str, value: f64, now: u64) {
        let Some((_, meter)) = self.lookup(key, user, client_id) else {
            return;
        };
        if let Some(rate) = self.meters.lock().clients.get_mut(&(key, meter)) {
            rate.record(-value, now, self.windows);
        }
    }

    /// What the client's meter for `key` holds now (0 without a quota).
    pub fn recorded(&self, key: QuotaKey, user: &str, client_id: &str, now: u64) -> f64 {
        let Some((_, meter)) = self.lookup(key, user, client_id) else {
            return 0.0;
        };
        let w = self.windows;
        self.meters
            .lock()
            .clients
            .get_mut(&(key, meter))
            .map_or(0.0, |r| {
                r.purge(now, w);
                r.samples.iter().map(|s| s.1).sum()
            })
    }

    /// How long the client would wait for `key` now, without recording anything.
    pub fn throttle_now(&self, key: QuotaKey, user: &str, client_id: &str, now: u64) -> u64 {
        let Some((bound, meter)) = self.lookup(key, user, client_id) else {
            return 0;
        };
        let w = self.windows;
        self.meters
            .lock()
            .clients
            .get_mut(&(key, meter))
            .map_or(0, |r| r.throttle_ms(bound, now, w))
    }

    /// The most a client may take of `key` within one measuring span: Kafka caps a fetch's
    /// size by it, so one answer cannot swallow many seconds of a consumer's quota.
    pub fn span_allowance(&self, key: QuotaKey, user: &str, client_id: &str) -> Option<u64> {
        let bound = self.quota(key, user, client_id)?;
        let w = self.windows;
        let span_s = (u64::from(w.samples.saturating_sub(1)).max(1) * w.window_ms) as f64 / 1000.0;
        Some((bound * span_s).min(u64::MAX as f64) as u64)
    }

    /// Counts a new connection from `ip` against its `connection_creation_rate`; returns how
    /// long to hold it before closing it when over the rate (0: accept it). A refused
    /// connection does not count.
    pub fn record_connection(&self, ip: std::net::IpAddr, now: u64) -> u64 {
        if !self.active.load(Ordering::Acquire) {
            return 0;
        }
        let Some(bound) = self.table.read().ip_rate(&ip.to_string()) else {
            return 0;
        };
        let w = self.windows;
        let mut meters = self.meters.lock();
        meters.sweep(now);
        let rate = meters.ips.entry(ip).or_default();
        rate.record(1.0, now, w);
        let throttle = rate.throttle_ms(bound, now, w);
        if throttle > 0 {
            rate.record(-1.0, now, w);
        }
        throttle.min(w.window_ms)
    }
}

/// Until when a connection is muted (KIP-219): it reads no request before then.
#[derive(Debug, Default)]
pub struct Mute(AtomicU64);

impl Mute {
    /// Mutes until `until` unless already muted for longer.
    pub fn until(&self, until: u64) {
        self.0.fetch_max(until, Ordering::AcqRel);
    }

    pub fn muted_until(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// Milliseconds of the process's monotonic clock: the time quota calls are given.
pub fn monotonic_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use vltava_metadata::quota::{QuotaEntity, QuotaValue};

    use super::*;

    /// An entity's parts, a quota key and its value.
    type Entry<'a> = (&'a [(&'a str, Option<&'a str>)], &'a str, f64);

    fn quotas(entries: &[Entry<'_>]) -> ClientQuotas {
        let mut m: BTreeMap<QuotaEntity, BTreeMap<String, QuotaValue>> = BTreeMap::new();
        for (e, k, v) in entries {
            let e = e
                .iter()
                .map(|(t, n)| (t.to_string(), n.map(str::to_string)))
                .collect();
            m.entry(e)
                .or_default()
                .insert(k.to_string(), QuotaValue(*v));
        }
        let q = ClientQuotas::new(QuotaWindows::default());
        q.update(QuotaTable::build(&m));
        q
    }

    const P: QuotaKey = QuotaKey::ProducerByteRate;

    #[test]
    fn a_client_without_a_quota_is_never_throttled() {
        let q = quotas(&[]);
        assert_eq!(q.record(P, "u", "c", 1e12, 0), 0);
        let q = quotas(&[(&[("user", Some("other"))], "producer_byte_rate", 1.0)]);
        assert_eq!(q.record(P, "u", "c", 1e12, 0), 0);
    }

    #[test]
    fn the_first_burst_is_judged_over_ten_windows() {
        let q = quotas(&[(&[("client-id", None)], "producer_byte_rate", 1000.0)]);
        // 10 s of quota at once is within it.
        assert_eq!(q.record(P, "u", "c", 10_000.0, 0), 0);
        // One second more is over, and a young meter's span does not grow: the client
        // waits until that first sample leaves the span, 11 windows after it began.
        assert_eq!(q.record(P, "u", "c", 1000.0, 0), 11_000);
        // Another client id has its own meter under the default.
        assert_eq!(q.record(P, "u", "d", 1000.0, 0), 0);
    }

    #[test]
    fn a_client_kept_to_its_throttle_goes_at_its_quota() {
        // A producer that sends 1000 bytes, then waits as long as it is told, for two
        // minutes; every ten seconds of it stay within a tenth of the quota.
        let q = quotas(&[(&[("user", Some("u"))], "producer_byte_rate", 2000.0)]);
        let mut now = 0u64;
        let mut sent: Vec<u64> = Vec::new();
        while now < 120_000 {
            sent.push(now);
            now += q.record(P, "u", "c", 1000.0, now).max(1);
        }
        for from in (0..110_000).step_by(1000) {
            let n = sent
                .iter()
                .filter(|t| **t >= from && **t < from + 10_000)
                .count();
            let rate = n as f64 * 1000.0 / 10.0;
            assert!(rate <= 2000.0 * 1.1, "{rate} B/s from {from} ms");
        }
        let rate = sent.len() as f64 * 1000.0 / 120.0;
        assert!((rate - 2000.0).abs() < 2000.0 * 0.1, "{rate}");
    }

    #[test]
    fn samples_expire_and_the_span_grows_with_them() {
        let q = quotas(&[(&[("user", None)], "producer_byte_rate", 100.0)]);
        assert_eq!(q.record(P, "u", "c", 2000.0, 0), 11_000);
        assert!(q.throttle_now(P, "u", "c", 5_000) > 0);
        // Eleven windows later the burst is forgotten.
        assert_eq!(q.throttle_now(P, "u", "c", 11_001), 0);
        // An older meter's wait ends as its first samples leave the span.
        let q = quotas(&[(&[("user", None)], "producer_byte_rate", 100.0)]);
        for t in 0..10 {
            assert_eq!(q.record(P, "u", "c", 100.0, t * 1000), 0);
        }
        let wait = q.record(P, "u", "c", 1000.0, 10_000);
        assert!(wait > 0 && wait <= 11_000, "{wait}");
    }

    #[test]
    fn request_time_throttles_are_bounded_by_one_window() {
        let q = quotas(&[(&[("user", None)], "request_percentage", 1.0)]);
        // 100 % of a thread for 10 s against a 1 % quota.
        assert_eq!(
            q.record(QuotaKey::RequestPercentage, "u", "c", 1000.0, 0),
            1000
        );
    }

    #[test]
    fn fetches_are_capped_at_the_span_allowance() {
        let q = quotas(&[(&[("user", None)], "consumer_byte_rate", 1024.0)]);
        assert_eq!(
            q.span_allowance(QuotaKey::ConsumerByteRate, "u", "c"),
            Some(10 * 1024)
        );
        assert_eq!(q.span_allowance(P, "u", "c"), None);
    }

    #[test]
    fn connections_over_the_ip_rate_are_held_then_refused() {
        let q = quotas(&[(&[("ip", None)], "connection_creation_rate", 1.0)]);
        let ip: std::net::IpAddr = "10.1.2.3".parse().unwrap();
        for _ in 0..10 {
            assert_eq!(q.record_connection(ip, 0), 0);
        }
        let held = q.record_connection(ip, 0);
        assert!(held > 0 && held <= 1000, "{held}");
        // A refused connection does not count: the next one is judged the same.
        assert_eq!(q.record_connection(ip, 0), held);
        assert_eq!(q.record_connection("10.1.2.4".parse().unwrap(), 0), 0);
    }

    #[test]
    fn a_mute_only_grows() {
        let m = Mute::default();
        m.until(50);
        m.until(20);
        assert_eq!(m.muted_until(), 50);
    }
}
