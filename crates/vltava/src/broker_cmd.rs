//! `vltava broker`: settings from a properties file, `VLTAVA_*` variables and flags, in
//! rising precedence, all in Kafka's key names.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use vltava_broker::BrokerConfig;

#[derive(Args, Debug)]
#[command(after_help = "EXAMPLES:
  vltava broker
  vltava broker --listeners PLAINTEXT://0.0.0.0:9092 --data-dir /var/lib/vltava
  vltava broker --config server.properties --override num.partitions=6
  VLTAVA_AUTO_CREATE_TOPICS_ENABLE=false vltava broker

Any Kafka broker key can be set with --override key=value, in a properties file,
or as an environment variable VLTAVA_<KEY> with dots as underscores.

Started without any listeners setting, the broker also serves a schema registry
(Confluent's REST API, see `vltava registry --help`) on http://127.0.0.1:8081;
--override schema.registry.listeners=http://HOST:PORT sets where (empty: off).
It also serves its metrics in Prometheus' format on http://127.0.0.1:9404/metrics;
--override metrics.listeners=http://HOST:PORT sets where (empty: off).")]
pub struct BrokerArgs {
    /// Kafka-style properties file (key=value lines)
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listener to bind, e.g. PLAINTEXT://127.0.0.1:9092 (port 0 picks a free port)
    #[arg(long)]
    listeners: Option<String>,
    /// Address given to clients, e.g. PLAINTEXT://broker.example:9092
    #[arg(long)]
    advertised_listeners: Option<String>,
    /// Where partition logs and metadata live (Kafka's log.dirs)
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// This broker's node.id
    #[arg(long)]
    node_id: Option<i32>,
    /// Set any broker config: --override log.retention.hours=24 (repeatable)
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Log lines as text (coloured only on a terminal) or one JSON object per line for log
    /// shippers; RUST_LOG sets the level (default info)
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// Logs go to stderr; colour codes only when it is a terminal, never into files or pipes.
pub(crate) fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // openraft warns on every failed heartbeat to a peer that is down (20 a second); the
    // quorum's own messages say what matters. RUST_LOG=openraft=warn brings them back.
    if !std::env::var("RUST_LOG").is_ok_and(|v| v.contains("openraft")) {
        if let Ok(d) = "openraft=error".parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn parse_properties(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
        .filter_map(|l| {
            l.split_once(['=', ':'])
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn collect(args: &BrokerArgs) -> anyhow::Result<BTreeMap<String, String>> {
    let mut props = BTreeMap::new();
    if let Some(path) = &args.config {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        props.extend(parse_properties(&text));
    }
    for (k, v) in std::env::vars() {
        if let Some(key) = k.strip_prefix("VLTAVA_") {
            if key == "BOOTSTRAP" || key == "BIN" {
                continue;
            }
            props.insert(key.to_ascii_lowercase().replace('_', "."), v);
        }
    }
    for o in &args.overrides {
        let (k, v) = o
            .split_once('=')
            .with_context(|| format!("--override {o:?}: expected key=value"))?;
        props.insert(k.trim().to_string(), v.trim().to_string());
    }
    if let Some(l) = &args.listeners {
        props.insert("listeners".into(), l.clone());
    }
    if let Some(a) = &args.advertised_listeners {
        props.insert("advertised.listeners".into(), a.clone());
    }
    if let Some(d) = &args.data_dir {
        props.insert("log.dirs".into(), d.display().to_string());
    }
    if let Some(n) = args.node_id {
        props.insert("node.id".into(), n.to_string());
    }
    Ok(props)
}

/// Confluent's key for where the registry listens; not a broker config, so it is taken out
/// before the broker sees the rest.
const REGISTRY_LISTENERS: &str = "schema.registry.listeners";
/// Where the zero-config start serves the registry.
const DEFAULT_REGISTRY_LISTENER: &str = "http://127.0.0.1:8081";

/// Where the broker serves its metrics (`GET /metrics`, Prometheus' text format); not a
/// Kafka key, taken out as the registry's is.
const METRICS_LISTENERS: &str = "metrics.listeners";
const DEFAULT_METRICS_LISTENER: &str = "http://127.0.0.1:9404";

/// The registry's listeners, and whether failing to bind them stops the broker (an explicit
/// setting) or is only reported (the zero-config default, which another process may hold).
fn registry_listeners(props: &mut BTreeMap<String, String>) -> Option<(Vec<String>, bool)> {
    http_listeners(props, REGISTRY_LISTENERS, DEFAULT_REGISTRY_LISTENER)
}

/// An HTTP service's listeners under `key`, as `registry_listeners` says.
fn http_listeners(
    props: &mut BTreeMap<String, String>,
    key: &str,
    default: &str,
) -> Option<(Vec<String>, bool)> {
    match props.remove(key) {
        Some(v) => {
            let listeners: Vec<String> = v
                .split(',')
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect();
            (!listeners.is_empty()).then_some((listeners, true))
        }
        None if !props.contains_key("listeners") => Some((vec![default.to_string()], false)),
        None => None,
    }
}

/// The registry reaches the broker as any client would, through the first listener, which
/// must then speak PLAINTEXT.
fn first_listener_is_plaintext(props: &BTreeMap<String, String>) -> bool {
    let listeners = props
        .get("listeners")
        .map(String::as_str)
        .unwrap_or("PLAINTEXT://");
    let name = listeners
        .split(',')
        .next()
        .and_then(|l| l.split_once("://"))
        .map(|(n, _)| n.trim().to_ascii_uppercase())
        .unwrap_or_default();
    let mapped = props.get("listener.security.protocol.map").and_then(|map| {
        map.split(',').find_map(|pair| {
            let (n, p) = pair.split_once(':')?;
            (n.trim().eq_ignore_ascii_case(&name)).then(|| p.trim().to_ascii_uppercase())
        })
    });
    mapped.unwrap_or(name) == "PLAINTEXT"
}

pub fn run(args: BrokerArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let mut props = collect(&args)?;
    let registry = registry_listeners(&mut props);
    let metrics = http_listeners(&mut props, METRICS_LISTENERS, DEFAULT_METRICS_LISTENER);
    if let Some((_, true)) = &registry {
        anyhow::ensure!(
            first_listener_is_plaintext(&props),
            "{REGISTRY_LISTENERS} needs the first of the broker's listeners to be PLAINTEXT"
        );
    }
    let registry = registry.filter(|_| first_listener_is_plaintext(&props));
    let config = BrokerConfig::from_props(props).context("invalid broker configuration")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let handle = vltava_broker::start(config)
            .await
            .context("starting broker")?;
        let registry = match registry {
            None => None,
            Some((listeners, required)) => {
                let config = vltava_registry::RegistryConfig::new(
                    vltava_registry::StoreConfig::new(handle.local_addr.to_string()),
                    listeners,
                );
                match vltava_registry::start(config).await {
                    Ok(r) => Some(r),
                    Err(e @ vltava_registry::StartError::Bind { .. }) if !required => {
                        tracing::warn!(error = %e, "schema registry not started");
                        None
                    }
                    Err(e) => {
                        handle.shutdown().await;
                        return Err(anyhow::Error::new(e).context("starting the schema registry"));
                    }
                }
            }
        };
        let metrics = match metrics {
            None => None,
            Some((listeners, required)) => {
                match crate::metrics_http::start(&listeners, Arc::clone(&handle.broker)).await {
                    Ok(m) => Some(m),
                    Err(e) if !required => {
                        tracing::warn!(error = %format!("{e:#}"), "metrics endpoint not started");
                        None
                    }
                    Err(e) => {
                        if let Some(r) = registry {
                            r.shutdown().await;
                        }
                        handle.shutdown().await;
                        return Err(e);
                    }
                }
            }
        };
        // Installed before "listening" is announced: whoever reads that line may stop the
        // broker at once, and must get a clean shutdown rather than the default action.
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        // Best effort: a reader that closed stdout after the line it wanted (`| head -1`)
        // must not stop a running broker with EPIPE.
        let announced = (|| -> std::io::Result<()> {
            let mut out = std::io::stdout().lock();
            writeln!(out, "vltava: listening on {}", handle.local_addr)?;
            if let Some(r) = &registry {
                for addr in r.local_addrs() {
                    writeln!(out, "vltava: schema registry on http://{addr}")?;
                }
            }
            if let Some(m) = &metrics {
                for addr in &m.addrs {
                    writeln!(out, "vltava: metrics on http://{addr}/metrics")?;
                }
            }
            out.flush()
        })();
        if let Err(e) = announced {
            tracing::warn!(error = %e, "could not write the listening addresses to stdout");
        }
        wait_for_signal(term).await;
        tracing::info!("shutting down");
        if let Some(m) = metrics {
            m.shutdown().await;
        }
        if let Some(r) = registry {
            r.shutdown().await;
        }
        handle.shutdown().await;
        anyhow::Ok(())
    })
}

pub(crate) async fn wait_for_signal(mut term: tokio::signal::unix::Signal) {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn registry_is_on_only_in_the_zero_config_start_or_when_asked() {
        let mut p = props(&[]);
        assert_eq!(
            registry_listeners(&mut p),
            Some((vec![DEFAULT_REGISTRY_LISTENER.to_string()], false))
        );
        let mut p = props(&[("listeners", "PLAINTEXT://127.0.0.1:0")]);
        assert_eq!(registry_listeners(&mut p), None);
        let mut p = props(&[(REGISTRY_LISTENERS, "http://0.0.0.0:8082")]);
        assert_eq!(
            registry_listeners(&mut p),
            Some((vec!["http://0.0.0.0:8082".to_string()], true))
        );
        assert!(!p.contains_key(REGISTRY_LISTENERS));
        let mut p = props(&[(REGISTRY_LISTENERS, "")]);
        assert_eq!(registry_listeners(&mut p), None);
    }

    #[test]
    fn registry_needs_a_plaintext_first_listener() {
        assert!(first_listener_is_plaintext(&props(&[])));
        assert!(first_listener_is_plaintext(&props(&[(
            "listeners",
            "PLAINTEXT://:9092,SSL://:9093"
        )])));
        assert!(!first_listener_is_plaintext(&props(&[(
            "listeners",
            "SSL://:9093"
        )])));
        assert!(first_listener_is_plaintext(&props(&[
            ("listeners", "INTERNAL://:9092"),
            ("listener.security.protocol.map", "INTERNAL:PLAINTEXT"),
        ])));
    }

    #[test]
    fn properties_parse_like_java() {
        let p = parse_properties("# c\nnum.partitions=3\n log.dirs : /x \n\n!bang\nbad line");
        assert_eq!(p.get("num.partitions").map(String::as_str), Some("3"));
        assert_eq!(p.get("log.dirs").map(String::as_str), Some("/x"));
        assert_eq!(p.len(), 2);
    }
}
