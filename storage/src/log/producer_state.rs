//! Idempotent-producer state of one partition (Kafka's `ProducerStateManager`, reduced): per
//! producer id the current epoch and the metadata of its last few batches, so a retried batch is
//! answered with its original offsets and a gap or a stale epoch is refused. A pure struct: no
//! I/O, no clock; the log feeds it batch headers and persists it through `encode` snapshots.

use std::collections::{BTreeMap, VecDeque};

/// Kafka's `NUM_BATCHES_TO_RETAIN` (clients keep at most 5 requests in flight).
pub const PRODUCER_BATCHES_RETAINED: usize = 5;
/// Bound on producers read back from a snapshot (anything larger is treated as corrupt).
pub const SNAPSHOT_PRODUCERS_MAX: usize = 1 << 20;
/// Magic of a producer snapshot file ("SMPS").
pub const SNAPSHOT_MAGIC: u32 = 0x534d_5053;

const NO_PRODUCER_ID: i64 = -1;

/// The producer fields of one batch header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub last_offset_delta: i32,
}

impl ProducerBatch {
    pub fn is_idempotent(&self) -> bool {
        self.producer_id != NO_PRODUCER_ID
    }

    /// The sequence of the batch's last record (sequences wrap from `i32::MAX` to 0).
    pub fn last_sequence(&self) -> i32 {
        increment_sequence(self.base_sequence, self.last_offset_delta)
    }
}

/// `base + delta` in Kafka's wrapping sequence space.
pub fn increment_sequence(base: i32, delta: i32) -> i32 {
    if delta < 0 {
        return base;
    }
    if base > i32::MAX - delta {
        delta - (i32::MAX - base) - 1
    } else {
        base + delta
    }
}

/// What one retained batch looked like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub timestamp: i64,
}

/// State of one producer id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMetadata>,
}

/// Verdict on an incoming batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not seen before: append it.
    New,
    /// An exact retry of a retained batch: answer with its original offsets, write nothing.
    Duplicate { base_offset: i64, last_offset: i64 },
}

/// Refusals, each with the Kafka error code a Kafka broker gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProducerError {
    /// Sequence gap or a new epoch not starting at 0: OUT_OF_ORDER_SEQUENCE_NUMBER (45).
    OutOfOrderSequence { expected: i32, got: i32 },
    /// Epoch older than the current one: INVALID_PRODUCER_EPOCH (47).
    InvalidProducerEpoch { current: i16, got: i16 },
}

impl ProducerError {
    pub fn error_code(&self) -> i16 {
        match self {
            ProducerError::OutOfOrderSequence { .. } => 45,
            ProducerError::InvalidProducerEpoch { .. } => 47,
        }
    }
}

impl std::fmt::Display for ProducerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProducerError::OutOfOrderSequence { expected, got } => {
                write!(f, "out of order sequence: expected {expected}, got {got}")
            }
            ProducerError::InvalidProducerEpoch { current, got } => {
                write!(f, "invalid producer epoch {got} (current {current})")
            }
        }
    }
}

/// All producers of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerStateTable {
    producers: BTreeMap<i64, ProducerEntry>,
    /// How many batches to retain per producer (5; 1 under the `idempotence_window_one` mutant).
    window: usize,
}

impl Default for ProducerStateTable {
    fn default() -> Self {
        ProducerStateTable::new(PRODUCER_BATCHES_RETAINED)
    }
}

impl ProducerStateTable {
    pub fn new(window: usize) -> Self {
        assert!((1..=PRODUCER_BATCHES_RETAINED).contains(&window));
        ProducerStateTable {
            producers: BTreeMap::new(),
            window,
        }
    }

    /// Batches retained per producer.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Installs an entry as is (staging copies, snapshots).
    pub fn insert(&mut self, producer_id: i64, entry: ProducerEntry) {
        self.producers.insert(producer_id, entry);
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn clear(&mut self) {
        self.producers.clear();
    }

    /// Checks `batch` against the state, in Kafka's order: epoch, duplicate, sequence.
    pub fn check(&self, batch: &ProducerBatch) -> Result<Outcome, ProducerError> {
        if !batch.is_idempotent() {
            return Ok(Outcome::New);
        }
        let Some(entry) = self.producers.get(&batch.producer_id) else {
            // Unknown producer (new, or its batches left with retention): Kafka accepts any
            // sequence here since KIP-360.
            return Ok(Outcome::New);
        };
        if batch.producer_epoch < entry.epoch {
            return Err(ProducerError::InvalidProducerEpoch {
                current: entry.epoch,
                got: batch.producer_epoch,
            });
        }
        if batch.producer_epoch > entry.epoch {
            if batch.base_sequence != 0 {
                return Err(ProducerError::OutOfOrderSequence {
                    expected: 0,
                    got: batch.base_sequence,
                });
            }
            return Ok(Outcome::New);
        }
        let last_seq = batch.last_sequence();
        let duplicate = entry
            .batches
            .iter()
            .find(|b| b.first_seq == batch.base_sequence && b.last_seq == last_seq);
        if let Some(original) = duplicate {
            return Ok(Outcome::Duplicate {
                base_offset: original.base_offset,
                last_offset: original.last_offset,
            });
        }
        match entry.batches.back() {
            // Same epoch but no retained batches: nothing to compare against.
            None => Ok(Outcome::New),
            Some(last) => {
                let expected = increment_sequence(last.last_seq, 1);
                if batch.base_sequence == expected {
                    Ok(Outcome::New)
                } else {
                    Err(ProducerError::OutOfOrderSequence {
                        expected,
                        got: batch.base_sequence,
                    })
                }
            }
        }
    }

    /// Records an appended batch (after `check` said `New`, or while rebuilding from the log,
    /// where every batch is trusted).
    pub fn update(&mut self, batch: &ProducerBatch, base_offset: i64, timestamp: i64) {
        if !batch.is_idempotent() {
            return;
        }
        let entry = self.producers.entry(batch.producer_id).or_default();
        if batch.producer_epoch != entry.epoch {
            entry.epoch = batch.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(BatchMetadata {
            first_seq: batch.base_sequence,
            last_seq: batch.last_sequence(),
            base_offset,
            last_offset: base_offset + i64::from(batch.last_offset_delta.max(0)),
            timestamp,
        });
        while entry.batches.len() > self.window {
            entry.batches.pop_front();
        }
    }

    /// Forgets batches at or beyond `offset` (log truncation); producers left empty keep their
    /// epoch so a zombie with an older epoch stays fenced.
    pub fn truncate_to(&mut self, offset: i64) {
        for entry in self.producers.values_mut() {
            entry.batches.retain(|b| b.last_offset < offset);
        }
    }

    /// Snapshot: magic u32, count u32, then per producer id i64, epoch i16, n u8, n batches of
    /// (first_seq i32, last_seq i32, base_offset i64, last_offset i64, timestamp i64), then a
    /// CRC-32C of everything before it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.producers.len() * 48);
        out.extend_from_slice(&SNAPSHOT_MAGIC.to_be_bytes());
        let count = u32::try_from(self.producers.len()).expect("producer count fits u32");
        out.extend_from_slice(&count.to_be_bytes());
        for (id, entry) in &self.producers {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&entry.epoch.to_be_bytes());
            let n = u8::try_from(entry.batches.len()).expect("window fits u8");
            out.push(n);
            for b in &entry.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.base_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
                out.extend_from_slice(&b.timestamp.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Decodes a snapshot; `None` on any damage. Uses `window` for future updates.
    pub fn decode(bytes: &[u8], window: usize) -> Option<Self> {
        let body_len = bytes.len().checked_sub(4)?;
        let (body, trailer) = bytes.split_at(body_len);
        if crc32c::crc32c(body) != u32::from_be_bytes(trailer.try_into().ok()?) {
            return None;
        }
        let mut r = Reader { bytes: body, at: 0 };
        if r.u32()? != SNAPSHOT_MAGIC {
            return None;
        }
        let count = r.u32()? as usize;
        if count > SNAPSHOT_PRODUCERS_MAX {
            return None;
        }
        let mut table = ProducerStateTable::new(window);
        for _ in 0..count {
            let id = r.i64()?;
            let epoch = r.i16()?;
            let n = usize::from(r.u8()?);
            if n > PRODUCER_BATCHES_RETAINED {
                return None;
            }
            let mut entry = ProducerEntry {
                epoch,
                batches: VecDeque::with_capacity(n),
            };
            for _ in 0..n {
                entry.batches.push_back(BatchMetadata {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    base_offset: r.i64()?,
                    last_offset: r.i64()?,
                    timestamp: r.i64()?,
                });
            }
            while entry.batches.len() > window {
                entry.batches.pop_front();
            }
            table.producers.insert(id, entry);
        }
        (r.at == body.len()).then_some(table)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let end = self.at.checked_add(N)?;
        let out = self.bytes.get(self.at..end)?.try_into().ok()?;
        self.at = end;
        Some(out)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, epoch: i16, seq: i32, count: i32) -> ProducerBatch {
        ProducerBatch {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            last_offset_delta: count - 1,
        }
    }

    #[test]
    fn in_order_batches_are_new_and_retries_are_duplicates() {
        let mut table = ProducerStateTable::default();
        let b0 = batch(7, 0, 0, 3);
        assert_eq!(table.check(&b0), Ok(Outcome::New));
        table.update(&b0, 100, 1);
        let b1 = batch(7, 0, 3, 2);
        assert_eq!(table.check(&b1), Ok(Outcome::New));
        table.update(&b1, 103, 2);
        assert_eq!(
            table.check(&b0),
            Ok(Outcome::Duplicate {
                base_offset: 100,
                last_offset: 102
            })
        );
        assert_eq!(
            table.check(&b1),
            Ok(Outcome::Duplicate {
                base_offset: 103,
                last_offset: 104
            })
        );
        assert_eq!(
            table.check(&batch(7, 0, 9, 1)),
            Err(ProducerError::OutOfOrderSequence {
                expected: 5,
                got: 9
            })
        );
        assert_eq!(table.check(&batch(7, 0, 5, 1)), Ok(Outcome::New));
    }

    #[test]
    fn window_keeps_five_batches() {
        let mut table = ProducerStateTable::default();
        for i in 0..7 {
            let b = batch(1, 0, i, 1);
            assert_eq!(table.check(&b), Ok(Outcome::New));
            table.update(&b, i64::from(i), 0);
        }
        assert_eq!(table.get(1).map(|e| e.batches.len()), Some(5));
        // Batch 2 is the oldest retained: still a duplicate; batch 1 fell out of the window.
        assert!(matches!(
            table.check(&batch(1, 0, 2, 1)),
            Ok(Outcome::Duplicate { .. })
        ));
        assert!(table.check(&batch(1, 0, 1, 1)).is_err());
        let mut one = ProducerStateTable::new(1);
        for i in 0..3 {
            one.update(&batch(1, 0, i, 1), i64::from(i), 0);
        }
        assert_eq!(one.get(1).map(|e| e.batches.len()), Some(1));
    }

    #[test]
    fn epochs_fence_and_new_epoch_starts_at_zero() {
        let mut table = ProducerStateTable::default();
        table.update(&batch(3, 2, 0, 1), 0, 0);
        assert_eq!(
            table.check(&batch(3, 1, 1, 1)),
            Err(ProducerError::InvalidProducerEpoch { current: 2, got: 1 })
        );
        assert_eq!(
            table.check(&batch(3, 3, 4, 1)),
            Err(ProducerError::OutOfOrderSequence {
                expected: 0,
                got: 4
            })
        );
        assert_eq!(table.check(&batch(3, 3, 0, 1)), Ok(Outcome::New));
        table.update(&batch(3, 3, 0, 1), 1, 0);
        assert_eq!(
            table.get(3).map(|e| (e.epoch, e.batches.len())),
            Some((3, 1))
        );
        assert_eq!(
            ProducerError::InvalidProducerEpoch { current: 0, got: 0 }.error_code(),
            47
        );
        assert_eq!(
            ProducerError::OutOfOrderSequence {
                expected: 0,
                got: 0
            }
            .error_code(),
            45
        );
    }

    #[test]
    fn sequences_wrap_and_unknown_producers_are_accepted() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        let mut table = ProducerStateTable::default();
        assert_eq!(table.check(&batch(9, 0, 77, 1)), Ok(Outcome::New));
        table.update(&batch(9, 0, i32::MAX - 1, 2), 0, 0);
        assert_eq!(table.check(&batch(9, 0, 0, 1)), Ok(Outcome::New));
        assert!(table.check(&batch(9, 0, 1, 1)).is_err());
        assert_eq!(table.check(&batch(-1, -1, -1, 5)), Ok(Outcome::New));
    }

    #[test]
    fn snapshot_round_trip_and_truncation() {
        let mut table = ProducerStateTable::default();
        table.update(&batch(1, 0, 0, 2), 0, 10);
        table.update(&batch(1, 0, 2, 2), 2, 11);
        table.update(&batch(2, 5, 0, 1), 4, 12);
        let bytes = table.encode();
        assert_eq!(ProducerStateTable::decode(&bytes, 5), Some(table.clone()));
        let mut bad = bytes.clone();
        bad[10] ^= 1;
        assert_eq!(ProducerStateTable::decode(&bad, 5), None);
        table.truncate_to(2);
        assert_eq!(table.get(1).map(|e| e.batches.len()), Some(1));
        assert_eq!(table.get(2).map(|e| e.batches.len()), Some(0));
    }
}
