//! The broker-wide budget for request bytes held in memory (Kafka's
//! `queued.max.request.bytes`), from the first byte of a frame until its answer is written.
//!
//! A frame's memory is taken as its bytes arrive, never on the strength of its length prefix,
//! so a client that announces 100 MB and sends 8 MB holds 8 MB. When the budget is spent,
//! connections wait before reading further; if the wait goes on, the connection stalled
//! longest in the middle of a frame is closed, so half-sent frames cannot starve clients that
//! send whole ones.
//!
//! The same pool keeps the buffers of large frames for reuse: a fresh buffer costs a page
//! fault and a zeroed page for every 4 KiB the socket writes into it, which was a tenth of
//! the broker's time on a produce stream.

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

/// Frames from this size up to [`RECYCLED_CAPACITY`] are read into recycled buffers; smaller
/// ones are cheap for the allocator, larger ones rare.
pub const RECYCLE_FROM: usize = 64 << 10;
/// The capacity of every recycled buffer, so that any of them fits any frame it may serve.
pub const RECYCLED_CAPACITY: usize = 1 << 20;
/// Idle recycled buffers kept at most; the rest are freed.
const RECYCLED_IDLE_MAX: usize = 16;

pub struct MemoryPool {
    semaphore: Arc<Semaphore>,
    capacity: usize,
    next_id: AtomicU64,
    /// Connections in the middle of a frame.
    partial: Mutex<HashMap<u64, Partial>>,
    /// Idle buffers of [`RECYCLED_CAPACITY`], empty.
    recycled: Mutex<Vec<Vec<u8>>>,
}

/// A frame's buffer that goes back to the pool when the last `Bytes` of the frame drops.
struct Recycle {
    buf: Vec<u8>,
    pool: Arc<MemoryPool>,
}

impl AsRef<[u8]> for Recycle {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Recycle {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        let mut idle = self.pool.recycled.lock();
        if idle.len() < RECYCLED_IDLE_MAX {
            buf.clear();
            idle.push(buf);
        }
    }
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
            recycled: Mutex::new(Vec::new()),
        })
    }

    /// An empty buffer for a frame of `len` bytes: a recycled one when `len` is in the
    /// recycled range (see [`MemoryPool::frame_bytes`]), else a new one.
    pub fn buffer(&self, len: usize) -> Vec<u8> {
        if !(RECYCLE_FROM..=RECYCLED_CAPACITY).contains(&len) {
            return Vec::new();
        }
        let reused = self.recycled.lock().pop();
        reused.unwrap_or_else(|| Vec::with_capacity(RECYCLED_CAPACITY))
    }

    /// The frame read into `buf` (from [`MemoryPool::buffer`]) as `Bytes`; a recycled-size
    /// buffer returns to the pool once every slice of the frame is dropped.
    pub fn frame_bytes(self: &Arc<Self>, buf: Vec<u8>) -> bytes::Bytes {
        if buf.capacity() == RECYCLED_CAPACITY {
            bytes::Bytes::from_owner(Recycle {
                buf,
                pool: Arc::clone(self),
            })
        } else {
            bytes::Bytes::from(buf)
        }
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
    pub fn pool(&self) -> &Arc<MemoryPool> {
        &self.pool
    }

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

    /// A large frame's buffer comes back once the frame's last slice is dropped, and is
    /// handed out again; small and oversized frames get plain buffers.
    #[test]
    fn large_frame_buffers_are_recycled_once_their_slices_drop() {
        let pool = MemoryPool::new(None);
        let mut buf = pool.buffer(RECYCLE_FROM);
        assert_eq!(buf.capacity(), RECYCLED_CAPACITY);
        buf.extend_from_slice(&[7u8; RECYCLE_FROM]);
        let address = buf.as_ptr();
        let frame = pool.frame_bytes(buf);
        let slice = frame.slice(10..20);
        drop(frame);
        assert!(
            pool.recycled.lock().is_empty(),
            "a slice still holds the frame"
        );
        assert_eq!(&slice[..], &[7u8; 10]);
        drop(slice);
        let again = pool.buffer(RECYCLED_CAPACITY);
        assert_eq!((again.as_ptr(), again.len()), (address, 0));
        assert_eq!(pool.buffer(100).capacity(), 0);
        assert_eq!(pool.buffer(RECYCLED_CAPACITY + 1).capacity(), 0);
        // Plain buffers are not kept.
        drop(pool.frame_bytes(vec![1; 100]));
        assert!(pool.recycled.lock().is_empty());
        // At most RECYCLED_IDLE_MAX idle buffers are kept.
        let frames: Vec<_> = (0..RECYCLED_IDLE_MAX + 3)
            .map(|_| pool.frame_bytes(pool.buffer(RECYCLED_CAPACITY)))
            .collect();
        drop(frames);
        assert_eq!(pool.recycled.lock().len(), RECYCLED_IDLE_MAX);
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
