//! Static broker configuration, in Kafka's key names.

use std::collections::BTreeMap;
use std::path::PathBuf;

use vltava_metadata::config::{self as defs, ConfigLayers};
use vltava_storage::LogConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
}

/// Broker settings: a few typed fields plus every key that was set explicitly (Kafka's
/// "static broker config" layer, reported as such by DescribeConfigs).
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    /// `host:port` to bind.
    pub listener: String,
    /// `(host, port)` given to clients; port 0 means "the bound port".
    pub advertised: Option<(String, u16)>,
    pub data_dir: PathBuf,
    pub props: BTreeMap<String, String>,
}

fn parse_listener(value: &str) -> Result<String, ConfigError> {
    let first = value.split(',').next().unwrap_or("").trim();
    let addr = match first.split_once("://") {
        Some((proto, addr)) => {
            if !proto.eq_ignore_ascii_case("PLAINTEXT") {
                return Err(ConfigError::Invalid(format!(
                    "listener {first}: only PLAINTEXT listeners are supported"
                )));
            }
            addr
        }
        None => first,
    };
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| ConfigError::Invalid(format!("listener {first}: expected host:port")))?;
    port.parse::<u16>()
        .map_err(|_| ConfigError::Invalid(format!("listener {first}: bad port {port:?}")))?;
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    Ok(format!("{host}:{port}"))
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
        let listener = parse_listener(
            props
                .get("listeners")
                .map_or("PLAINTEXT://127.0.0.1:9092", String::as_str),
        )?;
        let advertised = match props.get("advertised.listeners") {
            Some(a) if !a.is_empty() => {
                let hp = parse_listener(a)?;
                let (h, p) = hp.rsplit_once(':').expect("validated");
                Some((h.to_string(), p.parse().expect("validated")))
            }
            _ => None,
        };
        let data_dir = PathBuf::from(
            props
                .get("log.dirs")
                .or(props.get("log.dir"))
                .map_or("./vltava-data", String::as_str),
        );
        Ok(Self {
            node_id,
            listener,
            advertised,
            data_dir,
            props,
        })
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

    pub fn max_connections(&self) -> usize {
        self.get_i64("max.connections").clamp(0, 1 << 20) as usize
    }

    pub fn connections_max_idle(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.get_i64("connections.max.idle.ms").max(1) as u64)
    }

    pub fn queued_max_requests(&self) -> usize {
        self.get_i64("queued.max.requests").clamp(1, 10_000) as usize
    }

    pub fn retention_check_interval_ms(&self) -> u64 {
        self.get_i64("log.retention.check.interval.ms").max(1) as u64
    }
}

/// A topic's effective settings, resolved through topic overrides and broker layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSettings {
    pub log: LogConfig,
    /// `flush.messages` / `flush.ms` when set below Kafka's "never" default.
    pub flush_messages: Option<i64>,
    pub flush_ms: Option<i64>,
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
        },
        flush_messages: never(num("flush.messages")),
        flush_ms: never(num("flush.ms")),
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
        assert_eq!(c.listener, "127.0.0.1:9092");
        assert!(c.auto_create_topics());
        assert_eq!(c.num_partitions(), 1);
        let c = cfg(&[
            ("log.retention.hours", "2"),
            ("listeners", "PLAINTEXT://:9093"),
        ])
        .unwrap();
        assert_eq!(c.props["log.retention.ms"], "7200000");
        assert_eq!(c.listener, "0.0.0.0:9093");
        let c = cfg(&[("log.retention.hours", "2"), ("log.retention.ms", "5")]).unwrap();
        assert_eq!(c.props["log.retention.ms"], "5");
        assert!(cfg(&[("num.partitions", "zero")]).is_err());
        assert!(cfg(&[("listeners", "SSL://a:1")]).is_err());
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
