//! Group APIs: FindCoordinator, the classic protocol, offsets, group admin, and KIP-848.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use vltava_coordinator::classic::{JoinRequest, JoinResult, SyncResult};
use vltava_coordinator::consumer::HeartbeatRequest as CgRequest;
use vltava_coordinator::state::{CommitEntry, Group};
use vltava_coordinator::GroupError;
use vltava_protocol::messages::*;
use vltava_protocol::ErrorCode;
use vltava_protocol::StrBytes;
use vltava_types::{LeaderEpoch, Offset};

use super::{sb, tn};
use crate::broker::Broker;
use crate::context::{AclOperation, RequestContext, Resource};
use crate::group_coordinator::Parked;

/// Whether the request's principal may perform `op` on `group`.
fn may(broker: &Broker, ctx: &RequestContext, op: AclOperation, group: &str) -> bool {
    broker.authorize(ctx, op, Resource::Group(group))
}

pub fn error_code(e: GroupError) -> ErrorCode {
    match e {
        GroupError::UnknownMemberId => ErrorCode::UnknownMemberId,
        GroupError::IllegalGeneration => ErrorCode::IllegalGeneration,
        GroupError::RebalanceInProgress => ErrorCode::RebalanceInProgress,
        GroupError::FencedInstanceId => ErrorCode::FencedInstanceId,
        GroupError::MemberIdRequired => ErrorCode::MemberIdRequired,
        GroupError::InconsistentGroupProtocol | GroupError::GroupIdTypeMismatch => {
            ErrorCode::InconsistentGroupProtocol
        }
        GroupError::InvalidSessionTimeout => ErrorCode::InvalidSessionTimeout,
        GroupError::GroupMaxSizeReached => ErrorCode::GroupMaxSizeReached,
        GroupError::CoordinatorNotAvailable => ErrorCode::CoordinatorNotAvailable,
        GroupError::NotCoordinator => ErrorCode::NotCoordinator,
        GroupError::CoordinatorLoadInProgress => ErrorCode::CoordinatorLoadInProgress,
        GroupError::NonEmptyGroup => ErrorCode::NonEmptyGroup,
        GroupError::GroupIdNotFound => ErrorCode::GroupIdNotFound,
        GroupError::FencedMemberEpoch => ErrorCode::FencedMemberEpoch,
        GroupError::UnknownMemberEpoch => ErrorCode::StaleMemberEpoch,
        GroupError::UnsupportedAssignor => ErrorCode::UnsupportedAssignor,
        GroupError::InvalidRequest => ErrorCode::InvalidRequest,
        GroupError::OffsetMetadataTooLarge => ErrorCode::OffsetMetadataTooLarge,
        GroupError::GroupSubscribedToTopic => ErrorCode::GroupSubscribedToTopic,
        GroupError::InvalidRegularExpression => ErrorCode::InvalidRegularExpression,
    }
}

fn code_of(e: Option<GroupError>) -> i16 {
    e.map_or(0, |e| error_code(e).code())
}

pub fn find_coordinator(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let version = ctx.api_version;
    let answer = |key_type: i8, key: &str| -> Option<(ErrorCode, &'static str)> {
        match key_type {
            0 => None,
            1 => super::txn::coordinator_error(broker, ctx, key).map(|code| {
                (
                    code,
                    "the transactional id cannot be coordinated for this client",
                )
            }),
            _ => Some((ErrorCode::InvalidRequest, "unknown coordinator key type")),
        }
    };
    let image = broker.controller.image();
    // The coordinator is the leader of the key's internal-topic partition.
    let locate =
        |key_type: i8, key: &str| -> Result<(BrokerId, StrBytes, i32), (ErrorCode, &'static str)> {
            if let Some(e) = answer(key_type, key) {
                return Err(e);
            }
            let (topic, partition) = if key_type == 1 {
                (
                    crate::txn_coordinator::TXN_TOPIC,
                    broker.txns.partition_for(key),
                )
            } else {
                (
                    crate::group_coordinator::OFFSETS_TOPIC,
                    broker.groups.partition_for(key),
                )
            };
            let unavailable = (
                ErrorCode::CoordinatorNotAvailable,
                "the coordinator's partition has no leader yet",
            );
            let leader = image
                .topic(topic)
                .and_then(|t| t.partitions.get(&partition))
                .map(|p| p.leader)
                .ok_or(unavailable)?;
            if leader == broker.config.node_id {
                let (host, port) = broker.advertised_for(ctx.listener_name());
                return Ok((BrokerId(leader.get()), sb(host), i32::from(port)));
            }
            image
                .brokers
                .get(&leader)
                .filter(|b| !b.fenced)
                .and_then(|b| b.endpoint(ctx.listener_name()))
                .map(|e| (BrokerId(leader.get()), sb(&e.host), i32::from(e.port)))
                .ok_or(unavailable)
        };
    let mut resp = FindCoordinatorResponse::default();
    if version < 4 {
        match locate(req.key_type, &req.key) {
            Err((code, msg)) => {
                resp.error_code = code.code();
                if version >= 1 {
                    resp.error_message = Some(sb(msg));
                }
                resp.node_id = BrokerId(-1);
                resp.port = -1;
            }
            Ok((node, host, port)) => {
                resp.node_id = node;
                resp.host = host;
                resp.port = port;
            }
        }
        return resp;
    }
    resp.coordinators = req
        .coordinator_keys
        .iter()
        .map(|key| {
            let mut c = find_coordinator_response::Coordinator::default();
            c.key = key.clone();
            match locate(req.key_type, key) {
                Err((code, msg)) => {
                    c.error_code = code.code();
                    c.node_id = BrokerId(-1);
                    c.port = -1;
                    c.error_message = Some(sb(msg));
                }
                Ok((node, host, port)) => {
                    c.node_id = node;
                    c.host = host;
                    c.port = port;
                }
            }
            c
        })
        .collect();
    resp
}

fn invalid_group(group: &str) -> bool {
    group.is_empty()
}

async fn settle<T>(parked: Parked<T>, timeout_ms: u64, on_timeout: T) -> T {
    match parked {
        Parked::Now(r) => r,
        Parked::Later(rx) => {
            match tokio::time::timeout(Duration::from_millis(timeout_ms), rx).await {
                Ok(Ok(r)) => r,
                _ => on_timeout,
            }
        }
    }
}

/// Who sent a request, as group descriptions show it: Kafka's `client.id` and `/host`.
pub struct ClientInfo {
    pub client_id: String,
    pub host: String,
}

impl From<&RequestContext> for ClientInfo {
    fn from(ctx: &RequestContext) -> Self {
        Self {
            client_id: ctx.client_id().to_string(),
            host: format!("/{}", ctx.client_address()),
        }
    }
}

pub async fn join_group(
    broker: Arc<Broker>,
    ctx: RequestContext,
    req: JoinGroupRequest,
) -> JoinGroupResponse {
    let version = ctx.api_version;
    let client = ClientInfo::from(&ctx);
    let group = req.group_id.0.to_string();
    let mut resp = JoinGroupResponse::default();
    if !may(&broker, &ctx, AclOperation::Read, &group) {
        resp.error_code = ErrorCode::GroupAuthorizationFailed.code();
        return resp;
    }
    if invalid_group(&group) {
        resp.error_code = ErrorCode::InvalidGroupId.code();
        return resp;
    }
    let rebalance_timeout = if version >= 1 {
        req.rebalance_timeout_ms
    } else {
        req.session_timeout_ms
    };
    let jr = JoinRequest {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: client.client_id,
        client_host: client.host,
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: rebalance_timeout,
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.to_vec()))
            .collect(),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    };
    let member = jr.member_id.clone();
    let parked = broker.groups.join(&group, jr).await;
    let wait = rebalance_timeout.max(0) as u64 + 5_000;
    let r: JoinResult = settle(
        parked,
        wait,
        JoinResult::error(GroupError::RebalanceInProgress, &member),
    )
    .await;
    resp.error_code = code_of(r.error);
    resp.generation_id = r.generation_id;
    resp.protocol_type = if version >= 7 {
        r.protocol_type.map(sb)
    } else {
        None
    };
    resp.protocol_name = match (version >= 7, r.protocol_name) {
        (true, p) => p.map(sb),
        (false, p) => Some(sb(p.unwrap_or_default())),
    };
    resp.leader = sb(r.leader);
    resp.skip_assignment = version >= 9 && r.skip_assignment;
    resp.member_id = sb(r.member_id);
    resp.members = r
        .members
        .into_iter()
        .map(|(id, inst, meta)| {
            let mut m = join_group_response::JoinGroupResponseMember::default();
            m.member_id = sb(id);
            m.group_instance_id = if version >= 5 { inst.map(sb) } else { None };
            m.metadata = meta;
            m
        })
        .collect();
    resp
}

pub async fn sync_group(
    broker: Arc<Broker>,
    ctx: RequestContext,
    req: SyncGroupRequest,
) -> SyncGroupResponse {
    let version = ctx.api_version;
    let group = req.group_id.0.to_string();
    if !may(&broker, &ctx, AclOperation::Read, &group) {
        return SyncGroupResponse::default()
            .with_error_code(ErrorCode::GroupAuthorizationFailed.code());
    }
    let assignments = req
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.to_vec()))
        .collect();
    let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
    let parked = broker
        .groups
        .sync(
            &group,
            &req.member_id.to_string(),
            req.generation_id,
            instance.as_deref(),
            assignments,
        )
        .await;
    let r: SyncResult = settle(
        parked,
        300_000,
        SyncResult::error(GroupError::RebalanceInProgress),
    )
    .await;
    let mut resp = SyncGroupResponse::default();
    resp.error_code = code_of(r.error);
    if version >= 5 {
        resp.protocol_type = r.protocol_type.map(sb);
        resp.protocol_name = r.protocol_name.map(sb);
    }
    resp.assignment = r.assignment;
    resp
}

pub fn heartbeat(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: HeartbeatRequest,
) -> BoxFuture<'static, HeartbeatResponse> {
    if !may(broker, ctx, AclOperation::Read, &req.group_id.0) {
        let resp = HeartbeatResponse::default()
            .with_error_code(ErrorCode::GroupAuthorizationFailed.code());
        return Box::pin(async move { resp });
    }
    let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
    let r = broker.groups.heartbeat(
        &req.group_id.0.to_string(),
        &req.member_id.to_string(),
        req.generation_id,
        instance.as_deref(),
    );
    Box::pin(async move { HeartbeatResponse::default().with_error_code(code_of(r.await.err())) })
}

pub fn leave_group(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: LeaveGroupRequest,
) -> BoxFuture<'static, LeaveGroupResponse> {
    let version = ctx.api_version;
    let group = req.group_id.0.to_string();
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let mut resp = LeaveGroupResponse::default();
    if !may(broker, ctx, AclOperation::Read, &group) {
        resp.error_code = ErrorCode::GroupAuthorizationFailed.code();
        return Box::pin(async move { resp });
    }
    let left = broker.groups.leave(&group, &members);
    Box::pin(async move {
        match left.await {
            Err(e) => resp.error_code = error_code(e).code(),
            Ok(results) => {
                if version >= 3 {
                    resp.members = members
                        .iter()
                        .zip(&results)
                        .map(|((id, inst), r)| {
                            let mut m = leave_group_response::MemberResponse::default();
                            m.member_id = sb(id.clone());
                            m.group_instance_id = inst.clone().map(sb);
                            m.error_code = code_of(r.err());
                            m
                        })
                        .collect();
                } else if let Some(Err(e)) = results.first() {
                    resp.error_code = error_code(*e).code();
                }
            }
        }
        resp
    })
}

pub async fn offset_commit(
    broker: Arc<Broker>,
    ctx: RequestContext,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let version = ctx.api_version;
    let group = req.group_id.0.to_string();
    let image = broker.controller.image();
    let mut topics = Vec::new();
    let mut entries = Vec::new();
    // Per-partition validation first; only valid partitions are written.
    let mut slots: Vec<(usize, usize)> = Vec::new();
    for t in &req.topics {
        let name = if version >= 10 {
            image.topic_by_id(&t.topic_id).map(|x| x.name.clone())
        } else {
            Some(t.name.0.to_string())
        };
        let mut tr = offset_commit_response::OffsetCommitResponseTopic::default();
        tr.name = if version >= 10 {
            Default::default()
        } else {
            t.name.clone()
        };
        tr.topic_id = t.topic_id;
        for p in &t.partitions {
            let mut pr = offset_commit_response::OffsetCommitResponsePartition::default();
            pr.partition_index = p.partition_index;
            let known = name
                .as_deref()
                .and_then(|n| image.topic(n))
                .is_some_and(|ti| ti.partitions.contains_key(&p.partition_index));
            if !known {
                pr.error_code = if name.is_none() {
                    ErrorCode::UnknownTopicId
                } else {
                    ErrorCode::UnknownTopicOrPartition
                }
                .code();
            } else if p
                .committed_metadata
                .as_ref()
                .is_some_and(|m| m.len() > broker.groups.metadata_max_bytes)
            {
                pr.error_code = ErrorCode::OffsetMetadataTooLarge.code();
            } else {
                slots.push((topics.len(), tr.partitions.len()));
                entries.push(CommitEntry {
                    topic: name.clone().expect("known"),
                    partition: p.partition_index,
                    offset: Offset::new(p.committed_offset),
                    leader_epoch: if version >= 6 {
                        LeaderEpoch::new(p.committed_leader_epoch)
                    } else {
                        LeaderEpoch::new(-1)
                    },
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                });
            }
            tr.partitions.push(pr);
        }
        topics.push(tr);
    }
    let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
    let outcome = if invalid_group(&group) {
        Err(ErrorCode::InvalidGroupId)
    } else {
        let written = broker.groups.commit(
            &group,
            &req.member_id.to_string(),
            req.generation_id_or_member_epoch,
            instance.as_deref(),
            &entries,
        );
        match tokio::time::timeout(
            Duration::from_millis(broker.groups.commit_timeout_ms),
            written,
        )
        .await
        {
            Ok(r) => r.map_err(|e| match e {
                GroupError::FencedMemberEpoch => ErrorCode::StaleMemberEpoch,
                e => error_code(e),
            }),
            Err(_) => Err(ErrorCode::RequestTimedOut),
        }
    };
    let failure = outcome.err();
    if let Some(code) = failure {
        for (ti, pi) in slots {
            topics[ti].partitions[pi].error_code = code.code();
        }
    }
    OffsetCommitResponse::default().with_topics(topics)
}

/// One partition's committed position; a partition with no commit reads offset -1, as in Kafka.
struct Committed {
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: Option<String>,
    /// UNSTABLE_OFFSET_COMMIT when a stable offset was asked for and an open transaction
    /// holds one for the partition (KIP-447).
    error: i16,
}

/// A group's committed offsets; the error when its coordinator cannot answer.
#[allow(clippy::type_complexity)]
fn fetch_group_offsets(
    broker: &Broker,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Result<Vec<(String, Vec<Committed>)>, ErrorCode> {
    let mut found = fetch_committed(broker, group, wanted)?;
    if require_stable {
        for (t, rows) in &mut found {
            for c in rows {
                if broker.groups.has_pending_offset(group, t, c.partition) == Ok(true) {
                    c.offset = -1;
                    c.leader_epoch = -1;
                    c.error = ErrorCode::UnstableOffsetCommit.code();
                }
            }
        }
    }
    Ok(found)
}

#[allow(clippy::type_complexity)]
fn fetch_committed(
    broker: &Broker,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Vec<(String, Vec<Committed>)>, ErrorCode> {
    broker
        .groups
        .read(group, |s| {
            let wanted = wanted.unwrap_or_else(|| {
                let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for ((t, p), _) in s.offsets.group(group) {
                    by_topic.entry(t.clone()).or_default().push(*p);
                }
                by_topic.into_iter().collect()
            });
            wanted
                .into_iter()
                .map(|(t, parts)| {
                    let rows = parts
                        .into_iter()
                        .map(|partition| match s.offsets.get(group, &t, partition) {
                            Some(v) => Committed {
                                partition,
                                offset: v.offset,
                                leader_epoch: v.leader_epoch,
                                metadata: v.metadata.clone(),
                                error: 0,
                            },
                            None => Committed {
                                partition,
                                offset: -1,
                                leader_epoch: -1,
                                metadata: Some(String::new()),
                                error: 0,
                            },
                        })
                        .collect();
                    (t, rows)
                })
                .collect()
        })
        .map_err(error_code)
}

pub fn offset_fetch(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let version = ctx.api_version;
    let mut resp = OffsetFetchResponse::default();
    if version < 8 {
        let group = req.group_id.0.to_string();
        let wanted = req.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes))
                .collect()
        });
        let stable = version >= 7 && req.require_stable;
        let found = match fetch_group_offsets(broker, &group, wanted, stable) {
            Ok(found) => found,
            Err(code) => {
                resp.error_code = code.code();
                return resp;
            }
        };
        resp.topics = found
            .into_iter()
            .map(|(t, rows)| {
                let mut tr = offset_fetch_response::OffsetFetchResponseTopic::default();
                tr.name = tn(t);
                tr.partitions = rows
                    .into_iter()
                    .map(|c| {
                        let mut pr = offset_fetch_response::OffsetFetchResponsePartition::default();
                        pr.partition_index = c.partition;
                        pr.committed_offset = c.offset;
                        pr.error_code = c.error;
                        if version >= 5 {
                            pr.committed_leader_epoch = c.leader_epoch;
                        }
                        pr.metadata = c.metadata.map(sb);
                        pr
                    })
                    .collect();
                tr
            })
            .collect();
        return resp;
    }
    let image = broker.controller.image();
    let stable = req.require_stable;
    resp.groups = req
        .groups
        .into_iter()
        .map(|g| {
            let group = g.group_id.0.to_string();
            let wanted = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| {
                        let name = if version >= 10 {
                            image
                                .topic_by_id(&t.topic_id)
                                .map(|x| x.name.clone())
                                .unwrap_or_default()
                        } else {
                            t.name.0.to_string()
                        };
                        (name, t.partition_indexes)
                    })
                    .collect()
            });
            let mut gr = offset_fetch_response::OffsetFetchResponseGroup::default();
            gr.group_id = g.group_id;
            let found = match fetch_group_offsets(broker, &group, wanted, stable) {
                Ok(found) => found,
                Err(code) => {
                    gr.error_code = code.code();
                    return gr;
                }
            };
            gr.topics = found
                .into_iter()
                .map(|(t, rows)| {
                    let mut tr = offset_fetch_response::OffsetFetchResponseTopics::default();
                    if version >= 10 {
                        tr.topic_id = image.topic(&t).map(|x| x.topic_id).unwrap_or_default();
                    } else {
                        tr.name = tn(t);
                    }
                    tr.partitions = rows
                        .into_iter()
                        .map(|c| {
                            let mut pr =
                                offset_fetch_response::OffsetFetchResponsePartitions::default();
                            pr.partition_index = c.partition;
                            pr.committed_offset = c.offset;
                            pr.error_code = c.error;
                            pr.committed_leader_epoch = c.leader_epoch;
                            pr.metadata = c.metadata.map(sb);
                            pr
                        })
                        .collect();
                    tr
                })
                .collect();
            gr
        })
        .collect();
    resp
}

pub fn list_groups(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ListGroupsRequest,
) -> ListGroupsResponse {
    let version = ctx.api_version;
    let states: Vec<String> = req
        .states_filter
        .iter()
        .map(|s| s.to_string().to_ascii_lowercase())
        .collect();
    let types: Vec<String> = req
        .types_filter
        .iter()
        .map(|s| s.to_string().to_ascii_lowercase())
        .collect();
    let listed = broker.groups.read_all(|s| {
        s.group_ids()
            .into_iter()
            .map(|id| match s.groups.get(&id) {
                Some(g) => {
                    let ptype = match g {
                        Group::Classic(c) => c.protocol_type.clone().unwrap_or_default(),
                        Group::Consumer(_) => "consumer".to_string(),
                    };
                    (
                        id,
                        ptype,
                        g.state_name().to_string(),
                        g.type_name().to_string(),
                    )
                }
                None => (
                    id,
                    String::new(),
                    "Empty".to_string(),
                    "classic".to_string(),
                ),
            })
            .collect::<Vec<_>>()
    });
    let groups = match listed {
        Ok(groups) => groups,
        Err(e) => return ListGroupsResponse::default().with_error_code(error_code(e).code()),
    };
    let groups = groups
        .into_iter()
        .flatten()
        .filter(|(_, _, state, ty)| {
            (states.is_empty() || states.contains(&state.to_ascii_lowercase()))
                && (types.is_empty() || types.contains(&ty.to_ascii_lowercase()))
        })
        .map(|(id, ptype, state, ty)| {
            let mut g = list_groups_response::ListedGroup::default();
            g.group_id = GroupId(sb(id));
            g.protocol_type = sb(ptype);
            if version >= 4 {
                g.group_state = sb(state);
            }
            if version >= 5 {
                g.group_type = sb(ty);
            }
            g
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub fn describe_groups(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .into_iter()
        .map(|gid| {
            let id = gid.0.to_string();
            let mut d = describe_groups_response::DescribedGroup::default();
            d.group_id = gid;
            if !may(broker, ctx, AclOperation::Describe, &id) {
                d.error_code = ErrorCode::GroupAuthorizationFailed.code();
                return d;
            }
            if req.include_authorized_operations {
                d.authorized_operations = broker.authorized_operations(ctx, Resource::Group(&id));
            }
            let read = broker.groups.read(&id, |s| match s.groups.get(&id) {
                Some(Group::Classic(g)) => {
                    d.group_state = sb(g.state.name());
                    d.protocol_type = sb(g.protocol_type.clone().unwrap_or_default());
                    d.protocol_data = sb(g.protocol_name.clone().unwrap_or_default());
                    d.members = g
                        .members
                        .values()
                        .map(|m| {
                            let mut dm = describe_groups_response::DescribedGroupMember::default();
                            dm.member_id = sb(m.member_id.clone());
                            dm.group_instance_id = m.instance_id.clone().map(sb);
                            dm.client_id = sb(m.client_id.clone());
                            dm.client_host = sb(m.client_host.clone());
                            let proto = g.protocol_name.clone().unwrap_or_default();
                            dm.member_metadata = Bytes::from(
                                m.protocols
                                    .iter()
                                    .find(|(n, _)| *n == proto)
                                    .map(|(_, v)| v.clone())
                                    .unwrap_or_default(),
                            );
                            dm.member_assignment = Bytes::from(m.assignment.clone());
                            dm
                        })
                        .collect();
                }
                Some(Group::Consumer(_)) => {
                    // Kafka answers classic describes of consumer groups with this code.
                    d.error_code = ErrorCode::GroupIdNotFound.code();
                    d.group_state = sb("Dead");
                }
                // Standalone consumers' commits make a group with no members, as in Kafka.
                None if s.offsets.has_group(&id) => d.group_state = sb("Empty"),
                None => d.group_state = sb("Dead"),
            });
            if let Err(e) = read {
                d.error_code = error_code(e).code();
            }
            d
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub fn delete_groups(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DeleteGroupsRequest,
) -> BoxFuture<'static, DeleteGroupsResponse> {
    // Each deletion is written now, in request order; the answers wait for durability.
    let pending: Vec<_> = req
        .groups_names
        .into_iter()
        .map(|gid| {
            let deleted = may(broker, ctx, AclOperation::Delete, &gid.0)
                .then(|| broker.groups.delete_group(&gid.0.to_string()));
            (gid, deleted)
        })
        .collect();
    Box::pin(async move {
        let mut results = Vec::new();
        for (gid, deleted) in pending {
            let mut r = delete_groups_response::DeletableGroupResult::default();
            r.error_code = match deleted {
                Some(d) => code_of(d.await.err()),
                None => ErrorCode::GroupAuthorizationFailed.code(),
            };
            r.group_id = gid;
            results.push(r);
        }
        DeleteGroupsResponse::default().with_results(results)
    })
}

pub fn offset_delete(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: OffsetDeleteRequest,
) -> BoxFuture<'static, OffsetDeleteResponse> {
    let group = req.group_id.0.to_string();
    let wanted: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let mut resp = OffsetDeleteResponse::default();
    if !may(broker, ctx, AclOperation::Delete, &group) {
        resp.error_code = ErrorCode::GroupAuthorizationFailed.code();
        return Box::pin(async move { resp });
    }
    let deleted = broker.groups.delete_offsets(&group, &wanted);
    Box::pin(async move {
        match deleted.await {
            Err(e) => resp.error_code = error_code(e).code(),
            Ok(results) => {
                let mut it = results.into_iter();
                resp.topics = req
                    .topics
                    .into_iter()
                    .map(|t| {
                        let mut tr = offset_delete_response::OffsetDeleteResponseTopic::default();
                        tr.name = t.name;
                        tr.partitions =
                            t.partitions
                                .iter()
                                .map(|p| {
                                    let mut pr =
                                offset_delete_response::OffsetDeleteResponsePartition::default();
                                    pr.partition_index = p.partition_index;
                                    pr.error_code = code_of(it.next().and_then(Result::err));
                                    pr
                                })
                                .collect();
                        tr
                    })
                    .collect();
            }
        }
        resp
    })
}

pub fn consumer_group_heartbeat(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ConsumerGroupHeartbeatRequest,
) -> BoxFuture<'static, ConsumerGroupHeartbeatResponse> {
    if !may(broker, ctx, AclOperation::Read, &req.group_id.0) {
        let resp = ConsumerGroupHeartbeatResponse::default()
            .with_error_code(ErrorCode::GroupAuthorizationFailed.code())
            .with_heartbeat_interval_ms(0);
        return Box::pin(async move { resp });
    }
    let client = ClientInfo::from(ctx);
    let image = broker.controller.image();
    let owned = req.topic_partitions.as_ref().map(|tps| {
        tps.iter()
            .filter_map(|tp| {
                image
                    .topic_by_id(&tp.topic_id)
                    .map(|t| (t.name.clone(), tp.partitions.clone()))
            })
            .flat_map(|(name, parts)| parts.into_iter().map(move |p| (name.clone(), p)))
            .collect()
    });
    let group = req.group_id.0.to_string();
    let subscribed_regex = req.subscribed_topic_regex.as_ref().map(|s| s.to_string());
    // Regular expressions are resolved against the topics the member may describe, as Kafka
    // does; the list is built only for groups that subscribe with one.
    let regex_group = subscribed_regex.as_ref().is_some_and(|r| !r.is_empty())
        || broker
            .groups
            .read(
                &group,
                |s| matches!(s.groups.get(&group), Some(Group::Consumer(g)) if g.uses_regex()),
            )
            .unwrap_or(false);
    let cluster_topics = regex_group.then(|| {
        image
            .topics
            .keys()
            .filter(|t| broker.authorize(ctx, AclOperation::Describe, Resource::Topic(t)))
            .cloned()
            .collect()
    });
    let cg = CgRequest {
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(|s| s.to_string()),
        client_id: client.client_id,
        client_host: client.host,
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topics: req
            .subscribed_topic_names
            .as_ref()
            .map(|ts| ts.iter().map(|t| t.0.to_string()).collect()),
        subscribed_regex,
        assignor: req.server_assignor.as_ref().map(|s| s.to_string()),
        owned,
        cluster_topics,
    };
    let mut resp = ConsumerGroupHeartbeatResponse::default();
    if invalid_group(&group) {
        resp.error_code = ErrorCode::InvalidGroupId.code();
        return Box::pin(async move { resp });
    }
    let beat = broker.groups.consumer_heartbeat(&group, cg);
    Box::pin(async move {
        match beat.await {
            Err(e) => {
                resp.error_code = error_code(e).code();
                resp.error_message = Some(sb(e.to_string()));
            }
            Ok(r) => {
                resp.member_id = Some(sb(r.member_id));
                resp.member_epoch = r.member_epoch;
                resp.heartbeat_interval_ms = r.heartbeat_interval_ms;
                resp.assignment = r.assignment.map(|parts| {
                    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                    for (t, p) in parts {
                        by_topic.entry(t).or_default().push(p);
                    }
                    let mut a = consumer_group_heartbeat_response::Assignment::default();
                    a.topic_partitions = by_topic
                        .into_iter()
                        .filter_map(|(t, ps)| {
                            image.topic(&t).map(|ti| {
                                let mut tp =
                                    consumer_group_heartbeat_response::TopicPartitions::default();
                                tp.topic_id = ti.topic_id;
                                tp.partitions = ps;
                                tp
                            })
                        })
                        .collect();
                    a
                });
            }
        }
        resp
    })
}

pub fn consumer_group_describe(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let image = broker.controller.image();
    let to_assignment = |parts: &std::collections::BTreeSet<(String, i32)>| {
        let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for (t, p) in parts {
            by_topic.entry(t.clone()).or_default().push(*p);
        }
        let mut a = consumer_group_describe_response::Assignment::default();
        a.topic_partitions = by_topic
            .into_iter()
            .map(|(t, ps)| {
                let mut tp = consumer_group_describe_response::TopicPartitions::default();
                tp.topic_id = image.topic(&t).map(|x| x.topic_id).unwrap_or_default();
                tp.topic_name = tn(t);
                tp.partitions = ps;
                tp
            })
            .collect();
        a
    };
    let groups = req
        .group_ids
        .into_iter()
        .map(|gid| {
            let id = gid.0.to_string();
            let mut d = consumer_group_describe_response::DescribedGroup::default();
            d.group_id = gid;
            if !may(broker, ctx, AclOperation::Describe, &id) {
                d.error_code = ErrorCode::GroupAuthorizationFailed.code();
                return d;
            }
            if req.include_authorized_operations {
                d.authorized_operations = broker.authorized_operations(ctx, Resource::Group(&id));
            }
            let read = broker.groups.read(&id, |s| match s.groups.get(&id) {
                Some(Group::Consumer(g)) => {
                    d.group_state = sb(g.state_name());
                    d.group_epoch = g.group_epoch;
                    d.assignment_epoch = g.assignment_epoch;
                    d.assignor_name = sb(g
                        .members
                        .values()
                        .next()
                        .and_then(|m| m.assignor.clone())
                        .unwrap_or_else(|| "uniform".into()));
                    d.members = g
                        .members
                        .values()
                        .map(|m| {
                            let mut dm = consumer_group_describe_response::Member::default();
                            dm.member_id = sb(m.member_id.clone());
                            dm.instance_id = m.instance_id.clone().map(sb);
                            dm.member_epoch = m.member_epoch;
                            dm.client_id = sb(m.client_id.clone());
                            dm.client_host = sb(m.client_host.clone());
                            dm.subscribed_topic_names =
                                m.subscribed.iter().map(|t| tn(t.clone())).collect();
                            dm.subscribed_topic_regex = m.subscribed_regex.clone().map(sb);
                            dm.assignment = to_assignment(&m.assigned);
                            dm.target_assignment = to_assignment(
                                &g.target.get(&m.member_id).cloned().unwrap_or_default(),
                            );
                            dm
                        })
                        .collect();
                }
                Some(Group::Classic(_)) => {
                    d.error_code = ErrorCode::GroupIdNotFound.code();
                    d.error_message = Some(sb(format!("Group {id} is not a consumer group.")));
                }
                None => {
                    d.error_code = ErrorCode::GroupIdNotFound.code();
                    d.error_message = Some(sb(format!("Group {id} not found.")));
                }
            });
            if let Err(e) = read {
                d.error_code = error_code(e).code();
            }
            d
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
