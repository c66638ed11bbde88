//! The crates' dependencies point one way (ARCHITECTURE.md, "Code map"): a crate may use only
//! crates below it, the pure crates stay free of the network and the runtime, and the client
//! tools never reach into the broker.

use std::collections::BTreeMap;
use std::process::Command;

/// Workspace crates from the bottom up. Each may depend only on crates before it.
const LAYERS: &[&str] = &[
    "vltava-types",
    "vltava-sasl",
    "vltava-record",
    "vltava-storage",
    "vltava-metadata",
    "vltava-protocol",
    "vltava-coordinator",
    "vltava-quorum",
    "vltava-broker",
    "vltava-registry",
    "vltava-cli",
    "vltava",
];

/// Outside crates a workspace crate must not use, and why.
const FORBIDDEN: &[(&str, &str, &str)] = &[
    ("vltava-record", "tokio", "the record layout is pure"),
    (
        "vltava-storage",
        "tokio",
        "storage knows nothing of the network or the runtime",
    ),
    (
        "vltava-storage",
        "proto-kafka",
        "storage knows nothing of requests",
    ),
    ("vltava-metadata", "tokio", "metadata logic is pure"),
    (
        "vltava-metadata",
        "proto-kafka",
        "metadata records are ours, not wire messages",
    ),
    (
        "vltava-coordinator",
        "tokio",
        "coordinators are state machines without sockets or clocks",
    ),
    (
        "vltava-coordinator",
        "proto-kafka",
        "coordinators answer in their own types",
    ),
    (
        "vltava-quorum",
        "proto-kafka",
        "the quorum hands bytes to a transport; the broker owns the wire",
    ),
    (
        "vltava-registry",
        "vltava-quorum",
        "the registry is a Kafka client and must work against any Kafka cluster",
    ),
    (
        "vltava-cli",
        "vltava-broker",
        "the tools must work against any Kafka cluster",
    ),
    (
        "vltava-cli",
        "vltava-storage",
        "the tools must work against any Kafka cluster",
    ),
    (
        "vltava-registry",
        "vltava-broker",
        "the registry is a Kafka client and must work against any Kafka cluster",
    ),
    (
        "vltava-registry",
        "vltava-storage",
        "the registry is a Kafka client and must work against any Kafka cluster",
    ),
    (
        "vltava-registry",
        "vltava-coordinator",
        "the registry is a Kafka client and must work against any Kafka cluster",
    ),
];

/// Crates that only `vltava-protocol` may name.
const PROTOCOL_ONLY: &[&str] = &["proto-kafka"];

#[test]
fn dependencies_point_down() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut deps: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
    for p in meta["packages"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap().to_string();
        let list = p["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let dev = d["kind"].as_str() == Some("dev");
                (d["name"].as_str().unwrap().to_string(), dev)
            })
            .collect();
        deps.insert(name, list);
    }
    let rank = |n: &str| LAYERS.iter().position(|l| *l == n);
    let mut problems = Vec::new();
    for (krate, list) in &deps {
        let Some(me) = rank(krate) else {
            problems.push(format!("{krate} is not placed in LAYERS"));
            continue;
        };
        for (dep, dev) in list {
            if let Some(them) = rank(dep) {
                // Tests of the top crate drive everything; elsewhere dev-dependencies obey
                // the same order as normal ones.
                if them >= me && !(*dev && krate == "vltava") {
                    problems.push(format!("{krate} depends on {dep}, which is not below it"));
                }
            }
            if !dev {
                for (k, d, why) in FORBIDDEN {
                    if k == krate && d == dep {
                        problems.push(format!("{krate} depends on {dep}: {why}"));
                    }
                }
                if PROTOCOL_ONLY.contains(&dep.as_str()) && krate != "vltava-protocol" {
                    problems.push(format!("{krate} names {dep}; only vltava-protocol may"));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "layering broken:\n{}",
        problems.join("\n")
    );
    // The table itself must name real crates.
    for l in LAYERS {
        assert!(
            deps.contains_key(*l),
            "LAYERS names {l}, which is not in the workspace"
        );
    }
}
