//! Replay equivalence for the transaction shard: whatever sequence of transaction operations
//! runs live (records appended, then applied through `replay`, as the broker's runtime does),
//! a shard rebuilt by replaying every written record, through Kafka's byte layout, holds the
//! same state (but for the last producer epoch, which Kafka does not store either).

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::shard::CoordinatorShard;
use crate::txn_records::{TxnRecord, TxnState};
use crate::txn_shard::{EndOutcome, InitOutcome, TxnConfig, TxnResult, TxnShard};
use vltava_types::{ProducerEpoch, ProducerId};

const IDS: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
enum Op {
    /// `stale` names an old epoch (KIP-360) instead of the client's own.
    Init {
        id: usize,
        kip360: bool,
        stale: bool,
    },
    Add {
        id: usize,
        partition: i32,
        tv: i16,
    },
    End {
        id: usize,
        commit: bool,
        tv: i16,
    },
    /// The markers of every prepared end are written.
    Complete,
    Advance {
        ms: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0..IDS.len();
    prop_oneof![
        3 => (id.clone(), any::<bool>(), any::<bool>()).prop_map(|(id, kip360, stale)| Op::Init { id, kip360, stale }),
        4 => (id.clone(), 0..3i32, prop_oneof![Just(0i16), Just(2i16)]).prop_map(|(id, partition, tv)| Op::Add { id, partition, tv }),
        3 => (id, any::<bool>(), prop_oneof![Just(0i16), Just(2i16)]).prop_map(|(id, commit, tv)| Op::End { id, commit, tv }),
        2 => Just(Op::Complete),
        2 => prop_oneof![0..1_000i64, 9_000..20_000i64, 100_000..200_000i64].prop_map(|ms| Op::Advance { ms }),
    ]
}

struct Harness {
    live: TxnShard,
    log: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    now: i64,
    next_pid: i64,
    /// What each client believes its producer id and epoch are.
    clients: BTreeMap<usize, (i64, i16)>,
}

impl Harness {
    fn apply<R>(&mut self, r: TxnResult<R>) -> R {
        for rec in &r.records {
            self.log.push(self.live.encode(rec).expect("encodable"));
        }
        for rec in &r.records {
            self.live.replay(rec, self.now);
        }
        r.reply
    }

    fn fresh(&mut self) -> i64 {
        self.next_pid += 1;
        self.next_pid
    }

    fn run(&mut self, op: Op) {
        match op {
            Op::Init { id, kip360, stale } => {
                let expected = self.clients.get(&id).filter(|_| kip360).map(|&(p, e)| {
                    let e = if stale { e.saturating_sub(1) } else { e };
                    (ProducerId::new(p), ProducerEpoch::new(e))
                });
                let fresh = if self
                    .live
                    .needs_producer_id(IDS[id], expected.map(|(_, e)| e))
                {
                    Some(ProducerId::new(self.fresh()))
                } else {
                    None
                };
                let r = self
                    .live
                    .init_producer_id(self.now, IDS[id], 10_000, expected, fresh);
                if let Ok(InitOutcome::Ready {
                    producer_id,
                    producer_epoch,
                }) = self.apply(r)
                {
                    self.clients
                        .insert(id, (producer_id.get(), producer_epoch.get()));
                }
            }
            Op::Add { id, partition, tv } => {
                let Some(&(pid, epoch)) = self.clients.get(&id) else {
                    return;
                };
                let r = self.live.add_partitions(
                    self.now,
                    IDS[id],
                    ProducerId::new(pid),
                    ProducerEpoch::new(epoch),
                    &[("t".into(), partition)],
                    tv,
                );
                self.apply(r).ok();
            }
            Op::End { id, commit, tv } => {
                let Some(&(pid, epoch)) = self.clients.get(&id) else {
                    return;
                };
                let fresh = Some(ProducerId::new(self.fresh()));
                let r = self.live.end_txn(
                    self.now,
                    IDS[id],
                    ProducerId::new(pid),
                    ProducerEpoch::new(epoch),
                    commit,
                    tv,
                    fresh,
                );
                match self.apply(r) {
                    Ok(EndOutcome::Prepared {
                        producer_id,
                        producer_epoch,
                        ..
                    })
                    | Ok(EndOutcome::Done {
                        producer_id,
                        producer_epoch,
                    }) => {
                        self.clients
                            .insert(id, (producer_id.get(), producer_epoch.get()));
                    }
                    _ => {}
                }
            }
            Op::Complete => {
                for m in self.live.pending_markers() {
                    let r = self.live.complete_txn(
                        self.now,
                        &m.transactional_id,
                        m.producer_id,
                        m.producer_epoch,
                    );
                    assert_eq!(self.apply(r), Ok(()), "pending markers complete");
                }
            }
            Op::Advance { ms } => {
                self.now += ms;
                let r = self.live.abort_timed_out(self.now);
                self.apply(r);
                let r = self.live.expire_transactional_ids(self.now);
                self.apply(r);
            }
        }
    }
}

fn config() -> TxnConfig {
    TxnConfig {
        max_timeout_ms: 60_000,
        id_expiration_ms: 150_000,
        transaction_version: 2,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn replaying_the_written_records_rebuilds_the_state(ops in proptest::collection::vec(op(), 1..80)) {
        let mut h = Harness {
            live: TxnShard::new(config()),
            log: Vec::new(),
            now: 1_000,
            next_pid: 0,
            clients: BTreeMap::new(),
        };
        for op in ops {
            h.run(op);
            for m in h.live.states().values() {
                prop_assert!(m.producer_epoch >= ProducerEpoch::new(0));
                match m.state {
                    TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => prop_assert!(m.partitions.is_empty()),
                    TxnState::Ongoing | TxnState::PrepareCommit | TxnState::PrepareAbort => {
                        prop_assert!(!m.partitions.is_empty());
                        prop_assert!(m.start_ms >= 0);
                    }
                    s => prop_assert!(false, "never stored: {s:?}"),
                }
            }
        }
        let mut reloaded = TxnShard::new(config());
        for (k, v) in &h.log {
            let rec = TxnRecord::decode(k, v.as_deref()).expect("decodes");
            reloaded.replay(&rec, 0);
        }
        let stored = |s: &TxnShard| -> BTreeMap<String, _> {
            s.states().into_iter().map(|(k, m)| (k, m.as_stored())).collect()
        };
        prop_assert_eq!(stored(&reloaded), stored(&h.live));
        // The latest record per id alone (what compaction leaves) rebuilds it too.
        let mut trimmed = TxnShard::new(config());
        for rec in h.live.live_records() {
            trimmed.replay(&rec, 0);
        }
        prop_assert_eq!(stored(&trimmed), stored(&h.live));
    }
}
