//! Transaction APIs: InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn,
//! TxnOffsetCommit, DescribeTransactions and ListTransactions, as Kafka's `KafkaApis`
//! authorizes and answers them; the rules live in the transaction coordinator.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use vltava_coordinator::state::CommitEntry;
use vltava_coordinator::txn_records::{TxnState, NO_PRODUCER_EPOCH, NO_PRODUCER_ID};
use vltava_coordinator::txn_shard::{ListFilter, TxnError};
use vltava_protocol::messages::*;
use vltava_protocol::ErrorCode;

use super::groups::error_code as group_error_code;
use super::topics::is_internal_topic;
use super::{sb, tn};
use crate::broker::Broker;
use crate::context::{AclOperation, RequestContext, Resource};
use vltava_types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId};

fn may_write_txn(broker: &Broker, ctx: &RequestContext, id: &str) -> bool {
    broker.authorize(ctx, AclOperation::Write, Resource::TransactionalId(id))
}

/// KIP-890: requests from v5 on come from clients (or partition leaders) that bump the epoch
/// at every end.
fn client_txn_version(version: i16, first_v2: i16) -> i16 {
    if version >= first_v2 {
        2
    } else {
        0
    }
}

pub async fn init_producer_id(
    broker: Arc<Broker>,
    ctx: RequestContext,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let version = ctx.api_version;
    let mut resp = InitProducerIdResponse::default();
    let fail = |mut resp: InitProducerIdResponse, code: i16| {
        resp.error_code = code;
        resp.producer_id = ProducerId(NO_PRODUCER_ID.get());
        resp.producer_epoch = NO_PRODUCER_EPOCH.get();
        resp
    };
    let Some(id) = req.transactional_id.as_ref().map(|t| t.0.to_string()) else {
        // An idempotent producer: the broker's producer ids.
        return super::producers::init_producer_id(&broker, &ctx, req).await;
    };
    if !may_write_txn(&broker, &ctx, &id) {
        return fail(resp, ErrorCode::TransactionalIdAuthorizationFailed.code());
    }
    let expected = match (req.producer_id.0, req.producer_epoch) {
        (pid, epoch) if pid == NO_PRODUCER_ID.get() && epoch == NO_PRODUCER_EPOCH.get() => None,
        (pid, epoch) if pid == NO_PRODUCER_ID.get() || epoch == NO_PRODUCER_EPOCH.get() => {
            return fail(resp, ErrorCode::InvalidRequest.code())
        }
        (pid, epoch) => Some((ProducerId::new(pid), ProducerEpoch::new(epoch))),
    };
    let result = broker
        .txns
        .init_producer_id(&id, req.transaction_timeout_ms, expected)
        .await;
    match result {
        Ok((pid, epoch)) => {
            resp.producer_id = ProducerId(pid.get());
            resp.producer_epoch = epoch.get();
            resp
        }
        Err(e) => fail(resp, e.for_old_client(version < 4).code()),
    }
}

pub async fn add_partitions_to_txn(
    broker: Arc<Broker>,
    ctx: RequestContext,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let version = ctx.api_version;
    let mut resp = AddPartitionsToTxnResponse::default();
    if version < 4 {
        resp.results_by_topic_v3_and_below = add_for_transaction(
            &broker,
            &ctx,
            &req.v3_and_below_transactional_id.0,
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            &req.v3_and_below_topics,
            false,
        )
        .await;
        return resp;
    }
    // From v4 the request comes from brokers (KIP-890).
    if !broker.authorize(&ctx, AclOperation::ClusterAction, Resource::Cluster) {
        resp.error_code = ErrorCode::ClusterAuthorizationFailed.code();
        return resp;
    }
    for t in &req.transactions {
        let mut r = add_partitions_to_txn_response::AddPartitionsToTxnResult::default();
        r.transactional_id = t.transactional_id.clone();
        r.topic_results = add_for_transaction(
            &broker,
            &ctx,
            &t.transactional_id.0,
            t.producer_id.0,
            t.producer_epoch,
            &t.topics,
            t.verify_only,
        )
        .await;
        resp.results_by_transaction.push(r);
    }
    resp
}

fn topic_results(
    codes: Vec<((String, i32), i16)>,
) -> Vec<add_partitions_to_txn_response::AddPartitionsToTxnTopicResult> {
    let mut by_topic: BTreeMap<String, Vec<(i32, i16)>> = BTreeMap::new();
    for ((t, p), code) in codes {
        by_topic.entry(t).or_default().push((p, code));
    }
    by_topic
        .into_iter()
        .map(|(t, ps)| {
            let mut tr = add_partitions_to_txn_response::AddPartitionsToTxnTopicResult::default();
            tr.name = tn(t);
            tr.results_by_partition = ps
                .into_iter()
                .map(|(p, code)| {
                    let mut pr =
                        add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult::default(
                        );
                    pr.partition_index = p;
                    pr.partition_error_code = code;
                    pr
                })
                .collect();
            tr
        })
        .collect()
}

/// One transaction's partitions: checked as Kafka checks them (any failed partition fails
/// the whole transaction, the others getting OPERATION_NOT_ATTEMPTED), then added or, for
/// `verify_only`, verified.
async fn add_for_transaction(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    id: &str,
    producer_id: i64,
    producer_epoch: i16,
    topics: &[add_partitions_to_txn_request::AddPartitionsToTxnTopic],
    verify_only: bool,
) -> Vec<add_partitions_to_txn_response::AddPartitionsToTxnTopicResult> {
    let version = ctx.api_version;
    let partitions: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), *p)))
        .collect();
    let all = |code: i16| -> Vec<((String, i32), i16)> {
        partitions.iter().map(|tp| (tp.clone(), code)).collect()
    };
    if version < 4 && !may_write_txn(broker, ctx, id) {
        return topic_results(all(ErrorCode::TransactionalIdAuthorizationFailed.code()));
    }
    let image = broker.controller.image();
    let mut failed = false;
    let checked: Vec<((String, i32), Option<i16>)> = partitions
        .iter()
        .map(|(t, p)| {
            // Clients (before v4) must be allowed to write the topic, and never name an
            // internal one.
            let authorized = version >= 4
                || (!is_internal_topic(t)
                    && broker.authorize(ctx, AclOperation::Write, Resource::Topic(t)));
            let code = if !authorized {
                Some(ErrorCode::TopicAuthorizationFailed.code())
            } else if !image
                .topic(t)
                .is_some_and(|ti| ti.partitions.contains_key(p))
            {
                Some(ErrorCode::UnknownTopicOrPartition.code())
            } else {
                None
            };
            failed |= code.is_some();
            ((t.clone(), *p), code)
        })
        .collect();
    if failed {
        let not_attempted = ErrorCode::OperationNotAttempted.code();
        return topic_results(
            checked
                .into_iter()
                .map(|(tp, c)| (tp, c.unwrap_or(not_attempted)))
                .collect(),
        );
    }
    if verify_only {
        return match broker
            .txns
            .verify_partitions(id, producer_id, producer_epoch, &partitions)
        {
            Ok(v) => topic_results(
                v.into_iter()
                    .map(|(tp, r)| (tp, r.err().map_or(0, TxnError::code)))
                    .collect(),
            ),
            Err(e) => topic_results(all(e.code())),
        };
    }
    let code = match broker
        .txns
        .add_partitions(
            id,
            producer_id,
            producer_epoch,
            partitions.clone(),
            client_txn_version(version, 5),
        )
        .await
    {
        Ok(()) => 0,
        Err(e) => e.for_old_client(version < 2).code(),
    };
    topic_results(all(code))
}

pub async fn add_offsets_to_txn(
    broker: Arc<Broker>,
    ctx: RequestContext,
    req: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let version = ctx.api_version;
    let id = req.transactional_id.0.to_string();
    let group = req.group_id.0.to_string();
    let code = if !may_write_txn(&broker, &ctx, &id) {
        ErrorCode::TransactionalIdAuthorizationFailed.code()
    } else if !broker.authorize(&ctx, AclOperation::Read, Resource::Group(&group)) {
        ErrorCode::GroupAuthorizationFailed.code()
    } else {
        let partition = broker.groups.partition_for(&group);
        match broker
            .txns
            .add_partitions(
                &id,
                req.producer_id.0,
                req.producer_epoch,
                vec![(
                    crate::group_coordinator::OFFSETS_TOPIC.to_string(),
                    partition,
                )],
                0,
            )
            .await
        {
            Ok(()) => 0,
            Err(e) => e.for_old_client(version < 2).code(),
        }
    };
    AddOffsetsToTxnResponse::default().with_error_code(code)
}

pub async fn end_txn(
    broker: Arc<Broker>,
    ctx: RequestContext,
    req: EndTxnRequest,
) -> EndTxnResponse {
    let version = ctx.api_version;
    let id = req.transactional_id.0.to_string();
    let result = if !may_write_txn(&broker, &ctx, &id) {
        Err(ErrorCode::TransactionalIdAuthorizationFailed.code())
    } else {
        broker
            .txns
            .end_txn(
                &id,
                ProducerId::new(req.producer_id.0),
                ProducerEpoch::new(req.producer_epoch),
                req.committed,
                client_txn_version(version, 5),
            )
            .await
            .map_err(|e| e.for_old_client(version < 2).code())
    };
    let mut resp = EndTxnResponse::default();
    match result {
        Ok((pid, epoch)) => {
            resp.producer_id = ProducerId(pid.get());
            resp.producer_epoch = epoch.get();
        }
        Err(code) => {
            resp.error_code = code;
            resp.producer_id = ProducerId(NO_PRODUCER_ID.get());
            resp.producer_epoch = NO_PRODUCER_EPOCH.get();
        }
    }
    resp
}

pub async fn txn_offset_commit(
    broker: Arc<Broker>,
    ctx: RequestContext,
    req: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let version = ctx.api_version;
    let id = req.transactional_id.0.to_string();
    let group = req.group_id.0.to_string();
    let whole = if !may_write_txn(&broker, &ctx, &id) {
        Some(ErrorCode::TransactionalIdAuthorizationFailed.code())
    } else if !broker.authorize(&ctx, AclOperation::Read, Resource::Group(&group)) {
        Some(ErrorCode::GroupAuthorizationFailed.code())
    } else if group.is_empty() {
        Some(ErrorCode::InvalidGroupId.code())
    } else {
        None
    };
    let image = broker.controller.image();
    let mut topics = Vec::new();
    let mut entries = Vec::new();
    let mut slots: Vec<(usize, usize)> = Vec::new();
    for t in &req.topics {
        let name = t.name.0.to_string();
        let mut tr = txn_offset_commit_response::TxnOffsetCommitResponseTopic::default();
        tr.name = t.name.clone();
        let readable = broker.authorize(&ctx, AclOperation::Read, Resource::Topic(&name));
        for p in &t.partitions {
            let mut pr = txn_offset_commit_response::TxnOffsetCommitResponsePartition::default();
            pr.partition_index = p.partition_index;
            pr.error_code = if let Some(code) = whole {
                code
            } else if !readable {
                ErrorCode::TopicAuthorizationFailed.code()
            } else if !image
                .topic(&name)
                .is_some_and(|ti| ti.partitions.contains_key(&p.partition_index))
            {
                ErrorCode::UnknownTopicOrPartition.code()
            } else if p
                .committed_metadata
                .as_ref()
                .is_some_and(|m| m.len() > broker.groups.metadata_max_bytes)
            {
                ErrorCode::OffsetMetadataTooLarge.code()
            } else {
                slots.push((topics.len(), tr.partitions.len()));
                entries.push(CommitEntry {
                    topic: name.clone(),
                    partition: p.partition_index,
                    offset: Offset::new(p.committed_offset),
                    leader_epoch: if version >= 2 {
                        LeaderEpoch::new(p.committed_leader_epoch)
                    } else {
                        LeaderEpoch::new(-1)
                    },
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                });
                0
            };
            tr.partitions.push(pr);
        }
        topics.push(tr);
    }
    if !entries.is_empty() {
        // Members are named from v3; older clients commit as a group-less producer.
        let (member, generation, instance) = if version >= 3 {
            (
                req.member_id.to_string(),
                req.generation_id,
                req.group_instance_id.as_ref().map(|s| s.to_string()),
            )
        } else {
            (String::new(), -1, None)
        };
        let written = broker.groups.txn_commit(
            &group,
            req.producer_id.0,
            req.producer_epoch,
            &member,
            generation,
            instance.as_deref(),
            &entries,
        );
        let code = match tokio::time::timeout(
            Duration::from_millis(broker.groups.commit_timeout_ms),
            written,
        )
        .await
        {
            Ok(Ok(())) => 0,
            Ok(Err(e)) => group_error_code(e).code(),
            Err(_) => ErrorCode::RequestTimedOut.code(),
        };
        if code != 0 {
            for (ti, pi) in slots {
                topics[ti].partitions[pi].error_code = code;
            }
        }
    }
    TxnOffsetCommitResponse::default().with_topics(topics)
}

pub fn describe_transactions(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let states = req
        .transactional_ids
        .iter()
        .map(|tid| {
            let id = tid.0.to_string();
            let mut s = describe_transactions_response::TransactionState::default();
            s.transactional_id = tid.clone();
            s.producer_id = ProducerId(NO_PRODUCER_ID.get());
            s.producer_epoch = NO_PRODUCER_EPOCH.get();
            if !broker.authorize(ctx, AclOperation::Describe, Resource::TransactionalId(&id)) {
                s.error_code = ErrorCode::TransactionalIdAuthorizationFailed.code();
                return s;
            }
            match broker.txns.describe(&id) {
                Ok(d) => {
                    s.transaction_state = sb(d.state.name());
                    s.producer_id = ProducerId(d.producer_id.get());
                    s.producer_epoch = d.producer_epoch.get();
                    s.transaction_timeout_ms = d.timeout_ms;
                    s.transaction_start_time_ms = d.start_ms;
                    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                    for (t, p) in d.partitions {
                        by_topic.entry(t).or_default().push(p);
                    }
                    // Only topics the client may describe are shown, as in Kafka.
                    s.topics = by_topic
                        .into_iter()
                        .filter(|(t, _)| {
                            broker.authorize(ctx, AclOperation::Describe, Resource::Topic(t))
                        })
                        .map(|(t, ps)| {
                            let mut td = describe_transactions_response::TopicData::default();
                            td.topic = tn(t);
                            td.partitions = ps;
                            td
                        })
                        .collect();
                }
                Err(e) => s.error_code = e.code(),
            }
            s
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

pub fn list_transactions(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let mut resp = ListTransactionsResponse::default();
    let mut filter = ListFilter {
        producer_ids: req
            .producer_id_filters
            .iter()
            .map(|p| ProducerId::new(p.0))
            .collect(),
        min_duration_ms: if ctx.api_version >= 1 {
            req.duration_filter
        } else {
            -1
        },
        ..ListFilter::default()
    };
    let mut unknown = false;
    for name in &req.state_filters {
        match TxnState::from_name(name) {
            Some(s) => filter.states.push(s),
            None => {
                unknown = true;
                resp.unknown_state_filters.push(name.clone());
            }
        }
    }
    // Only unknown state names: nothing can match them (Kafka filters by the known ones).
    if unknown && filter.states.is_empty() {
        return resp;
    }
    match broker.txns.list(&filter) {
        Ok(list) => {
            resp.transaction_states = list
                .into_iter()
                .filter(|t| {
                    broker.authorize(
                        ctx,
                        AclOperation::Describe,
                        Resource::TransactionalId(&t.transactional_id),
                    )
                })
                .map(|t| {
                    let mut s = list_transactions_response::TransactionState::default();
                    s.transactional_id = TransactionalId(sb(t.transactional_id));
                    s.producer_id = ProducerId(t.producer_id.get());
                    s.transaction_state = sb(t.state.name());
                    s
                })
                .collect();
        }
        Err(e) => resp.error_code = e.code(),
    }
    resp
}

/// FindCoordinator for a transactional id (key type 1): this broker, once the caller may
/// describe the id.
pub fn coordinator_error(broker: &Broker, ctx: &RequestContext, id: &str) -> Option<ErrorCode> {
    if id.is_empty() {
        Some(ErrorCode::InvalidRequest)
    } else if !broker.authorize(ctx, AclOperation::Describe, Resource::TransactionalId(id)) {
        Some(ErrorCode::TransactionalIdAuthorizationFailed)
    } else {
        None
    }
}
