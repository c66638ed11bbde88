//! A schema registry that speaks Confluent Schema Registry's REST API, so Confluent's
//! serializers and clients work unchanged.
//!
//! It is a Kafka client: its state lives in the compacted `_schemas` topic in Confluent's
//! record layout, and it runs against any Kafka-compatible cluster. `state` is the pure
//! core (records in, state out; requests planned into records), `formats` parses schemas
//! and decides compatibility, `store` reads and writes the topic, `http` serves the API.

pub mod avro_codec;
pub mod election;
pub mod error;
pub mod formats;
pub mod http;
pub mod http_client;
pub mod json_codec;
pub mod protobuf_codec;
pub mod records;
pub mod state;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

pub use error::RegistryError;
pub use state::RegistryState;
pub use store::StoreConfig;

/// What `start` needs: where the cluster is and where to listen.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub store: StoreConfig,
    /// `http://host:port` listeners (Confluent's `listeners`); port 0 picks a free port.
    pub listeners: Vec<String>,
    /// The URL other instances forward writes to; by default the first listener's bound
    /// address (with 127.0.0.1 for an unspecified host).
    pub advertised_url: Option<String>,
    /// The consumer group instances elect their leader in (Confluent's
    /// `schema.registry.group.id`).
    pub group_id: String,
}

impl RegistryConfig {
    pub fn new(store: StoreConfig, listeners: Vec<String>) -> Self {
        RegistryConfig {
            store,
            listeners,
            advertised_url: None,
            group_id: "schema-registry".to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("listener {listener} is not http://host:port")]
    BadListener { listener: String },
    #[error("cannot listen on {listener}: {source}")]
    Bind {
        listener: String,
        source: std::io::Error,
    },
    #[error("cannot open the schemas topic: {0}")]
    Store(#[from] RegistryError),
    #[error("cannot join the leader election: {0}")]
    Election(#[from] rdkafka::error::KafkaError),
    #[error("no registry instance became leader within {timeout_ms} ms")]
    NoLeader { timeout_ms: u128 },
}

/// A running registry.
pub struct RegistryHandle {
    addrs: Vec<SocketAddr>,
    store: Arc<store::Store>,
    election: Arc<election::Election>,
    shutdown: tokio::sync::watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl RegistryHandle {
    /// The bound addresses, in the order of `listeners`.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Whether this instance currently leads (takes the writes).
    pub fn is_leader(&self) -> bool {
        self.election.leadership.is_leader()
    }

    /// Stops accepting, lets in-flight requests finish, leaves the election (another
    /// instance takes over) and stops reading the topic.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for s in self.servers {
            let _ = s.await;
        }
        let store = self.store.clone();
        let election = self.election.clone();
        let _ = tokio::task::spawn_blocking(move || {
            election.leave();
            store.close();
        })
        .await;
    }
}

fn listener_addr(listener: &str) -> Result<String, StartError> {
    let bad = || StartError::BadListener {
        listener: listener.to_string(),
    };
    let rest = listener.strip_prefix("http://").ok_or_else(bad)?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || !rest.contains(':') {
        return Err(bad());
    }
    Ok(rest.to_string())
}

/// Waits until this instance leads or another one is known to, so the first writes after
/// start do not fail for want of a leader.
async fn wait_for_a_leader(
    election: &Arc<election::Election>,
    timeout: std::time::Duration,
) -> Result<(), StartError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if election.leadership.is_leader() {
            return Ok(());
        }
        let e = election.clone();
        let found = tokio::task::spawn_blocking(move || {
            e.leader_url(std::time::Duration::from_secs(2)).is_some()
        })
        .await
        .unwrap_or(false);
        if found {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StartError::NoLeader {
                timeout_ms: timeout.as_millis(),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Catches up with `_schemas` (creating it if needed), then serves the API.
pub async fn start(config: RegistryConfig) -> Result<RegistryHandle, StartError> {
    let mut listeners = Vec::new();
    for l in &config.listeners {
        let addr = listener_addr(l)?;
        let socket = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| StartError::Bind {
                listener: l.clone(),
                source,
            })?;
        listeners.push(socket);
    }
    let mut addrs = Vec::new();
    for socket in &listeners {
        addrs.push(socket.local_addr().map_err(|source| StartError::Bind {
            listener: "bound socket".to_string(),
            source,
        })?);
    }
    let my_url = config.advertised_url.clone().unwrap_or_else(|| {
        let mut a = addrs[0];
        if a.ip().is_unspecified() {
            a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{a}")
    });
    let timeout = config.store.timeout;
    let store = store::Store::open(config.store.clone()).await?;
    let election = Arc::new(election::Election::join(
        config.store.client_config(),
        &config.group_id,
        &config.store.topic,
        &my_url,
    )?);
    wait_for_a_leader(&election, timeout).await?;
    let (shutdown, stop) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    for socket in listeners {
        let app = http::router(store.clone(), election.clone(), timeout);
        let mut stop = stop.clone();
        servers.push(tokio::spawn(async move {
            let serve = axum::serve(socket, app).with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "registry listener failed");
            }
        }));
    }
    tracing::info!(listeners = ?addrs, "schema registry serving");
    Ok(RegistryHandle {
        addrs,
        store,
        election,
        shutdown,
        servers,
    })
}
