//! Static broker configuration, in Kafka's key names.

use std::collections::BTreeMap;
use std::path::PathBuf;

use vltava_metadata::config::{self as defs, ConfigLayers};
use vltava_storage::LogConfig;

use crate::context::SecurityProtocol;
use vltava_types::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
}

/// Broker settings: a few typed fields plus every key that was set explicitly (Kafka's
/// "static broker config" layer, reported as such by DescribeConfigs).
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: NodeId,
    /// `listeners`, in the order given; the first is the one clients are told about when a
    /// request's own listener has no advertised address.
    pub listeners: Vec<ListenerConfig>,
    pub data_dir: PathBuf,
    pub props: BTreeMap<String, String>,
    /// `process.roles`.
    pub roles: Roles,
    /// `controller.quorum.voters`; empty means this node is the whole quorum.
    pub voters: Vec<Voter>,
    /// `controller.quorum.bootstrap.servers` (`host:port,...`): where a broker that is not
    /// a controller finds the quorum when the voters are not listed.
    pub bootstrap_servers: Vec<String>,
    /// `controller.listener.names`: listeners that serve the quorum, never clients.
    pub controller_listeners: Vec<String>,
}

/// What a node does (`process.roles`): combined mode is both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub broker: bool,
    pub controller: bool,
}

/// One entry of `controller.quorum.voters`: `id@host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub id: NodeId,
    pub host: String,
    pub port: u16,
}

impl Voter {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

fn parse_roles(v: &str) -> Result<Roles, ConfigError> {
    let mut roles = Roles {
        broker: false,
        controller: false,
    };
    for r in v.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        match r {
            "broker" => roles.broker = true,
            "controller" => roles.controller = true,
            other => {
                return Err(ConfigError::Invalid(format!(
                    "process.roles: unknown role {other:?} (expected broker, controller or both)"
                )))
            }
        }
    }
    if !roles.broker && !roles.controller {
        return Err(ConfigError::Invalid("process.roles is empty".into()));
    }
    Ok(roles)
}

/// Parses `controller.quorum.voters` (`1@host:port,2@host:port`).
pub fn parse_voters(v: &str) -> Result<Vec<Voter>, ConfigError> {
    let mut out: Vec<Voter> = Vec::new();
    for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = || {
            ConfigError::Invalid(format!(
                "controller.quorum.voters entry {entry:?}: expected id@host:port"
            ))
        };
        let (id, addr) = entry.split_once('@').ok_or_else(bad)?;
        let id: i32 = id.trim().parse().map_err(|_| bad())?;
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if id < 0 {
            return Err(bad());
        }
        if out.iter().any(|o| o.id.get() == id) {
            return Err(ConfigError::Invalid(format!(
                "controller.quorum.voters names node {id} twice"
            )));
        }
        out.push(Voter {
            id: NodeId::new(id),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
        });
    }
    Ok(out)
}

/// One entry of `listeners`: a name, its security protocol and where to bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub name: String,
    pub security_protocol: SecurityProtocol,
    /// `host:port` to bind.
    pub bind: String,
    /// `(host, port)` from `advertised.listeners`; port 0 means "the bound port".
    pub advertised: Option<(String, u16)>,
}

/// Keys of listener security (`ssl.*`, `sasl.*`, `listener.name.<name>.*`), read per listener
/// by [`BrokerConfig::listener_prop`] and never reported by DescribeConfigs: several hold
/// secrets.
fn is_security_key(key: &str) -> bool {
    key.starts_with("ssl.") || key.starts_with("sasl.") || key.starts_with("listener.name.")
}

/// Kafka's default `listener.security.protocol.map`.
const DEFAULT_PROTOCOL_MAP: &str =
    "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL";

/// Parses `NAME://host:port` (a bare `host:port` is `PLAINTEXT`).
fn parse_endpoint(entry: &str) -> Result<(String, String, u16), ConfigError> {
    let entry = entry.trim();
    let (name, addr) = entry.split_once("://").unwrap_or(("PLAINTEXT", entry));
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| ConfigError::Invalid(format!("listener {entry}: expected host:port")))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| ConfigError::Invalid(format!("listener {entry}: bad port {port:?}")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((name.to_ascii_uppercase(), host.to_string(), port))
}

fn parse_listeners(
    listeners: &str,
    advertised: Option<&str>,
    protocol_map: &str,
) -> Result<Vec<ListenerConfig>, ConfigError> {
    let mut map = BTreeMap::new();
    for pair in protocol_map.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, proto) = pair.trim().split_once(':').ok_or_else(|| {
            ConfigError::Invalid(format!(
                "listener.security.protocol.map entry {pair:?}: expected NAME:PROTOCOL"
            ))
        })?;
        let proto = SecurityProtocol::parse(proto)
            .ok_or_else(|| ConfigError::Invalid(format!("unknown security protocol {proto:?}")))?;
        map.insert(name.trim().to_ascii_uppercase(), proto);
    }
    let mut out: Vec<ListenerConfig> = Vec::new();
    for entry in listeners.split(',').filter(|e| !e.trim().is_empty()) {
        let (name, host, port) = parse_endpoint(entry)?;
        let protocol = *map.get(&name).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "listener {name} has no entry in listener.security.protocol.map"
            ))
        })?;
        if out.iter().any(|l| l.name == name) {
            return Err(ConfigError::Invalid(format!(
                "listener name {name} appears more than once in listeners"
            )));
        }
        let host = if host.is_empty() { "0.0.0.0" } else { &host };
        out.push(ListenerConfig {
            name,
            security_protocol: protocol,
            bind: format!("{host}:{port}"),
            advertised: None,
        });
    }
    if out.is_empty() {
        return Err(ConfigError::Invalid("listeners is empty".into()));
    }
    for entry in advertised
        .unwrap_or("")
        .split(',')
        .filter(|e| !e.trim().is_empty())
    {
        let (name, host, port) = parse_endpoint(entry)?;
        let listener = out.iter_mut().find(|l| l.name == name).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "advertised.listeners names {name}, which is not in listeners"
            ))
        })?;
        listener.advertised = Some((host, port));
    }
    Ok(out)
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self::from_props(BTreeMap::new()).expect("defaults are valid")
    }
}

impl BrokerConfig {
    /// Builds a config from Kafka-style keys (`listeners`, `log.dirs`, `node.id`, …), checking
    /// every known key's type and range.
    pub fn from_props(mut props: BTreeMap<String, String>) -> Result<Self, ConfigError> {
        for (k, v) in &props {
            let def = defs::broker_config_def(k);
            match def {
                Some(def) => defs::validate_value(def, v).map_err(ConfigError::Invalid)?,
                // Listener security keys are read when the listeners are bound.
                None if is_security_key(k) => {}
                None => tracing::warn!(key = %k, "unknown broker config key ignored"),
            }
        }
        // Kafka's precedence: log.retention.ms > minutes > hours; log.roll.ms > hours.
        if !props.contains_key("log.retention.ms") {
            let ms = if let Some(m) = props.get("log.retention.minutes") {
                Some(m.parse::<i64>().unwrap_or(0) * 60_000)
            } else {
                props
                    .get("log.retention.hours")
                    .map(|h| h.parse::<i64>().unwrap_or(0) * 3_600_000)
            };
            if let Some(ms) = ms {
                props.insert("log.retention.ms".into(), ms.to_string());
            }
        }
        if !props.contains_key("log.roll.ms") {
            if let Some(h) = props.get("log.roll.hours") {
                let ms = h.parse::<i64>().unwrap_or(168) * 3_600_000;
                props.insert("log.roll.ms".into(), ms.to_string());
            }
        }
        let node_id = props
            .get("node.id")
            .map_or(Ok(1), |v| v.parse::<i32>())
            .map_err(|_| ConfigError::Invalid("node.id must be an integer".into()))?;
        let listeners = parse_listeners(
            props
                .get("listeners")
                .map_or("PLAINTEXT://127.0.0.1:9092", String::as_str),
            props.get("advertised.listeners").map(String::as_str),
            props
                .get("listener.security.protocol.map")
                .map_or(DEFAULT_PROTOCOL_MAP, String::as_str),
        )?;
        let data_dir = PathBuf::from(
            props
                .get("log.dirs")
                .or(props.get("log.dir"))
                .map_or("./vltava-data", String::as_str),
        );
        let roles = parse_roles(
            props
                .get("process.roles")
                .map_or("broker,controller", String::as_str),
        )?;
        let voters = parse_voters(
            props
                .get("controller.quorum.voters")
                .map_or("", String::as_str),
        )?;
        let bootstrap_servers: Vec<String> = props
            .get("controller.quorum.bootstrap.servers")
            .map_or("", String::as_str)
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        for s in &bootstrap_servers {
            if s.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(ConfigError::Invalid(format!(
                    "controller.quorum.bootstrap.servers entry {s:?}: expected host:port"
                )));
            }
        }
        let controller_listeners: Vec<String> = props
            .get("controller.listener.names")
            .map_or("", String::as_str)
            .split(',')
            .map(|n| n.trim().to_ascii_uppercase())
            .filter(|n| !n.is_empty())
            .collect();
        for name in &controller_listeners {
            if !listeners.iter().any(|l| &l.name == name) && roles.controller {
                return Err(ConfigError::Invalid(format!(
                    "controller.listener.names names {name}, which is not in listeners"
                )));
            }
        }
        if !voters.is_empty() {
            // A controller not among the voters is a new one: it serves the quorum as an
            // observer once a voter change (AddRaftVoter) adds it.
            let voter = voters.iter().any(|v| v.id.get() == node_id);
            if !roles.controller && voter {
                return Err(ConfigError::Invalid(format!(
                    "node.id {node_id} is in controller.quorum.voters but process.roles lacks controller"
                )));
            }
            if roles.controller && controller_listeners.is_empty() {
                return Err(ConfigError::Invalid(
                    "a controller in a quorum of several needs controller.listener.names".into(),
                ));
            }
        } else if !roles.controller && bootstrap_servers.is_empty() {
            return Err(ConfigError::Invalid(
                "a node without the controller role needs controller.quorum.voters or controller.quorum.bootstrap.servers".into(),
            ));
        } else if roles.controller && !bootstrap_servers.is_empty() {
            return Err(ConfigError::Invalid(
                "a controller needs controller.quorum.voters (a quorum bootstrapped from controller.quorum.bootstrap.servers alone is not supported)".into(),
            ));
        }
        if !roles.broker
            && listeners
                .iter()
                .any(|l| !controller_listeners.contains(&l.name))
        {
            return Err(ConfigError::Invalid(
                "process.roles=controller: listeners may only name controller.listener.names"
                    .into(),
            ));
        }
        if roles.broker
            && listeners
                .iter()
                .all(|l| controller_listeners.contains(&l.name))
        {
            return Err(ConfigError::Invalid(
                "a broker needs a listener that is not in controller.listener.names".into(),
            ));
        }
        let config = Self {
            node_id: NodeId::new(node_id),
            listeners,
            data_dir,
            props,
            roles,
            voters,
            bootstrap_servers,
            controller_listeners,
        };
        config.max_connections_per_ip()?;
        Ok(config)
    }

    /// Whether clients are served on `listener` (controller listeners serve the quorum only).
    pub fn is_controller_listener(&self, listener: &str) -> bool {
        self.controller_listeners.iter().any(|l| l == listener)
    }

    /// The listener other brokers and the controller reach this broker on
    /// (`inter.broker.listener.name`, else the first client listener).
    pub fn inter_broker_listener(&self) -> &ListenerConfig {
        let named = self.props.get("inter.broker.listener.name");
        named
            .and_then(|n| {
                self.listeners
                    .iter()
                    .find(|l| l.name.eq_ignore_ascii_case(n))
            })
            .or_else(|| {
                self.listeners
                    .iter()
                    .find(|l| !self.is_controller_listener(&l.name))
            })
            .unwrap_or(&self.listeners[0])
    }

    /// A key's value for listener `listener`: its `listener.name.<name>.<key>` override (the
    /// name in lower case, as Kafka spells it), else the broker-wide `<key>`.
    pub fn listener_prop(&self, listener: &str, key: &str) -> Option<String> {
        let prefixed = format!("listener.name.{}.{key}", listener.to_ascii_lowercase());
        self.props
            .get(&prefixed)
            .or_else(|| self.props.get(key))
            .cloned()
    }

    fn get(&self, key: &str) -> String {
        self.props
            .get(key)
            .cloned()
            .or_else(|| defs::broker_config_def(key).map(|d| d.default.to_string()))
            .unwrap_or_default()
    }

    pub fn get_i64(&self, key: &str) -> i64 {
        self.get(key).trim().parse().unwrap_or(0)
    }

    pub fn get_f64(&self, key: &str) -> f64 {
        self.get(key).trim().parse().unwrap_or(0.0)
    }

    pub fn get_bool(&self, key: &str) -> bool {
        self.get(key).eq_ignore_ascii_case("true")
    }

    pub fn num_partitions(&self) -> i32 {
        self.get_i64("num.partitions") as i32
    }

    pub fn default_replication_factor(&self) -> i16 {
        self.get_i64("default.replication.factor") as i16
    }

    pub fn auto_create_topics(&self) -> bool {
        self.get_bool("auto.create.topics.enable")
    }

    pub fn socket_request_max_bytes(&self) -> usize {
        self.get_i64("socket.request.max.bytes") as usize
    }

    /// `produce.splice.min.bytes`: `None` (-1) reads every produce request into memory.
    pub fn produce_splice_min_bytes(&self) -> Option<usize> {
        usize::try_from(self.get_i64("produce.splice.min.bytes")).ok()
    }

    /// `socket.receive.buffer.bytes`: `None` (-1) keeps the kernel's default and autotuning.
    pub fn socket_receive_buffer_bytes(&self) -> Option<usize> {
        usize::try_from(self.get_i64("socket.receive.buffer.bytes")).ok()
    }

    /// `socket.send.buffer.bytes`: `None` (-1) keeps the kernel's default and autotuning.
    pub fn socket_send_buffer_bytes(&self) -> Option<usize> {
        usize::try_from(self.get_i64("socket.send.buffer.bytes")).ok()
    }

    /// Kafka's `sasl.server.max.receive.size`: the largest frame read before a SASL
    /// connection is authenticated.
    pub fn sasl_server_max_receive_size(&self) -> usize {
        self.props
            .get("sasl.server.max.receive.size")
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(524_288)
    }

    pub fn max_connections(&self) -> usize {
        self.get_i64("max.connections").clamp(0, 1 << 20) as usize
    }

    /// `max.connections.per.ip` and its `max.connections.per.ip.overrides` (`ip:count,...`).
    pub fn max_connections_per_ip(
        &self,
    ) -> Result<(usize, std::collections::HashMap<std::net::IpAddr, usize>), ConfigError> {
        let default = self.get_i64("max.connections.per.ip").clamp(0, 1 << 20) as usize;
        let mut overrides = std::collections::HashMap::new();
        let text = self.get("max.connections.per.ip.overrides");
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let parsed = entry.rsplit_once(':').and_then(|(ip, n)| {
                Some((ip.trim().parse().ok()?, n.trim().parse::<usize>().ok()?))
            });
            let Some((ip, n)) = parsed else {
                return Err(ConfigError::Invalid(format!(
                    "max.connections.per.ip.overrides entry {entry:?}: expected ip:count"
                )));
            };
            overrides.insert(ip, n);
        }
        Ok((default, overrides))
    }

    pub fn connection_failed_authentication_delay(&self) -> std::time::Duration {
        std::time::Duration::from_millis(
            self.get_i64("connection.failed.authentication.delay.ms")
                .max(0) as u64,
        )
    }

    /// The security protocol of listener `name`: this node's own listener's, else the
    /// protocol map's (a broker-only node reaches the controllers' listener without having
    /// one itself).
    pub fn listener_protocol(&self, name: &str) -> SecurityProtocol {
        if let Some(l) = self.listeners.iter().find(|l| l.name == name) {
            return l.security_protocol;
        }
        self.props
            .get("listener.security.protocol.map")
            .map_or(DEFAULT_PROTOCOL_MAP, String::as_str)
            .split(',')
            .filter_map(|p| p.trim().split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .and_then(|(_, p)| SecurityProtocol::parse(p.trim()))
            .unwrap_or(SecurityProtocol::Plaintext)
    }

    /// How this node reaches its peers' inter-broker or controller listener. Settings that
    /// give no client side (say, a SASL listener without login credentials) are logged and
    /// only fail the connections that need them: a single broker never makes one.
    pub fn peer_connector(
        &self,
        role: crate::broker::PeerRole,
    ) -> crate::security::peer::PeerConnector {
        use crate::broker::PeerRole;
        let (name, mechanism_key) = match role {
            PeerRole::InterBroker => (
                self.inter_broker_listener().name.clone(),
                "sasl.mechanism.inter.broker.protocol",
            ),
            PeerRole::Controller => match self.controller_listeners.first() {
                Some(n) => (n.clone(), "sasl.mechanism.controller.protocol"),
                None => return crate::security::peer::PeerConnector::plaintext(),
            },
        };
        crate::security::peer::PeerConnector::new(
            &name,
            self.listener_protocol(&name),
            mechanism_key,
            |key| self.listener_prop(&name, key),
        )
        .unwrap_or_else(|reason| {
            if self.voters.len() > 1 || !self.bootstrap_servers.is_empty() {
                tracing::warn!(%reason, ?role, "peers cannot be reached on this listener");
            }
            crate::security::peer::PeerConnector::unusable(reason)
        })
    }

    /// `quota.window.num` and `quota.window.size.seconds` in milliseconds.
    pub fn quota_windows(&self) -> crate::quota::QuotaWindows {
        crate::quota::QuotaWindows {
            samples: self.get_i64("quota.window.num").clamp(1, 1000) as u32,
            window_ms: self.get_i64("quota.window.size.seconds").clamp(1, 3600) as u64 * 1000,
        }
    }

    pub fn connections_max_idle(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.get_i64("connections.max.idle.ms").max(1) as u64)
    }

    /// `queued.max.request.bytes`: `None` when set to -1 (unbounded).
    pub fn queued_max_request_bytes(&self) -> Option<usize> {
        usize::try_from(self.get_i64("queued.max.request.bytes")).ok()
    }

    /// The broker's `fetch.max.bytes`: no Fetch response is larger, whatever it asks for.
    pub fn fetch_max_bytes(&self) -> usize {
        self.get_i64("fetch.max.bytes").max(1024) as usize
    }

    /// The layers a config value is resolved through, most specific first.
    pub fn layers<'a>(
        &'a self,
        image: &'a vltava_metadata::MetadataImage,
        topic: Option<&str>,
    ) -> ConfigLayers<'a> {
        ConfigLayers {
            topic: topic.and_then(|t| image.topic_configs(t)),
            dynamic_broker: image.broker_configs(&self.node_id.to_string()),
            dynamic_default: image.broker_configs(""),
            static_broker: Some(&self.props),
        }
    }

    /// `replica.selector.class` names Kafka's RackAwareReplicaSelector (KIP-392).
    pub fn rack_aware_replica_selector(&self) -> bool {
        self.props
            .get("replica.selector.class")
            .is_some_and(|c| c.trim().ends_with("RackAwareReplicaSelector"))
    }

    pub fn queued_max_requests(&self) -> usize {
        self.get_i64("queued.max.requests").clamp(1, 10_000) as usize
    }

    pub fn retention_check_interval_ms(&self) -> u64 {
        self.get_i64("log.retention.check.interval.ms").max(1) as u64
    }

    pub fn producer_id_expiration_ms(&self) -> i64 {
        self.get_i64("producer.id.expiration.ms").max(1)
    }

    pub fn producer_id_expiration_check_interval_ms(&self) -> u64 {
        self.get_i64("producer.id.expiration.check.interval.ms")
            .max(1) as u64
    }
}

/// A topic's effective settings, resolved through topic overrides and broker layers.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSettings {
    pub log: LogConfig,
    /// `flush.messages` / `flush.ms` when set below Kafka's "never" default.
    pub flush_messages: Option<i64>,
    pub flush_ms: Option<i64>,
    /// `min.insync.replicas`: acks=all fails with NOT_ENOUGH_REPLICAS below this ISR size.
    pub min_insync_replicas: usize,
    /// `compression.type` when it names a codec: batches in another are rewritten with it.
    /// `None` for `producer`, which stores batches as they arrive.
    pub compression: Option<vltava_record::Compression>,
    /// `leader.replication.throttled.replicas` / `follower.replication.throttled.replicas`.
    pub leader_throttled: defs::ThrottledReplicas,
    pub follower_throttled: defs::ThrottledReplicas,
}

pub fn topic_settings(layers: ConfigLayers<'_>) -> TopicSettings {
    let value = |name: &str| -> String {
        let (def, syn) = defs::topic_config_def(name).expect("known topic config");
        defs::resolve_topic(def, syn, layers)
            .value
            .unwrap_or_default()
    };
    let num = |name: &str| -> i64 { value(name).trim().parse().unwrap_or(0) };
    let never = |n: i64| if n == i64::MAX { None } else { Some(n) };
    TopicSettings {
        log: LogConfig {
            segment_bytes: num("segment.bytes").max(14) as u64,
            segment_ms: num("segment.ms").max(1),
            retention_ms: num("retention.ms"),
            retention_bytes: num("retention.bytes"),
            index_interval_bytes: num("index.interval.bytes").max(0) as u64,
            max_message_bytes: num("max.message.bytes").max(0) as usize,
            log_append_time: value("message.timestamp.type") == "LogAppendTime",
            delete_retention: value("cleanup.policy")
                .split(',')
                .any(|p| p.trim() == "delete"),
            compact: value("cleanup.policy")
                .split(',')
                .any(|p| p.trim() == "compact"),
            delete_retention_ms: num("delete.retention.ms").max(0),
            min_cleanable_dirty_ratio: value("min.cleanable.dirty.ratio")
                .trim()
                .parse::<f64>()
                .map_or(0.5, |r| r.clamp(0.0, 1.0)),
            min_compaction_lag_ms: num("min.compaction.lag.ms").max(0),
            max_compaction_lag_ms: num("max.compaction.lag.ms").max(1),
        },
        flush_messages: never(num("flush.messages")),
        flush_ms: never(num("flush.ms")),
        min_insync_replicas: num("min.insync.replicas").max(1) as usize,
        compression: match value("compression.type").trim() {
            "uncompressed" => Some(vltava_record::Compression::None),
            "gzip" => Some(vltava_record::Compression::Gzip),
            "snappy" => Some(vltava_record::Compression::Snappy),
            "lz4" => Some(vltava_record::Compression::Lz4),
            "zstd" => Some(vltava_record::Compression::Zstd),
            _ => None,
        },
        // Validated when set; a value that slipped past throttles nothing.
        leader_throttled: defs::parse_throttled_replicas(&value(
            "leader.replication.throttled.replicas",
        ))
        .unwrap_or_default(),
        follower_throttled: defs::parse_throttled_replicas(&value(
            "follower.replication.throttled.replicas",
        ))
        .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<BrokerConfig, ConfigError> {
        BrokerConfig::from_props(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_and_precedence() {
        let c = BrokerConfig::default();
        assert_eq!(c.listeners[0].bind, "127.0.0.1:9092");
        assert_eq!(c.listeners[0].name, "PLAINTEXT");
        assert!(c.auto_create_topics());
        assert_eq!(c.num_partitions(), 1);
        let c = cfg(&[
            ("log.retention.hours", "2"),
            ("listeners", "PLAINTEXT://:9093"),
        ])
        .unwrap();
        assert_eq!(c.props["log.retention.ms"], "7200000");
        assert_eq!(c.listeners[0].bind, "0.0.0.0:9093");
        let c = cfg(&[("log.retention.hours", "2"), ("log.retention.ms", "5")]).unwrap();
        assert_eq!(c.props["log.retention.ms"], "5");
        assert!(cfg(&[("num.partitions", "zero")]).is_err());
        assert_eq!(
            cfg(&[("listeners", "SSL://a:1")]).unwrap().listeners[0].security_protocol,
            SecurityProtocol::Ssl
        );
    }

    #[test]
    fn kraft_roles_and_voters() {
        let c = BrokerConfig::default();
        assert!(c.roles.broker && c.roles.controller && c.voters.is_empty());
        let three = "1@127.0.0.1:19301,2@127.0.0.1:19302,3@[::1]:19303";
        let c = cfg(&[
            ("node.id", "2"),
            ("controller.quorum.voters", three),
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:19302",
            ),
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            ),
            ("controller.listener.names", "CONTROLLER"),
        ])
        .unwrap();
        assert_eq!(c.voters.len(), 3);
        assert_eq!(c.voters[2].addr(), "::1:19303");
        assert!(c.is_controller_listener("CONTROLLER"));
        assert_eq!(c.inter_broker_listener().name, "PLAINTEXT");
        // A controller that is not a voter yet waits to be added; a voter without the role
        // and one without a controller listener are refused.
        let fourth = cfg(&[
            ("node.id", "4"),
            ("controller.quorum.voters", three),
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
            ),
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            ),
            ("controller.listener.names", "CONTROLLER"),
        ]);
        assert!(fourth.is_ok(), "{fourth:?}");
        assert!(cfg(&[("node.id", "4"), ("controller.quorum.voters", three)]).is_err());
        assert!(cfg(&[
            ("node.id", "1"),
            ("process.roles", "broker"),
            ("controller.quorum.voters", three)
        ])
        .is_err());
        assert!(cfg(&[("node.id", "1"), ("controller.quorum.voters", three)]).is_err());
        assert!(cfg(&[("process.roles", "broker")]).is_err());
        assert!(cfg(&[("process.roles", "zookeeper")]).is_err());
        // Brokers that are not controllers find the quorum from the voters or the
        // bootstrap servers.
        let broker = cfg(&[
            ("node.id", "7"),
            ("process.roles", "broker"),
            ("controller.quorum.voters", three),
        ])
        .unwrap();
        assert!(broker.roles.broker && !broker.roles.controller);
        let broker = cfg(&[
            ("node.id", "7"),
            ("process.roles", "broker"),
            ("controller.quorum.bootstrap.servers", "h:1, h:2"),
        ])
        .unwrap();
        assert_eq!(broker.bootstrap_servers, ["h:1", "h:2"]);
        assert!(cfg(&[
            ("process.roles", "broker"),
            ("controller.quorum.bootstrap.servers", "h")
        ])
        .is_err());
        // A controller serves no clients: only controller listeners.
        let controller_only = [
            ("node.id", "1"),
            ("process.roles", "controller"),
            ("controller.quorum.voters", three),
            ("listeners", "CONTROLLER://127.0.0.1:9093"),
            ("listener.security.protocol.map", "CONTROLLER:PLAINTEXT"),
            ("controller.listener.names", "CONTROLLER"),
        ];
        let c = cfg(&controller_only).unwrap();
        assert!(c.roles.controller && !c.roles.broker);
        assert!(cfg(&[
            ("process.roles", "controller"),
            ("controller.quorum.voters", three)
        ])
        .is_err());
        assert!(cfg(&[
            ("node.id", "1"),
            ("process.roles", "controller"),
            ("controller.quorum.bootstrap.servers", "h:1"),
            ("listeners", "CONTROLLER://127.0.0.1:9093"),
            ("listener.security.protocol.map", "CONTROLLER:PLAINTEXT"),
            ("controller.listener.names", "CONTROLLER"),
        ])
        .is_err());
        assert!(cfg(&[("controller.quorum.voters", "1@h")]).is_err());
        assert!(cfg(&[("controller.quorum.voters", "1@h:1,1@h:2")]).is_err());
    }

    #[test]
    fn named_listeners() {
        let c = cfg(&[
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:0,INTERNAL://127.0.0.1:0",
            ),
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,INTERNAL:PLAINTEXT",
            ),
            ("advertised.listeners", "INTERNAL://broker.internal:19092"),
        ])
        .unwrap();
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.listeners[0].advertised, None);
        assert_eq!(
            c.listeners[1].advertised,
            Some(("broker.internal".to_string(), 19092))
        );
        // A name without a protocol, a repeated name, an unknown advertised name.
        assert!(cfg(&[("listeners", "INTERNAL://127.0.0.1:0")]).is_err());
        assert!(cfg(&[("listeners", "PLAINTEXT://a:1,PLAINTEXT://a:2")]).is_err());
        assert!(cfg(&[("advertised.listeners", "OTHER://a:1")]).is_err());
        assert!(cfg(&[("listeners", "")]).is_err());
    }

    #[test]
    fn listener_overrides_win() {
        let c = cfg(&[
            ("listeners", "SSL://127.0.0.1:0,INTERNAL://127.0.0.1:0"),
            (
                "listener.security.protocol.map",
                "SSL:SSL,INTERNAL:SASL_SSL",
            ),
            ("ssl.client.auth", "none"),
            ("listener.name.internal.ssl.client.auth", "required"),
        ])
        .unwrap();
        assert_eq!(
            c.listener_prop("SSL", "ssl.client.auth").as_deref(),
            Some("none")
        );
        assert_eq!(
            c.listener_prop("INTERNAL", "ssl.client.auth").as_deref(),
            Some("required")
        );
        assert_eq!(c.listener_prop("INTERNAL", "ssl.keystore.key"), None);
    }

    #[test]
    fn topic_settings_follow_layers() {
        let c = cfg(&[
            ("log.segment.bytes", "1000"),
            ("log.flush.interval.messages", "1"),
        ])
        .unwrap();
        let topic: BTreeMap<_, _> = [("retention.ms".to_string(), "60000".to_string())].into();
        let s = topic_settings(ConfigLayers {
            topic: Some(&topic),
            static_broker: Some(&c.props),
            ..Default::default()
        });
        assert_eq!(s.log.segment_bytes, 1000);
        assert_eq!(s.log.retention_ms, 60000);
        assert_eq!(s.flush_messages, Some(1));
        assert_eq!(s.flush_ms, None);
    }
}
