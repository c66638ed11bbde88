//! A coordinator runtime, generic over the shard type (Kafka's `CoordinatorRuntime` idea).
//!
//! Each partition of an internal topic hosted here (`__consumer_offsets` for groups, later
//! `__transaction_state`) is a *shard*: its own state behind its own lock, so operations on
//! different shards run concurrently. An operation runs against the shard's state and returns
//! records plus a reply ([`CoordinatorResult`]). The runtime appends the records as one batch
//! to the shard's partition, then applies them through [`CoordinatorShard::replay`], the path
//! that loads a shard from its log, so live and loaded state are built the same way; the
//! reply is handed out once the partition's fsync covers the batch. If the append fails the
//! operation's undo runs, nothing is replayed, and the caller gets an error.
//!
//! A shard exists only between [`CoordinatorRuntime::on_leader`] (which loads it from the log
//! start on a blocking thread; meanwhile requests get [`RuntimeError::LoadInProgress`]) and
//! [`CoordinatorRuntime::on_resigned`] (after which they get [`RuntimeError::NotCoordinator`]).
//! Time comes from a [`Clock`]; the log through a [`CoordinatorLog`].

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use futures::future::{self, BoxFuture, FutureExt};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{oneshot, watch};
use vltava_coordinator::shard::{CoordinatorResult, CoordinatorShard, TxnBatch};
use vltava_storage::StorageError;
use vltava_types::ProducerId;

/// Where the runtime and its shards get the time, and how they wait for it.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
    /// Completes once `now_ms() >= deadline_ms`.
    fn sleep_until(&self, deadline_ms: i64) -> BoxFuture<'static, ()>;
}

/// A clock that moves only when told to, for tests.
pub struct ManualClock {
    now: watch::Sender<i64>,
}

impl ManualClock {
    pub fn new(start_ms: i64) -> Arc<Self> {
        Arc::new(Self {
            now: watch::Sender::new(start_ms),
        })
    }

    pub fn advance(&self, ms: i64) {
        self.now.send_modify(|n| *n += ms);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        *self.now.borrow()
    }

    fn sleep_until(&self, deadline_ms: i64) -> BoxFuture<'static, ()> {
        let mut rx = self.now.subscribe();
        async move {
            if rx.wait_for(|n| *n >= deadline_ms).await.is_err() {
                // The clock is gone: time stops.
                future::pending::<()>().await;
            }
        }
        .boxed()
    }
}

/// Why a coordinator log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("partition {partition} of the coordinator's topic is not hosted here")]
    NotHosted { partition: i32 },
    #[error("this broker no longer leads partition {partition} of the coordinator's topic")]
    NotLeader { partition: i32 },
    #[error("the ISR of partition {partition} of the coordinator's topic fell below min.insync.replicas")]
    NotEnoughReplicas { partition: i32 },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The only way the runtime reaches the partitions of its topic.
pub trait CoordinatorLog: Send + Sync + 'static {
    /// Appends one batch (its base offset is rewritten); returns the log end offset after it.
    fn append(&self, partition: i32, batch: &mut [u8]) -> Result<i64, LogError>;
    /// Appends a transaction marker of `producer_id`; returns the log end offset after it.
    fn append_txn_marker(
        &self,
        partition: i32,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
        commit: bool,
    ) -> Result<i64, LogError>;
    /// Completes once everything below `end_offset` is on stable storage.
    fn wait_durable(
        &self,
        partition: i32,
        end_offset: i64,
    ) -> BoxFuture<'static, Result<(), LogError>>;
    /// Whole batches from `from`, up to `max_bytes` (at least one), and the offset after the
    /// last of them (`from` when there is nothing more).
    fn read(&self, partition: i32, from: i64, max_bytes: usize) -> Result<(Bytes, i64), LogError>;
    fn log_start_offset(&self, partition: i32) -> Result<i64, LogError>;
    fn log_end_offset(&self, partition: i32) -> Result<i64, LogError>;
}

/// What a caller of the runtime is told when its operation could not run or be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The shard is not hosted here (never loaded, or resigned), or its log failed.
    #[error("this broker does not coordinate the partition")]
    NotCoordinator,
    #[error("the partition's state is still loading")]
    LoadInProgress,
    /// The records could not be written (partition missing, record too large to encode).
    #[error("the coordinator cannot write its records")]
    NotAvailable,
}

impl From<&LogError> for RuntimeError {
    /// Kafka's mapping: a missing partition is COORDINATOR_NOT_AVAILABLE, a storage error
    /// NOT_COORDINATOR (the log must be reloaded before this broker coordinates again).
    fn from(e: &LogError) -> Self {
        match e {
            LogError::NotHosted { .. } => RuntimeError::NotAvailable,
            LogError::NotLeader { .. } => RuntimeError::NotCoordinator,
            // Kafka answers COORDINATOR_NOT_AVAILABLE when the ISR is too small.
            LogError::NotEnoughReplicas { .. } => RuntimeError::NotAvailable,
            LogError::Storage(_) => RuntimeError::NotCoordinator,
        }
    }
}

/// Work to do once a timer operation's records are durable (deliver parked replies).
pub type AfterDurable = Box<dyn FnOnce() + Send>;

pub type TimerOp<S> = Arc<dyn Fn(&mut S, i64) -> CoordinatorResult<S, AfterDurable> + Send + Sync>;

/// An operation every shard runs every `interval_ms` while it is loaded.
pub struct Timer<S: CoordinatorShard> {
    pub name: &'static str,
    pub interval_ms: i64,
    pub run: TimerOp<S>,
}

pub struct RuntimeConfig<S: CoordinatorShard> {
    /// The internal topic, for logs.
    pub topic: &'static str,
    /// An empty shard for a partition, ready to replay its records.
    pub new_shard: Box<dyn Fn(i32) -> S + Send + Sync>,
    pub timers: Vec<Timer<S>>,
}
/// Bytes read per step when a shard loads.
const LOAD_READ_BYTES: usize = 1 << 20;

pub struct CoordinatorRuntime<S: CoordinatorShard> {
    inner: Arc<Inner<S>>,
}

struct Inner<S: CoordinatorShard> {
    config: RuntimeConfig<S>,
    log: Arc<dyn CoordinatorLog>,
    clock: Arc<dyn Clock>,
    /// Held only to find or replace a slot, never while an operation runs.
    shards: RwLock<HashMap<i32, Slot<S>>>,
}

enum Slot<S> {
    Loading { epoch: i32 },
    Active(Arc<Shard<S>>),
}

struct Shard<S> {
    partition: i32,
    epoch: i32,
    state: Mutex<S>,
}

impl<S: CoordinatorShard> CoordinatorRuntime<S> {
    pub fn new(
        config: RuntimeConfig<S>,
        log: Arc<dyn CoordinatorLog>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                log,
                clock,
                shards: RwLock::new(HashMap::new()),
            }),
        }
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// This broker now leads `partition` at `epoch`: load its shard from the log start, in
    /// the background. The returned future completes when the load is over (whether or not
    /// it succeeded); callers need not wait for it. A stale epoch is ignored.
    pub fn on_leader(&self, partition: i32, epoch: i32) -> BoxFuture<'static, ()> {
        let (done_tx, done_rx) = oneshot::channel::<()>();
        {
            let mut shards = self.inner.shards.write();
            let current = match shards.get(&partition) {
                Some(Slot::Loading { epoch }) => Some(*epoch),
                Some(Slot::Active(s)) => Some(s.epoch),
                None => None,
            };
            if current.is_some_and(|e| e >= epoch) {
                return done_rx.map(|_| ()).boxed();
            }
            shards.insert(partition, Slot::Loading { epoch });
        }
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            Inner::load(inner, partition, epoch).await;
            let _ = done_tx.send(());
        });
        done_rx.map(|_| ()).boxed()
    }

    /// This broker no longer leads `partition`: its shard is dropped, with its timers.
    pub fn on_resigned(&self, partition: i32) {
        if self.inner.shards.write().remove(&partition).is_some() {
            tracing::info!(
                topic = self.inner.config.topic,
                partition,
                "coordinator shard unloaded"
            );
        }
    }

    /// Partitions whose shards are loaded.
    pub fn active_partitions(&self) -> Vec<i32> {
        let mut out: Vec<i32> = self
            .inner
            .shards
            .read()
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Active(_)))
            .map(|(p, _)| *p)
            .collect();
        out.sort_unstable();
        out
    }

    /// The leader epoch the shard was loaded at (a transaction marker's coordinator epoch).
    pub fn epoch(&self, partition: i32) -> Result<i32, RuntimeError> {
        Ok(self.inner.shard(partition)?.epoch)
    }

    /// Reads a shard without writing.
    pub fn read<R>(&self, partition: i32, f: impl FnOnce(&S) -> R) -> Result<R, RuntimeError> {
        let shard = self.inner.shard(partition)?;
        let state = shard.state.lock();
        Ok(f(&state))
    }

    /// Reads every loaded shard; fails while any is still loading, as Kafka's ListGroups does.
    pub fn read_all<R>(&self, mut f: impl FnMut(&S) -> R) -> Result<Vec<R>, RuntimeError> {
        let shards: Vec<Arc<Shard<S>>> = {
            let slots = self.inner.shards.read();
            let mut out = Vec::new();
            for slot in slots.values() {
                match slot {
                    Slot::Loading { .. } => return Err(RuntimeError::LoadInProgress),
                    Slot::Active(s) => out.push(Arc::clone(s)),
                }
            }
            out
        };
        Ok(shards.iter().map(|s| f(&s.state.lock())).collect())
    }

    /// Runs `op` on the shard now (so operations apply in call order), appends its records
    /// and replays them; the returned future gives the reply once they are durable.
    pub fn write<R: Send + 'static>(
        &self,
        partition: i32,
        op: impl FnOnce(&mut S, i64) -> CoordinatorResult<S, R>,
    ) -> BoxFuture<'static, Result<R, RuntimeError>> {
        match self.inner.shard(partition) {
            Ok(shard) => Inner::write(&self.inner, &shard, op),
            Err(e) => future::ready(Err(e)).boxed(),
        }
    }
}

impl<S: CoordinatorShard> CoordinatorRuntime<S> {
    /// Writes a transaction marker into `partition` and applies it to the shard: records
    /// that producer wrote transactionally become part of the state (`commit`) or are
    /// dropped. The future completes once the marker is durable.
    pub fn write_txn_marker(
        &self,
        partition: i32,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
        commit: bool,
    ) -> BoxFuture<'static, Result<(), RuntimeError>> {
        match self.inner.shard(partition) {
            Ok(shard) => Inner::write_marker(
                &self.inner,
                &shard,
                producer_id,
                producer_epoch,
                coordinator_epoch,
                commit,
            ),
            Err(e) => future::ready(Err(e)).boxed(),
        }
    }
}

impl<S: CoordinatorShard> Inner<S> {
    fn shard(&self, partition: i32) -> Result<Arc<Shard<S>>, RuntimeError> {
        match self.shards.read().get(&partition) {
            Some(Slot::Active(s)) => Ok(Arc::clone(s)),
            Some(Slot::Loading { .. }) => Err(RuntimeError::LoadInProgress),
            None => Err(RuntimeError::NotCoordinator),
        }
    }

    /// Whether `shard` is still the partition's loaded shard.
    fn is_current(&self, shard: &Arc<Shard<S>>) -> bool {
        matches!(self.shards.read().get(&shard.partition), Some(Slot::Active(s)) if Arc::ptr_eq(s, shard))
    }

    fn write<R: Send + 'static>(
        me: &Arc<Self>,
        shard: &Arc<Shard<S>>,
        op: impl FnOnce(&mut S, i64) -> CoordinatorResult<S, R>,
    ) -> BoxFuture<'static, Result<R, RuntimeError>> {
        let now = me.clock.now_ms();
        let mut state = shard.state.lock();
        // Resigned (or reloaded) since it was looked up: nothing may be written for it.
        if !me.is_current(shard) {
            return future::ready(Err(RuntimeError::NotCoordinator)).boxed();
        }
        let CoordinatorResult {
            records,
            reply,
            undo,
            transaction,
        } = op(&mut state, now);
        if records.is_empty() {
            return future::ready(Ok(reply)).boxed();
        }
        let end = match crate::broker::blocking_io(|| {
            me.append(shard.partition, &state, &records, transaction, now)
        }) {
            Ok(end) => end,
            Err(e) => {
                if let Some(undo) = undo {
                    undo(&mut state);
                }
                return future::ready(Err(e)).boxed();
            }
        };
        for r in &records {
            match transaction {
                Some(t) => state.replay_transactional(t.producer_id, r, now),
                None => state.replay(r, now),
            }
        }
        drop(state);
        Inner::reply_when_durable(me, shard, end, reply)
    }

    /// The reply once everything below `end` is durable; if the log fails first, the shard
    /// (which already holds the records) is rebuilt from the log.
    fn reply_when_durable<R: Send + 'static>(
        me: &Arc<Self>,
        shard: &Arc<Shard<S>>,
        end: i64,
        reply: R,
    ) -> BoxFuture<'static, Result<R, RuntimeError>> {
        let durable = me.log.wait_durable(shard.partition, end);
        let (me, shard) = (Arc::clone(me), Arc::clone(shard));
        async move {
            match durable.await {
                Ok(()) => Ok(reply),
                Err(e) => {
                    // The state holds records the log may not: rebuild it from the log.
                    tracing::warn!(topic = me.config.topic, partition = shard.partition, error = %e, "coordinator records not durable; reloading the shard");
                    Inner::reload(&me, &shard);
                    Err(RuntimeError::from(&e))
                }
            }
        }
        .boxed()
    }

    /// Writes a transaction marker of `producer_id` into the shard's partition (the
    /// transaction coordinator's WriteTxnMarkers for a partition of this topic), then replays
    /// it, so the shard applies or drops that producer's pending records; the reply comes
    /// once the marker is durable.
    fn write_marker(
        me: &Arc<Self>,
        shard: &Arc<Shard<S>>,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
        commit: bool,
    ) -> BoxFuture<'static, Result<(), RuntimeError>> {
        let now = me.clock.now_ms();
        let mut state = shard.state.lock();
        if !me.is_current(shard) {
            return future::ready(Err(RuntimeError::NotCoordinator)).boxed();
        }
        let end = match crate::broker::blocking_io(|| {
            me.log.append_txn_marker(
                shard.partition,
                producer_id,
                producer_epoch,
                coordinator_epoch,
                commit,
            )
        }) {
            Ok(end) => end,
            Err(e) => {
                tracing::warn!(topic = me.config.topic, partition = shard.partition, error = %e, "coordinator marker append failed");
                return future::ready(Err(RuntimeError::from(&e))).boxed();
            }
        };
        state.replay_end_txn(ProducerId::new(producer_id), commit, now);
        drop(state);
        Inner::reply_when_durable(me, shard, end, ())
    }

    /// Encodes `records` into one batch (transactional for `transaction`'s producer) and
    /// appends it; the log end offset after it.
    fn append(
        &self,
        partition: i32,
        state: &S,
        records: &[S::Record],
        transaction: Option<TxnBatch>,
        now: i64,
    ) -> Result<i64, RuntimeError> {
        let encoded: Vec<(Vec<u8>, Option<Vec<u8>>)> = records
            .iter()
            .map(|r| state.encode(r))
            .collect::<Result<_, _>>()
            .map_err(|e| {
                tracing::warn!(topic = self.config.topic, partition, error = %e, "cannot encode coordinator records");
                RuntimeError::NotAvailable
            })?;
        let mut batch = match transaction {
            None => {
                let specs: Vec<vltava_record::RecordSpec<'_>> = encoded
                    .iter()
                    .map(|(k, v)| (Some(k.as_slice()), v.as_deref(), now))
                    .collect();
                vltava_record::build_batch(0, &specs)
            }
            Some(t) => {
                // As Kafka's coordinators write them: no sequence, the producer's id and
                // epoch, the transactional bit; the marker decides whether it counts.
                let mut b = vltava_record::BatchBuilder::new(vltava_record::BatchAttributes {
                    producer_id: t.producer_id.get(),
                    producer_epoch: t.producer_epoch.get(),
                    transactional: true,
                    ..vltava_record::BatchAttributes::default()
                });
                for (k, v) in &encoded {
                    b.push(now, Some(k), v.as_deref(), &[]);
                }
                b.finish()
            }
        };
        self.log.append(partition, &mut batch).map_err(|e| {
            tracing::warn!(topic = self.config.topic, partition, error = %e, "coordinator append failed");
            RuntimeError::from(&e)
        })
    }

    /// Replaces a shard whose log failed under it by a fresh load of that log.
    fn reload(me: &Arc<Self>, shard: &Arc<Shard<S>>) {
        {
            let mut shards = me.shards.write();
            if !matches!(shards.get(&shard.partition), Some(Slot::Active(s)) if Arc::ptr_eq(s, shard))
            {
                return;
            }
            shards.insert(shard.partition, Slot::Loading { epoch: shard.epoch });
        }
        tokio::spawn(Inner::load(Arc::clone(me), shard.partition, shard.epoch));
    }

    /// Loads `partition` on a blocking thread and activates it unless leadership moved on.
    async fn load(me: Arc<Self>, partition: i32, epoch: i32) {
        let started = me.clock.now_ms();
        let loader = Arc::clone(&me);
        let loaded = tokio::task::spawn_blocking(move || loader.replay_log(partition)).await;
        let mut shards = me.shards.write();
        if !matches!(shards.get(&partition), Some(Slot::Loading { epoch: e }) if *e == epoch) {
            return;
        }
        match loaded {
            Ok(Ok((state, records))) => {
                let shard = Arc::new(Shard {
                    partition,
                    epoch,
                    state: Mutex::new(state),
                });
                shards.insert(partition, Slot::Active(Arc::clone(&shard)));
                drop(shards);
                tracing::info!(
                    topic = me.config.topic,
                    partition,
                    epoch,
                    records,
                    ms = me.clock.now_ms() - started,
                    "coordinator shard loaded"
                );
                Inner::start_timers(&me, &shard);
            }
            Ok(Err(e)) => {
                shards.remove(&partition);
                tracing::error!(topic = me.config.topic, partition, error = %e, "coordinator shard failed to load");
            }
            Err(e) => {
                shards.remove(&partition);
                tracing::error!(topic = me.config.topic, partition, error = %e, "coordinator shard load panicked");
            }
        }
    }

    /// Every record of the partition from its log start, replayed into a new shard.
    fn replay_log(&self, partition: i32) -> Result<(S, u64), LogError> {
        let now = self.clock.now_ms();
        let mut state = (self.config.new_shard)(partition);
        let mut count = 0;
        let mut offset = self.log.log_start_offset(partition)?;
        loop {
            let (bytes, next) = self.log.read(partition, offset, LOAD_READ_BYTES)?;
            if bytes.is_empty() || next <= offset {
                break;
            }
            for item in vltava_record::Batches::new(&bytes) {
                let Ok((header, range)) = item else { break };
                let batch = &bytes[range];
                if header.is_control() {
                    match vltava_record::read_end_txn_marker(batch) {
                        Ok(m) => state.replay_end_txn(
                            ProducerId::new(header.producer_id),
                            m.result == vltava_record::TransactionResult::Commit,
                            now,
                        ),
                        Err(e) => {
                            tracing::debug!(topic = self.config.topic, partition, error = %e, "skipped a control batch")
                        }
                    }
                    continue;
                }
                let transactional = header.is_transactional().then_some(header.producer_id);
                let Ok(records) = vltava_record::uncompressed_records(batch) else {
                    continue;
                };
                for rec in records {
                    let Some(key) = rec.key else { continue };
                    match state.decode(key, rec.value) {
                        Ok(decoded) => {
                            for r in &decoded {
                                match transactional {
                                    Some(p) => {
                                        state.replay_transactional(ProducerId::new(p), r, now)
                                    }
                                    None => state.replay(r, now),
                                }
                                count += 1;
                            }
                        }
                        Err(e) => {
                            tracing::debug!(topic = self.config.topic, partition, error = %e, "skipped a coordinator record");
                        }
                    }
                }
            }
            offset = next;
        }
        Ok((state, count))
    }

    fn start_timers(me: &Arc<Self>, shard: &Arc<Shard<S>>) {
        for index in 0..me.config.timers.len() {
            let interval = me.config.timers[index].interval_ms.max(1);
            Inner::every(me, shard, interval, move |me, shard| {
                let run = Arc::clone(&me.config.timers[index].run);
                let name = me.config.timers[index].name;
                let done = Inner::write(me, shard, move |s, now| run(s, now));
                async move {
                    match done.await {
                        Ok(after) => after(),
                        Err(e) => {
                            tracing::debug!(timer = name, error = %e, "coordinator timer failed")
                        }
                    }
                }
                .boxed()
            });
        }
    }

    /// Runs `f` every `interval_ms` of the clock while `shard` stays loaded.
    fn every(
        me: &Arc<Self>,
        shard: &Arc<Shard<S>>,
        interval_ms: i64,
        f: impl Fn(&Arc<Self>, &Arc<Shard<S>>) -> BoxFuture<'static, ()> + Send + 'static,
    ) {
        let (me, shard): (Weak<Self>, Weak<Shard<S>>) = (Arc::downgrade(me), Arc::downgrade(shard));
        tokio::spawn(async move {
            loop {
                let next = match me.upgrade() {
                    Some(me) => me.clock.now_ms() + interval_ms,
                    None => return,
                };
                let sleep = match me.upgrade() {
                    Some(me) => me.clock.sleep_until(next),
                    None => return,
                };
                sleep.await;
                let (Some(me), Some(shard)) = (me.upgrade(), shard.upgrade()) else {
                    return;
                };
                if !me.is_current(&shard) {
                    return;
                }
                let run = f(&me, &shard);
                drop((me, shard));
                run.await;
            }
        });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    use vltava_types::ProducerEpoch;

    use super::*;

    /// A shard of named counters; a record sets (or, `None`, removes) one.
    #[derive(Default)]
    struct Counters {
        values: BTreeMap<String, i64>,
        /// Runtime-only: changed in place by `bump_in_place`, restored by its undo.
        scratch: i64,
        /// Sets written transactionally, per producer, until its marker.
        pending: BTreeMap<ProducerId, Vec<Set>>,
    }

    type Set = (String, Option<i64>);

    impl CoordinatorShard for Counters {
        type Record = Set;
        type CodecError = std::string::FromUtf8Error;

        fn replay(&mut self, (k, v): &Set, _now_ms: i64) {
            match v {
                Some(v) => self.values.insert(k.clone(), *v),
                None => self.values.remove(k),
            };
        }

        fn encode(&self, (k, v): &Set) -> Result<(Vec<u8>, Option<Vec<u8>>), Self::CodecError> {
            Ok((k.as_bytes().to_vec(), v.map(|v| v.to_be_bytes().to_vec())))
        }

        fn decode(&self, key: &[u8], value: Option<&[u8]>) -> Result<Vec<Set>, Self::CodecError> {
            let v = value.map(|v| i64::from_be_bytes(v.try_into().expect("8 bytes")));
            Ok(vec![(String::from_utf8(key.to_vec())?, v)])
        }

        fn replay_transactional(&mut self, producer_id: ProducerId, record: &Set, _now_ms: i64) {
            self.pending
                .entry(producer_id)
                .or_default()
                .push(record.clone());
        }

        fn replay_end_txn(&mut self, producer_id: ProducerId, commit: bool, now_ms: i64) {
            for r in self.pending.remove(&producer_id).unwrap_or_default() {
                if commit {
                    self.replay(&r, now_ms);
                }
            }
        }

        fn has_open_transactions(&self) -> bool {
            !self.pending.is_empty()
        }
    }

    /// A batch and its base offset.
    type Batch = (i64, Vec<u8>);

    /// Partitions in memory: a list of batches each; durability moves only when told.
    #[derive(Default)]
    pub(crate) struct FakeLog {
        batches: Mutex<HashMap<i32, Vec<Batch>>>,
        start: Mutex<HashMap<i32, i64>>,
        pub(crate) fail_appends: AtomicBool,
        durable: Mutex<HashMap<i32, watch::Sender<i64>>>,
        /// Held by a test to keep loads in progress.
        pub(crate) read_gate: Mutex<()>,
    }

    impl FakeLog {
        fn durable_tx(&self, partition: i32) -> watch::Sender<i64> {
            self.durable
                .lock()
                .entry(partition)
                .or_insert_with(|| watch::Sender::new(0))
                .clone()
        }

        pub(crate) fn end(&self, partition: i32) -> i64 {
            let batches = self.batches.lock();
            batches
                .get(&partition)
                .and_then(|b| b.last())
                .map_or(0, |(base, bytes)| {
                    let (h, _) = vltava_record::Batches::new(bytes)
                        .next()
                        .expect("a batch")
                        .expect("valid");
                    base + i64::from(h.last_offset_delta) + 1
                })
        }

        pub(crate) fn make_durable(&self, partition: i32) {
            let end = self.end(partition);
            self.durable_tx(partition).send_replace(end);
        }
    }

    impl CoordinatorLog for FakeLog {
        fn append(&self, partition: i32, batch: &mut [u8]) -> Result<i64, LogError> {
            if self.fail_appends.load(Ordering::SeqCst) {
                return Err(LogError::Storage(StorageError::Poisoned {
                    dir: "fake".into(),
                }));
            }
            let base = self.end(partition);
            vltava_record::set_base_offset(batch, base);
            self.batches
                .lock()
                .entry(partition)
                .or_default()
                .push((base, batch.to_vec()));
            Ok(self.end(partition))
        }

        fn append_txn_marker(
            &self,
            partition: i32,
            producer_id: i64,
            producer_epoch: i16,
            coordinator_epoch: i32,
            commit: bool,
        ) -> Result<i64, LogError> {
            let mut batch = vltava_record::write_end_txn_marker(
                &vltava_record::MarkerBatch {
                    base_offset: 0,
                    partition_leader_epoch: -1,
                    producer_id,
                    producer_epoch,
                    timestamp: 0,
                },
                vltava_record::EndTxnMarker {
                    result: if commit {
                        vltava_record::TransactionResult::Commit
                    } else {
                        vltava_record::TransactionResult::Abort
                    },
                    coordinator_epoch,
                },
            );
            self.append(partition, &mut batch)
        }

        fn wait_durable(
            &self,
            partition: i32,
            end: i64,
        ) -> BoxFuture<'static, Result<(), LogError>> {
            let mut rx = self.durable_tx(partition).subscribe();
            async move {
                rx.wait_for(|d| *d >= end)
                    .await
                    .map_err(|_| LogError::NotHosted { partition })?;
                Ok(())
            }
            .boxed()
        }

        fn read(
            &self,
            partition: i32,
            from: i64,
            _max_bytes: usize,
        ) -> Result<(Bytes, i64), LogError> {
            let _gate = self.read_gate.lock();
            let batches = self.batches.lock();
            let mut out = Vec::new();
            let mut next = from;
            for (base, bytes) in batches.get(&partition).into_iter().flatten() {
                if *base >= from {
                    out.extend_from_slice(bytes);
                }
            }
            drop(batches);
            if !out.is_empty() {
                next = self.end(partition);
            }
            Ok((Bytes::from(out), next))
        }

        fn log_start_offset(&self, partition: i32) -> Result<i64, LogError> {
            Ok(*self.start.lock().get(&partition).unwrap_or(&0))
        }

        fn log_end_offset(&self, partition: i32) -> Result<i64, LogError> {
            Ok(self.end(partition))
        }
    }

    fn runtime(
        log: &Arc<FakeLog>,
        clock: &Arc<ManualClock>,
        timers: Vec<Timer<Counters>>,
    ) -> CoordinatorRuntime<Counters> {
        CoordinatorRuntime::new(
            RuntimeConfig {
                topic: "test",
                new_shard: Box::new(|_| Counters::default()),
                timers,
            },
            Arc::clone(log) as Arc<dyn CoordinatorLog>,
            Arc::clone(clock) as Arc<dyn Clock>,
        )
    }

    fn set(k: &str, v: i64) -> CoordinatorResult<Counters, ()> {
        CoordinatorResult::new(vec![(k.to_string(), Some(v))], ())
    }

    fn value(rt: &CoordinatorRuntime<Counters>, k: &str) -> Result<Option<i64>, RuntimeError> {
        rt.read(0, |s| s.values.get(k).copied())
    }

    #[tokio::test]
    async fn a_shard_loads_then_answers_then_resigns() {
        let (log, clock) = (Arc::new(FakeLog::default()), ManualClock::new(0));
        let rt = runtime(&log, &clock, Vec::new());
        assert_eq!(value(&rt, "a"), Err(RuntimeError::NotCoordinator));
        let gate = log.read_gate.lock();
        let loaded = rt.on_leader(0, 1);
        assert_eq!(value(&rt, "a"), Err(RuntimeError::LoadInProgress));
        assert_eq!(
            rt.write(0, |_, _| set("a", 1)).now_or_never(),
            Some(Err(RuntimeError::LoadInProgress))
        );
        drop(gate);
        loaded.await;
        log.make_durable(0);
        let wrote = rt.write(0, |_, _| set("a", 1));
        log.make_durable(0);
        assert_eq!(wrote.await, Ok(()));
        assert_eq!(value(&rt, "a"), Ok(Some(1)));
        rt.on_resigned(0);
        assert_eq!(value(&rt, "a"), Err(RuntimeError::NotCoordinator));
        assert_eq!(
            rt.write(0, |_, _| set("a", 2)).await,
            Err(RuntimeError::NotCoordinator)
        );
        // Leading again replays the log: the same state comes back.
        rt.on_leader(0, 2).await;
        assert_eq!(value(&rt, "a"), Ok(Some(1)));
        // A stale epoch changes nothing.
        rt.on_leader(0, 1).await;
        assert_eq!(value(&rt, "a"), Ok(Some(1)));
    }

    #[tokio::test]
    async fn transactional_records_count_only_after_their_commit_marker() {
        let (log, clock) = (Arc::new(FakeLog::default()), ManualClock::new(0));
        let rt = runtime(&log, &clock, Vec::new());
        rt.on_leader(0, 0).await;
        let txn = |k: &str, pid: i64| {
            let k = k.to_string();
            move |_: &mut Counters, _| {
                CoordinatorResult::transactional(
                    vec![(k, Some(pid))],
                    (),
                    TxnBatch {
                        producer_id: ProducerId::new(pid),
                        producer_epoch: ProducerEpoch::new(1),
                    },
                )
            }
        };
        let a = rt.write(0, txn("a", 7));
        let b = rt.write(0, txn("b", 8));
        log.make_durable(0);
        assert_eq!((a.await, b.await), (Ok(()), Ok(())));
        assert_eq!(value(&rt, "a"), Ok(None), "pending until the marker");
        // The batch is stored as the producer's transactional batch.
        let (bytes, _) = log.read(0, 0, usize::MAX).unwrap();
        let (h, _) = vltava_record::Batches::new(&bytes).next().unwrap().unwrap();
        assert!(h.is_transactional() && !h.is_control());
        assert_eq!((h.producer_id, h.producer_epoch), (7, 1));

        let commit = rt.write_txn_marker(0, 7, 1, 0, true);
        let abort = rt.write_txn_marker(0, 8, 1, 0, false);
        log.make_durable(0);
        assert_eq!((commit.await, abort.await), (Ok(()), Ok(())));
        assert_eq!(value(&rt, "a"), Ok(Some(7)));
        assert_eq!(value(&rt, "b"), Ok(None));

        // A reload reads the markers from the log and comes to the same state; a
        // transaction still open at the end stays pending.
        let c = rt.write(0, txn("c", 9));
        log.make_durable(0);
        c.await.unwrap();
        rt.on_leader(0, 1).await;
        assert_eq!(value(&rt, "a"), Ok(Some(7)));
        assert_eq!(value(&rt, "b"), Ok(None));
        assert_eq!(value(&rt, "c"), Ok(None));
        assert_eq!(rt.read(0, |s| s.has_open_transactions()), Ok(true));
        let done = rt.write_txn_marker(0, 9, 1, 0, true);
        log.make_durable(0);
        done.await.unwrap();
        assert_eq!(value(&rt, "c"), Ok(Some(9)));
        rt.on_resigned(0);
        assert_eq!(
            rt.write_txn_marker(0, 9, 1, 0, true).await,
            Err(RuntimeError::NotCoordinator)
        );
    }

    #[tokio::test]
    async fn a_failed_append_leaves_the_state_unchanged() {
        let (log, clock) = (Arc::new(FakeLog::default()), ManualClock::new(0));
        let rt = runtime(&log, &clock, Vec::new());
        rt.on_leader(0, 0).await;
        log.fail_appends.store(true, Ordering::SeqCst);
        let wrote = rt.write(0, |s, _| {
            let before = s.scratch;
            s.scratch = 99;
            let mut r = set("a", 1);
            r.undo = Some(Box::new(move |s: &mut Counters| s.scratch = before));
            r
        });
        assert_eq!(wrote.await, Err(RuntimeError::NotCoordinator));
        assert_eq!(
            value(&rt, "a"),
            Ok(None),
            "records of a failed append are not applied"
        );
        assert_eq!(
            rt.read(0, |s| s.scratch),
            Ok(0),
            "in-place changes are undone"
        );
        assert_eq!(log.end(0), 0);
    }

    #[tokio::test]
    async fn replies_wait_for_durability() {
        let (log, clock) = (Arc::new(FakeLog::default()), ManualClock::new(0));
        let rt = runtime(&log, &clock, Vec::new());
        rt.on_leader(0, 0).await;
        let mut wrote = rt.write(0, |_, _| set("a", 1));
        // The records are applied at once, so later operations see them ...
        assert_eq!(value(&rt, "a"), Ok(Some(1)));
        // ... but the reply waits for the fsync.
        assert!(futures::poll!(&mut wrote).is_pending());
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(futures::poll!(&mut wrote).is_pending());
        log.make_durable(0);
        assert_eq!(wrote.await, Ok(()));
        // An operation with nothing to write answers at once.
        let read_only = rt.write(0, |s, _| CoordinatorResult::reply(s.values.len()));
        assert_eq!(read_only.await, Ok(1));
    }

    #[tokio::test]
    async fn shards_are_independent() {
        let (log, clock) = (Arc::new(FakeLog::default()), ManualClock::new(0));
        let rt = runtime(&log, &clock, Vec::new());
        rt.on_leader(0, 0).await;
        rt.on_leader(1, 0).await;
        let slow = rt.write(0, |_, _| set("a", 1));
        // Partition 1 answers while partition 0 waits for its fsync.
        let fast = rt.write(1, |_, _| set("b", 2));
        log.make_durable(1);
        assert_eq!(fast.await, Ok(()));
        log.make_durable(0);
        assert_eq!(slow.await, Ok(()));
        assert_eq!(rt.read(1, |s| s.values.get("a").copied()), Ok(None));
        assert_eq!(rt.active_partitions(), [0, 1]);
    }

    #[tokio::test]
    async fn timers_follow_the_clock() {
        let (log, clock) = (Arc::new(FakeLog::default()), ManualClock::new(0));
        let timers = vec![Timer {
            name: "count",
            interval_ms: 1000,
            run: Arc::new(|s: &mut Counters, now| {
                let n = s.values.get("ticks").copied().unwrap_or(0);
                set("ticks", n + 1)
                    .map(move |()| -> AfterDurable { Box::new(move || assert!(now >= 1000)) })
            }),
        }];
        let rt = runtime(&log, &clock, timers);
        rt.on_leader(0, 0).await;
        let ticks = || rt.read(0, |s| s.values.get("ticks").copied()).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(ticks(), None, "no time has passed");
        clock.advance(1000);
        for _ in 0..100 {
            if ticks().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(ticks(), Some(1));
        // Once resigned, the timer stops.
        rt.on_resigned(0);
        clock.advance(5000);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(log.end(0), 1);
    }
}
