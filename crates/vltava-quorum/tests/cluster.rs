//! Quorums of real nodes (files on disk) joined by an in-process transport that can cut
//! nodes off: election, replication, failover, restart, snapshots, concurrent proposals.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;
use vltava_metadata::{MetadataImage, MetadataRecord};
use vltava_quorum::{ObserverConfig, Quorum, QuorumConfig, WriteError};

mod common;

use common::{Link, Router};

fn config(id: u64, voters: &[u64], dir: &Path, snapshot_every: u64) -> QuorumConfig {
    QuorumConfig {
        node_id: id,
        voters: voters.iter().map(|v| (*v, format!("node-{v}"))).collect(),
        dir: dir.join(format!("node-{id}")),
        election_timeout_ms: 300,
        heartbeat_interval_ms: 50,
        snapshot_every,
    }
}

async fn start(router: &Router, cfg: QuorumConfig) -> Arc<Quorum> {
    let id = cfg.node_id;
    let q = Quorum::open(
        cfg,
        Arc::new(Link {
            from: id,
            router: router.clone(),
        }),
    )
    .await
    .unwrap();
    router.nodes.lock().insert(id, Arc::clone(&q));
    q
}

async fn start_three(router: &Router, dir: &Path, snapshot_every: u64) -> Vec<Arc<Quorum>> {
    let mut nodes = Vec::new();
    for id in [1, 2, 3] {
        nodes.push(start(router, config(id, &[1, 2, 3], dir, snapshot_every)).await);
    }
    nodes
}

async fn stop(router: &Router, id: u64) {
    let q = router.nodes.lock().remove(&id).unwrap();
    q.shutdown().await;
}

fn topic(name: &str) -> MetadataRecord {
    MetadataRecord::TopicRecord {
        name: name.into(),
        topic_id: Uuid::new_v4(),
    }
}

/// Creates topic `name` unless it exists; `Err` if it does.
async fn create(q: &Quorum, name: &str) -> Result<(), WriteError<String>> {
    let name = name.to_string();
    q.write(Duration::from_secs(20), move |img: &MetadataImage| {
        if img.topic(&name).is_some() {
            return Err(format!("{name} exists"));
        }
        Ok((vec![topic(&name)], ()))
    })
    .await
}

fn names(q: &Quorum) -> Vec<String> {
    q.image().topics.keys().cloned().collect()
}

async fn converge(nodes: &[Arc<Quorum>], want: usize) {
    for _ in 0..200 {
        if nodes.iter().all(|q| q.image().topics.len() == want) {
            let first = names(&nodes[0]);
            assert!(nodes.iter().all(|q| names(q) == first));
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "no convergence on {want} topics: {:?}",
        nodes.iter().map(|q| names(q)).collect::<Vec<_>>()
    );
}

async fn leader_of(nodes: &[Arc<Quorum>]) -> u64 {
    for _ in 0..400 {
        let leaders: BTreeSet<_> = nodes
            .iter()
            .filter(|q| q.is_leader())
            .map(|q| q.node_id())
            .collect();
        if leaders.len() == 1 {
            return *leaders.iter().next().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no single leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_commits_and_restarts_with_its_image() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::default();
    let q = start(&router, config(1, &[], dir.path(), 1000)).await;
    assert!(q.wait_ready(Duration::from_secs(10)).await);
    for i in 0..5 {
        create(&q, &format!("t{i}")).await.unwrap();
    }
    assert!(matches!(
        create(&q, "t0").await,
        Err(WriteError::Refused(_))
    ));
    let before = q.image();
    stop(&router, 1).await;
    drop(q);
    let q = start(&router, config(1, &[], dir.path(), 1000)).await;
    assert!(q.wait_ready(Duration::from_secs(10)).await);
    assert_eq!(*q.image(), *before);
    create(&q, "t5").await.unwrap();
    assert_eq!(q.image().topics.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_agree_fail_over_and_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::default();
    let voters = [1, 2, 3];
    let nodes = start_three(&router, dir.path(), 1000).await;
    let leader = leader_of(&nodes).await;
    // Proposed from a follower and from the leader.
    let follower = nodes.iter().find(|q| q.node_id() != leader).unwrap();
    create(follower, "from-follower").await.unwrap();
    create(&nodes[(leader - 1) as usize], "from-leader")
        .await
        .unwrap();
    // A follower's refusal is decided on the image it has applied.
    assert!(matches!(
        create(follower, "from-leader").await,
        Err(WriteError::Refused(_))
    ));
    converge(&nodes, 2).await;

    // The leader dies; the others elect a new one and go on.
    stop(&router, leader).await;
    let rest: Vec<_> = nodes
        .iter()
        .filter(|q| q.node_id() != leader)
        .cloned()
        .collect();
    let new_leader = leader_of(&rest).await;
    assert_ne!(new_leader, leader);
    create(&rest[0], "after-failover").await.unwrap();
    create(&rest[1], "after-failover-2").await.unwrap();
    converge(&rest, 4).await;

    // The old leader restarts from its files and catches up.
    let back = start(&router, config(leader, &voters, dir.path(), 1000)).await;
    let mut all = rest.clone();
    all.push(back);
    converge(&all, 4).await;
    create(&all[2], "from-returned").await.unwrap();
    converge(&all, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_minority_cannot_commit_and_rejoins() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::default();
    let nodes = start_three(&router, dir.path(), 1000).await;
    let leader = leader_of(&nodes).await;
    create(&nodes[0], "a").await.unwrap();
    router.isolated.lock().insert(leader);
    let cut = Arc::clone(&nodes[(leader - 1) as usize]);
    let r = cut
        .write(Duration::from_secs(2), |_img: &MetadataImage| {
            Ok::<_, String>((vec![topic("lost")], ()))
        })
        .await;
    assert!(matches!(r, Err(WriteError::Timeout(_))), "{r:?}");
    let rest: Vec<_> = nodes
        .iter()
        .filter(|q| q.node_id() != leader)
        .cloned()
        .collect();
    leader_of(&rest).await;
    create(&rest[0], "b").await.unwrap();
    router.isolated.lock().clear();
    converge(&nodes, 2).await;
    assert!(cut.image().topic("lost").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_from_every_node_at_once_all_commit_once() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::default();
    let nodes = start_three(&router, dir.path(), 1000).await;
    leader_of(&nodes).await;
    let mut tasks = Vec::new();
    for q in &nodes {
        for i in 0..10 {
            let q = Arc::clone(q);
            tasks.push(tokio::spawn(async move {
                create(&q, &format!("n{}-{i}", q.node_id())).await
            }));
        }
    }
    // The same name from every node: exactly one wins.
    for q in &nodes {
        let q = Arc::clone(q);
        tasks.push(tokio::spawn(async move { create(&q, "contested").await }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 31);
    converge(&nodes, 31).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_purged_log_installs_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::default();
    let voters = [1, 2, 3];
    let nodes = start_three(&router, dir.path(), 5).await;
    let leader = leader_of(&nodes).await;
    let behind = if leader == 3 { 2 } else { 3 };
    stop(&router, behind).await;
    let rest: Vec<_> = nodes
        .iter()
        .filter(|q| q.node_id() != behind)
        .cloned()
        .collect();
    for i in 0..30 {
        create(&rest[i % 2], &format!("s{i}")).await.unwrap();
    }
    converge(&rest, 30).await;
    let back = start(&router, config(behind, &voters, dir.path(), 5)).await;
    let mut all = rest.clone();
    all.push(Arc::clone(&back));
    converge(&all, 30).await;
    // Installed from the leader when the leader had purged the entries it lacked; the leader
    // keeps entries a replication stream still reads, and then the node catches up from the
    // log and builds its own snapshot, a moment after applying.
    let snapshot = dir.path().join(format!("node-{behind}/snapshot.json"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !snapshot.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(snapshot.exists(), "the node that was behind has a snapshot");
    // And it restarts from its own snapshot.
    stop(&router, behind).await;
    drop(back);
    all.pop();
    let back = start(&router, config(behind, &voters, dir.path(), 5)).await;
    assert!(back.wait_ready(Duration::from_secs(10)).await);
    all.push(back);
    converge(&all, 30).await;
}

#[test]
fn a_torn_tail_is_cut_and_corruption_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cfg = config(1, &[], dir.path(), 1000);
    let node_dir: PathBuf = cfg.dir.clone();
    rt.block_on(async {
        let router = Router::default();
        let q = start(&router, cfg.clone()).await;
        assert!(q.wait_ready(Duration::from_secs(10)).await);
        create(&q, "kept").await.unwrap();
        stop(&router, 1).await;
    });
    let log = node_dir.join("raft.log");
    let good = std::fs::read(&log).unwrap();
    // A torn last line: cut, and the node starts with what was whole.
    let mut torn = good.clone();
    torn.extend_from_slice(b"0000 {\"log_id\":");
    std::fs::write(&log, &torn).unwrap();
    rt.block_on(async {
        let router = Router::default();
        let q = start(&router, cfg.clone()).await;
        assert!(q.wait_ready(Duration::from_secs(10)).await);
        assert!(q.image().topic("kept").is_some());
        stop(&router, 1).await;
    });
    // A bad line with good ones after it: refused.
    let good = std::fs::read(&log).unwrap();
    let mut bad = good.clone();
    let first_nl = bad.iter().position(|b| *b == b'\n').unwrap();
    bad[first_nl - 3] ^= 0x20;
    std::fs::write(&log, &bad).unwrap();
    let err = rt.block_on(Quorum::open(
        cfg,
        Arc::new(Link {
            from: 1,
            router: Router::default(),
        }),
    ));
    assert!(err.is_err());
}

/// A quorum directory written by this code (one node, a snapshot every 3 entries, so it holds
/// `raft.log`, `raft-state.json` and `snapshot.json`) is committed under
/// `tests/fixtures/quorum-v1`. It must open to the same image and take new writes, so a
/// change to the on-disk format cannot go unnoticed. `VLTAVA_WRITE_QUORUM_FIXTURE=1`
/// rewrites it (for a deliberate format change, with a way to read the old one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committed_quorum_directory_opens_to_the_same_image() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quorum-v1");
    let expected: Vec<String> = (0..5).map(|i| format!("fixture-{i}")).collect();
    if std::env::var("VLTAVA_WRITE_QUORUM_FIXTURE").is_ok() {
        let dir = tempfile::tempdir().unwrap();
        let router = Router::default();
        let q = start(&router, config(1, &[1], dir.path(), 3)).await;
        leader_of(std::slice::from_ref(&q)).await;
        for name in &expected {
            create(&q, name).await.unwrap();
        }
        stop(&router, 1).await;
        let _ = std::fs::remove_dir_all(&fixture);
        std::fs::create_dir_all(&fixture).unwrap();
        for e in std::fs::read_dir(dir.path().join("node-1")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), fixture.join(e.file_name())).unwrap();
        }
    }
    for f in ["raft.log", "raft-state.json", "snapshot.json"] {
        assert!(fixture.join(f).exists(), "fixture lacks {f}");
    }
    let dir = tempfile::tempdir().unwrap();
    let node_dir = dir.path().join("node-1");
    std::fs::create_dir_all(&node_dir).unwrap();
    for e in std::fs::read_dir(&fixture).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), node_dir.join(e.file_name())).unwrap();
    }
    let router = Router::default();
    let q = start(&router, config(1, &[1], dir.path(), 3)).await;
    converge(std::slice::from_ref(&q), expected.len()).await;
    assert_eq!(names(&q), expected);
    create(&q, "after-the-fixture").await.unwrap();
    assert_eq!(q.image().topics.len(), expected.len() + 1);
    stop(&router, 1).await;
}

/// KIP-853's voter changes: a fourth node started with the first three as voters waits as
/// nothing until it is added; added, it copies the log and votes. Then voters 1 and 2 are
/// removed (1 while it is down), and the quorum of 3 and 4 commits with them both gone,
/// which the original voters 1, 2, 3 could not have done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voters_are_added_and_removed_while_the_quorum_serves() {
    use vltava_quorum::VoterChangeError;
    let dir = tempfile::tempdir().unwrap();
    let router = Router::default();
    let mut nodes = start_three(&router, dir.path(), 1000).await;
    leader_of(&nodes).await;
    for i in 0..20 {
        create(&nodes[i % 3], &format!("t{i}")).await.unwrap();
    }
    let fourth = start(&router, config(4, &[1, 2, 3], dir.path(), 1000)).await;
    assert!(names(&fourth).is_empty());
    assert!(!fourth.wait_ready(Duration::from_millis(300)).await);

    let ask = Arc::clone(&nodes[1]);
    ask.add_voter(4, "node-4".into(), Duration::from_secs(20))
        .await
        .unwrap();
    nodes.push(Arc::clone(&fourth));
    converge(&nodes, 20).await;
    let voters = |q: &Quorum| -> Vec<u64> { q.status().voters.iter().map(|v| v.node_id).collect() };
    assert_eq!(voters(&nodes[0]), vec![1, 2, 3, 4]);
    assert_eq!(
        ask.add_voter(4, "node-4".into(), Duration::from_secs(5))
            .await,
        Err(VoterChangeError::AlreadyVoter(4))
    );

    // Node 1 goes down and is removed from the voters, then node 2.
    stop(&router, 1).await;
    nodes.remove(0);
    nodes[0]
        .remove_voter(1, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        nodes[0].remove_voter(1, Duration::from_secs(5)).await,
        Err(VoterChangeError::NotVoter(1))
    );
    nodes[2]
        .remove_voter(2, Duration::from_secs(20))
        .await
        .unwrap();
    stop(&router, 2).await;
    nodes.remove(0);
    let status = nodes[0].status();
    assert_eq!(voters(&nodes[0]), vec![3, 4], "{status:?}");
    leader_of(&nodes).await;
    create(&nodes[1], "after").await.unwrap();
    converge(&nodes, 21).await;

    // The membership survives a restart of the remaining voters.
    stop(&router, 3).await;
    stop(&router, 4).await;
    let three = start(&router, config(3, &[1, 2, 3], dir.path(), 1000)).await;
    let four = start(&router, config(4, &[1, 2, 3], dir.path(), 1000)).await;
    let nodes = vec![three, four];
    leader_of(&nodes).await;
    create(&nodes[0], "restarted").await.unwrap();
    converge(&nodes, 22).await;
    assert_eq!(voters(&nodes[0]), vec![3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observers_follow_the_leader_write_through_it_and_are_seen_alive() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::default();
    // Snapshots every 2 entries, then a restart: the leader no longer has the early batches
    // and must hand a new observer the whole image.
    let nodes = start_three(&router, dir.path(), 2).await;
    leader_of(&nodes).await;
    for i in 0..6 {
        create(&nodes[i % 3], &format!("t{i}")).await.unwrap();
    }
    converge(&nodes, 6).await;
    for id in [1, 2, 3] {
        stop(&router, id).await;
    }
    drop(nodes);
    let nodes = start_three(&router, dir.path(), 2).await;
    leader_of(&nodes).await;

    let observer = Quorum::observe(
        ObserverConfig {
            node_id: 10,
            controllers: vec![(Some(2), "node-2".into()), (None, "node-3".into())],
        },
        Arc::new(Link {
            from: 10,
            router: router.clone(),
        }),
    )
    .unwrap();
    assert!(observer.wait_ready(Duration::from_secs(10)).await);
    assert!(observer.is_observer() && !observer.is_leader());
    let mut all = nodes.clone();
    all.push(Arc::clone(&observer));
    converge(&all, 6).await;

    // Its writes are decided on its own image and committed by the leader.
    create(&observer, "from-observer").await.unwrap();
    assert!(matches!(
        create(&observer, "t0").await,
        Err(WriteError::Refused(_))
    ));
    create(&nodes[0], "from-voter").await.unwrap();
    converge(&all, 8).await;

    // The leader knows it is there, and DescribeQuorum lists it.
    let leader = leader_of(&nodes).await;
    let lq = &nodes[(leader - 1) as usize];
    let silence = lq.silence();
    assert!(
        matches!(silence.get(&10), Some(Some(d)) if *d < Duration::from_secs(2)),
        "{silence:?}"
    );
    assert!(lq.status().observers.iter().any(|o| o.node_id == 10));
    assert_eq!(observer.status().leader, Some(leader));

    // The leader dies: the observer finds the next one and goes on.
    stop(&router, leader).await;
    let rest: Vec<_> = nodes
        .iter()
        .filter(|q| q.node_id() != leader)
        .cloned()
        .collect();
    let next = leader_of(&rest).await;
    create(&observer, "after-failover").await.unwrap();
    let mut rest_and_observer = rest.clone();
    rest_and_observer.push(Arc::clone(&observer));
    converge(&rest_and_observer, 9).await;
    assert_eq!(observer.leader(), Some(next));
    observer.shutdown().await;
}
