//! The metadata store of a single combined-mode node (it is its own metadata voter): cluster id,
//! topics (name, id, partition count, config overrides) and the producer-id block, kept as an
//! append-only log of CRC-32C-framed records in `meta/metadata.log`, replayed on open (a torn or
//! corrupt tail is truncated). Every change is appended and synced before it is visible.
//! A Raft quorum replaces the log later; callers only use the methods below.
//! Never reads a clock; randomness (ids) comes only from the seed it is handed.

use std::collections::BTreeMap;
use std::fmt;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use samsa_storage::{Disk, DiskError, OpenMode};
use uuid::Uuid;

/// Directory and file of the metadata log under the data dir.
pub const METADATA_DIR: &str = "meta";
pub const METADATA_LOG: &str = "meta/metadata.log";
/// Largest metadata log replayed (it is read whole at start).
pub const METADATA_LOG_BYTES_MAX: u64 = 256 << 20;
/// Largest single record.
pub const METADATA_RECORD_BYTES_MAX: usize = 1 << 20;
/// Producer ids are reserved in blocks of this size, one sync per block.
pub const PRODUCER_ID_BLOCK: i64 = 1000;
/// Kafka's limit on topic name length.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Most topics one node holds.
pub const TOPICS_MAX: usize = 100_000;

const FRAME_HEADER_BYTES: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataState {
    pub cluster_id: String,
    pub topics: BTreeMap<String, TopicMeta>,
    /// Next producer id to hand out, and the end of the reserved (persisted) block.
    next_producer_id: i64,
    producer_id_limit: i64,
}

#[derive(Debug)]
pub enum MetaError {
    Disk(DiskError),
    /// The log is larger than `METADATA_LOG_BYTES_MAX` or holds an unreadable record in a place
    /// that cannot be a torn tail.
    Corrupt(String),
    TopicExists,
    UnknownTopic,
    TooMany,
}

impl fmt::Display for MetaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaError::Disk(e) => write!(f, "metadata log: {e}"),
            MetaError::Corrupt(m) => write!(f, "metadata log corrupt: {m}"),
            MetaError::TopicExists => write!(f, "topic already exists"),
            MetaError::UnknownTopic => write!(f, "unknown topic"),
            MetaError::TooMany => write!(f, "too many topics"),
        }
    }
}

impl std::error::Error for MetaError {}

impl From<DiskError> for MetaError {
    fn from(e: DiskError) -> Self {
        MetaError::Disk(e)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Record {
    ClusterId(String),
    TopicCreated(TopicMeta),
    TopicDeleted {
        name: String,
    },
    PartitionsSet {
        name: String,
        count: i32,
    },
    ConfigsSet {
        name: String,
        configs: BTreeMap<String, String>,
    },
    ProducerIdLimit(i64),
}

/// True for names Kafka accepts: `[a-zA-Z0-9._-]`, 1..=249 bytes, not `.` or `..`.
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= TOPIC_NAME_BYTES_MAX
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

pub struct MetadataStore<D: Disk> {
    disk: D,
    file: D::File,
    end_bytes: u64,
    seed: u64,
    state: MetadataState,
}

/// How many times the metadata log is read again when a frame fails its checks.
const METADATA_REREADS_ON_MISMATCH: usize = 4;

async fn read_all<D: Disk>(disk: &D, file: &D::File, len: u64) -> Result<Vec<u8>, MetaError> {
    let mut bytes = vec![0u8; len as usize];
    let mut read = 0;
    while read < bytes.len() {
        let n = disk.read_at(file, read as u64, &mut bytes[read..]).await?;
        if n == 0 {
            break;
        }
        read += n;
    }
    bytes.truncate(read);
    Ok(bytes)
}

impl<D: Disk> MetadataStore<D> {
    /// Opens (creating if needed) and replays the metadata log; generates the cluster id once.
    pub async fn open(disk: D, seed: u64) -> Result<MetadataStore<D>, MetaError> {
        disk.create_dir_all(METADATA_DIR).await?;
        disk.sync_dir("").await?;
        let file = disk.open(METADATA_LOG, OpenMode::CreateOrOpen).await?;
        disk.sync_dir(METADATA_DIR).await?;
        let len = disk.len(&file).await?;
        if len > METADATA_LOG_BYTES_MAX {
            return Err(MetaError::Corrupt(format!(
                "{len} bytes > {METADATA_LOG_BYTES_MAX}"
            )));
        }
        // A frame that fails its CRC is read again before the tail is cut: a transient flip on
        // the read path must never truncate (and so lose) durable metadata (simulator:
        // single_corruption, where topics vanished after a flipped read).
        let mut best: Option<(MetadataState, usize, usize)> = None;
        for _ in 0..=METADATA_REREADS_ON_MISMATCH {
            let bytes = read_all(&disk, &file, len).await?;
            let mut state = MetadataState::default();
            let mut pos = 0usize;
            while let Some((record, next)) = parse_frame(&bytes, pos) {
                apply(&mut state, record);
                pos = next;
            }
            let whole = pos == bytes.len();
            if best.as_ref().is_none_or(|(_, best_pos, _)| pos > *best_pos) {
                best = Some((state, pos, bytes.len()));
            }
            if whole {
                break;
            }
        }
        let (mut state, pos, file_bytes) = best.expect("at least one read");
        if pos < file_bytes {
            tracing::warn!(
                valid_bytes = pos,
                file_bytes,
                "metadata log: truncating a torn or corrupt tail"
            );
            disk.set_len(&file, pos as u64).await?;
            disk.sync(&file).await?;
        }
        // Ids handed out before a crash may not have been persisted; skip the whole block.
        state.next_producer_id = state.producer_id_limit;
        let mut store = MetadataStore {
            disk,
            file,
            end_bytes: pos as u64,
            seed,
            state,
        };
        if store.state.cluster_id.is_empty() {
            let mut rng = store.rng();
            let mut raw = [0u8; 16];
            rng.fill_bytes(&mut raw);
            let id = base64url(&raw);
            store.append(Record::ClusterId(id)).await?;
        }
        Ok(store)
    }

    pub fn state(&self) -> &MetadataState {
        &self.state
    }

    pub fn cluster_id(&self) -> &str {
        &self.state.cluster_id
    }

    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.state.topics.get(name)
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<&TopicMeta> {
        self.state.topics.values().find(|t| t.id == id)
    }

    /// A fresh RNG for one draw: the seed mixed with the log position, so ids differ across
    /// restarts and never repeat while the log grows.
    fn rng(&self) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(self.seed ^ self.end_bytes.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// Creates a topic (name and configs already validated by the caller); durable on return.
    pub async fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMeta, MetaError> {
        if self.state.topics.contains_key(name) {
            return Err(MetaError::TopicExists);
        }
        if self.state.topics.len() >= TOPICS_MAX {
            return Err(MetaError::TooMany);
        }
        let mut raw = [0u8; 16];
        self.rng().fill_bytes(&mut raw);
        let mut id = uuid::Builder::from_random_bytes(raw).into_uuid();
        while id.is_nil() || self.topic_by_id(id).is_some() {
            self.rng().fill_bytes(&mut raw);
            raw[0] = raw[0].wrapping_add(1);
            id = uuid::Builder::from_random_bytes(raw).into_uuid();
        }
        let meta = TopicMeta {
            name: name.to_string(),
            id,
            partitions,
            configs,
        };
        self.append(Record::TopicCreated(meta.clone())).await?;
        Ok(meta)
    }

    pub async fn delete_topic(&mut self, name: &str) -> Result<TopicMeta, MetaError> {
        let Some(meta) = self.state.topics.get(name).cloned() else {
            return Err(MetaError::UnknownTopic);
        };
        self.append(Record::TopicDeleted {
            name: name.to_string(),
        })
        .await?;
        Ok(meta)
    }

    pub async fn set_partitions(&mut self, name: &str, count: i32) -> Result<(), MetaError> {
        if !self.state.topics.contains_key(name) {
            return Err(MetaError::UnknownTopic);
        }
        self.append(Record::PartitionsSet {
            name: name.to_string(),
            count,
        })
        .await
    }

    pub async fn set_configs(
        &mut self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), MetaError> {
        if !self.state.topics.contains_key(name) {
            return Err(MetaError::UnknownTopic);
        }
        self.append(Record::ConfigsSet {
            name: name.to_string(),
            configs,
        })
        .await
    }

    /// A producer id never handed out before (even across crashes).
    pub async fn allocate_producer_id(&mut self) -> Result<i64, MetaError> {
        if self.state.next_producer_id >= self.state.producer_id_limit {
            let limit = self.state.producer_id_limit + PRODUCER_ID_BLOCK;
            self.append(Record::ProducerIdLimit(limit)).await?;
        }
        let id = self.state.next_producer_id;
        self.state.next_producer_id += 1;
        assert!(self.state.next_producer_id <= self.state.producer_id_limit);
        Ok(id)
    }

    async fn append(&mut self, record: Record) -> Result<(), MetaError> {
        let payload = encode(&record);
        if payload.len() > METADATA_RECORD_BYTES_MAX {
            return Err(MetaError::TooMany);
        }
        let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
        frame.extend_from_slice(&payload);
        self.disk
            .write_at(&self.file, self.end_bytes, &frame)
            .await?;
        // A failed sync leaves the record's durability unknown: refuse to go on (fsyncgate).
        self.disk.sync(&self.file).await?;
        self.end_bytes += frame.len() as u64;
        apply(&mut self.state, record);
        Ok(())
    }
}

fn apply(state: &mut MetadataState, record: Record) {
    match record {
        Record::ClusterId(id) => state.cluster_id = id,
        Record::TopicCreated(meta) => {
            state.topics.insert(meta.name.clone(), meta);
        }
        Record::TopicDeleted { name } => {
            state.topics.remove(&name);
        }
        Record::PartitionsSet { name, count } => {
            if let Some(t) = state.topics.get_mut(&name) {
                t.partitions = count;
            }
        }
        Record::ConfigsSet { name, configs } => {
            if let Some(t) = state.topics.get_mut(&name) {
                t.configs = configs;
            }
        }
        Record::ProducerIdLimit(limit) => {
            state.producer_id_limit = state.producer_id_limit.max(limit);
        }
    }
}

pub(crate) fn base64url(raw: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in raw {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

// ---- record encoding: tag byte, then fields; strings are u16 length + UTF-8 ----

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = s.len().min(u16::MAX as usize);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..len]);
}

fn put_configs(out: &mut Vec<u8>, configs: &BTreeMap<String, String>) {
    out.extend_from_slice(&(configs.len() as u32).to_be_bytes());
    for (k, v) in configs {
        put_str(out, k);
        put_str(out, v);
    }
}

fn encode(record: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    match record {
        Record::ClusterId(id) => {
            out.push(1);
            put_str(&mut out, id);
        }
        Record::TopicCreated(meta) => {
            out.push(2);
            put_str(&mut out, &meta.name);
            out.extend_from_slice(meta.id.as_bytes());
            out.extend_from_slice(&meta.partitions.to_be_bytes());
            put_configs(&mut out, &meta.configs);
        }
        Record::TopicDeleted { name } => {
            out.push(3);
            put_str(&mut out, name);
        }
        Record::PartitionsSet { name, count } => {
            out.push(4);
            put_str(&mut out, name);
            out.extend_from_slice(&count.to_be_bytes());
        }
        Record::ConfigsSet { name, configs } => {
            out.push(5);
            put_str(&mut out, name);
            put_configs(&mut out, configs);
        }
        Record::ProducerIdLimit(limit) => {
            out.push(6);
            out.extend_from_slice(&limit.to_be_bytes());
        }
    }
    out
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let len = u16::from_be_bytes(self.take(2)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
    fn configs(&mut self) -> Option<BTreeMap<String, String>> {
        let n = self.u32()? as usize;
        // Each entry takes at least 4 bytes: bound the count by what is left before looping.
        if n > (self.bytes.len() - self.pos) / 4 {
            return None;
        }
        let mut m = BTreeMap::new();
        for _ in 0..n {
            let k = self.str()?;
            let v = self.str()?;
            m.insert(k, v);
        }
        Some(m)
    }
}

fn decode(payload: &[u8]) -> Option<Record> {
    let mut c = Cursor {
        bytes: payload,
        pos: 0,
    };
    let record = match c.u8()? {
        1 => Record::ClusterId(c.str()?),
        2 => {
            let name = c.str()?;
            let id = Uuid::from_slice(c.take(16)?).ok()?;
            let partitions = c.i32()?;
            let configs = c.configs()?;
            Record::TopicCreated(TopicMeta {
                name,
                id,
                partitions,
                configs,
            })
        }
        3 => Record::TopicDeleted { name: c.str()? },
        4 => Record::PartitionsSet {
            name: c.str()?,
            count: c.i32()?,
        },
        5 => Record::ConfigsSet {
            name: c.str()?,
            configs: c.configs()?,
        },
        6 => Record::ProducerIdLimit(c.i64()?),
        _ => return None,
    };
    (c.pos == payload.len()).then_some(record)
}

/// The record at `pos` and the position after it, or `None` at a torn/corrupt/missing frame.
fn parse_frame(bytes: &[u8], pos: usize) -> Option<(Record, usize)> {
    let header = bytes.get(pos..pos.checked_add(FRAME_HEADER_BYTES)?)?;
    let len = u32::from_be_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(header[4..8].try_into().ok()?);
    if len > METADATA_RECORD_BYTES_MAX {
        return None;
    }
    let start = pos + FRAME_HEADER_BYTES;
    let payload = bytes.get(start..start.checked_add(len)?)?;
    if crc32c::crc32c(payload) != crc {
        return None;
    }
    Some((decode(payload)?, start + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let mut configs = BTreeMap::new();
        configs.insert("cleanup.policy".to_string(), "compact".to_string());
        let records = [
            Record::ClusterId("abc".to_string()),
            Record::TopicCreated(TopicMeta {
                name: "t".to_string(),
                id: Uuid::from_u128(7),
                partitions: 3,
                configs: configs.clone(),
            }),
            Record::TopicDeleted {
                name: "t".to_string(),
            },
            Record::PartitionsSet {
                name: "t".to_string(),
                count: 9,
            },
            Record::ConfigsSet {
                name: "t".to_string(),
                configs,
            },
            Record::ProducerIdLimit(2000),
        ];
        for r in records {
            assert_eq!(decode(&encode(&r)), Some(r));
        }
    }

    #[test]
    fn torn_or_corrupt_frames_end_replay() {
        let payload = encode(&Record::ProducerIdLimit(5));
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
        frame.extend_from_slice(&payload);
        assert!(parse_frame(&frame, 0).is_some());
        assert!(parse_frame(&frame[..frame.len() - 1], 0).is_none());
        let mut flipped = frame.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(parse_frame(&flipped, 0).is_none());
        let mut huge = frame.clone();
        huge[0] = 0xff;
        assert!(parse_frame(&huge, 0).is_none());
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(valid_topic_name("orders.v1_x-y"));
        assert!(!valid_topic_name(""));
        assert!(!valid_topic_name("."));
        assert!(!valid_topic_name(".."));
        assert!(!valid_topic_name("a/b"));
        assert!(!valid_topic_name(&"x".repeat(250)));
        assert!(valid_topic_name(&"x".repeat(249)));
    }

    #[test]
    fn cluster_id_is_base64url_of_16_bytes() {
        assert_eq!(base64url(&[0u8; 16]).len(), 22);
        assert_eq!(base64url(&[0xff, 0xff, 0xff]), "____");
    }
}
