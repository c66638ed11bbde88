//! The broker-wide budget for request bytes held in memory (Kafka's
//! `queued.max.request.bytes`), from the first byte of a frame until its answer is written.
//!
//! A frame's memory is taken as its bytes arrive, never on the strength of its length prefix,
//! so a client that announces 100 MB and sends 8 MB holds 8 MB. When the budget is spent,
//! connections wait before reading further; if the wait goes on, the connection stalled
//! longest in the middle of a frame is closed, so half-sent frames cannot starve clients that
//! send whole ones.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// A connection that made no progress on its frame for this long is a candidate for
/// closing when memory runs out.
const STALLED_AFTER: Duration = Duration::from_millis(500);
/// How often a waiting connection looks for a stalled one to close.
const EVICT_EVERY: Duration = Duration::from_millis(100);

pub struct MemoryPool {
    semaphore: Arc<Semaphore>,
    capacity: usize,
    next_id: AtomicU64,
    /// Connections in the middle of a frame.
    partial: Mutex<HashMap<u64, Partial>>,
}

/// A connection in the middle of a frame. Waiting for memory is not progress: a partial
/// frame that cannot grow holds memory others need, so it may be closed too (two partial
/// frames that each wait for the other's memory would otherwise wait forever).
struct Partial {
    last_progress: Instant,
    close: Arc<Notify>,
}

/// Memory taken from the pool; returned when dropped.
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits())
    }

    fn add(&mut self, more: OwnedSemaphorePermit) {
        match &mut self.permit {
            Some(p) => p.merge(more),
            None => self.permit = Some(more),
        }
    }
}

/// One connection's membership in the pool.
pub struct Member {
    pool: Arc<MemoryPool>,
    id: u64,
    /// Fired when the pool closes this connection to free memory.
    close: Arc<Notify>,
}

impl MemoryPool {
    /// `capacity_bytes` of request memory for the whole broker; `None` means unbounded.
    pub fn new(capacity_bytes: Option<usize>) -> Arc<Self> {
        let capacity = capacity_bytes
            .unwrap_or(Semaphore::MAX_PERMITS)
            .clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Self {
            semaphore: Arc::new(Semaphore::new(capacity)),
            capacity,
            next_id: AtomicU64::new(0),
            partial: Mutex::new(HashMap::new()),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes not held by any request.
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }

    pub fn join(self: &Arc<Self>) -> Member {
        Member {
            pool: Arc::clone(self),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            close: Arc::new(Notify::new()),
        }
    }

    /// Closes the connection that has been stalled mid-frame the longest, if any has been
    /// for at least [`STALLED_AFTER`]. Returns whether one was closed.
    fn close_stalled(&self, except: u64) -> bool {
        let mut partial = self.partial.lock();
        let now = Instant::now();
        let victim = partial
            .iter()
            .filter(|(&id, p)| id != except && now.duration_since(p.last_progress) >= STALLED_AFTER)
            .min_by_key(|(_, p)| p.last_progress)
            .map(|(&id, _)| id);
        match victim.and_then(|id| partial.remove(&id)) {
            Some(p) => {
                p.close.notify_one();
                true
            }
            None => false,
        }
    }
}

impl Member {
    /// Resolves when the pool has closed this connection to free memory.
    pub async fn closed(&self) {
        self.close.notified().await;
    }

    pub fn empty(&self) -> Reservation {
        Reservation { permit: None }
    }

    /// Adds `bytes` to `reservation`, waiting while the pool is spent. A request larger than
    /// the whole budget takes the whole budget, so it is slow rather than impossible.
    pub async fn reserve(&self, reservation: &mut Reservation, bytes: usize) {
        let want = bytes.min(self.pool.capacity.saturating_sub(reservation.bytes()));
        if want == 0 {
            return;
        }
        let want = u32::try_from(want).unwrap_or(u32::MAX);
        let sem = Arc::clone(&self.pool.semaphore);
        if let Ok(p) = Arc::clone(&sem).try_acquire_many_owned(want) {
            reservation.add(p);
            return;
        }
        let acquire = sem.acquire_many_owned(want);
        tokio::pin!(acquire);
        let mut tick = tokio::time::interval(EVICT_EVERY);
        loop {
            tokio::select! {
                p = &mut acquire => {
                    if let Ok(p) = p {
                        reservation.add(p);
                    }
                    break;
                }
                _ = tick.tick() => {
                    self.pool.close_stalled(self.id);
                }
            }
        }
    }

    /// Marks this connection as in the middle of a frame that just received bytes.
    pub fn progress(&self) {
        let mut partial = self.pool.partial.lock();
        let p = partial.entry(self.id).or_insert_with(|| Partial {
            last_progress: Instant::now(),
            close: Arc::clone(&self.close),
        });
        p.last_progress = Instant::now();
    }

    /// The frame is complete (or abandoned): this connection is no longer mid-frame.
    pub fn frame_done(&self) {
        self.pool.partial.lock().remove(&self.id);
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.frame_done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_return_memory_when_dropped() {
        let pool = MemoryPool::new(Some(100));
        let m = pool.join();
        let mut r = m.empty();
        m.reserve(&mut r, 60).await;
        m.reserve(&mut r, 30).await;
        assert_eq!(r.bytes(), 90);
        assert_eq!(pool.available(), 10);
        drop(r);
        assert_eq!(pool.available(), 100);
        // Larger than the budget: takes the whole budget rather than waiting forever.
        let mut big = m.empty();
        m.reserve(&mut big, 1_000).await;
        assert_eq!(big.bytes(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_connection_closes_the_longest_stalled_one() {
        let pool = MemoryPool::new(Some(100));
        let (stalled_old, stalled_new, waiter) = (pool.join(), pool.join(), pool.join());
        let mut a = stalled_old.empty();
        stalled_old.reserve(&mut a, 50).await;
        stalled_old.progress();
        tokio::time::advance(Duration::from_millis(10)).await;
        let mut b = stalled_new.empty();
        stalled_new.reserve(&mut b, 50).await;
        stalled_new.progress();
        let closed = tokio::spawn(async move {
            stalled_old.closed().await;
            drop(a);
        });
        let mut c = waiter.empty();
        // Paused time auto-advances while everything waits, so the stall threshold passes.
        waiter.reserve(&mut c, 40).await;
        assert_eq!(c.bytes(), 40);
        closed.await.unwrap();
        // The newer stalled connection kept its memory.
        assert_eq!(b.bytes(), 50);
    }
}
