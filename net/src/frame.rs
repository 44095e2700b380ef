//! Length-prefixed frame I/O with named bounds (codec helper).
//! A frame is a 4-byte big-endian length followed by that many bytes. Reading checks the length
//! against a caller-given bound before allocating anything, and grows the buffer only as bytes
//! actually arrive. Never panics on input; never interprets the body.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Kafka's default `socket.request.max.bytes` (100 MiB).
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 104_857_600;

/// Bytes of the big-endian length prefix.
pub const FRAME_PREFIX_BYTES: usize = 4;

/// Upper bound on how much buffer one read step reserves, so a peer that announces a large frame
/// and then stalls pins at most this much memory beyond what it actually sent.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

const _: () = assert!(REQUEST_BYTES_MAX_DEFAULT <= i32::MAX as usize);

/// Why a frame could not be read or written.
#[derive(Debug)]
pub enum FrameError {
    /// The underlying stream failed.
    Io(std::io::Error),
    /// The length prefix is negative.
    Negative {
        /// The length as sent.
        len: i32,
    },
    /// The length prefix (or a body to write) exceeds the bound.
    TooLarge {
        /// The announced length.
        len: usize,
        /// The bound in force.
        max: usize,
    },
    /// The stream ended inside a frame (inside the prefix or the body).
    Truncated {
        /// Bytes the frame needed (prefix bytes while reading the prefix).
        expected: usize,
        /// Bytes that arrived before end of stream.
        got: usize,
    },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "frame i/o: {e}"),
            FrameError::Negative { len } => write!(f, "negative frame length {len}"),
            FrameError::TooLarge { len, max } => write!(f, "frame length {len} exceeds {max}"),
            FrameError::Truncated { expected, got } => {
                write!(f, "stream ended inside a frame: {got} of {expected} bytes")
            }
        }
    }
}

impl std::error::Error for FrameError {}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// Reads one frame body. `Ok(None)` means the stream ended cleanly between frames; an end of
/// stream anywhere inside a frame is `FrameError::Truncated`. Not cancel-safe: if the future is
/// dropped mid-frame the bytes read so far are lost, so do not race it in a `select!` loop that
/// may drop it and then keep using the stream (drop the connection instead).
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max_bytes: usize,
) -> Result<Option<BytesMut>, FrameError> {
    let mut prefix = [0u8; FRAME_PREFIX_BYTES];
    let mut got = 0;
    while got < FRAME_PREFIX_BYTES {
        let n = r.read(&mut prefix[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(FrameError::Truncated {
                expected: FRAME_PREFIX_BYTES,
                got,
            });
        }
        got += n;
    }
    let len = i32::from_be_bytes(prefix);
    if len < 0 {
        return Err(FrameError::Negative { len });
    }
    let len = len as usize;
    if len > max_bytes {
        return Err(FrameError::TooLarge {
            len,
            max: max_bytes,
        });
    }
    let mut body = BytesMut::with_capacity(len.min(READ_CHUNK_BYTES));
    while body.len() < len {
        let want = (len - body.len()).min(READ_CHUNK_BYTES);
        body.reserve(want);
        let n = (&mut *r).take(want as u64).read_buf(&mut body).await?;
        if n == 0 {
            return Err(FrameError::Truncated {
                expected: len,
                got: body.len(),
            });
        }
    }
    assert_eq!(body.len(), len);
    Ok(Some(body))
}

/// Writes the length prefix and `body`, then flushes (the simulator only sends on flush).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> Result<(), FrameError> {
    if body.len() > i32::MAX as usize {
        return Err(FrameError::TooLarge {
            len: body.len(),
            max: i32::MAX as usize,
        });
    }
    w.write_all(&(body.len() as i32).to_be_bytes()).await?;
    w.write_all(body).await?;
    w.flush().await?;
    Ok(())
}

/// Writes several already-encoded frame bodies, each with its prefix, and flushes once at the end.
pub async fn write_frames<W: AsyncWrite + Unpin>(
    w: &mut W,
    bodies: &[&[u8]],
) -> Result<(), FrameError> {
    for body in bodies {
        if body.len() > i32::MAX as usize {
            return Err(FrameError::TooLarge {
                len: body.len(),
                max: i32::MAX as usize,
            });
        }
        w.write_all(&(body.len() as i32).to_be_bytes()).await?;
        w.write_all(body).await?;
    }
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::ReadBuf;

    /// Serves `data` one byte per read, to exercise every partial-read path.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if self.at < self.data.len() && buf.remaining() > 0 {
                let b = self.data[self.at];
                buf.put_slice(&[b]);
                self.at += 1;
            }
            Poll::Ready(Ok(()))
        }
    }

    fn framed(bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for b in bodies {
            out.extend_from_slice(&(b.len() as i32).to_be_bytes());
            out.extend_from_slice(b);
        }
        out
    }

    #[tokio::test]
    async fn round_trip_over_duplex() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let big = vec![7u8; 1000];
        let writer = async {
            write_frame(&mut a, b"hello").await.unwrap();
            write_frame(&mut a, b"").await.unwrap();
            write_frame(&mut a, &big).await.unwrap();
            drop(a);
        };
        let reader = async {
            let f1 = read_frame(&mut b, 2000).await.unwrap().unwrap();
            let f2 = read_frame(&mut b, 2000).await.unwrap().unwrap();
            let f3 = read_frame(&mut b, 2000).await.unwrap().unwrap();
            let end = read_frame(&mut b, 2000).await.unwrap();
            (f1, f2, f3, end)
        };
        let ((), (f1, f2, f3, end)) = tokio::join!(writer, reader);
        assert_eq!(&f1[..], b"hello");
        assert!(f2.is_empty());
        assert_eq!(&f3[..], &big[..]);
        assert!(end.is_none());
    }

    #[tokio::test]
    async fn one_byte_at_a_time() {
        let mut r = Trickle {
            data: framed(&[b"abc", b"defgh"]),
            at: 0,
        };
        assert_eq!(&read_frame(&mut r, 100).await.unwrap().unwrap()[..], b"abc");
        assert_eq!(
            &read_frame(&mut r, 100).await.unwrap().unwrap()[..],
            b"defgh"
        );
        assert!(read_frame(&mut r, 100).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn truncated_prefix_and_body_are_errors() {
        let mut r = Trickle {
            data: vec![0, 0],
            at: 0,
        };
        let e = read_frame(&mut r, 100).await.unwrap_err();
        assert!(
            matches!(
                e,
                FrameError::Truncated {
                    expected: 4,
                    got: 2
                }
            ),
            "{e}"
        );
        let mut data = framed(&[b"abcdef"]);
        data.truncate(7);
        let mut r = Trickle { data, at: 0 };
        let e = read_frame(&mut r, 100).await.unwrap_err();
        assert!(
            matches!(
                e,
                FrameError::Truncated {
                    expected: 6,
                    got: 3
                }
            ),
            "{e}"
        );
    }

    #[tokio::test]
    async fn bounds_are_checked_before_reading_the_body() {
        let mut r = Trickle {
            data: (-1i32).to_be_bytes().to_vec(),
            at: 0,
        };
        let e = read_frame(&mut r, 100).await.unwrap_err();
        assert!(matches!(e, FrameError::Negative { len: -1 }), "{e}");
        let mut r = Trickle {
            data: i32::MAX.to_be_bytes().to_vec(),
            at: 0,
        };
        let e = read_frame(&mut r, REQUEST_BYTES_MAX_DEFAULT)
            .await
            .unwrap_err();
        assert!(
            matches!(e, FrameError::TooLarge { len, max } if len == i32::MAX as usize
                && max == REQUEST_BYTES_MAX_DEFAULT),
            "{e}"
        );
        // Exactly at the bound is accepted.
        let mut r = Trickle {
            data: framed(&[b"12345"]),
            at: 0,
        };
        assert_eq!(read_frame(&mut r, 5).await.unwrap().unwrap().len(), 5);
        let mut r = Trickle {
            data: framed(&[b"123456"]),
            at: 0,
        };
        assert!(matches!(
            read_frame(&mut r, 5).await.unwrap_err(),
            FrameError::TooLarge { len: 6, max: 5 }
        ));
    }

    #[tokio::test]
    async fn write_frames_batches_under_one_flush() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        write_frames(&mut a, &[b"x", b"yz"]).await.unwrap();
        drop(a);
        assert_eq!(&read_frame(&mut b, 10).await.unwrap().unwrap()[..], b"x");
        assert_eq!(&read_frame(&mut b, 10).await.unwrap().unwrap()[..], b"yz");
        assert!(read_frame(&mut b, 10).await.unwrap().is_none());
    }
}
