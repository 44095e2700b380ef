//! Metadata records: the entries of the controller's replicated log, and their versioned,
//! CRC-32C-protected binary encoding (`version u8 | kind u8 | body | crc32c u32`, big-endian).
//! Decoding never panics and never allocates from a length it has not checked against a named
//! bound; it knows nothing of Raft, the image or the network.

use std::collections::BTreeMap;

/// A broker's node id; `-1` (`NO_LEADER`) means "none".
pub type BrokerId = i32;
/// A topic id (Kafka's UUID, as a plain 128-bit number).
pub type TopicId = u128;

/// The leader field of a partition with no leader (offline).
pub const NO_LEADER: BrokerId = -1;
/// The only encoding version written; decode refuses any other.
pub const RECORD_VERSION: u8 = 0;
/// Largest encoded record accepted by `decode`.
pub const RECORD_BYTES_MAX: usize = 1 << 20;
/// Longest string field (host, topic name, rack, config key or value), in bytes.
pub const STRING_BYTES_MAX: usize = 4096;
/// Most replicas of one partition.
pub const REPLICAS_MAX: usize = 64;
/// Most config entries carried by one `Topic` record.
pub const CONFIGS_MAX: usize = 256;
/// Most records in one encoded batch (`encode_batch` / `decode_batch`).
pub const BATCH_RECORDS_MAX: usize = 1 << 20;

const CRC_BYTES: usize = 4;
const HEADER_BYTES: usize = 2;

/// Full state of one partition (Kafka's `PartitionRecord`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionRecord {
    pub topic_id: TopicId,
    pub partition: i32,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

/// A change of one partition: only the changed fields are `Some`. The epochs are the values
/// after the change, so `apply` can check that they move forward by exactly one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionChange {
    pub topic_id: TopicId,
    pub partition: i32,
    pub replicas: Option<Vec<BrokerId>>,
    pub isr: Option<Vec<BrokerId>>,
    pub leader: Option<BrokerId>,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

/// One entry of the metadata log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataRecord {
    /// A broker (re)registers; `incarnation` is its log directory id: a new one means a wiped
    /// disk. A registered broker starts fenced.
    RegisterBroker {
        broker_id: BrokerId,
        incarnation: u128,
        host: String,
        port: u16,
        rack: Option<String>,
        /// Hosts no partition replicas (encoded as its own kind, so older logs decode as is).
        controller_only: bool,
    },
    FenceBroker {
        broker_id: BrokerId,
    },
    UnfenceBroker {
        broker_id: BrokerId,
    },
    Topic {
        name: String,
        topic_id: TopicId,
        configs: BTreeMap<String, String>,
    },
    Partition(PartitionRecord),
    PartitionChange(PartitionChange),
    RemoveTopic {
        topic_id: TopicId,
    },
    /// Sets (`Some`) or deletes (`None`) one topic config.
    ConfigChange {
        topic_id: TopicId,
        key: String,
        value: Option<String>,
    },
}

/// Why bytes did not decode into a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// Shorter than a header and CRC, or a field runs past the end.
    Truncated,
    /// Larger than `RECORD_BYTES_MAX`.
    TooLarge,
    /// The CRC-32C does not match.
    Crc,
    UnknownVersion(u8),
    UnknownKind(u8),
    /// A length or count exceeds its named bound.
    Bound(&'static str),
    /// A string is not UTF-8.
    Utf8,
    /// Bytes left over after the body.
    TrailingBytes,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

const KIND_REGISTER_BROKER: u8 = 1;
const KIND_FENCE_BROKER: u8 = 2;
const KIND_UNFENCE_BROKER: u8 = 3;
const KIND_TOPIC: u8 = 4;
const KIND_PARTITION: u8 = 5;
const KIND_PARTITION_CHANGE: u8 = 6;
const KIND_REMOVE_TOPIC: u8 = 7;
const KIND_CONFIG_CHANGE: u8 = 8;
/// `RegisterBroker` of a controller-only node: the same fields as `KIND_REGISTER_BROKER`.
const KIND_REGISTER_CONTROLLER_ONLY: u8 = 9;

impl MetadataRecord {
    /// Short name for logs and errors.
    pub fn kind_name(&self) -> &'static str {
        match self {
            MetadataRecord::RegisterBroker { .. } => "RegisterBroker",
            MetadataRecord::FenceBroker { .. } => "FenceBroker",
            MetadataRecord::UnfenceBroker { .. } => "UnfenceBroker",
            MetadataRecord::Topic { .. } => "Topic",
            MetadataRecord::Partition(_) => "Partition",
            MetadataRecord::PartitionChange(_) => "PartitionChange",
            MetadataRecord::RemoveTopic { .. } => "RemoveTopic",
            MetadataRecord::ConfigChange { .. } => "ConfigChange",
        }
    }

    /// Encodes the record. Panics only if a field exceeds its bound, which is a bug in the
    /// caller (the controller validates every request before it builds a record).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer {
            out: Vec::with_capacity(64),
        };
        w.out.push(RECORD_VERSION);
        match self {
            MetadataRecord::RegisterBroker {
                broker_id,
                incarnation,
                host,
                port,
                rack,
                controller_only,
            } => {
                w.out.push(if *controller_only {
                    KIND_REGISTER_CONTROLLER_ONLY
                } else {
                    KIND_REGISTER_BROKER
                });
                w.i32(*broker_id);
                w.u128(*incarnation);
                w.string(host);
                w.out.extend_from_slice(&port.to_be_bytes());
                w.opt_string(rack.as_deref());
            }
            MetadataRecord::FenceBroker { broker_id } => {
                w.out.push(KIND_FENCE_BROKER);
                w.i32(*broker_id);
            }
            MetadataRecord::UnfenceBroker { broker_id } => {
                w.out.push(KIND_UNFENCE_BROKER);
                w.i32(*broker_id);
            }
            MetadataRecord::Topic {
                name,
                topic_id,
                configs,
            } => {
                w.out.push(KIND_TOPIC);
                w.string(name);
                w.u128(*topic_id);
                assert!(
                    configs.len() <= CONFIGS_MAX,
                    "too many configs: {}",
                    configs.len()
                );
                w.u32(configs.len() as u32);
                for (key, value) in configs {
                    w.string(key);
                    w.string(value);
                }
            }
            MetadataRecord::Partition(p) => {
                w.out.push(KIND_PARTITION);
                w.u128(p.topic_id);
                w.i32(p.partition);
                w.ids(&p.replicas);
                w.ids(&p.isr);
                w.i32(p.leader);
                w.i32(p.leader_epoch);
                w.i32(p.partition_epoch);
            }
            MetadataRecord::PartitionChange(c) => {
                w.out.push(KIND_PARTITION_CHANGE);
                w.u128(c.topic_id);
                w.i32(c.partition);
                w.opt_ids(c.replicas.as_deref());
                w.opt_ids(c.isr.as_deref());
                match c.leader {
                    Some(leader) => {
                        w.out.push(1);
                        w.i32(leader);
                    }
                    None => w.out.push(0),
                }
                w.i32(c.leader_epoch);
                w.i32(c.partition_epoch);
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                w.out.push(KIND_REMOVE_TOPIC);
                w.u128(*topic_id);
            }
            MetadataRecord::ConfigChange {
                topic_id,
                key,
                value,
            } => {
                w.out.push(KIND_CONFIG_CHANGE);
                w.u128(*topic_id);
                w.string(key);
                w.opt_string(value.as_deref());
            }
        }
        let crc = crc32c::crc32c(&w.out);
        w.out.extend_from_slice(&crc.to_be_bytes());
        assert!(
            w.out.len() <= RECORD_BYTES_MAX,
            "record too large: {}",
            w.out.len()
        );
        w.out
    }

    /// Decodes one record; never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<MetadataRecord, RecordError> {
        if bytes.len() > RECORD_BYTES_MAX {
            return Err(RecordError::TooLarge);
        }
        if bytes.len() < HEADER_BYTES + CRC_BYTES {
            return Err(RecordError::Truncated);
        }
        let (body, crc_bytes) = bytes.split_at(bytes.len() - CRC_BYTES);
        let stored = u32::from_be_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
        if crc32c::crc32c(body) != stored {
            return Err(RecordError::Crc);
        }
        if body[0] != RECORD_VERSION {
            return Err(RecordError::UnknownVersion(body[0]));
        }
        let mut r = Reader {
            rest: &body[HEADER_BYTES..],
        };
        let record = match body[1] {
            kind @ (KIND_REGISTER_BROKER | KIND_REGISTER_CONTROLLER_ONLY) => {
                MetadataRecord::RegisterBroker {
                    broker_id: r.i32()?,
                    incarnation: r.u128()?,
                    host: r.string()?,
                    port: u16::from_be_bytes(r.array::<2>()?),
                    rack: r.opt_string()?,
                    controller_only: kind == KIND_REGISTER_CONTROLLER_ONLY,
                }
            }
            KIND_FENCE_BROKER => MetadataRecord::FenceBroker {
                broker_id: r.i32()?,
            },
            KIND_UNFENCE_BROKER => MetadataRecord::UnfenceBroker {
                broker_id: r.i32()?,
            },
            KIND_TOPIC => {
                let name = r.string()?;
                let topic_id = r.u128()?;
                let count = r.u32()? as usize;
                if count > CONFIGS_MAX {
                    return Err(RecordError::Bound("CONFIGS_MAX"));
                }
                let mut configs = BTreeMap::new();
                for _ in 0..count {
                    let key = r.string()?;
                    let value = r.string()?;
                    configs.insert(key, value);
                }
                MetadataRecord::Topic {
                    name,
                    topic_id,
                    configs,
                }
            }
            KIND_PARTITION => MetadataRecord::Partition(PartitionRecord {
                topic_id: r.u128()?,
                partition: r.i32()?,
                replicas: r.ids()?,
                isr: r.ids()?,
                leader: r.i32()?,
                leader_epoch: r.i32()?,
                partition_epoch: r.i32()?,
            }),
            KIND_PARTITION_CHANGE => {
                let topic_id = r.u128()?;
                let partition = r.i32()?;
                let replicas = r.opt_ids()?;
                let isr = r.opt_ids()?;
                let leader = match r.u8()? {
                    0 => None,
                    1 => Some(r.i32()?),
                    _ => return Err(RecordError::Bound("option flag")),
                };
                MetadataRecord::PartitionChange(PartitionChange {
                    topic_id,
                    partition,
                    replicas,
                    isr,
                    leader,
                    leader_epoch: r.i32()?,
                    partition_epoch: r.i32()?,
                })
            }
            KIND_REMOVE_TOPIC => MetadataRecord::RemoveTopic {
                topic_id: r.u128()?,
            },
            KIND_CONFIG_CHANGE => MetadataRecord::ConfigChange {
                topic_id: r.u128()?,
                key: r.string()?,
                value: r.opt_string()?,
            },
            other => return Err(RecordError::UnknownKind(other)),
        };
        if !r.rest.is_empty() {
            return Err(RecordError::TrailingBytes);
        }
        Ok(record)
    }
}

/// Encodes records as `count u32 | (length u32 | record)*` (a snapshot, or a Raft entry body).
pub fn encode_batch(records: &[MetadataRecord]) -> Vec<u8> {
    assert!(
        records.len() <= BATCH_RECORDS_MAX,
        "batch too large: {}",
        records.len()
    );
    let mut out = Vec::new();
    out.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for record in records {
        let bytes = record.encode();
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

/// Decodes what `encode_batch` wrote; never panics.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<MetadataRecord>, RecordError> {
    let mut r = Reader { rest: bytes };
    let count = r.u32()? as usize;
    if count > BATCH_RECORDS_MAX {
        return Err(RecordError::Bound("BATCH_RECORDS_MAX"));
    }
    // Every record takes at least a length and a minimal record, so a count larger than the
    // bytes could hold is refused before reserving anything for it.
    if count > r.rest.len() / (4 + HEADER_BYTES + CRC_BYTES) {
        return Err(RecordError::Truncated);
    }
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let length = r.u32()? as usize;
        if length > RECORD_BYTES_MAX {
            return Err(RecordError::TooLarge);
        }
        records.push(MetadataRecord::decode(r.take(length)?)?);
    }
    if !r.rest.is_empty() {
        return Err(RecordError::TrailingBytes);
    }
    Ok(records)
}

struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn i32(&mut self, v: i32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn u128(&mut self, v: u128) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn string(&mut self, s: &str) {
        assert!(s.len() <= STRING_BYTES_MAX, "string too long: {}", s.len());
        self.u32(s.len() as u32);
        self.out.extend_from_slice(s.as_bytes());
    }
    fn opt_string(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.out.push(1);
                self.string(s);
            }
            None => self.out.push(0),
        }
    }
    fn ids(&mut self, ids: &[BrokerId]) {
        assert!(
            ids.len() <= REPLICAS_MAX,
            "too many replicas: {}",
            ids.len()
        );
        self.u32(ids.len() as u32);
        for id in ids {
            self.i32(*id);
        }
    }
    fn opt_ids(&mut self, ids: Option<&[BrokerId]>) {
        match ids {
            Some(ids) => {
                self.out.push(1);
                self.ids(ids);
            }
            None => self.out.push(0),
        }
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.rest.len() < n {
            return Err(RecordError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.array::<1>()?[0])
    }
    fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u128(&mut self) -> Result<u128, RecordError> {
        Ok(u128::from_be_bytes(self.array()?))
    }
    fn string(&mut self) -> Result<String, RecordError> {
        let len = self.u32()? as usize;
        if len > STRING_BYTES_MAX {
            return Err(RecordError::Bound("STRING_BYTES_MAX"));
        }
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| RecordError::Utf8)
    }
    fn opt_string(&mut self) -> Result<Option<String>, RecordError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.string()?)),
            _ => Err(RecordError::Bound("option flag")),
        }
    }
    fn ids(&mut self) -> Result<Vec<BrokerId>, RecordError> {
        let count = self.u32()? as usize;
        if count > REPLICAS_MAX {
            return Err(RecordError::Bound("REPLICAS_MAX"));
        }
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            ids.push(self.i32()?);
        }
        Ok(ids)
    }
    fn opt_ids(&mut self) -> Result<Option<Vec<BrokerId>>, RecordError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.ids()?)),
            _ => Err(RecordError::Bound("option flag")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids() -> impl Strategy<Value = Vec<BrokerId>> {
        proptest::collection::vec(-1i32..100, 0..8)
    }

    fn record() -> impl Strategy<Value = MetadataRecord> {
        let name = "[a-z._-]{0,20}";
        prop_oneof![
            (
                any::<i32>(),
                any::<u128>(),
                name,
                any::<u16>(),
                proptest::option::of(name),
                any::<bool>(),
            )
                .prop_map(
                    |(broker_id, incarnation, host, port, rack, controller_only)| {
                        MetadataRecord::RegisterBroker {
                            broker_id,
                            incarnation,
                            host,
                            port,
                            rack,
                            controller_only,
                        }
                    }
                ),
            any::<i32>().prop_map(|broker_id| MetadataRecord::FenceBroker { broker_id }),
            any::<i32>().prop_map(|broker_id| MetadataRecord::UnfenceBroker { broker_id }),
            (
                name,
                any::<u128>(),
                proptest::collection::btree_map(name, name, 0..4)
            )
                .prop_map(|(name, topic_id, configs)| MetadataRecord::Topic {
                    name,
                    topic_id,
                    configs
                }),
            (
                any::<u128>(),
                any::<i32>(),
                ids(),
                ids(),
                any::<i32>(),
                any::<i32>(),
                any::<i32>()
            )
                .prop_map(|(topic_id, partition, replicas, isr, leader, le, pe)| {
                    MetadataRecord::Partition(PartitionRecord {
                        topic_id,
                        partition,
                        replicas,
                        isr,
                        leader,
                        leader_epoch: le,
                        partition_epoch: pe,
                    })
                }),
            (
                any::<u128>(),
                any::<i32>(),
                proptest::option::of(ids()),
                proptest::option::of(ids()),
                proptest::option::of(any::<i32>()),
                any::<i32>(),
                any::<i32>()
            )
                .prop_map(|(topic_id, partition, replicas, isr, leader, le, pe)| {
                    MetadataRecord::PartitionChange(PartitionChange {
                        topic_id,
                        partition,
                        replicas,
                        isr,
                        leader,
                        leader_epoch: le,
                        partition_epoch: pe,
                    })
                }),
            any::<u128>().prop_map(|topic_id| MetadataRecord::RemoveTopic { topic_id }),
            (any::<u128>(), name, proptest::option::of(name)).prop_map(|(topic_id, key, value)| {
                MetadataRecord::ConfigChange {
                    topic_id,
                    key,
                    value,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn record_round_trips(r in record()) {
            let bytes = r.encode();
            prop_assert_eq!(MetadataRecord::decode(&bytes), Ok(r));
        }

        #[test]
        fn batch_round_trips(rs in proptest::collection::vec(record(), 0..6)) {
            prop_assert_eq!(decode_batch(&encode_batch(&rs)), Ok(rs));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = MetadataRecord::decode(&bytes);
            let _ = decode_batch(&bytes);
        }

        #[test]
        fn any_bit_flip_is_rejected(r in record(), bit in any::<usize>()) {
            let mut bytes = r.encode();
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(MetadataRecord::decode(&bytes).is_err());
        }
    }

    /// A garbage body with a valid CRC exercises every bound past the CRC check.
    #[test]
    fn forged_crc_with_huge_lengths_is_refused() {
        let mut body = vec![RECORD_VERSION, KIND_PARTITION];
        body.extend_from_slice(&0u128.to_be_bytes());
        body.extend_from_slice(&0i32.to_be_bytes());
        body.extend_from_slice(&u32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&body);
        body.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(
            MetadataRecord::decode(&body),
            Err(RecordError::Bound("REPLICAS_MAX"))
        );
        let mut batch = Vec::new();
        batch.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            decode_batch(&batch),
            Err(RecordError::Bound("BATCH_RECORDS_MAX"))
        );
        batch = 1000u32.to_be_bytes().to_vec();
        assert_eq!(decode_batch(&batch), Err(RecordError::Truncated));
    }
}
