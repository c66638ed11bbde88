//! `vltava cleaner-status`: where the log cleaner stands for each compacted partition, read
//! from a broker's data dir. Kafka has no API that reports this per partition, so a client
//! cannot ask for it; the broker's `cleaner-offset-checkpoint` (rewritten after every
//! cleaning pass) and the segment files say it truthfully.

use std::path::PathBuf;

use anyhow::Context;
use vltava_storage::cleaner::dir_status;
use vltava_storage::{checkpoint, StdFs};

#[derive(clap::Args)]
#[command(after_help = "Examples:
  vltava cleaner-status --data-dir ./vltava-data
  vltava cleaner-status --data-dir ./vltava-data --topic __consumer_offsets")]
pub struct CleanerStatusArgs {
    /// The broker's data dir (log.dirs)
    #[arg(long, default_value = "./vltava-data")]
    data_dir: PathBuf,
    /// Only this topic
    #[arg(long)]
    topic: Option<String>,
}

pub fn run(args: CleanerStatusArgs) -> anyhow::Result<()> {
    let path = args.data_dir.join("cleaner-offset-checkpoint");
    let cp = checkpoint::read(&path).with_context(|| format!("reading {}", path.display()))?;
    println!(
        "{:<40} {:>9} {:>14} {:>12} {:>12} {:>8} {:>11}",
        "TOPIC",
        "PARTITION",
        "CLEAN-OFFSET",
        "CLEAN-BYTES",
        "DIRTY-BYTES",
        "SEGMENTS",
        "DIRTY-RATIO"
    );
    for ((topic, partition), offset) in cp {
        if args.topic.as_ref().is_some_and(|t| *t != topic) {
            continue;
        }
        let dir = args
            .data_dir
            .join(vltava_storage::partition_dir_name(&topic, partition));
        let st = dir_status(&StdFs, &dir, offset)
            .with_context(|| format!("reading {}", dir.display()))?;
        println!(
            "{:<40} {:>9} {:>14} {:>12} {:>12} {:>8} {:>11.3}",
            topic,
            partition,
            st.clean_offset,
            st.clean_bytes,
            st.dirty_bytes,
            st.segments,
            st.dirty_ratio
        );
    }
    Ok(())
}
