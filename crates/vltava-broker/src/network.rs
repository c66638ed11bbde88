//! Connections: frames in, responses out, in request order.
//!
//! Each connection has a reader loop and a writer. The reader decodes a frame and dispatches
//! it at once (so appends happen in arrival order); dispatch returns a future for the answer.
//! The writer polls all pending answers together but writes them in request order, so a
//! pipelined client gets in-order responses while acks=all produces share one fsync.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;
use vltava_protocol::{decode_request, encode_response, frame_len, DecodeError, Decoded, Header};

use crate::broker::Broker;
use crate::handlers;
use crate::handlers::produce::Hostile;

/// A response still being computed, or `None` when the request gets no answer (acks=0).
pub type Pending = BoxFuture<'static, Option<Bytes>>;

pub struct ConnectionTracker {
    limit: Arc<Semaphore>,
    tasks: parking_lot::Mutex<JoinSet<()>>,
}

impl ConnectionTracker {
    pub fn new(max_connections: usize) -> Self {
        Self {
            limit: Arc::new(Semaphore::new(max_connections)),
            tasks: parking_lot::Mutex::new(JoinSet::new()),
        }
    }

    pub fn spawn(
        &self,
        broker: Arc<Broker>,
        stream: TcpStream,
        peer: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) {
        let Ok(permit) = Arc::clone(&self.limit).try_acquire_owned() else {
            tracing::warn!(%peer, "max.connections reached; closing new connection");
            return;
        };
        let _ = stream.set_nodelay(true);
        let mut tasks = self.tasks.lock();
        while tasks.try_join_next().is_some() {}
        tasks.spawn(
            async move {
                serve(broker, stream, peer.ip(), shutdown).await;
                drop(permit);
            }
            .instrument(tracing::debug_span!("conn", %peer)),
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

async fn serve(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: IpAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Pending>(broker.config.queued_max_requests());
    let writer = tokio::spawn(async move {
        let mut pending = FuturesOrdered::new();
        let mut open = true;
        loop {
            tokio::select! {
                next = rx.recv(), if open => match next {
                    Some(fut) => pending.push_back(fut),
                    None => open = false,
                },
                Some(done) = pending.next(), if !pending.is_empty() => {
                    if let Some(bytes) = done {
                        if let Err(e) = wr.write_all(&bytes).await {
                            tracing::debug!(error = %e, "write failed; closing");
                            return;
                        }
                    }
                }
                else => break,
            }
        }
        let _ = wr.shutdown().await;
    });
    let max = broker.config.socket_request_max_bytes();
    let idle = broker.config.connections_max_idle();
    loop {
        let mut prefix = [0u8; 4];
        let read = tokio::select! {
            r = tokio::time::timeout(idle, rd.read_exact(&mut prefix)) => r,
            _ = shutdown.changed() => break,
        };
        let Ok(read) = read else {
            tracing::debug!("idle for connections.max.idle.ms; closing connection");
            break;
        };
        if read.is_err() {
            break; // peer closed
        }
        let len = match frame_len(prefix, max) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "closing connection");
                break;
            }
        };
        let mut body = BytesMut::zeroed(len);
        match tokio::time::timeout(idle, rd.read_exact(&mut body)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "truncated request; closing connection");
                break;
            }
            Err(_) => {
                tracing::warn!("request stalled for connections.max.idle.ms; closing connection");
                break;
            }
        }
        let pending = match decode_request(body.freeze()) {
            Ok(Decoded::Request(header, request)) => match handle(&broker, header, peer, request) {
                Ok(pending) => pending,
                Err(Hostile(reason)) => {
                    tracing::warn!(%reason, "hostile request; closing connection");
                    break;
                }
            },
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
        if tx.send(pending).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

fn respond_now(header: &Header, response: vltava_protocol::Response, version: i16) -> Pending {
    let bytes = encode(header.correlation_id, version, &response);
    Box::pin(async move { bytes })
}

fn encode(
    correlation_id: i32,
    version: i16,
    response: &vltava_protocol::Response,
) -> Option<Bytes> {
    match encode_response(correlation_id, version, response) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::error!(error = %e, "response encoding failed");
            None
        }
    }
}

fn handle(
    broker: &Arc<Broker>,
    header: Header,
    peer: IpAddr,
    request: vltava_protocol::Request,
) -> Result<Pending, Hostile> {
    let span = tracing::debug_span!(
        "request",
        api_key = ?header.api_key,
        api_version = header.api_version,
        correlation_id = header.correlation_id,
        client_id = header.client_id.as_deref().unwrap_or(""),
    );
    let _enter = span.enter();
    let (corr, version) = (header.correlation_id, header.api_version);
    let fut = handlers::dispatch(broker, &header, peer, request)?;
    Ok(Box::pin(
        async move {
            let response = fut.await?;
            encode(corr, version, &response)
        }
        .instrument(span.clone()),
    ))
}
