//! All groups and offsets of a coordinator, and the rules that span them (commits, deletion,
//! expiry, replay).

use std::collections::BTreeMap;

use vltava_types::{LeaderEpoch, Offset};

use crate::classic::{ClassicGroup, GroupConfig, GroupState};
use crate::consumer::{ConsumerGroup, ConsumerGroupConfig};
use crate::offsets::OffsetStore;
use crate::records::{OffsetValue, Record};
use crate::GroupError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Group {
    Classic(ClassicGroup),
    Consumer(ConsumerGroup),
}

impl Group {
    pub fn is_empty(&self) -> bool {
        match self {
            Group::Classic(g) => g.is_empty(),
            Group::Consumer(g) => g.members.is_empty(),
        }
    }

    pub fn state_name(&self) -> &'static str {
        match self {
            Group::Classic(g) => g.state.name(),
            Group::Consumer(g) => g.state_name(),
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Group::Classic(_) => "classic",
            Group::Consumer(_) => "consumer",
        }
    }
}

/// One committed offset as a request gives it.
#[derive(Debug, Clone)]
pub struct CommitEntry {
    pub topic: String,
    pub partition: i32,
    pub offset: Offset,
    pub leader_epoch: LeaderEpoch,
    pub metadata: Option<String>,
}

#[derive(Debug, Default)]
pub struct CoordinatorState {
    pub groups: BTreeMap<String, Group>,
    pub offsets: OffsetStore,
    pub classic: GroupConfig,
    pub consumer: ConsumerGroupConfig,
}

impl CoordinatorState {
    /// Applies a stored record (at load, or once an operation's records are appended). Total: any sequence of
    /// records replays. A group's value record makes the group that type (an empty group of
    /// the other type converts, as it does live); a tombstone acts only on its own type.
    pub fn replay(&mut self, record: &Record, now_ms: i64) {
        match record {
            Record::Offset { .. } => self.offsets.apply(record),
            Record::Group {
                group,
                value: Some(snap),
            } => {
                // Live, the runtime replays the snapshot an operation just took of the group:
                // the group already is what it says, with its join phase and sessions, which
                // a restore would reset. Anything else the record says wins.
                if let Some(Group::Classic(g)) = self.groups.get(group) {
                    if g.snapshot() == *snap {
                        return;
                    }
                }
                self.groups.insert(
                    group.clone(),
                    Group::Classic(ClassicGroup::restore(group, snap.clone(), now_ms)),
                );
            }
            Record::Group { group, value: None } => {
                if let Some(Group::Classic(_)) = self.groups.get(group) {
                    self.groups.remove(group);
                }
            }
            Record::ConsumerGroupMetadata { group, epoch: None } => {
                if let Some(Group::Consumer(_)) = self.groups.get(group) {
                    self.groups.remove(group);
                }
            }
            consumer => {
                let group = consumer.group();
                if !consumer.is_tombstone()
                    && !matches!(self.groups.get(group), Some(Group::Consumer(_)))
                {
                    self.groups.insert(
                        group.to_string(),
                        Group::Consumer(ConsumerGroup::new(group, now_ms)),
                    );
                }
                if let Some(Group::Consumer(g)) = self.groups.get_mut(group) {
                    g.replay(consumer, now_ms);
                }
            }
        }
    }

    /// The classic group named `group`, created empty if missing.
    pub fn classic_mut(
        &mut self,
        group: &str,
        now_ms: i64,
    ) -> Result<&mut ClassicGroup, GroupError> {
        if let Some(Group::Consumer(g)) = self.groups.get(group) {
            if !g.members.is_empty() {
                return Err(GroupError::GroupIdTypeMismatch);
            }
            self.groups.remove(group);
        }
        match self
            .groups
            .entry(group.to_string())
            .or_insert_with(|| Group::Classic(ClassicGroup::new(group, now_ms)))
        {
            Group::Classic(g) => Ok(g),
            Group::Consumer(_) => unreachable!("replaced above"),
        }
    }

    /// The consumer (KIP-848) group named `group`; an empty classic group converts.
    pub fn consumer_mut(
        &mut self,
        group: &str,
        now_ms: i64,
    ) -> Result<&mut ConsumerGroup, GroupError> {
        if let Some(Group::Classic(g)) = self.groups.get(group) {
            if !g.is_empty() {
                return Err(GroupError::GroupIdTypeMismatch);
            }
            self.groups.remove(group);
        }
        match self
            .groups
            .entry(group.to_string())
            .or_insert_with(|| Group::Consumer(ConsumerGroup::new(group, now_ms)))
        {
            Group::Consumer(g) => Ok(g),
            Group::Classic(_) => unreachable!("replaced above"),
        }
    }

    /// Kafka's OffsetCommit checks: a member of a live group must be current; a commit
    /// without a member (generation -1) is only for groups with no members.
    pub fn validate_commit(
        &self,
        group: &str,
        member_id: &str,
        generation_or_epoch: i32,
        instance: Option<&str>,
    ) -> Result<(), GroupError> {
        match self.groups.get(group) {
            None => {
                if generation_or_epoch >= 0 {
                    Err(GroupError::IllegalGeneration)
                } else {
                    Ok(())
                }
            }
            Some(Group::Classic(g)) => {
                if generation_or_epoch < 0 && member_id.is_empty() {
                    return if g.members.is_empty() {
                        Ok(())
                    } else {
                        Err(GroupError::UnknownMemberId)
                    };
                }
                if let Some(inst) = instance {
                    if g.members
                        .values()
                        .any(|m| m.instance_id.as_deref() == Some(inst) && m.member_id != member_id)
                    {
                        return Err(GroupError::FencedInstanceId);
                    }
                }
                if !g.members.contains_key(member_id) {
                    return Err(GroupError::UnknownMemberId);
                }
                if generation_or_epoch != g.generation_id {
                    return Err(GroupError::IllegalGeneration);
                }
                // Kafka accepts commits while a rebalance is being prepared (members commit in
                // their revocation callbacks) but not while assignments are being handed out.
                if g.state == GroupState::CompletingRebalance {
                    return Err(GroupError::RebalanceInProgress);
                }
                Ok(())
            }
            Some(Group::Consumer(g)) => {
                if generation_or_epoch < 0 && member_id.is_empty() {
                    return if g.members.is_empty() {
                        Ok(())
                    } else {
                        Err(GroupError::UnknownMemberId)
                    };
                }
                g.check_commit(member_id, generation_or_epoch)
            }
        }
    }

    pub fn commit_records(group: &str, entries: &[CommitEntry], now_ms: i64) -> Vec<Record> {
        entries
            .iter()
            .map(|e| Record::Offset {
                group: group.to_string(),
                topic: e.topic.clone(),
                partition: e.partition,
                value: Some(OffsetValue {
                    offset: e.offset.get(),
                    leader_epoch: e.leader_epoch.get(),
                    metadata: e.metadata.clone(),
                    commit_timestamp_ms: now_ms,
                }),
            })
            .collect()
    }

    /// DeleteGroups: only groups without members; returns the tombstones to write.
    pub fn delete_group(&self, group: &str) -> Result<Vec<Record>, GroupError> {
        match self.groups.get(group) {
            Some(g) if !g.is_empty() => Err(GroupError::NonEmptyGroup),
            None if !self.offsets.has_group(group) => Err(GroupError::GroupIdNotFound),
            _ => {
                let mut out = self.offsets.delete_group(group);
                out.extend(self.group_tombstones(group));
                Ok(out)
            }
        }
    }

    /// Drops `group` again if the call that just created it left it empty (a refused join or
    /// heartbeat): nothing of it was stored, so nothing needs a tombstone.
    pub fn discard_if_empty(&mut self, group: &str) {
        if self.groups.get(group).is_some_and(Group::is_empty) {
            self.groups.remove(group);
        }
    }

    /// Records that remove offsets past `offsets.retention.minutes`.
    /// Also removes, as Kafka does, every empty group left with no committed offsets.
    pub fn expire_offsets(&self, now_ms: i64, retention_ms: i64) -> Vec<Record> {
        let mut out = self.offsets.expire(now_ms, retention_ms, |g| {
            self.groups.get(g).map(|grp| match grp {
                Group::Classic(c) if c.is_empty() => Some(c.state_since_ms),
                Group::Consumer(c) if c.members.is_empty() => Some(c.state_since_ms),
                _ => None,
            })
        });
        let mut expiring: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &out {
            *expiring.entry(r.group()).or_default() += 1;
        }
        let mut gone = Vec::new();
        for (id, g) in &self.groups {
            let left = self.offsets.group(id).count() - expiring.get(id.as_str()).unwrap_or(&0);
            if g.is_empty() && left == 0 {
                gone.push(id.clone());
            }
        }
        for id in gone {
            out.extend(self.group_tombstones(&id));
        }
        out
    }

    /// Tombstones for `group` as its current type stores it, written when an empty group
    /// converts to the other type (as Kafka does), so a reload does not bring the old one
    /// back. Replayed on the converted group they change nothing: each acts on its own type.
    pub fn conversion_tombstones(&self, group: &str) -> Vec<Record> {
        match self.groups.get(group) {
            Some(Group::Classic(_)) => vec![Record::Group {
                group: group.to_string(),
                value: None,
            }],
            Some(Group::Consumer(_)) => self.group_tombstones(group).split_off(1),
            None => Vec::new(),
        }
    }

    /// What removes a group for good, whichever type it was stored as: Kafka's tombstones for
    /// a classic group's key and for a KIP-848 group's keys (target assignment epoch and
    /// member parts, partition metadata, and last the group epoch).
    fn group_tombstones(&self, group: &str) -> Vec<Record> {
        let mut out = vec![Record::Group {
            group: group.to_string(),
            value: None,
        }];
        if let Some(Group::Consumer(g)) = self.groups.get(group) {
            // Empty groups only, so no member records are left; a target may be.
            for member in g.target.keys() {
                out.push(Record::ConsumerGroupTargetAssignmentMember {
                    group: group.to_string(),
                    member: member.clone(),
                    partitions: None,
                });
            }
        }
        out.extend([
            Record::ConsumerGroupTargetAssignmentMetadata {
                group: group.to_string(),
                epoch: None,
            },
            Record::ConsumerGroupPartitionMetadata {
                group: group.to_string(),
                topics: None,
            },
            Record::ConsumerGroupMetadata {
                group: group.to_string(),
                epoch: None,
            },
        ]);
        out
    }

    /// Every group id known by state or by committed offsets.
    pub fn group_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.groups.keys().cloned().collect();
        for g in self.offsets.groups() {
            if !self.groups.contains_key(g) {
                ids.push(g.clone());
            }
        }
        ids.sort();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(s: &mut CoordinatorState, group: &str, now_ms: i64) {
        let entry = CommitEntry {
            topic: "t".into(),
            partition: 0,
            offset: Offset::new(1),
            leader_epoch: LeaderEpoch::new(-1),
            metadata: None,
        };
        for r in CoordinatorState::commit_records(group, &[entry], now_ms) {
            s.replay(&r, now_ms);
        }
    }

    #[test]
    fn empty_groups_without_offsets_are_removed_with_their_last_offsets() {
        let mut s = CoordinatorState::default();
        s.classic_mut("idle", 0).unwrap();
        s.consumer_mut("idle848", 0).unwrap();
        commit(&mut s, "kept", 0);
        s.classic_mut("kept", 0).unwrap();
        // Fresh offsets keep "kept"; the two groups with no offsets go now.
        let records = s.expire_offsets(10, 1000);
        for r in &records {
            s.replay(r, 10);
        }
        assert_eq!(s.groups.keys().collect::<Vec<_>>(), ["kept"]);
        // Once "kept" has been empty past retention, its offsets and then the group go.
        let records = s.expire_offsets(5000, 1000);
        assert!(records
            .iter()
            .any(|r| matches!(r, Record::Offset { value: None, .. })));
        for r in &records {
            s.replay(r, 5000);
        }
        assert!(s.groups.is_empty());
        assert!(!s.offsets.has_group("kept"));
    }

    #[test]
    fn deleting_a_group_tombstones_both_group_records() {
        let mut s = CoordinatorState::default();
        s.consumer_mut("g", 0).unwrap();
        let records = s.delete_group("g").unwrap();
        assert!(records.iter().all(Record::is_tombstone));
        assert!(records
            .iter()
            .any(|r| matches!(r, Record::ConsumerGroupMetadata { epoch: None, .. })));
        assert!(records
            .iter()
            .any(|r| matches!(r, Record::Group { value: None, .. })));
        for r in &records {
            s.replay(r, 1);
        }
        assert!(s.groups.is_empty());
    }

    #[test]
    fn a_group_created_by_a_refused_call_is_discarded() {
        let mut s = CoordinatorState::default();
        s.classic_mut("g", 0).unwrap();
        s.discard_if_empty("g");
        assert!(s.groups.is_empty());
    }

    /// What the broker does with a KIP-848 group: after each change it writes the records
    /// `records(before)` gives; replaying them, through Kafka's byte layout, from nothing
    /// must rebuild the same group, member removals and static departures included.
    #[test]
    fn consumer_group_records_replay_to_the_same_group() {
        use crate::consumer::HeartbeatRequest;
        use crate::records::tests::TestTopics;
        let parts = |t: &str| (t == "t" || t == "u").then_some(3);
        let mut live = CoordinatorState::default();
        let mut disk = CoordinatorState::default();
        let hb = |id: &str, epoch: i32, inst: Option<&str>, owned: Option<Vec<(String, i32)>>| {
            HeartbeatRequest {
                member_id: id.into(),
                member_epoch: epoch,
                instance_id: inst.map(str::to_string),
                client_id: "c".into(),
                client_host: "h".into(),
                rebalance_timeout_ms: 1000,
                subscribed_topics: (epoch == 0).then(|| vec!["t".into(), "u".into()]),
                subscribed_regex: None,
                assignor: None,
                owned,
                cluster_topics: None,
            }
        };
        let steps = [
            hb("a", 0, None, Some(vec![])),
            hb("b", 0, Some("i"), Some(vec![])),
            hb("a", 1, None, Some(vec![])),
            hb("b", 2, Some("i"), Some(vec![])),
            hb("a", -1, None, None),
            hb("b", -2, Some("i"), None),
            hb("c", 0, Some("i"), Some(vec![])),
        ];
        let cfg = live.consumer;
        for (now, req) in steps.into_iter().enumerate() {
            let now = now as i64;
            let g = live.consumer_mut("g", now).unwrap();
            let before = g.durable();
            let _ = g.heartbeat(now, &cfg, req, &parts);
            for r in g.durable().records(Some(&before)) {
                let (k, v) = r.encode(&TestTopics).unwrap();
                for back in Record::decode(&k, v.as_deref(), &TestTopics).unwrap() {
                    disk.replay(&back, 0);
                }
            }
            let (Some(Group::Consumer(l)), Some(Group::Consumer(d))) =
                (live.groups.get("g"), disk.groups.get("g"))
            else {
                panic!("both hold the consumer group")
            };
            let mut expect = l.durable();
            expect.state_since_ms = 0;
            // Kafka stores a departed static member with epoch -2 and its epoch in the
            // previous-epoch slot (see `MemberAssignment::departed`).
            for m in expect.members.values_mut().filter(|m| m.departed) {
                m.previous_member_epoch = m.member_epoch;
            }
            assert_eq!(d.durable(), expect, "after step {now}");
        }
    }
}
