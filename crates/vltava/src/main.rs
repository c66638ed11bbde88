//! `vltava`: one binary for the broker and its tools.

mod broker_cmd;
mod cleaner_status;
mod dev_cmd;
mod metrics_http;
mod registry_cmd;
mod schema_cmd;
mod storage_cmd;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "vltava",
    version,
    about = "A Kafka-compatible streaming platform",
    propagate_version = true,
    after_help = "Client commands work against any Kafka-compatible cluster; they connect to
--bootstrap-server, else $VLTAVA_BOOTSTRAP, else localhost:9092.

Examples:
  vltava broker
  vltava dev cluster --nodes 3
  vltava topic create orders --partitions 6
  echo 'k1:hello' | vltava produce orders --key-separator :
  vltava consume orders --from-beginning --format '%k %s (partition %p, offset %o)'
  vltava registry --listeners http://127.0.0.1:8081
  vltava perf produce --topic bench --num-records 1000000 --record-size 1024"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker (defaults: 127.0.0.1:9092, data in ./vltava-data)
    Broker(broker_cmd::BrokerArgs),
    /// Show the log cleaner's position and dirty ratio per compacted partition, read from a
    /// broker's data dir
    CleanerStatus(cleaner_status::CleanerStatusArgs),
    /// Run a schema registry (Confluent's REST API) storing schemas in a Kafka topic
    Registry(registry_cmd::RegistryArgs),
    /// Register, list, get, check and delete schemas in a schema registry
    Schema(schema_cmd::SchemaArgs),
    /// Local playgrounds: `vltava dev cluster` runs a 3-node cluster on this machine
    Dev(dev_cmd::DevArgs),
    /// Format a data dir with a cluster id before its first start (kafka-storage.sh)
    Storage(storage_cmd::StorageArgs),
    #[command(flatten)]
    Client(vltava_cli::Command),
    /// Print a shell completion script
    #[command(after_help = "Examples:
  vltava completions bash > /etc/bash_completion.d/vltava
  vltava completions zsh > \"${fpath[1]}/_vltava\"
  vltava completions fish > ~/.config/fish/completions/vltava.fish")]
    Completions {
        /// Shell to generate for
        shell: clap_complete::Shell,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Broker(args) => broker_cmd::run(args),
        Command::CleanerStatus(args) => cleaner_status::run(args),
        Command::Registry(args) => registry_cmd::run(args),
        Command::Schema(args) => std::process::exit(schema_cmd::run(args)),
        Command::Dev(args) => dev_cmd::run(args),
        Command::Storage(args) => storage_cmd::run(args),
        Command::Client(command) => std::process::exit(vltava_cli::run(command)),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "vltava", &mut std::io::stdout());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
