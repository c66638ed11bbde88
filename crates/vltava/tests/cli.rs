//! The client commands (`vltava topic|produce|consume|group|config|cluster|perf`) run as
//! processes against a `vltava broker` process: output, JSON, exit codes and error paths.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::BrokerProcess;
use serde_json::Value;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "{self:?}");
        self
    }

    fn fails(self, code: i32, needle: &str) -> Run {
        assert_eq!(self.code, code, "{self:?}");
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {self:?}"
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

fn command(addr: Option<SocketAddr>, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vltava"));
    cmd.args(args).env_remove("VLTAVA_BOOTSTRAP");
    if let Some(a) = addr {
        cmd.env("VLTAVA_BOOTSTRAP", a.to_string());
    }
    cmd
}

fn run_with(addr: Option<SocketAddr>, args: &[&str], stdin: &[u8]) -> Run {
    let mut child = command(addr, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A command line's words, so that tests read like the commands people type.
fn w(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

fn run(addr: SocketAddr, args: &[&str]) -> Run {
    run_with(Some(addr), args, b"")
}

fn broker(dir: &tempfile::TempDir) -> BrokerProcess {
    BrokerProcess::start(dir.path(), &["group.initial.rebalance.delay.ms=0"])
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Every record of `topic`, as `format` renders it, sorted.
fn consume_all(addr: SocketAddr, topic: &str, format: &str) -> Vec<String> {
    let r = run(
        addr,
        &[
            "consume",
            topic,
            "--from-beginning",
            "--exit-at-end",
            "--format",
            format,
        ],
    )
    .ok();
    let mut lines: Vec<String> = r.stdout.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[test]
fn topic_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(&dir);
    let a = b.addr;

    let r = run(
        a,
        &w("topic create orders --partitions 3 --config retention.ms=60000"),
    )
    .ok();
    assert_eq!(r.stdout, "Created topic orders.\n");
    run(a, &w("topic create orders --partitions 3")).fails(1, "already exists");
    run(a, &w("topic create orders --if-not-exists")).ok();
    run(a, &w("topic create auto-sized")).ok();

    let r = run(a, &["topic", "list"]).ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "PARTITIONS", "REPLICAS"]
    );
    assert!(
        lines
            .iter()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["orders", "3", "1"]),
        "{r:?}"
    );
    let listed = run(a, &w("topic list -o json")).ok().json();
    let orders = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "orders")
        .unwrap();
    assert_eq!(orders["partitions"], 3);
    let auto = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "auto-sized")
        .unwrap();
    assert_eq!(auto["partitions"], 1, "broker default num.partitions");

    let r = run(a, &w("topic describe orders")).ok();
    assert!(
        r.stdout
            .starts_with("Topic: orders  Partitions: 3  Replication factor: 1\n"),
        "{r:?}"
    );
    assert!(
        r.stdout
            .contains("PARTITION  LEADER  REPLICAS  ISR\n0          1       1         1\n"),
        "{r:?}"
    );
    assert!(
        r.stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["retention.ms", "60000", "DYNAMIC_TOPIC_CONFIG"]),
        "{r:?}"
    );
    let r = run(a, &w("topic describe orders --all-configs")).ok();
    assert!(r.stdout.contains("DEFAULT_CONFIG"), "{r:?}");
    let d = run(a, &w("topic describe orders -o json")).ok().json();
    assert_eq!(d["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(d["partitions"][2]["leader"], 1);
    assert_eq!(d["partitions"][2]["isr"], serde_json::json!([1]));
    let ret = d["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "retention.ms")
        .unwrap();
    assert_eq!(ret["value"], "60000");
    assert_eq!(ret["source"], "DYNAMIC_TOPIC_CONFIG");

    let r = run(
        a,
        &w("topic alter orders --partitions 5 --config segment.ms=600000 --delete-config retention.ms"),
    )
    .ok();
    assert!(r.stdout.contains("partitions 3 -> 5"), "{r:?}");
    let d = run(a, &w("topic describe orders -o json")).ok().json();
    assert_eq!(d["partitions"].as_array().unwrap().len(), 5);
    let names: Vec<&str> = d["configs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["source"] == "DYNAMIC_TOPIC_CONFIG")
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["segment.ms"]);
    run(a, &w("topic alter orders --partitions 2")).fails(1, "can only increase");
    run(a, &w("topic alter orders")).fails(2, "nothing to alter");
    run(a, &w("topic alter orders --config segment.ms=-5")).fails(1, "segment.ms");

    run(a, &w("topic describe missing")).fails(1, "topic 'missing' does not exist");
    run(a, &w("topic alter missing --partitions 4")).fails(1, "does not exist");
    let r = run(a, &w("topic delete orders")).ok();
    assert_eq!(r.stdout, "Deleted topic orders.\n");
    run(a, &w("topic delete orders")).fails(1, "topic 'orders' does not exist");
    run(a, &w("topic delete orders --if-exists")).ok();
    let listed = run(a, &w("topic list -o json")).ok().json();
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["name"] != "orders"));
}

#[test]
fn produce_and_consume() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(&dir);
    let a = b.addr;
    run(a, &w("topic create events --partitions 2")).ok();

    let input = b"k1:one\nk2:two\nno key here\n:empty key\r\nk3:\n";
    let r = run_with(
        Some(a),
        &w("produce events --key-separator : --header src=cli --header n=1 --acks all"),
        input,
    );
    r.ok();
    let got = consume_all(a, "events", "[%k] [%s] %h %K");
    assert_eq!(
        got,
        [
            "[] [empty key] src=cli,n=1 0",
            "[] [no key here] src=cli,n=1 -1",
            "[k1] [one] src=cli,n=1 2",
            "[k2] [two] src=cli,n=1 2",
            "[k3] [] src=cli,n=1 2",
        ]
    );

    // Explicit partition, a file, compression; offsets are dense per partition.
    let file = dir.path().join("lines.txt");
    std::fs::write(&file, "a\nb\nc\n").unwrap();
    run(
        a,
        &[
            "produce",
            "events",
            "--partition",
            "1",
            "--file",
            file.to_str().unwrap(),
            "--compression",
            "zstd",
            "--acks",
            "1",
        ],
    )
    .ok();
    let r = run(
        a,
        &w("consume events --partition 1 --offset -3 --exit-at-end --format %p:%o:%s"),
    )
    .ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{r:?}");
    let first: i64 = lines[0].split(':').nth(1).unwrap().parse().unwrap();
    assert_eq!(
        lines,
        [
            format!("1:{}:a", first),
            format!("1:{}:b", first + 1),
            format!("1:{}:c", first + 2)
        ]
    );
    let r = run(
        a,
        &[
            "consume",
            "events",
            "--partition",
            "1",
            "--offset",
            &(first + 2).to_string(),
            "--exit-at-end",
        ],
    )
    .ok();
    assert_eq!(r.stdout, "c\n", "default format is the value");

    // JSON lines.
    let r = run(
        a,
        &w("consume events --from-beginning --exit-at-end -o json"),
    )
    .ok();
    let records: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 8);
    let one = records.iter().find(|r| r["value"] == "one").unwrap();
    assert_eq!(one["key"], "k1");
    assert_eq!(one["topic"], "events");
    assert!(one["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    assert_eq!(
        one["headers"],
        serde_json::json!([["src", "cli"], ["n", "1"]])
    );
    let no_key = records
        .iter()
        .find(|r| r["value"] == "no key here")
        .unwrap();
    assert!(no_key["key"].is_null());

    // Stopping conditions: --max-messages, --timeout with nothing new.
    let r = run(a, &w("consume events --from-beginning --max-messages 2")).ok();
    assert_eq!(r.stdout.lines().count(), 2);
    let r = run(a, &w("consume events --timeout 300ms")).ok();
    assert_eq!(r.stdout, "", "default start is the end of the log");

    // Errors.
    run(a, &w("consume missing --exit-at-end")).fails(1, "topic 'missing' does not exist");
    run(a, &w("consume events --partition 7")).fails(1, "has no partition 7");
    run_with(Some(a), &w("produce events --partition 9"), b"x\n").fails(1, "has no partition 9");
    run(a, &w("produce events --file /nonexistent/input"))
        .fails(1, "cannot read /nonexistent/input");
    run(a, &w("consume events --format %s -o json")).fails(2, "cannot be used together");
}

#[test]
fn produce_reports_delivery_failures() {
    let dir = tempfile::tempdir().unwrap();
    let b = BrokerProcess::start(dir.path(), &["auto.create.topics.enable=false"]);
    let a = b.addr;
    run(a, &w("topic create small --config max.message.bytes=200")).ok();
    let big = format!("ok\n{}\nok\n", "x".repeat(1000));
    let r = run_with(
        Some(a),
        &w("produce small --acks 1 -X batch.num.messages=1"),
        big.as_bytes(),
    );
    let r = r.fails(1, "not delivered");
    assert!(r.stderr.contains("line 2"), "{r:?}");
    assert_eq!(consume_all(a, "small", "%s"), ["ok", "ok"]);

    // Without auto-creation an unknown topic is an error, not a hang.
    run_with(Some(a), &["produce", "nope"], b"x\n").fails(1, "topic 'nope' does not exist");
}

#[test]
fn configs_and_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(&dir);
    let a = b.addr;
    run(a, &w("topic create cfg")).ok();

    let r = run(a, &w("config describe --topic cfg")).ok();
    assert!(r.stdout.contains("have their defaults"), "{r:?}");
    let r = run(
        a,
        &w("config set --topic cfg retention.ms=3600000 cleanup.policy=compact"),
    )
    .ok();
    assert!(
        r.stdout
            .contains("Set retention.ms=3600000 on topic 'cfg'."),
        "{r:?}"
    );
    // Incremental: a second set leaves the first key alone.
    run(a, &w("config set --topic cfg segment.ms=600000")).ok();
    let rows = run(a, &w("config describe --topic cfg -o json"))
        .ok()
        .json();
    let dynamic: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["source"] == "DYNAMIC_TOPIC_CONFIG")
        .map(|c| {
            (
                c["name"].as_str().unwrap().into(),
                c["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        dynamic,
        [
            ("cleanup.policy".into(), "compact".into()),
            ("retention.ms".into(), "3600000".into()),
            ("segment.ms".into(), "600000".into())
        ]
    );
    run(
        a,
        &w("config delete --topic cfg retention.ms cleanup.policy"),
    )
    .ok();
    let r = run(a, &w("config describe --topic cfg")).ok();
    assert_eq!(r.stdout.lines().count(), 2, "{r:?}");
    assert!(r.stdout.contains("segment.ms"));
    let all = run(a, &w("config describe --topic cfg --all -o json"))
        .ok()
        .json();
    let ret = all
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "retention.ms")
        .unwrap();
    assert_eq!(ret["source"], "DEFAULT_CONFIG");

    run(a, &w("config set --topic cfg retention.ms=soon")).fails(1, "retention.ms");
    run(a, &w("config set --topic cfg no.such.config=1")).fails(1, "no.such.config");
    run(a, &w("config describe --topic missing")).fails(1, "does not exist");
    run(a, &w("config describe --broker 42")).fails(1, "broker 42 is not in the cluster");
    run(a, &w("config set --topic cfg")).fails(2, "required");
    run(a, &["config", "describe"]).fails(2, "required");

    let r = run(a, &w("config describe --broker 1 --all")).ok();
    assert!(r.stdout.contains("log.dirs"), "{r:?}");
    run(a, &w("config set --broker 1 log.retention.ms=86400000")).ok();
    let rows = run(a, &w("config describe --broker 1 -o json")).ok().json();
    let ret = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "log.retention.ms")
        .unwrap();
    assert_eq!(ret["value"], "86400000");
    assert_eq!(ret["source"], "DYNAMIC_BROKER_CONFIG");

    let r = run(a, &["cluster", "describe"]).ok();
    assert!(r.stdout.starts_with("Cluster ID: "), "{r:?}");
    assert!(r.stdout.contains("Controller: 1\n"), "{r:?}");
    let port = a.port().to_string();
    assert!(
        r.stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["1", "127.0.0.1", port.as_str(), "yes"]),
        "{r:?}"
    );
    let c = run(a, &w("cluster describe -o json")).ok().json();
    assert!(!c["cluster_id"].as_str().unwrap().is_empty());
    assert_eq!(c["controller_id"], 1);
    assert_eq!(c["brokers"][0]["port"], a.port());
}

#[test]
fn connection_settings_and_unreachable_brokers() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(&dir);
    let a = b.addr;

    // The flag, a properties file, and -X all reach the client.
    let r = run_with(
        None,
        &["topic", "list", "--bootstrap-server", &a.to_string()],
        b"",
    );
    r.ok();
    let props = dir.path().join("client.properties");
    std::fs::write(
        &props,
        format!("# test\nbootstrap.servers={a}\nclient.id=cli-test\n"),
    )
    .unwrap();
    run_with(
        None,
        &["topic", "list", "--command-config", props.to_str().unwrap()],
        b"",
    )
    .ok();
    run_with(
        None,
        &[
            "cluster",
            "describe",
            "-X",
            &format!("bootstrap.servers={a}"),
        ],
        b"",
    )
    .ok();
    run(a, &w("topic list -X no.such.property=1")).fails(2, "no.such.property");
    run(a, &w("topic list --command-config /nonexistent.properties")).fails(1, "cannot read");

    // Nothing listens on this port: a clear message, quickly, for every kind of command.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for args in [
        &["topic", "list"][..],
        &w("consume t --exit-at-end"),
        &["group", "list"],
        &w("perf produce --topic t --num-records 10"),
    ] {
        let start = Instant::now();
        let r = run(closed, args);
        r.fails(1, &format!("no broker answered at {closed}"));
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{args:?} took {:?}",
            start.elapsed()
        );
    }
    run_with(Some(closed), &["produce", "t"], b"x\n").fails(1, "no broker answered");
}

#[test]
fn usage_errors_exit_2() {
    let nowhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
    for (args, needle) in [
        (&["topic", "create"][..], "required"),
        (&["topic", "frobnicate"], "unrecognized subcommand"),
        (&w("topic create t --partitions 0"), "at least 1"),
        (&w("consume t --offset soon"), "invalid offset"),
        (&w("consume t --format %x"), "unknown format token %x"),
        (
            &w("consume t --group g --partition 1"),
            "cannot be used with",
        ),
        (
            &["consume", "t", "--timeout", "5 fortnights"],
            "invalid duration",
        ),
        (&w("produce t --acks 2"), "invalid acks"),
        (&w("produce t --idempotent --acks 1"), "require --acks all"),
        (&w("group reset-offsets g --topic t"), "required"),
        (&w("group reset-offsets g --to-earliest"), "required"),
        (
            &w("group reset-offsets g --all-topics --to-earliest --to-latest"),
            "cannot be used with",
        ),
        (
            &w("group reset-offsets g --all-topics --to-datetime yesterday"),
            "invalid date-time",
        ),
        (
            &w("group reset-offsets g --topic t:x --to-earliest"),
            "invalid partition",
        ),
        (
            &w("config describe --topic t --broker 1"),
            "cannot be used with",
        ),
        (&["perf", "produce"], "--topic"),
        (&w("perf produce --topic t --throughput 0"), "--throughput"),
        (&w("perf floor --dir . --size-mb 0"), "--size-mb"),
        (
            &w("perf floor --dir . --size-mb 18446744073709551615"),
            "--size-mb",
        ),
        (&["completions", "tcsh"], "invalid value"),
        (&w("topic list -o yaml"), "invalid value"),
    ] {
        run(nowhere, args).fails(2, needle);
    }
}

#[test]
fn help_and_completions() {
    let nowhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
    for args in [
        &["--help"][..],
        &["topic", "--help"],
        &w("topic create --help"),
        &w("topic list --help"),
        &w("topic describe --help"),
        &w("topic alter --help"),
        &w("topic delete --help"),
        &["produce", "--help"],
        &["consume", "--help"],
        &["group", "--help"],
        &w("group list --help"),
        &w("group describe --help"),
        &w("group delete --help"),
        &w("group reset-offsets --help"),
        &["config", "--help"],
        &w("config describe --help"),
        &w("config set --help"),
        &w("config delete --help"),
        &["cluster", "--help"],
        &w("cluster describe --help"),
        &["perf", "--help"],
        &w("perf produce --help"),
        &w("perf consume --help"),
        &w("perf fsync --help"),
        &w("perf floor --help"),
        &["completions", "--help"],
        &["registry", "--help"],
        &["schema", "--help"],
        &w("schema register --help"),
        &w("schema list --help"),
        &w("schema get --help"),
        &w("schema check --help"),
        &w("schema delete --help"),
    ] {
        let r = run(nowhere, args).ok();
        assert!(
            r.stdout.contains("Examples:\n  ") && r.stdout.contains("vltava "),
            "{args:?}: {r:?}"
        );
    }
    let r = run(nowhere, &["consume", "--help"]).ok();
    assert!(
        r.stdout.contains("--bootstrap-server"),
        "common flags on every command"
    );
    for shell in ["bash", "zsh", "fish"] {
        let r = run(nowhere, &["completions", shell]).ok();
        assert!(r.stdout.contains("reset-offsets"), "{shell}: {r:?}");
    }
}

#[test]
fn perf_produce_and_consume() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(&dir);
    let a = b.addr;

    // A missing topic is created on first use, as a producer's would be.
    let r = run(a, &w("perf produce --topic fresh --num-records 10 -o json")).ok();
    assert_eq!(r.json()["records"], 10);
    assert_eq!(r.json()["partitions"], 1);
    // Unless the cluster does not create topics on first use.
    let no_auto_dir = tempfile::tempdir().unwrap();
    let no_auto = BrokerProcess::start(no_auto_dir.path(), &["auto.create.topics.enable=false"]);
    run(
        no_auto.addr,
        &w("perf produce --topic bench --num-records 10"),
    )
    .fails(1, "pass --partitions");
    let r = run(
        a,
        &w("perf produce --topic bench --partitions 2 --num-records 5000 --record-size 100 -o json"),
    )
    .ok();
    let p = r.json();
    assert_eq!(p["records"], 5000);
    assert_eq!(p["failed"], 0);
    assert_eq!(p["partitions"], 2);
    let l = &p["latency_ms"];
    for k in ["avg", "p50", "p95", "p99", "p999", "max"] {
        assert!(l[k].as_f64().unwrap() > 0.0, "{k}: {r:?}");
    }
    assert!(l["p50"].as_f64() <= l["p99"].as_f64() && l["p99"].as_f64() <= l["max"].as_f64());
    assert!(p["records_per_sec"].as_f64().unwrap() > 0.0);

    let r = run(
        a,
        &w("perf produce --topic bench --num-records 2000 --record-size 10 --throughput 100000 --acks 1 --compression lz4 --linger-ms 1 --batch-size 16384"),
    )
    .ok();
    assert!(r.stdout.starts_with("2000 records sent, "), "{r:?}");
    assert!(r.stdout.contains("ms 99.9th."), "{r:?}");
    assert!(
        r.stderr.is_empty(),
        "no progress bar when stdout is not a terminal: {r:?}"
    );

    // Paced by sleeping, never ahead of the rate: the last of 1,000 records at 2,000/s is
    // sent half a second after the first.
    let r = run(
        a,
        &w("perf produce --topic bench --num-records 1000 --record-size 10 --throughput 2000 --acks 1 -o json"),
    )
    .ok();
    let elapsed = r.json()["elapsed_s"].as_f64().unwrap();
    assert!(elapsed >= 0.49, "{r:?}");

    // Producers on threads of their own share the records; the remainder is not lost.
    let r = run(
        a,
        &w("perf produce --topic bench --num-records 1001 --record-size 10 --clients 3 -o json"),
    )
    .ok();
    assert_eq!(r.json()["records"], 1001, "{r:?}");
    assert_eq!(r.json()["failed"], 0, "{r:?}");

    let c = run(a, &w("perf consume --topic bench -o json")).ok().json();
    assert_eq!(c["records"], 9001);
    assert_eq!(c["bytes"], 5000 * 100 + 4001 * 10);
    let r = run(a, &w("perf consume --topic bench --num-records 3000")).ok();
    assert!(r.stdout.starts_with("3000 records consumed"), "{r:?}");
    run(
        a,
        &w("perf consume --topic bench --num-records 10000 --timeout 500ms"),
    )
    .fails(1, "9001 of 10000 consumed");
    run(a, &w("perf consume --topic missing")).fails(1, "does not exist");
}

/// Transactions through the CLI commit what they send: a read_committed reader (the
/// default of both consumers) sees every record, and none is left undecided.
#[test]
fn transactional_produce_commits() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(&dir);
    let a = b.addr;
    let r = run(
        a,
        &w("perf produce --topic txn --partitions 2 --num-records 2500 --record-size 10 --acks all --transactional-id perf-t --transaction-size 1000 -o json"),
    )
    .ok();
    assert_eq!(r.json()["records"], 2500, "{r:?}");
    assert_eq!(r.json()["failed"], 0, "{r:?}");
    run_with(
        Some(a),
        &["produce", "txn", "--transactional-id", "cli-t"],
        b"one\ntwo\nthree\n",
    )
    .ok();
    let c = run(a, &w("perf consume --topic txn -o json")).ok().json();
    assert_eq!(c["records"], 2503);
}

fn lag(a: SocketAddr, group: &str) -> Vec<(i32, Option<i64>, i64)> {
    let d = run(a, &["group", "describe", group, "-o", "json"])
        .ok()
        .json();
    d["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["partition"].as_i64().unwrap() as i32,
                p["committed_offset"].as_i64(),
                p["lag"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

#[test]
fn groups_describe_reset_delete() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(&dir);
    let a = b.addr;
    run(a, &w("topic create jobs --partitions 2")).ok();
    let lines: String = (0..10).map(|i| format!("k{i}:v{i}\n")).collect();
    run_with(
        Some(a),
        &w("produce jobs --key-separator :"),
        lines.as_bytes(),
    )
    .ok();

    // A group member reads everything and commits when it stops at the end.
    let r = run(
        a,
        &w("consume jobs --group billing --from-beginning --exit-at-end"),
    )
    .ok();
    assert_eq!(r.stdout.lines().count(), 10, "{r:?}");
    let r = run(a, &["group", "list"]).ok();
    assert!(r.stdout.lines().any(|l| l.starts_with("billing ")), "{r:?}");
    let groups = run(a, &w("group list -o json")).ok().json();
    let billing = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "billing")
        .unwrap();
    assert_eq!(billing["state"], "Empty");

    let r = run(a, &w("group describe billing")).ok();
    assert!(
        r.stdout.starts_with("Group: billing  State: Empty"),
        "{r:?}"
    );
    assert!(
        r.stdout.contains("CURRENT-OFFSET  LOG-END-OFFSET  LAG"),
        "{r:?}"
    );
    let state = lag(a, "billing");
    assert_eq!(state.len(), 2, "{state:?}");
    assert!(
        state.iter().all(|(_, c, l)| c.is_some() && *l == 0),
        "{state:?}"
    );
    let ends: Vec<i64> = state.iter().map(|(_, c, _)| c.unwrap()).collect();
    assert_eq!(ends.iter().sum::<i64>(), 10);

    // Dry run by default.
    let r = run(
        a,
        &w("group reset-offsets billing --topic jobs --to-earliest"),
    )
    .ok();
    assert!(r.stdout.contains("Dry run"), "{r:?}");
    assert!(
        r.stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["billing", "jobs", "0", &ends[0].to_string(), "0"]),
        "{r:?}"
    );
    assert!(lag(a, "billing").iter().all(|(_, _, l)| *l == 0));

    run(
        a,
        &w("group reset-offsets billing --topic jobs --to-earliest --execute"),
    )
    .ok();
    assert_eq!(lag(a, "billing").iter().map(|(_, _, l)| l).sum::<i64>(), 10);
    let plan = run(
        a,
        &w("group reset-offsets billing --all-topics --shift-by 1 --execute -o json"),
    )
    .ok()
    .json();
    assert_eq!(plan["executed"], true);
    assert!(plan["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["new_offset"] == 1));
    run(
        a,
        &w("group reset-offsets billing --topic jobs:0 --to-offset 1000 --execute"),
    )
    .ok();
    let state = lag(a, "billing");
    assert_eq!(state[0], (0, Some(ends[0]), 0), "clamped to the log end");
    assert_eq!(state[1], (1, Some(1), ends[1] - 1));
    run(
        a,
        &w("group reset-offsets billing --topic jobs --to-datetime 2000-01-01T00:00:00Z --execute"),
    )
    .ok();
    assert!(
        lag(a, "billing").iter().all(|(_, c, _)| *c == Some(0)),
        "every record is newer than 2000"
    );
    run(
        a,
        &w("group reset-offsets billing --topic jobs --to-datetime 2999-01-01T00:00:00Z --execute"),
    )
    .ok();
    assert!(
        lag(a, "billing").iter().all(|(_, _, l)| *l == 0),
        "nothing that new: the end"
    );
    run(
        a,
        &w("group reset-offsets fresh --topic jobs --shift-by -1"),
    )
    .fails(1, "no committed offset");
    run(
        a,
        &w("group reset-offsets billing --topic jobs --to-offset -1"),
    )
    .fails(2, "--to-offset must not be negative");
    run(
        a,
        &w("group reset-offsets billing --topic missing --to-latest"),
    )
    .fails(1, "does not exist");

    // A running member: reset and delete are refused; Ctrl-C stops it cleanly with a commit.
    run(
        a,
        &w("group reset-offsets billing --topic jobs --to-earliest --execute"),
    )
    .ok();
    let member = command(Some(a), &w("consume jobs --group billing --format %s"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = run(a, &w("group describe billing -o json")).ok().json();
        let members = d["members"].as_array().unwrap().len();
        if members == 1 && lag(a, "billing").iter().all(|(_, _, l)| *l == 0) {
            assert!(
                d["partitions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|p| p["member_id"].is_string()),
                "{d}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "member never joined and caught up: {d}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    run(
        a,
        &w("group reset-offsets billing --topic jobs --to-earliest"),
    )
    .fails(1, "stop its consumers");
    let r = run(a, &w("group delete billing")).fails(1, "cannot delete group 'billing'");
    assert_eq!(r.stderr.matches("billing").count(), 1, "said once: {r:?}");
    signal(&member, "-INT");
    let out = member.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 10);

    let r = run(a, &w("group delete billing")).ok();
    assert_eq!(r.stdout, "Deleted group billing.\n");
    run(a, &w("group describe billing")).fails(1, "consumer group 'billing' does not exist");
    run(a, &w("group delete billing")).fails(1, "billing");
}

#[test]
fn kip_848_groups_are_listed_described_and_guarded() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(&dir);
    let a = b.addr;
    run(a, &w("topic create kt --partitions 4")).ok();
    let member = command(
        Some(a),
        &w("consume kt --group newg --from-beginning -X group.protocol=consumer -X client.id=m1"),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let d = loop {
        // The group exists once the member's first heartbeat is in; until then it does not.
        let r = run(a, &w("group describe newg -o json"));
        if r.code != 0 {
            let r = r.fails(1, "does not exist");
            assert!(Instant::now() < deadline, "never created: {r:?}");
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let d = r.json();
        let owned = d["members"]
            .as_array()
            .and_then(|m| m.first())
            .map(|m| m["assignment"].clone());
        if d["state"] == "Stable" && owned == Some(serde_json::json!([["kt", [0, 1, 2, 3]]])) {
            break d;
        }
        assert!(Instant::now() < deadline, "never assigned: {d}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(d["type"], "consumer", "{d}");
    assert_eq!(d["members"][0]["client_id"], "m1", "{d}");
    let list = run(a, &w("group list -o json")).ok().json();
    assert_eq!(
        list,
        serde_json::json!([{"group": "newg", "type": "consumer", "state": "Stable", "members": 1}])
    );
    run(
        a,
        &w("group reset-offsets newg --topic kt --to-earliest --execute"),
    )
    .fails(1, "stop its consumers");
    signal(&member, "-INT");
    assert_eq!(member.wait_with_output().unwrap().status.code(), Some(0));
    let r = run(a, &w("group describe newg")).ok();
    assert!(
        r.stdout
            .starts_with("Group: newg  State: Empty  Type: consumer"),
        "{r:?}"
    );
}

#[test]
fn group_consumers_time_out_after_joining_and_stop_when_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Joining takes at least this delay, longer than the --timeout below.
    let b = BrokerProcess::start(dir.path(), &["group.initial.rebalance.delay.ms=2000"]);
    let a = b.addr;
    run_with(Some(a), &w("produce slow"), b"a\nb\nc\n").ok();
    let r = run(
        a,
        &w("consume slow --group late --from-beginning --timeout 1s"),
    )
    .ok();
    assert_eq!(r.stdout, "a\nb\nc\n", "{r:?}");
    // A setting the group refuses for good ends the command instead of warning forever.
    run(
        a,
        &w("consume slow --group strict -X session.timeout.ms=1000 --timeout 30s"),
    )
    .fails(1, "InvalidSessionTimeout");
}

#[test]
fn consume_stops_cleanly_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(&dir);
    let a = b.addr;
    run_with(Some(a), &["produce", "tail"], b"first\n").ok();
    let mut consumer = command(Some(a), &w("consume tail --from-beginning"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(consumer.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "first\n");
    signal(&consumer, "-INT");
    let out = consumer.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn idempotent_produce_and_producers_describe() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(&dir);
    let a = b.addr;
    run(a, &w("topic create idem --partitions 2")).ok();
    run_with(
        Some(a),
        &w("produce idem --partition 1 --idempotent"),
        b"a\nb\nc\n",
    )
    .ok();
    let described = run(a, &w("producers describe idem -o json")).ok().json();
    let producers = described.as_array().unwrap();
    assert_eq!(producers.len(), 1, "{described}");
    let p = &producers[0];
    assert_eq!(p["partition"], 1);
    assert_eq!(p["producer_epoch"], 0);
    assert_eq!(p["last_sequence"], 2);
    assert_eq!(p["current_transaction_start_offset"], -1);
    let table = run(a, &w("producers describe idem --partition 1")).ok();
    assert!(table.stdout.contains("PRODUCER-ID"), "{table:?}");
    run(a, &w("producers describe idem --partition 7")).fails(2, "no partition 7");
    run(a, &w("producers describe nope")).fails(1, "does not exist");
    // The protocol client speaks TLS: against a plaintext port its handshake fails.
    run(a, &w("producers describe idem -X security.protocol=SSL")).fails(1, "TLS handshake");
    run(
        a,
        &w("producers describe idem -X security.protocol=SASL_PLAINTEXT -X sasl.mechanism=GSSAPI"),
    )
    .fails(2, "not GSSAPI");
}

/// `vltava dev cluster` starts three nodes, prints the bootstrap servers, serves each node's
/// metrics, and stops them all on SIGTERM; `vltava cluster describe` shows its brokers and
/// metadata quorum.
#[test]
fn dev_cluster_and_cluster_describe() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    // Node i uses base + i - 1, base + 100 + i - 1 and base + 200 + i - 1: a base chosen by the kernel, retried
    // if one of the others is taken.
    let (mut child, bootstrap, base) = (0..5)
        .find_map(|_| {
            let base = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if base > 65_000 {
                return None;
            }
            let mut child = command(
                None,
                &[
                    "dev",
                    "cluster",
                    "--nodes",
                    "3",
                    "--base-port",
                    &base.to_string(),
                    "--data-dir",
                    dir.path().join(format!("c{base}")).to_str().unwrap(),
                ],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            if line.trim().is_empty() {
                let _ = child.wait();
                return None;
            }
            Some((child, line.trim().to_string(), base))
        })
        .expect("dev cluster started");
    let addrs: Vec<&str> = bootstrap.split(',').collect();
    assert_eq!(addrs.len(), 3, "{bootstrap}");
    let first: SocketAddr = addrs[0].parse().unwrap();
    let r = run(first, &w("cluster describe -o json")).ok();
    let v = r.json();
    assert_eq!(v["brokers"].as_array().unwrap().len(), 3, "{v}");
    let q = &v["quorum"];
    assert_eq!(q["voters"].as_array().unwrap().len(), 3, "{v}");
    assert!((1..=3).contains(&q["leader_id"].as_i64().unwrap()), "{v}");
    let r = run(first, &w("cluster describe")).ok();
    assert!(r.stdout.contains("Metadata quorum: leader"), "{r:?}");
    // Every node serves its metrics on base + 200 + i - 1.
    for i in 0..3u16 {
        use std::io::{Read, Write};
        let mut http = std::net::TcpStream::connect(("127.0.0.1", base + 200 + i)).unwrap();
        http.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut page = String::new();
        http.read_to_string(&mut page).unwrap();
        assert!(
            page.starts_with("HTTP/1.0 200") || page.starts_with("HTTP/1.1 200"),
            "node {}: {page}",
            i + 1
        );
        assert!(
            page.contains("kafka_network_requestmetrics_requests_total"),
            "node {}: {page}",
            i + 1
        );
    }
    // A replicated topic works on it.
    run(
        first,
        &w("topic create rf3 --partitions 2 --replication-factor 3"),
    )
    .ok();
    signal(&child, "-TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    // Every node stopped: nothing listens on the first client port any more.
    assert!(std::net::TcpStream::connect(first).is_err());
}

/// `vltava storage format` fixes a data dir's cluster id before its first start, as
/// `kafka-storage.sh format` does; the broker then serves with that id.
#[test]
fn storage_format_fixes_the_cluster_id() {
    let dir = tempfile::tempdir().unwrap();
    let id = run_with(None, &w("storage random-uuid"), b"")
        .ok()
        .stdout
        .trim()
        .to_string();
    assert_eq!(id.len(), 22, "{id}");
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let format = |extra: &[&str]| {
        let mut args = vec!["storage", "format", "-t", &id, "--data-dir", data];
        args.extend_from_slice(extra);
        run_with(None, &args, b"")
    };
    format(&[]).ok();
    format(&[]).fails(1, "already formatted");
    format(&["--ignore-formatted"]).ok();
    run_with(
        None,
        &["storage", "format", "-t", "not-an-id", "--data-dir", data],
        b"",
    )
    .fails(1, "not a cluster id");
    let b = BrokerProcess::start(std::path::Path::new(data), &[]);
    let v = run(b.addr, &w("cluster describe -o json")).ok().json();
    assert_eq!(v["cluster_id"], id.as_str(), "{v}");
}

/// `perf fsync` needs no broker; paced, its rounds keep the interval asked for, and it
/// leaves nothing in --dir.
#[test]
fn perf_fsync_paces_its_rounds() {
    let nowhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let args = |interval: &str| {
        [
            "perf",
            "fsync",
            "--dir",
            d,
            "--count",
            "20",
            "--size",
            "8192",
            "--interval-ms",
            interval,
            "-o",
            "json",
        ]
        .map(str::to_string)
    };
    let started = std::time::Instant::now();
    let a = args("25");
    let r = run(nowhere, &a.iter().map(String::as_str).collect::<Vec<_>>()).ok();
    // Nineteen intervals lie between the first round's start and the last's.
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(19 * 25),
        "{:?}",
        started.elapsed()
    );
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["count"], 20, "{v}");
    assert_eq!(v["size"], 8192, "{v}");
    assert_eq!(v["interval_ms"], 25.0, "{v}");
    assert!(v["latency_ms"]["p99"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let a = args("nan");
    run(nowhere, &a.iter().map(String::as_str).collect::<Vec<_>>()).fails(2, "--interval-ms");
}

/// `perf floor` needs no broker: it probes the machine, leaves nothing in --dir, and its JSON
/// has every figure and the floors as their sums.
#[test]
fn perf_floor_reports_every_probe() {
    let nowhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let r = run(
        nowhere,
        &["perf", "floor", "--dir", d, "--size-mb", "4", "-o", "json"],
    )
    .ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    assert_eq!(v["bytes"], 4 << 20);
    let acks_1 = f("minimal_acks_1");
    assert!((f("produce_acks_1") - acks_1).abs() < 1e-9, "{v}");
    let acks_all = f("minimal_acks_all");
    assert!((f("produce_acks_all") - acks_all).abs() < 1e-9, "{v}");
    assert_eq!(f("consume"), f("sendfile"));
    assert!(f("page_cache_write_first") >= 0.0);
    assert!(f("minimal_acks_1_beside_client") > 0.0, "{v}");
    assert!(f("minimal_acks_all_beside_client") > 0.0, "{v}");
    assert!(f("spliced_acks_1") > 0.0, "{v}");
    assert!(f("spliced_acks_1_beside_client") > 0.0, "{v}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    run(nowhere, &["perf", "floor", "--dir", "/nonexistent/vltava"]).fails(1, "/nonexistent");
}
