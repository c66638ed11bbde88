//! The transaction coordinator on the coordinator runtime: one shard per `__transaction_state`
//! partition ([`TxnShard`], pure, from `vltava-coordinator`), plus what only the broker has —
//! producer ids, the writing of transaction markers, and the timers (aborting transactions
//! past their timeout, expiring idle transactional ids).
//!
//! Ending a transaction is two writes to the shard with markers in between, as in Kafka:
//! EndTxn (or a fence, or a timeout) writes PrepareCommit/PrepareAbort and answers once that
//! is durable; a background task then writes the markers into every partition of the
//! transaction and writes CompleteCommit/CompleteAbort. A shard loaded with prepared ends
//! (the broker stopped between the two) drives them again.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::{self, BoxFuture, FutureExt};
use vltava_coordinator::txn_partition_for;
use vltava_coordinator::txn_records::TxnState;
use vltava_coordinator::txn_shard::{
    EndOutcome, InitOutcome, ListFilter, ListedTxn, TxnConfig, TxnDescription, TxnError,
    TxnMarkers, TxnShard, Verified,
};

use vltava_protocol::ErrorCode;

use crate::broker::{Broker, SystemClock};
use crate::config::BrokerConfig;
use crate::coordinator_log::PartitionTableLog;
use crate::coordinator_runtime::{
    AfterDurable, Clock, CoordinatorLog, CoordinatorRuntime, RuntimeConfig, RuntimeError, Timer,
};
use crate::group_coordinator::OFFSETS_TOPIC;
use crate::handlers::producers::{write_markers, MarkerRequest};
use vltava_types::{ProducerEpoch, ProducerId};

pub const TXN_TOPIC: &str = "__transaction_state";

/// Kafka's error codes for what can go wrong outside the shard.
const NOT_COORDINATOR: i16 = 16;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;

/// Rounds of "allocate a producer id, try again" before giving up (the state would have to
/// change under every round).
const PRODUCER_ID_ROUNDS: usize = 3;
/// Backoff between attempts to write a transaction's markers.
const MARKER_RETRY_MIN: Duration = Duration::from_millis(50);
const MARKER_RETRY_MAX: Duration = Duration::from_secs(5);

/// Why a transaction operation failed; each is one of Kafka's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxnCoordError {
    #[error(transparent)]
    Txn(#[from] TxnError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// No producer id could be allocated; the code says why.
    #[error("no producer id could be allocated (error code {0})")]
    ProducerIds(i16),
}

impl TxnCoordError {
    pub fn code(self) -> i16 {
        match self {
            TxnCoordError::Txn(e) => e.code(),
            TxnCoordError::Runtime(RuntimeError::NotCoordinator) => NOT_COORDINATOR,
            TxnCoordError::Runtime(RuntimeError::LoadInProgress) => COORDINATOR_LOAD_IN_PROGRESS,
            TxnCoordError::Runtime(RuntimeError::NotAvailable) => COORDINATOR_NOT_AVAILABLE,
            TxnCoordError::ProducerIds(code) => code,
        }
    }

    /// PRODUCER_FENCED as clients older than it know it (see [`TxnError::for_old_client`]).
    pub fn for_old_client(self, old: bool) -> Self {
        match self {
            TxnCoordError::Txn(e) => TxnCoordError::Txn(e.for_old_client(old)),
            e => e,
        }
    }
}

/// Where fresh producer ids come from: the broker's producer-id allocator.
pub trait ProducerIdSource: Send + Sync + 'static {
    /// The next unused producer id, or the Kafka error code to answer.
    fn next_producer_id(&self) -> BoxFuture<'static, Result<i64, i16>>;
}

/// Writes a transaction's markers into its partitions (Kafka's WriteTxnMarkers; every
/// partition is local while the cluster has one broker). Completes once they are durable.
pub trait TxnMarkerWriter: Send + Sync + 'static {
    fn write_markers(
        &self,
        markers: &TxnMarkers,
        coordinator_epoch: i32,
    ) -> BoxFuture<'static, Result<(), String>>;
}

pub struct TxnCoordinator {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: CoordinatorRuntime<TxnShard>,
    /// `transaction.state.log.num.partitions` until the topic exists, then its real count.
    partitions: AtomicI32,
    producer_ids: Arc<dyn ProducerIdSource>,
    markers: Arc<dyn TxnMarkerWriter>,
}

impl TxnCoordinator {
    /// The broker's coordinator: `__transaction_state` through the partition table,
    /// wall-clock time, the broker's producer ids and marker writes into its partitions.
    pub fn new(config: &BrokerConfig, broker: Weak<Broker>) -> Self {
        let log = Arc::new(PartitionTableLog::new(broker.clone(), TXN_TOPIC));
        Self::with_parts(
            config,
            log,
            Arc::new(SystemClock),
            Arc::new(BrokerProducerIds(broker.clone())),
            Arc::new(BrokerMarkers(broker)),
        )
    }

    pub fn with_parts(
        config: &BrokerConfig,
        log: Arc<dyn CoordinatorLog>,
        clock: Arc<dyn Clock>,
        producer_ids: Arc<dyn ProducerIdSource>,
        markers: Arc<dyn TxnMarkerWriter>,
    ) -> Self {
        let i = |k: &str| config.get_i64(k);
        let txn_config = TxnConfig {
            max_timeout_ms: i32::try_from(i("transaction.max.timeout.ms")).unwrap_or(i32::MAX),
            id_expiration_ms: i("transactional.id.expiration.ms"),
            ..TxnConfig::default()
        };
        let abort_ms = i("transaction.abort.timed.out.transaction.cleanup.interval.ms").max(1);
        let expire_ms = i("transaction.remove.expired.transaction.cleanup.interval.ms").max(1);
        let partitions = i32::try_from(i("transaction.state.log.num.partitions"))
            .unwrap_or(1)
            .max(1);
        let inner = Arc::new_cyclic(|me: &Weak<Inner>| {
            let me = me.clone();
            let timers = vec![
                Timer {
                    name: "abort timed-out transactions",
                    interval_ms: abort_ms,
                    run: Arc::new(move |s: &mut TxnShard, now| {
                        let me = me.clone();
                        s.abort_timed_out(now).map(move |markers| -> AfterDurable {
                            Box::new(move || {
                                let Some(inner) = me.upgrade() else { return };
                                for m in markers {
                                    tracing::info!(transactional_id = %m.transactional_id, "aborting a transaction past its timeout");
                                    Inner::drive(&inner, m);
                                }
                            })
                        })
                    }),
                },
                Timer {
                    name: "expire transactional ids",
                    interval_ms: expire_ms,
                    run: Arc::new(|s: &mut TxnShard, now| {
                        s.expire_transactional_ids(now).map(|n| -> AfterDurable {
                            Box::new(move || {
                                if n > 0 {
                                    tracing::info!(expired = n, "expired idle transactional ids")
                                }
                            })
                        })
                    }),
                },
            ];
            Inner {
                runtime: CoordinatorRuntime::new(
                    RuntimeConfig {
                        topic: TXN_TOPIC,
                        new_shard: Box::new(move |_| TxnShard::new(txn_config)),
                        timers,
                    },
                    log,
                    clock,
                ),
                partitions: AtomicI32::new(partitions),
                producer_ids,
                markers,
            }
        });
        Self { inner }
    }

    /// The partition count used to place ids; fixed to the topic's once it exists.
    pub fn set_partitions(&self, n: i32) -> i32 {
        self.inner.partitions.swap(n.max(1), Ordering::Relaxed)
    }

    pub fn partitions(&self) -> i32 {
        self.inner.partitions.load(Ordering::Relaxed)
    }

    pub fn partition_for(&self, transactional_id: &str) -> i32 {
        txn_partition_for(transactional_id, self.partitions())
    }

    /// This broker leads `partition` of `__transaction_state` at `epoch`: load it, then
    /// finish the ends it had prepared. The future completes when the load is over.
    pub fn on_leader(&self, partition: i32, epoch: i32) -> BoxFuture<'static, ()> {
        let load = self.inner.runtime.on_leader(partition, epoch);
        let inner = Arc::clone(&self.inner);
        let task = tokio::spawn(async move {
            load.await;
            if let Ok(pending) = inner.runtime.read(partition, |s| s.pending_markers()) {
                for m in pending {
                    Inner::drive(&inner, m);
                }
            }
        });
        task.map(|_| ()).boxed()
    }

    pub fn on_resigned(&self, partition: i32) {
        self.inner.runtime.on_resigned(partition);
    }

    /// A fresh producer id, for InitProducerId without a transactional id.
    pub fn new_producer_id(&self) -> BoxFuture<'static, Result<ProducerId, TxnCoordError>> {
        self.inner.next_producer_id()
    }

    /// InitProducerId with a transactional id. `expected` is KIP-360's producer id and epoch.
    pub fn init_producer_id(
        &self,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(ProducerId, ProducerEpoch)>,
    ) -> BoxFuture<'static, Result<(ProducerId, ProducerEpoch), TxnCoordError>> {
        let inner = Arc::clone(&self.inner);
        let id = transactional_id.to_string();
        let p = self.partition_for(&id);
        async move {
            let needs = inner
                .runtime
                .read(p, |s| s.needs_producer_id(&id, expected.map(|(_, e)| e)))?;
            let mut fresh = if needs {
                Some(inner.next_producer_id().await?)
            } else {
                None
            };
            for _ in 0..PRODUCER_ID_ROUNDS {
                let given = fresh;
                let id2 = id.clone();
                let out = inner
                    .runtime
                    .write(p, move |s, now| {
                        s.init_producer_id(now, &id2, timeout_ms, expected, given)
                    })
                    .await??;
                match out {
                    InitOutcome::Ready {
                        producer_id,
                        producer_epoch,
                    } => return Ok((producer_id, producer_epoch)),
                    InitOutcome::Fenced(markers) => {
                        // The fenced transaction aborts in the background; the client retries.
                        Inner::drive(&inner, markers);
                        return Err(TxnError::ConcurrentTransactions.into());
                    }
                    InitOutcome::NeedsProducerId => {
                        fresh = Some(inner.next_producer_id().await?);
                    }
                }
            }
            Err(TxnError::ConcurrentTransactions.into())
        }
        .boxed()
    }

    /// AddPartitionsToTxn (or AddOffsetsToTxn with the group's `__consumer_offsets`
    /// partition). `client_txn_version` is 2 for requests of v5 and later (KIP-890).
    pub fn add_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: Vec<(String, i32)>,
        client_txn_version: i16,
    ) -> BoxFuture<'static, Result<(), TxnCoordError>> {
        let id = transactional_id.to_string();
        self.inner
            .runtime
            .write(self.partition_for(&id), move |s, now| {
                s.add_partitions(
                    now,
                    &id,
                    ProducerId::new(producer_id),
                    ProducerEpoch::new(producer_epoch),
                    &partitions,
                    client_txn_version,
                )
            })
            .map(|r| Ok(r??))
            .boxed()
    }

    /// AddPartitionsToTxn with `verify_only` (KIP-890): nothing is written.
    pub fn verify_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<Verified, TxnCoordError> {
        Ok(self
            .inner
            .runtime
            .read(self.partition_for(transactional_id), |s| {
                s.verify_partitions(
                    transactional_id,
                    ProducerId::new(producer_id),
                    ProducerEpoch::new(producer_epoch),
                    partitions,
                )
            })??)
    }

    /// EndTxn: answers once the prepared end is durable, with the producer id and epoch the
    /// client continues with (bumped for KIP-890 clients); the markers follow.
    pub fn end_txn(
        &self,
        transactional_id: &str,
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
        commit: bool,
        client_txn_version: i16,
    ) -> BoxFuture<'static, Result<(ProducerId, ProducerEpoch), TxnCoordError>> {
        let inner = Arc::clone(&self.inner);
        let id = transactional_id.to_string();
        let p = self.partition_for(&id);
        async move {
            let mut fresh = None;
            for _ in 0..PRODUCER_ID_ROUNDS {
                let (given, id2) = (fresh, id.clone());
                let out = inner
                    .runtime
                    .write(p, move |s, now| {
                        s.end_txn(
                            now,
                            &id2,
                            producer_id,
                            producer_epoch,
                            commit,
                            client_txn_version,
                            given,
                        )
                    })
                    .await??;
                match out {
                    EndOutcome::Done {
                        producer_id,
                        producer_epoch,
                    } => return Ok((producer_id, producer_epoch)),
                    EndOutcome::Prepared {
                        markers,
                        producer_id,
                        producer_epoch,
                    } => {
                        Inner::drive(&inner, markers);
                        return Ok((producer_id, producer_epoch));
                    }
                    EndOutcome::NeedsProducerId => {
                        fresh = Some(ProducerId::new((inner.next_producer_id().await?).get()));
                    }
                }
            }
            Err(TxnError::ConcurrentTransactions.into())
        }
        .boxed()
    }

    pub fn describe(&self, transactional_id: &str) -> Result<TxnDescription, TxnCoordError> {
        if transactional_id.is_empty() {
            return Err(TxnError::InvalidRequest.into());
        }
        Ok(self
            .inner
            .runtime
            .read(self.partition_for(transactional_id), |s| {
                s.describe(transactional_id)
            })??)
    }

    /// Every loaded shard's transactions that pass `filter`; fails while any shard loads.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<ListedTxn>, TxnCoordError> {
        let now = self.inner.runtime.clock().now_ms();
        let lists = self.inner.runtime.read_all(|s| s.list(now, filter))?;
        Ok(lists.into_iter().flatten().collect())
    }

    /// The state of a transactional id, for tests and diagnostics.
    pub fn state(&self, transactional_id: &str) -> Option<TxnState> {
        self.inner
            .runtime
            .read(self.partition_for(transactional_id), |s| {
                s.get(transactional_id).map(|m| m.state)
            })
            .ok()
            .flatten()
    }
}

impl Inner {
    fn next_producer_id(&self) -> BoxFuture<'static, Result<ProducerId, TxnCoordError>> {
        self.producer_ids
            .next_producer_id()
            .map(|r| r.map(ProducerId::new).map_err(TxnCoordError::ProducerIds))
            .boxed()
    }

    /// Writes a prepared end's markers, retrying until they are written or the end is no
    /// longer this shard's to finish (resigned, or completed by another task), then writes
    /// the completion.
    fn drive(me: &Arc<Self>, m: TxnMarkers) {
        let inner = Arc::clone(me);
        tokio::spawn(async move {
            let p = txn_partition_for(
                &m.transactional_id,
                inner.partitions.load(Ordering::Relaxed),
            );
            let mut backoff = MARKER_RETRY_MIN;
            loop {
                let Ok(epoch) = inner.runtime.epoch(p) else {
                    return;
                };
                let prepared = inner.runtime.read(p, |s| {
                    s.get(&m.transactional_id).is_some_and(|t| {
                        t.producer_id == m.producer_id
                            && t.producer_epoch == m.producer_epoch
                            && matches!(t.state, TxnState::PrepareCommit | TxnState::PrepareAbort)
                    })
                });
                if prepared != Ok(true) {
                    return;
                }
                match inner.markers.write_markers(&m, epoch).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(transactional_id = %m.transactional_id, error = %e, "could not write transaction markers; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MARKER_RETRY_MAX);
                    }
                }
            }
            let (id, pid, epoch) = (m.transactional_id.clone(), m.producer_id, m.producer_epoch);
            let done = inner
                .runtime
                .write(p, move |s, now| s.complete_txn(now, &id, pid, epoch))
                .await;
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(transactional_id = %m.transactional_id, error = %e, "transaction already completed")
                }
                Err(e) => {
                    tracing::warn!(transactional_id = %m.transactional_id, error = %e, "could not complete a transaction; its next leader will")
                }
            }
        });
    }
}

/// The broker's producer ids: blocks recorded in the metadata log.
struct BrokerProducerIds(Weak<Broker>);

impl ProducerIdSource for BrokerProducerIds {
    fn next_producer_id(&self) -> BoxFuture<'static, Result<i64, i16>> {
        let Some(broker) = self.0.upgrade() else {
            return future::ready(Err(COORDINATOR_NOT_AVAILABLE)).boxed();
        };
        async move {
            broker.producer_ids.next_id().await.map_err(|e| {
                tracing::warn!(error = %e.message, "could not allocate a producer id");
                e.code.code()
            })
        }
        .boxed()
    }
}

/// Markers into this broker's partitions. `__consumer_offsets` partitions go through the
/// group coordinator, which applies or drops the transaction's offsets as it writes them
/// (Kafka's group coordinator does the same); the others through the broker's marker
/// writes (WriteTxnMarkers' work), which update each partition's producer state.
struct BrokerMarkers(Weak<Broker>);

impl TxnMarkerWriter for BrokerMarkers {
    fn write_markers(
        &self,
        m: &TxnMarkers,
        coordinator_epoch: i32,
    ) -> BoxFuture<'static, Result<(), String>> {
        let Some(broker) = self.0.upgrade() else {
            return future::ready(Err("the broker is stopping".to_string())).boxed();
        };
        let (offsets, others): (Vec<_>, Vec<_>) = m
            .partitions
            .iter()
            .cloned()
            .partition(|(t, _)| t == OFFSETS_TOPIC);
        let mut writes: Vec<BoxFuture<'static, Result<(), String>>> = offsets
            .into_iter()
            .map(|(_, partition)| {
                broker
                    .groups
                    .write_txn_marker(
                        partition,
                        m.producer_id.get(),
                        m.producer_epoch.get(),
                        coordinator_epoch,
                        m.commit,
                    )
                    .map(move |r| r.map_err(|e| format!("{OFFSETS_TOPIC}-{partition}: {e}")))
                    .boxed()
            })
            .collect();
        if !others.is_empty() {
            let request = MarkerRequest {
                producer_id: m.producer_id.get(),
                producer_epoch: m.producer_epoch.get(),
                result: if m.commit {
                    vltava_record::TransactionResult::Commit
                } else {
                    vltava_record::TransactionResult::Abort
                },
                coordinator_epoch,
                partitions: others,
            };
            writes.push(
                async move {
                    let results = write_markers(&broker, &[request]).await;
                    for ((topic, partition), code) in results.into_iter().flatten() {
                        match code {
                            None => {}
                            // Deleted since it joined the transaction: nothing to mark, as
                            // in Kafka.
                            Some(ErrorCode::UnknownTopicOrPartition) => {
                                tracing::debug!(topic = %topic, partition, "no transaction marker for a partition that is gone")
                            }
                            Some(code) => return Err(format!("{topic}-{partition}: {code:?}")),
                        }
                    }
                    Ok(())
                }
                .boxed(),
            );
        }
        future::try_join_all(writes).map(|r| r.map(|_| ())).boxed()
    }
}

/// Creates `__transaction_state` on first start (compacted, Kafka's topic settings; the
/// coordinator writes it uncompressed, and with one broker there is no unclean election), or
/// takes the partition count of the existing topic.
pub async fn ensure_topic(broker: &Arc<Broker>) -> Result<(), crate::broker::BrokerError> {
    if let Some(t) = broker.controller.image().topic(TXN_TOPIC) {
        let existing = t.partitions.len() as i32;
        let configured = broker.txns.set_partitions(existing);
        if configured != existing {
            tracing::warn!(
                configured,
                existing,
                "transaction.state.log.num.partitions differs from the existing {TXN_TOPIC}; keeping its {existing} partitions"
            );
        }
        return Ok(());
    }
    let c = &broker.config;
    let rf = broker.internal_replication_factor("transaction.state.log.replication.factor");
    let min_isr = c
        .get_i64("transaction.state.log.min.isr")
        .clamp(1, i64::from(rf));
    let configs: std::collections::BTreeMap<String, String> = [
        ("cleanup.policy".to_string(), "compact".to_string()),
        ("min.insync.replicas".to_string(), min_isr.to_string()),
        (
            "segment.bytes".to_string(),
            c.get_i64("transaction.state.log.segment.bytes").to_string(),
        ),
    ]
    .into();
    crate::broker::create_internal_topic(broker, TXN_TOPIC, broker.txns.partitions(), rf, &configs)
        .await
        .or_else(|e| {
            if e.code == vltava_protocol::ErrorCode::TopicAlreadyExists {
                // Another node created it first: use its partition count.
                if let Some(t) = broker.controller.image().topic(TXN_TOPIC) {
                    broker.txns.set_partitions(t.partitions.len() as i32);
                }
                Ok(())
            } else {
                Err(e)
            }
        })
        .map_err(|e| crate::broker::BrokerError::Io {
            context: format!("creating {TXN_TOPIC}"),
            source: std::io::Error::other(e.message),
        })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicI64};

    use parking_lot::Mutex;

    use super::*;
    use crate::coordinator_runtime::tests::FakeLog;
    use crate::coordinator_runtime::ManualClock;

    /// Producer ids 1000, 1001, ...
    #[derive(Default)]
    struct Counter(AtomicI64);

    impl ProducerIdSource for Counter {
        fn next_producer_id(&self) -> BoxFuture<'static, Result<i64, i16>> {
            let n = 1000 + self.0.fetch_add(1, Ordering::SeqCst);
            future::ready(Ok(n)).boxed()
        }
    }

    /// Records the markers asked for; fails while `failing` is set.
    #[derive(Default)]
    struct Markers {
        written: Mutex<Vec<(TxnMarkers, i32)>>,
        failing: AtomicBool,
    }

    impl TxnMarkerWriter for Markers {
        fn write_markers(
            &self,
            m: &TxnMarkers,
            coordinator_epoch: i32,
        ) -> BoxFuture<'static, Result<(), String>> {
            if self.failing.load(Ordering::SeqCst) {
                return future::ready(Err("partition unavailable".into())).boxed();
            }
            self.written.lock().push((m.clone(), coordinator_epoch));
            future::ready(Ok(())).boxed()
        }
    }

    struct Setup {
        txns: TxnCoordinator,
        log: Arc<FakeLog>,
        clock: Arc<ManualClock>,
        markers: Arc<Markers>,
        flusher: tokio::task::JoinHandle<()>,
    }

    impl Drop for Setup {
        fn drop(&mut self) {
            self.flusher.abort();
        }
    }

    async fn setup() -> Setup {
        let mut config = BrokerConfig::default();
        config
            .props
            .insert("transaction.state.log.num.partitions".into(), "1".into());
        config
            .props
            .insert("transaction.max.timeout.ms".into(), "60000".into());
        let (log, clock) = (Arc::new(FakeLog::default()), ManualClock::new(1_000));
        let markers = Arc::new(Markers::default());
        let txns = TxnCoordinator::with_parts(
            &config,
            Arc::clone(&log) as Arc<dyn CoordinatorLog>,
            Arc::clone(&clock) as Arc<dyn Clock>,
            Arc::new(Counter::default()),
            Arc::clone(&markers) as Arc<dyn TxnMarkerWriter>,
        );
        // Keeps the fake partition's fsync caught up, as the real flusher does.
        let l = Arc::clone(&log);
        let flusher = tokio::spawn(async move {
            loop {
                l.make_durable(0);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        txns.on_leader(0, 3).await;
        Setup {
            txns,
            log,
            clock,
            markers,
            flusher,
        }
    }

    async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("never: {what}");
    }

    fn tp(t: &str, p: i32) -> (String, i32) {
        (t.to_string(), p)
    }

    #[tokio::test]
    async fn a_commit_writes_markers_then_completes() {
        let s = setup().await;
        let t = &s.txns;
        assert_eq!(
            t.init_producer_id("tx", 10_000, None).await,
            Ok((ProducerId::new(1000), ProducerEpoch::new(0)))
        );
        t.add_partitions("tx", 1000, 0, vec![tp("t", 0), tp("u", 1)], 0)
            .await
            .unwrap();
        assert_eq!(t.state("tx"), Some(TxnState::Ongoing));
        assert_eq!(
            t.verify_partitions("tx", 1000, 0, &[tp("t", 0)]).unwrap()[0].1,
            Ok(())
        );
        assert_eq!(
            t.end_txn("tx", ProducerId::new(1000), ProducerEpoch::new(0), true, 0)
                .await,
            Ok((ProducerId::new(1000), ProducerEpoch::new(0)))
        );
        eventually("complete", || {
            t.state("tx") == Some(TxnState::CompleteCommit)
        })
        .await;
        let written = s.markers.written.lock().clone();
        assert_eq!(written.len(), 1);
        let (m, epoch) = &written[0];
        assert_eq!(
            epoch, &3,
            "the coordinator epoch is the partition's leader epoch"
        );
        assert!(m.commit);
        assert_eq!(m.partitions, vec![tp("t", 0), tp("u", 1)]);
        // A retried EndTxn is answered from the completed state.
        assert_eq!(
            t.end_txn("tx", ProducerId::new(1000), ProducerEpoch::new(0), true, 0)
                .await,
            Ok((ProducerId::new(1000), ProducerEpoch::new(0)))
        );
        // Describe and list see it.
        let d = t.describe("tx").unwrap();
        assert_eq!(
            (d.state, d.producer_id),
            (TxnState::CompleteCommit, ProducerId::new(1000))
        );
        assert_eq!(
            t.list(&ListFilter {
                min_duration_ms: -1,
                ..ListFilter::default()
            })
            .unwrap()
            .len(),
            1
        );
        assert_eq!(
            t.describe("nope"),
            Err(TxnCoordError::Txn(TxnError::TransactionalIdNotFound))
        );
    }

    #[tokio::test]
    async fn a_new_producer_fences_the_ongoing_transaction() {
        let s = setup().await;
        let t = &s.txns;
        t.init_producer_id("tx", 10_000, None).await.unwrap();
        t.add_partitions("tx", 1000, 0, vec![tp("t", 0)], 0)
            .await
            .unwrap();
        s.markers.failing.store(true, Ordering::SeqCst);
        let fenced = t.init_producer_id("tx", 10_000, None).await;
        assert_eq!(
            fenced.map_err(|e| e.code()),
            Err(51),
            "CONCURRENT_TRANSACTIONS"
        );
        assert_eq!(t.state("tx"), Some(TxnState::PrepareAbort));
        // The old producer is fenced; the new one retries until the abort completes.
        assert_eq!(
            t.end_txn("tx", ProducerId::new(1000), ProducerEpoch::new(0), true, 0)
                .await,
            Err(TxnCoordError::Txn(TxnError::ProducerFenced))
        );
        assert_eq!(
            t.init_producer_id("tx", 10_000, None).await,
            Err(TxnCoordError::Txn(TxnError::ConcurrentTransactions))
        );
        s.markers.failing.store(false, Ordering::SeqCst);
        eventually("abort complete", || {
            t.state("tx") == Some(TxnState::CompleteAbort)
        })
        .await;
        let written = s.markers.written.lock().clone();
        assert!(!written[0].0.commit);
        assert_eq!(
            t.init_producer_id("tx", 10_000, None).await,
            Ok((ProducerId::new(1000), ProducerEpoch::new(3)))
        );
    }

    #[tokio::test]
    async fn timed_out_transactions_are_aborted_by_the_timer() {
        let s = setup().await;
        let t = &s.txns;
        t.init_producer_id("tx", 5_000, None).await.unwrap();
        t.add_partitions("tx", 1000, 0, vec![tp("t", 0)], 0)
            .await
            .unwrap();
        // The abort check runs every 10 s (Kafka's default).
        s.clock.advance(10_000);
        eventually("aborted", || t.state("tx") == Some(TxnState::CompleteAbort)).await;
        assert_eq!(
            t.add_partitions("tx", 1000, 0, vec![tp("t", 0)], 0).await,
            Err(TxnCoordError::Txn(TxnError::ProducerFenced))
        );
    }

    #[tokio::test]
    async fn a_reloaded_shard_finishes_prepared_ends() {
        let s = setup().await;
        let t = &s.txns;
        t.init_producer_id("tx", 10_000, None).await.unwrap();
        t.add_partitions("tx", 1000, 0, vec![tp("t", 0)], 0)
            .await
            .unwrap();
        s.markers.failing.store(true, Ordering::SeqCst);
        t.end_txn("tx", ProducerId::new(1000), ProducerEpoch::new(0), true, 0)
            .await
            .unwrap();
        // Leadership moves away before the markers are written, and comes back.
        t.on_resigned(0);
        assert_eq!(t.state("tx"), None);
        s.markers.failing.store(false, Ordering::SeqCst);
        t.on_leader(0, 4).await;
        eventually("completed after reload", || {
            t.state("tx") == Some(TxnState::CompleteCommit)
        })
        .await;
        let written = s.markers.written.lock().clone();
        assert_eq!(written.last().map(|(_, e)| *e), Some(4));
        // The log holds what a fresh load needs.
        t.on_leader(0, 5).await;
        assert_eq!(t.state("tx"), Some(TxnState::CompleteCommit));
        assert!(s.log.end(0) >= 4);
    }

    #[tokio::test]
    async fn kip_890_ends_return_the_bumped_epoch() {
        let s = setup().await;
        let t = &s.txns;
        t.init_producer_id("tx", 10_000, None).await.unwrap();
        t.add_partitions("tx", 1000, 0, vec![tp("t", 0)], 2)
            .await
            .unwrap();
        assert_eq!(
            t.end_txn("tx", ProducerId::new(1000), ProducerEpoch::new(0), true, 2)
                .await,
            Ok((ProducerId::new(1000), ProducerEpoch::new(1)))
        );
        eventually("complete", || {
            t.state("tx") == Some(TxnState::CompleteCommit)
        })
        .await;
        assert_eq!(
            s.markers.written.lock()[0].0.producer_epoch,
            ProducerEpoch::new(1)
        );
    }

    #[tokio::test]
    async fn bad_requests_and_missing_producer_ids() {
        let s = setup().await;
        let t = &s.txns;
        assert_eq!(
            t.init_producer_id("tx", 60_001, None).await,
            Err(TxnCoordError::Txn(TxnError::InvalidTransactionTimeout))
        );
        assert_eq!(
            t.add_partitions("tx", 5, 0, vec![tp("t", 0)], 0).await,
            Err(TxnCoordError::Txn(TxnError::InvalidProducerIdMapping))
        );
        assert_eq!(
            t.describe(""),
            Err(TxnCoordError::Txn(TxnError::InvalidRequest))
        );
        // A partition this broker does not coordinate.
        t.on_resigned(0);
        assert_eq!(
            t.init_producer_id("tx", 1000, None)
                .await
                .map_err(|e| e.code()),
            Err(16)
        );
        // No broker (stopping): no producer ids.
        let ids = BrokerProducerIds(Weak::new());
        assert_eq!(ids.next_producer_id().await, Err(COORDINATOR_NOT_AVAILABLE));
    }
}
