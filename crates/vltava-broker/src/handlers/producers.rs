//! Producer ids and transaction markers: InitProducerId (idempotent producers; a
//! transactional id goes to the transaction coordinator), WriteTxnMarkers and
//! DescribeProducers.

use std::sync::Arc;

use vltava_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use vltava_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use vltava_protocol::messages::*;
use vltava_protocol::ErrorCode;
use vltava_record::TransactionResult;

use super::produce::storage_error_code;
use crate::broker::{now_ms, Broker};
use crate::context::{AclOperation, RequestContext, Resource};
use crate::partition::AppendError;

/// InitProducerId without a transactional id: a fresh producer id at epoch 0 every time,
/// as Kafka does (KIP-360's epoch bump of an idempotent producer gets a new id too).
pub async fn init_producer_id(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = (-1).into();
    resp.producer_epoch = -1;
    let fail = |mut r: InitProducerIdResponse, code: ErrorCode| {
        r.error_code = code.code();
        r
    };
    if let Some(tid) = req.transactional_id.as_ref() {
        if tid.0.is_empty() {
            return fail(resp, ErrorCode::InvalidRequest);
        }
        if !broker.authorize(ctx, AclOperation::Write, Resource::TransactionalId(&tid.0)) {
            return fail(resp, ErrorCode::TransactionalIdAuthorizationFailed);
        }
        // Transactional producers are the transaction coordinator's.
        return fail(resp, ErrorCode::CoordinatorNotAvailable);
    }
    if !broker.authorize(ctx, AclOperation::IdempotentWrite, Resource::Cluster) {
        return fail(resp, ErrorCode::ClusterAuthorizationFailed);
    }
    match broker.producer_ids.next_id().await {
        Ok(id) => {
            resp.producer_id = id.into();
            resp.producer_epoch = 0;
            resp
        }
        Err(e) => {
            tracing::warn!(error = %e.message, "could not allocate a producer id");
            fail(resp, e.code)
        }
    }
}

/// One marker to write: the transaction coordinator's view of WriteTxnMarkers.
#[derive(Debug, Clone)]
pub struct MarkerRequest {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub result: TransactionResult,
    pub coordinator_epoch: i32,
    pub partitions: Vec<(String, i32)>,
}

/// Writes each marker to the partitions this broker leads, and waits until they are
/// durable on their ISR: a marker is the commit point of its transaction on that partition. Returns one
/// result per partition, in request order (`None`: written). The transaction coordinator calls this
/// directly for local partitions; the WriteTxnMarkers handler for remote coordinators.
pub async fn write_markers(broker: &Arc<Broker>, markers: &[MarkerRequest]) -> MarkerResults {
    let now = now_ms();
    let mut results = Vec::with_capacity(markers.len());
    let mut waits = Vec::new();
    crate::broker::blocking_io(|| append_markers(broker, markers, now, &mut results, &mut waits));
    for (mi, pi, p, end) in waits {
        // As Kafka appends markers: acks=all, so durable on the whole ISR.
        if let Err(e) = p.wait_acked(end, true).await {
            results[mi][pi].1 = Some(match e {
                crate::partition::AckError::Storage(e) => storage_error_code(&e),
                crate::partition::AckError::NotLeader => ErrorCode::NotLeaderOrFollower,
                crate::partition::AckError::NotEnoughReplicasAfterAppend { .. } => {
                    ErrorCode::NotEnoughReplicasAfterAppend
                }
            });
        }
    }
    results
}

/// Marker results per request, and the partitions and offsets whose durability to wait for.
type MarkerResults = Vec<Vec<((String, i32), Option<ErrorCode>)>>;
type MarkerWaits = Vec<(usize, usize, Arc<crate::partition::Partition>, i64)>;

fn append_markers(
    broker: &Arc<Broker>,
    markers: &[MarkerRequest],
    now: i64,
    results: &mut MarkerResults,
    waits: &mut MarkerWaits,
) {
    for (mi, m) in markers.iter().enumerate() {
        let mut r = Vec::with_capacity(m.partitions.len());
        for (topic, index) in &m.partitions {
            let code = match broker.partitions.get(topic, *index) {
                None => Some(ErrorCode::UnknownTopicOrPartition),
                Some(p) => match p.append_txn_marker(
                    m.producer_id,
                    m.producer_epoch,
                    m.result,
                    m.coordinator_epoch,
                    now,
                ) {
                    Ok(info) => {
                        p.request_flush();
                        waits.push((mi, r.len(), p, info.last_offset.next().get()));
                        None
                    }
                    Err(AppendError::NotLeader(_)) => Some(ErrorCode::NotLeaderOrFollower),
                    Err(AppendError::Storage(e)) => Some(storage_error_code(&e)),
                },
            };
            r.push(((topic.clone(), *index), code));
        }
        results.push(r);
    }
}

/// WriteTxnMarkers: sent by a transaction coordinator to partition leaders.
pub async fn write_txn_markers(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let allowed = broker.authorize(ctx, AclOperation::ClusterAction, Resource::Cluster);
    let markers: Vec<MarkerRequest> = req
        .markers
        .iter()
        .map(|m| MarkerRequest {
            producer_id: m.producer_id.0,
            producer_epoch: m.producer_epoch,
            result: if m.transaction_result {
                TransactionResult::Commit
            } else {
                TransactionResult::Abort
            },
            coordinator_epoch: m.coordinator_epoch,
            partitions: m
                .topics
                .iter()
                .flat_map(|t| {
                    t.partition_indexes
                        .iter()
                        .map(move |p| (t.name.0.to_string(), *p))
                })
                .collect(),
        })
        .collect();
    let results = if allowed {
        write_markers(broker, &markers).await
    } else {
        markers
            .iter()
            .map(|m| {
                m.partitions
                    .iter()
                    .map(|tp| (tp.clone(), Some(ErrorCode::ClusterAuthorizationFailed)))
                    .collect()
            })
            .collect()
    };
    let mut resp = WriteTxnMarkersResponse::default();
    for (m, r) in markers.iter().zip(results) {
        let mut mr = WritableTxnMarkerResult::default();
        mr.producer_id = m.producer_id.into();
        for ((topic, index), code) in r {
            if mr.topics.last().is_none_or(|t| *t.name.0 != *topic) {
                let mut t = WritableTxnMarkerTopicResult::default();
                t.name = super::tn(topic.clone());
                mr.topics.push(t);
            }
            let mut pr = WritableTxnMarkerPartitionResult::default();
            pr.partition_index = index;
            pr.error_code = code.map_or(0, |c| c.code());
            mr.topics.last_mut().expect("pushed").partitions.push(pr);
        }
        resp.markers.push(mr);
    }
    resp
}

/// DescribeProducers: the producer state of each partition this broker leads.
pub fn describe_producers(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let mut resp = DescribeProducersResponse::default();
    for t in req.topics {
        let name = t.name.0.to_string();
        let allowed = broker.authorize(ctx, AclOperation::Read, Resource::Topic(&name));
        let mut tr = TopicResponse::default();
        tr.name = t.name.clone();
        for index in t.partition_indexes {
            let mut pr = PartitionResponse::default();
            pr.partition_index = index;
            match broker.partitions.get(&name, index) {
                _ if !allowed => pr.error_code = ErrorCode::TopicAuthorizationFailed.code(),
                None => pr.error_code = ErrorCode::UnknownTopicOrPartition.code(),
                Some(p) if !p.is_leader() => pr.error_code = ErrorCode::NotLeaderOrFollower.code(),
                Some(p) => {
                    pr.active_producers = p
                        .producers()
                        .into_iter()
                        .map(|s| {
                            let mut ps = ProducerState::default();
                            ps.producer_id = s.producer_id.get().into();
                            ps.producer_epoch = i32::from(s.epoch.get());
                            ps.last_sequence = s.last_sequence;
                            ps.last_timestamp = s.last_timestamp;
                            ps.coordinator_epoch = s.coordinator_epoch;
                            ps.current_txn_start_offset = s.current_txn_start_offset.get();
                            ps
                        })
                        .collect();
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}
