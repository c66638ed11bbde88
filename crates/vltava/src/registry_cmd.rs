//! `vltava registry`: the schema registry against any Kafka-compatible cluster.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::broker_cmd::{init_logging, wait_for_signal, LogFormat};

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  vltava registry
  vltava registry --bootstrap-server kafka1:9092 --listeners http://0.0.0.0:8081
  vltava registry -X security.protocol=SASL_PLAINTEXT -X sasl.mechanism=PLAIN \\
      -X sasl.username=registry -X sasl.password=secret

Serves Confluent Schema Registry's REST API (v1), so Confluent's serializers and
SchemaRegistryClient work unchanged:
  curl -X POST -H 'Content-Type: application/vnd.schemaregistry.v1+json' \\
      --data '{\"schema\": \"{\\\"type\\\": \\\"string\\\"}\"}' \\
      http://127.0.0.1:8081/subjects/orders-value/versions
  curl http://127.0.0.1:8081/schemas/ids/1

State lives in the compacted topic --topic (created on first start with one partition);
a restarted registry reads it back and serves the same ids and versions. Several
instances on one cluster elect a leader through the consumer group --group-id; the
others serve reads and forward writes to it.")]
pub struct RegistryArgs {
    /// Kafka cluster to store schemas in
    #[arg(
        long,
        short = 'b',
        env = "VLTAVA_BOOTSTRAP",
        default_value = "localhost:9092",
        value_name = "HOST:PORT"
    )]
    bootstrap_server: String,
    /// Where to serve HTTP, comma-separated http://host:port (port 0 picks a free port)
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    listeners: String,
    /// URL other registry instances forward writes to (default: the first listener's
    /// bound address)
    #[arg(long, value_name = "URL")]
    advertised_url: Option<String>,
    /// Consumer group the instances elect their leader in (Confluent's
    /// schema.registry.group.id)
    #[arg(long, default_value = "schema-registry")]
    group_id: String,
    /// Topic holding schemas, configs and modes (Confluent's kafkastore.topic)
    #[arg(long, default_value = "_schemas")]
    topic: String,
    /// Any librdkafka property for the registry's clients: -X key=value (repeatable)
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    properties: Vec<String>,
    /// How long a write may wait for the cluster, in milliseconds
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Log lines as text or one JSON object per line; RUST_LOG sets the level (default info)
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

pub fn run(args: RegistryArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let mut store = vltava_registry::StoreConfig::new(&args.bootstrap_server);
    store.topic = args.topic.clone();
    store.timeout = Duration::from_millis(args.timeout_ms);
    for p in &args.properties {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("-X {p:?}: expected key=value"))?;
        store
            .client_properties
            .push((k.trim().to_string(), v.trim().to_string()));
    }
    let listeners = args
        .listeners
        .split(',')
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let mut config = vltava_registry::RegistryConfig::new(store, listeners);
    config.advertised_url = args.advertised_url.clone();
    config.group_id = args.group_id.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let handle = vltava_registry::start(config)
            .await
            .context("starting the schema registry")?;
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        {
            let mut out = std::io::stdout().lock();
            for addr in handle.local_addrs() {
                writeln!(out, "vltava registry: listening on http://{addr}")?;
            }
            out.flush()?;
        }
        wait_for_signal(term).await;
        tracing::info!("shutting down");
        handle.shutdown().await;
        anyhow::Ok(())
    })
}
