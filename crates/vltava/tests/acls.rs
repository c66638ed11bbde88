//! ACLs end to end: a broker with `authorizer.class.name` (Kafka's StandardAuthorizer name)
//! and SASL/PLAIN users, librdkafka clients with their defaults as those users, and
//! `vltava acl` managing the ACLs over the same SASL listener.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};

const JAAS: &str = r#"org.apache.kafka.common.security.plain.PlainLoginModule required
    user_admin="admin-secret" user_alice="alice-secret" user_bob="bob-secret";"#;

/// One SASL_PLAINTEXT listener with the PLAIN users of [`JAAS`].
const PLAIN_LISTENER: [(&str, &str); 3] = [
    ("listeners", "SASL_PLAINTEXT://127.0.0.1:0"),
    ("sasl.enabled.mechanisms", "PLAIN"),
    ("listener.name.sasl_plaintext.plain.sasl.jaas.config", JAAS),
];

fn user(addr: std::net::SocketAddr, name: &str) -> ClientConfig {
    let mut c = client_config(addr);
    c.set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", "PLAIN")
        .set("sasl.username", name)
        .set("sasl.password", format!("{name}-secret"));
    c
}

/// Runs `vltava ARGS` as `name` against `addr`: exit success, stdout, stderr.
fn vltava_as(addr: std::net::SocketAddr, name: &str, args: &[&str]) -> (bool, String, String) {
    let pass = format!("sasl.password={name}-secret");
    let username = format!("sasl.username={name}");
    let out = Command::new(env!("CARGO_BIN_EXE_vltava"))
        .args(args)
        .args(["-b", &addr.to_string()])
        .args([
            "-X",
            "security.protocol=SASL_PLAINTEXT",
            "-X",
            "sasl.mechanism=PLAIN",
        ])
        .args(["-X", &username, "-X", &pass])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What producing one record as `config` comes to: Ok, or librdkafka's error code.
fn produce_one(config: &ClientConfig, topic: &str) -> Result<(), RDKafkaErrorCode> {
    let producer = checked_producer(config);
    producer
        .send(BaseRecord::<(), _>::to(topic).payload("v"))
        .map_err(|(e, _)| e.rdkafka_error_code().unwrap())?;
    producer.flush(Duration::from_secs(30)).unwrap();
    match producer.context().take().pop().unwrap() {
        Ok(_) => Ok(()),
        Err(e) => Err(e.rdkafka_error_code().unwrap()),
    }
}

fn visible_topics(config: &ClientConfig) -> BTreeSet<String> {
    let consumer: BaseConsumer = config.create().unwrap();
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    md.topics().iter().map(|t| t.name().to_string()).collect()
}

/// Reads `topic` from the start as `config` in `group`: how many records, or the error.
fn consume(config: &ClientConfig, topic: &str, group: &str, want: usize) -> Result<usize, String> {
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut n = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while n < want && std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                assert!(m.payload().is_some());
                n += 1;
            }
            Some(Err(e)) => return Err(e.to_string()),
            None => {}
        }
    }
    Ok(n)
}

#[test]
fn acls_decide_what_each_user_may_do() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(
        &rt,
        dir.path(),
        &[
            &PLAIN_LISTENER[..],
            &[
                (
                    "authorizer.class.name",
                    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                ),
                ("super.users", "User:admin"),
            ],
        ]
        .concat(),
    );
    let addr = broker.local_addr;
    let (admin, alice, bob) = (user(addr, "admin"), user(addr, "alice"), user(addr, "bob"));

    // Deny by default: alice sees no topic and may not create one.
    let (ok, _, err) = vltava_as(addr, "alice", &["topic", "create", "orders"]);
    assert!(!ok && err.contains("uthorization"), "{err}");
    let (ok, _, err) = vltava_as(
        addr,
        "admin",
        &["topic", "create", "orders", "--partitions", "1"],
    );
    assert!(ok, "{err}");
    assert!(visible_topics(&admin).contains("orders"));
    assert!(!visible_topics(&alice).contains("orders"));
    assert_eq!(
        produce_one(&alice, "orders"),
        Err(RDKafkaErrorCode::TopicAuthorizationFailed)
    );
    // Only a principal with ALTER on the cluster manages ACLs.
    let grant = [
        "acl",
        "add",
        "--allow-principal",
        "User:alice",
        "--operation",
        "write",
        "--operation",
        "read",
        "--topic",
        "orders",
    ];
    let (ok, _, err) = vltava_as(addr, "alice", &grant);
    assert!(!ok && err.contains("ClusterAuthorizationFailed"), "{err}");
    let (ok, out, err) = vltava_as(addr, "admin", &grant);
    assert!(ok && out.contains("User:alice"), "{out}{err}");
    let (ok, _, err) = vltava_as(
        addr,
        "admin",
        &[
            "acl",
            "add",
            "--allow-principal",
            "User:alice",
            "--operation",
            "read",
            "--group",
            "alice-",
            "--resource-pattern-type",
            "prefixed",
        ],
    );
    assert!(ok, "{err}");

    // WRITE and READ imply DESCRIBE: alice sees the topic, writes and reads it in her group.
    assert!(visible_topics(&alice).contains("orders"));
    for _ in 0..3 {
        produce_one(&alice, "orders").unwrap();
    }
    assert_eq!(consume(&alice, "orders", "alice-readers", 3), Ok(3));
    let denied = consume(&alice, "orders", "other-group", 1).unwrap_err();
    assert!(denied.contains("uthoriz"), "{denied}");

    // A DENY beats every ALLOW: everyone may read, but bob not.
    for args in [
        &[
            "acl",
            "add",
            "--allow-principal",
            "User:*",
            "--operation",
            "read",
            "--topic",
            "orders",
        ][..],
        &[
            "acl",
            "add",
            "--allow-principal",
            "User:*",
            "--operation",
            "read",
            "--group",
            "*",
        ],
        &[
            "acl",
            "add",
            "--deny-principal",
            "User:bob",
            "--operation",
            "read",
            "--topic",
            "ord",
            "--resource-pattern-type",
            "prefixed",
        ],
    ] {
        let (ok, _, err) = vltava_as(addr, "admin", args);
        assert!(ok, "{err}");
    }
    let bobs = consume(&bob, "orders", "bob-readers", 1).unwrap_err();
    assert!(bobs.contains("uthoriz"), "{bobs}");
    // bob still sees the topic (READ implies DESCRIBE for User:*; a DENY implies nothing).
    assert!(visible_topics(&bob).contains("orders"));

    // Listing with MATCH shows every ACL that applies to the topic.
    let (ok, out, err) = vltava_as(
        addr,
        "admin",
        &[
            "acl",
            "list",
            "--topic",
            "orders",
            "--resource-pattern-type",
            "match",
            "-o",
            "json",
        ],
    );
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let who: BTreeSet<(String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["principal"].as_str().unwrap().to_string(),
                r["operation"].as_str().unwrap().to_string(),
                r["permission"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String, String)> = [
        ("User:alice", "WRITE", "ALLOW"),
        ("User:alice", "READ", "ALLOW"),
        ("User:*", "READ", "ALLOW"),
        ("User:bob", "READ", "DENY"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(who, want);

    // Removing alice's topic ACLs takes her WRITE away.
    let (ok, out, err) = vltava_as(
        addr,
        "admin",
        &[
            "acl",
            "remove",
            "--allow-principal",
            "User:alice",
            "--topic",
            "orders",
            "-o",
            "json",
        ],
    );
    assert!(ok, "{err}");
    let removed: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(removed.len(), 2, "{out}");
    assert_eq!(
        produce_one(&alice, "orders"),
        Err(RDKafkaErrorCode::TopicAuthorizationFailed)
    );
}

/// Without an authorizer, the ACL APIs answer SECURITY_DISABLED, as Kafka's do.
#[test]
fn acl_commands_need_an_authorizer() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_vltava"))
        .args(["acl", "list", "-b", &broker.local_addr.to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SecurityDisabled"), "{err}");
}

/// Allows DESCRIBE and READ only.
struct ReadOnly;

impl vltava_broker::context::Authorizer for ReadOnly {
    fn authorize(
        &self,
        _: &vltava_broker::context::RequestContext,
        op: vltava_broker::context::AclOperation,
        _: vltava_broker::context::Resource<'_>,
    ) -> bool {
        use vltava_broker::context::AclOperation::*;
        matches!(op, Describe | Read)
    }
}

/// Metadata, DescribeCluster and DescribeGroups fill the authorized-operations bit fields
/// when asked (bit n for Kafka's operation code n), and leave Kafka's "not asked" value.
#[test]
fn authorized_operations_are_the_bits_of_what_the_principal_may_do() {
    use vltava_protocol::messages::*;
    use vltava_protocol::ApiKey;
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let mut props: std::collections::BTreeMap<String, String> = Default::default();
    props.insert("listeners".into(), "PLAINTEXT://127.0.0.1:0".into());
    props.insert("log.dirs".into(), dir.path().to_str().unwrap().into());
    let config = vltava_broker::BrokerConfig::from_props(props).unwrap();
    let broker = rt
        .block_on(vltava_broker::start_with(
            config,
            vltava_broker::StartOptions {
                authorizer: std::sync::Arc::new(ReadOnly),
                ..Default::default()
            },
        ))
        .unwrap();
    let mut raw = RawClient::connect(broker.local_addr);
    let read_describe = (1 << 3) | (1 << 8);
    let topic = metadata_request::MetadataRequestTopic::default()
        .with_name(Some(TopicName("__consumer_offsets".into())));
    let asked: MetadataResponse = raw.call(
        ApiKey::Metadata,
        10,
        &MetadataRequest::default()
            .with_topics(Some(vec![topic.clone()]))
            .with_include_topic_authorized_operations(true)
            .with_include_cluster_authorized_operations(true),
    );
    assert_eq!(asked.topics[0].error_code, 0);
    assert_eq!(asked.topics[0].topic_authorized_operations, read_describe);
    // DESCRIBE is the one cluster operation of the two.
    assert_eq!(asked.cluster_authorized_operations, 1 << 8);
    let not_asked: MetadataResponse = raw.call(
        ApiKey::Metadata,
        10,
        &MetadataRequest::default().with_topics(Some(vec![topic])),
    );
    assert_eq!(not_asked.topics[0].topic_authorized_operations, i32::MIN);
    let cluster: DescribeClusterResponse = raw.call(
        ApiKey::DescribeCluster,
        0,
        &DescribeClusterRequest::default().with_include_cluster_authorized_operations(true),
    );
    assert_eq!(cluster.cluster_authorized_operations, 1 << 8);
    let groups: DescribeGroupsResponse = raw.call(
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default()
            .with_groups(vec![GroupId("g".into())])
            .with_include_authorized_operations(true),
    );
    assert_eq!(groups.groups[0].authorized_operations, read_describe);
}

/// `vltava user scram set|list|delete` over PLAINTEXT manages the SCRAM users a
/// SASL_PLAINTEXT listener authenticates librdkafka with.
#[test]
fn scram_users_made_with_the_cli_authenticate_librdkafka() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(
        &rt,
        dir.path(),
        &[
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
            ),
            ("sasl.enabled.mechanisms", "SCRAM-SHA-256,SCRAM-SHA-512"),
        ],
    );
    let plain = broker.local_addr.to_string();
    let sasl = broker.broker.listeners[1].local_addr;
    let cli = |args: &[&str], stdin: &[u8]| {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_vltava"))
            .args(args)
            .args(["-b", &plain])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let scram = |user: &str, password: &str, mechanism: &str| {
        let mut c = client_config(sasl);
        c.set("security.protocol", "SASL_PLAINTEXT")
            .set("sasl.mechanism", mechanism)
            .set("sasl.username", user)
            .set("sasl.password", password);
        let consumer: BaseConsumer = c.create().unwrap();
        consumer
            .fetch_metadata(None, Duration::from_secs(5))
            .is_ok()
    };

    let (ok, _, err) = cli(
        &["user", "scram", "set", "alice", "--password-stdin"],
        b"s3cret\n",
    );
    assert!(ok, "{err}");
    let (ok, _, err) = cli(
        &[
            "user",
            "scram",
            "set",
            "bob",
            "--mechanism",
            "SCRAM-SHA-512",
            "--iterations",
            "8192",
            "--password",
            "b0b",
        ],
        b"",
    );
    assert!(ok, "{err}");
    let (ok, _, err) = cli(
        &[
            "user",
            "scram",
            "set",
            "carol",
            "--password",
            "c",
            "--iterations",
            "100",
        ],
        b"",
    );
    assert!(!ok && err.contains("UnacceptableCredential"), "{err}");
    let (ok, out, err) = cli(&["user", "scram", "list", "-o", "json"], b"");
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let got: BTreeSet<(String, String, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["user"].as_str().unwrap().to_string(),
                r["mechanism"].as_str().unwrap().to_string(),
                r["iterations"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        BTreeSet::from([
            ("alice".to_string(), "SCRAM-SHA-256".to_string(), 4096),
            ("bob".to_string(), "SCRAM-SHA-512".to_string(), 8192),
        ])
    );

    assert!(scram("alice", "s3cret", "SCRAM-SHA-256"));
    assert!(scram("bob", "b0b", "SCRAM-SHA-512"));
    assert!(!scram("alice", "wrong", "SCRAM-SHA-256"));
    let (ok, _, err) = cli(&["user", "scram", "delete", "alice"], b"");
    assert!(ok, "{err}");
    assert!(!scram("alice", "s3cret", "SCRAM-SHA-256"));
    let (ok, _, err) = cli(&["user", "scram", "delete", "alice"], b"");
    assert!(!ok && err.contains("ResourceNotFound"), "{err}");
}

/// Whether a new connection to `addr` is served: an ApiVersions request gets an answer
/// rather than a closed connection.
fn served(addr: std::net::SocketAddr) -> (bool, RawClient) {
    use vltava_protocol::messages::ApiVersionsRequest;
    let mut raw = RawClient::connect(addr);
    let frame = vltava_protocol::encode_request(
        vltava_protocol::ApiKey::ApiVersions,
        3,
        1,
        Some("raw-test"),
        &ApiVersionsRequest::default()
            .with_client_software_name("t".into())
            .with_client_software_version("1".into()),
    )
    .unwrap();
    use std::io::Write;
    let sent = raw.stream.write_all(&frame).is_ok();
    (sent && raw.read_frame().is_some(), raw)
}

/// `max.connections.per.ip` closes an address's connections beyond the limit, frees a
/// place when one closes, and `max.connections.per.ip.overrides` raises it for one address.
#[test]
fn connections_per_ip_are_capped_with_overrides() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let capped = start_broker(&rt, dir.path(), &[("max.connections.per.ip", "2")]);
    let (a, first) = served(capped.local_addr);
    let (b, _second) = served(capped.local_addr);
    let (c, _) = served(capped.local_addr);
    assert!(a && b && !c, "{a} {b} {c}");
    drop(first);
    // The closed connection's place is freed once the broker sees it close.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !served(capped.local_addr).0 {
        assert!(std::time::Instant::now() < deadline, "no place freed");
        std::thread::sleep(Duration::from_millis(50));
    }

    let dir = tempfile::tempdir().unwrap();
    let raised = start_broker(
        &rt,
        dir.path(),
        &[
            ("max.connections.per.ip", "1"),
            ("max.connections.per.ip.overrides", "127.0.0.1:3"),
        ],
    );
    let open: Vec<_> = (0..3).map(|_| served(raised.local_addr)).collect();
    assert!(open.iter().all(|(ok, _)| *ok));
    assert!(!served(raised.local_addr).0);
    assert!(vltava_broker::BrokerConfig::from_props(
        [(
            "max.connections.per.ip.overrides".to_string(),
            "nonsense".to_string()
        )]
        .into()
    )
    .is_err());
}

/// `connection.failed.authentication.delay.ms` holds back the answer to a wrong password.
#[test]
fn a_failed_authentication_is_answered_late() {
    use vltava_protocol::messages::*;
    use vltava_protocol::{ApiKey, ErrorCode};
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(
        &rt,
        dir.path(),
        &[
            &PLAIN_LISTENER[..],
            &[("connection.failed.authentication.delay.ms", "700")],
        ]
        .concat(),
    );
    let attempt = |password: &str| {
        let mut raw = RawClient::connect(broker.local_addr);
        let hs: SaslHandshakeResponse = raw.call(
            ApiKey::SaslHandshake,
            1,
            &SaslHandshakeRequest::default().with_mechanism("PLAIN".into()),
        );
        assert_eq!(hs.error_code, 0);
        let started = std::time::Instant::now();
        let auth: SaslAuthenticateResponse = raw.call(
            ApiKey::SaslAuthenticate,
            2,
            &SaslAuthenticateRequest::default()
                .with_auth_bytes(format!("\0alice\0{password}").into_bytes().into()),
        );
        (auth.error_code, started.elapsed())
    };
    let (code, took) = attempt("wrong");
    assert_eq!(code, ErrorCode::SaslAuthenticationFailed.code());
    assert!(took >= Duration::from_millis(700), "{took:?}");
    let (code, _) = attempt("alice-secret");
    assert_eq!(code, 0);
}

/// With an authorizer, quorum messages on a controller listener need CLUSTER_ACTION, as
/// Kafka's KRaft RPCs do: a principal without it is closed on unanswered, a super user is
/// answered.
#[test]
fn quorum_messages_need_cluster_action() {
    let rt = runtime();
    for (super_users, answered) in [("User:admin", false), ("User:ANONYMOUS", true)] {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let voters = format!("1@127.0.0.1:{port}");
        let listeners = format!("PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:{port}");
        let broker = start_broker(
            &rt,
            dir.path(),
            &[
                ("process.roles", "broker,controller"),
                ("node.id", "1"),
                ("controller.quorum.voters", &voters),
                ("listeners", &listeners),
                ("controller.listener.names", "CONTROLLER"),
                (
                    "listener.security.protocol.map",
                    "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                ),
                (
                    "authorizer.class.name",
                    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                ),
                ("super.users", super_users),
            ],
        );
        let controller = broker.broker.listeners[1].local_addr;
        let mut raw = RawClient::connect(controller);
        // A quorum frame: its API key, version 0, correlation id 7, then a payload.
        let mut frame = Vec::new();
        frame.extend_from_slice(&(8 + 2i32).to_be_bytes());
        frame.extend_from_slice(&vltava_broker::quorum_transport::QUORUM_API_KEY.to_be_bytes());
        frame.extend_from_slice(&0i16.to_be_bytes());
        frame.extend_from_slice(&7i32.to_be_bytes());
        frame.extend_from_slice(b"{}");
        raw.send_raw(&frame);
        if answered {
            let answer = raw
                .read_frame()
                .expect("a super user's quorum message is answered");
            assert_eq!(&answer[..4], &7i32.to_be_bytes());
        } else {
            raw.assert_closed("a quorum message without CLUSTER_ACTION");
        }
        rt.block_on(broker.shutdown());
    }
}
