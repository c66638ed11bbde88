//! The `_schemas` topic: one reader thread applies every record, in offset order, to the
//! shared state; writers produce records and wait until the reader has applied them.
//!
//! Answering only after the read-back means an HTTP client never sees an id that a restart
//! (which rebuilds state from the topic alone) would not give back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::error::RegistryError;
use crate::records::Record;
use crate::state::RegistryState;

/// How the registry reaches its cluster.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub bootstrap_servers: String,
    /// Confluent's `kafkastore.topic`.
    pub topic: String,
    /// Extra librdkafka properties (security settings and the like) for every client.
    pub client_properties: Vec<(String, String)>,
    /// How long a write or the start-up catch-up may take.
    pub timeout: Duration,
}

impl StoreConfig {
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        StoreConfig {
            bootstrap_servers: bootstrap_servers.into(),
            topic: "_schemas".to_string(),
            client_properties: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }

    /// A librdkafka config with the bootstrap servers and the extra properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in &self.client_properties {
            c.set(k, v);
        }
        c
    }
}

pub struct Store {
    config: StoreConfig,
    producer: FutureProducer,
    state: Arc<RwLock<RegistryState>>,
    /// Offset of the next record the reader will apply.
    applied: watch::Receiver<i64>,
    /// One write at a time from this instance: plan, produce and apply happen as one step.
    write_lock: tokio::sync::Mutex<()>,
    stop: Arc<AtomicBool>,
    reader: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn store_error(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Store {
        reason: e.to_string(),
    }
}

impl Store {
    /// Creates the topic if needed, starts the reader and waits until it has applied
    /// everything the topic held at start.
    pub async fn open(config: StoreConfig) -> Result<Arc<Store>, RegistryError> {
        ensure_topic(&config).await?;
        let producer: FutureProducer = config
            .client_config()
            // Idempotence implies acks=all: a record is acknowledged only once every in-sync
            // replica has it, and a retried send is never written twice.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()
            .map_err(store_error)?;
        let consumer: BaseConsumer = config
            .client_config()
            .set("group.id", "vltava-registry-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .create()
            .map_err(store_error)?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&config.topic, 0, Offset::Beginning)
            .map_err(store_error)?;
        consumer.assign(&assignment).map_err(store_error)?;

        let state = Arc::new(RwLock::new(RegistryState::default()));
        let (applied_tx, applied) = watch::channel(0i64);
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let state = state.clone();
            let stop = stop.clone();
            let topic = config.topic.clone();
            std::thread::Builder::new()
                .name("registry-reader".into())
                .spawn(move || read_loop(consumer, &topic, &state, &applied_tx, &stop))
                .map_err(store_error)?
        };
        let store = Arc::new(Store {
            config,
            producer,
            state,
            applied,
            write_lock: tokio::sync::Mutex::new(()),
            stop,
            reader: parking_lot::Mutex::new(Some(reader)),
        });
        store.catch_up().await?;
        Ok(store)
    }

    pub fn state(&self) -> parking_lot::RwLockReadGuard<'_, RegistryState> {
        self.state.read()
    }

    /// Waits until every record in the topic right now is applied, so a plan made next
    /// sees writes from other registry instances too.
    async fn catch_up(&self) -> Result<(), RegistryError> {
        let producer = self.producer.clone();
        let topic = self.config.topic.clone();
        let timeout = self.config.timeout;
        let (_, high) = tokio::task::spawn_blocking(move || {
            producer.client().fetch_watermarks(&topic, 0, timeout)
        })
        .await
        .map_err(store_error)?
        .map_err(|e| RegistryError::Timeout {
            reason: e.to_string(),
        })?;
        self.wait_applied(high).await
    }

    async fn wait_applied(&self, next_offset: i64) -> Result<(), RegistryError> {
        let mut rx = self.applied.clone();
        let waited =
            tokio::time::timeout(self.config.timeout, rx.wait_for(|a| *a >= next_offset)).await;
        match waited.map(|r| r.map(|_| ())) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(store_error("the reader stopped")),
            Err(_) => Err(RegistryError::Timeout {
                reason: format!("offset {next_offset} was not read back"),
            }),
        }
    }

    /// Plans a write against caught-up state, produces its records in order and returns the
    /// plan's answer once they are applied.
    pub async fn write<T>(
        &self,
        plan: impl FnOnce(&RegistryState) -> Result<(T, Vec<Record>), RegistryError>,
    ) -> Result<T, RegistryError> {
        let _guard = self.write_lock.lock().await;
        self.catch_up().await?;
        let (answer, records) = {
            let state = self.state.read();
            plan(&state)?
        };
        let mut last = None;
        for record in &records {
            let (key, value) = record.encode();
            let mut out = FutureRecord::to(&self.config.topic).partition(0).key(&key);
            if let Some(v) = &value {
                out = out.payload(v);
            }
            let delivery = self
                .producer
                .send(out, self.config.timeout)
                .await
                .map_err(|(e, _)| store_error(e))?;
            last = Some(delivery.offset);
        }
        if let Some(offset) = last {
            self.wait_applied(offset + 1).await?;
        }
        Ok(answer)
    }

    /// Stops the reader thread.
    pub fn close(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.reader.lock().take() {
            let _ = handle.join();
        }
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_loop(
    consumer: BaseConsumer,
    topic: &str,
    state: &RwLock<RegistryState>,
    applied: &watch::Sender<i64>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                match Record::decode(m.key(), m.payload()) {
                    Ok(record) => state.write().apply(&record),
                    Err(e) => {
                        tracing::warn!(offset = m.offset(), error = %e, "skipping a _schemas record")
                    }
                }
                let next = m.offset() + 1;
                applied.send_if_modified(|a| {
                    let moved = next > *a;
                    *a = (*a).max(next);
                    moved
                });
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {
                // At the end: everything up to the fetch position is applied, even where
                // compaction or control records left gaps in the offsets.
                if let Ok(position) = consumer.position() {
                    if let Some(Offset::Offset(next)) =
                        position.find_partition(topic, 0).map(|p| p.offset())
                    {
                        applied.send_if_modified(|a| {
                            let moved = next > *a;
                            *a = (*a).max(next);
                            moved
                        });
                    }
                }
            }
            Some(Err(e)) => tracing::debug!(error = %e, "reading _schemas"),
        }
    }
}

/// Creates `_schemas` (one partition, compacted) if missing, as Confluent's registry does,
/// with replication up to 3 where the cluster has the brokers for it.
async fn ensure_topic(config: &StoreConfig) -> Result<(), RegistryError> {
    let admin: AdminClient<DefaultClientContext> =
        config.client_config().create().map_err(store_error)?;
    let brokers = {
        // All topics, not only ours: asking for one by name may auto-create it with the
        // broker's defaults instead of compaction.
        let metadata = admin
            .inner()
            .fetch_metadata(None, config.timeout)
            .map_err(|e| RegistryError::Timeout {
                reason: format!("cannot reach {}: {e}", config.bootstrap_servers),
            })?;
        if let Some(t) = metadata.topics().iter().find(|t| t.name() == config.topic) {
            if t.error().is_none() {
                let partitions = t.partitions().len();
                if partitions != 1 {
                    return Err(store_error(format!(
                        "topic {} has {partitions} partitions; the registry needs exactly 1",
                        config.topic
                    )));
                }
                return Ok(());
            }
        }
        metadata.brokers().len().clamp(1, 3) as i32
    };
    let topic = NewTopic::new(&config.topic, 1, TopicReplication::Fixed(brokers))
        .set("cleanup.policy", "compact");
    let results = admin
        .create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(config.timeout)),
        )
        .await
        .map_err(store_error)?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(store_error(format!("creating {name}: {code}"))),
        }
    }
    Ok(())
}
