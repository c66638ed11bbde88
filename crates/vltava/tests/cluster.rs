//! A three-node cluster of `vltava broker` processes in combined mode (each a broker and a
//! voter of the metadata quorum): metadata agreed on by all, partitions spread over the
//! brokers, clients sent to each partition's leader, and the quorum surviving the loss of
//! its leader.

mod common;

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
    Command::new(env!("CARGO_BIN_EXE_vltava"))
        .args(["broker", "--node-id", &id.to_string(), "--data-dir"])
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
        .env("RUST_LOG", "warn")
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
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let voters = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let children: Vec<Child> = (1..=3)
        .map(|id| spawn(dir, id, &voters, ports[id as usize - 1]))
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
