//! The chaos network: `ChaosNet` wraps any `Net` (in the simulator, `TokioNet` on madsim's
//! sockets) and its streams, adding what madsim's TCP never does: short reads, short writes
//! (the caller's `write_all` loop sends the rest), connects refused, and a connection reset just
//! after a flush (the request went out and may be applied; the reply is lost: the client sees an
//! ambiguous failure). Partitions, clogging, loss and latency come from madsim's `NetSim` and are
//! driven by the nemesis. Duplicates make no sense inside one TCP stream; "delayed duplicates"
//! are modelled at the client level instead, as a retry after an ambiguous failure (the reset).
//! A `PortCut` (shared by the nodes that opt in, each `ChaosNet` knowing its own IP) cuts one
//! node's traffic on one server port, both ways, while its other traffic flows: a connect
//! from or to a cut (node IP, port) endpoint hangs, then times out, as across a partition, and
//! every open stream of such an endpoint breaks at its next read, write or flush on either side
//! (the replication scenario's controller-only cut).
//! Never invents or reorders bytes within a connection.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use samsa_net::Net;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::coverage::Coverage;
use crate::trace::lock;

/// Largest short read, in bytes (a stack buffer of this size carries it).
pub const SHORT_READ_BYTES_MAX: usize = 4096;
/// Endpoints one `PortCut` may hold at once.
pub const PORT_CUT_ENDPOINTS_MAX: usize = 16;
/// How long a connect across a cut hangs before it times out (callers' own timeouts are
/// usually shorter and fire first).
pub const PORT_CUT_CONNECT_MS: u64 = 2_000;

/// Cut (node IP, server port) endpoints, shared by every `ChaosNet` made `with_port_cut` and
/// every stream they make. Empty: nothing is cut. Deterministic: no randomness, only what the
/// nemesis sets.
#[derive(Clone, Debug)]
pub struct PortCut {
    state: Arc<Mutex<PortCutState>>,
}

#[derive(Debug)]
struct PortCutState {
    endpoints: BTreeSet<(IpAddr, u16)>,
    connect_wait_ms: u64,
    refused: u64,
    broken: u64,
}

impl Default for PortCut {
    fn default() -> Self {
        PortCut::new()
    }
}

impl PortCut {
    pub fn new() -> Self {
        PortCut {
            state: Arc::new(Mutex::new(PortCutState {
                endpoints: BTreeSet::new(),
                connect_wait_ms: PORT_CUT_CONNECT_MS,
                refused: 0,
                broken: 0,
            })),
        }
    }

    /// Cuts the traffic of node `ip` on server port `port` (a no-op beyond
    /// `PORT_CUT_ENDPOINTS_MAX` endpoints).
    pub fn cut(&self, ip: IpAddr, port: u16) {
        let mut s = lock(&self.state);
        if s.endpoints.len() < PORT_CUT_ENDPOINTS_MAX {
            s.endpoints.insert((ip, port));
        }
    }

    pub fn heal(&self, ip: IpAddr, port: u16) {
        lock(&self.state).endpoints.remove(&(ip, port));
    }

    pub fn heal_all(&self) {
        lock(&self.state).endpoints.clear();
    }

    pub fn is_cut(&self, ip: IpAddr, port: u16) -> bool {
        lock(&self.state).endpoints.contains(&(ip, port))
    }

    /// How long a connect across the cut hangs before it fails (`PORT_CUT_CONNECT_MS`).
    pub fn set_connect_wait_ms(&self, ms: u64) {
        lock(&self.state).connect_wait_ms = ms;
    }

    /// `net.port_cut_connects` (connects that timed out) and `net.port_cut_broken` (streams
    /// broken).
    pub fn coverage(&self) -> Coverage {
        let s = lock(&self.state);
        let mut c = Coverage::default();
        c.add("net.port_cut_connects", s.refused);
        c.add("net.port_cut_broken", s.broken);
        c
    }

    /// Some(wait): a connection between `a` and `b` on server port `port` crosses the cut.
    fn refuse(&self, a: IpAddr, b: IpAddr, port: u16) -> Option<u64> {
        let mut s = lock(&self.state);
        let cut = s.endpoints.contains(&(a, port)) || s.endpoints.contains(&(b, port));
        if cut {
            s.refused += 1;
            return Some(s.connect_wait_ms);
        }
        None
    }

    fn breaks(&self, ends: &StreamEnds) -> bool {
        let mut s = lock(&self.state);
        let cut = s.endpoints.contains(&(ends.local, ends.port))
            || s.endpoints.contains(&(ends.peer, ends.port));
        if cut {
            s.broken += 1;
        }
        cut
    }
}

/// A stream's two node IPs and its server port (the remote port of a connect, the listener's
/// port of an accept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamEnds {
    pub local: IpAddr,
    pub peer: IpAddr,
    pub port: u16,
}

/// Fault rates (per operation).
#[derive(Clone, Debug, PartialEq)]
pub struct ChaosConfig {
    pub short_read: f64,
    pub short_write: f64,
    /// After a successful flush, drop the connection (peer sees EOF, we see reset).
    pub reset_after_flush: f64,
    pub connect_refused: f64,
}

impl ChaosConfig {
    pub const NONE: ChaosConfig = ChaosConfig {
        short_read: 0.0,
        short_write: 0.0,
        reset_after_flush: 0.0,
        connect_refused: 0.0,
    };
}

#[derive(Debug)]
struct ChaosState {
    config: ChaosConfig,
    rng: ChaCha8Rng,
    short_reads: u64,
    short_writes: u64,
    resets: u64,
    refused: u64,
}

impl ChaosState {
    fn roll(&mut self, p: f64) -> bool {
        p > 0.0 && (p >= 1.0 || self.rng.gen_bool(p))
    }
}

/// Shared by every stream of one `ChaosNet` (one per node).
#[derive(Clone, Debug)]
pub struct Chaos {
    state: Arc<Mutex<ChaosState>>,
}

impl Chaos {
    pub fn new(seed: u64, config: ChaosConfig) -> Self {
        Chaos {
            state: Arc::new(Mutex::new(ChaosState {
                config,
                rng: ChaCha8Rng::seed_from_u64(seed),
                short_reads: 0,
                short_writes: 0,
                resets: 0,
                refused: 0,
            })),
        }
    }

    pub fn set_config(&self, config: ChaosConfig) {
        lock(&self.state).config = config;
    }

    pub fn coverage(&self) -> Coverage {
        let s = lock(&self.state);
        let mut c = Coverage::default();
        c.add("net.short_read", s.short_reads);
        c.add("net.short_write", s.short_writes);
        c.add("net.reset_after_flush", s.resets);
        c.add("net.connect_refused", s.refused);
        c
    }

    /// Some(n): read at most n bytes this time.
    fn short_read(&self, room: usize) -> Option<usize> {
        let mut s = lock(&self.state);
        if room <= 1
            || !{
                let p = s.config.short_read;
                s.roll(p)
            }
        {
            return None;
        }
        s.short_reads += 1;
        Some(s.rng.gen_range(1..room.min(SHORT_READ_BYTES_MAX)))
    }

    fn short_write(&self, len: usize) -> Option<usize> {
        let mut s = lock(&self.state);
        if len <= 1
            || !{
                let p = s.config.short_write;
                s.roll(p)
            }
        {
            return None;
        }
        s.short_writes += 1;
        Some(s.rng.gen_range(1..len))
    }

    fn reset(&self) -> bool {
        let mut s = lock(&self.state);
        let r = {
            let p = s.config.reset_after_flush;
            s.roll(p)
        };
        if r {
            s.resets += 1;
        }
        r
    }

    fn refuse(&self) -> bool {
        let mut s = lock(&self.state);
        let r = {
            let p = s.config.connect_refused;
            s.roll(p)
        };
        if r {
            s.refused += 1;
        }
        r
    }
}

/// A stream with chaos. After a reset every operation fails with `ConnectionReset`.
#[derive(Debug)]
pub struct ChaosStream<S> {
    inner: Option<S>,
    chaos: Chaos,
    /// The shared port cut and this stream's ends.
    cut: Option<(PortCut, StreamEnds)>,
}

impl<S> ChaosStream<S> {
    pub fn new(inner: S, chaos: Chaos) -> Self {
        ChaosStream {
            inner: Some(inner),
            chaos,
            cut: None,
        }
    }

    /// A stream that breaks once either of its ends is cut on its server port.
    pub fn with_port_cut(inner: S, chaos: Chaos, cut: PortCut, ends: StreamEnds) -> Self {
        ChaosStream {
            inner: Some(inner),
            chaos,
            cut: Some((cut, ends)),
        }
    }

    /// Drops the connection if it crosses a cut now (the peer sees it close).
    fn check_cut(&mut self) {
        if let Some((cut, ends)) = &self.cut {
            if self.inner.is_some() && cut.breaks(ends) {
                self.inner = None;
            }
        }
    }
}

fn reset_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "chaos: connection reset")
}

impl<S: AsyncRead + Unpin> AsyncRead for ChaosStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.check_cut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Err(reset_error()));
        };
        match this.chaos.short_read(buf.remaining()) {
            None => Pin::new(inner).poll_read(cx, buf),
            Some(n) => {
                let mut tmp = [0u8; SHORT_READ_BYTES_MAX];
                let mut small = ReadBuf::new(&mut tmp[..n]);
                match Pin::new(inner).poll_read(cx, &mut small) {
                    Poll::Ready(Ok(())) => {
                        buf.put_slice(small.filled());
                        Poll::Ready(Ok(()))
                    }
                    other => other,
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ChaosStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.check_cut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Err(reset_error()));
        };
        let n = this.chaos.short_write(bytes.len()).unwrap_or(bytes.len());
        Pin::new(inner).poll_write(cx, &bytes[..n])
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.check_cut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Err(reset_error()));
        };
        match Pin::new(inner).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                if this.chaos.reset() {
                    // The bytes are on their way; the connection dies behind them.
                    this.inner = None;
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// `Net` with chaos on every stream it makes.
#[derive(Clone, Debug)]
pub struct ChaosNet<N> {
    inner: N,
    chaos: Chaos,
    /// The shared port cut and this node's own IP.
    cut: Option<(PortCut, IpAddr)>,
}

impl<N: Net> ChaosNet<N> {
    pub fn new(inner: N, chaos: Chaos) -> Self {
        ChaosNet {
            inner,
            chaos,
            cut: None,
        }
    }

    /// The `ChaosNet` of the node at `own_ip`, whose traffic across the endpoints cut in `cut`
    /// fails.
    pub fn with_port_cut(inner: N, chaos: Chaos, cut: PortCut, own_ip: IpAddr) -> Self {
        ChaosNet {
            inner,
            chaos,
            cut: Some((cut, own_ip)),
        }
    }

    fn wrap(&self, stream: N::Stream, peer: IpAddr, port: u16) -> ChaosStream<N::Stream> {
        match &self.cut {
            Some((cut, local)) => {
                let ends = StreamEnds {
                    local: *local,
                    peer,
                    port,
                };
                ChaosStream::with_port_cut(stream, self.chaos.clone(), cut.clone(), ends)
            }
            None => ChaosStream::new(stream, self.chaos.clone()),
        }
    }

    pub fn chaos(&self) -> &Chaos {
        &self.chaos
    }
}

impl<N: Net> Net for ChaosNet<N> {
    type Stream = ChaosStream<N::Stream>;
    type Listener = N::Listener;

    async fn bind(&self, addr: SocketAddr) -> io::Result<Self::Listener> {
        self.inner.bind(addr).await
    }

    fn local_addr(&self, listener: &Self::Listener) -> io::Result<SocketAddr> {
        self.inner.local_addr(listener)
    }

    async fn accept(&self, listener: &Self::Listener) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, peer) = self.inner.accept(listener).await?;
        let port = self.inner.local_addr(listener).map_or(0, |a| a.port());
        Ok((self.wrap(stream, peer.ip(), port), peer))
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<Self::Stream> {
        if let Some((cut, own)) = &self.cut {
            if let Some(wait_ms) = cut.refuse(*own, addr.ip(), addr.port()) {
                // Across a partition a connect hears nothing back.
                tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
                return Err(io::Error::new(io::ErrorKind::TimedOut, "chaos: port cut"));
            }
        }
        if self.chaos.refuse() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "chaos: refused",
            ));
        }
        let stream = self.inner.connect(addr).await?;
        Ok(self.wrap(stream, addr.ip(), addr.port()))
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn short_io_keeps_bytes_in_order() {
        let chaos = Chaos::new(
            3,
            ChaosConfig {
                short_read: 1.0,
                short_write: 1.0,
                ..ChaosConfig::NONE
            },
        );
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut a = ChaosStream::new(a, chaos.clone());
        let mut b = ChaosStream::new(b, chaos.clone());
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        a.write_all(&data).await.expect("write");
        a.flush().await.expect("flush");
        let mut got = vec![0u8; data.len()];
        b.read_exact(&mut got).await.expect("read");
        assert_eq!(got, data);
        let cov = chaos.coverage();
        assert!(cov.get("net.short_read") > 1);
        assert!(cov.get("net.short_write") > 1);
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, last))
    }

    #[tokio::test]
    async fn a_cut_endpoint_breaks_its_streams_and_spares_the_others() {
        let chaos = Chaos::new(5, ChaosConfig::NONE);
        let cut = PortCut::new();
        let ends = |peer: u8, port: u16| StreamEnds {
            local: ip(1),
            peer: ip(peer),
            port,
        };
        let (a, mut b) = tokio::io::duplex(1024);
        let (c, mut d) = tokio::io::duplex(1024);
        let mut controller =
            ChaosStream::with_port_cut(a, chaos.clone(), cut.clone(), ends(2, 9093));
        let mut client = ChaosStream::with_port_cut(c, chaos.clone(), cut.clone(), ends(2, 9092));
        controller
            .write_all(b"one")
            .await
            .expect("write before the cut");
        controller.flush().await.expect("flush");
        let mut got = [0u8; 3];
        b.read_exact(&mut got).await.expect("delivered");
        // The peer's endpoint is cut: this side breaks too.
        cut.cut(ip(2), 9093);
        assert!(cut.is_cut(ip(2), 9093) && !cut.is_cut(ip(2), 9092) && !cut.is_cut(ip(1), 9093));
        let err = controller.write_all(b"two").await.expect_err("cut");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        // The peer sees the connection close.
        let mut one = [0u8; 1];
        assert_eq!(b.read(&mut one).await.expect("eof"), 0);
        // The other port still flows, and healing does not revive a broken stream.
        client.write_all(b"ok").await.expect("client port flows");
        client.flush().await.expect("flush");
        let mut got = [0u8; 2];
        d.read_exact(&mut got).await.expect("delivered");
        assert_eq!(&got, b"ok");
        cut.heal(ip(2), 9093);
        assert!(controller.read(&mut one).await.is_err());
        let cov = cut.coverage();
        assert_eq!(cov.get("net.port_cut_broken"), 1);
        assert_eq!(cov.get("net.port_cut_connects"), 0);
    }

    #[tokio::test]
    async fn connects_across_a_cut_time_out_until_healed() {
        let cut = PortCut::new();
        cut.set_connect_wait_ms(5);
        let local = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        let net = ChaosNet::with_port_cut(
            samsa_net::TokioNet,
            Chaos::new(6, ChaosConfig::NONE),
            cut.clone(),
            local,
        );
        let listener = net
            .bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = net.local_addr(&listener).expect("local addr");
        cut.cut(local, addr.port());
        let err = net.connect(addr).await.expect_err("cut");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(cut.coverage().get("net.port_cut_connects"), 1);
        cut.heal_all();
        let accept = net.accept(&listener);
        let (connected, accepted) = tokio::join!(net.connect(addr), accept);
        let mut out = connected.expect("connects once healed");
        let (mut inbound, _) = accepted.expect("accepts");
        out.write_all(b"hi").await.expect("write");
        out.flush().await.expect("flush");
        let mut got = [0u8; 2];
        inbound.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"hi");
        // A cut now breaks both ends of the open connection.
        cut.cut(local, addr.port());
        assert!(out.write_all(b"x").await.is_err());
        assert!(inbound.read_exact(&mut got).await.is_err());
    }

    #[tokio::test]
    async fn reset_after_flush_delivers_then_fails() {
        let chaos = Chaos::new(
            4,
            ChaosConfig {
                reset_after_flush: 1.0,
                ..ChaosConfig::NONE
            },
        );
        let (a, mut b) = tokio::io::duplex(1024);
        let mut a = ChaosStream::new(a, chaos.clone());
        a.write_all(b"req").await.expect("write");
        a.flush().await.expect("flush");
        let mut got = [0u8; 3];
        b.read_exact(&mut got).await.expect("peer gets the request");
        assert_eq!(&got, b"req");
        let mut one = [0u8; 1];
        let err = a.read(&mut one).await.expect_err("reset");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        // The peer sees EOF.
        assert_eq!(b.read(&mut one).await.expect("eof"), 0);
        assert_eq!(chaos.coverage().get("net.reset_after_flush"), 1);
    }
}
