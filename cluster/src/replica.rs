//! Partition replication, pure. Leader side (`PartitionLeader`): follower progress from
//! follower fetches, the high watermark (min log end offset over the maximal ISR, never
//! decreasing, never advanced while the ISR is below `min.insync.replicas`), acks=all waiters,
//! and ISR shrink/expand proposals (one AlterPartition in flight). Follower side: the KIP-279
//! truncation step from an OffsetForLeaderEpoch answer. Never performs I/O, never reads a
//! clock (time arrives in events), never truncates to a follower's own high watermark.

use std::collections::BTreeMap;

use samsa_net::error::{code, ErrorCode};

use crate::planted::Planted;
use crate::records::BrokerId;
use samsa_storage::log::epoch_cache::{LeaderEpochCache, UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};

/// Identifies one acks=all produce waiting for the high watermark.
pub type WaiterId = u64;

/// Most acks=all produces one partition leader keeps waiting; more are refused.
pub const ACKS_ALL_WAITERS_MAX: usize = 65_536;
/// Ticks without a definite answer before a pending AlterPartition is sent again.
pub const ALTER_PARTITION_RESEND_TICKS: u32 = 2;
/// A follower's log end offset before its first fetch to this leader.
pub const UNKNOWN_OFFSET: i64 = -1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderConfig {
    pub local: BrokerId,
    pub min_insync_replicas: usize,
    pub replica_lag_time_max_ms: i64,
}

/// The partition as the committed metadata shows it when this broker becomes its leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderStart {
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// The local log end offset at election: the start offset of this leader's epoch.
    pub log_end_offset: i64,
    /// The local high watermark (as known while following); the leader's never goes lower.
    pub high_watermark: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaderEvent {
    /// The local log grew to `log_end_offset`; `waiter` (acks=all) waits for all of it.
    Appended {
        log_end_offset: i64,
        waiter: Option<WaiterId>,
    },
    /// A follower fetched from `fetch_offset` (its log end offset) at `now_ms`. `incarnation`
    /// is its registration's directory id: a new one (wiped disk) restarts its progress.
    FollowerFetch {
        replica: BrokerId,
        incarnation: u128,
        fetch_offset: i64,
        now_ms: i64,
    },
    Tick {
        now_ms: i64,
    },
    /// The metadata now shows this ISR and partition epoch, under this leader epoch
    /// (the answer to our AlterPartition, or a change the controller made itself).
    IsrCommitted {
        isr: Vec<BrokerId>,
        leader_epoch: i32,
        partition_epoch: i32,
    },
    /// Our AlterPartition was refused; the next fetch or tick may propose again.
    AlterPartitionFailed {
        error: ErrorCode,
    },
    /// The controller accepted our AlterPartition proposing `new_isr` at `partition_epoch`
    /// (the request's). Ignored unless it answers the proposal still pending at that epoch: an
    /// image change may have delivered it already, and a newer proposal may be in flight.
    AlterPartitionAccepted {
        new_isr: Vec<BrokerId>,
        partition_epoch: i32,
    },
    WaiterTimedOut {
        waiter: WaiterId,
    },
    /// The topic's `min.insync.replicas` changed (AlterConfigs): from now on the high
    /// watermark and acks=all judge by it. Waiters stay; a lower value may advance the high
    /// watermark at once, a higher one holds it (waiters then time out, ambiguous).
    MinInsyncReplicasChanged {
        min_insync_replicas: usize,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaderEffect {
    HighWatermark(i64),
    Reply {
        waiter: WaiterId,
        result: Result<(), ErrorCode>,
    },
    /// Send AlterPartition to the controller; `added` names the incarnation of each joining
    /// member as this leader saw it fetch, so the controller can refuse a wiped one (KIP-903).
    AlterPartition {
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: Vec<BrokerId>,
        added: Vec<(BrokerId, u128)>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The incarnation seen in the last fetch (`None` before the first).
    pub incarnation: Option<u128>,
    pub log_end_offset: i64,
    /// Kafka's `lastCaughtUpTimeMs`: the last time the follower had everything the leader had
    /// (at this fetch, or at the previous one).
    pub last_caught_up_time_ms: i64,
    last_fetch_time_ms: i64,
    last_fetch_leader_log_end_offset: i64,
}

#[derive(Clone, Debug)]
pub struct PartitionLeader {
    config: LeaderConfig,
    replicas: Vec<BrokerId>,
    isr: Vec<BrokerId>,
    /// The ISR of the AlterPartition in flight, if any.
    pending_isr: Option<Vec<BrokerId>>,
    /// Ticks since the pending proposal was (re)sent: an answer that never came (or said
    /// nothing definite) is re-sent after `ALTER_PARTITION_RESEND_TICKS`.
    pending_ticks: u32,
    leader_epoch: i32,
    partition_epoch: i32,
    leader_epoch_start_offset: i64,
    log_end_offset: i64,
    high_watermark: i64,
    followers: BTreeMap<BrokerId, FollowerProgress>,
    /// acks=all waiters by the log end offset they need under the high watermark.
    waiters: BTreeMap<WaiterId, i64>,
    planted: Planted,
}

impl PartitionLeader {
    pub fn new(config: LeaderConfig, start: LeaderStart, now_ms: i64, planted: Planted) -> Self {
        assert!(config.min_insync_replicas >= 1);
        assert!(
            start.isr.contains(&config.local),
            "a leader outside its ISR: {start:?}"
        );
        assert!(
            start.high_watermark <= start.log_end_offset,
            "hw above log end: {start:?}"
        );
        // Kafka's reset on election: ISR members count as caught up now, others never were;
        // no follower's log end offset is known until it fetches.
        let followers = start
            .replicas
            .iter()
            .filter(|r| **r != config.local)
            .map(|r| {
                let caught_up = if start.isr.contains(r) {
                    now_ms
                } else {
                    i64::MIN
                };
                let progress = FollowerProgress {
                    incarnation: None,
                    log_end_offset: UNKNOWN_OFFSET,
                    last_caught_up_time_ms: caught_up,
                    last_fetch_time_ms: i64::MIN,
                    last_fetch_leader_log_end_offset: UNKNOWN_OFFSET,
                };
                (*r, progress)
            })
            .collect();
        PartitionLeader {
            config,
            replicas: start.replicas,
            isr: start.isr,
            pending_isr: None,
            pending_ticks: 0,
            leader_epoch: start.leader_epoch,
            partition_epoch: start.partition_epoch,
            leader_epoch_start_offset: start.log_end_offset,
            log_end_offset: start.log_end_offset,
            high_watermark: start.high_watermark.max(0),
            followers,
            waiters: BTreeMap::new(),
            planted,
        }
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }
    pub fn isr(&self) -> &[BrokerId] {
        &self.isr
    }
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }
    pub fn partition_epoch(&self) -> i32 {
        self.partition_epoch
    }
    pub fn follower(&self, replica: BrokerId) -> Option<&FollowerProgress> {
        self.followers.get(&replica)
    }
    pub fn alter_partition_in_flight(&self) -> bool {
        self.pending_isr.is_some()
    }
    /// This leader's broker id.
    pub fn local(&self) -> BrokerId {
        self.config.local
    }
    pub fn min_insync_replicas(&self) -> usize {
        self.config.min_insync_replicas
    }
    /// The leader's own log end offset as fed to the core.
    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }
    /// Observation only (the simulator's `hw_safety`): every member the high watermark counts
    /// (the maximal ISR) with the log end offset this leader knows for it.
    pub fn counted_log_ends(&self) -> Vec<(BrokerId, i64)> {
        self.maximal_isr()
            .map(|r| (r, self.member_log_end(r)))
            .collect()
    }

    /// May an acks=all produce be appended now? (Checked before the append, as Kafka does.)
    pub fn check_acks_all(&self) -> Result<(), ErrorCode> {
        if self.isr.len() < self.config.min_insync_replicas {
            return Err(code::NOT_ENOUGH_REPLICAS);
        }
        if self.waiters.len() >= ACKS_ALL_WAITERS_MAX {
            return Err(code::REQUEST_TIMED_OUT);
        }
        Ok(())
    }

    pub fn step(&mut self, event: LeaderEvent, effects: &mut Vec<LeaderEffect>) {
        match event {
            LeaderEvent::Appended {
                log_end_offset,
                waiter,
            } => self.on_appended(log_end_offset, waiter, effects),
            LeaderEvent::FollowerFetch {
                replica,
                incarnation,
                fetch_offset,
                now_ms,
            } => self.on_follower_fetch(replica, incarnation, fetch_offset, now_ms, effects),
            LeaderEvent::Tick { now_ms } => {
                self.maybe_resend(effects);
                self.maybe_shrink_isr(now_ms, effects);
            }
            LeaderEvent::IsrCommitted {
                isr,
                leader_epoch,
                partition_epoch,
            } => self.on_isr_committed(isr, leader_epoch, partition_epoch, effects),
            LeaderEvent::AlterPartitionFailed { error } => {
                tracing::debug!(error, "AlterPartition refused");
                self.pending_isr = None;
            }
            LeaderEvent::AlterPartitionAccepted {
                new_isr,
                partition_epoch,
            } => self.on_alter_partition_accepted(new_isr, partition_epoch, effects),
            LeaderEvent::WaiterTimedOut { waiter } => {
                if self.waiters.remove(&waiter).is_some() {
                    let result = Err(code::REQUEST_TIMED_OUT);
                    effects.push(LeaderEffect::Reply { waiter, result });
                }
            }
            LeaderEvent::MinInsyncReplicasChanged {
                min_insync_replicas,
            } => {
                // The controller checks 1..=RF; a 0 from a bad image must not disable the rule.
                self.config.min_insync_replicas = min_insync_replicas.max(1);
                self.maybe_advance_high_watermark(effects);
            }
        }
        self.assert_invariants();
    }

    /// Leadership is gone: every waiter fails with NOT_LEADER_OR_FOLLOWER.
    pub fn resign(self, effects: &mut Vec<LeaderEffect>) {
        for waiter in self.waiters.keys() {
            let result = Err(code::NOT_LEADER_OR_FOLLOWER);
            effects.push(LeaderEffect::Reply {
                waiter: *waiter,
                result,
            });
        }
    }

    fn on_appended(&mut self, leo: i64, waiter: Option<WaiterId>, effects: &mut Vec<LeaderEffect>) {
        assert!(
            leo >= self.log_end_offset,
            "log end went back: {leo} < {}",
            self.log_end_offset
        );
        self.log_end_offset = leo;
        if let Some(waiter) = waiter {
            if self.planted.isr_ack_before_replicated() {
                effects.push(LeaderEffect::Reply {
                    waiter,
                    result: Ok(()),
                });
            } else if let Err(error) = self.check_acks_all() {
                // The ISR shrank between the pre-append check and the append: the batch is in
                // the log and may still be committed, so the answer must not say "not written"
                // (sim: cluster_replication 41005, where NOT_ENOUGH_REPLICAS made the idempotent
                // producer reuse the sequence and its next record was acked at this offset).
                let error = if error == code::NOT_ENOUGH_REPLICAS {
                    code::NOT_ENOUGH_REPLICAS_AFTER_APPEND
                } else {
                    error
                };
                effects.push(LeaderEffect::Reply {
                    waiter,
                    result: Err(error),
                });
            } else if leo <= self.high_watermark && !self.planted.acks_waiter_below_hw() {
                // Nothing new to replicate: an idempotent producer's retry of a batch the log
                // already holds (a duplicate appends nothing), or a group coordinator's empty
                // write. The high watermark covers it now and may not move again for a long
                // time, so answer at once (in the real-process roles test a new leader's
                // follower caught up before the retried duplicate arrived; the answer then
                // waited for an advance that never came, and the connection behind it stalled).
                effects.push(LeaderEffect::Reply {
                    waiter,
                    result: Ok(()),
                });
            } else {
                // No waiter waits for what the high watermark already covers: an advance
                // answers every waiter it covers, and one that comes in covered is answered
                // above (so checking each insertion keeps the whole map in line).
                assert!(
                    leo > self.high_watermark,
                    "an acks=all waiter queued at {leo}, at or below the high watermark {}",
                    self.high_watermark
                );
                self.waiters.insert(waiter, leo);
            }
        }
        self.maybe_advance_high_watermark(effects);
    }

    fn on_follower_fetch(
        &mut self,
        replica: BrokerId,
        incarnation: u128,
        fetch_offset: i64,
        now_ms: i64,
        effects: &mut Vec<LeaderEffect>,
    ) {
        // A fetch past our log end comes from a follower that has not truncated yet; the shell
        // answers it OFFSET_OUT_OF_RANGE and it does not count as progress.
        if fetch_offset < 0 || fetch_offset > self.log_end_offset {
            return;
        }
        let leader_leo = self.log_end_offset;
        let Some(f) = self.followers.get_mut(&replica) else {
            return;
        };
        if f.incarnation.is_some_and(|known| known != incarnation) {
            // A wiped disk: nothing it had before counts.
            f.log_end_offset = UNKNOWN_OFFSET;
            f.last_caught_up_time_ms = i64::MIN;
            f.last_fetch_time_ms = i64::MIN;
            f.last_fetch_leader_log_end_offset = UNKNOWN_OFFSET;
        }
        f.incarnation = Some(incarnation);
        if fetch_offset >= leader_leo {
            f.last_caught_up_time_ms = f.last_caught_up_time_ms.max(now_ms);
        } else if fetch_offset >= f.last_fetch_leader_log_end_offset
            && f.last_fetch_time_ms > i64::MIN
        {
            f.last_caught_up_time_ms = f.last_caught_up_time_ms.max(f.last_fetch_time_ms);
        }
        f.log_end_offset = fetch_offset;
        f.last_fetch_time_ms = now_ms;
        f.last_fetch_leader_log_end_offset = leader_leo;
        self.maybe_expand_isr(replica, effects);
        self.maybe_advance_high_watermark(effects);
    }

    fn maybe_expand_isr(&mut self, replica: BrokerId, effects: &mut Vec<LeaderEffect>) {
        if self.pending_isr.is_some() || self.isr.contains(&replica) {
            return;
        }
        let leo = self.followers[&replica].log_end_offset;
        // Kafka's `isFollowerInSync`: it has everything committed, and everything since this
        // leader's epoch began (so it has truncated to this leader's log).
        if leo >= self.high_watermark && leo >= self.leader_epoch_start_offset {
            let mut new_isr = self.isr.clone();
            new_isr.push(replica);
            self.propose(new_isr, effects);
        }
    }

    fn maybe_shrink_isr(&mut self, now_ms: i64, effects: &mut Vec<LeaderEffect>) {
        if self.pending_isr.is_some() {
            return;
        }
        let lag_max = self.config.replica_lag_time_max_ms;
        let leo = self.log_end_offset;
        let out_of_sync = |r: &BrokerId| {
            self.followers.get(r).is_some_and(|f| {
                f.log_end_offset != leo && now_ms.saturating_sub(f.last_caught_up_time_ms) > lag_max
            })
        };
        if self.isr.iter().any(out_of_sync) {
            let new_isr: Vec<BrokerId> = self
                .isr
                .iter()
                .copied()
                .filter(|r| !out_of_sync(r))
                .collect();
            self.propose(new_isr, effects);
        }
    }

    /// Re-sends the pending proposal when no definite answer came for a while: if the first
    /// copy was applied the controller refuses this one (stale partition epoch) and the image
    /// delivers the change; if it was lost, this one may be accepted.
    fn maybe_resend(&mut self, effects: &mut Vec<LeaderEffect>) {
        let Some(pending) = self.pending_isr.clone() else {
            return;
        };
        self.pending_ticks += 1;
        if self.pending_ticks >= ALTER_PARTITION_RESEND_TICKS {
            self.propose(pending, effects);
        }
    }

    fn propose(&mut self, new_isr: Vec<BrokerId>, effects: &mut Vec<LeaderEffect>) {
        assert!(new_isr.contains(&self.config.local));
        let added = new_isr
            .iter()
            .filter(|r| !self.isr.contains(r))
            .filter_map(|r| Some((*r, self.followers.get(r)?.incarnation?)))
            .collect();
        effects.push(LeaderEffect::AlterPartition {
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            new_isr: new_isr.clone(),
            added,
        });
        self.pending_isr = Some(new_isr);
        self.pending_ticks = 0;
    }

    fn on_alter_partition_accepted(
        &mut self,
        new_isr: Vec<BrokerId>,
        partition_epoch: i32,
        effects: &mut Vec<LeaderEffect>,
    ) {
        if partition_epoch != self.partition_epoch || self.pending_isr.as_ref() != Some(&new_isr) {
            return;
        }
        let mut proposed = new_isr.clone();
        proposed.sort_unstable();
        let mut committed = self.isr.clone();
        committed.sort_unstable();
        if proposed == committed {
            // Nothing to change: the controller kept the partition epoch.
            self.pending_isr = None;
            return;
        }
        // The controller wrote exactly this ISR at the next partition epoch.
        let leader_epoch = self.leader_epoch;
        self.on_isr_committed(new_isr, leader_epoch, partition_epoch + 1, effects);
    }

    fn on_isr_committed(
        &mut self,
        isr: Vec<BrokerId>,
        leader_epoch: i32,
        partition_epoch: i32,
        effects: &mut Vec<LeaderEffect>,
    ) {
        if leader_epoch != self.leader_epoch || partition_epoch < self.partition_epoch {
            return;
        }
        if partition_epoch == self.partition_epoch {
            // The controller's answer to an AlterPartition that changed nothing.
            self.pending_isr = None;
            return;
        }
        assert!(
            isr.contains(&self.config.local),
            "committed ISR without its leader: {isr:?}"
        );
        self.isr = isr;
        self.partition_epoch = partition_epoch;
        self.pending_isr = None;
        self.maybe_advance_high_watermark(effects);
    }

    /// The maximal ISR (KIP-497): committed members plus the additions in flight; a shrink in
    /// flight still counts its leaving members until it commits.
    fn maximal_isr(&self) -> impl Iterator<Item = BrokerId> + '_ {
        let adds = self
            .pending_isr
            .iter()
            .flatten()
            .filter(|r| !self.isr.contains(r));
        self.isr.iter().chain(adds).copied()
    }

    /// A member's log end as the high watermark counts it (the leader's own for itself).
    fn member_log_end(&self, replica: BrokerId) -> i64 {
        match self.followers.get(&replica) {
            Some(f) => f.log_end_offset,
            None => self.log_end_offset,
        }
    }

    fn maybe_advance_high_watermark(&mut self, effects: &mut Vec<LeaderEffect>) {
        let below_min_isr = self.isr.len() < self.config.min_insync_replicas;
        if below_min_isr && !self.planted.isr_hw_below_min_isr() {
            return;
        }
        let candidate = self
            .maximal_isr()
            .map(|r| self.member_log_end(r))
            .min()
            .unwrap_or(self.log_end_offset);
        if candidate <= self.high_watermark {
            return;
        }
        assert!(candidate <= self.log_end_offset);
        self.high_watermark = candidate;
        effects.push(LeaderEffect::HighWatermark(candidate));
        let hw = self.high_watermark;
        let done: Vec<WaiterId> = self
            .waiters
            .iter()
            .filter(|(_, needed)| **needed <= hw)
            .map(|(w, _)| *w)
            .collect();
        for waiter in done {
            self.waiters.remove(&waiter);
            effects.push(LeaderEffect::Reply {
                waiter,
                result: Ok(()),
            });
        }
    }

    fn assert_invariants(&self) {
        assert!(
            self.high_watermark <= self.log_end_offset,
            "hw {} > leo",
            self.high_watermark
        );
        assert!(self.isr.contains(&self.config.local), "leader left its ISR");
        assert!(self.waiters.len() <= ACKS_ALL_WAITERS_MAX);
        // (Checked on insertion in `on_appended`; a whole scan here would cost every step.)
        debug_assert!(self
            .waiters
            .values()
            .all(|needed| *needed > self.high_watermark));
        debug_assert!(self.isr.iter().all(|r| self.replicas.contains(r)));
    }
}

/// The leader's answer to OffsetForLeaderEpoch: the largest epoch ≤ `requested_epoch` it has
/// and where that epoch ends (KIP-279). `current_leader_epoch` (KIP-320) fences requests sent
/// to a leader of another epoch.
pub fn offset_for_leader_epoch(
    cache: &LeaderEpochCache,
    log_end_offset: i64,
    leader_epoch: i32,
    current_leader_epoch: Option<i32>,
    requested_epoch: i32,
    planted: Planted,
) -> Result<(i32, i64), ErrorCode> {
    match current_leader_epoch {
        Some(e) if e < leader_epoch => return Err(code::FENCED_LEADER_EPOCH),
        Some(e) if e > leader_epoch => return Err(code::UNKNOWN_LEADER_EPOCH),
        _ => {}
    }
    let (epoch, end_offset) = cache.end_offset_for(requested_epoch, log_end_offset);
    if planted.ofle_newer_epoch() && requested_epoch != UNDEFINED_EPOCH && epoch != requested_epoch
    {
        let end = if end_offset == UNDEFINED_EPOCH_OFFSET {
            log_end_offset
        } else {
            end_offset
        };
        return Ok((requested_epoch, end));
    }
    Ok((epoch, end_offset))
}

/// One step of a follower's truncation (KIP-101/279).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TruncationStep {
    /// Truncate the log (and epoch cache) to `truncate_to`, then fetch from there.
    Done { truncate_to: i64 },
    /// Truncate to `truncate_to`, then ask the leader again for `next_requested_epoch`.
    Continue {
        truncate_to: i64,
        next_requested_epoch: i32,
    },
    /// The leader knows no epoch this old or new (a stale leader): truncate nothing, learn the
    /// new leader from metadata and ask again.
    LeaderUnaware,
}

/// The epoch a follower asks about first: its latest, or UNDEFINED with an empty log.
pub fn first_requested_epoch(cache: &LeaderEpochCache) -> i32 {
    cache.latest_epoch().unwrap_or(UNDEFINED_EPOCH)
}

/// Where a follower truncates given the leader's OffsetForLeaderEpoch answer
/// `(leader_answer_epoch, leader_end_offset)`. Never its own high watermark: the point comes
/// from the epochs both logs share (a follower's high watermark may lag committed records).
pub fn follower_truncation(
    cache: &LeaderEpochCache,
    log_end_offset: i64,
    high_watermark: i64,
    leader_answer: (i32, i64),
    planted: Planted,
) -> TruncationStep {
    if planted.follower_truncate_to_hw() {
        return TruncationStep::Done {
            truncate_to: high_watermark.min(log_end_offset),
        };
    }
    let (leader_epoch, leader_end) = leader_answer;
    if cache.latest_epoch().is_none() {
        // The cache is kept in step with the log, so an empty cache means an empty log.
        return TruncationStep::Done {
            truncate_to: log_end_offset,
        };
    }
    if leader_end == UNDEFINED_EPOCH_OFFSET {
        return TruncationStep::LeaderUnaware;
    }
    if leader_epoch == UNDEFINED_EPOCH {
        return TruncationStep::Done {
            truncate_to: leader_end.min(log_end_offset),
        };
    }
    let (own_epoch, own_end) = cache.end_offset_for(leader_epoch, log_end_offset);
    if own_epoch == UNDEFINED_EPOCH {
        return TruncationStep::Done {
            truncate_to: leader_end.min(log_end_offset),
        };
    }
    if own_epoch != leader_epoch {
        // We never had the leader's epoch: cut to where our older epoch ends and ask again.
        return TruncationStep::Continue {
            truncate_to: own_end.min(log_end_offset),
            next_requested_epoch: own_epoch,
        };
    }
    let truncate_to = own_end.min(leader_end).min(log_end_offset);
    if planted.follower_truncate_off_by_one() && truncate_to < log_end_offset {
        return TruncationStep::Done {
            truncate_to: (truncate_to - 1).max(0),
        };
    }
    TruncationStep::Done { truncate_to }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(min_isr: usize, isr: &[BrokerId], planted: Planted) -> PartitionLeader {
        let config = LeaderConfig {
            local: 1,
            min_insync_replicas: min_isr,
            replica_lag_time_max_ms: 100,
        };
        let start = LeaderStart {
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
            leader_epoch: 5,
            partition_epoch: 9,
            log_end_offset: 10,
            high_watermark: 10,
        };
        PartitionLeader::new(config, start, 0, planted)
    }

    fn step(l: &mut PartitionLeader, e: LeaderEvent) -> Vec<LeaderEffect> {
        let mut effects = Vec::new();
        l.step(e, &mut effects);
        effects
    }

    fn fetch(replica: BrokerId, fetch_offset: i64, now_ms: i64) -> LeaderEvent {
        let incarnation = replica as u128;
        LeaderEvent::FollowerFetch {
            replica,
            incarnation,
            fetch_offset,
            now_ms,
        }
    }

    /// AlterConfigs of `min.insync.replicas` reaches the core as one event: a pending ISR
    /// addition and the acks=all waiters stay, and the high watermark follows the new rule.
    #[test]
    fn a_min_isr_change_keeps_waiters_and_pending_additions() {
        let mut l = leader(3, &[1, 2], Planted::none());
        step(
            &mut l,
            LeaderEvent::Appended {
                log_end_offset: 20,
                waiter: None,
            },
        );
        // min ISR 3 > ISR 2: acks=all is refused before the append; the HW holds.
        assert_eq!(l.check_acks_all(), Err(code::NOT_ENOUGH_REPLICAS));
        step(&mut l, fetch(2, 20, 1));
        assert_eq!(l.high_watermark(), 10);
        let e = step(
            &mut l,
            LeaderEvent::MinInsyncReplicasChanged {
                min_insync_replicas: 2,
            },
        );
        assert_eq!(l.high_watermark(), 20, "{e:?}");
        assert_eq!(l.min_insync_replicas(), 2);
        // An acks=all waiter under the new rule, and replica 3 joining meanwhile.
        step(
            &mut l,
            LeaderEvent::Appended {
                log_end_offset: 30,
                waiter: Some(7),
            },
        );
        let e = step(&mut l, fetch(3, 20, 2));
        assert!(e
            .iter()
            .any(|e| matches!(e, LeaderEffect::AlterPartition { .. })));
        // Raising it again keeps the pending addition bounding the HW and the waiter waiting.
        step(
            &mut l,
            LeaderEvent::MinInsyncReplicasChanged {
                min_insync_replicas: 3,
            },
        );
        let e = step(&mut l, fetch(2, 30, 3));
        assert_eq!(l.high_watermark(), 20, "3 is pending at 20: {e:?}");
        assert!(l.alter_partition_in_flight());
        let e = step(&mut l, fetch(3, 30, 4));
        assert!(
            !e.iter().any(|e| matches!(e, LeaderEffect::Reply { .. })),
            "ISR 2 < min ISR 3: no answer yet: {e:?}"
        );
    }

    /// cluster_replication 225595114309733: an ISR addition in flight must keep bounding the
    /// high watermark until its answer (or the image) says what happened; a lost or
    /// out-of-date answer must not release it, and the accepted ISR applies at once.
    #[test]
    fn pending_addition_bounds_hw_until_a_definite_answer() {
        let mut l = leader(1, &[1, 2], Planted::none());
        step(
            &mut l,
            LeaderEvent::Appended {
                log_end_offset: 20,
                waiter: None,
            },
        );
        step(&mut l, fetch(2, 20, 1));
        assert_eq!(l.high_watermark(), 20);
        step(
            &mut l,
            LeaderEvent::Appended {
                log_end_offset: 30,
                waiter: None,
            },
        );
        // Replica 3 catches up to the high watermark: an addition is proposed.
        let e = step(&mut l, fetch(3, 20, 2));
        assert!(
            e.iter()
                .any(|e| matches!(e, LeaderEffect::AlterPartition { new_isr, .. }
                if *new_isr == vec![1, 2, 3])),
            "{e:?}"
        );
        // Replica 2 has everything; replica 3 still at 20: the HW waits for 3.
        step(&mut l, fetch(2, 30, 3));
        assert_eq!(l.high_watermark(), 20);
        // A lost answer is re-sent after two ticks, keeping the proposal pending meanwhile.
        let mut l = leader(1, &[1, 2], Planted::none());
        step(
            &mut l,
            LeaderEvent::Appended {
                log_end_offset: 30,
                waiter: None,
            },
        );
        step(&mut l, fetch(2, 10, 1));
        step(&mut l, fetch(3, 10, 1));
        step(&mut l, fetch(2, 30, 2));
        assert_eq!(l.high_watermark(), 10, "bounded by the joining replica 3");
        assert!(step(&mut l, LeaderEvent::Tick { now_ms: 3 })
            .iter()
            .all(|e| !matches!(e, LeaderEffect::AlterPartition { .. })));
        let e = step(&mut l, LeaderEvent::Tick { now_ms: 4 });
        assert!(
            e.iter()
                .any(|e| matches!(e, LeaderEffect::AlterPartition { new_isr, .. }
                if *new_isr == vec![1, 2, 3])),
            "re-sent: {e:?}"
        );
        // An acceptance of some other proposal is ignored; this one applies at epoch 10.
        let stale = LeaderEvent::AlterPartitionAccepted {
            new_isr: vec![1, 3],
            partition_epoch: 9,
        };
        assert!(step(&mut l, stale).is_empty());
        step(
            &mut l,
            LeaderEvent::AlterPartitionAccepted {
                new_isr: vec![1, 2, 3],
                partition_epoch: 9,
            },
        );
        assert_eq!((l.isr(), l.partition_epoch()), (&[1, 2, 3][..], 10));
        assert_eq!(l.high_watermark(), 10, "3 is in the ISR now");
        step(&mut l, fetch(3, 30, 5));
        assert_eq!(l.high_watermark(), 30);
    }

    /// What the simulator's `hw_safety` is told: the members counted (the leader and a
    /// pending addition included) with the log ends the high watermark was computed from.
    #[test]
    fn counted_log_ends_name_every_member_the_hw_counts() {
        let mut l = leader(2, &[1, 2], Planted::none());
        assert_eq!(l.counted_log_ends(), vec![(1, 10), (2, UNKNOWN_OFFSET)]);
        step(
            &mut l,
            LeaderEvent::Appended {
                log_end_offset: 14,
                waiter: None,
            },
        );
        step(&mut l, fetch(3, 10, 1));
        assert!(l.alter_partition_in_flight());
        step(&mut l, fetch(2, 12, 2));
        let counted = l.counted_log_ends();
        assert_eq!(counted, vec![(1, 14), (2, 12), (3, 10)]);
        assert_eq!(
            l.high_watermark(),
            counted.iter().map(|(_, leo)| *leo).min().unwrap_or(0)
        );
        assert_eq!(
            (l.local(), l.min_insync_replicas(), l.log_end_offset()),
            (1, 2, 14)
        );
    }

    #[test]
    fn hw_is_min_over_isr_and_acks_all_waits_for_it() {
        let mut l = leader(2, &[1, 2, 3], Planted::none());
        let e = step(
            &mut l,
            LeaderEvent::Appended {
                log_end_offset: 13,
                waiter: Some(1),
            },
        );
        assert!(e.is_empty(), "{e:?}");
        assert!(step(&mut l, fetch(2, 13, 1)).is_empty());
        let e = step(&mut l, fetch(3, 12, 1));
        assert_eq!(e, vec![LeaderEffect::HighWatermark(12)]);
        let e = step(&mut l, fetch(3, 13, 2));
        assert_eq!(
            e,
            vec![
                LeaderEffect::HighWatermark(13),
                LeaderEffect::Reply {
                    waiter: 1,
                    result: Ok(())
                }
            ]
        );
    }

    /// A waiter that needs nothing beyond the high watermark (an idempotent retry the log
    /// already holds, an empty coordinator write) is answered at once: the high watermark may
    /// never move again while the producer waits on it (the roles test's 30 s stall).
    #[test]
    fn a_waiter_the_hw_already_covers_is_answered_at_once() {
        let mut l = leader(2, &[1, 2, 3], Planted::none());
        step(
            &mut l,
            LeaderEvent::Appended {
                log_end_offset: 13,
                waiter: None,
            },
        );
        step(&mut l, fetch(2, 13, 1));
        assert_eq!(
            step(&mut l, fetch(3, 13, 1)),
            vec![LeaderEffect::HighWatermark(13)]
        );
        // The retried duplicate: the log end does not move.
        let e = step(
            &mut l,
            LeaderEvent::Appended {
                log_end_offset: 13,
                waiter: Some(7),
            },
        );
        assert_eq!(
            e,
            vec![LeaderEffect::Reply {
                waiter: 7,
                result: Ok(())
            }]
        );
        // One past it still waits for the ISR.
        let e = step(
            &mut l,
            LeaderEvent::Appended {
                log_end_offset: 14,
                waiter: Some(8),
            },
        );
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn lagging_follower_is_shrunk_and_hw_waits_for_the_commit() {
        let mut l = leader(1, &[1, 2, 3], Planted::none());
        step(
            &mut l,
            LeaderEvent::Appended {
                log_end_offset: 20,
                waiter: Some(7),
            },
        );
        step(&mut l, fetch(2, 20, 50));
        step(&mut l, fetch(3, 15, 50));
        assert_eq!(l.high_watermark(), 15);
        assert!(step(&mut l, LeaderEvent::Tick { now_ms: 100 }).is_empty());
        let e = step(&mut l, LeaderEvent::Tick { now_ms: 101 });
        let shrink = LeaderEffect::AlterPartition {
            leader_epoch: 5,
            partition_epoch: 9,
            new_isr: vec![1, 2],
            added: vec![],
        };
        assert_eq!(e, vec![shrink]);
        // The shrink is in flight: 3 still holds the HW back.
        assert!(step(&mut l, fetch(2, 20, 102)).is_empty());
        let e = step(
            &mut l,
            LeaderEvent::IsrCommitted {
                isr: vec![1, 2],
                leader_epoch: 5,
                partition_epoch: 10,
            },
        );
        assert_eq!(
            e,
            vec![
                LeaderEffect::HighWatermark(20),
                LeaderEffect::Reply {
                    waiter: 7,
                    result: Ok(())
                }
            ]
        );
        // 3 catches up: one expansion, counted in the HW at once (maximal ISR).
        step(
            &mut l,
            LeaderEvent::Appended {
                log_end_offset: 22,
                waiter: None,
            },
        );
        let e = step(&mut l, fetch(3, 20, 103));
        assert_eq!(
            e,
            vec![LeaderEffect::AlterPartition {
                leader_epoch: 5,
                partition_epoch: 10,
                new_isr: vec![1, 2, 3],
                added: vec![(3, 3)],
            }]
        );
        step(&mut l, fetch(2, 22, 104));
        assert_eq!(l.high_watermark(), 20, "pending member 3 counts");
        step(&mut l, fetch(3, 22, 105));
        assert_eq!(l.high_watermark(), 22);
    }

    #[test]
    fn strict_min_isr_holds_the_hw_and_refuses_acks_all() {
        for planted in [
            Planted::none(),
            Planted::none().with(crate::planted::ISR_HW_BELOW_MIN_ISR),
        ] {
            let mut l = leader(2, &[1], planted);
            assert_eq!(l.check_acks_all(), Err(code::NOT_ENOUGH_REPLICAS));
            let e = step(
                &mut l,
                LeaderEvent::Appended {
                    log_end_offset: 12,
                    waiter: Some(3),
                },
            );
            assert_eq!(
                e[0],
                LeaderEffect::Reply {
                    waiter: 3,
                    result: Err(code::NOT_ENOUGH_REPLICAS_AFTER_APPEND)
                }
            );
            let advanced = l.high_watermark() > 10;
            assert_eq!(advanced, planted.isr_hw_below_min_isr());
        }
    }

    #[test]
    fn expansion_needs_the_leader_epoch_start() {
        let mut l = leader(1, &[1], Planted::none());
        // HW 10 = epoch start 10; a follower at 9 is not in sync, at 10 it is.
        assert!(step(&mut l, fetch(2, 9, 1)).is_empty());
        assert_eq!(step(&mut l, fetch(2, 10, 2)).len(), 1);
        // One AlterPartition in flight at a time.
        assert!(step(&mut l, fetch(3, 10, 3)).is_empty());
        step(
            &mut l,
            LeaderEvent::AlterPartitionFailed {
                error: code::INVALID_UPDATE_VERSION,
            },
        );
        assert_eq!(step(&mut l, fetch(3, 10, 4)).len(), 1);
    }

    #[test]
    fn waiters_fail_on_resign_and_timeout() {
        let mut l = leader(1, &[1, 2], Planted::none());
        step(
            &mut l,
            LeaderEvent::Appended {
                log_end_offset: 11,
                waiter: Some(1),
            },
        );
        step(
            &mut l,
            LeaderEvent::Appended {
                log_end_offset: 12,
                waiter: Some(2),
            },
        );
        let e = step(&mut l, LeaderEvent::WaiterTimedOut { waiter: 1 });
        assert_eq!(
            e,
            vec![LeaderEffect::Reply {
                waiter: 1,
                result: Err(code::REQUEST_TIMED_OUT)
            }]
        );
        let mut e = Vec::new();
        l.resign(&mut e);
        assert_eq!(
            e,
            vec![LeaderEffect::Reply {
                waiter: 2,
                result: Err(code::NOT_LEADER_OR_FOLLOWER)
            }]
        );
    }

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::new();
        for (e, o) in entries {
            c.assign(*e, *o).unwrap();
        }
        c
    }

    /// KIP-279's double failover: the follower led epoch 2 briefly from offset 3, the new
    /// leader has epoch 1 up to 5. The answer must name epoch 1 so the follower cuts at 3.
    #[test]
    fn follower_truncates_to_divergence_not_to_hw() {
        let leader_cache = cache(&[(1, 0), (3, 5)]);
        let follower_cache = cache(&[(1, 0), (2, 3)]);
        let answer = offset_for_leader_epoch(&leader_cache, 7, 3, Some(3), 2, Planted::none());
        assert_eq!(answer, Ok((1, 5)));
        let step = follower_truncation(&follower_cache, 6, 1, answer.unwrap(), Planted::none());
        assert_eq!(step, TruncationStep::Done { truncate_to: 3 });
        // A follower that never had epoch 1 cuts to where its older epoch ends and asks again.
        let older = cache(&[(0, 0), (2, 3)]);
        let step = follower_truncation(&older, 6, 1, (1, 5), Planted::none());
        let expected = TruncationStep::Continue {
            truncate_to: 3,
            next_requested_epoch: 0,
        };
        assert_eq!(step, expected);

        // Planted bugs: the newer-epoch answer keeps divergent offsets 3 and 4; truncating to
        // the follower's own HW (1) cuts committed records.
        let bad = Planted::none().with(crate::planted::OFLE_NEWER_EPOCH);
        let answer = offset_for_leader_epoch(&leader_cache, 7, 3, Some(3), 2, bad).unwrap();
        assert_eq!(answer, (2, 5));
        let step = follower_truncation(&follower_cache, 6, 1, answer, Planted::none());
        assert_eq!(step, TruncationStep::Done { truncate_to: 5 });
        let to_hw = Planted::none().with(crate::planted::FOLLOWER_TRUNCATE_TO_HW);
        let step = follower_truncation(&follower_cache, 6, 1, (1, 5), to_hw);
        assert_eq!(step, TruncationStep::Done { truncate_to: 1 });
    }

    #[test]
    fn ofle_fences_other_epochs_and_unknown_epochs() {
        let c = cache(&[(1, 0), (3, 5)]);
        let none = Planted::none();
        assert_eq!(
            offset_for_leader_epoch(&c, 7, 3, Some(2), 1, none),
            Err(code::FENCED_LEADER_EPOCH)
        );
        assert_eq!(
            offset_for_leader_epoch(&c, 7, 3, Some(4), 1, none),
            Err(code::UNKNOWN_LEADER_EPOCH)
        );
        assert_eq!(offset_for_leader_epoch(&c, 7, 3, None, 3, none), Ok((3, 7)));
        let answer = offset_for_leader_epoch(&c, 7, 3, None, 4, none).unwrap();
        assert_eq!(answer, (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET));
        let follower = cache(&[(4, 0)]);
        assert_eq!(
            follower_truncation(&follower, 2, 0, answer, none),
            TruncationStep::LeaderUnaware
        );
        assert_eq!(
            follower_truncation(&LeaderEpochCache::new(), 0, 0, answer, none),
            TruncationStep::Done { truncate_to: 0 }
        );
    }
}
