//! Replay equivalence: whatever sequence of group operations runs live (records appended,
//! then applied through `replay`, as the broker's runtime does), a shard rebuilt by replaying
//! every written record, through Kafka's byte layout, holds the same durable state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;

use crate::classic::{GroupState, JoinRequest, JoinResult, Reply};
use crate::consumer::HeartbeatRequest;
use crate::group_shard::{GroupResult, GroupShard};
use crate::records::tests::TestTopics;
use crate::records::Record;
use crate::shard::CoordinatorShard;
use crate::state::{CommitEntry, CoordinatorState, Group};
use vltava_types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId};

const GROUPS: [&str; 3] = ["g0", "g1", "g2"];
const TOPICS: [&str; 2] = ["t", "u"];
const RETENTION_MS: i64 = 60_000;

fn partitions_of(t: &str) -> Option<i32> {
    TOPICS.contains(&t).then_some(3)
}

#[derive(Debug, Clone)]
enum Op {
    Join {
        g: usize,
        slot: usize,
        instance: bool,
    },
    Sync {
        g: usize,
        slot: usize,
    },
    Heartbeat {
        g: usize,
        slot: usize,
    },
    Leave {
        g: usize,
        slot: usize,
    },
    Commit {
        g: usize,
        slot: Option<usize>,
        partition: i32,
    },
    /// KIP-848: `kind` 0 joins (epoch 0), 1 acknowledges the last assignment, 2 leaves (-1),
    /// 3 leaves as a static member (-2).
    ConsumerHeartbeat {
        g: usize,
        slot: usize,
        kind: u8,
        both: bool,
    },
    DeleteGroup {
        g: usize,
    },
    DeleteOffsets {
        g: usize,
        partition: i32,
    },
    /// TxnOffsetCommit by one of two producers (no group membership: generation -1).
    TxnCommit {
        g: usize,
        producer: i64,
        partition: i32,
    },
    /// That producer's transaction marker reaches the partition.
    TxnMarker {
        producer: i64,
        commit: bool,
    },
    /// Time passes; sessions, rebalance deadlines and offset retention act.
    Advance {
        ms: i64,
    },
}

/// What the partition holds, in order: records (of a transactional batch when the producer
/// id is given) and transaction markers.
enum Entry {
    Record(Vec<u8>, Option<Vec<u8>>, Option<i64>),
    Marker { producer: i64, commit: bool },
}

fn op() -> impl Strategy<Value = Op> {
    let g = 0..GROUPS.len();
    let slot = 0..3usize;
    prop_oneof![
        4 => (g.clone(), slot.clone(), any::<bool>()).prop_map(|(g, slot, instance)| Op::Join { g, slot, instance }),
        3 => (g.clone(), slot.clone()).prop_map(|(g, slot)| Op::Sync { g, slot }),
        2 => (g.clone(), slot.clone()).prop_map(|(g, slot)| Op::Heartbeat { g, slot }),
        1 => (g.clone(), slot.clone()).prop_map(|(g, slot)| Op::Leave { g, slot }),
        2 => (g.clone(), proptest::option::of(slot.clone()), 0..3i32)
            .prop_map(|(g, slot, partition)| Op::Commit { g, slot, partition }),
        5 => (g.clone(), slot.clone(), 0..4u8, any::<bool>())
            .prop_map(|(g, slot, kind, both)| Op::ConsumerHeartbeat { g, slot, kind, both }),
        1 => g.clone().prop_map(|g| Op::DeleteGroup { g }),
        1 => (g.clone(), 0..3i32).prop_map(|(g, partition)| Op::DeleteOffsets { g, partition }),
        2 => (g, 0..2i64, 0..3i32).prop_map(|(g, producer, partition)| Op::TxnCommit { g, producer, partition }),
        2 => (0..2i64, any::<bool>()).prop_map(|(producer, commit)| Op::TxnMarker { producer, commit }),
        3 => prop_oneof![3 => 0..1_000i64, 1 => 1_000..12_000i64, 1 => 12_000..80_000i64].prop_map(|ms| Op::Advance { ms }),
    ]
}

/// What a client of the test remembers about its membership.
#[derive(Debug, Clone, Default)]
struct Client {
    member_id: String,
    generation: i32,
    leader: bool,
    members: Vec<String>,
    epoch: i32,
    assigned: Vec<(String, i32)>,
}

fn new_shard() -> GroupShard {
    let mut state = CoordinatorState::default();
    // Short enough that random sequences often complete rebalances.
    state.classic.initial_rebalance_delay_ms = 300;
    GroupShard::new(state, Arc::new(TestTopics), RETENTION_MS)
}

struct Harness {
    live: GroupShard,
    /// Every record and marker written, as stored.
    log: Vec<Entry>,
    now: i64,
    classic: BTreeMap<(usize, usize), Client>,
    consumer: BTreeMap<(usize, usize), Client>,
}

impl Harness {
    /// What the runtime does with an operation's result: append its records, then replay them.
    /// Refusals are part of the random walk; callers ignore the replies they do not learn from.
    fn apply<R>(&mut self, r: GroupResult<R>) -> R {
        let producer = r.transaction.map(|t| t.producer_id.get());
        for rec in &r.records {
            let (k, v) = self.live.encode(rec).expect("encodable");
            self.log.push(Entry::Record(k, v, producer));
        }
        for rec in &r.records {
            match producer {
                Some(p) => self
                    .live
                    .replay_transactional(ProducerId::new(p), rec, self.now),
                None => self.live.replay(rec, self.now),
            }
        }
        r.reply
    }

    fn learn_join(&mut self, g: usize, r: &JoinResult) {
        let slot = self
            .classic
            .iter()
            .find(|(k, c)| k.0 == g && c.member_id == r.member_id)
            .map(|(k, _)| *k);
        if let (Some(k), None) = (slot, r.error) {
            let c = self.classic.get_mut(&k).expect("found");
            c.generation = r.generation_id;
            c.leader = r.leader == r.member_id;
            c.members = r.members.iter().map(|(id, _, _)| id.clone()).collect();
        }
    }

    fn run(&mut self, op: Op) {
        match op {
            Op::Join { g, slot, instance } => {
                let c = self.classic.entry((g, slot)).or_default().clone();
                let req = JoinRequest {
                    member_id: c.member_id.clone(),
                    instance_id: instance.then(|| format!("i{slot}")),
                    client_id: "c".into(),
                    client_host: "h".into(),
                    session_timeout_ms: 10_000,
                    rebalance_timeout_ms: 5_000,
                    protocol_type: "consumer".into(),
                    protocols: vec![("range".into(), vec![slot as u8])],
                    require_known_member_id: true,
                    supports_skip_assignment: false,
                };
                let (reply, effects) = {
                    let r = self.live.join(self.now, GROUPS[g], req);
                    self.apply(r)
                };
                if let Reply::Now(r) = reply {
                    if !r.member_id.is_empty() {
                        self.classic.get_mut(&(g, slot)).expect("entry").member_id =
                            r.member_id.clone();
                    }
                    self.learn_join(g, &r);
                }
                for (_, r) in effects.joins {
                    self.learn_join(g, &r);
                }
            }
            Op::Sync { g, slot } => {
                let Some(c) = self.classic.get(&(g, slot)).cloned() else {
                    return;
                };
                let assignments = if c.leader {
                    c.members.iter().map(|m| (m.clone(), vec![1])).collect()
                } else {
                    Vec::new()
                };
                let r = self.live.sync(
                    self.now,
                    GROUPS[g],
                    &c.member_id,
                    c.generation,
                    None,
                    assignments,
                );
                self.apply(r);
            }
            Op::Heartbeat { g, slot } => {
                if let Some(c) = self.classic.get(&(g, slot)).cloned() {
                    let _ =
                        self.live
                            .heartbeat(self.now, GROUPS[g], &c.member_id, c.generation, None);
                }
            }
            Op::Leave { g, slot } => {
                if let Some(c) = self.classic.get(&(g, slot)).cloned() {
                    let r = self
                        .live
                        .leave(self.now, GROUPS[g], &[(c.member_id.clone(), None)]);
                    let _ = self.apply(r);
                }
            }
            Op::Commit { g, slot, partition } => {
                let (member, generation) = match slot.and_then(|s| {
                    self.classic
                        .get(&(g, s))
                        .or_else(|| self.consumer.get(&(g, s)))
                }) {
                    Some(c) if !c.member_id.is_empty() => {
                        (c.member_id.clone(), c.generation.max(c.epoch))
                    }
                    _ => (String::new(), -1),
                };
                let entry = CommitEntry {
                    topic: "t".into(),
                    partition,
                    offset: Offset::new(self.now),
                    leader_epoch: LeaderEpoch::new(-1),
                    metadata: Some("m".into()),
                };
                let r = self
                    .live
                    .commit(self.now, GROUPS[g], &member, generation, None, &[entry]);
                let _ = self.apply(r);
            }
            Op::ConsumerHeartbeat {
                g,
                slot,
                kind,
                both,
            } => {
                let c = self.consumer.entry((g, slot)).or_default().clone();
                let member_id = if c.member_id.is_empty() {
                    format!("m{slot}-{}", self.now)
                } else {
                    c.member_id.clone()
                };
                let topics: Vec<String> = if both {
                    TOPICS.iter().map(|t| t.to_string()).collect()
                } else {
                    vec!["t".into()]
                };
                let (epoch, subscribed, owned) = match kind {
                    0 => (0, Some(topics), Some(Vec::new())),
                    1 => (c.epoch, None, Some(c.assigned.clone())),
                    2 => (-1, None, None),
                    _ => (-2, None, None),
                };
                let req = HeartbeatRequest {
                    member_id: member_id.clone(),
                    member_epoch: epoch,
                    instance_id: (slot == 0).then(|| "s0".to_string()),
                    client_id: "c".into(),
                    client_host: "h".into(),
                    rebalance_timeout_ms: 5_000,
                    subscribed_topics: subscribed,
                    subscribed_regex: None,
                    assignor: None,
                    owned,
                    cluster_topics: None,
                };
                let r = self
                    .live
                    .consumer_heartbeat(self.now, GROUPS[g], req, &partitions_of);
                let reply = self.apply(r);
                let entry = self.consumer.get_mut(&(g, slot)).expect("entry");
                if let Ok(resp) = reply {
                    entry.member_id = resp.member_id;
                    entry.epoch = resp.member_epoch;
                    if let Some(a) = resp.assignment {
                        entry.assigned = a;
                    }
                }
            }
            Op::DeleteGroup { g } => {
                let r = self.live.delete_group(GROUPS[g]);
                let _ = self.apply(r);
            }
            Op::DeleteOffsets { g, partition } => {
                let r = self
                    .live
                    .delete_offsets(GROUPS[g], &[("t".to_string(), partition)]);
                let _ = self.apply(r);
            }
            Op::TxnCommit {
                g,
                producer,
                partition,
            } => {
                let entry = CommitEntry {
                    topic: "t".into(),
                    partition,
                    offset: Offset::new(self.now),
                    leader_epoch: LeaderEpoch::new(-1),
                    metadata: None,
                };
                let r = self.live.txn_offset_commit(
                    self.now,
                    GROUPS[g],
                    ProducerId::new(producer),
                    ProducerEpoch::new(0),
                    "",
                    -1,
                    None,
                    &[entry],
                );
                let _ = self.apply(r);
            }
            Op::TxnMarker { producer, commit } => {
                self.log.push(Entry::Marker { producer, commit });
                self.live
                    .replay_end_txn(ProducerId::new(producer), commit, self.now);
            }
            Op::Advance { ms } => {
                self.now += ms;
                let r = self.live.tick(self.now, &partitions_of);
                let deliveries = self.apply(r);
                for (group, effects) in deliveries {
                    let g = GROUPS.iter().position(|x| *x == group).expect("known");
                    for (_, r) in effects.joins {
                        self.learn_join(g, &r);
                    }
                }
                let r = self.live.expire_offsets(self.now);
                self.apply(r);
            }
        }
    }

    /// A new shard that replays every record written, decoded from its bytes.
    fn loaded(&self) -> GroupShard {
        let mut s = new_shard();
        for e in &self.log {
            match e {
                Entry::Record(k, v, producer) => {
                    for r in s.decode(k, v.as_deref()).expect("decodable") {
                        match producer {
                            Some(p) => s.replay_transactional(ProducerId::new(*p), &r, self.now),
                            None => s.replay(&r, self.now),
                        }
                    }
                }
                Entry::Marker { producer, commit } => {
                    s.replay_end_txn(ProducerId::new(*producer), *commit, self.now)
                }
            }
        }
        s
    }
}

/// A group as far as its records can say. Differences that exist by design are normalised:
/// - a KIP-848 group's state time is not stored (Kafka's records have no room for it), and
///   a departed static member is stored as Kafka stores it, its epoch in the previous-epoch
///   slot (see `MemberAssignment::departed`);
/// - a classic group's session clocks and join phase are runtime-only: Kafka writes its
///   GroupMetadata when a generation completes, the leader's assignment arrives, or members
///   go; in between (PreparingRebalance, CompletingRebalance) only the generation is
///   compared, since a group in a join phase has written nothing since its generation began;
/// - a classic group that never completed a generation and holds nothing durable (no
///   members, generation 0) is the same as no group.
#[derive(Debug, PartialEq, Eq)]
enum View {
    Consumer(Box<crate::consumer::ConsumerGroup>),
    Classic(Vec<u8>),
    JoinPhase { generation: i32 },
}

fn view(state: &CoordinatorState, id: &str, live_join_phase: bool) -> Option<View> {
    let g = state.groups.get(id);
    if live_join_phase {
        let generation = match g {
            Some(Group::Classic(c)) => c.generation_id,
            _ => 0,
        };
        return Some(View::JoinPhase { generation });
    }
    match g? {
        Group::Consumer(c) => {
            let mut d = c.durable();
            d.state_since_ms = 0;
            for m in d.members.values_mut().filter(|m| m.departed) {
                m.previous_member_epoch = m.member_epoch;
            }
            Some(View::Consumer(Box::new(d)))
        }
        Group::Classic(c) if c.generation_id == 0 && c.members.is_empty() => None,
        Group::Classic(c) => {
            let rec = Record::Group {
                group: id.to_string(),
                value: Some(c.snapshot()),
            };
            Some(View::Classic(
                rec.encode(&TestTopics)
                    .expect("encodable")
                    .1
                    .expect("value"),
            ))
        }
    }
}

fn in_join_phase(state: &CoordinatorState, id: &str) -> bool {
    matches!(state.groups.get(id), Some(Group::Classic(c))
        if matches!(c.state, GroupState::PreparingRebalance | GroupState::CompletingRebalance))
}

fn check_equivalent(h: &Harness) -> Result<(), TestCaseError> {
    let loaded = h.loaded();
    let (live, disk) = (&h.live.state, &loaded.state);
    prop_assert_eq!(&live.offsets, &disk.offsets);
    prop_assert_eq!(
        h.live.has_open_transactions(),
        loaded.has_open_transactions()
    );
    for g in GROUPS {
        for p in 0..3 {
            prop_assert_eq!(
                h.live.has_pending_offset(g, "t", p),
                loaded.has_pending_offset(g, "t", p)
            );
        }
    }
    let ids: BTreeSet<&String> = live.groups.keys().chain(disk.groups.keys()).collect();
    for id in ids {
        let join_phase = in_join_phase(live, id);
        prop_assert_eq!(
            view(live, id, join_phase),
            view(disk, id, join_phase),
            "group {}",
            id
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn live_state_equals_replayed_records(ops in proptest::collection::vec(op(), 1..80)) {
        let mut h = Harness {
            live: new_shard(),
            log: Vec::new(),
            now: 1_000,
            classic: BTreeMap::new(),
            consumer: BTreeMap::new(),
        };
        for op in ops {
            h.run(op);
            check_equivalent(&h)?;
        }
    }
}
