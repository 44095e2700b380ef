//! Record-batch v2 header view (codec helper): parse and validate the 61-byte header against named
//! bounds, split a records blob into batches, verify CRC-32C, patch base offset and partition
//! leader epoch in place, set LogAppendTime (recomputing the CRC), and walk record framing
//! without building records. Layout: Kafka's `DefaultRecordBatch`.
//! Never panics on input bytes, never allocates from an unchecked length, and never decodes
//! record keys or values into owned structures.

use std::ops::Range;

use crate::compression::{self, Compression};
use crate::error::{code, ErrorCode};

/// Bytes of the v2 batch header (base offset through record count).
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before `batch_length` counts: base offset (8) + batch length (4).
pub const BATCH_LOG_OVERHEAD_BYTES: usize = 12;
/// Smallest legal `batch_length` (header minus base offset and length fields).
pub const BATCH_LENGTH_MIN: i32 = (BATCH_HEADER_BYTES - BATCH_LOG_OVERHEAD_BYTES) as i32;
/// The only record format this broker accepts.
pub const MAGIC_V2: i8 = 2;
/// Upper bound on `record_count` of one batch, whatever the byte bounds allow.
pub const RECORD_COUNT_MAX: i32 = 1 << 24;
/// Fewest bytes one record can take: length, attributes, timestamp delta, offset delta, key
/// length, value length, header count, one byte each.
pub const RECORD_BYTES_MIN: usize = 7;
/// Kafka's default `message.max.bytes` (1 MiB + overhead).
pub const BATCH_BYTES_MAX_DEFAULT: usize = 1_048_588;
/// Default bound on one batch's decompressed records section.
pub const UNCOMPRESSED_BYTES_MAX_DEFAULT: usize = 64 * 1024 * 1024;
/// Most record headers one record may carry.
pub const RECORD_HEADERS_MAX: i32 = 1 << 16;

const _: () = assert!(BATCH_LENGTH_MIN == 49);

/// Byte offsets of the header fields.
pub mod offsets {
    /// int64 base offset.
    pub const BASE_OFFSET: usize = 0;
    /// int32 batch length.
    pub const BATCH_LENGTH: usize = 8;
    /// int32 partition leader epoch.
    pub const PARTITION_LEADER_EPOCH: usize = 12;
    /// int8 magic.
    pub const MAGIC: usize = 16;
    /// uint32 CRC-32C of attributes..end.
    pub const CRC: usize = 17;
    /// int16 attributes; the CRC covers from here to the end of the batch.
    pub const ATTRIBUTES: usize = 21;
    /// int32 last offset delta.
    pub const LAST_OFFSET_DELTA: usize = 23;
    /// int64 first timestamp.
    pub const FIRST_TIMESTAMP: usize = 27;
    /// int64 max timestamp.
    pub const MAX_TIMESTAMP: usize = 35;
    /// int64 producer id.
    pub const PRODUCER_ID: usize = 43;
    /// int16 producer epoch.
    pub const PRODUCER_EPOCH: usize = 51;
    /// int32 base sequence.
    pub const BASE_SEQUENCE: usize = 53;
    /// int32 record count.
    pub const RECORD_COUNT: usize = 57;
}

/// Attribute bits.
pub mod attr {
    /// Codec bits 0-2.
    pub const COMPRESSION_MASK: i16 = 0x07;
    /// Bit 3: LogAppendTime (else CreateTime).
    pub const LOG_APPEND_TIME: i16 = 0x08;
    /// Bit 4: transactional.
    pub const TRANSACTIONAL: i16 = 0x10;
    /// Bit 5: control batch.
    pub const CONTROL: i16 = 0x20;
    /// Bit 6: first timestamp holds the delete horizon (KIP-534).
    pub const DELETE_HORIZON: i16 = 0x40;
}

/// Named limits applied while splitting and validating batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchBounds {
    /// Largest batch, header included (`max.message.bytes`); above it: MESSAGE_TOO_LARGE.
    pub max_batch_bytes: usize,
    /// Largest decompressed records section `validate_records` will inflate.
    pub max_uncompressed_bytes: usize,
    /// Largest `record_count`.
    pub record_count_max: i32,
}

impl BatchBounds {
    /// Kafka's defaults.
    pub const DEFAULT: BatchBounds = BatchBounds {
        max_batch_bytes: BATCH_BYTES_MAX_DEFAULT,
        max_uncompressed_bytes: UNCOMPRESSED_BYTES_MAX_DEFAULT,
        record_count_max: RECORD_COUNT_MAX,
    };

    /// The defaults with a topic's `max.message.bytes`.
    pub fn with_max_batch_bytes(max_batch_bytes: usize) -> BatchBounds {
        BatchBounds {
            max_batch_bytes,
            ..BatchBounds::DEFAULT
        }
    }
}

impl Default for BatchBounds {
    fn default() -> Self {
        BatchBounds::DEFAULT
    }
}

/// Why a batch was rejected. Positions are byte offsets in the input given to the function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than the header or the announced length needs.
    Truncated {
        /// Start of the batch.
        position: usize,
        /// Bytes the batch needs.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// `batch_length` below the header size.
    LengthTooSmall {
        /// Start of the batch.
        position: usize,
        /// As sent.
        batch_length: i32,
    },
    /// Batch larger than `max_batch_bytes`.
    TooLarge {
        /// Start of the batch.
        position: usize,
        /// Total bytes of the batch.
        bytes: usize,
        /// The bound.
        max: usize,
    },
    /// Magic other than 2.
    Magic {
        /// Start of the batch.
        position: usize,
        /// As sent.
        magic: i8,
    },
    /// CRC-32C mismatch.
    Crc {
        /// Start of the batch.
        position: usize,
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// `record_count` negative, above the bound, or more than the bytes can hold.
    RecordCount {
        /// Start of the batch.
        position: usize,
        /// As sent.
        record_count: i32,
    },
    /// Producer batch whose `record_count != last_offset_delta + 1`.
    CountMismatch {
        /// Start of the batch.
        position: usize,
        /// As sent.
        record_count: i32,
        /// As sent.
        last_offset_delta: i32,
    },
    /// Codec bits 5..7.
    UnknownCompression {
        /// Start of the batch.
        position: usize,
        /// The attributes.
        attributes: i16,
    },
    /// The records section does not decompress within bounds.
    Decompress {
        /// What went wrong.
        error: compression::CompressionError,
    },
    /// A record's varint framing is broken (or bytes are left over).
    RecordFraming {
        /// Index of the record.
        record: i32,
        /// What was wrong.
        detail: &'static str,
    },
    /// A record's offset delta is not its index.
    OffsetDelta {
        /// Index of the record.
        record: i32,
        /// As sent.
        offset_delta: i32,
    },
    /// A record without a key where keys are required (compacted topic).
    NullKey {
        /// Index of the record.
        record: i32,
    },
    /// The input holds no batch at all.
    Empty,
    /// Produce input with more than one batch for a partition (Kafka requires exactly one).
    MultipleBatches {
        /// Start of the second batch.
        position: usize,
    },
    /// A zstd batch in a Produce request older than v7.
    ZstdBeforeProduceV7 {
        /// The request's version.
        api_version: i16,
    },
}

impl BatchError {
    /// The Kafka error code a Kafka broker gives for this failure on produce.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            BatchError::TooLarge { .. } => code::MESSAGE_TOO_LARGE,
            // Kafka's `ProduceRequest.validateRecords`: an old-format batch, no batch, or more
            // than one batch is INVALID_RECORD; an unreadable magic is corrupt.
            BatchError::Magic { magic, .. } if (0..MAGIC_V2).contains(magic) => {
                code::INVALID_RECORD
            }
            BatchError::Empty | BatchError::MultipleBatches { .. } => code::INVALID_RECORD,
            BatchError::ZstdBeforeProduceV7 { .. } => code::UNSUPPORTED_COMPRESSION_TYPE,
            BatchError::CountMismatch { .. }
            | BatchError::OffsetDelta { .. }
            | BatchError::NullKey { .. }
            | BatchError::RecordCount { .. } => code::INVALID_RECORD,
            BatchError::Truncated { .. }
            | BatchError::LengthTooSmall { .. }
            | BatchError::Magic { .. }
            | BatchError::Crc { .. }
            | BatchError::Decompress { .. }
            | BatchError::RecordFraming { .. }
            | BatchError::UnknownCompression { .. } => code::CORRUPT_MESSAGE,
        }
    }
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for BatchError {}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

/// One batch found by a split: its byte range in the input and its header.
pub type BatchSpan = (Range<usize>, BatchHeader);

/// Every field of a v2 batch header, by value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes after the length field.
    pub batch_length: i32,
    /// Leader epoch of the appending leader.
    pub partition_leader_epoch: i32,
    /// Format version (2).
    pub magic: i8,
    /// CRC-32C over attributes..end.
    pub crc: u32,
    /// Codec, timestamp type, transactional, control, delete horizon.
    pub attributes: i16,
    /// Offset of the last record minus base offset.
    pub last_offset_delta: i32,
    /// Timestamp of the first record (or delete horizon).
    pub first_timestamp: i64,
    /// Largest record timestamp (or the append time with LogAppendTime).
    pub max_timestamp: i64,
    /// Idempotent producer id, -1 if none.
    pub producer_id: i64,
    /// Producer epoch, -1 if none.
    pub producer_epoch: i16,
    /// Sequence of the first record, -1 if none.
    pub base_sequence: i32,
    /// Number of records.
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `bytes`. Checks only what the header alone can show:
    /// enough bytes for a header, `batch_length >= 49`, magic 2. The CRC and the bytes after the
    /// header are not checked here (see `split_batches`).
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        Self::parse_at(bytes, 0)
    }

    fn parse_at(bytes: &[u8], position: usize) -> Result<BatchHeader, BatchError> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Truncated {
                position,
                need: BATCH_HEADER_BYTES,
                have: bytes.len(),
            });
        }
        let batch_length = be_i32(bytes, offsets::BATCH_LENGTH);
        if batch_length < BATCH_LENGTH_MIN {
            return Err(BatchError::LengthTooSmall {
                position,
                batch_length,
            });
        }
        let magic = bytes[offsets::MAGIC] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::Magic { position, magic });
        }
        Ok(BatchHeader {
            base_offset: be_i64(bytes, offsets::BASE_OFFSET),
            batch_length,
            partition_leader_epoch: be_i32(bytes, offsets::PARTITION_LEADER_EPOCH),
            magic,
            crc: be_i32(bytes, offsets::CRC) as u32,
            attributes: be_i16(bytes, offsets::ATTRIBUTES),
            last_offset_delta: be_i32(bytes, offsets::LAST_OFFSET_DELTA),
            first_timestamp: be_i64(bytes, offsets::FIRST_TIMESTAMP),
            max_timestamp: be_i64(bytes, offsets::MAX_TIMESTAMP),
            producer_id: be_i64(bytes, offsets::PRODUCER_ID),
            producer_epoch: be_i16(bytes, offsets::PRODUCER_EPOCH),
            base_sequence: be_i32(bytes, offsets::BASE_SEQUENCE),
            record_count: be_i32(bytes, offsets::RECORD_COUNT),
        })
    }

    /// Bytes of the whole batch, header included.
    pub fn total_bytes(&self) -> usize {
        BATCH_LOG_OVERHEAD_BYTES + self.batch_length.max(0) as usize
    }

    /// Offset of the last record (`base_offset + last_offset_delta`).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// The offset after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    /// The codec, or `None` for codec bits 5..7.
    pub fn compression(&self) -> Option<Compression> {
        Compression::from_attributes(self.attributes)
    }

    /// True if the timestamps are LogAppendTime.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & attr::LOG_APPEND_TIME != 0
    }

    /// True for transactional batches.
    pub fn is_transactional(&self) -> bool {
        self.attributes & attr::TRANSACTIONAL != 0
    }

    /// True for control batches (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & attr::CONTROL != 0
    }

    /// True if `first_timestamp` holds the delete horizon.
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes & attr::DELETE_HORIZON != 0
    }

    /// True if written by an idempotent or transactional producer.
    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }

    /// Sequence of the last record (wrapping like Kafka's int32 sequences).
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return -1;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        if last > i64::from(i32::MAX) {
            (last - i64::from(i32::MAX) - 1) as i32
        } else {
            last as i32
        }
    }
}

/// CRC-32C of a batch's attributes..end (what the header's `crc` must equal).
pub fn compute_crc(batch: &[u8]) -> u32 {
    assert!(
        batch.len() >= BATCH_HEADER_BYTES,
        "batch of {} bytes",
        batch.len()
    );
    crc32c::crc32c(&batch[offsets::ATTRIBUTES..])
}

/// Checks the CRC of one whole batch (exactly `total_bytes()` long).
pub fn verify_crc(batch: &[u8]) -> Result<(), BatchError> {
    if batch.len() < BATCH_HEADER_BYTES {
        return Err(BatchError::Truncated {
            position: 0,
            need: BATCH_HEADER_BYTES,
            have: batch.len(),
        });
    }
    let stored = be_i32(batch, offsets::CRC) as u32;
    let computed = compute_crc(batch);
    if stored != computed {
        return Err(BatchError::Crc {
            position: 0,
            stored,
            computed,
        });
    }
    Ok(())
}

/// How strictly `split` treats the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Produce input: everything must be whole batches, producer rules apply.
    Produce,
    /// Stored data: a partial trailing batch is allowed (the end of a fetch), no producer rules.
    Stored,
}

/// Splits one partition's produce input into whole, validated batches: length, size bound,
/// magic, CRC, codec bits, record count bounds and `record_count == last_offset_delta + 1`, each
/// checked before anything is allocated for the batch. A truncated trailing batch is
/// CORRUPT_MESSAGE. As in Kafka (Produce v3+), the input must hold exactly one batch: none is
/// `Empty`, more is `MultipleBatches` (both INVALID_RECORD). On success the Vec has one entry.
pub fn split_batches(data: &[u8], bounds: &BatchBounds) -> Result<Vec<BatchSpan>, BatchError> {
    let (batches, tail) = split(data, bounds, Mode::Produce)?;
    assert_eq!(tail, data.len());
    if batches.is_empty() {
        return Err(BatchError::Empty);
    }
    if batches.len() > 1 {
        return Err(BatchError::MultipleBatches {
            position: batches[1].0.start,
        });
    }
    Ok(batches)
}

/// Splits stored bytes (a fetch response's records, a segment read) into validated batches.
/// A partial batch at the end is normal there: it is not returned, and the second value is where
/// the whole batches end. Producer-only rules are not applied (compaction may empty batches).
pub fn split_stored_batches(
    data: &[u8],
    bounds: &BatchBounds,
) -> Result<(Vec<BatchSpan>, usize), BatchError> {
    split(data, bounds, Mode::Stored)
}

fn split(
    data: &[u8],
    bounds: &BatchBounds,
    mode: Mode,
) -> Result<(Vec<BatchSpan>, usize), BatchError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let rest = &data[at..];
        let header = match BatchHeader::parse_at(rest, at) {
            Ok(h) => h,
            Err(BatchError::Truncated { .. }) if mode == Mode::Stored => break,
            Err(e) => return Err(e),
        };
        let total = header.total_bytes();
        if total > bounds.max_batch_bytes {
            return Err(BatchError::TooLarge {
                position: at,
                bytes: total,
                max: bounds.max_batch_bytes,
            });
        }
        if rest.len() < total {
            if mode == Mode::Stored {
                break;
            }
            return Err(BatchError::Truncated {
                position: at,
                need: total,
                have: rest.len(),
            });
        }
        let batch = &rest[..total];
        if header.crc != compute_crc(batch) {
            return Err(BatchError::Crc {
                position: at,
                stored: header.crc,
                computed: compute_crc(batch),
            });
        }
        let count = header.record_count;
        if count < 0 || count > bounds.record_count_max {
            return Err(BatchError::RecordCount {
                position: at,
                record_count: count,
            });
        }
        if mode == Mode::Produce {
            if header.compression().is_none() {
                return Err(BatchError::UnknownCompression {
                    position: at,
                    attributes: header.attributes,
                });
            }
            if header.last_offset_delta < 0
                || i64::from(count) != i64::from(header.last_offset_delta) + 1
            {
                return Err(BatchError::CountMismatch {
                    position: at,
                    record_count: count,
                    last_offset_delta: header.last_offset_delta,
                });
            }
            // Uncompressed records take at least RECORD_BYTES_MIN bytes each.
            if header.compression() == Some(Compression::None)
                && count as usize > (total - BATCH_HEADER_BYTES) / RECORD_BYTES_MIN
            {
                return Err(BatchError::RecordCount {
                    position: at,
                    record_count: count,
                });
            }
        }
        out.push((at..at + total, header));
        at += total;
    }
    Ok((out, at))
}

/// Kafka refuses zstd batches in Produce requests older than v7 (UNSUPPORTED_COMPRESSION_TYPE).
pub fn check_produce_version(header: &BatchHeader, api_version: i16) -> Result<(), BatchError> {
    if header.compression() == Some(Compression::Zstd) && api_version < 7 {
        return Err(BatchError::ZstdBeforeProduceV7 { api_version });
    }
    Ok(())
}

/// Writes `base_offset` into a batch (outside the CRC: no recompute).
pub fn patch_base_offset(batch: &mut [u8], base_offset: i64) {
    assert!(
        batch.len() >= BATCH_HEADER_BYTES,
        "batch of {} bytes",
        batch.len()
    );
    batch[offsets::BASE_OFFSET..offsets::BASE_OFFSET + 8]
        .copy_from_slice(&base_offset.to_be_bytes());
}

/// Writes the partition leader epoch into a batch (outside the CRC: no recompute).
pub fn patch_leader_epoch(batch: &mut [u8], leader_epoch: i32) {
    assert!(
        batch.len() >= BATCH_HEADER_BYTES,
        "batch of {} bytes",
        batch.len()
    );
    let at = offsets::PARTITION_LEADER_EPOCH;
    batch[at..at + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Marks a batch LogAppendTime as Kafka's `DefaultRecordBatch.setMaxTimestamp` does: sets
/// attribute bit 3, writes `append_time_ms` into `max_timestamp` (first timestamp untouched;
/// consumers read every record's time from `max_timestamp`), recomputes the CRC.
pub fn set_log_append_time(batch: &mut [u8], append_time_ms: i64) {
    assert!(
        batch.len() >= BATCH_HEADER_BYTES,
        "batch of {} bytes",
        batch.len()
    );
    let attributes = be_i16(batch, offsets::ATTRIBUTES) | attr::LOG_APPEND_TIME;
    batch[offsets::ATTRIBUTES..offsets::ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    let at = offsets::MAX_TIMESTAMP;
    batch[at..at + 8].copy_from_slice(&append_time_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[offsets::CRC..offsets::CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Rewrites the CRC after some other in-place change to attributes..end.
pub fn rewrite_crc(batch: &mut [u8]) {
    let crc = compute_crc(batch);
    batch[offsets::CRC..offsets::CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Zigzag varint/varlong reader over a byte slice; every read is bounds-checked.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn varlong(&mut self) -> Result<i64, &'static str> {
        let mut raw: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.bytes.get(self.at) else {
                return Err("varint truncated");
            };
            self.at += 1;
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err("varint longer than 10 bytes")
    }

    fn varint(&mut self) -> Result<i32, &'static str> {
        let v = self.varlong()?;
        i32::try_from(v).map_err(|_| "varint out of int32 range")
    }

    fn skip(&mut self, n: usize) -> Result<(), &'static str> {
        if n > self.bytes.len() - self.at {
            return Err("field runs past the record");
        }
        self.at += n;
        Ok(())
    }

    fn byte(&mut self) -> Result<u8, &'static str> {
        let Some(&b) = self.bytes.get(self.at) else {
            return Err("record truncated");
        };
        self.at += 1;
        Ok(b)
    }
}

/// Walks the records of one batch (already split and CRC-checked): decompresses the records
/// section within `bounds.max_uncompressed_bytes`, checks each record's varint framing and
/// length, that there are exactly `record_count` records with offset deltas 0..n-1, and, with
/// `require_keys`, that every record has a non-null key. Keys and values are skipped, never
/// copied.
pub fn validate_records(
    batch: &[u8],
    header: &BatchHeader,
    require_keys: bool,
    bounds: &BatchBounds,
) -> Result<(), BatchError> {
    let total = header.total_bytes();
    if batch.len() < total || total < BATCH_HEADER_BYTES {
        return Err(BatchError::Truncated {
            position: 0,
            need: total,
            have: batch.len(),
        });
    }
    let count = header.record_count;
    if count < 0 || count > bounds.record_count_max {
        return Err(BatchError::RecordCount {
            position: 0,
            record_count: count,
        });
    }
    let raw = &batch[BATCH_HEADER_BYTES..total];
    let codec = header.compression().ok_or(BatchError::UnknownCompression {
        position: 0,
        attributes: header.attributes,
    })?;
    let inflated;
    let section: &[u8] = match codec {
        Compression::None => raw,
        codec => {
            inflated = compression::decompress(codec, raw, bounds.max_uncompressed_bytes)
                .map_err(|error| BatchError::Decompress { error })?;
            &inflated
        }
    };
    if count as usize > section.len() / RECORD_BYTES_MIN {
        return Err(BatchError::RecordCount {
            position: 0,
            record_count: count,
        });
    }
    let mut c = Cursor {
        bytes: section,
        at: 0,
    };
    for i in 0..count {
        let framing = |detail| BatchError::RecordFraming { record: i, detail };
        let len = c.varint().map_err(framing)?;
        let len = usize::try_from(len).map_err(|_| framing("negative record length"))?;
        if len > section.len() - c.at {
            return Err(framing("record runs past the batch"));
        }
        let end = c.at + len;
        let mut r = Cursor {
            bytes: &section[..end],
            at: c.at,
        };
        r.byte().map_err(framing)?; // attributes (unused in v2)
        r.varlong().map_err(framing)?; // timestamp delta
        let offset_delta = r.varint().map_err(framing)?;
        if offset_delta != i {
            return Err(BatchError::OffsetDelta {
                record: i,
                offset_delta,
            });
        }
        let key_len = r.varint().map_err(framing)?;
        if key_len < -1 {
            return Err(framing("negative key length"));
        }
        if key_len == -1 && require_keys {
            return Err(BatchError::NullKey { record: i });
        }
        r.skip(key_len.max(0) as usize).map_err(framing)?;
        let value_len = r.varint().map_err(framing)?;
        if value_len < -1 {
            return Err(framing("negative value length"));
        }
        r.skip(value_len.max(0) as usize).map_err(framing)?;
        let headers = r.varint().map_err(framing)?;
        if !(0..=RECORD_HEADERS_MAX).contains(&headers) {
            return Err(framing("bad header count"));
        }
        for _ in 0..headers {
            let k = r.varint().map_err(framing)?;
            if k < 0 {
                return Err(framing("null header key"));
            }
            r.skip(k as usize).map_err(framing)?;
            let v = r.varint().map_err(framing)?;
            if v < -1 {
                return Err(framing("negative header value length"));
            }
            r.skip(v.max(0) as usize).map_err(framing)?;
        }
        if r.at != end {
            return Err(framing("record length disagrees with its fields"));
        }
        c.at = end;
    }
    if c.at != section.len() {
        return Err(BatchError::RecordFraming {
            record: count,
            detail: "bytes after last record",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression as KCompression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use proptest::prelude::*;

    /// One record (key "k", value "v", no headers), base offset 0, leader epoch -1, CreateTime
    /// 1_700_000_000_000 for first and max timestamp, no producer id. Assembled by hand from the
    /// layout in Kafka's `DefaultRecordBatch`; its CRC-32C was computed independently.
    const GOLDEN_BATCH: &str = "00000000000000000000003affffffff02e99b8dd8000000000000000001\
        8bcfe568000000018bcfe56800ffffffffffffffffffffffffffff0000000110000000026b027600";
    const GOLDEN_CRC: u32 = 0xe99b_8dd8;
    const TS: i64 = 1_700_000_000_000;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn golden() -> Vec<u8> {
        unhex(GOLDEN_BATCH)
    }

    /// Builds a batch with kafka-protocol's encoder (compressing with our codecs), as an
    /// independent producer of valid batches.
    fn crate_batch(n: usize, codec: Compression, keys: bool, producer_id: i64) -> Vec<u8> {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id,
                producer_epoch: if producer_id >= 0 { 0 } else { -1 },
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: if producer_id >= 0 { i as i32 } else { -1 },
                timestamp: TS + i as i64,
                key: keys.then(|| Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(vec![b'v'; i % 50])),
                headers: [(
                    kafka_protocol::protocol::StrBytes::from_static_str("h"),
                    Some(Bytes::from_static(b"x")),
                )]
                .into_iter()
                .collect(),
            })
            .collect();
        let kc = match codec {
            Compression::None => KCompression::None,
            Compression::Gzip => KCompression::Gzip,
            Compression::Snappy => KCompression::Snappy,
            Compression::Lz4 => KCompression::Lz4,
            Compression::Zstd => KCompression::Zstd,
        };
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode_with_custom_compression(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: kc,
            },
            Some(|src: &mut BytesMut, out: &mut BytesMut, _c: KCompression| {
                out.put_slice(&compression::compress(codec, src));
                Ok(())
            }),
        )
        .unwrap();
        buf.to_vec()
    }

    #[test]
    fn golden_batch_parses_with_known_crc() {
        let b = golden();
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.base_offset, 0);
        assert_eq!(h.batch_length, 58);
        assert_eq!(h.total_bytes(), 70);
        assert_eq!(h.partition_leader_epoch, -1);
        assert_eq!(h.crc, GOLDEN_CRC);
        assert_eq!(compute_crc(&b), GOLDEN_CRC);
        assert_eq!((h.first_timestamp, h.max_timestamp), (TS, TS));
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (-1, -1, -1)
        );
        assert_eq!(
            (h.record_count, h.last_offset_delta, h.last_offset()),
            (1, 0, 0)
        );
        assert_eq!(h.compression(), Some(Compression::None));
        assert!(!h.is_log_append_time() && !h.is_transactional() && !h.is_control());
        assert!(!h.is_idempotent());
        verify_crc(&b).unwrap();
        let split = split_batches(&b, &BatchBounds::DEFAULT).unwrap();
        assert_eq!(split, vec![(0..70, h)]);
        validate_records(&b, &h, true, &BatchBounds::DEFAULT).unwrap();
    }

    #[test]
    fn patches_keep_the_crc_valid() {
        let mut b = golden();
        patch_base_offset(&mut b, 1234);
        patch_leader_epoch(&mut b, 7);
        verify_crc(&b).unwrap();
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(
            (h.base_offset, h.partition_leader_epoch, h.crc),
            (1234, 7, GOLDEN_CRC)
        );
        assert_eq!(h.next_offset(), 1235);
        set_log_append_time(&mut b, TS + 99);
        verify_crc(&b).unwrap();
        let h = BatchHeader::parse(&b).unwrap();
        assert!(h.is_log_append_time());
        assert_eq!((h.first_timestamp, h.max_timestamp), (TS, TS + 99));
        assert_ne!(h.crc, GOLDEN_CRC);
        validate_records(&b, &h, true, &BatchBounds::DEFAULT).unwrap();
    }

    #[test]
    fn each_defect_gets_kafkas_error_code() {
        let bounds = BatchBounds::DEFAULT;
        let check = |b: &[u8], expect: ErrorCode| {
            let e = split_batches(b, &bounds).unwrap_err();
            assert_eq!(e.error_code(), expect, "{e}");
            e
        };
        let mut b = golden();
        b[66] ^= 1; // a record byte: CRC mismatch
        assert!(matches!(
            check(&b, code::CORRUPT_MESSAGE),
            BatchError::Crc { .. }
        ));
        let mut b = golden();
        b[offsets::MAGIC] = 1;
        check(&b, code::INVALID_RECORD);
        b[offsets::MAGIC] = 9;
        check(&b, code::CORRUPT_MESSAGE);
        let mut b = golden();
        b[offsets::BATCH_LENGTH + 3] = 48;
        assert!(matches!(
            check(&b, code::CORRUPT_MESSAGE),
            BatchError::LengthTooSmall { .. }
        ));
        let e = split_batches(&golden(), &BatchBounds::with_max_batch_bytes(69)).unwrap_err();
        assert_eq!(e.error_code(), code::MESSAGE_TOO_LARGE);
        // Record count that disagrees with the last offset delta (CRC made valid again).
        let mut b = golden();
        b[offsets::RECORD_COUNT + 3] = 2;
        rewrite_crc(&mut b);
        assert!(matches!(
            check(&b, code::INVALID_RECORD),
            BatchError::CountMismatch { .. }
        ));
        // Count and delta agree but the bytes cannot hold that many records.
        b[offsets::LAST_OFFSET_DELTA + 3] = 1;
        rewrite_crc(&mut b);
        check(&b, code::INVALID_RECORD);
        // Count beyond the bound.
        let mut b = golden();
        b[offsets::RECORD_COUNT..offsets::RECORD_COUNT + 4]
            .copy_from_slice(&i32::MAX.to_be_bytes());
        rewrite_crc(&mut b);
        assert!(matches!(
            check(&b, code::INVALID_RECORD),
            BatchError::RecordCount { .. }
        ));
        assert_eq!(split_batches(&[], &bounds).unwrap_err(), BatchError::Empty);
        assert_eq!(BatchError::Empty.error_code(), code::INVALID_RECORD);
        // Unknown codec bits.
        let mut b = golden();
        b[offsets::ATTRIBUTES + 1] = 6;
        rewrite_crc(&mut b);
        check(&b, code::CORRUPT_MESSAGE);
    }

    #[test]
    fn truncated_tail_is_corrupt_in_produce_but_normal_in_stored_data() {
        let mut two = golden();
        two.extend_from_slice(&golden());
        let e = split_batches(&two, &BatchBounds::DEFAULT).unwrap_err();
        assert_eq!(e, BatchError::MultipleBatches { position: 70 });
        assert_eq!(e.error_code(), code::INVALID_RECORD);
        assert_eq!(
            split_stored_batches(&two, &BatchBounds::DEFAULT)
                .unwrap()
                .0
                .len(),
            2
        );
        for cut in [71, 80, 130, 139] {
            let e = split_batches(&two[..cut], &BatchBounds::DEFAULT).unwrap_err();
            assert!(
                matches!(e, BatchError::Truncated { position: 70, .. }),
                "{e}"
            );
            assert_eq!(e.error_code(), code::CORRUPT_MESSAGE);
            let (batches, end) = split_stored_batches(&two[..cut], &BatchBounds::DEFAULT).unwrap();
            assert_eq!((batches.len(), end), (1, 70));
        }
    }

    #[test]
    fn null_keys_and_bad_offset_deltas() {
        let b = crate_batch(3, Compression::None, false, -1);
        let h = BatchHeader::parse(&b).unwrap();
        validate_records(&b, &h, false, &BatchBounds::DEFAULT).unwrap();
        let e = validate_records(&b, &h, true, &BatchBounds::DEFAULT).unwrap_err();
        assert_eq!(e, BatchError::NullKey { record: 0 });
        assert_eq!(e.error_code(), code::INVALID_RECORD);
        // Golden record's offset delta byte is at 61 + 3; make it 1 (zigzag 2).
        let mut g = golden();
        g[64] = 2;
        rewrite_crc(&mut g);
        let h = BatchHeader::parse(&g).unwrap();
        let e = validate_records(&g, &h, false, &BatchBounds::DEFAULT).unwrap_err();
        assert_eq!(
            e,
            BatchError::OffsetDelta {
                record: 0,
                offset_delta: 1
            }
        );
        // A record length that disagrees with its fields.
        let mut g = golden();
        g[61] = 0x12;
        let h = BatchHeader::parse(&g).unwrap();
        let e = validate_records(&g, &h, false, &BatchBounds::DEFAULT).unwrap_err();
        assert_eq!(e.error_code(), code::CORRUPT_MESSAGE);
    }

    #[test]
    fn crate_encoded_batches_validate_with_every_codec() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            for n in [1usize, 2, 100] {
                let b = crate_batch(n, codec, true, 42);
                let batches = split_batches(&b, &BatchBounds::DEFAULT).unwrap();
                assert_eq!(batches.len(), 1, "{codec:?}");
                let (range, h) = &batches[0];
                assert_eq!(*range, 0..b.len());
                assert_eq!(h.compression(), Some(codec));
                assert_eq!(h.record_count as usize, n);
                assert_eq!((h.producer_id, h.base_sequence), (42, 0));
                assert_eq!(h.last_sequence(), n as i32 - 1);
                validate_records(&b, h, true, &BatchBounds::DEFAULT)
                    .unwrap_or_else(|e| panic!("{codec:?} {n}: {e}"));
                if codec != Compression::None {
                    let tight = BatchBounds {
                        max_uncompressed_bytes: 8,
                        ..BatchBounds::DEFAULT
                    };
                    let e = validate_records(&b, h, true, &tight).unwrap_err();
                    assert!(matches!(e, BatchError::Decompress { .. }), "{e}");
                }
            }
        }
    }

    #[test]
    fn zstd_needs_produce_v7() {
        let b = crate_batch(2, Compression::Zstd, true, -1);
        let h = BatchHeader::parse(&b).unwrap();
        let e = check_produce_version(&h, 6).unwrap_err();
        assert_eq!(e.error_code(), code::UNSUPPORTED_COMPRESSION_TYPE);
        check_produce_version(&h, 7).unwrap();
        check_produce_version(&BatchHeader::parse(&golden()).unwrap(), 3).unwrap();
    }

    #[test]
    fn sequences_wrap_like_kafka() {
        let mut h = BatchHeader::parse(&golden()).unwrap();
        h.base_sequence = i32::MAX;
        h.last_offset_delta = 2;
        assert_eq!(h.last_sequence(), 1);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..300)) {
            let bounds = BatchBounds::DEFAULT;
            let _ = split_batches(&data, &bounds);
            let _ = split_stored_batches(&data, &bounds);
            if let Ok(h) = BatchHeader::parse(&data) {
                let _ = validate_records(&data, &h, true, &bounds);
            }
        }

        #[test]
        fn mutated_batches_never_panic(
            codec in 0usize..5,
            n in 1usize..20,
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            fix_crc in any::<bool>(),
        ) {
            let codecs = [Compression::None, Compression::Gzip, Compression::Snappy,
                Compression::Lz4, Compression::Zstd];
            let mut b = crate_batch(n, codecs[codec], n % 2 == 0, -1);
            for (at, x) in flips {
                let i = at.index(b.len());
                b[i] ^= x;
            }
            if fix_crc && b.len() >= BATCH_HEADER_BYTES {
                rewrite_crc(&mut b);
            }
            let bounds = BatchBounds { max_uncompressed_bytes: 1 << 16, ..BatchBounds::DEFAULT };
            if let Ok(batches) = split_batches(&b, &bounds) {
                for (range, h) in batches {
                    let _ = validate_records(&b[range], &h, true, &bounds);
                }
            }
        }
    }
}
