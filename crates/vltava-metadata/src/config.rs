//! Kafka's config keys: topic configs, their broker-level synonyms, types, defaults and
//! validation, and how an effective value is resolved from its sources.

use std::collections::BTreeMap;

/// DescribeConfigs `config_type` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// DescribeConfigs `config_source` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    DynamicTopic = 1,
    DynamicBroker = 2,
    DynamicDefaultBroker = 3,
    StaticBroker = 4,
    Default = 5,
}

#[derive(Debug)]
pub struct ConfigDef {
    pub name: &'static str,
    pub ty: ConfigType,
    pub default: &'static str,
    /// Allowed values for string/list configs; empty = any.
    pub choices: &'static [&'static str],
    /// Inclusive lower bound for numbers.
    pub min: Option<i64>,
    pub doc: &'static str,
}

const MAX: &str = "9223372036854775807";

macro_rules! def {
    ($name:expr, $ty:ident, $default:expr, $choices:expr, $min:expr, $doc:expr) => {
        ConfigDef {
            name: $name,
            ty: ConfigType::$ty,
            default: $default,
            choices: $choices,
            min: $min,
            doc: $doc,
        }
    };
}

/// Topic configs with their broker synonym (the broker key that sets the default).
pub static TOPIC_CONFIGS: &[(ConfigDef, &str)] = &[
    (
        def!(
            "cleanup.policy",
            List,
            "delete",
            &["delete", "compact"],
            None,
            "Retention policy for old segments."
        ),
        "log.cleanup.policy",
    ),
    (
        def!(
            "compression.type",
            String,
            "producer",
            &["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"],
            None,
            "Compression codec for the topic's data."
        ),
        "compression.type",
    ),
    (
        def!(
            "delete.retention.ms",
            Long,
            "86400000",
            &[],
            Some(0),
            "How long delete tombstones are kept for compacted topics."
        ),
        "log.cleaner.delete.retention.ms",
    ),
    (
        def!(
            "file.delete.delay.ms",
            Long,
            "60000",
            &[],
            Some(0),
            "Delay before deleting a file from the filesystem."
        ),
        "log.segment.delete.delay.ms",
    ),
    (
        def!(
            "flush.messages",
            Long,
            MAX,
            &[],
            Some(1),
            "Force an fsync after this many messages."
        ),
        "log.flush.interval.messages",
    ),
    (
        def!(
            "flush.ms",
            Long,
            MAX,
            &[],
            Some(0),
            "Force an fsync after this much time."
        ),
        "log.flush.interval.ms",
    ),
    (
        def!(
            "index.interval.bytes",
            Int,
            "4096",
            &[],
            Some(0),
            "Bytes between offset index entries."
        ),
        "log.index.interval.bytes",
    ),
    (
        def!(
            "max.compaction.lag.ms",
            Long,
            MAX,
            &[],
            Some(1),
            "Longest time a message stays uncompacted."
        ),
        "log.cleaner.max.compaction.lag.ms",
    ),
    (
        def!(
            "max.message.bytes",
            Int,
            "1048588",
            &[],
            Some(0),
            "Largest record batch size allowed."
        ),
        "message.max.bytes",
    ),
    (
        def!(
            "message.timestamp.type",
            String,
            "CreateTime",
            &["CreateTime", "LogAppendTime"],
            None,
            "Whether record timestamps come from the producer or the broker."
        ),
        "log.message.timestamp.type",
    ),
    (
        def!(
            "min.cleanable.dirty.ratio",
            Double,
            "0.5",
            &[],
            None,
            "Dirty ratio that makes a log eligible for cleaning."
        ),
        "log.cleaner.min.cleanable.ratio",
    ),
    (
        def!(
            "min.compaction.lag.ms",
            Long,
            "0",
            &[],
            Some(0),
            "Shortest time a message stays uncompacted."
        ),
        "log.cleaner.min.compaction.lag.ms",
    ),
    (
        def!(
            "min.insync.replicas",
            Int,
            "1",
            &[],
            Some(1),
            "Replicas that must acknowledge an acks=all write."
        ),
        "min.insync.replicas",
    ),
    (
        def!(
            "preallocate",
            Boolean,
            "false",
            &["true", "false"],
            None,
            "Preallocate segment files."
        ),
        "log.preallocate",
    ),
    (
        def!(
            "retention.bytes",
            Long,
            "-1",
            &[],
            Some(-1),
            "Largest size of a partition before old segments are deleted."
        ),
        "log.retention.bytes",
    ),
    (
        def!(
            "retention.ms",
            Long,
            "604800000",
            &[],
            Some(-1),
            "Longest time a segment is kept."
        ),
        "log.retention.ms",
    ),
    (
        def!(
            "segment.bytes",
            Int,
            "1073741824",
            &[],
            Some(14),
            "Segment file size."
        ),
        "log.segment.bytes",
    ),
    (
        def!(
            "segment.index.bytes",
            Int,
            "10485760",
            &[],
            Some(4),
            "Offset index size limit."
        ),
        "log.index.size.max.bytes",
    ),
    (
        def!(
            "segment.jitter.ms",
            Long,
            "0",
            &[],
            Some(0),
            "Random jitter subtracted from segment.ms."
        ),
        "log.roll.jitter.ms",
    ),
    (
        def!(
            "segment.ms",
            Long,
            "604800000",
            &[],
            Some(1),
            "Time after which a segment is rolled."
        ),
        "log.roll.ms",
    ),
    (
        def!(
            "unclean.leader.election.enable",
            Boolean,
            "false",
            &["true", "false"],
            None,
            "Allow out-of-sync replicas to become leader."
        ),
        "unclean.leader.election.enable",
    ),
    // No broker synonym (""): these are only ever set per topic.
    (
        def!(
            "leader.replication.throttled.replicas",
            List,
            "",
            &[],
            None,
            "Replicas (partition:broker, or *) whose replication the leader throttles to leader.replication.throttled.rate."
        ),
        "",
    ),
    (
        def!(
            "follower.replication.throttled.replicas",
            List,
            "",
            &[],
            None,
            "Replicas (partition:broker, or *) whose fetching the follower throttles to follower.replication.throttled.rate."
        ),
        "",
    ),
];

/// Broker-only configs that AlterConfigs may change while the broker runs, per broker or
/// cluster-wide.
pub static DYNAMIC_BROKER_CONFIGS: &[ConfigDef] = &[
    def!(
        "leader.replication.throttled.rate",
        Long,
        MAX,
        &[],
        Some(0),
        "Bytes per second a leader sends to out-of-sync replicas of throttled partitions."
    ),
    def!(
        "follower.replication.throttled.rate",
        Long,
        MAX,
        &[],
        Some(0),
        "Bytes per second a follower fetches for its out-of-sync throttled partitions."
    ),
];

/// Broker-only configs reported by DescribeConfigs (read-only here).
pub static BROKER_CONFIGS: &[ConfigDef] = &[
    def!(
        "log.cleaner.enable",
        Boolean,
        "true",
        &["true", "false"],
        None,
        "Run the log cleaner for topics whose cleanup.policy includes compact."
    ),
    def!(
        "log.cleaner.threads",
        Int,
        "1",
        &[],
        Some(0),
        "Background threads that clean compacted logs."
    ),
    def!(
        "log.cleaner.dedupe.buffer.size",
        Long,
        "134217728",
        &[],
        Some(1024),
        "Memory for the cleaners' key maps, split across the threads (24 bytes a key)."
    ),
    def!(
        "log.cleaner.io.max.bytes.per.second",
        Double,
        "1.7976931348623157E308",
        &[],
        None,
        "Bytes per second all cleaner threads together read and write at most."
    ),
    def!(
        "log.cleaner.backoff.ms",
        Long,
        "15000",
        &[],
        Some(0),
        "How long a cleaner thread sleeps when no log needs cleaning."
    ),
    def!("node.id", Int, "1", &[], Some(0), "This broker's id."),
    def!(
        "process.roles",
        String,
        "broker,controller",
        &[],
        None,
        "broker, controller, or both (combined mode)."
    ),
    def!(
        "controller.quorum.voters",
        String,
        "",
        &[],
        None,
        "The metadata quorum's voters: id@host:port,... (empty: this node alone)."
    ),
    def!(
        "controller.quorum.bootstrap.servers",
        String,
        "",
        &[],
        None,
        "Controllers to ask for the quorum's leader: host:port,..."
    ),
    def!(
        "controller.listener.names",
        String,
        "",
        &[],
        None,
        "Listeners the controller serves the quorum on."
    ),
    def!(
        "inter.broker.listener.name",
        String,
        "",
        &[],
        None,
        "Listener brokers use to reach each other (default: the first listener)."
    ),
    def!(
        "authorizer.class.name",
        String,
        "",
        &[
            "",
            "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "vltava.StandardAuthorizer",
        ],
        None,
        "The authorizer: StandardAuthorizer decides with the ACLs in the metadata (empty: everyone may do everything)."
    ),
    def!(
        "super.users",
        String,
        "",
        &[],
        None,
        "Principals the authorizer allows everything, separated by ';' (User:admin;User:broker)."
    ),
    def!(
        "allow.everyone.if.no.acl.found",
        Boolean,
        "false",
        &[],
        None,
        "Whether a resource without any ACL is open to everyone."
    ),
    def!(
        "replica.selector.class",
        String,
        "",
        &["", "org.apache.kafka.common.replica.RackAwareReplicaSelector"],
        None,
        "How a leader picks the replica a consumer should fetch from (KIP-392); RackAwareReplicaSelector sends consumers with client.rack to an in-sync replica in their rack."
    ),
    def!(
        "broker.rack",
        String,
        "",
        &[],
        None,
        "This broker's rack, for replica placement."
    ),
    def!(
        "cluster.id",
        String,
        "",
        &[],
        None,
        "The cluster's id (default: derived from the voters, or random for one node)."
    ),
    def!(
        "replica.lag.time.max.ms",
        Long,
        "30000",
        &[],
        Some(1),
        "A follower that has not caught up with the leader for this long leaves the ISR."
    ),
    def!(
        "auto.leader.rebalance.enable",
        Boolean,
        "true",
        &["true", "false"],
        None,
        "The active controller gives leadership back to preferred replicas that are in sync."
    ),
    def!(
        "leader.imbalance.check.interval.seconds",
        Long,
        "300",
        &[],
        Some(1),
        "How often the active controller looks for partitions led by other than their preferred replica."
    ),
    def!(
        "replica.fetch.max.bytes",
        Int,
        "1048576",
        &[],
        Some(0),
        "Bytes a follower fetches per partition (the first batch always comes whole)."
    ),
    def!(
        "replica.fetch.response.max.bytes",
        Int,
        "10485760",
        &[],
        Some(0),
        "Bytes a follower fetches per request."
    ),
    def!(
        "replica.fetch.wait.max.ms",
        Int,
        "500",
        &[],
        Some(0),
        "How long a follower's fetch waits at the leader for new records."
    ),
    def!(
        "replica.fetch.backoff.ms",
        Int,
        "1000",
        &[],
        Some(0),
        "How long a follower waits after a failed fetch."
    ),
    def!(
        "replica.socket.timeout.ms",
        Int,
        "30000",
        &[],
        Some(1),
        "How long a follower waits for a fetch response before it reconnects."
    ),
    def!(
        "broker.session.timeout.ms",
        Int,
        "9000",
        &[],
        Some(1),
        "A broker without a heartbeat for this long is fenced."
    ),
    def!(
        "broker.heartbeat.interval.ms",
        Int,
        "2000",
        &[],
        Some(1),
        "How often a broker heartbeats to the controller."
    ),
    def!(
        "controller.quorum.election.timeout.ms",
        Int,
        "1000",
        &[],
        Some(1),
        "How long a voter waits for the leader before standing for election."
    ),
    def!(
        "listeners",
        String,
        "PLAINTEXT://127.0.0.1:9092",
        &[],
        None,
        "Addresses to listen on."
    ),
    def!(
        "advertised.listeners",
        String,
        "",
        &[],
        None,
        "Addresses given to clients."
    ),
    def!(
        "log.dirs",
        String,
        "./vltava-data",
        &[],
        None,
        "Where partition logs are stored."
    ),
    def!(
        "num.partitions",
        Int,
        "1",
        &[],
        Some(1),
        "Default partition count for new topics."
    ),
    def!(
        "default.replication.factor",
        Int,
        "1",
        &[],
        Some(1),
        "Default replication factor for new topics."
    ),
    def!(
        "auto.create.topics.enable",
        Boolean,
        "true",
        &["true", "false"],
        None,
        "Create topics on first metadata request or produce."
    ),
    def!(
        "socket.request.max.bytes",
        Int,
        "104857600",
        &[],
        Some(1),
        "Largest request frame accepted."
    ),
    def!(
        "socket.receive.buffer.bytes",
        Int,
        "-1",
        &[],
        Some(-1),
        "SO_RCVBUF of the listeners' sockets; -1 leaves the kernel's autotuning on. Kafka's default is 102400, which measured more CPU per GB here and caps the window on long links."
    ),
    def!(
        "produce.splice.min.bytes",
        Int,
        "65536",
        &[],
        Some(-1),
        "On plaintext listeners, one partition's produced records of at least this many bytes (and at most 1 MiB) move from the socket to the log through a pipe with splice, never copied into the broker's memory; -1 reads every request into memory."
    ),
    def!(
        "socket.send.buffer.bytes",
        Int,
        "-1",
        &[],
        Some(-1),
        "SO_SNDBUF of accepted sockets; -1 leaves the kernel's autotuning on (Kafka's default is 102400)."
    ),
    def!(
        "log.retention.check.interval.ms",
        Long,
        "300000",
        &[],
        Some(1),
        "How often retention runs."
    ),
    def!(
        "log.retention.hours",
        Int,
        "168",
        &[],
        None,
        "Retention in hours (lowest precedence)."
    ),
    def!(
        "log.retention.minutes",
        Int,
        "",
        &[],
        None,
        "Retention in minutes."
    ),
    def!(
        "log.roll.hours",
        Int,
        "168",
        &[],
        Some(1),
        "Segment roll time in hours."
    ),
    def!(
        "max.connections",
        Int,
        "2147483647",
        &[],
        Some(0),
        "Most client connections accepted at once."
    ),
    def!(
        "max.connections.per.ip",
        Int,
        "2147483647",
        &[],
        Some(0),
        "Most connections accepted at once from one IP address."
    ),
    def!(
        "max.connections.per.ip.overrides",
        String,
        "",
        &[],
        None,
        "Per-address exceptions to max.connections.per.ip: ip:count,ip:count."
    ),
    def!(
        "connection.failed.authentication.delay.ms",
        Int,
        "100",
        &[],
        Some(0),
        "How long a failed authentication's answer and close are held back, against password guessing."
    ),
    def!(
        "connections.max.reauth.ms",
        Long,
        "0",
        &[],
        Some(0),
        "How long a SASL session lasts before the client must authenticate again on its connection (KIP-368); 0: for ever."
    ),
    def!(
        "quota.window.num",
        Int,
        "11",
        &[],
        Some(1),
        "Samples kept to measure a client's rate against its quota."
    ),
    def!(
        "quota.window.size.seconds",
        Int,
        "1",
        &[],
        Some(1),
        "Time span of each sample of a client's rate."
    ),
    def!(
        "connections.max.idle.ms",
        Long,
        "600000",
        &[],
        Some(1),
        "A connection that sends no request for this long, or takes longer to send one, is closed."
    ),
    def!(
        "listener.security.protocol.map",
        String,
        "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
        &[],
        None,
        "Security protocol of each listener name."
    ),
    def!(
        "queued.max.request.bytes",
        Long,
        "268435456",
        &[],
        Some(-1),
        "Request bytes the broker holds in memory at once, received or queued; -1 is unbounded."
    ),
    def!(
        "fetch.max.bytes",
        Int,
        "57671680",
        &[],
        Some(1024),
        "Largest Fetch response the broker builds, whatever the request asks for."
    ),
    def!(
        "queued.max.requests",
        Int,
        "500",
        &[],
        Some(1),
        "Requests one connection may have in flight."
    ),
    def!(
        "offsets.topic.num.partitions",
        Int,
        "50",
        &[],
        Some(1),
        "Partitions of __consumer_offsets."
    ),
    def!(
        "offsets.topic.replication.factor",
        Int,
        "3",
        &[],
        Some(1),
        "Replication factor of __consumer_offsets (at most the number of controller.quorum.voters)."
    ),
    def!(
        "offsets.topic.segment.bytes",
        Int,
        "104857600",
        &[],
        Some(1),
        "Segment size of __consumer_offsets, kept small so its cleaner can run often."
    ),
    def!(
        "offsets.retention.minutes",
        Int,
        "10080",
        &[],
        Some(1),
        "How long offsets of an empty group are kept."
    ),
    def!(
        "offsets.retention.check.interval.ms",
        Long,
        "600000",
        &[],
        Some(1),
        "How often expired offsets are removed."
    ),
    def!(
        "producer.id.expiration.ms",
        Int,
        "86400000",
        &[],
        Some(1),
        "How long a partition remembers a producer id that has not written and has no open transaction."
    ),
    def!(
        "producer.id.expiration.check.interval.ms",
        Int,
        "600000",
        &[],
        Some(1),
        "How often idle producer ids are forgotten."
    ),
    def!(
        "offsets.commit.timeout.ms",
        Int,
        "5000",
        &[],
        Some(1),
        "How long an offset commit waits to be durable."
    ),
    def!(
        "offset.metadata.max.bytes",
        Int,
        "4096",
        &[],
        Some(0),
        "Largest metadata string of a committed offset."
    ),
    def!(
        "transaction.state.log.num.partitions",
        Int,
        "50",
        &[],
        Some(1),
        "Partitions of __transaction_state."
    ),
    def!(
        "transaction.state.log.replication.factor",
        Int,
        "3",
        &[],
        Some(1),
        "Replication factor of __transaction_state (at most the brokers present when it is created)."
    ),
    def!(
        "transaction.state.log.min.isr",
        Int,
        "2",
        &[],
        Some(1),
        "min.insync.replicas of __transaction_state (at most its replication factor)."
    ),
    def!(
        "transaction.state.log.segment.bytes",
        Int,
        "104857600",
        &[],
        Some(1),
        "Segment size of __transaction_state."
    ),
    def!(
        "transaction.max.timeout.ms",
        Int,
        "900000",
        &[],
        Some(1),
        "Largest transaction timeout a producer may ask for."
    ),
    def!(
        "transactional.id.expiration.ms",
        Int,
        "604800000",
        &[],
        Some(1),
        "How long an idle transactional id is kept."
    ),
    def!(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        Int,
        "10000",
        &[],
        Some(1),
        "How often transactions past their timeout are aborted."
    ),
    def!(
        "transaction.remove.expired.transaction.cleanup.interval.ms",
        Int,
        "3600000",
        &[],
        Some(1),
        "How often expired transactional ids are removed."
    ),
    def!(
        "group.initial.rebalance.delay.ms",
        Int,
        "3000",
        &[],
        Some(0),
        "How long the first rebalance of an empty group waits for more members."
    ),
    def!(
        "group.min.session.timeout.ms",
        Int,
        "6000",
        &[],
        Some(0),
        "Shortest session timeout a member may ask for."
    ),
    def!(
        "group.max.session.timeout.ms",
        Int,
        "1800000",
        &[],
        Some(0),
        "Longest session timeout a member may ask for."
    ),
    def!(
        "group.max.size",
        Int,
        "2147483647",
        &[],
        Some(1),
        "Most members in one group."
    ),
    def!(
        "group.consumer.session.timeout.ms",
        Int,
        "45000",
        &[],
        Some(1),
        "Session timeout of consumer-protocol (KIP-848) members."
    ),
    def!(
        "group.consumer.heartbeat.interval.ms",
        Int,
        "5000",
        &[],
        Some(1),
        "Heartbeat interval given to consumer-protocol members."
    ),
];

pub fn topic_config_def(name: &str) -> Option<&'static (ConfigDef, &'static str)> {
    TOPIC_CONFIGS.iter().find(|(d, _)| d.name == name)
}

/// Topic config whose broker synonym is `broker_key`.
pub fn topic_config_by_synonym(broker_key: &str) -> Option<&'static (ConfigDef, &'static str)> {
    TOPIC_CONFIGS
        .iter()
        .find(|(_, s)| !s.is_empty() && *s == broker_key)
}

/// Checks one value against its definition.
pub fn validate_value(def: &ConfigDef, value: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "invalid value {value:?} for configuration {}: {why}",
            def.name
        ))
    };
    match def.ty {
        ConfigType::Boolean => {
            if !value.eq_ignore_ascii_case("true") && !value.eq_ignore_ascii_case("false") {
                return bad("expected true or false");
            }
        }
        ConfigType::Int | ConfigType::Long => {
            let Ok(n) = value.trim().parse::<i64>() else {
                return bad("not a number");
            };
            if def.ty == ConfigType::Int && i32::try_from(n).is_err() {
                return bad("out of range for an int");
            }
            if let Some(min) = def.min {
                if n < min {
                    return bad(&format!("value must be at least {min}"));
                }
            }
        }
        ConfigType::Double => {
            if value.trim().parse::<f64>().is_err() {
                return bad("not a number");
            }
        }
        ConfigType::String => {
            if !def.choices.is_empty() && !def.choices.contains(&value) {
                return bad(&format!("must be one of {:?}", def.choices));
            }
        }
        ConfigType::List => {
            if !def.choices.is_empty() {
                for item in value.split(',').map(str::trim) {
                    if !def.choices.contains(&item) {
                        return bad(&format!("each item must be one of {:?}", def.choices));
                    }
                }
            }
        }
    }
    if NOT_APPLIED_YET.contains(&def.name) && !same_value(def, value, def.default) {
        return bad(&format!(
            "this broker does not apply it yet, so only its default ({}) is accepted",
            def.default
        ));
    }
    Ok(())
}

/// Configs the broker reports but does not act on yet (topic names and their broker
/// synonyms). Accepting another value would claim an effect that does not happen.
pub const NOT_APPLIED_YET: &[&str] = &[
    "segment.jitter.ms",
    "log.roll.jitter.ms",
    "segment.index.bytes",
    "log.index.size.max.bytes",
    "preallocate",
    "log.preallocate",
    "file.delete.delay.ms",
    "log.segment.delete.delay.ms",
];

fn same_value(def: &ConfigDef, a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    match def.ty {
        ConfigType::Boolean => a.eq_ignore_ascii_case(b),
        ConfigType::Int | ConfigType::Long => a.parse::<i64>().ok() == b.parse::<i64>().ok(),
        ConfigType::Double => a.parse::<f64>().ok() == b.parse::<f64>().ok(),
        ConfigType::String | ConfigType::List => a == b,
    }
}

/// Validates a topic config override by key.
pub fn validate_topic_config(name: &str, value: &str) -> Result<(), String> {
    let (def, _) =
        topic_config_def(name).ok_or_else(|| format!("unknown topic config name: {name}"))?;
    if name.ends_with(".replication.throttled.replicas") {
        parse_throttled_replicas(value)?;
    }
    validate_value(def, value)
}

/// Which replicas a `*.replication.throttled.replicas` value names: every one (`*`), or
/// `partition:broker` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ThrottledReplicas {
    #[default]
    None,
    All,
    Some(Vec<(i32, i32)>),
}

impl ThrottledReplicas {
    pub fn covers(&self, partition: i32, broker: i32) -> bool {
        match self {
            Self::None => false,
            Self::All => true,
            Self::Some(v) => v.contains(&(partition, broker)),
        }
    }
}

pub fn parse_throttled_replicas(value: &str) -> Result<ThrottledReplicas, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(ThrottledReplicas::None);
    }
    if value == "*" {
        return Ok(ThrottledReplicas::All);
    }
    value
        .split(',')
        .map(|item| {
            let (p, b) = item.trim().split_once(':').ok_or_else(|| {
                format!("{item:?} is not partition:broker (a list of them, or *)")
            })?;
            let num = |s: &str| {
                s.trim()
                    .parse::<i32>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| format!("{item:?} is not partition:broker"))
            };
            Ok((num(p)?, num(b)?))
        })
        .collect::<Result<Vec<_>, String>>()
        .map(ThrottledReplicas::Some)
}

/// Where a value can come from, most specific first.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConfigLayers<'a> {
    pub topic: Option<&'a BTreeMap<String, String>>,
    pub dynamic_broker: Option<&'a BTreeMap<String, String>>,
    pub dynamic_default: Option<&'a BTreeMap<String, String>>,
    pub static_broker: Option<&'a BTreeMap<String, String>>,
}

/// One resolved config: value, its source, and the synonyms that were consulted (Kafka lists
/// every layer that had a value, most specific first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedConfig {
    pub name: &'static str,
    pub value: Option<String>,
    pub source: ConfigSource,
    pub synonyms: Vec<(String, String, ConfigSource)>,
}

/// Resolves a topic config through the layers.
pub fn resolve_topic(
    def: &'static ConfigDef,
    synonym: &'static str,
    l: ConfigLayers<'_>,
) -> ResolvedConfig {
    let mut synonyms = Vec::new();
    if let Some(v) = l.topic.and_then(|m| m.get(def.name)) {
        synonyms.push((def.name.to_string(), v.clone(), ConfigSource::DynamicTopic));
    }
    // A topic config without a broker synonym is the topic's or its default.
    let synonym = if synonym.is_empty() {
        def.name
    } else {
        for (layer, source) in [
            (l.dynamic_broker, ConfigSource::DynamicBroker),
            (l.dynamic_default, ConfigSource::DynamicDefaultBroker),
            (l.static_broker, ConfigSource::StaticBroker),
        ] {
            if let Some(v) = layer.and_then(|m| m.get(synonym)) {
                synonyms.push((synonym.to_string(), v.clone(), source));
            }
        }
        synonym
    };
    synonyms.push((
        synonym.to_string(),
        def.default.to_string(),
        ConfigSource::Default,
    ));
    let (value, source) = synonyms
        .first()
        .map(|(_, v, s)| (v.clone(), *s))
        .expect("default present");
    ResolvedConfig {
        name: def.name,
        value: Some(value),
        source,
        synonyms,
    }
}

/// Resolves a broker config (topic synonyms included) through the broker layers.
pub fn resolve_broker(def: &'static ConfigDef, l: ConfigLayers<'_>) -> ResolvedConfig {
    let mut synonyms = Vec::new();
    for (layer, source) in [
        (l.dynamic_broker, ConfigSource::DynamicBroker),
        (l.dynamic_default, ConfigSource::DynamicDefaultBroker),
        (l.static_broker, ConfigSource::StaticBroker),
    ] {
        if let Some(v) = layer.and_then(|m| m.get(def.name)) {
            synonyms.push((def.name.to_string(), v.clone(), source));
        }
    }
    if !def.default.is_empty() {
        synonyms.push((
            def.name.to_string(),
            def.default.to_string(),
            ConfigSource::Default,
        ));
    }
    let (value, source) = synonyms
        .first()
        .map(|(_, v, s)| (Some(v.clone()), *s))
        .unwrap_or((None, ConfigSource::Default));
    ResolvedConfig {
        name: def.name,
        value,
        source,
        synonyms,
    }
}

/// A broker-level definition by name: broker-only keys and the topic synonyms.
///
/// Broker settings read their defaults through this on every request, so it is a map
/// lookup, not a scan of a few hundred names.
pub fn broker_config_def(name: &str) -> Option<&'static ConfigDef> {
    static BY_NAME: std::sync::LazyLock<
        std::collections::HashMap<&'static str, &'static ConfigDef>,
    > = std::sync::LazyLock::new(|| {
        let mut map = std::collections::HashMap::new();
        // Earlier lists win, as the scan they replace let them.
        for d in BROKER_SYNONYM_DEFS
            .iter()
            .rev()
            .chain(DYNAMIC_BROKER_CONFIGS.iter().rev())
            .chain(BROKER_CONFIGS.iter().rev())
        {
            map.insert(d.name, d);
        }
        map
    });
    BY_NAME.get(name).copied()
}

/// Topic configs re-expressed under their broker names, so brokers describe and validate them.
pub static BROKER_SYNONYM_DEFS: std::sync::LazyLock<Vec<ConfigDef>> =
    std::sync::LazyLock::new(|| {
        TOPIC_CONFIGS
            .iter()
            .filter(|(_, syn)| !syn.is_empty())
            .map(|(d, syn)| ConfigDef {
                name: syn,
                ty: d.ty,
                default: d.default,
                choices: d.choices,
                min: d.min,
                doc: d.doc,
            })
            .collect()
    });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(validate_topic_config("retention.ms", "1000").is_ok());
        assert!(validate_topic_config("retention.ms", "-1").is_ok());
        assert!(validate_topic_config("retention.ms", "-2").is_err());
        assert!(validate_topic_config("retention.ms", "soon").is_err());
        assert!(validate_topic_config("cleanup.policy", "compact,delete").is_ok());
        assert!(validate_topic_config("cleanup.policy", "shred").is_err());
        assert!(validate_topic_config("max.message.bytes", "99999999999").is_err());
        assert!(validate_topic_config("no.such.thing", "1").is_err());
        assert!(validate_topic_config("message.timestamp.type", "LogAppendTime").is_ok());
    }

    #[test]
    fn configs_without_effect_accept_only_their_default() {
        assert!(validate_topic_config("compression.type", "zstd").is_ok());
        assert!(validate_topic_config("compression.type", "brotli").is_err());
        assert!(validate_topic_config("preallocate", "FALSE").is_ok());
        assert!(validate_topic_config("preallocate", "true").is_err());
        assert!(validate_topic_config("min.cleanable.dirty.ratio", "0.1").is_ok());
        assert!(validate_topic_config("segment.jitter.ms", "5").is_err());
        let syn = broker_config_def("log.roll.jitter.ms").unwrap();
        assert!(validate_value(syn, "1").is_err());
        // Every listed name is a real config, so the list cannot rot silently.
        for name in NOT_APPLIED_YET {
            assert!(
                broker_config_def(name).is_some() || topic_config_def(name).is_some(),
                "{name}"
            );
        }
    }

    #[test]
    fn resolution_prefers_most_specific_layer() {
        let (def, syn) = topic_config_def("retention.ms").unwrap();
        let topic: BTreeMap<_, _> = [("retention.ms".to_string(), "5".to_string())].into();
        let stat: BTreeMap<_, _> = [("log.retention.ms".to_string(), "9".to_string())].into();
        let r = resolve_topic(
            def,
            syn,
            ConfigLayers {
                topic: Some(&topic),
                static_broker: Some(&stat),
                ..Default::default()
            },
        );
        assert_eq!(
            (r.value.as_deref(), r.source),
            (Some("5"), ConfigSource::DynamicTopic)
        );
        assert_eq!(r.synonyms.len(), 3);
        let r = resolve_topic(
            def,
            syn,
            ConfigLayers {
                static_broker: Some(&stat),
                ..Default::default()
            },
        );
        assert_eq!(
            (r.value.as_deref(), r.source),
            (Some("9"), ConfigSource::StaticBroker)
        );
        let r = resolve_topic(def, syn, ConfigLayers::default());
        assert_eq!(
            (r.value.as_deref(), r.source),
            (Some("604800000"), ConfigSource::Default)
        );
    }

    #[test]
    fn throttled_replica_lists() {
        assert_eq!(parse_throttled_replicas(""), Ok(ThrottledReplicas::None));
        assert_eq!(parse_throttled_replicas(" * "), Ok(ThrottledReplicas::All));
        let t = parse_throttled_replicas("0:1, 1:2").unwrap();
        assert!(t.covers(0, 1) && t.covers(1, 2) && !t.covers(0, 2));
        for bad in ["0", "a:1", "0:-1", "0:1,", "*,0:1"] {
            assert!(
                validate_topic_config("leader.replication.throttled.replicas", bad).is_err(),
                "{bad}"
            );
        }
        assert!(validate_topic_config("follower.replication.throttled.replicas", "3:4").is_ok());
        // No broker key sets them.
        assert!(topic_config_by_synonym("").is_none());
        assert!(broker_config_def("leader.replication.throttled.replicas").is_none());
        assert!(broker_config_def("leader.replication.throttled.rate").is_some());
    }

    #[test]
    fn broker_defs_by_name_match_the_lists_in_order() {
        let lists = BROKER_CONFIGS
            .iter()
            .chain(DYNAMIC_BROKER_CONFIGS)
            .chain(BROKER_SYNONYM_DEFS.iter());
        for d in lists {
            let first = BROKER_CONFIGS
                .iter()
                .chain(DYNAMIC_BROKER_CONFIGS)
                .chain(BROKER_SYNONYM_DEFS.iter())
                .find(|e| e.name == d.name)
                .unwrap();
            assert!(
                std::ptr::eq(broker_config_def(d.name).unwrap(), first),
                "{}",
                d.name
            );
        }
        assert!(broker_config_def("no.such.key").is_none());
    }
}
