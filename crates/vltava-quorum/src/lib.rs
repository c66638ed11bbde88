//! The metadata quorum: metadata records are the entries of a Raft log (`openraft`),
//! replicated among the controllers (`controller.quorum.voters`); every node applies the
//! committed batches in order to the same [`MetadataImage`].
//!
//! Writes are proposed optimistically: a node runs the operation against its own image at
//! applied index `base` and sends the resulting records to the leader, which appends them
//! only if its own applied index is still `base` (nothing was committed in between), and
//! otherwise answers with its index so the node catches up and runs the operation again.
//! So every batch was validated against exactly the image it is applied to, as if the
//! leader had run the operation itself, without shipping operations over the wire.
//!
//! The crate knows nothing of sockets: messages are bytes handed to a [`Transport`], and the
//! broker carries them on its controller listener.

mod observer;
mod state;
mod store;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{
    ClientWriteError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::{BasicNode, Config, OptionalSend, Raft, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use vltava_metadata::{MetadataImage, MetadataRecord};

pub use observer::ObserverConfig;
pub use state::{Listener, StateMachine};
pub use store::LogStore;

/// One proposal: the records of one metadata operation, applied atomically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataBatch(pub Vec<MetadataRecord>);

impl fmt::Display for MetadataBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} metadata records", self.0.len())
    }
}

openraft::declare_raft_types!(
    /// Standard Raft's leader ids: one leader per term, as KRaft has one per epoch (openraft's
    /// default lets candidates of one term all lead it, told apart by node id, so two
    /// nodes could report the same epoch with different leaders).
    pub TypeConfig:
        D = MetadataBatch,
        R = (),
        NodeId = u64,
        Node = BasicNode,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);

pub type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;

/// Carries the quorum's messages between nodes. `addr` is the target's controller listener.
/// A `target` with [`OBSERVE_LANE`] set is node `target & !OBSERVE_LANE`: an observer's
/// long-polling fetches use their own connection, so they never delay its proposals.
pub trait Transport: Send + Sync + 'static {
    fn call(
        &self,
        target: u64,
        addr: &str,
        request: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>>;
}

/// Set on the target of an observer's fetches (see [`Transport`]).
pub const OBSERVE_LANE: u64 = 1 << 62;

#[derive(Debug, Clone)]
pub struct QuorumConfig {
    pub node_id: u64,
    /// Voter ids and their controller addresses; empty means this node alone.
    pub voters: BTreeMap<u64, String>,
    /// Where the Raft log, its state and the snapshot live.
    pub dir: PathBuf,
    /// A follower that hears nothing for this long (up to twice it) stands for election.
    pub election_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// A snapshot is taken after this many entries; older entries are then purged.
    pub snapshot_every: u64,
}

impl QuorumConfig {
    pub fn single(node_id: u64, dir: PathBuf) -> Self {
        Self {
            node_id,
            voters: BTreeMap::new(),
            dir,
            election_timeout_ms: 1000,
            heartbeat_interval_ms: 100,
            snapshot_every: 1000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("raft: {0}")]
    Raft(String),
}

/// Why a write did not commit.
#[derive(Debug)]
pub enum WriteError<E> {
    /// The operation refused (for example, a topic that exists).
    Refused(E),
    /// No leader was reachable before the deadline.
    Timeout(String),
}

#[derive(Serialize, Deserialize)]
enum Rpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    Snapshot {
        vote: VoteOf<TypeConfig>,
        meta: SnapshotMetaOf<TypeConfig>,
        data: Vec<u8>,
    },
    Propose {
        base: u64,
        batch: MetadataBatch,
    },
    /// To the leader: make `id`, reachable at `addr`, a voter (KIP-853's AddRaftVoter).
    AddVoter {
        id: u64,
        addr: String,
    },
    /// To the leader: remove voter `id` (RemoveRaftVoter).
    RemoveVoter {
        id: u64,
    },
    /// From observer `id`, which has applied up to `from`: what was committed since,
    /// waiting up to `wait_ms` for something new (Kafka's observers fetching the metadata
    /// log from the leader).
    Observe {
        id: u64,
        from: u64,
        wait_ms: u64,
    },
}

#[derive(Serialize, Deserialize)]
enum Reply {
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    Snapshot(SnapshotResponse<TypeConfig>),
    Propose(ProposeReply),
    Voters(Result<(), VoterChangeError>),
    Observed(observer::Observed),
    Failed(String),
}

/// Why a change of the voter set did not happen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum VoterChangeError {
    #[error("node {0} is already a voter")]
    AlreadyVoter(u64),
    #[error("node {0} is not a voter")]
    NotVoter(u64),
    #[error("the quorum cannot lose its last voter")]
    LastVoter,
    #[error("this node does not lead the quorum")]
    NotLeader,
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Failed(String),
}

#[derive(Debug, Serialize, Deserialize)]
enum ProposeReply {
    /// Appended and committed; applied index `next` covers it.
    Committed {
        next: u64,
    },
    /// Something was committed since `base`: catch up to `applied` and try again.
    Stale {
        applied: u64,
    },
    NotLeader,
}

/// One voter or observer as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub node_id: u64,
    /// The next index it holds (its last log index plus one), if the leader knows it.
    pub log_end: Option<u64>,
}

/// The quorum as this node sees it (DescribeQuorum); an observer reports the leader's view.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuorumStatus {
    pub leader: Option<u64>,
    pub term: u64,
    /// This node's log end (last index plus one).
    pub log_end: u64,
    /// The committed index plus one.
    pub high_watermark: u64,
    pub voters: Vec<ReplicaStatus>,
    pub observers: Vec<ReplicaStatus>,
}

#[derive(Clone)]
struct NetFactory {
    transport: Arc<dyn Transport>,
}

struct Net {
    target: u64,
    addr: String,
    transport: Arc<dyn Transport>,
}

impl RaftNetworkFactory<TypeConfig> for NetFactory {
    type Network = Net;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Net {
        Net {
            target,
            addr: node.addr.clone(),
            transport: Arc::clone(&self.transport),
        }
    }
}

impl Net {
    async fn call(&self, rpc: &Rpc, ttl: Duration) -> Result<Reply, RPCError<TypeConfig>> {
        let bytes =
            serde_json::to_vec(rpc).map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let fut = self.transport.call(self.target, &self.addr, bytes);
        let answer = tokio::time::timeout(ttl, fut)
            .await
            .map_err(|_| unreachable(format!("node {} did not answer in time", self.target)))?
            .map_err(unreachable)?;
        match serde_json::from_slice(&answer) {
            Ok(Reply::Failed(m)) => Err(unreachable(m)),
            Ok(r) => Ok(r),
            Err(e) => Err(unreachable(format!("bad reply: {e}"))),
        }
    }
}

fn unreachable(msg: String) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::from_string(msg))
}

fn unexpected() -> RPCError<TypeConfig> {
    unreachable("unexpected reply".into())
}

impl RaftNetworkV2<TypeConfig> for Net {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(&Rpc::Append(rpc), option.hard_ttl()).await? {
            Reply::Append(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(&Rpc::Vote(rpc), option.hard_ttl()).await? {
            Reply::Vote(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(&Rpc::PreVote(rpc), option.hard_ttl()).await? {
            Reply::Vote(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Vec<u8>>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let rpc = Rpc::Snapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot,
        };
        match self
            .call(&rpc, option.hard_ttl().max(Duration::from_secs(10)))
            .await?
        {
            Reply::Snapshot(r) => Ok(r),
            _ => Err(unexpected().into()),
        }
    }
}

/// A node's membership in the metadata quorum: its Raft instance and its image, or, for a
/// broker that is not a controller, the image it keeps by observing the leader.
pub struct Quorum {
    /// `None` on an observer.
    raft: Option<Raft<TypeConfig, StateMachine>>,
    observer: Option<observer::ObserverState>,
    /// On the leader: the observers that fetched from it.
    observed: parking_lot::Mutex<BTreeMap<u64, observer::Seen>>,
    shared: Arc<state::Shared>,
    node_id: u64,
    /// Serialises proposals on this node, so each sees the one before it applied.
    propose: tokio::sync::Mutex<()>,
    transport: Arc<dyn Transport>,
    /// The committed index plus one recorded before the last stop.
    committed_at_open: u64,
}

impl Quorum {
    /// Opens the quorum state in `config.dir` and joins the quorum. A node that never
    /// belonged to one and is a voter proposes the configured voters as the first
    /// membership; every voter started with the same voters proposes the same one.
    pub async fn open(
        config: QuorumConfig,
        transport: Arc<dyn Transport>,
    ) -> Result<Arc<Self>, QuorumError> {
        let log = LogStore::open(&config.dir)?;
        let sm = StateMachine::open(&config.dir)?;
        let shared = Arc::clone(&sm.shared);
        let fresh = log.is_empty();
        let committed_at_open = log.committed().map_or(0, |c| c.index + 1);
        let et = config
            .election_timeout_ms
            .max(2 * config.heartbeat_interval_ms + 1);
        let raft_config = Config {
            cluster_name: "vltava".into(),
            heartbeat_interval: config.heartbeat_interval_ms,
            election_timeout_min: et,
            election_timeout_max: 2 * et,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: config.snapshot_every.max(1),
            purge_batch_size: config.snapshot_every.clamp(1, 256),
            enable_pre_vote: Some(true),
            ..Default::default()
        }
        .validate()
        .map_err(|e| QuorumError::Raft(e.to_string()))?;
        let mut voters = config.voters.clone();
        if voters.is_empty() {
            voters.insert(config.node_id, String::new());
        }
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            NetFactory {
                transport: Arc::clone(&transport),
            },
            log,
            sm,
        )
        .await
        .map_err(|e| QuorumError::Raft(e.to_string()))?;
        if fresh && voters.contains_key(&config.node_id) {
            let members: BTreeMap<u64, BasicNode> = voters
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect();
            if let Err(e) = raft.initialize(members).await {
                tracing::debug!(error = %e, "quorum already initialized");
            }
        }
        if voters.len() == 1 && voters.contains_key(&config.node_id) {
            // Alone: no one to wait for.
            let _ = raft.trigger().elect(false).await;
        }
        Ok(Arc::new(Self {
            raft: Some(raft),
            observer: None,
            observed: Default::default(),
            shared,
            node_id: config.node_id,
            propose: tokio::sync::Mutex::new(()),
            transport,
            committed_at_open,
        }))
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The image as of the last applied batch.
    pub fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.shared.image.read())
    }

    /// The last applied index plus one.
    pub fn applied(&self) -> u64 {
        *self.shared.applied.borrow()
    }

    /// Sets the node's listener and hands it the current image at once.
    pub fn attach(&self, listener: Weak<dyn Listener>) {
        self.shared.attach(listener);
    }

    /// Whether this node is in the quorum's membership (a voter or an observer).
    pub fn is_member(&self) -> bool {
        let Some(raft) = &self.raft else {
            return true;
        };
        raft.metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .get_node(&self.node_id)
            .is_some()
    }

    /// Whether this node only observes the quorum (a broker that is not a controller).
    pub fn is_observer(&self) -> bool {
        self.observer.is_some()
    }

    pub fn leader(&self) -> Option<u64> {
        match (&self.raft, &self.observer) {
            (Some(raft), _) => raft.metrics().borrow_watched().current_leader,
            (None, Some(o)) => o.leader.lock().as_ref().map(|(id, _)| *id),
            (None, None) => None,
        }
    }

    pub fn is_leader(&self) -> bool {
        let Some(raft) = &self.raft else {
            return false;
        };
        let m = raft.metrics().borrow_watched().clone();
        m.state == ServerState::Leader && m.current_leader == Some(self.node_id)
    }

    /// Waits until a leader is known and this node has applied what was committed before
    /// it stopped, or until `timeout`. Returns whether it got there.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let Some(raft) = &self.raft else {
            let Some(o) = &self.observer else {
                return false;
            };
            let mut caught_up = o.caught_up.subscribe();
            return tokio::time::timeout(timeout, caught_up.wait_for(|c| *c))
                .await
                .is_ok();
        };
        let want = self.committed_at_open;
        let mut applied = self.shared.applied.subscribe();
        let mut metrics = raft.metrics();
        let ready = async {
            let _ = applied.wait_for(|a| *a >= want).await;
            loop {
                if metrics.borrow_watched().current_leader.is_some() {
                    break;
                }
                if metrics.changed().await.is_err() {
                    break;
                }
            }
        };
        tokio::time::timeout(timeout, ready).await.is_ok()
    }

    /// Waits until this node has applied up to `next` (an index plus one).
    async fn wait_applied(&self, next: u64, timeout: Duration) -> bool {
        let mut rx = self.shared.applied.subscribe();
        let done = tokio::time::timeout(timeout, rx.wait_for(|a| *a >= next)).await;
        done.is_ok()
    }

    /// Proposes the records `op` makes from the current image, and returns `op`'s value once
    /// they are committed and applied on this node. `op` may run more than once (each time
    /// on a newer image) and must not have side effects.
    pub async fn write<T, E>(
        &self,
        timeout: Duration,
        op: impl Fn(&MetadataImage) -> Result<(Vec<MetadataRecord>, T), E>,
    ) -> Result<T, WriteError<E>> {
        let deadline = Instant::now() + timeout;
        let mut last_problem = String::from("no leader");
        loop {
            if Instant::now() >= deadline {
                return Err(WriteError::Timeout(format!(
                    "metadata change not committed in {timeout:?}: {last_problem}"
                )));
            }
            if let Some(raft) = self.raft.as_ref().filter(|_| self.is_leader()) {
                let _turn = self.propose.lock().await;
                if let Err(e) = raft
                    .ensure_linearizable(openraft::ReadPolicy::ReadIndex)
                    .await
                {
                    // Not (or no longer) able to lead: try again shortly, not in a spin.
                    last_problem = e.to_string();
                    drop(_turn);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let image = self.image();
                let (records, out) = op(&image).map_err(WriteError::Refused)?;
                if records.is_empty() {
                    return Ok(out);
                }
                match raft.client_write(MetadataBatch(records)).await {
                    Ok(_) => return Ok(out),
                    Err(e) => {
                        last_problem = e.to_string();
                        if !matches!(e, RaftError::APIError(ClientWriteError::ForwardToLeader(_))) {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        continue;
                    }
                }
            }
            let Some(leader) = self.leader().filter(|l| *l != self.node_id) else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let (base, image) = {
                // The image and its index read together: publishing holds the listener lock.
                let _g = self.shared.listener.lock();
                (self.applied(), self.image())
            };
            let (records, out) = op(&image).map_err(WriteError::Refused)?;
            if records.is_empty() {
                return Ok(out);
            }
            let addr = self.node_addr(leader);
            let rpc = Rpc::Propose {
                base,
                batch: MetadataBatch(records),
            };
            let bytes = serde_json::to_vec(&rpc).expect("metadata records encode");
            let left = deadline.saturating_duration_since(Instant::now());
            let answer =
                tokio::time::timeout(left, self.transport.call(leader, &addr, bytes)).await;
            let reply = match answer {
                Ok(Ok(b)) => serde_json::from_slice::<Reply>(&b).map_err(|e| e.to_string()),
                Ok(Err(e)) => Err(e),
                Err(_) => Err("leader did not answer".into()),
            };
            match reply {
                Ok(Reply::Propose(ProposeReply::Committed { next })) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if self.wait_applied(next, left).await {
                        return Ok(out);
                    }
                    return Err(WriteError::Timeout(
                        "committed, but not yet applied on this node".into(),
                    ));
                }
                Ok(Reply::Propose(ProposeReply::Stale { applied })) => {
                    last_problem = "metadata changed meanwhile".into();
                    let left = deadline.saturating_duration_since(Instant::now());
                    self.wait_applied(applied, left).await;
                }
                Ok(Reply::Propose(ProposeReply::NotLeader)) => {
                    last_problem = format!("node {leader} is no longer the leader");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(_) => last_problem = "unexpected reply".into(),
                Err(e) => {
                    last_problem = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn node_addr(&self, id: u64) -> String {
        let Some(raft) = &self.raft else {
            return self
                .observer
                .as_ref()
                .and_then(|o| o.addr_of(id))
                .unwrap_or_default();
        };
        raft.metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
            .unwrap_or_default()
    }

    async fn handle_propose(&self, base: u64, batch: MetadataBatch) -> ProposeReply {
        let _turn = self.propose.lock().await;
        let Some(raft) = self.raft.as_ref().filter(|_| self.is_leader()) else {
            return ProposeReply::NotLeader;
        };
        if raft
            .ensure_linearizable(openraft::ReadPolicy::ReadIndex)
            .await
            .is_err()
        {
            return ProposeReply::NotLeader;
        }
        let applied = self.applied();
        if applied != base {
            return ProposeReply::Stale { applied };
        }
        match raft.client_write(batch).await {
            Ok(r) => ProposeReply::Committed {
                next: r.log_id.index + 1,
            },
            Err(_) => ProposeReply::NotLeader,
        }
    }

    /// Adds node `id`, whose controller listener is `addr`, to the voters: it first becomes
    /// an observer and copies the log, and is promoted once it has caught up, so the quorum
    /// never waits on a voter that is far behind. Any node may ask; the leader acts.
    pub async fn add_voter(
        &self,
        id: u64,
        addr: String,
        timeout: Duration,
    ) -> Result<(), VoterChangeError> {
        self.change_voters(Rpc::AddVoter { id, addr }, timeout)
            .await
    }

    /// Removes voter `id` from the quorum altogether: it no longer receives the log, and is
    /// meant to be stopped (a leader kept replicating to every removed node would keep
    /// calling nodes long gone). The leader may remove itself: it steps down once the
    /// change commits.
    pub async fn remove_voter(&self, id: u64, timeout: Duration) -> Result<(), VoterChangeError> {
        self.change_voters(Rpc::RemoveVoter { id }, timeout).await
    }

    async fn change_voters(&self, rpc: Rpc, timeout: Duration) -> Result<(), VoterChangeError> {
        let deadline = Instant::now() + timeout;
        let mut last_problem = String::from("no leader");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(VoterChangeError::Timeout(format!(
                    "voter change not committed in {timeout:?}: {last_problem}"
                )));
            }
            let outcome = if self.is_leader() {
                match tokio::time::timeout(left, self.handle_voters(&rpc)).await {
                    Ok(r) => r,
                    Err(_) => Err(VoterChangeError::Timeout(
                        "the new voter did not catch up in time".into(),
                    )),
                }
            } else if let Some(leader) = self.leader().filter(|l| *l != self.node_id) {
                let addr = self.node_addr(leader);
                let bytes = serde_json::to_vec(&rpc).expect("voter change encodes");
                match tokio::time::timeout(left, self.transport.call(leader, &addr, bytes)).await {
                    Ok(Ok(b)) => match serde_json::from_slice::<Reply>(&b) {
                        Ok(Reply::Voters(r)) => r,
                        Ok(_) => Err(VoterChangeError::Failed("unexpected reply".into())),
                        Err(e) => Err(VoterChangeError::Failed(e.to_string())),
                    },
                    Ok(Err(e)) => Err(VoterChangeError::Failed(e)),
                    Err(_) => Err(VoterChangeError::Timeout(format!(
                        "leader {leader} did not answer"
                    ))),
                }
            } else {
                Err(VoterChangeError::NotLeader)
            };
            match outcome {
                Err(VoterChangeError::NotLeader) | Err(VoterChangeError::Failed(_)) => {
                    last_problem = format!("{}", outcome.unwrap_err());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    /// On the leader: one voter change.
    async fn handle_voters(&self, rpc: &Rpc) -> Result<(), VoterChangeError> {
        use openraft::ChangeMembers;
        use std::collections::BTreeSet;
        let Some(raft) = self.raft.as_ref().filter(|_| self.is_leader()) else {
            return Err(VoterChangeError::NotLeader);
        };
        let membership = raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .clone();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let failed = |e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
                VoterChangeError::NotLeader
            }
            other => VoterChangeError::Failed(other.to_string()),
        };
        match rpc {
            Rpc::AddVoter { id, addr } => {
                if voters.contains(id) {
                    return Err(VoterChangeError::AlreadyVoter(*id));
                }
                // Blocks until the observer has caught up with the leader's log.
                raft.add_learner(*id, BasicNode::new(addr), true)
                    .await
                    .map_err(failed)?;
                raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([*id])), true)
                    .await
                    .map_err(failed)?;
                tracing::info!(voter = id, %addr, "added a voter to the metadata quorum");
                Ok(())
            }
            Rpc::RemoveVoter { id } => {
                if !voters.contains(id) {
                    return Err(VoterChangeError::NotVoter(*id));
                }
                if voters.len() == 1 {
                    return Err(VoterChangeError::LastVoter);
                }
                raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([*id])), false)
                    .await
                    .map_err(failed)?;
                tracing::info!(voter = id, "removed a voter from the metadata quorum");
                Ok(())
            }
            _ => Err(VoterChangeError::Failed("not a voter change".into())),
        }
    }

    /// Answers one message from another node (what [`Transport::call`] delivered).
    pub async fn serve(&self, request: &[u8]) -> Vec<u8> {
        let reply = match (serde_json::from_slice::<Rpc>(request), &self.raft) {
            (Err(e), _) => Reply::Failed(format!("undecodable quorum message: {e}")),
            (Ok(_), None) => Reply::Failed("an observer serves no quorum messages".into()),
            (Ok(rpc), Some(raft)) => self.serve_rpc(raft, rpc).await,
        };
        serde_json::to_vec(&reply).unwrap_or_else(|e| {
            serde_json::to_vec(&Reply::Failed(e.to_string())).unwrap_or_default()
        })
    }

    async fn serve_rpc(&self, raft: &Raft<TypeConfig, StateMachine>, rpc: Rpc) -> Reply {
        match rpc {
            Rpc::Append(r) => match raft.append_entries(r).await {
                Ok(r) => Reply::Append(r),
                Err(e) => Reply::Failed(e.to_string()),
            },
            Rpc::Vote(r) => match raft.vote(r).await {
                Ok(r) => Reply::Vote(r),
                Err(e) => Reply::Failed(e.to_string()),
            },
            Rpc::PreVote(r) => match raft.pre_vote(r).await {
                Ok(r) => Reply::Vote(r),
                Err(e) => Reply::Failed(e.to_string()),
            },
            Rpc::Snapshot { vote, meta, data } => {
                let snapshot = SnapshotOf::<TypeConfig, Vec<u8>> {
                    meta,
                    snapshot: data,
                };
                match raft.install_full_snapshot(vote, snapshot).await {
                    Ok(r) => Reply::Snapshot(r),
                    Err(e) => Reply::Failed(e.to_string()),
                }
            }
            Rpc::Propose { base, batch } => Reply::Propose(self.handle_propose(base, batch).await),
            rpc @ (Rpc::AddVoter { .. } | Rpc::RemoveVoter { .. }) => {
                Reply::Voters(self.handle_voters(&rpc).await)
            }
            Rpc::Observe { id, from, wait_ms } => {
                Reply::Observed(self.handle_observe(raft, id, from, wait_ms).await)
            }
        }
    }

    /// The quorum's state as this node knows it.
    pub fn status(&self) -> QuorumStatus {
        let Some(raft) = &self.raft else {
            let known = self.observer.as_ref().and_then(|o| o.status.lock().clone());
            return known.unwrap_or(QuorumStatus {
                leader: None,
                term: 0,
                log_end: 0,
                high_watermark: 0,
                voters: Vec::new(),
                observers: Vec::new(),
            });
        };
        let m = raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership().clone();
        let voter_ids: Vec<u64> = membership.voter_ids().collect();
        let progress = |id: u64| -> Option<u64> {
            if id == self.node_id {
                return Some(m.last_log_index.map_or(0, |i| i + 1));
            }
            m.replication
                .as_ref()
                .and_then(|r| r.get(&id).cloned())
                .map(|l| l.map_or(0, |l| l.index + 1))
        };
        let status = |id: u64| ReplicaStatus {
            node_id: id,
            log_end: progress(id),
        };
        QuorumStatus {
            leader: m.current_leader,
            term: m.current_term,
            log_end: m.last_log_index.map_or(0, |i| i + 1),
            high_watermark: m.cluster_committed.as_ref().map_or(0, |c| c.index + 1),
            voters: voter_ids.iter().map(|id| status(*id)).collect(),
            observers: membership
                .learner_ids()
                .map(status)
                .chain(
                    self.observers_seen(m.current_term)
                        .map(|(id, seen)| ReplicaStatus {
                            node_id: id,
                            log_end: Some(seen.applied),
                        }),
                )
                .collect(),
        }
    }

    /// On the leader: how long since each other member last answered it (`None`: never,
    /// in this leader's term). Empty on other nodes.
    pub fn silence(&self) -> BTreeMap<u64, Option<Duration>> {
        use openraft::Instant as _;
        let Some(raft) = &self.raft else {
            return BTreeMap::new();
        };
        let m = raft.metrics().borrow_watched().clone();
        if m.current_leader != Some(self.node_id) {
            return BTreeMap::new();
        }
        let mut silence: BTreeMap<u64, Option<Duration>> = m
            .heartbeat
            .map(|h| {
                h.into_iter()
                    .filter(|(id, _)| *id != self.node_id)
                    .map(|(id, at)| (id, at.map(|i| i.elapsed())))
                    .collect()
            })
            .unwrap_or_default();
        for (id, seen) in self.observers_seen(m.current_term) {
            silence.insert(id, Some(seen.at.elapsed()));
        }
        silence
    }

    /// Leaves the quorum (the state stays on disk).
    pub async fn shutdown(&self) {
        if let Some(o) = &self.observer {
            o.stop.send_replace(true);
            let task = o.task.lock().take();
            if let Some(task) = task {
                let _ = task.await;
            }
        }
        if let Some(raft) = &self.raft {
            if let Err(e) = raft.shutdown().await {
                tracing::warn!(error = %e, "quorum shutdown");
            }
        }
    }
}
