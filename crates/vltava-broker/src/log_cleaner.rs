//! The background log cleaner (Kafka's `LogCleaner`): `log.cleaner.threads` OS threads, off
//! the async workers, each taking the dirtiest compacted partition that is due, running one
//! pass of `vltava_storage`'s cleaner on it, and waiting `log.cleaner.backoff.ms` when none is
//! due. Compaction follows each topic's `cleanup.policy`, never its name, so internal topics
//! (`__consumer_offsets`, later `__transaction_state`) are cleaned like any other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use vltava_storage::cleaner::{Throttle, MAP_ENTRY_BYTES};

use crate::broker::now_ms;
use crate::config::BrokerConfig;
use crate::replica_manager::ReplicaManager;

/// The cleaner's broker-level settings (`log.cleaner.*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CleanerSettings {
    pub enable: bool,
    pub threads: usize,
    /// Keys one thread's offset map holds: the dedupe buffer split across the threads.
    pub map_entries: usize,
    pub io_max_bytes_per_second: f64,
    pub backoff: Duration,
}

impl CleanerSettings {
    pub fn from_config(config: &BrokerConfig) -> Self {
        let threads = config.get_i64("log.cleaner.threads").clamp(0, 64) as usize;
        let buffer = config.get_i64("log.cleaner.dedupe.buffer.size").max(1) as usize;
        let rate = config
            .get_f64("log.cleaner.io.max.bytes.per.second")
            .max(1.0);
        Self {
            enable: config.get_bool("log.cleaner.enable"),
            threads,
            map_entries: (buffer / threads.max(1) / MAP_ENTRY_BYTES).max(1),
            io_max_bytes_per_second: rate,
            backoff: Duration::from_millis(config.get_i64("log.cleaner.backoff.ms").max(1) as u64),
        }
    }
}

/// The running cleaner threads; [`LogCleaner::shutdown`] stops them between passes.
pub struct LogCleaner {
    threads: Vec<JoinHandle<()>>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    /// Set at shutdown: a pass in progress stops pacing and finishes at full speed.
    stopping: Arc<AtomicBool>,
}

/// Kafka's `Throttler`: all threads together read and write at most the configured rate.
#[derive(Debug)]
struct SharedThrottle {
    rate: f64,
    state: Mutex<(Instant, u64)>,
    stopping: Arc<AtomicBool>,
}

impl SharedThrottle {
    fn pace(&self, bytes: u64) {
        if !self.rate.is_finite() || self.rate >= 1e15 || self.stopping.load(Ordering::Acquire) {
            return;
        }
        let wait = {
            let mut st = self.state.lock();
            st.1 += bytes;
            let due = Duration::from_secs_f64(st.1 as f64 / self.rate);
            let elapsed = st.0.elapsed();
            if elapsed > Duration::from_secs(1) && due <= elapsed {
                // A new window, so idle time does not become a burst allowance.
                *st = (Instant::now(), 0);
            }
            due.saturating_sub(elapsed)
        };
        if wait >= Duration::from_millis(10) {
            std::thread::sleep(wait);
        }
    }
}

impl LogCleaner {
    /// Starts the threads; none when `log.cleaner.enable` is false or no threads are set.
    pub fn start(partitions: Arc<ReplicaManager>, settings: CleanerSettings) -> Self {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stopping = Arc::new(AtomicBool::new(false));
        let throttle = Arc::new(SharedThrottle {
            rate: settings.io_max_bytes_per_second,
            state: Mutex::new((Instant::now(), 0)),
            stopping: Arc::clone(&stopping),
        });
        let count = if settings.enable { settings.threads } else { 0 };
        let threads = (0..count)
            .filter_map(|i| {
                let (partitions, stop, throttle) = (
                    Arc::clone(&partitions),
                    Arc::clone(&stop),
                    Arc::clone(&throttle),
                );
                std::thread::Builder::new()
                    .name(format!("log-cleaner-{i}"))
                    .spawn(move || run(&partitions, &settings, &stop, &throttle))
                    .map_err(
                        |e| tracing::error!(error = %e, "could not start a log cleaner thread"),
                    )
                    .ok()
            })
            .collect();
        Self {
            threads,
            stop,
            stopping,
        }
    }

    /// Stops the threads after their current pass and waits for them.
    pub fn shutdown(self) {
        self.stopping.store(true, Ordering::Release);
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn run(
    partitions: &ReplicaManager,
    settings: &CleanerSettings,
    stop: &(Mutex<bool>, Condvar),
    throttle: &SharedThrottle,
) {
    loop {
        if *stop.0.lock() {
            return;
        }
        let cleaned = clean_dirtiest(partitions, settings, throttle);
        let mut stopped = stop.0.lock();
        if *stopped {
            return;
        }
        if !cleaned {
            stop.1.wait_for(&mut stopped, settings.backoff);
        }
    }
}

/// One pass on the dirtiest due partition; false when none was due.
fn clean_dirtiest(
    partitions: &ReplicaManager,
    settings: &CleanerSettings,
    throttle: &SharedThrottle,
) -> bool {
    // Cleaning stays below the recovery point on disk (see `Log::recovery_point_written`),
    // so bring the checkpoints up to date first when a compacted log has moved on.
    if partitions.all().iter().any(|p| p.checkpoint_lags()) {
        partitions.write_checkpoints();
    }
    let now = now_ms();
    let mut candidates: Vec<_> = partitions
        .all()
        .into_iter()
        .filter_map(|p| p.cleanable(now).filter(|c| c.due).map(|c| (c, p)))
        .collect();
    if candidates.is_empty() {
        return false;
    }
    candidates.sort_by(|a, b| b.0.dirty_ratio.total_cmp(&a.0.dirty_ratio));
    for (cleanable, p) in candidates {
        let mut pace = |bytes: u64| throttle.pace(bytes);
        let pace: &mut dyn Throttle = &mut pace;
        match p.clean(now_ms(), settings.map_entries, pace) {
            Ok(Some(stats)) => {
                tracing::debug!(
                    topic = %p.topic,
                    partition = p.index,
                    dirty_ratio = cleanable.dirty_ratio,
                    clean_offset = stats.end_offset.get(),
                    bytes_read = stats.bytes_read,
                    bytes_written = stats.bytes_written,
                    records_removed = stats.records_removed,
                    "cleaner pass done"
                );
                partitions.write_checkpoints();
                return true;
            }
            // Another thread is cleaning it.
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "log cleaning failed");
                return false;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_split_the_dedupe_buffer_across_threads() {
        let props = [
            ("log.cleaner.threads", "4"),
            ("log.cleaner.dedupe.buffer.size", "2400000"),
            ("log.cleaner.backoff.ms", "250"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let s = CleanerSettings::from_config(&BrokerConfig::from_props(props).unwrap());
        assert!(s.enable);
        assert_eq!((s.threads, s.map_entries), (4, 25_000));
        assert_eq!(s.backoff, Duration::from_millis(250));
        let d = CleanerSettings::from_config(&BrokerConfig::default());
        assert_eq!((d.threads, d.map_entries), (1, 134_217_728 / 24));
        assert!(d.io_max_bytes_per_second > 1e300, "unthrottled by default");
    }

    #[test]
    fn the_throttle_holds_the_rate_until_shutdown() {
        let t = SharedThrottle {
            rate: 1_000_000.0,
            state: Mutex::new((Instant::now(), 0)),
            stopping: Arc::new(AtomicBool::new(false)),
        };
        let started = Instant::now();
        for _ in 0..4 {
            t.pace(50_000);
        }
        // 200 KB at 1 MB/s: at least about 200 ms.
        let paced = started.elapsed();
        assert!(paced >= Duration::from_millis(180), "{paced:?}");
        // At shutdown a pass finishes at full speed.
        t.stopping.store(true, Ordering::Release);
        let started = Instant::now();
        t.pace(10_000_000);
        assert!(started.elapsed() < Duration::from_millis(100));
    }
}
