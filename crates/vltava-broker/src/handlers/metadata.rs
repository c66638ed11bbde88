//! Metadata, DescribeCluster, DescribeTopicPartitions.

use std::collections::BTreeMap;
use std::sync::Arc;

use vltava_metadata::{validate_topic_name, MetadataImage, TopicImage};
use vltava_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use vltava_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use vltava_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use vltava_protocol::messages::*;
use vltava_protocol::ErrorCode;

use super::{sb, tn};
use crate::broker::Broker;
use crate::context::{AclOperation, RequestContext, Resource};
use vltava_types::NodeId;

fn ids(v: &[NodeId]) -> Vec<BrokerId> {
    v.iter().map(|i| BrokerId(i.get())).collect()
}

/// Replicas on brokers that are fenced or not registered (Kafka's offline replicas).
fn offline(image: &MetadataImage, replicas: &[NodeId]) -> Vec<BrokerId> {
    replicas
        .iter()
        .filter(|r| image.brokers.get(r).is_none_or(|b| b.fenced))
        .map(|r| BrokerId(r.get()))
        .collect()
}

fn topic_entry(image: &MetadataImage, t: &TopicImage) -> MetadataResponseTopic {
    let mut r = MetadataResponseTopic::default();
    r.name = Some(tn(&t.name));
    r.topic_id = t.topic_id;
    r.is_internal = super::topics::is_internal_topic(&t.name);
    r.partitions = t
        .partitions
        .values()
        .map(|p| {
            let mut mp = MetadataResponsePartition::default();
            mp.partition_index = p.partition_id;
            mp.leader_id = BrokerId(p.leader.get());
            mp.leader_epoch = p.leader_epoch.get();
            mp.replica_nodes = ids(&p.replicas);
            mp.isr_nodes = ids(&p.isr);
            // A one-node image has no registrations before the broker registers itself.
            if !image.brokers.is_empty() {
                mp.offline_replicas = offline(image, &p.replicas);
            }
            if p.leader.get() < 0 {
                mp.error_code = ErrorCode::LeaderNotAvailable.code();
            }
            mp
        })
        .collect();
    r
}

fn error_topic(name: Option<String>, id: uuid::Uuid, code: ErrorCode) -> MetadataResponseTopic {
    let mut r = MetadataResponseTopic::default();
    r.name = name.map(tn);
    r.topic_id = id;
    r.error_code = code.code();
    r
}

pub async fn metadata(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: MetadataRequest,
) -> MetadataResponse {
    let version = ctx.api_version;
    let mut image = broker.controller.image();
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let requested = match req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t),
    };
    let allow_auto =
        (version < 4 || req.allow_auto_topic_creation) && broker.config.auto_create_topics();
    let may_describe =
        |name: &str| broker.authorize(ctx, AclOperation::Describe, Resource::Topic(name));
    let topics = match requested {
        // Listing all topics leaves out those the principal may not describe, as Kafka does.
        None => image
            .topics
            .values()
            .filter(|t| may_describe(&t.name))
            .map(|t| topic_entry(&image, t))
            .collect(),
        Some(list) => {
            let mut out = Vec::new();
            for t in list {
                let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else {
                    out.push(match image.topic_by_id(&t.topic_id) {
                        Some(ti) if !may_describe(&ti.name) => {
                            error_topic(None, t.topic_id, ErrorCode::TopicAuthorizationFailed)
                        }
                        Some(ti) => topic_entry(&image, ti),
                        None => error_topic(None, t.topic_id, ErrorCode::UnknownTopicId),
                    });
                    continue;
                };
                if !may_describe(&name) {
                    out.push(error_topic(
                        Some(name),
                        t.topic_id,
                        ErrorCode::TopicAuthorizationFailed,
                    ));
                    continue;
                }
                if let Some(ti) = image.topic(&name) {
                    out.push(topic_entry(&image, ti));
                    continue;
                }
                if validate_topic_name(&name).is_err() {
                    out.push(error_topic(
                        Some(name),
                        t.topic_id,
                        ErrorCode::InvalidTopicException,
                    ));
                    continue;
                }
                if !allow_auto {
                    out.push(error_topic(
                        Some(name),
                        t.topic_id,
                        ErrorCode::UnknownTopicOrPartition,
                    ));
                    continue;
                }
                if !broker.authorize(ctx, AclOperation::Create, Resource::Cluster)
                    && !broker.authorize(ctx, AclOperation::Create, Resource::Topic(&name))
                {
                    out.push(error_topic(
                        Some(name),
                        t.topic_id,
                        ErrorCode::TopicAuthorizationFailed,
                    ));
                    continue;
                }
                let created = super::topics::create_topic(
                    broker,
                    &name,
                    broker.config.num_partitions(),
                    broker.config.default_replication_factor(),
                    &BTreeMap::new(),
                    None,
                    false,
                )
                .await;
                image = broker.controller.image();
                match (created, image.topic(&name)) {
                    (_, Some(ti)) => out.push(topic_entry(&image, ti)),
                    (Err(e), None) => out.push(error_topic(Some(name), t.topic_id, e.code)),
                    (Ok(_), None) => out.push(error_topic(
                        Some(name),
                        t.topic_id,
                        ErrorCode::LeaderNotAvailable,
                    )),
                }
            }
            out
        }
    };
    let mut resp = MetadataResponse::default();
    resp.brokers = broker_endpoints(broker, ctx, &image)
        .into_iter()
        .map(|(id, host, port, rack)| {
            let mut b = MetadataResponseBroker::default();
            b.node_id = BrokerId(id.get());
            b.host = sb(host);
            b.port = i32::from(port);
            b.rack = rack.map(sb);
            b
        })
        .collect();
    resp.cluster_id = Some(sb(&broker.cluster_id));
    resp.controller_id = BrokerId(controller_for_clients(broker, &image).get());
    resp.topics = topics;
    if req.include_topic_authorized_operations {
        for t in resp.topics.iter_mut().filter(|t| t.error_code == 0) {
            if let Some(name) = &t.name {
                t.topic_authorized_operations =
                    broker.authorized_operations(ctx, Resource::Topic(&name.0));
            }
        }
    }
    if req.include_cluster_authorized_operations {
        resp.cluster_authorized_operations = broker.authorized_operations(ctx, Resource::Cluster);
    }
    resp
}

/// Every live broker's address on the listener the request came through (Kafka lists a
/// broker only if it has an endpoint of that name), with this broker first known even
/// before its registration commits.
fn broker_endpoints(
    broker: &Broker,
    ctx: &RequestContext,
    image: &vltava_metadata::MetadataImage,
) -> Vec<(NodeId, String, u16, Option<String>)> {
    let listener = ctx.listener_name();
    let mut out: Vec<_> = image
        .live_brokers()
        .filter_map(|b| {
            b.endpoint(listener)
                .map(|e| (b.broker_id, e.host.clone(), e.port, b.rack.clone()))
        })
        .collect();
    let me = broker.config.node_id;
    if !out.iter().any(|(id, ..)| *id == me) {
        let (host, port) = broker.advertised_for(listener);
        let rack = broker.config.props.get("broker.rack").cloned();
        out.push((me, host.to_string(), port, rack.filter(|r| !r.is_empty())));
    }
    out
}

/// The controller id clients are told: as KRaft brokers do, a live broker (this one), which
/// takes admin requests and proposes them to the quorum; the quorum leader itself may be
/// gone before the client asks it anything.
fn controller_for_clients(broker: &Broker, _image: &vltava_metadata::MetadataImage) -> NodeId {
    broker.config.node_id
}

pub fn describe_cluster(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let version = ctx.api_version;
    let mut resp = DescribeClusterResponse::default();
    if version >= 1 && req.endpoint_type != 1 {
        resp.error_code = ErrorCode::UnsupportedEndpointType.code();
        resp.error_message = Some(sb("only broker endpoints (type 1) are served by brokers"));
        resp.endpoint_type = req.endpoint_type;
        return resp;
    }
    let image = broker.controller.image();
    resp.brokers = broker_endpoints(broker, ctx, &image)
        .into_iter()
        .map(|(id, host, port, rack)| {
            let mut b = DescribeClusterBroker::default();
            b.broker_id = BrokerId(id.get());
            b.host = sb(host);
            b.port = i32::from(port);
            b.rack = rack.map(sb);
            b
        })
        .collect();
    resp.endpoint_type = 1;
    resp.cluster_id = sb(&broker.cluster_id);
    resp.controller_id = BrokerId(controller_for_clients(broker, &image).get());
    if req.include_cluster_authorized_operations {
        resp.cluster_authorized_operations = broker.authorized_operations(ctx, Resource::Cluster);
    }
    resp
}

/// DescribeQuorum for `__cluster_metadata` partition 0: the quorum's leader, term, high
/// watermark and each voter's and observer's log end, as this node knows them (the leader
/// knows every replica's progress; others know only their own).
pub fn describe_quorum(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeQuorumRequest,
) -> DescribeQuorumResponse {
    use vltava_protocol::messages::describe_quorum_response::{
        PartitionData, ReplicaState, TopicData,
    };
    let mut resp = DescribeQuorumResponse::default();
    if !broker.authorize(ctx, AclOperation::Describe, Resource::Cluster) {
        resp.error_code = ErrorCode::ClusterAuthorizationFailed.code();
        return resp;
    }
    let status = broker.controller.quorum().status();
    let replica = |r: &vltava_quorum::ReplicaStatus| {
        let mut s = ReplicaState::default();
        s.replica_id = BrokerId(r.node_id as i32);
        s.log_end_offset = r.log_end.map_or(-1, |e| e as i64);
        s.last_fetch_timestamp = -1;
        s.last_caught_up_timestamp = -1;
        s
    };
    resp.topics = req
        .topics
        .iter()
        .map(|t| {
            let mut td = TopicData::default();
            td.topic_name = t.topic_name.clone();
            td.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut pd = PartitionData::default();
                    pd.partition_index = p.partition_index;
                    if &*t.topic_name.0 != "__cluster_metadata" || p.partition_index != 0 {
                        pd.error_code = ErrorCode::UnknownTopicOrPartition.code();
                        return pd;
                    }
                    pd.leader_id = BrokerId(status.leader.map_or(-1, |l| l as i32));
                    pd.leader_epoch = status.term as i32;
                    pd.high_watermark = status.high_watermark as i64;
                    pd.current_voters = status.voters.iter().map(replica).collect();
                    pd.observers = status.observers.iter().map(replica).collect();
                    pd
                })
                .collect();
            td
        })
        .collect();
    resp
}

pub fn describe_topic_partitions(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let image = broker.controller.image();
    let may_describe =
        |name: &str| broker.authorize(ctx, AclOperation::Describe, Resource::Topic(name));
    let mut names: Vec<String> = if req.topics.is_empty() {
        image
            .topics
            .keys()
            .filter(|n| may_describe(n))
            .cloned()
            .collect()
    } else {
        req.topics.iter().map(|t| t.name.0.to_string()).collect()
    };
    names.sort();
    names.dedup();
    let (start_topic, start_partition) = match &req.cursor {
        Some(c) => (c.topic_name.0.to_string(), c.partition_index),
        None => (String::new(), 0),
    };
    let mut budget = req.response_partition_limit.max(1) as usize;
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names.into_iter().filter(|n| *n >= start_topic) {
        let mut t = DescribeTopicPartitionsResponseTopic::default();
        t.name = Some(tn(&name));
        if !may_describe(&name) {
            t.error_code = ErrorCode::TopicAuthorizationFailed.code();
            topics.push(t);
            continue;
        }
        let Some(ti) = image.topic(&name) else {
            t.error_code = ErrorCode::UnknownTopicOrPartition.code();
            topics.push(t);
            continue;
        };
        t.topic_id = ti.topic_id;
        t.is_internal = super::topics::is_internal_topic(&name);
        t.topic_authorized_operations = broker.authorized_operations(ctx, Resource::Topic(&name));
        let first = if name == start_topic {
            start_partition
        } else {
            0
        };
        for p in ti.partitions.range(first..).map(|(_, p)| p) {
            if budget == 0 {
                let mut c = Cursor::default();
                c.topic_name = tn(&name);
                c.partition_index = p.partition_id;
                next_cursor = Some(c);
                break;
            }
            budget -= 1;
            let mut rp = DescribeTopicPartitionsResponsePartition::default();
            rp.partition_index = p.partition_id;
            rp.leader_id = BrokerId(p.leader.get());
            rp.leader_epoch = p.leader_epoch.get();
            rp.replica_nodes = ids(&p.replicas);
            rp.isr_nodes = ids(&p.isr);
            if !image.brokers.is_empty() {
                rp.offline_replicas = offline(&image, &p.replicas);
            }
            if p.leader.get() < 0 {
                rp.error_code = ErrorCode::LeaderNotAvailable.code();
            }
            rp.eligible_leader_replicas = Some(Vec::new());
            rp.last_known_elr = Some(Vec::new());
            t.partitions.push(rp);
        }
        topics.push(t);
        if next_cursor.is_some() {
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}
