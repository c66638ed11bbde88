//! `vltava cluster describe`: cluster id, controller, brokers, and the metadata quorum.
//! `vltava cluster elect-leaders`: preferred or unclean leader elections (ElectLeaders).

use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use serde::Serialize;
use vltava_protocol::ErrorCode;

use crate::client::{self, ClientArgs, Output, Settings, METADATA_TIMEOUT};
use crate::ffi;
use crate::output::{print, print_json};
use crate::table::Table;
use crate::Error;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  vltava cluster describe
  vltava cluster describe -b broker1:9092 -o json
  vltava cluster elect-leaders --all-topic-partitions")]
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
    /// Elect partition leaders: hand leadership back to preferred replicas, or give
    /// leaderless partitions any live replica
    #[command(after_help = "Examples:
  vltava cluster elect-leaders --all-topic-partitions
  vltava cluster elect-leaders --topic orders --partition 3
  vltava cluster elect-leaders --election-type unclean --topic orders -o json")]
    ElectLeaders(ElectLeadersArgs),
    /// Make a running controller a voter of the metadata quorum (KIP-853's AddRaftVoter,
    /// as kafka-metadata-quorum add-controller)
    #[command(after_help = "Examples:
  vltava cluster add-controller --controller-id 4 --controller-endpoint 10.0.0.4:9093")]
    AddController(AddControllerArgs),
    /// Remove a voter from the metadata quorum (RemoveRaftVoter, as kafka-metadata-quorum
    /// remove-controller); stop it afterwards
    #[command(after_help = "Examples:
  vltava cluster remove-controller --controller-id 1")]
    RemoveController(RemoveControllerArgs),
}

#[derive(Debug, Args)]
pub struct AddControllerArgs {
    /// The new voter's node.id
    #[arg(long)]
    pub controller_id: i32,
    /// Its controller listener, host:port
    #[arg(long, value_name = "HOST:PORT")]
    pub controller_endpoint: String,
    /// The controller listener's name
    #[arg(long, default_value = "CONTROLLER")]
    pub listener_name: String,
}

#[derive(Debug, Args)]
pub struct RemoveControllerArgs {
    /// The voter's node.id
    #[arg(long)]
    pub controller_id: i32,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["topic", "all_topic_partitions"])))]
pub struct ElectLeadersArgs {
    /// Which replica may lead
    #[arg(long, value_enum, default_value = "preferred")]
    pub election_type: ElectionTypeArg,
    /// Only this topic's partitions
    #[arg(long)]
    pub topic: Option<String>,
    /// Only this partition of --topic
    #[arg(long, requires = "topic")]
    pub partition: Option<i32>,
    /// Every partition of every topic
    #[arg(long)]
    pub all_topic_partitions: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ElectionTypeArg {
    /// The first assigned replica, if it is live and in sync
    Preferred,
    /// For partitions without a leader: any live replica, even out of sync (records
    /// acknowledged by the old ISR may be lost)
    Unclean,
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
    match args.command {
        ClusterCommand::Describe => describe(&settings),
        ClusterCommand::ElectLeaders(a) => elect_leaders(&settings, &a),
        ClusterCommand::AddController(a) => add_controller(&settings, &a),
        ClusterCommand::RemoveController(a) => remove_controller(&settings, &a),
    }
}

#[derive(Debug, Serialize)]
struct ElectionJson {
    topic: String,
    partition: i32,
    /// `elected`, `not_needed` or `failed`.
    result: &'static str,
    /// Kafka's error name when it failed.
    error: Option<String>,
    message: Option<String>,
}

fn elect_leaders(settings: &Settings, args: &ElectLeadersArgs) -> Result<(), Error> {
    use vltava_protocol::messages::elect_leaders_request::TopicPartitions;
    use vltava_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
    let mut conn = crate::raw::bootstrap(settings)?;
    let targets = match &args.topic {
        None => None,
        Some(topic) => {
            let partitions = match args.partition {
                Some(p) => vec![p],
                None => crate::raw::topic_metadata(&mut conn, topic)?
                    .partitions
                    .iter()
                    .map(|p| p.partition_index)
                    .collect(),
            };
            Some(vec![TopicPartitions::default()
                .with_topic(TopicName(topic.clone().into()))
                .with_partitions(partitions)])
        }
    };
    let election_type = match args.election_type {
        ElectionTypeArg::Preferred => 0,
        ElectionTypeArg::Unclean => 1,
    };
    let req = ElectLeadersRequest::default()
        .with_election_type(election_type)
        .with_topic_partitions(targets)
        .with_timeout_ms(METADATA_TIMEOUT.as_millis() as i32);
    let resp: ElectLeadersResponse = conn.call(vltava_protocol::ApiKey::ElectLeaders, 2, &req)?;
    if resp.error_code != 0 && resp.replica_election_results.is_empty() {
        return Err(kafka_error("leader election".into(), resp.error_code));
    }
    let mut rows: Vec<ElectionJson> = resp
        .replica_election_results
        .iter()
        .flat_map(|t| {
            t.partition_result.iter().map(|p| {
                let code = ErrorCode::try_from_code(p.error_code);
                let (result, error) = match code {
                    None => ("elected", None),
                    Some(ErrorCode::ElectionNotNeeded) => ("not_needed", None),
                    _ => ("failed", Some(error_name(p.error_code))),
                };
                ElectionJson {
                    topic: t.topic.0.to_string(),
                    partition: p.partition_id,
                    result,
                    error,
                    message: p.error_message.as_ref().map(|m| m.to_string()),
                }
            })
        })
        .collect();
    rows.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let failed = rows.iter().filter(|r| r.result == "failed").count();
    match settings.output {
        Output::Json => print_json(&rows)?,
        Output::Table if rows.is_empty() => {
            print("Every partition is already led by the replica this election would choose.\n")?
        }
        Output::Table => {
            let mut t = Table::new(&["TOPIC", "PARTITION", "RESULT", "ERROR"]);
            for r in &rows {
                t.row([
                    r.topic.clone(),
                    r.partition.to_string(),
                    r.result.replace('_', " "),
                    crate::table::error_cell(&r.error, &r.message),
                ]);
            }
            print(&t.render())?
        }
    }
    if failed > 0 {
        return Err(Error::Refused {
            resource: "leader election".into(),
            reason: format!("{failed} of {} partitions failed", rows.len()),
        });
    }
    Ok(())
}

/// How long the broker may take: a new voter first copies the metadata log.
const VOTER_CHANGE_TIMEOUT_MS: i32 = 60_000;

#[derive(Debug, Serialize)]
struct VoterChangeJson {
    controller_id: i32,
    /// `added` or `removed`.
    result: &'static str,
}

fn add_controller(settings: &Settings, args: &AddControllerArgs) -> Result<(), Error> {
    use vltava_protocol::messages::add_raft_voter_request::Listener;
    use vltava_protocol::messages::{AddRaftVoterRequest, AddRaftVoterResponse};
    let (host, port) = args
        .controller_endpoint
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
        .ok_or_else(|| {
            Error::usage(format!(
                "--controller-endpoint {} is not host:port",
                args.controller_endpoint
            ))
        })?;
    let mut conn = crate::raw::bootstrap(settings)?;
    conn.set_timeout(std::time::Duration::from_millis(
        VOTER_CHANGE_TIMEOUT_MS as u64 + 5000,
    ))?;
    let req = AddRaftVoterRequest::default()
        .with_cluster_id(None)
        .with_voter_id(args.controller_id)
        .with_timeout_ms(VOTER_CHANGE_TIMEOUT_MS)
        .with_listeners(vec![Listener::default()
            .with_name(args.listener_name.clone().into())
            .with_host(host.to_string().into())
            .with_port(port)]);
    let resp: AddRaftVoterResponse = conn.call(vltava_protocol::ApiKey::AddRaftVoter, 0, &req)?;
    voter_change(
        settings,
        args.controller_id,
        "added",
        resp.error_code,
        resp.error_message,
    )
}

fn remove_controller(settings: &Settings, args: &RemoveControllerArgs) -> Result<(), Error> {
    use vltava_protocol::messages::{RemoveRaftVoterRequest, RemoveRaftVoterResponse};
    let mut conn = crate::raw::bootstrap(settings)?;
    conn.set_timeout(std::time::Duration::from_millis(
        VOTER_CHANGE_TIMEOUT_MS as u64 + 5000,
    ))?;
    let req = RemoveRaftVoterRequest::default()
        .with_cluster_id(None)
        .with_voter_id(args.controller_id);
    let resp: RemoveRaftVoterResponse =
        conn.call(vltava_protocol::ApiKey::RemoveRaftVoter, 0, &req)?;
    voter_change(
        settings,
        args.controller_id,
        "removed",
        resp.error_code,
        resp.error_message,
    )
}

fn voter_change(
    settings: &Settings,
    id: i32,
    result: &'static str,
    code: i16,
    message: Option<vltava_protocol::StrBytes>,
) -> Result<(), Error> {
    if code != 0 {
        return Err(Error::Refused {
            resource: format!("voter change of node {id}"),
            reason: match message {
                Some(m) => format!("{}: {m}", error_name(code)),
                None => error_name(code),
            },
        });
    }
    match settings.output {
        Output::Json => print_json(&VoterChangeJson {
            controller_id: id,
            result,
        }),
        Output::Table => print(&format!(
            "Node {id} {result} as a voter of the metadata quorum.\n"
        )),
    }
}

fn error_name(code: i16) -> String {
    ErrorCode::try_from_code(code)
        .map_or_else(|| format!("error code {code}"), |e| format!("{e:?}"))
}

fn kafka_error(what: String, code: i16) -> Error {
    Error::Refused {
        resource: what,
        reason: error_name(code),
    }
}

fn describe(settings: &Settings) -> Result<(), Error> {
    let admin = settings.admin()?;
    let md = client::metadata(admin.inner(), settings, None)?;
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
        quorum: describe_quorum(settings, &live),
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
