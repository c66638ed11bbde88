//! An in-process network for quorum tests: nodes found by id, any of them cut off from
//! everyone at will.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use vltava_quorum::{Quorum, Transport, OBSERVE_LANE};

#[derive(Default, Clone)]
pub struct Router {
    pub nodes: Arc<Mutex<BTreeMap<u64, Arc<Quorum>>>>,
    /// Nodes cut off from everyone.
    pub isolated: Arc<Mutex<BTreeSet<u64>>>,
}

/// One node's view of the [`Router`].
pub struct Link {
    pub from: u64,
    pub router: Router,
}

impl Transport for Link {
    fn call(
        &self,
        target: u64,
        addr: &str,
        request: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        // A target whose id the caller does not know is found by its address, `node-<id>`.
        let target = addr
            .strip_prefix("node-")
            .and_then(|id| id.parse().ok())
            .unwrap_or(target & !OBSERVE_LANE);
        let cut = {
            let iso = self.router.isolated.lock();
            iso.contains(&self.from) || iso.contains(&target)
        };
        let node = self.router.nodes.lock().get(&target).cloned();
        Box::pin(async move {
            match node {
                Some(q) if !cut => Ok(q.serve(&request).await),
                _ => Err(format!("node {target} unreachable")),
            }
        })
    }
}
