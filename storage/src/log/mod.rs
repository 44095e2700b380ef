//! `PartitionLog<D: Disk>`: one partition's append-only log of stored record batches in Kafka's
//! layout (segments named by base offset with sparse `.index` / `.timeindex` files, checkpoints
//! for the log start offset and recovery point). Assigns offsets by patching batches in place,
//! never decodes records, never returns bytes whose CRC-32C failed, and never claims data durable
//! before a sync of it returned `Ok`: a failed sync fails the partition for good (fsyncgate).
//!
//! Durability: `append` only writes. Group commit is `flush_plan` (under `&self`), then
//! `execute_flush` (a free function: appends go on while the sync is in flight), then
//! `flush_done`, which advances `durable_end_offset`. Index files are written when a segment is
//! sealed; the active segment's indexes live in memory and are rebuilt by recovery.
//!
//! A failed `write_at` during append leaves the log end offset where it was: the file is cut
//! back to the last good byte and the next append overwrites the region; if even that cut fails,
//! the partition enters the failed state.
//!
//! Leader epochs (KIP-101/279): the log keeps a `LeaderEpochCache` in step with its batches
//! (assigned by appends, truncated with the log at both ends) and persists it as
//! `leader-epoch-checkpoint`. Rule: no batch bytes are written while the durable checkpoint
//! might lack an entry the in-memory cache has. An append that starts a new epoch therefore
//! writes the checkpoint (tmp, sync, rename, sync_dir) *before* it writes its batch, off the
//! group-commit path: `flush_plan`/`execute_flush` are unchanged, and any batch a flush makes
//! durable already has its epoch in a durable checkpoint. A truncation rewrites the checkpoint
//! after the log is cut; if that write fails, the next append rewrites it before writing bytes.
//! A durable checkpoint may therefore hold entries past the durable log end (never missing
//! ones); recovery drops those and checks every remaining entry against the batches.
//!
//! Followers append with `append_replicated`: the leader's batches as they are (offsets and
//! epochs never patched), contiguous from the log end, CRC-checked, epochs never going back;
//! the same epoch persistence rule, producer-state updates, roll rules and group commit.

pub mod batch_view;
pub mod checkpoint;
pub mod cleaner;
pub mod epoch_cache;
pub mod index;
pub mod producer_state;
mod recovery;
pub mod segment;
pub mod time_index;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use samsa_net::Hooks;

use crate::disk::{Disk, DiskError, OpenMode};
use batch_view::Hdr;
use epoch_cache::{EpochCacheError, EpochEntry, LeaderEpochCache};
use producer_state::{Outcome, ProducerError, ProducerStateTable, PRODUCER_BATCHES_RETAINED};
use segment::{BatchCursor, Scanned, Segment, SEEK_CHUNK_BYTES};

pub use recovery::RecoveryReport;

/// Upper bound on batches in one append (a produce partition entry holds one in practice).
pub const APPEND_BATCHES_MAX: usize = 4096;
/// Upper bound on batches in one `append_replicated` (2 MiB of fetched data in the smallest,
/// 61-byte, batches is 34,380: a fetcher feeds larger responses in pieces).
pub const REPLICATED_APPEND_BATCHES_MAX: usize = 32 * 1024;
/// Upper bound on `segment_bytes` (positions are u32 in the index, as in Kafka).
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;
/// Producer snapshots kept on disk (older ones are removed at roll).
pub const PRODUCER_SNAPSHOTS_KEPT: usize = 2;

/// Where a batch's timestamp comes from (`message.timestamp.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// Per-partition log settings (topic configs).
#[derive(Clone, Debug)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    /// -1 = keep forever.
    pub retention_ms: i64,
    /// -1 = no size limit.
    pub retention_bytes: i64,
    pub index_interval_bytes: u64,
    pub max_message_bytes: usize,
    pub message_timestamp_type: TimestampType,
    pub hooks: Hooks,
    /// Unit tests' switch for the `epoch_cache_not_truncated` planted bug (`Hooks::mutant`
    /// answers only in simulation builds).
    #[cfg(test)]
    pub(crate) planted_epoch_cache_not_truncated: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            message_timestamp_type: TimestampType::CreateTime,
            hooks: Hooks::default(),
            #[cfg(test)]
            planted_epoch_cache_not_truncated: false,
        }
    }
}

/// Why a log operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogError {
    /// `offset` is outside `[log_start_offset, log_end_offset]`: OFFSET_OUT_OF_RANGE.
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    /// Stored bytes failed their CRC or framing: the partition refuses to serve them.
    Corrupt { segment: i64, position: u64 },
    /// A sync or an undo failed earlier; nothing is served or accepted: KAFKA_STORAGE_ERROR.
    Failed,
    /// The disk refused an operation (the log did not advance).
    Disk(DiskError),
    /// The idempotent-producer checks refused a batch.
    Producer(ProducerError),
    /// The appended bytes are not whole v2 batches (the caller promised validated input).
    InvalidBatch(&'static str),
    /// A batch is larger than `max_message_bytes`.
    MessageTooLarge { bytes: usize },
    /// A replicated batch does not start where the log ends (first batch) or where the previous
    /// batch ended: the follower must truncate or fetch from its log end offset.
    OffsetMismatch { expected: i64, got: i64 },
    /// The append's leader epoch is older than the log's latest (a fenced leader), or the
    /// leader-epoch cache is full.
    LeaderEpoch(EpochCacheError),
}

impl LogError {
    /// The Kafka error code a broker reports for this error.
    pub fn error_code(&self) -> i16 {
        use samsa_net::error::code;
        match self {
            LogError::OffsetOutOfRange { .. } => code::OFFSET_OUT_OF_RANGE,
            LogError::Corrupt { .. } | LogError::Failed | LogError::Disk(_) => {
                code::KAFKA_STORAGE_ERROR
            }
            LogError::Producer(e) => e.error_code(),
            LogError::InvalidBatch(_) => code::CORRUPT_MESSAGE,
            LogError::MessageTooLarge { .. } => code::MESSAGE_TOO_LARGE,
            // Kafka's UnexpectedAppendOffsetException has no wire code of its own.
            LogError::OffsetMismatch { .. } => code::UNKNOWN_SERVER_ERROR,
            LogError::LeaderEpoch(EpochCacheError::NotMonotonic { .. }) => {
                code::FENCED_LEADER_EPOCH
            }
            LogError::LeaderEpoch(_) => code::KAFKA_STORAGE_ERROR,
        }
    }
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogError::OffsetOutOfRange {
                offset,
                log_start_offset,
                log_end_offset,
            } => write!(
                f,
                "offset {offset} out of range [{log_start_offset}, {log_end_offset}]"
            ),
            LogError::Corrupt { segment, position } => {
                write!(f, "corrupt data in segment {segment} at byte {position}")
            }
            LogError::Failed => write!(f, "partition log failed (storage error)"),
            LogError::Disk(e) => write!(f, "disk: {e}"),
            LogError::Producer(e) => write!(f, "producer: {e}"),
            LogError::InvalidBatch(what) => write!(f, "invalid batch: {what}"),
            LogError::MessageTooLarge { bytes } => write!(f, "batch of {bytes} bytes too large"),
            LogError::OffsetMismatch { expected, got } => {
                write!(f, "replicated batch at offset {got}, expected {expected}")
            }
            LogError::LeaderEpoch(e) => write!(f, "leader epoch: {e:?}"),
        }
    }
}

impl std::error::Error for LogError {}

impl From<DiskError> for LogError {
    fn from(e: DiskError) -> Self {
        LogError::Disk(e)
    }
}

/// What an append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The stamp written when the log uses LogAppendTime, else -1 (Kafka's produce response).
    pub log_append_time: i64,
    pub max_timestamp: i64,
    /// An exact retry of an idempotent batch: nothing was written, offsets are the original ones.
    pub duplicate: bool,
    pub log_start_offset: i64,
}

/// What a read returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole stored batches, CRC-verified.
    pub bytes: Bytes,
    /// Offset after the last returned batch (== requested offset when empty).
    pub next_offset: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// A sync the caller runs without holding the log: see `execute_flush`.
#[derive(Clone, Debug)]
pub struct FlushPlan<F> {
    pub files: Vec<F>,
    pub sync_dir: Option<String>,
    /// Written (atomically) after the syncs: the recovery point to checkpoint.
    pub recovery_checkpoint: Option<(String, i64)>,
    /// Every offset below this is durable once the plan succeeds.
    pub end_offset: i64,
    generation: u64,
    /// The roll count when the plan was made: its `sync_dir`/checkpoint cover rolls up to it.
    rolls: u64,
}

/// A byte range of a sealed segment that failed its checks during recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorruptRange {
    pub segment: i64,
    pub positions: Range<u64>,
}

struct PendingSync<F> {
    file: F,
    up_to_offset: i64,
}

/// What one segment yielded for a read.
enum SegmentRead {
    /// Whole batches and the offset after the last.
    Found(Bytes, i64),
    /// Nothing readable below the limit.
    Nothing,
    /// A cleaned segment with no batch at or after the offset: go on to the next segment.
    CleanedAway,
}

/// One partition's log on a `Disk`.
pub struct PartitionLog<D: Disk> {
    disk: D,
    dir: String,
    config: LogConfig,
    segments: BTreeMap<i64, Segment<D::File>>,
    log_start_offset: i64,
    log_end_offset: i64,
    durable_end_offset: i64,
    producers: ProducerStateTable,
    snapshots: BTreeSet<i64>,
    pending_sync: BTreeMap<String, PendingSync<D::File>>,
    dir_sync_up_to: Option<i64>,
    checkpoint_up_to: Option<i64>,
    /// Segments rolled since open; a plan clears the pending directory sync only if it was made
    /// after the newest roll.
    rolls: u64,
    generation: u64,
    failed: bool,
    /// Leader epochs of the batches in the log (see the module doc for the persistence rule).
    epochs: LeaderEpochCache,
    /// The durable `leader-epoch-checkpoint` may differ from `epochs`: rewrite it before the
    /// next batch bytes are written.
    epochs_dirty: bool,
    /// Checkpoint writes since open (a figure for tests and benchmarks).
    epoch_checkpoint_writes: u64,
}

/// Runs a flush plan: syncs its files, then its directory, then writes the recovery point.
/// Holds no reference to the log, so appends continue meanwhile (group commit).
pub async fn execute_flush<D: Disk>(disk: &D, plan: &FlushPlan<D::File>) -> Result<(), DiskError> {
    for file in &plan.files {
        disk.sync(file).await?;
    }
    if let Some(dir) = &plan.sync_dir {
        disk.sync_dir(dir).await?;
    }
    if let Some((dir, offset)) = &plan.recovery_checkpoint {
        checkpoint::write(disk, dir, checkpoint::RECOVERY_POINT_CHECKPOINT, *offset).await?;
    }
    Ok(())
}

impl<D: Disk> PartitionLog<D> {
    /// Opens (creating if needed) the partition directory `dir` and recovers it.
    pub async fn open(
        disk: D,
        dir: &str,
        config: LogConfig,
    ) -> Result<(Self, RecoveryReport), LogError> {
        recovery::open(disk, dir, config).await
    }

    pub fn dir(&self) -> &str {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Replaces the topic configuration (takes effect at the next append / retention pass).
    pub fn set_config(&mut self, config: LogConfig) {
        assert_config(&config);
        self.producers = rewindow(&self.producers, &config);
        self.config = config;
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }

    /// Every offset below this is on disk and synced (the recovery point).
    pub fn durable_end_offset(&self) -> i64 {
        self.durable_end_offset
    }

    pub fn is_failed(&self) -> bool {
        self.failed
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<i64> {
        self.segments.keys().copied().collect()
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size_bytes).sum()
    }

    pub fn producer_state(&self) -> &ProducerStateTable {
        &self.producers
    }

    /// The newest leader epoch of the log (or assigned by `assign_leader_epoch`), if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// OffsetForLeaderEpoch (KIP-279): the largest epoch `<= requested` this log holds and the
    /// offset where it ends (the log end offset for the latest epoch; a request older than every
    /// epoch gets `(requested, first start offset)`); `(-1, -1)` when the log knows no answer.
    pub fn end_offset_for_epoch(&self, requested: i32) -> (i32, i64) {
        self.epochs.end_offset_for(requested, self.log_end_offset)
    }

    /// `(epoch, start offset)` of every leader epoch in the log, oldest first.
    pub fn epoch_entries(&self) -> &[EpochEntry] {
        self.epochs.entries()
    }

    /// The cache itself, for the replication cores that take one (samsa-cluster's
    /// `offset_for_leader_epoch`, `follower_truncation`, `first_requested_epoch`).
    pub fn epoch_cache(&self) -> &LeaderEpochCache {
        &self.epochs
    }

    /// How many times `leader-epoch-checkpoint` was written since open.
    pub fn epoch_checkpoint_writes(&self) -> u64 {
        self.epoch_checkpoint_writes
    }

    /// A new leader records `epoch` at the log end before its first append, as Kafka does on
    /// becoming leader, so OffsetForLeaderEpoch answers for it at once. Durable on `Ok`; a
    /// no-op when `epoch` is already the latest; refused (FENCED_LEADER_EPOCH) when older.
    pub async fn assign_leader_epoch(&mut self, epoch: i32) -> Result<(), LogError> {
        self.check_live()?;
        if epoch < 0 {
            let entry = EpochEntry {
                epoch,
                start_offset: self.log_end_offset,
            };
            let refused = EpochCacheError::NotMonotonic {
                last: entry,
                new: entry,
            };
            return Err(LogError::LeaderEpoch(refused));
        }
        self.stage_epoch(epoch, self.log_end_offset)?;
        self.persist_epochs_if_dirty().await
    }

    /// Records in memory that `epoch` starts at `start_offset` (no-op for a batch without an
    /// epoch, or for the latest epoch); the caller persists before writing batch bytes.
    fn stage_epoch(&mut self, epoch: i32, start_offset: i64) -> Result<(), LogError> {
        if epoch < 0 || self.epochs.latest_epoch() == Some(epoch) {
            return Ok(());
        }
        self.epochs
            .assign(epoch, start_offset)
            .map_err(LogError::LeaderEpoch)?;
        self.epochs_dirty = true;
        Ok(())
    }

    /// Rewrites `leader-epoch-checkpoint` when the durable one may differ from memory. On
    /// failure the flag stays set, so the next append retries before it writes any bytes.
    async fn persist_epochs_if_dirty(&mut self) -> Result<(), LogError> {
        if !self.epochs_dirty {
            return Ok(());
        }
        let text = self.epochs.encode_checkpoint();
        checkpoint::write_bytes(
            &self.disk,
            &self.dir,
            checkpoint::LEADER_EPOCH_CHECKPOINT,
            text.as_bytes(),
        )
        .await?;
        self.epochs_dirty = false;
        self.epoch_checkpoint_writes += 1;
        Ok(())
    }

    /// The log now ends at `log_end_offset`: forget the epochs that start at or after it
    /// (except under the `epoch_cache_not_truncated` planted bug).
    fn truncate_epochs_from_end(&mut self, log_end_offset: i64) {
        if epoch_cache_not_truncated(&self.config) {
            return;
        }
        let before = self.epochs.entries().len();
        self.epochs.truncate_from_end(log_end_offset);
        if self.epochs.entries().len() != before {
            self.epochs_dirty = true;
        }
    }

    fn check_live(&self) -> Result<(), LogError> {
        if self.failed {
            Err(LogError::Failed)
        } else {
            Ok(())
        }
    }

    fn active(&self) -> &Segment<D::File> {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment<D::File> {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn path(&self, name: &str) -> String {
        format!("{}/{}", self.dir, name)
    }

    fn assert_invariants(&self) {
        assert!(self.log_start_offset <= self.log_end_offset);
        assert!(self.durable_end_offset <= self.log_end_offset);
        assert_eq!(self.active().next_offset, self.log_end_offset);
        // An epoch may start at the log end (a leader before its first append), never past it.
        assert!(
            epoch_cache_not_truncated(&self.config)
                || self
                    .epochs
                    .entries()
                    .last()
                    .is_none_or(|e| e.start_offset <= self.log_end_offset),
            "leader epoch {:?} starts past the log end {}",
            self.epochs.entries().last(),
            self.log_end_offset
        );
        debug_assert!(self
            .segments
            .values()
            .zip(self.segments.values().skip(1))
            .all(|(a, b)| a.next_offset == b.base_offset));
    }

    /// Appends one or more batches (already validated by the caller), assigning offsets from the
    /// log end offset. Not durable until a flush covers `last_offset`.
    pub async fn append(
        &mut self,
        mut batches: BytesMut,
        now_ms: i64,
        leader_epoch: i32,
    ) -> Result<AppendInfo, LogError> {
        self.check_live()?;
        let headers = split(&batches, self.config.max_message_bytes, APPEND_BATCHES_MAX)?;

        // Idempotence: stage every batch against a working copy, so the append stays atomic.
        let mut staged = self
            .producers
            .clone_for(headers.iter().map(|(_, h)| h.producer_id));
        let mut offset = self.log_end_offset;
        for (range, hdr) in &headers {
            let pb = hdr.producer_batch();
            match staged.check(&pb).map_err(LogError::Producer)? {
                Outcome::Duplicate {
                    base_offset,
                    last_offset,
                } if headers.len() == 1 => {
                    return Ok(AppendInfo {
                        base_offset,
                        last_offset,
                        log_append_time: -1,
                        max_timestamp: hdr.max_timestamp,
                        duplicate: true,
                        log_start_offset: self.log_start_offset,
                    });
                }
                Outcome::Duplicate { .. } => {
                    return Err(LogError::InvalidBatch(
                        "duplicate batch inside a multi-batch append",
                    ))
                }
                Outcome::New => staged.update(&pb, offset, hdr.max_timestamp),
            }
            offset += i64::from(hdr.last_offset_delta) + 1;
            debug_assert!(range.end <= batches.len());
        }

        // Persistence rule (module doc): a new epoch is durable in the checkpoint before any byte
        // of a batch carrying it is written; a stale checkpoint is rewritten first as well.
        self.stage_epoch(leader_epoch, self.log_end_offset)?;
        self.persist_epochs_if_dirty().await?;

        let total_bytes = batches.len() as u64;
        if self.should_roll(total_bytes, offset, now_ms) {
            self.roll(now_ms).await?;
        }

        let log_append_time =
            (self.config.message_timestamp_type == TimestampType::LogAppendTime).then_some(now_ms);
        let base_offset = self.log_end_offset;
        let mut next = base_offset;
        for (range, hdr) in &headers {
            batch_view::patch(
                &mut batches[range.clone()],
                next,
                leader_epoch,
                log_append_time,
            );
            next += i64::from(hdr.last_offset_delta) + 1;
        }

        let position = self.active().size_bytes;
        // Buggify: the same bytes in two writes, so a crash can persist one half of an append.
        let split = if self.config.hooks.buggify("storage.append.split_write") {
            batches.len() / 2
        } else {
            0
        };
        let file = &self.active().file;
        let mut write = Ok(());
        if split > 0 {
            write = self.disk.write_at(file, position, &batches[..split]).await;
        }
        if write.is_ok() {
            let rest = &batches[split..];
            write = self
                .disk
                .write_at(file, position + split as u64, rest)
                .await;
        }
        if let Err(e) = write {
            return Err(self.undo_write(position, e).await);
        }

        let interval = self.config.index_interval_bytes;
        let mut max_timestamp = -1;
        let mut at = position;
        let mut next = base_offset;
        for (_, hdr) in &headers {
            let mut stored = *hdr;
            stored.base_offset = next;
            if let Some(t) = log_append_time {
                stored.max_timestamp = t;
            }
            max_timestamp = max_timestamp.max(stored.max_timestamp);
            self.active_mut().on_batch(at, &stored, interval, now_ms);
            self.producers
                .update(&stored.producer_batch(), next, stored.max_timestamp);
            at += hdr.total_bytes as u64;
            next = stored.last_offset() + 1;
        }
        self.log_end_offset = next;
        let name = self.path(&segment::file_name(
            self.active().base_offset,
            segment::LOG_EXT,
        ));
        let file = self.active().file.clone();
        self.pending_sync.insert(
            name,
            PendingSync {
                file,
                up_to_offset: next,
            },
        );
        self.assert_invariants();
        Ok(AppendInfo {
            base_offset,
            last_offset: next - 1,
            log_append_time: log_append_time.unwrap_or(-1),
            max_timestamp,
            duplicate: false,
            log_start_offset: self.log_start_offset,
        })
    }

    /// Appends batches fetched from the leader exactly as they are (the follower's path): no
    /// offsets, epochs or timestamps are patched. The input must be whole v2 batches (at most
    /// `REPLICATED_APPEND_BATCHES_MAX`, each within `STORED_BATCH_BYTES_MAX`; not
    /// `max_message_bytes`, which the leader applied when the batch was produced: a topic whose
    /// limit shrank later must not stall its followers), each CRC-verified, the first starting
    /// at or after the log end offset and each next one at or after where the previous ended
    /// (`OffsetMismatch` otherwise; a gap is what the leader's cleaner left in a compacted
    /// topic, as Kafka's followers accept: the segment that gets it is marked as holding gaps,
    /// durably, before the bytes are written, so recovery reads it as a cleaned one), with
    /// leader epochs non-decreasing and never below the log's latest (`LeaderEpoch`). Batches
    /// without an epoch (-1) are stored and leave the cache alone, as on the leader path.
    ///
    /// Every new epoch is recorded in the cache and checkpointed before any byte is written;
    /// producer state is updated (never checked: the leader checked), so a promoted follower
    /// recognises retries; segments roll by the leader path's rules, batch by batch, so one
    /// large fetch spreads over segments of `segment_bytes`. Not durable until a flush covers
    /// `last_offset` (the same `pending_sync` group commit as `append`).
    ///
    /// On a refused input nothing changes. On a disk error a prefix of whole batches may have
    /// been appended (every run of batches is written and accounted in one go): the log end
    /// offset says where the next fetch starts, and the cache matches the batches written.
    pub async fn append_replicated(
        &mut self,
        bytes: &[u8],
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        self.check_live()?;
        let headers = split(
            bytes,
            batch_view::STORED_BATCH_BYTES_MAX,
            REPLICATED_APPEND_BATCHES_MAX,
        )?;
        let base_offset = self.log_end_offset;
        let mut expected = base_offset;
        let mut last_epoch = self.epochs.entries().last().copied();
        let mut epoch_change = false;
        for (range, hdr) in &headers {
            if hdr.base_offset < expected {
                return Err(LogError::OffsetMismatch {
                    expected,
                    got: hdr.base_offset,
                });
            }
            if !batch_view::crc_ok(&bytes[range.clone()]) {
                return Err(LogError::InvalidBatch("replicated batch fails its CRC-32C"));
            }
            if hdr.leader_epoch >= 0 {
                let new = EpochEntry {
                    epoch: hdr.leader_epoch,
                    start_offset: hdr.base_offset,
                };
                match last_epoch {
                    Some(last) if hdr.leader_epoch < last.epoch => {
                        let refused = EpochCacheError::NotMonotonic { last, new };
                        return Err(LogError::LeaderEpoch(refused));
                    }
                    Some(last) if hdr.leader_epoch == last.epoch => {}
                    _ => {
                        epoch_change = true;
                        last_epoch = Some(new);
                    }
                }
            }
            expected = hdr
                .last_offset()
                .checked_add(1)
                .ok_or(LogError::InvalidBatch("offsets overflow"))?;
        }

        // Persistence rule (module doc): every new epoch of the input is staged and durable in
        // the checkpoint before the first byte is written. The cache is restored on failure.
        let backup = epoch_change.then(|| self.epochs.clone());
        let staged = self.stage_replicated_epochs(&headers);
        let staged = match staged {
            Ok(()) => self.persist_epochs_if_dirty().await,
            Err(e) => Err(e),
        };
        if let Err(e) = staged {
            self.restore_epochs(backup, &headers);
            return Err(e);
        }

        let mut max_timestamp = -1;
        let written = self
            .write_replicated(bytes, &headers, now_ms, &mut max_timestamp)
            .await;
        if let Err(e) = written {
            self.restore_epochs(backup, &headers);
            self.assert_invariants();
            return Err(e);
        }
        debug_assert_eq!(self.log_end_offset, expected);
        self.assert_invariants();
        Ok(AppendInfo {
            base_offset,
            last_offset: self.log_end_offset - 1,
            log_append_time: -1,
            max_timestamp,
            duplicate: false,
            log_start_offset: self.log_start_offset,
        })
    }

    /// Stages the epoch of every batch of a replicated append (validated as monotonic).
    fn stage_replicated_epochs(&mut self, headers: &[(Range<usize>, Hdr)]) -> Result<(), LogError> {
        for (_, hdr) in headers {
            self.stage_epoch(hdr.leader_epoch, hdr.base_offset)?;
        }
        Ok(())
    }

    /// After a failed replicated append: the cache as it was, plus the epochs of the batches
    /// that did reach the log. The durable checkpoint may hold more (allowed: recovery drops
    /// entries past the log end); it is rewritten before the next bytes are.
    fn restore_epochs(
        &mut self,
        backup: Option<LeaderEpochCache>,
        headers: &[(Range<usize>, Hdr)],
    ) {
        let Some(backup) = backup else {
            return;
        };
        self.epochs = backup;
        self.epochs_dirty = true;
        for (_, hdr) in headers {
            if hdr.base_offset >= self.log_end_offset {
                break;
            }
            let restaged = self.stage_epoch(hdr.leader_epoch, hdr.base_offset);
            assert!(
                restaged.is_ok(),
                "epochs staged once stage again: {restaged:?}"
            );
        }
    }

    /// Writes validated replicated batches in runs that each fit the active segment (rolling
    /// before a run by the leader path's rules), accounting each run once its write succeeded.
    async fn write_replicated(
        &mut self,
        bytes: &[u8],
        headers: &[(Range<usize>, Hdr)],
        now_ms: i64,
        max_timestamp: &mut i64,
    ) -> Result<(), LogError> {
        let interval = self.config.index_interval_bytes;
        let mut i = 0;
        while i < headers.len() {
            let first = &headers[i].1;
            if self.should_roll(first.total_bytes as u64, first.last_offset() + 1, now_ms) {
                self.roll(now_ms).await?;
            }
            // The run: the first batch always (the roll decided), then every next batch that
            // keeps the segment within `segment_bytes` and its relative offsets within u32.
            let (seg_base, position) = (self.active().base_offset, self.active().size_bytes);
            let mut size = position + first.total_bytes as u64;
            let mut end = i + 1;
            while let Some((_, hdr)) = headers.get(end) {
                let fits = size + hdr.total_bytes as u64 <= self.config.segment_bytes
                    && hdr.last_offset() + 1 - seg_base <= i64::from(u32::MAX);
                if !fits {
                    break;
                }
                size += hdr.total_bytes as u64;
                end += 1;
            }
            let run = &bytes[headers[i].0.start..headers[end - 1].0.end];
            // Offset gaps (a compacted leader's cleaned batches) only in a segment that recovery
            // and readers know may hold them: the marker is durable before the bytes are.
            let mut next = self.log_end_offset;
            let gapped = headers[i..end].iter().any(|(_, hdr)| {
                let gap = hdr.base_offset > next;
                next = hdr.last_offset() + 1;
                gap
            });
            if gapped && !self.active().cleaned {
                self.mark_gapped(seg_base).await?;
            }
            // Buggify: the same bytes in two writes, so a crash can persist one half of a run.
            let split = if self.config.hooks.buggify("storage.append.split_write") {
                run.len() / 2
            } else {
                0
            };
            let file = &self.active().file;
            let mut write = Ok(());
            if split > 0 {
                write = self.disk.write_at(file, position, &run[..split]).await;
            }
            if write.is_ok() {
                let at = position + split as u64;
                write = self.disk.write_at(file, at, &run[split..]).await;
            }
            if let Err(e) = write {
                return Err(self.undo_write(position, e).await);
            }
            let mut at = position;
            for (_, hdr) in &headers[i..end] {
                *max_timestamp = (*max_timestamp).max(hdr.max_timestamp);
                self.active_mut().on_batch(at, hdr, interval, now_ms);
                self.producers
                    .update(&hdr.producer_batch(), hdr.base_offset, hdr.max_timestamp);
                at += hdr.total_bytes as u64;
                self.log_end_offset = hdr.last_offset() + 1;
            }
            let name = self.path(&segment::file_name(seg_base, segment::LOG_EXT));
            let file = self.active().file.clone();
            self.pending_sync.insert(
                name,
                PendingSync {
                    file,
                    up_to_offset: self.log_end_offset,
                },
            );
            i = end;
        }
        Ok(())
    }

    /// Marks the active segment (base `base`) as one that may hold offset gaps, as the cleaner
    /// marks the segments it rewrote: the marker file is synced and its name made durable
    /// before the caller writes gapped batches.
    async fn mark_gapped(&mut self, base: i64) -> Result<(), LogError> {
        let marker = self.path(&segment::file_name(base, segment::CLEANED_MARKER_EXT));
        let file = self.disk.open(&marker, OpenMode::CreateOrOpen).await?;
        self.disk.sync(&file).await?;
        self.disk.sync_dir(&self.dir).await?;
        self.active_mut().cleaned = true;
        tracing::debug!(dir = %self.dir, base, "segment marked as holding offset gaps");
        Ok(())
    }

    async fn undo_write(&mut self, position: u64, error: DiskError) -> LogError {
        tracing::warn!(dir = %self.dir, %error, "append write failed; cutting the segment back");
        let file = self.active().file.clone();
        if let Err(undo) = self.disk.set_len(&file, position).await {
            tracing::error!(dir = %self.dir, %undo, "cannot undo a failed write; log failed");
            self.failed = true;
            return LogError::Failed;
        }
        // The cut must be durable before anything is appended behind it: otherwise a power loss
        // can bring the failed write's bytes back, and once this segment is sealed they sit
        // between its last batch and the next segment's base as an unreadable range
        // (sim: single_compaction 210607917954032).
        if let Err(undo) = self.disk.sync(&file).await {
            tracing::error!(dir = %self.dir, %undo, "cannot sync a cut-back segment; log failed");
            self.failed = true;
            return LogError::Failed;
        }
        LogError::Disk(error)
    }

    fn should_roll(&self, bytes: u64, next_offset: i64, now_ms: i64) -> bool {
        let active = self.active();
        if active.is_empty() {
            return false;
        }
        let full = active.size_bytes + bytes > self.config.segment_bytes;
        let old = active
            .first_batch_time_ms
            .is_some_and(|t| now_ms.saturating_sub(t) > self.config.segment_ms);
        let offsets = next_offset - active.base_offset > i64::from(u32::MAX);
        full || old || offsets || self.config.hooks.buggify("storage.append.roll_early")
    }

    /// Seals the active segment (writes its index files and a producer snapshot) and starts a
    /// new one at the log end offset. The new names need `sync_dir`: the next flush plan does it.
    async fn roll(&mut self, _now_ms: i64) -> Result<(), LogError> {
        let base = self.log_end_offset;
        let sealed_base = self.active().base_offset;
        self.active_mut().seal_time_index();
        let index_bytes = self.active().index.encode();
        let time_bytes = self.active().time_index.encode();
        self.write_side_file(sealed_base, segment::INDEX_EXT, &index_bytes, base)
            .await?;
        self.write_side_file(sealed_base, segment::TIME_INDEX_EXT, &time_bytes, base)
            .await?;
        let snapshot = self.producers.encode();
        self.write_side_file(base, segment::SNAPSHOT_EXT, &snapshot, base)
            .await?;
        self.snapshots.insert(base);
        let log_name = self.path(&segment::file_name(base, segment::LOG_EXT));
        let file = self.disk.open(&log_name, OpenMode::CreateOrOpen).await?;
        self.disk.set_len(&file, 0).await?;
        self.segments.insert(base, Segment::new(base, file));
        self.dir_sync_up_to = Some(base);
        self.checkpoint_up_to = Some(base);
        self.rolls += 1;
        while self.snapshots.len() > PRODUCER_SNAPSHOTS_KEPT {
            let oldest = self.snapshots.pop_first().expect("non-empty");
            let name = self.path(&segment::file_name(oldest, segment::SNAPSHOT_EXT));
            self.pending_sync.remove(&name);
            remove_if_present(&self.disk, &name).await?;
        }
        tracing::debug!(dir = %self.dir, base, "rolled segment");
        Ok(())
    }

    async fn write_side_file(
        &mut self,
        base: i64,
        ext: &str,
        bytes: &[u8],
        up_to_offset: i64,
    ) -> Result<(), LogError> {
        let name = self.path(&segment::file_name(base, ext));
        let file = self.disk.open(&name, OpenMode::CreateOrOpen).await?;
        self.disk.set_len(&file, 0).await?;
        self.disk.write_at(&file, 0, bytes).await?;
        self.pending_sync
            .insert(name, PendingSync { file, up_to_offset });
        Ok(())
    }

    /// What a group-commit sync must do now to make everything appended so far durable, or
    /// `None` when nothing is pending.
    pub fn flush_plan(&self) -> Option<FlushPlan<D::File>> {
        if self.failed {
            return None;
        }
        let nothing = self.pending_sync.is_empty()
            && self.dir_sync_up_to.is_none()
            && self.checkpoint_up_to.is_none()
            && self.durable_end_offset == self.log_end_offset;
        if nothing {
            return None;
        }
        Some(FlushPlan {
            files: self.pending_sync.values().map(|p| p.file.clone()).collect(),
            sync_dir: self.dir_sync_up_to.map(|_| self.dir.clone()),
            recovery_checkpoint: self
                .checkpoint_up_to
                .map(|_| (self.dir.clone(), self.log_end_offset)),
            end_offset: self.log_end_offset,
            generation: self.generation,
            rolls: self.rolls,
        })
    }

    /// Feeds back the result of `execute_flush`. On success the durable end offset advances to
    /// the plan's end offset; on failure the log fails for good (never pretend data is safe).
    pub fn flush_done(
        &mut self,
        plan: &FlushPlan<D::File>,
        result: Result<(), DiskError>,
    ) -> Result<i64, LogError> {
        if let Err(error) = result {
            tracing::error!(dir = %self.dir, %error, "sync failed; partition log failed");
            self.failed = true;
            return Err(LogError::Failed);
        }
        self.check_live()?;
        if plan.generation != self.generation {
            // A truncation happened meanwhile: the plan's offsets no longer name the same data.
            return Ok(self.durable_end_offset);
        }
        let end = plan.end_offset;
        self.pending_sync.retain(|_, p| p.up_to_offset > end);
        // A plan covers the newest rolled segment's directory entry (and its checkpoint) only if
        // it was made after that roll. Comparing offsets is not enough: a plan ending exactly at
        // the new segment's base may predate the roll, and clearing the flag then would ack data
        // whose file name a power loss can still revert (simulator: single_durability seed 79).
        let after_newest_roll = plan.rolls == self.rolls;
        if after_newest_roll && plan.sync_dir.is_some() {
            self.dir_sync_up_to = None;
        }
        if after_newest_roll && plan.recovery_checkpoint.is_some() {
            self.checkpoint_up_to = None;
        }
        self.durable_end_offset = self.durable_end_offset.max(end.min(self.log_end_offset));
        self.assert_invariants();
        Ok(self.durable_end_offset)
    }

    /// Plan, execute and apply a flush in one go (tests, shutdown).
    pub async fn flush(&mut self) -> Result<i64, LogError> {
        self.check_live()?;
        let Some(plan) = self.flush_plan() else {
            return Ok(self.durable_end_offset);
        };
        let result = execute_flush(&self.disk, &plan).await;
        self.flush_done(&plan, result)
    }

    /// Whole stored batches from the one containing `offset`, up to `max_bytes` (but at least
    /// one whole batch when one exists), only batches entirely below `max_offset_exclusive`,
    /// each CRC-verified.
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset_exclusive: Option<i64>,
    ) -> Result<ReadResult, LogError> {
        self.check_live()?;
        if offset < self.log_start_offset || offset > self.log_end_offset {
            return Err(self.out_of_range(offset));
        }
        let limit = max_offset_exclusive
            .unwrap_or(self.log_end_offset)
            .min(self.log_end_offset);
        let empty = ReadResult {
            bytes: Bytes::new(),
            next_offset: offset,
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset,
        };
        if offset >= limit {
            return Ok(empty);
        }
        // Offsets are contiguous, so an offset below the end that no segment covers can only be
        // a corrupt range recovery refused to index: report it, never skip to the next segment
        // (that would hand a reader later offsets as if these never existed).
        if let Some((_, seg)) = self.segments.range(..=offset).next_back() {
            let hole =
                seg.next_offset <= offset && self.segments.range(offset + 1..).next().is_some();
            if hole {
                return Err(LogError::Corrupt {
                    segment: seg.base_offset,
                    position: seg.size_bytes,
                });
            }
        }
        let mut from = offset;
        for seg in self
            .segments
            .range(..=offset)
            .next_back()
            .into_iter()
            .map(|(_, s)| s)
            .chain(self.segments.range(offset + 1..).map(|(_, s)| s))
        {
            if seg.next_offset <= from {
                continue;
            }
            if seg.base_offset >= limit {
                break;
            }
            // The segment holding `offset` decides: nothing readable there (its batch is past
            // the limit) means nothing readable at all. Moving on to a later segment would hand
            // out later offsets as if this one did not exist. Only a cleaned segment whose
            // remaining batches all lie below `offset` (the cleaner removed the rest) passes the
            // read on to the next segment.
            return match self.read_segment(seg, from, max_bytes, limit).await? {
                SegmentRead::Found(bytes, next_offset) => Ok(ReadResult {
                    bytes,
                    next_offset,
                    ..empty
                }),
                SegmentRead::Nothing => Ok(empty),
                SegmentRead::CleanedAway => {
                    from = seg.next_offset;
                    continue;
                }
            };
        }
        Ok(empty)
    }

    async fn read_segment(
        &self,
        seg: &Segment<D::File>,
        offset: i64,
        max_bytes: usize,
        limit: i64,
    ) -> Result<SegmentRead, LogError> {
        let corrupt = |position| LogError::Corrupt {
            segment: seg.base_offset,
            position,
        };
        let mut cursor = BatchCursor::new(&self.disk, &seg.file, seg.size_bytes, SEEK_CHUNK_BYTES);
        let mut position = seg.seek_position(offset);
        let first = loop {
            match cursor.next(position, false).await? {
                // The segment claims `offset` (its next offset is past it) but its bytes end
                // first: damaged index or file. An error, never a silent skip to later offsets.
                Scanned::End if seg.cleaned => return Ok(SegmentRead::CleanedAway),
                Scanned::End if seg.next_offset > offset => return Err(corrupt(position)),
                Scanned::End => return Ok(SegmentRead::Nothing),
                Scanned::Bad { position, .. } => return Err(corrupt(position)),
                Scanned::Batch { hdr, .. } if hdr.last_offset() < offset => {
                    position += hdr.total_bytes as u64;
                }
                Scanned::Batch { hdr, .. } => break hdr,
            }
        };
        // Offsets are contiguous outside cleaned segments, so the first batch must hold
        // `offset` (or start the segment); in a cleaned one it may start after a gap. The CRC
        // does not cover the base offset: a flip there would otherwise make a batch claim other
        // offsets and a reader skip records silently.
        let expected_start = offset.max(seg.base_offset);
        let impossible = (first.base_offset > expected_start && !seg.cleaned)
            || first.base_offset < seg.base_offset
            || first.last_offset() >= seg.next_offset;
        if impossible {
            tracing::error!(
                dir = %self.dir, segment = seg.base_offset, position, offset,
                base_offset = first.base_offset, last_offset = first.last_offset(),
                "stored batch claims offsets its segment does not hold"
            );
            return Err(corrupt(position));
        }
        if first.last_offset() >= limit {
            return Ok(SegmentRead::Nothing);
        }
        let available = (seg.size_bytes - position) as usize;
        let want = max_bytes.min(available).max(first.total_bytes);
        if let Some(at) = seg.corrupt_overlap(&(position..position + want as u64)) {
            return Err(corrupt(at));
        }
        let mut buf = BytesMut::zeroed(want);
        let n = self.disk.read_at(&seg.file, position, &mut buf).await?;
        buf.truncate(n);
        let skip_crc = self.config.hooks.mutant("skip_crc_on_read");
        let mut used = 0usize;
        let mut next_offset = offset;
        while used < buf.len() {
            let Some(hdr) = batch_view::parse(&buf[used..]) else {
                if used == 0 {
                    return Err(corrupt(position));
                }
                break;
            };
            let end = used + hdr.total_bytes;
            if end > buf.len() || hdr.last_offset() >= limit {
                break;
            }
            let expected = if used == 0 {
                first.base_offset
            } else {
                next_offset
            };
            let out_of_order = if seg.cleaned {
                hdr.base_offset < expected
            } else {
                hdr.base_offset != expected
            };
            if out_of_order || (!skip_crc && !batch_view::crc_ok(&buf[used..end])) {
                tracing::error!(
                    dir = %self.dir, segment = seg.base_offset, position = position + used as u64,
                    "stored batch failed verification on read"
                );
                return Err(corrupt(position + used as u64));
            }
            next_offset = hdr.last_offset() + 1;
            used = end;
        }
        if used == 0 {
            return Err(corrupt(position));
        }
        buf.truncate(used);
        Ok(SegmentRead::Found(buf.freeze(), next_offset))
    }

    fn out_of_range(&self, offset: i64) -> LogError {
        LogError::OffsetOutOfRange {
            offset,
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset,
        }
    }

    /// ListOffsets by timestamp: the first batch whose max timestamp is `>= timestamp`, as
    /// `(offset, that max timestamp)`; the offset is the batch's base offset (batch granularity:
    /// records are never decoded), raised to the log start offset.
    pub async fn offset_for_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>, LogError> {
        self.check_live()?;
        for seg in self.segments.values() {
            if seg.max_timestamp < timestamp || seg.next_offset <= self.log_start_offset {
                continue;
            }
            let mut position = match seg.time_index.last_below(timestamp) {
                Some((_, rel)) => seg.seek_position(seg.base_offset + i64::from(rel)),
                None => 0,
            };
            let mut cursor =
                BatchCursor::new(&self.disk, &seg.file, seg.size_bytes, SEEK_CHUNK_BYTES);
            loop {
                match cursor.next(position, false).await? {
                    Scanned::End => break,
                    Scanned::Bad { position, .. } => {
                        return Err(LogError::Corrupt {
                            segment: seg.base_offset,
                            position,
                        })
                    }
                    Scanned::Batch { hdr, .. } => {
                        let live = hdr.last_offset() >= self.log_start_offset;
                        if live && hdr.max_timestamp >= timestamp {
                            let offset = hdr.base_offset.max(self.log_start_offset);
                            return Ok(Some((offset, hdr.max_timestamp)));
                        }
                        position += hdr.total_bytes as u64;
                    }
                }
            }
        }
        Ok(None)
    }

    /// KIP-734 (`-3`): the base offset of the batch holding the largest timestamp, and that
    /// timestamp; `None` when the log is empty.
    pub fn max_timestamp_offset(&self) -> Option<(i64, i64)> {
        let mut best: Option<(i64, i64)> = None;
        for seg in self.segments.values() {
            if seg.is_empty() || seg.next_offset <= self.log_start_offset {
                continue;
            }
            if best.is_none_or(|(_, ts)| seg.max_timestamp > ts) {
                best = Some((
                    seg.max_timestamp_offset.max(self.log_start_offset),
                    seg.max_timestamp,
                ));
            }
        }
        best
    }

    /// Deletes whole sealed segments past `retention_ms` (by their largest timestamp) or beyond
    /// `retention_bytes`, oldest first, never the active one; returns how many were deleted.
    pub async fn apply_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        self.check_live()?;
        let mut excess = if self.config.retention_bytes >= 0 {
            self.size_bytes() as i64 - self.config.retention_bytes
        } else {
            0
        };
        let mut doomed = Vec::new();
        for seg in self.segments.values().take(self.segments.len() - 1) {
            let by_time = self.config.retention_ms >= 0
                && now_ms.saturating_sub(seg.max_timestamp) > self.config.retention_ms;
            let by_size = excess - seg.size_bytes as i64 >= 0 && self.config.retention_bytes >= 0;
            if !(by_time || by_size) {
                break;
            }
            excess -= seg.size_bytes as i64;
            doomed.push(seg.next_offset);
        }
        let Some(&new_start) = doomed.last() else {
            return Ok(0);
        };
        self.advance_log_start(new_start).await?;
        Ok(doomed.len())
    }

    /// DeleteRecords: moves the log start offset to `offset` (checkpointed) and deletes the
    /// sealed segments entirely below it. Returns the new log start offset.
    pub async fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        self.check_live()?;
        if offset > self.log_end_offset || offset < 0 {
            return Err(self.out_of_range(offset));
        }
        if offset > self.log_start_offset {
            self.advance_log_start(offset).await?;
        }
        Ok(self.log_start_offset)
    }

    async fn advance_log_start(&mut self, offset: i64) -> Result<(), LogError> {
        assert!(offset <= self.log_end_offset && offset >= self.log_start_offset);
        // Checkpoint first: if we crash before the files go, open takes the larger start.
        checkpoint::write(
            &self.disk,
            &self.dir,
            checkpoint::LOG_START_CHECKPOINT,
            offset,
        )
        .await?;
        self.log_start_offset = offset;
        // Recovery applies the checkpointed log start to the epochs too, so a crash before this
        // rewrite is harmless; it is written here so the file never lists epochs long gone.
        let first_before = self.epochs.entries().first().copied();
        self.epochs.truncate_from_start(offset);
        if self.epochs.entries().first().copied() != first_before {
            self.epochs_dirty = true;
        }
        self.persist_epochs_if_dirty().await?;
        let doomed: Vec<i64> = self
            .segments
            .values()
            .take(self.segments.len() - 1)
            .filter(|s| s.next_offset <= offset)
            .map(|s| s.base_offset)
            .collect();
        for base in &doomed {
            self.segments.remove(base);
            self.remove_segment_files(*base).await?;
        }
        if !doomed.is_empty() {
            self.disk.sync_dir(&self.dir).await?;
            tracing::info!(dir = %self.dir, deleted = doomed.len(), log_start_offset = offset,
                "deleted old segments");
        }
        self.assert_invariants();
        Ok(())
    }

    async fn remove_segment_files(&mut self, base: i64) -> Result<(), LogError> {
        for ext in segment::SEGMENT_FILE_EXTS
            .into_iter()
            .chain([segment::SNAPSHOT_EXT])
        {
            let name = self.path(&segment::file_name(base, ext));
            self.pending_sync.remove(&name);
            remove_if_present(&self.disk, &name).await?;
        }
        self.snapshots.remove(&base);
        Ok(())
    }

    /// Replaces the whole log with an empty one that starts (and ends) at `offset`, durably:
    /// a follower whose log ends below the leader's log start (DeleteRecords or retention
    /// removed everything it could fetch next) starts over there, as Kafka's
    /// `truncateFullyAndStartAt` does. The epoch cache and producer state are cleared.
    /// Crash order: the log-start checkpoint first, then the old segments go (recovery of a
    /// directory without segments creates the first one at the checkpointed start), then the
    /// new empty segment, so every prefix of the sequence recovers to a log that is either the
    /// old one cut at its end or the new empty one.
    pub async fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), LogError> {
        self.check_live()?;
        if offset < 0 {
            return Err(self.out_of_range(offset));
        }
        self.generation += 1;
        checkpoint::write(
            &self.disk,
            &self.dir,
            checkpoint::LOG_START_CHECKPOINT,
            offset,
        )
        .await?;
        // Epochs first: no entry may outlive the batches it describes.
        self.epochs = LeaderEpochCache::new();
        self.epochs_dirty = true;
        self.persist_epochs_if_dirty().await?;
        let doomed: Vec<i64> = self.segments.keys().copied().collect();
        for base in &doomed {
            self.remove_segment_files(*base).await?;
        }
        let stale: Vec<i64> = self.snapshots.iter().copied().collect();
        for base in stale {
            let name = self.path(&segment::file_name(base, segment::SNAPSHOT_EXT));
            remove_if_present(&self.disk, &name).await?;
        }
        self.snapshots.clear();
        self.pending_sync.clear();
        self.disk.sync_dir(&self.dir).await?;
        let log_name = self.path(&segment::file_name(offset, segment::LOG_EXT));
        let file = self.disk.open(&log_name, OpenMode::CreateOrOpen).await?;
        self.disk.set_len(&file, 0).await?;
        self.disk.sync(&file).await?;
        self.disk.sync_dir(&self.dir).await?;
        checkpoint::write(
            &self.disk,
            &self.dir,
            checkpoint::RECOVERY_POINT_CHECKPOINT,
            offset,
        )
        .await?;
        self.segments.clear();
        self.segments.insert(offset, Segment::new(offset, file));
        self.log_start_offset = offset;
        self.log_end_offset = offset;
        self.durable_end_offset = offset;
        self.producers.clear();
        self.dir_sync_up_to = None;
        self.checkpoint_up_to = None;
        tracing::info!(dir = %self.dir, offset, "log replaced by an empty one starting there");
        self.assert_invariants();
        Ok(())
    }

    /// Removes every batch at or after `offset` (rounded down to a batch boundary), durably.
    /// For replication: a follower truncating to its divergence point.
    pub async fn truncate_to(&mut self, offset: i64) -> Result<i64, LogError> {
        self.check_live()?;
        if offset >= self.log_end_offset {
            // Nothing to cut, but an epoch recorded at the log end without batches (a leader
            // that wrote nothing in it) starts at `offset` and goes, as in Kafka: a follower
            // truncating to its log end must then accept the leader's older-epoch batches.
            if offset == self.log_end_offset {
                self.truncate_epochs_from_end(offset);
                self.persist_epochs_if_dirty().await?;
            }
            return Ok(self.log_end_offset);
        }
        self.generation += 1;
        let offset = offset.max(self.log_start_offset);
        let seg_base = *self
            .segments
            .range(..=offset)
            .next_back()
            .map(|(b, _)| b)
            .expect("log start offset lies in a segment");
        let doomed: Vec<i64> = self
            .segments
            .range(seg_base + 1..)
            .map(|(b, _)| *b)
            .collect();
        let removed_any = !doomed.is_empty();
        for base in doomed {
            self.segments.remove(&base);
            self.remove_segment_files(base).await?;
        }
        if removed_any {
            // The removals must be durable before the cut: were the cut durable while the later
            // segments' names revert, recovery would take the cut segment for a whole sealed one
            // (its index files intact) and serve a hole (crash test of the epoch cache).
            self.disk.sync_dir(&self.dir).await?;
        }
        // Find the batch that holds `offset`; cut at its start.
        let (cut, new_end) = {
            let seg = &self.segments[&seg_base];
            let mut cursor =
                BatchCursor::new(&self.disk, &seg.file, seg.size_bytes, SEEK_CHUNK_BYTES);
            let mut position = seg.seek_position(offset);
            loop {
                match cursor.next(position, false).await? {
                    Scanned::Batch { hdr, .. } if hdr.last_offset() < offset => {
                        position += hdr.total_bytes as u64;
                    }
                    // After a gap the cleaner left the cut batch starts past `offset`: the log
                    // then ends at `offset` (Kafka's truncateTo), not at that batch.
                    Scanned::Batch { hdr, .. } => break (position, hdr.base_offset.min(offset)),
                    Scanned::End => break (position, seg.next_offset),
                    Scanned::Bad { position, .. } => {
                        return Err(LogError::Corrupt {
                            segment: seg_base,
                            position,
                        })
                    }
                }
            }
        };
        let file = self.segments[&seg_base].file.clone();
        self.disk.set_len(&file, cut).await?;
        if let Err(e) = self.disk.sync(&file).await {
            self.failed = true;
            tracing::error!(dir = %self.dir, error = %e, "sync after truncation failed");
            return Err(LogError::Failed);
        }
        for ext in [segment::INDEX_EXT, segment::TIME_INDEX_EXT] {
            let name = self.path(&segment::file_name(seg_base, ext));
            self.pending_sync.remove(&name);
            remove_if_present(&self.disk, &name).await?;
        }
        self.disk.sync_dir(&self.dir).await?;
        let interval = self.config.index_interval_bytes;
        let (rebuilt, _) = recovery::scan(
            &self.disk,
            &file,
            seg_base,
            cut,
            interval,
            recovery::ScanMode::Tail,
            false,
            self.segments[&seg_base].cleaned,
        )
        .await?;
        let mut rebuilt = rebuilt;
        if rebuilt.cleaned && rebuilt.next_offset < new_end {
            // The cut batch followed a gap the cleaner left: the log ends where it began.
            rebuilt.next_offset = new_end;
        }
        self.segments.insert(seg_base, rebuilt);
        self.log_end_offset = new_end;
        self.durable_end_offset = self.durable_end_offset.min(new_end);
        self.log_start_offset = self.log_start_offset.min(new_end);
        self.producers.truncate_to(new_end);
        self.truncate_epochs_from_end(new_end);
        let stale: Vec<i64> = self.snapshots.range(new_end + 1..).copied().collect();
        for base in stale {
            let name = self.path(&segment::file_name(base, segment::SNAPSHOT_EXT));
            remove_if_present(&self.disk, &name).await?;
            self.snapshots.remove(&base);
        }
        let name = self.path(&segment::file_name(seg_base, segment::LOG_EXT));
        self.pending_sync.retain(|n, _| *n != name);
        self.assert_invariants();
        // After the cut is durable: a crash before this leaves entries past the log end, which
        // recovery drops. Should it fail, the next append rewrites it before writing bytes.
        self.persist_epochs_if_dirty().await?;
        Ok(new_end)
    }
}

fn assert_config(config: &LogConfig) {
    assert!(config.segment_bytes > 0 && config.segment_bytes <= SEGMENT_BYTES_MAX);
    assert!(config.index_interval_bytes > 0);
}

fn rewindow(table: &ProducerStateTable, config: &LogConfig) -> ProducerStateTable {
    let window = producer_window(config);
    let mut fresh = ProducerStateTable::decode(&table.encode(), window).unwrap_or_default();
    if fresh.is_empty() && !table.is_empty() {
        fresh = table.clone();
    }
    fresh
}

/// The `epoch_cache_not_truncated` planted bug: the leader-epoch cache keeps epochs the log's
/// truncation removed (simulation via `Hooks::mutant`; unit tests via `LogConfig`).
pub(crate) fn epoch_cache_not_truncated(config: &LogConfig) -> bool {
    planted_in_unit_tests(config) || config.hooks.mutant("epoch_cache_not_truncated")
}

#[cfg(test)]
fn planted_in_unit_tests(config: &LogConfig) -> bool {
    config.planted_epoch_cache_not_truncated
}

#[cfg(not(test))]
fn planted_in_unit_tests(_config: &LogConfig) -> bool {
    false
}

pub(crate) fn producer_window(config: &LogConfig) -> usize {
    if config.hooks.mutant("idempotence_window_one") {
        1
    } else {
        PRODUCER_BATCHES_RETAINED
    }
}

async fn remove_if_present<D: Disk>(disk: &D, path: &str) -> Result<(), DiskError> {
    match disk.remove(path).await {
        Ok(()) | Err(DiskError::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Walks the appended bytes as whole batches (at most `max_batches`); each must parse and fit
/// `max_message_bytes`.
fn split(
    bytes: &[u8],
    max_message_bytes: usize,
    max_batches: usize,
) -> Result<Vec<(Range<usize>, Hdr)>, LogError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if out.len() >= max_batches {
            return Err(LogError::InvalidBatch("too many batches in one append"));
        }
        let hdr = batch_view::parse(&bytes[at..]).ok_or(LogError::InvalidBatch("bad header"))?;
        if hdr.total_bytes > max_message_bytes {
            return Err(LogError::MessageTooLarge {
                bytes: hdr.total_bytes,
            });
        }
        let end = at + hdr.total_bytes;
        if end > bytes.len() {
            return Err(LogError::InvalidBatch(
                "batch runs past the end of the input",
            ));
        }
        out.push((at..end, hdr));
        at = end;
    }
    if out.is_empty() {
        return Err(LogError::InvalidBatch("no batch"));
    }
    Ok(out)
}

impl ProducerStateTable {
    /// A table holding only the given producers' entries (for staging an append).
    fn clone_for(&self, ids: impl Iterator<Item = i64>) -> ProducerStateTable {
        let mut out = ProducerStateTable::new(self.window());
        for id in ids {
            if let Some(entry) = self.get(id) {
                out.insert(id, entry.clone());
            }
        }
        out
    }
}

// The tests run on `RealDisk`, which simulation builds leave out.
#[cfg(all(test, not(madsim)))]
mod tests;
