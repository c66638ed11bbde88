//! `vltava topic reassign`: move partition replicas between brokers
//! (AlterPartitionReassignments / ListPartitionReassignments, KIP-455).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use vltava_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use vltava_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use vltava_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use vltava_protocol::{ApiKey, ErrorCode};

use crate::client::{Output, Settings, METADATA_TIMEOUT};
use crate::ffi::{ConfigOp, Resource};
use crate::output::{print, print_json};
use crate::raw::{self, Connection};
use crate::table::{id_list, Table};
use crate::Error;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["replicas", "cancel", "file", "list"])))]
pub struct ReassignArgs {
    /// Topic to reassign (or, with --list, to list)
    pub topic: Option<String>,
    /// Partitions of the topic, repeatable or comma-separated (default: all of them)
    #[arg(long = "partition", value_delimiter = ',')]
    pub partitions: Vec<i32>,
    /// The new replicas, preferred leader first: broker ids, comma-separated
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub replicas: Vec<i32>,
    /// Cancel the partitions' reassignments: back to their original replicas
    #[arg(long)]
    pub cancel: bool,
    /// A plan in Kafka's reassignment JSON:
    /// {"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[1,2,3]}]}
    #[arg(long, value_name = "FILE", conflicts_with_all = ["replicas", "cancel", "topic"])]
    pub file: Option<std::path::PathBuf>,
    /// List reassignments in progress
    #[arg(long, conflicts_with_all = ["replicas", "cancel", "file", "wait"])]
    pub list: bool,
    /// Keep the replica count only if it does not change (KIP-860)
    #[arg(long)]
    pub disallow_replication_factor_change: bool,
    /// Wait until the reassignments are complete
    #[arg(long)]
    pub wait: bool,
    /// Limit the moving replicas' replication to this many bytes per second, as
    /// kafka-reassign-partitions --throttle does: sets leader/follower
    /// .replication.throttled.rate on the brokers involved and the topics'
    /// *.replication.throttled.replicas, and removes them once the move completes
    #[arg(
        long,
        value_name = "BYTES_PER_SEC",
        requires = "wait",
        conflicts_with = "cancel"
    )]
    pub throttle: Option<u64>,
    /// With --wait: give up after this long, e.g. 10m (default: no limit)
    #[arg(long, value_parser = crate::client::parse_duration, requires = "wait")]
    pub timeout: Option<Duration>,
}

/// Kafka's reassignment JSON (`kafka-reassign-partitions --reassignment-json-file`).
#[derive(Debug, Deserialize)]
struct Plan {
    partitions: Vec<PlanPartition>,
}

#[derive(Debug, Deserialize)]
struct PlanPartition {
    topic: String,
    partition: i32,
    replicas: Vec<i32>,
}

#[derive(Debug, Serialize)]
struct ResultJson {
    topic: String,
    partition: i32,
    /// `started`, `cancelled` or `failed`.
    result: &'static str,
    /// Kafka's error name when it failed.
    error: Option<String>,
    message: Option<String>,
}

#[derive(Debug, Serialize)]
struct OngoingJson {
    topic: String,
    partition: i32,
    replicas: Vec<i32>,
    adding: Vec<i32>,
    removing: Vec<i32>,
}

pub fn run(settings: &Settings, args: &ReassignArgs) -> Result<(), Error> {
    let mut conn = raw::bootstrap(settings)?;
    if args.list {
        let filter = match &args.topic {
            Some(t) => Some(vec![(
                t.clone(),
                partitions(&mut conn, t, &args.partitions)?,
            )]),
            None => None,
        };
        let ongoing = list(&mut conn, filter)?;
        return match settings.output {
            Output::Json => print_json(&ongoing),
            Output::Table if ongoing.is_empty() => print("No reassignment is in progress.\n"),
            Output::Table => {
                let mut t = Table::new(&["TOPIC", "PARTITION", "REPLICAS", "ADDING", "REMOVING"]);
                for o in &ongoing {
                    t.row([
                        o.topic.clone(),
                        o.partition.to_string(),
                        id_list(&o.replicas),
                        id_list(&o.adding),
                        id_list(&o.removing),
                    ]);
                }
                print(&t.render())
            }
        };
    }
    let plan: Vec<(String, i32, Option<Vec<i32>>)> = match &args.file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::usage(format!("cannot read {}: {e}", path.display())))?;
            let plan: Plan = serde_json::from_str(&text).map_err(|e| {
                Error::usage(format!(
                    "{} is not a reassignment plan: {e}",
                    path.display()
                ))
            })?;
            plan.partitions
                .into_iter()
                .map(|p| (p.topic, p.partition, Some(p.replicas)))
                .collect()
        }
        None => {
            let Some(topic) = &args.topic else {
                return Err(Error::usage("name a topic, or give a plan with --file"));
            };
            let target = (!args.cancel).then(|| args.replicas.clone());
            partitions(&mut conn, topic, &args.partitions)?
                .into_iter()
                .map(|p| (topic.clone(), p, target.clone()))
                .collect()
        }
    };
    let throttle = match args.throttle {
        Some(rate) => Some(set_throttle(settings, &mut conn, &plan, rate)?),
        None => None,
    };
    let mut topics: Vec<ReassignableTopic> = Vec::new();
    for (topic, partition, replicas) in &plan {
        let p = ReassignablePartition::default()
            .with_partition_index(*partition)
            .with_replicas(
                replicas
                    .as_ref()
                    .map(|r| r.iter().copied().map(BrokerId).collect()),
            );
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(p),
            None => topics.push(
                ReassignableTopic::default()
                    .with_name(TopicName(topic.clone().into()))
                    .with_partitions(vec![p]),
            ),
        }
    }
    let req = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(METADATA_TIMEOUT.as_millis() as i32)
        .with_allow_replication_factor_change(!args.disallow_replication_factor_change)
        .with_topics(topics);
    let resp: AlterPartitionReassignmentsResponse =
        conn.call(ApiKey::AlterPartitionReassignments, 1, &req)?;
    if resp.error_code != 0 && resp.responses.is_empty() {
        return Err(Error::Refused {
            resource: "partition reassignment".into(),
            reason: error_name(resp.error_code),
        });
    }
    let verb = if args.cancel { "cancelled" } else { "started" };
    let rows: Vec<ResultJson> = resp
        .responses
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| ResultJson {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                result: if p.error_code == 0 { verb } else { "failed" },
                error: (p.error_code != 0).then(|| error_name(p.error_code)),
                message: p.error_message.as_ref().map(|m| m.to_string()),
            })
        })
        .collect();
    let failed = rows.iter().filter(|r| r.result == "failed").count();
    if failed == 0 && args.wait && !args.cancel {
        let moving: Vec<(String, i32)> = rows
            .iter()
            .map(|r| (r.topic.clone(), r.partition))
            .collect();
        wait(&mut conn, settings, &moving, args.timeout)?;
    }
    // Throttles stay only while something moves (after a timeout, the move goes on).
    if let Some(set) = &throttle {
        let admin = settings.admin()?;
        for (resource, ops) in set {
            let clear: Vec<ConfigOp> = ops.iter().map(|(k, _)| (k.clone(), None)).collect();
            crate::config::alter(&admin, resource, &clear)?;
        }
    }
    match settings.output {
        Output::Json => print_json(&rows)?,
        Output::Table => {
            let mut t = Table::new(&["TOPIC", "PARTITION", "RESULT", "ERROR"]);
            for r in &rows {
                let result = if r.result == "started" && args.wait {
                    "completed"
                } else {
                    r.result
                };
                t.row([
                    r.topic.clone(),
                    r.partition.to_string(),
                    result.to_string(),
                    crate::table::error_cell(&r.error, &r.message),
                ]);
            }
            print(&t.render())?
        }
    }
    if failed > 0 {
        return Err(Error::Refused {
            resource: "partition reassignment".into(),
            reason: format!("{failed} of {} partitions failed", rows.len()),
        });
    }
    Ok(())
}

/// Sets the throttle configs for moving `plan`'s partitions at `rate` bytes per second, as
/// kafka-reassign-partitions does: the current replicas of each moving partition are
/// leader-throttled, the added ones follower-throttled, and every broker involved gets the
/// rate. Returns what it set, to remove afterwards.
fn set_throttle(
    settings: &Settings,
    conn: &mut Connection,
    plan: &[(String, i32, Option<Vec<i32>>)],
    rate: u64,
) -> Result<Vec<(Resource, Vec<ConfigOp>)>, Error> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut leader: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut follower: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut brokers = BTreeSet::new();
    let mut current: BTreeMap<&str, BTreeMap<i32, Vec<i32>>> = BTreeMap::new();
    for (topic, partition, target) in plan {
        if !current.contains_key(topic.as_str()) {
            let md = raw::topic_metadata(conn, topic)?;
            let replicas = md
                .partitions
                .iter()
                .map(|p| {
                    (
                        p.partition_index,
                        p.replica_nodes.iter().map(|b| b.0).collect(),
                    )
                })
                .collect();
            current.insert(topic, replicas);
        }
        let now = current[topic.as_str()]
            .get(partition)
            .cloned()
            .unwrap_or_default();
        let target = target.clone().unwrap_or_default();
        for b in &now {
            leader
                .entry(topic)
                .or_default()
                .push(format!("{partition}:{b}"));
        }
        for b in target.iter().filter(|b| !now.contains(b)) {
            follower
                .entry(topic)
                .or_default()
                .push(format!("{partition}:{b}"));
        }
        brokers.extend(now.iter().chain(&target).copied());
    }
    let mut set: Vec<(Resource, Vec<ConfigOp>)> = Vec::new();
    for b in brokers {
        set.push((
            Resource::Broker(b),
            [
                "leader.replication.throttled.rate",
                "follower.replication.throttled.rate",
            ]
            .iter()
            .map(|k| (k.to_string(), Some(rate.to_string())))
            .collect(),
        ));
    }
    let topics: BTreeSet<&str> = leader.keys().chain(follower.keys()).copied().collect();
    for t in topics {
        let list = |m: &BTreeMap<&str, Vec<String>>| m.get(t).map(|v| v.join(","));
        let ops = [
            ("leader.replication.throttled.replicas", list(&leader)),
            ("follower.replication.throttled.replicas", list(&follower)),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_string(), Some(v?))))
        .collect();
        set.push((Resource::Topic(t.to_string()), ops));
    }
    let admin = settings.admin()?;
    for (resource, ops) in &set {
        crate::config::alter(&admin, resource, ops)?;
    }
    Ok(set)
}

/// The partitions asked for, or all of the topic's.
fn partitions(conn: &mut Connection, topic: &str, asked: &[i32]) -> Result<Vec<i32>, Error> {
    if !asked.is_empty() {
        return Ok(asked.to_vec());
    }
    Ok(raw::topic_metadata(conn, topic)?
        .partitions
        .iter()
        .map(|p| p.partition_index)
        .collect())
}

fn list(
    conn: &mut Connection,
    filter: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Vec<OngoingJson>, Error> {
    let req = ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(METADATA_TIMEOUT.as_millis() as i32)
        .with_topics(filter.map(|f| {
            f.into_iter()
                .map(|(t, ps)| {
                    ListPartitionReassignmentsTopics::default()
                        .with_name(TopicName(t.into()))
                        .with_partition_indexes(ps)
                })
                .collect()
        }));
    let resp: ListPartitionReassignmentsResponse =
        conn.call(ApiKey::ListPartitionReassignments, 0, &req)?;
    if resp.error_code != 0 {
        return Err(Error::Refused {
            resource: "listing reassignments".into(),
            reason: error_name(resp.error_code),
        });
    }
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<_>>();
    let mut out: Vec<OngoingJson> = resp
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| OngoingJson {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                replicas: ids(&p.replicas),
                adding: ids(&p.adding_replicas),
                removing: ids(&p.removing_replicas),
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(out)
}

/// Polls until none of `moving` is listed as reassigning, with a spinner for people.
fn wait(
    conn: &mut Connection,
    settings: &Settings,
    moving: &[(String, i32)],
    timeout: Option<Duration>,
) -> Result<(), Error> {
    let pb = if settings.output == Output::Table && std::io::stderr().is_terminal() {
        let pb =
            ProgressBar::with_draw_target(Some(moving.len() as u64), ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} partitions moved  {elapsed}")
                .expect("valid template"),
        );
        pb
    } else {
        ProgressBar::hidden()
    };
    let start = Instant::now();
    let mut filter: Vec<(String, Vec<i32>)> = Vec::new();
    for (t, p) in moving {
        match filter.iter_mut().find(|(name, _)| name == t) {
            Some((_, ps)) => ps.push(*p),
            None => filter.push((t.clone(), vec![*p])),
        }
    }
    loop {
        let left = list(conn, Some(filter.clone()))?.len();
        pb.set_position((moving.len() - left.min(moving.len())) as u64);
        if left == 0 {
            pb.finish_and_clear();
            return Ok(());
        }
        if timeout.is_some_and(|t| start.elapsed() > t) {
            pb.finish_and_clear();
            return Err(Error::Refused {
                resource: "partition reassignment".into(),
                reason: format!("{left} partitions still moving after {:?}", start.elapsed()),
            });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn error_name(code: i16) -> String {
    ErrorCode::try_from_code(code)
        .map_or_else(|| format!("error code {code}"), |e| format!("{e:?}"))
}
