//! Listener security end to end: librdkafka (through the `rdkafka` crate) against TLS and
//! SASL listeners, with a certificate authority made in the test by `rcgen`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::BaseRecord;
use vltava_broker::context::{AclOperation, Authorizer, RequestContext, Resource};
use vltava_broker::{BrokerConfig, BrokerHandle, StartOptions};

/// A CA and what it signed, as PEM.
pub(crate) struct TestPki {
    pub(crate) ca_pem: String,
    pub(crate) server_cert_pem: String,
    pub(crate) server_key_pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestPki {
    pub(crate) fn new() -> Self {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.distinguished_name
            .push(DnType::CommonName, "vltava test CA");
        let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let (server_cert_pem, server_key_pem) = Self::sign(
            &issuer,
            &["localhost", "127.0.0.1"],
            &[(DnType::CommonName, "broker")],
        );
        Self {
            ca_pem: issuer.pem(),
            server_cert_pem,
            server_key_pem,
            issuer,
        }
    }

    /// A certificate and key signed by the CA: `(cert_pem, key_pem)`.
    fn sign(
        issuer: &CertifiedIssuer<'static, KeyPair>,
        names: &[&str],
        subject: &[(DnType, &str)],
    ) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        // The default subject holds a CN, which would keep its first place.
        params.distinguished_name = DistinguishedName::new();
        for (t, v) in subject {
            params.distinguished_name.push(t.clone(), *v);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn client(&self, subject: &[(DnType, &str)]) -> (String, String) {
        Self::sign(&self.issuer, &[], subject)
    }
}

/// Records every principal that asks the authorizer something, and allows everything.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Authorizer for Recorder {
    fn authorize(&self, ctx: &RequestContext, _: AclOperation, _: Resource<'_>) -> bool {
        self.0.lock().unwrap().push(ctx.principal().to_string());
        true
    }
}

fn start_secure(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    props: &[(&str, &str)],
    authorizer: Arc<dyn Authorizer>,
) -> BrokerHandle {
    let mut map: BTreeMap<String, String> =
        [("log.dirs".to_string(), dir.to_str().unwrap().to_string())].into();
    for (k, v) in props {
        map.insert(k.to_string(), v.to_string());
    }
    let config = BrokerConfig::from_props(map).unwrap();
    rt.block_on(vltava_broker::start_with(
        config,
        StartOptions {
            authorizer,
            ..Default::default()
        },
    ))
    .unwrap()
}

/// Produces `n` values to `topic` and reads them back with a consumer of `config`.
fn round_trip(config: &ClientConfig, topic: &str, n: usize) {
    let producer = checked_producer(config.clone().set("acks", "all"));
    for i in 0..n {
        let value = format!("secret-{i}");
        producer
            .send(BaseRecord::<(), _>::to(topic).payload(&value))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    flush_delivered(&producer, n, Duration::from_secs(30));
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", format!("{topic}-readers"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < n && std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            seen.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
    }
    let want: Vec<String> = (0..n).map(|i| format!("secret-{i}")).collect();
    assert_eq!(seen, want);
}

/// Whether a client of `config` can read cluster metadata within a few seconds.
fn can_fetch_metadata(config: &ClientConfig) -> bool {
    let consumer: BaseConsumer = config.create().unwrap();
    consumer
        .fetch_metadata(None, Duration::from_secs(5))
        .is_ok()
}

#[test]
fn tls_listener_serves_librdkafka() {
    let pki = TestPki::new();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_secure(
        &rt,
        dir.path(),
        &[
            ("listeners", "SSL://127.0.0.1:0"),
            ("ssl.keystore.type", "PEM"),
            ("ssl.keystore.certificate.chain", &pki.server_cert_pem),
            ("ssl.keystore.key", &pki.server_key_pem),
        ],
        Arc::new(Recorder::default()),
    );
    let mut config = client_config(broker.local_addr);
    config
        .set("security.protocol", "ssl")
        .set("ssl.ca.pem", &pki.ca_pem);
    round_trip(&config, "tls-topic", 100);

    // A plaintext client on the TLS port gets no Kafka answer; a client that does not trust the
    // CA refuses the broker.
    let mut raw = RawClient::connect(broker.local_addr);
    raw.send_raw(&[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0, 0]);
    // The broker's TLS layer answers with an alert record (content type 21) and closes.
    let mut answer = Vec::new();
    std::io::Read::read_to_end(&mut raw.stream, &mut answer).unwrap();
    assert_eq!(answer.first(), Some(&21), "{answer:?}");
    let mut untrusting = client_config(broker.local_addr);
    untrusting.set("security.protocol", "ssl");
    assert!(!can_fetch_metadata(&untrusting));
    rt.block_on(broker.shutdown());
}

#[test]
fn mtls_principal_is_the_certificate_subject() {
    let pki = TestPki::new();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    // The key store from one PEM file holding key and chain, the trust store from a file.
    let keystore = dir.path().join("broker.pem");
    std::fs::write(
        &keystore,
        format!("{}{}", pki.server_key_pem, pki.server_cert_pem),
    )
    .unwrap();
    let truststore = dir.path().join("ca.pem");
    std::fs::write(&truststore, &pki.ca_pem).unwrap();
    let mtls = [
        ("listeners", "CLIENTS://127.0.0.1:0"),
        ("listener.security.protocol.map", "CLIENTS:SSL"),
        ("listener.name.clients.ssl.client.auth", "required"),
        ("ssl.keystore.type", "PEM"),
        ("ssl.keystore.location", keystore.to_str().unwrap()),
        ("ssl.truststore.type", "PEM"),
        ("ssl.truststore.location", truststore.to_str().unwrap()),
    ];
    let recorder = Arc::new(Recorder::default());
    let broker = start_secure(
        &rt,
        &dir.path().join("data"),
        &mtls,
        Arc::clone(&recorder) as _,
    );
    let (cert, key) = pki.client(&[
        (DnType::OrganizationName, "Vltava"),
        (DnType::CommonName, "alice"),
    ]);
    let mut config = client_config(broker.local_addr);
    config
        .set("security.protocol", "ssl")
        .set("ssl.ca.pem", &pki.ca_pem)
        .set("ssl.certificate.pem", &cert)
        .set("ssl.key.pem", &key);
    round_trip(&config, "mtls-topic", 10);
    let principals = recorder.0.lock().unwrap().clone();
    assert!(!principals.is_empty());
    assert!(
        principals.iter().all(|p| p == "User:CN=alice,O=Vltava"),
        "{principals:?}"
    );

    // The CLI's own protocol client presents a certificate from files too.
    let (cert_file, key_file) = (dir.path().join("alice.pem"), dir.path().join("alice.key"));
    std::fs::write(&cert_file, &cert).unwrap();
    std::fs::write(&key_file, &key).unwrap();
    let before = recorder.0.lock().unwrap().len();
    let addr = broker.local_addr.to_string();
    let setting = |k: &str, v: &std::path::Path| format!("{k}={}", v.display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vltava"))
        .args([
            "quota",
            "describe",
            "-b",
            &addr,
            "-X",
            "security.protocol=ssl",
            "-X",
        ])
        .arg(setting("ssl.ca.location", &truststore))
        .arg("-X")
        .arg(setting("ssl.certificate.location", &cert_file))
        .arg("-X")
        .arg(setting("ssl.key.location", &key_file))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let principals = recorder.0.lock().unwrap().clone();
    assert!(
        principals.len() > before && principals.iter().all(|p| p == "User:CN=alice,O=Vltava"),
        "{principals:?}"
    );

    // ssl.client.auth=required: no certificate, no connection.
    let mut anonymous = client_config(broker.local_addr);
    anonymous
        .set("security.protocol", "ssl")
        .set("ssl.ca.pem", &pki.ca_pem);
    assert!(!can_fetch_metadata(&anonymous));
    rt.block_on(broker.shutdown());

    // ssl.principal.mapping.rules rewrite the subject; a subject no rule matches is refused.
    let recorder = Arc::new(Recorder::default());
    let mut with_rules = mtls.to_vec();
    with_rules.push((
        "listener.name.clients.ssl.principal.mapping.rules",
        "RULE:^CN=(.*?),O=Vltava$/$1/U",
    ));
    let mapped = start_secure(
        &rt,
        &dir.path().join("data-mapped"),
        &with_rules,
        Arc::clone(&recorder) as _,
    );
    let mut config = client_config(mapped.local_addr);
    config
        .set("security.protocol", "ssl")
        .set("ssl.ca.pem", &pki.ca_pem)
        .set("ssl.certificate.pem", &cert)
        .set("ssl.key.pem", &key);
    round_trip(&config, "mapped-topic", 3);
    let principals = recorder.0.lock().unwrap().clone();
    assert!(
        !principals.is_empty() && principals.iter().all(|p| p == "User:ALICE"),
        "{principals:?}"
    );
    let (other_cert, other_key) = pki.client(&[
        (DnType::OrganizationName, "Elsewhere"),
        (DnType::CommonName, "mallory"),
    ]);
    let mut unmapped = client_config(mapped.local_addr);
    unmapped
        .set("security.protocol", "ssl")
        .set("ssl.ca.pem", &pki.ca_pem)
        .set("ssl.certificate.pem", &other_cert)
        .set("ssl.key.pem", &other_key);
    assert!(!can_fetch_metadata(&unmapped));
    rt.block_on(mapped.shutdown());
}

/// A Metadata request frame, for requests that must go unanswered.
fn metadata_frame() -> bytes::Bytes {
    vltava_protocol::encode_request(
        vltava_protocol::ApiKey::Metadata,
        12,
        99,
        Some("raw"),
        &vltava_protocol::messages::MetadataRequest::default(),
    )
    .unwrap()
}

const PLAIN_JAAS: &str = r#"org.apache.kafka.common.security.plain.PlainLoginModule required
    username="admin" password="admin-secret"
    user_admin="admin-secret" user_alice="alice-secret";"#;

fn sasl_client(
    addr: std::net::SocketAddr,
    protocol: &str,
    user: &str,
    password: &str,
) -> ClientConfig {
    let mut config = client_config(addr);
    config
        .set("security.protocol", protocol)
        .set("sasl.mechanism", "PLAIN")
        .set("sasl.username", user)
        .set("sasl.password", password);
    config
}

#[test]
fn sasl_plain_authenticates_librdkafka() {
    use vltava_protocol::messages::{
        SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
        SaslHandshakeResponse,
    };
    use vltava_protocol::{ApiKey, ErrorCode, StrBytes};

    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let broker = start_secure(
        &rt,
        dir.path(),
        &[
            ("listeners", "SASL_PLAINTEXT://127.0.0.1:0"),
            ("sasl.enabled.mechanisms", "PLAIN"),
            (
                "listener.name.sasl_plaintext.plain.sasl.jaas.config",
                PLAIN_JAAS,
            ),
        ],
        Arc::clone(&recorder) as _,
    );
    let addr = broker.local_addr;
    round_trip(
        &sasl_client(addr, "sasl_plaintext", "alice", "alice-secret"),
        "sasl-topic",
        10,
    );
    let principals = recorder.0.lock().unwrap().clone();
    assert!(!principals.is_empty());
    assert!(
        principals.iter().all(|p| p == "User:alice"),
        "{principals:?}"
    );

    assert!(!can_fetch_metadata(&sasl_client(
        addr,
        "sasl_plaintext",
        "alice",
        "wrong"
    )));
    assert!(!can_fetch_metadata(&sasl_client(
        addr,
        "sasl_plaintext",
        "mallory",
        "alice-secret"
    )));
    assert!(!can_fetch_metadata(&client_config(addr)));

    // On the wire: a request other than ApiVersions or SaslHandshake before authentication
    // closes the connection unanswered.
    let mut raw = RawClient::connect(addr);
    raw.send_raw(&metadata_frame());
    raw.assert_closed("Metadata before SASL authentication");
    // Before authentication a frame may not exceed sasl.server.max.receive.size (512 KiB).
    let mut raw = RawClient::connect(addr);
    raw.send_raw(&1_000_000i32.to_be_bytes());
    raw.assert_closed("a 1 MB frame before SASL authentication");

    // A wrong password is answered with SASL_AUTHENTICATION_FAILED, then the connection closes.
    let mut raw = RawClient::connect(addr);
    let hs: SaslHandshakeResponse = raw.call(
        ApiKey::SaslHandshake,
        1,
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
    );
    assert_eq!(hs.error_code, 0);
    assert_eq!(hs.mechanisms, vec![StrBytes::from_static_str("PLAIN")]);
    let auth: SaslAuthenticateResponse = raw.call(
        ApiKey::SaslAuthenticate,
        2,
        &SaslAuthenticateRequest::default()
            .with_auth_bytes(bytes::Bytes::from_static(b"\0alice\0wrong")),
    );
    assert_eq!(auth.error_code, ErrorCode::SaslAuthenticationFailed.code());
    raw.assert_closed("after a failed SaslAuthenticate");

    // An unknown mechanism: UNSUPPORTED_SASL_MECHANISM with the enabled list, then closed.
    let mut raw = RawClient::connect(addr);
    let hs: SaslHandshakeResponse = raw.call(
        ApiKey::SaslHandshake,
        1,
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("GSSAPI")),
    );
    assert_eq!(hs.error_code, ErrorCode::UnsupportedSaslMechanism.code());
    assert_eq!(hs.mechanisms, vec![StrBytes::from_static_str("PLAIN")]);
    raw.assert_closed("after an unsupported mechanism");
    rt.block_on(broker.shutdown());
}

#[test]
fn sasl_ssl_combines_tls_and_plain() {
    let pki = TestPki::new();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let broker = start_secure(
        &rt,
        dir.path(),
        &[
            ("listeners", "SASL_SSL://127.0.0.1:0"),
            ("ssl.keystore.type", "PEM"),
            ("ssl.keystore.certificate.chain", &pki.server_cert_pem),
            ("ssl.keystore.key", &pki.server_key_pem),
            ("listener.name.sasl_ssl.sasl.enabled.mechanisms", "PLAIN"),
            ("listener.name.sasl_ssl.plain.sasl.jaas.config", PLAIN_JAAS),
        ],
        Arc::clone(&recorder) as _,
    );
    let mut config = sasl_client(broker.local_addr, "sasl_ssl", "admin", "admin-secret");
    config.set("ssl.ca.pem", &pki.ca_pem);
    round_trip(&config, "sasl-ssl-topic", 10);
    let principals = recorder.0.lock().unwrap().clone();
    assert!(!principals.is_empty());
    assert!(
        principals.iter().all(|p| p == "User:admin"),
        "{principals:?}"
    );
    rt.block_on(broker.shutdown());
}

#[test]
fn scram_users_from_the_metadata_log_authenticate_librdkafka() {
    use vltava_broker::security::scram::{salted_password, ScramMechanism};
    use vltava_protocol::messages::alter_user_scram_credentials_request::{
        ScramCredentialDeletion, ScramCredentialUpsertion,
    };
    use vltava_protocol::messages::describe_user_scram_credentials_request::UserName;
    use vltava_protocol::messages::{
        AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
        DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
    };
    use vltava_protocol::{ApiKey, ErrorCode, StrBytes};

    let upsert = |user: &str, m: ScramMechanism, password: &str, iterations: i32| {
        let salt = format!("salt-of-{user}").into_bytes();
        ScramCredentialUpsertion::default()
            .with_name(StrBytes::from_string(user.into()))
            .with_mechanism(m.wire())
            .with_iterations(iterations)
            .with_salted_password(salted_password(m, password, &salt, iterations as u32).into())
            .with_salt(salt.into())
    };
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let broker = start_secure(
        &rt,
        dir.path(),
        &[
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
            ),
            ("sasl.enabled.mechanisms", "SCRAM-SHA-256,SCRAM-SHA-512"),
        ],
        Arc::clone(&recorder) as _,
    );
    let sasl_addr = broker.broker.listeners[1].local_addr;
    let mut admin = RawClient::connect(broker.local_addr);
    let resp: AlterUserScramCredentialsResponse = admin.call(
        ApiKey::AlterUserScramCredentials,
        0,
        &AlterUserScramCredentialsRequest::default().with_upsertions(vec![
            upsert("alice", ScramMechanism::ScramSha256, "alice-secret", 4096),
            upsert("bob", ScramMechanism::ScramSha512, "bob-secret", 8192),
            upsert("carol", ScramMechanism::ScramSha256, "c", 100),
        ]),
    );
    let codes: Vec<(String, i16)> = resp
        .results
        .iter()
        .map(|r| (r.user.to_string(), r.error_code))
        .collect();
    assert_eq!(
        codes,
        vec![
            ("alice".to_string(), 0),
            ("bob".to_string(), 0),
            (
                "carol".to_string(),
                ErrorCode::UnacceptableCredential.code()
            ),
        ]
    );
    let described: DescribeUserScramCredentialsResponse = admin.call(
        ApiKey::DescribeUserScramCredentials,
        0,
        &DescribeUserScramCredentialsRequest::default(),
    );
    let users: Vec<(String, Vec<(i8, i32)>)> = described
        .results
        .iter()
        .map(|r| {
            (
                r.user.to_string(),
                r.credential_infos
                    .iter()
                    .map(|c| (c.mechanism, c.iterations))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        users,
        vec![
            ("alice".to_string(), vec![(1, 4096)]),
            ("bob".to_string(), vec![(2, 8192)])
        ]
    );
    let described: DescribeUserScramCredentialsResponse = admin.call(
        ApiKey::DescribeUserScramCredentials,
        0,
        &DescribeUserScramCredentialsRequest::default().with_users(Some(vec![
            UserName::default().with_name(StrBytes::from_static_str("carol"))
        ])),
    );
    assert_eq!(
        described.results[0].error_code,
        ErrorCode::ResourceNotFound.code()
    );

    let scram = |user: &str, mechanism: &str, password: &str| {
        let mut c = client_config(sasl_addr);
        c.set("security.protocol", "sasl_plaintext")
            .set("sasl.mechanism", mechanism)
            .set("sasl.username", user)
            .set("sasl.password", password);
        c
    };
    round_trip(
        &scram("alice", "SCRAM-SHA-256", "alice-secret"),
        "scram-topic",
        10,
    );
    let principals = recorder.0.lock().unwrap().clone();
    assert!(
        principals.iter().any(|p| p == "User:alice"),
        "{principals:?}"
    );
    assert!(
        principals
            .iter()
            .all(|p| p == "User:alice" || p == "User:ANONYMOUS"),
        "{principals:?}"
    );
    assert!(can_fetch_metadata(&scram(
        "bob",
        "SCRAM-SHA-512",
        "bob-secret"
    )));
    assert!(!can_fetch_metadata(&scram(
        "alice",
        "SCRAM-SHA-256",
        "wrong"
    )));
    assert!(!can_fetch_metadata(&scram(
        "alice",
        "SCRAM-SHA-512",
        "alice-secret"
    )));
    assert!(!can_fetch_metadata(&scram("carol", "SCRAM-SHA-256", "c")));

    // A deleted credential no longer authenticates.
    let resp: AlterUserScramCredentialsResponse = admin.call(
        ApiKey::AlterUserScramCredentials,
        0,
        &AlterUserScramCredentialsRequest::default().with_deletions(vec![
            ScramCredentialDeletion::default()
                .with_name(StrBytes::from_static_str("alice"))
                .with_mechanism(ScramMechanism::ScramSha256.wire()),
        ]),
    );
    assert_eq!(resp.results[0].error_code, 0);
    assert!(!can_fetch_metadata(&scram(
        "alice",
        "SCRAM-SHA-256",
        "alice-secret"
    )));
    rt.block_on(broker.shutdown());
}

/// The CLI's librdkafka speaks TLS and SCRAM: a user made with `vltava user scram set` runs
/// topic and produce/consume commands over SASL_SSL from a `--command-config` file.
#[test]
fn cli_commands_run_over_sasl_ssl_with_scram() {
    let pki = TestPki::new();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(
        &rt,
        dir.path(),
        &[
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0",
            ),
            ("ssl.keystore.type", "PEM"),
            ("ssl.keystore.certificate.chain", &pki.server_cert_pem),
            ("ssl.keystore.key", &pki.server_key_pem),
            ("sasl.enabled.mechanisms", "SCRAM-SHA-512"),
        ],
    );
    let plain = broker.local_addr.to_string();
    let secure = broker.broker.listeners[1].local_addr.to_string();
    let cli = |args: &[&str], stdin: &[u8]| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vltava"))
            .args(args)
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
    let (ok, _, err) = cli(
        &[
            "user",
            "scram",
            "set",
            "alice",
            "--mechanism",
            "SCRAM-SHA-512",
            "--password-stdin",
            "-b",
            &plain,
        ],
        b"alice-secret\n",
    );
    assert!(ok, "{err}");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let properties = |password: &str| {
        let path = dir.path().join(format!("client-{password}.properties"));
        std::fs::write(
            &path,
            format!(
                "security.protocol=SASL_SSL\nssl.ca.location={}\nsasl.mechanism=SCRAM-SHA-512\nsasl.username=alice\nsasl.password={password}\n",
                ca.display()
            ),
        )
        .unwrap();
        path.to_str().unwrap().to_string()
    };
    let good = properties("alice-secret");
    let over_tls = |args: &[&str], stdin: &[u8], config: &str| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["-b", &secure, "--command-config", config]);
        cli(&all, stdin)
    };
    let (ok, _, err) = over_tls(
        &["topic", "create", "secured", "--partitions", "2"],
        b"",
        &good,
    );
    assert!(ok, "{err}");
    let (ok, _, err) = over_tls(&["produce", "secured"], b"one\ntwo\nthree\n", &good);
    assert!(ok, "{err}");
    let (ok, out, err) = over_tls(
        &[
            "consume",
            "secured",
            "--from-beginning",
            "--max-messages",
            "3",
        ],
        b"",
        &good,
    );
    assert!(ok, "{err}");
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["one", "three", "two"]);
    // The commands on the CLI's own protocol client speak TLS and SCRAM too.
    let (ok, _, err) = over_tls(
        &[
            "quota",
            "set",
            "--client-id",
            "batch",
            "--add",
            "producer_byte_rate=1048576",
        ],
        b"",
        &good,
    );
    assert!(ok, "{err}");
    let (ok, out, err) = over_tls(&["quota", "describe", "-o", "json"], b"", &good);
    assert!(ok && out.contains("1048576"), "{out}{err}");
    let (ok, out, err) = over_tls(&["user", "scram", "list", "-o", "json"], b"", &good);
    assert!(ok && out.contains("alice"), "{out}{err}");
    // A wrong password gets nothing, and the protocol client says why.
    let bad = properties("wrong");
    let (ok, _, _) = over_tls(&["topic", "list"], b"", &bad);
    assert!(!ok, "a wrong password listed topics");
    let (ok, _, err) = over_tls(&["user", "scram", "list"], b"", &bad);
    assert!(!ok && err.contains("Authentication failed"), "{err}");
    // A broker whose certificate the client's CA did not sign is refused during the handshake.
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, TestPki::new().ca_pem).unwrap();
    let untrusting = dir.path().join("untrusting.properties");
    std::fs::write(
        &untrusting,
        std::fs::read_to_string(&good)
            .unwrap()
            .replace(ca.to_str().unwrap(), other_ca.to_str().unwrap()),
    )
    .unwrap();
    let (ok, _, err) = over_tls(&["quota", "describe"], b"", untrusting.to_str().unwrap());
    assert!(!ok && err.contains("TLS handshake"), "{err}");
    rt.block_on(broker.shutdown());
}

/// A key store file replaced on disk serves new connections without a restart: clients
/// that trust only the new CA get in, clients that trust only the old one no longer do.
#[test]
fn a_replaced_key_store_is_served_without_a_restart() {
    let (old, new) = (TestPki::new(), TestPki::new());
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let keystore = dir.path().join("broker.pem");
    let write_store = |pki: &TestPki| {
        // Replaced as operators and cert managers do: written aside, then renamed over.
        let aside = dir.path().join("broker.pem.new");
        std::fs::write(
            &aside,
            format!("{}{}", pki.server_cert_pem, pki.server_key_pem),
        )
        .unwrap();
        std::fs::rename(&aside, &keystore).unwrap();
    };
    write_store(&old);
    let location = keystore.to_str().unwrap().to_string();
    let broker = start_secure(
        &rt,
        dir.path(),
        &[
            ("listeners", "SSL://127.0.0.1:0"),
            ("ssl.keystore.type", "PEM"),
            ("ssl.keystore.location", &location),
        ],
        Arc::new(Recorder::default()),
    );
    let trusting = |pki: &TestPki| {
        let mut c = client_config(broker.local_addr);
        c.set("security.protocol", "ssl")
            .set("ssl.ca.pem", &pki.ca_pem);
        c
    };
    assert!(can_fetch_metadata(&trusting(&old)));
    assert!(!can_fetch_metadata(&trusting(&new)));
    write_store(&new);
    // The listener looks at its files at most once a second.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(can_fetch_metadata(&trusting(&new)));
    assert!(!can_fetch_metadata(&trusting(&old)));
    // A broken file is not taken: the last good store keeps serving.
    std::fs::write(&keystore, "not a pem file").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(can_fetch_metadata(&trusting(&new)));
    rt.block_on(broker.shutdown());
}

/// Runs the `openssl` command line, as operators build their stores.
fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// PKCS12 key and trust stores as openssl writes them (today's AES form, and the 3DES form
/// older keytools wrote, read under Kafka's default store type), and a PEM key encrypted
/// under `ssl.key.password`, serve librdkafka, whose own key store is PKCS12 too. A wrong
/// password stops the broker at start, naming the key to fix.
#[test]
fn pkcs12_stores_and_encrypted_pem_keys_serve_librdkafka() {
    let pki = TestPki::new();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let cert = file("broker.pem", &pki.server_cert_pem);
    let key = file("broker-key.pem", &pki.server_key_pem);
    let ca = file("ca.pem", &pki.ca_pem);
    let (client_cert, client_key) = pki.client(&[(DnType::CommonName, "alice")]);
    let client_cert = file("client.pem", &client_cert);
    let client_key = file("client-key.pem", &client_key);
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (aes, des, trust, client, encrypted) = (
        path("broker.p12"),
        path("broker-3des.p12"),
        path("trust.p12"),
        path("client.p12"),
        path("broker-key-enc.pem"),
    );
    let export = ["pkcs12", "-export", "-in", &cert, "-inkey", &key];
    openssl(&[&export[..], &["-out", &aes, "-passout", "pass:store-pw"]].concat());
    openssl(
        &[
            &export[..],
            &["-out", &des, "-passout", "pass:store-pw"],
            &["-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES"],
            &["-macalg", "sha1"],
        ]
        .concat(),
    );
    openssl(&[
        "pkcs12",
        "-export",
        "-nokeys",
        "-in",
        &ca,
        "-out",
        &trust,
        "-passout",
        "pass:trust-pw",
    ]);
    openssl(&[
        "pkcs12",
        "-export",
        "-in",
        &client_cert,
        "-inkey",
        &client_key,
        "-out",
        &client,
        "-passout",
        "pass:client-pw",
    ]);
    openssl(&[
        "pkcs8",
        "-topk8",
        "-v2",
        "aes-256-cbc",
        "-in",
        &key,
        "-out",
        &encrypted,
        "-passout",
        "pass:key-pw",
    ]);

    for (i, store) in [&aes, &des].into_iter().enumerate() {
        let recorder = Arc::new(Recorder::default());
        let broker = start_secure(
            &rt,
            &dir.path().join(format!("data-{i}")),
            &[
                ("listeners", "SSL://127.0.0.1:0"),
                ("ssl.keystore.location", store),
                ("ssl.keystore.password", "store-pw"),
                ("ssl.client.auth", "required"),
                ("ssl.truststore.type", "PKCS12"),
                ("ssl.truststore.location", &trust),
                ("ssl.truststore.password", "trust-pw"),
            ],
            Arc::clone(&recorder) as _,
        );
        let mut config = client_config(broker.local_addr);
        config
            .set("security.protocol", "ssl")
            .set("ssl.ca.pem", &pki.ca_pem)
            .set("ssl.keystore.location", &client)
            .set("ssl.keystore.password", "client-pw");
        round_trip(&config, "p12-topic", 10);
        let principals = recorder.0.lock().unwrap().clone();
        assert!(
            !principals.is_empty() && principals.iter().all(|p| p == "User:CN=alice"),
            "{principals:?}"
        );
        rt.block_on(broker.shutdown());
    }

    let keystore = file(
        "broker-enc.pem",
        &format!(
            "{}{}",
            pki.server_cert_pem,
            std::fs::read_to_string(&encrypted).unwrap()
        ),
    );
    // Both starts share a data dir: a start refused at its listeners' settings has opened
    // nothing there, so nothing of it runs on in this runtime.
    let encrypted_pem = |password: &'static str| {
        let map: BTreeMap<String, String> = [
            ("log.dirs", path("data-pem")),
            ("listeners", "SSL://127.0.0.1:0".into()),
            ("ssl.keystore.type", "PEM".into()),
            ("ssl.keystore.location", keystore.clone()),
            ("ssl.key.password", password.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        BrokerConfig::from_props(map).unwrap()
    };
    let err = rt
        .block_on(vltava_broker::start(encrypted_pem("wrong")))
        .err()
        .expect("a wrong key password stops the broker");
    assert!(format!("{err:#}").contains("ssl.key.password"), "{err:#}");
    assert!(
        !std::path::Path::new(&path("data-pem"))
            .join("__cluster_metadata")
            .exists(),
        "the refused start opened the metadata quorum"
    );
    let broker = rt
        .block_on(vltava_broker::start(encrypted_pem("key-pw")))
        .unwrap();
    let mut config = client_config(broker.local_addr);
    config
        .set("security.protocol", "ssl")
        .set("ssl.ca.pem", &pki.ca_pem);
    round_trip(&config, "encrypted-key-topic", 10);
    rt.block_on(broker.shutdown());
}

/// Counts librdkafka's connections to each broker it learned of, from its statistics.
#[derive(Default)]
struct Connects(Mutex<BTreeMap<i32, i64>>);

impl rdkafka::ClientContext for Connects {
    fn stats(&self, stats: rdkafka::Statistics) {
        let mut seen = self.0.lock().unwrap();
        for b in stats.brokers.values().filter(|b| b.nodeid >= 0) {
            seen.insert(b.nodeid, b.connects.unwrap_or(0));
        }
    }
}
impl rdkafka::consumer::ConsumerContext for Connects {}

/// KIP-368: with `connections.max.reauth.ms` a SASL session ends unless the client
/// authenticates again on the same connection, as the same user. librdkafka, left to its
/// defaults, does so: it produces and consumes across several session lifetimes on one
/// connection.
#[test]
fn sasl_sessions_end_unless_renewed_and_librdkafka_renews_them() {
    use vltava_protocol::messages::{
        MetadataRequest, MetadataResponse, SaslAuthenticateRequest, SaslAuthenticateResponse,
        SaslHandshakeRequest, SaslHandshakeResponse,
    };
    use vltava_protocol::{ApiKey, ErrorCode, StrBytes};

    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_secure(
        &rt,
        dir.path(),
        &[
            ("listeners", "SASL_PLAINTEXT://127.0.0.1:0"),
            ("sasl.enabled.mechanisms", "PLAIN"),
            (
                "listener.name.sasl_plaintext.plain.sasl.jaas.config",
                PLAIN_JAAS,
            ),
            ("connections.max.reauth.ms", "1500"),
        ],
        Arc::new(Recorder::default()),
    );
    let addr = broker.local_addr;

    let login = |raw: &mut RawClient, token: &'static [u8]| -> SaslAuthenticateResponse {
        let hs: SaslHandshakeResponse = raw.call(
            ApiKey::SaslHandshake,
            1,
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
        );
        assert_eq!(hs.error_code, 0);
        raw.call(
            ApiKey::SaslAuthenticate,
            2,
            &SaslAuthenticateRequest::default().with_auth_bytes(bytes::Bytes::from_static(token)),
        )
    };
    let metadata = |raw: &mut RawClient| {
        let _: MetadataResponse = raw.call(ApiKey::Metadata, 12, &MetadataRequest::default());
    };
    let alice = b"\0alice\0alice-secret";
    let mut raw = RawClient::connect(addr);
    let auth = login(&mut raw, alice);
    assert_eq!((auth.error_code, auth.session_lifetime_ms), (0, 1500));
    metadata(&mut raw);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(login(&mut raw, alice).session_lifetime_ms, 1500);
    // 2 s after the first login: served, since the session was renewed.
    std::thread::sleep(Duration::from_millis(1000));
    metadata(&mut raw);
    std::thread::sleep(Duration::from_millis(1000));
    raw.send_raw(&metadata_frame());
    raw.assert_closed("a request after the session expired");
    // Re-authenticating as someone else ends the connection.
    let mut raw = RawClient::connect(addr);
    assert_eq!(login(&mut raw, alice).error_code, 0);
    let auth = login(&mut raw, b"\0admin\0admin-secret");
    assert_eq!(
        auth.error_code,
        ErrorCode::SaslAuthenticationFailed.code(),
        "{auth:?}"
    );
    raw.assert_closed("after re-authenticating as another user");

    // librdkafka re-authenticates on its connection: 4 s of records over 1.5 s sessions.
    let config = sasl_client(addr, "sasl_plaintext", "alice", "alice-secret");
    let producer = checked_producer(&config);
    let consumer: BaseConsumer<Connects> = config
        .clone()
        .set("group.id", "reauth-readers")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "250")
        .create_with_context(Connects::default())
        .unwrap();
    consumer.subscribe(&["reauth-topic"]).unwrap();
    let (mut sent, mut seen) = (0, Vec::new());
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        let value = format!("r-{sent}");
        producer
            .send(BaseRecord::<(), _>::to("reauth-topic").payload(&value))
            .map_err(|(e, _)| e)
            .unwrap();
        sent += 1;
        producer.poll(Duration::ZERO);
        // Errors before the producer creates the topic are expected.
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            seen.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
    }
    flush_delivered(&producer, sent, Duration::from_secs(10));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < sent && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            seen.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
    }
    let want: Vec<String> = (0..sent).map(|i| format!("r-{i}")).collect();
    assert_eq!(seen, want);
    let connects = consumer.context().0.lock().unwrap().clone();
    assert_eq!(
        connects.values().copied().collect::<Vec<_>>(),
        vec![1],
        "{connects:?}"
    );
    // Closed first, so the broker's shutdown does not wait for their connections.
    drop(consumer);
    drop(producer);
    rt.block_on(broker.shutdown());
}

/// The broker's own client of its peers (replica fetchers, the quorum) re-authenticates its
/// connection before the session ends, so replication outlives `connections.max.reauth.ms`;
/// a connection that is not refreshed is closed at its next request.
#[test]
fn peer_connections_reauthenticate_before_their_session_ends() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use vltava_broker::context::SecurityProtocol;
    use vltava_broker::security::peer::{PeerConnector, PeerStream};
    use vltava_protocol::messages::{MetadataRequest, MetadataResponse};
    use vltava_protocol::ApiKey;

    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_secure(
        &rt,
        dir.path(),
        &[
            ("listeners", "SASL_PLAINTEXT://127.0.0.1:0"),
            ("sasl.enabled.mechanisms", "PLAIN"),
            (
                "listener.name.sasl_plaintext.plain.sasl.jaas.config",
                PLAIN_JAAS,
            ),
            ("connections.max.reauth.ms", "1000"),
        ],
        Arc::new(Recorder::default()),
    );
    let port = broker.local_addr.port();
    let connector = PeerConnector::new(
        "SASL_PLAINTEXT",
        SecurityProtocol::SaslPlaintext,
        "sasl.mechanism.inter.broker.protocol",
        |k| match k {
            "sasl.mechanism.inter.broker.protocol" => Some("PLAIN".into()),
            "plain.sasl.jaas.config" => Some(PLAIN_JAAS.into()),
            _ => None,
        },
    )
    .unwrap();
    async fn metadata(s: &mut PeerStream, correlation: i32) -> std::io::Result<()> {
        let frame = vltava_protocol::encode_request(
            ApiKey::Metadata,
            12,
            correlation,
            Some("peer"),
            &MetadataRequest::default(),
        )
        .unwrap();
        s.write_all(&frame).await?;
        let len = s.read_i32().await? as usize;
        let mut body = vec![0; len];
        s.read_exact(&mut body).await?;
        vltava_protocol::decode_response::<MetadataResponse>(ApiKey::Metadata, 12, body.into())
            .unwrap();
        Ok(())
    }
    rt.block_on(async {
        let mut s = connector
            .connect("127.0.0.1", port, Duration::from_secs(5))
            .await
            .unwrap();
        // 2.4 s of requests over 1 s sessions, on one connection.
        for i in 0..4 {
            tokio::time::sleep(Duration::from_millis(600)).await;
            connector.refresh(&mut s).await.unwrap();
            metadata(&mut s, 10 + i).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(
            metadata(&mut s, 20).await.is_err(),
            "a stale session is closed"
        );
    });
    rt.block_on(broker.shutdown());
}

/// Input before authentication: a TLS ClientHello on a SASL_PLAINTEXT port, garbage, and a
/// frame over `sasl.server.max.receive.size` each close their connection with a log line
/// that says why, while a client that logs in is served.
#[test]
fn hostile_input_before_authentication_closes_with_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vltava"))
        .args([
            "broker",
            "--listeners",
            "SASL_PLAINTEXT://127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .args(["--override", "sasl.enabled.mechanisms=PLAIN", "--override"])
        .arg(format!(
            "listener.name.sasl_plaintext.plain.sasl.jaas.config={PLAIN_JAAS}"
        ))
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr = ready_addr(&mut child);

    // The start of a TLS 1.2/1.3 ClientHello record.
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x00, 0xf4, 0x01, 0x00, 0x00, 0xf0, 0x03, 0x03,
    ];
    hello.extend_from_slice(&[0u8; 32]);
    let mut raw = RawClient::connect(addr);
    raw.send_raw(&hello);
    raw.assert_closed("a TLS ClientHello on a SASL_PLAINTEXT port");
    // A 12-byte frame naming no API.
    let mut raw = RawClient::connect(addr);
    raw.send_raw(&[
        0, 0, 0, 12, 0x7f, 0x7f, 0, 0, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef,
    ]);
    raw.assert_closed("garbage before the handshake");
    let mut raw = RawClient::connect(addr);
    raw.send_raw(&1_000_000i32.to_be_bytes());
    raw.assert_closed("a 1 MB frame before authentication");
    assert!(can_fetch_metadata(&sasl_client(
        addr,
        "sasl_plaintext",
        "alice",
        "alice-secret"
    )));

    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    for line in [
        "TLS handshake on a listener without TLS",
        "unsupported request; closing connection",
        "exceeds sasl.server.max.receive.size",
    ] {
        assert!(log.contains(line), "no {line:?} in the log:\n{log}");
    }
}
