//! The end-to-end tests: real `vltava` brokers (in process or as processes) and real clients.
//!
//! One test binary, not one per file: each linked binary carries the broker and librdkafka,
//! and two dozen of them filled CI's disk.

mod common;

mod acls;
mod admin;
mod bad_input;
mod broker_logs;
mod cli;
mod cluster;
mod compaction;
mod context;
mod core_defects;
mod durability;
mod full_disk;
mod group_protocol;
mod groups;
mod idempotence;
mod layering;
mod memory;
mod metadata_upgrade;
mod metrics;
mod offsets_fixture;
mod power_loss;
mod protocol;
mod quotas;
mod registry;
mod roundtrip;
mod security;
mod splice;
mod transactions;
