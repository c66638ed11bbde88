//! `vltava producers describe` and `vltava transactions list|describe`: what Kafka ships as
//! `kafka-transactions.sh`. librdkafka has no admin calls for these, so they go through the
//! small protocol client in `raw`.

use clap::{Args, Subcommand};
use serde::Serialize;
use vltava_protocol::messages::describe_producers_request::TopicRequest;
use vltava_protocol::messages::*;
use vltava_protocol::{ApiKey, StrBytes};

use crate::client::{ClientArgs, Output, Settings};
use crate::output::{print, print_json};
use crate::raw;
use crate::table::Table;
use crate::Error;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  vltava producers describe orders
  vltava producers describe orders --partition 0 -o json")]
pub struct ProducersArgs {
    #[command(subcommand)]
    pub command: ProducersCommand,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum ProducersCommand {
    /// Show the producers each partition leader knows: id, epoch, last sequence, open
    /// transaction
    #[command(after_help = "Examples:
  vltava producers describe orders
  vltava producers describe orders --partition 0 --partition 3")]
    Describe {
        /// Topic
        topic: String,
        /// Only these partitions (repeatable) [default: all]
        #[arg(long)]
        partition: Vec<i32>,
    },
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  vltava transactions list
  vltava transactions list --state Ongoing
  vltava transactions describe my-app-1 -o json")]
pub struct TransactionsArgs {
    #[command(subcommand)]
    pub command: TransactionsCommand,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum TransactionsCommand {
    /// List transactional ids known to every broker's transaction coordinator
    #[command(after_help = "Examples:
  vltava transactions list
  vltava transactions list --state Ongoing --state PrepareCommit")]
    List {
        /// Only ids in this state (repeatable): Empty, Ongoing, PrepareCommit, PrepareAbort,
        /// CompleteCommit, CompleteAbort, PrepareEpochFence, Dead
        #[arg(long)]
        state: Vec<String>,
    },
    /// Show a transactional id's state, producer, timeout and partitions
    #[command(after_help = "Examples:
  vltava transactions describe my-app-1")]
    Describe {
        /// Transactional id
        transactional_id: String,
    },
}

fn kafka_error(what: String, code: i16) -> Error {
    raw::refusal(what, code, None)
}

#[derive(Debug, Serialize)]
struct ProducerJson {
    partition: i32,
    producer_id: i64,
    producer_epoch: i32,
    last_sequence: i32,
    last_timestamp: i64,
    coordinator_epoch: i32,
    current_transaction_start_offset: i64,
}

pub fn run_producers(args: ProducersArgs) -> Result<(), Error> {
    let settings = Settings::new(&args.client, &[])?;
    let ProducersCommand::Describe { topic, partition } = args.command;
    let mut conn = raw::bootstrap(&settings)?;
    let cluster = raw::metadata(&mut conn, Some(std::slice::from_ref(&topic)))?;
    let t = cluster
        .metadata
        .topics
        .first()
        .filter(|t| t.error_code == 0)
        .ok_or_else(|| Error::UnknownTopic {
            topic: topic.clone(),
        })?;
    // Partitions by leader: each leader describes its own.
    let mut by_leader: std::collections::BTreeMap<i32, Vec<i32>> = Default::default();
    for p in &t.partitions {
        if partition.is_empty() || partition.contains(&p.partition_index) {
            by_leader
                .entry(p.leader_id.0)
                .or_default()
                .push(p.partition_index);
        }
    }
    if let Some(missing) = partition
        .iter()
        .find(|p| !t.partitions.iter().any(|tp| tp.partition_index == **p))
    {
        return Err(Error::Usage(format!(
            "topic '{topic}' has no partition {missing}"
        )));
    }
    let mut rows = Vec::new();
    for (leader, partitions) in by_leader {
        let address = cluster
            .address(leader)
            .ok_or_else(|| Error::UnknownBroker {
                id: leader,
                known: cluster
                    .brokers
                    .iter()
                    .map(|(id, _)| id.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            })?;
        let mut c = raw::connect(address, &settings)?;
        let req = DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
            .with_name(TopicName(StrBytes::from_string(topic.clone())))
            .with_partition_indexes(partitions)]);
        let resp: DescribeProducersResponse = c.call(ApiKey::DescribeProducers, 0, &req)?;
        for tr in resp.topics {
            for pr in tr.partitions {
                if pr.error_code != 0 {
                    return Err(kafka_error(
                        format!("partition {topic}-{}", pr.partition_index),
                        pr.error_code,
                    ));
                }
                for s in pr.active_producers {
                    rows.push(ProducerJson {
                        partition: pr.partition_index,
                        producer_id: s.producer_id.0,
                        producer_epoch: s.producer_epoch,
                        last_sequence: s.last_sequence,
                        last_timestamp: s.last_timestamp,
                        coordinator_epoch: s.coordinator_epoch,
                        current_transaction_start_offset: s.current_txn_start_offset,
                    });
                }
            }
        }
    }
    rows.sort_by_key(|r| (r.partition, r.producer_id));
    match settings.output {
        Output::Json => print_json(&rows),
        Output::Table => {
            let mut table = Table::new(&[
                "PARTITION",
                "PRODUCER-ID",
                "EPOCH",
                "LAST-SEQUENCE",
                "LAST-TIMESTAMP",
                "COORDINATOR-EPOCH",
                "TXN-START-OFFSET",
            ]);
            for r in &rows {
                table.row([
                    r.partition.to_string(),
                    r.producer_id.to_string(),
                    r.producer_epoch.to_string(),
                    r.last_sequence.to_string(),
                    r.last_timestamp.to_string(),
                    r.coordinator_epoch.to_string(),
                    if r.current_transaction_start_offset < 0 {
                        "-".to_string()
                    } else {
                        r.current_transaction_start_offset.to_string()
                    },
                ]);
            }
            print(&table.render())
        }
    }
}

#[derive(Debug, Serialize)]
struct ListedJson {
    transactional_id: String,
    coordinator: i32,
    producer_id: i64,
    state: String,
}

#[derive(Debug, Serialize)]
struct PartitionJson {
    topic: String,
    partition: i32,
}

#[derive(Debug, Serialize)]
struct DescribedJson {
    transactional_id: String,
    coordinator: i32,
    state: String,
    producer_id: i64,
    producer_epoch: i16,
    transaction_timeout_ms: i32,
    transaction_start_time_ms: i64,
    partitions: Vec<PartitionJson>,
}

pub fn run_transactions(args: TransactionsArgs) -> Result<(), Error> {
    let settings = Settings::new(&args.client, &[])?;
    let mut conn = raw::bootstrap(&settings)?;
    match args.command {
        TransactionsCommand::List { state } => {
            let cluster = raw::metadata(&mut conn, Some(&[]))?;
            let mut rows = Vec::new();
            for (node, address) in &cluster.brokers {
                let mut c = raw::connect(address, &settings)?;
                let req = ListTransactionsRequest::default().with_state_filters(
                    state
                        .iter()
                        .map(|s| StrBytes::from_string(s.clone()))
                        .collect(),
                );
                let resp: ListTransactionsResponse = c.call(ApiKey::ListTransactions, 0, &req)?;
                if resp.error_code != 0 {
                    return Err(kafka_error(format!("broker {node}"), resp.error_code));
                }
                if let Some(unknown) = resp.unknown_state_filters.first() {
                    return Err(Error::Usage(format!(
                        "unknown transaction state '{unknown}'"
                    )));
                }
                rows.extend(resp.transaction_states.into_iter().map(|t| ListedJson {
                    transactional_id: t.transactional_id.0.to_string(),
                    coordinator: *node,
                    producer_id: t.producer_id.0,
                    state: t.transaction_state.to_string(),
                }));
            }
            rows.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
            match settings.output {
                Output::Json => print_json(&rows),
                Output::Table => {
                    let mut table =
                        Table::new(&["TRANSACTIONAL-ID", "COORDINATOR", "PRODUCER-ID", "STATE"]);
                    for r in &rows {
                        table.row([
                            r.transactional_id.clone(),
                            r.coordinator.to_string(),
                            r.producer_id.to_string(),
                            r.state.clone(),
                        ]);
                    }
                    print(&table.render())
                }
            }
        }
        TransactionsCommand::Describe { transactional_id } => {
            let req = FindCoordinatorRequest::default()
                .with_key_type(1)
                .with_coordinator_keys(vec![StrBytes::from_string(transactional_id.clone())]);
            let found: FindCoordinatorResponse = conn.call(ApiKey::FindCoordinator, 4, &req)?;
            let coordinator = found.coordinators.first().ok_or_else(|| Error::Refused {
                resource: format!("transactional id '{transactional_id}'"),
                reason: "no coordinator in the answer".into(),
            })?;
            if coordinator.error_code != 0 {
                return Err(kafka_error(
                    format!("transactional id '{transactional_id}'"),
                    coordinator.error_code,
                ));
            }
            let node = coordinator.node_id.0;
            let mut c = raw::connect(
                &format!("{}:{}", coordinator.host, coordinator.port),
                &settings,
            )?;
            let req = DescribeTransactionsRequest::default().with_transactional_ids(vec![
                TransactionalId(StrBytes::from_string(transactional_id.clone())),
            ]);
            let resp: DescribeTransactionsResponse =
                c.call(ApiKey::DescribeTransactions, 0, &req)?;
            let t = resp
                .transaction_states
                .into_iter()
                .next()
                .ok_or_else(|| Error::Refused {
                    resource: format!("transactional id '{transactional_id}'"),
                    reason: "empty answer".into(),
                })?;
            if t.error_code != 0 {
                return Err(kafka_error(
                    format!("transactional id '{transactional_id}'"),
                    t.error_code,
                ));
            }
            let described = DescribedJson {
                transactional_id,
                coordinator: node,
                state: t.transaction_state.to_string(),
                producer_id: t.producer_id.0,
                producer_epoch: t.producer_epoch,
                transaction_timeout_ms: t.transaction_timeout_ms,
                transaction_start_time_ms: t.transaction_start_time_ms,
                partitions: t
                    .topics
                    .iter()
                    .flat_map(|tp| {
                        tp.partitions.iter().map(|p| PartitionJson {
                            topic: tp.topic.0.to_string(),
                            partition: *p,
                        })
                    })
                    .collect(),
            };
            match settings.output {
                Output::Json => print_json(&described),
                Output::Table => {
                    let d = &described;
                    let partitions = d
                        .partitions
                        .iter()
                        .map(|p| format!("{}-{}", p.topic, p.partition))
                        .collect::<Vec<_>>()
                        .join(",");
                    let mut table = Table::new(&["FIELD", "VALUE"]);
                    for (k, v) in [
                        ("Transactional ID", d.transactional_id.clone()),
                        ("Coordinator", d.coordinator.to_string()),
                        ("State", d.state.clone()),
                        ("Producer ID", d.producer_id.to_string()),
                        ("Producer epoch", d.producer_epoch.to_string()),
                        ("Timeout ms", d.transaction_timeout_ms.to_string()),
                        ("Start time ms", d.transaction_start_time_ms.to_string()),
                        (
                            "Partitions",
                            if partitions.is_empty() {
                                "-".into()
                            } else {
                                partitions
                            },
                        ),
                    ] {
                        table.row([k.to_string(), v]);
                    }
                    print(&table.render())
                }
            }
        }
    }
}
