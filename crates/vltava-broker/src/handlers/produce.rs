//! Produce: validate batch headers and CRCs, check that compressed batches hold what they
//! claim, append as received, answer by `acks`.

use std::sync::Arc;
use std::time::Duration;

use futures::future::{join_all, BoxFuture};
use vltava_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use vltava_protocol::messages::*;
use vltava_protocol::{ErrorCode, Response};
use vltava_record::RecordError;
use vltava_storage::StorageError;

use super::{sb, tn};
use crate::broker::{now_ms, Broker};
use crate::context::{AclOperation, RequestContext, Resource};
use crate::partition::{AckError, AppendError, Partition};
use crate::splice::SplicedRecords;
use crate::txn_coordinator::TxnCoordError;
use vltava_coordinator::txn_shard::TxnError;

fn record_error_code(e: &RecordError) -> ErrorCode {
    match e {
        RecordError::UnsupportedMagic { .. } => ErrorCode::UnsupportedForMessageFormat,
        RecordError::TooLarge { .. } => ErrorCode::MessageTooLarge,
        RecordError::CrcMismatch { .. }
        | RecordError::Truncated { .. }
        | RecordError::InvalidLength { .. }
        | RecordError::InvalidRecordCount { .. }
        | RecordError::Empty
        | RecordError::Decompress { .. }
        | RecordError::DecompressionBomb { .. }
        | RecordError::Varint { .. }
        | RecordError::MalformedRecord { .. }
        | RecordError::TrailingBytes { .. }
        | RecordError::Control(_) => ErrorCode::CorruptMessage,
    }
}

/// How far a compressed batch may expand, as a multiple of the largest batch the topic
/// accepts (at least 1 MiB). Producers close batches near their own size limits before
/// compressing, so honest batches stay far below; a batch past it is an attack.
const MAX_EXPANSION: u64 = 64;

/// A request built to hurt the broker: its connection is closed rather than answered.
#[derive(Debug)]
pub struct Hostile(pub String);

/// What to do with one partition's payload once it has been checked.
enum Plan {
    /// Append, with the KIP-890 guard of a verified transactional batch.
    Append(Arc<Partition>, Payload, Option<vltava_storage::TxnGuard>),
    Answer(PartitionProduceResponse),
}

/// One partition's records: in memory, or checked and waiting in a pipe
/// ([`crate::splice`]).
enum Payload {
    Bytes(bytes::Bytes),
    Spliced(SplicedRecords),
}

impl Payload {
    fn first_header(&self) -> Option<vltava_record::BatchHeader> {
        match self {
            Payload::Bytes(b) => vltava_record::Batches::new(b)
                .next()
                .and_then(|r| r.ok())
                .map(|(h, _)| h),
            Payload::Spliced(r) => r.batches().first().map(|b| b.parsed()),
        }
    }
}

pub(crate) fn storage_error_code(e: &StorageError) -> ErrorCode {
    use vltava_storage::producer_state::ProducerError as P;
    match e {
        StorageError::Corrupt { .. } => ErrorCode::CorruptMessage,
        StorageError::Producer(p) => match p {
            P::InvalidProducerEpoch { .. } => ErrorCode::InvalidProducerEpoch,
            P::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequenceNumber,
            P::InvalidTxnState { .. } => ErrorCode::InvalidTxnState,
            P::CoordinatorFenced { .. } => ErrorCode::TransactionCoordinatorFenced,
            P::ControlBatchFromClient | P::MultipleBatches => ErrorCode::InvalidRecord,
        },
        _ => ErrorCode::KafkaStorageError,
    }
}

fn partition_error(
    index: i32,
    code: ErrorCode,
    message: Option<String>,
) -> PartitionProduceResponse {
    let mut r = PartitionProduceResponse::default();
    r.index = index;
    r.error_code = code.code();
    r.base_offset = -1;
    r.log_append_time_ms = -1;
    r.log_start_offset = -1;
    r.error_message = message.map(sb);
    r
}

/// Checks spliced records, whose headers and CRCs were checked as they arrived: the batch
/// sizes against the topic's limit. Compressed batches, compacted topics and recompression
/// need the records themselves: those are read into memory and checked as usual.
fn check_spliced(
    p: Arc<Partition>,
    index: i32,
    mut records: SplicedRecords,
) -> Result<Plan, Hostile> {
    let read_back = |records: SplicedRecords| {
        records
            .into_bytes()
            .map_err(|e| Hostile(format!("cannot read spliced records back: {e}")))
    };
    match records.check() {
        Ok(true) => {}
        // The ordinary checks say what is wrong.
        Ok(false) => return check(p, index, Some(read_back(records)?)),
        Err(e) => return Err(Hostile(format!("cannot check spliced records: {e}"))),
    }
    let settings = p.settings();
    let max = settings.log.max_message_bytes;
    let batches = records.batches();
    if let Some(h) = batches
        .iter()
        .map(|b| b.parsed())
        .find(|h| h.total_len() > max)
    {
        let e = RecordError::TooLarge {
            size: h.total_len(),
            limit: max,
        };
        tracing::debug!(partition = ?p, error = %e, "rejected produce payload");
        p.stats.rejected(records.len() as u64);
        return Ok(Plan::Answer(partition_error(
            index,
            record_error_code(&e),
            Some(e.to_string()),
        )));
    }
    let in_memory = settings.log.compact
        || batches.iter().map(|b| b.parsed()).any(|h| {
            h.compression() != vltava_record::Compression::None
                || settings
                    .compression
                    .is_some_and(|target| h.compression() != target && !h.is_control())
        });
    if !in_memory {
        return Ok(Plan::Append(p, Payload::Spliced(records), None));
    }
    check(p, index, Some(read_back(records)?))
}

/// Checks one partition's payload without appending it: headers, sizes and CRCs, and for
/// compressed batches every record inside, within the expansion cap.
fn check(p: Arc<Partition>, index: i32, records: Option<bytes::Bytes>) -> Result<Plan, Hostile> {
    let Some(records) = records.filter(|r| !r.is_empty()) else {
        return Ok(Plan::Answer(partition_error(
            index,
            ErrorCode::CorruptMessage,
            Some("produce request has no record batches".into()),
        )));
    };
    let max = p.settings().log.max_message_bytes;
    let rejected = |e: RecordError| {
        tracing::debug!(partition = ?p, error = %e, "rejected produce payload");
        p.stats.rejected(records.len() as u64);
        Ok(Plan::Answer(partition_error(
            index,
            record_error_code(&e),
            Some(e.to_string()),
        )))
    };
    if let Err(e) = vltava_record::validate(&records, max) {
        return rejected(e);
    }
    let limit = (max as u64).max(1 << 20) * MAX_EXPANSION;
    // A compacted topic needs a key on every record (Kafka's LogValidator): only then are
    // uncompressed batches walked record by record, streaming, with nothing allocated per
    // record unless one is refused.
    let compacted = p.settings().log.compact;
    let mut keyless: Vec<BatchIndexAndErrorMessage> = Vec::new();
    for batch in vltava_record::Batches::new(&records) {
        let (h, range) = match batch {
            Ok((h, range)) if compacted || h.compression() != vltava_record::Compression::None => {
                (h, range)
            }
            _ => continue,
        };
        let checked = vltava_record::check_records(&records[range], limit, |index| {
            if compacted && !h.is_control() {
                let mut e = BatchIndexAndErrorMessage::default();
                e.batch_index = index;
                e.batch_index_error_message = Some(sb(format!(
                    "Compacted topic cannot accept message without key in topic partition {}-{}.",
                    p.topic, p.index
                )));
                keyless.push(e);
            }
        });
        match checked {
            Ok(()) => {}
            Err(e @ RecordError::DecompressionBomb { .. }) => {
                return Err(Hostile(format!("produce to {p:?}: {e}")))
            }
            Err(e) => return rejected(e),
        }
    }
    if !keyless.is_empty() {
        tracing::debug!(partition = ?p, records = keyless.len(), "refused keyless records for a compacted topic");
        p.stats.rejected(records.len() as u64);
        let shown: Vec<String> = keyless
            .iter()
            .take(3)
            .map(|e| {
                format!(
                    "RecordError(batchIndex={}, message='{}')",
                    e.batch_index,
                    e.batch_index_error_message.as_deref().unwrap_or("")
                )
            })
            .collect();
        let mut r = partition_error(
            index,
            ErrorCode::InvalidRecord,
            Some(format!(
                "One or more records have been rejected due to {} record errors in total, and only showing the first three errors at most: [{}]",
                keyless.len(),
                shown.join(", ")
            )),
        );
        r.record_errors = keyless;
        return Ok(Plan::Answer(r));
    }
    Ok(Plan::Append(p, Payload::Bytes(records), None))
}

/// KIP-890 part 1: a transactional batch that would open a transaction in this partition
/// is written only if the coordinator has the partition in the producer's ongoing
/// transaction, so a late or stray batch cannot start a transaction nobody will end (which
/// would hold the last stable offset back for good).
fn verify_txn(
    broker: &Arc<Broker>,
    transactional_id: Option<&str>,
    version: i16,
    p: Arc<Partition>,
    index: i32,
    records: Payload,
) -> Plan {
    let Some(h) = records.first_header() else {
        return Plan::Append(p, records, None);
    };
    if !h.is_transactional() || p.in_transaction(h.producer_id, h.producer_epoch) {
        return Plan::Append(p, records, None);
    }
    let fail = |code: ErrorCode, msg: String| Plan::Answer(partition_error(index, code, Some(msg)));
    let Some(tid) = transactional_id else {
        return fail(
            ErrorCode::InvalidRecord,
            "a transactional batch needs the request's transactional id".into(),
        );
    };
    let tp = [(p.topic.to_string(), index)];
    // The guard is taken before asking: a marker written meanwhile (the transaction ended)
    // drops it, and the append then refuses the batch.
    let guard = p.start_txn_verification(h.producer_id);
    let verified = broker
        .txns
        .verify_partitions(tid, h.producer_id, h.producer_epoch, &tp);
    let verified = verified.map(|mut v| v.pop().map(|(_, r)| r));
    if !matches!(verified, Ok(Some(Ok(())))) {
        p.end_txn_verification(guard);
    }
    match verified {
        Ok(Some(Ok(()))) => Plan::Append(p, records, Some(guard)),
        Ok(Some(Err(e))) | Err(TxnCoordError::Txn(e)) => {
            // As from Kafka: a fenced producer hears INVALID_PRODUCER_EPOCH from a partition,
            // and TRANSACTION_ABORTABLE is known to Produce v11+ only (INVALID_TXN_STATE
            // before).
            let e = match e {
                TxnError::ProducerFenced => TxnError::InvalidProducerEpoch,
                TxnError::TransactionAbortable if version < 11 => TxnError::InvalidTxnState,
                e => e,
            };
            let code = ErrorCode::try_from_code(e.code()).unwrap_or(ErrorCode::InvalidTxnState);
            fail(
                code,
                format!("{p:?} is not in the transaction of {tid}: {e}"),
            )
        }
        // The coordinator cannot answer now: a code every producer retries.
        Ok(None) | Err(_) => fail(
            ErrorCode::NotEnoughReplicas,
            "the transaction coordinator could not verify the transaction".into(),
        ),
    }
}

/// What an answer waits for once the records are appended.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// acks=all: replicated to the whole ISR (and fsynced here when `durable`).
    Acked { durable: bool },
    /// `flush.messages` reached: an fsync here.
    Durable,
}

/// Appends one checked payload. Returns the response entry and, when the answer must wait,
/// the partition, the offset the wait is for, and what it waits for.
fn append_one(
    p: &Arc<Partition>,
    index: i32,
    records: Payload,
    acks: i16,
    guard: Option<vltava_storage::TxnGuard>,
) -> (
    PartitionProduceResponse,
    Option<(Arc<Partition>, i64, Wait)>,
) {
    let settings = p.settings();
    let (appended, len) = match records {
        Payload::Bytes(records) => match to_append(p, index, records) {
            Ok(b) => (
                p.append_as_leader_guarded(&b, now_ms(), |_| Ok(()), guard),
                b.len(),
            ),
            Err(answer) => return (*answer, None),
        },
        Payload::Spliced(mut records) => {
            let batches = records.take_batches();
            let len = records.len();
            let appended = p.append_streamed_as_leader_guarded(
                &batches,
                &mut records,
                now_ms(),
                |_| Ok(()),
                guard,
            );
            if appended.as_ref().is_ok_and(|i| !i.duplicate) {
                p.stats.spliced(len as u64);
            }
            (appended, len)
        }
    };
    let info = match appended {
        Ok(i) => i,
        Err(AppendError::NotLeader(m)) => {
            p.stats.produced(Err(()));
            return (
                partition_error(index, ErrorCode::NotLeaderOrFollower, Some(m)),
                None,
            );
        }
        Err(AppendError::Storage(e)) => {
            p.stats.produced(Err(()));
            return (
                partition_error(index, storage_error_code(&e), Some(e.to_string())),
                None,
            );
        }
    };
    // A producer's retry of a batch already in the log appends nothing.
    p.stats.produced(Ok(if info.duplicate {
        (0, 0)
    } else {
        (
            (info.last_offset.get() - info.base_offset.get() + 1) as u64,
            len as u64,
        )
    }));
    let end = info.last_offset.next().get();
    let wait = match settings.flush_messages {
        // acks=all waits for the ISR; fsynced here too unless the topic flushes on a
        // schedule. A retried batch already in the log waits as its first write did.
        _ if acks == -1 => Some(Wait::Acked {
            durable: settings.flush_ms.is_none() && settings.flush_messages.is_none(),
        }),
        _ if info.duplicate => None,
        // Kafka's flush.messages: fsync once that many messages are unflushed, whatever acks.
        Some(n) => (p.unflushed() >= n).then_some(Wait::Durable),
        None => None,
    };
    if wait.is_some() {
        // Ask now rather than when the future is first polled, so that requests queued behind
        // this one on the connection share the same fsync; and have the disk start on these
        // bytes now, so that an fsync still running for earlier ones does not hold them back.
        p.request_flush();
        p.start_writeback();
    }
    let mut r = PartitionProduceResponse::default();
    r.index = index;
    r.base_offset = info.base_offset.get();
    r.log_append_time_ms = info.log_append_time;
    r.log_start_offset = info.log_start_offset.get();
    (r, wait.map(|w| (Arc::clone(p), end, w)))
}

/// The in-memory records to append: as they came, or rewritten when the topic's
/// `compression.type` names another codec. `Err` is the refusal to answer.
fn to_append(
    p: &Arc<Partition>,
    index: i32,
    records: bytes::Bytes,
) -> Result<bytes::Bytes, Box<PartitionProduceResponse>> {
    let settings = p.settings();
    let max = settings.log.max_message_bytes;
    let recompress = settings.compression.filter(|target| {
        vltava_record::Batches::new(&records)
            .any(|b| b.is_ok_and(|(h, _)| h.compression() != *target && !h.is_control()))
    });
    // The request's bytes go to the log as they are (the log writes rewritten headers in
    // front of them). A topic whose `compression.type` names another codec gets the batches
    // rewritten with it instead (checked, and within the same expansion cap).
    let Some(target) = recompress else {
        return Ok(records);
    };
    let limit = (max as u64).max(1 << 20) * MAX_EXPANSION;
    // Each rewritten batch must still fit `max.message.bytes`, as Kafka checks.
    vltava_record::recompress(&records, target, limit)
        .and_then(|b| vltava_record::validate(&b, max).map(|_| b.into()))
        .map_err(|e| {
            p.stats.produced(Err(()));
            p.stats.rejected(records.len() as u64);
            Box::new(partition_error(
                index,
                record_error_code(&e),
                Some(e.to_string()),
            ))
        })
}

/// Starts a Produce. Every payload is checked before any is appended, so a request carrying
/// a bomb is refused whole: `Err` closes the connection.
pub fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ProduceRequest,
) -> Result<BoxFuture<'static, Option<Response>>, Hostile> {
    handle_with(broker, ctx, req, None)
}

/// [`handle`] for a request of one partition whose records the connection spliced into a
/// pipe (its records field is empty).
pub fn handle_spliced(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ProduceRequest,
    records: SplicedRecords,
) -> Result<BoxFuture<'static, Option<Response>>, Hostile> {
    handle_with(broker, ctx, req, Some(records))
}

fn handle_with(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ProduceRequest,
    mut spliced: Option<SplicedRecords>,
) -> Result<BoxFuture<'static, Option<Response>>, Hostile> {
    let version = ctx.api_version;
    let acks = req.acks;
    let valid_acks = matches!(acks, -1..=1);
    let image = (version >= 13).then(|| broker.controller.image());
    let mut planned = Vec::with_capacity(req.topic_data.len());
    for topic in req.topic_data {
        let name = match &image {
            Some(img) => img.topic_by_id(&topic.topic_id).map(|t| t.name.clone()),
            None => Some(topic.name.0.to_string()),
        };
        let mut plans = Vec::with_capacity(topic.partition_data.len());
        for pd in topic.partition_data {
            let plan = if !valid_acks {
                Plan::Answer(partition_error(
                    pd.index,
                    ErrorCode::InvalidRequiredAcks,
                    None,
                ))
            } else if req.transactional_id.as_ref().is_some_and(|tid| {
                !broker.authorize(ctx, AclOperation::Write, Resource::TransactionalId(&tid.0))
            }) {
                Plan::Answer(partition_error(
                    pd.index,
                    ErrorCode::TransactionalIdAuthorizationFailed,
                    None,
                ))
            } else if name
                .as_deref()
                .is_some_and(|n| !broker.authorize(ctx, AclOperation::Write, Resource::Topic(n)))
            {
                Plan::Answer(partition_error(
                    pd.index,
                    ErrorCode::TopicAuthorizationFailed,
                    None,
                ))
            } else {
                match name
                    .as_deref()
                    .and_then(|n| broker.partitions.get(n, pd.index))
                {
                    None => {
                        let code = match name.as_deref() {
                            None => ErrorCode::UnknownTopicId,
                            Some(n) => broker.not_hosted(n, pd.index),
                        };
                        Plan::Answer(partition_error(pd.index, code, None))
                    }
                    Some(p) if acks == -1 && p.isr().len() < p.settings().min_insync_replicas => {
                        Plan::Answer(partition_error(
                            pd.index,
                            ErrorCode::NotEnoughReplicas,
                            Some(format!(
                                "The size of the current ISR {} is insufficient to satisfy the min.isr requirement of {}",
                                p.isr().len(),
                                p.settings().min_insync_replicas
                            )),
                        ))
                    }
                    Some(p) => match match spliced.take() {
                        Some(records) => check_spliced(p, pd.index, records)?,
                        None => check(p, pd.index, pd.records)?,
                    } {
                        Plan::Append(p, records, _) => verify_txn(
                            broker,
                            req.transactional_id.as_ref().map(|t| &*t.0),
                            version,
                            p,
                            pd.index,
                            records,
                        ),
                        answer => answer,
                    },
                }
            };
            plans.push((pd.index, plan));
        }
        let mut tr = TopicProduceResponse::default();
        tr.topic_id = topic.topic_id;
        tr.name = match name {
            Some(n) if version >= 13 => tn(n),
            _ => topic.name,
        };
        planned.push((tr, plans));
    }
    let mut responses = Vec::with_capacity(planned.len());
    let mut waits = Vec::new();
    for (ti, (mut tr, plans)) in planned.into_iter().enumerate() {
        for (index, plan) in plans {
            let entry = match plan {
                Plan::Answer(r) => {
                    broker.partitions.topic_metrics.produce_refused();
                    r
                }
                Plan::Append(p, records, guard) => {
                    let (r, wait) = append_one(&p, index, records, acks, guard);
                    if let Some((p, end, what)) = wait {
                        waits.push((ti, tr.partition_responses.len(), p, end, what));
                    }
                    r
                }
            };
            tr.partition_responses.push(entry);
        }
        responses.push(tr);
    }
    let timeout = Duration::from_millis(req.timeout_ms.max(0) as u64);
    Ok(Box::pin(async move {
        if !waits.is_empty() {
            let results = tokio::time::timeout(
                timeout.max(Duration::from_millis(1)),
                join_all(waits.iter().map(|(_, _, p, end, what)| async move {
                    match what {
                        Wait::Acked { durable } => p.wait_acked(*end, *durable).await,
                        Wait::Durable => p.wait_durable(*end).await.map_err(AckError::from),
                    }
                })),
            )
            .await;
            for (i, (ti, pi, _, _, _)) in waits.iter().enumerate() {
                let failure = match &results {
                    Err(_) => Some(ErrorCode::RequestTimedOut),
                    Ok(r) => r[i].as_ref().err().map(|e| match e {
                        AckError::Storage(e) => storage_error_code(e),
                        AckError::NotLeader => ErrorCode::NotLeaderOrFollower,
                        AckError::NotEnoughReplicasAfterAppend { .. } => {
                            ErrorCode::NotEnoughReplicasAfterAppend
                        }
                    }),
                };
                if let Some(code) = failure {
                    let e = &mut responses[*ti].partition_responses[*pi];
                    e.error_code = code.code();
                    e.base_offset = -1;
                }
            }
        }
        if acks == 0 {
            return None;
        }
        Some(ProduceResponse::default().with_responses(responses).into())
    }))
}
