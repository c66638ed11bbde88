//! What every client command shares: connection flags, client properties, the librdkafka
//! context, and a metadata probe that turns "nobody is listening" into a quick, clear error.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::{Client, ClientContext};
use rdkafka::config::{ClientConfig, FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::{Metadata, MetadataTopic};
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};

use crate::Error;

/// How long a command waits for the first metadata answer before saying no broker answered.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// Request timeout of admin operations (create, delete, describe, alter).
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

pub const DEFAULT_BOOTSTRAP: &str = "localhost:9092";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people
    Table,
    /// JSON for scripts (one document, or one per line for records)
    Json,
}

/// Connection and output flags accepted by every client command.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Brokers to bootstrap from, host:port[,host:port...] [default: localhost:9092]
    #[arg(
        short = 'b',
        long,
        env = "VLTAVA_BOOTSTRAP",
        global = true,
        value_name = "HOST:PORT"
    )]
    pub bootstrap_server: Option<String>,
    /// Client properties file (key=value lines, as Kafka's tools take), applied before -X
    #[arg(long, global = true, value_name = "FILE")]
    pub command_config: Option<PathBuf>,
    /// Any librdkafka client property, repeatable (-X linger.ms=5)
    #[arg(short = 'X', global = true, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub property: Vec<(String, String)>,
    /// Output format
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Print librdkafka's warnings and errors to stderr
    #[arg(short = 'v', long, global = true)]
    pub verbose: bool,
}

/// Parses `key=value` (the value may contain `=`).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got '{s}'")),
    }
}

/// Parses a Java-style properties file: `key=value` or `key: value` lines, `#`/`!` comments.
/// Line continuations and escapes are not supported (client configs rarely use them).
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let cut = line
            .find(['=', ':'])
            .ok_or_else(|| format!("line {}: expected key=value, got '{line}'", i + 1))?;
        let (k, v) = (line[..cut].trim(), line[cut + 1..].trim());
        if k.is_empty() {
            return Err(format!("line {}: empty key", i + 1));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// A resolved client configuration plus what commands need to report errors.
pub struct Settings {
    pub bootstrap: String,
    pub output: Output,
    pub verbose: bool,
    props: BTreeMap<String, String>,
}

impl Settings {
    /// Resolves properties in rising precedence: `defaults` (the command's tuning), the
    /// `--command-config` file, `--bootstrap-server`/`VLTAVA_BOOTSTRAP`, then `-X`.
    pub fn new(args: &ClientArgs, defaults: &[(&str, &str)]) -> Result<Settings, Error> {
        let mut props: BTreeMap<String, String> = defaults
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(path) = &args.command_config {
            let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
                path: path.display().to_string(),
                source,
            })?;
            let file = parse_properties(&text)
                .map_err(|e| Error::usage(format!("{}: {e}", path.display())))?;
            props.extend(file);
        }
        if let Some(b) = &args.bootstrap_server {
            props.insert("bootstrap.servers".into(), b.clone());
        }
        props
            .entry("bootstrap.servers".into())
            .or_insert_with(|| DEFAULT_BOOTSTRAP.into());
        props.extend(args.property.iter().cloned());
        if props["bootstrap.servers"].trim().is_empty() {
            return Err(Error::usage(
                "the bootstrap server list is empty (give --bootstrap-server host:port)",
            ));
        }
        Ok(Settings {
            bootstrap: props["bootstrap.servers"].clone(),
            output: args.output,
            verbose: args.verbose,
            props,
        })
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.props.insert(key.to_string(), value.into());
    }

    /// Sets `key` unless the user set it (in the file or with -X).
    pub fn set_default(&mut self, key: &str, value: impl Into<String>) {
        self.props
            .entry(key.to_string())
            .or_insert_with(|| value.into());
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.props.get(key).map(String::as_str)
    }

    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in &self.props {
            c.set(k, v);
        }
        if !self.verbose {
            // Our context drops librdkafka's logs unless -v; below warning they cost time.
            c.set_log_level(RDKafkaLogLevel::Warning);
        }
        c
    }

    pub fn log_context(&self) -> LogContext {
        LogContext {
            verbose: self.verbose,
        }
    }

    /// Builds a client of type `T` (consumer, producer) with `context`.
    pub fn create<T, C>(&self, context: C) -> Result<T, Error>
    where
        T: FromClientConfigAndContext<C>,
        C: ClientContext,
    {
        self.client_config()
            .create_with_context(context)
            .map_err(|e| match e {
                KafkaError::ClientCreation(msg) => {
                    Error::usage(format!("invalid client configuration: {msg}"))
                }
                KafkaError::ClientConfig(_, msg, key, value) => {
                    Error::usage(format!("invalid client property {key}={value}: {msg}"))
                }
                other => Error::Kafka {
                    context: "cannot create client".into(),
                    source: other,
                },
            })
    }

    /// An admin client that never auto-creates topics as a side effect of metadata requests
    /// (rust-rdkafka's admin client is a producer underneath, and producers do by default).
    pub fn admin(&self) -> Result<AdminClient<LogContext>, Error> {
        let mut s = Settings {
            bootstrap: self.bootstrap.clone(),
            output: self.output,
            verbose: self.verbose,
            props: self.props.clone(),
        };
        s.set("allow.auto.create.topics", "false");
        s.create(self.log_context())
    }

    /// A consumer for metadata and offset look-ups; `group` only when offsets of a group
    /// are read or committed (it never joins the group).
    pub fn consumer(&self, group: Option<&str>) -> Result<BaseConsumer<LogContext>, Error> {
        let mut s = Settings {
            bootstrap: self.bootstrap.clone(),
            output: self.output,
            verbose: self.verbose,
            props: self.props.clone(),
        };
        s.set("enable.auto.commit", "false");
        s.set("allow.auto.create.topics", "false");
        if let Some(g) = group {
            s.set("group.id", g);
        }
        s.create(self.log_context())
    }
}

/// A librdkafka context that prints its warnings and errors only when asked to (`-v`):
/// commands report failures themselves, with context, instead.
#[derive(Clone)]
pub struct LogContext {
    pub verbose: bool,
}

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if self.verbose && (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            eprintln!("librdkafka {fac}: {log_message}");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if self.verbose {
            eprintln!("librdkafka error: {error}: {reason}");
        }
    }
}

/// A producer that only asks for metadata (as producers do, with topic auto-creation) never
/// delivers anything.
impl rdkafka::producer::ProducerContext for LogContext {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

impl ConsumerContext for LogContext {}

/// True for errors that mean no broker could be reached at all.
pub fn is_unreachable(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::RequestTimedOut
        )
    )
}

/// Fetches metadata (of one topic, or all), answering `NoBroker` after [`METADATA_TIMEOUT`].
pub fn metadata<C: ClientContext>(
    client: &Client<C>,
    settings: &Settings,
    topic: Option<&str>,
) -> Result<Metadata, Error> {
    client.fetch_metadata(topic, METADATA_TIMEOUT).map_err(|e| {
        if is_unreachable(&e) {
            Error::NoBroker {
                bootstrap: settings.bootstrap.clone(),
                timeout_ms: METADATA_TIMEOUT.as_millis() as u64,
            }
        } else {
            Error::Kafka {
                context: "cannot fetch metadata".into(),
                source: e,
            }
        }
    })
}

/// The metadata of one existing topic; `UnknownTopic` if the cluster does not have it.
///
/// A topic that was just created may briefly have no leader: that is retried for a few
/// seconds rather than reported.
pub fn topic_metadata<C: ClientContext>(
    client: &Client<C>,
    settings: &Settings,
    topic: &str,
) -> Result<TopicInfo, Error> {
    let deadline = std::time::Instant::now() + METADATA_TIMEOUT;
    loop {
        let md = metadata(client, settings, Some(topic))?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(|| Error::UnknownTopic {
                topic: topic.into(),
            })?;
        match topic_error(t) {
            None => return Ok(TopicInfo::from(t)),
            Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {
                return Err(Error::UnknownTopic {
                    topic: topic.into(),
                })
            }
            Some(code) if std::time::Instant::now() >= deadline => {
                return Err(Error::Refused {
                    resource: format!("topic '{topic}'"),
                    reason: code.to_string(),
                })
            }
            Some(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

pub fn topic_error(t: &MetadataTopic) -> Option<RDKafkaErrorCode> {
    t.error().map(RDKafkaErrorCode::from)
}

/// What commands need of a topic's metadata, detached from librdkafka's borrowed structs.
#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: Vec<PartitionInfo>,
}

#[derive(Debug, Clone)]
pub struct PartitionInfo {
    pub id: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub error: Option<String>,
}

impl From<&MetadataTopic> for TopicInfo {
    fn from(t: &MetadataTopic) -> Self {
        let mut partitions: Vec<PartitionInfo> = t
            .partitions()
            .iter()
            .map(|p| PartitionInfo {
                id: p.id(),
                leader: p.leader(),
                replicas: p.replicas().to_vec(),
                isr: p.isr().to_vec(),
                error: p.error().map(|e| RDKafkaErrorCode::from(e).to_string()),
            })
            .collect();
        partitions.sort_by_key(|p| p.id);
        TopicInfo {
            name: t.name().to_string(),
            partitions,
        }
    }
}

pub fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(ADMIN_TIMEOUT))
        .operation_timeout(Some(ADMIN_TIMEOUT))
}

/// Runs an admin future to completion (rust-rdkafka's admin API is async; the CLI is not).
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// True when `name` is an internal topic (`__consumer_offsets`, `__cluster_metadata`, ...).
pub fn is_internal(name: &str) -> bool {
    name.starts_with("__")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values() {
        assert_eq!(
            parse_key_value("a.b=c=d").unwrap(),
            ("a.b".to_string(), "c=d".to_string())
        );
        assert_eq!(
            parse_key_value("k=").unwrap(),
            ("k".to_string(), String::new())
        );
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=v").is_err());
    }

    #[test]
    fn properties_file() {
        let text =
            "# comment\n! also\n\nsecurity.protocol=SASL_SSL\n sasl.mechanism : PLAIN \nx=a=b\n";
        let p = parse_properties(text).unwrap();
        assert_eq!(
            p,
            vec![
                ("security.protocol".into(), "SASL_SSL".into()),
                ("sasl.mechanism".into(), "PLAIN".into()),
                ("x".into(), "a=b".into()),
            ]
        );
        assert!(parse_properties("just a line\n")
            .unwrap_err()
            .contains("line 1"));
    }

    fn args() -> ClientArgs {
        ClientArgs {
            bootstrap_server: None,
            command_config: None,
            property: vec![],
            output: Output::Table,
            verbose: false,
        }
    }

    #[test]
    fn precedence() {
        let s = Settings::new(&args(), &[("linger.ms", "5")]).unwrap();
        assert_eq!(s.bootstrap, DEFAULT_BOOTSTRAP);
        assert_eq!(s.get("linger.ms"), Some("5"));

        let mut a = args();
        a.bootstrap_server = Some("h:1".into());
        a.property = vec![("linger.ms".into(), "0".into())];
        let s = Settings::new(&a, &[("linger.ms", "5")]).unwrap();
        assert_eq!(s.bootstrap, "h:1");
        assert_eq!(s.get("linger.ms"), Some("0"));

        a.property.push(("bootstrap.servers".into(), "x:2".into()));
        let s = Settings::new(&a, &[]).unwrap();
        assert_eq!(s.bootstrap, "x:2", "-X wins over the flag");

        a.property.push(("bootstrap.servers".into(), " ".into()));
        let Err(e) = Settings::new(&a, &[]) else {
            panic!("an empty bootstrap list is a usage error");
        };
        assert_eq!(e.exit_code(), 2, "{e}");
    }
}

/// A flag set by SIGINT or SIGTERM, for loops that stop cleanly (flush, commit). A second
/// signal while the first is being handled ends the process at once with 130.
pub fn stop_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // Registration fails only for forbidden signals; these two are allowed.
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone());
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
    flag
}

/// Parses a duration: plain numbers are milliseconds (as Kafka's `--timeout-ms`), or give a
/// unit: `500ms`, `5s`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = s.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration '{s}': expected e.g. 5000, 500ms, 5s, 2m"))?;
    let ms = match unit {
        "" | "ms" => n,
        "s" => n.saturating_mul(1_000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        _ => {
            return Err(format!(
                "invalid duration '{s}': unit must be ms, s, m or h"
            ))
        }
    };
    Ok(Duration::from_millis(ms))
}

/// `--acks`: 0, 1, all (or -1).
pub fn parse_acks(s: &str) -> Result<String, String> {
    match s {
        "0" | "1" => Ok(s.to_string()),
        "all" | "-1" => Ok("all".to_string()),
        _ => Err(format!("invalid acks '{s}': expected 0, 1 or all")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1500"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn acks() {
        assert_eq!(parse_acks("-1").unwrap(), "all");
        assert_eq!(parse_acks("all").unwrap(), "all");
        assert_eq!(parse_acks("0").unwrap(), "0");
        assert!(parse_acks("2").is_err());
    }
}

/// Serves a producer's waiting delivery reports without blocking; returns how far its
/// in-flight count fell (the records settled, and the events that carried them).
///
/// Waiting is done by sleeping, never by `poll` with a timeout: rust-rdkafka's `poll` runs
/// until its deadline and asks librdkafka for whole milliseconds, so in the last millisecond
/// it asks for none and spins. `poll(1 ms)` on a full queue spun a whole core, which on a
/// small machine the broker under test needed; and its `flush` (which its
/// `commit_transaction` calls) polls 100 ms at a time, so it never returns sooner.
pub fn serve_reports<C: ProducerContext>(p: &BaseProducer<C>) -> u64 {
    let before = p.in_flight_count();
    // One event per call (one produce answer's reports); a call that settles nothing ends it.
    for _ in 0..64 {
        let seen = p.in_flight_count();
        p.poll(Duration::ZERO);
        if p.in_flight_count() >= seen {
            break;
        }
    }
    u64::try_from(before - p.in_flight_count()).unwrap_or(0)
}

/// Serves reports and naps until nothing is in flight, or `stop()`.
pub fn drain<C: ProducerContext>(p: &BaseProducer<C>, stop: &dyn Fn() -> bool) {
    let mut nap = Nap::default();
    while p.in_flight_count() > 0 && !stop() {
        nap.wait(p);
    }
}

/// A wait for a producer's queue to drain: serve the reports waiting, and sleep only when
/// there were none, from 50 µs up to 1 ms while nothing arrives. A report's latency is
/// then late by at most the current sleep, which grows only while no report comes.
pub struct Nap(Duration);

impl Default for Nap {
    fn default() -> Self {
        Self(Self::MIN)
    }
}

impl Nap {
    const MIN: Duration = Duration::from_micros(50);
    const MAX: Duration = Duration::from_millis(1);

    pub fn wait<C: ProducerContext>(&mut self, p: &BaseProducer<C>) {
        if let Some(d) = self.after(serve_reports(p)) {
            std::thread::sleep(d);
        }
    }

    /// How long to sleep after `served` records were settled.
    fn after(&mut self, served: u64) -> Option<Duration> {
        if served > 0 {
            self.0 = Self::MIN;
            return None;
        }
        let d = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        Some(d)
    }
}

#[cfg(test)]
mod nap_tests {
    use super::*;

    #[test]
    fn a_nap_grows_while_no_report_comes_and_ends_when_one_does() {
        let mut nap = Nap::default();
        let us = |d: Option<Duration>| d.map(|d| d.as_micros());
        assert_eq!(us(nap.after(0)), Some(50));
        assert_eq!(us(nap.after(0)), Some(100));
        assert_eq!(us(nap.after(0)), Some(200));
        assert_eq!(us(nap.after(0)), Some(400));
        assert_eq!(us(nap.after(0)), Some(800));
        assert_eq!(us(nap.after(0)), Some(1000));
        assert_eq!(us(nap.after(0)), Some(1000));
        assert_eq!(nap.after(3), None, "reports served: try again at once");
        assert_eq!(us(nap.after(0)), Some(50));
    }
}
