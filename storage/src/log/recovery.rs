//! Opening a partition directory: classify files, drop strays, load sealed segments from their
//! index files (rebuilding any that do not match the log), scan everything after the recovery
//! point batch by batch (bounds, offsets, CRC-32C), cut a torn or corrupt tail, record corrupt
//! ranges inside durable sealed segments, rebuild producer state from a snapshot plus the
//! batches after it, and recover the leader-epoch cache (checkpoint checked against the log, or
//! rebuilt from batch headers). Never serves or keeps bytes that failed a check (except under
//! the `recovery_truncate_short` mutant, a planted bug for the simulator), and never trusts a
//! leader-epoch entry past the log end or one the batches contradict.

use std::collections::{BTreeMap, BTreeSet};

use crate::disk::{Disk, DiskError, OpenMode};
use crate::log::batch_view;
use crate::log::checkpoint;
use crate::log::epoch_cache::{LeaderEpochCache, CHECKPOINT_BYTES_MAX};
use crate::log::index::OffsetIndex;
use crate::log::producer_state::ProducerStateTable;
use crate::log::segment::{
    self, BatchCursor, Scanned, Segment, REREADS_ON_MISMATCH, SCAN_CHUNK_BYTES, SEEK_CHUNK_BYTES,
};
use crate::log::time_index::TimeIndex;
use crate::log::{
    assert_config, epoch_cache_not_truncated, producer_window, remove_if_present, CorruptRange,
    LogConfig, LogError, PartitionLog,
};

/// Suffixes of leftovers from interrupted operations, deleted on open.
pub const STRAY_SUFFIXES: &[&str] = &[".tmp", ".cleaned", ".deleted", ".swap"];

/// What `open` found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    /// Segments read batch by batch (after the recovery point, or with bad index files).
    pub segments_scanned: usize,
    pub bytes_truncated: u64,
    /// Segments after a cut tail (unreachable, so deleted).
    pub segments_deleted: usize,
    pub indexes_rebuilt: usize,
    pub stray_files_removed: usize,
    pub corrupt_ranges: Vec<CorruptRange>,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    /// The leader-epoch cache was rebuilt from batch headers (checkpoint missing, damaged or
    /// contradicted by the log).
    pub epoch_cache_rebuilt: bool,
    /// Batches read to recover leader epochs (the tail after the recovery point, or all of
    /// them on a rebuild).
    pub epoch_batches_scanned: u64,
    /// Entries of the recovered leader-epoch cache.
    pub epoch_entries: usize,
}

/// How a scan treats the first bad batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanMode {
    /// Unsynced tail: stop there (the caller cuts the file).
    Tail,
    /// Durable sealed segment: bad bytes are rot; record them and keep going where possible.
    Sealed,
}

/// Where a `Tail` scan stopped early: the file should be cut to `cut_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Damage {
    pub position: u64,
    pub cut_at: u64,
}

/// Reads a segment file batch by batch from the start, rebuilding its in-memory state.
/// `cleaned`: the segment was rewritten by the cleaner, so offset gaps between batches are legal.
#[allow(clippy::too_many_arguments)]
pub async fn scan<D: Disk>(
    disk: &D,
    file: &D::File,
    base: i64,
    len: u64,
    interval: u64,
    mode: ScanMode,
    keep_garbage: bool,
    cleaned: bool,
) -> Result<(Segment<D::File>, Option<Damage>), DiskError> {
    let mut seg = Segment::new(base, file.clone());
    seg.cleaned = cleaned;
    // Offsets are contiguous, except in a cleaned segment (batches in order, gaps allowed).
    let fits = |hdr: &batch_view::Hdr, next: i64| {
        hdr.base_offset == next || (cleaned && hdr.base_offset > next)
    };
    let mut cursor = BatchCursor::new(disk, file, len, SCAN_CHUNK_BYTES);
    let mut position = 0u64;
    loop {
        let mut step = cursor.next(position, true).await?;
        // The base offset is outside the CRC, so a transient flip there passes the cursor's own
        // re-reads; read again before calling anything damage (damage in the tail is cut).
        for _ in 0..REREADS_ON_MISMATCH {
            let good = match &step {
                Scanned::End => true,
                Scanned::Batch { hdr, crc_ok, .. } => *crc_ok && fits(hdr, seg.next_offset),
                Scanned::Bad { .. } => false,
            };
            if good {
                break;
            }
            cursor.forget();
            step = cursor.next(position, true).await?;
        }
        let (hdr, whole) = match step {
            Scanned::End => return Ok((seg, None)),
            Scanned::Batch {
                hdr, crc_ok: true, ..
            } if fits(&hdr, seg.next_offset) => {
                seg.on_batch(position, &hdr, interval, hdr.max_timestamp);
                position += hdr.total_bytes as u64;
                continue;
            }
            Scanned::Batch { hdr, .. } => (Some(hdr), true),
            Scanned::Bad { hdr, .. } => (hdr, false),
        };
        let plausible = hdr.filter(|h| whole && fits(h, seg.next_offset));
        match mode {
            ScanMode::Sealed => {
                if let Some(h) = plausible {
                    // CRC failure inside a batch whose framing is intact: skip just that batch.
                    let end = position + h.total_bytes as u64;
                    seg.corrupt.push(position..end);
                    seg.on_batch(position, &h, interval, h.max_timestamp);
                    position = end;
                    continue;
                }
                seg.corrupt.push(position..len.max(position + 1));
                seg.keep_garbage(len);
                return Ok((seg, None));
            }
            ScanMode::Tail if keep_garbage => {
                // Planted bug: keep the damaged batch (or the whole torn tail) as if it were good.
                if let Some(h) = plausible {
                    let end = position + h.total_bytes as u64;
                    seg.on_batch(position, &h, interval, h.max_timestamp);
                    return Ok((
                        seg,
                        Some(Damage {
                            position,
                            cut_at: end,
                        }),
                    ));
                }
                seg.keep_garbage(len);
                return Ok((
                    seg,
                    Some(Damage {
                        position,
                        cut_at: len,
                    }),
                ));
            }
            ScanMode::Tail => {
                return Ok((
                    seg,
                    Some(Damage {
                        position,
                        cut_at: position,
                    }),
                ))
            }
        }
    }
}

/// Loads a sealed segment from its index files; `None` when they are missing or disagree with
/// the log (then the caller rebuilds by scanning).
async fn load_sealed<D: Disk>(
    disk: &D,
    dir: &str,
    base: i64,
    file: &D::File,
    len: u64,
    next_base: i64,
) -> Result<Option<Segment<D::File>>, DiskError> {
    let Some(index_bytes) = read_small(disk, dir, base, segment::INDEX_EXT).await? else {
        return Ok(None);
    };
    let Some(time_bytes) = read_small(disk, dir, base, segment::TIME_INDEX_EXT).await? else {
        return Ok(None);
    };
    let (Some(index), Some(time_index)) = (
        OffsetIndex::decode(&index_bytes),
        TimeIndex::decode(&time_bytes),
    ) else {
        return Ok(None);
    };
    let span = next_base - base;
    if span < 0 || (span > 0 && len == 0) || time_index.is_empty() != (span == 0) {
        return Ok(None);
    }
    if let Some((rel, position)) = index.last() {
        if i64::from(rel) >= span || u64::from(position) >= len {
            return Ok(None);
        }
        let mut head = [0u8; batch_view::HEADER_BYTES];
        let n = disk.read_at(file, u64::from(position), &mut head).await?;
        let at_batch = batch_view::parse(&head[..n]).map(|h| h.base_offset);
        if at_batch != Some(base + i64::from(rel)) {
            return Ok(None);
        }
    }
    if time_index
        .last()
        .is_some_and(|(_, rel)| i64::from(rel) >= span)
    {
        return Ok(None);
    }
    Ok(Some(Segment::sealed(
        base,
        file.clone(),
        len,
        next_base,
        index,
        time_index,
    )))
}

/// Bound on side files read whole (index files are far smaller for any legal segment).
const SIDE_FILE_BYTES_MAX: u64 = 128 * 1024 * 1024;

async fn read_small<D: Disk>(
    disk: &D,
    dir: &str,
    base: i64,
    ext: &str,
) -> Result<Option<Vec<u8>>, DiskError> {
    let path = format!("{dir}/{}", segment::file_name(base, ext));
    let file = match disk.open(&path, OpenMode::Existing).await {
        Ok(f) => f,
        Err(DiskError::NotFound) => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = disk.len(&file).await?;
    if len > SIDE_FILE_BYTES_MAX {
        return Ok(None);
    }
    let mut buf = vec![0u8; len as usize];
    let n = disk.read_at(&file, 0, &mut buf).await?;
    buf.truncate(n);
    Ok(Some(buf))
}

pub(crate) async fn write_side<D: Disk>(
    disk: &D,
    dir: &str,
    base: i64,
    ext: &str,
    bytes: &[u8],
) -> Result<(), DiskError> {
    let path = format!("{dir}/{}", segment::file_name(base, ext));
    let file = disk.open(&path, OpenMode::CreateOrOpen).await?;
    disk.set_len(&file, 0).await?;
    disk.write_at(&file, 0, bytes).await?;
    disk.sync(&file).await
}

pub(crate) async fn open<D: Disk>(
    disk: D,
    dir: &str,
    config: LogConfig,
) -> Result<(PartitionLog<D>, RecoveryReport), LogError> {
    assert_config(&config);
    let interval = config.index_interval_bytes;
    let mut report = RecoveryReport::default();
    disk.create_dir_all(dir).await?;
    disk.sync_dir(dir.rsplit_once('/').map_or("", |(parent, _)| parent))
        .await?;

    let mut logs = BTreeSet::new();
    let mut side = Vec::new();
    let mut snapshots = BTreeSet::new();
    let mut cleaned = BTreeSet::new();
    for name in disk.list(dir).await? {
        if STRAY_SUFFIXES.iter().any(|s| name.ends_with(s)) {
            remove_if_present(&disk, &format!("{dir}/{name}")).await?;
            report.stray_files_removed += 1;
            continue;
        }
        match segment::parse_name(&name) {
            Some((base, segment::LOG_EXT)) => {
                logs.insert(base);
            }
            Some((base, segment::INDEX_EXT | segment::TIME_INDEX_EXT)) => side.push((base, name)),
            Some((base, segment::SNAPSHOT_EXT)) => {
                snapshots.insert(base);
            }
            Some((base, segment::CLEANED_MARKER_EXT)) => {
                cleaned.insert(base);
            }
            _ if name == checkpoint::CLEANER_CHECKPOINT => {}
            _ if name == checkpoint::LOG_START_CHECKPOINT => {}
            _ if name == checkpoint::RECOVERY_POINT_CHECKPOINT => {}
            _ if name == checkpoint::LEADER_EPOCH_CHECKPOINT => {}
            _ => tracing::warn!(dir, name, "unknown file in partition directory; left alone"),
        }
    }
    let last_log = logs.last().copied();
    let orphan_markers: Vec<i64> = cleaned
        .iter()
        .copied()
        .filter(|b| !logs.contains(b))
        .collect();
    for base in orphan_markers {
        let name = segment::file_name(base, segment::CLEANED_MARKER_EXT);
        remove_if_present(&disk, &format!("{dir}/{name}")).await?;
        cleaned.remove(&base);
        report.stray_files_removed += 1;
    }
    for (base, name) in side {
        // Orphans, and the active segment's (stale: it is always rebuilt by scanning).
        if !logs.contains(&base) || Some(base) == last_log {
            remove_if_present(&disk, &format!("{dir}/{name}")).await?;
            report.stray_files_removed += 1;
        }
    }

    let log_start_checkpoint =
        checkpoint::read(&disk, dir, checkpoint::LOG_START_CHECKPOINT).await?;
    let recovery_point = checkpoint::read(&disk, dir, checkpoint::RECOVERY_POINT_CHECKPOINT)
        .await?
        .unwrap_or(0);
    if logs.is_empty() {
        let base = log_start_checkpoint.unwrap_or(0).max(0);
        let path = format!("{dir}/{}", segment::file_name(base, segment::LOG_EXT));
        disk.open(&path, OpenMode::CreateOrOpen).await?;
        disk.sync_dir(dir).await?;
        logs.insert(base);
    }
    let bases: Vec<i64> = logs.into_iter().collect();
    let scan_from = bases
        .iter()
        .rposition(|b| *b <= recovery_point)
        .unwrap_or(0);
    let keep_garbage = config.hooks.mutant("recovery_truncate_short");

    let mut segments: BTreeMap<i64, Segment<D::File>> = BTreeMap::new();
    let mut to_sync = Vec::new();
    let mut cut = false;
    for (i, &base) in bases.iter().enumerate() {
        let path = format!("{dir}/{}", segment::file_name(base, segment::LOG_EXT));
        if cut {
            remove_segment_files(&disk, dir, base).await?;
            report.segments_deleted += 1;
            continue;
        }
        let file = disk.open(&path, OpenMode::Existing).await?;
        let len = disk.len(&file).await?;
        let is_last = i + 1 == bases.len();
        if i < scan_from {
            let next_base = bases[i + 1];
            if let Some(mut seg) = load_sealed(&disk, dir, base, &file, len, next_base).await? {
                seg.cleaned = cleaned.contains(&base);
                segments.insert(base, seg);
                continue;
            }
            report.segments_scanned += 1;
            let seg_cleaned = cleaned.contains(&base);
            let (mut seg, _) = scan(
                &disk,
                &file,
                base,
                len,
                interval,
                ScanMode::Sealed,
                false,
                seg_cleaned,
            )
            .await?;
            if seg.cleaned && seg.next_offset <= next_base {
                // The cleaner may have removed the segment's last offsets.
                seg.next_offset = next_base;
            }
            if seg.next_offset != next_base {
                tracing::error!(
                    dir,
                    base,
                    next_base,
                    found = seg.next_offset,
                    "sealed segment ends before the next one starts"
                );
                if seg.corrupt.is_empty() {
                    seg.corrupt
                        .push(seg.size_bytes..seg.size_bytes.max(len) + 1);
                }
                seg.next_offset = next_base;
            }
            seal_and_persist(&disk, dir, &mut seg, &mut report).await?;
            segments.insert(base, seg);
            continue;
        }
        report.segments_scanned += 1;
        let (mut seg, damage) = scan(
            &disk,
            &file,
            base,
            len,
            interval,
            ScanMode::Tail,
            keep_garbage,
            cleaned.contains(&base),
        )
        .await?;
        if seg.cleaned && damage.is_none() && !is_last && seg.next_offset <= bases[i + 1] {
            seg.next_offset = bases[i + 1];
        }
        let expected_base = segments.values().next_back().map(|s| s.next_offset);
        if expected_base.is_some_and(|e| e != base) {
            // A gap: the previous segment lost its tail, so this one is unreachable.
            cut = true;
            remove_segment_files(&disk, dir, base).await?;
            report.segments_deleted += 1;
            continue;
        }
        if let Some(d) = damage {
            tracing::warn!(
                dir,
                base,
                position = d.position,
                cut_at = d.cut_at,
                len,
                "torn or corrupt tail; truncating"
            );
            if d.cut_at < len {
                disk.set_len(&file, d.cut_at).await?;
                report.bytes_truncated += len - d.cut_at;
            }
            cut = !is_last;
        }
        to_sync.push(file.clone());
        if !is_last && !cut {
            seal_and_persist(&disk, dir, &mut seg, &mut report).await?;
        }
        segments.insert(base, seg);
    }
    // A cut sealed segment is now the active one: its index files are stale.
    let active_base = *segments.keys().next_back().expect("at least one segment");
    for ext in [segment::INDEX_EXT, segment::TIME_INDEX_EXT] {
        remove_if_present(
            &disk,
            &format!("{dir}/{}", segment::file_name(active_base, ext)),
        )
        .await?;
    }
    for file in &to_sync {
        disk.sync(file).await?;
    }
    disk.sync_dir(dir).await?;

    for seg in segments.values() {
        for range in &seg.corrupt {
            tracing::error!(
                dir,
                segment = seg.base_offset,
                start = range.start,
                end = range.end,
                "CRC failure inside a durable segment; refusing to serve this range"
            );
            report.corrupt_ranges.push(CorruptRange {
                segment: seg.base_offset,
                positions: range.clone(),
            });
        }
    }
    let first_base = *segments.keys().next().expect("at least one segment");
    let log_end_offset = segments.values().next_back().expect("segment").next_offset;
    let log_start_offset = log_start_checkpoint
        .unwrap_or(first_base)
        .max(first_base)
        .min(log_end_offset);

    let window = producer_window(&config);
    let producers = rebuild_producers(
        &disk,
        dir,
        &segments,
        &mut snapshots,
        log_end_offset,
        window,
    )
    .await?;
    let tail_base = bases.get(scan_from).copied().unwrap_or(first_base);
    let bounds = LogBounds {
        log_start_offset,
        log_end_offset,
    };
    let not_truncated = epoch_cache_not_truncated(&config);
    let (epochs, rewrite) = recover_epochs(
        &disk,
        dir,
        &segments,
        bounds,
        tail_base,
        not_truncated,
        &mut report,
    )
    .await?;
    if rewrite {
        // Before the recovery point moves: epochs below it must already be in the checkpoint.
        let text = epochs.encode_checkpoint();
        checkpoint::write_bytes(
            &disk,
            dir,
            checkpoint::LEADER_EPOCH_CHECKPOINT,
            text.as_bytes(),
        )
        .await?;
    }
    report.epoch_entries = epochs.entries().len();
    checkpoint::write(
        &disk,
        dir,
        checkpoint::RECOVERY_POINT_CHECKPOINT,
        log_end_offset,
    )
    .await?;

    report.segments = segments.len();
    report.log_start_offset = log_start_offset;
    report.log_end_offset = log_end_offset;
    let log = PartitionLog {
        disk,
        dir: dir.to_string(),
        config,
        segments,
        log_start_offset,
        log_end_offset,
        durable_end_offset: log_end_offset,
        producers,
        snapshots,
        pending_sync: BTreeMap::new(),
        dir_sync_up_to: None,
        checkpoint_up_to: None,
        rolls: 0,
        generation: 0,
        failed: false,
        epochs,
        epochs_dirty: false,
        epoch_checkpoint_writes: u64::from(rewrite),
    };
    log.assert_invariants();
    tracing::info!(dir, ?report, "partition log recovered");
    Ok((log, report))
}

async fn seal_and_persist<D: Disk>(
    disk: &D,
    dir: &str,
    seg: &mut Segment<D::File>,
    report: &mut RecoveryReport,
) -> Result<(), DiskError> {
    seg.seal_time_index();
    write_side(
        disk,
        dir,
        seg.base_offset,
        segment::INDEX_EXT,
        &seg.index.encode(),
    )
    .await?;
    write_side(
        disk,
        dir,
        seg.base_offset,
        segment::TIME_INDEX_EXT,
        &seg.time_index.encode(),
    )
    .await?;
    report.indexes_rebuilt += 1;
    Ok(())
}

/// Removes the data files of the segment at `base` (those present).
async fn remove_segment_files<D: Disk>(disk: &D, dir: &str, base: i64) -> Result<(), DiskError> {
    for ext in segment::SEGMENT_FILE_EXTS {
        remove_if_present(disk, &format!("{dir}/{}", segment::file_name(base, ext))).await?;
    }
    Ok(())
}

/// Loads the newest usable producer snapshot and replays the batch headers after it.
async fn rebuild_producers<D: Disk>(
    disk: &D,
    dir: &str,
    segments: &BTreeMap<i64, Segment<D::File>>,
    snapshots: &mut BTreeSet<i64>,
    log_end_offset: i64,
    window: usize,
) -> Result<ProducerStateTable, DiskError> {
    let stale: Vec<i64> = snapshots
        .iter()
        .copied()
        .filter(|s| *s > log_end_offset || !segments.contains_key(s))
        .collect();
    for s in stale {
        remove_if_present(
            disk,
            &format!("{dir}/{}", segment::file_name(s, segment::SNAPSHOT_EXT)),
        )
        .await?;
        snapshots.remove(&s);
    }
    let mut table = ProducerStateTable::new(window);
    let mut replay_from = i64::MIN;
    for &s in snapshots.iter().rev() {
        let bytes = read_small(disk, dir, s, segment::SNAPSHOT_EXT).await?;
        if let Some(loaded) = bytes.and_then(|b| ProducerStateTable::decode(&b, window)) {
            table = loaded;
            replay_from = s;
            break;
        }
        tracing::warn!(dir, snapshot = s, "ignoring damaged producer snapshot");
    }
    for seg in segments.range(replay_from..).map(|(_, s)| s) {
        let mut cursor = BatchCursor::new(disk, &seg.file, seg.size_bytes, SCAN_CHUNK_BYTES);
        let mut position = 0;
        // CRC-verified (the cursor re-reads on a mismatch): the producer id, epoch and sequence
        // are inside the CRC, and a transient flip there would corrupt the idempotence state
        // (simulator: single_corruption 193684255838412 read sequence 1 as 32769).
        while let Scanned::Batch {
            hdr, crc_ok: true, ..
        } = cursor.next(position, true).await?
        {
            table.update(&hdr.producer_batch(), hdr.base_offset, hdr.max_timestamp);
            position += hdr.total_bytes as u64;
        }
    }
    Ok(table)
}

#[derive(Clone, Copy, Debug)]
struct LogBounds {
    log_start_offset: i64,
    log_end_offset: i64,
}

/// Recovers the leader-epoch cache: the checkpoint, cut to the log's bounds, extended by the
/// batches after the recovery point and checked entry by entry against the batches; when it is
/// missing, damaged or contradicted, rebuilt from every batch header. Returns the cache and
/// whether the checkpoint must be rewritten.
async fn recover_epochs<D: Disk>(
    disk: &D,
    dir: &str,
    segments: &BTreeMap<i64, Segment<D::File>>,
    bounds: LogBounds,
    tail_base: i64,
    not_truncated: bool,
    report: &mut RecoveryReport,
) -> Result<(LeaderEpochCache, bool), DiskError> {
    let name = checkpoint::LEADER_EPOCH_CHECKPOINT;
    let stored = checkpoint::read_stable(disk, dir, name, CHECKPOINT_BYTES_MAX).await?;
    let present = stored.is_some();
    let decoded = stored.and_then(|bytes| match LeaderEpochCache::decode_checkpoint(&bytes) {
        Ok(cache) => Some(cache),
        Err(error) => {
            tracing::warn!(
                dir,
                ?error,
                "damaged leader-epoch checkpoint; rebuilding it"
            );
            None
        }
    });
    let needs_write = |cache: &LeaderEpochCache| match &decoded {
        Some(old) => old != cache,
        None => present || !cache.entries().is_empty(),
    };
    if let Some(mut cache) = decoded.clone() {
        // Never trust an entry past the recovered log end (written before its batch, which the
        // crash then lost), nor one below the log start.
        if !not_truncated {
            cache.truncate_from_end(bounds.log_end_offset);
        }
        cache.truncate_from_start(bounds.log_start_offset);
        let tail = segments.range(tail_base..).map(|(_, s)| s);
        let extended = note_scanned_epochs(disk, tail, &mut cache, bounds, report).await?;
        if extended && entries_match_log(disk, segments, &cache, bounds).await? {
            let rewrite = needs_write(&cache);
            return Ok((cache, rewrite));
        }
        tracing::warn!(
            dir,
            "leader-epoch checkpoint disagrees with the log; rebuilding it"
        );
    }
    if present || segments.values().any(|s| !s.is_empty()) {
        report.epoch_cache_rebuilt = true;
    }
    let mut cache = LeaderEpochCache::new();
    // The leader epoch lies outside the batch CRC: a transient flip on a read can make the
    // scan disagree with itself or with the checks, so both are repeated a few times.
    for attempt in 0..=REREADS_ON_MISMATCH {
        cache = LeaderEpochCache::new();
        let all = segments.values();
        let scanned = note_scanned_epochs(disk, all, &mut cache, bounds, report).await?;
        if scanned && entries_match_log(disk, segments, &cache, bounds).await? {
            break;
        }
        tracing::warn!(
            dir,
            attempt,
            "leader epochs read from the log disagree; reading again"
        );
        if attempt == REREADS_ON_MISMATCH {
            let entries = cache.entries();
            tracing::error!(
                dir,
                ?entries,
                "leader epochs in the log stay inconsistent (a rotted \
                batch header?); keeping the best reading"
            );
        }
    }
    let rewrite = needs_write(&cache);
    Ok((cache, rewrite))
}

/// Walks whole batches (CRC-verified by the cursor) and records each one's epoch in `cache`:
/// an epoch the cache already gives the batch's offset is consistent; a newer one is assigned
/// once a later batch confirms it (its epoch is not older), or at the end of the log. The
/// leader epoch lies outside the CRC, so one rotted header must not poison the rest of the
/// scan: a lone batch whose epoch the batches around it contradict is skipped. False when any
/// batch was contradicted.
async fn note_scanned_epochs<'s, D: Disk>(
    disk: &D,
    segments: impl Iterator<Item = &'s Segment<D::File>>,
    cache: &mut LeaderEpochCache,
    bounds: LogBounds,
    report: &mut RecoveryReport,
) -> Result<bool, DiskError>
where
    D::File: 's,
{
    let mut consistent = true;
    let mut pending: Option<(i32, i64)> = None;
    for seg in segments {
        let mut cursor = BatchCursor::new(disk, &seg.file, seg.size_bytes, SCAN_CHUNK_BYTES);
        let mut position = 0;
        while let Scanned::Batch { hdr, crc_ok, .. } = cursor.next(position, true).await? {
            position += hdr.total_bytes as u64;
            report.epoch_batches_scanned += 1;
            let live = hdr.last_offset() >= bounds.log_start_offset
                && hdr.base_offset < bounds.log_end_offset;
            if !crc_ok || !live || hdr.leader_epoch < 0 {
                continue;
            }
            let epoch = hdr.leader_epoch;
            if let Some((new_epoch, at)) = pending {
                if epoch >= new_epoch {
                    consistent &= cache.assign(new_epoch, at).is_ok();
                    pending = None;
                } else if Some(epoch) == cache.latest_epoch() {
                    // Back to the epoch before: the unconfirmed one was a lone odd batch.
                    consistent = false;
                    pending = None;
                } else {
                    // This batch is the odd one: skip it, the pending epoch still stands.
                    consistent = false;
                    continue;
                }
            }
            let at = hdr.base_offset.max(bounds.log_start_offset);
            if cache.epoch_for_offset(at) == Some(epoch) {
                continue;
            }
            if cache.latest_epoch().is_none_or(|latest| epoch > latest) {
                pending = Some((epoch, at));
            } else {
                consistent = false;
            }
        }
    }
    if let Some((new_epoch, at)) = pending {
        consistent &= cache.assign(new_epoch, at).is_ok();
    }
    Ok(consistent)
}

/// The batch holding `offset` (the first whose last offset is at or after it) and the batch
/// before it, read from the segment index position onwards (headers only).
async fn batch_around<D: Disk>(
    disk: &D,
    segments: &BTreeMap<i64, Segment<D::File>>,
    offset: i64,
) -> Result<(Option<batch_view::Hdr>, Option<batch_view::Hdr>, bool), DiskError> {
    let Some((_, seg)) = segments.range(..=offset).next_back() else {
        return Ok((None, None, false));
    };
    let (mut prev, found) = walk_to(disk, seg, offset).await?;
    if prev.is_none() {
        if let Some((_, before)) = segments.range(..seg.base_offset).next_back() {
            prev = walk_to(disk, before, i64::MAX).await?.0;
        }
    }
    Ok((prev, found, seg.cleaned))
}

async fn walk_to<D: Disk>(
    disk: &D,
    seg: &Segment<D::File>,
    offset: i64,
) -> Result<(Option<batch_view::Hdr>, Option<batch_view::Hdr>), DiskError> {
    let mut cursor = BatchCursor::new(disk, &seg.file, seg.size_bytes, SEEK_CHUNK_BYTES);
    let mut position = seg.seek_position(offset.saturating_sub(1).max(seg.base_offset));
    let mut prev = None;
    loop {
        match cursor.next(position, false).await? {
            Scanned::Batch { hdr, .. } if hdr.last_offset() < offset => {
                position += hdr.total_bytes as u64;
                prev = Some(hdr);
            }
            Scanned::Batch { hdr, .. } => return Ok((prev, Some(hdr))),
            Scanned::End | Scanned::Bad { .. } => return Ok((prev, None)),
        }
    }
}

/// Checks every entry below the log end against the batches: the batch holding its start
/// offset carries its epoch (and starts there, for all but the first entry), and the batch
/// before carries the previous entry's epoch. Catches stale, rotted or mis-ordered entries.
async fn entries_match_log<D: Disk>(
    disk: &D,
    segments: &BTreeMap<i64, Segment<D::File>>,
    cache: &LeaderEpochCache,
    bounds: LogBounds,
) -> Result<bool, DiskError> {
    let entries = cache.entries();
    for (i, entry) in entries.iter().enumerate() {
        if entry.start_offset >= bounds.log_end_offset {
            continue; // Only the planted bug keeps these.
        }
        let (prev, found, cleaned) = batch_around(disk, segments, entry.start_offset).await?;
        let Some(found) = found else {
            return Ok(false);
        };
        if found.leader_epoch != entry.epoch {
            return Ok(false);
        }
        // Entries start at a batch's base offset; the first may start at the log start
        // instead, inside a batch (DeleteRecords).
        let expected_start = if i == 0 {
            found.base_offset.max(bounds.log_start_offset)
        } else {
            found.base_offset
        };
        if !cleaned && entry.start_offset != expected_start {
            return Ok(false);
        }
        let Some(prev) = prev.filter(|p| p.last_offset() >= bounds.log_start_offset) else {
            continue;
        };
        let ok = match (i.checked_sub(1).map(|j| entries[j].epoch), cleaned) {
            (None, _) => prev.leader_epoch < 0,
            (Some(before), false) => prev.leader_epoch == before,
            (Some(_), true) => prev.leader_epoch < entry.epoch,
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}
