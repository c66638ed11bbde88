//! `vltava storage`: Kafka's `kafka-storage.sh` for those who want a format step. Nodes
//! started together with the same `controller.quorum.voters` agree on a cluster id without
//! one; `format` fixes the id in advance (and `random-uuid` makes one).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct StorageArgs {
    #[command(subcommand)]
    command: StorageCommand,
}

#[derive(Debug, Subcommand)]
enum StorageCommand {
    /// Print a new random cluster id
    #[command(after_help = "Examples:
  vltava storage random-uuid")]
    RandomUuid,
    /// Write meta.properties (cluster.id, node.id) into a data dir before its first start
    #[command(after_help = "Examples:
  ID=$(vltava storage random-uuid)
  vltava storage format -t $ID --node-id 1 --data-dir /var/lib/vltava

A formatted broker refuses to start with another cluster.id, and nodes of one cluster
must be formatted with the same id.")]
    Format(FormatArgs),
}

#[derive(Debug, Args)]
struct FormatArgs {
    /// The cluster id (22 characters, as `random-uuid` prints)
    #[arg(long, short = 't')]
    cluster_id: String,
    /// This node's node.id
    #[arg(long, default_value_t = 1)]
    node_id: i32,
    /// The data dir (Kafka's log.dirs)
    #[arg(long, value_name = "DIR", default_value = "vltava-data")]
    data_dir: PathBuf,
    /// Succeed without change when the dir is already formatted with this cluster id
    #[arg(long)]
    ignore_formatted: bool,
}

pub fn run(args: StorageArgs) -> anyhow::Result<()> {
    match args.command {
        StorageCommand::RandomUuid => {
            println!("{}", vltava_broker::new_cluster_id());
            Ok(())
        }
        StorageCommand::Format(a) => format(a),
    }
}

fn format(a: FormatArgs) -> anyhow::Result<()> {
    if !vltava_broker::is_cluster_id(&a.cluster_id) {
        bail!(
            "{:?} is not a cluster id: 22 characters of URL-safe base64 (try `vltava storage random-uuid`)",
            a.cluster_id
        );
    }
    if a.node_id < 0 {
        bail!("--node-id must be 0 or more");
    }
    let path = a.data_dir.join("meta.properties");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let existing = text
            .lines()
            .find_map(|l| l.strip_prefix("cluster.id="))
            .map(str::trim);
        match existing {
            Some(id) if id == a.cluster_id && a.ignore_formatted => {
                eprintln!("{} is already formatted for cluster {id}", a.data_dir.display());
                return Ok(());
            }
            Some(id) => bail!(
                "{} is already formatted (cluster {id}); use --ignore-formatted to accept a dir formatted with the same id",
                a.data_dir.display()
            ),
            None => bail!("{} exists but names no cluster.id", path.display()),
        }
    }
    std::fs::create_dir_all(&a.data_dir)
        .with_context(|| format!("creating {}", a.data_dir.display()))?;
    let text = format!(
        "version=1\ncluster.id={}\nnode.id={}\n",
        a.cluster_id, a.node_id
    );
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "Formatted {} for cluster {} as node {}",
        a.data_dir.display(),
        a.cluster_id,
        a.node_id
    );
    Ok(())
}
