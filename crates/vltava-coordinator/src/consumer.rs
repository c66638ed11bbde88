//! The consumer group protocol of KIP-848: members heartbeat with their epoch and owned
//! partitions; the coordinator computes a target assignment with a server-side assignor and
//! hands each member the part of it that no other member still owns.
//!
//! A member subscribes by topic names, by a regular expression, or both. The group resolves
//! each regular expression against the topic names the broker passes with a heartbeat, so
//! topics created or deleted later are picked up on the next heartbeat of any member.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::records::{MemberAssignment, MemberSubscription, Record};
use crate::GroupError;

pub type TopicPartition = (String, i32);

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub subscribed: BTreeSet<String>,
    /// `SubscribedTopicRegex`, never empty: an empty one from the member means none.
    #[serde(default)]
    pub subscribed_regex: Option<String>,
    pub assignor: Option<String>,
    pub rebalance_timeout_ms: i32,
    /// What the member has been told it owns.
    pub assigned: BTreeSet<TopicPartition>,
    /// Partitions the member must give up before they can move.
    pub revoking: BTreeSet<TopicPartition>,
    /// A static member that left with epoch -2 (KIP-848): it keeps its assignment until its
    /// session times out, so that a restart with the same instance id moves nothing.
    #[serde(default)]
    pub departed: bool,
    /// Not stored: a restored member's session counts from the restore.
    #[serde(skip)]
    pub last_heartbeat_ms: i64,
    /// Last assignment sent, so unchanged ones are not resent.
    #[serde(skip)]
    last_sent: Option<BTreeSet<TopicPartition>>,
    /// When `revoking` last became non-empty; past the rebalance timeout the member is
    /// removed so it cannot hold partitions that others are waiting for.
    #[serde(skip)]
    revoking_since_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatRequest {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    /// `None`: unchanged since the last heartbeat.
    pub subscribed_topics: Option<Vec<String>>,
    /// `None`: unchanged; `""`: no regular expression any more.
    pub subscribed_regex: Option<String>,
    pub assignor: Option<String>,
    /// `None`: unchanged. Otherwise what the member currently owns.
    pub owned: Option<Vec<TopicPartition>>,
    /// The cluster's topics, which regular expressions are resolved against (the broker
    /// passes those the member may describe). `None`: not given; each regular expression
    /// keeps its last resolution.
    pub cluster_topics: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatResponse {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// `None` when unchanged since the last response.
    pub assignment: Option<Vec<TopicPartition>>,
}

#[derive(Debug, Clone, Copy)]
pub struct ConsumerGroupConfig {
    pub session_timeout_ms: i64,
    pub heartbeat_interval_ms: i32,
    pub max_size: usize,
}

impl Default for ConsumerGroupConfig {
    fn default() -> Self {
        Self {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            max_size: i32::MAX as usize,
        }
    }
}

impl ConsumerMember {
    fn subscription(&self) -> MemberSubscription {
        MemberSubscription {
            instance_id: self.instance_id.clone(),
            client_id: self.client_id.clone(),
            client_host: self.client_host.clone(),
            subscribed: self.subscribed.clone(),
            regex: self.subscribed_regex.clone(),
            rebalance_timeout_ms: self.rebalance_timeout_ms,
            assignor: self.assignor.clone(),
        }
    }

    fn current_assignment(&self) -> MemberAssignment {
        MemberAssignment {
            member_epoch: self.member_epoch,
            previous_member_epoch: self.previous_member_epoch,
            departed: self.departed,
            assigned: self.assigned.clone(),
            revoking: self.revoking.clone(),
        }
    }
}

pub const ASSIGNORS: [&str; 2] = ["uniform", "range"];

/// A subscription's regular expression as Kafka applies it: RE2 syntax (Kafka uses RE2/J),
/// matching a whole topic name. An invalid one is INVALID_REGULAR_EXPRESSION.
pub fn topic_regex(regex: &str) -> Result<regex::Regex, GroupError> {
    // Checked alone first: wrapping could make an unbalanced expression such as `a)|(b` valid.
    regex::Regex::new(regex).map_err(|_| GroupError::InvalidRegularExpression)?;
    regex::Regex::new(&format!("^(?:{regex})$")).map_err(|_| GroupError::InvalidRegularExpression)
}

/// The topics among `topics` that `regex` matches; none for an invalid one.
fn resolve<'a>(regex: &str, topics: impl Iterator<Item = &'a String>) -> BTreeSet<String> {
    match topic_regex(regex) {
        Ok(re) => topics.filter(|t| re.is_match(t)).cloned().collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// Stored in `__consumer_offsets` as Kafka's KIP-848 records (see `records`) whenever its
/// durable part changes (see `durable`). Not stored: `state_since_ms`, which Kafka's records
/// have no room for; a replayed group counts from its replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerGroup {
    pub group_id: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    pub target: BTreeMap<String, BTreeSet<TopicPartition>>,
    /// Partition counts of subscribed topics when the target was computed.
    topic_partitions: BTreeMap<String, i32>,
    /// The topics each of the members' regular expressions matched when last resolved. Not
    /// stored: replay resolves them again against the stored subscribed topics.
    #[serde(default)]
    pub resolved_regexes: BTreeMap<String, BTreeSet<String>>,
    pub state_since_ms: i64,
}

impl ConsumerGroup {
    pub fn new(group_id: &str, now_ms: i64) -> Self {
        Self {
            group_id: group_id.to_string(),
            group_epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            topic_partitions: BTreeMap::new(),
            resolved_regexes: BTreeMap::new(),
            state_since_ms: now_ms,
        }
    }

    /// The group as stored: without session clocks and send caches, which change on every
    /// heartbeat and mean nothing after a restart.
    pub fn durable(&self) -> Self {
        let mut g = self.clone();
        for m in g.members.values_mut() {
            m.last_heartbeat_ms = 0;
            m.last_sent = None;
            m.revoking_since_ms = None;
        }
        g
    }

    /// The records that take a log holding `before` (`None`: nothing of this group) to this
    /// group, both as `durable` gives them. Kafka's order: departed members' tombstones,
    /// subscriptions, partition metadata, group epoch, target assignment and its epoch,
    /// current assignments. Only what changed is written, so a heartbeat that moves one
    /// member writes that member's records.
    pub fn records(&self, before: Option<&ConsumerGroup>) -> Vec<Record> {
        let group = &self.group_id;
        let mut out = Vec::new();
        let removed: BTreeSet<&String> = before
            .map(|b| {
                b.members
                    .keys()
                    .filter(|id| !self.members.contains_key(*id))
                    .collect()
            })
            .unwrap_or_default();
        for id in &removed {
            out.push(Record::ConsumerGroupCurrentMemberAssignment {
                group: group.clone(),
                member: (*id).clone(),
                value: None,
            });
            if !self.target.contains_key(*id) {
                out.push(Record::ConsumerGroupTargetAssignmentMember {
                    group: group.clone(),
                    member: (*id).clone(),
                    partitions: None,
                });
            }
            out.push(Record::ConsumerGroupMemberMetadata {
                group: group.clone(),
                member: (*id).clone(),
                value: None,
            });
        }
        let old_member = |id: &String| before.and_then(|b| b.members.get(id));
        for (id, m) in &self.members {
            let value = m.subscription();
            if old_member(id).map(ConsumerMember::subscription) != Some(value.clone()) {
                out.push(Record::ConsumerGroupMemberMetadata {
                    group: group.clone(),
                    member: id.clone(),
                    value: Some(value),
                });
            }
        }
        if before.map(|b| &b.topic_partitions) != Some(&self.topic_partitions) {
            out.push(Record::ConsumerGroupPartitionMetadata {
                group: group.clone(),
                topics: Some(self.topic_partitions.clone()),
            });
        }
        if before.map(|b| b.group_epoch) != Some(self.group_epoch) {
            out.push(Record::ConsumerGroupMetadata {
                group: group.clone(),
                epoch: Some(self.group_epoch),
            });
        }
        if let Some(b) = before {
            for id in b.target.keys() {
                if !self.target.contains_key(id) && !removed.contains(id) {
                    out.push(Record::ConsumerGroupTargetAssignmentMember {
                        group: group.clone(),
                        member: id.clone(),
                        partitions: None,
                    });
                }
            }
        }
        for (id, set) in &self.target {
            if before.and_then(|b| b.target.get(id)) != Some(set) {
                out.push(Record::ConsumerGroupTargetAssignmentMember {
                    group: group.clone(),
                    member: id.clone(),
                    partitions: Some(set.clone()),
                });
            }
        }
        if before.map(|b| b.assignment_epoch) != Some(self.assignment_epoch) {
            out.push(Record::ConsumerGroupTargetAssignmentMetadata {
                group: group.clone(),
                epoch: Some(self.assignment_epoch),
            });
        }
        for (id, m) in &self.members {
            let value = m.current_assignment();
            if old_member(id).map(ConsumerMember::current_assignment) != Some(value.clone()) {
                out.push(Record::ConsumerGroupCurrentMemberAssignment {
                    group: group.clone(),
                    member: id.clone(),
                    value: Some(value),
                });
            }
        }
        out
    }

    /// Applies one of this group's stored records. A member a record touches gets a fresh
    /// session from `now_ms` and is sent its full assignment on its next heartbeat; the
    /// group-removing tombstone is the caller's (`CoordinatorState::replay`).
    pub(crate) fn replay(&mut self, record: &Record, now_ms: i64) {
        match record {
            Record::ConsumerGroupMetadata {
                epoch: Some(epoch), ..
            } => self.group_epoch = *epoch,
            Record::ConsumerGroupPartitionMetadata { topics, .. } => {
                self.topic_partitions = topics.clone().unwrap_or_default();
                self.resolved_regexes.clear();
                self.resolve_regexes_from_stored();
            }
            Record::ConsumerGroupMemberMetadata {
                member,
                value: Some(s),
                ..
            } => {
                let m = self.member_for_replay(member, now_ms);
                m.instance_id = s.instance_id.clone();
                m.client_id = s.client_id.clone();
                m.client_host = s.client_host.clone();
                m.subscribed = s.subscribed.clone();
                m.subscribed_regex = s.regex.clone();
                m.rebalance_timeout_ms = s.rebalance_timeout_ms;
                m.assignor = s.assignor.clone();
                self.resolve_regexes_from_stored();
            }
            Record::ConsumerGroupMemberMetadata {
                member,
                value: None,
                ..
            } => {
                self.members.remove(member);
                self.resolve_regexes_from_stored();
            }
            Record::ConsumerGroupTargetAssignmentMetadata { epoch, .. } => {
                self.assignment_epoch = epoch.unwrap_or(0);
            }
            Record::ConsumerGroupTargetAssignmentMember {
                member, partitions, ..
            } => match partitions {
                Some(p) => {
                    self.target.insert(member.clone(), p.clone());
                }
                None => {
                    self.target.remove(member);
                }
            },
            Record::ConsumerGroupCurrentMemberAssignment {
                member,
                value: Some(a),
                ..
            } => {
                let m = self.member_for_replay(member, now_ms);
                m.member_epoch = a.member_epoch;
                m.previous_member_epoch = a.previous_member_epoch;
                m.departed = a.departed;
                m.assigned = a.assigned.clone();
                m.revoking = a.revoking.clone();
            }
            Record::ConsumerGroupCurrentMemberAssignment {
                member,
                value: None,
                ..
            } => {
                // As Kafka: the member stays (until its subscription's tombstone) but owns
                // nothing and has left its epoch.
                if let Some(m) = self.members.get_mut(member) {
                    m.member_epoch = -1;
                    m.previous_member_epoch = -1;
                    m.assigned.clear();
                    m.revoking.clear();
                }
            }
            Record::ConsumerGroupMetadata { epoch: None, .. }
            | Record::Offset { .. }
            | Record::Group { .. } => {}
        }
    }

    /// Replay has no topic list: a regular expression's topics are those it matches among
    /// the subscribed topics stored with the target assignment, which is what it matched
    /// when the target was computed.
    fn resolve_regexes_from_stored(&mut self) {
        let used = self.regexes();
        self.resolved_regexes.retain(|r, _| used.contains(r));
        for r in used {
            if !self.resolved_regexes.contains_key(&r) {
                let topics = resolve(&r, self.topic_partitions.keys());
                self.resolved_regexes.insert(r, topics);
            }
        }
    }

    /// The regular expressions members subscribe with.
    fn regexes(&self) -> BTreeSet<String> {
        self.members
            .values()
            .filter_map(|m| m.subscribed_regex.clone())
            .collect()
    }

    /// Whether some member subscribes with a regular expression, so that heartbeats should
    /// carry the cluster's topics.
    pub fn uses_regex(&self) -> bool {
        self.members.values().any(|m| m.subscribed_regex.is_some())
    }

    /// Resolves every member's regular expression against `topics`.
    fn resolve_regexes(&mut self, topics: &[String]) {
        self.resolved_regexes = self
            .regexes()
            .into_iter()
            .map(|r| {
                let matched = resolve(&r, topics.iter());
                (r, matched)
            })
            .collect();
    }

    /// Each member's topics: its names and what its regular expression resolved to.
    fn subscriptions(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.members
            .values()
            .map(|m| {
                let mut topics = m.subscribed.clone();
                if let Some(matched) = m
                    .subscribed_regex
                    .as_ref()
                    .and_then(|r| self.resolved_regexes.get(r))
                {
                    topics.extend(matched.iter().cloned());
                }
                (m.member_id.clone(), topics)
            })
            .collect()
    }

    fn member_for_replay(&mut self, member_id: &str, now_ms: i64) -> &mut ConsumerMember {
        let m = self
            .members
            .entry(member_id.to_string())
            .or_insert_with(|| ConsumerMember {
                member_id: member_id.to_string(),
                previous_member_epoch: -1,
                ..Default::default()
            });
        m.last_heartbeat_ms = now_ms;
        m.last_sent = None;
        m
    }

    /// Kafka's consumer group states: Empty, Assigning, Reconciling, Stable.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.assignment_epoch < self.group_epoch {
            "Assigning"
        } else if self.members.values().any(|m| {
            m.member_epoch != self.assignment_epoch
                || !m.revoking.is_empty()
                || self.target.get(&m.member_id) != Some(&m.assigned)
        }) {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// The topics the group consumes: by name or through a regular expression.
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.subscriptions().into_values().flatten().collect()
    }

    fn recompute_target(&mut self, partitions_of: &dyn Fn(&str) -> Option<i32>) {
        let used = self.regexes();
        self.resolved_regexes.retain(|r, _| used.contains(r));
        let subscriptions = self.subscriptions();
        let topics: BTreeMap<String, i32> = subscriptions
            .values()
            .flatten()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter_map(|t| partitions_of(t).map(|n| (t.clone(), n)))
            .collect();
        let range = self
            .members
            .values()
            .next()
            .and_then(|m| m.assignor.as_deref())
            == Some("range");
        self.target = if range {
            assign_range(&subscriptions, &topics)
        } else {
            assign_uniform(&subscriptions, &topics, &self.target)
        };
        self.topic_partitions = topics;
        self.assignment_epoch = self.group_epoch;
    }

    fn owned_by_others(&self, member_id: &str) -> BTreeSet<TopicPartition> {
        self.members
            .values()
            .filter(|m| m.member_id != member_id)
            .flat_map(|m| m.assigned.iter().chain(m.revoking.iter()).cloned())
            .collect()
    }

    pub fn heartbeat(
        &mut self,
        now_ms: i64,
        cfg: &ConsumerGroupConfig,
        req: HeartbeatRequest,
        partitions_of: &dyn Fn(&str) -> Option<i32>,
    ) -> Result<HeartbeatResponse, GroupError> {
        if req.member_epoch == -2 {
            if let Some(m) = self
                .members
                .get_mut(&req.member_id)
                .filter(|m| m.instance_id.is_some())
            {
                m.departed = true;
                return Ok(HeartbeatResponse {
                    member_id: req.member_id.clone(),
                    member_epoch: -2,
                    heartbeat_interval_ms: 0,
                    assignment: None,
                });
            }
        }
        if req.member_epoch == -1 || req.member_epoch == -2 {
            return self
                .leave(&req.member_id, partitions_of)
                .map(|()| HeartbeatResponse {
                    member_id: req.member_id.clone(),
                    member_epoch: req.member_epoch,
                    heartbeat_interval_ms: 0,
                    assignment: None,
                });
        }
        if let Some(a) = &req.assignor {
            if !ASSIGNORS.contains(&a.as_str()) {
                return Err(GroupError::UnsupportedAssignor);
            }
        }
        if let Some(r) = req.subscribed_regex.as_deref() {
            if !r.is_empty() && !self.resolved_regexes.contains_key(r) {
                topic_regex(r)?;
            }
        }
        let mut bump = false;
        let member_id = if req.member_id.is_empty() {
            uuid::Uuid::new_v4().simple().to_string()
        } else {
            req.member_id.clone()
        };
        if req.member_epoch == 0 {
            if req.subscribed_topics.is_none() && req.subscribed_regex.is_none() {
                return Err(GroupError::InvalidRequest);
            }
            if !self.members.contains_key(&member_id) && self.members.len() >= cfg.max_size {
                return Err(GroupError::GroupMaxSizeReached);
            }
            // A static member coming back takes over its old identity: same assignment and
            // epoch, so nothing moves. Anyone else (re)joining starts from nothing.
            let old_static = req.instance_id.as_ref().and_then(|inst| {
                self.members
                    .values()
                    .find(|m| m.instance_id.as_ref() == Some(inst) && m.member_id != member_id)
                    .map(|m| m.member_id.clone())
            });
            let member = match old_static.and_then(|o| self.members.remove(&o)) {
                Some(old) => {
                    if let Some(target) = self.target.remove(&old.member_id) {
                        self.target.insert(member_id.clone(), target);
                    }
                    ConsumerMember {
                        member_id: member_id.clone(),
                        departed: false,
                        last_sent: None,
                        ..old
                    }
                }
                None => {
                    bump = self.members.remove(&member_id).is_none();
                    ConsumerMember {
                        member_id: member_id.clone(),
                        previous_member_epoch: -1,
                        ..Default::default()
                    }
                }
            };
            self.members.insert(member_id.clone(), member);
        } else {
            let m = self
                .members
                .get(&member_id)
                .ok_or(GroupError::UnknownMemberId)?;
            if req.member_epoch != m.member_epoch && req.member_epoch != m.previous_member_epoch {
                return Err(GroupError::FencedMemberEpoch);
            }
        }
        let m = self.members.get_mut(&member_id).expect("present");
        m.last_heartbeat_ms = now_ms;
        m.client_id = req.client_id.clone();
        m.client_host = req.client_host.clone();
        // KIP-848 heartbeats carry these only when they change: null and -1 mean "as before".
        if req.instance_id.is_some() {
            m.instance_id = req.instance_id.clone();
        }
        if req.rebalance_timeout_ms >= 0 {
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        if req.assignor.is_some() {
            m.assignor = req.assignor.clone();
        }
        if let Some(topics) = &req.subscribed_topics {
            let new: BTreeSet<String> = topics.iter().cloned().collect();
            if new != m.subscribed {
                m.subscribed = new;
                bump = true;
            }
        }
        if let Some(regex) = &req.subscribed_regex {
            let new = (!regex.is_empty()).then(|| regex.clone());
            if new != m.subscribed_regex {
                m.subscribed_regex = new;
                bump = true;
            }
        }
        if let Some(owned) = &req.owned {
            // Whatever the member no longer reports owning has been revoked.
            let owned: BTreeSet<TopicPartition> = owned.iter().cloned().collect();
            m.revoking.retain(|p| owned.contains(p));
            if m.revoking.is_empty() {
                m.revoking_since_ms = None;
            }
        }
        if let Some(topics) = &req.cluster_topics {
            self.resolve_regexes(topics);
        }
        // Topic metadata changes (new partitions, deleted topics, topics a regular expression
        // now matches) also move the target.
        let current: BTreeMap<String, i32> = self
            .subscribed_topics()
            .into_iter()
            .filter_map(|t| partitions_of(&t).map(|n| (t, n)))
            .collect();
        if current != self.topic_partitions {
            bump = true;
        }
        if bump {
            self.group_epoch += 1;
            self.state_since_ms = now_ms;
        }
        if self.assignment_epoch < self.group_epoch {
            self.recompute_target(partitions_of);
        }
        Ok(self.reconcile(now_ms, &member_id, cfg))
    }

    fn reconcile(
        &mut self,
        now_ms: i64,
        member_id: &str,
        cfg: &ConsumerGroupConfig,
    ) -> HeartbeatResponse {
        let others = self.owned_by_others(member_id);
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let epoch = self.assignment_epoch;
        let m = self.members.get_mut(member_id).expect("present");
        let to_revoke: BTreeSet<TopicPartition> = m.assigned.difference(&target).cloned().collect();
        if !to_revoke.is_empty() {
            if m.revoking.is_empty() {
                m.revoking_since_ms = Some(now_ms);
            }
            m.revoking.extend(to_revoke.iter().cloned());
            m.assigned.retain(|p| target.contains(p));
        }
        for p in &target {
            if !others.contains(p) {
                m.assigned.insert(p.clone());
            }
        }
        if m.revoking.is_empty() && m.member_epoch != epoch {
            m.previous_member_epoch = m.member_epoch;
            m.member_epoch = epoch;
        }
        let assignment = if m.last_sent.as_ref() != Some(&m.assigned) {
            m.last_sent = Some(m.assigned.clone());
            Some(m.assigned.iter().cloned().collect())
        } else {
            None
        };
        HeartbeatResponse {
            member_id: member_id.to_string(),
            member_epoch: m.member_epoch,
            heartbeat_interval_ms: cfg.heartbeat_interval_ms,
            assignment,
        }
    }

    fn leave(
        &mut self,
        member_id: &str,
        partitions_of: &dyn Fn(&str) -> Option<i32>,
    ) -> Result<(), GroupError> {
        if self.members.remove(member_id).is_none() {
            return Err(GroupError::UnknownMemberId);
        }
        self.group_epoch += 1;
        self.recompute_target(partitions_of);
        Ok(())
    }

    /// Removes members whose session expired or who kept partitions to revoke past their
    /// rebalance timeout; returns whether anyone left.
    pub fn tick(
        &mut self,
        now_ms: i64,
        cfg: &ConsumerGroupConfig,
        partitions_of: &dyn Fn(&str) -> Option<i32>,
    ) -> bool {
        let mut expired = Vec::new();
        for m in self.members.values_mut() {
            if m.revoking.is_empty() {
                m.revoking_since_ms = None;
            }
            // A member restored with pending revocations gets a full timeout from now.
            let since = match m.revoking.is_empty() {
                true => None,
                false => Some(*m.revoking_since_ms.get_or_insert(now_ms)),
            };
            let rebalance_timeout = match m.rebalance_timeout_ms {
                t if t > 0 => i64::from(t),
                _ => cfg.session_timeout_ms,
            };
            if now_ms - m.last_heartbeat_ms > cfg.session_timeout_ms
                || since.is_some_and(|s| now_ms - s > rebalance_timeout)
            {
                expired.push(m.member_id.clone());
            }
        }
        for id in &expired {
            self.members.remove(id);
        }
        if !expired.is_empty() {
            self.group_epoch += 1;
            self.state_since_ms = now_ms;
            self.recompute_target(partitions_of);
        }
        !expired.is_empty()
    }

    /// OffsetCommit from a consumer-group member: its epoch must be current.
    pub fn check_commit(&self, member_id: &str, member_epoch: i32) -> Result<(), GroupError> {
        let m = self
            .members
            .get(member_id)
            .ok_or(GroupError::UnknownMemberId)?;
        if member_epoch != m.member_epoch {
            return Err(GroupError::FencedMemberEpoch);
        }
        Ok(())
    }
}

/// Range: per topic, members subscribed to it (sorted) get contiguous ranges. `members` maps
/// each member to the topics it subscribes to.
fn assign_range(
    members: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, i32>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    let mut out: BTreeMap<String, BTreeSet<TopicPartition>> = members
        .keys()
        .map(|k| (k.clone(), BTreeSet::new()))
        .collect();
    for (topic, &n) in topics {
        let subs: Vec<&String> = members
            .iter()
            .filter(|(_, subscribed)| subscribed.contains(topic))
            .map(|(id, _)| id)
            .collect();
        if subs.is_empty() {
            continue;
        }
        let (per, extra) = (n as usize / subs.len(), n as usize % subs.len());
        let mut p = 0;
        for (i, id) in subs.iter().enumerate() {
            let count = per + usize::from(i < extra);
            for _ in 0..count {
                out.get_mut(*id).expect("member").insert((topic.clone(), p));
                p += 1;
            }
        }
    }
    out
}

/// Uniform: balanced counts, keeping each member's previous partitions where it can (sticky).
fn assign_uniform(
    members: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, i32>,
    previous: &BTreeMap<String, BTreeSet<TopicPartition>>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    let mut out: BTreeMap<String, BTreeSet<TopicPartition>> = members
        .keys()
        .map(|k| (k.clone(), BTreeSet::new()))
        .collect();
    let all: Vec<TopicPartition> = topics
        .iter()
        .flat_map(|(t, &n)| (0..n).map(move |p| (t.clone(), p)))
        .collect();
    if members.is_empty() {
        return out;
    }
    let eligible = |id: &String, tp: &TopicPartition| members[id].contains(&tp.0);
    let quota = all.len().div_ceil(members.len());
    let mut taken = BTreeSet::new();
    for (id, prev) in previous {
        if !members.contains_key(id) {
            continue;
        }
        for tp in prev {
            if out[id].len() < quota
                && all.contains(tp)
                && eligible(id, tp)
                && taken.insert(tp.clone())
            {
                out.get_mut(id).expect("member").insert(tp.clone());
            }
        }
    }
    for tp in all {
        if taken.contains(&tp) {
            continue;
        }
        let best = members
            .keys()
            .filter(|id| eligible(id, &tp))
            .min_by_key(|id| out[*id].len());
        if let Some(id) = best {
            out.get_mut(id).expect("member").insert(tp.clone());
            taken.insert(tp);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(
        id: &str,
        epoch: i32,
        topics: Option<&[&str]>,
        owned: Option<Vec<TopicPartition>>,
    ) -> HeartbeatRequest {
        HeartbeatRequest {
            member_id: id.into(),
            member_epoch: epoch,
            instance_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            rebalance_timeout_ms: 1000,
            subscribed_topics: topics.map(|t| t.iter().map(|s| s.to_string()).collect()),
            subscribed_regex: None,
            assignor: None,
            owned,
            cluster_topics: None,
        }
    }

    #[test]
    fn two_members_split_without_double_ownership() {
        let parts = |t: &str| (t == "t").then_some(4);
        let cfg = ConsumerGroupConfig::default();
        let mut g = ConsumerGroup::new("g", 0);
        let a = g
            .heartbeat(0, &cfg, hb("a", 0, Some(&["t"]), Some(vec![])), &parts)
            .unwrap();
        assert_eq!(a.assignment.as_ref().unwrap().len(), 4);
        assert_eq!(a.member_epoch, 1);
        let b = g
            .heartbeat(1, &cfg, hb("b", 0, Some(&["t"]), Some(vec![])), &parts)
            .unwrap();
        // a still owns everything: b gets nothing until a revokes.
        assert_eq!(b.assignment, Some(vec![]));
        let a2 = g
            .heartbeat(2, &cfg, hb("a", 1, None, None), &parts)
            .unwrap();
        let kept = a2.assignment.unwrap();
        assert_eq!(kept.len(), 2);
        assert_eq!(a2.member_epoch, 1, "epoch waits for the revocation");
        let a3 = g
            .heartbeat(3, &cfg, hb("a", 1, None, Some(kept.clone())), &parts)
            .unwrap();
        assert_eq!(a3.member_epoch, 2);
        let b2 = g
            .heartbeat(4, &cfg, hb("b", b.member_epoch, None, Some(vec![])), &parts)
            .unwrap();
        let got = b2.assignment.unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|p| !kept.contains(p)));
        assert_eq!(g.state_name(), "Stable");
        // Fencing and leaving.
        assert_eq!(
            g.heartbeat(5, &cfg, hb("b", 99, None, None), &parts),
            Err(GroupError::FencedMemberEpoch)
        );
        g.heartbeat(6, &cfg, hb("b", -1, None, None), &parts)
            .unwrap();
        assert_eq!(g.target["a"].len(), 4);
    }

    #[test]
    fn a_static_member_that_leaves_with_minus_two_returns_to_its_assignment() {
        let parts = |t: &str| (t == "t").then_some(4);
        let cfg = ConsumerGroupConfig::default();
        let mut g = ConsumerGroup::new("g", 0);
        let static_hb = |id: &str, epoch, topics, owned| HeartbeatRequest {
            instance_id: Some("inst-1".into()),
            ..hb(id, epoch, topics, owned)
        };
        g.heartbeat(
            0,
            &cfg,
            static_hb("a", 0, Some(&["t"]), Some(vec![])),
            &parts,
        )
        .unwrap();
        let b = g
            .heartbeat(1, &cfg, hb("b", 0, Some(&["t"]), Some(vec![])), &parts)
            .unwrap();
        // Later heartbeats leave the instance id out: unchanged, as KIP-848 clients send it.
        let kept = g
            .heartbeat(2, &cfg, hb("a", 1, None, None), &parts)
            .unwrap()
            .assignment
            .unwrap();
        g.heartbeat(3, &cfg, hb("a", 1, None, Some(kept.clone())), &parts)
            .unwrap();
        let b_parts = g
            .heartbeat(4, &cfg, hb("b", b.member_epoch, None, Some(vec![])), &parts)
            .unwrap()
            .assignment
            .unwrap();
        assert_eq!(g.state_name(), "Stable");
        let epoch = g.group_epoch;
        let a_epoch = g.members["a"].member_epoch;
        let b_epoch = g.members["b"].member_epoch;

        // Leave with -2, come back under a new member id with the same instance id.
        let left = g
            .heartbeat(5, &cfg, hb("a", -2, None, None), &parts)
            .unwrap();
        assert_eq!(left.member_epoch, -2);
        assert!(!g.tick(6, &cfg, &parts), "kept within its session");
        let back = g
            .heartbeat(
                7,
                &cfg,
                static_hb("a2", 0, Some(&["t"]), Some(vec![])),
                &parts,
            )
            .unwrap();
        assert_eq!(back.member_epoch, a_epoch, "same epoch as before");
        assert_eq!(back.assignment.unwrap(), kept, "same partitions as before");
        assert_eq!(g.group_epoch, epoch, "no rebalance");
        assert!(!g.members.contains_key("a"));
        let b_now = g
            .heartbeat(
                8,
                &cfg,
                hb("b", b.member_epoch, None, Some(b_parts.clone())),
                &parts,
            )
            .unwrap();
        assert_eq!(b_now.member_epoch, b_epoch, "b saw no new epoch");
        assert_eq!(b_now.assignment, None, "and no new assignment");
        assert_eq!(
            g.members["b"].assigned.len(),
            b_parts.len(),
            "b keeps its share"
        );

        // Gone for longer than the session: removed, and b takes everything.
        g.heartbeat(9, &cfg, static_hb("a2", -2, None, None), &parts)
            .unwrap();
        assert!(g.tick(9 + cfg.session_timeout_ms + 1, &cfg, &parts));
        assert!(!g.members.contains_key("a2"));
    }

    #[test]
    fn a_member_that_never_revokes_is_removed_after_its_rebalance_timeout() {
        let parts = |t: &str| (t == "t").then_some(4);
        let cfg = ConsumerGroupConfig::default();
        let mut g = ConsumerGroup::new("g", 0);
        let a = g
            .heartbeat(0, &cfg, hb("a", 0, Some(&["t"]), Some(vec![])), &parts)
            .unwrap();
        let all = a.assignment.unwrap();
        let b = g
            .heartbeat(10, &cfg, hb("b", 0, Some(&["t"]), Some(vec![])), &parts)
            .unwrap();
        assert_eq!(b.assignment, Some(vec![]));
        // `a` is asked to give up two partitions, keeps heartbeating, and keeps them all.
        let mut t = 20;
        g.heartbeat(t, &cfg, hb("a", 1, None, Some(all.clone())), &parts)
            .unwrap();
        while t < 1000 {
            t += 100;
            g.heartbeat(t, &cfg, hb("a", 1, None, Some(all.clone())), &parts)
                .unwrap();
            assert!(
                !g.tick(t, &cfg, &parts),
                "within the 1000 ms rebalance timeout"
            );
        }
        t = 1100;
        g.heartbeat(t, &cfg, hb("a", 1, None, Some(all.clone())), &parts)
            .unwrap();
        assert!(g.tick(t, &cfg, &parts), "past the rebalance timeout");
        assert_eq!(
            g.heartbeat(t, &cfg, hb("a", 1, None, None), &parts),
            Err(GroupError::UnknownMemberId)
        );
        let b2 = g
            .heartbeat(t, &cfg, hb("b", b.member_epoch, None, Some(vec![])), &parts)
            .unwrap();
        assert_eq!(b2.assignment.unwrap().len(), 4, "b gets what a held");
    }

    #[test]
    fn stored_group_replays_and_keeps_serving_its_members() {
        let parts = |t: &str| (t == "t").then_some(4);
        let cfg = ConsumerGroupConfig::default();
        let mut g = ConsumerGroup::new("g", 0);
        let a = g
            .heartbeat(0, &cfg, hb("a", 0, Some(&["t"]), Some(vec![])), &parts)
            .unwrap();
        let topics = crate::records::tests::TestTopics;
        let mut restored = ConsumerGroup::new("g", 100_000);
        for rec in g.durable().records(None) {
            let (k, v) = rec.encode(&topics).unwrap();
            for back in Record::decode(&k, v.as_deref(), &topics).expect("decodes") {
                restored.replay(&back, 100_000);
            }
        }
        let mut expect = g.durable();
        expect.state_since_ms = 100_000;
        assert_eq!(restored.durable(), expect);
        // After a restart the member's session starts afresh and its epoch is still current.
        assert!(!restored.tick(100_000 + cfg.session_timeout_ms, &cfg, &parts));
        let again = restored
            .heartbeat(100_001, &cfg, hb("a", a.member_epoch, None, None), &parts)
            .unwrap();
        assert_eq!(again.member_epoch, a.member_epoch);
        assert_eq!(
            again.assignment.map(|v| v.len()),
            Some(4),
            "full assignment resent once"
        );
    }

    #[test]
    fn a_regex_subscription_gets_the_matching_topics_and_follows_new_ones() {
        let cfg = ConsumerGroupConfig::default();
        let mut g = ConsumerGroup::new("g", 0);
        let parts = |t: &str| Some(if t == "rx-b" { 1 } else { 2 });
        let rx = |id: &str, epoch, regex: Option<&str>, topics: &[&str]| HeartbeatRequest {
            subscribed_regex: regex.map(String::from),
            cluster_topics: Some(topics.iter().map(|t| t.to_string()).collect()),
            ..hb(id, epoch, None, None)
        };
        // As librdkafka sends it: the regex in parentheses, matched against whole names.
        let a = g
            .heartbeat(
                0,
                &cfg,
                rx("a", 0, Some("(^rx-.*)"), &["rx-a", "other", "xrx-a", "rx"]),
                &parts,
            )
            .unwrap();
        assert_eq!(
            a.assignment,
            Some(vec![("rx-a".into(), 0), ("rx-a".into(), 1)])
        );
        assert_eq!(g.members["a"].subscribed_regex.as_deref(), Some("(^rx-.*)"));
        let epoch = g.group_epoch;
        // Nothing new: nothing moves.
        let same = g
            .heartbeat(
                1,
                &cfg,
                rx("a", a.member_epoch, None, &["rx-a", "other"]),
                &parts,
            )
            .unwrap();
        assert_eq!((same.assignment, g.group_epoch), (None, epoch));
        // A matching topic appears.
        let more = g
            .heartbeat(
                2,
                &cfg,
                rx("a", a.member_epoch, None, &["rx-a", "rx-b"]),
                &parts,
            )
            .unwrap();
        assert_eq!(g.group_epoch, epoch + 1);
        assert_eq!(
            more.assignment.unwrap(),
            [("rx-a".into(), 0), ("rx-a".into(), 1), ("rx-b".into(), 0)]
        );
        // A member subscribed by name to one of the topics shares it with the regex member.
        let b = HeartbeatRequest {
            cluster_topics: None,
            ..hb("b", 0, Some(&["rx-b"]), Some(vec![]))
        };
        g.heartbeat(3, &cfg, b, &parts).unwrap();
        assert_eq!(g.target["b"], [("rx-b".to_string(), 0)].into());
        assert_eq!(g.target["a"].len(), 2);
        // Without a topic list the last resolution holds.
        g.heartbeat(4, &cfg, hb("a", more.member_epoch, None, None), &parts)
            .unwrap();
        assert_eq!(g.target["a"].len(), 2);
        assert_eq!(g.resolved_regexes["(^rx-.*)"].len(), 2);
        // An empty regex clears it.
        let cleared = g
            .heartbeat(
                5,
                &cfg,
                rx("a", more.member_epoch, Some(""), &["rx-a"]),
                &parts,
            )
            .unwrap();
        assert_eq!(cleared.assignment, Some(vec![]));
        assert!(g.resolved_regexes.is_empty());
        assert!(!g.uses_regex());
    }

    #[test]
    fn an_invalid_regex_is_refused() {
        let cfg = ConsumerGroupConfig::default();
        let mut g = ConsumerGroup::new("g", 0);
        let parts = |_: &str| Some(1);
        for bad in ["(", "a)|(b", "[z-a]"] {
            let req = HeartbeatRequest {
                subscribed_regex: Some(bad.into()),
                ..hb("a", 0, None, Some(vec![]))
            };
            assert_eq!(
                g.heartbeat(0, &cfg, req, &parts),
                Err(GroupError::InvalidRegularExpression),
                "{bad}"
            );
        }
        assert!(g.members.is_empty());
        assert!(topic_regex("^rx-.*|other").is_ok());
    }

    #[test]
    fn a_replayed_group_resolves_its_regexes_again() {
        let parts = |t: &str| t.starts_with("t").then_some(2);
        let cfg = ConsumerGroupConfig::default();
        let mut g = ConsumerGroup::new("g", 0);
        let req = HeartbeatRequest {
            subscribed_regex: Some("t.*".into()),
            cluster_topics: Some(vec!["t".into(), "u".into()]),
            ..hb("a", 0, None, Some(vec![]))
        };
        g.heartbeat(0, &cfg, req, &parts).unwrap();
        let topics = crate::records::tests::TestTopics;
        let mut restored = ConsumerGroup::new("g", 0);
        for rec in g.durable().records(None) {
            let (k, v) = rec.encode(&topics).unwrap();
            for back in Record::decode(&k, v.as_deref(), &topics).expect("decodes") {
                restored.replay(&back, 0);
            }
        }
        assert_eq!(restored.durable(), g.durable());
        assert_eq!(restored.resolved_regexes["t.*"], ["t".to_string()].into());
        // A member that expires before any heartbeat brought a topic list: the target is
        // computed again, and the regex's topics stay in it.
        restored.members.get_mut("a").unwrap().last_heartbeat_ms = 100_000;
        restored.members.insert(
            "b".into(),
            ConsumerMember {
                member_id: "b".into(),
                subscribed: ["t".to_string()].into(),
                ..Default::default()
            },
        );
        assert!(restored.tick(cfg.session_timeout_ms + 1, &cfg, &parts));
        assert_eq!(restored.target["a"].len(), 2);
    }

    #[test]
    fn range_assignor_gives_contiguous_ranges() {
        let members: BTreeMap<String, BTreeSet<String>> = ["a", "b"]
            .map(|id| (id.to_string(), ["t".to_string()].into()))
            .into();
        let topics: BTreeMap<String, i32> = [("t".to_string(), 5)].into();
        let out = assign_range(&members, &topics);
        assert_eq!(
            out["a"].iter().map(|p| p.1).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(out["b"].iter().map(|p| p.1).collect::<Vec<_>>(), vec![3, 4]);
    }
}
