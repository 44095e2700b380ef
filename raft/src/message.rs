//! Messages between quorum members and their versioned, CRC-32C protected binary format.
//! Decoding never panics on any input and never allocates from a length it has not checked
//! against a named bound; it also rejects messages that are well framed but malformed (for
//! example non-contiguous entries), so the core only ever sees well-formed messages.
//!
//! Frame: `magic u16 | version u8 | kind u8 | body_len u32 | crc32c(body) u32 | body`, all
//! big-endian. Body: `from u32 | from_dir u128 | term u64 | kind-specific fields`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::types::{
    DirectoryId, Entry, NodeId, BATCH_BYTES_MAX, BATCH_ENTRIES_MAX, ENTRY_PAYLOAD_BYTES_MAX,
    SNAPSHOT_BYTES_MAX, SNAPSHOT_CHUNK_BYTES_MAX, TERM_MAX,
};

const MAGIC: u16 = 0x5352;
const VERSION: u8 = 1;
const HEADER_BYTES: usize = 12;
/// Bytes of one entry's framing inside `AppendEntries` (term, index, length).
const ENTRY_OVERHEAD_BYTES: usize = 20;
/// Largest encoded message; anything longer is rejected before it is looked at.
pub const MESSAGE_BYTES_MAX: usize =
    HEADER_BYTES + 128 + BATCH_BYTES_MAX + BATCH_ENTRIES_MAX * ENTRY_OVERHEAD_BYTES;

const _: () = assert!(SNAPSHOT_CHUNK_BYTES_MAX + 128 + HEADER_BYTES <= MESSAGE_BYTES_MAX);

/// One message, as sent by `from` in its term `term`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    /// The sender's directory id: receivers count votes and acknowledgements only from the
    /// incarnation the voter set records.
    pub from_dir: DirectoryId,
    /// For a pre-vote request: the term the candidate would campaign in. Otherwise the sender's
    /// current term.
    pub term: u64,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    VoteRequest {
        pre_vote: bool,
        last_log_index: u64,
        last_log_term: u64,
    },
    VoteResponse {
        pre_vote: bool,
        granted: bool,
    },
    /// Entries are contiguous from `prev_index + 1`, with terms non-decreasing and `<= term`.
    AppendEntries {
        prev_index: u64,
        prev_term: u64,
        leader_commit: u64,
        entries: Vec<Entry>,
    },
    /// `success`: the follower's durable log matches the leader's up to `match_index`.
    /// Otherwise a hint: the first index of `conflict_term`, or the follower's log end + 1.
    AppendResponse {
        success: bool,
        match_index: u64,
        conflict_index: u64,
        conflict_term: Option<u64>,
    },
    /// Bytes `offset..offset + chunk.len()` of the snapshot ending at `last_index`.
    InstallSnapshot {
        last_index: u64,
        last_term: u64,
        total_bytes: u64,
        offset: u64,
        chunk: Bytes,
    },
    /// `done`: the follower holds the snapshot; else it wants bytes from `next_offset`.
    SnapshotResponse {
        last_index: u64,
        next_offset: u64,
        done: bool,
    },
}

/// Why bytes were not a message. Every variant is an ordinary outcome for untrusted input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    Truncated,
    TooLarge,
    BadMagic,
    UnsupportedVersion(u8),
    UnknownKind(u8),
    Crc,
    TrailingBytes,
    /// Framed correctly but violates a rule of the message (named for diagnostics).
    Malformed(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for DecodeError {}

impl Message {
    fn kind(&self) -> u8 {
        match self.body {
            Body::VoteRequest { .. } => 1,
            Body::VoteResponse { .. } => 2,
            Body::AppendEntries { .. } => 3,
            Body::AppendResponse { .. } => 4,
            Body::InstallSnapshot { .. } => 5,
            Body::SnapshotResponse { .. } => 6,
        }
    }

    pub fn encode(&self) -> Bytes {
        let mut body = BytesMut::with_capacity(64);
        body.put_u32(self.from.0);
        body.put_u128(self.from_dir.0);
        body.put_u64(self.term);
        match &self.body {
            Body::VoteRequest {
                pre_vote,
                last_log_index,
                last_log_term,
            } => {
                body.put_u8(u8::from(*pre_vote));
                body.put_u64(*last_log_index);
                body.put_u64(*last_log_term);
            }
            Body::VoteResponse { pre_vote, granted } => {
                body.put_u8(u8::from(*pre_vote));
                body.put_u8(u8::from(*granted));
            }
            Body::AppendEntries {
                prev_index,
                prev_term,
                leader_commit,
                entries,
            } => {
                body.put_u64(*prev_index);
                body.put_u64(*prev_term);
                body.put_u64(*leader_commit);
                body.put_u32(entries.len() as u32);
                for e in entries {
                    body.put_u64(e.term);
                    body.put_u64(e.index);
                    body.put_u32(e.payload.len() as u32);
                    body.put_slice(&e.payload);
                }
            }
            Body::AppendResponse {
                success,
                match_index,
                conflict_index,
                conflict_term,
            } => {
                body.put_u8(u8::from(*success));
                body.put_u64(*match_index);
                body.put_u64(*conflict_index);
                body.put_u8(u8::from(conflict_term.is_some()));
                body.put_u64(conflict_term.unwrap_or(0));
            }
            Body::InstallSnapshot {
                last_index,
                last_term,
                total_bytes,
                offset,
                chunk,
            } => {
                body.put_u64(*last_index);
                body.put_u64(*last_term);
                body.put_u64(*total_bytes);
                body.put_u64(*offset);
                body.put_u32(chunk.len() as u32);
                body.put_slice(chunk);
            }
            Body::SnapshotResponse {
                last_index,
                next_offset,
                done,
            } => {
                body.put_u64(*last_index);
                body.put_u64(*next_offset);
                body.put_u8(u8::from(*done));
            }
        }
        let mut out = BytesMut::with_capacity(HEADER_BYTES + body.len());
        out.put_u16(MAGIC);
        out.put_u8(VERSION);
        out.put_u8(self.kind());
        out.put_u32(body.len() as u32);
        out.put_u32(crc32c::crc32c(&body));
        out.put_slice(&body);
        // Senders are the core, which never builds a message beyond the bounds decode enforces.
        assert!(
            out.len() <= MESSAGE_BYTES_MAX,
            "encoded message too large: {}",
            out.len()
        );
        out.freeze()
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        if bytes.len() > MESSAGE_BYTES_MAX {
            return Err(DecodeError::TooLarge);
        }
        let mut header = Reader { bytes, pos: 0 };
        if header.u16()? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = header.u8()?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let kind = header.u8()?;
        let body_len = header.u32()? as usize;
        let crc = header.u32()?;
        let body = &bytes[HEADER_BYTES..];
        if body.len() < body_len {
            return Err(DecodeError::Truncated);
        }
        if body.len() > body_len {
            return Err(DecodeError::TrailingBytes);
        }
        if crc32c::crc32c(body) != crc {
            return Err(DecodeError::Crc);
        }
        let mut r = Reader {
            bytes: body,
            pos: 0,
        };
        let from = NodeId(r.u32()?);
        let from_dir = DirectoryId(r.u128()?);
        let term = r.u64()?;
        if term > TERM_MAX {
            return Err(DecodeError::Malformed("term out of range"));
        }
        let body = match kind {
            1 => Body::VoteRequest {
                pre_vote: r.bool()?,
                last_log_index: r.u64()?,
                last_log_term: r.u64()?,
            },
            2 => Body::VoteResponse {
                pre_vote: r.bool()?,
                granted: r.bool()?,
            },
            3 => decode_append(&mut r, term)?,
            4 => {
                let success = r.bool()?;
                let match_index = r.u64()?;
                let conflict_index = r.u64()?;
                let has_term = r.bool()?;
                let t = r.u64()?;
                Body::AppendResponse {
                    success,
                    match_index,
                    conflict_index,
                    conflict_term: has_term.then_some(t),
                }
            }
            5 => {
                let last_index = r.u64()?;
                let last_term = r.u64()?;
                let total_bytes = r.u64()?;
                let offset = r.u64()?;
                let len = r.u32()? as usize;
                if len > SNAPSHOT_CHUNK_BYTES_MAX {
                    return Err(DecodeError::Malformed("snapshot chunk too large"));
                }
                if total_bytes > SNAPSHOT_BYTES_MAX as u64
                    || offset
                        .checked_add(len as u64)
                        .is_none_or(|end| end > total_bytes)
                {
                    return Err(DecodeError::Malformed("snapshot chunk outside snapshot"));
                }
                if last_index == 0 || last_term > term {
                    return Err(DecodeError::Malformed("snapshot id"));
                }
                let chunk = Bytes::copy_from_slice(r.take(len)?);
                Body::InstallSnapshot {
                    last_index,
                    last_term,
                    total_bytes,
                    offset,
                    chunk,
                }
            }
            6 => Body::SnapshotResponse {
                last_index: r.u64()?,
                next_offset: r.u64()?,
                done: r.bool()?,
            },
            other => return Err(DecodeError::UnknownKind(other)),
        };
        if r.pos != r.bytes.len() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(Message {
            from,
            from_dir,
            term,
            body,
        })
    }

    /// The rules `decode` enforces, for messages built in process (the core drops others).
    pub fn is_well_formed(&self) -> bool {
        if self.term > TERM_MAX {
            return false;
        }
        match &self.body {
            Body::AppendEntries {
                prev_index,
                prev_term,
                entries,
                ..
            } => entries_well_formed((*prev_index, *prev_term), self.term, entries).is_ok(),
            Body::InstallSnapshot {
                last_index,
                last_term,
                total_bytes,
                offset,
                chunk,
            } => {
                *last_index > 0
                    && *last_term <= self.term
                    && chunk.len() <= SNAPSHOT_CHUNK_BYTES_MAX
                    && *total_bytes <= SNAPSHOT_BYTES_MAX as u64
                    && offset
                        .checked_add(chunk.len() as u64)
                        .is_some_and(|end| end <= *total_bytes)
            }
            _ => true,
        }
    }
}

fn decode_append(r: &mut Reader<'_>, term: u64) -> Result<Body, DecodeError> {
    let prev_index = r.u64()?;
    let prev_term = r.u64()?;
    let leader_commit = r.u64()?;
    let count = r.u32()? as usize;
    if count > BATCH_ENTRIES_MAX {
        return Err(DecodeError::Malformed("too many entries"));
    }
    // Each entry needs at least its framing, so a lying count fails before the allocation.
    if count * ENTRY_OVERHEAD_BYTES > r.remaining() {
        return Err(DecodeError::Truncated);
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let entry_term = r.u64()?;
        let index = r.u64()?;
        let len = r.u32()? as usize;
        if len > ENTRY_PAYLOAD_BYTES_MAX {
            return Err(DecodeError::Malformed("entry payload too large"));
        }
        let payload = Bytes::copy_from_slice(r.take(len)?);
        entries.push(Entry {
            term: entry_term,
            index,
            payload,
        });
    }
    entries_well_formed((prev_index, prev_term), term, &entries).map_err(DecodeError::Malformed)?;
    Ok(Body::AppendEntries {
        prev_index,
        prev_term,
        leader_commit,
        entries,
    })
}

/// Entries continue the log after `(prev_index, prev_term)`: contiguous, terms non-decreasing
/// from `prev_term` and never beyond the sender's `term`.
fn entries_well_formed(
    (prev_index, prev_term): (u64, u64),
    term: u64,
    entries: &[Entry],
) -> Result<(), &'static str> {
    if entries.len() > BATCH_ENTRIES_MAX {
        return Err("too many entries");
    }
    if prev_term > term {
        return Err("previous entry from a future term");
    }
    let mut bytes = 0usize;
    let mut last_term = prev_term;
    for (k, e) in entries.iter().enumerate() {
        if prev_index.checked_add(k as u64 + 1) != Some(e.index) {
            return Err("entries not contiguous");
        }
        if e.term < last_term || e.term > term || e.term == 0 {
            return Err("entry terms out of order");
        }
        last_term = e.term;
        bytes += e.payload.len();
    }
    if bytes > BATCH_BYTES_MAX {
        return Err("batch too large");
    }
    Ok(())
}

/// A cursor that fails with `Truncated` instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Malformed("bool not 0 or 1")),
        }
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn u128(&mut self) -> Result<u128, DecodeError> {
        Ok(u128::from_be_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_entries() -> impl Strategy<Value = (u64, u64, Vec<Entry>)> {
        (
            0u64..1000,
            1u64..50,
            proptest::collection::vec((0u64..3, any::<Vec<u8>>()), 0..8),
        )
            .prop_map(|(prev, term, raw)| {
                let mut t = 1;
                let entries = raw
                    .into_iter()
                    .enumerate()
                    .map(|(k, (bump, payload))| {
                        t = (t + bump).min(term);
                        Entry {
                            term: t,
                            index: prev + 1 + k as u64,
                            payload: Bytes::from(payload),
                        }
                    })
                    .collect();
                (prev, term, entries)
            })
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let body = prop_oneof![
            (any::<bool>(), any::<u64>(), any::<u64>()).prop_map(|(p, i, t)| {
                Body::VoteRequest {
                    pre_vote: p,
                    last_log_index: i,
                    last_log_term: t,
                }
            }),
            (any::<bool>(), any::<bool>()).prop_map(|(p, g)| Body::VoteResponse {
                pre_vote: p,
                granted: g
            }),
            (
                any::<bool>(),
                any::<u64>(),
                any::<u64>(),
                any::<Option<u64>>()
            )
                .prop_map(|(s, m, c, t)| Body::AppendResponse {
                    success: s,
                    match_index: m,
                    conflict_index: c,
                    conflict_term: t,
                }),
            (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(l, n, d)| {
                Body::SnapshotResponse {
                    last_index: l,
                    next_offset: n,
                    done: d,
                }
            }),
        ];
        (any::<u32>(), any::<u128>(), 0..=TERM_MAX, body).prop_map(|(f, d, t, body)| Message {
            from: NodeId(f),
            from_dir: DirectoryId(d),
            term: t,
            body,
        })
    }

    proptest! {
        #[test]
        fn simple_messages_round_trip(m in arb_message()) {
            prop_assert_eq!(Message::decode(&m.encode()), Ok(m));
        }

        #[test]
        fn append_entries_round_trip((prev, term, entries) in arb_entries(), commit: u64) {
            let m = Message {
                from: NodeId(3),
                from_dir: DirectoryId(7),
                term,
                body: Body::AppendEntries {
                    prev_index: prev, prev_term: 1, leader_commit: commit, entries,
                },
            };
            prop_assert!(m.is_well_formed());
            prop_assert_eq!(Message::decode(&m.encode()), Ok(m));
        }

        #[test]
        fn snapshot_chunk_round_trips(chunk: Vec<u8>, offset in 0u64..1000, extra in 0u64..99) {
            let total = offset + chunk.len() as u64 + extra;
            let m = Message {
                from: NodeId(1),
                from_dir: DirectoryId(2),
                term: 9,
                body: Body::InstallSnapshot {
                    last_index: 40, last_term: 8, total_bytes: total, offset,
                    chunk: Bytes::from(chunk),
                },
            };
            prop_assert!(m.is_well_formed());
            prop_assert_eq!(Message::decode(&m.encode()), Ok(m));
        }

        /// Any bytes at all: decode answers, never panics.
        #[test]
        fn decode_never_panics_on_garbage(bytes: Vec<u8>) {
            let _ = Message::decode(&bytes);
        }

        /// Random bodies inside a valid frame (right length, right CRC) reach the body parser:
        /// it answers with an error or a well-formed message, never a panic.
        #[test]
        fn body_parser_survives_random_bodies(kind in 0u8..8, body: Vec<u8>) {
            let mut frame = BytesMut::new();
            frame.put_u16(MAGIC);
            frame.put_u8(VERSION);
            frame.put_u8(kind);
            frame.put_u32(body.len() as u32);
            frame.put_u32(crc32c::crc32c(&body));
            frame.put_slice(&body);
            if let Ok(m) = Message::decode(&frame) {
                prop_assert!(m.is_well_formed());
                prop_assert_eq!(Message::decode(&m.encode()), Ok(m));
            }
        }

        /// Valid frames with bytes flipped or cut: decode returns an error or a message that
        /// re-encodes to itself; it never panics or over-allocates.
        #[test]
        fn decode_survives_mutation(
            (prev, term, entries) in arb_entries(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            let m = Message {
                from: NodeId(1),
                from_dir: DirectoryId(1),
                term,
                body: Body::AppendEntries {
                    prev_index: prev, prev_term: 1, leader_commit: 0, entries,
                },
            };
            let mut bytes = m.encode().to_vec();
            for (at, x) in flips {
                let at = at % bytes.len();
                bytes[at] ^= x;
            }
            bytes.truncate(cut % (bytes.len() + 1));
            if let Ok(decoded) = Message::decode(&bytes) {
                prop_assert!(decoded.is_well_formed());
                prop_assert_eq!(Message::decode(&decoded.encode()), Ok(decoded));
            }
        }
    }

    #[test]
    fn lying_entry_count_is_rejected_before_allocating() {
        let mut body = BytesMut::new();
        body.put_u32(1);
        body.put_u128(1);
        body.put_u64(1);
        body.put_u64(0);
        body.put_u64(0);
        body.put_u64(0);
        body.put_u32(BATCH_ENTRIES_MAX as u32);
        let mut out = BytesMut::new();
        out.put_u16(MAGIC);
        out.put_u8(VERSION);
        out.put_u8(3);
        out.put_u32(body.len() as u32);
        out.put_u32(crc32c::crc32c(&body));
        out.put_slice(&body);
        assert_eq!(Message::decode(&out), Err(DecodeError::Truncated));
        let mut too_many = out.to_vec();
        let count_at = HEADER_BYTES + 4 + 16 + 8 * 4;
        too_many[count_at..count_at + 4].copy_from_slice(&(u32::MAX).to_be_bytes());
        // The CRC no longer matches: corruption is caught before the count is read.
        assert_eq!(Message::decode(&too_many), Err(DecodeError::Crc));
    }

    #[test]
    fn oversized_frame_is_rejected_unread() {
        let bytes = vec![0u8; MESSAGE_BYTES_MAX + 1];
        assert_eq!(Message::decode(&bytes), Err(DecodeError::TooLarge));
    }
}
