//! Client tools for any Kafka-compatible cluster, in one crate: what Kafka ships as
//! `kafka-topics`, `kafka-console-producer`/`-consumer`, `kafka-consumer-groups`,
//! `kafka-configs` and the perf tests, behind the `vltava` binary's subcommands.
//!
//! Everything speaks to brokers through librdkafka (the `rdkafka` crate), so the tools work
//! against Vltava and Apache Kafka alike and accept every librdkafka property (`-X`,
//! `--command-config`). Where rust-rdkafka has no wrapper (IncrementalAlterConfigs, the
//! controller id) `ffi` calls librdkafka's C API directly; where librdkafka has no call at
//! all (DescribeProducers, ListTransactions, DescribeTransactions) `raw` sends the request
//! itself, plaintext only. Nothing here knows the broker's internals.
//!
//! Each command group is one module with its clap arguments and a `run` function; the
//! formatting helpers (`table`, `template`, `timefmt`) are pure and unit-tested.
//! Exit codes: 0 success, 1 the operation failed, 2 bad usage ([`Error::exit_code`]).

pub mod acl;
pub mod client;
pub mod cluster;
pub mod config;
pub mod consume;
mod error;
mod ffi;
mod floor;
pub mod group;
pub mod output;
pub mod perf;
pub mod produce;
pub mod quota;
mod raw;
pub mod reassign;
pub mod table;
pub mod template;
pub mod timefmt;
pub mod topic;
pub mod transactions;
pub mod user;
pub mod value_format;

pub use error::Error;

use clap::Subcommand;

/// The client subcommands of `vltava`; the binary flattens this into its own command list.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, describe, alter and delete topics
    Topic(topic::TopicArgs),
    /// Send lines from stdin or a file as records
    Produce(produce::ProduceArgs),
    /// Print records of a topic
    Consume(consume::ConsumeArgs),
    /// List, describe, delete consumer groups and reset their offsets
    Group(group::GroupArgs),
    /// Describe and change topic and broker configs
    Config(config::ConfigArgs),
    /// Describe the cluster: id, controller, brokers
    Cluster(cluster::ClusterArgs),
    /// Measure produce and consume throughput and latency
    Perf(perf::PerfArgs),
    /// Describe the idempotent and transactional producers partitions know
    Producers(transactions::ProducersArgs),
    /// List and describe transactions
    Transactions(transactions::TransactionsArgs),
    /// Add, list and remove ACLs
    Acl(acl::AclArgs),
    /// Manage users' SCRAM credentials
    User(user::UserArgs),
    /// Set and describe client quotas (byte rates, request time, connection rates)
    Quota(quota::QuotaArgs),
}

/// Runs a client subcommand and returns the process exit code; errors are printed to stderr.
pub fn run(command: Command) -> i32 {
    let result = match command {
        Command::Topic(a) => topic::run(a),
        Command::Acl(a) => acl::run(a),
        Command::User(a) => user::run(a),
        Command::Quota(a) => quota::run(a),
        Command::Produce(a) => produce::run(a),
        Command::Consume(a) => consume::run(a),
        Command::Group(a) => group::run(a),
        Command::Config(a) => config::run(a),
        Command::Cluster(a) => cluster::run(a),
        Command::Perf(a) => perf::run(a),
        Command::Producers(a) => transactions::run_producers(a),
        Command::Transactions(a) => transactions::run_transactions(a),
    };
    match result {
        Ok(()) => 0,
        Err(Error::BrokenPipe) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod layering {
    /// The tools are clients: they may speak the protocol, never reach into the broker.
    #[test]
    fn depends_on_no_broker_internals() {
        let manifest = include_str!("../Cargo.toml");
        let deps = manifest
            .split("[dependencies]")
            .nth(1)
            .expect("a [dependencies] table");
        for internal in [
            "vltava-broker",
            "vltava-storage",
            "vltava-metadata",
            "vltava-record",
            "vltava-coordinator",
        ] {
            assert!(
                !deps.contains(internal),
                "vltava-cli must not depend on {internal}"
            );
        }
    }
}
