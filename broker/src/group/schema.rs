//! The records of the internal topic `__consumer_offsets`, in Kafka's own key/value schemas:
//! offset commit key v1 (group, topic, partition), offset commit value v3 (offset, leader epoch,
//! metadata, commit timestamp), group metadata key v2 (group) and group metadata value v3
//! (protocol type, generation, protocol, leader, state timestamp, members; we write no members),
//! and the KIP-848 consumer-group records (keys 3-8: group metadata, partition metadata, member
//! metadata, target assignment metadata and member, current member assignment; their values
//! are version 0 in the flexible encoding). A null value is a tombstone. Decoding never panics
//! and never allocates from an unchecked length; records it does not understand decode to
//! `None` and are skipped by replay.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

/// Longest string field decoded (Kafka strings carry an i16 length).
pub const STRING_BYTES_MAX: usize = i16::MAX as usize;
/// Most members a group metadata value may list for the decoder to walk them.
pub const MEMBERS_PER_VALUE_MAX: usize = 100_000;
/// Most entries of any array in a KIP-848 value (topics, partitions, subscribed names).
pub const ARRAY_ENTRIES_MAX: usize = 1_000_000;
/// Most tagged fields one KIP-848 struct may carry for the decoder to skip them.
pub const TAGGED_FIELDS_MAX: usize = 1_000;

/// Partitions by topic id (a KIP-848 assignment).
pub type TopicPartitions = BTreeMap<Uuid, BTreeSet<i32>>;

/// ConsumerGroupMemberMetadataValue v0 (the fields we keep).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberMetadata {
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed: Vec<String>,
    pub rebalance_timeout_ms: i32,
    pub server_assignor: Option<String>,
}

/// ConsumerGroupCurrentMemberAssignmentValue v0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentAssignment {
    pub member_epoch: i32,
    pub previous_epoch: i32,
    /// Kafka's MemberState: 0 stable, 1 unrevoked partitions, 2 unreleased partitions.
    pub state: i8,
    pub assigned: TopicPartitions,
    pub revoking: TopicPartitions,
}

/// One subscribed topic of ConsumerGroupPartitionMetadataValue v0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMetadata {
    pub id: Uuid,
    pub name: String,
    pub partitions: i32,
}

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
    /// KIP-848 group epoch (key 3).
    ConsumerGroup { group: String, epoch: Option<i32> },
    /// KIP-848 subscribed topics' metadata (key 4).
    ConsumerTopics {
        group: String,
        topics: Option<Vec<TopicMetadata>>,
    },
    /// KIP-848 member metadata (key 5).
    ConsumerMember {
        group: String,
        member: String,
        value: Option<MemberMetadata>,
    },
    /// KIP-848 target assignment epoch (key 6).
    ConsumerTargetEpoch { group: String, epoch: Option<i32> },
    /// KIP-848 one member's target assignment (key 7).
    ConsumerTarget {
        group: String,
        member: String,
        partitions: Option<TopicPartitions>,
    },
    /// KIP-848 one member's current assignment and epochs (key 8).
    ConsumerCurrent {
        group: String,
        member: String,
        value: Option<CurrentAssignment>,
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

/// Key types of the KIP-848 records (Kafka's record api keys).
pub const KEY_CONSUMER_GROUP: i16 = 3;
pub const KEY_CONSUMER_TOPICS: i16 = 4;
pub const KEY_CONSUMER_MEMBER: i16 = 5;
pub const KEY_CONSUMER_TARGET_EPOCH: i16 = 6;
pub const KEY_CONSUMER_TARGET: i16 = 7;
pub const KEY_CONSUMER_CURRENT: i16 = 8;

/// A KIP-848 key: its type, the group id and (member records) the member id.
pub fn consumer_key(kind: i16, group: &str, member: Option<&str>) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(kind);
    put_str(&mut b, group);
    if let Some(m) = member {
        put_str(&mut b, m);
    }
    b.freeze()
}

fn put_uvarint(b: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        b.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

fn put_compact_nullable(b: &mut BytesMut, s: Option<&str>) {
    match s {
        None => put_uvarint(b, 0),
        Some(s) => {
            let len = s.len().min(STRING_BYTES_MAX);
            put_uvarint(b, len as u64 + 1);
            b.put_slice(&s.as_bytes()[..len]);
        }
    }
}

fn put_compact_str(b: &mut BytesMut, s: &str) {
    put_compact_nullable(b, Some(s));
}

fn put_topic_partitions(b: &mut BytesMut, tp: &TopicPartitions) {
    put_uvarint(b, tp.len() as u64 + 1);
    for (id, ps) in tp {
        b.put_slice(id.as_bytes());
        put_uvarint(b, ps.len() as u64 + 1);
        for p in ps {
            b.put_i32(*p);
        }
        put_uvarint(b, 0); // tagged fields
    }
}

/// Value version 0 with a single int32 (group epoch; target assignment epoch).
pub fn epoch_value(epoch: i32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(epoch);
    put_uvarint(&mut b, 0);
    b.freeze()
}

pub fn topics_value(epoch: i32, topics: &[TopicMetadata]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(epoch);
    put_uvarint(&mut b, topics.len() as u64 + 1);
    for t in topics {
        b.put_slice(t.id.as_bytes());
        put_compact_str(&mut b, &t.name);
        b.put_i32(t.partitions);
        put_uvarint(&mut b, 1); // no partition racks
        put_uvarint(&mut b, 0);
    }
    put_uvarint(&mut b, 0);
    b.freeze()
}

pub fn member_value(m: &MemberMetadata) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    put_compact_nullable(&mut b, m.instance_id.as_deref());
    put_compact_nullable(&mut b, m.rack_id.as_deref());
    put_compact_str(&mut b, &m.client_id);
    put_compact_str(&mut b, &m.client_host);
    put_uvarint(&mut b, m.subscribed.len() as u64 + 1);
    for t in &m.subscribed {
        put_compact_str(&mut b, t);
    }
    put_compact_nullable(&mut b, None); // no regex
    b.put_i32(m.rebalance_timeout_ms);
    put_compact_nullable(&mut b, m.server_assignor.as_deref());
    put_uvarint(&mut b, 0);
    b.freeze()
}

pub fn target_value(tp: &TopicPartitions) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    put_topic_partitions(&mut b, tp);
    put_uvarint(&mut b, 0);
    b.freeze()
}

pub fn current_value(c: &CurrentAssignment) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(c.member_epoch);
    b.put_i32(c.previous_epoch);
    b.put_i8(c.state);
    put_topic_partitions(&mut b, &c.assigned);
    put_topic_partitions(&mut b, &c.revoking);
    put_uvarint(&mut b, 0);
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
    fn uvarint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    /// A compact array's length (`None` for null or beyond `ARRAY_ENTRIES_MAX`).
    fn compact_len(&mut self) -> Option<usize> {
        let n = self.uvarint()?;
        let n = usize::try_from(n.checked_sub(1)?).ok()?;
        (n <= ARRAY_ENTRIES_MAX).then_some(n)
    }
    fn compact_nullable(&mut self) -> Option<Option<String>> {
        let n = self.uvarint()?;
        if n == 0 {
            return Some(None);
        }
        let len = usize::try_from(n - 1).ok()?;
        if len > STRING_BYTES_MAX {
            return None;
        }
        let b = self.take(len)?;
        Some(Some(String::from_utf8(b.to_vec()).ok()?))
    }
    fn compact_string(&mut self) -> Option<String> {
        self.compact_nullable()?
    }
    fn uuid(&mut self) -> Option<Uuid> {
        Uuid::from_slice(self.take(16)?).ok()
    }
    /// Skips a struct's tagged fields.
    fn tagged(&mut self) -> Option<()> {
        let n = usize::try_from(self.uvarint()?).ok()?;
        if n > TAGGED_FIELDS_MAX {
            return None;
        }
        for _ in 0..n {
            self.uvarint()?;
            let size = usize::try_from(self.uvarint()?).ok()?;
            self.take(size)?;
        }
        Some(())
    }
    fn topic_partitions(&mut self) -> Option<TopicPartitions> {
        let topics = self.compact_len()?;
        let mut out = TopicPartitions::new();
        for _ in 0..topics {
            let id = self.uuid()?;
            let n = self.compact_len()?;
            let mut ps = BTreeSet::new();
            for _ in 0..n {
                ps.insert(self.i32()?);
            }
            self.tagged()?;
            out.entry(id).or_default().extend(ps);
        }
        Some(out)
    }
    /// A flexible value's version; only version 0 is understood.
    fn version0(&mut self) -> Option<()> {
        (self.i16()? == 0).then_some(())
    }
}

fn decode_epoch(v: &[u8]) -> Option<i32> {
    let mut r = Reader { bytes: v };
    r.version0()?;
    let epoch = r.i32()?;
    r.tagged()?;
    Some(epoch)
}

fn decode_topics(v: &[u8]) -> Option<Vec<TopicMetadata>> {
    let mut r = Reader { bytes: v };
    r.version0()?;
    let _epoch = r.i32()?;
    let n = r.compact_len()?;
    let mut out = Vec::new();
    for _ in 0..n {
        let id = r.uuid()?;
        let name = r.compact_string()?;
        let partitions = r.i32()?;
        let racks = r.compact_len()?;
        for _ in 0..racks {
            r.i32()?;
            let k = r.compact_len()?;
            for _ in 0..k {
                r.compact_string()?;
            }
            r.tagged()?;
        }
        r.tagged()?;
        out.push(TopicMetadata {
            id,
            name,
            partitions,
        });
    }
    r.tagged()?;
    Some(out)
}

fn decode_member(v: &[u8]) -> Option<MemberMetadata> {
    let mut r = Reader { bytes: v };
    r.version0()?;
    let instance_id = r.compact_nullable()?;
    let rack_id = r.compact_nullable()?;
    let client_id = r.compact_string()?;
    let client_host = r.compact_string()?;
    let n = r.compact_len()?;
    let mut subscribed = Vec::new();
    for _ in 0..n {
        subscribed.push(r.compact_string()?);
    }
    let _regex = r.compact_nullable()?;
    let rebalance_timeout_ms = r.i32()?;
    let server_assignor = r.compact_nullable()?;
    r.tagged()?;
    Some(MemberMetadata {
        instance_id,
        rack_id,
        client_id,
        client_host,
        subscribed,
        rebalance_timeout_ms,
        server_assignor,
    })
}

fn decode_target(v: &[u8]) -> Option<TopicPartitions> {
    let mut r = Reader { bytes: v };
    r.version0()?;
    let tp = r.topic_partitions()?;
    r.tagged()?;
    Some(tp)
}

fn decode_current(v: &[u8]) -> Option<CurrentAssignment> {
    let mut r = Reader { bytes: v };
    r.version0()?;
    let member_epoch = r.i32()?;
    let previous_epoch = r.i32()?;
    let state = r.take(1)?[0] as i8;
    let assigned = r.topic_partitions()?;
    let revoking = r.topic_partitions()?;
    r.tagged()?;
    Some(CurrentAssignment {
        member_epoch,
        previous_epoch,
        state,
        assigned,
        revoking,
    })
}

/// `Some(None)` for a tombstone, `Some(Some(v))` for a value, `None` if the value is not ours.
fn opt<T>(value: Option<&[u8]>, f: impl FnOnce(&[u8]) -> Option<T>) -> Option<Option<T>> {
    match value {
        None => Some(None),
        Some(v) => f(v).map(Some),
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
        KEY_CONSUMER_GROUP => {
            let group = k.string()?;
            let epoch = opt(value, decode_epoch)?;
            Some(Stored::ConsumerGroup { group, epoch })
        }
        KEY_CONSUMER_TOPICS => {
            let group = k.string()?;
            let topics = opt(value, decode_topics)?;
            Some(Stored::ConsumerTopics { group, topics })
        }
        KEY_CONSUMER_MEMBER => {
            let group = k.string()?;
            let member = k.string()?;
            let value = opt(value, decode_member)?;
            Some(Stored::ConsumerMember {
                group,
                member,
                value,
            })
        }
        KEY_CONSUMER_TARGET_EPOCH => {
            let group = k.string()?;
            let epoch = opt(value, decode_epoch)?;
            Some(Stored::ConsumerTargetEpoch { group, epoch })
        }
        KEY_CONSUMER_TARGET => {
            let group = k.string()?;
            let member = k.string()?;
            let partitions = opt(value, decode_target)?;
            Some(Stored::ConsumerTarget {
                group,
                member,
                partitions,
            })
        }
        KEY_CONSUMER_CURRENT => {
            let group = k.string()?;
            let member = k.string()?;
            let value = opt(value, decode_current)?;
            Some(Stored::ConsumerCurrent {
                group,
                member,
                value,
            })
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

    #[test]
    fn consumer_group_records_round_trip_and_survive_truncation() {
        let tp: TopicPartitions = BTreeMap::from([
            (Uuid::from_u128(1), BTreeSet::from([0, 2])),
            (Uuid::from_u128(2), BTreeSet::from([5])),
        ]);
        let member = MemberMetadata {
            instance_id: Some("i".into()),
            rack_id: None,
            client_id: "c".into(),
            client_host: "/h".into(),
            subscribed: vec!["a".into(), "b".into()],
            rebalance_timeout_ms: 30_000,
            server_assignor: Some("uniform".into()),
        };
        let current = CurrentAssignment {
            member_epoch: 7,
            previous_epoch: 5,
            state: 1,
            assigned: tp.clone(),
            revoking: BTreeMap::from([(Uuid::from_u128(3), BTreeSet::from([1]))]),
        };
        let topics = vec![TopicMetadata {
            id: Uuid::from_u128(1),
            name: "a".into(),
            partitions: 6,
        }];
        let cases = [
            (
                consumer_key(KEY_CONSUMER_GROUP, "g", None),
                epoch_value(9),
                Stored::ConsumerGroup {
                    group: "g".into(),
                    epoch: Some(9),
                },
            ),
            (
                consumer_key(KEY_CONSUMER_TOPICS, "g", None),
                topics_value(9, &topics),
                Stored::ConsumerTopics {
                    group: "g".into(),
                    topics: Some(topics.clone()),
                },
            ),
            (
                consumer_key(KEY_CONSUMER_MEMBER, "g", Some("m")),
                member_value(&member),
                Stored::ConsumerMember {
                    group: "g".into(),
                    member: "m".into(),
                    value: Some(member.clone()),
                },
            ),
            (
                consumer_key(KEY_CONSUMER_TARGET_EPOCH, "g", None),
                epoch_value(8),
                Stored::ConsumerTargetEpoch {
                    group: "g".into(),
                    epoch: Some(8),
                },
            ),
            (
                consumer_key(KEY_CONSUMER_TARGET, "g", Some("m")),
                target_value(&tp),
                Stored::ConsumerTarget {
                    group: "g".into(),
                    member: "m".into(),
                    partitions: Some(tp.clone()),
                },
            ),
            (
                consumer_key(KEY_CONSUMER_CURRENT, "g", Some("m")),
                current_value(&current),
                Stored::ConsumerCurrent {
                    group: "g".into(),
                    member: "m".into(),
                    value: Some(current.clone()),
                },
            ),
        ];
        for (key, value, want) in cases {
            assert_eq!(decode(&key, Some(&value)), Some(want));
            assert!(decode(&key, None).is_some(), "tombstone of {key:?}");
            for n in 0..value.len() {
                assert_eq!(
                    decode(&key, Some(&value[..n])),
                    None,
                    "prefix {n} of {key:?}"
                );
            }
        }
        // A huge compact-array length is refused before anything is allocated.
        let mut v = BytesMut::new();
        v.put_i16(0);
        put_uvarint(&mut v, u64::MAX);
        let key = consumer_key(KEY_CONSUMER_TARGET, "g", Some("m"));
        assert_eq!(decode(&key, Some(&v)), None);
    }
}
