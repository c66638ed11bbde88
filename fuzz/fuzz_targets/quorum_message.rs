//! Quorum messages arrive on controller listeners from anyone who can reach them: whatever
//! the bytes, `Quorum::serve` must answer (an error reply at worst) within a bounded time,
//! never panic, and leave a quorum that still commits its own writes.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use libfuzzer_sys::fuzz_target;
use vltava_quorum::{Quorum, QuorumConfig, Transport};

/// A lone node: it has no peers to call.
struct NoPeers;

impl Transport for NoPeers {
    fn call(&self, _: u64, _: &str, _: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        Box::pin(async { Err("no peers".to_string()) })
    }
}

struct Node {
    rt: tokio::runtime::Runtime,
    quorum: Arc<Quorum>,
    _dir: tempfile::TempDir,
}

fn node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = QuorumConfig::single(1, dir.path().join("node-1"));
        config.election_timeout_ms = 50;
        config.heartbeat_interval_ms = 5;
        let quorum = rt.block_on(async {
            let q = Quorum::open(config, Arc::new(NoPeers)).await.unwrap();
            assert!(q.wait_ready(Duration::from_secs(10)).await);
            q
        });
        Node {
            rt,
            quorum,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let n = node();
    let reply = n.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), n.quorum.serve(data)).await
    });
    let reply = reply.expect("a quorum message must be answered");
    assert!(!reply.is_empty(), "an empty reply");
});
