//! Shared harness of the in-process broker tests: `run_node` on `RealDisk` in a temp dir with
//! real sockets on 127.0.0.1:0 (the bound port reported back), and a raw-frame Kafka client
//! built on the `kafka-protocol` crate. Never leaves a node running once `Running::stop` returns.
#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use samsa_broker::{run_node, NodeConfig};
use samsa_net::{Hooks, Net, SystemClock, TokioNet};
use samsa_storage::RealDisk;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// `TokioNet` that reports the address it bound, so tests can use port 0.
#[derive(Clone)]
pub struct ReportingNet {
    bound: Arc<Mutex<Option<oneshot::Sender<SocketAddr>>>>,
}

impl Net for ReportingNet {
    type Stream = <TokioNet as Net>::Stream;
    type Listener = <TokioNet as Net>::Listener;

    async fn bind(&self, addr: SocketAddr) -> std::io::Result<Self::Listener> {
        TokioNet.bind(addr).await
    }
    fn local_addr(&self, listener: &Self::Listener) -> std::io::Result<SocketAddr> {
        let addr = TokioNet.local_addr(listener)?;
        if let Some(tx) = self.bound.lock().expect("lock").take() {
            let _ = tx.send(addr);
        }
        Ok(addr)
    }
    async fn accept(&self, l: &Self::Listener) -> std::io::Result<(Self::Stream, SocketAddr)> {
        TokioNet.accept(l).await
    }
    async fn connect(&self, addr: SocketAddr) -> std::io::Result<Self::Stream> {
        TokioNet.connect(addr).await
    }
}

pub struct Running {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), samsa_broker::NodeError>>,
}

/// The node config the in-process tests use: port 0, `dir` as data dir, a fixed seed.
pub fn test_config(dir: &std::path::Path) -> NodeConfig {
    NodeConfig {
        listen: "127.0.0.1:0".to_string(),
        data_dir: dir.display().to_string(),
        seed: 7,
        num_partitions: 2,
        ..NodeConfig::default()
    }
}

/// Starts `run_node` with `cfg` on `RealDisk` and real sockets; returns once it is bound.
pub async fn start_with(dir: &std::path::Path, cfg: NodeConfig) -> Running {
    let (tx, rx) = oneshot::channel();
    let net = ReportingNet {
        bound: Arc::new(Mutex::new(Some(tx))),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let disk = RealDisk::new(dir).expect("disk");
    let task = tokio::spawn(run_node(
        cfg,
        disk,
        SystemClock,
        net,
        Hooks::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let addr = rx.await.expect("node bound");
    Running { addr, stop, task }
}

impl Running {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("join").expect("clean shutdown");
    }
}

pub struct Client {
    pub stream: TcpStream,
    correlation_id: i32,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.expect("connect"),
            correlation_id: 0,
        }
    }

    pub async fn send_raw(&mut self, body: &[u8]) {
        self.stream
            .write_all(&(body.len() as u32).to_be_bytes())
            .await
            .expect("write");
        self.stream.write_all(body).await.expect("write");
        self.stream.flush().await.expect("flush");
    }

    /// Reads one frame; `None` if the broker closed the connection.
    pub async fn recv_raw(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await.ok()?;
        let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut buf).await.ok()?;
        Some(Bytes::from(buf))
    }

    pub async fn call<Req, Resp>(&mut self, key: ApiKey, version: i16, req: &Req) -> Resp
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable + HeaderVersion,
    {
        self.correlation_id += 1;
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("test")))
            .encode(&mut buf, key.request_header_version(version))
            .expect("header");
        req.encode(&mut buf, version).expect("body");
        self.send_raw(&buf).await;
        let mut frame = self.recv_raw().await.expect("response");
        let header_version = if key == ApiKey::ApiVersions {
            0
        } else {
            key.response_header_version(version)
        };
        let header = ResponseHeader::decode(&mut frame, header_version).expect("resp header");
        assert_eq!(header.correlation_id, self.correlation_id);
        Resp::decode(&mut frame, version).expect("resp body")
    }
}
