//! Client-side record batches (v2, magic 2): build a batch from records, decode stored batches
//! back into records. Used by the pure-Rust client, the simulator's workloads and tests.
//! Never panics on input bytes and never allocates from an untrusted count or length before
//! checking it against a named bound; the broker's produce path never calls the decoder here.

use bytes::{BufMut, Bytes, BytesMut};

use crate::compression::{self, Compression};

/// Bytes of the v2 batch header, from base offset to record count inclusive.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before the batch-length field ends (base offset + batch length): not counted in it.
pub const BATCH_LOG_OVERHEAD_BYTES: usize = 12;
/// Largest batch (whole, header included) the decoder accepts.
pub const BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Largest decompressed records section the decoder inflates to.
pub const DECOMPRESSED_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most records one batch may claim.
pub const RECORDS_PER_BATCH_MAX: usize = 1_000_000;
/// Most batches one call to the decoder walks.
pub const BATCHES_PER_DECODE_MAX: usize = 100_000;
/// Most headers one record may carry.
pub const HEADERS_PER_RECORD_MAX: usize = 10_000;
/// The smallest possible encoded record: length, attributes, timestamp delta, offset delta,
/// key length, value length and header count, one byte each.
const RECORD_BYTES_MIN: usize = 7;

const MAGIC_V2: i8 = 2;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;
const TIMESTAMP_TYPE_LOG_APPEND_TIME: i16 = 0x08;

// Field offsets inside the 61-byte header.
const OFF_BATCH_LENGTH: usize = 8;
#[cfg_attr(not(test), allow(dead_code))]
const OFF_LEADER_EPOCH: usize = 12;
const OFF_MAGIC: usize = 16;
const OFF_CRC: usize = 17;
const OFF_ATTRIBUTES: usize = 21;
const OFF_LAST_OFFSET_DELTA: usize = 23;
const OFF_FIRST_TIMESTAMP: usize = 27;
#[cfg_attr(not(test), allow(dead_code))]
const OFF_MAX_TIMESTAMP: usize = 35;
#[cfg_attr(not(test), allow(dead_code))]
const OFF_PRODUCER_ID: usize = 43;
#[cfg_attr(not(test), allow(dead_code))]
const OFF_PRODUCER_EPOCH: usize = 51;
#[cfg_attr(not(test), allow(dead_code))]
const OFF_BASE_SEQUENCE: usize = 53;
const OFF_RECORD_COUNT: usize = 57;

const _: () = assert!(OFF_RECORD_COUNT + 4 == BATCH_HEADER_BYTES);
const _: () = assert!(DECOMPRESSED_BYTES_MAX >= BATCH_BYTES_MAX);
const _: () = assert!(RECORDS_PER_BATCH_MAX <= i32::MAX as usize);

/// One Kafka record as an application sees it. Headers are a list: duplicate keys are legal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    pub timestamp_ms: i64,
}

/// How `build_batch` frames the records.
#[derive(Clone, Debug)]
pub struct BatchOptions {
    pub compression: Compression,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub transactional: bool,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            compression: Compression::None,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
        }
    }
}

/// Why stored bytes could not be decoded into records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordsError {
    /// Fewer bytes than a field or a batch needs.
    Truncated { position_bytes: usize },
    /// A magic byte other than 2.
    Magic { position_bytes: usize, magic: i8 },
    /// Batch length below the header size or above `BATCH_BYTES_MAX`.
    BatchLength {
        position_bytes: usize,
        batch_length: i64,
    },
    /// CRC-32C over attributes..end does not match the stored one.
    Crc {
        position_bytes: usize,
        stored: u32,
        computed: u32,
    },
    /// Compression bits name no codec we know.
    CompressionCodec { position_bytes: usize, codec: i16 },
    /// The records section did not decompress (corrupt, or larger than the bound).
    Decompress { position_bytes: usize },
    /// Record count negative, above the bound, or disagreeing with the records present.
    RecordCount {
        position_bytes: usize,
        record_count: i64,
    },
    /// A record's own framing is wrong (bad varint, negative length, bytes left over, ...).
    Record {
        position_bytes: usize,
        what: &'static str,
    },
    /// More than `BATCHES_PER_DECODE_MAX` batches.
    TooManyBatches,
}

impl std::fmt::Display for RecordsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for RecordsError {}

// ---------------------------------------------------------------------------------------------
// Encoding.

fn put_varint(buf: &mut Vec<u8>, value: i64) {
    // Zigzag, then unsigned LEB128: the same encoding for Kafka's varint and varlong.
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_nullable_bytes(buf: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(buf, -1),
        Some(b) => {
            put_varint(buf, b.len() as i64);
            buf.extend_from_slice(b);
        }
    }
}

fn encode_record(out: &mut Vec<u8>, record: &Record, base_timestamp_ms: i64, offset_delta: i64) {
    let mut body = Vec::with_capacity(
        16 + record.key.as_ref().map_or(0, |k| k.len())
            + record.value.as_ref().map_or(0, |v| v.len()),
    );
    body.push(0); // Record attributes: unused, always 0.
    put_varint(
        &mut body,
        record.timestamp_ms.wrapping_sub(base_timestamp_ms),
    );
    put_varint(&mut body, offset_delta);
    put_nullable_bytes(&mut body, record.key.as_deref());
    put_nullable_bytes(&mut body, record.value.as_deref());
    put_varint(&mut body, record.headers.len() as i64);
    for (key, value) in &record.headers {
        put_nullable_bytes(&mut body, Some(key.as_bytes()));
        put_nullable_bytes(&mut body, value.as_deref());
    }
    put_varint(out, body.len() as i64);
    out.extend_from_slice(&body);
}

/// Builds one v2 record batch holding `records`, with base offset 0 and leader epoch -1 (the
/// broker assigns both). An empty slice yields an empty buffer: Kafka has no empty producer
/// batches. Panics only if `records` has more than `RECORDS_PER_BATCH_MAX` entries, which is a
/// caller bug, not input.
pub fn build_batch(records: &[Record], options: &BatchOptions) -> BytesMut {
    if records.is_empty() {
        return BytesMut::new();
    }
    assert!(
        records.len() <= RECORDS_PER_BATCH_MAX,
        "batch of {} records",
        records.len()
    );
    let base_timestamp_ms = records[0].timestamp_ms;
    let max_timestamp_ms = records
        .iter()
        .map(|r| r.timestamp_ms)
        .max()
        .unwrap_or(base_timestamp_ms);

    let mut section = Vec::new();
    for (delta, record) in records.iter().enumerate() {
        encode_record(&mut section, record, base_timestamp_ms, delta as i64);
    }
    let section = match options.compression {
        Compression::None => section,
        codec => compression::compress(codec, &section),
    };

    let mut attributes = options.compression.attribute_bits();
    if options.transactional {
        attributes |= ATTR_TRANSACTIONAL;
    }
    let total_bytes = BATCH_HEADER_BYTES + section.len();
    let mut buf = BytesMut::with_capacity(total_bytes);
    buf.put_i64(0); // Base offset: assigned by the broker.
    buf.put_i32((total_bytes - BATCH_LOG_OVERHEAD_BYTES) as i32);
    buf.put_i32(-1); // Partition leader epoch: set by the broker.
    buf.put_i8(MAGIC_V2);
    buf.put_u32(0); // CRC, filled in below.
    buf.put_i16(attributes);
    buf.put_i32((records.len() - 1) as i32);
    buf.put_i64(base_timestamp_ms);
    buf.put_i64(max_timestamp_ms);
    buf.put_i64(options.producer_id);
    buf.put_i16(options.producer_epoch);
    buf.put_i32(options.base_sequence);
    buf.put_i32(records.len() as i32);
    buf.put_slice(&section);
    assert_eq!(buf.len(), total_bytes);
    let crc = crc32c::crc32c(&buf[OFF_ATTRIBUTES..]);
    buf[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    buf
}

// ---------------------------------------------------------------------------------------------
// Decoding.

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// The header fields the decoder needs, read from a slice known to hold 61 bytes.
#[derive(Clone, Copy, Debug)]
struct Header {
    base_offset: i64,
    batch_length: i32,
    attributes: i16,
    last_offset_delta: i32,
    first_timestamp_ms: i64,
    max_timestamp_ms: i64,
    record_count: i32,
}

impl Header {
    fn read(b: &[u8]) -> Header {
        assert!(b.len() >= BATCH_HEADER_BYTES);
        Header {
            base_offset: be_i64(b, 0),
            batch_length: be_i32(b, OFF_BATCH_LENGTH),
            attributes: be_i16(b, OFF_ATTRIBUTES),
            last_offset_delta: be_i32(b, OFF_LAST_OFFSET_DELTA),
            first_timestamp_ms: be_i64(b, OFF_FIRST_TIMESTAMP),
            max_timestamp_ms: be_i64(b, OFF_MAX_TIMESTAMP),
            record_count: be_i32(b, OFF_RECORD_COUNT),
        }
    }
}

/// A cursor over untrusted bytes; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
    /// Where `bytes` starts in the caller's buffer, for error positions.
    base_position: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, what: &'static str) -> RecordsError {
        RecordsError::Record {
            position_bytes: self.base_position + self.position,
            what,
        }
    }

    fn varint(&mut self, max_bytes: usize) -> Result<i64, RecordsError> {
        let mut raw: u64 = 0;
        for i in 0..max_bytes {
            let Some(&byte) = self.bytes.get(self.position) else {
                return Err(self.err("truncated varint"));
            };
            self.position += 1;
            raw |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err(self.err("varint too long"))
    }

    fn varint32(&mut self) -> Result<i64, RecordsError> {
        let v = self.varint(5)?;
        if v < i64::from(i32::MIN) || v > i64::from(i32::MAX) {
            return Err(self.err("varint out of range"));
        }
        Ok(v)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], RecordsError> {
        let end = self
            .position
            .checked_add(len)
            .ok_or_else(|| self.err("length overflow"))?;
        let Some(slice) = self.bytes.get(self.position..end) else {
            return Err(self.err("length beyond the bytes present"));
        };
        self.position = end;
        Ok(slice)
    }

    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, RecordsError> {
        let len = self.varint32()?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| self.err("negative length"))?;
        self.take(len).map(Some)
    }
}

fn decode_record(reader: &mut Reader<'_>, header: &Header) -> Result<(i64, Record), RecordsError> {
    let length = reader.varint32()?;
    let length = usize::try_from(length).map_err(|_| reader.err("negative record length"))?;
    let start = reader.position;
    let body = reader.take(length)?;
    let mut r = Reader {
        bytes: body,
        position: 0,
        base_position: reader.base_position + start,
    };
    let _attributes = r.take(1)?;
    let timestamp_delta = r.varint(10)?;
    let offset_delta = r.varint32()?;
    let key = r.nullable_bytes()?.map(Bytes::copy_from_slice);
    let value = r.nullable_bytes()?.map(Bytes::copy_from_slice);
    let header_count = r.varint32()?;
    let header_count = usize::try_from(header_count).map_err(|_| r.err("negative header count"))?;
    // Each header takes at least two bytes: check before allocating.
    if header_count > HEADERS_PER_RECORD_MAX || header_count * 2 > body.len() - r.position {
        return Err(r.err("header count beyond bound"));
    }
    let mut headers = Vec::with_capacity(header_count);
    for _ in 0..header_count {
        let Some(key) = r.nullable_bytes()? else {
            return Err(r.err("null header key"));
        };
        let key = std::str::from_utf8(key).map_err(|_| r.err("header key not UTF-8"))?;
        let value = r.nullable_bytes()?.map(Bytes::copy_from_slice);
        headers.push((key.to_owned(), value));
    }
    if r.position != body.len() {
        return Err(r.err("bytes left over in record"));
    }
    let offset = header.base_offset.wrapping_add(offset_delta);
    // With LogAppendTime (attribute bit 3) every record carries the broker's append time, which
    // lives in the batch's max timestamp; the per-record deltas are the producer's.
    let timestamp_ms = if header.attributes & TIMESTAMP_TYPE_LOG_APPEND_TIME != 0 {
        header.max_timestamp_ms
    } else {
        header.first_timestamp_ms.wrapping_add(timestamp_delta)
    };
    Ok((
        offset,
        Record {
            key,
            value,
            headers,
            timestamp_ms,
        },
    ))
}

/// What to do with a batch cut short at the end of the buffer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trailing {
    Reject,
    /// Fetch responses may end in a partial batch (the broker cuts at `max_bytes`).
    Ignore,
}

fn decode_batches(bytes: &[u8], trailing: Trailing) -> Result<Vec<(i64, Record)>, RecordsError> {
    let mut out = Vec::new();
    let mut position = 0usize;
    let mut batches = 0usize;
    while position < bytes.len() {
        let rest = &bytes[position..];
        if rest.len() < BATCH_LOG_OVERHEAD_BYTES {
            return match trailing {
                Trailing::Ignore => Ok(out),
                Trailing::Reject => Err(RecordsError::Truncated {
                    position_bytes: position,
                }),
            };
        }
        let batch_length = i64::from(be_i32(rest, OFF_BATCH_LENGTH));
        let total = batch_length + BATCH_LOG_OVERHEAD_BYTES as i64;
        if total < BATCH_HEADER_BYTES as i64 || total > BATCH_BYTES_MAX as i64 {
            return Err(RecordsError::BatchLength {
                position_bytes: position,
                batch_length,
            });
        }
        let total = total as usize;
        if rest.len() < total {
            return match trailing {
                Trailing::Ignore => Ok(out),
                Trailing::Reject => Err(RecordsError::Truncated {
                    position_bytes: position,
                }),
            };
        }
        batches += 1;
        if batches > BATCHES_PER_DECODE_MAX {
            return Err(RecordsError::TooManyBatches);
        }
        decode_one_batch(&rest[..total], position, &mut out)?;
        position += total;
    }
    Ok(out)
}

fn decode_one_batch(
    batch: &[u8],
    position: usize,
    out: &mut Vec<(i64, Record)>,
) -> Result<(), RecordsError> {
    assert!(batch.len() >= BATCH_HEADER_BYTES);
    let magic = batch[OFF_MAGIC] as i8;
    if magic != MAGIC_V2 {
        return Err(RecordsError::Magic {
            position_bytes: position,
            magic,
        });
    }
    let stored = u32::from_be_bytes([
        batch[OFF_CRC],
        batch[OFF_CRC + 1],
        batch[OFF_CRC + 2],
        batch[OFF_CRC + 3],
    ]);
    let computed = crc32c::crc32c(&batch[OFF_ATTRIBUTES..]);
    if stored != computed {
        return Err(RecordsError::Crc {
            position_bytes: position,
            stored,
            computed,
        });
    }
    let header = Header::read(batch);
    debug_assert_eq!(
        header.batch_length as usize + BATCH_LOG_OVERHEAD_BYTES,
        batch.len()
    );
    let record_count = header.record_count;
    let count_error = RecordsError::RecordCount {
        position_bytes: position,
        record_count: record_count.into(),
    };
    let Ok(count) = usize::try_from(record_count) else {
        return Err(count_error);
    };
    if count > RECORDS_PER_BATCH_MAX || i64::from(header.last_offset_delta) < count as i64 - 1 {
        return Err(count_error);
    }
    let codec_bits = header.attributes & Compression::ATTRIBUTE_MASK;
    let Some(codec) = Compression::from_attributes(codec_bits) else {
        return Err(RecordsError::CompressionCodec {
            position_bytes: position,
            codec: codec_bits,
        });
    };
    if header.attributes & ATTR_CONTROL != 0 {
        // Transaction markers occupy offsets but are never delivered to applications.
        return Ok(());
    }
    let raw = &batch[BATCH_HEADER_BYTES..];
    let inflated;
    let section: &[u8] = match codec {
        Compression::None => raw,
        codec => {
            inflated =
                compression::decompress(codec, raw, DECOMPRESSED_BYTES_MAX).map_err(|_| {
                    RecordsError::Decompress {
                        position_bytes: position,
                    }
                })?;
            &inflated
        }
    };
    // Every record takes at least RECORD_BYTES_MIN bytes: a count the bytes cannot hold is a lie.
    if count.saturating_mul(RECORD_BYTES_MIN) > section.len() {
        return Err(count_error);
    }
    out.reserve(count);
    let mut reader = Reader {
        bytes: section,
        position: 0,
        base_position: position,
    };
    for _ in 0..count {
        out.push(decode_record(&mut reader, &header)?);
    }
    if reader.position != section.len() {
        return Err(count_error);
    }
    Ok(())
}

/// Decodes one or more complete stored batches into `(offset, record)` pairs, in order.
/// Verifies magic, CRC-32C and record counts; control batches (transaction markers) yield no
/// records. A batch cut short at the end is an error.
pub fn decode_records(bytes: &[u8]) -> Result<Vec<(i64, Record)>, RecordsError> {
    decode_batches(bytes, Trailing::Reject)
}

/// Like `decode_records`, for the records field of a Fetch response: a partial batch at the end
/// (the broker cut the response at its byte limit) is ignored rather than an error.
pub fn decode_fetched(bytes: &[u8]) -> Result<Vec<(i64, Record)>, RecordsError> {
    decode_batches(bytes, Trailing::Ignore)
}

/// The offset after the last complete batch in `bytes` (base offset + last offset delta + 1),
/// if there is one. Lets a consumer skip past batches that hold only control records.
pub fn next_offset_after(bytes: &[u8]) -> Option<i64> {
    let mut position = 0usize;
    let mut next = None;
    for _ in 0..BATCHES_PER_DECODE_MAX {
        let rest = bytes.get(position..)?;
        if rest.len() < BATCH_HEADER_BYTES {
            break;
        }
        let header = Header::read(rest);
        let total = i64::from(header.batch_length) + BATCH_LOG_OVERHEAD_BYTES as i64;
        if total < BATCH_HEADER_BYTES as i64 || total > rest.len() as i64 {
            break;
        }
        next = Some(
            header
                .base_offset
                .wrapping_add(i64::from(header.last_offset_delta))
                + 1,
        );
        position += total as usize;
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::StrBytes;
    use proptest::prelude::*;

    fn record(key: &str, value: &str, ts: i64) -> Record {
        Record {
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: vec![
                ("h".to_owned(), Some(Bytes::from_static(b"v"))),
                ("h".into(), None),
            ],
            timestamp_ms: ts,
        }
    }

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn records_batch_header_fields_are_kafkas() {
        let records = vec![
            record("a", "1", 1_000),
            record("b", "2", 3_000),
            record("c", "", 2_000),
        ];
        let options = BatchOptions {
            producer_id: 7,
            producer_epoch: 3,
            base_sequence: 42,
            ..BatchOptions::default()
        };
        let batch = build_batch(&records, &options);
        assert_eq!(be_i64(&batch, 0), 0);
        assert_eq!(be_i32(&batch, OFF_BATCH_LENGTH) as usize, batch.len() - 12);
        assert_eq!(be_i32(&batch, OFF_LEADER_EPOCH), -1);
        assert_eq!(batch[OFF_MAGIC], 2);
        assert_eq!(be_i16(&batch, OFF_ATTRIBUTES), 0);
        assert_eq!(be_i32(&batch, OFF_LAST_OFFSET_DELTA), 2);
        assert_eq!(be_i64(&batch, OFF_FIRST_TIMESTAMP), 1_000);
        assert_eq!(be_i64(&batch, OFF_MAX_TIMESTAMP), 3_000);
        assert_eq!(be_i64(&batch, OFF_PRODUCER_ID), 7);
        assert_eq!(be_i16(&batch, OFF_PRODUCER_EPOCH), 3);
        assert_eq!(be_i32(&batch, OFF_BASE_SEQUENCE), 42);
        assert_eq!(be_i32(&batch, OFF_RECORD_COUNT), 3);
        let crc = u32::from_be_bytes(batch[OFF_CRC..OFF_CRC + 4].try_into().unwrap());
        assert_eq!(crc, crc32c::crc32c(&batch[OFF_ATTRIBUTES..]));
    }

    #[test]
    fn records_known_record_encoding() {
        // key "k", value "v", no headers, timestamp equal to the base: Kafka's byte layout.
        let r = Record {
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![],
            timestamp_ms: 5,
        };
        let batch = build_batch(&[r], &BatchOptions::default());
        // length 8 (zigzag 16), attrs 0, ts delta 0, offset delta 0, key len 1 (zigzag 2) 'k',
        // value len 1 'v', header count 0.
        assert_eq!(&batch[61..], &[16, 0, 0, 0, 2, b'k', 2, b'v', 0]);
    }

    #[test]
    fn records_decode_assigns_offsets_from_base() {
        let records = vec![record("a", "1", 10), record("b", "2", 5)];
        let mut first = build_batch(&records, &BatchOptions::default());
        first[0..8].copy_from_slice(&100i64.to_be_bytes()); // Outside the CRC.
        let second = build_batch(&records[..1], &BatchOptions::default());
        let mut both = first.to_vec();
        both.extend_from_slice(&second);
        let decoded = decode_records(&both).unwrap();
        let offsets: Vec<i64> = decoded.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, vec![100, 101, 0]);
        assert_eq!(decoded[1].1, records[1]);
    }

    #[test]
    fn records_partial_trailing_batch() {
        let batch = build_batch(&[record("a", "1", 10)], &BatchOptions::default());
        let mut bytes = batch.to_vec();
        bytes.extend_from_slice(&batch[..30]);
        assert!(matches!(
            decode_records(&bytes),
            Err(RecordsError::Truncated { .. })
        ));
        assert_eq!(decode_fetched(&bytes).unwrap().len(), 1);
        assert_eq!(next_offset_after(&bytes), Some(1));
    }

    #[test]
    fn records_bad_crc_magic_and_lying_count_are_errors() {
        let batch = build_batch(&[record("a", "1", 10)], &BatchOptions::default());
        let mut bad = batch.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(
            decode_records(&bad),
            Err(RecordsError::Crc { .. })
        ));

        let mut bad = batch.to_vec();
        bad[OFF_MAGIC] = 1;
        assert!(matches!(
            decode_records(&bad),
            Err(RecordsError::Magic { magic: 1, .. })
        ));

        for lie in [2i32, -1, i32::MAX] {
            let mut bad = batch.to_vec();
            bad[OFF_RECORD_COUNT..OFF_RECORD_COUNT + 4].copy_from_slice(&lie.to_be_bytes());
            let crc = crc32c::crc32c(&bad[OFF_ATTRIBUTES..]);
            bad[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
            assert!(matches!(
                decode_records(&bad),
                Err(RecordsError::RecordCount { .. })
            ));
        }
    }

    #[test]
    fn records_control_batches_yield_nothing() {
        let mut bad = build_batch(&[record("a", "1", 10)], &BatchOptions::default()).to_vec();
        bad[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2]
            .copy_from_slice(&(ATTR_CONTROL | ATTR_TRANSACTIONAL).to_be_bytes());
        let crc = crc32c::crc32c(&bad[OFF_ATTRIBUTES..]);
        bad[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(decode_records(&bad).unwrap(), vec![]);
        assert_eq!(next_offset_after(&bad), Some(1));
    }

    #[test]
    fn records_every_codec_round_trips() {
        let records: Vec<Record> = (0..50)
            .map(|i| record(&format!("k{i}"), &"x".repeat(i * 10), i as i64))
            .collect();
        for codec in CODECS {
            let options = BatchOptions {
                compression: codec,
                ..BatchOptions::default()
            };
            let batch = build_batch(&records, &options);
            assert_eq!(be_i16(&batch, OFF_ATTRIBUTES), codec.attribute_bits());
            let decoded = decode_records(&batch).unwrap();
            let expected: Vec<(i64, Record)> = records
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, r)| (i as i64, r))
                .collect();
            assert_eq!(decoded, expected, "codec {codec:?}");
        }
    }

    /// Independent check against kafka-protocol's own encoder/decoder: the same records give
    /// byte-identical batches, and each side decodes the other's.
    #[test]
    fn records_match_kafka_protocol_encoder_byte_for_byte() {
        use kafka_protocol::records as kp;
        let ours: Vec<Record> = (0..4)
            .map(|i| Record {
                key: (i != 1).then(|| Bytes::from(format!("key{i}"))),
                value: (i != 2).then(|| Bytes::from("v".repeat(i * 3))),
                headers: vec![
                    ("a".to_owned(), Some(Bytes::from_static(b"1"))),
                    ("b".into(), None),
                ],
                // Ascending: kafka-protocol bases a batch on its smallest timestamp, Kafka's
                // Java producer (and we) on the first record's; the two agree here.
                timestamp_ms: 1_700_000_000_000 + [1, 3, 3, 9][i],
            })
            .collect();
        let theirs: Vec<kp::Record> = ours
            .iter()
            .enumerate()
            .map(|(i, r)| kp::Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: 77,
                producer_epoch: 2,
                timestamp_type: kp::TimestampType::Creation,
                offset: i as i64,
                sequence: 10 + i as i32,
                timestamp: r.timestamp_ms,
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone()))
                    .collect(),
            })
            .collect();
        let options = BatchOptions {
            producer_id: 77,
            producer_epoch: 2,
            base_sequence: 10,
            ..BatchOptions::default()
        };
        let built = build_batch(&ours, &options);
        let mut encoded = BytesMut::new();
        let kp_options = kp::RecordEncodeOptions {
            version: 2,
            compression: kp::Compression::None,
        };
        kp::RecordBatchEncoder::encode(&mut encoded, theirs.iter(), &kp_options).unwrap();
        assert_eq!(&built[..], &encoded[..]);

        let decoded = decode_records(&encoded).unwrap();
        let expected: Vec<(i64, Record)> = ours
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, r)| (i as i64, r))
            .collect();
        assert_eq!(decoded, expected);
        let mut bytes = built.freeze();
        let set = kp::RecordBatchDecoder::decode(&mut bytes).unwrap();
        assert_eq!(set.records.len(), 4);
        for (got, want) in set.records.iter().zip(&theirs) {
            assert_eq!(
                (got.offset, got.sequence, got.timestamp),
                (want.offset, want.sequence, want.timestamp)
            );
            assert_eq!(
                (&got.key, &got.value, &got.headers),
                (&want.key, &want.value, &want.headers)
            );
        }
    }

    fn arb_bytes() -> impl Strategy<Value = Option<Bytes>> {
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from))
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            arb_bytes(),
            arb_bytes(),
            proptest::collection::vec(("[a-z\u{e9}]{0,8}", arb_bytes()), 0..4),
            any::<i64>(),
        )
            .prop_map(|(key, value, headers, timestamp_ms)| Record {
                key,
                value,
                headers,
                timestamp_ms,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn records_prop_build_decode_round_trip(
            records in proptest::collection::vec(arb_record(), 1..20),
            codec_index in 0usize..5,
            transactional in any::<bool>(),
        ) {
            let options = BatchOptions {
                compression: CODECS[codec_index],
                transactional,
                ..BatchOptions::default()
            };
            let batch = build_batch(&records, &options);
            let decoded = decode_records(&batch).unwrap();
            prop_assert_eq!(decoded.len(), records.len());
            for (i, ((offset, got), want)) in decoded.iter().zip(&records).enumerate() {
                prop_assert_eq!(*offset, i as i64);
                prop_assert_eq!(got, want);
            }
        }

        #[test]
        fn records_prop_decoder_never_panics_on_random_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let _ = decode_records(&bytes);
            let _ = decode_fetched(&bytes);
            let _ = next_offset_after(&bytes);
        }

        #[test]
        fn records_prop_decoder_never_panics_on_mutated_batches(
            records in proptest::collection::vec(arb_record(), 1..5),
            codec_index in 0usize..5,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
            fix_crc in any::<bool>(),
        ) {
            let options = BatchOptions {
                compression: CODECS[codec_index],
                ..BatchOptions::default()
            };
            let mut bytes = build_batch(&records, &options).to_vec();
            for (at, value) in flips {
                let at = at % bytes.len();
                bytes[at] = value;
            }
            if fix_crc {
                // Let the corruption reach the record decoder instead of stopping at the CRC.
                let crc = crc32c::crc32c(&bytes[OFF_ATTRIBUTES..]);
                bytes[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
            }
            bytes.truncate(cut % (bytes.len() + 1));
            let _ = decode_records(&bytes);
            let _ = decode_fetched(&bytes);
        }
    }
}
