//! A minimal blocking Kafka protocol client for the admin APIs librdkafka does not offer
//! (DescribeProducers, transactions, ACLs, the quorum). It reads librdkafka's security
//! settings and speaks all four protocols: TLS with rustls (`ssl.ca.location`/`ssl.ca.pem`,
//! a client certificate from `ssl.certificate.*` and `ssl.key.*`, the broker's host name
//! checked unless `ssl.endpoint.identification.algorithm=none`), and SASL PLAIN,
//! SCRAM-SHA-256 or SCRAM-SHA-512. It finds brokers through Metadata like any client;
//! requests are built with the same generated messages the broker uses (`vltava-protocol`).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use vltava_sasl::scram::{ScramClient, ScramMechanism};

use vltava_protocol::messages::{
    metadata_request, metadata_response, MetadataRequest, MetadataResponse,
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
    TopicName,
};
use vltava_protocol::{decode_response, encode_request, ApiKey, Decodable, Encodable, StrBytes};

use crate::client::Settings;
use crate::Error;

const TIMEOUT: Duration = Duration::from_secs(15);
/// Largest response accepted: far above any admin answer.
const MAX_RESPONSE: usize = 64 << 20;

/// A connection's bytes: plaintext or TLS over the same socket.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}

pub struct Connection {
    stream: Stream,
    address: String,
    correlation: i32,
}

fn io_error(address: &str, e: std::io::Error) -> Error {
    Error::Refused {
        resource: format!("broker {address}"),
        reason: e.to_string(),
    }
}

impl Connection {
    fn connect(address: &str, tls: Option<&Tls>) -> Result<Self, Error> {
        let addr = address
            .to_socket_addrs()
            .map_err(|e| io_error(address, e))?
            .next()
            .ok_or_else(|| Error::Usage(format!("cannot resolve {address}")))?;
        let tcp = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| io_error(address, e))?;
        tcp.set_read_timeout(Some(TIMEOUT))
            .and_then(|()| tcp.set_write_timeout(Some(TIMEOUT)))
            .map_err(|e| io_error(address, e))?;
        let stream = match tls {
            None => Stream::Plain(tcp),
            Some(tls) => {
                let host = address
                    .rsplit_once(':')
                    .map_or(address, |(h, _)| h)
                    .trim_matches(['[', ']']);
                let name = ServerName::try_from(host.to_string())
                    .map_err(|e| Error::Usage(format!("{host} is not a TLS server name: {e}")))?;
                let config = if tls.verify_host {
                    Arc::clone(&tls.config)
                } else {
                    Arc::clone(&tls.any_name)
                };
                let conn = rustls::ClientConnection::new(config, name)
                    .map_err(|e| io_error(address, std::io::Error::other(e)))?;
                let mut s = rustls::StreamOwned::new(conn, tcp);
                // Shake hands now, so a refused certificate is reported as such.
                while s.conn.is_handshaking() {
                    s.conn
                        .complete_io(&mut s.sock)
                        .map_err(|e| Error::Refused {
                            resource: format!("broker {address}"),
                            reason: format!("TLS handshake: {e}"),
                        })?;
                }
                Stream::Tls(Box::new(s))
            }
        };
        Ok(Self {
            stream,
            address: address.to_string(),
            correlation: 0,
        })
    }

    /// Waits up to `t` for an answer (requests the broker may take long over).
    pub fn set_timeout(&mut self, t: Duration) -> Result<(), Error> {
        self.stream
            .tcp()
            .set_read_timeout(Some(t))
            .map_err(|e| io_error(&self.address, e))
    }

    /// Sends one request and reads its answer.
    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> Result<Resp, Error> {
        self.correlation += 1;
        let frame = encode_request(key, version, self.correlation, Some("vltava-cli"), req)
            .map_err(|e| Error::Usage(format!("cannot encode {key:?}: {e}")))?;
        self.stream
            .write_all(&frame)
            .map_err(|e| io_error(&self.address, e))?;
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .map_err(|e| io_error(&self.address, e))?;
        let len = usize::try_from(i32::from_be_bytes(len)).unwrap_or(usize::MAX);
        if len > MAX_RESPONSE {
            return Err(Error::Refused {
                resource: format!("broker {}", self.address),
                reason: format!("answered with a {len}-byte frame"),
            });
        }
        let mut body = vec![0u8; len];
        self.stream
            .read_exact(&mut body)
            .map_err(|e| io_error(&self.address, e))?;
        let (corr, resp) =
            decode_response::<Resp>(key, version, body.into()).map_err(|e| Error::Refused {
                resource: format!("broker {}", self.address),
                reason: format!("undecodable {key:?} answer: {e}"),
            })?;
        if corr != self.correlation {
            return Err(Error::Refused {
                resource: format!("broker {}", self.address),
                reason: "answered out of order".into(),
            });
        }
        Ok(resp)
    }
}

/// A broker's refusal as the commands report it: Kafka's error name, then its message.
pub fn refusal(resource: impl Into<String>, code: i16, message: Option<&StrBytes>) -> Error {
    let name = vltava_protocol::ErrorCode::try_from_code(code)
        .map_or_else(|| format!("error code {code}"), |e| format!("{e:?}"));
    Error::Refused {
        resource: resource.into(),
        reason: match message {
            Some(m) if !m.is_empty() => format!("{name}: {m}"),
            _ => name,
        },
    }
}

/// The SASL mechanisms this client speaks.
#[derive(Debug, Clone, Copy)]
enum Mechanism {
    Plain,
    Scram(ScramMechanism),
}

/// How to reach brokers over TLS.
struct Tls {
    config: Arc<rustls::ClientConfig>,
    /// The same, for `ssl.endpoint.identification.algorithm=none`: the chain is still
    /// checked against the CA, the host name is not.
    any_name: Arc<rustls::ClientConfig>,
    verify_host: bool,
}

/// What `settings` ask of a connection: TLS, and a SASL login.
struct Security {
    tls: Option<Tls>,
    login: Option<(Mechanism, String, String)>,
}

fn read_pem(settings: &Settings, inline: &str, location: &str) -> Result<Option<Vec<u8>>, Error> {
    if let Some(pem) = settings.get(inline) {
        return Ok(Some(pem.as_bytes().to_vec()));
    }
    let Some(path) = settings.get(location) else {
        return Ok(None);
    };
    std::fs::read(path)
        .map(Some)
        .map_err(|e| Error::Usage(format!("{location}={path}: {e}")))
}

/// The CA certificates to check brokers against: the settings', else the system's bundle
/// (as librdkafka falls back to OpenSSL's default paths).
fn trust(settings: &Settings) -> Result<rustls::RootCertStore, Error> {
    const SYSTEM: &str = "/etc/ssl/certs/ca-certificates.crt";
    let pem = match read_pem(settings, "ssl.ca.pem", "ssl.ca.location")? {
        Some(pem) => pem,
        None => std::fs::read(SYSTEM)
            .map_err(|e| Error::Usage(format!("no ssl.ca.location given and {SYSTEM}: {e}")))?,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| Error::Usage(format!("ssl.ca.location: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| Error::Usage(format!("ssl.ca.location: {e}")))?;
    }
    if roots.is_empty() {
        return Err(Error::Usage("ssl.ca.location holds no certificate".into()));
    }
    Ok(roots)
}

/// Checks the chain as usual but accepts any host name in it.
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn tls(settings: &Settings) -> Result<Tls, Error> {
    let unsupported = |key: &str| {
        Error::Usage(format!(
            "this command does not read {key}; use ssl.certificate.location and ssl.key.location (PEM)"
        ))
    };
    for key in ["ssl.keystore.location", "ssl.key.password"] {
        if settings.get(key).is_some() {
            return Err(unsupported(key));
        }
    }
    if settings
        .get("enable.ssl.certificate.verification")
        .is_some_and(|v| v.eq_ignore_ascii_case("false"))
    {
        return Err(Error::Usage(
            "this command always verifies the broker's certificate (enable.ssl.certificate.verification=false is not supported)".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(trust(settings)?);
    let cert = read_pem(settings, "ssl.certificate.pem", "ssl.certificate.location")?;
    let key = read_pem(settings, "ssl.key.pem", "ssl.key.location")?;
    let identity = match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<_, _>>()
                .map_err(|e| Error::Usage(format!("ssl.certificate.location: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
                Error::Usage(format!("ssl.key.location (an unencrypted PEM key): {e}"))
            })?;
            Some((chain, key))
        }
        _ => {
            return Err(Error::Usage(
                "a client certificate needs both ssl.certificate.location and ssl.key.location"
                    .into(),
            ))
        }
    };
    let build = |verifier: Option<Arc<dyn rustls::client::danger::ServerCertVerifier>>| {
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Usage(format!("TLS: {e}")))?;
        let builder = match verifier {
            None => builder.with_root_certificates(Arc::clone(&roots)),
            Some(v) => builder.dangerous().with_custom_certificate_verifier(v),
        };
        match &identity {
            None => Ok(builder.with_no_client_auth()),
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| Error::Usage(format!("ssl.certificate.location: {e}"))),
        }
    };
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::clone(&roots),
        Arc::clone(&provider),
    )
    .build()
    .map_err(|e| Error::Usage(format!("ssl.ca.location: {e}")))?;
    let verify_host = match settings
        .get("ssl.endpoint.identification.algorithm")
        .unwrap_or("https")
        .to_ascii_lowercase()
        .as_str()
    {
        "https" => true,
        "none" | "" => false,
        other => {
            return Err(Error::Usage(format!(
                "ssl.endpoint.identification.algorithm={other}: expected https or none"
            )))
        }
    };
    Ok(Tls {
        config: Arc::new(build(None)?),
        any_name: Arc::new(build(Some(Arc::new(AnyName(webpki))))?),
        verify_host,
    })
}

/// Reads `settings`' security: librdkafka's names, refusing what this client cannot honour
/// rather than ignoring it.
fn security(settings: &Settings) -> Result<Security, Error> {
    let protocol = settings
        .get("security.protocol")
        .unwrap_or("plaintext")
        .to_ascii_lowercase();
    let (tls_on, sasl_on) = match protocol.as_str() {
        "plaintext" => (false, false),
        "ssl" => (true, false),
        "sasl_plaintext" => (false, true),
        "sasl_ssl" => (true, true),
        other => {
            return Err(Error::Usage(format!(
                "security.protocol={other}: expected plaintext, ssl, sasl_plaintext or sasl_ssl"
            )))
        }
    };
    let login = if sasl_on {
        let name = settings
            .get("sasl.mechanism")
            .or(settings.get("sasl.mechanisms"))
            .unwrap_or("GSSAPI")
            .to_ascii_uppercase();
        let mechanism = match name.as_str() {
            "PLAIN" => Mechanism::Plain,
            other => Mechanism::Scram(ScramMechanism::from_name(other).ok_or_else(|| {
                Error::Usage(format!(
                    "this command authenticates with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, not {other}"
                ))
            })?),
        };
        let user = settings.get("sasl.username").unwrap_or_default();
        let password = settings.get("sasl.password").unwrap_or_default();
        Some((mechanism, user.to_string(), password.to_string()))
    } else {
        None
    };
    Ok(Security {
        tls: tls_on.then(|| tls(settings)).transpose()?,
        login,
    })
}

impl Connection {
    /// KIP-152: SaslHandshake v1, then the mechanism's tokens in SaslAuthenticate.
    fn authenticate(
        &mut self,
        mechanism: Mechanism,
        user: &str,
        password: &str,
    ) -> Result<(), Error> {
        let address = self.address.clone();
        let refused = |reason: String| Error::Refused {
            resource: format!("broker {address}"),
            reason,
        };
        let name = match mechanism {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(m) => m.name(),
        };
        let hs: SaslHandshakeResponse = self.call(
            ApiKey::SaslHandshake,
            1,
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(name)),
        )?;
        if hs.error_code != 0 {
            return Err(refused(format!(
                "SASL mechanism {name} not enabled (it offers {:?})",
                hs.mechanisms
            )));
        }
        match mechanism {
            Mechanism::Plain => {
                self.token(format!("\0{user}\0{password}").into_bytes())?;
            }
            Mechanism::Scram(m) => {
                let (mut client, first) =
                    ScramClient::start(m, user, password, vltava_sasl::scram::nonce());
                let server_first = self.token(first)?;
                let last = client.proof(&server_first).map_err(refused)?;
                let server_final = self.token(last)?;
                client.verify(&server_final).map_err(refused)?;
            }
        }
        Ok(())
    }

    /// One SaslAuthenticate round trip: a token out, the broker's token back.
    fn token(&mut self, token: Vec<u8>) -> Result<Vec<u8>, Error> {
        let auth: SaslAuthenticateResponse = self.call(
            ApiKey::SaslAuthenticate,
            2,
            &SaslAuthenticateRequest::default().with_auth_bytes(token.into()),
        )?;
        if auth.error_code != 0 {
            return Err(Error::Refused {
                resource: format!("broker {}", self.address),
                reason: auth
                    .error_message
                    .map_or_else(|| "SASL authentication failed".into(), |m| m.to_string()),
            });
        }
        Ok(auth.auth_bytes.to_vec())
    }
}

fn connect_with(address: &str, security: &Security) -> Result<Connection, Error> {
    let mut c = Connection::connect(address, security.tls.as_ref())?;
    if let Some((mechanism, user, password)) = &security.login {
        c.authenticate(*mechanism, user, password)?;
    }
    Ok(c)
}

/// A connection to `address`, secured and authenticated as `settings` say.
pub fn connect(address: &str, settings: &Settings) -> Result<Connection, Error> {
    connect_with(address, &security(settings)?)
}

/// The first bootstrap broker that accepts a connection (and its credentials).
pub fn bootstrap(settings: &Settings) -> Result<Connection, Error> {
    let security = security(settings)?;
    let servers = settings
        .get("bootstrap.servers")
        .unwrap_or("localhost:9092");
    let mut last = None;
    for s in servers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match connect_with(s, &security) {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Usage("no bootstrap server given".into())))
}

/// Brokers by node id, and for each requested topic its partitions' leaders.
pub struct Cluster {
    pub brokers: Vec<(i32, String)>,
    pub metadata: MetadataResponse,
}

impl Cluster {
    pub fn address(&self, node: i32) -> Option<&str> {
        self.brokers
            .iter()
            .find(|(id, _)| *id == node)
            .map(|(_, a)| a.as_str())
    }
}

/// Metadata for `topics` (all topics if `None`).
pub fn metadata(conn: &mut Connection, topics: Option<&[String]>) -> Result<Cluster, Error> {
    let req = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|t| {
                    metadata_request::MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                })
                .collect()
        }));
    let metadata: MetadataResponse = conn.call(ApiKey::Metadata, 12, &req)?;
    let brokers = metadata
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
        .collect();
    Ok(Cluster { brokers, metadata })
}

/// One topic's metadata, or [`Error::UnknownTopic`].
pub fn topic_metadata(
    conn: &mut Connection,
    topic: &str,
) -> Result<metadata_response::MetadataResponseTopic, Error> {
    let cluster = metadata(conn, Some(&[topic.to_string()]))?;
    cluster
        .metadata
        .topics
        .into_iter()
        .next()
        .filter(|t| t.error_code == 0)
        .ok_or_else(|| Error::UnknownTopic {
            topic: topic.to_string(),
        })
}
