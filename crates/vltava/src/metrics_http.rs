//! The broker's metrics over HTTP, in Prometheus' text format (`GET /metrics`), for scrapers
//! and for `bench/run.sh`. Kafka serves the same figures as JMX MBeans; the names here are the
//! ones the Prometheus JMX exporter gives them.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::routing::get;
use tokio::sync::watch;
use vltava_broker::broker::Broker;

/// A running metrics endpoint.
pub struct MetricsHandle {
    pub addrs: Vec<SocketAddr>,
    stop: watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl MetricsHandle {
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        for s in self.servers {
            let _ = s.await;
        }
    }
}

/// Binds every listener (`http://HOST:PORT`) and serves `/metrics` from `broker`.
pub async fn start(listeners: &[String], broker: Arc<Broker>) -> anyhow::Result<MetricsHandle> {
    let (stop, _) = watch::channel(false);
    let mut sockets = Vec::new();
    for l in listeners {
        let addr = l
            .strip_prefix("http://")
            .map(|a| a.trim_end_matches('/'))
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .with_context(|| format!("metrics listener {l:?}: expected http://HOST:PORT"))?;
        let socket = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics listener {l}"))?;
        sockets.push(socket);
    }
    let mut addrs = Vec::new();
    let mut servers = Vec::new();
    for socket in sockets {
        addrs.push(socket.local_addr()?);
        let b = Arc::clone(&broker);
        let app = axum::Router::new().route(
            "/metrics",
            get(move || {
                let b = Arc::clone(&b);
                async move {
                    let mut text = String::new();
                    b.request_metrics.render(&mut text);
                    vltava_broker::request_metrics::render_log_flushes(
                        &b.partitions.log_flushes,
                        &mut text,
                    );
                    b.partitions.topic_metrics.render(&mut text);
                    b.partitions.replica_gauges().render(&mut text);
                    (
                        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                        text,
                    )
                }
            }),
        );
        let mut stop = stop.subscribe();
        servers.push(tokio::spawn(async move {
            let serve = axum::serve(socket, app).with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        }));
    }
    Ok(MetricsHandle {
        addrs,
        stop,
        servers,
    })
}
