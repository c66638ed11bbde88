//! The broker's shared state and lifecycle: open the data dir, replay metadata, open logs,
//! listen, run background work, and shut down cleanly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::watch;
use uuid::Uuid;
use vltava_metadata::config::ConfigLayers;
use vltava_metadata::{BrokerEndpoint, MetadataDelta, MetadataImage, MetadataRecord, ResourceType};
use vltava_quorum::{Quorum, QuorumConfig};
use vltava_storage::checkpoint;

use crate::config::{topic_settings, BrokerConfig, TopicSettings};
use crate::context::{
    AclOperation, AllowAll, Authorizer, RequestContext, Resource, SecurityProtocol,
};
use crate::controller::{Controller, MetadataPublisher};
use crate::group_coordinator::{GroupCoordinator, OFFSETS_TOPIC};
use crate::memory_pool::MemoryPool;
use crate::network::BoundListener;
use crate::producer_ids::ProducerIdManager;
use crate::replica_manager::{
    LeadershipChange, ReplicaManager, StartupState, LOG_START_CHECKPOINT, RECOVERY_CHECKPOINT,
};
use crate::txn_coordinator::{TxnCoordinator, TXN_TOPIC};

const CLEAN_SHUTDOWN_FILE: &str = ".vltava_cleanshutdown";

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata: {0}")]
    Metadata(#[from] vltava_metadata::MetadataError),
    #[error("storage: {0}")]
    Storage(#[from] vltava_storage::StorageError),
    #[error("data directory {0} is in use by another broker")]
    Locked(PathBuf),
    #[error("tls: {0}")]
    Tls(#[from] crate::security::tls::TlsError),
    #[error("sasl: {0}")]
    Sasl(#[from] crate::security::sasl::SaslConfigError),
}

/// Which of its peers' listeners a node reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// Leaders' `inter.broker.listener.name`, for replica fetches.
    InterBroker,
    /// Controllers' first `controller.listener.names`, for the quorum.
    Controller,
}

/// Runs file I/O that must happen now, in call order, from async code (a coordinator's
/// append under its shard lock, a marker write): on a multi-thread runtime the worker first
/// hands its other tasks to another thread (`block_in_place`), so a slow write or a roll's
/// fsync does not stall them. Elsewhere (a blocking thread, a current-thread runtime in
/// tests) it simply runs.
pub(crate) fn blocking_io<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Runs blocking work (appends, fsyncs) that an async task waits for, on that task's own
/// thread where the runtime allows: `block_in_place` hands the worker's other tasks to
/// another thread, and the work starts at once. `spawn_blocking` would first wake a pool
/// thread, and on a busy 2-core machine that wake alone took up to 3 ms. A panic in `f` is
/// returned as an error, as a blocking task's would be.
pub(crate) async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread
    {
        tokio::task::block_in_place(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)))
            .map_err(|_| "panicked".to_string())
    } else {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| e.to_string())
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Wall-clock time and tokio timers, for the coordinators.
pub struct SystemClock;

impl crate::coordinator_runtime::Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }

    fn sleep_until(&self, deadline_ms: i64) -> futures::future::BoxFuture<'static, ()> {
        let wait = (deadline_ms - now_ms()).max(0) as u64;
        Box::pin(tokio::time::sleep(Duration::from_millis(wait)))
    }
}

/// State shared by every connection and background task.
pub struct Broker {
    pub config: BrokerConfig,
    pub cluster_id: String,
    pub controller: Arc<Controller>,
    /// The partitions this broker hosts.
    pub partitions: Arc<ReplicaManager>,
    /// The background log cleaner, started once the logs are loaded.
    cleaner: parking_lot::Mutex<Option<crate::log_cleaner::LogCleaner>>,
    pub groups: GroupCoordinator,
    /// Producer ids for InitProducerId, from blocks recorded in the metadata log.
    pub producer_ids: ProducerIdManager,
    pub txns: TxnCoordinator,
    /// Every listener, bound; Metadata tells each client the address of the listener it
    /// came through.
    pub listeners: Vec<BoundListener>,
    pub authorizer: Arc<dyn Authorizer>,
    /// Request bytes in memory, received or queued (`queued.max.request.bytes`).
    pub memory: Arc<MemoryPool>,
    /// Set once the broker stops accepting; waiting fetches watch it to answer at once.
    pub(crate) shutting_down: watch::Sender<bool>,
    /// Followers' fetchers, one per leader broker.
    fetchers: crate::replica_fetcher::ReplicaFetchers,
    /// `leader.replication.throttled.rate` and `follower.replication.throttled.rate`.
    pub replication_quotas: Arc<crate::replication_quota::ReplicationQuotas>,
    /// Client quotas and their meters.
    pub quotas: crate::quota::ClientQuotas,
    /// Requests answered and the time each took, by type.
    pub request_metrics: crate::request_metrics::RequestMetrics,
    /// `RLIMIT_NOFILE` after raising it at start.
    open_file_limit: u64,
    /// Keeps an exclusive lock on the data dir for the broker's life.
    _lock: std::fs::File,
}

/// A running broker: its address and a way to stop it.
pub struct BrokerHandle {
    /// The first listener's address.
    pub local_addr: SocketAddr,
    pub broker: Arc<Broker>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl BrokerHandle {
    /// Stops accepting, answers in-flight requests, flushes and closes every log.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// Binds a listener as `TcpListener::bind` does (each resolved address in turn,
/// `SO_REUSEADDR`), with `socket.receive.buffer.bytes` set before `listen`: accepted sockets
/// inherit it, and the window scale is agreed in the handshake, before any later change.
async fn bind_listener(addr: &str, recv_buffer: Option<usize>) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(u32::try_from(size).unwrap_or(u32::MAX))?;
        }
        match socket.bind(a).and_then(|()| socket.listen(1024)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "address resolved to nothing",
        )
    }))
}

/// An accepted connection's socket options: no Nagle delay on answers, and
/// `socket.send.buffer.bytes`.
fn tune_accepted(stream: &tokio::net::TcpStream, send_buffer: Option<usize>) {
    let _ = stream.set_nodelay(true);
    if let Some(size) = send_buffer {
        if let Err(e) = rustix::net::sockopt::set_socket_send_buffer_size(stream, size) {
            tracing::warn!(error = %e, "socket.send.buffer.bytes not applied");
        }
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BrokerError {
    let context = context.into();
    move |source| BrokerError::Io { context, source }
}

/// Kafka cluster ids are 16 bytes in URL-safe base64 without padding.
/// A new random cluster id, as `kafka-storage.sh random-uuid` prints one.
pub fn new_cluster_id() -> String {
    encode_cluster_id(Uuid::new_v4().into_bytes())
}

/// Whether `id` has the form of a Kafka cluster id: 16 bytes in URL-safe base64, 22
/// characters.
pub fn is_cluster_id(id: &str) -> bool {
    id.len() == 22
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Ids never start with `-`, as Kafka's never do, so that one can follow `-t` or
/// `--cluster-id` on a command line.
fn encode_cluster_id(mut bytes: [u8; 16]) -> String {
    use base64::Engine;
    if bytes[0] >> 2 == 62 {
        bytes[0] &= 0x7f;
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The cluster id from `meta.properties`, else `cluster.id`, else, for nodes started with
/// the same `controller.quorum.voters`, one derived from the voters (so they agree without
/// a format step), else a random one; written to `meta.properties` on first start.
fn read_or_create_cluster_id(dir: &Path, config: &BrokerConfig) -> Result<String, BrokerError> {
    let path = dir.join("meta.properties");
    let configured = config
        .props
        .get("cluster.id")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Some(id) = text.lines().find_map(|l| l.strip_prefix("cluster.id=")) {
            let id = id.trim().to_string();
            if let Some(c) = configured.filter(|c| *c != id) {
                return Err(BrokerError::Io {
                    context: format!("{} belongs to cluster {id}", dir.display()),
                    source: std::io::Error::other(format!("cluster.id is {c}")),
                });
            }
            return Ok(id);
        }
    }
    if configured.is_none() && config.voters.is_empty() && !config.roles.controller {
        return Err(BrokerError::Io {
            context: format!("{} has no cluster id", dir.display()),
            source: std::io::Error::other(
                "a broker that finds the quorum through controller.quorum.bootstrap.servers needs cluster.id or `vltava storage format`",
            ),
        });
    }
    let id = configured.unwrap_or_else(|| {
        if config.voters.is_empty() {
            return encode_cluster_id(Uuid::new_v4().into_bytes());
        }
        let mut voters: Vec<String> = config
            .voters
            .iter()
            .map(|v| format!("{}@{}", v.id, v.addr()))
            .collect();
        voters.sort();
        let text = voters.join(",");
        let mut bytes = [0u8; 16];
        for (i, chunk) in bytes.chunks_mut(4).enumerate() {
            let h = crc32c::crc32c_append((i as u32).wrapping_mul(0x9E37_79B9), text.as_bytes());
            chunk.copy_from_slice(&h.to_be_bytes());
        }
        encode_cluster_id(bytes)
    });
    let text = format!("version=1\ncluster.id={id}\nnode.id={}\n", config.node_id);
    std::fs::write(&path, text).map_err(io(format!("write {}", path.display())))?;
    Ok(id)
}

fn lock_data_dir(dir: &Path) -> Result<std::fs::File, BrokerError> {
    let path = dir.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(format!("open {}", path.display())))?;
    f.try_lock()
        .map_err(|_| BrokerError::Locked(dir.to_path_buf()))?;
    Ok(f)
}

impl Broker {
    /// Host and port to give a client that connected through `listener`.
    pub fn advertised_for(&self, listener: &str) -> (&str, u16) {
        let l = self
            .listeners
            .iter()
            .find(|l| &*l.name == listener)
            .unwrap_or(&self.listeners[0]);
        (&l.advertised.0, l.advertised.1)
    }

    /// The most partitions this broker can host with its open-file limit: each needs at least
    /// its active segment's three files, and connections need files too.
    pub fn max_hosted_partitions(&self) -> usize {
        (self.open_file_limit.saturating_sub(FILES_RESERVED) / FILES_PER_PARTITION) as usize
    }

    /// Whether the request's principal may perform `op` on `resource`.
    pub fn authorize(
        &self,
        ctx: &RequestContext,
        op: AclOperation,
        resource: Resource<'_>,
    ) -> bool {
        self.authorizer.authorize(ctx, op, resource)
    }

    /// Kafka's authorized-operations bit field: bit `code` set for each operation (by wire
    /// code) the principal may perform on `resource`, among those Kafka defines for its type.
    pub fn authorized_operations(&self, ctx: &RequestContext, resource: Resource<'_>) -> i32 {
        use AclOperation::*;
        let ops: &[AclOperation] = match resource {
            Resource::Topic(_) => &[
                Read,
                Write,
                Create,
                Describe,
                Delete,
                Alter,
                DescribeConfigs,
                AlterConfigs,
            ],
            Resource::Group(_) => &[Read, Describe, Delete],
            Resource::Cluster => &[
                Create,
                ClusterAction,
                DescribeConfigs,
                AlterConfigs,
                IdempotentWrite,
                Alter,
                Describe,
            ],
            Resource::TransactionalId(_) => &[Describe, Write],
        };
        ops.iter()
            .filter(|op| self.authorize(ctx, **op, resource))
            .fold(0, |bits, op| bits | (1 << op.wire()))
    }

    /// Effective settings of a topic from its overrides and the broker layers.
    pub fn topic_settings(&self, image: &MetadataImage, topic: &str) -> TopicSettings {
        topic_settings(self.config_layers(image, Some(topic)))
    }

    pub fn config_layers<'a>(
        &'a self,
        image: &'a MetadataImage,
        topic: Option<&str>,
    ) -> ConfigLayers<'a> {
        self.config.layers(image, topic)
    }

    fn write_checkpoints(&self) {
        self.partitions.write_checkpoints();
    }

    /// Retention and log-start persistence, run every `log.retention.check.interval.ms`.
    pub fn run_retention(&self) {
        let now = now_ms();
        for p in self.partitions.all() {
            if let Err(e) = p.enforce_retention(now) {
                tracing::warn!(partition = ?p, error = %e, "retention failed");
            }
        }
        self.write_checkpoints();
    }

    /// Forgets producers idle for `producer.id.expiration.ms` (none with an open
    /// transaction), every `producer.id.expiration.check.interval.ms`.
    pub fn expire_producers(&self) {
        let now = now_ms();
        let after = self.config.producer_id_expiration_ms();
        let removed: usize = self
            .partitions
            .all()
            .iter()
            .map(|p| p.remove_expired_producers(now, after))
            .sum();
        if removed > 0 {
            tracing::info!(removed, "expired idle producer ids");
        }
    }

    /// Reopens logs that a failed write or fsync poisoned, once the disk takes writes
    /// again (Kafka would take the log directory offline until a restart).
    pub fn recover_poisoned_logs(&self) {
        let now = now_ms();
        let mut recovered = false;
        for p in self
            .partitions
            .all()
            .into_iter()
            .filter(|p| p.is_poisoned())
        {
            match p.recover(now) {
                Ok(r) => recovered |= r,
                Err(e) => {
                    tracing::debug!(partition = ?p, error = %e, "poisoned log still cannot be reopened")
                }
            }
        }
        if recovered {
            self.write_checkpoints();
        }
    }

    /// Persists the log start offset after DeleteRecords so a restart keeps it.
    pub fn persist_log_starts(&self) {
        self.write_checkpoints();
    }

    /// The error for a partition this broker does not host: NOT_LEADER_OR_FOLLOWER when it
    /// exists (on other brokers), so clients refresh metadata and go there.
    pub fn not_hosted(&self, topic: &str, partition: i32) -> vltava_protocol::ErrorCode {
        let exists = self
            .controller
            .image()
            .topic(topic)
            .is_some_and(|t| t.partitions.contains_key(&partition));
        if exists {
            vltava_protocol::ErrorCode::NotLeaderOrFollower
        } else {
            vltava_protocol::ErrorCode::UnknownTopicOrPartition
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutting_down.borrow()
    }
}

/// Opens the data dir, replays metadata, opens every log, binds the listener and starts
/// serving. Returns once the broker accepts connections.
pub async fn start(config: BrokerConfig) -> Result<BrokerHandle, BrokerError> {
    start_with(config, StartOptions::default()).await
}

/// What a broker is built with besides its config: tests and embedders replace these.
pub struct StartOptions {
    pub authorizer: Arc<dyn Authorizer>,
    /// The file system partition logs live on.
    pub fs: Arc<dyn vltava_storage::Fs>,
}

impl Default for StartOptions {
    fn default() -> Self {
        Self {
            authorizer: Arc::new(AllowAll),
            fs: vltava_storage::StdFs::shared(),
        }
    }
}

/// [`start`] with other [`StartOptions`].
/// A listener's TLS server, SASL settings and principal mapping rules, from its keys.
#[allow(clippy::type_complexity)]
fn listener_security(
    config: &BrokerConfig,
    l: &crate::config::ListenerConfig,
) -> Result<
    (
        Option<Arc<crate::security::tls::ServerTls>>,
        Option<Arc<crate::security::sasl::SaslConfig>>,
        Arc<crate::security::principal_rules::PrincipalRules>,
    ),
    BrokerError,
> {
    let get = |key: &str| config.listener_prop(&l.name, key);
    let tls = match l.security_protocol {
        SecurityProtocol::Ssl | SecurityProtocol::SaslSsl => Some(Arc::new(
            crate::security::tls::ServerTls::new(&l.name, get)?,
        )),
        SecurityProtocol::Plaintext | SecurityProtocol::SaslPlaintext => None,
    };
    let sasl = match l.security_protocol {
        SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl => Some(Arc::new(
            crate::security::sasl::SaslConfig::from_config(&l.name, get)?,
        )),
        SecurityProtocol::Plaintext | SecurityProtocol::Ssl => None,
    };
    let principal_rules = Arc::new(crate::security::tls::principal_rules(&l.name, get)?);
    Ok((tls, sasl, principal_rules))
}

pub async fn start_with(
    config: BrokerConfig,
    options: StartOptions,
) -> Result<BrokerHandle, BrokerError> {
    let StartOptions { authorizer, fs } = options;
    let dir = config.data_dir.clone();
    std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
    let lock = lock_data_dir(&dir)?;
    for entry in std::fs::read_dir(&dir)
        .map_err(io(format!("list {}", dir.display())))?
        .flatten()
    {
        if entry.file_name().to_string_lossy().ends_with("-delete") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let cluster_id = read_or_create_cluster_id(&dir, &config)?;
    // Listeners' TLS and SASL settings are checked before anything starts, so a start
    // refused for a bad key store leaves no quorum tasks running.
    let security = config
        .listeners
        .iter()
        .map(|l| listener_security(&config, l))
        .collect::<Result<Vec<_>, BrokerError>>()?;
    let metadata_dir = dir.join("__cluster_metadata");
    let transport = Arc::new(crate::quorum_transport::TcpTransport::new(
        config.peer_connector(PeerRole::Controller),
    ));
    let quorum = if config.roles.controller {
        Quorum::open(
            QuorumConfig {
                node_id: config.node_id.get() as u64,
                voters: config
                    .voters
                    .iter()
                    .map(|v| (v.id.get() as u64, v.addr()))
                    .collect(),
                dir: metadata_dir.clone(),
                election_timeout_ms: config
                    .get_i64("controller.quorum.election.timeout.ms")
                    .max(10) as u64,
                heartbeat_interval_ms: (config
                    .get_i64("controller.quorum.election.timeout.ms")
                    .max(10)
                    / 10) as u64,
                snapshot_every: 1000,
            },
            transport,
        )
        .await
    } else {
        let controllers = if config.voters.is_empty() {
            config
                .bootstrap_servers
                .iter()
                .map(|s| (None, s.clone()))
                .collect()
        } else {
            config
                .voters
                .iter()
                .map(|v| (Some(v.id.get() as u64), v.addr()))
                .collect()
        };
        Quorum::observe(
            vltava_quorum::ObserverConfig {
                node_id: config.node_id.get() as u64,
                controllers,
            },
            transport,
        )
    }
    .map_err(|e| BrokerError::Io {
        context: format!("opening the metadata quorum in {}", metadata_dir.display()),
        source: std::io::Error::other(e.to_string()),
    })?;
    let controller = Arc::new(Controller::new(quorum, config.node_id));
    let authorizer: Arc<dyn Authorizer> =
        match crate::security::authorizer::StandardAuthorizer::from_config(&config, &controller) {
            Ok(Some(standard)) => Arc::new(standard),
            Ok(None) => authorizer,
            Err(e) => {
                return Err(BrokerError::Io {
                    context: "authorizer.class.name".into(),
                    source: std::io::Error::other(e),
                })
            }
        };
    let startup = StartupState {
        clean_shutdown: dir.join(CLEAN_SHUTDOWN_FILE).exists(),
        recovery: checkpoint::read(&dir.join(RECOVERY_CHECKPOINT))?,
        log_starts: checkpoint::read(&dir.join(LOG_START_CHECKPOINT))?,
        clean_offsets: checkpoint::read(&dir.join(crate::replica_manager::CLEANER_CHECKPOINT))?,
    };
    let mut bound = Vec::new();
    let mut sockets = Vec::new();
    for (l, (tls, sasl, principal_rules)) in config.listeners.iter().zip(security) {
        let socket = bind_listener(&l.bind, config.socket_receive_buffer_bytes())
            .await
            .map_err(io(format!("bind {} ({})", l.bind, l.name)))?;
        let local_addr = socket.local_addr().map_err(io("local addr"))?;
        let advertised = match &l.advertised {
            Some((h, p)) => (h.clone(), if *p == 0 { local_addr.port() } else { *p }),
            None => {
                let host = if local_addr.ip().is_unspecified() {
                    "127.0.0.1".to_string()
                } else {
                    local_addr.ip().to_string()
                };
                (host, local_addr.port())
            }
        };
        bound.push(BoundListener {
            name: Arc::from(l.name.as_str()),
            security_protocol: l.security_protocol,
            local_addr,
            advertised,
            tls,
            sasl,
            principal_rules,
        });
        sockets.push(socket);
    }
    let local_addr = bound[0].local_addr;
    let partitions = Arc::new(ReplicaManager::new(&config, startup, fs));
    let shutting_down = watch::Sender::new(false);
    let replication_quotas = Arc::new(crate::replication_quota::ReplicationQuotas::default());
    let fetchers = crate::replica_fetcher::ReplicaFetchers::new(
        crate::replica_fetcher::FetcherConfig {
            node_id: config.node_id,
            listener: config.inter_broker_listener().name.clone(),
            max_bytes: config
                .get_i64("replica.fetch.max.bytes")
                .clamp(0, i32::MAX as i64) as i32,
            response_max_bytes: config
                .get_i64("replica.fetch.response.max.bytes")
                .clamp(0, i32::MAX as i64) as i32,
            wait_max_ms: config
                .get_i64("replica.fetch.wait.max.ms")
                .clamp(0, i32::MAX as i64) as i32,
            backoff: Duration::from_millis(config.get_i64("replica.fetch.backoff.ms").max(0) as u64),
            socket_timeout: Duration::from_millis(
                config.get_i64("replica.socket.timeout.ms").max(1) as u64,
            ),
            connector: config.peer_connector(PeerRole::InterBroker),
        },
        Arc::clone(&partitions),
        Arc::clone(&controller),
        Arc::clone(&replication_quotas),
        shutting_down.subscribe(),
    );
    let broker = Arc::new_cyclic(|me| Broker {
        groups: GroupCoordinator::new(&config, me.clone()),
        txns: TxnCoordinator::new(&config, me.clone()),
        producer_ids: ProducerIdManager::new(Arc::clone(&controller), config.node_id),
        memory: MemoryPool::new(config.queued_max_request_bytes()),
        quotas: crate::quota::ClientQuotas::new(config.quota_windows()),
        config,
        cluster_id,
        controller,
        partitions,
        cleaner: parking_lot::Mutex::new(None),
        listeners: bound,
        authorizer,
        shutting_down,
        fetchers,
        replication_quotas,
        request_metrics: Default::default(),
        open_file_limit: raise_open_file_limit(),
        _lock: lock,
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Controller listeners serve the quorum from now on: the other controllers may need this
    // node's vote before anyone can answer clients. Client listeners wait for `ready`.
    let (ready_tx, ready_rx) = watch::channel(false);
    let task = tokio::spawn(run(Arc::clone(&broker), sockets, shutdown_rx, ready_rx));
    match join_cluster(&broker, &metadata_dir).await {
        Ok(()) => {}
        Err(e) => {
            let _ = shutdown_tx.send(true);
            let _ = task.await;
            return Err(e);
        }
    }
    // From here on, a crash is an unclean shutdown.
    let _ = std::fs::remove_file(dir.join(CLEAN_SHUTDOWN_FILE));
    broker.write_checkpoints();
    *broker.cleaner.lock() = Some(crate::log_cleaner::LogCleaner::start(
        Arc::clone(&broker.partitions),
        crate::log_cleaner::CleanerSettings::from_config(&broker.config),
    ));
    let image = broker.controller.image();
    let _ = ready_tx.send(true);
    tracing::info!(addr = %local_addr, cluster_id = %broker.cluster_id, topics = image.topics.len(), "broker started");

    Ok(BrokerHandle {
        local_addr,
        broker,
        shutdown: shutdown_tx,
        task,
    })
}

async fn run(
    broker: Arc<Broker>,
    sockets: Vec<TcpListener>,
    mut shutdown: watch::Receiver<bool>,
    ready: watch::Receiver<bool>,
) {
    let connections = Arc::new(crate::network::ConnectionTracker::new(
        broker.config.max_connections(),
        // Checked when the config was read.
        broker.config.max_connections_per_ip().unwrap_or_default(),
        Arc::clone(&broker.memory),
    ));
    let mut acceptors = tokio::task::JoinSet::new();
    for (socket, listener) in sockets.into_iter().zip(broker.listeners.clone()) {
        let (broker, connections, mut shutdown) = (
            Arc::clone(&broker),
            Arc::clone(&connections),
            shutdown.clone(),
        );
        let mut ready = ready.clone();
        acceptors.spawn(async move {
            if !broker.config.is_controller_listener(&listener.name) {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    r = ready.wait_for(|r| *r) => if r.is_err() { return },
                }
            }
            loop {
                tokio::select! {
                    _ = shutdown.changed() => break,
                    accepted = socket.accept() => match accepted {
                        Ok((stream, peer)) => {
                            tune_accepted(&stream, broker.config.socket_send_buffer_bytes());
                            connections.spawn(Arc::clone(&broker), stream, &listener, peer, shutdown.clone());
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, listener = %listener.name, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                }
            }
        });
    }
    let retention_every = Duration::from_millis(broker.config.retention_check_interval_ms());
    let mut retention = tokio::time::interval_at(
        tokio::time::Instant::now() + retention_every,
        retention_every,
    );
    let mut periodic_flush = tokio::time::interval(Duration::from_millis(250));
    let mut last_flush: std::collections::HashMap<(String, i32), i64> = Default::default();
    let mut retention_run: Option<tokio::task::JoinHandle<()>> = None;
    let mut poisoned_check = tokio::time::interval(Duration::from_secs(2));
    let expiry_every =
        Duration::from_millis(broker.config.producer_id_expiration_check_interval_ms());
    let mut producer_expiry =
        tokio::time::interval_at(tokio::time::Instant::now() + expiry_every, expiry_every);
    let mut liveness_check = tokio::time::interval(Duration::from_millis(500));
    // Kafka checks the ISR at half the lag limit.
    let isr_every = Duration::from_millis(
        (broker.config.get_i64("replica.lag.time.max.ms") / 2).clamp(50, 5000) as u64,
    );
    let mut isr_check = tokio::time::interval(isr_every);
    let mut leader_since: Option<tokio::time::Instant> = None;
    let mut liveness_run: Option<tokio::task::JoinHandle<()>> = None;
    let rebalance_every = Duration::from_secs(
        broker
            .config
            .get_i64("leader.imbalance.check.interval.seconds")
            .max(1) as u64,
    );
    let mut leader_rebalance = tokio::time::interval_at(
        tokio::time::Instant::now() + rebalance_every,
        rebalance_every,
    );
    let mut rebalance_run: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = liveness_check.tick() => {
                if !broker.controller.quorum().is_leader() {
                    leader_since = None;
                } else if liveness_run.as_ref().is_none_or(|r| r.is_finished()) {
                    let since = *leader_since.get_or_insert_with(tokio::time::Instant::now);
                    liveness_run = check_liveness(&broker, since.elapsed());
                }
            }
            _ = leader_rebalance.tick() => {
                if broker.config.get_bool("auto.leader.rebalance.enable")
                    && broker.controller.quorum().is_leader()
                    && rebalance_run.as_ref().is_none_or(|r| r.is_finished())
                {
                    rebalance_run = Some(rebalance_leaders(&broker));
                }
            }
            _ = producer_expiry.tick() => broker.expire_producers(),
            _ = isr_check.tick() => broker.shrink_isrs(),
            _ = poisoned_check.tick() => {
                if broker.partitions.all().iter().any(|p| p.is_poisoned()) {
                    let b = Arc::clone(&broker);
                    // Reopening reads the log directory: off the async workers.
                    let _ = tokio::task::spawn_blocking(move || b.recover_poisoned_logs()).await;
                }
            }
            _ = retention.tick() => {
                // Not awaited here, so accepting goes on while segments are deleted; a run
                // still going when the next is due makes that one skip.
                if retention_run.as_ref().is_none_or(|r| r.is_finished()) {
                    let b = Arc::clone(&broker);
                    retention_run = Some(tokio::task::spawn_blocking(move || b.run_retention()));
                }
            }
            _ = periodic_flush.tick() => {
                // `flush.ms`: a time-based fsync for topics that configure one.
                let now = now_ms();
                for p in broker.partitions.all() {
                    if let Some(ms) = p.settings().flush_ms {
                        let key = (p.topic.to_string(), p.index);
                        let last = last_flush.entry(key).or_insert(now);
                        if now - *last >= ms {
                            *last = now;
                            p.request_flush();
                        }
                    }
                }
            }
        }
    }
    controlled_shutdown(&broker).await;
    broker.shutting_down.send_replace(true);
    // Acceptors watch the same signal; once they end no listener socket is open.
    while acceptors.join_next().await.is_some() {}
    connections.drain(Duration::from_secs(10)).await;
    // No metadata is applied once the logs start closing.
    broker.controller.quorum().shutdown().await;
    broker.fetchers.shutdown().await;
    // No coordinator timer may write once the logs close.
    for p in broker.partitions.topic(OFFSETS_TOPIC) {
        broker.groups.on_resigned(p.index);
    }
    for p in broker.partitions.topic(TXN_TOPIC) {
        broker.txns.on_resigned(p.index);
    }
    if let Some(run) = retention_run {
        let _ = run.await;
    }
    // The cleaner finishes its pass before the logs close.
    let cleaner = broker.cleaner.lock().take();
    if let Some(cleaner) = cleaner {
        let _ = tokio::task::spawn_blocking(move || cleaner.shutdown()).await;
    }
    let b = Arc::clone(&broker);
    let _ = tokio::task::spawn_blocking(move || {
        let mut ok = true;
        for p in b.partitions.all() {
            if let Err(e) = p.close() {
                ok = false;
                tracing::error!(partition = ?p, error = %e, "close failed");
            }
        }
        b.write_checkpoints();
        if ok {
            let marker = b.config.data_dir.join(CLEAN_SHUTDOWN_FILE);
            if let Err(e) = std::fs::write(&marker, b"") {
                tracing::warn!(error = %e, "could not write clean shutdown marker");
            }
        }
    })
    .await;
    tracing::info!("broker stopped");
}

/// On the active controller: fences registered brokers whose node has not answered the
/// quorum for `broker.session.timeout.ms` and unfences those that answer again, moving the
/// leadership of their partitions (`controller::liveness_records`). In combined mode a
/// broker and its controller are one process, so the quorum's own heartbeats are the
/// broker's; a broker-only node's metadata fetches are its heartbeats.
fn check_liveness(
    broker: &Arc<Broker>,
    leader_for: Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    let timeout =
        Duration::from_millis(broker.config.get_i64("broker.session.timeout.ms").max(1) as u64);
    let silence = broker.controller.quorum().silence();
    let image = broker.controller.image();
    let me = broker.config.node_id;
    let (mut fence, mut unfence) = (Vec::new(), Vec::new());
    for b in image.brokers.values() {
        let quiet = if b.broker_id == me {
            false
        } else {
            match silence.get(&(b.broker_id.get() as u64)) {
                Some(Some(d)) => *d > timeout,
                Some(None) => leader_for > timeout,
                // Neither a voter nor an observer heard from in this term.
                None => leader_for > timeout,
            }
        };
        if quiet && !b.fenced {
            fence.push(b.broker_id);
        } else if !quiet && b.fenced && !b.in_controlled_shutdown {
            // A broker in controlled shutdown still answers the quorum until it stops; it
            // comes back by registering again.
            unfence.push(b.broker_id);
        }
    }
    if fence.is_empty() && unfence.is_empty() {
        return None;
    }
    tracing::info!(?fence, ?unfence, "broker liveness changed");
    let unclean = broker.config.get_bool("unclean.leader.election.enable");
    let b = Arc::clone(broker);
    Some(tokio::spawn(async move {
        let result = b
            .controller
            .write(move |image| {
                Ok((
                    crate::controller::liveness_records(image, &fence, &unfence, unclean),
                    (),
                ))
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e.message, "could not record broker liveness");
        }
    }))
}

/// On the active controller (`auto.leader.rebalance.enable`): hands every partition back to
/// its preferred replica where that replica is live and in the ISR, so leadership spreads
/// again once brokers that failed are back.
fn rebalance_leaders(broker: &Arc<Broker>) -> tokio::task::JoinHandle<()> {
    use crate::controller::{elect_leaders_records, ElectionType};
    let b = Arc::clone(broker);
    tokio::spawn(async move {
        let result = b
            .controller
            .write(|image| {
                let (records, _) = elect_leaders_records(image, ElectionType::Preferred, None);
                let moved = records.len();
                Ok((records, moved))
            })
            .await;
        match result {
            Ok(0) => {}
            Ok(moved) => {
                tracing::info!(partitions = moved, "leadership back to preferred replicas")
            }
            Err(e) => tracing::warn!(error = %e.message, "could not rebalance partition leaders"),
        }
    })
}

/// How long a stopping broker waits for its controlled shutdown to commit.
const CONTROLLED_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Kafka's controlled shutdown: before a broker with live peers stops, it is fenced and its
/// partitions are led by other ISR members, so clients move on at once rather than after
/// `broker.session.timeout.ms`. A cluster that cannot commit in time (no quorum) is not
/// waited for longer.
async fn controlled_shutdown(broker: &Arc<Broker>) {
    let me = broker.config.node_id;
    let image = broker.controller.image();
    if !broker.config.roles.broker || image.live_brokers().all(|b| b.broker_id == me) {
        return;
    }
    let unclean = broker.config.get_bool("unclean.leader.election.enable");
    let write = broker.controller.write(move |image| {
        Ok((
            crate::controller::controlled_shutdown_records(image, me, unclean),
            (),
        ))
    });
    match tokio::time::timeout(CONTROLLED_SHUTDOWN_TIMEOUT, write).await {
        Ok(Ok(())) => tracing::info!("controlled shutdown: partition leadership handed over"),
        Ok(Err(e)) => tracing::warn!(error = %e.message, "controlled shutdown failed; stopping anyway"),
        Err(_) => tracing::warn!("controlled shutdown did not commit within {CONTROLLED_SHUTDOWN_TIMEOUT:?}; stopping anyway"),
    }
}

/// How long start-up waits for the quorum to elect a leader and replay what it committed.
const QUORUM_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits for the metadata quorum, brings in a pre-quorum metadata log, opens every
/// partition in the image, registers this broker and loads the coordinators it leads.
async fn join_cluster(broker: &Arc<Broker>, metadata_dir: &Path) -> Result<(), BrokerError> {
    let fail = |context: &str, e: String| BrokerError::Io {
        context: context.to_string(),
        source: std::io::Error::other(e),
    };
    let quorum = Arc::clone(broker.controller.quorum());
    let voter = !broker.config.roles.controller
        || broker.config.voters.is_empty()
        || broker
            .config
            .voters
            .iter()
            .any(|v| v.id == broker.config.node_id);
    if !voter && !quorum.is_member() {
        // A new controller: it hears from the quorum once a voter change adds it.
        while !quorum.wait_ready(Duration::from_secs(30)).await {
            tracing::info!(
                node = %broker.config.node_id,
                "not yet a member of the metadata quorum; add this node with `vltava cluster add-controller`"
            );
        }
    }
    if !quorum.wait_ready(QUORUM_READY_TIMEOUT).await {
        return Err(fail(
            "joining the metadata quorum",
            format!(
                "no quorum leader within {QUORUM_READY_TIMEOUT:?}; are the controller.quorum.voters up and reachable?"
            ),
        ));
    }
    import_legacy_metadata_log(broker, metadata_dir).await?;
    // Every partition in the metadata, opened from disk with what the last run left; from
    // here on each committed batch reaches the broker as a delta.
    let b = Arc::clone(broker);
    tokio::task::spawn_blocking(move || {
        let publisher: Arc<dyn MetadataPublisher> = Arc::clone(&b) as _;
        b.controller.attach(Arc::downgrade(&publisher));
    })
    .await
    .map_err(|e| fail("opening logs", e.to_string()))?;
    broker.partitions.startup_done();
    if broker.config.roles.broker {
        register_broker(broker)
            .await
            .map_err(|e| fail("registering with the controller", e.message))?;
    }
    if broker.config.roles.controller && broker.config.roles.broker {
        ensure_offsets_topic(broker).await?;
        crate::txn_coordinator::ensure_topic(broker).await?;
    } else if broker.config.roles.broker {
        create_internal_topics_later(broker);
    }
    // The __consumer_offsets and __transaction_state partitions led here load before the
    // broker accepts clients, so a restarted broker answers at once; later leadership
    // changes reach the coordinators through the metadata publisher.
    let mut loads: Vec<_> = broker
        .partitions
        .topic(OFFSETS_TOPIC)
        .iter()
        .filter(|p| p.is_leader())
        .map(|p| broker.groups.on_leader(p.index, p.leader_epoch()))
        .collect();
    loads.extend(
        broker
            .partitions
            .topic(TXN_TOPIC)
            .iter()
            .filter(|p| p.is_leader())
            .map(|p| broker.txns.on_leader(p.index, p.leader_epoch())),
    );
    futures::future::join_all(loads).await;
    Ok(())
}

/// A broker that is not a controller cannot tell how many brokers to wait for, so it serves
/// at once and creates the internal topics once enough brokers have registered; until then
/// groups and transactions get COORDINATOR_NOT_AVAILABLE, as in Kafka.
fn create_internal_topics_later(broker: &Arc<Broker>) {
    let weak = Arc::downgrade(broker);
    let mut stop = broker.shutting_down.subscribe();
    tokio::spawn(async move {
        loop {
            let Some(b) = weak.upgrade() else {
                return;
            };
            let attempt = async {
                ensure_offsets_topic(&b).await?;
                crate::txn_coordinator::ensure_topic(&b).await
            };
            let done = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                r = attempt => r,
            };
            drop(b);
            match done {
                Ok(()) => return,
                Err(e) => tracing::info!(error = %e, "internal topics not created yet"),
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
}

/// A data dir from before the quorum keeps its metadata in `metadata.log`; its records
/// become the quorum's first batch, and the file is renamed so this happens once.
async fn import_legacy_metadata_log(
    broker: &Arc<Broker>,
    metadata_dir: &Path,
) -> Result<(), BrokerError> {
    let legacy = metadata_dir.join("metadata.log");
    if !legacy.exists() {
        return Ok(());
    }
    let (log, image) = vltava_metadata::MetadataLog::open(&legacy)?;
    drop(log);
    let records = image.to_records();
    let count = records.len();
    broker
        .controller
        .write(move |current| {
            // Only into an empty quorum: a crash after the write but before the rename
            // must not import twice.
            if current.topics.is_empty() && current.brokers.is_empty() {
                Ok((records.clone(), ()))
            } else {
                Ok((Vec::new(), ()))
            }
        })
        .await
        .map_err(|e| BrokerError::Io {
            context: "importing metadata.log into the quorum".into(),
            source: std::io::Error::other(e.message),
        })?;
    let done = metadata_dir.join("metadata.log.imported");
    std::fs::rename(&legacy, &done).map_err(io(format!("rename {}", legacy.display())))?;
    tracing::info!(
        records = count,
        "imported the metadata log into the metadata quorum"
    );
    Ok(())
}

/// Creates an internal topic, waiting (up to the quorum's start-up limit) while too few
/// brokers have registered for its replication factor: the nodes of a cluster started
/// together register within moments of each other.
pub(crate) async fn create_internal_topic(
    broker: &Arc<Broker>,
    name: &str,
    partitions: i32,
    rf: i16,
    configs: &std::collections::BTreeMap<String, String>,
) -> Result<(), crate::controller::OpError> {
    let deadline = tokio::time::Instant::now() + QUORUM_READY_TIMEOUT;
    loop {
        match crate::handlers::topics::create_topic(
            broker, name, partitions, rf, configs, None, false,
        )
        .await
        {
            Err(e)
                if e.code == vltava_protocol::ErrorCode::InvalidReplicationFactor
                    && tokio::time::Instant::now() < deadline =>
            {
                tracing::info!(
                    topic = name,
                    rf,
                    "waiting for enough brokers to create the topic"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            r => return r.map(|_| ()),
        }
    }
}

impl Broker {
    /// An internal topic's replication factor: its setting, in combined mode at most the
    /// number of voters (every voter is a broker), so a one-node cluster needs no setting.
    pub(crate) fn internal_replication_factor(&self, key: &str) -> i16 {
        let most = if self.config.roles.controller {
            self.config.voters.len().max(1) as i64
        } else {
            i64::from(i16::MAX)
        };
        self.config.get_i64(key).clamp(1, most) as i16
    }

    /// Sends a partition leader's ISR change to the controller (Kafka's AlterPartition). The
    /// committed record reaches the partition as metadata; a refusal lets the leader try
    /// again later.
    pub(crate) fn propose_isr_change(
        self: &Arc<Self>,
        p: Arc<crate::partition::Partition>,
        change: crate::partition::IsrChange,
    ) {
        let b = Arc::clone(self);
        tokio::spawn(async move {
            let (topic_id, index, me) = (p.topic_id, p.index, b.config.node_id);
            tracing::info!(partition = ?p, from = ?change.expected, to = ?change.proposed, "changing the ISR");
            let c = change.clone();
            let r = b
                .controller
                .write(move |image| {
                    crate::controller::alter_isr_records(
                        image,
                        topic_id,
                        index,
                        me,
                        c.leader_epoch,
                        &c.expected,
                        &c.proposed,
                    )
                    .map(|records| (records, ()))
                })
                .await;
            if let Err(e) = r {
                tracing::info!(partition = ?p, error = %e.message, "ISR change refused");
                p.isr_change_failed();
            }
        });
    }

    /// On every partition this broker leads, drops from the ISR the followers that have not
    /// caught up within `replica.lag.time.max.ms`.
    fn shrink_isrs(self: &Arc<Self>) {
        let lag = self.config.get_i64("replica.lag.time.max.ms");
        let now = now_ms();
        for p in self.partitions.all() {
            if let Some(change) = p.isr_shrink(now, lag) {
                self.propose_isr_change(p, change);
            }
        }
    }
}

/// Records this broker's listeners and rack (KRaft's BrokerRegistration), with an epoch
/// one past its last registration.
async fn register_broker(broker: &Arc<Broker>) -> Result<(), crate::controller::OpError> {
    let node_id = broker.config.node_id;
    let endpoints: Vec<BrokerEndpoint> = broker
        .listeners
        .iter()
        .filter(|l| !broker.config.is_controller_listener(&l.name))
        .map(|l| BrokerEndpoint {
            name: l.name.to_string(),
            host: l.advertised.0.clone(),
            port: l.advertised.1,
            security_protocol: l.security_protocol.id(),
        })
        .collect();
    let rack = broker
        .config
        .props
        .get("broker.rack")
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    let incarnation_id = Uuid::new_v4();
    let unclean = broker.config.get_bool("unclean.leader.election.enable");
    broker
        .controller
        .write(move |image| {
            let registration = MetadataRecord::RegisterBrokerRecord {
                broker_id: node_id,
                incarnation_id,
                broker_epoch: image
                    .brokers
                    .get(&node_id)
                    .map_or(1, |b| b.broker_epoch + 1),
                endpoints: endpoints.clone(),
                rack: rack.clone(),
                fenced: false,
            };
            Ok((
                crate::controller::registration_records(image, registration, unclean),
                (),
            ))
        })
        .await
}

/// Creates `__consumer_offsets` on first start: compacted, `offsets.topic.num.partitions`.
async fn ensure_offsets_topic(broker: &Arc<Broker>) -> Result<(), BrokerError> {
    if let Some(t) = broker.controller.image().topic(OFFSETS_TOPIC) {
        let existing = t.partitions.len() as i32;
        let configured = broker.groups.partitions.swap(existing, Ordering::Relaxed);
        if configured != existing {
            tracing::warn!(
                configured,
                existing,
                "offsets.topic.num.partitions differs from the existing {OFFSETS_TOPIC}; keeping its {existing} partitions"
            );
        }
        return Ok(());
    }
    let configs: std::collections::BTreeMap<String, String> = [
        ("cleanup.policy".to_string(), "compact".to_string()),
        (
            "segment.bytes".to_string(),
            broker
                .config
                .get_i64("offsets.topic.segment.bytes")
                .max(1)
                .to_string(),
        ),
    ]
    .into();
    let rf = broker.internal_replication_factor("offsets.topic.replication.factor");
    create_internal_topic(
        broker,
        OFFSETS_TOPIC,
        broker.groups.partitions.load(Ordering::Relaxed),
        rf,
        &configs,
    )
    .await
    .or_else(|e| {
        if e.code == vltava_protocol::ErrorCode::TopicAlreadyExists {
            // Another node created it first: use its partition count.
            if let Some(t) = broker.controller.image().topic(OFFSETS_TOPIC) {
                broker
                    .groups
                    .partitions
                    .store(t.partitions.len() as i32, Ordering::Relaxed);
            }
            Ok(())
        } else {
            Err(e)
        }
    })
    .map_err(|e| BrokerError::Io {
        context: format!("creating {OFFSETS_TOPIC}"),
        source: std::io::Error::other(e.message),
    })
}

impl MetadataPublisher for Broker {
    fn publish(&self, delta: &MetadataDelta, image: &MetadataImage) -> Result<(), String> {
        let layers = self.config.layers(image, None);
        let rate = |name: &str| -> u64 {
            let def = vltava_metadata::config::broker_config_def(name).expect("known config");
            vltava_metadata::config::resolve_broker(def, layers)
                .value
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(u64::MAX)
        };
        if delta.changed_quotas {
            self.quotas
                .update(vltava_metadata::quota::QuotaTable::build(
                    &image.client_quotas,
                ));
        }
        let q = &self.replication_quotas;
        q.leader.set_rate(rate("leader.replication.throttled.rate"));
        q.follower
            .set_rate(rate("follower.replication.throttled.rate"));
        let changes = self
            .partitions
            .apply_delta(delta, image, now_ms())
            .map_err(|e| e.to_string())?;
        if !delta.created_topics.is_empty() || !delta.deleted_topics.is_empty() {
            // New partitions' log starts and recovery points are known from now on.
            self.write_checkpoints();
        }
        self.fetchers.sync();
        for change in changes {
            tracing::debug!(?change, "leadership changed");
            match change {
                LeadershipChange::Became {
                    topic,
                    partition,
                    leader_epoch,
                } if topic == OFFSETS_TOPIC => {
                    // Loads in the background; requests meanwhile get
                    // COORDINATOR_LOAD_IN_PROGRESS.
                    drop(self.groups.on_leader(partition, leader_epoch));
                }
                LeadershipChange::Resigned { topic, partition } if topic == OFFSETS_TOPIC => {
                    self.groups.on_resigned(partition);
                }
                LeadershipChange::Became {
                    topic,
                    partition,
                    leader_epoch,
                } if topic == TXN_TOPIC => {
                    drop(self.txns.on_leader(partition, leader_epoch));
                }
                LeadershipChange::Resigned { topic, partition } if topic == TXN_TOPIC => {
                    self.txns.on_resigned(partition);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Files kept for connections, checkpoints and the metadata log.
const FILES_RESERVED: u64 = 1024;
/// A partition's active segment: log, offset index, time index.
const FILES_PER_PARTITION: u64 = 3;

/// Raises the soft open-file limit to the hard one, as a broker with many partitions needs,
/// and returns the limit in force.
fn raise_open_file_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (limit.current, limit.maximum) {
        if cur < max {
            limit.current = Some(max);
            if let Err(e) = setrlimit(Resource::Nofile, limit) {
                tracing::warn!(error = %e, "could not raise the open-file limit");
            }
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Resource-name helper shared by config handlers.
pub fn resource_key(t: ResourceType, name: &str) -> (ResourceType, String) {
    (t, name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_are_22_url_safe_characters_that_never_start_with_a_dash() {
        for first in 0..=255u8 {
            let id = encode_cluster_id([first; 16]);
            assert!(is_cluster_id(&id), "{id}");
            assert!(!id.starts_with('-'), "{first:#x} gives {id}");
        }
        assert_eq!(encode_cluster_id([0; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(encode_cluster_id([0xff; 16]), "_____________________w");
    }

    /// Linux reports twice the size asked for (the kernel's bookkeeping share), so the
    /// sizes are chosen to differ from every default once doubled.
    #[tokio::test]
    async fn socket_buffer_configs_reach_accepted_sockets() {
        use rustix::net::sockopt::{socket_recv_buffer_size, socket_send_buffer_size};
        let listener = bind_listener("127.0.0.1:0", Some(40_000)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let (stream, _) = accepted.unwrap();
        tune_accepted(&stream, Some(50_000));
        assert_eq!(socket_recv_buffer_size(&stream).unwrap(), 80_000);
        assert_eq!(socket_send_buffer_size(&stream).unwrap(), 100_000);

        let listener = bind_listener("127.0.0.1:0", None).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let (stream, _) = accepted.unwrap();
        let send_before = socket_send_buffer_size(&stream).unwrap();
        tune_accepted(&stream, None);
        assert_ne!(socket_recv_buffer_size(&stream).unwrap(), 80_000);
        assert_eq!(socket_send_buffer_size(&stream).unwrap(), send_before);
        assert!(stream.nodelay().unwrap());
    }
}
