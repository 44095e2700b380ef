//! The node shell: opens the metadata store and every partition log, binds, accepts connections
//! (bounded), runs one task pair per connection (a reader that decodes and dispatches requests
//! in order, a writer that sends responses in request order), and shuts down cleanly.
//! Never names `std::fs`/`tokio::fs`, never reads the wall clock except through `Clock`, never
//! spawns OS threads: it runs unchanged under madsim.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use samsa_net::watch;
use samsa_net::{Clock, Hooks, Net};
use samsa_storage::Disk;
use tokio::sync::{mpsc, Semaphore};
use tracing::Instrument;

use crate::broker::Broker;
use crate::cluster_mode::ClusterNode;
use crate::config::{BadConfig, NodeConfig};
use crate::handlers::{self, ConnState};
use crate::metadata::MetaError;
use crate::wire;

/// Requests one connection may have in flight (read, not yet answered). Kafka clients pipeline
/// up to 5 per connection; the reader stops reading while this many wait.
pub const IN_FLIGHT_PER_CONNECTION_MAX: usize = 32;
/// How long shutdown waits for in-flight requests before closing connections anyway.
pub const SHUTDOWN_DRAIN_MS: u64 = 5_000;

/// A response to send later, in order: `None` sends nothing (acks=0 produce).
pub type PendingReply = Pin<Box<dyn Future<Output = Option<BytesMut>> + Send>>;

#[derive(Debug)]
pub enum NodeError {
    Config(BadConfig),
    Metadata(MetaError),
    Storage(String),
    Bind(std::io::Error),
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::Config(e) => write!(f, "{e}"),
            NodeError::Metadata(e) => write!(f, "{e}"),
            NodeError::Storage(e) => write!(f, "storage: {e}"),
            NodeError::Bind(e) => write!(f, "bind: {e}"),
        }
    }
}

impl std::error::Error for NodeError {}

/// Runs one node until `shutdown` completes, then stops accepting, finishes in-flight requests,
/// flushes and syncs every partition and returns.
pub async fn run_node<D: Disk, C: Clock, N: Net>(
    cfg: NodeConfig,
    disk: D,
    clock: C,
    net: N,
    hooks: Hooks,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    cfg.validate().map_err(NodeError::Config)?;
    let span = tracing::info_span!("node", node_id = cfg.node_id);
    run_node_inner(cfg, disk, clock, net, hooks, shutdown)
        .instrument(span)
        .await
}

async fn run_node_inner<D: Disk, C: Clock, N: Net>(
    cfg: NodeConfig,
    disk: D,
    clock: C,
    net: N,
    hooks: Hooks,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    let addr = cfg.listen_addr().map_err(NodeError::Config)?;
    let listener = net.bind(addr).await.map_err(NodeError::Bind)?;
    let bound = net.local_addr(&listener).map_err(NodeError::Bind)?;
    let broker = Broker::open(cfg.clone(), disk, clock, hooks, bound).await?;
    tracing::info!("samsa listening on {bound}");
    // Plainly on stdout too: tests and scripts wait for this line to learn the port.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "samsa listening on {bound}");
        let _ = out.flush();
    }

    let stop_rx = broker.stopping.subscribe();
    let mut background = broker.spawn_background(stop_rx.clone());
    if let Some(cluster_cfg) = cfg.cluster().map_err(NodeError::Config)? {
        let cluster = ClusterNode::start(
            &cfg,
            cluster_cfg,
            broker.disk.clone(),
            net.clone(),
            broker.hooks.clone(),
        )
        .await
        .map_err(NodeError::Storage)?;
        let _ = broker.cluster.set(cluster.clone());
        background.push(broker.spawn_image_watcher(stop_rx.clone()));
        let advertised = (broker.advertised_host.clone(), broker.advertised_port);
        background.push(tokio::spawn(
            cluster
                .run(
                    broker.clock.clone(),
                    net.clone(),
                    advertised,
                    stop_rx.clone(),
                )
                .in_current_span(),
        ));
    }
    let connections = Arc::new(Semaphore::new(cfg.max_connections));
    // Connection ids grow with every accepted connection (the group coordinator tells a late
    // request on a replaced connection from a current one by them).
    let mut connection_id: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = net.accept(&listener) => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "too many connections; closing the new one");
                    drop(stream);
                    continue;
                };
                let broker = broker.clone();
                let stop = stop_rx.clone();
                let span = tracing::info_span!("conn", %peer);
                connection_id += 1;
                let id = connection_id;
                tokio::spawn(
                    async move {
                        serve_connection(broker, stream, stop, id).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
        }
    }
    tracing::info!("shutting down: no new connections");
    drop(listener);
    // Wakes connection readers and long polls (they answer with what they have).
    broker.stopping.send(true);
    // Wait (bounded) for every connection to finish its in-flight requests.
    let all = u32::try_from(cfg.max_connections).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(
        Duration::from_millis(SHUTDOWN_DRAIN_MS),
        connections.acquire_many(all),
    )
    .await;
    if drained.is_err() {
        tracing::warn!("shutdown: connections still busy after {SHUTDOWN_DRAIN_MS} ms");
    }
    for task in background {
        let _ = task.await;
    }
    if let Some(cluster) = broker.cluster.get() {
        cluster.quorum.shutdown();
    }
    broker.close().await;
    tracing::info!("shut down cleanly");
    Ok(())
}

async fn serve_connection<D: Disk, C: Clock, S>(
    broker: Arc<Broker<D, C>>,
    stream: S,
    mut stop: watch::Receiver<bool>,
    connection_id: u64,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<PendingReply>(IN_FLIGHT_PER_CONNECTION_MAX);
    let writer_task = tokio::spawn(async move {
        while let Some(pending) = rx.recv().await {
            if let Some(body) = pending.await {
                if let Err(e) = wire::write_frame(&mut writer, &body).await {
                    tracing::debug!("write failed: {e}");
                    break;
                }
            }
        }
    });
    let mut conn = ConnState::new(connection_id);
    let max = broker.cfg.socket_request_max_bytes;
    loop {
        let frame = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            frame = wire::read_frame(&mut reader, max) => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame.freeze(),
            Ok(None) => break,
            Err(e @ (wire::FrameError::TooLarge { .. } | wire::FrameError::Negative { .. })) => {
                tracing::warn!("bad frame: {e}; closing");
                break;
            }
            Err(e) => {
                tracing::debug!("read failed: {e}");
                break;
            }
        };
        match handlers::dispatch(&broker, frame, &mut conn).await {
            handlers::Reply::Now(Some(body)) => {
                if tx.send(Box::pin(async move { Some(body) })).await.is_err() {
                    break;
                }
            }
            handlers::Reply::Now(None) => {}
            handlers::Reply::Later(fut) => {
                if tx.send(fut).await.is_err() {
                    break;
                }
            }
            handlers::Reply::Close => break,
        }
    }
    drop(tx);
    // The writer sends every reply already queued, in order, then ends.
    let _ = writer_task.await;
}
