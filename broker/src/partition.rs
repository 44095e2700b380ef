//! `Partition`: one open partition on this node: its log (samsa-storage `PartitionLog`), its
//! group-commit core and the requests waiting on it. Executes the core's `Sync` effects (a flush
//! plan run without holding the log, so appends go on meanwhile) and delivers its `Reply`
//! effects; wakes Fetch long polls when the high watermark advances.
//! Never acknowledges a produce after a failed sync, and never serves bytes that failed a CRC.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use samsa_cluster::replica::LeaderEvent;
use samsa_net::error::code;
use samsa_net::hooks::{LogTruncation, Observation};
use samsa_net::Hooks;
use samsa_storage::log::cleaner::{CleanOptions, CleanStats, DirtyInfo};
use samsa_storage::log::epoch_cache::LeaderEpochCache;
use samsa_storage::{execute_flush, Disk, LogConfig, LogError, PartitionLog, TimestampType};
use tokio::sync::{oneshot, Notify};
use uuid::Uuid;

use crate::group_commit::{Effect, Event, GroupCommit, Outcome, WaiterId};
use crate::replication::{self, LeaderSlot};
use crate::topic_config::{FlushPolicy, TopicConfig};

/// The leader epoch a partition starts with: a single node has only ever had epoch 0; in cluster
/// mode `become_leader` raises it to the epoch the controller gave this node.
pub const LEADER_EPOCH: i32 = 0;
/// Bytes between two offset-index entries.
pub const INDEX_INTERVAL_BYTES: u64 = 4096;

/// What a successful append reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    /// Next offset after the appended batches.
    pub end_offset: i64,
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

/// Longest directory name created (the common file-system limit on one path component).
pub const DIR_NAME_BYTES_MAX: usize = 255;

/// `name-index.topicid`: Kafka's `name-index` plus the topic id, so a topic deleted and created
/// again under the same name never meets files left by the old one. Names too long for one path
/// component (topic names may have 249 bytes) use `topicid-index` alone.
pub fn partition_dir(topic: &str, index: i32, topic_id: Uuid) -> String {
    let readable = format!("{topic}-{index}.{}", topic_id.simple());
    if readable.len() <= DIR_NAME_BYTES_MAX {
        readable
    } else {
        format!("{}-{index}", topic_id.simple())
    }
}

/// The topic id (32 hex digits) in a directory name made by `partition_dir`, if it is one.
pub fn dir_topic_id(name: &str) -> Option<String> {
    let hex32 = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some((head, id)) = name.rsplit_once('.') {
        if hex32(id) && head.rsplit_once('-').is_some_and(|(_, i)| digits(i)) {
            return Some(id.to_string());
        }
    }
    let (id, index) = name.rsplit_once('-')?;
    (hex32(id) && digits(index)).then(|| id.to_string())
}

/// How long the `broker.flush.delay` buggify site holds a group commit back.
const BUGGIFY_FLUSH_DELAY_MS: u64 = 20;

fn log_config(config: &TopicConfig, hooks: &Hooks) -> LogConfig {
    LogConfig {
        segment_bytes: u64::try_from(config.segment_bytes).unwrap_or(1 << 30),
        segment_ms: config.segment_ms,
        retention_ms: config.retention_ms,
        retention_bytes: config.retention_bytes,
        index_interval_bytes: INDEX_INTERVAL_BYTES,
        max_message_bytes: usize::try_from(config.max_message_bytes).unwrap_or(0),
        message_timestamp_type: if config.log_append_time {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        },
        hooks: hooks.clone(),
    }
}

struct Commit {
    core: GroupCommit,
    next_waiter: WaiterId,
    waiters: BTreeMap<WaiterId, oneshot::Sender<Outcome>>,
    /// Clock reading of the last interval tick that asked for a sync (policy `interval`).
    last_interval_sync_ms: i64,
}

pub struct Partition<D: Disk> {
    pub topic: String,
    pub topic_id: Uuid,
    pub index: i32,
    /// Directory of the partition's files under the data dir.
    pub dir: String,
    disk: D,
    hooks: Hooks,
    config: Mutex<TopicConfig>,
    log: tokio::sync::Mutex<PartitionLog<D>>,
    commit: Mutex<Commit>,
    data_arrived: Arc<Notify>,
    /// The leader epoch written into produced batches (never goes down).
    leader_epoch: AtomicI32,
    /// Cluster mode: the replicated high watermark (the leader core's, or the leader's as a
    /// follower last heard it, capped by the local log end). `NOT_REPLICATED` on a single node.
    replication_hw: AtomicI64,
    /// Cluster mode: the partition-leader core while this node leads the partition.
    leader: Mutex<Option<LeaderSlot>>,
}

/// `replication_hw` of a partition outside cluster mode: only the local flush policy counts.
pub const NOT_REPLICATED: i64 = i64::MAX;

fn slot_log_end(slot: &LeaderSlot) -> i64 {
    slot.fed_log_end()
}

impl<D: Disk> Partition<D> {
    /// Opens and recovers the partition's log; anything recovered but not yet synced is synced
    /// before the partition serves, so the recovered end is the durable end.
    pub async fn open(
        disk: D,
        hooks: Hooks,
        topic: &str,
        topic_id: Uuid,
        index: i32,
        config: TopicConfig,
        data_arrived: Arc<Notify>,
    ) -> Result<Partition<D>, String> {
        let dir = partition_dir(topic, index, topic_id);
        let (mut log, report) = PartitionLog::open(disk.clone(), &dir, log_config(&config, &hooks))
            .await
            .map_err(|e| format!("{dir}: {e}"))?;
        if !report.corrupt_ranges.is_empty() {
            tracing::error!(
                dir,
                ranges = ?report.corrupt_ranges,
                "corrupt ranges in sealed segments: they will not be served"
            );
        }
        if report.bytes_truncated > 0 {
            tracing::warn!(
                dir,
                bytes = report.bytes_truncated,
                "truncated a torn log tail"
            );
        }
        let durable_end = log.flush().await.map_err(|e| format!("{dir}: {e}"))?;
        let eager = config.flush_policy == FlushPolicy::Fsync;
        let epoch = log.latest_epoch().unwrap_or(LEADER_EPOCH).max(LEADER_EPOCH);
        Ok(Partition {
            topic: topic.to_string(),
            topic_id,
            index,
            dir,
            disk,
            hooks,
            config: Mutex::new(config),
            log: tokio::sync::Mutex::new(log),
            commit: Mutex::new(Commit {
                core: GroupCommit::new(eager, durable_end),
                next_waiter: 0,
                waiters: BTreeMap::new(),
                last_interval_sync_ms: i64::MIN,
            }),
            data_arrived,
            leader_epoch: AtomicI32::new(epoch),
            replication_hw: AtomicI64::new(NOT_REPLICATED),
            leader: Mutex::new(None),
        })
    }

    /// The leader epoch produced batches are written with.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::SeqCst)
    }

    /// Cluster mode: this node leads the partition in `epoch`. Records the epoch at the log end
    /// (durably, before any batch of it) and writes later produced batches with it. An epoch at
    /// or below the current one changes nothing.
    pub async fn become_leader(&self, epoch: i32) -> Result<(), i16> {
        let mut log = self.log.lock().await;
        if epoch <= self.leader_epoch() {
            return Ok(());
        }
        log.assign_leader_epoch(epoch)
            .await
            .map_err(|e| e.error_code())?;
        self.leader_epoch.store(epoch, Ordering::SeqCst);
        Ok(())
    }

    fn lock_commit(&self) -> std::sync::MutexGuard<'_, Commit> {
        self.commit.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> TopicConfig {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Applies new topic configs to the live partition.
    pub async fn set_config(&self, config: TopicConfig) {
        let eager = config.flush_policy == FlushPolicy::Fsync;
        self.log
            .lock()
            .await
            .set_config(log_config(&config, &self.hooks));
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
        self.lock_commit().core.set_eager(eager);
    }

    /// The offset consumers may read up to. Under `fsync` only synced data is exposed, so a
    /// consumer never sees a record that a crash could take back.
    pub fn high_watermark(&self) -> i64 {
        let fsync = self.config().flush_policy == FlushPolicy::Fsync;
        let c = self.lock_commit();
        let local = if fsync {
            c.core.durable_end()
        } else {
            c.core.appended_end()
        };
        local.min(self.replication_hw.load(Ordering::SeqCst))
    }

    /// Cluster mode: the replicated high watermark (see `replication_hw`). Wakes long polls
    /// when it moves.
    pub fn set_replication_hw(&self, hw: i64) {
        let before = self.replication_hw.swap(hw, Ordering::SeqCst);
        if before != hw {
            self.data_arrived.notify_waiters();
        }
    }

    /// The replicated high watermark (`NOT_REPLICATED` outside cluster mode).
    pub fn replication_hw(&self) -> i64 {
        self.replication_hw.load(Ordering::SeqCst)
    }

    fn lock_leader(&self) -> std::sync::MutexGuard<'_, Option<LeaderSlot>> {
        self.leader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cluster mode: installs the leader core (resigning a previous one, whose waiters fail
    /// with NOT_LEADER_OR_FOLLOWER) and applies the high watermark it starts with.
    pub fn install_leader(&self, slot: LeaderSlot) -> Vec<samsa_cluster::replica::LeaderEffect> {
        let mut slot = slot;
        let fed = slot_log_end(&slot);
        let (outcome, _) = replication::slot_appended(&mut slot, fed, false);
        replication::observe_hw(&self.hooks, &slot, self.index, &outcome);
        let hw = slot.core.high_watermark();
        let old = self.lock_leader().replace(slot);
        if let Some(old) = old {
            replication::resign_slot(old);
        }
        self.set_replication_hw(outcome.high_watermark.unwrap_or(hw));
        outcome.alter
    }

    /// Cluster mode: this node no longer leads the partition.
    pub fn resign_leader(&self) {
        let old = self.lock_leader().take();
        if let Some(old) = old {
            replication::resign_slot(old);
        }
    }

    /// The leader epoch of the installed leader core, if this node leads.
    pub fn leader_slot_epoch(&self) -> Option<i32> {
        self.lock_leader().as_ref().map(|s| s.leader_epoch())
    }

    /// The partition epoch the leader core has seen committed.
    pub fn leader_partition_epoch(&self) -> Option<i32> {
        self.lock_leader()
            .as_ref()
            .map(|s| s.core.partition_epoch())
    }

    /// The topic id the leader core was installed for.
    pub fn leader_topic_id(&self) -> Option<u128> {
        self.lock_leader().as_ref().map(|s| s.topic_id)
    }

    /// acks=all admission (`check_acks_all` of the core); NOT_LEADER_OR_FOLLOWER without one.
    pub fn check_acks_all(&self) -> Result<(), i16> {
        match self.lock_leader().as_ref() {
            Some(s) => s.core.check_acks_all(),
            None => Err(code::NOT_LEADER_OR_FOLLOWER),
        }
    }

    /// Diagnostics: the leader core's state in one line (`None` when this node does not lead).
    pub fn leader_summary(&self) -> Option<String> {
        self.lock_leader().as_ref().map(|s| {
            let followers: Vec<(i32, i64)> = s.core.counted_log_ends();
            format!(
                "epoch {} leo {} hw {} isr {:?} counted {:?} alter_in_flight {}",
                s.core.leader_epoch(),
                s.core.log_end_offset(),
                s.core.high_watermark(),
                s.core.isr(),
                followers,
                s.core.alter_partition_in_flight()
            )
        })
    }

    /// The ISR the leader core holds (empty when this node does not lead).
    pub fn leader_isr(&self) -> Vec<i32> {
        self.lock_leader()
            .as_ref()
            .map(|s| s.core.isr().to_vec())
            .unwrap_or_default()
    }

    /// Steps the leader core (if any), applies its high watermark and answers its waiters;
    /// returns the AlterPartition effects for the caller to send.
    pub fn leader_step(&self, event: LeaderEvent) -> Vec<samsa_cluster::replica::LeaderEffect> {
        let outcome = {
            let mut guard = self.lock_leader();
            let Some(slot) = guard.as_mut() else {
                return Vec::new();
            };
            let outcome = replication::step_slot(slot, event);
            replication::observe_hw(&self.hooks, slot, self.index, &outcome);
            outcome
        };
        if let Some(hw) = outcome.high_watermark {
            self.set_replication_hw(hw);
        }
        outcome.alter
    }

    /// Feeds a local append that ended at `end_offset` to the leader core; with `acks_all`,
    /// returns the waiter answered once the high watermark covers it.
    pub fn leader_appended(
        &self,
        end_offset: i64,
        acks_all: bool,
    ) -> (
        Vec<samsa_cluster::replica::LeaderEffect>,
        Option<replication::AcksAllWait>,
    ) {
        let (outcome, waiter) = {
            let mut guard = self.lock_leader();
            let Some(slot) = guard.as_mut() else {
                return (Vec::new(), None);
            };
            let (outcome, waiter) = replication::slot_appended(slot, end_offset, acks_all);
            replication::observe_hw(&self.hooks, slot, self.index, &outcome);
            (outcome, waiter)
        };
        if let Some(hw) = outcome.high_watermark {
            self.set_replication_hw(hw);
        }
        (outcome.alter, waiter)
    }

    /// A copy of the log's leader-epoch cache.
    pub async fn epoch_cache(&self) -> LeaderEpochCache {
        self.log.lock().await.epoch_cache().clone()
    }

    /// OffsetForLeaderEpoch answered as the leader in `leader_epoch` (KIP-279/320).
    pub async fn offset_for_leader_epoch(
        &self,
        leader_epoch: i32,
        current_leader_epoch: Option<i32>,
        requested: i32,
    ) -> Result<(i32, i64), i16> {
        let log = self.log.lock().await;
        let answer = samsa_cluster::replica::offset_for_leader_epoch(
            log.epoch_cache(),
            log.log_end_offset(),
            leader_epoch,
            current_leader_epoch,
            requested,
            Default::default(),
        );
        // Planted bug (simulation builds only): an epoch this leader never had, newer than the
        // largest one it has below it, is answered as if it were its own latest: with its log
        // end, so a follower keeps the divergent tail it wrote in that epoch.
        match answer {
            Ok((epoch, _))
                if epoch != requested
                    && requested != samsa_storage::log::epoch_cache::UNDEFINED_EPOCH
                    && self.hooks.mutant("ofle_newer_epoch") =>
            {
                Ok((requested, log.log_end_offset()))
            }
            answer => answer,
        }
    }

    /// Follower truncation: removes every batch at or after `offset` (and the epochs past it).
    /// The replicated high watermark never stays above the new log end.
    /// The group-commit core learns the cut under the log lock, before any later append.
    pub async fn truncate_to(self: &Arc<Self>, offset: i64) -> Result<i64, LogError> {
        let mut effects = Vec::new();
        let end = {
            let mut log = self.log.lock().await;
            let before = log.log_end_offset();
            let known_hw = self.replication_hw();
            let end = log.truncate_to(offset).await?;
            // The simulator's `epoch_cache_truncated` check: the cache right after the cut.
            self.hooks.observe(|| {
                Observation::Truncation(LogTruncation {
                    dir: self.dir.clone(),
                    partition: self.index,
                    requested: offset,
                    log_end_before: before,
                    log_end_after: end,
                    high_watermark: if known_hw == NOT_REPLICATED {
                        -1
                    } else {
                        known_hw
                    },
                    epochs: log
                        .epoch_entries()
                        .iter()
                        .map(|e| (e.epoch, e.start_offset))
                        .collect(),
                })
            });
            self.lock_commit()
                .core
                .step(Event::Truncated { end_offset: end }, &mut effects);
            end
        };
        self.run_effects(effects);
        let hw = self.replication_hw();
        if hw != NOT_REPLICATED && hw > end {
            self.set_replication_hw(end);
        }
        Ok(end)
    }

    /// A follower whose log ends below the leader's log start: the whole log is replaced by an
    /// empty one that starts at `offset` (see `PartitionLog::truncate_fully_and_start_at`).
    pub async fn truncate_fully_and_start_at(
        self: &Arc<Self>,
        offset: i64,
    ) -> Result<(), LogError> {
        let mut effects = Vec::new();
        {
            let mut log = self.log.lock().await;
            log.truncate_fully_and_start_at(offset).await?;
            self.lock_commit()
                .core
                .step(Event::Truncated { end_offset: offset }, &mut effects);
        }
        self.run_effects(effects);
        let hw = self.replication_hw();
        if hw != NOT_REPLICATED && hw != offset {
            self.set_replication_hw(offset);
        }
        Ok(())
    }

    /// Whole stored batches from `offset` up to the log end (not the high watermark): what a
    /// leader serves its followers.
    pub async fn read_replica(&self, offset: i64, max_bytes: usize) -> Result<Bytes, i16> {
        let read = self.log.lock().await.read(offset, max_bytes, None).await;
        match read {
            Ok(r) => Ok(r.bytes),
            Err(e) => {
                if !matches!(e, LogError::OffsetOutOfRange { .. }) {
                    tracing::warn!(dir = %self.dir, offset, "replica read failed: {e}");
                }
                Err(e.error_code())
            }
        }
    }

    pub async fn log_start_offset(&self) -> i64 {
        self.log.lock().await.log_start_offset()
    }

    /// Bytes of the partition's log on disk (all segments), for DescribeLogDirs.
    pub async fn size_bytes(&self) -> u64 {
        self.log.lock().await.size_bytes()
    }

    pub fn is_failed(&self) -> bool {
        self.lock_commit().core.is_failed()
    }

    /// Appends validated batches (the producer's bytes; offsets are patched in place).
    pub async fn append(self: &Arc<Self>, records: Bytes, now_ms: i64) -> Result<Appended, i16> {
        if self.is_failed() {
            return Err(code::KAFKA_STORAGE_ERROR);
        }
        let batches = BytesMut::from(&records[..]);
        let info = {
            let mut log = self.log.lock().await;
            log.append(batches, now_ms, self.leader_epoch()).await
        };
        let info = match info {
            Ok(info) => info,
            Err(e) => {
                if !matches!(e, LogError::Producer(_)) {
                    tracing::warn!(dir = %self.dir, "append failed: {e}");
                }
                return Err(e.error_code());
            }
        };
        let end_offset = info.last_offset + 1;
        let mut effects = Vec::new();
        self.lock_commit()
            .core
            .step(Event::Appended { end_offset }, &mut effects);
        self.run_effects(effects);
        if self.config().flush_policy != FlushPolicy::Fsync {
            // Without fsync the high watermark is the log end: wake long polls now.
            self.data_arrived.notify_waiters();
        }
        Ok(Appended {
            base_offset: info.base_offset,
            end_offset,
            log_append_time_ms: info.log_append_time,
            log_start_offset: info.log_start_offset,
        })
    }

    /// Follower path: appends batches fetched from the leader as they are (no offset or epoch
    /// patching; see `PartitionLog::append_replicated` for the checks) and joins the same group
    /// commit as `append`: `wait_durable(end_offset)` answers once they are synced. The error
    /// stays typed so the fetcher can tell `OffsetMismatch { expected, .. }` (fetch again from
    /// `expected`) from a failed partition; `error_code()` gives the Kafka code.
    pub async fn append_replicated(
        self: &Arc<Self>,
        records: Bytes,
        now_ms: i64,
    ) -> Result<Appended, LogError> {
        if self.is_failed() {
            return Err(LogError::Failed);
        }
        let info = {
            let mut log = self.log.lock().await;
            log.append_replicated(&records, now_ms).await
        };
        let info = match info {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(dir = %self.dir, "replicated append failed: {e}");
                return Err(e);
            }
        };
        let end_offset = info.last_offset + 1;
        let mut effects = Vec::new();
        self.lock_commit()
            .core
            .step(Event::Appended { end_offset }, &mut effects);
        self.run_effects(effects);
        if self.config().flush_policy != FlushPolicy::Fsync {
            self.data_arrived.notify_waiters();
        }
        Ok(Appended {
            base_offset: info.base_offset,
            end_offset,
            log_append_time_ms: info.log_append_time,
            log_start_offset: info.log_start_offset,
        })
    }

    /// The offset after the last batch in the log (the fetcher's next fetch offset).
    pub async fn log_end_offset(&self) -> i64 {
        self.log.lock().await.log_end_offset()
    }

    /// The newest leader epoch in the log's epoch cache (a follower's `last_fetched_epoch`).
    pub async fn latest_epoch(&self) -> Option<i32> {
        self.log.lock().await.latest_epoch()
    }

    /// OffsetForLeaderEpoch (KIP-279) answered from this replica's log: see
    /// `PartitionLog::end_offset_for_epoch`.
    pub async fn end_offset_for_epoch(&self, requested: i32) -> (i32, i64) {
        self.log.lock().await.end_offset_for_epoch(requested)
    }

    /// Resolves once everything below `end_offset` is durable (or the partition failed).
    pub fn wait_durable(self: &Arc<Self>, end_offset: i64) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        let mut effects = Vec::new();
        {
            let mut c = self.lock_commit();
            let waiter = c.next_waiter;
            c.next_waiter += 1;
            c.waiters.insert(waiter, tx);
            c.core
                .step(Event::Wait { waiter, end_offset }, &mut effects);
        }
        self.run_effects(effects);
        rx
    }

    /// Executes the core's effects: replies go to their waiters, syncs run as a task.
    fn run_effects(self: &Arc<Self>, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Reply { waiter, outcome } => {
                    let tx = self.lock_commit().waiters.remove(&waiter);
                    if let Some(tx) = tx {
                        let _ = tx.send(outcome);
                    }
                }
                Effect::Sync { up_to } => {
                    let me = self.clone();
                    tokio::spawn(async move { me.sync(up_to).await });
                }
            }
        }
    }

    /// One group-commit sync: take the plan under the log lock, run it without the lock (appends
    /// continue and are covered by the next sync), then feed the result back.
    async fn sync(self: Arc<Self>, up_to: i64) {
        if self.hooks.buggify("broker.flush.delay") {
            // Buggify: a slow fsync start; more appends pile up behind this group commit.
            tokio::time::sleep(std::time::Duration::from_millis(BUGGIFY_FLUSH_DELAY_MS)).await;
        }
        let plan = self.log.lock().await.flush_plan();
        let result = match plan {
            None => {
                let log = self.log.lock().await;
                if log.is_failed() {
                    Err("log failed".to_string())
                } else {
                    Ok(log.durable_end_offset())
                }
            }
            Some(plan) => {
                let executed = execute_flush(&self.disk, &plan).await;
                let mut log = self.log.lock().await;
                log.flush_done(&plan, executed).map_err(|e| e.to_string())
            }
        };
        let mut effects = Vec::new();
        {
            let mut c = self.lock_commit();
            match &result {
                Ok(durable) => c.core.step(
                    Event::SyncDone {
                        end_offset: (*durable).max(0),
                    },
                    &mut effects,
                ),
                Err(e) => {
                    tracing::error!(
                        dir = %self.dir, up_to,
                        "fsync failed; the partition now refuses writes: {e}"
                    );
                    c.core.step(Event::SyncFailed, &mut effects)
                }
            }
        }
        self.run_effects(effects);
        self.data_arrived.notify_waiters();
    }

    /// Policy `interval`: sync when `flush.interval.ms` elapsed and something is dirty.
    pub fn interval_tick(self: &Arc<Self>, now_ms: i64) {
        let config = self.config();
        if config.flush_policy != FlushPolicy::Interval {
            return;
        }
        let mut effects = Vec::new();
        {
            let mut c = self.lock_commit();
            // A clock that jumps backwards must not stop syncing: treat it as due.
            let since = now_ms.saturating_sub(c.last_interval_sync_ms);
            if since >= config.flush_interval_ms || since < 0 {
                c.last_interval_sync_ms = now_ms;
                c.core.step(Event::Tick, &mut effects);
            }
        }
        self.run_effects(effects);
    }

    /// Deletes whole old segments past `retention.ms` / `retention.bytes` (only when
    /// `cleanup.policy` contains `delete`: a compact-only topic keeps every key's latest value).
    pub async fn enforce_retention(&self, now_ms: i64) {
        if !self.config().delete {
            return;
        }
        let result = self.log.lock().await.apply_retention(now_ms).await;
        match result {
            Ok(0) => {}
            Ok(n) => tracing::info!(dir = %self.dir, segments = n, "retention deleted segments"),
            Err(e) => tracing::warn!(dir = %self.dir, "retention failed: {e}"),
        }
    }

    /// Cleaner progress of the log (see `samsa_storage::log::cleaner`).
    pub async fn dirty_info(&self, now_ms: i64) -> Result<DirtyInfo, LogError> {
        let lag = self.config().min_compaction_lag_ms;
        self.log.lock().await.dirty_info(now_ms, lag).await
    }

    /// One cleaning pass over the log in steps: the (bounded) key map, then one segment at a
    /// time, releasing the log and yielding in between so produce and fetch go on.
    pub async fn clean(&self, options: &CleanOptions) -> Result<CleanStats, LogError> {
        let Some(mut plan) = self.log.lock().await.clean_plan(options).await? else {
            return Ok(CleanStats::default());
        };
        for base in plan.targets.clone() {
            tokio::task::yield_now().await;
            self.log
                .lock()
                .await
                .clean_segment(&mut plan, base, options)
                .await?;
        }
        tokio::task::yield_now().await;
        self.log.lock().await.clean_finish(plan).await
    }

    /// Whole stored batches from `offset`, below the high watermark, up to `max_bytes`; the
    /// first batch is returned whole even beyond `max_bytes` when `min_one` (KIP-74).
    pub async fn read(&self, offset: i64, max_bytes: usize, min_one: bool) -> Result<Bytes, i16> {
        let hw = self.high_watermark();
        if !min_one && max_bytes == 0 {
            return Ok(Bytes::new());
        }
        let read = self
            .log
            .lock()
            .await
            .read(offset, max_bytes, Some(hw))
            .await;
        match read {
            Ok(r) if !min_one && r.bytes.len() > max_bytes => Ok(Bytes::new()),
            Ok(r) => Ok(r.bytes),
            Err(e) => {
                if !matches!(e, LogError::OffsetOutOfRange { .. }) {
                    tracing::warn!(dir = %self.dir, offset, "read failed: {e}");
                }
                Err(e.error_code())
            }
        }
    }

    /// ListOffsets by time: the first record whose timestamp is >= `timestamp_ms`, with that
    /// timestamp. The log finds the batch through the time index; only that one batch is then
    /// decoded, to answer at record granularity as Kafka does.
    pub async fn offset_for_time(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>, i16> {
        let found = self
            .log
            .lock()
            .await
            .offset_for_timestamp(timestamp_ms)
            .await;
        let hw = self.high_watermark();
        match found {
            Ok(Some((offset, ts))) if offset < hw => {
                let exact = self
                    .record_in_batch(offset, hw, |t| t >= timestamp_ms)
                    .await?;
                Ok(Some(exact.unwrap_or((offset, ts))))
            }
            Ok(_) => Ok(None),
            Err(e) => Err(e.error_code()),
        }
    }

    /// The record with the largest timestamp (KIP-734), with that timestamp.
    pub async fn max_timestamp(&self) -> Result<Option<(i64, i64)>, i16> {
        let found = self.log.lock().await.max_timestamp_offset();
        let hw = self.high_watermark();
        match found.filter(|(offset, _)| *offset < hw) {
            Some((offset, ts)) => {
                let exact = self.record_in_batch(offset, hw, |t| t == ts).await?;
                Ok(Some(exact.unwrap_or((offset, ts))))
            }
            None => Ok(None),
        }
    }

    /// Decodes the one stored batch that holds `offset` and returns the first record at or after
    /// `offset` (and below `hw`) whose timestamp satisfies `wanted`.
    async fn record_in_batch(
        &self,
        offset: i64,
        hw: i64,
        wanted: impl Fn(i64) -> bool,
    ) -> Result<Option<(i64, i64)>, i16> {
        // `read` returns at least one whole batch even when it is larger than this.
        const ONE_BATCH_BYTES: usize = 1;
        let read = self
            .log
            .lock()
            .await
            .read(offset, ONE_BATCH_BYTES, Some(hw))
            .await;
        let bytes = read.map_err(|e| e.error_code())?.bytes;
        let records = match samsa_net::records::decode_records(&bytes) {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!(dir = %self.dir, offset, "cannot decode batch for ListOffsets: {e}");
                return Ok(None);
            }
        };
        Ok(records
            .iter()
            .find(|(o, r)| *o >= offset && *o < hw && wanted(r.timestamp_ms))
            .map(|(o, r)| (*o, r.timestamp_ms)))
    }

    /// DeleteRecords: moves the log start offset to `before`; returns the new log start.
    pub async fn delete_records(&self, before: i64) -> Result<i64, i16> {
        let result = self.log.lock().await.delete_records_before(before).await;
        result.map_err(|e| e.error_code())
    }

    /// Clean shutdown: flush and sync everything (every policy).
    pub async fn close(&self) {
        let result = self.log.lock().await.flush().await;
        if let Err(e) = result {
            tracing::error!(dir = %self.dir, "final flush failed: {e}");
        }
    }

    /// Removes the partition's files (topic deleted). Failures are logged: the metadata delete
    /// is already durable, and the directory name carries the topic id, so a leftover never
    /// resurfaces under a re-created topic of the same name.
    pub async fn delete(&self) {
        let dir = self.dir.clone();
        let _log = self.log.lock().await;
        let result = async {
            for name in self.disk.list(&dir).await? {
                self.disk.remove(&format!("{dir}/{name}")).await?;
            }
            self.disk.remove(&dir).await?;
            self.disk.sync_dir("").await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(dir, "removing a deleted partition's files failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // The follower path on `RealDisk` (left out of simulation builds).
    #[cfg(not(madsim))]
    mod replicated {
        use super::*;
        use samsa_net::records::{build_batch, BatchOptions, Record};
        use samsa_storage::RealDisk;

        fn fsync_config() -> TopicConfig {
            TopicConfig {
                segment_bytes: 1024,
                segment_ms: 604_800_000,
                retention_ms: -1,
                retention_bytes: -1,
                flush_policy: FlushPolicy::Fsync,
                flush_interval_ms: 1000,
                log_append_time: false,
                compact: false,
                delete: true,
                max_message_bytes: 1_048_588,
                min_cleanable_dirty_ratio_ppm: 500_000,
                min_compaction_lag_ms: 0,
                max_compaction_lag_ms: i64::MAX,
                delete_retention_ms: 86_400_000,
            }
        }

        async fn open_partition(disk: &RealDisk, topic: &str) -> Arc<Partition<RealDisk>> {
            let notify = Arc::new(Notify::new());
            let opened = Partition::open(
                disk.clone(),
                Hooks::default(),
                topic,
                Uuid::from_u128(7),
                0,
                fsync_config(),
                notify,
            )
            .await
            .expect("open partition");
            Arc::new(opened)
        }

        fn produce(i: usize) -> Bytes {
            let records: Vec<Record> = (0..3)
                .map(|r| Record {
                    key: None,
                    value: Some(Bytes::from(format!("v{i}-{r}"))),
                    headers: Vec::new(),
                    timestamp_ms: 1_000 + i as i64,
                })
                .collect();
            build_batch(&records, &BatchOptions::default()).freeze()
        }

        #[tokio::test]
        async fn a_follower_partition_appends_replicated_batches_through_group_commit() {
            let tmp = tempfile::tempdir().unwrap();
            let disk = RealDisk::new(tmp.path()).expect("disk");
            let leader = open_partition(&disk, "leader").await;
            for i in 0..20 {
                let appended = leader.append(produce(i), 0).await.expect("produce");
                let durable = leader.wait_durable(appended.end_offset).await;
                assert_eq!(durable.expect("answered"), Outcome::Durable);
            }
            let follower = open_partition(&disk, "follower").await;
            assert_eq!(follower.log_end_offset().await, 0);
            assert_eq!(follower.latest_epoch().await, None);
            // The fetcher's loop: fetch from the log end, append, wait for durability.
            loop {
                let from = follower.log_end_offset().await;
                let fetched = leader.read(from, 700, true).await.expect("leader read");
                if fetched.is_empty() {
                    break;
                }
                let appended = follower
                    .append_replicated(fetched, 0)
                    .await
                    .expect("replicated append");
                assert_eq!(appended.base_offset, from);
                let durable = follower.wait_durable(appended.end_offset).await;
                assert_eq!(durable.expect("answered"), Outcome::Durable);
                assert_eq!(follower.high_watermark(), appended.end_offset);
            }
            assert_eq!(follower.log_end_offset().await, 60);
            assert_eq!(follower.latest_epoch().await, Some(LEADER_EPOCH));
            assert_eq!(follower.end_offset_for_epoch(LEADER_EPOCH).await, (0, 60));
            let all = |p: Arc<Partition<RealDisk>>| async move {
                let mut out = Vec::new();
                let mut at = 0;
                while at < 60 {
                    let bytes = p.read(at, 1 << 20, true).await.expect("read");
                    let batches = samsa_net::records::decode_fetched(&bytes).expect("decodes");
                    at = batches.last().map(|(o, _)| o + 1).expect("progress");
                    out.extend_from_slice(&bytes);
                }
                out
            };
            assert_eq!(all(follower.clone()).await, all(leader.clone()).await);
            // A fetch that does not start at the log end is refused with the offset to fetch from.
            let stale = leader.read(30, 1 << 20, true).await.expect("read");
            let refused = follower.append_replicated(stale, 0).await.unwrap_err();
            assert!(
                matches!(refused, LogError::OffsetMismatch { expected: 60, .. }),
                "{refused:?}"
            );
            assert_eq!(follower.log_end_offset().await, 60);
        }

        #[tokio::test]
        async fn a_new_leader_epoch_is_recorded_and_written_into_later_batches() {
            let tmp = tempfile::tempdir().unwrap();
            let disk = RealDisk::new(tmp.path()).expect("disk");
            let p = open_partition(&disk, "epochs").await;
            p.append(produce(0), 0).await.expect("produce");
            assert_eq!(p.leader_epoch(), LEADER_EPOCH);
            p.become_leader(3).await.expect("epoch 3");
            let second = p.append(produce(1), 0).await.expect("produce");
            assert_eq!(p.leader_epoch(), 3);
            // An older epoch changes nothing.
            p.become_leader(2).await.expect("no-op");
            assert_eq!(p.leader_epoch(), 3);
            assert_eq!(p.latest_epoch().await, Some(3));
            assert_eq!(p.end_offset_for_epoch(0).await, (0, second.base_offset));
            p.wait_durable(second.end_offset).await.expect("answered");
            let bytes = p
                .read(second.base_offset, 1 << 20, true)
                .await
                .expect("read");
            let hdr = samsa_net::batch::BatchHeader::parse(&bytes).expect("header");
            assert_eq!(hdr.partition_leader_epoch, 3);
            // Reopened, the partition keeps writing with the epoch its log holds.
            drop(p);
            let p = open_partition(&disk, "epochs").await;
            assert_eq!(p.leader_epoch(), 3);
        }
    }

    #[test]
    fn partition_dirs_fit_one_path_component_and_differ_per_topic_id() {
        let id = Uuid::from_u128(1);
        assert_eq!(partition_dir("t", 3, id), format!("t-3.{}", id.simple()));
        let long = "x".repeat(249);
        let dir = partition_dir(&long, 9999, id);
        assert!(dir.len() <= DIR_NAME_BYTES_MAX, "{}", dir.len());
        assert_eq!(dir_topic_id(&dir), Some(id.simple().to_string()));
        assert_eq!(
            dir_topic_id(&partition_dir("a.b-c", 2, id)),
            Some(id.simple().to_string())
        );
        assert_eq!(dir_topic_id("meta"), None);
        assert_eq!(dir_topic_id("notes.txt"), None);
        assert_ne!(
            partition_dir("t", 0, id),
            partition_dir("t", 0, Uuid::from_u128(2))
        );
    }
}
