//! A schema registry that speaks Confluent Schema Registry's REST API, so Confluent's
//! serializers and clients work unchanged.
//!
//! It is a Kafka client: its state lives in the compacted `_schemas` topic in Confluent's
//! record layout, and it runs against any Kafka-compatible cluster. `state` is the pure
//! core (records in, state out; requests planned into records), `formats` parses schemas
//! and decides compatibility, `store` reads and writes the topic, `http` serves the API.

pub mod error;
pub mod formats;
pub mod http;
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
}

/// A running registry.
pub struct RegistryHandle {
    addrs: Vec<SocketAddr>,
    store: Arc<store::Store>,
    shutdown: tokio::sync::watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl RegistryHandle {
    /// The bound addresses, in the order of `listeners`.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops accepting, lets in-flight requests finish, and stops reading the topic.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for s in self.servers {
            let _ = s.await;
        }
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
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
    let store = store::Store::open(config.store).await?;
    let (shutdown, stop) = tokio::sync::watch::channel(false);
    let mut addrs = Vec::new();
    let mut servers = Vec::new();
    for socket in listeners {
        addrs.push(socket.local_addr().map_err(|source| StartError::Bind {
            listener: "bound socket".to_string(),
            source,
        })?);
        let app = http::router(store.clone());
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
        shutdown,
        servers,
    })
}
