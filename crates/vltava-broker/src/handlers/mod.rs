//! One module per group of APIs. Each handler maps a decoded request to a response; Kafka
//! error codes are chosen here and nowhere deeper.

pub mod acls;
pub mod api_versions;
pub mod configs;
pub mod fetch;
pub mod groups;
pub mod leaders;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod producers;
pub mod quotas;
pub mod reassign;
pub mod scram;
pub mod topics;
pub mod txn;
pub mod voters;

use std::sync::Arc;

use futures::future::BoxFuture;
use vltava_protocol::messages::TopicName;
use vltava_protocol::{ErrorCode, Request, Response, StrBytes};

use crate::broker::Broker;
use crate::context::RequestContext;

/// Starts handling a request. Work that must happen in arrival order (appends) is done before
/// this returns; the future finishes the answer (`None`: no answer, as for acks=0). `Err`: the
/// request is hostile and its connection must be closed.
pub fn dispatch(
    broker: &Arc<Broker>,
    ctx: RequestContext,
    request: Request,
) -> Result<BoxFuture<'static, Option<Answer>>, produce::Hostile> {
    let ready = |r: Response| -> BoxFuture<'static, Option<Answer>> {
        Box::pin(async move { Some(Answer::from(r)) })
    };
    let c = &ctx;
    Ok(match request {
        Request::Produce(r) => {
            let fut = produce::handle(broker, c, r)?;
            Box::pin(async move { fut.await.map(Answer::from) })
        }
        Request::Fetch(r) => {
            let b = Arc::clone(broker);
            Box::pin(async move {
                let (response, hold, regions) = fetch::handle(&b, &ctx, r).await;
                Some(Answer {
                    response: response.into(),
                    hold,
                    regions,
                })
            })
        }
        Request::ApiVersions(_) => ready(api_versions::handle().into()),
        Request::Metadata(r) => {
            let b = Arc::clone(broker);
            Box::pin(async move {
                Some(Answer::from(Response::from(
                    metadata::metadata(&b, &ctx, r).await,
                )))
            })
        }
        Request::DescribeCluster(r) => ready(metadata::describe_cluster(broker, c, r).into()),
        Request::DescribeQuorum(r) => ready(metadata::describe_quorum(broker, c, r).into()),
        Request::DescribeTopicPartitions(r) => {
            ready(metadata::describe_topic_partitions(broker, c, r).into())
        }
        Request::CreateTopics(r) => {
            let b = Arc::clone(broker);
            Box::pin(async move {
                Some(Answer::from(Response::from(
                    topics::create_topics(&b, &ctx, r).await,
                )))
            })
        }
        Request::DeleteTopics(r) => {
            let b = Arc::clone(broker);
            Box::pin(async move {
                Some(Answer::from(Response::from(
                    topics::delete_topics(&b, &ctx, r).await,
                )))
            })
        }
        Request::CreatePartitions(r) => {
            let b = Arc::clone(broker);
            Box::pin(async move {
                Some(Answer::from(Response::from(
                    topics::create_partitions(&b, &ctx, r).await,
                )))
            })
        }
        Request::ElectLeaders(r) => {
            let b = Arc::clone(broker);
            Box::pin(async move {
                Some(Answer::from(Response::from(
                    leaders::elect_leaders(&b, &ctx, r).await,
                )))
            })
        }
        Request::AlterPartitionReassignments(r) => {
            let b = Arc::clone(broker);
            Box::pin(async move {
                Some(Answer::from(Response::from(
                    reassign::alter_partition_reassignments(&b, &ctx, r).await,
                )))
            })
        }
        Request::AddRaftVoter(r) => {
            let b = Arc::clone(broker);
            Box::pin(async move {
                Some(Answer::from(Response::from(
                    voters::add_raft_voter(&b, &ctx, r).await,
                )))
            })
        }
        Request::RemoveRaftVoter(r) => {
            let b = Arc::clone(broker);
            Box::pin(async move {
                Some(Answer::from(Response::from(
                    voters::remove_raft_voter(&b, &ctx, r).await,
                )))
            })
        }
        Request::ListPartitionReassignments(r) => {
            ready(reassign::list_partition_reassignments(broker, c, r).into())
        }
        Request::DescribeConfigs(r) => ready(configs::describe_configs(broker, c, r).into()),
        Request::AlterConfigs(r) => {
            let b = Arc::clone(broker);
            Box::pin(async move {
                Some(Answer::from(Response::from(
                    configs::alter_configs(&b, &ctx, r).await,
                )))
            })
        }
        Request::IncrementalAlterConfigs(r) => {
            let b = Arc::clone(broker);
            Box::pin(async move {
                Some(Answer::from(Response::from(
                    configs::incremental_alter_configs(&b, &ctx, r).await,
                )))
            })
        }
        Request::ListOffsets(r) => ready(offsets::list_offsets(broker, c, r).into()),
        Request::OffsetForLeaderEpoch(r) => {
            ready(offsets::offset_for_leader_epoch(broker, c, r).into())
        }
        Request::DescribeLogDirs(r) => ready(offsets::describe_log_dirs(broker, c, r).into()),
        Request::FindCoordinator(r) => ready(groups::find_coordinator(broker, c, r).into()),
        Request::JoinGroup(r) => {
            let b = Arc::clone(broker);
            Box::pin(async move {
                Some(Answer::from(Response::from(
                    groups::join_group(b, ctx, r).await,
                )))
            })
        }
        Request::SyncGroup(r) => {
            let b = Arc::clone(broker);
            Box::pin(async move {
                Some(Answer::from(Response::from(
                    groups::sync_group(b, ctx, r).await,
                )))
            })
        }
        Request::Heartbeat(r) => {
            let fut = groups::heartbeat(broker, c, r);
            Box::pin(async move { Some(Answer::from(Response::from(fut.await))) })
        }
        Request::LeaveGroup(r) => {
            let fut = groups::leave_group(broker, c, r);
            Box::pin(async move { Some(Answer::from(Response::from(fut.await))) })
        }
        Request::OffsetCommit(r) => {
            let b = Arc::clone(broker);
            Box::pin(async move {
                Some(Answer::from(Response::from(
                    groups::offset_commit(b, ctx, r).await,
                )))
            })
        }
        Request::OffsetFetch(r) => ready(groups::offset_fetch(broker, c, r).into()),
        Request::ListGroups(r) => ready(groups::list_groups(broker, c, r).into()),
        Request::DescribeGroups(r) => ready(groups::describe_groups(broker, c, r).into()),
        Request::DeleteGroups(r) => {
            let fut = groups::delete_groups(broker, c, r);
            Box::pin(async move { Some(Answer::from(Response::from(fut.await))) })
        }
        Request::OffsetDelete(r) => {
            let fut = groups::offset_delete(broker, c, r);
            Box::pin(async move { Some(Answer::from(Response::from(fut.await))) })
        }
        Request::ConsumerGroupHeartbeat(r) => {
            let fut = groups::consumer_group_heartbeat(broker, c, r);
            Box::pin(async move { Some(Answer::from(Response::from(fut.await))) })
        }
        Request::ConsumerGroupDescribe(r) => {
            ready(groups::consumer_group_describe(broker, c, r).into())
        }
        Request::InitProducerId(r) => {
            let b = Arc::clone(broker);
            Box::pin(async move {
                Some(Answer::from(Response::from(
                    txn::init_producer_id(b, ctx, r).await,
                )))
            })
        }
        Request::AddPartitionsToTxn(r) => {
            let b = Arc::clone(broker);
            Box::pin(async move {
                Some(Answer::from(Response::from(
                    txn::add_partitions_to_txn(b, ctx, r).await,
                )))
            })
        }
        Request::AddOffsetsToTxn(r) => {
            let b = Arc::clone(broker);
            Box::pin(async move {
                Some(Answer::from(Response::from(
                    txn::add_offsets_to_txn(b, ctx, r).await,
                )))
            })
        }
        Request::EndTxn(r) => {
            let b = Arc::clone(broker);
            Box::pin(
                async move { Some(Answer::from(Response::from(txn::end_txn(b, ctx, r).await))) },
            )
        }
        Request::TxnOffsetCommit(r) => {
            let b = Arc::clone(broker);
            Box::pin(async move {
                Some(Answer::from(Response::from(
                    txn::txn_offset_commit(b, ctx, r).await,
                )))
            })
        }
        Request::DescribeTransactions(r) => ready(txn::describe_transactions(broker, c, r).into()),
        Request::ListTransactions(r) => ready(txn::list_transactions(broker, c, r).into()),
        Request::WriteTxnMarkers(r) => {
            let b = Arc::clone(broker);
            Box::pin(async move {
                Some(Answer::from(Response::from(
                    producers::write_txn_markers(&b, &ctx, r).await,
                )))
            })
        }
        Request::DescribeProducers(r) => ready(producers::describe_producers(broker, c, r).into()),
        Request::AlterUserScramCredentials(r) => {
            let b = Arc::clone(broker);
            Box::pin(
                async move { Some(Answer::from(Response::from(scram::alter(b, ctx, r).await))) },
            )
        }
        Request::DescribeUserScramCredentials(r) => ready(scram::describe(broker, c, r).into()),
        Request::CreateAcls(r) => {
            let b = Arc::clone(broker);
            Box::pin(
                async move { Some(Answer::from(Response::from(acls::create(b, ctx, r).await))) },
            )
        }
        Request::DescribeAcls(r) => ready(acls::describe(broker, c, r).into()),
        Request::DescribeClientQuotas(r) => ready(quotas::describe(broker, c, r).into()),
        Request::AlterClientQuotas(r) => {
            let b = Arc::clone(broker);
            Box::pin(
                async move { Some(Answer::from(Response::from(quotas::alter(b, ctx, r).await))) },
            )
        }
        Request::DeleteAcls(r) => {
            let b = Arc::clone(broker);
            Box::pin(
                async move { Some(Answer::from(Response::from(acls::delete(b, ctx, r).await))) },
            )
        }
        // SASL requests reach the handlers only on a listener without SASL or on a connection
        // that has authenticated already (re-authentication is not offered): Kafka answers
        // those with ILLEGAL_SASL_STATE.
        Request::SaslHandshake(_) => ready(
            vltava_protocol::messages::SaslHandshakeResponse::default()
                .with_error_code(ErrorCode::IllegalSaslState.code())
                .into(),
        ),
        Request::SaslAuthenticate(_) => ready(
            vltava_protocol::messages::SaslAuthenticateResponse::default()
                .with_error_code(ErrorCode::IllegalSaslState.code())
                .with_error_message(Some(StrBytes::from_static_str(
                    "SaslAuthenticate is not expected on this connection",
                )))
                .into(),
        ),
        Request::DeleteRecords(r) => {
            let b = Arc::clone(broker);
            Box::pin(async move {
                Some(Answer::from(Response::from(
                    offsets::delete_records(b, ctx, r).await,
                )))
            })
        }
    })
}

/// A handler's answer and the budget it holds until written.
pub struct Answer {
    pub response: Response,
    pub hold: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The file ranges the response's stand-ins name (a Fetch's records), by index.
    pub regions: Vec<vltava_storage::FileRegion>,
}

impl From<Response> for Answer {
    fn from(response: Response) -> Self {
        Self {
            response,
            hold: None,
            regions: Vec::new(),
        }
    }
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
