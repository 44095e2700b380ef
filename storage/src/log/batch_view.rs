//! The few record-batch header facts the log needs, on top of `samsa_net::batch` (the one batch
//! parser of the workspace) plus the stricter bounds stored bytes must meet before the log walks
//! them (non-negative offsets and deltas, a bounded length). Never decodes records and never
//! allocates.

use samsa_net::batch::{self, BatchHeader};

/// Size of the fixed v2 header.
pub const HEADER_BYTES: usize = batch::BATCH_HEADER_BYTES;
/// Largest stored batch the log will read back; a header claiming more is corrupt.
pub const STORED_BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Header fields of one stored batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hdr {
    pub base_offset: i64,
    pub total_bytes: usize,
    pub leader_epoch: i32,
    pub last_offset_delta: i32,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl Hdr {
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    pub fn producer_batch(&self) -> super::producer_state::ProducerBatch {
        super::producer_state::ProducerBatch {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
            last_offset_delta: self.last_offset_delta,
        }
    }
}

/// Parses the header at the start of `bytes`; `None` when it is short, not magic 2, or its
/// length / offset delta / record count / base offset is out of bounds.
pub fn parse(bytes: &[u8]) -> Option<Hdr> {
    let h: BatchHeader = BatchHeader::parse(bytes).ok()?;
    let total_bytes = h.total_bytes();
    if total_bytes > STORED_BATCH_BYTES_MAX || h.last_offset_delta < 0 || h.record_count < 0 {
        return None;
    }
    if h.base_offset < 0
        || h.base_offset
            .checked_add(i64::from(h.last_offset_delta))
            .is_none()
    {
        return None;
    }
    Some(Hdr {
        base_offset: h.base_offset,
        total_bytes,
        leader_epoch: h.partition_leader_epoch,
        last_offset_delta: h.last_offset_delta,
        max_timestamp: h.max_timestamp,
        producer_id: h.producer_id,
        producer_epoch: h.producer_epoch,
        base_sequence: h.base_sequence,
        record_count: h.record_count,
    })
}

/// True when the stored CRC-32C matches attributes..end of `batch` (one whole batch).
pub fn crc_ok(batch: &[u8]) -> bool {
    batch::verify_crc(batch).is_ok()
}

/// Assigns the base offset and leader epoch (both outside the CRC) and, when asked, stamps
/// LogAppendTime (sets the timestamp-type bit and max timestamp, then recomputes the CRC).
pub fn patch(batch: &mut [u8], base_offset: i64, leader_epoch: i32, log_append_time: Option<i64>) {
    batch::patch_base_offset(batch, base_offset);
    batch::patch_leader_epoch(batch, leader_epoch);
    if let Some(now_ms) = log_append_time {
        batch::set_log_append_time(batch, now_ms);
    }
}
