//! Fetch: return stored batches as they are, long-polling until `min_bytes` or `max_wait_ms`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use futures::future::{select_all, FutureExt};
use vltava_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use vltava_protocol::messages::*;
use vltava_protocol::stand_in::stand_in;
use vltava_protocol::ErrorCode;
use vltava_storage::{FileRegion, StorageError};

use super::check_leader_epoch;
use crate::broker::{now_ms, Broker};
use crate::context::{AclOperation, RequestContext, Resource};
use crate::partition::{Partition, ReadLimit};
use crate::replication_quota::ReplicationQuota;
use vltava_types::NodeId;

struct Target {
    topic: usize,
    index: i32,
    partition: Option<Arc<Partition>>,
    error: Option<ErrorCode>,
    fetch_offset: i64,
    max_bytes: usize,
    last_fetched_epoch: i32,
    /// For a follower whose log diverges from the leader's: the epoch and end offset it
    /// must truncate to (KIP-320), sent instead of records.
    diverging: Option<(i32, i64)>,
    /// For a consumer better served by a replica in its rack (KIP-392): that replica, sent
    /// instead of records.
    preferred_replica: Option<NodeId>,
}

fn partition_data(index: i32) -> PartitionData {
    let mut d = PartitionData::default();
    d.partition_index = index;
    d.high_watermark = -1;
    d.last_stable_offset = -1;
    d.log_start_offset = -1;
    d.records = Some(bytes::Bytes::new());
    d
}

/// One pass over every requested partition. Returns the response, its record bytes, and
/// the file ranges its records' stand-ins name: the records are found, not read, and the
/// connection's writer sends them from the files.
/// A follower reads up to the log end; consumers up to the high watermark or, with
/// read_committed, the last stable offset.
fn read_all(
    targets: &[Target],
    topics: &[FetchableTopicResponse],
    max_bytes: usize,
    read_committed: bool,
    follower: Option<(NodeId, &ReplicationQuota)>,
) -> (
    Vec<FetchableTopicResponse>,
    usize,
    Vec<FileRegion>,
    Vec<Outcome>,
) {
    let mut out: Vec<FetchableTopicResponse> = topics.to_vec();
    let mut outcomes = Vec::with_capacity(targets.len());
    let mut total = 0usize;
    let mut regions = Vec::new();
    let now = now_ms();
    // leader.replication.throttled.rate: what goes to an out-of-sync replica of a throttled
    // partition counts against the quota, and waits while it is exceeded.
    let throttled = |p: &Partition| {
        follower.is_some_and(|(replica, q)| {
            q.rate() != u64::MAX && p.leader_throttled() && !p.isr().contains(&replica)
        })
    };
    let quota_left = follower.is_none_or(|(_, q)| !q.is_exceeded(now));
    for t in targets {
        let mut d = partition_data(t.index);
        if let Some(code) = t.error {
            d.error_code = code.code();
        } else if let (Some(p), Some(preferred)) = (&t.partition, t.preferred_replica) {
            d.high_watermark = p.high_watermark();
            d.last_stable_offset = p.last_stable_offset();
            d.log_start_offset = p.offsets().log_start_offset.get();
            d.preferred_read_replica = BrokerId(preferred.get());
        } else if let (Some(p), Some((epoch, end_offset))) = (&t.partition, t.diverging) {
            d.high_watermark = p.high_watermark();
            d.last_stable_offset = p.last_stable_offset();
            d.log_start_offset = p.offsets().log_start_offset.get();
            d.diverging_epoch.epoch = epoch;
            d.diverging_epoch.end_offset = end_offset;
        } else if let Some(p) = &t.partition {
            let budget = t.max_bytes.min(max_bytes.saturating_sub(total));
            // Read before the high watermark: what is read lies below the one reported.
            let (high_watermark, last_stable) = (p.high_watermark(), p.last_stable_offset());
            // KIP-74: the first batch is returned even if larger than the limits, so a big
            // batch never blocks a consumer.
            let limit = if follower.is_some() {
                ReadLimit::LogEnd
            } else if read_committed {
                ReadLimit::LastStable
            } else {
                ReadLimit::HighWatermark
            };
            let throttle = throttled(p);
            let read = if throttle && !quota_left {
                let o = p.offsets();
                Ok(vltava_storage::RegionRead {
                    region: None,
                    next_offset: o.log_end_offset,
                    log_end_offset: o.log_end_offset,
                    log_start_offset: o.log_start_offset,
                })
            } else {
                p.read_region(t.fetch_offset, budget, total == 0, limit)
            };
            let read = read.and_then(|r| {
                let len = r.region.as_ref().map_or(0, |g| g.len);
                let records = match &r.region {
                    None => bytes::Bytes::new(),
                    Some(g) => match stand_in(regions.len(), len) {
                        Some(s) => {
                            regions.push(g.clone());
                            s
                        }
                        // More partitions or bytes than stand-ins cover: read them here.
                        None => bytes::Bytes::from(g.read().map_err(|e| StorageError::Io {
                            op: "read",
                            path: std::path::PathBuf::from(format!("{p:?}")),
                            source: e,
                        })?),
                    },
                };
                Ok((r, records))
            });
            match read {
                Ok((r, records)) => {
                    if throttle {
                        if let Some((_, q)) = follower {
                            q.record(records.len(), now);
                        }
                    }
                    total += records.len();
                    d.high_watermark = high_watermark;
                    d.last_stable_offset = last_stable;
                    d.log_start_offset = r.log_start_offset.get();
                    if read_committed {
                        // The aborted transactions these batches overlap, so the client
                        // drops their records (Kafka's collectAbortedTransactions).
                        let upto = r.next_offset.get();
                        let aborted = p.aborted_transactions(t.fetch_offset, upto);
                        d.aborted_transactions = Some(
                            aborted
                                .into_iter()
                                .map(|a| {
                                    let mut at = fetch_response::AbortedTransaction::default();
                                    at.producer_id = a.producer_id.get().into();
                                    at.first_offset = a.first_offset.get();
                                    at
                                })
                                .collect(),
                        );
                    }
                    d.records = Some(records);
                }
                Err(StorageError::OffsetOutOfRange {
                    log_start_offset,
                    log_end_offset,
                    ..
                }) => {
                    d.error_code = ErrorCode::OffsetOutOfRange.code();
                    d.high_watermark = log_end_offset;
                    d.last_stable_offset = log_end_offset;
                    d.log_start_offset = log_start_offset;
                }
                Err(e) => {
                    tracing::warn!(partition = ?p, error = %e, "fetch read failed");
                    d.error_code = ErrorCode::KafkaStorageError.code();
                }
            }
        }
        outcomes.push(if d.error_code != 0 {
            Err(())
        } else {
            Ok(d.records.as_ref().map_or(0, |r| r.len() as u64))
        });
        out[t.topic].partitions.push(d);
    }
    (out, total, regions, outcomes)
}

/// A fetched partition's record bytes, or its failure (BrokerTopicMetrics).
type Outcome = Result<u64, ()>;

/// Kafka's RackAwareReplicaSelector: a consumer in rack `rack` fetching from a leader in
/// another rack is sent to an in-sync replica of the partition on a live broker in its
/// rack, if there is one.
fn prefer_same_rack(broker: &Arc<Broker>, rack: &str, targets: &mut [Target]) {
    let image = broker.controller.image();
    let in_rack = |id: NodeId| {
        image
            .brokers
            .get(&id)
            .is_some_and(|b| !b.fenced && b.rack.as_deref() == Some(rack))
    };
    let me = broker.config.node_id;
    if in_rack(me) {
        return;
    }
    for t in targets.iter_mut().filter(|t| t.error.is_none()) {
        let Some(p) = &t.partition else { continue };
        if !p.is_leader() {
            continue;
        }
        let isr = p.isr();
        t.preferred_replica = p
            .replicas()
            .into_iter()
            .find(|r| *r != me && isr.contains(r) && in_rack(*r));
    }
}

/// A follower's fetch tells the leader where the follower's log is: first whether it
/// diverges (its last fetched epoch ends elsewhere in the leader's log, KIP-320), else its
/// fetch offset, which moves the high watermark and may bring it back into the ISR.
fn follower_positions(broker: &Arc<Broker>, replica: NodeId, targets: &mut [Target]) {
    let now = now_ms();
    for t in targets.iter_mut().filter(|t| t.error.is_none()) {
        let Some(p) = &t.partition else { continue };
        if t.last_fetched_epoch >= 0 {
            let (epoch, end) = p.end_offset_for_epoch(t.last_fetched_epoch);
            if epoch != t.last_fetched_epoch || end < t.fetch_offset {
                t.diverging = Some((epoch, end));
                continue;
            }
        }
        if t.fetch_offset > p.offsets().log_end_offset.get() {
            // Answered OFFSET_OUT_OF_RANGE by the read; not a position to count.
            continue;
        }
        if let Some(change) = p.follower_fetched(replica, t.fetch_offset, now) {
            broker.propose_isr_change(Arc::clone(p), change);
        }
    }
}

const CONSUMER_BYTE_RATE: vltava_metadata::quota::QuotaKey =
    vltava_metadata::quota::QuotaKey::ConsumerByteRate;

fn client_id(ctx: &RequestContext) -> &str {
    ctx.client_id.as_deref().unwrap_or("")
}

/// Meters a consumer's answer against its consumer_byte_rate, as Kafka does: an answer that
/// would put the consumer over its quota is not sent; it gets an empty one instead, with the
/// throttle time, and its connection is muted for that long (KIP-219). Returns the bytes
/// the answer keeps.
fn meter_consumer(
    broker: &Broker,
    ctx: &RequestContext,
    resp: &mut FetchResponse,
    total: usize,
) -> usize {
    use vltava_protocol::Encodable;
    let size = resp.compute_size(ctx.api_version).unwrap_or(total) as f64;
    let (user, client) = (&*ctx.connection.principal.name, client_id(ctx));
    let now = crate::quota::monotonic_ms();
    // A consumer with nothing metered gets its answer whatever its size, so one batch larger
    // than the quota allows cannot hold it back for ever.
    let idle = broker
        .quotas
        .recorded(CONSUMER_BYTE_RATE, user, client, now)
        <= 0.0;
    let throttle = broker
        .quotas
        .record(CONSUMER_BYTE_RATE, user, client, size, now);
    if throttle == 0 || idle {
        if throttle > 0 {
            ctx.connection.mute.until(now + throttle);
            resp.throttle_time_ms = i32::try_from(throttle).unwrap_or(i32::MAX);
        }
        return total;
    }
    broker
        .quotas
        .unrecord(CONSUMER_BYTE_RATE, user, client, size, now);
    ctx.connection.mute.until(now + throttle);
    resp.responses.clear();
    resp.throttle_time_ms = i32::try_from(throttle).unwrap_or(i32::MAX);
    0
}

/// The replica id of a follower replicating the leader's log (Kafka's replica id, in
/// ReplicaState from v15); consumers send -1.
pub fn replica_id(req: &FetchRequest, version: i16) -> i32 {
    if version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    }
}

/// Answers a Fetch. The returned permit holds the response's size against the connection's
/// response budget until the response is written, so unread responses pin at most about
/// `fetch.max.bytes` per connection.
pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: FetchRequest,
) -> (FetchResponse, Option<OwnedSemaphorePermit>, Vec<FileRegion>) {
    let version = ctx.api_version;
    let mut resp = FetchResponse::default();
    // No fetch sessions: a session id of 0 tells clients to keep sending full fetches.
    if req.session_id != 0 {
        resp.error_code = ErrorCode::FetchSessionIdNotFound.code();
        return (resp, None, Vec::new());
    }
    let image = (version >= 13).then(|| broker.controller.image());
    let replica = replica_id(&req, version);
    let follower = replica >= 0;
    // KIP-392: the consumer's rack, when the leader is to send it to a replica there.
    let client_rack = (version >= 11 && !follower && broker.config.rack_aware_replica_selector())
        .then(|| req.rack_id.to_string())
        .filter(|r| !r.is_empty());
    // Replication is a cluster action (Kafka's CLUSTER_ACTION on the cluster); a follower
    // needs no Read on each topic.
    let follower_allowed =
        follower && broker.authorize(ctx, AclOperation::ClusterAction, Resource::Cluster);
    let mut topics = Vec::new();
    let mut targets = Vec::new();
    let mut seen_topics = HashMap::new();
    let mut seen_partitions = HashMap::new();
    for ft in &req.topics {
        let name = match &image {
            Some(img) => img.topic_by_id(&ft.topic_id).map(|t| t.name.clone()),
            None => Some(ft.topic.0.to_string()),
        };
        let mut tr = FetchableTopicResponse::default();
        tr.topic = if version >= 13 {
            Default::default()
        } else {
            ft.topic.clone()
        };
        tr.topic_id = ft.topic_id;
        // A topic named twice is one topic, as in Kafka's map of fetch partitions.
        let key = (ft.topic.0.to_string(), ft.topic_id);
        let ti = match seen_topics.get(&key) {
            Some(&ti) => ti,
            None => {
                seen_topics.insert(key.clone(), topics.len());
                topics.push(tr);
                topics.len() - 1
            }
        };
        let authorized = if follower {
            follower_allowed
        } else {
            name.as_deref()
                .is_none_or(|n| broker.authorize(ctx, AclOperation::Read, Resource::Topic(n)))
        };
        for fp in &ft.partitions {
            let partition = name
                .as_deref()
                .and_then(|n| broker.partitions.get(n, fp.partition));
            let error = match (&name, &partition) {
                (Some(_), _) if !authorized => Some(ErrorCode::TopicAuthorizationFailed),
                (None, _) => Some(ErrorCode::UnknownTopicId),
                (Some(n), None) => Some(broker.not_hosted(n, fp.partition)),
                // KIP-392: a consumer sending client metadata (v11+) may read from a
                // follower, up to the follower's high watermark.
                (Some(_), Some(p)) if !p.is_leader() && (follower || version < 11) => {
                    Some(ErrorCode::NotLeaderOrFollower)
                }
                (Some(_), Some(p)) => check_leader_epoch(fp.current_leader_epoch, p.leader_epoch()),
            };
            // A partition named twice is fetched once, with the last entry's position.
            if let Some(&i) = seen_partitions.get(&(ti, fp.partition)) {
                let t: &mut Target = &mut targets[i];
                t.fetch_offset = fp.fetch_offset;
                t.max_bytes = fp.partition_max_bytes.max(0) as usize;
                t.error = error;
                t.last_fetched_epoch = fp.last_fetched_epoch;
                continue;
            }
            seen_partitions.insert((ti, fp.partition), targets.len());
            targets.push(Target {
                topic: ti,
                index: fp.partition,
                partition,
                error,
                fetch_offset: fp.fetch_offset,
                max_bytes: fp.partition_max_bytes.max(0) as usize,
                last_fetched_epoch: if version >= 12 {
                    fp.last_fetched_epoch
                } else {
                    -1
                },
                diverging: None,
                preferred_replica: None,
            });
        }
    }
    if let Some(rack) = client_rack {
        prefer_same_rack(broker, &rack, &mut targets);
    }
    if follower {
        follower_positions(broker, NodeId::new(replica), &mut targets);
    }
    // One answer to a consumer with a consumer_byte_rate takes at most what the quota allows
    // over its measuring span.
    let metered = !follower
        && broker.quotas.is_active()
        && broker
            .quotas
            .quota(
                CONSUMER_BYTE_RATE,
                &ctx.connection.principal.name,
                client_id(ctx),
            )
            .is_some();
    let mut cap = broker.config.fetch_max_bytes();
    if metered {
        if let Some(allowance) = broker.quotas.span_allowance(
            CONSUMER_BYTE_RATE,
            &ctx.connection.principal.name,
            client_id(ctx),
        ) {
            cap = cap.min(usize::try_from(allowance).unwrap_or(usize::MAX));
        }
    }
    // The broker's own `fetch.max.bytes` caps every response, whatever the client asks.
    let max_bytes = if version >= 3 {
        (req.max_bytes.max(0) as usize).min(cap)
    } else {
        cap
    };
    let budget = Arc::clone(&ctx.connection.response_budget);
    let mut hold = budget
        .acquire_many_owned(u32::try_from(max_bytes).unwrap_or(u32::MAX))
        .await
        .ok();
    // Keeps only what the response holds; the rest returns to the budget now.
    let finish = |mut resp: FetchResponse,
                  mut total: usize,
                  mut regions: Vec<FileRegion>,
                  outcomes: Vec<Outcome>| {
        if metered {
            total = meter_consumer(broker, ctx, &mut resp, total);
            if total == 0 {
                regions.clear();
            }
        }
        // A throttled consumer's answer went out without its records.
        let sent = |o: Outcome| o.map(|bytes| if total == 0 { 0 } else { bytes });
        for (t, o) in targets.iter().zip(outcomes) {
            match &t.partition {
                Some(p) => p.stats.fetched(sent(o), follower),
                None => broker.partitions.topic_metrics.fetch_refused(),
            }
        }
        if let Some(h) = &mut hold {
            let extra = h.num_permits().saturating_sub(total);
            drop(h.split(extra));
        }
        (resp, hold, regions)
    };
    let read_committed = version >= 4 && req.isolation_level == 1;
    let as_replica = follower.then(|| (NodeId::new(replica), &broker.replication_quotas.leader));
    let min_bytes = req.min_bytes.max(0) as usize;
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let mut watches: Vec<_> = targets
        .iter()
        .filter_map(|t| t.partition.as_ref().map(|p| p.subscribe_appends()))
        .collect();
    let mut stopping = broker.shutting_down.subscribe();
    loop {
        for w in &mut watches {
            w.borrow_and_update();
        }
        let (out, total, regions, outcomes) =
            read_all(&targets, &topics, max_bytes, read_committed, as_replica);
        let has_error = targets.iter().any(|t| t.error.is_some())
            || out
                .iter()
                .flat_map(|t| &t.partitions)
                .any(|p| p.error_code != 0);
        if min_bytes == 0
            || total >= min_bytes
            || has_error
            || watches.is_empty()
            || broker.is_shutting_down()
        {
            resp.responses = out;
            return finish(resp, total, regions, outcomes);
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            resp.responses = out;
            return finish(resp, total, regions, outcomes);
        }
        let changed = select_all(watches.iter_mut().map(|w| w.changed().boxed()));
        let woke = tokio::select! {
            (r, _, _) = changed => r.is_ok(),
            () = tokio::time::sleep(remaining) => true,
            // Loops once more and answers with what there is.
            _ = stopping.wait_for(|stop| *stop) => true,
        };
        if !woke {
            // A partition went away (topic deleted): answer with what there is.
            let (out, total, regions, outcomes) =
                read_all(&targets, &topics, max_bytes, read_committed, as_replica);
            resp.responses = out;
            return finish(resp, total, regions, outcomes);
        }
    }
}
