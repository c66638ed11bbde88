//! The broker as a client of other brokers. Replica fetchers reach a leader's
//! `inter.broker.listener.name`, and controllers reach each other's controller listener, with
//! that listener's security protocol, as Kafka's inter-broker clients do: TLS checked against
//! the listener's trust store (and the peer's host name), with the listener's key store as
//! this broker's certificate; SASL with `sasl.mechanism.inter.broker.protocol` (or
//! `sasl.mechanism.controller.protocol`) and the `username` and `password` of that
//! mechanism's login module in `listener.name.<l>.<mechanism>.sasl.jaas.config`. When the
//! peer's session has a lifetime (KIP-368), the connection re-authenticates before its end.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use vltava_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use vltava_protocol::{ApiKey, StrBytes};

use super::sasl::Mechanism;
use super::scram::ScramClient;
use crate::context::SecurityProtocol;

/// A connection to a peer, plaintext or TLS.
pub trait PeerIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> PeerIo for T {}

/// An authenticated connection to a peer.
pub struct PeerStream {
    io: Box<dyn PeerIo>,
    /// When to re-authenticate: at 85 % of the session lifetime the peer gave, as Kafka's
    /// clients do at the earliest, so the session never runs out between two requests.
    reauth_at: Option<Instant>,
}

impl PeerStream {
    fn renew(&mut self, session_lifetime_ms: i64) {
        self.reauth_at = u64::try_from(session_lifetime_ms)
            .ok()
            .filter(|&ms| ms > 0)
            .map(|ms| Instant::now() + Duration::from_millis(ms).mul_f64(0.85));
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_shutdown(cx)
    }
}

#[derive(Clone)]
struct Login {
    mechanism: Mechanism,
    username: String,
    password: String,
}

/// How to reach one listener of peers.
#[derive(Clone)]
pub struct PeerConnector {
    tls: Option<Arc<rustls::ClientConfig>>,
    login: Option<Login>,
    /// Why peers cannot be reached at all: a single broker never reaches one, so a listener
    /// without a client side is only an error once a peer must be reached.
    unusable: Option<String>,
}

impl std::fmt::Debug for PeerConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConnector")
            .field("tls", &self.tls.is_some())
            .field("sasl", &self.login.as_ref().map(|l| l.mechanism.name()))
            .field("unusable", &self.unusable)
            .finish()
    }
}

impl PeerConnector {
    pub fn plaintext() -> Self {
        Self {
            tls: None,
            login: None,
            unusable: None,
        }
    }

    /// A connector that refuses every connection with `reason`.
    pub fn unusable(reason: String) -> Self {
        Self {
            unusable: Some(reason),
            ..Self::plaintext()
        }
    }

    /// The client side of `listener` (of protocol `protocol`); `mechanism_key` names the
    /// config choosing its SASL mechanism; `get` reads the listener's settings.
    pub fn new(
        listener: &str,
        protocol: SecurityProtocol,
        mechanism_key: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let tls = match protocol {
            SecurityProtocol::Ssl | SecurityProtocol::SaslSsl => {
                Some(super::tls::client_config(listener, &get).map_err(|e| e.to_string())?)
            }
            _ => None,
        };
        let login = match protocol {
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl => {
                let name = get(mechanism_key).unwrap_or_else(|| "GSSAPI".into());
                let mechanism = Mechanism::parse(&name).ok_or_else(|| {
                    format!("listener {listener}: {mechanism_key}={name} is not supported; use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
                })?;
                let key = format!("{}.sasl.jaas.config", name.to_ascii_lowercase());
                let modules = get(&key)
                    .map(|v| super::jaas::parse(&v))
                    .transpose()
                    .map_err(|e| format!("listener {listener}: {key}: {e}"))?
                    .unwrap_or_default();
                let option = |o: &str| modules.iter().find_map(|m| m.options.get(o).cloned());
                let (Some(username), Some(password)) = (option("username"), option("password"))
                else {
                    return Err(format!(
                        "listener {listener}: brokers log in to each other with the username and password of listener.name.{}.{key}",
                        listener.to_ascii_lowercase()
                    ));
                };
                Some(Login {
                    mechanism,
                    username,
                    password,
                })
            }
            _ => None,
        };
        Ok(Self {
            tls,
            login,
            unusable: None,
        })
    }

    /// Connects to `host:port` and authenticates, all within `timeout`.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<PeerStream, String> {
        if let Some(reason) = &self.unusable {
            return Err(reason.clone());
        }
        let addr = format!("{host}:{port}");
        tokio::time::timeout(timeout, self.establish(host, &addr))
            .await
            .map_err(|_| format!("connecting to {addr} timed out"))?
            .map_err(|e| format!("{addr}: {e}"))
    }

    async fn establish(&self, host: &str, addr: &str) -> Result<PeerStream, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn PeerIo> = match &self.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| format!("{host} is not a host name for TLS: {e}"))?;
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                Box::new(tls)
            }
        };
        let mut stream = PeerStream {
            io,
            reauth_at: None,
        };
        if let Some(login) = &self.login {
            let lifetime = authenticate(&mut stream, login).await?;
            stream.renew(lifetime);
        }
        Ok(stream)
    }

    /// Re-authenticates `stream` on its connection (KIP-368) if its session is near its end;
    /// called before each use. An error means the connection is to be dropped.
    pub async fn refresh(&self, stream: &mut PeerStream) -> Result<(), String> {
        if let (Some(at), Some(login)) = (stream.reauth_at, &self.login) {
            if Instant::now() >= at {
                let lifetime = authenticate(stream, login)
                    .await
                    .map_err(|e| format!("SASL re-authentication: {e}"))?;
                stream.renew(lifetime);
            }
        }
        Ok(())
    }
}

/// KIP-152's exchange: SaslHandshake v1, then the mechanism's tokens in SaslAuthenticate.
/// Returns the session lifetime the peer gave (0: none).
async fn authenticate(stream: &mut PeerStream, login: &Login) -> Result<i64, String> {
    let handshake: SaslHandshakeResponse = call(
        stream,
        ApiKey::SaslHandshake,
        1,
        1,
        &SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_static_str(login.mechanism.name())),
    )
    .await?;
    if handshake.error_code != 0 {
        return Err(format!(
            "SASL mechanism {} refused (error {})",
            login.mechanism.name(),
            handshake.error_code
        ));
    }
    let scram = match login.mechanism {
        Mechanism::Plain => {
            let token = format!("\0{}\0{}", login.username, login.password).into_bytes();
            let (_, lifetime) = token_exchange(stream, login, 2, token).await?;
            return Ok(lifetime);
        }
        Mechanism::Scram(m) => m,
    };
    let (mut client, first) = ScramClient::start(
        scram,
        &login.username,
        &login.password,
        super::scram::server_nonce(),
    );
    let (server_first, _) = token_exchange(stream, login, 2, first).await?;
    let last = client.proof(&server_first)?;
    let (server_final, lifetime) = token_exchange(stream, login, 3, last).await?;
    client.verify(&server_final)?;
    Ok(lifetime)
}

/// One SaslAuthenticate round trip: a token out, the server's token and session lifetime back.
async fn token_exchange(
    stream: &mut PeerStream,
    login: &Login,
    correlation: i32,
    token: Vec<u8>,
) -> Result<(Vec<u8>, i64), String> {
    let req = SaslAuthenticateRequest::default().with_auth_bytes(token.into());
    let resp: SaslAuthenticateResponse =
        call(stream, ApiKey::SaslAuthenticate, 1, correlation, &req).await?;
    if resp.error_code != 0 {
        return Err(format!(
            "SASL authentication as {} failed: {}",
            login.username,
            resp.error_message.as_deref().unwrap_or("refused")
        ));
    }
    Ok((resp.auth_bytes.to_vec(), resp.session_lifetime_ms))
}

/// One request and its response, nothing else in flight.
async fn call<Req, Resp>(
    stream: &mut PeerStream,
    key: ApiKey,
    version: i16,
    correlation: i32,
    request: &Req,
) -> Result<Resp, String>
where
    Req: vltava_protocol::Encodable,
    Resp: vltava_protocol::Decodable,
{
    let frame =
        vltava_protocol::encode_request(key, version, correlation, Some("vltava-broker"), request)
            .map_err(|e| e.to_string())?;
    stream.write_all(&frame).await.map_err(|e| e.to_string())?;
    let len = stream.read_i32().await.map_err(|e| e.to_string())?;
    let len = usize::try_from(len)
        .ok()
        .filter(|l| (4..=1 << 20).contains(l))
        .ok_or_else(|| format!("bad {key:?} response length {len}"))?;
    let mut body = vec![0; len];
    stream
        .read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    let (corr, resp) = vltava_protocol::decode_response::<Resp>(key, version, body.into())
        .map_err(|e| e.to_string())?;
    if corr != correlation {
        return Err(format!("{key:?} answer out of order"));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn connector(
        protocol: SecurityProtocol,
        props: &[(&str, &str)],
    ) -> Result<PeerConnector, String> {
        let props: BTreeMap<String, String> = props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        PeerConnector::new(
            "INTERNAL",
            protocol,
            "sasl.mechanism.inter.broker.protocol",
            |k| props.get(k).cloned(),
        )
    }

    #[test]
    fn sasl_peers_need_a_mechanism_and_a_login() {
        let err = connector(SecurityProtocol::SaslPlaintext, &[]).unwrap_err();
        assert!(err.contains("GSSAPI"), "{err}");
        let err = connector(
            SecurityProtocol::SaslPlaintext,
            &[("sasl.mechanism.inter.broker.protocol", "SCRAM-SHA-512")],
        )
        .unwrap_err();
        assert!(err.contains("scram-sha-512.sasl.jaas.config"), "{err}");
        let c = connector(
            SecurityProtocol::SaslPlaintext,
            &[
                ("sasl.mechanism.inter.broker.protocol", "SCRAM-SHA-512"),
                (
                    "scram-sha-512.sasl.jaas.config",
                    r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="b" password="p";"#,
                ),
            ],
        )
        .unwrap();
        assert!(c.tls.is_none() && c.login.is_some());
        assert!(connector(SecurityProtocol::Plaintext, &[])
            .unwrap()
            .login
            .is_none());
    }

    #[test]
    fn tls_peers_need_a_trust_store() {
        let err = connector(SecurityProtocol::Ssl, &[]).unwrap_err();
        assert!(err.contains("ssl.truststore"), "{err}");
    }

    #[tokio::test]
    async fn an_unusable_connector_refuses_with_its_reason() {
        let c = PeerConnector::unusable("no login".into());
        let err = c
            .connect("127.0.0.1", 1, Duration::from_secs(1))
            .await
            .err()
            .unwrap();
        assert_eq!(err, "no login");
    }
}
