//! `vltava group`: list, describe (members, assignments, committed offsets, lag), delete,
//! and reset offsets, following `kafka-consumer-groups`.
//!
//! rust-rdkafka has no admin call for groups or their offsets, so: ListConsumerGroups and
//! DescribeConsumerGroups through librdkafka's C API (`ffi`), which cover classic and KIP-848
//! groups alike; committed offsets through a consumer that carries the group id but never
//! joins (OffsetFetch); log start and end offsets through ListOffsets; and a reset is an
//! OffsetCommit from such a consumer, which Kafka accepts only while the group is empty.

use std::collections::{BTreeMap, BTreeSet};

use clap::{ArgGroup, Args, Subcommand};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::client::{
    self, admin_options, block_on, ClientArgs, LogContext, Output, Settings, ADMIN_TIMEOUT,
};
use crate::ffi;
use crate::output::{print, print_json};
use crate::table::Table;
use crate::timefmt::parse_datetime_ms;
use crate::Error;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  vltava group list
  vltava group describe billing
  vltava group reset-offsets billing --topic orders --to-earliest            (dry run)
  vltava group reset-offsets billing --all-topics --to-datetime 2024-01-01T00:00:00Z --execute
  vltava group delete billing")]
pub struct GroupArgs {
    #[command(subcommand)]
    pub command: GroupCommand,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List consumer groups with their states
    #[command(after_help = "Examples:
  vltava group list
  vltava group list -o json")]
    List,
    /// Show members, assignments, committed offsets, end offsets and lag
    #[command(after_help = "Examples:
  vltava group describe billing
  vltava group describe billing -o json | jq '.partitions[].lag'")]
    Describe(DescribeArgs),
    /// Delete groups (they must have no members)
    #[command(after_help = "Examples:
  vltava group delete billing
  vltava group delete billing audit")]
    Delete(DeleteArgs),
    /// Move a group's committed offsets (the group must have no members)
    #[command(after_help = "Examples:
  vltava group reset-offsets billing --topic orders --to-earliest
  vltava group reset-offsets billing --topic orders:0,1 --to-offset 100 --execute
  vltava group reset-offsets billing --all-topics --shift-by -10 --execute
  vltava group reset-offsets billing --topic orders --to-datetime 2024-01-01T00:00:00Z

Without --execute nothing changes: the planned offsets are printed (a dry run).
Targets outside [log start, log end] are clamped to that range, as Kafka's tool does.")]
    ResetOffsets(ResetArgs),
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// Group id
    pub group: String,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Group ids
    #[arg(required = true)]
    pub groups: Vec<String>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("scope").required(true).args(["topics", "all_topics"])))]
#[command(group(ArgGroup::new("to").required(true)
    .args(["to_earliest", "to_latest", "to_offset", "to_datetime", "shift_by"])))]
pub struct ResetArgs {
    /// Group id
    pub group: String,
    /// Topic, or topic:partition,partition; repeatable
    #[arg(long = "topic", value_name = "TOPIC[:P,...]")]
    pub topics: Vec<String>,
    /// Every topic the group has committed offsets for
    #[arg(long)]
    pub all_topics: bool,
    /// To the log start offset
    #[arg(long)]
    pub to_earliest: bool,
    /// To the log end offset
    #[arg(long)]
    pub to_latest: bool,
    /// To this offset
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub to_offset: Option<i64>,
    /// To the first offset at or after this time (YYYY-MM-DDTHH:MM:SS[.sss][Z|+HH:MM])
    #[arg(long, value_name = "DATETIME", value_parser = parse_datetime_ms)]
    pub to_datetime: Option<i64>,
    /// Move the committed offset by N (negative: back)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub shift_by: Option<i64>,
    /// Apply the change (default: only show it)
    #[arg(long)]
    pub execute: bool,
    /// Only show the change (the default)
    #[arg(long, conflicts_with = "execute")]
    pub dry_run: bool,
}

pub fn run(args: GroupArgs) -> Result<(), Error> {
    let settings = Settings::new(&args.client, &[])?;
    match args.command {
        GroupCommand::List => list(&settings),
        GroupCommand::Describe(a) => describe(&settings, &a.group),
        GroupCommand::Delete(a) => delete(&settings, &a.groups),
        GroupCommand::ResetOffsets(a) => reset(&settings, a),
    }
}

/// Turns librdkafka's group errors into messages that say what is missing.
fn group_error(context: String) -> impl FnOnce(KafkaError) -> Error {
    move |e| {
        let reason = match e.rdkafka_error_code() {
            Some(
                RDKafkaErrorCode::UnsupportedVersion
                | RDKafkaErrorCode::UnsupportedFeature
                | RDKafkaErrorCode::CoordinatorNotAvailable
                | RDKafkaErrorCode::InvalidRequest,
            ) => format!("{e} (does the cluster support consumer groups?)"),
            _ => e.to_string(),
        };
        Error::Refused {
            resource: context,
            reason,
        }
    }
}

#[derive(Debug, Serialize)]
struct GroupSummary {
    group: String,
    /// `classic` or `consumer` (KIP-848).
    #[serde(rename = "type")]
    group_type: String,
    state: String,
    members: usize,
}

fn list(settings: &Settings) -> Result<(), Error> {
    let consumer = settings.consumer(None)?;
    client::metadata(consumer.client(), settings, None)?;
    let listed = ffi::list_consumer_groups(consumer.client(), ADMIN_TIMEOUT)
        .map_err(|e| refused("cannot list groups", e.to_string()))?;
    let names: Vec<&str> = listed.iter().map(|g| g.group.as_str()).collect();
    let described = ffi::describe_consumer_groups(consumer.client(), &names, ADMIN_TIMEOUT)
        .map_err(|e| refused("cannot describe groups", e.to_string()))?;
    let mut out: Vec<GroupSummary> = listed
        .into_iter()
        .map(|g| {
            let d = described
                .iter()
                .find(|d| d.group == g.group && d.error.is_none());
            GroupSummary {
                members: d.map_or(0, |d| d.members.len()),
                // The description is the fresher of the two.
                state: d.map_or(g.state, |d| d.state.clone()),
                group_type: g.group_type,
                group: g.group,
            }
        })
        .collect();
    out.sort_by(|a, b| a.group.cmp(&b.group));
    match settings.output {
        Output::Json => print_json(&out),
        Output::Table => {
            let mut t = Table::new(&["GROUP", "TYPE", "STATE", "MEMBERS"]);
            for g in &out {
                t.row([
                    g.group.clone(),
                    g.group_type.clone(),
                    g.state.clone(),
                    g.members.to_string(),
                ]);
            }
            print(&t.render())
        }
    }
}

fn refused(context: &str, reason: String) -> Error {
    Error::Refused {
        resource: context.to_string(),
        reason,
    }
}

#[derive(Debug, Clone, Serialize)]
struct MemberJson {
    member_id: String,
    /// `group.instance.id` of a static member.
    instance_id: Option<String>,
    client_id: String,
    host: String,
    assignment: Vec<(String, Vec<i32>)>,
}

#[derive(Debug, Clone, Serialize)]
struct PartitionLag {
    topic: String,
    partition: i32,
    committed_offset: Option<i64>,
    log_end_offset: Option<i64>,
    lag: Option<i64>,
    member_id: Option<String>,
    host: Option<String>,
    client_id: Option<String>,
}

#[derive(Debug, Serialize)]
struct GroupDescription {
    group: String,
    state: String,
    #[serde(rename = "type")]
    group_type: String,
    assignor: String,
    members: Vec<MemberJson>,
    partitions: Vec<PartitionLag>,
}

struct GroupState {
    state: String,
    group_type: String,
    assignor: String,
    members: Vec<MemberJson>,
}

fn group_state(consumer: &BaseConsumer<LogContext>, group: &str) -> Result<GroupState, Error> {
    let described = ffi::describe_consumer_groups(consumer.client(), &[group], ADMIN_TIMEOUT)
        .map_err(|e| refused(&format!("cannot describe group '{group}'"), e.to_string()))?;
    let Some(d) = described.into_iter().find(|d| d.group == group) else {
        return Err(refused(
            &format!("cannot describe group '{group}'"),
            "no description in the answer".into(),
        ));
    };
    match d.error {
        None => {}
        // Kafka answers a group it does not know as Dead; some brokers answer this.
        Some((RDKafkaErrorCode::GroupIdNotFound, _)) => {
            return Ok(GroupState {
                state: "Dead".into(),
                group_type: String::new(),
                assignor: String::new(),
                members: vec![],
            })
        }
        Some((code, message)) => {
            return Err(refused(
                &format!("cannot describe group '{group}'"),
                format!("{code} {message}").trim().to_string(),
            ))
        }
    }
    let members = d
        .members
        .into_iter()
        .map(|m| {
            let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for (t, p) in m.assignment {
                by_topic.entry(t).or_default().push(p);
            }
            for ps in by_topic.values_mut() {
                ps.sort_unstable();
            }
            MemberJson {
                member_id: m.member_id,
                instance_id: m.instance_id,
                client_id: m.client_id,
                host: m.host,
                assignment: by_topic.into_iter().collect(),
            }
        })
        .collect();
    Ok(GroupState {
        state: d.state,
        group_type: d.group_type,
        assignor: d.assignor,
        members,
    })
}

type Partitions = BTreeSet<(String, i32)>;

/// Every partition of every non-internal topic, for OffsetFetch (rdkafka cannot ask for
/// "all partitions the group has offsets for").
fn all_partitions(
    consumer: &BaseConsumer<LogContext>,
    settings: &Settings,
) -> Result<Partitions, Error> {
    let md = client::metadata(consumer.client(), settings, None)?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| !client::is_internal(t.name()) && t.error().is_none())
        .flat_map(|t| {
            t.partitions()
                .iter()
                .map(|p| (t.name().to_string(), p.id()))
        })
        .collect())
}

fn to_tpl(partitions: &Partitions, offset: Offset) -> Result<TopicPartitionList, Error> {
    let mut tpl = TopicPartitionList::new();
    for (t, p) in partitions {
        tpl.add_partition_offset(t, *p, offset)
            .map_err(Error::kafka("cannot build partition list"))?;
    }
    Ok(tpl)
}

/// Committed offsets of the group for `partitions`; partitions without one are left out.
fn committed(
    consumer: &BaseConsumer<LogContext>,
    group: &str,
    partitions: &Partitions,
) -> Result<BTreeMap<(String, i32), i64>, Error> {
    if partitions.is_empty() {
        return Ok(BTreeMap::new());
    }
    let tpl = consumer
        .committed_offsets(to_tpl(partitions, Offset::Invalid)?, ADMIN_TIMEOUT)
        .map_err(group_error(format!(
            "cannot read committed offsets of group '{group}'"
        )))?;
    let mut out = BTreeMap::new();
    for e in tpl.elements() {
        if let Err(err) = e.error() {
            return Err(Error::Refused {
                resource: format!(
                    "cannot read the committed offset of group '{group}' for {}-{}",
                    e.topic(),
                    e.partition()
                ),
                reason: err.to_string(),
            });
        }
        if let Offset::Offset(o) = e.offset() {
            out.insert((e.topic().to_string(), e.partition()), o);
        }
    }
    Ok(out)
}

/// ListOffsets for each partition: `Offset::Beginning` for log start, `Offset::End` for log
/// end, `Offset::Offset(ms)` for the first offset at or after a time (missing if none).
fn list_offsets(
    consumer: &BaseConsumer<LogContext>,
    partitions: &Partitions,
    spec: Offset,
) -> Result<BTreeMap<(String, i32), i64>, Error> {
    if partitions.is_empty() {
        return Ok(BTreeMap::new());
    }
    let tpl = consumer
        .offsets_for_times(to_tpl(partitions, spec)?, ADMIN_TIMEOUT)
        .map_err(Error::kafka("cannot list offsets"))?;
    let mut out = BTreeMap::new();
    for e in tpl.elements() {
        if let Err(err) = e.error() {
            return Err(Error::Refused {
                resource: format!("cannot list offsets of {}-{}", e.topic(), e.partition()),
                reason: err.to_string(),
            });
        }
        if let Offset::Offset(o) = e.offset() {
            out.insert((e.topic().to_string(), e.partition()), o);
        }
    }
    Ok(out)
}

fn describe(settings: &Settings, group: &str) -> Result<(), Error> {
    let consumer = settings.consumer(Some(group))?;
    let everything = all_partitions(&consumer, settings)?;
    let state = group_state(&consumer, group)?;
    let committed = committed(&consumer, group, &everything)?;
    if state.state == "Dead" && committed.is_empty() && state.members.is_empty() {
        return Err(Error::UnknownGroup {
            group: group.into(),
        });
    }
    let mut owner: BTreeMap<(String, i32), &MemberJson> = BTreeMap::new();
    for m in &state.members {
        for (t, ps) in &m.assignment {
            for p in ps {
                owner.insert((t.clone(), *p), m);
            }
        }
    }
    let shown: Partitions = committed.keys().chain(owner.keys()).cloned().collect();
    let ends = list_offsets(&consumer, &shown, Offset::End)?;
    let partitions: Vec<PartitionLag> = shown
        .iter()
        .map(|tp| {
            let c = committed.get(tp).copied();
            let end = ends.get(tp).copied();
            let m = owner.get(tp);
            PartitionLag {
                topic: tp.0.clone(),
                partition: tp.1,
                committed_offset: c,
                log_end_offset: end,
                lag: match (c, end) {
                    (Some(c), Some(e)) => Some((e - c).max(0)),
                    _ => None,
                },
                member_id: m.map(|m| m.member_id.clone()),
                host: m.map(|m| m.host.clone()),
                client_id: m.map(|m| m.client_id.clone()),
            }
        })
        .collect();
    let d = GroupDescription {
        group: group.to_string(),
        state: state.state,
        group_type: state.group_type,
        assignor: state.assignor,
        members: state.members,
        partitions,
    };
    match settings.output {
        Output::Json => print_json(&d),
        Output::Table => {
            let dash = || "-".to_string();
            let or_dash = |v: &str| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    v.to_string()
                }
            };
            let mut text = format!(
                "Group: {}  State: {}  Type: {}  Assignor: {}  Members: {}\n\n",
                d.group,
                d.state,
                or_dash(&d.group_type),
                or_dash(&d.assignor),
                d.members.len()
            );
            let mut t = Table::new(&[
                "TOPIC",
                "PARTITION",
                "CURRENT-OFFSET",
                "LOG-END-OFFSET",
                "LAG",
                "CONSUMER-ID",
                "HOST",
                "CLIENT-ID",
            ]);
            for p in &d.partitions {
                t.row([
                    p.topic.clone(),
                    p.partition.to_string(),
                    p.committed_offset.map_or_else(dash, |o| o.to_string()),
                    p.log_end_offset.map_or_else(dash, |o| o.to_string()),
                    p.lag.map_or_else(dash, |o| o.to_string()),
                    p.member_id.clone().unwrap_or_else(dash),
                    p.host.clone().unwrap_or_else(dash),
                    p.client_id.clone().unwrap_or_else(dash),
                ]);
            }
            if t.is_empty() {
                text.push_str("No committed offsets and no assignments.\n");
            } else {
                text.push_str(&t.render());
            }
            print(&text)
        }
    }
}

fn delete(settings: &Settings, groups: &[String]) -> Result<(), Error> {
    let admin = settings.admin()?;
    client::metadata(admin.inner(), settings, None)?;
    let names: Vec<&str> = groups.iter().map(String::as_str).collect();
    let results = block_on(admin.delete_groups(&names, &admin_options()))
        .map_err(group_error("cannot delete groups".into()))?;
    let mut deleted = Vec::new();
    let mut failure = None;
    for r in results {
        match r {
            Ok(g) => deleted.push(g),
            Err((g, code)) => {
                let e = match code {
                    RDKafkaErrorCode::GroupIdNotFound => Error::UnknownGroup { group: g },
                    _ => Error::Refused {
                        resource: format!("cannot delete group '{g}'"),
                        reason: match code {
                            RDKafkaErrorCode::NonEmptyGroup => {
                                format!("{code} (stop its consumers first)")
                            }
                            _ => code.to_string(),
                        },
                    },
                };
                // The first failure is the command's error, printed once on exit.
                if failure.is_none() {
                    failure = Some(e);
                } else {
                    eprintln!("error: {e}");
                }
            }
        }
    }
    match settings.output {
        Output::Json => print_json(&serde_json::json!({ "deleted": deleted }))?,
        Output::Table => {
            let text: String = deleted
                .iter()
                .map(|g| format!("Deleted group {g}.\n"))
                .collect();
            print(&text)?
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `topic` or `topic:0,1,2`.
pub fn parse_topic_partitions(s: &str) -> Result<(String, Option<Vec<i32>>), String> {
    match s.split_once(':') {
        None if !s.is_empty() => Ok((s.to_string(), None)),
        Some((t, ps)) if !t.is_empty() => {
            let parts = ps
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<i32>()
                        .map_err(|_| format!("invalid partition '{p}' in '{s}'"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((t.to_string(), Some(parts)))
        }
        _ => Err(format!("invalid topic '{s}': expected TOPIC or TOPIC:P,P")),
    }
}

#[derive(Debug, Clone, Copy)]
enum ResetTo {
    Earliest,
    Latest,
    Offset(i64),
    Datetime(i64),
    ShiftBy(i64),
}

/// The offset a partition moves to, clamped to `[log_start, log_end]`; `None` when a shift
/// has no committed offset to start from.
fn target_offset(
    to: ResetTo,
    committed: Option<i64>,
    log_start: i64,
    log_end: i64,
    at_time: Option<i64>,
) -> Option<i64> {
    let raw = match to {
        ResetTo::Earliest => log_start,
        ResetTo::Latest => log_end,
        ResetTo::Offset(n) => n,
        ResetTo::Datetime(_) => at_time.unwrap_or(log_end),
        ResetTo::ShiftBy(n) => committed?.saturating_add(n),
    };
    Some(raw.clamp(log_start, log_end.max(log_start)))
}

#[derive(Debug, Serialize)]
struct PlannedReset {
    topic: String,
    partition: i32,
    current_offset: Option<i64>,
    new_offset: i64,
}

fn reset(settings: &Settings, a: ResetArgs) -> Result<(), Error> {
    let to = if a.to_earliest {
        ResetTo::Earliest
    } else if a.to_latest {
        ResetTo::Latest
    } else if let Some(n) = a.to_offset {
        if n < 0 {
            return Err(Error::usage("--to-offset must not be negative"));
        }
        ResetTo::Offset(n)
    } else if let Some(ms) = a.to_datetime {
        ResetTo::Datetime(ms)
    } else if let Some(n) = a.shift_by {
        ResetTo::ShiftBy(n)
    } else {
        unreachable!("clap requires one --to-* option")
    };
    let mut wanted = Vec::new();
    for t in &a.topics {
        wanted.push(parse_topic_partitions(t).map_err(Error::Usage)?);
    }
    let consumer = settings.consumer(Some(&a.group))?;
    let everything = all_partitions(&consumer, settings)?;
    let state = group_state(&consumer, &a.group)?;
    if !matches!(state.state.as_str(), "Empty" | "Dead") || !state.members.is_empty() {
        return Err(Error::GroupActive {
            group: a.group.clone(),
            state: state.state,
            members: state.members.len(),
        });
    }
    let committed_all = committed(&consumer, &a.group, &everything)?;
    let scope: Partitions = if a.all_topics {
        committed_all.keys().cloned().collect()
    } else {
        let mut scope = Partitions::new();
        for (topic, parts) in &wanted {
            let known: Vec<i32> = everything
                .iter()
                .filter(|(t, _)| t == topic)
                .map(|(_, p)| *p)
                .collect();
            if known.is_empty() {
                return Err(Error::UnknownTopic {
                    topic: topic.clone(),
                });
            }
            match parts {
                None => scope.extend(known.iter().map(|p| (topic.clone(), *p))),
                Some(ps) => {
                    for p in ps {
                        if !known.contains(p) {
                            return Err(Error::Refused {
                                resource: format!("topic '{topic}'"),
                                reason: format!("has no partition {p} (it has {})", known.len()),
                            });
                        }
                        scope.insert((topic.clone(), *p));
                    }
                }
            }
        }
        scope
    };
    let starts = list_offsets(&consumer, &scope, Offset::Beginning)?;
    let ends = list_offsets(&consumer, &scope, Offset::End)?;
    let at_time = match to {
        ResetTo::Datetime(ms) => list_offsets(&consumer, &scope, Offset::Offset(ms))?,
        _ => BTreeMap::new(),
    };
    let mut plan = Vec::new();
    for tp in &scope {
        let current = committed_all.get(tp).copied();
        let start = starts.get(tp).copied().unwrap_or(0);
        let end = ends.get(tp).copied().unwrap_or(start);
        let Some(new_offset) = target_offset(to, current, start, end, at_time.get(tp).copied())
        else {
            return Err(Error::Refused {
                resource: format!("cannot shift {}-{}", tp.0, tp.1),
                reason: "the group has no committed offset there".into(),
            });
        };
        plan.push(PlannedReset {
            topic: tp.0.clone(),
            partition: tp.1,
            current_offset: current,
            new_offset,
        });
    }
    if a.execute && !plan.is_empty() {
        let mut tpl = TopicPartitionList::new();
        for p in &plan {
            tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.new_offset))
                .map_err(Error::kafka("cannot build partition list"))?;
        }
        consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(group_error(format!(
                "cannot commit offsets of group '{}'",
                a.group
            )))?;
    }
    match settings.output {
        Output::Json => print_json(&serde_json::json!({
            "group": a.group, "executed": a.execute, "partitions": plan
        })),
        Output::Table => {
            let mut t = Table::new(&[
                "GROUP",
                "TOPIC",
                "PARTITION",
                "CURRENT-OFFSET",
                "NEW-OFFSET",
            ]);
            for p in &plan {
                t.row([
                    a.group.clone(),
                    p.topic.clone(),
                    p.partition.to_string(),
                    p.current_offset
                        .map_or_else(|| "-".to_string(), |o| o.to_string()),
                    p.new_offset.to_string(),
                ]);
            }
            let mut text = t.render();
            if a.execute {
                text.push_str(&format!(
                    "Committed new offsets for {} partition(s).\n",
                    plan.len()
                ));
            } else {
                text.push_str("Dry run: nothing changed. Add --execute to commit these offsets.\n");
            }
            print(&text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_partitions() {
        assert_eq!(
            parse_topic_partitions("orders"),
            Ok(("orders".into(), None))
        );
        assert_eq!(
            parse_topic_partitions("orders:0,2"),
            Ok(("orders".into(), Some(vec![0, 2])))
        );
        assert!(parse_topic_partitions("orders:x").is_err());
        assert!(parse_topic_partitions(":1").is_err());
        assert!(parse_topic_partitions("").is_err());
    }

    #[test]
    fn targets_are_clamped() {
        // log holds offsets [10, 50)
        assert_eq!(
            target_offset(ResetTo::Earliest, Some(30), 10, 50, None),
            Some(10)
        );
        assert_eq!(
            target_offset(ResetTo::Latest, Some(30), 10, 50, None),
            Some(50)
        );
        assert_eq!(
            target_offset(ResetTo::Offset(5), None, 10, 50, None),
            Some(10)
        );
        assert_eq!(
            target_offset(ResetTo::Offset(70), None, 10, 50, None),
            Some(50)
        );
        assert_eq!(
            target_offset(ResetTo::Offset(20), None, 10, 50, None),
            Some(20)
        );
        assert_eq!(
            target_offset(ResetTo::ShiftBy(-5), Some(30), 10, 50, None),
            Some(25)
        );
        assert_eq!(
            target_offset(ResetTo::ShiftBy(-50), Some(30), 10, 50, None),
            Some(10)
        );
        assert_eq!(
            target_offset(ResetTo::ShiftBy(100), Some(30), 10, 50, None),
            Some(50)
        );
        assert_eq!(target_offset(ResetTo::ShiftBy(1), None, 10, 50, None), None);
        assert_eq!(
            target_offset(ResetTo::Datetime(0), None, 10, 50, Some(42)),
            Some(42)
        );
        assert_eq!(
            target_offset(ResetTo::Datetime(0), None, 10, 50, None),
            Some(50),
            "no record after the time: the end"
        );
    }
}
