//! The Vltava broker: listeners, request dispatch, one handler module per API group, the
//! partition table that wraps storage logs, the controller that commits metadata records, and
//! the coordinator runtime that hosts the group coordinator's shards.
//!
//! Dependencies point one way: `vltava-protocol`, `vltava-record`, `vltava-storage` and
//! `vltava-metadata` know nothing of this crate.

pub mod broker;
pub mod config;
pub mod context;
pub mod controller;
pub mod coordinator_log;
pub mod coordinator_runtime;
pub mod frame_writer;
pub mod group_coordinator;
pub mod handlers;
pub mod log_cleaner;
pub mod memory_pool;
pub mod network;
pub mod partition;
pub mod producer_ids;
pub mod quorum_transport;
pub mod quota;
pub mod replica_fetcher;
pub mod replica_manager;
pub mod replica_metrics;
pub mod replication_quota;
#[cfg(test)]
mod replication_sim;
pub mod request_metrics;
pub mod security;
pub mod splice;
pub mod topic_metrics;
pub mod txn_coordinator;

pub use broker::{
    is_cluster_id, new_cluster_id, start, start_with, Broker, BrokerError, BrokerHandle,
    StartOptions,
};
pub use config::{BrokerConfig, ConfigError};
