//! Leader-epoch cache of one partition replica: the `(leader_epoch, start_offset)` of every
//! epoch present in the log, kept in step with the log (truncated with it at both ends), the
//! KIP-279 `end_offset_for` lookup behind OffsetForLeaderEpoch, and Kafka's
//! `leader-epoch-checkpoint` text format. A pure value: performs no I/O (`PartitionLog`
//! maintains and persists it), never reads a clock, and decoding never panics.

/// Epoch or offset reported when the cache knows no answer (Kafka's `UNDEFINED_EPOCH` and
/// `UNDEFINED_EPOCH_OFFSET`).
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;
/// Most entries one cache holds (one per leader epoch still in the log).
pub const EPOCH_ENTRIES_MAX: usize = 100_000;
/// Largest checkpoint file `decode` reads.
pub const CHECKPOINT_BYTES_MAX: usize = 4 << 20;
/// The checkpoint format version written and read.
pub const CHECKPOINT_VERSION: i32 = 0;
/// Longest encoded entry line: an i32, a space, an i64, a newline.
const ENTRY_LINE_BYTES_MAX: usize = 11 + 1 + 20 + 1;
// A full cache must encode within what `decode_checkpoint` accepts.
const _: () = assert!(64 + EPOCH_ENTRIES_MAX * ENTRY_LINE_BYTES_MAX <= CHECKPOINT_BYTES_MAX);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EpochCacheError {
    /// `assign` would make epochs or start offsets go backwards.
    NotMonotonic { last: EpochEntry, new: EpochEntry },
    /// More than `EPOCH_ENTRIES_MAX` entries.
    Full,
    /// A checkpoint that does not parse; the caller rebuilds the cache from the log.
    Checkpoint(&'static str),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    pub fn new() -> Self {
        LeaderEpochCache::default()
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// The epoch the cache assigns to `offset`: that of the last entry starting at or below it.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        let after = self.entries.partition_point(|e| e.start_offset <= offset);
        after.checked_sub(1).map(|i| self.entries[i].epoch)
    }

    /// Records that `epoch` starts at `start_offset` (called for each appended batch, and by a
    /// new leader for its own epoch at its log end). Repeating the latest epoch is a no-op.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<(), EpochCacheError> {
        let new = EpochEntry {
            epoch,
            start_offset,
        };
        if epoch < 0 || start_offset < 0 {
            return Err(EpochCacheError::NotMonotonic { last: new, new });
        }
        let mut replaces_last = false;
        if let Some(last) = self.entries.last().copied() {
            if epoch == last.epoch && start_offset >= last.start_offset {
                return Ok(());
            }
            if epoch <= last.epoch || start_offset < last.start_offset {
                return Err(EpochCacheError::NotMonotonic { last, new });
            }
            // An epoch that starts where the previous one started left no records behind: the
            // previous entry describes an empty range and is replaced.
            replaces_last = start_offset == last.start_offset;
        }
        // Checked before anything changes: a refused `assign` leaves the cache as it was.
        if !replaces_last && self.entries.len() >= EPOCH_ENTRIES_MAX {
            return Err(EpochCacheError::Full);
        }
        if replaces_last {
            self.entries.pop();
        }
        self.entries.push(new);
        Ok(())
    }

    /// KIP-279 lookup: the largest epoch ≤ `requested_epoch` and the offset where it ends (the
    /// next epoch's start, or `log_end_offset` for the latest). A request older than every
    /// entry gets `(requested_epoch, first start offset)`, as in Kafka; newer than every entry,
    /// or no entries, gets `(UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)`.
    pub fn end_offset_for(&self, requested_epoch: i32, log_end_offset: i64) -> (i32, i64) {
        let undefined = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        if requested_epoch == UNDEFINED_EPOCH {
            return undefined;
        }
        if self.latest_epoch() == Some(requested_epoch) {
            return (requested_epoch, log_end_offset);
        }
        let higher = self.entries.iter().position(|e| e.epoch > requested_epoch);
        match higher {
            None => undefined,
            Some(0) => (requested_epoch, self.entries[0].start_offset),
            Some(i) => (self.entries[i - 1].epoch, self.entries[i].start_offset),
        }
    }

    /// The log was truncated so that `log_end_offset` is its new end: forget epochs that
    /// start at or after it.
    pub fn truncate_from_end(&mut self, log_end_offset: i64) {
        self.entries.retain(|e| e.start_offset < log_end_offset);
    }

    /// The log now starts at `log_start_offset`: drop epochs that end before it and move the
    /// epoch that covers it to start there.
    pub fn truncate_from_start(&mut self, log_start_offset: i64) {
        let covering = self
            .entries
            .iter()
            .rposition(|e| e.start_offset <= log_start_offset);
        if let Some(i) = covering {
            self.entries.drain(..i);
            self.entries[0].start_offset = log_start_offset;
        }
    }

    /// Kafka's `leader-epoch-checkpoint`: `0\n<count>\n<epoch> <offset>\n...`.
    pub fn encode_checkpoint(&self) -> String {
        let mut out = format!("{CHECKPOINT_VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            out.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        out
    }

    /// Parses a checkpoint; never panics. Entries must be strictly increasing.
    pub fn decode_checkpoint(bytes: &[u8]) -> Result<LeaderEpochCache, EpochCacheError> {
        if bytes.len() > CHECKPOINT_BYTES_MAX {
            return Err(EpochCacheError::Checkpoint(
                "larger than CHECKPOINT_BYTES_MAX",
            ));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| EpochCacheError::Checkpoint("utf-8"))?;
        let mut lines = text.lines();
        let version: i32 = parse(lines.next(), "version")?;
        if version != CHECKPOINT_VERSION {
            return Err(EpochCacheError::Checkpoint("unknown version"));
        }
        let count: usize = parse(lines.next(), "count")?;
        if count > EPOCH_ENTRIES_MAX {
            return Err(EpochCacheError::Checkpoint("count above EPOCH_ENTRIES_MAX"));
        }
        let mut cache = LeaderEpochCache::new();
        // `count` is bounded above; entries are pushed one by one as lines prove they exist.
        for _ in 0..count {
            let line = lines
                .next()
                .ok_or(EpochCacheError::Checkpoint("missing entry"))?;
            let mut fields = line.split(' ');
            let epoch: i32 = parse(fields.next(), "epoch")?;
            let start_offset: i64 = parse(fields.next(), "offset")?;
            if fields.next().is_some() {
                return Err(EpochCacheError::Checkpoint("extra field"));
            }
            let strictly_after = cache
                .entries
                .last()
                .is_none_or(|l| epoch > l.epoch && start_offset > l.start_offset);
            if epoch < 0 || start_offset < 0 || !strictly_after {
                return Err(EpochCacheError::Checkpoint("entries not increasing"));
            }
            cache.entries.push(EpochEntry {
                epoch,
                start_offset,
            });
        }
        if lines.any(|l| !l.is_empty()) {
            return Err(EpochCacheError::Checkpoint("trailing lines"));
        }
        Ok(cache)
    }
}

fn parse<T: std::str::FromStr>(
    field: Option<&str>,
    what: &'static str,
) -> Result<T, EpochCacheError> {
    field
        .and_then(|f| f.trim().parse().ok())
        .ok_or(EpochCacheError::Checkpoint(what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::new();
        for (e, o) in entries {
            c.assign(*e, *o).unwrap();
        }
        c
    }

    #[test]
    fn end_offset_for_follows_kip_279() {
        let c = cache(&[(1, 0), (3, 5), (4, 9)]);
        assert_eq!(c.end_offset_for(4, 12), (4, 12));
        assert_eq!(c.end_offset_for(3, 12), (3, 9));
        // Epoch 2 was never used here: the largest epoch below it is 1, which ends at 5.
        assert_eq!(c.end_offset_for(2, 12), (1, 5));
        assert_eq!(c.end_offset_for(0, 12), (0, 0));
        assert_eq!(
            c.end_offset_for(5, 12),
            (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
        );
        assert_eq!(c.end_offset_for(UNDEFINED_EPOCH, 12), (-1, -1));
        assert_eq!(LeaderEpochCache::new().end_offset_for(1, 0), (-1, -1));
    }

    #[test]
    fn assign_is_monotonic() {
        let mut c = cache(&[(1, 0), (2, 4)]);
        c.assign(2, 6).unwrap();
        assert_eq!(c.entries().len(), 2);
        assert!(c.assign(1, 7).is_err());
        assert!(c.assign(3, 3).is_err());
        c.assign(3, 4).unwrap();
        assert_eq!(
            c.entries(),
            &[
                EpochEntry {
                    epoch: 1,
                    start_offset: 0
                },
                EpochEntry {
                    epoch: 3,
                    start_offset: 4
                }
            ]
        );
    }

    #[test]
    fn truncation_keeps_cache_in_step_with_log() {
        let mut c = cache(&[(1, 0), (2, 4), (3, 8)]);
        c.truncate_from_end(8);
        assert_eq!(c.latest_epoch(), Some(2));
        c.truncate_from_end(5);
        assert_eq!(c.latest_epoch(), Some(2));
        c.truncate_from_start(6);
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: 2,
                start_offset: 6
            }]
        );
        c.truncate_from_start(2);
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: 2,
                start_offset: 6
            }]
        );
    }

    #[test]
    fn epoch_for_offset_is_the_covering_entry() {
        let c = cache(&[(1, 3), (4, 9)]);
        assert_eq!(c.epoch_for_offset(2), None);
        assert_eq!(c.epoch_for_offset(3), Some(1));
        assert_eq!(c.epoch_for_offset(8), Some(1));
        assert_eq!(c.epoch_for_offset(9), Some(4));
        assert_eq!(c.epoch_for_offset(i64::MAX), Some(4));
        assert_eq!(LeaderEpochCache::new().epoch_for_offset(0), None);
    }

    #[test]
    fn checkpoint_matches_kafka_text() {
        let c = cache(&[(0, 0), (2, 17)]);
        assert_eq!(c.encode_checkpoint(), "0\n2\n0 0\n2 17\n");
        assert_eq!(
            LeaderEpochCache::decode_checkpoint(b"0\n2\n0 0\n2 17\n"),
            Ok(c)
        );
        for bad in [
            &b"1\n0\n"[..],
            b"0\n2\n0 0\n",
            b"0\n2\n3 5\n2 9\n",
            b"0\n9999999999\n",
        ] {
            assert!(LeaderEpochCache::decode_checkpoint(bad).is_err());
        }
    }

    proptest! {
        #[test]
        fn checkpoint_round_trips(steps in proptest::collection::vec((1i32..4, 0i64..5), 0..20)) {
            let mut c = LeaderEpochCache::new();
            let (mut epoch, mut offset) = (0, 0);
            for (de, doff) in steps {
                epoch += de;
                offset += doff;
                c.assign(epoch, offset).unwrap();
            }
            let text = c.encode_checkpoint();
            prop_assert_eq!(LeaderEpochCache::decode_checkpoint(text.as_bytes()), Ok(c));
        }

        #[test]
        fn checkpoint_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = LeaderEpochCache::decode_checkpoint(&bytes);
        }
    }
}
