//! The chaos network: `ChaosNet` wraps any `Net` (in the simulator, `TokioNet` on madsim's
//! sockets) and its streams, adding what madsim's TCP never does: short reads, short writes
//! (the caller's `write_all` loop sends the rest), connects refused, and a connection reset just
//! after a flush (the request went out and may be applied; the reply is lost: the client sees an
//! ambiguous failure). Partitions, clogging, loss and latency come from madsim's `NetSim` and are
//! driven by the nemesis. Duplicates make no sense inside one TCP stream; "delayed duplicates"
//! are modelled at the client level instead, as a retry after an ambiguous failure (the reset).
//! Never invents or reorders bytes within a connection.

use std::io;
use std::net::SocketAddr;
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
}

impl<S> ChaosStream<S> {
    pub fn new(inner: S, chaos: Chaos) -> Self {
        ChaosStream {
            inner: Some(inner),
            chaos,
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
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Err(reset_error()));
        };
        let n = this.chaos.short_write(bytes.len()).unwrap_or(bytes.len());
        Pin::new(inner).poll_write(cx, &bytes[..n])
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
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
}

impl<N: Net> ChaosNet<N> {
    pub fn new(inner: N, chaos: Chaos) -> Self {
        ChaosNet { inner, chaos }
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
        Ok((ChaosStream::new(stream, self.chaos.clone()), peer))
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<Self::Stream> {
        if self.chaos.refuse() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "chaos: refused",
            ));
        }
        let stream = self.inner.connect(addr).await?;
        Ok(ChaosStream::new(stream, self.chaos.clone()))
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
