//! One segment of a partition log: its file names (base offset, 20 digits), its in-memory state
//! (size, next offset, sparse indexes, largest timestamp, known-corrupt ranges) and a cursor that
//! walks stored batches with few large reads. Never writes: `PartitionLog` decides every write.

use std::ops::Range;

use crate::disk::{Disk, DiskError};
use crate::log::batch_view::{self, Hdr, HEADER_BYTES};
use crate::log::index::OffsetIndex;
use crate::log::time_index::TimeIndex;

/// Digits of a segment file's base offset.
pub const SEGMENT_NAME_DIGITS: usize = 20;
/// Read size of a recovery scan.
pub const SCAN_CHUNK_BYTES: usize = 1024 * 1024;
/// Read size when only walking headers (seek to an offset or a timestamp).
pub const SEEK_CHUNK_BYTES: usize = 16 * 1024;

pub const LOG_EXT: &str = "log";
pub const INDEX_EXT: &str = "index";
pub const TIME_INDEX_EXT: &str = "timeindex";
pub const SNAPSHOT_EXT: &str = "snapshot";
/// Marker: the segment was rewritten by the cleaner, so its batches may leave offset gaps.
pub const CLEANED_MARKER_EXT: &str = "compacted";
/// The files that hold one segment's data (its producer snapshot is managed apart).
pub const SEGMENT_FILE_EXTS: [&str; 4] = [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT, CLEANED_MARKER_EXT];

pub fn file_name(base_offset: i64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

/// `(base offset, extension)` of a name like `00000000000000000042.log`.
pub fn parse_name(name: &str) -> Option<(i64, &str)> {
    let (digits, ext) = name.split_once('.')?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, ext))
}

/// In-memory state of one segment.
#[derive(Clone, Debug)]
pub struct Segment<F> {
    pub base_offset: i64,
    pub file: F,
    /// Logical end of the valid bytes (the file may be longer after a failed write).
    pub size_bytes: u64,
    /// Offset after the last batch (== `base_offset` when empty).
    pub next_offset: i64,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    /// Largest batch max timestamp (-1 when none), and the base offset of the batch holding it.
    pub max_timestamp: i64,
    pub max_timestamp_offset: i64,
    /// When the first batch was appended (drives `segment.ms`).
    pub first_batch_time_ms: Option<i64>,
    /// Byte ranges known to be corrupt (found by a scan of a sealed segment).
    pub corrupt: Vec<Range<u64>>,
    /// Rewritten by the cleaner: batches are in offset order but may leave gaps.
    pub cleaned: bool,
    bytes_since_index: u64,
    bytes_since_time_index: u64,
}

impl<F> Segment<F> {
    pub fn new(base_offset: i64, file: F) -> Self {
        Segment {
            base_offset,
            file,
            size_bytes: 0,
            next_offset: base_offset,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            max_timestamp: -1,
            max_timestamp_offset: base_offset,
            first_batch_time_ms: None,
            corrupt: Vec::new(),
            cleaned: false,
            bytes_since_index: 0,
            bytes_since_time_index: 0,
        }
    }

    /// A sealed segment loaded from its index files (no scan).
    pub fn sealed(
        base_offset: i64,
        file: F,
        size_bytes: u64,
        next_offset: i64,
        index: OffsetIndex,
        time_index: TimeIndex,
    ) -> Self {
        let (max_timestamp, max_timestamp_offset) =
            time_index.last().map_or((-1, base_offset), |(ts, rel)| {
                (ts, base_offset + i64::from(rel))
            });
        Segment {
            size_bytes,
            next_offset,
            index,
            time_index,
            max_timestamp,
            max_timestamp_offset,
            first_batch_time_ms: Some(max_timestamp),
            ..Segment::new(base_offset, file)
        }
    }

    /// Counts `len - size_bytes` bytes of unverified tail as part of the segment (only the
    /// `recovery_truncate_short` mutant does this).
    pub fn keep_garbage(&mut self, len: u64) {
        self.size_bytes = self.size_bytes.max(len);
    }

    pub fn is_empty(&self) -> bool {
        self.size_bytes == 0
    }

    pub fn relative(&self, offset: i64) -> u32 {
        let rel = offset - self.base_offset;
        u32::try_from(rel).expect("relative offset fits u32 (roll keeps it so)")
    }

    /// Accounts a batch stored at `position` (its bytes are already in the file).
    pub fn on_batch(&mut self, position: u64, hdr: &Hdr, interval_bytes: u64, time_ms: i64) {
        assert_eq!(
            position, self.size_bytes,
            "batches are appended contiguously"
        );
        let position_u32 = u32::try_from(position).expect("segment position fits u32");
        if self.bytes_since_index >= interval_bytes && position > 0 {
            self.index
                .push(self.relative(hdr.base_offset), position_u32);
            self.bytes_since_index = 0;
        }
        if hdr.max_timestamp > self.max_timestamp {
            self.max_timestamp = hdr.max_timestamp;
            self.max_timestamp_offset = hdr.base_offset;
        }
        if self.bytes_since_time_index >= interval_bytes {
            let rel = self.relative(self.max_timestamp_offset);
            if self.time_index.maybe_push(self.max_timestamp, rel) {
                self.bytes_since_time_index = 0;
            }
        }
        let size = hdr.total_bytes as u64;
        self.bytes_since_index += size;
        self.bytes_since_time_index += size;
        self.size_bytes += size;
        self.next_offset = hdr.last_offset() + 1;
        self.first_batch_time_ms.get_or_insert(time_ms);
    }

    /// Records the final largest timestamp in the time index (done when the segment is sealed).
    pub fn seal_time_index(&mut self) {
        if self.size_bytes > 0 {
            let rel = self.relative(self.max_timestamp_offset);
            self.time_index.maybe_push(self.max_timestamp, rel);
        }
    }

    /// File position from which to walk headers to find `offset`.
    pub fn seek_position(&self, offset: i64) -> u64 {
        if offset <= self.base_offset {
            return 0;
        }
        let rel = u32::try_from(offset - self.base_offset).unwrap_or(u32::MAX);
        self.index
            .lookup(rel)
            .map_or(0, |(_, position)| u64::from(position))
    }

    /// The first known-corrupt range overlapping `range`.
    pub fn corrupt_overlap(&self, range: &Range<u64>) -> Option<u64> {
        self.corrupt
            .iter()
            .find(|c| c.start < range.end && range.start < c.end)
            .map(|c| c.start.max(range.start))
    }

    /// Forgets everything at or after `position` / `next_offset` (after a truncation).
    pub fn truncate_state(&mut self, position: u64, next_offset: i64) {
        let position_u32 = u32::try_from(position).expect("segment position fits u32");
        self.size_bytes = position;
        self.next_offset = next_offset;
        self.index.truncate_to_position(position_u32);
        self.time_index
            .truncate_to_offset(self.relative(next_offset.max(self.base_offset)));
        self.corrupt.retain(|c| c.start < position);
        self.bytes_since_index = 0;
        self.bytes_since_time_index = 0;
    }
}

/// What the cursor found at a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scanned {
    /// A whole batch (CRC checked only when asked).
    Batch {
        position: u64,
        hdr: Hdr,
        crc_ok: bool,
    },
    /// The position is the end of the valid bytes.
    End,
    /// Garbage or a torn batch; `hdr` when the header itself parsed.
    Bad { position: u64, hdr: Option<Hdr> },
}

/// How many times a batch (or checkpoint) that fails its checks is read again before it counts
/// as bad. A genuine mismatch costs only these few extra reads; a transient read flip repeating
/// this often is vanishingly rare (1 in 3 million at a 5% per-read flip rate).
pub const REREADS_ON_MISMATCH: usize = 4;

/// Walks batches of one file up to `limit`, reading in chunks.
pub struct BatchCursor<'a, D: Disk> {
    disk: &'a D,
    file: &'a D::File,
    limit: u64,
    chunk_bytes: usize,
    buf: Vec<u8>,
    buf_start: u64,
}

impl<'a, D: Disk> BatchCursor<'a, D> {
    pub fn new(disk: &'a D, file: &'a D::File, limit: u64, chunk_bytes: usize) -> Self {
        BatchCursor {
            disk,
            file,
            limit,
            chunk_bytes,
            buf: Vec::new(),
            buf_start: 0,
        }
    }

    /// Makes `[position, position + len)` available in the buffer (`len` bytes must fit
    /// before `limit`); returns it.
    async fn window(&mut self, position: u64, len: usize) -> Result<&[u8], DiskError> {
        let end = position + len as u64;
        let have = position >= self.buf_start && end <= self.buf_start + self.buf.len() as u64;
        if !have {
            let want = (self.limit - position).min(len.max(self.chunk_bytes) as u64) as usize;
            self.buf.clear();
            self.buf.resize(want, 0);
            let n = self
                .disk
                .read_at(self.file, position, &mut self.buf)
                .await?;
            self.buf.truncate(n);
            self.buf_start = position;
            if n < len {
                return Ok(&self.buf[..n]);
            }
        }
        let from = (position - self.buf_start) as usize;
        Ok(&self.buf[from..from + len])
    }

    /// Drops the cached bytes so the next `next` reads the disk again.
    pub fn forget(&mut self) {
        self.buf.clear();
    }

    /// The batch at `position`; whole batch bytes when `verify` (CRC checked). A batch that
    /// looks bad is read again from the disk (up to `REREADS_ON_MISMATCH` times) before it is
    /// reported bad: a transient flip on the read path must never be mistaken for damage at
    /// rest, which recovery would truncate (simulator: single_corruption).
    pub async fn next(&mut self, position: u64, verify: bool) -> Result<Scanned, DiskError> {
        let mut scanned = self.next_once(position, verify).await?;
        for _ in 0..REREADS_ON_MISMATCH {
            let good = matches!(scanned, Scanned::End | Scanned::Batch { crc_ok: true, .. });
            if good {
                break;
            }
            self.forget();
            scanned = self.next_once(position, verify).await?;
        }
        Ok(scanned)
    }

    async fn next_once(&mut self, position: u64, verify: bool) -> Result<Scanned, DiskError> {
        if position >= self.limit {
            return Ok(Scanned::End);
        }
        if self.limit - position < HEADER_BYTES as u64 {
            return Ok(Scanned::Bad {
                position,
                hdr: None,
            });
        }
        let head = self.window(position, HEADER_BYTES).await?;
        let Some(hdr) = (head.len() == HEADER_BYTES)
            .then(|| batch_view::parse(head))
            .flatten()
        else {
            return Ok(Scanned::Bad {
                position,
                hdr: None,
            });
        };
        if position + hdr.total_bytes as u64 > self.limit {
            return Ok(Scanned::Bad {
                position,
                hdr: Some(hdr),
            });
        }
        let crc_ok = if verify {
            let bytes = self.window(position, hdr.total_bytes).await?;
            bytes.len() == hdr.total_bytes && batch_view::crc_ok(bytes)
        } else {
            true
        };
        Ok(Scanned::Batch {
            position,
            hdr,
            crc_ok,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(file_name(42, LOG_EXT), "00000000000000000042.log");
        assert_eq!(parse_name("00000000000000000042.log"), Some((42, "log")));
        assert_eq!(
            parse_name("00000000000000000042.timeindex"),
            Some((42, "timeindex"))
        );
        assert_eq!(parse_name("42.log"), None);
        assert_eq!(parse_name("0000000000000000004x.log"), None);
        assert_eq!(parse_name("log-start-offset.checkpoint"), None);
    }
}
