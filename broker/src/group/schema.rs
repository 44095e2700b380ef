//! The records of the internal topic `__consumer_offsets`, in Kafka's own key/value schemas:
//! offset commit key v1 (group, topic, partition), offset commit value v3 (offset, leader epoch,
//! metadata, commit timestamp), group metadata key v2 (group) and group metadata value v3
//! (protocol type, generation, protocol, leader, state timestamp, members; we write no members).
//! A null value is a tombstone. Decoding never panics and never allocates from an unchecked
//! length; records it does not understand decode to `None` and are skipped by replay.

use bytes::{BufMut, Bytes, BytesMut};

/// Longest string field decoded (Kafka strings carry an i16 length).
pub const STRING_BYTES_MAX: usize = i16::MAX as usize;
/// Most members a group metadata value may list for the decoder to walk them.
pub const MEMBERS_PER_VALUE_MAX: usize = 100_000;

/// The partition of `__consumer_offsets` that holds `group`: Java's `String.hashCode` over UTF-16
/// code units, then `Utils.abs(hash) % partitions`, so the placement matches Kafka's.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    assert!(partitions > 0, "offsets topic with {partitions} partitions");
    let mut hash: i32 = 0;
    for unit in group.encode_utf16() {
        hash = hash.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions
}

/// One committed offset as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// The part of a group's metadata we persist (members are not restored after a restart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
}

/// A decoded record of the offsets topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        /// `None` = tombstone (OffsetDelete, DeleteGroups).
        value: Option<OffsetValue>,
    },
    Group {
        group: String,
        /// `None` = tombstone (DeleteGroups).
        value: Option<GroupValue>,
    },
}

fn put_str(b: &mut BytesMut, s: &str) {
    let len = s.len().min(STRING_BYTES_MAX);
    b.put_i16(len as i16);
    b.put_slice(&s.as_bytes()[..len]);
}

fn put_nullable(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(b, s),
        None => b.put_i16(-1),
    }
}

pub fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(1);
    put_str(&mut b, group);
    put_str(&mut b, topic);
    b.put_i32(partition);
    b.freeze()
}

pub fn offset_value(v: &OffsetValue) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(3);
    b.put_i64(v.offset);
    b.put_i32(v.leader_epoch);
    put_str(&mut b, &v.metadata);
    b.put_i64(v.commit_timestamp_ms);
    b.freeze()
}

pub fn group_key(group: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(2);
    put_str(&mut b, group);
    b.freeze()
}

pub fn group_value(v: &GroupValue) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(3);
    put_str(&mut b, &v.protocol_type);
    b.put_i32(v.generation);
    put_nullable(&mut b, v.protocol.as_deref());
    put_nullable(&mut b, v.leader.as_deref());
    b.put_i64(v.state_timestamp_ms);
    b.put_i32(0); // members: not persisted
    b.freeze()
}

/// A cursor over untrusted bytes: every read is checked.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i64(&mut self) -> Option<i64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(i64::from_be_bytes(a))
    }
    fn nullable(&mut self) -> Option<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Some(None);
        }
        let b = self.take(len as usize)?;
        Some(Some(String::from_utf8(b.to_vec()).ok()?))
    }
    fn string(&mut self) -> Option<String> {
        self.nullable()?
    }
}

/// Decodes one record of the offsets topic; `None` for keys or values we do not understand.
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Option<Stored> {
    let mut k = Reader { bytes: key };
    match k.i16()? {
        0 | 1 => {
            let group = k.string()?;
            let topic = k.string()?;
            let partition = k.i32()?;
            let value = match value {
                None => None,
                Some(v) => Some(decode_offset_value(v)?),
            };
            Some(Stored::Offset {
                group,
                topic,
                partition,
                value,
            })
        }
        2 => {
            let group = k.string()?;
            let value = match value {
                None => None,
                Some(v) => Some(decode_group_value(v)?),
            };
            Some(Stored::Group { group, value })
        }
        _ => None,
    }
}

fn decode_offset_value(v: &[u8]) -> Option<OffsetValue> {
    let mut r = Reader { bytes: v };
    let version = r.i16()?;
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.string()?;
    let commit_timestamp_ms = r.i64()?;
    Some(OffsetValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

fn decode_group_value(v: &[u8]) -> Option<GroupValue> {
    let mut r = Reader { bytes: v };
    let version = r.i16()?;
    if !(0..=4).contains(&version) {
        return None;
    }
    let protocol_type = r.string()?;
    let generation = r.i32()?;
    let protocol = r.nullable()?;
    let leader = r.nullable()?;
    let state_timestamp_ms = if version >= 2 { r.i64()? } else { -1 };
    // Members follow; we restore none, so they are not walked.
    Some(GroupValue {
        protocol_type,
        generation,
        protocol,
        leader,
        state_timestamp_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_matches_java_string_hash_code() {
        // "hello".hashCode() == 99162322 in Java.
        assert_eq!(partition_for("hello", 50), 99_162_322 % 50);
        assert_eq!(partition_for("", 50), 0);
        assert_eq!(partition_for("anything", 1), 0);
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE: Utils.abs maps it to 0.
        assert_eq!(partition_for("polygenelubricants", 7), 0);
    }

    #[test]
    fn offset_records_round_trip() {
        let v = OffsetValue {
            offset: 42,
            leader_epoch: 3,
            metadata: "meta".into(),
            commit_timestamp_ms: 1_700_000_000_000,
        };
        let key = offset_key("g", "t", 5);
        let got = decode(&key, Some(&offset_value(&v)));
        assert_eq!(
            got,
            Some(Stored::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 5,
                value: Some(v),
            })
        );
        assert_eq!(
            decode(&key, None),
            Some(Stored::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 5,
                value: None
            })
        );
    }

    #[test]
    fn group_records_round_trip() {
        let v = GroupValue {
            protocol_type: "consumer".into(),
            generation: 7,
            protocol: Some("range".into()),
            leader: None,
            state_timestamp_ms: 9,
        };
        let got = decode(&group_key("g"), Some(&group_value(&v)));
        assert_eq!(
            got,
            Some(Stored::Group {
                group: "g".into(),
                value: Some(v)
            })
        );
    }

    #[test]
    fn truncated_or_unknown_bytes_decode_to_none() {
        let key = offset_key("group", "topic", 1);
        for n in 0..key.len() {
            assert_eq!(decode(&key[..n], None), None, "prefix {n}");
        }
        let value = offset_value(&OffsetValue {
            offset: 1,
            leader_epoch: 0,
            metadata: String::new(),
            commit_timestamp_ms: 0,
        });
        for n in 0..value.len() {
            assert_eq!(decode(&key, Some(&value[..n])), None, "value prefix {n}");
        }
        assert_eq!(decode(&[0, 9, 0, 0], None), None);
    }
}
