//! Live partitions: each wraps a storage [`Log`] with what the network side needs — a
//! wake-up for long-polling fetches and a group-commit flusher for acks=all.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::{watch, Notify};
use uuid::Uuid;
use vltava_storage::{Log, StorageError};

use crate::config::TopicSettings;

/// What the flusher has made durable, or that it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durable {
    pub offset: i64,
    pub failed: bool,
}

pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    pub topic_id: Uuid,
    pub leader_epoch: i32,
    /// In-sync replicas, from the partition's metadata record.
    pub isr: Vec<i32>,
    pub log: Arc<Log>,
    /// Log end offset after each append: long-polling fetches wait on it.
    appended: watch::Sender<i64>,
    durable: watch::Sender<Durable>,
    flush_request: Arc<Notify>,
    settings: Mutex<TopicSettings>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.index)
    }
}

impl Partition {
    pub fn new(
        topic: Arc<str>,
        index: i32,
        topic_id: Uuid,
        leader_epoch: i32,
        isr: Vec<i32>,
        log: Log,
        settings: TopicSettings,
    ) -> Arc<Self> {
        let offsets = log.offsets();
        let (appended, _) = watch::channel(offsets.log_end_offset);
        let (durable, _) = watch::channel(Durable {
            offset: offsets.flushed_offset,
            failed: false,
        });
        let p = Arc::new(Self {
            topic,
            index,
            topic_id,
            leader_epoch,
            isr,
            log: Arc::new(log),
            appended,
            durable,
            flush_request: Arc::new(Notify::new()),
            settings: Mutex::new(settings),
        });
        tokio::spawn(Self::flusher(Arc::downgrade(&p)));
        p
    }

    pub fn settings(&self) -> TopicSettings {
        self.settings.lock().clone()
    }

    pub fn set_settings(&self, s: TopicSettings) {
        self.log.set_config(s.log.clone());
        *self.settings.lock() = s;
    }

    /// One fsync covers every append that happened before it started: producers waiting for
    /// durability pile up on `durable` while an fsync runs, and the next one covers them all.
    async fn flusher(me: std::sync::Weak<Self>) {
        let Some(p) = me.upgrade() else { return };
        let (request, log, durable) = (
            Arc::clone(&p.flush_request),
            Arc::clone(&p.log),
            p.durable.clone(),
        );
        drop(p);
        loop {
            tokio::select! {
                () = request.notified() => {}
                // Wake now and then so the task ends once the partition is gone.
                () = tokio::time::sleep(Duration::from_secs(5)) => {
                    if me.strong_count() == 0 { return; }
                    continue;
                }
            }
            let log = Arc::clone(&log);
            match tokio::task::spawn_blocking(move || log.flush()).await {
                Ok(Ok(offset)) => {
                    durable.send_modify(|d| d.offset = d.offset.max(offset));
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "flush failed");
                    durable.send_modify(|d| d.failed = true);
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "flush task panicked");
                    durable.send_modify(|d| d.failed = true);
                    return;
                }
            }
        }
    }

    /// Called after an append that reached `end_offset`.
    pub fn notify_appended(&self, end_offset: i64) {
        self.appended.send_replace(end_offset);
    }

    pub fn subscribe_appends(&self) -> watch::Receiver<i64> {
        self.appended.subscribe()
    }

    /// Waits until everything below `end_offset` is on stable storage.
    pub async fn wait_durable(&self, end_offset: i64) -> Result<(), StorageError> {
        let mut rx = self.durable.subscribe();
        if rx.borrow().offset >= end_offset {
            return Ok(());
        }
        self.flush_request.notify_one();
        let ok =
            matches!(rx.wait_for(|d| d.offset >= end_offset || d.failed).await, Ok(d) if !d.failed);
        if ok {
            Ok(())
        } else {
            Err(StorageError::Poisoned {
                dir: self.log.dir().to_path_buf(),
            })
        }
    }

    /// Asks for a background flush without waiting (periodic `flush.ms`).
    pub fn request_flush(&self) {
        self.flush_request.notify_one();
    }
}

/// All partitions this broker hosts, by topic name.
#[derive(Default)]
pub struct PartitionTable {
    topics: RwLock<HashMap<String, Vec<Arc<Partition>>>>,
}

impl PartitionTable {
    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        let topics = self.topics.read();
        let parts = topics.get(topic)?;
        usize::try_from(partition)
            .ok()
            .and_then(|i| parts.get(i))
            .cloned()
    }

    pub fn topic(&self, topic: &str) -> Vec<Arc<Partition>> {
        self.topics.read().get(topic).cloned().unwrap_or_default()
    }

    pub fn insert(&self, p: Arc<Partition>) {
        let mut topics = self.topics.write();
        let parts = topics.entry(p.topic.to_string()).or_default();
        let i = p.index as usize;
        assert_eq!(i, parts.len(), "partitions are added in order");
        parts.push(p);
    }

    pub fn remove_topic(&self, topic: &str) -> Vec<Arc<Partition>> {
        self.topics.write().remove(topic).unwrap_or_default()
    }

    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.topics.read().values().flatten().cloned().collect()
    }
}
