//! Sparse offset index of one segment: (relative offset u32, file position u32) pairs, one per
//! `index.interval.bytes` of log, pointing at the start of a batch whose base offset is
//! `segment base + relative offset`. Kept in memory; encoded with a CRC-32C trailer so a torn or
//! rotted index file is detected and rebuilt from the log. Never reads or writes files itself.

/// Bytes per encoded entry.
pub const OFFSET_INDEX_ENTRY_BYTES: usize = 8;
/// Largest index file we agree to decode (bytes); bigger means corrupt (rebuild from the log).
pub const OFFSET_INDEX_FILE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Bytes of the CRC-32C trailer.
pub const INDEX_TRAILER_BYTES: usize = 4;

/// In-memory sparse offset index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn last(&self) -> Option<(u32, u32)> {
        self.entries.last().copied()
    }

    pub fn entries(&self) -> &[(u32, u32)] {
        &self.entries
    }

    /// Appends an entry; both coordinates must strictly increase (an invariant of the writer).
    pub fn push(&mut self, relative_offset: u32, position: u32) {
        if let Some((last_offset, last_position)) = self.last() {
            assert!(
                relative_offset > last_offset && position > last_position,
                "offset index regressed: ({relative_offset}, {position}) after \
                 ({last_offset}, {last_position})"
            );
        }
        self.entries.push((relative_offset, position));
    }

    /// The entry with the largest relative offset `<= relative_offset`, if any.
    pub fn lookup(&self, relative_offset: u32) -> Option<(u32, u32)> {
        let after = self.entries.partition_point(|&(o, _)| o <= relative_offset);
        after.checked_sub(1).map(|i| self.entries[i])
    }

    /// Drops every entry at or beyond `position` (after a truncation of the log file).
    pub fn truncate_to_position(&mut self, position: u32) {
        let keep = self.entries.partition_point(|&(_, p)| p < position);
        self.entries.truncate(keep);
    }

    /// Entries followed by a CRC-32C of them.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_INDEX_ENTRY_BYTES + 4);
        for &(offset, position) in &self.entries {
            out.extend_from_slice(&offset.to_be_bytes());
            out.extend_from_slice(&position.to_be_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Decodes a file written by `encode`; `None` when the size, CRC or ordering is wrong.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > OFFSET_INDEX_FILE_BYTES_MAX || bytes.len() < INDEX_TRAILER_BYTES {
            return None;
        }
        let (body, trailer) = bytes.split_at(bytes.len() - INDEX_TRAILER_BYTES);
        if body.len() % OFFSET_INDEX_ENTRY_BYTES != 0 || crc32c::crc32c(body) != be_u32(trailer) {
            return None;
        }
        let mut index = OffsetIndex {
            entries: Vec::with_capacity(body.len() / 8),
        };
        for chunk in body.chunks_exact(OFFSET_INDEX_ENTRY_BYTES) {
            let entry = (be_u32(&chunk[0..4]), be_u32(&chunk[4..8]));
            if let Some((o, p)) = index.last() {
                if entry.0 <= o || entry.1 <= p {
                    return None;
                }
            }
            index.entries.push(entry);
        }
        Some(index)
    }
}

pub(crate) fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_floor_entry() {
        let mut index = OffsetIndex::default();
        index.push(0, 0);
        index.push(10, 4096);
        index.push(25, 8200);
        assert_eq!(index.lookup(0), Some((0, 0)));
        assert_eq!(index.lookup(9), Some((0, 0)));
        assert_eq!(index.lookup(10), Some((10, 4096)));
        assert_eq!(index.lookup(1000), Some((25, 8200)));
        let mut late = OffsetIndex::default();
        late.push(5, 100);
        assert_eq!(late.lookup(4), None);
    }

    #[test]
    fn encode_decode_round_trip_and_rejects_damage() {
        let mut index = OffsetIndex::default();
        index.push(3, 10);
        index.push(7, 5000);
        let bytes = index.encode();
        assert_eq!(OffsetIndex::decode(&bytes), Some(index.clone()));
        let mut flipped = bytes.clone();
        flipped[5] ^= 1;
        assert_eq!(OffsetIndex::decode(&flipped), None);
        assert_eq!(OffsetIndex::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(OffsetIndex::decode(&[]), None);
        let empty = OffsetIndex::default().encode();
        assert_eq!(OffsetIndex::decode(&empty), Some(OffsetIndex::default()));
    }

    #[test]
    fn truncate_to_position_drops_entries_at_or_after() {
        let mut index = OffsetIndex::default();
        index.push(1, 10);
        index.push(2, 20);
        index.push(3, 30);
        index.truncate_to_position(20);
        assert_eq!(index.entries(), &[(1, 10)]);
    }
}
