//! Seeded fault schedules against a three-voter quorum: nodes cut off and healed, stopped
//! and restarted from their files, while proposals come from every node. Afterwards the
//! checker asks what Raft promises: every acknowledged write is on every node, all nodes
//! hold the same image, no term ever had two leaders, and no node's applied index went
//! backwards while it ran.
//!
//! The schedule is a pure function of the seed, so a failing seed replays the same faults
//! (thread timing still varies). `VLTAVA_FAULT_SEEDS=1..200` runs a longer sweep.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use uuid::Uuid;
use vltava_metadata::{MetadataImage, MetadataRecord};
use vltava_quorum::{Quorum, QuorumConfig};

mod common;

use common::{Link, Router as Net};

/// xorshift64*: the schedule's only source of choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const VOTERS: [u64; 3] = [1, 2, 3];

fn config(id: u64, dir: &Path) -> QuorumConfig {
    QuorumConfig {
        node_id: id,
        voters: VOTERS.iter().map(|v| (*v, format!("node-{v}"))).collect(),
        dir: dir.join(format!("node-{id}")),
        election_timeout_ms: 200,
        heartbeat_interval_ms: 40,
        // Small, so snapshots, purges and snapshot installs happen under faults too.
        snapshot_every: 7,
    }
}

async fn start(net: &Net, dir: &Path, id: u64) {
    let q = Quorum::open(
        config(id, dir),
        Arc::new(Link {
            from: id,
            router: net.clone(),
        }),
    )
    .await
    .unwrap();
    net.nodes.lock().insert(id, q);
}

async fn stop(net: &Net, id: u64) {
    let q = net.nodes.lock().remove(&id);
    if let Some(q) = q {
        q.shutdown().await;
    }
}

#[derive(Default)]
struct Observed {
    /// Term → the leaders any node reported in it.
    leaders: BTreeMap<u64, BTreeSet<u64>>,
    /// Node → the highest applied index seen in its current run.
    applied: BTreeMap<u64, u64>,
    violations: Vec<String>,
}

fn observe(net: &Net, seen: &mut Observed) {
    let nodes: Vec<_> = net.nodes.lock().values().cloned().collect();
    for q in nodes {
        let s = q.status();
        if let Some(l) = s.leader {
            seen.leaders.entry(s.term).or_default().insert(l);
        }
        let applied = q.applied();
        let prev = seen.applied.entry(q.node_id()).or_insert(0);
        if applied < *prev {
            seen.violations.push(format!(
                "node {} applied index went from {prev} to {applied}",
                q.node_id()
            ));
        }
        *prev = applied;
    }
}

async fn run(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let net = Net::default();
    for id in VOTERS {
        start(&net, dir.path(), id).await;
    }
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut seen = Observed::default();
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let mut down: Option<u64> = None;
    let mut writers = Vec::new();
    for step in 0..40u64 {
        match rng.below(10) {
            // Cut one node off (a minority), or heal.
            0 | 1 => {
                let mut iso = net.isolated.lock();
                if iso.is_empty() {
                    iso.insert(1 + rng.below(3));
                } else {
                    iso.clear();
                }
            }
            // Crash a node (its unsynced nothing: the log fsyncs every append), or restart it.
            2 => match down.take() {
                Some(id) => start(&net, dir.path(), id).await,
                None => {
                    let id = 1 + rng.below(3);
                    // At most one node away at a time, so a majority can always proceed.
                    if !net.isolated.lock().contains(&id) {
                        net.isolated.lock().clear();
                    }
                    stop(&net, id).await;
                    seen.applied.remove(&id);
                    down = Some(id);
                }
            },
            // Proposals from whichever nodes run.
            _ => {
                let nodes: Vec<_> = net.nodes.lock().values().cloned().collect();
                let q = Arc::clone(&nodes[rng.below(nodes.len() as u64) as usize]);
                let name = format!("s{seed}-{step}");
                let acked = Arc::clone(&acked);
                writers.push(tokio::spawn(async move {
                    let n = name.clone();
                    let r = q
                        .write(Duration::from_secs(3), move |img: &MetadataImage| {
                            if img.topic(&n).is_some() {
                                return Err("exists");
                            }
                            let rec = MetadataRecord::TopicRecord {
                                name: n.clone(),
                                topic_id: Uuid::new_v4(),
                            };
                            Ok((vec![rec], ()))
                        })
                        .await;
                    if r.is_ok() {
                        acked.lock().insert(name);
                    }
                }));
            }
        }
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(25)).await;
            observe(&net, &mut seen);
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    // Heal everything and let the quorum settle.
    net.isolated.lock().clear();
    if let Some(id) = down.take() {
        start(&net, dir.path(), id).await;
    }
    let acked = acked.lock().clone();
    let mut settled = false;
    for _ in 0..400 {
        observe(&net, &mut seen);
        let images: Vec<BTreeSet<String>> = net
            .nodes
            .lock()
            .values()
            .map(|q| q.image().topics.keys().cloned().collect())
            .collect();
        if images.len() == 3
            && images.iter().all(|i| *i == images[0])
            && acked.iter().all(|a| images[0].contains(a))
        {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let images: Vec<(u64, BTreeSet<String>)> = net
        .nodes
        .lock()
        .iter()
        .map(|(id, q)| (*id, q.image().topics.keys().cloned().collect()))
        .collect();
    for id in VOTERS {
        stop(&net, id).await;
    }
    assert!(
        seen.violations.is_empty(),
        "seed {seed}: {:?}",
        seen.violations
    );
    for (term, leaders) in &seen.leaders {
        assert!(
            leaders.len() == 1,
            "seed {seed}: term {term} had leaders {leaders:?}"
        );
    }
    assert!(
        settled,
        "seed {seed}: no agreement after healing; acknowledged {acked:?}, images {images:?}"
    );
    assert!(
        !acked.is_empty(),
        "seed {seed}: the schedule acknowledged no write at all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_fault_schedules_keep_raft_promises() {
    let seeds: Vec<u64> = match std::env::var("VLTAVA_FAULT_SEEDS") {
        Ok(range) => {
            let (a, b) = range.split_once("..").expect("VLTAVA_FAULT_SEEDS=FROM..TO");
            (a.parse().unwrap()..b.parse().unwrap()).collect()
        }
        Err(_) => vec![1, 2, 3],
    };
    for seed in seeds {
        run(seed).await;
    }
}
