//! Observers: brokers that are not controllers keep the metadata image by fetching
//! committed batches from the leader, as Kafka's brokers fetch the metadata log without
//! voting. They hold no Raft state: a restarted observer fetches the image again. Their
//! fetches are long polls, so the leader also learns from them which brokers are alive.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use vltava_metadata::{MetadataDelta, MetadataImage, MetadataRecord};

use openraft::async_runtime::WatchReceiver;

use crate::state::Shared;
use crate::{MetadataBatch, Quorum, QuorumError, QuorumStatus, Reply, Rpc, Transport};

/// How long the leader holds an observer's fetch when nothing is new.
const OBSERVE_WAIT: Duration = Duration::from_millis(500);
/// An observer fetch not answered in this long is given up and sent again.
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many batches in one answer.
const MAX_BATCHES: usize = 512;

#[derive(Debug, Clone)]
pub struct ObserverConfig {
    pub node_id: u64,
    /// Controllers to ask for the leader: `controller.quorum.voters` (ids known) or
    /// `controller.quorum.bootstrap.servers` (ids not known).
    pub controllers: Vec<(Option<u64>, String)>,
}

/// An observer's view of the quorum.
pub(crate) struct ObserverState {
    /// Where to ask; controllers without a known id get ids no node has.
    controllers: Vec<(u64, String)>,
    /// The leader and its controller address, once one answered.
    pub leader: Mutex<Option<(u64, String)>>,
    /// The leader's view of the quorum in its last answer.
    pub status: Mutex<Option<QuorumStatus>>,
    /// Set once an answer left nothing more to fetch.
    pub caught_up: watch::Sender<bool>,
    pub stop: watch::Sender<bool>,
    pub task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ObserverState {
    pub fn addr_of(&self, id: u64) -> Option<String> {
        if let Some((l, addr)) = self.leader.lock().as_ref() {
            if *l == id {
                return Some(addr.clone());
            }
        }
        self.controllers
            .iter()
            .find(|(c, _)| *c == id)
            .map(|(_, a)| a.clone())
    }
}

/// The leader's record of one observer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen {
    /// The leader's term when it was seen: a new leader has not heard from anyone yet.
    pub term: u64,
    pub applied: u64,
    pub at: Instant,
}

/// The answer to [`Rpc::Observe`].
#[derive(Serialize, Deserialize)]
pub(crate) struct Observed {
    /// Whether the answering node leads; if not, `leader` is who does, if it knows.
    leading: bool,
    leader: Option<(u64, String)>,
    /// Batches committed after the observer's index, each with the applied index after it.
    batches: Vec<(u64, MetadataBatch)>,
    /// Instead of batches, when the observer is further behind than the leader keeps
    /// batches for: the whole image.
    image: Option<Vec<MetadataRecord>>,
    /// The applied index this answer brings the observer to.
    applied: u64,
    /// Whether there is more to fetch at once.
    more: bool,
    status: Option<QuorumStatus>,
}

impl Observed {
    fn redirect(leader: Option<(u64, String)>) -> Self {
        Self {
            leading: false,
            leader,
            batches: Vec::new(),
            image: None,
            applied: 0,
            more: false,
            status: None,
        }
    }
}

impl Quorum {
    /// Starts observing the quorum of `config.controllers`: the image follows the
    /// leader's, writes go to the leader, and nothing is kept on disk.
    pub fn observe(
        config: ObserverConfig,
        transport: Arc<dyn Transport>,
    ) -> Result<Arc<Self>, QuorumError> {
        if config.controllers.is_empty() {
            return Err(QuorumError::Raft(
                "an observer needs controllers to ask".into(),
            ));
        }
        let controllers = config
            .controllers
            .iter()
            .enumerate()
            .map(|(i, (id, addr))| (id.unwrap_or(u32::MAX as u64 + i as u64), addr.clone()))
            .collect();
        let (stop, stop_rx) = watch::channel(false);
        let q = Arc::new(Self {
            raft: None,
            observer: Some(ObserverState {
                controllers,
                leader: Mutex::new(None),
                status: Mutex::new(None),
                caught_up: watch::Sender::new(false),
                stop,
                task: Mutex::new(None),
            }),
            observed: Default::default(),
            shared: Arc::new(Shared::new(MetadataImage::default(), 0)),
            node_id: config.node_id,
            propose: tokio::sync::Mutex::new(()),
            transport,
            committed_at_open: 0,
        });
        let task = tokio::spawn(fetch_loop(Arc::downgrade(&q), stop_rx));
        if let Some(o) = &q.observer {
            *o.task.lock() = Some(task);
        }
        Ok(q)
    }

    /// On the leader: the observers seen in `term`.
    pub(crate) fn observers_seen(&self, term: u64) -> impl Iterator<Item = (u64, Seen)> {
        let seen: Vec<(u64, Seen)> = self
            .observed
            .lock()
            .iter()
            .filter(|(_, s)| s.term == term)
            .map(|(id, s)| (*id, *s))
            .collect();
        seen.into_iter()
    }

    pub(crate) async fn handle_observe(
        &self,
        raft: &openraft::Raft<crate::TypeConfig, crate::StateMachine>,
        id: u64,
        from: u64,
        wait_ms: u64,
    ) -> Observed {
        let leader = self.leader().map(|l| (l, self.node_addr(l)));
        if !self.is_leader() {
            return Observed::redirect(leader);
        }
        let term = raft.metrics().borrow_watched().current_term;
        self.observed.lock().insert(
            id,
            Seen {
                term,
                applied: from,
                at: Instant::now(),
            },
        );
        let mut applied = self.shared.applied.subscribe();
        let wait = Duration::from_millis(wait_ms).min(OBSERVE_WAIT);
        let _ = tokio::time::timeout(wait, applied.wait_for(|a| *a > from)).await;
        let status = Some(self.status());
        // The image, the applied index and the recent batches are consistent under the
        // listener lock, which publishing holds.
        let _g = self.shared.listener.lock();
        let applied = *self.shared.applied.borrow();
        let recent = self.shared.recent.lock();
        let mut answer = Observed {
            leading: true,
            leader,
            batches: Vec::new(),
            image: None,
            applied,
            more: false,
            status,
        };
        if from > applied {
            // This leader has yet to apply what the observer has: nothing to give yet.
            answer.applied = from;
        } else if from >= recent.start {
            answer.batches = recent
                .batches
                .iter()
                .filter(|(next, _)| *next > from)
                .take(MAX_BATCHES)
                .map(|(next, records)| (*next, MetadataBatch(records.to_vec())))
                .collect();
            if answer.batches.len() == MAX_BATCHES {
                answer.applied = answer.batches.last().map_or(applied, |(n, _)| *n);
                answer.more = answer.applied < applied;
            }
        } else {
            answer.image = Some(self.shared.image.read().to_records());
        }
        answer
    }
}

/// Applies one answer to the observer's image, in log order.
fn apply(shared: &Shared, answer: Observed) {
    if let Some(records) = answer.image {
        let mut image = MetadataImage::default();
        for r in &records {
            image.apply(r);
        }
        let base = Arc::clone(&shared.image.read());
        let delta = MetadataDelta::replace(&base, &image);
        shared.publish(&delta, &Arc::new(image), answer.applied, None);
        return;
    }
    for (next, batch) in answer.batches {
        if next <= *shared.applied.borrow() {
            continue;
        }
        // The entries between batches change no metadata (Raft's own entries).
        shared.applied.send_replace(next - 1);
        let base = Arc::clone(&shared.image.read());
        let (image, delta) = MetadataDelta::apply(&base, &batch.0);
        shared.publish(&delta, &Arc::new(image), next, Some(&batch.0));
    }
    if answer.applied > *shared.applied.borrow() {
        shared.applied.send_replace(answer.applied);
    }
}

async fn fetch_loop(quorum: Weak<Quorum>, mut stop: watch::Receiver<bool>) {
    let mut next_controller = 0usize;
    loop {
        if *stop.borrow() {
            return;
        }
        let Some(q) = quorum.upgrade() else {
            return;
        };
        let Some(o) = &q.observer else {
            return;
        };
        let known = o.leader.lock().clone();
        let (target, addr) = known.unwrap_or_else(|| {
            next_controller += 1;
            o.controllers[next_controller % o.controllers.len()].clone()
        });
        let request = serde_json::to_vec(&Rpc::Observe {
            id: q.node_id,
            from: q.applied(),
            wait_ms: OBSERVE_WAIT.as_millis() as u64,
        })
        .expect("observe request encodes");
        let call = q
            .transport
            .call(target | crate::OBSERVE_LANE, &addr, request);
        drop(q);
        let answer = tokio::select! {
            _ = stop.changed() => return,
            a = tokio::time::timeout(OBSERVE_TIMEOUT, call) => a,
        };
        let Some(q) = quorum.upgrade() else {
            return;
        };
        let Some(o) = &q.observer else {
            return;
        };
        let reply = match answer {
            Ok(Ok(bytes)) => serde_json::from_slice::<Reply>(&bytes).map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("controller {addr} did not answer")),
        };
        match reply {
            Ok(Reply::Observed(answer)) if answer.leading => {
                *o.leader.lock() = Some(answer.leader.clone().unwrap_or((target, addr)));
                *o.status.lock() = answer.status.clone();
                let more = answer.more;
                let shared = Arc::clone(&q.shared);
                drop(q);
                // Publishing opens and closes partition logs: off the async workers.
                if tokio::task::spawn_blocking(move || apply(&shared, answer))
                    .await
                    .is_err()
                {
                    return;
                }
                if !more {
                    if let Some(q) = quorum.upgrade() {
                        if let Some(o) = &q.observer {
                            o.caught_up.send_replace(true);
                        }
                    }
                }
            }
            Ok(Reply::Observed(answer)) => {
                let leader = answer.leader.filter(|(id, _)| *id != target);
                let none = leader.is_none();
                *o.leader.lock() = leader;
                drop(q);
                if none {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            other => {
                let problem = match other {
                    Err(e) => e,
                    Ok(Reply::Failed(e)) => e,
                    Ok(_) => "unexpected reply".into(),
                };
                tracing::debug!(controller = %addr, %problem, "metadata fetch failed");
                *o.leader.lock() = None;
                drop(q);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
