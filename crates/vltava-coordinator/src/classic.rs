//! The classic consumer group protocol (JoinGroup / SyncGroup / Heartbeat / LeaveGroup) as a
//! state machine. Every operation takes `now_ms` and returns either an immediate reply or
//! "wait", plus [`Effects`]: replies owed to other parked members and whether the group's
//! durable record changed.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::GroupError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// Kafka's names, as ListGroups and DescribeGroups report them.
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
            Self::Dead => "Dead",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocols: Vec<(String, Vec<u8>)>,
    pub assignment: Vec<u8>,
    #[serde(skip)]
    pub last_heartbeat_ms: i64,
    #[serde(skip)]
    pub awaiting_join: bool,
    #[serde(skip)]
    pub awaiting_sync: bool,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Vec<u8> {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// Limits from broker config (`group.*`).
#[derive(Debug, Clone, Copy)]
pub struct GroupConfig {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub initial_rebalance_delay_ms: i64,
    pub max_size: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3000,
            max_size: i32::MAX as usize,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinResult {
    pub error: Option<GroupError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only: `(member id, instance id, metadata)`.
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// KIP-814 (JoinGroup v9+): the leader must not compute an assignment, because the group
    /// stays Stable and keeps the one it has; it gets the members to follow their metadata.
    pub skip_assignment: bool,
}

impl JoinResult {
    pub fn error(e: GroupError, member_id: &str) -> Self {
        Self {
            error: Some(e),
            generation_id: -1,
            member_id: member_id.to_string(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncResult {
    pub error: Option<GroupError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(e: GroupError) -> Self {
        Self {
            error: Some(e),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<T> {
    Now(T),
    /// The member (by id) is parked; its answer comes later through [`Effects`].
    Wait(String),
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Effects {
    pub joins: Vec<(String, JoinResult)>,
    pub syncs: Vec<(String, SyncResult)>,
    /// The group's durable state changed: write a new group record.
    pub persist: bool,
}

impl Effects {
    fn merge(&mut self, other: Effects) {
        self.joins.extend(other.joins);
        self.syncs.extend(other.syncs);
        self.persist |= other.persist;
    }
}

/// What a JoinGroup request carries.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Vec<u8>)>,
    /// v4+: a new member must first learn its id (MEMBER_ID_REQUIRED).
    pub require_known_member_id: bool,
    /// v9+: the reply may tell the leader to skip its assignment (KIP-814).
    pub supports_skip_assignment: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicGroup {
    pub group_id: String,
    pub state: GroupState,
    pub state_since_ms: i64,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with their expiry.
    pub pending: BTreeMap<String, i64>,
    rebalance_deadline_ms: i64,
    /// The join phase of a group that was empty waits `group.initial.rebalance.delay.ms`.
    initial_delay: Option<InitialDelay>,
}

/// Kafka's initial delayed join: the first rebalance of an empty group waits one delay, and
/// another (up to the rebalance timeout in all) each time a member joined during the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InitialDelay {
    step_ms: i64,
    /// What is left of the rebalance timeout for further steps.
    budget_ms: i64,
    joined_during_step: bool,
}

/// The durable part of a group, written to `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSnapshot {
    pub protocol_type: Option<String>,
    pub generation_id: i32,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<Member>,
    pub state_since_ms: i64,
}

impl ClassicGroup {
    pub fn new(group_id: &str, now_ms: i64) -> Self {
        Self {
            group_id: group_id.to_string(),
            state: GroupState::Empty,
            state_since_ms: now_ms,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            rebalance_deadline_ms: 0,
            initial_delay: None,
        }
    }

    pub fn snapshot(&self) -> GroupSnapshot {
        GroupSnapshot {
            protocol_type: self.protocol_type.clone(),
            generation_id: self.generation_id,
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone(),
            members: self.members.values().cloned().collect(),
            state_since_ms: self.state_since_ms,
        }
    }

    /// Rebuilds a group from its record; members get a fresh session from `now_ms`. A record
    /// without a state time (-1, from Kafka before 2.1) counts from now, so that an empty
    /// group's offsets are not expired at once.
    pub fn restore(group_id: &str, s: GroupSnapshot, now_ms: i64) -> Self {
        let since = if s.state_since_ms < 0 {
            now_ms
        } else {
            s.state_since_ms
        };
        let mut g = Self::new(group_id, since);
        g.protocol_type = s.protocol_type;
        g.generation_id = s.generation_id;
        g.protocol_name = s.protocol_name;
        g.leader = s.leader;
        for mut m in s.members {
            m.last_heartbeat_ms = now_ms;
            g.members.insert(m.member_id.clone(), m);
        }
        g.state = if g.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        g
    }

    fn set_state(&mut self, s: GroupState, now_ms: i64) {
        self.state = s;
        self.state_since_ms = now_ms;
    }

    fn member_by_instance(&self, instance: &str) -> Option<&Member> {
        self.members
            .values()
            .find(|m| m.instance_id.as_deref() == Some(instance))
    }

    /// Kafka's static-membership fencing: a known instance id must come with its member id.
    fn check_instance(&self, member_id: &str, instance: Option<&str>) -> Result<(), GroupError> {
        if let Some(inst) = instance {
            if let Some(m) = self.member_by_instance(inst) {
                if m.member_id != member_id {
                    return Err(GroupError::FencedInstanceId);
                }
            }
        }
        Ok(())
    }

    fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Vec<u8>)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        // Some protocol must be supported by every member including the new one.
        protocols.iter().any(|(p, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(q, _)| q == p))
        })
    }

    fn new_member_id(client_id: &str) -> String {
        format!("{client_id}-{}", uuid::Uuid::new_v4())
    }

    pub fn join(
        &mut self,
        now_ms: i64,
        cfg: &GroupConfig,
        req: JoinRequest,
    ) -> (Reply<JoinResult>, Effects) {
        let fail = |e| {
            (
                Reply::Now(JoinResult::error(e, &req.member_id)),
                Effects::default(),
            )
        };
        if self.state == GroupState::Dead {
            return fail(GroupError::CoordinatorNotAvailable);
        }
        if req.session_timeout_ms < cfg.min_session_timeout_ms
            || req.session_timeout_ms > cfg.max_session_timeout_ms
        {
            return fail(GroupError::InvalidSessionTimeout);
        }
        if !self.supports_protocols(&req.protocol_type, &req.protocols) {
            return fail(GroupError::InconsistentGroupProtocol);
        }
        if req.member_id.is_empty() {
            return self.join_new(now_ms, cfg, req);
        }
        if self.pending.remove(&req.member_id).is_some() {
            return self.add_and_rebalance(now_ms, cfg, req.member_id.clone(), req);
        }
        if let Err(e) = self.check_instance(&req.member_id, req.instance_id.as_deref()) {
            return fail(e);
        }
        let Some(m) = self.members.get_mut(&req.member_id) else {
            return fail(GroupError::UnknownMemberId);
        };
        let changed = m.protocols != req.protocols;
        m.protocols = req.protocols.clone();
        m.session_timeout_ms = req.session_timeout_ms;
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        m.last_heartbeat_ms = now_ms;
        let is_leader = self.leader.as_deref() == Some(req.member_id.as_str());
        match self.state {
            GroupState::PreparingRebalance => {
                self.members
                    .get_mut(&req.member_id)
                    .expect("present")
                    .awaiting_join = true;
                let effects = self.try_complete_join(now_ms, false);
                (Reply::Wait(req.member_id.clone()), effects)
            }
            GroupState::CompletingRebalance | GroupState::Stable
                if !changed && (!is_leader || self.state != GroupState::Stable) =>
            {
                (
                    Reply::Now(self.join_result_for(&req.member_id)),
                    Effects::default(),
                )
            }
            _ => {
                self.members
                    .get_mut(&req.member_id)
                    .expect("present")
                    .awaiting_join = true;
                let mut effects = self.prepare_rebalance(now_ms);
                effects.merge(self.try_complete_join(now_ms, false));
                (Reply::Wait(req.member_id.clone()), effects)
            }
        }
    }

    fn join_new(
        &mut self,
        now_ms: i64,
        cfg: &GroupConfig,
        req: JoinRequest,
    ) -> (Reply<JoinResult>, Effects) {
        if let Some(inst) = req.instance_id.clone() {
            if let Some(old) = self.member_by_instance(&inst).cloned() {
                // A static member came back (KIP-345): it takes over its old identity.
                let new_id = Self::new_member_id(&req.client_id);
                let mut m = old.clone();
                m.member_id = new_id.clone();
                m.protocols = req.protocols.clone();
                m.last_heartbeat_ms = now_ms;
                m.session_timeout_ms = req.session_timeout_ms;
                m.rebalance_timeout_ms = req.rebalance_timeout_ms;
                m.client_id = req.client_id.clone();
                m.client_host = req.client_host.clone();
                self.members.remove(&old.member_id);
                self.members.insert(new_id.clone(), m);
                let previous_leader = self.leader.clone().unwrap_or_default();
                if previous_leader == old.member_id {
                    self.leader = Some(new_id.clone());
                }
                let mut effects = Effects {
                    persist: true,
                    ..Default::default()
                };
                // In a Stable group nothing moves unless the group's protocol would change:
                // the member gets its old assignment in SyncGroup, as Kafka does, even when it
                // leads. New metadata alone does not rebalance: librdkafka's carries the
                // partitions the member owned, which a restart empties.
                if self.state == GroupState::Stable && self.select_protocol() == self.protocol_name
                {
                    return (
                        Reply::Now(self.static_rejoin_result(
                            &new_id,
                            previous_leader,
                            req.supports_skip_assignment,
                        )),
                        effects,
                    );
                }
                if old.awaiting_join {
                    // The old incarnation's parked JoinGroup is answered: it is fenced.
                    effects.joins.push((
                        old.member_id.clone(),
                        JoinResult::error(GroupError::FencedInstanceId, &old.member_id),
                    ));
                }
                if self.state == GroupState::CompletingRebalance && old.awaiting_sync {
                    effects.syncs.push((
                        old.member_id.clone(),
                        SyncResult::error(GroupError::FencedInstanceId),
                    ));
                }
                self.members
                    .get_mut(&new_id)
                    .expect("present")
                    .awaiting_join = true;
                if self.state != GroupState::PreparingRebalance {
                    effects.merge(self.prepare_rebalance(now_ms));
                }
                effects.merge(self.try_complete_join(now_ms, false));
                return (Reply::Wait(new_id), effects);
            }
        }
        if self.members.len() + self.pending.len() >= cfg.max_size {
            return (
                Reply::Now(JoinResult::error(GroupError::GroupMaxSizeReached, "")),
                Effects::default(),
            );
        }
        let id = Self::new_member_id(&req.client_id);
        if req.require_known_member_id && req.instance_id.is_none() {
            self.pending
                .insert(id.clone(), now_ms + i64::from(req.session_timeout_ms));
            return (
                Reply::Now(JoinResult::error(GroupError::MemberIdRequired, &id)),
                Effects::default(),
            );
        }
        self.add_and_rebalance(now_ms, cfg, id, req)
    }

    fn add_and_rebalance(
        &mut self,
        now_ms: i64,
        cfg: &GroupConfig,
        id: String,
        req: JoinRequest,
    ) -> (Reply<JoinResult>, Effects) {
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        let waiting = id.clone();
        self.members.insert(
            id.clone(),
            Member {
                member_id: id,
                instance_id: req.instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                protocols: req.protocols,
                assignment: Vec::new(),
                last_heartbeat_ms: now_ms,
                awaiting_join: true,
                awaiting_sync: false,
            },
        );
        let mut effects = Effects::default();
        if self.state != GroupState::PreparingRebalance {
            let from_empty = self.state == GroupState::Empty;
            effects.merge(self.prepare_rebalance(now_ms));
            if from_empty && cfg.initial_rebalance_delay_ms > 0 {
                // group.initial.rebalance.delay.ms: let a starting fleet join one generation.
                let timeout = self.max_rebalance_timeout();
                let step = cfg.initial_rebalance_delay_ms.min(timeout);
                self.rebalance_deadline_ms = now_ms + step;
                self.initial_delay = Some(InitialDelay {
                    step_ms: cfg.initial_rebalance_delay_ms,
                    budget_ms: timeout - step,
                    joined_during_step: false,
                });
                return (Reply::Wait(waiting), effects);
            }
        } else if let Some(d) = &mut self.initial_delay {
            d.joined_during_step = true;
        }
        effects.merge(self.try_complete_join(now_ms, false));
        (Reply::Wait(waiting), effects)
    }

    fn max_rebalance_timeout(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    fn prepare_rebalance(&mut self, now_ms: i64) -> Effects {
        let mut effects = Effects::default();
        if self.state == GroupState::CompletingRebalance {
            // Members waiting for assignments must rejoin instead.
            for m in self.members.values_mut() {
                if m.awaiting_sync {
                    m.awaiting_sync = false;
                    effects.syncs.push((
                        m.member_id.clone(),
                        SyncResult::error(GroupError::RebalanceInProgress),
                    ));
                }
            }
        }
        self.set_state(GroupState::PreparingRebalance, now_ms);
        self.rebalance_deadline_ms = now_ms + self.max_rebalance_timeout();
        effects
    }

    /// Ends the join phase once every member rejoined (or, `at_deadline`, with those who did).
    fn try_complete_join(&mut self, now_ms: i64, at_deadline: bool) -> Effects {
        let mut effects = Effects::default();
        if self.state != GroupState::PreparingRebalance {
            return effects;
        }
        let all_joined = self.members.values().all(|m| m.awaiting_join) && self.pending.is_empty();
        let delaying = self.initial_delay.is_some() && now_ms < self.rebalance_deadline_ms;
        if !(at_deadline || all_joined && !delaying) {
            return effects;
        }
        self.initial_delay = None;
        if at_deadline {
            let gone: Vec<String> = self
                .members
                .values()
                .filter(|m| !m.awaiting_join)
                .map(|m| m.member_id.clone())
                .collect();
            for id in gone {
                self.members.remove(&id);
            }
            self.pending.clear();
        }
        self.generation_id += 1;
        effects.persist = true;
        if self.members.is_empty() {
            self.protocol_name = None;
            self.leader = None;
            self.set_state(GroupState::Empty, now_ms);
            return effects;
        }
        self.protocol_name = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.set_state(GroupState::CompletingRebalance, now_ms);
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.join_result_for(&id);
            let m = self.members.get_mut(&id).expect("present");
            m.awaiting_join = false;
            m.awaiting_sync = false;
            m.last_heartbeat_ms = now_ms;
            effects.joins.push((id, result));
        }
        effects
    }

    /// The protocol every member supports that gets the most votes (members vote for their
    /// first supported choice, as Kafka does).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(p, _)| p)
            .filter(|p| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(q, _)| q == *p))
            })
            .collect();
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((p, _)) = m.protocols.iter().find(|(p, _)| candidates.contains(&p)) {
                *votes.entry(p).or_default() += 1;
            }
        }
        candidates
            .iter()
            .max_by_key(|p| {
                (
                    votes.get(*p).copied().unwrap_or(0),
                    std::cmp::Reverse(first.protocols.iter().position(|(q, _)| q == **p)),
                )
            })
            .map(|p| (*p).clone())
    }

    fn join_result_for(&self, member_id: &str) -> JoinResult {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let is_leader = self.leader.as_deref() == Some(member_id);
        JoinResult {
            error: None,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader {
                self.members
                    .values()
                    .map(|m| {
                        (
                            m.member_id.clone(),
                            m.instance_id.clone(),
                            Bytes::from(m.metadata_for(&protocol)),
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            },
            skip_assignment: false,
        }
    }

    /// The JoinGroup answer of a static member that rejoined a Stable group. From v9 a
    /// leader learns it leads but must skip the assignment (KIP-814). Before v9 the member is
    /// told the leader from before it rejoined, so that a restarted leader sees itself as a
    /// follower and computes no assignment, which the Stable group would ignore.
    fn static_rejoin_result(
        &self,
        member_id: &str,
        previous_leader: String,
        supports_skip_assignment: bool,
    ) -> JoinResult {
        let mut r = self.join_result_for(member_id);
        if supports_skip_assignment {
            r.skip_assignment = self.leader.as_deref() == Some(member_id);
        } else {
            r.leader = previous_leader;
            r.members.clear();
        }
        r
    }

    fn check_member(
        &self,
        member_id: &str,
        generation_id: i32,
        instance: Option<&str>,
    ) -> Result<(), GroupError> {
        self.check_instance(member_id, instance)?;
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        if generation_id != self.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        Ok(())
    }

    pub fn sync(
        &mut self,
        now_ms: i64,
        member_id: &str,
        generation_id: i32,
        instance: Option<&str>,
        assignments: Vec<(String, Vec<u8>)>,
    ) -> (Reply<SyncResult>, Effects) {
        if let Err(e) = self.check_member(member_id, generation_id, instance) {
            return (Reply::Now(SyncResult::error(e)), Effects::default());
        }
        self.members
            .get_mut(member_id)
            .expect("checked")
            .last_heartbeat_ms = now_ms;
        match self.state {
            GroupState::PreparingRebalance => (
                Reply::Now(SyncResult::error(GroupError::RebalanceInProgress)),
                Effects::default(),
            ),
            GroupState::CompletingRebalance => {
                self.members
                    .get_mut(member_id)
                    .expect("checked")
                    .awaiting_sync = true;
                if self.leader.as_deref() != Some(member_id) {
                    return (Reply::Wait(member_id.to_string()), Effects::default());
                }
                let given: BTreeMap<String, Vec<u8>> = assignments.into_iter().collect();
                let mut effects = Effects {
                    persist: true,
                    ..Default::default()
                };
                for m in self.members.values_mut() {
                    m.assignment = given.get(&m.member_id).cloned().unwrap_or_default();
                }
                self.set_state(GroupState::Stable, now_ms);
                for m in self.members.values_mut() {
                    if m.awaiting_sync {
                        m.awaiting_sync = false;
                        effects.syncs.push((
                            m.member_id.clone(),
                            self_sync(&self.protocol_type, &self.protocol_name, &m.assignment),
                        ));
                    }
                }
                (Reply::Wait(member_id.to_string()), effects)
            }
            GroupState::Stable => {
                let m = &self.members[member_id];
                (
                    Reply::Now(self_sync(
                        &self.protocol_type,
                        &self.protocol_name,
                        &m.assignment,
                    )),
                    Effects::default(),
                )
            }
            GroupState::Empty | GroupState::Dead => (
                Reply::Now(SyncResult::error(GroupError::UnknownMemberId)),
                Effects::default(),
            ),
        }
    }

    pub fn heartbeat(
        &mut self,
        now_ms: i64,
        member_id: &str,
        generation_id: i32,
        instance: Option<&str>,
    ) -> Result<(), GroupError> {
        if matches!(self.state, GroupState::Empty | GroupState::Dead) {
            return Err(GroupError::UnknownMemberId);
        }
        self.check_member(member_id, generation_id, instance)?;
        self.members
            .get_mut(member_id)
            .expect("checked")
            .last_heartbeat_ms = now_ms;
        if self.state == GroupState::PreparingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        Ok(())
    }

    /// Removes members; returns a per-member result in request order.
    pub fn leave(
        &mut self,
        now_ms: i64,
        leaving: &[(String, Option<String>)],
    ) -> (Vec<Result<(), GroupError>>, Effects) {
        let mut results = Vec::new();
        let mut effects = Effects::default();
        let mut removed = false;
        for (member_id, instance) in leaving {
            let id = match (member_id.is_empty(), instance) {
                (true, Some(inst)) => match self.member_by_instance(inst) {
                    Some(m) => m.member_id.clone(),
                    None => {
                        results.push(Err(GroupError::UnknownMemberId));
                        continue;
                    }
                },
                _ => member_id.clone(),
            };
            if let Err(e) = self.check_instance(&id, instance.as_deref()) {
                results.push(Err(e));
                continue;
            }
            if self.pending.remove(&id).is_some() {
                results.push(Ok(()));
                continue;
            }
            match self.members.remove(&id) {
                Some(m) => {
                    if m.awaiting_join {
                        effects.joins.push((
                            id.clone(),
                            JoinResult::error(GroupError::UnknownMemberId, &id),
                        ));
                    }
                    removed = true;
                    results.push(Ok(()));
                }
                None => results.push(Err(GroupError::UnknownMemberId)),
            }
        }
        if removed {
            effects.merge(self.after_member_loss(now_ms));
        }
        (results, effects)
    }

    fn after_member_loss(&mut self, now_ms: i64) -> Effects {
        let mut effects = Effects {
            persist: true,
            ..Default::default()
        };
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if self.members.is_empty() {
                    effects.merge(self.prepare_rebalance(now_ms));
                    effects.merge(self.try_complete_join(now_ms, true));
                } else {
                    effects.merge(self.prepare_rebalance(now_ms));
                }
            }
            GroupState::PreparingRebalance => {
                effects.merge(self.try_complete_join(now_ms, self.members.is_empty()))
            }
            _ => {}
        }
        effects
    }

    /// Expires silent members and pending ids, and ends overdue join phases.
    pub fn tick(&mut self, now_ms: i64) -> Effects {
        let mut effects = Effects::default();
        self.pending.retain(|_, expiry| *expiry > now_ms);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                !m.awaiting_join && now_ms - m.last_heartbeat_ms > i64::from(m.session_timeout_ms)
            })
            .map(|m| m.member_id.clone())
            .collect();
        if !expired.is_empty() {
            for id in &expired {
                if let Some(m) = self.members.remove(id) {
                    if m.awaiting_sync {
                        effects
                            .syncs
                            .push((id.clone(), SyncResult::error(GroupError::UnknownMemberId)));
                    }
                }
            }
            effects.merge(self.after_member_loss(now_ms));
        }
        if self.state == GroupState::PreparingRebalance {
            let extend = self
                .initial_delay
                .as_mut()
                .filter(|d| d.joined_during_step && d.budget_ms > 0);
            if let (true, Some(d)) = (now_ms >= self.rebalance_deadline_ms, extend) {
                let step = d.step_ms.min(d.budget_ms);
                d.budget_ms -= step;
                d.joined_during_step = false;
                self.rebalance_deadline_ms = now_ms + step;
            } else if now_ms >= self.rebalance_deadline_ms {
                effects.merge(self.try_complete_join(now_ms, true));
            } else {
                effects.merge(self.try_complete_join(now_ms, false));
            }
        }
        effects
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }
}

fn self_sync(
    protocol_type: &Option<String>,
    protocol_name: &Option<String>,
    assignment: &[u8],
) -> SyncResult {
    SyncResult {
        error: None,
        protocol_type: protocol_type.clone(),
        protocol_name: protocol_name.clone(),
        assignment: Bytes::copy_from_slice(assignment),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: GroupConfig = GroupConfig {
        min_session_timeout_ms: 10,
        max_session_timeout_ms: 100_000,
        initial_rebalance_delay_ms: 0,
        max_size: 3,
    };

    fn req(id: &str, instance: Option<&str>) -> JoinRequest {
        JoinRequest {
            member_id: id.into(),
            instance_id: instance.map(String::from),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 1000,
            rebalance_timeout_ms: 5000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), vec![1]), ("roundrobin".into(), vec![2])],
            require_known_member_id: true,
            supports_skip_assignment: false,
        }
    }

    /// Joins a new member through MEMBER_ID_REQUIRED; returns its id.
    fn join_new(g: &mut ClassicGroup, now: i64, instance: Option<&str>) -> (String, Effects) {
        let id = match g.join(now, &CFG, req("", instance)) {
            (Reply::Now(r), _) if r.error == Some(GroupError::MemberIdRequired) => r.member_id,
            (Reply::Wait(id), e) => return (id, e),
            other => panic!("{other:?}"),
        };
        match g.join(now, &CFG, req(&id, instance)) {
            (Reply::Wait(w), e) => {
                assert_eq!(w, id);
                (id, e)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_initial_delay_grows_while_members_keep_joining() {
        let cfg = GroupConfig {
            initial_rebalance_delay_ms: 100,
            ..CFG
        };
        let join = |g: &mut ClassicGroup, now: i64| {
            let mut r = req("", None);
            r.require_known_member_id = false;
            r.rebalance_timeout_ms = 250;
            g.join(now, &cfg, r)
        };
        let mut g = ClassicGroup::new("g", 0);
        join(&mut g, 0);
        join(&mut g, 50);
        assert!(
            g.tick(100).joins.is_empty(),
            "b joined during the first delay"
        );
        join(&mut g, 150);
        assert!(g.tick(200).joins.is_empty(), "c joined during the second");
        // The third step is cut to what is left of the 250 ms rebalance timeout.
        assert!(g.tick(249).joins.is_empty());
        let e = g.tick(250);
        assert_eq!(e.joins.len(), 3, "all three in one generation");
        assert_eq!(g.generation_id, 1);

        // Nobody else joins: one delay and done.
        let mut g = ClassicGroup::new("h", 0);
        join(&mut g, 0);
        assert_eq!(g.tick(100).joins.len(), 1);
    }

    #[test]
    fn two_members_join_sync_and_leave() {
        let mut g = ClassicGroup::new("g", 0);
        let (a, e) = join_new(&mut g, 0, None);
        assert_eq!(e.joins.len(), 1, "a lone member completes the join at once");
        assert_eq!(g.state, GroupState::CompletingRebalance);
        assert_eq!(g.generation_id, 1);
        assert_eq!(g.protocol_name.as_deref(), Some("range"));
        let (r, e) = g.sync(1, &a, 1, None, vec![(a.clone(), vec![9])]);
        assert_eq!(r, Reply::Wait(a.clone()));
        assert_eq!(e.syncs[0].1.assignment.as_ref(), &[9]);
        assert_eq!(g.state, GroupState::Stable);

        // b joins: the group rebalances; a must rejoin; then both get generation 2.
        let (b, e) = join_new(&mut g, 2, None);
        assert!(e.joins.is_empty());
        assert_eq!(
            g.heartbeat(3, &a, 1, None),
            Err(GroupError::RebalanceInProgress)
        );
        let (r, e) = g.join(4, &CFG, req(&a, None));
        assert_eq!(r, Reply::Wait(a.clone()));
        assert_eq!(e.joins.len(), 2);
        let leader = e.joins.iter().find(|(id, _)| *id == a).unwrap();
        assert_eq!(leader.1.members.len(), 2, "the leader sees every member");
        assert_eq!(
            g.heartbeat(5, &b, 1, None),
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(
            g.heartbeat(5, "nobody", 2, None),
            Err(GroupError::UnknownMemberId)
        );
        let (r, _) = g.sync(5, &b, 2, None, vec![]);
        assert_eq!(r, Reply::Wait(b.clone()));
        let (_, e) = g.sync(
            6,
            &a,
            2,
            None,
            vec![(a.clone(), vec![1]), (b.clone(), vec![2])],
        );
        assert_eq!(e.syncs.len(), 2);

        // b goes silent: its session expires and a is asked to rejoin.
        assert!(g.heartbeat(700, &a, 2, None).is_ok());
        let e = g.tick(1100);
        assert!(e.persist);
        assert!(!g.members.contains_key(&b));
        assert_eq!(g.state, GroupState::PreparingRebalance);
        let (r, e) = g.join(1101, &CFG, req(&a, None));
        assert_eq!(r, Reply::Wait(a.clone()));
        assert_eq!(e.joins.len(), 1);
        let (res, e) = g.leave(1102, &[(a.clone(), None)]);
        assert_eq!(res, vec![Ok(())]);
        assert!(e.persist);
        assert_eq!(g.state, GroupState::Empty);
    }

    #[test]
    fn static_member_rejoins_without_rebalance_and_fences_old_id() {
        let mut g = ClassicGroup::new("g", 0);
        let (a, _) = join_new(&mut g, 0, None);
        let (s, _) = join_new(&mut g, 1, Some("inst-1"));
        let (_, e) = g.join(2, &CFG, req(&a, None));
        assert_eq!(e.joins.len(), 2);
        g.sync(3, &s, 2, Some("inst-1"), vec![]);
        g.sync(
            3,
            &a,
            2,
            None,
            vec![(a.clone(), vec![1]), (s.clone(), vec![7])],
        );
        assert_eq!(g.state, GroupState::Stable);
        // Restart: same instance id, no member id. Same generation, same assignment.
        let (r, _) = g.join(4, &CFG, req("", Some("inst-1")));
        let Reply::Now(r) = r else {
            panic!("static rejoin must not wait")
        };
        assert_eq!((r.error, r.generation_id), (None, 2));
        assert_eq!(g.state, GroupState::Stable);
        let (sr, _) = g.sync(5, &r.member_id, 2, Some("inst-1"), vec![]);
        assert_eq!(
            sr,
            Reply::Now(SyncResult {
                error: None,
                protocol_type: Some("consumer".into()),
                protocol_name: Some("range".into()),
                assignment: Bytes::from_static(&[7])
            })
        );
        // The old incarnation is fenced.
        assert_eq!(
            g.heartbeat(6, &s, 2, Some("inst-1")),
            Err(GroupError::FencedInstanceId)
        );
    }

    /// Two static members, `inst-1` the leader, in a Stable group at generation 2 with
    /// assignments `[1]` and `[2]`; returns their member ids.
    fn stable_static_pair(g: &mut ClassicGroup) -> (String, String) {
        let (s1, e) = join_new(g, 0, Some("inst-1"));
        assert_eq!(e.joins.len(), 1);
        g.sync(1, &s1, 1, Some("inst-1"), vec![(s1.clone(), vec![1])]);
        let (s2, _) = join_new(g, 2, Some("inst-2"));
        let (_, e) = g.join(3, &CFG, req(&s1, Some("inst-1")));
        assert_eq!(e.joins.len(), 2);
        assert_eq!(g.leader.as_deref(), Some(s1.as_str()));
        g.sync(4, &s2, 2, Some("inst-2"), vec![]);
        g.sync(
            4,
            &s1,
            2,
            Some("inst-1"),
            vec![(s1.clone(), vec![1]), (s2.clone(), vec![2])],
        );
        assert_eq!(g.state, GroupState::Stable);
        (s1, s2)
    }

    #[test]
    fn a_static_leader_rejoins_without_rebalance() {
        let mut g = ClassicGroup::new("g", 0);
        let (s1, s2) = stable_static_pair(&mut g);
        // The leader restarts. Its subscription metadata may differ (librdkafka's carries
        // the partitions it owned); only a change of the group's protocol would matter.
        let mut again = req("", Some("inst-1"));
        again.protocols = vec![("range".into(), vec![5]), ("roundrobin".into(), vec![6])];
        let (r, _) = g.join(5, &CFG, again);
        let Reply::Now(r) = r else {
            panic!("a static leader's rejoin must not wait for a rebalance")
        };
        assert_eq!((r.error, r.generation_id), (None, 2));
        assert_ne!(r.member_id, s1);
        // Before JoinGroup v9 the old leader id comes back, so that the member does not see
        // itself as the leader and computes no assignment the Stable group would ignore.
        assert_eq!(r.leader, s1);
        assert!(r.members.is_empty());
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(g.leader.as_deref(), Some(r.member_id.as_str()));
        assert_eq!(
            g.heartbeat(6, &s2, 2, Some("inst-2")),
            Ok(()),
            "the other member is not asked to rejoin"
        );
        let (sr, _) = g.sync(7, &r.member_id, 2, Some("inst-1"), vec![]);
        assert!(
            matches!(sr, Reply::Now(SyncResult { ref assignment, .. }) if assignment.as_ref() == [1])
        );
        assert_eq!(
            g.heartbeat(8, &s1, 2, Some("inst-1")),
            Err(GroupError::FencedInstanceId)
        );

        // A rejoin that changes the group's protocol does rebalance.
        let mut other = req("", Some("inst-2"));
        other.protocols = vec![("roundrobin".into(), vec![])];
        let (r, _) = g.join(9, &CFG, other);
        assert!(matches!(r, Reply::Wait(_)));
        assert_eq!(g.state, GroupState::PreparingRebalance);
    }

    #[test]
    fn a_static_leader_rejoining_with_join_group_v9_skips_the_assignment() {
        let mut g = ClassicGroup::new("g", 0);
        let (_, s2) = stable_static_pair(&mut g);
        let mut again = req("", Some("inst-1"));
        again.supports_skip_assignment = true;
        let (r, _) = g.join(5, &CFG, again);
        let Reply::Now(r) = r else {
            panic!("a static leader's rejoin must not wait for a rebalance")
        };
        assert_eq!(r.leader, r.member_id, "it is told that it leads");
        assert!(r.skip_assignment);
        assert_eq!(r.members.len(), 2, "with the members to follow");
        assert_eq!(g.state, GroupState::Stable);
        // A follower rejoining at v9 is a follower as before.
        let mut follower = req("", Some("inst-2"));
        follower.supports_skip_assignment = true;
        let (Reply::Now(f), _) = g.join(6, &CFG, follower) else {
            panic!("a static follower's rejoin must not wait either")
        };
        assert_ne!(f.member_id, s2);
        assert_eq!((f.leader, f.skip_assignment), (r.member_id, false));
        assert!(f.members.is_empty());
    }

    #[test]
    fn a_static_member_replaced_while_rejoining_is_fenced() {
        let mut g = ClassicGroup::new("g", 0);
        let (s1, s2) = stable_static_pair(&mut g);
        // A third member starts a rebalance; s1 rejoins and waits for s2.
        join_new(&mut g, 5, None);
        let (r, _) = g.join(6, &CFG, req(&s1, Some("inst-1")));
        assert_eq!(r, Reply::Wait(s1.clone()));
        // s1 restarts before the rebalance completes: its parked join is fenced.
        let (r, e) = g.join(7, &CFG, req("", Some("inst-1")));
        let Reply::Wait(new_s1) = r else {
            panic!("a rebalance is under way")
        };
        assert!(e.joins.contains(&(
            s1.clone(),
            JoinResult::error(GroupError::FencedInstanceId, &s1)
        )));
        let (_, e) = g.join(8, &CFG, req(&s2, Some("inst-2")));
        assert_eq!(e.joins.len(), 3);
        assert!(e.joins.iter().any(|(id, _)| *id == new_s1));
    }

    #[test]
    fn limits_and_protocol_checks() {
        let mut g = ClassicGroup::new("g", 0);
        let mut bad = req("", None);
        bad.session_timeout_ms = 1;
        assert!(matches!(
            g.join(0, &CFG, bad).0,
            Reply::Now(JoinResult {
                error: Some(GroupError::InvalidSessionTimeout),
                ..
            })
        ));
        join_new(&mut g, 0, None);
        let mut other = req("", None);
        other.protocols = vec![("cooperative-sticky".into(), vec![])];
        assert!(matches!(
            g.join(0, &CFG, other).0,
            Reply::Now(JoinResult {
                error: Some(GroupError::InconsistentGroupProtocol),
                ..
            })
        ));
        join_new(&mut g, 0, None);
        join_new(&mut g, 0, None);
        assert!(matches!(
            g.join(0, &CFG, req("", None)).0,
            Reply::Now(JoinResult {
                error: Some(GroupError::GroupMaxSizeReached),
                ..
            })
        ));
    }

    #[test]
    fn snapshot_restores() {
        let mut g = ClassicGroup::new("g", 0);
        let (a, _) = join_new(&mut g, 0, None);
        g.sync(1, &a, 1, None, vec![(a.clone(), vec![3])]);
        let back = ClassicGroup::restore("g", g.snapshot(), 50);
        assert_eq!(back.state, GroupState::Stable);
        assert_eq!(back.generation_id, 1);
        assert_eq!(back.members[&a].assignment, vec![3]);
    }
}
