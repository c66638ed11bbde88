//! One module per group of APIs. Each handler maps a decoded request to a response; Kafka
//! error codes are chosen here and nowhere deeper.

pub mod api_versions;
pub mod configs;
pub mod fetch;
pub mod groups;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod topics;

use std::net::IpAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use vltava_protocol::messages::TopicName;
use vltava_protocol::{ErrorCode, Header, Request, Response, StrBytes};

use crate::broker::Broker;

/// Starts handling a request. Work that must happen in arrival order (appends) is done before
/// this returns; the future finishes the answer (`None`: no answer, as for acks=0). `Err`: the
/// request is hostile and its connection must be closed.
pub fn dispatch(
    broker: &Arc<Broker>,
    header: &Header,
    peer: IpAddr,
    request: Request,
) -> Result<BoxFuture<'static, Option<Response>>, produce::Hostile> {
    let v = header.api_version;
    let client = || groups::ClientInfo {
        client_id: header.client_id.clone().unwrap_or_default(),
        host: format!("/{peer}"),
    };
    let ready =
        |r: Response| -> BoxFuture<'static, Option<Response>> { Box::pin(async move { Some(r) }) };
    Ok(match request {
        Request::Produce(r) => return produce::handle(broker, v, r),
        Request::Fetch(r) => {
            let b = Arc::clone(broker);
            Box::pin(async move { Some(fetch::handle(&b, v, r).await.into()) })
        }
        Request::ApiVersions(_) => ready(api_versions::handle().into()),
        Request::Metadata(r) => ready(metadata::metadata(broker, v, r).into()),
        Request::DescribeCluster(r) => ready(metadata::describe_cluster(broker, v, r).into()),
        Request::DescribeTopicPartitions(r) => {
            ready(metadata::describe_topic_partitions(broker, r).into())
        }
        Request::CreateTopics(r) => ready(topics::create_topics(broker, v, r).into()),
        Request::DeleteTopics(r) => ready(topics::delete_topics(broker, v, r).into()),
        Request::CreatePartitions(r) => ready(topics::create_partitions(broker, r).into()),
        Request::DescribeConfigs(r) => ready(configs::describe_configs(broker, v, r).into()),
        Request::AlterConfigs(r) => ready(configs::alter_configs(broker, r).into()),
        Request::IncrementalAlterConfigs(r) => {
            ready(configs::incremental_alter_configs(broker, r).into())
        }
        Request::ListOffsets(r) => ready(offsets::list_offsets(broker, v, r).into()),
        Request::OffsetForLeaderEpoch(r) => {
            ready(offsets::offset_for_leader_epoch(broker, r).into())
        }
        Request::DescribeLogDirs(r) => ready(offsets::describe_log_dirs(broker, r).into()),
        Request::FindCoordinator(r) => ready(groups::find_coordinator(broker, v, r).into()),
        Request::JoinGroup(r) => {
            let (b, client) = (Arc::clone(broker), client());
            Box::pin(async move { Some(groups::join_group(b, v, client, r).await.into()) })
        }
        Request::SyncGroup(r) => {
            let b = Arc::clone(broker);
            Box::pin(async move { Some(groups::sync_group(b, v, r).await.into()) })
        }
        Request::Heartbeat(r) => ready(groups::heartbeat(broker, r).into()),
        Request::LeaveGroup(r) => ready(groups::leave_group(broker, v, r).into()),
        Request::OffsetCommit(r) => {
            let b = Arc::clone(broker);
            Box::pin(async move { Some(groups::offset_commit(b, v, r).await.into()) })
        }
        Request::OffsetFetch(r) => ready(groups::offset_fetch(broker, v, r).into()),
        Request::ListGroups(r) => ready(groups::list_groups(broker, v, r).into()),
        Request::DescribeGroups(r) => ready(groups::describe_groups(broker, r).into()),
        Request::DeleteGroups(r) => ready(groups::delete_groups(broker, r).into()),
        Request::OffsetDelete(r) => ready(groups::offset_delete(broker, r).into()),
        Request::ConsumerGroupHeartbeat(r) => {
            ready(groups::consumer_group_heartbeat(broker, client(), r).into())
        }
        Request::ConsumerGroupDescribe(r) => {
            ready(groups::consumer_group_describe(broker, r).into())
        }
        Request::DeleteRecords(r) => {
            let b = Arc::clone(broker);
            Box::pin(async move { Some(offsets::delete_records(b, r).await.into()) })
        }
    })
}

pub(crate) fn sb(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

pub(crate) fn tn(s: impl Into<String>) -> TopicName {
    TopicName(sb(s))
}

/// Kafka's check of a client's `current_leader_epoch` (-1 = not given).
pub(crate) fn check_leader_epoch(requested: i32, current: i32) -> Option<ErrorCode> {
    if requested < 0 || requested == current {
        None
    } else if requested > current {
        Some(ErrorCode::UnknownLeaderEpoch)
    } else {
        Some(ErrorCode::FencedLeaderEpoch)
    }
}
