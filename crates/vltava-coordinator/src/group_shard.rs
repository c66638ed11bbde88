//! The group coordinator's shard: the groups and offsets of one `__consumer_offsets`
//! partition, and every group operation as *records to write + reply*. Operations never
//! change committed offsets or remove groups themselves: those changes are records, applied
//! by [`CoordinatorState::replay`] once the runtime has appended them. What an operation does
//! change in place (a classic group's join phase, a KIP-848 member's session) comes with an
//! undo that restores the group if the records cannot be written.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::classic::{Effects, JoinRequest, JoinResult, Reply, SyncResult};
use crate::consumer::{HeartbeatRequest, HeartbeatResponse};
use crate::records::{Record, RecordError, TopicIds};
use crate::shard::{CoordinatorResult, CoordinatorShard, TxnBatch};
use crate::state::{CommitEntry, CoordinatorState, Group};
use crate::GroupError;
use vltava_types::{ProducerEpoch, ProducerId};

/// Partition counts of topics, from the metadata image (KIP-848 assignments need them).
pub type PartitionsOf<'a> = &'a dyn Fn(&str) -> Option<i32>;

pub struct GroupShard {
    pub state: CoordinatorState,
    /// Names ↔ ids for the KIP-848 records, which name topics by id.
    topics: Arc<dyn TopicIds + Send + Sync>,
    /// `offsets.retention.minutes`.
    pub retention_ms: i64,
    /// Offsets of transactions (TxnOffsetCommit) whose marker has not reached this
    /// partition yet, per producer id, in the order written.
    pending_txn: BTreeMap<ProducerId, Vec<Record>>,
}

pub type GroupResult<R> = CoordinatorResult<GroupShard, R>;

/// The groups an operation may change in place, as they were before it.
struct Saved(Vec<(String, Option<Group>)>);

impl Saved {
    fn of(state: &CoordinatorState, ids: impl IntoIterator<Item = String>) -> Self {
        Self(
            ids.into_iter()
                .map(|id| {
                    let g = state.groups.get(&id).cloned();
                    (id, g)
                })
                .collect(),
        )
    }

    fn restore(self, state: &mut CoordinatorState) {
        for (id, g) in self.0 {
            match g {
                Some(g) => state.groups.insert(id, g),
                None => state.groups.remove(&id),
            };
        }
    }
}

impl GroupShard {
    /// `state` carries the group limits from broker config; it should hold no groups yet.
    pub fn new(
        state: CoordinatorState,
        topics: Arc<dyn TopicIds + Send + Sync>,
        retention_ms: i64,
    ) -> Self {
        Self {
            state,
            topics,
            retention_ms,
            pending_txn: BTreeMap::new(),
        }
    }

    /// Attaches the undo for `saved` when there is something to write.
    fn finish<R>(&self, records: Vec<Record>, reply: R, saved: Saved) -> GroupResult<R> {
        let mut r = GroupResult::new(records, reply);
        if !r.records.is_empty() {
            r.undo = Some(Box::new(move |s: &mut GroupShard| {
                saved.restore(&mut s.state)
            }));
        }
        r
    }

    /// A classic group's snapshot record when the operation's effects ask for one.
    fn group_record(&self, group: &str, effects: &mut Effects) -> Vec<Record> {
        if !std::mem::take(&mut effects.persist) {
            return Vec::new();
        }
        match self.state.groups.get(group) {
            Some(Group::Classic(g)) => vec![Record::Group {
                group: group.to_string(),
                value: Some(g.snapshot()),
            }],
            _ => Vec::new(),
        }
    }

    pub fn join(
        &mut self,
        now_ms: i64,
        group: &str,
        req: JoinRequest,
    ) -> GroupResult<(Reply<JoinResult>, Effects)> {
        let saved = Saved::of(&self.state, [group.to_string()]);
        let member = req.member_id.clone();
        let cfg = self.state.classic;
        let existed = self.state.groups.contains_key(group);
        let mut records = match self.state.groups.get(group) {
            Some(Group::Consumer(g)) if g.members.is_empty() => {
                self.state.conversion_tombstones(group)
            }
            _ => Vec::new(),
        };
        let (reply, mut effects) = match self.state.classic_mut(group, now_ms) {
            Ok(g) => g.join(now_ms, &cfg, req),
            Err(e) => {
                return GroupResult::reply((
                    Reply::Now(JoinResult::error(e, &member)),
                    Effects::default(),
                ))
            }
        };
        if !existed {
            self.state.discard_if_empty(group);
        }
        records.extend(self.group_record(group, &mut effects));
        self.finish(records, (reply, effects), saved)
    }

    pub fn sync(
        &mut self,
        now_ms: i64,
        group: &str,
        member_id: &str,
        generation: i32,
        instance: Option<&str>,
        assignments: Vec<(String, Vec<u8>)>,
    ) -> GroupResult<(Reply<SyncResult>, Effects)> {
        let saved = Saved::of(&self.state, [group.to_string()]);
        let (reply, mut effects) = match self.state.groups.get_mut(group) {
            Some(Group::Classic(g)) => g.sync(now_ms, member_id, generation, instance, assignments),
            _ => {
                return GroupResult::reply((
                    Reply::Now(SyncResult::error(GroupError::UnknownMemberId)),
                    Effects::default(),
                ))
            }
        };
        let records = self.group_record(group, &mut effects);
        self.finish(records, (reply, effects), saved)
    }

    /// A classic heartbeat only refreshes a session: nothing to write.
    pub fn heartbeat(
        &mut self,
        now_ms: i64,
        group: &str,
        member_id: &str,
        generation: i32,
        instance: Option<&str>,
    ) -> Result<(), GroupError> {
        match self.state.groups.get_mut(group) {
            Some(Group::Classic(g)) => g.heartbeat(now_ms, member_id, generation, instance),
            Some(Group::Consumer(_)) => Err(GroupError::GroupIdTypeMismatch),
            None => Err(GroupError::UnknownMemberId),
        }
    }

    #[allow(clippy::type_complexity)]
    pub fn leave(
        &mut self,
        now_ms: i64,
        group: &str,
        members: &[(String, Option<String>)],
    ) -> GroupResult<(Result<Vec<Result<(), GroupError>>, GroupError>, Effects)> {
        let saved = Saved::of(&self.state, [group.to_string()]);
        let (results, mut effects) = match self.state.groups.get_mut(group) {
            Some(Group::Classic(g)) => g.leave(now_ms, members),
            _ => return GroupResult::reply((Err(GroupError::UnknownMemberId), Effects::default())),
        };
        let records = self.group_record(group, &mut effects);
        self.finish(records, (Ok(results), effects), saved)
    }

    pub fn commit(
        &mut self,
        now_ms: i64,
        group: &str,
        member_id: &str,
        generation: i32,
        instance: Option<&str>,
        entries: &[CommitEntry],
    ) -> GroupResult<Result<(), GroupError>> {
        if let Err(e) = self
            .state
            .validate_commit(group, member_id, generation, instance)
        {
            return GroupResult::reply(Err(e));
        }
        GroupResult::new(
            CoordinatorState::commit_records(group, entries, now_ms),
            Ok(()),
        )
    }

    /// TxnOffsetCommit: the offsets are checked as an OffsetCommit's are, then written as
    /// OffsetCommit records in one transactional batch of the producer; they become committed
    /// only when the producer's commit marker reaches this partition, and an abort drops them
    /// (Kafka's rule, which replay follows: the marker decides).
    #[allow(clippy::too_many_arguments)]
    pub fn txn_offset_commit(
        &mut self,
        now_ms: i64,
        group: &str,
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
        member_id: &str,
        generation: i32,
        instance: Option<&str>,
        entries: &[CommitEntry],
    ) -> GroupResult<Result<(), GroupError>> {
        if let Err(e) = self
            .state
            .validate_commit(group, member_id, generation, instance)
        {
            return GroupResult::reply(Err(e));
        }
        GroupResult::transactional(
            CoordinatorState::commit_records(group, entries, now_ms),
            Ok(()),
            TxnBatch {
                producer_id,
                producer_epoch,
            },
        )
    }

    /// Whether a transaction holds an offset of this partition not yet committed or aborted:
    /// OffsetFetch with `require_stable` answers UNSTABLE_OFFSET_COMMIT then (KIP-447).
    pub fn has_pending_offset(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.pending_txn.values().flatten().any(|r| {
            matches!(r, Record::Offset { group: g, topic: t, partition: p, .. }
                if g == group && t == topic && *p == partition)
        })
    }

    pub fn delete_group(&mut self, group: &str) -> GroupResult<Result<(), GroupError>> {
        match self.state.delete_group(group) {
            Ok(records) => GroupResult::new(records, Ok(())),
            Err(e) => GroupResult::reply(Err(e)),
        }
    }

    /// Deletes committed offsets of partitions the group no longer consumes.
    pub fn delete_offsets(
        &mut self,
        group: &str,
        partitions: &[(String, i32)],
    ) -> GroupResult<Result<Vec<Result<(), GroupError>>, GroupError>> {
        let s = &self.state;
        let subscribed: Vec<String> = match s.groups.get(group) {
            Some(Group::Consumer(g)) => g.subscribed_topics().into_iter().collect(),
            Some(Group::Classic(g)) if !g.members.is_empty() => {
                // A classic group with members consumes whatever it has committed for.
                return GroupResult::reply(Ok(partitions
                    .iter()
                    .map(|(t, p)| {
                        if s.offsets.get(group, t, *p).is_some() {
                            Err(GroupError::GroupSubscribedToTopic)
                        } else {
                            Ok(())
                        }
                    })
                    .collect()));
            }
            _ if !s.offsets.has_group(group) && !s.groups.contains_key(group) => {
                return GroupResult::reply(Err(GroupError::GroupIdNotFound))
            }
            _ => Vec::new(),
        };
        let mut results = Vec::new();
        let mut records = Vec::new();
        for (t, p) in partitions {
            if subscribed.contains(t) {
                results.push(Err(GroupError::GroupSubscribedToTopic));
            } else {
                results.push(Ok(()));
                records.push(Record::Offset {
                    group: group.to_string(),
                    topic: t.clone(),
                    partition: *p,
                    value: None,
                });
            }
        }
        GroupResult::new(records, Ok(results))
    }

    /// KIP-848 heartbeat: writes only what changed durably (most heartbeats: nothing).
    pub fn consumer_heartbeat(
        &mut self,
        now_ms: i64,
        group: &str,
        req: HeartbeatRequest,
        partitions_of: PartitionsOf<'_>,
    ) -> GroupResult<Result<HeartbeatResponse, GroupError>> {
        let saved = Saved::of(&self.state, [group.to_string()]);
        let cfg = self.state.consumer;
        let existed = matches!(self.state.groups.get(group), Some(Group::Consumer(_)));
        let mut records = match self.state.groups.get(group) {
            Some(Group::Classic(g)) if g.is_empty() => self.state.conversion_tombstones(group),
            _ => Vec::new(),
        };
        let g = match self.state.consumer_mut(group, now_ms) {
            Ok(g) => g,
            Err(e) => return GroupResult::reply(Err(e)),
        };
        let before = existed.then(|| g.durable());
        let result = g.heartbeat(now_ms, &cfg, req, partitions_of);
        if !existed {
            self.state.discard_if_empty(group);
        }
        records.extend(self.consumer_records(group, before.as_ref()));
        self.finish(records, result, saved)
    }

    /// What changed durably in a KIP-848 group since `before` (`None`: all of it).
    fn consumer_records(
        &self,
        group: &str,
        before: Option<&crate::consumer::ConsumerGroup>,
    ) -> Vec<Record> {
        match self.state.groups.get(group) {
            Some(Group::Consumer(g)) => {
                let now = g.durable();
                if before == Some(&now) {
                    Vec::new()
                } else {
                    now.records(before)
                }
            }
            _ => Vec::new(),
        }
    }

    /// Drives time: session expiry and overdue rebalances, for every group of the shard.
    /// The reply is each classic group's parked answers to deliver.
    pub fn tick(
        &mut self,
        now_ms: i64,
        partitions_of: PartitionsOf<'_>,
    ) -> GroupResult<Vec<(String, Effects)>> {
        let ids: Vec<String> = self.state.groups.keys().cloned().collect();
        let cfg = self.state.consumer;
        let mut records = Vec::new();
        let mut saved = Saved(Vec::new());
        let mut deliveries = Vec::new();
        for id in ids {
            let before = self.state.groups.get(&id).cloned();
            let mut effects = match self.state.groups.get_mut(&id) {
                Some(Group::Classic(g)) => g.tick(now_ms),
                Some(Group::Consumer(g)) => {
                    let durable = g.durable();
                    if g.tick(now_ms, &cfg, partitions_of) {
                        records.extend(self.consumer_records(&id, Some(&durable)));
                    }
                    Effects::default()
                }
                None => continue,
            };
            records.extend(self.group_record(&id, &mut effects));
            if self.state.groups.get(&id) != before.as_ref() {
                saved.0.push((id.clone(), before));
            }
            if !effects.joins.is_empty() || !effects.syncs.is_empty() {
                deliveries.push((id, effects));
            }
        }
        self.finish(records, deliveries, saved)
    }

    /// Tombstones for offsets past `offsets.retention.minutes`, and for empty groups left
    /// without any.
    pub fn expire_offsets(&mut self, now_ms: i64) -> GroupResult<()> {
        GroupResult::new(self.state.expire_offsets(now_ms, self.retention_ms), ())
    }
}

impl CoordinatorShard for GroupShard {
    type Record = Record;
    type CodecError = RecordError;

    fn replay(&mut self, record: &Record, now_ms: i64) {
        self.state.replay(record, now_ms);
    }

    fn encode(&self, record: &Record) -> Result<(Vec<u8>, Option<Vec<u8>>), RecordError> {
        record.encode(&*self.topics)
    }

    fn decode(&self, key: &[u8], value: Option<&[u8]>) -> Result<Vec<Record>, RecordError> {
        Record::decode(key, value, &*self.topics)
    }

    fn replay_transactional(&mut self, producer_id: ProducerId, record: &Record, now_ms: i64) {
        match record {
            Record::Offset { .. } => self
                .pending_txn
                .entry(producer_id)
                .or_default()
                .push(record.clone()),
            // Only offsets are written transactionally; anything else is not Kafka's either.
            other => self.state.replay(other, now_ms),
        }
    }

    fn replay_end_txn(&mut self, producer_id: ProducerId, commit: bool, now_ms: i64) {
        let Some(records) = self.pending_txn.remove(&producer_id) else {
            return;
        };
        if commit {
            for r in &records {
                self.state.replay(r, now_ms);
            }
        }
    }

    fn has_open_transactions(&self) -> bool {
        !self.pending_txn.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::tests::TestTopics;
    use vltava_types::{LeaderEpoch, Offset};

    fn entry(partition: i32, offset: i64) -> CommitEntry {
        CommitEntry {
            topic: "t".into(),
            partition,
            offset: Offset::new(offset),
            leader_epoch: LeaderEpoch::new(-1),
            metadata: None,
        }
    }

    fn txn_commit(s: &mut GroupShard, producer_id: ProducerId, partition: i32, offset: i64) {
        let r = s.txn_offset_commit(
            0,
            "g",
            producer_id,
            ProducerEpoch::new(3),
            "",
            -1,
            None,
            &[entry(partition, offset)],
        );
        assert_eq!(
            r.transaction,
            Some(TxnBatch {
                producer_id,
                producer_epoch: ProducerEpoch::new(3)
            })
        );
        for rec in &r.records {
            s.replay_transactional(producer_id, rec, 0);
        }
        assert_eq!(r.reply, Ok(()));
    }

    fn committed(s: &GroupShard, partition: i32) -> Option<i64> {
        s.state.offsets.get("g", "t", partition).map(|v| v.offset)
    }

    #[test]
    fn transactional_offsets_wait_for_the_marker() {
        let mut s = GroupShard::new(CoordinatorState::default(), Arc::new(TestTopics), 1000);
        txn_commit(&mut s, ProducerId::new(7), 0, 10);
        txn_commit(&mut s, ProducerId::new(8), 1, 20);
        assert_eq!(committed(&s, 0), None, "invisible until the commit marker");
        assert!(s.has_pending_offset("g", "t", 0));
        assert!(s.has_open_transactions());
        s.replay_end_txn(ProducerId::new(7), true, 0);
        assert_eq!(committed(&s, 0), Some(10));
        assert!(!s.has_pending_offset("g", "t", 0));
        s.replay_end_txn(ProducerId::new(8), false, 0);
        assert_eq!(committed(&s, 1), None, "an abort drops them");
        assert!(!s.has_open_transactions());
        // A marker of a producer with nothing pending changes nothing.
        s.replay_end_txn(ProducerId::new(9), true, 0);
        assert_eq!(committed(&s, 0), Some(10));
    }

    #[test]
    fn transactional_commits_are_checked_like_commits() {
        let mut s = GroupShard::new(CoordinatorState::default(), Arc::new(TestTopics), 1000);
        // A generation for a group that does not exist.
        let r = s.txn_offset_commit(
            0,
            "g",
            ProducerId::new(7),
            ProducerEpoch::new(0),
            "m",
            3,
            None,
            &[entry(0, 1)],
        );
        assert_eq!(r.reply, Err(GroupError::IllegalGeneration));
        assert!(r.records.is_empty());
    }
}
