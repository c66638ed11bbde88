//! A three-node cluster of `vltava broker` processes in combined mode (each a broker and a
//! voter of the metadata quorum): metadata agreed on by all, partitions spread over the
//! brokers, clients sent to each partition's leader, and the quorum surviving the loss of
//! its leader.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};
use vltava_protocol::messages::{DescribeQuorumRequest, DescribeQuorumResponse, TopicName};
use vltava_protocol::ApiKey;

struct Node {
    id: i32,
    child: Child,
    addr: SocketAddr,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(dir: &Path, id: i32, voters: &str, controller_port: u16) -> Child {
    spawn_with(dir, id, voters, controller_port, &[])
}

fn spawn_with(dir: &Path, id: i32, voters: &str, controller_port: u16, extra: &[&str]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vltava"));
    cmd.args(["broker", "--node-id", &id.to_string()]);
    for o in extra {
        cmd.args(["--override", o]);
    }
    cmd.arg("--data-dir")
        .arg(dir.join(format!("node-{id}")))
        .arg("--listeners")
        .arg(format!(
            "PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:{controller_port}"
        ))
        .args([
            "--override",
            &format!("controller.quorum.voters={voters}"),
            "--override",
            "controller.listener.names=CONTROLLER",
            "--override",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "--override",
            "controller.quorum.election.timeout.ms=500",
            "--override",
            "offsets.topic.num.partitions=3",
            "--override",
            "broker.session.timeout.ms=3000",
        ])
        .env(
            "RUST_LOG",
            std::env::var("CLUSTER_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn vltava")
}

fn ready(mut child: Child, id: i32) -> Node {
    let addr = common::ready_addr(&mut child);
    Node { id, child, addr }
}

/// Starts nodes 1..=3 together, as an operator would.
fn start_cluster(dir: &Path) -> (Vec<Node>, String, Vec<u16>) {
    start_cluster_with(dir, &[])
}

fn start_cluster_with(dir: &Path, extra: &[&str]) -> (Vec<Node>, String, Vec<u16>) {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let voters = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let children: Vec<Child> = (1..=3)
        .map(|id| spawn_with(dir, id, &voters, ports[id as usize - 1], extra))
        .collect();
    let nodes = children
        .into_iter()
        .zip(1..)
        .map(|(c, id)| ready(c, id))
        .collect();
    (nodes, voters, ports)
}

fn bootstrap(nodes: &[&Node]) -> String {
    nodes
        .iter()
        .map(|n| n.addr.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Leader by partition and the broker ids, as `node` describes the cluster.
fn describe(node: &Node, topic: &str) -> (BTreeMap<i32, i32>, BTreeSet<i32>) {
    let consumer: BaseConsumer = common::client_config(node.addr)
        .set("group.id", "describe")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let brokers = md.brokers().iter().map(|b| b.id()).collect();
    let leaders = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| (p.id(), p.leader())))
        .collect();
    (leaders, brokers)
}

fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn consume_all(bootstrap: &str, topic: &str, expect: usize) -> Vec<(i32, String)> {
    let consumer: BaseConsumer = common::client_config(bootstrap.parse().unwrap_or_else(|_| {
        // client_config takes one address; the others come from metadata.
        bootstrap.split(',').next().unwrap().parse().unwrap()
    }))
    .set("group.id", "cluster-reader")
    .set("auto.offset.reset", "earliest")
    .create()
    .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < expect && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let v = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
            got.push((m.partition(), v));
        }
    }
    consumer
        .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        .unwrap();
    got
}

#[test]
fn three_nodes_share_metadata_and_partitions_and_survive_the_quorum_leader() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, voters, ports) = start_cluster(dir.path());
    let all = bootstrap(&nodes.iter().collect::<Vec<_>>());

    // Every node lists all three brokers.
    for n in &nodes {
        wait_for("three brokers in metadata", Duration::from_secs(20), || {
            let (_, brokers) = describe(n, "__none__");
            (brokers == BTreeSet::from([1, 2, 3])).then_some(())
        });
    }

    // A topic created through node 1 spreads its partitions' leaders over the brokers,
    // and every node tells the same story.
    let rt = common::runtime();
    let admin: AdminClient<DefaultClientContext> =
        common::client_config(nodes[0].addr).create().unwrap();
    let created = rt
        .block_on(admin.create_topics(
            &[NewTopic::new("spread", 6, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        ))
        .unwrap();
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    let (leaders, _) = wait_for("six partitions", Duration::from_secs(20), || {
        let d = describe(&nodes[2], "spread");
        (d.0.len() == 6).then_some(d)
    });
    let leader_set: BTreeSet<i32> = leaders.values().copied().collect();
    assert_eq!(leader_set, BTreeSet::from([1, 2, 3]), "{leaders:?}");
    for n in &nodes {
        assert_eq!(describe(n, "spread").0, leaders);
    }

    // librdkafka with its defaults, bootstrapped from one node, reaches every leader.
    let producer =
        common::checked_producer(common::client_config(nodes[1].addr).set("acks", "all"));
    for i in 0..600 {
        let key = format!("k{i}");
        let value = format!("v{i}");
        producer
            .send(BaseRecord::to("spread").key(&key).payload(&value))
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let delivered = producer.context().take();
    assert_eq!(delivered.len(), 600);
    assert!(delivered.iter().all(|d| d.is_ok()), "{delivered:?}");
    let parts: BTreeSet<i32> = delivered.iter().map(|d| d.as_ref().unwrap().0).collect();
    assert_eq!(parts.len(), 6);

    // A group reads everything back through whichever node coordinates it.
    let got = consume_all(&all, "spread", 600);
    let values: BTreeSet<String> = got.into_iter().map(|(_, v)| v).collect();
    assert_eq!(values.len(), 600);

    // The quorum leader dies; the other two elect a new one and metadata changes go on.
    let controller = {
        use vltava_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
        let mut raw = common::RawClient::connect(nodes[0].addr);
        let req = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
            .with_topic_name(TopicName("__cluster_metadata".into()))
            .with_partitions(vec![PartitionData::default()])]);
        let q: DescribeQuorumResponse = raw.call(ApiKey::DescribeQuorum, 1, &req);
        let p = &q.topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        assert_eq!(p.current_voters.len(), 3);
        p.leader_id.0
    };
    assert!((1..=3).contains(&controller), "controller {controller}");
    let victim = nodes.remove(nodes.iter().position(|n| n.id == controller).unwrap());
    let victim_id = victim.id;
    drop(victim); // kill -9
    let survivor = &nodes[0];
    let admin: AdminClient<DefaultClientContext> =
        common::client_config(survivor.addr).create().unwrap();
    wait_for(
        "a topic created after the loss",
        Duration::from_secs(30),
        || {
            let r = rt.block_on(admin.create_topics(
                &[NewTopic::new("after", 2, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            ));
            let r = r.ok()?;
            match &r[0] {
                Ok(_) => Some(()),
                Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => Some(()),
                Err(_) => None,
            }
        },
    );
    // The dead broker is fenced: gone from metadata, its partitions without a leader.
    let victim_partitions: BTreeSet<i32> = leaders
        .iter()
        .filter(|(_, l)| **l == victim_id)
        .map(|(p, _)| *p)
        .collect();
    for n in &nodes {
        wait_for("the dead broker fenced", Duration::from_secs(20), || {
            let (now, brokers) = describe(n, "spread");
            let leaderless: BTreeSet<i32> = now
                .iter()
                .filter(|(_, l)| **l == -1)
                .map(|(p, _)| *p)
                .collect();
            (brokers.len() == 2 && leaderless == victim_partitions).then_some(())
        });
    }
    for n in &nodes {
        wait_for("the new topic everywhere", Duration::from_secs(20), || {
            (describe(n, "after").0.len() == 2).then_some(())
        });
    }

    // The killed node restarts from its files and catches up.
    let voters_port = ports[victim_id as usize - 1];
    let back = ready(
        spawn(dir.path(), victim_id, &voters, voters_port),
        victim_id,
    );
    // Back, it leads its partitions again, and every partition takes writes.
    wait_for(
        "the restarted broker leading again",
        Duration::from_secs(20),
        || {
            let (now, brokers) = describe(&nodes[0], "spread");
            (brokers.len() == 3 && now == leaders).then_some(())
        },
    );
    let producer = common::checked_producer(common::client_config(back.addr).set("acks", "all"));
    for p in 0..6 {
        producer
            .send(
                BaseRecord::to("spread")
                    .partition(p)
                    .key("again")
                    .payload("again"),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let delivered = producer.context().take();
    assert!(
        delivered.iter().all(|d| d.is_ok()) && delivered.len() == 6,
        "{delivered:?}"
    );
    wait_for(
        "the restarted node to see the new topic",
        Duration::from_secs(30),
        || (describe(&back, "after").0.len() == 2).then_some(()),
    );
}

/// Each partition's leader and ISR, as `node` describes `topic`.
fn partitions(node: &Node, topic: &str) -> BTreeMap<i32, (i32, BTreeSet<i32>)> {
    let consumer: BaseConsumer = common::client_config(node.addr)
        .set("group.id", "describe")
        .create()
        .unwrap();
    let Ok(md) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
        return BTreeMap::new();
    };
    md.topics()
        .iter()
        .flat_map(|t| {
            t.partitions()
                .iter()
                .map(|p| (p.id(), (p.leader(), p.isr().iter().copied().collect())))
        })
        .collect()
}

/// Delivery reports carrying the value each record had.
#[derive(Clone, Default)]
struct Acked(std::sync::Arc<std::sync::Mutex<Vec<Report>>>);

/// A record's value and whether it was acknowledged.
type Report = (String, Result<(), String>);

impl rdkafka::ClientContext for Acked {}
impl rdkafka::producer::ProducerContext for Acked {
    type DeliveryOpaque = Box<String>;
    fn delivery(&self, r: &rdkafka::producer::DeliveryResult<'_>, value: Box<String>) {
        let r = match r {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.to_string()),
        };
        self.0.lock().unwrap().push((*value, r));
    }
}

fn sigterm(node: Node) {
    let status = Command::new("kill")
        .args(["-TERM", &node.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut node = node;
    let exit = node.child.wait().unwrap();
    assert!(exit.success(), "node {} exited with {exit}", node.id);
}

/// The bytes of every `.log` segment of a partition's directory, in offset order.
fn log_bytes(dir: &Path, topic: &str, partition: i32) -> Vec<u8> {
    let pdir = dir.join(format!("{topic}-{partition}"));
    let mut segs: Vec<_> = std::fs::read_dir(&pdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segs.sort();
    segs.iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect()
}

/// RF=3 with min.insync.replicas=2: the leader of a partition is killed with `kill -9`
/// while an idempotent producer (acks=all, librdkafka's default) writes; every
/// acknowledged record is read back exactly once, and once the node is back and the
/// cluster is stopped, all three replicas hold the same bytes.
#[test]
fn replicated_partitions_survive_their_leader() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, voters, ports) =
        start_cluster_with(dir.path(), &["replica.lag.time.max.ms=4000"]);
    let all = bootstrap(&nodes.iter().collect::<Vec<_>>());
    let rt = common::runtime();
    let admin: AdminClient<DefaultClientContext> =
        common::client_config(nodes[0].addr).create().unwrap();
    let created = rt
        .block_on(admin.create_topics(
            &[NewTopic::new("rep", 3, TopicReplication::Fixed(3)).set("min.insync.replicas", "2")],
            &AdminOptions::new(),
        ))
        .unwrap();
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    let before = wait_for("three in-sync replicas", Duration::from_secs(20), || {
        let d = partitions(&nodes[0], "rep");
        (d.len() == 3 && d.values().all(|(l, isr)| *l > 0 && isr.len() == 3)).then_some(d)
    });

    let acked = Acked::default();
    let producer: rdkafka::producer::BaseProducer<Acked> = common::client_config(nodes[0].addr)
        .set("bootstrap.servers", &all)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create_with_context(acked.clone())
        .unwrap();
    let total = 6000;
    let victim_id = before[&0].0;
    let mut killed = false;
    for i in 0..total {
        let v = format!("v{i}");
        loop {
            match producer.send(
                BaseRecord::with_opaque_to("rep", Box::new(v.clone()))
                    .key(&v)
                    .payload(&v),
            ) {
                Ok(()) => break,
                Err((e, _)) => {
                    assert!(
                        matches!(
                            e.rdkafka_error_code(),
                            Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        ),
                        "{e}"
                    );
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        if i % 50 == 0 {
            producer.poll(Duration::from_millis(1));
            std::thread::sleep(Duration::from_millis(2));
        }
        if !killed && i == total / 3 {
            killed = true;
            let at = nodes.iter().position(|n| n.id == victim_id).unwrap();
            drop(nodes.remove(at)); // kill -9 under load
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    let reports = std::mem::take(&mut *acked.0.lock().unwrap());
    assert_eq!(reports.len(), total);
    let ok: BTreeSet<String> = reports
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(v, _)| v.clone())
        .collect();
    let failed: Vec<_> = reports.iter().filter(|(_, r)| r.is_err()).collect();
    // The idempotent producer retries through the failover: nothing should fail.
    assert!(
        failed.is_empty(),
        "{} failed, first {:?}",
        failed.len(),
        failed.first()
    );

    // A new leader from the ISR for the victim's partitions.
    let after = wait_for("leaders on the live nodes", Duration::from_secs(30), || {
        let d = partitions(&nodes[0], "rep");
        (d.len() == 3 && d.values().all(|(l, _)| *l > 0 && *l != victim_id)).then_some(d)
    });
    assert!(after.values().all(|(l, isr)| isr.contains(l)), "{after:?}");

    // Every acknowledged record, exactly once.
    let live = bootstrap(&nodes.iter().collect::<Vec<_>>());
    let got = consume_all(&live, "rep", ok.len());
    let mut seen = BTreeMap::new();
    for (_, v) in &got {
        *seen.entry(v.clone()).or_insert(0) += 1;
    }
    let missing: Vec<_> = ok
        .iter()
        .filter(|v| !seen.contains_key(*v))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "acknowledged but not read: {missing:?}");
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(dups.is_empty(), "read more than once: {dups:?}");

    // The victim comes back, catches up and rejoins every ISR.
    let back = ready(
        spawn_with(
            dir.path(),
            victim_id,
            &voters,
            ports[victim_id as usize - 1],
            &["replica.lag.time.max.ms=4000"],
        ),
        victim_id,
    );
    nodes.push(back);
    wait_for(
        "the victim back in every ISR",
        Duration::from_secs(60),
        || {
            let d = partitions(&nodes[0], "rep");
            (d.len() == 3 && d.values().all(|(_, isr)| isr.len() == 3)).then_some(())
        },
    );
    // In sync means caught up: stopped cleanly, the replicas' logs are identical.
    let ids: Vec<i32> = nodes.iter().map(|n| n.id).collect();
    for n in nodes {
        sigterm(n);
    }
    for p in 0..3 {
        let logs: Vec<Vec<u8>> = ids
            .iter()
            .map(|id| log_bytes(&dir.path().join(format!("node-{id}")), "rep", p))
            .collect();
        assert!(!logs[0].is_empty());
        assert!(
            logs.iter().all(|l| *l == logs[0]),
            "partition {p}: replicas differ ({:?} bytes)",
            logs.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }
}

/// The metadata quorum's leader, as `node` answers DescribeQuorum.
fn quorum_leader(node: &Node) -> i32 {
    use vltava_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    let mut raw = common::RawClient::connect(node.addr);
    let req = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(TopicName("__cluster_metadata".into()))
        .with_partitions(vec![PartitionData::default()])]);
    let q: DescribeQuorumResponse = raw.call(ApiKey::DescribeQuorum, 1, &req);
    q.topics[0].partitions[0].leader_id.0
}

fn signal(node: &Node, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &node.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn set_topic_config(admin: &AdminClient<DefaultClientContext>, topic: &str, k: &str, v: &str) {
    let rt = common::runtime();
    let r = rt
        .block_on(
            admin.alter_configs(
                &[
                    rdkafka::admin::AlterConfig::new(rdkafka::admin::ResourceSpecifier::Topic(
                        topic,
                    ))
                    .set(k, v),
                ],
                &AdminOptions::new(),
            ),
        )
        .unwrap();
    assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
}

/// A follower stopped with SIGSTOP leaves the ISR after `replica.lag.time.max.ms`. With
/// `min.insync.replicas=3` an acks=all write waiting on it is answered
/// NOT_ENOUGH_REPLICAS_AFTER_APPEND and later ones NOT_ENOUGH_REPLICAS, while acks=1 goes on;
/// at 2 acks=all goes on too. Continued, the follower catches up and rejoins the ISR, and
/// the replicas end identical.
#[test]
fn a_stopped_follower_leaves_the_isr_and_rejoins() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, _, _) = start_cluster_with(dir.path(), &["replica.lag.time.max.ms=1500"]);
    let rt = common::runtime();
    let admin: AdminClient<DefaultClientContext> =
        common::client_config(nodes[0].addr).create().unwrap();
    let created = rt
        .block_on(admin.create_topics(
            &[NewTopic::new("isr", 1, TopicReplication::Fixed(3)).set("min.insync.replicas", "3")],
            &AdminOptions::new(),
        ))
        .unwrap();
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    let (leader, _) = wait_for("three in-sync replicas", Duration::from_secs(20), || {
        let d = partitions(&nodes[0], "isr");
        d.get(&0)
            .filter(|(l, isr)| *l > 0 && isr.len() == 3)
            .cloned()
    });
    let leader_node = nodes.iter().find(|n| n.id == leader).unwrap();
    // Not the quorum leader either, so no election slows the ISR change down.
    let controller = quorum_leader(&nodes[0]);
    let follower = nodes
        .iter()
        .find(|n| n.id != leader && n.id != controller)
        .unwrap();
    let mut raw = common::RawClient::connect(leader_node.addr);
    assert_eq!(raw.produce_values("isr", -1, &[b"a"]), (0, 0));

    signal(follower, "-STOP");
    // Waiting on the stopped follower, then refused once it has left the ISR.
    let (code, _) = raw.produce_values("isr", -1, &[b"b"]);
    assert_eq!(code, 20, "NOT_ENOUGH_REPLICAS_AFTER_APPEND");
    let isr = wait_for(
        "the ISR without the follower",
        Duration::from_secs(20),
        || {
            let d = partitions(leader_node, "isr");
            d.get(&0).filter(|(_, isr)| isr.len() == 2).cloned()
        },
    );
    assert!(!isr.1.contains(&follower.id));
    assert_eq!(
        raw.produce_values("isr", -1, &[b"c"]).0,
        19,
        "NOT_ENOUGH_REPLICAS"
    );
    assert_eq!(raw.produce_values("isr", 1, &[b"d"]).0, 0, "acks=1 goes on");
    // An admin client of a live node: the first one's metadata may name the stopped node as
    // the controller to send AlterConfigs to.
    let admin: AdminClient<DefaultClientContext> =
        common::client_config(leader_node.addr).create().unwrap();
    set_topic_config(&admin, "isr", "min.insync.replicas", "2");
    wait_for("acks=all accepted again", Duration::from_secs(10), || {
        (raw.produce_values("isr", -1, &[b"e"]).0 == 0).then_some(())
    });

    signal(follower, "-CONT");
    wait_for(
        "the follower back in the ISR",
        Duration::from_secs(30),
        || {
            let d = partitions(leader_node, "isr");
            d.get(&0).filter(|(_, isr)| isr.len() == 3).cloned()
        },
    );
    assert_eq!(raw.produce_values("isr", -1, &[b"f"]).0, 0);
    let ids: Vec<i32> = nodes.iter().map(|n| n.id).collect();
    drop(raw);
    for n in nodes {
        sigterm(n);
    }
    let logs: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| log_bytes(&dir.path().join(format!("node-{id}")), "isr", 0))
        .collect();
    assert!(logs.iter().all(|l| *l == logs[0] && !l.is_empty()));
}
