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
use crate::controller::Controller;
use crate::group_coordinator::{GroupCoordinator, OFFSETS_TOPIC};
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

/// State shared by every connection and background task.
pub struct Broker {
    pub config: BrokerConfig,
    pub cluster_id: String,
    pub controller: Controller,
    pub partitions: PartitionTable,
    pub groups: GroupCoordinator,
    /// Host and port given to clients in Metadata.
    pub advertised: (String, u16),
    /// Set once the broker stops accepting; waiting fetches watch it to answer at once.
    pub(crate) shutting_down: watch::Sender<bool>,
    /// Keeps an exclusive lock on the data dir for the broker's life.
    _lock: std::fs::File,
}

/// A running broker: its address and a way to stop it.
pub struct BrokerHandle {
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
    let listener = TcpListener::bind(&config.listener)
        .await
        .map_err(io(format!("bind {}", config.listener)))?;
    let local_addr = listener.local_addr().map_err(io("local addr"))?;
    let advertised = match &config.advertised {
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
    let broker = Arc::new(Broker {
        groups: GroupCoordinator::new(&config),
        config,
        cluster_id,
        controller,
        partitions: PartitionTable::default(),
        advertised,
        shutting_down: watch::Sender::new(false),
        _lock: lock,
    });
    let image = broker.controller.image();
    broker.reconcile_with(&MetadataImage::default(), &image, true)?;
    ensure_offsets_topic(&broker)?;
    broker.groups.load(&broker);
    // From here on, a crash is an unclean shutdown.
    let _ = std::fs::remove_file(dir.join(CLEAN_SHUTDOWN_FILE));
    broker.write_checkpoints();
    tracing::info!(addr = %local_addr, cluster_id = %broker.cluster_id, topics = image.topics.len(), "broker started");

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(run(Arc::clone(&broker), listener, shutdown_rx));
    Ok(BrokerHandle {
        local_addr,
        broker,
        shutdown: shutdown_tx,
        task,
    })
}

async fn run(broker: Arc<Broker>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let connections = crate::network::ConnectionTracker::new(broker.config.max_connections());
    let retention_every = Duration::from_millis(broker.config.retention_check_interval_ms());
    let mut retention = tokio::time::interval_at(
        tokio::time::Instant::now() + retention_every,
        retention_every,
    );
    let mut periodic_flush = tokio::time::interval(Duration::from_millis(250));
    let mut last_flush: std::collections::HashMap<(String, i32), i64> = Default::default();
    let mut group_tick = tokio::time::interval(Duration::from_millis(100));
    let offsets_every = Duration::from_millis(
        broker
            .config
            .get_i64("offsets.retention.check.interval.ms")
            .max(1) as u64,
    );
    let mut offsets_expiry =
        tokio::time::interval_at(tokio::time::Instant::now() + offsets_every, offsets_every);
    let mut retention_run: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => connections.spawn(Arc::clone(&broker), stream, peer, shutdown.clone()),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = group_tick.tick() => broker.groups.tick(&broker),
            _ = offsets_expiry.tick() => {
                broker.groups.expire_offsets(&broker);
                broker.groups.trim_offsets_log(&broker);
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
    broker.shutting_down.send_replace(true);
    drop(listener);
    connections.drain(Duration::from_secs(10)).await;
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

/// Resource-name helper shared by config handlers.
pub fn resource_key(t: ResourceType, name: &str) -> (ResourceType, String) {
    (t, name.to_string())
}
