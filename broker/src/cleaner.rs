//! The background log cleaner of a node: every `CLEANER_BACKOFF_MS` it picks the dirtiest
//! compacted partition whose dirty ratio reaches `min.cleanable.dirty.ratio` (or whose oldest
//! dirty segment is older than `max.compaction.lag.ms`), runs one bounded cleaning pass on it
//! (`samsa_storage::log::cleaner`), logs bytes read / written and the pass time, and yields.
//! Never spawns threads or blocking work (it runs unchanged under madsim), never reads the clock
//! except through `Clock`, and never cleans a partition whose policy lacks `compact`.

use std::sync::Arc;
use std::time::Duration;

use samsa_net::watch;
use samsa_net::Clock;
use samsa_storage::log::cleaner::{CleanOptions, CleanStats};
use samsa_storage::Disk;
use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::partition::Partition;

/// Pause between cleaner passes when there was nothing to clean (Kafka's
/// `log.cleaner.backoff.ms`).
pub const CLEANER_BACKOFF_MS: u64 = 15_000;
/// Dirty bytes one pass maps (the rest waits for the next pass).
pub const CLEANER_PASS_DIRTY_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Backoff when the `broker.cleaner.clean_now` buggify site fires (simulation only).
pub const CLEANER_BUGGIFY_BACKOFF_MS: u64 = 200;
/// Most passes run back to back before the cleaner sleeps again.
pub const CLEANER_PASSES_PER_WAKE_MAX: usize = 16;

/// The cleanable partition to clean next: the largest dirty ratio at or above the topic's
/// threshold, or any with a dirty segment older than `max.compaction.lag.ms` (ties: first in
/// partition order, which is deterministic).
pub async fn pick<D: Disk, C: Clock>(broker: &Broker<D, C>) -> Option<Arc<Partition<D>>> {
    let now = broker.clock.now_ms();
    let mut best: Option<(f64, Arc<Partition<D>>)> = None;
    for p in broker.all_partitions() {
        let config = p.config();
        if !config.compact || p.is_failed() {
            continue;
        }
        let info = match p.dirty_info(now).await {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(dir = %p.dir, "cleaner cannot inspect partition: {e}");
                continue;
            }
        };
        if info.dirty_bytes == 0 {
            continue;
        }
        let ratio = info.dirty_ratio();
        let overdue = info.oldest_dirty_timestamp >= 0
            && now.saturating_sub(info.oldest_dirty_timestamp) > config.max_compaction_lag_ms;
        let eligible = ratio >= config.min_cleanable_dirty_ratio() || overdue;
        let score = if overdue { 2.0 } else { ratio };
        if eligible && best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, p));
        }
        tokio::task::yield_now().await;
    }
    best.map(|(_, p)| p)
}

/// One pass on the dirtiest eligible partition; `None` when nothing is eligible.
pub async fn run_once<D: Disk, C: Clock>(broker: &Broker<D, C>) -> Option<CleanStats> {
    let p = pick(broker).await?;
    let config = p.config();
    let started = broker.clock.now_ms();
    let options = CleanOptions {
        now_ms: started,
        delete_retention_ms: config.delete_retention_ms,
        min_compaction_lag_ms: config.min_compaction_lag_ms,
        dirty_bytes_max: CLEANER_PASS_DIRTY_BYTES_MAX,
        stop_after_step: None,
    };
    match p.clean(&options).await {
        Ok(stats) => {
            let elapsed_ms = broker.clock.now_ms().saturating_sub(started);
            tracing::info!(
                dir = %p.dir,
                segments = stats.segments_cleaned,
                bytes_read = stats.bytes_read,
                bytes_written = stats.bytes_written,
                records_removed = stats.records_removed,
                first_dirty_offset = stats.first_dirty_offset,
                elapsed_ms,
                "cleaner pass"
            );
            Some(stats)
        }
        Err(e) => {
            tracing::warn!(dir = %p.dir, "cleaner pass failed: {e}");
            None
        }
    }
}

/// The cleaner task; ends when `stop` turns true.
pub fn spawn<D: Disk, C: Clock>(
    broker: Arc<Broker<D, C>>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            // Buggify: clean (almost) at once, so the simulator crashes and faults mid-clean.
            let every =
                Duration::from_millis(if broker.hooks.buggify("broker.cleaner.clean_now") {
                    CLEANER_BUGGIFY_BACKOFF_MS
                } else {
                    CLEANER_BACKOFF_MS
                });
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                () = tokio::time::sleep(every) => {}
            }
            for _ in 0..CLEANER_PASSES_PER_WAKE_MAX {
                if *stop.borrow() {
                    break;
                }
                let cleaned = run_once(&broker).await;
                // Produce and fetch get the partition back between passes.
                tokio::task::yield_now().await;
                if cleaned.is_none_or(|s| s.segments_cleaned == 0) {
                    break;
                }
            }
        }
    })
}
