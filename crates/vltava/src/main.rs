//! `vltava`: one binary for the broker and its tools.

mod broker_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "vltava",
    version,
    about = "A Kafka-compatible streaming platform",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker (defaults: 127.0.0.1:9092, data in ./vltava-data)
    Broker(broker_cmd::BrokerArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Broker(args) => broker_cmd::run(args),
    }
}
