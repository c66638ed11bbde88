//! A three-node cluster of `vltava broker` processes in combined mode (each a broker and a
//! voter of the metadata quorum): metadata agreed on by all, partitions spread over the
//! brokers, clients sent to each partition's leader, and the quorum surviving the loss of
//! its leader.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
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
    common::stable_port()
}

fn spawn(dir: &Path, id: i32, voters: &str, controller_port: u16) -> Child {
    spawn_with(dir, id, voters, controller_port, &[])
}

fn spawn_with(dir: &Path, id: i32, voters: &str, controller_port: u16, extra: &[&str]) -> Child {
    spawn_at(dir, id, voters, controller_port, 0, extra)
}

/// As [`spawn_with`], with the client listener on `client_port` (0: any free port).
fn spawn_at(
    dir: &Path,
    id: i32,
    voters: &str,
    controller_port: u16,
    client_port: u16,
    extra: &[&str],
) -> Child {
    let ports = (controller_port, client_port);
    spawn_on(None, "127.0.0.1", dir, id, voters, ports, extra)
}

/// Starts node `id` in network namespace `netns` (`None`: the host's), listening on `ip`
/// at `(controller port, client port)`.
fn spawn_on(
    netns: Option<&str>,
    ip: &str,
    dir: &Path,
    id: i32,
    voters: &str,
    (controller_port, client_port): (u16, u16),
    extra: &[&str],
) -> Child {
    let bin = env!("CARGO_BIN_EXE_vltava");
    let mut cmd = match netns {
        None => Command::new(bin),
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, bin]);
            c
        }
    };
    cmd.args(["broker", "--node-id", &id.to_string()]);
    cmd.arg("--data-dir")
        .arg(dir.join(format!("node-{id}")))
        .arg("--listeners")
        .arg(format!(
            "PLAINTEXT://{ip}:{client_port},CONTROLLER://{ip}:{controller_port}"
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
        ]);
    // After the defaults above, so that a test's own settings win.
    for o in extra {
        cmd.args(["--override", o]);
    }
    cmd.env(
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
    start_nodes(dir, 3, extra)
}

/// Starts nodes 1..=n together, every one a voter.
fn start_nodes(dir: &Path, n: i32, extra: &[&str]) -> (Vec<Node>, String, Vec<u16>) {
    start_nodes_each(dir, n, |_| extra.iter().map(|e| e.to_string()).collect())
}

/// As [`start_nodes`], with each node's own overrides: `extra(id)`.
fn start_nodes_each(
    dir: &Path,
    n: i32,
    extra: impl Fn(i32) -> Vec<String>,
) -> (Vec<Node>, String, Vec<u16>) {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let voters = voters_on(&ports);
    let children: Vec<Child> = (1..=n)
        .map(|id| {
            let own = extra(id);
            let own: Vec<&str> = own.iter().map(String::as_str).collect();
            spawn_with(dir, id, &voters, ports[id as usize - 1], &own)
        })
        .collect();
    let nodes = children
        .into_iter()
        .zip(1..)
        .map(|(c, id)| ready(c, id))
        .collect();
    (nodes, voters, ports)
}

/// `controller.quorum.voters` for nodes 1, 2, ... on these controller ports.
fn voters_on(ports: &[u16]) -> String {
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",")
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
    // client_config takes one address; every one given is a bootstrap server.
    let first = bootstrap.split(',').next().unwrap().parse().unwrap();
    let consumer: BaseConsumer = common::client_config(first)
        .set("bootstrap.servers", bootstrap)
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

    // Replicas placed by hand, in CreateTopics and CreatePartitions, as given; a broker
    // that does not exist is refused with INVALID_REPLICA_ASSIGNMENT.
    let placed = rt
        .block_on(admin.create_topics(
            &[NewTopic::new(
                "placed",
                2,
                TopicReplication::Variable(&[&[2, 3], &[3, 1]]),
            )],
            &AdminOptions::new(),
        ))
        .unwrap();
    assert!(placed.iter().all(|r| r.is_ok()), "{placed:?}");
    let more = rt
        .block_on(admin.create_partitions(
            &[rdkafka::admin::NewPartitions::new("placed", 3).assign(&[&[1, 2]])],
            &AdminOptions::new(),
        ))
        .unwrap();
    assert!(more.iter().all(|r| r.is_ok()), "{more:?}");
    let expected = BTreeMap::from([(0, vec![2, 3]), (1, vec![3, 1]), (2, vec![1, 2])]);
    wait_for("the placed partitions", Duration::from_secs(20), || {
        (replicas(&nodes[2], "placed") == expected).then_some(())
    });
    let refused = rt
        .block_on(admin.create_topics(
            &[NewTopic::new(
                "misplaced",
                1,
                TopicReplication::Variable(&[&[1, 7]]),
            )],
            &AdminOptions::new(),
        ))
        .unwrap();
    assert!(
        matches!(
            &refused[0],
            Err((
                _,
                rdkafka::types::RDKafkaErrorCode::InvalidReplicaAssignment
            ))
        ),
        "{refused:?}"
    );

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

/// Creates `topic` through `node` and waits until each of its partitions has a leader and
/// three in-sync replicas; returns each partition's leader and ISR.
fn create_in_sync(node: &Node, topic: NewTopic<'_>) -> BTreeMap<i32, (i32, BTreeSet<i32>)> {
    let (name, count) = (topic.name.to_string(), topic.num_partitions as usize);
    let admin: AdminClient<DefaultClientContext> =
        common::client_config(node.addr).create().unwrap();
    let created = common::runtime()
        .block_on(admin.create_topics(&[topic], &AdminOptions::new()))
        .unwrap();
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    wait_for("three in-sync replicas", Duration::from_secs(30), || {
        let d = partitions(node, &name);
        (d.len() == count && d.values().all(|(l, isr)| *l > 0 && isr.len() == 3)).then_some(d)
    })
}

/// Delivery reports carrying the value each record had.
#[derive(Clone, Default)]
struct Acked(std::sync::Arc<std::sync::Mutex<Vec<Report>>>);

/// A record's value and whether it was acknowledged.
type Report = (String, Result<(), String>);

impl Acked {
    /// The values of all `total` reports, failing if any record was not acknowledged.
    fn all_ok(&self, total: usize) -> BTreeSet<String> {
        let reports = std::mem::take(&mut *self.0.lock().unwrap());
        assert_eq!(reports.len(), total);
        let failed: Vec<_> = reports.iter().filter(|(_, r)| r.is_err()).collect();
        assert!(
            failed.is_empty(),
            "{} failed, first {:?}",
            failed.len(),
            failed.first()
        );
        reports.into_iter().map(|(v, _)| v).collect()
    }
}

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
    let before = create_in_sync(
        &nodes[0],
        NewTopic::new("rep", 3, TopicReplication::Fixed(3)).set("min.insync.replicas", "2"),
    );

    let (producer, acked) = idempotent_producer(&all);
    let total = 6000;
    let victim_id = before[&0].0;
    let mut killed = false;
    for i in 0..total {
        send_paced(&producer, "rep", format!("v{i}"), i);
        if !killed && i == total / 3 {
            killed = true;
            let at = nodes.iter().position(|n| n.id == victim_id).unwrap();
            drop(nodes.remove(at)); // kill -9 under load
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    // The idempotent producer retries through the failover: nothing should fail.
    let ok = acked.all_ok(total);

    // A new leader from the ISR for the victim's partitions.
    let after = wait_for("leaders on the live nodes", Duration::from_secs(30), || {
        let d = partitions(&nodes[0], "rep");
        (d.len() == 3 && d.values().all(|(l, _)| *l > 0 && *l != victim_id)).then_some(d)
    });
    assert!(after.values().all(|(l, isr)| isr.contains(l)), "{after:?}");

    // Every acknowledged record, exactly once.
    let live = bootstrap(&nodes.iter().collect::<Vec<_>>());
    assert_exactly_once(&ok, &consume_all(&live, "rep", ok.len()));

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
    stop_and_compare_replicas(dir.path(), nodes, "rep", 3);
}

/// In sync means caught up: once every node is stopped cleanly, each partition's replicas
/// hold identical logs.
fn stop_and_compare_replicas(dir: &Path, nodes: Vec<Node>, topic: &str, partitions: i32) {
    let ids: Vec<i32> = nodes.iter().map(|n| n.id).collect();
    for n in nodes {
        sigterm(n);
    }
    for p in 0..partitions {
        let logs: Vec<Vec<u8>> = ids
            .iter()
            .map(|id| log_bytes(&dir.join(format!("node-{id}")), topic, p))
            .collect();
        assert!(!logs[0].is_empty());
        assert!(
            logs.iter().all(|l| *l == logs[0]),
            "partition {p}: replicas differ ({:?} bytes)",
            logs.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }
}

/// An idempotent producer (acks=all, as idempotence implies) bootstrapped from `bootstrap`,
/// and the delivery reports it collects.
fn idempotent_producer(bootstrap: &str) -> (rdkafka::producer::BaseProducer<Acked>, Acked) {
    let acked = Acked::default();
    let first = bootstrap.split(',').next().unwrap().parse().unwrap();
    let producer = common::client_config(first)
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create_with_context(acked.clone())
        .unwrap();
    (producer, acked)
}

/// [`send`], serving delivery reports and pausing briefly every 50 records, so a load
/// spans the faults a test injects between records.
fn send_paced(producer: &rdkafka::producer::BaseProducer<Acked>, topic: &str, v: String, i: usize) {
    send(producer, topic, v);
    if i.is_multiple_of(50) {
        producer.poll(Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sends `v` as key and value, waiting while the client's queue is full.
fn send(producer: &rdkafka::producer::BaseProducer<Acked>, topic: &str, v: String) {
    loop {
        match producer.send(
            BaseRecord::with_opaque_to(topic, Box::new(v.clone()))
                .key(&v)
                .payload(&v),
        ) {
            Ok(()) => return,
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
}

/// Every acknowledged value was read, and none more than once.
fn assert_exactly_once(acked: &BTreeSet<String>, got: &[(i32, String)]) {
    let mut seen = BTreeMap::new();
    for (_, v) in got {
        *seen.entry(v.clone()).or_insert(0) += 1;
    }
    let missing: Vec<_> = acked
        .iter()
        .filter(|v| !seen.contains_key(*v))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "acknowledged but not read: {missing:?}");
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(dups.is_empty(), "read more than once: {dups:?}");
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
/// the replicas end identical. Meanwhile the leader's ReplicaManager gauges count the
/// partition under-replicated and under, then at, `min.insync.replicas`.
#[test]
fn a_stopped_follower_leaves_the_isr_and_rejoins() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let (nodes, _, _) = start_nodes_each(dir.path(), 3, |id| {
        vec![
            "replica.lag.time.max.ms=1500".into(),
            format!(
                "metrics.listeners=http://127.0.0.1:{}",
                metrics_ports[id as usize - 1]
            ),
        ]
    });
    let gauges = |node: i32| {
        let text = crate::metrics::scrape(SocketAddr::from((
            [127, 0, 0, 1],
            metrics_ports[node as usize - 1],
        )));
        let gauge = |name: &str| {
            crate::metrics::value(&text, &format!("kafka_server_replicamanager_{name}"))
                .unwrap_or_else(|| panic!("no {name}: {text}"))
        };
        (
            gauge("underreplicatedpartitions"),
            gauge("underminisrpartitioncount"),
            gauge("atminisrpartitioncount"),
        )
    };
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
    let (under_replicated, under_min_isr, _) = gauges(leader);
    assert!(
        under_replicated >= 1.0 && under_min_isr >= 1.0,
        "{:?}",
        gauges(leader)
    );
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
    // `isr` is now at its minimum; other partitions this leader shares with the stopped
    // follower may be too.
    let (_, under_min_isr, at_min_isr) = gauges(leader);
    assert!(at_min_isr >= 1.0, "{:?}", gauges(leader));
    assert_eq!(under_min_isr, 0.0, "{:?}", gauges(leader));

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
    wait_for(
        "no partition under-replicated on the leader",
        Duration::from_secs(30),
        || (gauges(leader).0 == 0.0).then_some(()),
    );
    // Replication traffic: out of the leader, into the follower that caught up.
    let replication = |node: i32, series: &str| {
        let text = crate::metrics::scrape(SocketAddr::from((
            [127, 0, 0, 1],
            metrics_ports[node as usize - 1],
        )));
        crate::metrics::value(
            &text,
            &format!("kafka_server_brokertopicmetrics_replication{series}_total"),
        )
        .unwrap_or_else(|| panic!("no replication{series}: {text}"))
    };
    assert!(replication(leader, "bytesout") > 0.0);
    assert!(replication(follower.id, "bytesin") > 0.0);
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

/// Every node is killed with `kill -9` at once while an idempotent producer (acks=all)
/// writes, and all are started again on the same addresses: the producer carries on, every
/// record is acknowledged and read back exactly once, and the replicas end up identical.
#[test]
fn a_whole_cluster_killed_and_restarted_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let controller_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let voters = voters_on(&controller_ports);
    let start_all = || -> Vec<Node> {
        let children: Vec<Child> = (1..=3)
            .map(|id: i32| {
                let i = id as usize - 1;
                spawn_at(
                    dir.path(),
                    id,
                    &voters,
                    controller_ports[i],
                    client_ports[i],
                    &[],
                )
            })
            .collect();
        children
            .into_iter()
            .zip(1..)
            .map(|(c, id)| ready(c, id))
            .collect()
    };
    let mut nodes = start_all();
    let all = bootstrap(&nodes.iter().collect::<Vec<_>>());
    let rt = common::runtime();
    let admin: AdminClient<DefaultClientContext> =
        common::client_config(nodes[0].addr).create().unwrap();
    let created = rt
        .block_on(
            admin.create_topics(
                &[NewTopic::new("whole", 3, TopicReplication::Fixed(3))
                    .set("min.insync.replicas", "2")],
                &AdminOptions::new(),
            ),
        )
        .unwrap();
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    let in_sync = |nodes: &[Node]| {
        wait_for("three in-sync replicas", Duration::from_secs(60), || {
            let d = partitions(&nodes[0], "whole");
            (d.len() == 3 && d.values().all(|(l, isr)| *l > 0 && isr.len() == 3)).then_some(())
        })
    };
    in_sync(&nodes);

    let (producer, acked) = idempotent_producer(&all);
    let total = 4000;
    for i in 0..total {
        send_paced(&producer, "whole", format!("w{i}"), i);
        if i == total / 2 {
            nodes.clear(); // kill -9, every node
            std::thread::sleep(Duration::from_millis(500));
            nodes = start_all();
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    let ok = acked.all_ok(total);
    in_sync(&nodes);
    assert_exactly_once(&ok, &consume_all(&all, "whole", ok.len()));
    stop_and_compare_replicas(dir.path(), nodes, "whole", 3);
}

/// Each partition's assigned replicas, in assignment order (the first is the preferred leader).
fn replicas(node: &Node, topic: &str) -> BTreeMap<i32, Vec<i32>> {
    let consumer: BaseConsumer = common::client_config(node.addr)
        .set("group.id", "describe")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    md.topics()
        .iter()
        .flat_map(|t| {
            t.partitions()
                .iter()
                .map(|p| (p.id(), p.replicas().to_vec()))
        })
        .collect()
}

/// Runs `vltava cluster elect-leaders ARGS -o json` against `node`: its exit status and rows.
fn elect_leaders_cli(node: &Node, args: &[&str]) -> (bool, Vec<serde_json::Value>) {
    let child = Command::new(env!("CARGO_BIN_EXE_vltava"))
        .args(["cluster", "elect-leaders", "-o", "json", "-b"])
        .arg(node.addr.to_string())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (ok, rows) = cli_rows(child);
    (ok, serde_json::from_value(rows).unwrap())
}

/// A broker stopping with SIGTERM hands its leaderships over before it exits (controlled
/// shutdown). Back, the preferred replica leads again: by request (`vltava cluster
/// elect-leaders`, Kafka's ElectLeaders) while `auto.leader.rebalance.enable` is off, and by
/// the active controller on its own once it is on.
#[test]
fn stopped_leaders_hand_over_and_preferred_replicas_lead_again() {
    let dir = tempfile::tempdir().unwrap();
    // A long session timeout: only a controlled shutdown moves leaders away within it.
    let manual = [
        "auto.leader.rebalance.enable=false",
        "broker.session.timeout.ms=30000",
    ];
    let (mut nodes, voters, ports) = start_cluster_with(dir.path(), &manual);
    let rt = common::runtime();
    let admin: AdminClient<DefaultClientContext> =
        common::client_config(nodes[0].addr).create().unwrap();
    let created = rt
        .block_on(admin.create_topics(
            &[NewTopic::new("pref", 3, TopicReplication::Fixed(3))],
            &AdminOptions::new(),
        ))
        .unwrap();
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    let preferred: BTreeMap<i32, i32> = replicas(&nodes[0], "pref")
        .into_iter()
        .map(|(p, r)| (p, r[0]))
        .collect();
    let in_sync = |nodes: &[Node]| {
        wait_for("three in-sync replicas", Duration::from_secs(60), || {
            let d = partitions(&nodes[0], "pref");
            (d.len() == 3 && d.values().all(|(l, isr)| *l > 0 && isr.len() == 3)).then_some(d)
        })
    };
    let start = in_sync(&nodes);
    assert!(
        start.iter().all(|(p, (l, _))| preferred[p] == *l),
        "new partitions are led by their preferred replicas: {start:?} {preferred:?}"
    );

    // The preferred leader of partition 0 stops; with a controlled shutdown another replica
    // leads at once; then it comes back.
    let victim = preferred[&0];
    let at = nodes.iter().position(|n| n.id == victim).unwrap();
    sigterm(nodes.remove(at));
    wait_for("a new leader", Duration::from_secs(10), || {
        let d = partitions(&nodes[0], "pref");
        d.get(&0)
            .filter(|(l, _)| *l > 0 && *l != victim)
            .map(|_| ())
    });
    let i = victim as usize - 1;
    nodes.push(ready(
        spawn_with(dir.path(), victim, &voters, ports[i], &manual),
        victim,
    ));
    let back = in_sync(&nodes);
    assert_ne!(
        back[&0].0, victim,
        "nothing moves leadership back by itself"
    );

    let (ok, rows) = elect_leaders_cli(&nodes[0], &["--topic", "pref"]);
    assert!(ok, "{rows:?}");
    let row = |p: i64| rows.iter().find(|r| r["partition"] == p).unwrap();
    assert_eq!(row(0)["result"], "elected", "{rows:?}");
    wait_for(
        "the preferred replica leading",
        Duration::from_secs(10),
        || (partitions(&nodes[0], "pref")[&0].0 == victim).then_some(()),
    );
    let (ok, rows) = elect_leaders_cli(&nodes[0], &["--topic", "pref"]);
    assert!(ok, "{rows:?}");
    assert!(rows.iter().all(|r| r["result"] == "not_needed"), "{rows:?}");
    // A partition that does not exist is a failure, reported as such.
    let (ok, rows) = elect_leaders_cli(&nodes[0], &["--topic", "pref", "--partition", "7"]);
    assert!(!ok);
    assert_eq!(rows[0]["error"], "UnknownTopicOrPartition", "{rows:?}");

    // A rolling restart with automatic rebalancing: each stop moves leaders away, and the
    // active controller brings every partition back to its preferred replica.
    let auto = ["leader.imbalance.check.interval.seconds=1"];
    for id in 1..=3 {
        let at = nodes.iter().position(|n| n.id == id).unwrap();
        sigterm(nodes.remove(at));
        let i = id as usize - 1;
        nodes.push(ready(
            spawn_with(dir.path(), id, &voters, ports[i], &auto),
            id,
        ));
        in_sync(&nodes);
    }
    wait_for(
        "preferred leaders everywhere",
        Duration::from_secs(30),
        || {
            let d = partitions(&nodes[0], "pref");
            (d.len() == 3 && d.iter().all(|(p, (l, _))| preferred[p] == *l)).then_some(())
        },
    );
}

/// Five nodes, so the quorum outlives two of them: a partition with three replicas and
/// `min.insync.replicas=2` loses both followers to `kill -9`. Its ISR shrinks to the
/// leader, acks=all writes are refused with NOT_ENOUGH_REPLICAS (acks=1 still works), an
/// idempotent producer's records wait; once the followers are back, every acknowledged
/// record is there exactly once and the replicas are identical.
#[test]
fn two_lost_replicas_refuse_acks_all_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lag = ["replica.lag.time.max.ms=2000"];
    let (mut nodes, voters, ports) = start_nodes(dir.path(), 5, &lag);
    let full = create_in_sync(
        &nodes[0],
        NewTopic::new("two", 1, TopicReplication::Fixed(3)).set("min.insync.replicas", "2"),
    );
    let (leader, isr) = full[&0].clone();
    let followers: Vec<i32> = isr.iter().copied().filter(|r| *r != leader).collect();

    let all = bootstrap(&nodes.iter().collect::<Vec<_>>());
    let (producer, acked) = idempotent_producer(&all);
    for i in 0..200 {
        send(&producer, "two", format!("before{i}"));
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    for f in &followers {
        let at = nodes.iter().position(|n| n.id == *f).unwrap();
        drop(nodes.remove(at)); // kill -9
    }
    let leader_node = nodes.iter().find(|n| n.id == leader).unwrap();
    wait_for(
        "the ISR down to the leader",
        Duration::from_secs(30),
        || {
            let d = partitions(leader_node, "two");
            d.get(&0)
                .filter(|(l, isr)| *l == leader && isr.len() == 1)
                .map(|_| ())
        },
    );
    let mut raw = common::RawClient::connect(leader_node.addr);
    let (code, _) = raw.produce_values("two", -1, &[b"refused"]);
    assert_eq!(code, 19, "NOT_ENOUGH_REPLICAS");
    let (code, _) = raw.produce_values("two", 1, &[b"acks1"]);
    assert_eq!(code, 0, "acks=1 needs only the leader");
    // The idempotent producer's records wait (NOT_ENOUGH_REPLICAS is retriable).
    for i in 0..100 {
        send(&producer, "two", format!("during{i}"));
    }
    producer.poll(Duration::from_secs(2));
    assert_eq!(
        acked.0.lock().unwrap().len(),
        200,
        "nothing acknowledged meanwhile"
    );

    for f in &followers {
        let i = *f as usize - 1;
        nodes.push(ready(
            spawn_with(dir.path(), *f, &voters, ports[i], &lag),
            *f,
        ));
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    let ok = acked.all_ok(300);
    wait_for(
        "the followers back in the ISR",
        Duration::from_secs(60),
        || {
            let d = partitions(&nodes[0], "two");
            d.get(&0).filter(|(_, isr)| isr.len() == 3).map(|_| ())
        },
    );
    // The restarted followers listen on new ports.
    let live = bootstrap(&nodes.iter().collect::<Vec<_>>());
    let got = consume_all(&live, "two", ok.len() + 1);
    assert_exactly_once(&ok, &got);
    assert!(got.iter().any(|(_, v)| v == "acks1"));
    assert!(!got.iter().any(|(_, v)| v == "refused"));
    // Only the replicas compare: the other two nodes hold no copy, and stay up meanwhile so
    // the quorum can record each controlled shutdown.
    let (replicas, others): (Vec<Node>, Vec<Node>) =
        nodes.into_iter().partition(|n| isr.contains(&n.id));
    stop_and_compare_replicas(dir.path(), replicas, "two", 1);
    drop(others);
}

/// A network partition cuts a partition's leader off from the other brokers (each node in
/// its own network namespace, iptables dropping the traffic between them) while clients
/// still reach it. What it takes meanwhile is never acknowledged (no follower fetches it);
/// the majority fences it and an in-sync follower leads; the producer moves there. Healed,
/// the old leader drops what it alone held and follows. Every acknowledged record is read
/// back exactly once and the replicas end identical.
#[test]
fn a_leader_cut_off_from_its_peers_loses_no_acknowledged_write() {
    let lab = match common::netns::NetLab::new(3) {
        Ok(lab) => lab,
        Err(e) if !is_root() => {
            eprintln!("skipped: network namespaces need root ({e})");
            return;
        }
        Err(e) => panic!("could not make network namespaces: {e}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let voters = (1..=3)
        .map(|i| format!("{i}@{}:9093", lab.ip(i)))
        .collect::<Vec<_>>()
        .join(",");
    let children: Vec<Child> = (1..=3)
        .map(|i| {
            let ip = lab.ip(i);
            spawn_on(
                Some(lab.ns(i)),
                &ip,
                dir.path(),
                i as i32,
                &voters,
                (9093, 9092),
                &[],
            )
        })
        .collect();
    let mut nodes: Vec<Node> = children
        .into_iter()
        .zip(1..)
        .map(|(c, id)| ready(c, id))
        .collect();
    let all = bootstrap(&nodes.iter().collect::<Vec<_>>());
    let (leader, _) = create_in_sync(
        &nodes[0],
        NewTopic::new("cut", 1, TopicReplication::Fixed(3)).set("min.insync.replicas", "2"),
    )[&0]
        .clone();
    let others: Vec<usize> = (1..=3).filter(|i| *i != leader as usize).collect();
    let majority = nodes.iter().position(|n| n.id == others[0] as i32).unwrap();

    let (producer, acked) = idempotent_producer(&all);
    let total = 3000;
    for i in 0..total {
        send_paced(&producer, "cut", format!("c{i}"), i);
        if i == total / 3 {
            lab.isolate(leader as usize, &others);
            wait_for(
                "a leader on the majority side",
                Duration::from_secs(30),
                || {
                    partitions(&nodes[majority], "cut")
                        .remove(&0)
                        .filter(|(l, _)| *l > 0 && *l != leader)
                },
            );
        }
        if i == 2 * total / 3 {
            lab.heal(leader as usize);
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    let ok = acked.all_ok(total);
    wait_for(
        "the old leader back in the ISR",
        Duration::from_secs(60),
        || {
            partitions(&nodes[majority], "cut")
                .remove(&0)
                .filter(|(_, isr)| isr.len() == 3)
        },
    );
    assert_exactly_once(&ok, &consume_all(&all, "cut", ok.len()));
    // Stopped in id order; all three hold the partition.
    nodes.sort_by_key(|n| n.id);
    stop_and_compare_replicas(dir.path(), nodes, "cut", 1);
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// A follower away while DeleteRecords moves the leader's log start past everything it
/// holds cannot fetch what it lacks: back, it starts over at the leader's log start, catches
/// up and rejoins the ISR.
#[test]
fn a_follower_behind_the_leaders_log_start_starts_over_there() {
    use rdkafka::{Offset, TopicPartitionList};
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, voters, ports) = start_cluster(dir.path());
    let rt = common::runtime();
    let admin: AdminClient<DefaultClientContext> =
        common::client_config(nodes[0].addr).create().unwrap();
    let created = rt
        .block_on(admin.create_topics(
            &[NewTopic::new("gone", 1, TopicReplication::Fixed(3))],
            &AdminOptions::new(),
        ))
        .unwrap();
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    let (leader, isr) = wait_for("three in-sync replicas", Duration::from_secs(30), || {
        partitions(&nodes[0], "gone")
            .remove(&0)
            .filter(|(l, isr)| *l > 0 && isr.len() == 3)
    });
    // The leader, a new partition's preferred replica, is the one that goes away, so it can
    // be made to lead again once back.
    assert_eq!(isr.len(), 3);
    let away = leader;
    let at = nodes.iter().position(|n| n.id == away).unwrap();
    sigterm(nodes.remove(at));
    wait_for("a new leader", Duration::from_secs(30), || {
        partitions(&nodes[0], "gone")
            .remove(&0)
            .filter(|(l, _)| *l > 0 && *l != away)
    });

    let all = bootstrap(&nodes.iter().collect::<Vec<_>>());
    let (producer, acked) = idempotent_producer(&all);
    for i in 0..100 {
        send(&producer, "gone", format!("old{i}"));
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    acked.all_ok(100);
    let admin: AdminClient<DefaultClientContext> =
        common::client_config(nodes[0].addr).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("gone", 0, Offset::Offset(100))
        .unwrap();
    rt.block_on(admin.delete_records(&tpl, &AdminOptions::new()))
        .unwrap();
    for i in 0..10 {
        send(&producer, "gone", format!("new{i}"));
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let ok = acked.all_ok(10);

    let i = away as usize - 1;
    nodes.push(ready(
        spawn_with(dir.path(), away, &voters, ports[i], &[]),
        away,
    ));
    wait_for(
        "the follower back in the ISR",
        Duration::from_secs(60),
        || {
            partitions(&nodes[0], "gone")
                .remove(&0)
                .filter(|(_, isr)| isr.len() == 3)
        },
    );
    // Led by the returned replica, the partition still holds exactly the new records.
    let (ok_elect, rows) = elect_leaders_cli(&nodes[0], &["--topic", "gone"]);
    assert!(ok_elect, "{rows:?}");
    wait_for(
        "the returned replica leading",
        Duration::from_secs(10),
        || (partitions(&nodes[0], "gone")[&0].0 == away).then_some(()),
    );
    let all = bootstrap(&nodes.iter().collect::<Vec<_>>());
    let got = consume_all(&all, "gone", ok.len());
    assert_exactly_once(&ok, &got);
    assert_eq!(got.len(), 10, "{got:?}");
}

/// Runs `vltava topic reassign ARGS -o json` against `node` in the background.
fn reassign_cli(node: &Node, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vltava"))
        .args(["topic", "reassign", "-o", "json", "-b"])
        .arg(node.addr.to_string())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Its exit status and JSON rows.
fn cli_rows(child: Child) -> (bool, serde_json::Value) {
    let out = child.wait_with_output().unwrap();
    let rows = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), rows)
}

/// Partition reassignment (KIP-455) under load, with `vltava topic reassign` and Kafka's
/// plan file: on four nodes, partition 0 moves from 1,2,3 to 4,2,3 (its leader leaves) and
/// partition 1 from 2,3,1 to 2,4 (one fewer replica) while an idempotent producer writes.
/// The new replicas copy the log and join the ISR, the old ones leave and delete theirs,
/// every acknowledged record is read back exactly once, and the final replicas of each
/// partition hold identical logs. A second, throttled move takes at least as long as the
/// rate allows.
#[test]
fn reassigned_replicas_move_under_load_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, _, _) = start_nodes(dir.path(), 4, &[]);
    let all = bootstrap(&nodes.iter().collect::<Vec<_>>());
    create_in_sync(
        &nodes[0],
        NewTopic::new(
            "mv",
            2,
            TopicReplication::Variable(&[&[1, 2, 3], &[2, 3, 1]]),
        )
        .set("min.insync.replicas", "2"),
    );

    // Nothing to cancel yet.
    let (ok, rows) = cli_rows(reassign_cli(
        &nodes[0],
        &["mv", "--partition", "0", "--cancel"],
    ));
    assert!(!ok);
    assert_eq!(rows[0]["error"], "NoReassignmentInProgress", "{rows}");

    let plan = dir.path().join("plan.json");
    std::fs::write(
        &plan,
        r#"{"version":1,"partitions":[
            {"topic":"mv","partition":0,"replicas":[4,2,3]},
            {"topic":"mv","partition":1,"replicas":[2,4]}]}"#,
    )
    .unwrap();
    let (producer, acked) = idempotent_producer(&all);
    let total = 9000;
    let mut moving = None;
    for i in 0..total {
        send_paced(&producer, "mv", format!("v{i}"), i);
        if i == total / 3 {
            moving = Some(reassign_cli(
                &nodes[0],
                &[
                    "--file",
                    plan.to_str().unwrap(),
                    "--wait",
                    "--timeout",
                    "60s",
                ],
            ));
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    let ok = acked.all_ok(total);
    let (done, rows) = cli_rows(moving.unwrap());
    assert!(done, "{rows}");
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["result"] == "started"),
        "{rows}"
    );

    let (ok_list, ongoing) = cli_rows(reassign_cli(&nodes[0], &["--list"]));
    assert!(ok_list);
    assert_eq!(ongoing, serde_json::json!([]));
    let expected: BTreeMap<i32, Vec<i32>> = [(0, vec![4, 2, 3]), (1, vec![2, 4])].into();
    for n in &nodes {
        wait_for("every node's metadata", Duration::from_secs(10), || {
            (replicas(n, "mv") == expected).then_some(())
        });
    }
    let d = partitions(&nodes[0], "mv");
    assert_eq!(d[&0].0, 4, "the removed leader handed over: {d:?}");
    assert_eq!(d[&0].1, BTreeSet::from([2, 3, 4]), "{d:?}");
    assert_eq!(d[&1].1, BTreeSet::from([2, 4]), "{d:?}");
    assert_exactly_once(&ok, &consume_all(&all, "mv", ok.len()));

    // Removed replicas delete their logs; the others hold the same bytes once stopped.
    wait_for("removed replicas deleted", Duration::from_secs(10), || {
        let gone = |id: i32, p: i32| !dir.path().join(format!("node-{id}/mv-{p}")).exists();
        (gone(1, 0) && gone(1, 1) && gone(3, 1)).then_some(())
    });

    // A throttled move (kafka-reassign-partitions --throttle): partition 1 copies to node 3
    // at no more than the rate, after one second's burst; the throttle configs go away when
    // it is done.
    let size: u64 = std::fs::read_dir(dir.path().join("node-2/mv-1"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let rate = 20_000u64;
    assert!(
        size > 3 * rate,
        "{size} bytes is too little to see a throttle"
    );
    let started = Instant::now();
    let (done, rows) = cli_rows(reassign_cli(
        &nodes[0],
        &[
            "mv",
            "--partition",
            "1",
            "--replicas",
            "2,3",
            "--wait",
            "--throttle",
            &rate.to_string(),
        ],
    ));
    assert!(done, "{rows}");
    let least = Duration::from_secs_f64((size - rate) as f64 / rate as f64);
    assert!(
        started.elapsed() >= least,
        "{size} bytes moved in {:?}",
        started.elapsed()
    );
    let configs = Command::new(env!("CARGO_BIN_EXE_vltava"))
        .args(["config", "describe", "-o", "json", "-b"])
        .arg(nodes[0].addr.to_string())
        .args(["--topic", "mv"])
        .output()
        .unwrap();
    let configs = String::from_utf8_lossy(&configs.stdout);
    assert!(!configs.contains("throttled"), "{configs}");
    let expected: BTreeMap<i32, Vec<i32>> = [(0, vec![4, 2, 3]), (1, vec![2, 3])].into();
    wait_for(
        "the throttled move everywhere",
        Duration::from_secs(10),
        || {
            nodes
                .iter()
                .all(|n| replicas(n, "mv") == expected)
                .then_some(())
        },
    );
    let ids: Vec<i32> = nodes.iter().map(|n| n.id).collect();
    for n in nodes.drain(..) {
        sigterm(n);
    }
    assert_eq!(ids.len(), 4);
    for (p, holders) in &expected {
        let logs: Vec<Vec<u8>> = holders
            .iter()
            .map(|id| log_bytes(&dir.path().join(format!("node-{id}")), "mv", *p))
            .collect();
        assert!(!logs[0].is_empty());
        assert!(
            logs.iter().all(|l| *l == logs[0]),
            "partition {p}: replicas differ ({:?} bytes)",
            logs.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }
}

/// The voters of the metadata quorum, as `node` answers DescribeQuorum.
fn quorum_voters(node: &Node) -> Vec<i32> {
    use vltava_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    let mut raw = common::RawClient::connect(node.addr);
    let req = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(TopicName("__cluster_metadata".into()))
        .with_partitions(vec![PartitionData::default()])]);
    let q: DescribeQuorumResponse = raw.call(ApiKey::DescribeQuorum, 1, &req);
    let mut v: Vec<i32> = q.topics[0].partitions[0]
        .current_voters
        .iter()
        .map(|r| r.replica_id.0)
        .collect();
    v.sort();
    v
}

/// Runs `vltava cluster ARGS` against `node`: whether it succeeded, and its stderr.
fn cluster_cli(node: &Node, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vltava"))
        .args(["cluster"])
        .args(args)
        .arg("-b")
        .arg(node.addr.to_string())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// KIP-853 voter changes through `vltava cluster add-controller` / `remove-controller`
/// (AddRaftVoter / RemoveRaftVoter): a fourth node started with the first three as voters
/// waits until it is added, then serves; voters 1 and 2 are removed and stopped, and the
/// quorum of 3 and 4 still commits metadata, which voters 1, 2, 3 could not have done
/// without 1 and 2. Restarted, 3 and 4 keep that voter set.
#[test]
fn controllers_are_added_and_removed_while_the_cluster_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, voters, _) = start_cluster(dir.path());
    assert_eq!(quorum_voters(&nodes[0]), vec![1, 2, 3]);
    let port4 = free_port();
    let fourth = spawn(dir.path(), 4, &voters, port4);
    let endpoint = format!("127.0.0.1:{port4}");
    let (ok, err) = cluster_cli(
        &nodes[1],
        &[
            "add-controller",
            "--controller-id",
            "4",
            "--controller-endpoint",
            &endpoint,
        ],
    );
    assert!(ok, "{err}");
    nodes.push(ready(fourth, 4));
    assert_eq!(quorum_voters(&nodes[0]), vec![1, 2, 3, 4]);
    let (ok, err) = cluster_cli(
        &nodes[0],
        &[
            "add-controller",
            "--controller-id",
            "4",
            "--controller-endpoint",
            &endpoint,
        ],
    );
    assert!(!ok && err.contains("DuplicateVoter"), "{err}");

    for id in [1, 2] {
        let (ok, err) = cluster_cli(
            &nodes[2],
            &["remove-controller", "--controller-id", &id.to_string()],
        );
        assert!(ok, "{err}");
        let at = nodes.iter().position(|n| n.id == id).unwrap();
        sigterm(nodes.remove(at));
    }
    assert_eq!(quorum_voters(&nodes[0]), vec![3, 4]);
    let (ok, err) = cluster_cli(&nodes[0], &["remove-controller", "--controller-id", "1"]);
    assert!(!ok && err.contains("VoterNotFound"), "{err}");

    // Metadata still commits: a topic is created and seen by both.
    let create = |node: &Node, name: &str| {
        let admin: AdminClient<DefaultClientContext> =
            common::client_config(node.addr).create().unwrap();
        let r = common::runtime()
            .block_on(admin.create_topics(
                &[NewTopic::new(name, 2, TopicReplication::Fixed(2))],
                &AdminOptions::new(),
            ))
            .unwrap();
        assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
    };
    create(&nodes[0], "after");
    for n in &nodes {
        wait_for("the topic everywhere", Duration::from_secs(10), || {
            (partitions(n, "after").len() == 2).then_some(())
        });
    }

    // Both stop and start again with their first configuration: the voters stay 3 and 4.
    for n in nodes.drain(..) {
        sigterm(n);
    }
    let controller_ports: Vec<u16> = voters
        .split(',')
        .map(|v| v.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    let three = spawn(dir.path(), 3, &voters, controller_ports[2]);
    let four = spawn(dir.path(), 4, &voters, port4);
    let nodes = [ready(three, 3), ready(four, 4)];
    assert_eq!(quorum_voters(&nodes[0]), vec![3, 4]);
    create(&nodes[1], "restarted");
}

/// Which broker a consumer fetches each partition of a topic from, per librdkafka's
/// statistics.
#[derive(Clone, Default)]
struct FetchingFrom(std::sync::Arc<std::sync::Mutex<BTreeMap<i32, i32>>>);

impl rdkafka::ClientContext for FetchingFrom {
    fn stats(&self, s: rdkafka::Statistics) {
        if let Some(t) = s.topics.get("near") {
            let mut m = self.0.lock().unwrap();
            for p in t.partitions.values().filter(|p| p.partition >= 0) {
                m.insert(p.partition, p.broker);
            }
        }
    }
}
impl rdkafka::consumer::ConsumerContext for FetchingFrom {}

/// Reads `n` more records of partition 0, serving the client's statistics meanwhile.
fn read_n(c: &BaseConsumer<FetchingFrom>, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            got.push(String::from_utf8_lossy(m.payload().unwrap()).to_string());
        }
    }
    got
}

/// Fetch from the closest replica (KIP-392): with Kafka's RackAwareReplicaSelector, a
/// consumer with `client.rack` is sent by the leader to the in-sync replica in its rack
/// and reads everything from that follower, new records included, up to its high
/// watermark; a consumer without a rack stays on the leader.
#[test]
fn consumers_read_from_the_replica_in_their_rack() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, _, _) = start_nodes_each(dir.path(), 3, |id| {
        vec![
            format!("broker.rack=r{id}"),
            "replica.selector.class=org.apache.kafka.common.replica.RackAwareReplicaSelector"
                .into(),
        ]
    });
    let all = bootstrap(&nodes.iter().collect::<Vec<_>>());
    let near = create_in_sync(
        &nodes[0],
        NewTopic::new("near", 1, TopicReplication::Variable(&[&[1, 2, 3]])),
    );
    assert_eq!(near[&0].0, 1, "the preferred replica leads");
    let (producer, acked) = idempotent_producer(&all);
    for i in 0..100 {
        send(&producer, "near", format!("a{i}"));
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    acked.all_ok(100);

    let consumer = |rack: Option<&str>| {
        let ctx = FetchingFrom::default();
        let mut cfg = common::client_config(nodes[0].addr);
        cfg.set("bootstrap.servers", &all)
            .set("group.id", format!("near-{rack:?}"))
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", "200");
        if let Some(r) = rack {
            cfg.set("client.rack", r);
        }
        let c: BaseConsumer<FetchingFrom> = cfg.create_with_context(ctx.clone()).unwrap();
        c.subscribe(&["near"]).unwrap();
        (c, ctx)
    };
    let (near, near_from) = consumer(Some("r3"));
    let got = read_n(&near, 100);
    assert_eq!(got.len(), 100, "{got:?}");
    assert_eq!(got[0], "a0");
    // New records, read from the follower once it has them below its high watermark.
    for i in 0..100 {
        send(&producer, "near", format!("b{i}"));
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    acked.all_ok(100);
    let more = read_n(&near, 100);
    assert_eq!(more, (0..100).map(|i| format!("b{i}")).collect::<Vec<_>>());
    wait_for("fetching from node 3", Duration::from_secs(10), || {
        near.poll(Duration::from_millis(50));
        (near_from.0.lock().unwrap().get(&0) == Some(&3)).then_some(())
    });

    let (far, far_from) = consumer(None);
    assert_eq!(read_n(&far, 200).len(), 200);
    wait_for("fetching from the leader", Duration::from_secs(10), || {
        far.poll(Duration::from_millis(50));
        (far_from.0.lock().unwrap().get(&0) == Some(&1)).then_some(())
    });
}

/// Starts node `id` with one role (`process.roles=controller` or `broker`): a controller
/// listens on `controller_port` only; a broker on a client port and finds the quorum
/// through `quorum` (`controller.quorum.voters=...` or `controller.quorum.bootstrap.servers=...`).
fn spawn_role(dir: &Path, id: i32, role: &str, quorum: &str, controller_port: u16) -> Child {
    let listeners = if role == "controller" {
        format!("CONTROLLER://127.0.0.1:{controller_port}")
    } else {
        "PLAINTEXT://127.0.0.1:0".into()
    };
    Command::new(env!("CARGO_BIN_EXE_vltava"))
        .args(["broker", "--node-id", &id.to_string(), "--data-dir"])
        .arg(dir.join(format!("node-{id}")))
        .args(["--listeners", &listeners])
        .args(["--override", &format!("process.roles={role}")])
        .args(["--override", quorum])
        .args(["--override", "cluster.id=vltava-dedicated-roles"])
        .args(["--override", "controller.listener.names=CONTROLLER"])
        .args([
            "--override",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        ])
        .args(["--override", "controller.quorum.election.timeout.ms=500"])
        .args(["--override", "offsets.topic.num.partitions=3"])
        .args(["--override", "broker.session.timeout.ms=3000"])
        .env(
            "RUST_LOG",
            std::env::var("CLUSTER_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn vltava")
}

fn describe_quorum(node: &Node) -> DescribeQuorumResponse {
    use vltava_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    let mut raw = common::RawClient::connect(node.addr);
    let req = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(TopicName("__cluster_metadata".into()))
        .with_partitions(vec![PartitionData::default()])]);
    raw.call(ApiKey::DescribeQuorum, 1, &req)
}

/// Kafka's production layout: three controllers (`process.roles=controller`) and three
/// brokers (`process.roles=broker`), two finding the quorum through
/// `controller.quorum.voters` and one through `controller.quorum.bootstrap.servers`.
/// Clients see only the brokers; DescribeQuorum lists the brokers as observers. Under an
/// idempotent acks=all load the active controller is killed with `kill -9`, then the
/// leader of a partition: a new controller takes over, fences the dead broker from its
/// silence alone, and every acknowledged record is read back exactly once.
#[test]
fn dedicated_controllers_and_brokers_survive_the_active_controller_and_a_broker() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let voters = voters_on(&ports);
    let by_voters = format!("controller.quorum.voters={voters}");
    let by_bootstrap = format!(
        "controller.quorum.bootstrap.servers={}",
        ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut children: Vec<(i32, Child)> = (1..=3)
        .map(|id| {
            let c = spawn_role(
                dir.path(),
                id,
                "controller",
                &by_voters,
                ports[id as usize - 1],
            );
            (id, c)
        })
        .collect();
    children.push((4, spawn_role(dir.path(), 4, "broker", &by_voters, 0)));
    children.push((5, spawn_role(dir.path(), 5, "broker", &by_voters, 0)));
    children.push((6, spawn_role(dir.path(), 6, "broker", &by_bootstrap, 0)));
    let mut nodes: Vec<Node> = children.into_iter().map(|(id, c)| ready(c, id)).collect();
    let broker_nodes = |nodes: &Vec<Node>| -> Vec<usize> {
        (0..nodes.len()).filter(|i| nodes[*i].id > 3).collect()
    };
    let first_broker = |nodes: &Vec<Node>| broker_nodes(nodes)[0];

    // Clients see the three brokers, never the controllers.
    let all = bootstrap(&nodes[3..].iter().collect::<Vec<_>>());
    let (_, ids) = describe(&nodes[3], "");
    assert_eq!(ids, BTreeSet::from([4, 5, 6]));
    let quorum = wait_for("the brokers as observers", Duration::from_secs(10), || {
        let q = describe_quorum(&nodes[5]);
        let p = &q.topics[0].partitions[0];
        let voters: BTreeSet<i32> = p.current_voters.iter().map(|r| r.replica_id.0).collect();
        let observers: BTreeSet<i32> = p.observers.iter().map(|r| r.replica_id.0).collect();
        (voters == BTreeSet::from([1, 2, 3]) && observers == BTreeSet::from([4, 5, 6]))
            .then_some(p.leader_id.0)
    });
    assert!((1..=3).contains(&quorum), "leader {quorum}");

    let before = create_in_sync(
        &nodes[4],
        NewTopic::new("split", 3, TopicReplication::Fixed(3)).set("min.insync.replicas", "2"),
    );
    assert!(before.values().all(|(l, _)| *l > 3), "{before:?}");

    let (producer, acked) = idempotent_producer(&all);
    let total = 6000;
    let victim = before[&0].0;
    for i in 0..total {
        send_paced(&producer, "split", format!("v{i}"), i);
        if i == total / 3 {
            let active = quorum_leader(&nodes[first_broker(&nodes)]);
            let at = nodes.iter().position(|n| n.id == active).unwrap();
            drop(nodes.remove(at)); // kill -9 of the active controller
        }
        if i == 2 * total / 3 {
            let at = nodes.iter().position(|n| n.id == victim).unwrap();
            drop(nodes.remove(at)); // kill -9 of a partition leader
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    let ok = acked.all_ok(total);

    // The new active controller fenced the dead broker (it stopped fetching metadata) and
    // moved its partitions to in-sync replicas.
    let probe = first_broker(&nodes);
    let after = wait_for(
        "leaders on the live brokers",
        Duration::from_secs(30),
        || {
            let d = partitions(&nodes[probe], "split");
            (d.len() == 3 && d.values().all(|(l, _)| *l > 3 && *l != victim)).then_some(d)
        },
    );
    assert!(after.values().all(|(l, isr)| isr.contains(l)), "{after:?}");
    let new_active = quorum_leader(&nodes[probe]);
    assert!((1..=3).contains(&new_active) && new_active != quorum);

    let live = bootstrap(
        &broker_nodes(&nodes)
            .iter()
            .map(|i| &nodes[*i])
            .collect::<Vec<_>>(),
    );
    assert_exactly_once(&ok, &consume_all(&live, "split", ok.len()));
}

/// Brokers replicate over a SASL_SSL inter-broker listener (PLAIN) and the controllers run
/// the quorum over an SSL controller listener with client certificates, while clients use
/// a plaintext listener: every peer connection is authenticated and encrypted.
#[test]
fn brokers_and_controllers_reach_each_other_over_tls_and_sasl() {
    let pki = crate::security::TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let keystore = dir.path().join("broker.pem");
    std::fs::write(
        &keystore,
        format!("{}{}", pki.server_cert_pem, pki.server_key_pem),
    )
    .unwrap();
    let truststore = dir.path().join("ca.pem");
    std::fs::write(&truststore, &pki.ca_pem).unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let voters = voters_on(&ports);
    let jaas = r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="broker" password="broker-secret" user_broker="broker-secret";"#;
    let children: Vec<Child> = (1..=3)
        .map(|id| {
            Command::new(env!("CARGO_BIN_EXE_vltava"))
                .args(["broker", "--node-id", &id.to_string()])
                .arg("--data-dir")
                .arg(dir.path().join(format!("node-{id}")))
                .arg("--listeners")
                .arg(format!(
                    "PLAINTEXT://127.0.0.1:0,INTERNAL://127.0.0.1:0,CONTROLLER://127.0.0.1:{}",
                    ports[id as usize - 1]
                ))
                .args(
                    [
                        format!("controller.quorum.voters={voters}"),
                        "controller.listener.names=CONTROLLER".into(),
                        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,INTERNAL:SASL_SSL,CONTROLLER:SSL".into(),
                        "inter.broker.listener.name=INTERNAL".into(),
                        "ssl.keystore.type=PEM".into(),
                        format!("ssl.keystore.location={}", keystore.display()),
                        "ssl.truststore.type=PEM".into(),
                        format!("ssl.truststore.location={}", truststore.display()),
                        "listener.name.controller.ssl.client.auth=required".into(),
                        "listener.name.internal.sasl.enabled.mechanisms=PLAIN".into(),
                        format!("listener.name.internal.plain.sasl.jaas.config={jaas}"),
                        "sasl.mechanism.inter.broker.protocol=PLAIN".into(),
                        "controller.quorum.election.timeout.ms=500".into(),
                        "offsets.topic.num.partitions=3".into(),
                        "broker.session.timeout.ms=3000".into(),
                    ]
                    .iter()
                    .flat_map(|o| ["--override".to_string(), o.clone()]),
                )
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn vltava")
        })
        .collect();
    let nodes: Vec<Node> = children
        .into_iter()
        .zip(1..)
        .map(|(c, id)| ready(c, id))
        .collect();
    // Three in-sync replicas: followers fetched from each leader over SASL_SSL.
    let isr = create_in_sync(
        &nodes[0],
        NewTopic::new("guarded", 3, TopicReplication::Fixed(3)),
    );
    assert_eq!(isr.len(), 3);
    let all: Vec<&Node> = nodes.iter().collect();
    let producer: rdkafka::producer::BaseProducer = common::client_config(nodes[0].addr)
        .set("bootstrap.servers", bootstrap(&all))
        .create()
        .unwrap();
    for i in 0..30 {
        producer
            .send(BaseRecord::<(), _>::to("guarded").payload(&format!("v{i}")))
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let got = consume_all(&bootstrap(&all), "guarded", 30);
    assert_eq!(got.len(), 30);
    // The quorum's leader sees all three voters fetching over the SSL controller listener.
    let describe = |node: &Node| -> DescribeQuorumResponse {
        common::RawClient::connect(node.addr).call(
            ApiKey::DescribeQuorum,
            2,
            &DescribeQuorumRequest::default().with_topics(vec![
                vltava_protocol::messages::describe_quorum_request::TopicData::default()
                    .with_topic_name(TopicName(vltava_protocol::StrBytes::from_static_str(
                        "__cluster_metadata",
                    )))
                    .with_partitions(vec![
                        vltava_protocol::messages::describe_quorum_request::PartitionData::default(
                        ),
                    ]),
            ]),
        )
    };
    let leader = describe(&nodes[0]).topics[0].partitions[0].leader_id.0;
    let leader = nodes
        .iter()
        .find(|n| n.id == leader)
        .expect("a quorum leader");
    wait_for("every voter fetching", Duration::from_secs(10), || {
        let q = describe(leader);
        let p = &q.topics[0].partitions[0];
        (p.current_voters.len() == 3 && p.current_voters.iter().all(|v| v.log_end_offset > 0))
            .then_some(())
    });
}
