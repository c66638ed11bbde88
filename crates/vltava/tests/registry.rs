//! The schema registry against a real broker: Confluent's REST API over HTTP, its records in
//! `_schemas`, and a restart that rebuilds everything from the topic alone.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

const CT: &str = "application/vnd.schemaregistry.v1+json";

/// One HTTP/1.1 exchange; returns the status and the body parsed as JSON (or as a string).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: registry\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/vnd.schemaregistry.v1+json"),
        "{head}"
    );
    let value = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()));
    (status, value)
}

fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    http(addr, "GET", path, CT, "")
}

fn post(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    http(addr, "POST", path, CT, &body.to_string())
}

fn put(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    http(addr, "PUT", path, CT, &body.to_string())
}

fn delete(addr: SocketAddr, path: &str) -> (u16, Value) {
    http(addr, "DELETE", path, CT, "")
}

fn error_code(answer: &(u16, Value)) -> (u16, i64) {
    (answer.0, answer.1["error_code"].as_i64().unwrap_or(-1))
}

fn start_registry(
    rt: &tokio::runtime::Runtime,
    broker: SocketAddr,
) -> vltava_registry::RegistryHandle {
    let mut store = vltava_registry::StoreConfig::new(broker.to_string());
    store.timeout = Duration::from_secs(20);
    rt.block_on(vltava_registry::start(
        vltava_registry::RegistryConfig::new(store, vec!["http://127.0.0.1:0".to_string()]),
    ))
    .unwrap()
}

fn user(extra_fields: &str) -> String {
    format!(
        r#"{{"type":"record","name":"User","namespace":"shop","fields":[{{"name":"name","type":"string"}}{extra_fields}]}}"#
    )
}

/// Every record in `_schemas` as (key, value) text.
fn schemas_topic(broker: SocketAddr) -> Vec<(String, Option<String>)> {
    let consumer: BaseConsumer = client_config(broker)
        .set("group.id", "registry-test")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("_schemas", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    loop {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => out.push((
                String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
                m.payload().map(|p| String::from_utf8(p.to_vec()).unwrap()),
            )),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return out,
            Some(Err(e)) => panic!("{e}"),
            None => panic!("no end of _schemas within 10 s"),
        }
    }
}

#[test]
fn rest_api_storage_and_restart() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[]);
    let b = broker.local_addr;
    let registry = start_registry(&rt, b);
    let r = registry.local_addrs()[0];

    // Register, and register again: one id.
    let v1 = user("");
    let (status, body) = post(r, "/subjects/orders-value/versions", json!({"schema": v1}));
    assert_eq!((status, &body), (200, &json!({"id": 1})));
    assert_eq!(
        post(r, "/subjects/orders-value/versions", json!({"schema": v1})).1,
        json!({"id": 1})
    );
    // The same schema in another subject shares the id.
    assert_eq!(
        post(r, "/subjects/other-value/versions", json!({"schema": v1})).1,
        json!({"id": 1})
    );

    // An incompatible change (new field without a default) is refused under BACKWARD.
    let breaking = user(r#",{"name":"email","type":"string"}"#);
    let answer = post(
        r,
        "/subjects/orders-value/versions",
        json!({"schema": breaking}),
    );
    assert_eq!(error_code(&answer), (409, 409));
    let answer = post(
        r,
        "/compatibility/subjects/orders-value/versions/latest?verbose=true",
        json!({"schema": breaking}),
    );
    assert_eq!(answer.1["is_compatible"], json!(false));
    assert!(!answer.1["messages"].as_array().unwrap().is_empty());
    let v2 = user(r#",{"name":"age","type":"int","default":0}"#);
    assert_eq!(
        post(
            r,
            "/compatibility/subjects/orders-value/versions/latest",
            json!({"schema": v2})
        )
        .1,
        json!({"is_compatible": true})
    );
    assert_eq!(
        post(r, "/subjects/orders-value/versions", json!({"schema": v2})).1,
        json!({"id": 2})
    );

    // Reads.
    assert_eq!(
        get(r, "/subjects").1,
        json!(["orders-value", "other-value"])
    );
    assert_eq!(get(r, "/subjects/orders-value/versions").1, json!([1, 2]));
    let latest = get(r, "/subjects/orders-value/versions/latest").1;
    assert_eq!(
        latest,
        json!({"subject": "orders-value", "version": 2, "id": 2, "schema": v2})
    );
    assert_eq!(get(r, "/schemas/ids/1").1, json!({"schema": v1}));
    assert_eq!(
        get(r, "/schemas/ids/1/versions").1,
        json!([{"subject": "orders-value", "version": 1}, {"subject": "other-value", "version": 1}])
    );
    assert_eq!(get(r, "/schemas/ids/2/subjects").1, json!(["orders-value"]));
    assert_eq!(
        get(r, "/subjects/orders-value/versions/1/schema").1,
        serde_json::from_str::<Value>(&v1).unwrap()
    );
    let found = post(r, "/subjects/orders-value", json!({"schema": v1})).1;
    assert_eq!(
        (found["id"].clone(), found["version"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(
        get(r, "/schemas/types").1,
        json!(["JSON", "PROTOBUF", "AVRO"])
    );

    // JSON Schema and Protobuf.
    let js = r#"{"type":"object","properties":{"sku":{"type":"string"}}}"#;
    let answer = post(
        r,
        "/subjects/items-value/versions",
        json!({"schema": js, "schemaType": "JSON"}),
    );
    assert_eq!(answer.1, json!({"id": 3}));
    assert_eq!(
        get(r, "/schemas/ids/3").1,
        json!({"schemaType": "JSON", "schema": js})
    );
    let proto = "syntax = \"proto3\";\npackage shop;\nmessage Payment { string id = 1; int64 cents = 2; }\n";
    let answer = post(
        r,
        "/subjects/payments-value/versions",
        json!({"schema": proto, "schemaType": "PROTOBUF"}),
    );
    assert_eq!(answer.1, json!({"id": 4}));
    let changed = proto.replace("int64 cents", "string cents");
    let answer = post(
        r,
        "/subjects/payments-value/versions",
        json!({"schema": changed, "schemaType": "PROTOBUF"}),
    );
    assert_eq!(error_code(&answer), (409, 409));

    // Configs and modes.
    assert_eq!(
        get(r, "/config").1,
        json!({"compatibilityLevel": "BACKWARD"})
    );
    assert_eq!(
        put(r, "/config/orders-value", json!({"compatibility": "FULL"})).1,
        json!({"compatibility": "FULL"})
    );
    assert_eq!(
        get(r, "/config/orders-value").1,
        json!({"compatibilityLevel": "FULL"})
    );
    assert_eq!(error_code(&get(r, "/config/other-value")), (404, 40408));
    assert_eq!(
        get(r, "/config/other-value?defaultToGlobal=true").1,
        json!({"compatibilityLevel": "BACKWARD"})
    );
    assert_eq!(
        error_code(&put(r, "/config", json!({"compatibility": "SIDEWAYS"}))),
        (422, 42203)
    );
    assert_eq!(
        put(r, "/mode/other-value", json!({"mode": "READONLY"})).1,
        json!({"mode": "READONLY"})
    );
    let answer = post(r, "/subjects/other-value/versions", json!({"schema": v2}));
    assert_eq!(error_code(&answer), (422, 42205));
    assert_eq!(get(r, "/mode").1, json!({"mode": "READWRITE"}));

    // Deletes: soft, then permanent.
    assert_eq!(
        delete(r, "/subjects/orders-value/versions/1?permanent=true").1["error_code"],
        json!(40407)
    );
    assert_eq!(delete(r, "/subjects/orders-value/versions/1").1, json!(1));
    assert_eq!(get(r, "/subjects/orders-value/versions").1, json!([2]));
    assert_eq!(
        get(r, "/subjects/orders-value/versions?deleted=true").1,
        json!([1, 2])
    );
    assert_eq!(
        error_code(&delete(r, "/subjects/orders-value/versions/1")),
        (404, 40406)
    );
    assert_eq!(delete(r, "/subjects/items-value").1, json!([1]));
    assert_eq!(
        delete(r, "/subjects/items-value?permanent=true").1,
        json!([1])
    );
    assert_eq!(error_code(&get(r, "/schemas/ids/3")), (404, 40403));

    // Bad input gets Confluent's answers.
    assert_eq!(error_code(&get(r, "/subjects/nope/versions")), (404, 40401));
    assert_eq!(
        error_code(&get(r, "/subjects/orders-value/versions/9")),
        (404, 40402)
    );
    assert_eq!(
        error_code(&get(r, "/subjects/orders-value/versions/zero")),
        (422, 42202)
    );
    assert_eq!(error_code(&get(r, "/schemas/ids/999")), (404, 40403));
    let answer = post(
        r,
        "/subjects/x/versions",
        json!({"schema": "{\"type\":\"recrod\"}"}),
    );
    assert_eq!(error_code(&answer), (422, 42201));
    let answer = post(
        r,
        "/subjects/x/versions",
        json!({"schema": "\"string\"", "schemaType": "XML"}),
    );
    assert_eq!(error_code(&answer), (422, 42201));
    let answer = http(r, "POST", "/subjects/x/versions", CT, "{not json");
    assert_eq!(error_code(&answer), (400, 400));
    let answer = http(r, "POST", "/subjects/x/versions", CT, r#"{"schema": 5}"#);
    assert_eq!(error_code(&answer), (422, 422));
    let answer = http(
        r,
        "POST",
        "/subjects/x/versions",
        "text/plain",
        r#"{"schema":"\"string\""}"#,
    );
    assert_eq!(error_code(&answer), (415, 415));
    let huge = json!({"schema": "x".repeat(2 << 20)}).to_string();
    let answer = http(r, "POST", "/subjects/x/versions", CT, &huge);
    assert_eq!(error_code(&answer), (413, 413));
    assert_eq!(error_code(&get(r, "/no/such/path")), (404, 404));
    // Plain JSON is accepted as well.
    let answer = http(
        r,
        "POST",
        "/subjects/plain/versions",
        "application/json",
        &json!({"schema": "\"long\""}).to_string(),
    );
    assert_eq!(answer, (200, json!({"id": 5})));

    // The topic holds Confluent's layout.
    let records = schemas_topic(b);
    assert_eq!(
        records[0],
        (
            r#"{"keytype":"SCHEMA","subject":"orders-value","version":1,"magic":1}"#.to_string(),
            Some(format!(
                r#"{{"subject":"orders-value","version":1,"id":1,"schema":{},"deleted":false}}"#,
                serde_json::to_string(&v1).unwrap()
            )),
        )
    );
    assert!(records.iter().any(|(k, v)| k
        == r#"{"keytype":"CONFIG","subject":"orders-value","magic":0}"#
        && v.as_deref() == Some(r#"{"compatibilityLevel":"FULL"}"#)));
    assert!(records.iter().any(|(k, v)| k
        == r#"{"keytype":"SCHEMA","subject":"items-value","version":1,"magic":1}"#
        && v.is_none()));

    // Restart: everything comes back from the topic alone, and ids are not reused.
    rt.block_on(registry.shutdown());
    let registry = start_registry(&rt, b);
    let r = registry.local_addrs()[0];
    assert_eq!(
        get(r, "/subjects").1,
        json!(["orders-value", "other-value", "payments-value", "plain"])
    );
    assert_eq!(
        get(r, "/subjects/orders-value/versions?deleted=true").1,
        json!([1, 2])
    );
    assert_eq!(get(r, "/subjects/orders-value/versions/latest").1, latest);
    assert_eq!(
        get(r, "/config/orders-value").1,
        json!({"compatibilityLevel": "FULL"})
    );
    assert_eq!(get(r, "/mode/other-value").1, json!({"mode": "READONLY"}));
    assert_eq!(get(r, "/schemas/ids/1").1, json!({"schema": v1}));
    assert_eq!(
        post(r, "/subjects/orders-value/versions", json!({"schema": v2})).1,
        json!({"id": 2})
    );
    assert_eq!(
        post(
            r,
            "/subjects/fresh/versions",
            json!({"schema": "\"bytes\""})
        )
        .1,
        json!({"id": 6})
    );
    rt.block_on(registry.shutdown());
    rt.block_on(broker.shutdown());
}

/// `vltava broker` with `schema.registry.listeners` serves the registry next to the broker,
/// announces it, and stops it cleanly with the broker.
#[test]
fn broker_serves_the_registry() {
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let (broker, announced) = BrokerProcess::start_announcing(
        dir.path(),
        &["schema.registry.listeners=http://127.0.0.1:0"],
        1,
    );
    let second = &announced[0];
    let r: SocketAddr = second
        .strip_prefix("vltava: schema registry on http://")
        .unwrap_or_else(|| panic!("unexpected line {second:?}"))
        .parse()
        .unwrap();
    assert_eq!(
        post(
            r,
            "/subjects/demo-value/versions",
            json!({"schema": "\"string\""})
        )
        .1,
        json!({"id": 1})
    );
    assert_eq!(get(r, "/schemas/ids/1").1, json!({"schema": "\"string\""}));

    // `vltava schema` against it.
    let schema = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_vltava"))
            .arg("schema")
            .args(["--registry-url", &format!("http://{r}")])
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let value = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
        (
            out.status.code(),
            value,
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, answer, _) = schema(&["register", "other-value", "--schema", "\"int\""]);
    assert_eq!((code, answer), (Some(0), json!({"id": 2})));
    let file = dir.path().join("item.json");
    std::fs::write(&file, r#"{"type":"object"}"#).unwrap();
    let (code, answer, _) = schema(&[
        "register",
        "items-value",
        "--type",
        "json",
        "--schema-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!((code, answer), (Some(0), json!({"id": 3})));
    let (code, answer, _) = schema(&["list"]);
    assert_eq!(
        (code, answer),
        (Some(0), json!(["demo-value", "items-value", "other-value"]))
    );
    let (code, answer, _) = schema(&["get", "--id", "3"]);
    assert_eq!(answer["schemaType"], json!("JSON"));
    assert_eq!(code, Some(0));
    let (code, answer, _) = schema(&["get", "demo-value"]);
    assert_eq!((code, answer["id"].clone()), (Some(0), json!(1)));
    // Incompatible: exit 1 with the reasons.
    let (code, answer, _) = schema(&["check", "demo-value", "--schema", "\"int\""]);
    assert_eq!(
        (code, answer["is_compatible"].clone()),
        (Some(1), json!(false))
    );
    let (code, answer, _) = schema(&["check", "demo-value", "--schema", "\"string\""]);
    assert_eq!(
        (code, answer["is_compatible"].clone()),
        (Some(0), json!(true))
    );
    // The registry's refusals reach stderr with their code.
    let (code, _, stderr) = schema(&["get", "nope"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("40401"), "{stderr}");
    let (code, answer, _) = schema(&["delete", "other-value"]);
    assert_eq!((code, answer), (Some(0), json!([1])));
    let (code, answer, _) = schema(&["delete", "other-value", "--permanent"]);
    assert_eq!((code, answer), (Some(0), json!([1])));

    // The CLI round trip: Avro produced from JSON text, consumed back as JSON text.
    let bootstrap = broker.addr.to_string();
    let user = r#"{"type":"record","name":"User","fields":[{"name":"name","type":"string"},{"name":"visits","type":"long"}]}"#;
    let mut produce = Command::new(env!("CARGO_BIN_EXE_vltava"))
        .args(["produce", "users", "--bootstrap-server", &bootstrap])
        .args(["--value-format", "avro", "--value-schema", user])
        .args(["--schema-registry", &format!("http://{r}")])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    produce
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"name\":\"ann\",\"visits\":3}\n{\"name\":\"bo\",\"visits\":4}\n")
        .unwrap();
    assert!(produce.wait().unwrap().success());
    let registered = get(r, "/subjects/users-value/versions/latest").1;
    assert_eq!(registered["schema"], json!(user));
    let id = registered["id"].as_i64().unwrap();
    let consumed = Command::new(env!("CARGO_BIN_EXE_vltava"))
        .args(["consume", "users", "--bootstrap-server", &bootstrap])
        .args([
            "--from-beginning",
            "--exit-at-end",
            "--value-format",
            "avro",
        ])
        .args(["--schema-registry", &format!("http://{r}")])
        .output()
        .unwrap();
    assert!(consumed.status.success());
    let lines: Vec<Value> = String::from_utf8(consumed.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        vec![
            json!({"name": "ann", "visits": 3}),
            json!({"name": "bo", "visits": 4})
        ]
    );
    // In the topic: Confluent's framing with the registered id.
    let raw = Command::new(env!("CARGO_BIN_EXE_vltava"))
        .args(["consume", "users", "--bootstrap-server", &bootstrap])
        .args(["--from-beginning", "--exit-at-end", "-o", "json"])
        .output()
        .unwrap();
    let first_record: Value = serde_json::from_str(
        String::from_utf8(raw.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let value = first_record["value"].as_str().unwrap().as_bytes().to_vec();
    assert_eq!(value[0], 0);
    assert_eq!(
        i32::from_be_bytes([value[1], value[2], value[3], value[4]]) as i64,
        id
    );
    // Keys too, under <topic>-key.
    let mut produce = Command::new(env!("CARGO_BIN_EXE_vltava"))
        .args(["produce", "keyed", "--bootstrap-server", &bootstrap])
        .args([
            "--key-separator",
            "|",
            "--key-format",
            "avro",
            "--key-schema",
            "\"long\"",
        ])
        .args(["--value-format", "avro", "--value-schema", user])
        .args(["--schema-registry", &format!("http://{r}")])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    produce
        .stdin
        .take()
        .unwrap()
        .write_all(b"42|{\"name\":\"cy\",\"visits\":5}\n")
        .unwrap();
    assert!(produce.wait().unwrap().success());
    assert_eq!(
        get(r, "/subjects/keyed-key/versions/1").1["schema"],
        json!("\"long\"")
    );
    let consumed = Command::new(env!("CARGO_BIN_EXE_vltava"))
        .args(["consume", "keyed", "--bootstrap-server", &bootstrap])
        .args(["--from-beginning", "--exit-at-end"])
        .args(["--key-format", "avro", "--value-format", "avro"])
        .args(["--format", "%k %s\\n"])
        .args(["--schema-registry", &format!("http://{r}")])
        .output()
        .unwrap();
    assert!(consumed.status.success());
    assert_eq!(
        String::from_utf8(consumed.stdout).unwrap(),
        "42 {\"name\":\"cy\",\"visits\":5}\n"
    );

    // JSON Schema values: checked against the schema, framed, read back as JSON text.
    let order = r#"{"type":"object","properties":{"sku":{"type":"string"}},"required":["sku"]}"#;
    let json_produce = |input: &[u8]| {
        let mut p = Command::new(env!("CARGO_BIN_EXE_vltava"))
            .args(["produce", "orders-json", "--bootstrap-server", &bootstrap])
            .args(["--value-format", "json", "--value-schema", order])
            .args(["--schema-registry", &format!("http://{r}")])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        p.stdin.take().unwrap().write_all(input).unwrap();
        p.wait_with_output().unwrap().status.code()
    };
    assert_eq!(json_produce(b"{\"sku\": \"a-1\"}\n"), Some(0));
    assert_eq!(json_produce(b"{\"qty\": 1}\n"), Some(1));
    let registered = get(r, "/subjects/orders-json-value/versions/latest").1;
    assert_eq!(registered["schemaType"], json!("JSON"));
    let consumed = Command::new(env!("CARGO_BIN_EXE_vltava"))
        .args(["consume", "orders-json", "--bootstrap-server", &bootstrap])
        .args([
            "--from-beginning",
            "--exit-at-end",
            "--value-format",
            "json",
        ])
        .args(["--schema-registry", &format!("http://{r}")])
        .output()
        .unwrap();
    assert!(consumed.status.success());
    assert_eq!(
        String::from_utf8(consumed.stdout).unwrap(),
        "{\"sku\":\"a-1\"}\n"
    );

    // Protobuf values: the .proto text's first message, read back in Protobuf's JSON mapping.
    let proto = r#"syntax = "proto3"; message Order { string sku = 1; int32 qty = 2; }"#;
    let mut p = Command::new(env!("CARGO_BIN_EXE_vltava"))
        .args(["produce", "orders-proto", "--bootstrap-server", &bootstrap])
        .args(["--value-format", "protobuf", "--value-schema", proto])
        .args(["--schema-registry", &format!("http://{r}")])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin
        .take()
        .unwrap()
        .write_all(b"{\"sku\": \"p-1\", \"qty\": 2}\n")
        .unwrap();
    assert!(p.wait().unwrap().success());
    let registered = get(r, "/subjects/orders-proto-value/versions/latest").1;
    assert_eq!(registered["schemaType"], json!("PROTOBUF"));
    let consumed = Command::new(env!("CARGO_BIN_EXE_vltava"))
        .args(["consume", "orders-proto", "--bootstrap-server", &bootstrap])
        .args([
            "--from-beginning",
            "--exit-at-end",
            "--value-format",
            "protobuf",
        ])
        .args(["--schema-registry", &format!("http://{r}")])
        .output()
        .unwrap();
    assert!(consumed.status.success());
    let value: Value = serde_json::from_slice(&consumed.stdout).unwrap();
    assert_eq!(value, json!({"sku": "p-1", "qty": 2}));

    // A line that does not fit the schema fails the command.
    let mut bad = Command::new(env!("CARGO_BIN_EXE_vltava"))
        .args(["produce", "users", "--bootstrap-server", &bootstrap])
        .args(["--value-format", "avro", "--value-schema", user])
        .args(["--schema-registry", &format!("http://{r}")])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    bad.stdin
        .take()
        .unwrap()
        .write_all(b"{\"name\":5}\n")
        .unwrap();
    let out = bad.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));

    broker.terminate();
}

/// Two instances on one cluster: one leads, a write sent to the other is forwarded, both
/// serve reads, and when the leader stops the other takes over.
#[test]
fn two_instances_elect_a_leader_and_forward_writes() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&rt, dir.path(), &[]);
    let b = broker.local_addr;
    let first = start_registry(&rt, b);
    let second = start_registry(&rt, b);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while first.is_leader() == second.is_leader() {
        assert!(
            std::time::Instant::now() < deadline,
            "no single leader: {} {}",
            first.is_leader(),
            second.is_leader()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (leader, follower) = if first.is_leader() {
        (first, second)
    } else {
        (second, first)
    };
    let (l, f) = (leader.local_addrs()[0], follower.local_addrs()[0]);

    // Writes to either instance get ids from the leader's one sequence.
    let s1 = json!({"schema": "\"string\""});
    let s2 = json!({"schema": "\"long\""});
    assert_eq!(
        post(f, "/subjects/a/versions", s1.clone()).1,
        json!({"id": 1})
    );
    assert_eq!(
        post(l, "/subjects/b/versions", s2.clone()).1,
        json!({"id": 2})
    );
    // Errors come back from the leader unchanged.
    let answer = post(f, "/subjects/a/versions", s2.clone());
    assert_eq!(error_code(&answer), (409, 409));
    let answer = post(f, "/subjects/a/versions", json!({"schema": "{"}));
    assert_eq!(error_code(&answer), (422, 42201));
    assert_eq!(
        put(f, "/config/a", json!({"compatibility": "NONE"})).1,
        json!({"compatibility": "NONE"})
    );
    assert_eq!(
        post(f, "/subjects/a/versions", s2.clone()).1,
        json!({"id": 2})
    );
    // Both serve reads (the follower once its reader has caught up).
    for r in [l, f] {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while get(r, "/subjects/a/versions").1 != json!([1, 2]) {
            assert!(std::time::Instant::now() < deadline, "{r} did not catch up");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(get(r, "/config/a").1, json!({"compatibilityLevel": "NONE"}));
    }

    // The leader stops; the follower takes over and keeps the id sequence.
    rt.block_on(leader.shutdown());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !follower.is_leader() {
        assert!(std::time::Instant::now() < deadline, "no takeover");
        std::thread::sleep(Duration::from_millis(100));
    }
    let s3 = json!({"schema": "\"bytes\""});
    assert_eq!(post(f, "/subjects/c/versions", s3).1, json!({"id": 3}));
    rt.block_on(follower.shutdown());
    rt.block_on(broker.shutdown());
}
