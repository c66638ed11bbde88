//! The broker's log is readable where it goes: no colour codes in files or pipes, and one
//! JSON object per line with `--log-format json`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Runs a broker until it is listening, stops it, and returns what it logged.
fn broker_log(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vltava"))
        .args([
            "broker",
            "--listeners",
            "PLAINTEXT://127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .args(extra)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert!(ready.starts_with("vltava: listening on "), "{ready:?}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "broker exited with {}", out.status);
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn text_logs_to_a_pipe_have_no_colour_codes() {
    let log = broker_log(&[]);
    assert!(log.contains("broker started"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a piped log: {log:?}"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let log = broker_log(&["--log-format", "json"]);
    let mut started = false;
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(v["level"].is_string(), "{line}");
        started |= v["fields"]["message"] == "broker started";
    }
    assert!(started, "{log}");
}
