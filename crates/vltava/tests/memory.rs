//! Request memory is bounded broker-wide (`queued.max.request.bytes`): frames that announce
//! much and send little cannot exhaust the machine, and whole requests are still served.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;
use vltava_protocol::messages::*;
use vltava_protocol::ApiKey;

/// Resident memory of a process, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kib * 1024
}

#[test]
fn stalled_half_sent_frames_stay_within_the_budget_and_others_are_served() {
    const BUDGET: u64 = 32 << 20;
    const CONNECTIONS: usize = 200;
    const SENT: usize = 8 << 20;
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[&format!("queued.max.request.bytes={BUDGET}")]);
    let pid = broker.child.id();
    let baseline = rss_bytes(pid);

    // Each connection announces a 100 MB frame, sends 8 MB of it and stalls. Without a
    // budget the broker would hold 200 × 8 MB = 1.6 GB.
    let payload = vec![7u8; SENT];
    let addr = broker.addr;
    let stalled: Vec<TcpStream> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                let payload = &payload;
                s.spawn(move || {
                    let mut c = TcpStream::connect(addr).unwrap();
                    c.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
                    let _ = c.write_all(&100_000_000i32.to_be_bytes());
                    // Blocks once the broker stops reading; closed connections fail: both
                    // are expected.
                    let _ = c.write_all(payload);
                    c
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let mut peak = 0;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        peak = peak.max(rss_bytes(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    // The budget plus room for allocator slack and per-connection state.
    let allowed = baseline + BUDGET + (64 << 20);
    assert!(
        peak <= allowed,
        "broker RSS peaked at {} MiB (baseline {} MiB, budget {} MiB)",
        peak >> 20,
        baseline >> 20,
        BUDGET >> 20
    );

    // A whole request from another client is answered while the stalled ones hang on.
    let started = Instant::now();
    let mut c = RawClient::connect(broker.addr);
    let resp: MetadataResponse = c.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![])),
    );
    assert_eq!(resp.brokers.len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "metadata took {:?}",
        started.elapsed()
    );
    drop(stalled);
}
