//! ListOffsets, OffsetForLeaderEpoch, DeleteRecords, DescribeLogDirs (with the log cleaner's
//! state of compacted partitions, see `vltava_protocol::ext`).

use std::sync::Arc;

use vltava_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use vltava_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use vltava_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use vltava_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use vltava_protocol::messages::*;
use vltava_protocol::{ext, ErrorCode};
use vltava_storage::StorageError;

use super::{check_leader_epoch, sb, tn};
use crate::broker::Broker;
use crate::context::{AclOperation, RequestContext, Resource};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

pub fn list_offsets(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let version = ctx.api_version;
    let read_committed = version >= 2 && req.isolation_level == 1;
    let mut topics = Vec::new();
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name;
        for lp in t.partitions {
            let mut r = ListOffsetsPartitionResponse::default();
            r.partition_index = lp.partition_index;
            r.timestamp = -1;
            r.offset = -1;
            r.leader_epoch = -1;
            match broker.partitions.get(&name, lp.partition_index) {
                _ if !broker.authorize(ctx, AclOperation::Describe, Resource::Topic(&name)) => {
                    r.error_code = ErrorCode::TopicAuthorizationFailed.code()
                }
                None => r.error_code = broker.not_hosted(&name, lp.partition_index).code(),
                Some(p) if !p.is_leader() => r.error_code = ErrorCode::NotLeaderOrFollower.code(),
                Some(p) => {
                    if let Some(code) =
                        check_leader_epoch(lp.current_leader_epoch, p.leader_epoch())
                    {
                        r.error_code = code.code();
                    } else {
                        let o = p.offsets();
                        if version >= 4 {
                            r.leader_epoch = p.leader_epoch();
                        }
                        // Consumers see up to the high watermark, or the last stable offset
                        // when they read committed data only.
                        let latest = if read_committed {
                            p.last_stable_offset()
                        } else {
                            p.high_watermark()
                        };
                        let found = match lp.timestamp {
                            LATEST => Ok(Some((latest, -1))),
                            EARLIEST | EARLIEST_LOCAL => Ok(Some((o.log_start_offset.get(), -1))),
                            LATEST_TIERED => Ok(Some((o.log_start_offset.get() - 1, -1))),
                            MAX_TIMESTAMP => Ok(p.max_timestamp()),
                            ts if ts >= 0 => p.offset_for_timestamp(ts).map_err(Some),
                            _ => Err(None),
                        };
                        match found {
                            Ok(Some((offset, ts))) => {
                                r.offset = offset;
                                r.timestamp = ts;
                            }
                            Ok(None) => {}
                            Err(None) => r.error_code = ErrorCode::InvalidRequest.code(),
                            Err(Some(e)) => {
                                tracing::warn!(error = %e, "list offsets failed");
                                r.error_code = ErrorCode::KafkaStorageError.code();
                            }
                        }
                    }
                }
            }
            tr.partitions.push(r);
        }
        topics.push(tr);
    }
    ListOffsetsResponse::default().with_topics(topics)
}

pub fn offset_for_leader_epoch(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut topics = Vec::new();
    for t in req.topics {
        let name = t.topic.0.to_string();
        let mut tr = OffsetForLeaderTopicResult::default();
        tr.topic = t.topic;
        for op in t.partitions {
            let mut r = EpochEndOffset::default();
            r.partition = op.partition;
            r.leader_epoch = -1;
            r.end_offset = -1;
            match broker.partitions.get(&name, op.partition) {
                _ if !broker.authorize(ctx, AclOperation::Describe, Resource::Topic(&name)) => {
                    r.error_code = ErrorCode::TopicAuthorizationFailed.code()
                }
                None => r.error_code = ErrorCode::UnknownTopicOrPartition.code(),
                Some(p) if !p.is_leader() => r.error_code = ErrorCode::NotLeaderOrFollower.code(),
                Some(p) => {
                    if let Some(code) =
                        check_leader_epoch(op.current_leader_epoch, p.leader_epoch())
                    {
                        r.error_code = code.code();
                    } else {
                        // From the leader-epoch cache, as Kafka answers: an epoch newer than
                        // the current one gets UNDEFINED_EPOCH / UNDEFINED_EPOCH_OFFSET.
                        let (epoch, end) = p.end_offset_for_epoch(op.leader_epoch);
                        r.leader_epoch = epoch;
                        r.end_offset = end;
                    }
                }
            }
            tr.partitions.push(r);
        }
        topics.push(tr);
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

pub async fn delete_records(
    broker: Arc<Broker>,
    ctx: RequestContext,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let b = Arc::clone(&broker);
    tokio::task::spawn_blocking(move || {
        let mut topics = Vec::new();
        let mut changed = false;
        for t in req.topics {
            let name = t.name.0.to_string();
            let mut tr = DeleteRecordsTopicResult::default();
            tr.name = t.name;
            for dp in t.partitions {
                let mut r = DeleteRecordsPartitionResult::default();
                r.partition_index = dp.partition_index;
                r.low_watermark = -1;
                match b.partitions.get(&name, dp.partition_index) {
                    _ if !b.authorize(&ctx, AclOperation::Delete, Resource::Topic(&name)) => {
                        r.error_code = ErrorCode::TopicAuthorizationFailed.code()
                    }
                    None => r.error_code = ErrorCode::UnknownTopicOrPartition.code(),
                    Some(p) if !p.is_leader() => {
                        r.error_code = ErrorCode::NotLeaderOrFollower.code()
                    }
                    // Kafka refuses to delete past the high watermark.
                    Some(p) if dp.offset > p.high_watermark() => {
                        r.error_code = ErrorCode::OffsetOutOfRange.code()
                    }
                    // -1: everything below the high watermark.
                    Some(p) => match p.delete_records_before(
                        if dp.offset == -1 {
                            p.high_watermark()
                        } else {
                            dp.offset
                        },
                        crate::broker::now_ms(),
                    ) {
                        Ok(low) => {
                            r.low_watermark = low;
                            changed = true;
                        }
                        Err(StorageError::OffsetOutOfRange { .. }) => {
                            r.error_code = ErrorCode::OffsetOutOfRange.code()
                        }
                        Err(_) => r.error_code = ErrorCode::KafkaStorageError.code(),
                    },
                }
                tr.partitions.push(r);
            }
            topics.push(tr);
        }
        if changed {
            b.persist_log_starts();
        }
        DeleteRecordsResponse::default().with_topics(topics)
    })
    .await
    .unwrap_or_default()
}

pub fn describe_log_dirs(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    if !broker.authorize(ctx, AclOperation::Describe, Resource::Cluster) {
        return DescribeLogDirsResponse::default()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code());
    }
    let image = broker.controller.image();
    let wanted: Vec<(String, Vec<i32>)> = match req.topics {
        None => image
            .topics
            .values()
            .map(|t| (t.name.clone(), t.partitions.keys().copied().collect()))
            .collect(),
        Some(list) => list
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect(),
    };
    let mut result = DescribeLogDirsResult::default();
    let dir = std::fs::canonicalize(&broker.config.data_dir)
        .unwrap_or_else(|_| broker.config.data_dir.clone());
    result.log_dir = sb(dir.to_string_lossy().to_string());
    result.total_bytes = -1;
    result.usable_bytes = -1;
    for (name, parts) in wanted {
        let mut t = DescribeLogDirsTopic::default();
        t.name = tn(&name);
        for idx in parts {
            if let Some(p) = broker.partitions.get(&name, idx) {
                let mut dp = DescribeLogDirsPartition::default();
                dp.partition_index = idx;
                dp.partition_size = p.size_bytes() as i64;
                if p.settings().log.compact {
                    let (dirty_ratio, dirty_bytes) = p
                        .cleanable(crate::broker::now_ms())
                        .map_or((0.0, 0), |c| (c.dirty_ratio, c.dirty_bytes as i64));
                    ext::put_cleaner_state(
                        &mut dp,
                        ext::CleanerState {
                            clean_offset: p.clean_offset(),
                            dirty_ratio,
                            dirty_bytes,
                        },
                    );
                }
                t.partitions.push(dp);
            }
        }
        if !t.partitions.is_empty() {
            result.topics.push(t);
        }
    }
    DescribeLogDirsResponse::default().with_results(vec![result])
}
