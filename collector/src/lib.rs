//! aitrail collector: HTTPS ingest from agents, an embedded store, a JSON
//! query API, and retention. `aitrail collector --config collector.toml`
//! runs it; tests start it in-process with [`Collector::start_in_thread`].
//!
//! - [`server`]: TLS, auth (token per agent, or mTLS), limits, ingest;
//! - [`ingest`]: bounded zstd decompression, NDJSON parsing;
//! - [`store`]: `SQLite` + FTS5 in one directory; dedupe by event `id`; an
//!   ingest is acked only after its transaction is durable;
//! - [`api`]: `/api/search`, `/api/trace/ID`;
//! - [`metrics`]: `/metrics` (Prometheus), for a `[metrics]` token.
//! - [`forward`]: forwarders to SIEMs and search engines (Splunk HEC,
//!   Elasticsearch/OpenSearch bulk, NDJSON over HTTPS; native, OCSF or
//!   ECS), each reading the store from its own durable cursor.

pub mod api;
pub mod auth;
pub mod config;
pub mod forward;
pub mod ingest;
pub mod metrics;
pub mod server;
pub mod store;
pub mod tls;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};

use crate::server::State;
pub use crate::{config::Config, store::Store};

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the collector's runtime")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Forward(#[from] forward::ForwardConfigError),
}

/// A collector bound to its address, ready to run.
pub struct Collector {
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
    /// Each forwarder's cursor as the store had it at bind.
    cursors: Vec<store::forward::CursorState>,
}

impl Collector {
    /// Opens the store, loads the TLS material and binds the listener.
    pub async fn bind(cfg: Config) -> Result<Self, CollectorError> {
        let tls = tls::server_config(&cfg.tls_cert, &cfg.tls_key, cfg.client_ca.as_deref())?;
        let store = Arc::new(Store::open(&cfg.store_dir)?);
        let forwarders = forward::build_all(&cfg.forward)?;
        let registrations: Vec<_> = cfg
            .forward
            .iter()
            .map(forward::ForwardSpec::registration)
            .collect();
        let cursors = store.forward_register(&registrations)?;
        let listener =
            TcpListener::bind(cfg.listen)
                .await
                .map_err(|source| CollectorError::Bind {
                    addr: cfg.listen,
                    source,
                })?;
        let counters = Arc::new(server::Counters::default());
        let requests = Arc::new(metrics::Requests::default());
        let metrics = Arc::new(metrics::CollectorMetrics::new(
            Arc::clone(&counters),
            Arc::clone(&requests),
        ));
        let state = Arc::new(State {
            rate: auth::RateLimiter::new(cfg.limits.rate_per_sec, cfg.limits.rate_burst),
            store,
            cfg,
            counters,
            requests,
            registry: metrics.registry(),
            metrics,
            forwarders,
            stored: tokio::sync::watch::Sender::new(0),
        });
        for f in &state.forwarders {
            state
                .metrics
                .register_forwarder(Arc::clone(f) as Arc<dyn metrics::ForwarderMetrics>);
        }
        Ok(Self {
            listener,
            acceptor: tokio_rustls::TlsAcceptor::from(tls),
            state,
            cursors,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.state.cfg.listen)
    }

    pub fn store(&self) -> Arc<Store> {
        Arc::clone(&self.state.store)
    }

    pub fn counters(&self) -> Arc<State> {
        Arc::clone(&self.state)
    }

    /// What `/metrics` shows; forwarders add their counters here
    /// ([`metrics::CollectorMetrics::register_forwarder`]).
    pub fn metrics(&self) -> Arc<metrics::CollectorMetrics> {
        Arc::clone(&self.state.metrics)
    }

    /// Serves until `shutdown` completes; runs retention periodically.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Self {
            listener,
            acceptor,
            state,
            cursors,
        } = self;
        let retention = tokio::spawn(retention_loop(Arc::clone(&state)));
        let forwarders = Forwarders::start(&state, cursors);
        let slots = Arc::new(Semaphore::new(state.cfg.limits.max_connections as usize));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tracing::info!(addr = %listener.local_addr().map_or(state.cfg.listen, |a| a), "collector listening");
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        // EMFILE and the like: wait a little, don't spin.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                state
                    .counters
                    .connections_refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(%peer, "connection refused: max_connections reached");
                continue;
            };
            state
                .counters
                .connections_accepted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let acceptor = acceptor.clone();
            let state = Arc::clone(&state);
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let tls =
                    match tokio::time::timeout(server::HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                        .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(error)) => {
                            state
                                .counters
                                .tls_failures
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            state
                                .counters
                                .tls_timeouts
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                let cert: Option<Arc<str>> = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| tls::cert_name(c).into());
                let service = hyper::service::service_fn(move |req| {
                    server::handle(Arc::clone(&state), cert.clone(), peer, req)
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .serve_connection(TokioIo::new(tls), service);
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => if let Err(error) = r {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    },
                    _ = stop.changed() => {
                        // Finish the request in flight, then close.
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                    }
                }
            });
        }
        let _ = stop_tx.send(true);
        retention.abort();
        forwarders.stop(&state).await;
        tracing::info!("collector stopped");
    }

    /// Runs the collector on its own thread (a multi-threaded runtime with
    /// two workers); for tests and `aitrail run`.
    pub fn start_in_thread(cfg: Config) -> Result<Running, CollectorError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(CollectorError::Runtime)?;
        let collector = rt.block_on(Self::bind(cfg))?;
        let addr = collector.local_addr();
        let state = collector.counters();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("collector".into())
            .spawn(move || {
                rt.block_on(collector.run(async {
                    let _ = rx.await;
                }));
            })
            .map_err(CollectorError::Runtime)?;
        Ok(Running {
            addr,
            state,
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

/// The forwarders' tasks.
struct Forwarders {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Forwarders {
    fn start(state: &Arc<State>, cursors: Vec<store::forward::CursorState>) -> Self {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let tasks = state
            .forwarders
            .iter()
            .zip(cursors)
            .map(|(f, start)| {
                tokio::spawn(forward::runner::run(
                    Arc::clone(f),
                    start,
                    forward::runner::Context {
                        store: Arc::clone(&state.store),
                        wake: state.stored.subscribe(),
                        stop: stop_rx.clone(),
                    },
                ))
            })
            .collect();
        Self { tasks, stop }
    }

    /// Each forwarder finishes the attempt in flight (bounded by its
    /// timeout) and commits its cursor.
    async fn stop(self, state: &State) {
        let _ = self.stop.send(true);
        let grace = state
            .cfg
            .forward
            .iter()
            .map(|f| f.timeout)
            .max()
            .unwrap_or_default()
            + Duration::from_secs(2);
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(grace, task).await.is_err() {
                abort.abort();
                tracing::warn!("a forwarder did not stop in time; its batch in flight is sent again at the next start");
            }
        }
    }
}

async fn retention_loop(state: Arc<State>) {
    let Some(keep) = state.cfg.retention else {
        return;
    };
    let mut tick = tokio::time::interval(state.cfg.retention_interval);
    loop {
        tick.tick().await;
        let cutoff = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
            - i64::try_from(keep.as_nanos()).unwrap_or(i64::MAX);
        let store = Arc::clone(&state.store);
        match tokio::task::spawn_blocking(move || store.apply_retention(cutoff)).await {
            Ok(Ok(n)) if n > 0 => {
                state
                    .counters
                    .retention_deleted
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(deleted = n, "retention: old events deleted");
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(%error, "retention failed"),
            Err(_) => tracing::error!("retention task panicked"),
        }
    }
}

/// A collector running on its own thread; stopped on drop.
pub struct Running {
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    pub fn counters(&self) -> &server::Counters {
        &self.state.counters
    }

    /// The forwarders, with their counters.
    pub fn forwarders(&self) -> &[Arc<forward::Forwarder>] {
        &self.state.forwarders
    }

    /// Stops accepting, lets requests in flight finish, and joins.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}
