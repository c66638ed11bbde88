//! A full disk: produces get KAFKA_STORAGE_ERROR while it is full, nothing acknowledged is
//! lost, and once space returns the same broker takes writes again without a restart.
//!
//! Needs root to mount a small tmpfs (CI and these machines run as root).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use vltava_protocol::ErrorCode;

/// A tmpfs of `mib` MiB, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, mib: u32) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn produce(c: &mut RawClient, value: &[u8]) -> (i16, i64) {
    c.produce_values("full", -1, &[value])
}

#[test]
fn a_full_disk_refuses_writes_and_recovers_without_a_restart() {
    if !nix_is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let mount = base.path().join("disk");
    let Some(_fs) = Tmpfs::mount(&mount, 24) else {
        panic!("mount -t tmpfs failed although running as root");
    };
    let data = mount.join("data");
    let broker = BrokerProcess::start(&data, &["log.segment.bytes=1048576"]);
    let mut c = RawClient::connect(broker.addr);
    assert_eq!(c.create_topic("full", 1).topics[0].error_code, 0);

    // Fill the disk with ballast, leaving a little room.
    let ballast = mount.join("ballast");
    let _ = Command::new("fallocate")
        .args(["-l", "22M"])
        .arg(&ballast)
        .status();
    let value = vec![b'x'; 64 * 1024];
    let mut acked = Vec::new();
    let mut refused = false;
    for _ in 0..200 {
        match produce(&mut c, &value) {
            (0, offset) => acked.push(offset),
            (code, _) => {
                assert_eq!(code, ErrorCode::KafkaStorageError.code());
                refused = true;
                break;
            }
        }
    }
    assert!(
        refused,
        "the disk never filled up ({} produces acknowledged)",
        acked.len()
    );
    // Still full: still refused.
    assert_eq!(
        produce(&mut c, &value).0,
        ErrorCode::KafkaStorageError.code()
    );

    // Space returns; the same broker takes writes again, after what was acknowledged.
    std::fs::remove_file(&ballast).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let offset = loop {
        match produce(&mut c, b"after") {
            (0, offset) => break offset,
            (code, _) => {
                assert_eq!(code, ErrorCode::KafkaStorageError.code());
                assert!(
                    Instant::now() < deadline,
                    "writes still refused 20 s after space returned"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    let last_acked = acked.last().copied().unwrap_or(-1);
    assert!(
        offset > last_acked,
        "offset {offset} reused (last acknowledged {last_acked})"
    );
    broker.terminate();
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
