//! `vltava topic`: create, list, describe, alter, delete.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use rdkafka::admin::{ConfigSource, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::error::RDKafkaErrorCode;
use serde::Serialize;

use crate::client::{self, admin_options, block_on, ClientArgs, Output, Settings};
use crate::config::{self as cfg, alter, ConfigRow};
use crate::ffi::Resource;
use crate::output::{print, print_json};
use crate::raw;
use crate::table::{id_list, Table};
use crate::Error;
use vltava_protocol::ext::{cleaner_state, CleanerState};
use vltava_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use vltava_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use vltava_protocol::{ApiKey, StrBytes};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  vltava topic create orders --partitions 6 --config retention.ms=86400000
  vltava topic list
  vltava topic describe orders
  vltava topic alter orders --partitions 12 --config cleanup.policy=compact
  vltava topic delete orders")]
pub struct TopicArgs {
    #[command(subcommand)]
    pub command: TopicCommand,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic
    #[command(after_help = "Examples:
  vltava topic create orders
  vltava topic create orders --partitions 6 --replication-factor 1 --config retention.ms=86400000
  vltava topic create orders --if-not-exists")]
    Create(CreateArgs),
    /// List topics with their partition counts
    #[command(after_help = "Examples:
  vltava topic list
  vltava topic list --internal -o json")]
    List(ListArgs),
    /// Show partitions (leader, replicas, ISR) and configs with their sources
    #[command(after_help = "Examples:
  vltava topic describe orders
  vltava topic describe orders payments --all-configs")]
    Describe(DescribeArgs),
    /// Change a topic's configs and/or add partitions
    #[command(after_help = "Examples:
  vltava topic alter orders --partitions 12
  vltava topic alter orders --config retention.ms=3600000 --delete-config segment.bytes")]
    Alter(AlterArgs),
    /// Delete topics
    #[command(after_help = "Examples:
  vltava topic delete orders
  vltava topic delete orders payments --if-exists")]
    Delete(DeleteArgs),
    /// Move partition replicas to other brokers, list or cancel moves in progress
    #[command(after_help = "Examples:
  vltava topic reassign orders --partition 0 --replicas 2,3,4 --wait
  vltava topic reassign orders --replicas 1,2,3
  vltava topic reassign --file plan.json
  vltava topic reassign --list
  vltava topic reassign orders --partition 0 --cancel")]
    Reassign(crate::reassign::ReassignArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Topic name
    pub name: String,
    /// Number of partitions [default: the broker's num.partitions]
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Replication factor [default: the broker's default.replication.factor]
    #[arg(long)]
    pub replication_factor: Option<i32>,
    /// Topic config, repeatable (--config retention.ms=60000)
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = client::parse_key_value)]
    pub configs: Vec<(String, String)>,
    /// Succeed if the topic already exists
    #[arg(long)]
    pub if_not_exists: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Include internal topics (names starting with __)
    #[arg(long)]
    pub internal: bool,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// Topic names
    #[arg(required = true)]
    pub names: Vec<String>,
    /// List every config, not only those that differ from the default (-o json always lists
    /// every config with its source, for scripts to filter)
    #[arg(long)]
    pub all_configs: bool,
}

#[derive(Debug, Args)]
pub struct AlterArgs {
    /// Topic name
    pub name: String,
    /// New (larger) number of partitions
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Set a config, repeatable
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = client::parse_key_value)]
    pub configs: Vec<(String, String)>,
    /// Remove a config override (back to the default), repeatable
    #[arg(long = "delete-config", value_name = "KEY")]
    pub delete_configs: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Topic names
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Succeed for topics that do not exist
    #[arg(long)]
    pub if_exists: bool,
}

pub fn run(args: TopicArgs) -> Result<(), Error> {
    let settings = Settings::new(&args.client, &[])?;
    match args.command {
        TopicCommand::Create(a) => create(&settings, a),
        TopicCommand::List(a) => list(&settings, a),
        TopicCommand::Describe(a) => describe(&settings, a),
        TopicCommand::Alter(a) => alter_topic(&settings, a),
        TopicCommand::Delete(a) => delete(&settings, a),
        TopicCommand::Reassign(a) => crate::reassign::run(&settings, &a),
    }
}

fn create(settings: &Settings, a: CreateArgs) -> Result<(), Error> {
    if a.partitions.is_some_and(|p| p < 1) {
        return Err(Error::usage("--partitions must be at least 1"));
    }
    if a.replication_factor.is_some_and(|r| r < 1) {
        return Err(Error::usage("--replication-factor must be at least 1"));
    }
    let admin = settings.admin()?;
    client::metadata(admin.inner(), settings, None)?;
    let mut topic = NewTopic::new(
        &a.name,
        a.partitions.unwrap_or(-1),
        TopicReplication::Fixed(a.replication_factor.unwrap_or(-1)),
    );
    for (k, v) in &a.configs {
        topic = topic.set(k, v);
    }
    let results = block_on(admin.create_topics([&topic], &admin_options()))
        .map_err(Error::kafka(format!("cannot create topic '{}'", a.name)))?;
    let mut created = true;
    for r in results {
        match r {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) if a.if_not_exists => created = false,
            Err((name, code)) => {
                return Err(Error::Refused {
                    resource: format!("cannot create topic '{name}'"),
                    reason: code.to_string(),
                })
            }
        }
    }
    match settings.output {
        Output::Json => print_json(&serde_json::json!({ "topic": a.name, "created": created })),
        Output::Table if created => print(&format!("Created topic {}.\n", a.name)),
        Output::Table => print(&format!("Topic {} already exists.\n", a.name)),
    }
}

#[derive(Serialize)]
struct TopicSummary {
    name: String,
    partitions: usize,
    replication_factor: usize,
}

fn list(settings: &Settings, a: ListArgs) -> Result<(), Error> {
    let admin = settings.admin()?;
    let md = client::metadata(admin.inner(), settings, None)?;
    let mut topics: Vec<TopicSummary> = md
        .topics()
        .iter()
        .filter(|t| a.internal || !client::is_internal(t.name()))
        .map(|t| TopicSummary {
            name: t.name().to_string(),
            partitions: t.partitions().len(),
            replication_factor: t
                .partitions()
                .iter()
                .map(|p| p.replicas().len())
                .max()
                .unwrap_or(0),
        })
        .collect();
    topics.sort_by(|x, y| x.name.cmp(&y.name));
    match settings.output {
        Output::Json => print_json(&topics),
        Output::Table => {
            let mut t = Table::new(&["NAME", "PARTITIONS", "REPLICAS"]);
            for s in &topics {
                t.row([
                    s.name.clone(),
                    s.partitions.to_string(),
                    s.replication_factor.to_string(),
                ]);
            }
            print(&t.render())
        }
    }
}

#[derive(Serialize)]
struct PartitionJson {
    partition: i32,
    leader: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The log cleaner's state, for a compacted topic whose brokers report it.
    #[serde(skip_serializing_if = "Option::is_none")]
    cleaner: Option<CleanerJson>,
}

#[derive(Serialize)]
struct CleanerJson {
    clean_offset: i64,
    dirty_ratio: f64,
    dirty_bytes: i64,
}

impl From<CleanerState> for CleanerJson {
    fn from(s: CleanerState) -> Self {
        Self {
            clean_offset: s.clean_offset,
            dirty_ratio: s.dirty_ratio,
            dirty_bytes: s.dirty_bytes,
        }
    }
}

/// The log cleaner's state of each partition of `topic`, asked of the partitions' leaders
/// with DescribeLogDirs (Vltava reports it in tagged fields; see `vltava_protocol::ext`).
/// Best effort: a broker that does not report it, or that this plaintext client cannot
/// reach, leaves its partitions out, and the description shows "-" for them.
fn cleaner_states(settings: &Settings, topic: &str) -> BTreeMap<i32, CleanerState> {
    let mut states = BTreeMap::new();
    let Ok(mut conn) = raw::bootstrap(settings) else {
        return states;
    };
    let Ok(cluster) = raw::metadata(&mut conn, Some(&[topic.to_string()])) else {
        return states;
    };
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for t in cluster.metadata.topics.iter().filter(|t| t.error_code == 0) {
        for p in &t.partitions {
            by_leader
                .entry(p.leader_id.0)
                .or_default()
                .push(p.partition_index);
        }
    }
    for (leader, partitions) in by_leader {
        let Some(address) = cluster.address(leader) else {
            continue;
        };
        let Ok(mut c) = raw::connect(address, settings) else {
            continue;
        };
        let req = DescribeLogDirsRequest::default().with_topics(Some(vec![
            DescribableLogDirTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(partitions),
        ]));
        // v2 is the first version with tagged fields.
        let Ok(resp) = c.call::<_, DescribeLogDirsResponse>(ApiKey::DescribeLogDirs, 2, &req)
        else {
            continue;
        };
        for p in resp
            .results
            .iter()
            .flat_map(|r| &r.topics)
            .filter(|t| t.name.0.as_str() == topic)
            .flat_map(|t| &t.partitions)
        {
            if let Some(s) = cleaner_state(p) {
                states.insert(p.partition_index, s);
            }
        }
    }
    states
}

#[derive(Serialize)]
struct TopicDescription {
    name: String,
    /// `cleanup.policy` includes `compact`: the table shows the cleaner's columns.
    #[serde(skip)]
    compacted: bool,
    partitions: Vec<PartitionJson>,
    configs: Vec<ConfigRow>,
}

fn describe(settings: &Settings, a: DescribeArgs) -> Result<(), Error> {
    let admin = settings.admin()?;
    let mut out = Vec::new();
    for name in &a.names {
        let info = client::topic_metadata(admin.inner(), settings, name)?;
        let configs = cfg::describe_rows(&admin, &ResourceSpecifier::Topic(name))?;
        let compacted = configs.iter().any(|c| {
            c.name == "cleanup.policy" && c.value.as_deref().is_some_and(|v| v.contains("compact"))
        });
        let mut cleaner = if compacted {
            cleaner_states(settings, name)
        } else {
            BTreeMap::new()
        };
        out.push(TopicDescription {
            compacted,
            name: info.name.clone(),
            partitions: info
                .partitions
                .iter()
                .map(|p| PartitionJson {
                    partition: p.id,
                    leader: p.leader,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    error: p.error.clone(),
                    cleaner: cleaner.remove(&p.id).map(CleanerJson::from),
                })
                .collect(),
            configs,
        });
    }
    match settings.output {
        Output::Json => {
            if out.len() == 1 {
                print_json(&out[0])
            } else {
                print_json(&out)
            }
        }
        Output::Table => {
            let mut text = String::new();
            for (i, d) in out.iter().enumerate() {
                if i > 0 {
                    text.push('\n');
                }
                let rf = d
                    .partitions
                    .iter()
                    .map(|p| p.replicas.len())
                    .max()
                    .unwrap_or(0);
                text.push_str(&format!(
                    "Topic: {}  Partitions: {}  Replication factor: {}\n\n",
                    d.name,
                    d.partitions.len(),
                    rf
                ));
                let mut header = vec!["PARTITION", "LEADER", "REPLICAS", "ISR"];
                if d.compacted {
                    header.extend(["CLEANED TO", "DIRTY", "DIRTY BYTES"]);
                }
                let mut t = Table::new(&header);
                for p in &d.partitions {
                    let leader = match &p.error {
                        Some(e) => format!("{} ({e})", p.leader),
                        None => p.leader.to_string(),
                    };
                    let mut row = vec![
                        p.partition.to_string(),
                        leader,
                        id_list(&p.replicas),
                        id_list(&p.isr),
                    ];
                    if d.compacted {
                        row.extend(match &p.cleaner {
                            Some(c) => [
                                c.clean_offset.to_string(),
                                format!("{:.1}%", c.dirty_ratio * 100.0),
                                c.dirty_bytes.to_string(),
                            ],
                            None => ["-".into(), "-".into(), "-".into()],
                        });
                    }
                    t.row(row);
                }
                text.push_str(&t.render());
                text.push('\n');
                let shown: Vec<&ConfigRow> = d
                    .configs
                    .iter()
                    .filter(|c| {
                        a.all_configs || c.source != cfg::source_name(&ConfigSource::Default)
                    })
                    .collect();
                if shown.is_empty() {
                    text.push_str("Configs: all defaults (--all-configs lists them)\n");
                } else {
                    text.push_str(&cfg::config_table(shown).render());
                }
            }
            print(&text)
        }
    }
}

fn alter_topic(settings: &Settings, a: AlterArgs) -> Result<(), Error> {
    if a.partitions.is_none() && a.configs.is_empty() && a.delete_configs.is_empty() {
        return Err(Error::usage(
            "nothing to alter: pass --partitions, --config KEY=VALUE or --delete-config KEY",
        ));
    }
    let admin = settings.admin()?;
    let info = client::topic_metadata(admin.inner(), settings, &a.name)?;
    let mut changes = Vec::new();
    if let Some(n) = a.partitions {
        let current = info.partitions.len() as i32;
        if n <= current {
            // Depends on the topic as it is now, so the cluster refuses it, not the syntax.
            return Err(Error::Refused {
                resource: format!("topic '{}'", a.name),
                reason: format!("has {current} partitions; --partitions can only increase it"),
            });
        }
        let p = NewPartitions::new(&a.name, n as usize);
        let results = block_on(admin.create_partitions([&p], &admin_options())).map_err(
            Error::kafka(format!("cannot add partitions to '{}'", a.name)),
        )?;
        for r in results {
            if let Err((name, code)) = r {
                return Err(Error::Refused {
                    resource: format!("cannot add partitions to topic '{name}'"),
                    reason: code.to_string(),
                });
            }
        }
        changes.push(format!("partitions {current} -> {n}"));
    }
    let mut ops: Vec<(String, Option<String>)> = a
        .configs
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    ops.extend(a.delete_configs.iter().map(|k| (k.clone(), None)));
    if !ops.is_empty() {
        alter(&admin, &Resource::Topic(a.name.clone()), &ops)?;
        for (k, v) in &ops {
            match v {
                Some(v) => changes.push(format!("set {k}={v}")),
                None => changes.push(format!("deleted {k}")),
            }
        }
    }
    match settings.output {
        Output::Json => print_json(&serde_json::json!({ "topic": a.name, "changes": changes })),
        Output::Table => print(&format!(
            "Altered topic {}: {}.\n",
            a.name,
            changes.join(", ")
        )),
    }
}

fn delete(settings: &Settings, a: DeleteArgs) -> Result<(), Error> {
    let admin = settings.admin()?;
    client::metadata(admin.inner(), settings, None)?;
    let names: Vec<&str> = a.names.iter().map(String::as_str).collect();
    let results = block_on(admin.delete_topics(&names, &admin_options()))
        .map_err(Error::kafka("cannot delete topics"))?;
    let mut deleted = Vec::new();
    let mut missing = Vec::new();
    let mut failure = None;
    for r in results {
        match r {
            Ok(name) => deleted.push(name),
            Err((name, RDKafkaErrorCode::UnknownTopicOrPartition)) if a.if_exists => {
                missing.push(name)
            }
            Err((name, code)) => {
                let e = if code == RDKafkaErrorCode::UnknownTopicOrPartition {
                    Error::UnknownTopic { topic: name }
                } else {
                    Error::Refused {
                        resource: format!("cannot delete topic '{name}'"),
                        reason: code.to_string(),
                    }
                };
                // Report every failure; the first decides the exit.
                if failure.is_some() {
                    eprintln!("error: {e}");
                } else {
                    failure = Some(e);
                }
            }
        }
    }
    match settings.output {
        Output::Json => print_json(&serde_json::json!({ "deleted": deleted, "missing": missing }))?,
        Output::Table => {
            let mut text = String::new();
            for d in &deleted {
                text.push_str(&format!("Deleted topic {d}.\n"));
            }
            for m in &missing {
                text.push_str(&format!("Topic {m} does not exist.\n"));
            }
            print(&text)?
        }
    }
    failure.map_or(Ok(()), Err)
}
