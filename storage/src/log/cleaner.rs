//! The log cleaner of compacted topics (`cleanup.policy=compact`): builds a bounded key -> latest
//! offset map over the dirty sealed segments, rewrites every sealed segment up to the mapped end
//! keeping the latest record of each key (and tombstones until their KIP-534 delete horizon),
//! and swaps each rewritten segment in crash-safely through the `Disk` contract. Never touches
//! the active segment or anything not yet durable, never renumbers an offset (batches keep their
//! base offset, last offset delta and producer id / epoch / base sequence), and never decodes
//! records with a codec of its own: records are decoded by `samsa_net::records` and kept records
//! are copied byte for byte (only their timestamp delta is re-based when the batch gets a delete
//! horizon).
//!
//! Swap protocol for one segment `B` (a crash after any step leaves the old or the new segment,
//! both complete; recovery deletes a stray `B.log.cleaned` and rebuilds missing index files):
//! 1. write `B.log.cleaned`, sync it;
//! 2. create the marker `B.compacted` (the segment may now have offset gaps), remove `B.index`
//!    and `B.timeindex`, `sync_dir`;
//! 3. rename `B.log.cleaned` over `B.log`, `sync_dir`;
//! 4. reopen, rebuild the in-memory segment and write its index files (synced).
//!
//! Each segment is swapped on its own, oldest first. That is safe in any crash order because a
//! record is only dropped when a newer record of its key exists at a higher offset (or it is a
//! tombstone past its horizon), so the latest value of a key is never lost.

use std::collections::BTreeMap;

use bytes::Bytes;
use samsa_net::batch::{self, attr, offsets, BatchHeader};
use samsa_net::compression::{self, Compression};
use samsa_net::records::{self, DECOMPRESSED_BYTES_MAX};

use crate::disk::{Disk, DiskError, OpenMode};
use crate::log::batch_view::{self, HEADER_BYTES, STORED_BATCH_BYTES_MAX};
use crate::log::segment::{self, BatchCursor, Scanned, SCAN_CHUNK_BYTES};
use crate::log::{checkpoint, recovery, remove_if_present, LogError, PartitionLog};

/// Most distinct keys one cleaning pass maps (bounds the map's memory).
pub const OFFSET_MAP_KEYS_MAX: usize = 1 << 20;
/// Most key bytes one cleaning pass maps.
pub const OFFSET_MAP_KEY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most records one batch may hold for the cleaner to rewrite it.
pub const CLEAN_RECORDS_PER_BATCH_MAX: usize = records::RECORDS_PER_BATCH_MAX;
/// Suffix of a rewritten segment before it is renamed over the original.
pub const CLEANED_SUFFIX: &str = ".cleaned";

/// Bounded map from a key to the offset of its latest record in the mapped range.
#[derive(Clone, Debug, Default)]
pub struct OffsetMap {
    map: BTreeMap<Bytes, i64>,
    key_bytes: usize,
}

impl OffsetMap {
    pub fn new() -> Self {
        OffsetMap::default()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Records `offset` as the latest for `key` (offsets must come in increasing order per key).
    /// Returns false, changing nothing, when a new key would exceed the bounds.
    pub fn put(&mut self, key: &Bytes, offset: i64) -> bool {
        if let Some(latest) = self.map.get_mut(key) {
            *latest = (*latest).max(offset);
            return true;
        }
        if self.map.len() >= OFFSET_MAP_KEYS_MAX
            || self.key_bytes + key.len() > OFFSET_MAP_KEY_BYTES_MAX
        {
            return false;
        }
        self.key_bytes += key.len();
        self.map.insert(key.clone(), offset);
        true
    }

    /// The latest mapped offset of `key`.
    pub fn latest(&self, key: &[u8]) -> Option<i64> {
        self.map.get(key).copied()
    }
}

/// Why the cleaner could not rewrite a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CleanError {
    /// The stored batch does not decode (CRC, framing, codec): the pass stops; nothing changes.
    Undecodable(String),
}

impl std::fmt::Display for CleanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CleanError::Undecodable(what) => write!(f, "batch does not decode: {what}"),
        }
    }
}

impl std::error::Error for CleanError {}

/// What became of one batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rewritten {
    /// Every record stays and the header needs no change: copy the stored bytes.
    Unchanged,
    /// The batch's new bytes (same base offset, last offset delta and producer fields).
    Replaced(Vec<u8>),
    /// Nothing stays and the batch is not needed for producer state.
    Dropped,
}

/// How to rewrite one batch.
#[derive(Clone, Copy, Debug)]
pub struct RewriteRules<'a> {
    pub map: &'a OffsetMap,
    pub now_ms: i64,
    pub delete_retention_ms: i64,
    /// Keep an emptied batch as a header (it is in its producer's dedup window).
    pub keep_if_empty: bool,
}

/// Reads one zigzag varint (Kafka varint / varlong) at `*at`.
fn read_varint(bytes: &[u8], at: &mut usize) -> Option<i64> {
    let mut value: u64 = 0;
    for shift in 0..10u32 {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Byte ranges of the records of a decompressed records section (framing only: the length
/// prefix of each record), exactly `count` of them covering the whole section.
fn record_ranges(section: &[u8], count: usize) -> Option<Vec<std::ops::Range<usize>>> {
    if count > CLEAN_RECORDS_PER_BATCH_MAX {
        return None;
    }
    let mut out = Vec::with_capacity(count.min(section.len()));
    let mut at = 0usize;
    for _ in 0..count {
        let len = usize::try_from(read_varint(section, &mut at)?).ok()?;
        let end = at.checked_add(len)?;
        if end > section.len() {
            return None;
        }
        out.push(at..end);
        at = end;
    }
    (at == section.len()).then_some(out)
}

/// Copies one record body, re-basing its timestamp delta from `old_base` to `new_base`.
fn copy_record(out: &mut Vec<u8>, body: &[u8], old_base: i64, new_base: i64) -> Option<()> {
    if old_base == new_base {
        put_varint(out, body.len() as i64);
        out.extend_from_slice(body);
        return Some(());
    }
    // Record: attributes (1 byte), timestamp delta (varlong), then the rest unchanged.
    let mut at = 1usize;
    let delta = read_varint(body, &mut at)?;
    let timestamp = old_base.wrapping_add(delta);
    let mut head = vec![*body.first()?];
    put_varint(&mut head, timestamp.wrapping_sub(new_base));
    put_varint(out, (head.len() + body.len() - at) as i64);
    out.extend_from_slice(&head);
    out.extend_from_slice(&body[at..]);
    Some(())
}

/// Rewrites one stored batch by the cleaner's rules: a keyed record stays iff no newer offset of
/// its key is mapped; a tombstone that stays is dropped once its batch's delete horizon has
/// passed; a batch that keeps a tombstone and has no horizon gets `now + delete.retention.ms`.
pub fn rewrite_batch(stored: &[u8], rules: &RewriteRules<'_>) -> Result<Rewritten, CleanError> {
    let bad = |what: String| CleanError::Undecodable(what);
    let hdr = BatchHeader::parse(stored).map_err(|e| bad(e.to_string()))?;
    if stored.len() != hdr.total_bytes() {
        return Err(bad("length mismatch".to_string()));
    }
    if hdr.is_control() {
        return Ok(Rewritten::Unchanged);
    }
    let decoded = records::decode_records(stored).map_err(|e| bad(e.to_string()))?;
    let codec = hdr
        .compression()
        .ok_or_else(|| bad("unknown codec".to_string()))?;
    let section = compression::decompress(codec, &stored[HEADER_BYTES..], DECOMPRESSED_BYTES_MAX)
        .map_err(|e| bad(e.to_string()))?;
    let ranges = record_ranges(&section, decoded.len())
        .ok_or_else(|| bad("record framing does not match the decoded records".to_string()))?;
    let old_horizon = hdr.has_delete_horizon().then_some(hdr.first_timestamp);
    let mut keep = Vec::with_capacity(decoded.len());
    let mut kept_tombstone = false;
    for (offset, record) in &decoded {
        let latest = record.key.as_ref().and_then(|k| rules.map.latest(k));
        let mut stays = latest.is_none_or(|l| l <= *offset);
        if stays && record.value.is_none() {
            if old_horizon.is_some_and(|h| h <= rules.now_ms) {
                stays = false;
            } else {
                kept_tombstone = true;
            }
        }
        keep.push(stays);
    }
    let horizon = match old_horizon {
        Some(h) => Some(h),
        None if kept_tombstone => Some(rules.now_ms.saturating_add(rules.delete_retention_ms)),
        None => None,
    };
    let all_kept = keep.iter().all(|k| *k);
    if all_kept && horizon == old_horizon {
        return Ok(Rewritten::Unchanged);
    }
    let kept = keep.iter().filter(|k| **k).count();
    let mut attributes = hdr.attributes;
    let mut first_timestamp = hdr.first_timestamp;
    let mut body = Vec::new();
    if kept == 0 {
        if !rules.keep_if_empty {
            return Ok(Rewritten::Dropped);
        }
        // Header only: no records, so no codec either.
        attributes &= !Compression::ATTRIBUTE_MASK;
    } else {
        if let Some(h) = horizon {
            attributes |= attr::DELETE_HORIZON;
            first_timestamp = h;
        }
        let mut section_out = Vec::with_capacity(section.len());
        for (range, stays) in ranges.iter().zip(&keep) {
            if *stays {
                copy_record(
                    &mut section_out,
                    &section[range.clone()],
                    hdr.first_timestamp,
                    first_timestamp,
                )
                .ok_or_else(|| bad("record header does not parse".to_string()))?;
            }
        }
        body = match codec {
            Compression::None => section_out,
            codec => compression::compress(codec, &section_out),
        };
    }
    let total = HEADER_BYTES + body.len();
    if total > STORED_BATCH_BYTES_MAX {
        return Ok(Rewritten::Unchanged);
    }
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&stored[..HEADER_BYTES]);
    out.extend_from_slice(&body);
    let length = (total - batch::BATCH_LOG_OVERHEAD_BYTES) as i32;
    out[offsets::BATCH_LENGTH..offsets::BATCH_LENGTH + 4].copy_from_slice(&length.to_be_bytes());
    out[offsets::ATTRIBUTES..offsets::ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    out[offsets::FIRST_TIMESTAMP..offsets::FIRST_TIMESTAMP + 8]
        .copy_from_slice(&first_timestamp.to_be_bytes());
    out[offsets::RECORD_COUNT..offsets::RECORD_COUNT + 4]
        .copy_from_slice(&(kept as i32).to_be_bytes());
    let crc = batch::compute_crc(&out);
    out[offsets::CRC..offsets::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(Rewritten::Replaced(out))
}

/// Settings of one cleaning pass.
#[derive(Clone, Debug)]
pub struct CleanOptions {
    pub now_ms: i64,
    /// `delete.retention.ms`: how long tombstones stay after their first cleaning.
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`: segments with newer records are not cleanable yet.
    pub min_compaction_lag_ms: i64,
    /// Dirty bytes mapped per pass (at least one segment is mapped).
    pub dirty_bytes_max: u64,
    /// Tests only: stop (as if crashed) after this many swap steps.
    pub stop_after_step: Option<u32>,
}

impl Default for CleanOptions {
    fn default() -> Self {
        CleanOptions {
            now_ms: 0,
            delete_retention_ms: 86_400_000,
            min_compaction_lag_ms: 0,
            dirty_bytes_max: 64 * 1024 * 1024,
            stop_after_step: None,
        }
    }
}

/// A cleaning pass in progress: the key map, the mapped end and the segments to rewrite.
#[derive(Clone, Debug)]
pub struct CleanPlan {
    map: OffsetMap,
    /// The first dirty offset once the pass is done.
    pub map_end: i64,
    /// Base offsets of the segments to rewrite, oldest first.
    pub targets: Vec<i64>,
    /// What the pass did so far.
    pub stats: CleanStats,
}

/// Cleaner progress of one partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirtyInfo {
    /// Everything below was cleaned at least once.
    pub first_dirty_offset: i64,
    /// End of the cleanable range (sealed, durable, older than the compaction lag).
    pub cleanable_end_offset: i64,
    pub clean_bytes: u64,
    /// Bytes of cleanable segments at or above the first dirty offset.
    pub dirty_bytes: u64,
    /// Largest timestamp of the oldest dirty cleanable segment (-1 when none).
    pub oldest_dirty_timestamp: i64,
}

impl DirtyInfo {
    /// `dirty / (clean + dirty)`, 0 when there is nothing.
    pub fn dirty_ratio(&self) -> f64 {
        let total = self.clean_bytes + self.dirty_bytes;
        if total == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / total as f64
        }
    }
}

/// What a cleaning pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanStats {
    pub segments_cleaned: usize,
    /// Bytes read by both phases (mapping the dirty part, then rewriting).
    pub bytes_read: u64,
    /// Bytes of the segments the rewrite phase went through.
    pub bytes_cleaned: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
    pub batches_removed: u64,
    /// The first dirty offset after the pass.
    pub first_dirty_offset: i64,
}

fn simulated_crash(step: u32, options: &CleanOptions) -> Result<(), LogError> {
    if options.stop_after_step.is_some_and(|s| step >= s) {
        return Err(LogError::Disk(DiskError::Io(format!(
            "cleaner stopped after step {step} (test)"
        ))));
    }
    Ok(())
}

impl<D: Disk> PartitionLog<D> {
    /// The cleaner's first dirty offset (persisted), raised to the log start offset.
    pub async fn first_dirty_offset(&self) -> Result<i64, LogError> {
        let stored = checkpoint::read(&self.disk, &self.dir, checkpoint::CLEANER_CHECKPOINT)
            .await?
            .unwrap_or(0);
        Ok(stored.clamp(self.log_start_offset, self.log_end_offset))
    }

    /// Dirty ratio inputs: only sealed segments below the durable end and at least
    /// `min_compaction_lag_ms` old count as cleanable.
    pub async fn dirty_info(
        &self,
        now_ms: i64,
        min_compaction_lag_ms: i64,
    ) -> Result<DirtyInfo, LogError> {
        self.check_live()?;
        let first_dirty = self.first_dirty_offset().await?;
        let mut info = DirtyInfo {
            first_dirty_offset: first_dirty,
            cleanable_end_offset: first_dirty,
            oldest_dirty_timestamp: -1,
            ..DirtyInfo::default()
        };
        // Planted bug `cleaner_touches_active`: the active segment counts as cleanable.
        let touches_active = self.config.hooks.mutant("cleaner_touches_active");
        let sealed = self.segments.len() - usize::from(!touches_active);
        for seg in self.segments.values().take(sealed) {
            let young = min_compaction_lag_ms > 0
                && now_ms.saturating_sub(seg.max_timestamp) < min_compaction_lag_ms;
            if seg.next_offset > self.durable_end_offset || young || !seg.corrupt.is_empty() {
                break;
            }
            if seg.next_offset <= first_dirty {
                info.clean_bytes += seg.size_bytes;
                continue;
            }
            if info.oldest_dirty_timestamp < 0 {
                info.oldest_dirty_timestamp = seg.max_timestamp;
            }
            info.dirty_bytes += seg.size_bytes;
            info.cleanable_end_offset = seg.next_offset;
        }
        Ok(info)
    }

    /// Reads one whole stored batch at `position` of segment `base` (CRC verified).
    async fn read_stored_batch(
        &self,
        base: i64,
        position: u64,
        total_bytes: usize,
    ) -> Result<Vec<u8>, LogError> {
        let seg = &self.segments[&base];
        let mut buf = vec![0u8; total_bytes];
        let n = self.disk.read_at(&seg.file, position, &mut buf).await?;
        if n != total_bytes || !batch_view::crc_ok(&buf) {
            return Err(LogError::Corrupt {
                segment: base,
                position,
            });
        }
        Ok(buf)
    }

    /// Every batch of sealed segment `base` as (position, header).
    async fn batch_headers(&self, base: i64) -> Result<Vec<(u64, batch_view::Hdr)>, LogError> {
        let seg = &self.segments[&base];
        let mut cursor = BatchCursor::new(&self.disk, &seg.file, seg.size_bytes, SCAN_CHUNK_BYTES);
        let mut position = 0u64;
        let mut out = Vec::new();
        loop {
            match cursor.next(position, true).await? {
                Scanned::End => return Ok(out),
                Scanned::Batch {
                    hdr, crc_ok: true, ..
                } => {
                    out.push((position, hdr));
                    position += hdr.total_bytes as u64;
                }
                Scanned::Batch { .. } | Scanned::Bad { .. } => {
                    return Err(LogError::Corrupt {
                        segment: base,
                        position,
                    })
                }
            }
        }
    }

    /// One cleaning pass: maps the dirty cleanable segments (bounded), rewrites every sealed
    /// segment up to the mapped end, swaps the changed ones in, and advances the first dirty
    /// offset. Returns what it did (nothing when nothing is cleanable). The same pass in steps
    /// (so a caller can let appends and reads in between): `clean_plan`, `clean_segment` for
    /// each of the plan's targets, `clean_finish`.
    pub async fn clean(&mut self, options: &CleanOptions) -> Result<CleanStats, LogError> {
        let Some(mut plan) = self.clean_plan(options).await? else {
            let first_dirty_offset = self.first_dirty_offset().await?;
            return Ok(CleanStats {
                first_dirty_offset,
                ..CleanStats::default()
            });
        };
        for base in plan.targets.clone() {
            self.clean_segment(&mut plan, base, options).await?;
        }
        self.clean_finish(plan).await
    }

    /// Phase 1 of a pass (reads only): the key map over whole dirty segments within the
    /// bounds, and the segments to rewrite. `None` when nothing is cleanable.
    pub async fn clean_plan(&self, options: &CleanOptions) -> Result<Option<CleanPlan>, LogError> {
        let info = self
            .dirty_info(options.now_ms, options.min_compaction_lag_ms)
            .await?;
        let mut stats = CleanStats {
            first_dirty_offset: info.first_dirty_offset,
            ..CleanStats::default()
        };
        if info.cleanable_end_offset <= info.first_dirty_offset {
            return Ok(None);
        }
        // 1. The key map over whole dirty segments, within the bounds.
        let mut map = OffsetMap::new();
        // Planted bug `cleaner_drops_latest`: every mapped record looks superseded.
        let shift = i64::from(self.config.hooks.mutant("cleaner_drops_latest"));
        let mut map_end = info.first_dirty_offset;
        let mut mapped_bytes = 0u64;
        let dirty: Vec<i64> = self
            .segments
            .values()
            .filter(|s| {
                s.next_offset > info.first_dirty_offset
                    && s.next_offset <= info.cleanable_end_offset
            })
            .map(|s| s.base_offset)
            .collect();
        for base in dirty {
            let seg_bytes = self.segments[&base].size_bytes;
            if mapped_bytes > 0 && mapped_bytes + seg_bytes > options.dirty_bytes_max {
                break;
            }
            let mut trial = map.clone();
            let mut fits = true;
            for (position, hdr) in self.batch_headers(base).await? {
                stats.bytes_read += hdr.total_bytes as u64;
                let stored = self
                    .read_stored_batch(base, position, hdr.total_bytes)
                    .await?;
                let decoded = records::decode_records(&stored).map_err(|_| LogError::Corrupt {
                    segment: base,
                    position,
                })?;
                for (offset, record) in decoded {
                    if let Some(key) = &record.key {
                        if !trial.put(key, offset + shift) {
                            fits = false;
                            break;
                        }
                    }
                }
                if !fits {
                    break;
                }
            }
            if !fits {
                if map.is_empty() {
                    tracing::warn!(dir = %self.dir, segment = base,
                        "segment has more keys than the cleaner's map holds; not cleaned");
                }
                break;
            }
            map = trial;
            mapped_bytes += seg_bytes;
            map_end = self.segments[&base].next_offset;
        }
        if map_end <= info.first_dirty_offset {
            return Ok(None);
        }
        // Every sealed segment below the mapped end, oldest first.
        let targets: Vec<i64> = self
            .segments
            .values()
            .filter(|s| s.next_offset <= map_end)
            .map(|s| s.base_offset)
            .collect();
        Ok(Some(CleanPlan {
            map,
            map_end,
            targets,
            stats,
        }))
    }

    /// Phase 2, one segment of the plan: rewrite and swap it in if anything changes. A segment
    /// that is gone meanwhile (retention) is skipped; one that is no longer a durable sealed
    /// segment is refused.
    pub async fn clean_segment(
        &mut self,
        plan: &mut CleanPlan,
        base: i64,
        options: &CleanOptions,
    ) -> Result<(), LogError> {
        self.check_live()?;
        let Some(seg) = self.segments.get(&base) else {
            return Ok(());
        };
        // Planted bug `cleaner_touches_active`: the active segment is rewritten as planned,
        // whatever was appended to it since.
        let touches_active = self.config.hooks.mutant("cleaner_touches_active");
        let sealed = base < self.active().base_offset;
        let grew = seg.next_offset > plan.map_end || seg.next_offset > self.durable_end_offset;
        if !touches_active && (!sealed || grew) {
            return Err(LogError::InvalidBatch(
                "cleaner target is not a durable sealed segment",
            ));
        }
        let map = &plan.map;
        let stats = &mut plan.stats;
        {
            // Only the planned range (every batch of a sealed segment below the mapped end).
            let mut headers = self.batch_headers(base).await?;
            headers.retain(|(_, hdr)| hdr.last_offset() < plan.map_end);
            stats.bytes_cleaned += self.segments[&base].size_bytes;
            stats.bytes_read += self.segments[&base].size_bytes;
            let mut out = Vec::new();
            let mut changed = false;
            for (position, hdr) in &headers {
                let stored = self
                    .read_stored_batch(base, *position, hdr.total_bytes)
                    .await?;
                // Emptied batches still in their producer's dedup window stay as headers, so a
                // retry of any of them is recognised after a restart rebuilt the window.
                let in_producer_window = hdr.producer_id >= 0
                    && self.producers.get(hdr.producer_id).is_some_and(|e| {
                        e.batches.iter().any(|b| b.last_offset == hdr.last_offset())
                    });
                let rules = RewriteRules {
                    map,
                    now_ms: options.now_ms,
                    delete_retention_ms: options.delete_retention_ms,
                    keep_if_empty: in_producer_window,
                };
                let rewritten = rewrite_batch(&stored, &rules).map_err(|e| {
                    tracing::error!(dir = %self.dir, segment = base, position, error = %e,
                        "cleaner cannot rewrite a stored batch");
                    LogError::Corrupt {
                        segment: base,
                        position: *position,
                    }
                })?;
                match rewritten {
                    Rewritten::Unchanged => out.extend_from_slice(&stored),
                    Rewritten::Replaced(bytes) => {
                        let before = batch_view::parse(&stored).map_or(0, |h| h.record_count);
                        let after = batch_view::parse(&bytes).map_or(0, |h| h.record_count);
                        stats.records_removed += u64::try_from(before - after).unwrap_or(0);
                        out.extend_from_slice(&bytes);
                        changed = true;
                    }
                    Rewritten::Dropped => {
                        stats.records_removed += u64::try_from(hdr.record_count).unwrap_or(0);
                        stats.batches_removed += 1;
                        changed = true;
                    }
                }
            }
            if changed {
                stats.bytes_written += out.len() as u64;
                self.swap_segment(base, &out, options).await?;
                stats.segments_cleaned += 1;
            }
        }
        Ok(())
    }

    /// Phase 3: records the progress (the new first dirty offset) once every target is done.
    pub async fn clean_finish(&mut self, plan: CleanPlan) -> Result<CleanStats, LogError> {
        self.check_live()?;
        checkpoint::write(
            &self.disk,
            &self.dir,
            checkpoint::CLEANER_CHECKPOINT,
            plan.map_end,
        )
        .await?;
        let mut stats = plan.stats;
        stats.first_dirty_offset = plan.map_end;
        self.assert_invariants();
        Ok(stats)
    }

    /// Replaces sealed segment `base` with `bytes` (its cleaned batches), crash-safely.
    async fn swap_segment(
        &mut self,
        base: i64,
        bytes: &[u8],
        options: &CleanOptions,
    ) -> Result<(), LogError> {
        let old = &self.segments[&base];
        let touches_active = self.config.hooks.mutant("cleaner_touches_active");
        assert!(
            touches_active
                || (old.next_offset <= self.durable_end_offset && base < self.active().base_offset),
            "the cleaner only rewrites durable sealed segments"
        );
        let next_offset = old.next_offset;
        let log_name = self.path(&segment::file_name(base, segment::LOG_EXT));
        let cleaned_name = format!("{log_name}{CLEANED_SUFFIX}");
        // Step 1: the new bytes, durable under a name recovery deletes.
        remove_if_present(&self.disk, &cleaned_name).await?;
        let file = self.disk.open(&cleaned_name, OpenMode::CreateNew).await?;
        self.disk.write_at(&file, 0, bytes).await?;
        self.disk.sync(&file).await?;
        simulated_crash(1, options)?;
        // Step 2: the gap marker, and no index files that could describe the old bytes.
        let marker = self.path(&segment::file_name(base, segment::CLEANED_MARKER_EXT));
        let marker_file = self.disk.open(&marker, OpenMode::CreateOrOpen).await?;
        self.disk.sync(&marker_file).await?;
        for ext in [segment::INDEX_EXT, segment::TIME_INDEX_EXT] {
            let name = self.path(&segment::file_name(base, ext));
            self.pending_sync.remove(&name);
            remove_if_present(&self.disk, &name).await?;
        }
        self.swap_sync_dir().await?;
        simulated_crash(2, options)?;
        // Step 3: the atomic switch. From here on the in-memory segment may describe a file
        // that is no longer there: any failure fails the partition (reopen recovers it).
        self.disk.rename(&cleaned_name, &log_name).await?;
        match self
            .finish_swap(base, &log_name, next_offset, options)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::error!(dir = %self.dir, segment = base, error = %e,
                    "cleaner swap failed after the rename; partition log failed");
                self.failed = true;
                Err(e)
            }
        }
    }

    /// `sync_dir` of the partition directory during a swap (skipped by the planted bug
    /// `cleaner_swap_no_sync_dir`).
    async fn swap_sync_dir(&self) -> Result<(), LogError> {
        if self.config.hooks.mutant("cleaner_swap_no_sync_dir") {
            return Ok(());
        }
        self.disk.sync_dir(&self.dir).await?;
        Ok(())
    }

    async fn finish_swap(
        &mut self,
        base: i64,
        log_name: &str,
        next_offset: i64,
        options: &CleanOptions,
    ) -> Result<(), LogError> {
        self.swap_sync_dir().await?;
        simulated_crash(3, options)?;
        // Step 4: the new in-memory segment and its index files.
        let file = self.disk.open(log_name, OpenMode::Existing).await?;
        let len = self.disk.len(&file).await?;
        let interval = self.config.index_interval_bytes;
        let (mut seg, damage) = recovery::scan(
            &self.disk,
            &file,
            base,
            len,
            interval,
            recovery::ScanMode::Sealed,
            false,
            true,
        )
        .await?;
        if damage.is_some() || !seg.corrupt.is_empty() || seg.next_offset > next_offset {
            // Read back wrong (a read fault): the caller fails the partition; reopen rescans.
            return Err(LogError::Corrupt {
                segment: base,
                position: seg.corrupt.first().map_or(0, |c| c.start),
            });
        }
        seg.next_offset = next_offset;
        seg.seal_time_index();
        recovery::write_side(
            &self.disk,
            &self.dir,
            base,
            segment::INDEX_EXT,
            &seg.index.encode(),
        )
        .await?;
        recovery::write_side(
            &self.disk,
            &self.dir,
            base,
            segment::TIME_INDEX_EXT,
            &seg.time_index.encode(),
        )
        .await?;
        self.swap_sync_dir().await?;
        self.segments.insert(base, seg);
        Ok(())
    }
}

// The tests run on `RealDisk`, which simulation builds leave out.
#[cfg(all(test, not(madsim)))]
mod tests;
