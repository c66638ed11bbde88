//! `vltava cluster describe`: cluster id, controller and brokers.

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::client::{self, ClientArgs, Output, Settings, METADATA_TIMEOUT};
use crate::ffi;
use crate::output::{print, print_json};
use crate::table::Table;
use crate::Error;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  vltava cluster describe
  vltava cluster describe -b broker1:9092 -o json")]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the cluster id, the controller and the brokers
    #[command(after_help = "Examples:
  vltava cluster describe
  vltava cluster describe -o json | jq .controller_id")]
    Describe,
}

#[derive(Debug, Serialize)]
struct BrokerJson {
    id: i32,
    host: String,
    port: i32,
}

#[derive(Debug, Serialize)]
struct ClusterJson {
    cluster_id: Option<String>,
    controller_id: Option<i32>,
    brokers: Vec<BrokerJson>,
}

pub fn run(args: ClusterArgs) -> Result<(), Error> {
    let settings = Settings::new(&args.client, &[])?;
    let ClusterCommand::Describe = args.command;
    let admin = settings.admin()?;
    let md = client::metadata(admin.inner(), &settings, None)?;
    let mut brokers: Vec<BrokerJson> = md
        .brokers()
        .iter()
        .map(|b| BrokerJson {
            id: b.id(),
            host: b.host().to_string(),
            port: b.port(),
        })
        .collect();
    brokers.sort_by_key(|b| b.id);
    let cluster = ClusterJson {
        cluster_id: admin.inner().fetch_cluster_id(METADATA_TIMEOUT),
        controller_id: ffi::controller_id(admin.inner(), METADATA_TIMEOUT),
        brokers,
    };
    match settings.output {
        Output::Json => print_json(&cluster),
        Output::Table => {
            let unknown = || "(unknown)".to_string();
            let mut text = format!(
                "Cluster ID: {}\nController: {}\n\n",
                cluster.cluster_id.clone().unwrap_or_else(unknown),
                cluster
                    .controller_id
                    .map_or_else(unknown, |c| c.to_string())
            );
            let mut t = Table::new(&["BROKER", "HOST", "PORT", "CONTROLLER"]);
            for b in &cluster.brokers {
                let is_controller = if cluster.controller_id == Some(b.id) {
                    "yes"
                } else {
                    ""
                };
                t.row([
                    b.id.to_string(),
                    b.host.clone(),
                    b.port.to_string(),
                    is_controller.to_string(),
                ]);
            }
            text.push_str(&t.render());
            print(&text)
        }
    }
}
