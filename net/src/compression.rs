//! Record-batch compression codecs with bounded output (codec helper): gzip (flate2), snappy
//! (raw blocks and Java's xerial framing, via `snap::raw`), lz4 frames (lz4_flex) and zstd
//! (ruzstd). Decompression never produces more than the caller's `max_out` bytes: a stream that
//! would is an error (decompression bombs), as is any malformed input. Never panics on input.
//! ruzstd itself refuses frames whose window exceeds 100 MiB.

use std::io::{Read, Write};

/// Java's xerial snappy stream magic (`SnappyCodec.MAGIC_HEADER`).
pub const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// Xerial header: magic, then int32 version and int32 minimum compatible version.
pub const XERIAL_HEADER_BYTES: usize = 16;
/// Uncompressed bytes per xerial block when we compress (Java's default block size).
pub const XERIAL_BLOCK_BYTES: usize = 32 * 1024;
/// Read granularity while inflating a stream, so output is checked against the bound as it grows.
const INFLATE_CHUNK_BYTES: usize = 64 * 1024;

/// The codec named by the low 3 bits of a v2 batch's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Compression {
    /// 0: stored as is.
    None,
    /// 1: gzip.
    Gzip,
    /// 2: snappy (raw or xerial-framed).
    Snappy,
    /// 3: lz4 frame format.
    Lz4,
    /// 4: zstd.
    Zstd,
}

impl Compression {
    /// Attribute mask of the codec bits.
    pub const ATTRIBUTE_MASK: i16 = 0x07;

    /// The codec named by `attributes & 7`, or `None` for 5..=7 (unknown codecs).
    pub fn from_attributes(attributes: i16) -> Option<Compression> {
        match attributes & Self::ATTRIBUTE_MASK {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The attribute bits of this codec.
    pub fn attribute_bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// Kafka's `compression.type` name.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// Why decompression failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompressionError {
    /// The output would exceed the caller's bound.
    TooLarge {
        /// The bound in force.
        max_out: usize,
    },
    /// The input is not a valid stream of this codec.
    Corrupt {
        /// The codec.
        codec: Compression,
        /// What was wrong, for logs.
        detail: String,
    },
}

impl std::fmt::Display for CompressionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompressionError::TooLarge { max_out } => {
                write!(f, "decompressed size exceeds {max_out} bytes")
            }
            CompressionError::Corrupt { codec, detail } => {
                write!(f, "corrupt {} data: {detail}", codec.name())
            }
        }
    }
}

impl std::error::Error for CompressionError {}

fn corrupt(codec: Compression, detail: impl std::fmt::Display) -> CompressionError {
    CompressionError::Corrupt {
        codec,
        detail: detail.to_string(),
    }
}

/// Decompresses `input`, producing at most `max_out` bytes.
pub fn decompress(
    codec: Compression,
    input: &[u8],
    max_out: usize,
) -> Result<Vec<u8>, CompressionError> {
    match codec {
        Compression::None => {
            if input.len() > max_out {
                return Err(CompressionError::TooLarge { max_out });
            }
            Ok(input.to_vec())
        }
        Compression::Gzip => read_bounded(codec, flate2::read::MultiGzDecoder::new(input), max_out),
        Compression::Snappy => decompress_snappy(input, max_out),
        Compression::Lz4 => read_bounded(codec, lz4_flex::frame::FrameDecoder::new(input), max_out),
        Compression::Zstd => decompress_zstd(input, max_out),
    }
}

/// Compresses `input` the way Kafka's Java producer would (snappy gets xerial framing).
pub fn compress(codec: Compression, input: &[u8]) -> Vec<u8> {
    match codec {
        Compression::None => input.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            // Writing into a Vec cannot fail.
            e.write_all(input).expect("gzip into Vec");
            e.finish().expect("gzip into Vec")
        }
        Compression::Snappy => compress_snappy_xerial(input),
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut e = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            e.write_all(input).expect("lz4 into Vec");
            e.finish().expect("lz4 into Vec")
        }
        Compression::Zstd => {
            ruzstd::encoding::compress_to_vec(input, ruzstd::encoding::CompressionLevel::Fastest)
        }
    }
}

/// Drains `r` into a Vec, failing as soon as the output passes `max_out`.
fn read_bounded<R: Read>(
    codec: Compression,
    r: R,
    max_out: usize,
) -> Result<Vec<u8>, CompressionError> {
    let mut out = Vec::new();
    let limit = (max_out as u64).saturating_add(1);
    let mut r = r.take(limit);
    let mut chunk = [0u8; 4096];
    loop {
        let n = r.read(&mut chunk).map_err(|e| corrupt(codec, e))?;
        if n == 0 {
            break;
        }
        if out.len() + n > max_out {
            return Err(CompressionError::TooLarge { max_out });
        }
        if out.capacity() - out.len() < n {
            out.reserve(INFLATE_CHUNK_BYTES.min(max_out - out.len()).max(n));
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(out)
}

fn decompress_zstd(input: &[u8], max_out: usize) -> Result<Vec<u8>, CompressionError> {
    let codec = Compression::Zstd;
    let mut out = Vec::new();
    let mut rest = input;
    // A zstd stream may hold several frames back to back; each must start a frame.
    while !rest.is_empty() {
        let mut decoder =
            ruzstd::decoding::StreamingDecoder::new(&mut rest).map_err(|e| corrupt(codec, e))?;
        let frame = read_bounded(codec, &mut decoder, max_out - out.len())?;
        out.extend_from_slice(&frame);
    }
    if out.is_empty() && input.is_empty() {
        return Err(corrupt(codec, "empty input"));
    }
    Ok(out)
}

fn decompress_snappy(input: &[u8], max_out: usize) -> Result<Vec<u8>, CompressionError> {
    let codec = Compression::Snappy;
    if input.len() >= XERIAL_MAGIC.len() && input[..XERIAL_MAGIC.len()] == XERIAL_MAGIC {
        if input.len() < XERIAL_HEADER_BYTES {
            return Err(corrupt(codec, "xerial header truncated"));
        }
        let mut out = Vec::new();
        let mut at = XERIAL_HEADER_BYTES;
        while at < input.len() {
            let Some(len_bytes) = input.get(at..at + 4) else {
                return Err(corrupt(codec, "xerial block length truncated"));
            };
            let len = i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
            at += 4;
            let Some(block) = usize::try_from(len)
                .ok()
                .and_then(|l| input.get(at..at + l))
            else {
                return Err(corrupt(codec, format!("bad xerial block length {len}")));
            };
            at += block.len();
            raw_snappy_into(block, &mut out, max_out)?;
        }
        Ok(out)
    } else {
        let mut out = Vec::new();
        raw_snappy_into(input, &mut out, max_out)?;
        Ok(out)
    }
}

/// Appends one raw snappy block to `out`, checking its declared size before allocating.
fn raw_snappy_into(
    block: &[u8],
    out: &mut Vec<u8>,
    max_out: usize,
) -> Result<(), CompressionError> {
    let codec = Compression::Snappy;
    let n = snap::raw::decompress_len(block).map_err(|e| corrupt(codec, e))?;
    if n > max_out - out.len() {
        return Err(CompressionError::TooLarge { max_out });
    }
    let start = out.len();
    out.resize(start + n, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| corrupt(codec, e))?;
    out.truncate(start + written);
    Ok(())
}

fn compress_snappy_xerial(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(XERIAL_HEADER_BYTES + input.len() / 2 + 64);
    out.extend_from_slice(&XERIAL_MAGIC);
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    let mut encoder = snap::raw::Encoder::new();
    for chunk in input.chunks(XERIAL_BLOCK_BYTES) {
        // A 32 KiB input always fits snappy's limits; compressing into a Vec cannot fail.
        let block = encoder.compress_vec(chunk).expect("snappy block");
        out.extend_from_slice(&(block.len() as i32).to_be_bytes());
        out.extend_from_slice(&block);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8 ^ (i / 1000) as u8).collect()
    }

    #[test]
    fn round_trip_every_codec() {
        for codec in ALL {
            for n in [0usize, 1, 100, 70_000, 200_000] {
                let data = sample(n);
                let packed = compress(codec, &data);
                let back =
                    decompress(codec, &packed, n).unwrap_or_else(|e| panic!("{codec:?} {e}"));
                assert_eq!(back, data, "{codec:?} n={n}");
            }
        }
    }

    #[test]
    fn output_bound_is_enforced() {
        let data = vec![0u8; 1 << 20];
        for codec in ALL {
            let packed = compress(codec, &data);
            let e = decompress(codec, &packed, (1 << 20) - 1).unwrap_err();
            assert_eq!(
                e,
                CompressionError::TooLarge {
                    max_out: (1 << 20) - 1
                },
                "{codec:?}"
            );
        }
    }

    #[test]
    fn attribute_bits_round_trip() {
        for codec in ALL {
            assert_eq!(
                Compression::from_attributes(codec.attribute_bits()),
                Some(codec)
            );
            assert_eq!(
                Compression::from_attributes(codec.attribute_bits() | 0x78),
                Some(codec)
            );
        }
        for bits in 5..8 {
            assert_eq!(Compression::from_attributes(bits), None);
        }
    }

    /// A xerial stream as Java's `SnappyOutputStream` writes it: magic, version 1, compat 1, then
    /// two blocks. The raw snappy blocks are hand-assembled literals ("hello " and "world").
    #[test]
    fn xerial_vector() {
        let stream: &[u8] = &[
            0x82, 0x53, 0x4e, 0x41, 0x50, 0x50, 0x59, 0x00, // magic
            0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, // version, compatible version
            0x00, 0x00, 0x00, 0x08, // block 1: 8 bytes
            0x06, 0x14, b'h', b'e', b'l', b'l', b'o', b' ', // len 6, literal of 6
            0x00, 0x00, 0x00, 0x07, // block 2: 7 bytes
            0x05, 0x10, b'w', b'o', b'r', b'l', b'd', // len 5, literal of 5
        ];
        assert_eq!(
            decompress(Compression::Snappy, stream, 100).unwrap(),
            b"hello world"
        );
        // The same blocks without framing are raw snappy.
        assert_eq!(
            decompress(Compression::Snappy, &stream[20..28], 100).unwrap(),
            b"hello "
        );
        assert!(decompress(Compression::Snappy, stream, 10).is_err());
        // A block length running past the end is corrupt, not a panic.
        let mut bad = stream.to_vec();
        bad[19] = 0x7f;
        assert!(matches!(
            decompress(Compression::Snappy, &bad, 100),
            Err(CompressionError::Corrupt { .. })
        ));
        // Our own compressor writes the same framing.
        let ours = compress(Compression::Snappy, b"hello world");
        assert_eq!(&ours[..16], &stream[..16]);
    }

    #[test]
    fn garbage_is_an_error() {
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            assert!(decompress(codec, b"\x01\x02\x03 definitely not compressed", 1000).is_err());
        }
    }

    proptest! {
        #[test]
        fn decompress_never_panics(
            codec in 0usize..5,
            data in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let _ = decompress(ALL[codec], &data, 1 << 16);
        }

        #[test]
        fn mutated_streams_never_panic(
            codec in 1usize..5,
            data in proptest::collection::vec(any::<u8>(), 0..2048),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            let mut packed = compress(ALL[codec], &data);
            for (at, x) in flips {
                if !packed.is_empty() {
                    let i = at % packed.len();
                    packed[i] ^= x;
                }
            }
            if let Ok(out) = decompress(ALL[codec], &packed, 4096) {
                prop_assert!(out.len() <= 4096);
            }
        }
    }
}
