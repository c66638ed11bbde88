//! Connections: frames in, responses out, in request order.
//!
//! Each connection has a reader loop and a writer. The reader decodes a frame and dispatches
//! it at once (so appends happen in arrival order); dispatch returns a future for the answer.
//! The writer polls all pending answers together but writes them in request order, so a
//! pipelined client gets in-order responses while acks=all produces share one fsync.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes};
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;
use vltava_protocol::{
    decode_request, encode_response_segmented, frame_len, DecodeError, Decoded, Header,
    SegmentedBuf,
};

use crate::broker::Broker;
use crate::context::{
    AclOperation, ConnectionContext, KafkaPrincipal, RequestContext, Resource, SecurityProtocol,
};
use crate::frame_writer::{write_frame, FrameSink, Outgoing};
use crate::handlers;
use crate::handlers::produce::Hostile;
use crate::memory_pool::{Member, MemoryPool, Reservation};
use crate::request_metrics::RequestTimer;
use crate::security::sasl::{Authenticator, SaslConfig, Verdict};

/// A response still being computed, or `None` when the request gets no answer (acks=0),
/// with what must stay held until it is written. The frame references the records it
/// carries (Fetch) instead of holding a copy of them.
pub type Pending = BoxFuture<'static, Option<Outgoing>>;

pub struct ConnectionTracker {
    limit: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
    tasks: parking_lot::Mutex<JoinSet<()>>,
    memory: Arc<MemoryPool>,
}

/// `max.connections.per.ip` and its overrides, with the connections open per address.
struct PerIp {
    default: usize,
    overrides: std::collections::HashMap<std::net::IpAddr, usize>,
    open: parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One open connection counted against its address; dropping it frees the place.
struct IpPermit {
    per_ip: Arc<PerIp>,
    ip: std::net::IpAddr,
}

impl PerIp {
    fn admit(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<IpPermit> {
        let max = self.overrides.get(&ip).copied().unwrap_or(self.default);
        let mut open = self.open.lock();
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            if *n == 0 {
                open.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(IpPermit {
            per_ip: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for IpPermit {
    fn drop(&mut self) {
        let mut open = self.per_ip.open.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl ConnectionTracker {
    pub fn new(
        max_connections: usize,
        (per_ip, overrides): (usize, std::collections::HashMap<std::net::IpAddr, usize>),
        memory: Arc<MemoryPool>,
    ) -> Self {
        Self {
            limit: Arc::new(Semaphore::new(max_connections)),
            per_ip: Arc::new(PerIp {
                default: per_ip,
                overrides,
                open: Default::default(),
            }),
            tasks: parking_lot::Mutex::new(JoinSet::new()),
            memory,
        }
    }

    /// Serves one accepted connection of `listener` until it closes.
    pub fn spawn(
        &self,
        broker: Arc<Broker>,
        stream: tokio::net::TcpStream,
        listener: &BoundListener,
        peer: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) {
        let Ok(permit) = Arc::clone(&self.limit).try_acquire_owned() else {
            tracing::warn!(%peer, "max.connections reached; closing new connection");
            return;
        };
        let Some(ip_permit) = self.per_ip.admit(peer.ip()) else {
            tracing::warn!(%peer, "max.connections.per.ip reached; closing new connection");
            return;
        };
        // connection_creation_rate (KIP-612): a connection over its address's rate is held for
        // the throttle time and then closed, so the client cannot retry at once. The
        // controllers' quorum connections are exempt.
        if !broker.config.is_controller_listener(&listener.name) {
            let hold = broker
                .quotas
                .record_connection(peer.ip(), crate::quota::monotonic_ms());
            if hold > 0 {
                tracing::warn!(%peer, hold_ms = hold, "connection_creation_rate exceeded; closing new connection");
                self.tasks.lock().spawn(async move {
                    tokio::time::sleep(Duration::from_millis(hold)).await;
                    drop((stream, permit, ip_permit));
                });
                return;
            }
        }
        let permit = (permit, ip_permit);
        let mut connection = ConnectionContext {
            listener_name: Arc::clone(&listener.name),
            security_protocol: listener.security_protocol,
            principal: KafkaPrincipal::anonymous(),
            client_address: peer.ip(),
            response_budget: Arc::new(Semaphore::new(broker.config.fetch_max_bytes())),
            mute: Default::default(),
        };
        let member = self.memory.join();
        let listener_name = Arc::clone(&listener.name);
        let tls = listener.tls.clone();
        let principal_rules = Arc::clone(&listener.principal_rules);
        let authenticator = listener.sasl.clone().map(Authenticator::new);
        let mut tasks = self.tasks.lock();
        while tasks.try_join_next().is_some() {}
        tasks.spawn(
            async move {
                let Some(tls) = tls else {
                    serve_tcp(broker, stream, Arc::new(connection), authenticator, member, shutdown)
                        .await;
                    drop(permit);
                    return;
                };
                // The handshake runs here, not in the acceptor, so a slow client delays only
                // itself; it gets connections.max.idle.ms like any request.
                let idle = broker.config.connections_max_idle();
                let accepted = tokio::time::timeout(
                    idle,
                    tokio_rustls::TlsAcceptor::from(tls.config()).accept(stream),
                )
                .await;
                match accepted {
                    Ok(Ok(stream)) => {
                        match crate::security::tls::principal(
                            stream.get_ref().1.peer_certificates(),
                            &principal_rules,
                        ) {
                            Ok(p) => connection.principal = p,
                            Err(e) => {
                                tracing::info!(error = %e, "closing connection");
                                drop(permit);
                                return;
                            }
                        }
                        serve_tls(broker, stream, Arc::new(connection), authenticator, member, shutdown)
                            .await;
                    }
                    Ok(Err(e)) => tracing::info!(error = %e, "TLS handshake failed; closing connection"),
                    Err(_) => tracing::info!("TLS handshake took longer than connections.max.idle.ms; closing connection"),
                }
                drop(permit);
            }
            .instrument(tracing::debug_span!("conn", %peer, listener = %listener_name)),
        );
    }

    /// Waits for connections to finish their in-flight requests, up to `timeout`.
    pub async fn drain(&self, timeout: Duration) {
        let mut tasks = std::mem::take(&mut *self.tasks.lock());
        let _ = tokio::time::timeout(timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.abort_all();
    }
}

/// A listener after binding: what connections accepted on it are told and tagged with.
#[derive(Debug, Clone)]
pub struct BoundListener {
    pub name: Arc<str>,
    pub security_protocol: SecurityProtocol,
    pub local_addr: SocketAddr,
    /// Host and port given to clients that connect through this listener.
    pub advertised: (String, u16),
    /// The TLS server side of `SSL` and `SASL_SSL` listeners.
    pub tls: Option<Arc<crate::security::tls::ServerTls>>,
    /// The SASL settings of `SASL_PLAINTEXT` and `SASL_SSL` listeners.
    pub sasl: Option<Arc<SaslConfig>>,
    /// `ssl.principal.mapping.rules`: how a client certificate names its principal.
    pub principal_rules: Arc<crate::security::principal_rules::PrincipalRules>,
}

/// The first frame of memory is taken at once up to this size (almost every request), so
/// only large frames grow their buffer as they arrive.
const FIRST_CHUNK: usize = 1 << 20;
/// A connection reads no further frame while the produce requests queued for its append
/// lane, the one being appended included, hold this much: a 1 MB produce is read while the
/// one before it is appended, but not further ahead. Reading further bought nothing (one
/// lane appends one at a time) and cost CPU: with the client ahead by tens of requests,
/// the frames read ahead had left the caches by the time they were copied to the page
/// cache, and the socket's copy into a recycled buffer ran twice as slow.
const APPEND_AHEAD_BYTES: usize = 1 << 20;

/// Why a frame could not be read.
enum FrameError {
    Closed,
    Idle,
    Stalled,
    Evicted,
    Truncated(std::io::Error),
    TooLarge(vltava_protocol::FrameError),
}

/// Reads a frame's length prefix.
async fn read_prefix<R: AsyncRead + Unpin>(
    rd: &mut R,
    max: usize,
    idle: Duration,
) -> Result<usize, FrameError> {
    let mut prefix = [0u8; 4];
    match tokio::time::timeout(idle, rd.read_exact(&mut prefix)).await {
        Err(_) => return Err(FrameError::Idle),
        Ok(Err(_)) => return Err(FrameError::Closed),
        Ok(Ok(_)) => {}
    }
    frame_len(prefix, max).map_err(FrameError::TooLarge)
}

/// A frame as read: its body, or for a Produce whose records went into a pipe, the body
/// without them and the records.
enum Frame {
    Body(Bytes, Reservation),
    Spliced(Bytes, crate::splice::SplicedRecords, Reservation),
}

/// Reads one frame's body of `len` bytes, splicing a large Produce's records into a pipe
/// when the connection can (`splicer`, plaintext and authenticated).
async fn read_body<R: AsyncRead + SocketOf + Unpin>(
    rd: &mut R,
    member: &Member,
    len: usize,
    idle: Duration,
    splicer: Option<&mut crate::splice::Splicer>,
) -> Result<Frame, FrameError> {
    if let Some(splicer) = splicer.filter(|s| s.may_take(len)) {
        let deadline = tokio::time::Instant::now() + idle;
        let spliced = tokio::select! {
            r = tokio::time::timeout_at(deadline, read_spliced(rd, member, len, splicer)) => r,
            () = member.closed() => return Err(FrameError::Evicted),
        };
        member.frame_done();
        match spliced {
            Err(_) => return Err(FrameError::Stalled),
            Ok(Err(e)) => return Err(FrameError::Truncated(e)),
            Ok(Ok(Some(frame))) => return Ok(frame),
            Ok(Ok(None)) => {}
        }
    }
    read_frame_body(rd, member, len, idle)
        .await
        .map(|(b, r)| Frame::Body(b, r))
}

/// Splices a Produce's records into a pipe if the frame is one the pipe path takes; `None`
/// (nothing read) otherwise.
async fn read_spliced<R: AsyncRead + SocketOf + Unpin>(
    rd: &mut R,
    member: &Member,
    len: usize,
    splicer: &mut crate::splice::Splicer,
) -> std::io::Result<Option<Frame>> {
    use vltava_protocol::produce_head::{parse, Head};
    let Some(socket) = rd.socket() else {
        return Ok(None);
    };
    let mut peeked = [0u8; 512];
    let n = socket.peek(&mut peeked).await?;
    let Head::Produce(head) = parse(&peeked[..n], len) else {
        return Ok(None);
    };
    if !splicer.can_take(head.records_len) {
        return Ok(None);
    }
    let Some(ready) = splicer.ready(head.records_len) else {
        return Ok(None);
    };
    let mut reservation = member.empty();
    member.reserve(&mut reservation, len).await;
    let mut start = vec![0u8; head.records_at];
    crate::splice::read_exact(socket, &mut start).await?;
    let received = splicer.receive(socket, ready, head.records_len).await?;
    let mut tail = vec![0u8; head.tail_len];
    crate::splice::read_exact(socket, &mut tail).await?;
    Ok(Some(match received {
        crate::splice::Received::Spliced(records) => {
            Frame::Spliced(head.without_records(&start, &tail), records, reservation)
        }
        crate::splice::Received::Copied(records) => {
            let mut body = start;
            body.extend_from_slice(&records);
            body.extend_from_slice(&tail);
            Frame::Body(body.into(), reservation)
        }
    }))
}

/// The TCP socket under a reader, for splicing from it; TLS streams have none.
pub(crate) trait SocketOf {
    fn socket(&self) -> Option<&tokio::net::TcpStream> {
        None
    }
}

impl SocketOf for tokio::net::tcp::OwnedReadHalf {
    fn socket(&self) -> Option<&tokio::net::TcpStream> {
        Some(self.as_ref())
    }
}

impl<S> SocketOf for tokio::io::ReadHalf<S> {}

/// Reads one frame's body of `len` bytes, taking memory from the pool only as its bytes
/// arrive.
async fn read_frame_body<R: AsyncRead + Unpin>(
    rd: &mut R,
    member: &Member,
    len: usize,
    idle: Duration,
) -> Result<(Bytes, Reservation), FrameError> {
    let deadline = tokio::time::Instant::now() + idle;
    let mut reservation = member.empty();
    let mut body = member.pool().buffer(len);
    let result = async {
        while body.len() < len {
            let chunk = (len - body.len()).min(FIRST_CHUNK.max(body.len()));
            tokio::select! {
                () = member.reserve(&mut reservation, chunk) => {}
                () = member.closed() => return Err(FrameError::Evicted),
            }
            body.reserve_exact(chunk);
            let target = body.len() + chunk;
            while body.len() < target {
                let remaining = target - body.len();
                let mut limited = (&mut body).limit(remaining);
                let read = tokio::select! {
                    r = tokio::time::timeout_at(deadline, rd.read_buf(&mut limited)) => r,
                    () = member.closed() => return Err(FrameError::Evicted),
                };
                match read {
                    Err(_) => return Err(FrameError::Stalled),
                    Ok(Err(e)) => return Err(FrameError::Truncated(e)),
                    Ok(Ok(0)) => {
                        return Err(FrameError::Truncated(
                            std::io::ErrorKind::UnexpectedEof.into(),
                        ))
                    }
                    Ok(Ok(_)) => member.progress(),
                }
            }
        }
        Ok(())
    }
    .await;
    member.frame_done();
    result.map(|()| (member.pool().frame_bytes(body), reservation))
}

/// A produce request waiting for the connection's append lane.
struct AppendJob {
    connection: Arc<ConnectionContext>,
    header: Header,
    size: usize,
    request: vltava_protocol::Request,
    spliced: Option<crate::splice::SplicedRecords>,
    timer: Arc<RequestTimer>,
    reply: oneshot::Sender<Result<Pending, Hostile>>,
}

/// The produce requests of one connection, handled in arrival order by a task of their own
/// inside `block_in_place` (appends write files, roll segments and decompress) while the
/// connection goes on reading and decoding the next frames, up to [`APPEND_AHEAD_BYTES`]
/// ahead. Every request that queued while one run was busy goes into the next run, so a
/// client that pipelines many small requests pays one wake-up per run rather than per
/// request. Appends of one connection stay in order; `done` counts the requests handled,
/// for requests of other kinds to wait on.
struct AppendLane {
    jobs: mpsc::UnboundedSender<AppendJob>,
    submitted: u64,
    done: watch::Receiver<u64>,
    /// Requests submitted and not yet handled: (their `submitted` count, frame size).
    queued: std::collections::VecDeque<(u64, usize)>,
    queued_bytes: usize,
}

impl AppendLane {
    fn start(broker: Arc<Broker>) -> Self {
        let (jobs, mut rx) = mpsc::unbounded_channel::<AppendJob>();
        let (done_tx, done) = watch::channel(0u64);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut run = vec![first];
                while let Ok(job) = rx.try_recv() {
                    run.push(job);
                }
                let n = run.len() as u64;
                let b = Arc::clone(&broker);
                // After a hostile request nothing more of this connection is appended: the
                // jobs behind it are dropped, and their requests close the connection unanswered.
                let append = move || {
                    for job in run {
                        let answer = handle(
                            &b,
                            &job.connection,
                            job.header,
                            job.size,
                            job.request,
                            job.spliced,
                            &job.timer,
                        );
                        let hostile = answer.is_err();
                        let _ = job.reply.send(answer);
                        if hostile {
                            return false;
                        }
                    }
                    true
                };
                // The run stays on this task's thread (`run_blocking`): one thread hop less
                // than a blocking-pool thread, and a lone acks=all request (an idempotent
                // producer's, which librdkafka sends one at a time) waited half as long in
                // the request queue.
                let handled = crate::broker::run_blocking(append).await;
                match handled {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        tracing::error!(error = %e, "produce handling failed; closing connection");
                        return;
                    }
                }
                done_tx.send_modify(|d| *d += n);
            }
        });
        Self {
            jobs,
            submitted: 0,
            done,
            queued: std::collections::VecDeque::new(),
            queued_bytes: 0,
        }
    }

    /// Counts a request of `size` bytes submitted.
    fn count_submitted(&mut self, size: usize) {
        self.submitted += 1;
        self.queued.push_back((self.submitted, size));
        self.queued_bytes += size;
    }

    /// Waits until the requests queued for the lane hold fewer than `limit` bytes.
    async fn wait_below(&mut self, limit: usize) {
        loop {
            let done = *self.done.borrow_and_update();
            while let Some(&(seq, size)) = self.queued.front() {
                if seq > done {
                    break;
                }
                self.queued.pop_front();
                self.queued_bytes -= size;
            }
            if self.queued_bytes < limit || self.done.changed().await.is_err() {
                return;
            }
        }
    }

    /// Queues a produce request; the answer's future resolves once it is appended (and, for
    /// acks=all, durable). A hostile request or a failed run sets `closing`.
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &mut self,
        connection: Arc<ConnectionContext>,
        header: Header,
        size: usize,
        request: vltava_protocol::Request,
        spliced: Option<crate::splice::SplicedRecords>,
        timer: Arc<RequestTimer>,
        closing: Arc<watch::Sender<bool>>,
    ) -> Option<Pending> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(AppendJob {
                connection,
                header,
                size,
                request,
                spliced,
                timer,
                reply,
            })
            .ok()?;
        self.count_submitted(size);
        Some(Box::pin(async move {
            match answer.await {
                Ok(Ok(pending)) => pending.await,
                Ok(Err(Hostile(reason))) => {
                    tracing::warn!(%reason, "hostile request; closing connection");
                    closing.send_replace(true);
                    None
                }
                Err(_) => {
                    closing.send_replace(true);
                    None
                }
            }
        }))
    }

    /// Waits until every queued produce request has been handled, so a request of another
    /// kind sees the appends sent before it, as it would if requests ran one at a time.
    async fn drain(&mut self) {
        let submitted = self.submitted;
        let _ = self.done.wait_for(|d| *d >= submitted).await;
    }
}

/// Serves a plaintext connection: its answers may send file bytes with `sendfile`.
async fn serve_tcp(
    broker: Arc<Broker>,
    stream: tokio::net::TcpStream,
    connection: Arc<ConnectionContext>,
    authenticator: Option<Authenticator>,
    member: Member,
    shutdown: watch::Receiver<bool>,
) {
    let (rd, wr) = stream.into_split();
    serve(broker, rd, wr, connection, authenticator, member, shutdown).await;
}

/// Serves a TLS connection.
async fn serve_tls<S>(
    broker: Arc<Broker>,
    stream: S,
    connection: Arc<ConnectionContext>,
    authenticator: Option<Authenticator>,
    member: Member,
    shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    serve(broker, rd, wr, connection, authenticator, member, shutdown).await;
}

async fn serve<R, W>(
    broker: Arc<Broker>,
    mut rd: R,
    mut wr: W,
    mut connection: Arc<ConnectionContext>,
    mut authenticator: Option<Authenticator>,
    member: Member,
    mut shutdown: watch::Receiver<bool>,
) where
    R: AsyncRead + SocketOf + Unpin + Send + 'static,
    W: FrameSink + 'static,
{
    // Each answer goes with its request's timer, for the request metrics; quorum frames
    // have no type and are not counted.
    let (tx, mut rx) =
        mpsc::channel::<(Pending, Arc<RequestTimer>)>(broker.config.queued_max_requests());
    let metrics_broker = Arc::clone(&broker);
    let writer = tokio::spawn(async move {
        let metrics = &metrics_broker.request_metrics;
        let mut pending = FuturesOrdered::new();
        let mut open = true;
        loop {
            tokio::select! {
                next = rx.recv(), if open => match next {
                    Some((fut, timer)) => pending.push_back(fut.map(move |out| (out, timer))),
                    None => open = false,
                },
                Some((done, timer)) = pending.next(), if !pending.is_empty() => {
                    let write_start = Instant::now();
                    if let Some(mut out) = done {
                        if let Err(e) = write_frame(&mut wr, &mut out).await {
                            tracing::debug!(error = %e, "write failed; closing");
                            return;
                        }
                        drop(out);
                    }
                    metrics.record_timer(&timer, write_start);
                }
                else => break,
            }
        }
        let _ = wr.shutdown().await;
    });
    let max = broker.config.socket_request_max_bytes();
    let is_controller_listener = broker
        .config
        .is_controller_listener(&connection.listener_name);
    // Controllers keep quiet connections to each other open.
    let idle = if is_controller_listener {
        Duration::from_secs(3600)
    } else {
        broker.config.connections_max_idle()
    };
    let mut lane: Option<AppendLane> = None;
    // Quorum peers send no produce requests; the pipes are made on first use.
    let mut splicer = broker
        .config
        .produce_splice_min_bytes()
        .filter(|_| rd.socket().is_some() && !is_controller_listener)
        .map(crate::splice::Splicer::new);
    let mut metered_produce = false;
    let (closing_tx, mut closing) = watch::channel(false);
    let closing_tx = Arc::new(closing_tx);
    loop {
        // Before SASL authentication a frame may be at most sasl.server.max.receive.size, as
        // in Kafka: an anonymous peer cannot make the broker hold 100 MB for it.
        let max = match &authenticator {
            Some(a) if !a.is_done() => max.min(broker.config.sasl_server_max_receive_size()),
            _ => max,
        };
        if std::mem::take(&mut metered_produce) {
            if let Some(lane) = lane.as_mut() {
                lane.drain().await;
            }
        }
        // Read ahead of the appends by little: every frame read ahead is a buffer that leaves
        // the CPU caches before its append copies it, and another the next read copies into.
        if let Some(lane) = lane.as_mut() {
            tokio::select! {
                () = lane.wait_below(APPEND_AHEAD_BYTES) => {}
                _ = shutdown.changed() => break,
                _ = closing.wait_for(|c| *c) => break,
            }
        }
        // A throttled client's connection reads nothing until its throttle time is over
        // (KIP-219); requests already read are still answered.
        let muted = connection.mute.muted_until();
        if muted > 0 {
            let wait = muted.saturating_sub(crate::quota::monotonic_ms());
            if wait > 0 {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                    _ = shutdown.changed() => break,
                    _ = closing.wait_for(|c| *c) => break,
                }
            }
        }
        // Records move through a pipe only once a SASL listener's peer has authenticated.
        let splice_now = authenticator.as_ref().is_none_or(Authenticator::is_done);
        let frame = tokio::select! {
            f = async {
                let len = read_prefix(&mut rd, max, idle).await?;
                read_body(&mut rd, &member, len, idle, splicer.as_mut().filter(|_| splice_now)).await
            } => f,
            _ = shutdown.changed() => break,
            _ = closing.wait_for(|c| *c) => break,
        };
        let (body, mut spliced, reservation) = match frame {
            Ok(Frame::Body(body, reservation)) => (body, None, reservation),
            Ok(Frame::Spliced(body, records, reservation)) => (body, Some(records), reservation),
            Err(e) => {
                match e {
                    FrameError::Closed => {}
                    FrameError::Idle => {
                        tracing::debug!("idle for connections.max.idle.ms; closing connection")
                    }
                    FrameError::Stalled => tracing::warn!(
                        "request stalled for connections.max.idle.ms; closing connection"
                    ),
                    FrameError::Evicted => tracing::warn!(
                        "queued.max.request.bytes spent while this request stalled mid-frame; closing connection"
                    ),
                    FrameError::Truncated(e) => {
                        tracing::warn!(error = %e, "truncated request; closing connection")
                    }
                    FrameError::TooLarge(e) => {
                        let size = match e {
                            vltava_protocol::FrameError::TooLarge { size, .. } => size,
                            vltava_protocol::FrameError::Negative { size } => i64::from(size),
                        };
                        // A TLS record header (handshake, version 3.x) read as a length.
                        if size >> 16 == 0x1603 {
                            tracing::warn!("TLS handshake on a listener without TLS (a client with security.protocol SSL or SASL_SSL?); closing connection");
                        } else if authenticator.as_ref().is_some_and(|a| !a.is_done()) {
                            tracing::warn!(
                                size,
                                limit = broker.config.sasl_server_max_receive_size(),
                                "frame before SASL authentication exceeds sasl.server.max.receive.size; closing connection"
                            );
                        } else {
                            tracing::warn!(error = %e, "closing connection");
                        }
                    }
                }
                break;
            }
        };
        let read_at = Instant::now();
        // Quorum frames are served only once a SASL listener's peer has authenticated.
        let authenticated = authenticator.as_ref().is_none_or(Authenticator::is_done);
        if is_controller_listener
            && authenticated
            && crate::quorum_transport::is_quorum_frame(&body)
        {
            let Some((corr, payload)) = crate::quorum_transport::parse(&body) else {
                break;
            };
            // Quorum frames stand for Kafka's KRaft RPCs (Vote, BeginQuorumEpoch, Fetch), which
            // need CLUSTER_ACTION on the cluster.
            let ctx = RequestContext {
                connection: Arc::clone(&connection),
                client_id: None,
                api_key: vltava_protocol::ApiKey::Vote,
                api_version: 0,
                correlation_id: corr,
            };
            if !broker.authorize(&ctx, AclOperation::ClusterAction, Resource::Cluster) {
                tracing::warn!(principal = %connection.principal, "quorum request without CLUSTER_ACTION; closing connection");
                break;
            }
            let quorum = Arc::clone(broker.controller.quorum());
            let pending: Pending = Box::pin(async move {
                let answer = quorum.serve(&payload).await;
                drop(reservation);
                Some(Outgoing::bytes(crate::quorum_transport::response(
                    corr, answer,
                )))
            });
            let timer = Arc::new(RequestTimer::new(None, read_at));
            if tx.send((pending, timer)).await.is_err() {
                break;
            }
            continue;
        }
        let size = body.len() + spliced.as_ref().map_or(0, |r| r.len());
        let decoded = decode_request(body);
        let timer = Arc::new(match &decoded {
            Ok(Decoded::Request(header, request)) => {
                let from_follower = match request {
                    vltava_protocol::Request::Fetch(f) => {
                        Some(handlers::fetch::replica_id(f, header.api_version) >= 0)
                    }
                    _ => None,
                };
                RequestTimer::new(Some(header.api_key), read_at).fetch_from(from_follower)
            }
            _ => RequestTimer::new(None, read_at),
        });
        let pending = match decoded {
            Ok(Decoded::Request(header, request)) => {
                // Until SASL authentication succeeds, and while re-authenticating (KIP-368), the
                // authenticator answers, not the handlers; it also ends expired sessions.
                let request = match authenticator.as_mut() {
                    None => request,
                    Some(a) => match a.on_request(
                        crate::quota::monotonic_ms(),
                        header.api_key,
                        request,
                        &|user, mechanism| {
                            broker
                                .controller
                                .image()
                                .scram_credential(user, mechanism)
                                .cloned()
                        },
                    ) {
                        Verdict::Pass(request) => request,
                        Verdict::Answer(response) => {
                            let pending = respond_now(&header, response, header.api_version);
                            if tx.send((pending, Arc::clone(&timer))).await.is_err() {
                                break;
                            }
                            continue;
                        }
                        Verdict::Authenticated(response, principal) => {
                            tracing::debug!(%principal, "SASL authentication succeeded");
                            let mut c = (*connection).clone();
                            c.principal = principal;
                            connection = Arc::new(c);
                            let pending = respond_now(&header, response, header.api_version);
                            if tx.send((pending, Arc::clone(&timer))).await.is_err() {
                                break;
                            }
                            continue;
                        }
                        Verdict::AnswerAndClose(response) => {
                            tracing::info!("SASL authentication failed; closing connection");
                            // Kafka's connection.failed.authentication.delay.ms: a guesser
                            // waits for each verdict.
                            tokio::time::sleep(
                                broker.config.connection_failed_authentication_delay(),
                            )
                            .await;
                            let pending = respond_now(&header, response, header.api_version);
                            let _ = tx.send((pending, Arc::clone(&timer))).await;
                            break;
                        }
                        Verdict::Refuse(reason) => {
                            tracing::info!(%reason, "closing connection");
                            break;
                        }
                    },
                };
                if matches!(request, vltava_protocol::Request::Produce(_)) {
                    // A client with a producer_byte_rate is read one request at a time, as
                    // Kafka reads every connection: its next request waits for this one's
                    // throttle.
                    metered_produce = broker.quotas.is_active()
                        && broker
                            .quotas
                            .quota(
                                vltava_metadata::quota::QuotaKey::ProducerByteRate,
                                &connection.principal.name,
                                header.client_id.as_deref().unwrap_or(""),
                            )
                            .is_some();
                    // Off the async workers, in arrival order, while this loop reads on.
                    let lane = lane.get_or_insert_with(|| AppendLane::start(Arc::clone(&broker)));
                    match lane.submit(
                        Arc::clone(&connection),
                        header,
                        size,
                        request,
                        spliced.take(),
                        Arc::clone(&timer),
                        Arc::clone(&closing_tx),
                    ) {
                        Some(pending) => pending,
                        None => break,
                    }
                } else {
                    if let Some(lane) = lane.as_mut() {
                        lane.drain().await;
                    }
                    match handle(&broker, &connection, header, size, request, None, &timer) {
                        Ok(pending) => pending,
                        Err(Hostile(reason)) => {
                            tracing::warn!(%reason, "hostile request; closing connection");
                            break;
                        }
                    }
                }
            }
            Ok(Decoded::ApiVersionsTooNew(header)) => {
                let resp = handlers::api_versions::unsupported_version();
                respond_now(&header, vltava_protocol::Response::ApiVersions(resp), 0)
            }
            Err(e) => {
                match &e {
                    DecodeError::UnsupportedApi { .. } | DecodeError::UnsupportedVersion { .. } => {
                        tracing::warn!(error = %e, "unsupported request; closing connection")
                    }
                    _ => tracing::warn!(error = %e, "undecodable request; closing connection"),
                }
                break;
            }
        };
        // The request's memory stays taken until its answer is ready: a produce's records
        // are slices of the frame.
        let pending: Pending = Box::pin(async move {
            let out = pending.await;
            drop(reservation);
            out
        });
        if tx.send((pending, Arc::clone(&timer))).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

fn respond_now(header: &Header, response: vltava_protocol::Response, version: i16) -> Pending {
    let bytes = encode(header.correlation_id, version, &response);
    Box::pin(async move { bytes.map(Outgoing::bytes) })
}

fn encode(
    correlation_id: i32,
    version: i16,
    response: &vltava_protocol::Response,
) -> Option<SegmentedBuf> {
    match encode_response_segmented(correlation_id, version, response) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::error!(error = %e, "response encoding failed");
            None
        }
    }
}

fn handle(
    broker: &Arc<Broker>,
    connection: &Arc<ConnectionContext>,
    header: Header,
    size: usize,
    request: vltava_protocol::Request,
    spliced: Option<crate::splice::SplicedRecords>,
    timer: &Arc<RequestTimer>,
) -> Result<Pending, Hostile> {
    timer.local_started();
    let span = tracing::debug_span!(
        "request",
        api_key = ?header.api_key,
        api_version = header.api_version,
        correlation_id = header.correlation_id,
        client_id = header.client_id.as_deref().unwrap_or(""),
    );
    let _enter = span.enter();
    let (corr, version) = (header.correlation_id, header.api_version);
    let metering = Metering::of(&request);
    let ctx = RequestContext {
        connection: Arc::clone(connection),
        client_id: header.client_id.clone(),
        api_key: header.api_key,
        api_version: header.api_version,
        correlation_id: header.correlation_id,
    };
    // Produce bytes are metered as the request arrives, so the connection is muted before
    // its next request is read (the reader waits for this append when the client is metered).
    let bytes_throttle = match metering {
        Metering::Produce { .. } if broker.quotas.is_active() => {
            let now = crate::quota::monotonic_ms();
            let ms = broker.quotas.record(
                vltava_metadata::quota::QuotaKey::ProducerByteRate,
                &connection.principal.name,
                header.client_id.as_deref().unwrap_or(""),
                size as f64,
                now,
            );
            if ms > 0 {
                connection.mute.until(now + ms);
            }
            ms
        }
        _ => 0,
    };
    // Threads' time is measured only while some quota exists: without one, requests pay
    // no clock reads.
    let started = broker.quotas.is_active().then(std::time::Instant::now);
    let fut = match (request, spliced) {
        (vltava_protocol::Request::Produce(r), Some(records)) => {
            let fut = handlers::produce::handle_spliced(broker, &ctx, r, records)?;
            Box::pin(async move { fut.await.map(handlers::Answer::from) })
        }
        (request, _) => handlers::dispatch(broker, ctx, request)?,
    };
    timer.local_ended();
    let timer = Arc::clone(timer);
    let busy = started.map(|s| s.elapsed());
    let broker = Arc::clone(broker);
    let connection = Arc::clone(connection);
    let client_id = header.client_id;
    Ok(Box::pin(
        async move {
            let mut timed = Timed { inner: fut, busy };
            let answer = (&mut timed).await;
            timer.remote_ended();
            let time_throttle = request_time_throttle(
                &broker,
                &connection,
                client_id.as_deref().unwrap_or(""),
                metering,
                timed.busy,
            );
            let mut answer = answer?;
            // The larger throttle is the one the client is told (a consumer's was set by the
            // fetch handler).
            let throttle = bytes_throttle
                .max(time_throttle)
                .max(u64::try_from(answer.response.throttle_time_ms()).unwrap_or(0));
            if throttle > 0 {
                answer
                    .response
                    .set_throttle_time_ms(i32::try_from(throttle).unwrap_or(i32::MAX));
            }
            let frame = encode(corr, version, &answer.response)?;
            if !answer.regions.is_empty() && !stand_ins_intact(&frame, &answer) {
                // Never send zeros for records: close the connection instead.
                tracing::error!(
                    "a fetch answer lost its file ranges in encoding; closing connection"
                );
                return None;
            }
            Some(Outgoing {
                frame,
                regions: answer.regions,
                hold: answer.hold,
            })
        }
        .instrument(span.clone()),
    ))
}

/// Whether every stand-in the answer's records hold reached the frame as a chunk of its own.
fn stand_ins_intact(frame: &SegmentedBuf, answer: &handlers::Answer) -> bool {
    let vltava_protocol::Response::Fetch(f) = &answer.response else {
        return false;
    };
    let records = f.responses.iter().flat_map(|t| &t.partitions);
    let expected = records
        .clone()
        .filter_map(|p| p.records.as_deref())
        .filter(|r| vltava_protocol::stand_in::stand_in_index(r).is_some())
        .count();
    vltava_protocol::stand_in::count_stand_ins(frame, records.count()) == Some(expected)
}

/// Which client quotas a request counts against.
#[derive(Debug, Clone, Copy)]
enum Metering {
    /// Request bytes against `producer_byte_rate`; `acks=0` is exempt from the request quota.
    Produce {
        acks_zero: bool,
    },
    /// A consumer's answer bytes against `consumer_byte_rate` (metered by the fetch handler).
    ConsumerFetch,
    /// Brokers' own requests (follower fetches, transaction markers) count against nothing.
    Exempt,
    Other,
}

impl Metering {
    fn of(request: &vltava_protocol::Request) -> Self {
        use vltava_protocol::Request as R;
        match request {
            R::Produce(p) => Self::Produce {
                acks_zero: p.acks == 0,
            },
            R::Fetch(f) if f.replica_id.0 >= 0 || f.replica_state.replica_id.0 >= 0 => Self::Exempt,
            R::Fetch(_) => Self::ConsumerFetch,
            R::WriteTxnMarkers(_) => Self::Exempt,
            _ => Self::Other,
        }
    }
}

/// Meters a handled request's share of the broker's threads against the client's
/// `request_percentage`; returns the throttle time and mutes the connection for it.
fn request_time_throttle(
    broker: &Broker,
    connection: &ConnectionContext,
    client_id: &str,
    metering: Metering,
    busy: Option<Duration>,
) -> u64 {
    let Some(busy) = busy else {
        return 0;
    };
    if !broker.quotas.is_active()
        || matches!(
            metering,
            Metering::Exempt | Metering::Produce { acks_zero: true }
        )
    {
        return 0;
    }
    let now = crate::quota::monotonic_ms();
    // A thread's whole time is 100 %: busy nanoseconds become percent-seconds.
    let ms = broker.quotas.record(
        vltava_metadata::quota::QuotaKey::RequestPercentage,
        &connection.principal.name,
        client_id,
        busy.as_nanos() as f64 * 100.0 / 1e9,
        now,
    );
    if ms > 0 {
        connection.mute.until(now + ms);
    }
    ms
}

/// A handler's future that adds up the time spent polling it: the request's share of the
/// broker's threads, for `request_percentage` (`None`: not measured).
struct Timed {
    inner: futures::future::BoxFuture<'static, Option<handlers::Answer>>,
    busy: Option<Duration>,
}

impl std::future::Future for &mut Timed {
    type Output = Option<handlers::Answer>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let Some(busy) = self.busy else {
            return self.inner.as_mut().poll(cx);
        };
        let started = std::time::Instant::now();
        let out = self.inner.as_mut().poll(cx);
        self.busy = Some(busy + started.elapsed());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lane with requests of `sizes` queued, none handled, and the sender of its `done`.
    fn queued_lane(sizes: &[usize]) -> (AppendLane, watch::Sender<u64>) {
        let (jobs, _) = mpsc::unbounded_channel();
        let (done_tx, done) = watch::channel(0);
        let mut lane = AppendLane {
            jobs,
            submitted: 0,
            done,
            queued: Default::default(),
            queued_bytes: 0,
        };
        for &size in sizes {
            lane.count_submitted(size);
        }
        (lane, done_tx)
    }

    #[tokio::test]
    async fn reading_waits_while_the_lane_holds_the_limit_and_resumes_as_it_drains() {
        let (mut lane, done) = queued_lane(&[700_000, 700_000, 100]);
        let waiting = tokio::time::timeout(
            Duration::from_millis(50),
            lane.wait_below(APPEND_AHEAD_BYTES),
        )
        .await;
        assert!(waiting.is_err(), "1.4 MB queued is over the limit");
        done.send_replace(1);
        lane.wait_below(APPEND_AHEAD_BYTES).await;
        assert_eq!(lane.queued_bytes, 700_100);
        assert_eq!(lane.queued.len(), 2);
        done.send_replace(3);
        lane.wait_below(1).await;
        assert_eq!(lane.queued_bytes, 0);
    }

    #[tokio::test]
    async fn a_stopped_lane_does_not_hold_reading_up() {
        let (mut lane, done) = queued_lane(&[5 << 20]);
        drop(done);
        tokio::time::timeout(Duration::from_secs(5), lane.wait_below(APPEND_AHEAD_BYTES))
            .await
            .expect("returns once the lane is gone");
    }
}
