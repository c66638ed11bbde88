//! Carries the metadata quorum's messages between controllers over their controller
//! listeners, in Kafka's framing: a size-prefixed request whose header names our own API key
//! (`QUORUM_API_KEY`, far from Kafka's), answered by a size-prefixed frame with the
//! correlation id. Only controller listeners accept these frames, so a client port never
//! reaches the quorum.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vltava_protocol::SegmentedBuf;
use vltava_quorum::Transport;

/// The API key of quorum frames.
pub const QUORUM_API_KEY: i16 = 0x5654;
/// The largest quorum frame either side accepts (a snapshot of a large cluster's metadata).
const MAX_FRAME: usize = 256 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a request frame's body is a quorum message.
pub fn is_quorum_frame(body: &[u8]) -> bool {
    body.len() >= 8 && i16::from_be_bytes([body[0], body[1]]) == QUORUM_API_KEY
}

/// The correlation id and payload of a quorum request body.
pub fn parse(body: &Bytes) -> Option<(i32, Bytes)> {
    if !is_quorum_frame(body) {
        return None;
    }
    let corr = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
    Some((corr, body.slice(8..)))
}

/// The response frame for a quorum request.
pub fn response(correlation_id: i32, payload: Vec<u8>) -> SegmentedBuf {
    let mut buf = SegmentedBuf::new();
    buf.put_i32(4 + payload.len() as i32);
    buf.put_i32(correlation_id);
    buf.put_slice(&payload);
    buf
}

type Conn = Arc<tokio::sync::Mutex<Option<PeerStream>>>;

use crate::security::peer::{PeerConnector, PeerStream};

/// One connection per peer, one request at a time on it; a failed or timed-out call drops
/// the connection and the next call dials again.
pub struct TcpTransport {
    conns: Mutex<HashMap<u64, Conn>>,
    correlation: AtomicI32,
    /// The controller listener's TLS and SASL, if any.
    connector: PeerConnector,
}

impl TcpTransport {
    pub fn new(connector: PeerConnector) -> Self {
        Self {
            conns: Mutex::default(),
            correlation: AtomicI32::new(0),
            connector,
        }
    }
}

async fn exchange(stream: &mut PeerStream, corr: i32, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut frame = Vec::with_capacity(12 + request.len());
    frame.extend_from_slice(&(8 + request.len() as i32).to_be_bytes());
    frame.extend_from_slice(&QUORUM_API_KEY.to_be_bytes());
    frame.extend_from_slice(&0i16.to_be_bytes());
    frame.extend_from_slice(&corr.to_be_bytes());
    frame.extend_from_slice(request);
    stream.write_all(&frame).await?;
    let len = stream.read_i32().await?;
    let len = usize::try_from(len)
        .ok()
        .filter(|l| (4..=MAX_FRAME).contains(l))
        .ok_or_else(|| std::io::Error::other(format!("bad quorum frame length {len}")))?;
    let got = stream.read_i32().await?;
    if got != corr {
        return Err(std::io::Error::other("quorum reply out of order"));
    }
    let mut body = vec![0; len - 4];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

impl Transport for TcpTransport {
    fn call(
        &self,
        target: u64,
        addr: &str,
        request: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let conn = Arc::clone(self.conns.lock().entry(target).or_default());
        let corr = self.correlation.fetch_add(1, Ordering::Relaxed);
        let addr = addr.to_string();
        let node = target & !vltava_quorum::OBSERVE_LANE;
        let connector = self.connector.clone();
        Box::pin(async move {
            let mut slot = conn.lock().await;
            // Taken out for the exchange: a call dropped midway (the caller's timeout) leaves
            // no half-read connection behind.
            let mut stream = match slot.take() {
                Some(s) => s,
                None => {
                    let (host, port) = addr
                        .rsplit_once(':')
                        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse().ok()?)))
                        .ok_or_else(|| format!("controller {node}: bad address {addr}"))?;
                    connector
                        .connect(host, port, CONNECT_TIMEOUT)
                        .await
                        .map_err(|e| format!("connecting to controller {node}: {e}"))?
                }
            };
            connector
                .refresh(&mut stream)
                .await
                .map_err(|e| format!("controller {node} at {addr}: {e}"))?;
            let result = exchange(&mut stream, corr, &request).await;
            if result.is_ok() {
                *slot = Some(stream);
            }
            result.map_err(|e| format!("controller {node} at {addr}: {e}"))
        })
    }
}
