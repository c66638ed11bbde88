//! `vltava cluster describe`: cluster id, controller, brokers, and the metadata quorum.

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
    /// Show the cluster id, the controller, the brokers and the metadata quorum
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
struct VoterJson {
    id: i32,
    /// Entries of the metadata log this voter holds (as the quorum leader knows it).
    log_end_offset: i64,
    /// How many committed entries it lacks.
    lag: i64,
    /// Whether it is a live broker in the metadata (fenced or stopped brokers are not).
    live_broker: bool,
}

#[derive(Debug, Serialize)]
struct QuorumJson {
    leader_id: i32,
    leader_epoch: i32,
    high_watermark: i64,
    voters: Vec<VoterJson>,
}

#[derive(Debug, Serialize)]
struct ClusterJson {
    cluster_id: Option<String>,
    controller_id: Option<i32>,
    brokers: Vec<BrokerJson>,
    /// `None` when the cluster does not answer DescribeQuorum (a ZooKeeper-mode Kafka).
    quorum: Option<QuorumJson>,
}

/// The metadata quorum as DescribeQuorum reports it.
fn describe_quorum(settings: &Settings, live: &[i32]) -> Option<QuorumJson> {
    use vltava_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    use vltava_protocol::messages::{DescribeQuorumRequest, DescribeQuorumResponse, TopicName};
    let mut conn = crate::raw::bootstrap(settings).ok()?;
    let req = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(TopicName("__cluster_metadata".into()))
        .with_partitions(vec![PartitionData::default()])]);
    let resp: DescribeQuorumResponse = conn
        .call(vltava_protocol::ApiKey::DescribeQuorum, 1, &req)
        .ok()?;
    let p = resp.topics.first()?.partitions.first()?;
    if resp.error_code != 0 || p.error_code != 0 {
        return None;
    }
    let mut voters: Vec<VoterJson> = p
        .current_voters
        .iter()
        .map(|v| VoterJson {
            id: v.replica_id.0,
            log_end_offset: v.log_end_offset,
            lag: (p.high_watermark - v.log_end_offset).max(0),
            live_broker: live.contains(&v.replica_id.0),
        })
        .collect();
    voters.sort_by_key(|v| v.id);
    Some(QuorumJson {
        leader_id: p.leader_id.0,
        leader_epoch: p.leader_epoch,
        high_watermark: p.high_watermark,
        voters,
    })
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
    let live: Vec<i32> = brokers.iter().map(|b| b.id).collect();
    let cluster = ClusterJson {
        cluster_id: admin.inner().fetch_cluster_id(METADATA_TIMEOUT),
        controller_id: ffi::controller_id(admin.inner(), METADATA_TIMEOUT),
        brokers,
        quorum: describe_quorum(&settings, &live),
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
            if let Some(q) = &cluster.quorum {
                text.push_str(&format!(
                    "\nMetadata quorum: leader {}, epoch {}, high watermark {}\n\n",
                    q.leader_id, q.leader_epoch, q.high_watermark
                ));
                let mut t = Table::new(&["VOTER", "ROLE", "LOG END", "LAG", "BROKER"]);
                for v in &q.voters {
                    t.row([
                        v.id.to_string(),
                        if v.id == q.leader_id {
                            "leader"
                        } else {
                            "follower"
                        }
                        .to_string(),
                        v.log_end_offset.to_string(),
                        v.lag.to_string(),
                        if v.live_broker {
                            "live"
                        } else {
                            "fenced or down"
                        }
                        .to_string(),
                    ]);
                }
                text.push_str(&t.render());
            }
            print(&text)
        }
    }
}
