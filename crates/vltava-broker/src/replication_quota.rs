//! Kafka's replication throttles (`leader.replication.throttled.rate`,
//! `follower.replication.throttled.rate`): a byte rate shared by the throttled partitions'
//! replication traffic of one broker, so moving replicas cannot starve clients. Time is
//! passed in, so the arithmetic is tested without clocks.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// One direction's quota: a token bucket holding at most one second of the rate. Traffic
/// is recorded after it is sent, so the bucket may go below zero by one response; the
/// quota is exceeded until it refills above zero, which keeps the average at the rate.
#[derive(Debug)]
pub struct ReplicationQuota {
    /// Bytes per second; `u64::MAX` (Kafka's Long.MAX_VALUE default) is no limit.
    rate: AtomicU64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

impl Default for ReplicationQuota {
    fn default() -> Self {
        Self {
            rate: AtomicU64::new(u64::MAX),
            bucket: Mutex::new(Bucket {
                tokens: 0.0,
                at_ms: i64::MIN,
            }),
        }
    }
}

impl ReplicationQuota {
    pub fn set_rate(&self, bytes_per_sec: u64) {
        if self.rate.swap(bytes_per_sec, Ordering::Relaxed) != bytes_per_sec {
            // A new rate starts with a full second of it.
            self.bucket.lock().at_ms = i64::MIN;
        }
    }

    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    fn limited(&self) -> Option<f64> {
        let r = self.rate();
        (r < i64::MAX as u64).then_some(r as f64)
    }

    fn refill(b: &mut Bucket, rate: f64, now_ms: i64) {
        if b.at_ms == i64::MIN {
            b.tokens = rate;
        } else if now_ms > b.at_ms {
            b.tokens = (b.tokens + rate * (now_ms - b.at_ms) as f64 / 1000.0).min(rate);
        }
        b.at_ms = b.at_ms.max(now_ms);
    }

    /// Whether throttled traffic must wait.
    pub fn is_exceeded(&self, now_ms: i64) -> bool {
        let Some(rate) = self.limited() else {
            return false;
        };
        let mut b = self.bucket.lock();
        Self::refill(&mut b, rate, now_ms);
        b.tokens <= 0.0
    }

    /// Counts `bytes` of throttled traffic.
    pub fn record(&self, bytes: usize, now_ms: i64) {
        let Some(rate) = self.limited() else {
            return;
        };
        let mut b = self.bucket.lock();
        Self::refill(&mut b, rate, now_ms);
        b.tokens -= bytes as f64;
    }
}

/// A broker's two replication quotas.
#[derive(Debug, Default)]
pub struct ReplicationQuotas {
    pub leader: ReplicationQuota,
    pub follower: ReplicationQuota,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_by_default() {
        let q = ReplicationQuota::default();
        q.record(usize::MAX / 2, 0);
        assert!(!q.is_exceeded(0));
    }

    #[test]
    fn traffic_over_the_rate_waits_until_the_average_is_back_under_it() {
        let q = ReplicationQuota::default();
        q.set_rate(1000);
        assert!(!q.is_exceeded(0));
        // One second's worth is allowed at once, then 2000 bytes more than that.
        q.record(3000, 0);
        assert!(q.is_exceeded(0));
        assert!(q.is_exceeded(1999));
        assert!(!q.is_exceeded(2001));
        // Idle time refills at most one second's worth.
        q.record(1, 2001);
        assert!(!q.is_exceeded(60_000));
        q.record(1000, 60_000);
        assert!(q.is_exceeded(60_000));
        // Sending exactly at the rate keeps up.
        let q = ReplicationQuota::default();
        q.set_rate(1000);
        let mut sent = 0;
        for ms in (0..10_000).step_by(10) {
            if !q.is_exceeded(ms) {
                q.record(100, ms);
                sent += 100;
            }
        }
        assert!((10_000..=11_100).contains(&sent), "{sent}");
        // Lifting the limit lets everything through.
        q.set_rate(u64::MAX);
        assert!(!q.is_exceeded(10_000));
    }
}
