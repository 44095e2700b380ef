//! Sparse time index of one segment: (timestamp i64, relative offset u32) pairs whose timestamps
//! strictly increase; an entry says "the largest timestamp in this segment up to here is T and
//! the batch at this offset holds it". Kept in memory and encoded with a CRC-32C trailer.
//! Never reads or writes files itself.

use crate::log::index::{be_u32, INDEX_TRAILER_BYTES};

/// Bytes per encoded entry.
pub const TIME_INDEX_ENTRY_BYTES: usize = 12;
/// Largest time index file we agree to decode (bytes).
pub const TIME_INDEX_FILE_BYTES_MAX: usize = 96 * 1024 * 1024;

/// In-memory sparse time index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn last(&self) -> Option<(i64, u32)> {
        self.entries.last().copied()
    }

    /// Appends `(timestamp, relative_offset)` if the timestamp is larger than the last one.
    pub fn maybe_push(&mut self, timestamp: i64, relative_offset: u32) -> bool {
        if let Some((last_ts, last_offset)) = self.last() {
            if timestamp <= last_ts {
                return false;
            }
            assert!(
                relative_offset >= last_offset,
                "time index offset regressed"
            );
        }
        self.entries.push((timestamp, relative_offset));
        true
    }

    /// The last entry whose timestamp is `< timestamp`: every batch before its offset (and the
    /// batch at it) has a max timestamp below `timestamp`, so a search may start there.
    pub fn last_below(&self, timestamp: i64) -> Option<(i64, u32)> {
        let after = self.entries.partition_point(|&(t, _)| t < timestamp);
        after.checked_sub(1).map(|i| self.entries[i])
    }

    /// Drops entries whose relative offset is `>= relative_offset`.
    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        self.entries.retain(|&(_, o)| o < relative_offset);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_INDEX_ENTRY_BYTES + 4);
        for &(timestamp, offset) in &self.entries {
            out.extend_from_slice(&timestamp.to_be_bytes());
            out.extend_from_slice(&offset.to_be_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Decodes a file written by `encode`; `None` when the size, CRC or ordering is wrong.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > TIME_INDEX_FILE_BYTES_MAX || bytes.len() < INDEX_TRAILER_BYTES {
            return None;
        }
        let (body, trailer) = bytes.split_at(bytes.len() - INDEX_TRAILER_BYTES);
        if body.len() % TIME_INDEX_ENTRY_BYTES != 0 || crc32c::crc32c(body) != be_u32(trailer) {
            return None;
        }
        let mut index = TimeIndex {
            entries: Vec::with_capacity(body.len() / 12),
        };
        for chunk in body.chunks_exact(TIME_INDEX_ENTRY_BYTES) {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&chunk[0..8]);
            let entry = (i64::from_be_bytes(ts), be_u32(&chunk[8..12]));
            if let Some((t, o)) = index.last() {
                if entry.0 <= t || entry.1 < o {
                    return None;
                }
            }
            index.entries.push(entry);
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_increasing_timestamps_and_finds_last_below() {
        let mut index = TimeIndex::default();
        assert!(index.maybe_push(100, 0));
        assert!(!index.maybe_push(100, 3));
        assert!(!index.maybe_push(50, 4));
        assert!(index.maybe_push(200, 9));
        assert_eq!(index.len(), 2);
        assert_eq!(index.last_below(100), None);
        assert_eq!(index.last_below(101), Some((100, 0)));
        assert_eq!(index.last_below(1000), Some((200, 9)));
        let decoded = TimeIndex::decode(&index.encode()).expect("round trip");
        assert_eq!(decoded, index);
        let mut bad = index.encode();
        bad[0] ^= 0x80;
        assert_eq!(TimeIndex::decode(&bad), None);
        index.truncate_to_offset(9);
        assert_eq!(index.last(), Some((100, 0)));
    }
}
