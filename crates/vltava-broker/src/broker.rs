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
use vltava_metadata::{MetadataImage, ResourceType};
use vltava_storage::{checkpoint, Log, OpenOptions};

use crate::config::{topic_settings, BrokerConfig, TopicSettings};
use crate::context::{AclOperation, AllowAll, Authorizer, RequestContext, Resource};
use crate::controller::Controller;
use crate::group_coordinator::{GroupCoordinator, OFFSETS_TOPIC};
use crate::memory_pool::MemoryPool;
use crate::network::BoundListener;
use crate::partition::{Partition, PartitionTable};

const CLEAN_SHUTDOWN_FILE: &str = ".vltava_cleanshutdown";
const RECOVERY_CHECKPOINT: &str = "recovery-point-offset-checkpoint";
const LOG_START_CHECKPOINT: &str = "log-start-offset-checkpoint";

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
    pub controller: Controller,
    pub partitions: PartitionTable,
    pub groups: GroupCoordinator,
    /// Every listener, bound; Metadata tells each client the address of the listener it
    /// came through.
    pub listeners: Vec<BoundListener>,
    pub authorizer: Arc<dyn Authorizer>,
    /// Request bytes in memory, received or queued (`queued.max.request.bytes`).
    pub memory: Arc<MemoryPool>,
    /// Set once the broker stops accepting; waiting fetches watch it to answer at once.
    pub(crate) shutting_down: watch::Sender<bool>,
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

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BrokerError {
    let context = context.into();
    move |source| BrokerError::Io { context, source }
}

fn read_or_create_cluster_id(dir: &Path, node_id: i32) -> Result<String, BrokerError> {
    let path = dir.join("meta.properties");
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Some(id) = text.lines().find_map(|l| l.strip_prefix("cluster.id=")) {
            return Ok(id.trim().to_string());
        }
    }
    // Kafka cluster ids are 16 random bytes in URL-safe base64 without padding.
    let bytes = Uuid::new_v4().into_bytes();
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut id = String::new();
    let mut bits = 0u32;
    let mut nbits = 0;
    for b in bytes {
        bits = (bits << 8) | u32::from(b);
        nbits += 8;
        while nbits >= 6 {
            nbits -= 6;
            id.push(ALPHABET[((bits >> nbits) & 63) as usize] as char);
        }
    }
    if nbits > 0 {
        id.push(ALPHABET[((bits << (6 - nbits)) & 63) as usize] as char);
    }
    let text = format!("version=1\ncluster.id={id}\nnode.id={node_id}\n");
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

    /// Effective settings of a topic from its overrides and the broker layers.
    pub fn topic_settings(&self, image: &MetadataImage, topic: &str) -> TopicSettings {
        topic_settings(self.config_layers(image, Some(topic)))
    }

    pub fn config_layers<'a>(
        &'a self,
        image: &'a MetadataImage,
        topic: Option<&str>,
    ) -> ConfigLayers<'a> {
        ConfigLayers {
            topic: topic.and_then(|t| image.topic_configs(t)),
            dynamic_broker: image.broker_configs(&self.config.node_id.to_string()),
            dynamic_default: image.broker_configs(""),
            static_broker: Some(&self.config.props),
        }
    }

    fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.config
            .data_dir
            .join(vltava_storage::partition_dir_name(topic, partition))
    }

    /// Brings the partition table in line with a new metadata image: opens logs of new
    /// partitions, deletes logs of removed topics, applies changed configs.
    pub fn reconcile(&self, old: &MetadataImage, new: &MetadataImage) -> Result<(), BrokerError> {
        self.reconcile_with(old, new, false)
    }

    fn reconcile_with(
        &self,
        old: &MetadataImage,
        new: &MetadataImage,
        startup: bool,
    ) -> Result<(), BrokerError> {
        let clean = startup && self.config.data_dir.join(CLEAN_SHUTDOWN_FILE).exists();
        let recovery = if startup {
            checkpoint::read(&self.config.data_dir.join(RECOVERY_CHECKPOINT))?
        } else {
            Default::default()
        };
        let starts = if startup {
            checkpoint::read(&self.config.data_dir.join(LOG_START_CHECKPOINT))?
        } else {
            Default::default()
        };
        for (name, t) in &old.topics {
            if new.topic_by_id(&t.topic_id).is_none() {
                for p in self.partitions.remove_topic(name) {
                    let dir = p.log.dir().to_path_buf();
                    drop(p);
                    let target = dir.with_file_name(format!(
                        "{}.{}-delete",
                        dir.file_name()
                            .map(|n| n.to_string_lossy().to_string())
                            .unwrap_or_default(),
                        Uuid::new_v4().simple()
                    ));
                    if std::fs::rename(&dir, &target).is_ok() {
                        std::thread::spawn(move || {
                            let _ = std::fs::remove_dir_all(&target);
                        });
                    }
                }
            }
        }
        for (name, t) in &new.topics {
            let settings = self.topic_settings(new, name);
            let existing = self.partitions.topic(name);
            for p in &existing {
                if p.settings() != settings {
                    p.set_settings(settings.clone());
                }
            }
            for (&index, part) in t.partitions.range(existing.len() as i32..) {
                let key = (name.clone(), index);
                let opts = OpenOptions {
                    clean_shutdown: clean,
                    recovery_point: recovery.get(&key).copied().unwrap_or(0),
                    log_start_offset: starts.get(&key).copied().unwrap_or(0),
                };
                let log = Log::open(
                    &self.partition_dir(name, index),
                    settings.log.clone(),
                    opts,
                    now_ms(),
                )?;
                let p = Partition::new(
                    Arc::from(name.as_str()),
                    index,
                    t.topic_id,
                    part.leader_epoch,
                    part.isr.clone(),
                    log,
                    settings.clone(),
                );
                self.partitions.insert(p);
            }
        }
        Ok(())
    }

    fn write_checkpoints(&self) {
        let mut recovery = checkpoint::Checkpoint::new();
        let mut starts = checkpoint::Checkpoint::new();
        for p in self.partitions.all() {
            let o = p.log.offsets();
            recovery.insert((p.topic.to_string(), p.index), o.flushed_offset);
            starts.insert((p.topic.to_string(), p.index), o.log_start_offset);
        }
        for (name, cp) in [
            (RECOVERY_CHECKPOINT, &recovery),
            (LOG_START_CHECKPOINT, &starts),
        ] {
            if let Err(e) = checkpoint::write(&self.config.data_dir.join(name), cp) {
                tracing::warn!(error = %e, "could not write checkpoint");
            }
        }
    }

    /// Retention and log-start persistence, run every `log.retention.check.interval.ms`.
    pub fn run_retention(&self) {
        let now = now_ms();
        for p in self.partitions.all() {
            if let Err(e) = p.log.enforce_retention(now) {
                tracing::warn!(partition = ?p, error = %e, "retention failed");
            }
        }
        self.write_checkpoints();
    }

    /// Persists the log start offset after DeleteRecords so a restart keeps it.
    pub fn persist_log_starts(&self) {
        self.write_checkpoints();
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutting_down.borrow()
    }
}

/// Opens the data dir, replays metadata, opens every log, binds the listener and starts
/// serving. Returns once the broker accepts connections.
pub async fn start(config: BrokerConfig) -> Result<BrokerHandle, BrokerError> {
    start_with(config, Arc::new(AllowAll)).await
}

/// [`start`] with an authorizer other than allow-all.
pub async fn start_with(
    config: BrokerConfig,
    authorizer: Arc<dyn Authorizer>,
) -> Result<BrokerHandle, BrokerError> {
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
    let cluster_id = read_or_create_cluster_id(&dir, config.node_id)?;
    let controller = Controller::open(
        &dir.join("__cluster_metadata").join("metadata.log"),
        config.node_id,
    )?;
    let mut bound = Vec::new();
    let mut sockets = Vec::new();
    for l in &config.listeners {
        let socket = TcpListener::bind(&l.bind)
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
        });
        sockets.push(socket);
    }
    let local_addr = bound[0].local_addr;
    let broker = Arc::new_cyclic(|me| Broker {
        groups: GroupCoordinator::new(&config, me.clone()),
        memory: MemoryPool::new(config.queued_max_request_bytes()),
        config,
        cluster_id,
        controller,
        partitions: PartitionTable::default(),
        listeners: bound,
        authorizer,
        shutting_down: watch::Sender::new(false),
        open_file_limit: raise_open_file_limit(),
        _lock: lock,
    });
    let image = broker.controller.image();
    broker.reconcile_with(&MetadataImage::default(), &image, true)?;
    ensure_offsets_topic(&broker)?;
    // Every local partition of __consumer_offsets is led here (one broker, epoch from its
    // metadata): load their groups before accepting, so a restarted broker answers at once.
    let loads: Vec<_> = broker
        .partitions
        .topic(OFFSETS_TOPIC)
        .iter()
        .map(|p| broker.groups.on_leader(p.index, p.leader_epoch))
        .collect();
    futures::future::join_all(loads).await;
    // From here on, a crash is an unclean shutdown.
    let _ = std::fs::remove_file(dir.join(CLEAN_SHUTDOWN_FILE));
    broker.write_checkpoints();
    tracing::info!(addr = %local_addr, cluster_id = %broker.cluster_id, topics = image.topics.len(), "broker started");

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(run(Arc::clone(&broker), sockets, shutdown_rx));
    Ok(BrokerHandle {
        local_addr,
        broker,
        shutdown: shutdown_tx,
        task,
    })
}

async fn run(broker: Arc<Broker>, sockets: Vec<TcpListener>, mut shutdown: watch::Receiver<bool>) {
    let connections = Arc::new(crate::network::ConnectionTracker::new(
        broker.config.max_connections(),
        Arc::clone(&broker.memory),
    ));
    let mut acceptors = tokio::task::JoinSet::new();
    for (socket, listener) in sockets.into_iter().zip(broker.listeners.clone()) {
        let (broker, connections, mut shutdown) = (
            Arc::clone(&broker),
            Arc::clone(&connections),
            shutdown.clone(),
        );
        acceptors.spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.changed() => break,
                    accepted = socket.accept() => match accepted {
                        Ok((stream, peer)) => {
                            let _ = stream.set_nodelay(true);
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
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
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
    broker.shutting_down.send_replace(true);
    // Acceptors watch the same signal; once they end no listener socket is open.
    while acceptors.join_next().await.is_some() {}
    connections.drain(Duration::from_secs(10)).await;
    // No coordinator timer may write once the logs close.
    for p in broker.partitions.topic(OFFSETS_TOPIC) {
        broker.groups.on_resigned(p.index);
    }
    if let Some(run) = retention_run {
        let _ = run.await;
    }
    let b = Arc::clone(&broker);
    let _ = tokio::task::spawn_blocking(move || {
        let mut ok = true;
        for p in b.partitions.all() {
            if let Err(e) = p.log.close() {
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

/// Creates `__consumer_offsets` on first start: compacted, `offsets.topic.num.partitions`.
fn ensure_offsets_topic(broker: &Broker) -> Result<(), BrokerError> {
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
        ("segment.bytes".to_string(), "104857600".to_string()),
    ]
    .into();
    crate::handlers::topics::create_topic(
        broker,
        OFFSETS_TOPIC,
        broker.groups.partitions.load(Ordering::Relaxed),
        1,
        &configs,
        false,
    )
    .map(|_| ())
    .map_err(|e| BrokerError::Io {
        context: format!("creating {OFFSETS_TOPIC}"),
        source: std::io::Error::other(e.message),
    })
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
