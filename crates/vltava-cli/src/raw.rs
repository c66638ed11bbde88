//! A minimal blocking Kafka protocol client for the admin APIs librdkafka does not offer
//! (DescribeProducers, transactions, ACLs, the quorum). It speaks plaintext, optionally with
//! SASL/PLAIN, and finds brokers through Metadata like any client; requests are built with
//! the same generated messages the broker uses (`vltava-protocol`).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

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

pub struct Connection {
    stream: TcpStream,
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
    pub fn connect(address: &str) -> Result<Self, Error> {
        let addr = address
            .to_socket_addrs()
            .map_err(|e| io_error(address, e))?
            .next()
            .ok_or_else(|| Error::Usage(format!("cannot resolve {address}")))?;
        let stream =
            TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| io_error(address, e))?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
            .map_err(|e| io_error(address, e))?;
        Ok(Self {
            stream,
            address: address.to_string(),
            correlation: 0,
        })
    }

    /// Waits up to `t` for an answer (requests the broker may take long over).
    pub fn set_timeout(&mut self, t: Duration) -> Result<(), Error> {
        self.stream
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

/// The SASL/PLAIN credentials `settings` ask for, `None` for plaintext. Refuses security
/// settings this client cannot honour rather than ignore them.
fn plain_credentials(settings: &Settings) -> Result<Option<(String, String)>, Error> {
    let protocol = settings.get("security.protocol").unwrap_or("plaintext");
    if protocol.eq_ignore_ascii_case("plaintext") {
        return Ok(None);
    }
    if !protocol.eq_ignore_ascii_case("sasl_plaintext") {
        return Err(Error::Usage(format!(
            "this command speaks plaintext and SASL_PLAINTEXT only; security.protocol={protocol} is not supported yet"
        )));
    }
    let mechanism = settings
        .get("sasl.mechanism")
        .or(settings.get("sasl.mechanisms"))
        .unwrap_or("GSSAPI");
    if !mechanism.eq_ignore_ascii_case("plain") {
        return Err(Error::Usage(format!(
            "this command authenticates with SASL mechanism PLAIN only, not {mechanism}"
        )));
    }
    let user = settings.get("sasl.username").unwrap_or_default();
    let password = settings.get("sasl.password").unwrap_or_default();
    Ok(Some((user.to_string(), password.to_string())))
}

impl Connection {
    /// SaslHandshake v1 and SaslAuthenticate with PLAIN's `\0user\0password` (KIP-152).
    fn authenticate_plain(&mut self, user: &str, password: &str) -> Result<(), Error> {
        let address = self.address.clone();
        let refused = |reason: String| Error::Refused {
            resource: format!("broker {address}"),
            reason,
        };
        let hs: SaslHandshakeResponse = self.call(
            ApiKey::SaslHandshake,
            1,
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
        )?;
        if hs.error_code != 0 {
            return Err(refused(format!(
                "SASL mechanism PLAIN not enabled (it offers {:?})",
                hs.mechanisms
            )));
        }
        let token = format!("\0{user}\0{password}");
        let auth: SaslAuthenticateResponse = self.call(
            ApiKey::SaslAuthenticate,
            2,
            &SaslAuthenticateRequest::default().with_auth_bytes(token.into_bytes().into()),
        )?;
        if auth.error_code != 0 {
            return Err(refused(auth.error_message.map_or_else(
                || "SASL authentication failed".into(),
                |m| m.to_string(),
            )));
        }
        Ok(())
    }
}

/// A connection to `address`, authenticated as `settings` say.
pub fn connect(address: &str, settings: &Settings) -> Result<Connection, Error> {
    let credentials = plain_credentials(settings)?;
    let mut c = Connection::connect(address)?;
    if let Some((user, password)) = credentials {
        c.authenticate_plain(&user, &password)?;
    }
    Ok(c)
}

/// The first bootstrap broker that accepts a connection (and its credentials).
pub fn bootstrap(settings: &Settings) -> Result<Connection, Error> {
    plain_credentials(settings)?;
    let servers = settings
        .get("bootstrap.servers")
        .unwrap_or("localhost:9092");
    let mut last = None;
    for s in servers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match connect(s, settings) {
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
