//! Followers replicate their leaders' logs with Kafka's own protocol: one task per leader
//! broker sends Fetch requests carrying this broker's id as the replica id, for every
//! partition it follows there.
//!
//! Each fetch offset is durable: what one fetch returns is appended and fsynced before the
//! next fetch is sent, so the leader's view of a follower (its high watermark, acks=all)
//! only ever counts fsynced records. A leader answering with a diverging epoch (KIP-320) makes
//! the follower truncate to where their logs agree.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::security::peer::{PeerConnector, PeerStream};
use bytes::{BufMut, Bytes, BytesMut};
use futures::future::join_all;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, Notify};
use vltava_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use vltava_protocol::messages::fetch_response::PartitionData;
use vltava_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName};
use vltava_protocol::{ErrorCode, StrBytes};
use vltava_storage::StorageError;
use vltava_types::NodeId;

use crate::broker::now_ms;
use crate::controller::Controller;
use crate::partition::Partition;
use crate::replica_manager::ReplicaManager;
use crate::replication_quota::ReplicationQuotas;

/// Fetch v12: the last version naming topics, with the last fetched epoch and the
/// diverging epoch (KIP-320), and the replica id in the body.
const FETCH_VERSION: i16 = 12;
/// Largest response frame a follower reads.
const MAX_FRAME: usize = 128 << 20;
/// How long a fetcher whose every partition is throttled waits before looking again.
const QUOTA_PAUSE: Duration = Duration::from_millis(100);
/// Pause after a partition-level error (a leader that has not yet seen the same metadata).
const ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The settings followers fetch with (Kafka's `replica.fetch.*`).
#[derive(Debug, Clone)]
pub struct FetcherConfig {
    pub node_id: NodeId,
    /// The listener followers reach leaders on (`inter.broker.listener.name`).
    pub listener: String,
    pub max_bytes: i32,
    pub response_max_bytes: i32,
    pub wait_max_ms: i32,
    pub backoff: Duration,
    pub socket_timeout: Duration,
    /// How to reach the leaders' listener: its TLS and SASL, if any.
    pub connector: PeerConnector,
}

struct Shared {
    config: FetcherConfig,
    partitions: Arc<ReplicaManager>,
    controller: Arc<Controller>,
    quotas: Arc<ReplicationQuotas>,
    /// Wakes idle fetchers when metadata changes.
    changed: Notify,
    stop: watch::Receiver<bool>,
}

/// The fetcher tasks, one per leader broker this broker follows.
pub struct ReplicaFetchers {
    shared: Arc<Shared>,
    tasks: Mutex<HashMap<NodeId, tokio::task::JoinHandle<()>>>,
}

impl ReplicaFetchers {
    pub fn new(
        config: FetcherConfig,
        partitions: Arc<ReplicaManager>,
        controller: Arc<Controller>,
        quotas: Arc<ReplicationQuotas>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                partitions,
                controller,
                quotas,
                changed: Notify::new(),
                stop,
            }),
            tasks: Mutex::new(HashMap::new()),
        }
    }

    /// After a metadata change: a fetcher for every leader of a partition followed here.
    /// Fetchers re-read which partitions they fetch before every request.
    pub fn sync(&self) {
        let me = self.shared.config.node_id;
        let mut tasks = self.tasks.lock();
        for p in self.shared.partitions.all() {
            let leader = p.leader();
            if p.is_leader() || leader == me || leader.get() < 0 {
                continue;
            }
            let running = tasks.get(&leader).is_some_and(|t| !t.is_finished());
            if !running {
                let shared = Arc::clone(&self.shared);
                tasks.insert(leader, tokio::spawn(run(leader, shared)));
            }
        }
        self.shared.changed.notify_waiters();
    }

    /// Stops every fetcher (before the logs close).
    pub async fn shutdown(&self) {
        let tasks: Vec<_> = self.tasks.lock().drain().map(|(_, t)| t).collect();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

fn followed(shared: &Shared, leader: NodeId) -> Vec<Arc<Partition>> {
    let mut parts: Vec<_> = shared
        .partitions
        .all()
        .into_iter()
        .filter(|p| !p.is_leader() && p.leader() == leader)
        .collect();
    parts.sort_by(|a, b| (&a.topic, a.index).cmp(&(&b.topic, b.index)));
    parts
}

/// The host and port of `leader`'s replication listener, if it is registered with one.
fn leader_addr(shared: &Shared, leader: NodeId) -> Result<(String, u16), String> {
    let image = shared.controller.image();
    let b = image
        .brokers
        .get(&leader)
        .ok_or_else(|| format!("broker {leader} is not registered"))?;
    let e = b.endpoint(&shared.config.listener).ok_or_else(|| {
        format!(
            "broker {leader} has no listener {} to replicate from",
            shared.config.listener
        )
    })?;
    Ok((e.host.clone(), e.port))
}

async fn run(leader: NodeId, shared: Arc<Shared>) {
    let mut stop = shared.stop.clone();
    let mut conn: Option<PeerStream> = None;
    let mut correlation = 0i32;
    let mut last_error: Option<String> = None;
    // Every answer is read into this one allocation, taken back once the last answer's
    // batches are appended and dropped: no fresh, zeroed megabyte per round.
    let mut answers = BytesMut::new();
    loop {
        if *stop.borrow() {
            return;
        }
        let mut parts = followed(&shared, leader);
        // follower.replication.throttled.rate: out-of-sync throttled partitions sit out
        // while the quota is exceeded.
        let node = shared.config.node_id;
        let throttled = |p: &Arc<Partition>| p.follower_throttled() && !p.isr().contains(&node);
        if shared.quotas.follower.is_exceeded(now_ms()) {
            let before = parts.len();
            parts.retain(|p| !throttled(p));
            if parts.is_empty() && before > 0 {
                tokio::select! {
                    () = tokio::time::sleep(QUOTA_PAUSE) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        }
        if parts.is_empty() {
            conn = None;
            let changed = shared.changed.notified();
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let request = build_request(&shared.config, &parts);
        correlation = correlation.wrapping_add(1);
        let outcome = async {
            if conn.is_none() {
                let (host, port) = leader_addr(&shared, leader)?;
                let s = shared
                    .config
                    .connector
                    .connect(&host, port, Duration::from_secs(5))
                    .await
                    .map_err(|e| format!("connecting to broker {leader}: {e}"))?;
                conn = Some(s);
            }
            let stream = conn.as_mut().expect("connected");
            shared
                .config
                .connector
                .refresh(stream)
                .await
                .map_err(|e| format!("broker {leader}: {e}"))?;
            let limit = shared.config.socket_timeout
                + Duration::from_millis(shared.config.wait_max_ms.max(0) as u64);
            tokio::time::timeout(limit, exchange(stream, correlation, &request, &mut answers))
                .await
                .map_err(|_| format!("no fetch response from broker {leader} in {limit:?}"))?
        }
        .await;
        let response = match outcome {
            Ok(r) => {
                if last_error.take().is_some() {
                    tracing::info!(%leader, "replicating from the leader again");
                }
                r
            }
            Err(e) => {
                conn = None;
                if last_error.as_deref() != Some(&e) {
                    tracing::warn!(%leader, error = %e, "replica fetch failed");
                    last_error = Some(e);
                }
                tokio::select! {
                    () = tokio::time::sleep(shared.config.backoff) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        if response.error_code != 0 {
            tracing::warn!(%leader, code = response.error_code, "replica fetch refused");
            tokio::time::sleep(shared.config.backoff).await;
            continue;
        }
        if shared.quotas.follower.rate() != u64::MAX {
            let sitting_out: std::collections::HashSet<(&str, i32)> = parts
                .iter()
                .filter(|p| throttled(p))
                .map(|p| (&*p.topic, p.index))
                .collect();
            let bytes: usize = response
                .responses
                .iter()
                .flat_map(|t| t.partitions.iter().map(move |d| (t, d)))
                .filter(|(t, d)| sitting_out.contains(&(&*t.topic.0, d.partition_index)))
                .map(|(_, d)| d.records.as_ref().map_or(0, |r| r.len()))
                .sum();
            shared.quotas.follower.record(bytes, now_ms());
        }
        // Appends and truncations write files: off the async workers (`run_blocking`).
        let partitions = Arc::clone(&shared.partitions);
        let (appended, mut pause) =
            match crate::broker::run_blocking(move || apply_all(&parts, &response, &partitions))
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(%leader, error = %e, "applying a replica fetch failed");
                    (Vec::new(), true)
                }
            };
        // Durable before the next fetch reports these offsets to the leader.
        let flushed = join_all(appended.iter().map(|(p, end)| p.wait_durable(*end))).await;
        if let Some(e) = flushed.into_iter().find_map(Result::err) {
            tracing::error!(%leader, error = %e, "a replicated append could not be made durable");
            pause = true;
        }
        if pause {
            tokio::time::sleep(ERROR_PAUSE).await;
        }
    }
}

/// Applies a fetch response to the partitions it answers. Returns the partitions appended
/// to with the log end to make durable, and whether any failed. After a truncation the
/// recovery checkpoint is rewritten before anything is appended above the cut (see
/// ARCHITECTURE.md, invariants).
fn apply_all(
    parts: &[Arc<Partition>],
    response: &FetchResponse,
    partitions: &ReplicaManager,
) -> (Vec<(Arc<Partition>, i64)>, bool) {
    let by_name: BTreeMap<(&str, i32), &Arc<Partition>> =
        parts.iter().map(|p| ((&*p.topic, p.index), p)).collect();
    let mut appended = Vec::new();
    let mut failed = false;
    for t in &response.responses {
        for d in &t.partitions {
            let Some(p) = by_name.get(&(&*t.topic.0, d.partition_index)) else {
                continue;
            };
            // Reassigned away or deleted while the fetch was out: its directory is gone.
            if !partitions
                .get_by_id(&p.topic_id_partition())
                .is_some_and(|q| Arc::ptr_eq(&q, p))
            {
                continue;
            }
            match apply(p, d) {
                Ok(Applied::Appended(end)) => {
                    // As a leader does for an acks=all append: the fsync is asked for, and the
                    // disk started on the bytes, before the other partitions are applied.
                    p.request_flush();
                    p.start_writeback();
                    appended.push((Arc::clone(p), end));
                }
                Ok(Applied::Nothing) => {}
                Ok(Applied::Truncated) => {
                    partitions.write_checkpoints();
                }
                Err(e) => {
                    failed = true;
                    tracing::debug!(partition = ?p, error = %e, "replica fetch of a partition failed");
                }
            }
        }
    }
    (appended, failed)
}

/// What one partition's answer did to its log.
enum Applied {
    Nothing,
    Appended(i64),
    Truncated,
}

fn build_request(config: &FetcherConfig, parts: &[Arc<Partition>]) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for p in parts {
        let mut fp = FetchPartition::default();
        fp.partition = p.index;
        fp.current_leader_epoch = p.leader_epoch();
        fp.fetch_offset = p.offsets().log_end_offset.get();
        fp.last_fetched_epoch = p.latest_epoch();
        fp.log_start_offset = p.offsets().log_start_offset.get();
        fp.partition_max_bytes = config.max_bytes;
        match topics.last_mut() {
            Some(t) if *t.topic.0 == *p.topic => t.partitions.push(fp),
            _ => {
                let mut t = FetchTopic::default();
                t.topic = TopicName(StrBytes::from_string(p.topic.to_string()));
                t.partitions.push(fp);
                topics.push(t);
            }
        }
    }
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(config.node_id.get());
    req.max_wait_ms = config.wait_max_ms;
    req.min_bytes = 1;
    req.max_bytes = config.response_max_bytes;
    req.isolation_level = 0;
    req.session_id = 0;
    req.session_epoch = -1;
    req.topics = topics;
    req
}

/// Applies one partition's answer.
fn apply(p: &Arc<Partition>, d: &PartitionData) -> Result<Applied, String> {
    let code = ErrorCode::try_from_code(d.error_code);
    match code {
        None => {}
        Some(ErrorCode::OffsetOutOfRange) => {
            // Our leader answers with its log end as the high watermark here.
            let end = p.offsets().log_end_offset.get();
            if end > d.high_watermark && d.high_watermark >= 0 {
                truncate(p, d.high_watermark)?;
                return Ok(Applied::Truncated);
            }
            if end < d.log_start_offset {
                // What this replica lacks is gone from the leader too (retention,
                // DeleteRecords): it starts over where the leader's log starts.
                tracing::info!(partition = ?p, end, leader_log_start = d.log_start_offset, "log ends below the leader's log start: starting over there");
                p.truncate_fully_and_start_at(d.log_start_offset, now_ms())
                    .map_err(|e| e.to_string())?;
                return Ok(Applied::Truncated);
            }
            return Err(format!(
                "fetch offset {end} is out of range at the leader (log start {}, high watermark {})",
                d.log_start_offset, d.high_watermark
            ));
        }
        Some(c) => return Err(format!("leader answered {c:?}")),
    }
    if d.diverging_epoch.epoch >= 0 {
        let (_, local_end) = p.end_offset_for_epoch(d.diverging_epoch.epoch);
        let to = local_end.min(d.diverging_epoch.end_offset);
        tracing::info!(partition = ?p, epoch = d.diverging_epoch.epoch, offset = to, "log diverges from the leader's: truncating");
        truncate(p, to)?;
        return Ok(Applied::Truncated);
    }
    // The leader's log start moved (retention, DeleteRecords): this replica follows.
    let start = p.offsets();
    if d.log_start_offset > start.log_start_offset.get()
        && d.log_start_offset <= start.log_end_offset.get()
    {
        p.delete_records_before(d.log_start_offset, now_ms())
            .map_err(|e| e.to_string())?;
    }
    let records: &Bytes = match &d.records {
        Some(r) if !r.is_empty() => r,
        _ => {
            p.follower_high_watermark(d.high_watermark);
            return Ok(Applied::Nothing);
        }
    };
    vltava_record::validate(records, i32::MAX as usize).map_err(|e| e.to_string())?;
    let info = p
        .append_as_follower(records, now_ms())
        .map_err(|e| e.to_string())?;
    p.stats.replicated_in(records.len() as u64);
    p.follower_high_watermark(d.high_watermark);
    Ok(Applied::Appended(info.last_offset.next().get()))
}

/// Truncates at `offset`, or at the start of the batch holding it.
fn truncate(p: &Partition, offset: i64) -> Result<(), String> {
    match p.truncate_to(offset) {
        Err(StorageError::NotBatchBoundary {
            batch_base_offset, ..
        }) => p.truncate_to(batch_base_offset),
        r => r,
    }
    .map_err(|e| e.to_string())
}

async fn exchange(
    stream: &mut PeerStream,
    correlation: i32,
    request: &FetchRequest,
    buf: &mut BytesMut,
) -> Result<FetchResponse, String> {
    let frame = vltava_protocol::encode_request(
        ApiKey::Fetch,
        FETCH_VERSION,
        correlation,
        Some("vltava-replica-fetcher"),
        request,
    )?;
    stream.write_all(&frame).await.map_err(|e| e.to_string())?;
    let len = stream.read_i32().await.map_err(|e| e.to_string())?;
    let len = usize::try_from(len)
        .ok()
        .filter(|l| (4..=MAX_FRAME).contains(l))
        .ok_or_else(|| format!("bad fetch response length {len}"))?;
    let body = read_body(stream, len, buf).await?;
    let (corr, resp) =
        vltava_protocol::decode_response::<FetchResponse>(ApiKey::Fetch, FETCH_VERSION, body)?;
    if corr != correlation {
        return Err(format!(
            "fetch response {corr} answers request {correlation}"
        ));
    }
    Ok(resp)
}

/// Answers up to this size are read into the fetcher's reused buffer; a larger one (a
/// catch-up past `replica.fetch.response.max.bytes`) gets memory freed with it.
const REUSED_ANSWER_MAX: usize = 16 << 20;

/// Reads `len` bytes into `buf`'s spare room, which is never zeroed, and splits them off.
/// `reserve` takes `buf`'s whole allocation back when nothing split from it is alive.
async fn read_body<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
    len: usize,
    buf: &mut BytesMut,
) -> Result<Bytes, String> {
    let mut own;
    let buf = if len > REUSED_ANSWER_MAX {
        own = BytesMut::with_capacity(len);
        &mut own
    } else {
        buf.clear();
        buf.reserve(len);
        buf
    };
    while buf.len() < len {
        let want = len - buf.len();
        let n = stream
            .read_buf(&mut (&mut *buf).limit(want))
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!(
                "connection closed {} bytes into a {len}-byte fetch response",
                buf.len()
            ));
        }
    }
    Ok(buf.split().freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn answers_are_read_whole_into_one_allocation_taken_back_each_round() {
        // A pipe smaller than an answer, so each arrives in pieces.
        let (mut tx, mut rx) = tokio::io::duplex(1000);
        let bodies: Vec<Vec<u8>> = [100_000u32, 60_000, 70_000]
            .iter()
            .enumerate()
            .map(|(k, &n)| (0..n).map(|i| (i * (k as u32 + 3)) as u8).collect())
            .collect();
        let sent = bodies.clone();
        let writer = tokio::spawn(async move {
            for b in &sent {
                tx.write_all(b).await.unwrap();
            }
            tx.write_all(&[1, 2, 3]).await.unwrap();
        });
        let mut buf = BytesMut::new();
        let one = read_body(&mut rx, bodies[0].len(), &mut buf).await.unwrap();
        assert_eq!(&one[..], &bodies[0][..]);
        let at = one.as_ptr();
        drop(one);
        let two = read_body(&mut rx, bodies[1].len(), &mut buf).await.unwrap();
        assert_eq!(&two[..], &bodies[1][..]);
        assert_eq!(two.as_ptr(), at, "the first answer's memory is used again");
        // The second answer is still held, and the next does not fit in what is left after
        // it: it gets memory of its own, and the held answer is untouched.
        let three = read_body(&mut rx, bodies[2].len(), &mut buf).await.unwrap();
        assert_eq!(&three[..], &bodies[2][..]);
        let (t, w) = (three.as_ptr_range(), two.as_ptr_range());
        assert!(
            t.end <= w.start || w.end <= t.start,
            "no overlap with the held answer"
        );
        assert_eq!(&two[..], &bodies[1][..]);
        writer.await.unwrap();
        let err = read_body(&mut rx, 10, &mut buf).await.unwrap_err();
        assert!(err.contains("3 bytes into a 10-byte"), "{err}");
    }

    #[tokio::test]
    async fn a_large_answer_is_not_kept() {
        let (mut tx, mut rx) = tokio::io::duplex(1 << 16);
        let len = REUSED_ANSWER_MAX + 1;
        let writer = tokio::spawn(async move {
            tx.write_all(&[1; 1000]).await.unwrap();
            tx.write_all(&vec![7u8; len]).await.unwrap();
            tx.write_all(&[2; 1000]).await.unwrap();
        });
        let mut buf = BytesMut::new();
        let small = read_body(&mut rx, 1000, &mut buf).await.unwrap();
        let at = small.as_ptr();
        drop(small);
        let big = read_body(&mut rx, len, &mut buf).await.unwrap();
        assert_eq!(big.len(), len);
        assert!(big.iter().all(|&b| b == 7));
        drop(big);
        // The big answer's memory went with it: the next answer is back in the small one's.
        let next = read_body(&mut rx, 1000, &mut buf).await.unwrap();
        assert_eq!(&next[..], &[2; 1000][..]);
        assert_eq!(next.as_ptr(), at);
        writer.await.unwrap();
    }
}
