//! `vltava broker`: settings from a properties file, `VLTAVA_*` variables and flags, in
//! rising precedence, all in Kafka's key names.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

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
or as an environment variable VLTAVA_<KEY> with dots as underscores.")]
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
enum LogFormat {
    Text,
    Json,
}

/// Logs go to stderr; colour codes only when it is a terminal, never into files or pipes.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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

pub fn run(args: BrokerArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let config =
        BrokerConfig::from_props(collect(&args)?).context("invalid broker configuration")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let handle = vltava_broker::start(config)
            .await
            .context("starting broker")?;
        // Installed before "listening" is announced: whoever reads that line may stop the
        // broker at once, and must get a clean shutdown rather than the default action.
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "vltava: listening on {}", handle.local_addr)?;
            out.flush()?;
        }
        wait_for_signal(term).await;
        tracing::info!("shutting down");
        handle.shutdown().await;
        anyhow::Ok(())
    })
}

async fn wait_for_signal(mut term: tokio::signal::unix::Signal) {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse_like_java() {
        let p = parse_properties("# c\nnum.partitions=3\n log.dirs : /x \n\n!bang\nbad line");
        assert_eq!(p.get("num.partitions").map(String::as_str), Some("3"));
        assert_eq!(p.get("log.dirs").map(String::as_str), Some("/x"));
        assert_eq!(p.len(), 2);
    }
}
