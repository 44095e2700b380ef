//! The group coordinator's shell: holds the core behind a lock, hands each request a waiter,
//! executes the core's effects (replies go to their waiters; `Persist` appends record batches to
//! `__consumer_offsets` through the partition log and its group commit, in the order the core
//! made them, answering only once the records are durable under policy `fsync`), ticks the
//! core, and rebuilds it from the offsets topic at start. Never reads the wall clock except
//! through `Clock` (made monotonic here), and never names `std::fs`/`tokio::fs`.
//!
//! Cluster mode: `__consumer_offsets` is a replicated topic and the leader of its partition
//! p(g) coordinates group g. A node loads partition p into the core when it becomes its leader
//! (`begin_load`, `load`) and drops p's groups when it stops leading it (`unload`); requests
//! for a group are served only while its partition is loaded in the leader epoch this node
//! leads (`Broker::serve_group`). A commit is answered, and applied to the core, only once
//! its batch is durable and covered by the partition's high watermark (the whole ISR has it):
//! an acknowledged commit survives the loss of the coordinator, and OffsetFetch never shows a
//! commit a failover could take back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use samsa_net::error::code;
use samsa_net::records::{build_batch, decode_records, next_offset_after, BatchOptions, Record};
use samsa_net::watch;
use samsa_net::Clock;
use samsa_storage::Disk;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{schema, Coordinator, Effect, Event, GroupConfig, Reply, RequestId, SyncReply};
use crate::broker::Broker;
use crate::group_commit::Outcome;
use crate::metadata::MetaError;
use crate::partition::Partition;
use crate::topic_config::FlushPolicy;

/// The internal topic that keeps committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Most requests waiting on the coordinator at once; beyond it requests are refused.
pub const WAITERS_MAX: usize = 100_000;
/// How often the core is ticked (session expiry and join deadlines have this resolution).
pub const TICK_MS: u64 = 50;
/// Bytes read per step while replaying the offsets topic.
pub const REPLAY_READ_BYTES: usize = 1 << 20;
/// Most reads one replay of one partition makes (a bound on the loop, far above real sizes).
pub const REPLAY_READS_MAX: usize = 10_000_000;
/// Cluster mode: longest a commit waits for the ISR (Kafka's `offsets.commit.timeout.ms`);
/// then it is answered REQUEST_TIMED_OUT (and may still land).
pub const COMMIT_REPLICATION_TIMEOUT_MS: u64 = 5_000;
/// Cluster mode: attempts to read an offsets partition while loading it, and the pause
/// between them, before the load is given up (the partition then stays unserved until its
/// leadership changes again).
pub const LOAD_ATTEMPTS_MAX: u32 = 20;
pub const LOAD_RETRY_MS: u64 = 250;
/// Cluster mode: records one load of one offsets partition may hold in memory at once.
pub const LOAD_RECORDS_MAX: usize = 50_000_000;

/// Cluster mode: an offsets partition this node leads, by the leader epoch it leads it in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// Being read into the core; its groups are answered COORDINATOR_LOAD_IN_PROGRESS.
    Loading(i32),
    /// In the core; its groups are served.
    Loaded(i32),
}

struct Inner {
    core: Coordinator,
    waiters: BTreeMap<RequestId, oneshot::Sender<Reply>>,
    next_request: RequestId,
    last_now_ms: u64,
    /// The ticket the next `Persist` effect gets (tickets fix the order of appends).
    next_ticket: u64,
    /// Cluster mode: the offsets partitions this node leads, by index.
    loads: BTreeMap<i32, Load>,
}

/// A `Persist` effect with its place in the append order.
pub struct Pending {
    ticket: u64,
    effect: Effect,
}

/// Advances the append order past one ticket when dropped (also on error, cancel or panic),
/// so a failed persist never stalls the ones after it.
struct TicketDone<'a> {
    order: &'a watch::Sender<u64>,
    ticket: u64,
}

impl Drop for TicketDone<'_> {
    fn drop(&mut self) {
        let next = self.ticket + 1;
        self.order.send_modify(|n| *n = (*n).max(next));
    }
}

/// The coordinator as the broker holds it.
pub struct Groups {
    inner: Mutex<Inner>,
    /// Serialises appends to the offsets topic, so log order is the order commits are applied.
    write: tokio::sync::Mutex<()>,
    /// The ticket whose records may be appended next: records reach the log in the order the
    /// core produced them (a later snapshot of a key never lands before an earlier one).
    order: watch::Sender<u64>,
    /// End offset of the last append per offsets partition (what an empty persist waits for).
    appended_end: Mutex<BTreeMap<i32, i64>>,
    /// `offsets.topic.num.partitions`.
    pub offsets_partitions: i32,
    /// Cluster mode: a creation of `__consumer_offsets` through the controller is under way.
    pub creating_offsets_topic: std::sync::atomic::AtomicBool,
}

impl Groups {
    pub fn new(config: GroupConfig, boot_stamp: u64, offsets_partitions: i32) -> Groups {
        assert!(offsets_partitions > 0);
        Groups {
            inner: Mutex::new(Inner {
                core: Coordinator::new(config, boot_stamp),
                waiters: BTreeMap::new(),
                next_request: 0,
                last_now_ms: 0,
                next_ticket: 0,
                loads: BTreeMap::new(),
            }),
            write: tokio::sync::Mutex::new(()),
            order: watch::channel(0).0,
            appended_end: Mutex::new(BTreeMap::new()),
            offsets_partitions,
            creating_offsets_topic: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Installs the node's hooks in the core (the simulator's planted bugs).
    pub fn set_hooks(&self, hooks: samsa_net::Hooks) {
        self.lock().core.set_hooks(hooks);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock is a broken invariant that already surfaced.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the core (DescribeGroups, ListGroups, OffsetFetch).
    pub fn read<T>(&self, f: impl FnOnce(&Coordinator) -> T) -> T {
        f(&self.lock().core)
    }

    /// Steps the core with an event for a new request; replies are delivered at once, the other
    /// effects are returned for `run_effects`. `None` when too many requests wait already.
    pub fn submit(
        &self,
        now_ms: i64,
        make: impl FnOnce(RequestId) -> Event,
    ) -> Option<(oneshot::Receiver<Reply>, Vec<Pending>)> {
        let mut inner = self.lock();
        if inner.waiters.len() >= WAITERS_MAX {
            return None;
        }
        let request = inner.next_request;
        inner.next_request += 1;
        let (tx, rx) = oneshot::channel();
        inner.waiters.insert(request, tx);
        let effects = step_locked(&mut inner, now_ms, make(request));
        Some((rx, effects))
    }

    /// Steps the core with an event that has no waiter of its own.
    pub fn step(&self, now_ms: i64, event: Event) -> Vec<Pending> {
        step_locked(&mut self.lock(), now_ms, event)
    }

    fn answer(&self, request: RequestId, reply: Reply) {
        if let Some(tx) = self.lock().waiters.remove(&request) {
            let _ = tx.send(reply);
        }
    }

    /// Applies a committed `OffsetsAppended` to the core; in cluster mode (`expected` is
    /// `Some`) only while the partition is still loaded in that epoch (else the coordinator
    /// that loads it next reads the commit from the log).
    fn apply_committed(&self, index: i32, expected: Option<Option<i32>>, now_ms: i64, e: Event) {
        let mut inner = self.lock();
        if let Some(expected) = expected {
            let loaded = inner.loads.get(&index).copied();
            if expected.is_none() || loaded != expected.map(Load::Loaded) {
                return;
            }
        }
        let effects = step_locked(&mut inner, now_ms, e);
        assert!(effects.is_empty(), "applying a commit produced effects");
    }

    /// Cluster mode: the load state of offsets partition `index` on this node.
    pub fn load_state(&self, index: i32) -> Option<Load> {
        self.lock().loads.get(&index).copied()
    }

    /// Cluster mode: this node leads offsets partition `index` in `epoch`. True when a load
    /// must start (the caller runs `load`); a load of an older epoch is dropped first.
    pub fn begin_load(&self, index: i32, epoch: i32, partitions: i32) -> bool {
        let mut inner = self.lock();
        match inner.loads.get(&index) {
            Some(Load::Loading(e) | Load::Loaded(e)) if *e == epoch => return false,
            Some(_) => unload_locked(&mut inner, index, partitions),
            None => {}
        }
        inner.loads.insert(index, Load::Loading(epoch));
        true
    }

    /// Cluster mode: offsets partition `index`, loaded in `epoch`, goes back to loading (its
    /// groups leave the core). False when it is not loaded in that epoch (nothing to do).
    pub fn reload(&self, index: i32, epoch: i32, partitions: i32) -> bool {
        let mut inner = self.lock();
        if inner.loads.get(&index) != Some(&Load::Loaded(epoch)) {
            return false;
        }
        unload_locked(&mut inner, index, partitions);
        inner.loads.insert(index, Load::Loading(epoch));
        true
    }

    /// Cluster mode: this node no longer leads offsets partition `index`: its groups leave
    /// the core and their waiting members are answered NOT_COORDINATOR.
    pub fn unload(&self, index: i32, partitions: i32) {
        // A deleted offsets topic has no count left: use the configured one.
        let partitions = if partitions > 0 {
            partitions
        } else {
            self.offsets_partitions
        };
        let mut inner = self.lock();
        if inner.loads.contains_key(&index) {
            unload_locked(&mut inner, index, partitions);
            tracing::info!(partition = index, "offsets partition unloaded");
        }
    }

    /// Cluster mode: reads offsets partition `index` (this node leads it in `epoch`) from its
    /// log start to its log end into the core, then serves its groups. Nothing is applied if
    /// leadership moved meanwhile (`begin_load`/`unload` changed the state).
    pub async fn load<D: Disk, C: Clock>(
        broker: Arc<Broker<D, C>>,
        index: i32,
        epoch: i32,
        partitions: i32,
    ) {
        let groups = &broker.groups;
        for attempt in 0..LOAD_ATTEMPTS_MAX {
            // Appends wait while the partition is read: a persist of an earlier term of ours
            // either landed before the read (and is read) or finds the load state changed.
            let _appends = groups.write.lock().await;
            if groups.load_state(index) != Some(Load::Loading(epoch)) {
                return;
            }
            let Some(p) = broker.partition(OFFSETS_TOPIC, index) else {
                break;
            };
            let stored = match read_all(&p).await {
                Ok(records) => records,
                Err(e) => {
                    drop(_appends);
                    tracing::warn!(partition = index, attempt, "loading offsets: {e}");
                    tokio::time::sleep(Duration::from_millis(LOAD_RETRY_MS)).await;
                    continue;
                }
            };
            let now = u64::try_from(broker.clock.now_ms()).unwrap_or(0);
            let mut inner = groups.lock();
            if inner.loads.get(&index) != Some(&Load::Loading(epoch)) {
                return;
            }
            // Nothing of this partition may be left from an earlier term of ours.
            unload_locked(&mut inner, index, partitions);
            let records = stored.len();
            for record in stored {
                inner.core.replay(record);
            }
            let now = now.max(inner.last_now_ms);
            inner
                .core
                .finish_replay_of(now, |g| schema::partition_for(g, partitions) == index);
            inner.loads.insert(index, Load::Loaded(epoch));
            drop(inner);
            tracing::info!(
                partition = index,
                epoch,
                records,
                "offsets partition loaded"
            );
            return;
        }
        tracing::error!(partition = index, epoch, "offsets partition not loaded");
    }

    /// Rebuilds the core from `__consumer_offsets` (start-up; before the node serves).
    pub async fn replay<D: Disk, C: Clock>(&self, broker: &Broker<D, C>) {
        let mut records = 0usize;
        for index in 0..self.offsets_partitions {
            let Some(p) = broker.partition(OFFSETS_TOPIC, index) else {
                continue;
            };
            let mut offset = p.log_start_offset().await;
            for _ in 0..REPLAY_READS_MAX {
                let bytes = match p.read(offset, REPLAY_READ_BYTES, true).await {
                    Ok(b) if !b.is_empty() => b,
                    Ok(_) => break,
                    Err(c) => {
                        tracing::error!(partition = index, offset, code = c, "offsets replay");
                        break;
                    }
                };
                let decoded = match decode_records(&bytes) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::error!(partition = index, offset, "offsets replay: {e:?}");
                        break;
                    }
                };
                {
                    let mut inner = self.lock();
                    for (_, record) in decoded {
                        let Some(key) = record.key.as_deref() else {
                            continue;
                        };
                        if let Some(stored) = schema::decode(key, record.value.as_deref()) {
                            inner.core.replay(stored);
                            records += 1;
                        }
                    }
                }
                match next_offset_after(&bytes) {
                    Some(next) if next > offset => offset = next,
                    _ => break,
                }
            }
        }
        let now = u64::try_from(broker.clock.now_ms()).unwrap_or(0);
        {
            let mut inner = self.lock();
            let now = now.max(inner.last_now_ms);
            inner.core.finish_replay(now);
        }
        tracing::info!(records, "group coordinator state replayed");
    }
}

/// Drops offsets partition `index`'s groups from the core and its load state; answers the
/// requests they held.
fn unload_locked(inner: &mut Inner, index: i32, partitions: i32) {
    inner.loads.remove(&index);
    let mut effects = Vec::new();
    inner.core.unload(
        |g| schema::partition_for(g, partitions) == index,
        &mut effects,
    );
    for effect in effects {
        if let Effect::Reply { request, reply } = effect {
            if let Some(tx) = inner.waiters.remove(&request) {
                let _ = tx.send(reply);
            }
        }
    }
}

/// Every `__consumer_offsets` record of `p`, log start to log end (a leader's whole log: what
/// it holds above the high watermark is committed by this leader or by nobody).
async fn read_all<D: Disk>(p: &Partition<D>) -> Result<Vec<schema::Stored>, String> {
    let mut out = Vec::new();
    let mut offset = p.log_start_offset().await;
    for _ in 0..REPLAY_READS_MAX {
        let bytes = match p.read_replica(offset, REPLAY_READ_BYTES).await {
            Ok(b) if !b.is_empty() => b,
            Ok(_) => return Ok(out),
            Err(c) if c == code::OFFSET_OUT_OF_RANGE && offset == p.log_end_offset().await => {
                return Ok(out)
            }
            Err(c) => return Err(format!("read at {offset}: error {c}")),
        };
        let decoded = decode_records(&bytes).map_err(|e| format!("decode at {offset}: {e:?}"))?;
        for (_, record) in decoded {
            let Some(key) = record.key.as_deref() else {
                continue;
            };
            if let Some(stored) = schema::decode(key, record.value.as_deref()) {
                if out.len() >= LOAD_RECORDS_MAX {
                    return Err(format!("more than {LOAD_RECORDS_MAX} records"));
                }
                out.push(stored);
            }
        }
        match next_offset_after(&bytes) {
            Some(next) if next > offset => offset = next,
            _ => return Ok(out),
        }
    }
    Ok(out)
}

/// The number of `__consumer_offsets` partitions: the image's in cluster mode (once the topic
/// exists), `offsets.topic.num.partitions` otherwise.
pub fn offsets_partitions<D: Disk, C: Clock>(broker: &Broker<D, C>) -> i32 {
    match broker.cluster.get() {
        Some(c) => match c.partition_count(OFFSETS_TOPIC) {
            0 => broker.groups.offsets_partitions,
            n => n,
        },
        None => broker.groups.offsets_partitions,
    }
}

fn step_locked(inner: &mut Inner, now_ms: i64, event: Event) -> Vec<Pending> {
    // The core needs time that never runs backwards; the wall clock may step back.
    let now = u64::try_from(now_ms).unwrap_or(0).max(inner.last_now_ms);
    inner.last_now_ms = now;
    let mut effects = Vec::new();
    inner.core.step(now, event, &mut effects);
    let mut rest = Vec::new();
    for effect in effects {
        match effect {
            Effect::Reply { request, reply } => {
                if let Some(tx) = inner.waiters.remove(&request) {
                    let _ = tx.send(reply);
                }
            }
            other => {
                let ticket = inner.next_ticket;
                inner.next_ticket += 1;
                rest.push(Pending {
                    ticket,
                    effect: other,
                });
            }
        }
    }
    rest
}

/// Executes the effects `submit`/`step` returned, each `Persist` in its own task.
pub fn spawn_effects<D: Disk, C: Clock>(broker: &Arc<Broker<D, C>>, effects: Vec<Pending>) {
    for Pending { ticket, effect } in effects {
        if let Effect::Persist {
            request,
            group,
            records,
            entries,
            then,
        } = effect
        {
            let broker = broker.clone();
            // Cluster mode: the records may only be appended while the group's partition is
            // still loaded in the epoch it is loaded in now, when the core made them.
            let index = schema::partition_for(&group, offsets_partitions(&broker));
            let expected = match broker.cluster.get() {
                Some(_) => match broker.groups.load_state(index) {
                    Some(Load::Loaded(e)) => Some(Some(e)),
                    _ => Some(None),
                },
                None => None,
            };
            tokio::spawn(async move {
                let at = Target {
                    index,
                    expected,
                    ticket,
                };
                let result = persist(&broker, at, &group, records, entries).await;
                for (waiting, reply) in then {
                    let reply = match (&result, reply) {
                        (Ok(()), reply) => reply,
                        (Err(c), Reply::Sync(_)) => Reply::Sync(SyncReply::error(*c)),
                        (Err(c), Reply::OffsetsDeleted(_)) => Reply::Offsets(*c),
                        (Err(c), Reply::ConsumerHeartbeat(r)) => {
                            Reply::ConsumerHeartbeat(super::consumer::HeartbeatReply {
                                error: *c,
                                heartbeat_interval_ms: 0,
                                assignment: None,
                                ..r
                            })
                        }
                        (Err(_), reply) => reply,
                    };
                    broker.groups.answer(waiting, reply);
                }
                if let Some(request) = request {
                    let c = match result {
                        Ok(()) => code::NONE,
                        Err(c) => c,
                    };
                    broker.groups.answer(request, Reply::Offsets(c));
                } else if let Err(c) = result {
                    tracing::warn!(group = %group, code = c, "group metadata not persisted");
                }
            });
        }
    }
}

/// Where a `Persist` goes: the offsets partition, the load epoch it must still be loaded in
/// (cluster mode: `Some(None)` when it was not loaded at all), and its append ticket.
struct Target {
    index: i32,
    expected: Option<Option<i32>>,
    ticket: u64,
}

/// The offsets partition of `group` on a single node, creating the offsets topic on first use.
async fn offsets_partition<D: Disk, C: Clock>(
    broker: &Broker<D, C>,
    group: &str,
) -> Result<Arc<Partition<D>>, i16> {
    let index = schema::partition_for(group, broker.groups.offsets_partitions);
    if let Some(p) = broker.partition(OFFSETS_TOPIC, index) {
        return Ok(p);
    }
    let configs = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
    match broker
        .create_topic(OFFSETS_TOPIC, broker.groups.offsets_partitions, configs)
        .await
    {
        Ok(_) | Err(MetaError::TopicExists) => {}
        Err(e) => {
            tracing::error!("cannot create {OFFSETS_TOPIC}: {e}");
            return Err(code::COORDINATOR_NOT_AVAILABLE);
        }
    }
    broker
        .partition(OFFSETS_TOPIC, index)
        .ok_or(code::COORDINATOR_NOT_AVAILABLE)
}

/// Cluster mode: the offsets partition `at` names, while this node still leads it in the
/// epoch the group was served in (NOT_COORDINATOR otherwise).
fn led_partition<D: Disk, C: Clock>(
    broker: &Broker<D, C>,
    at: &Target,
    expected: Option<i32>,
) -> Result<Arc<Partition<D>>, i16> {
    let epoch = expected.ok_or(code::NOT_COORDINATOR)?;
    if broker.groups.load_state(at.index) != Some(Load::Loaded(epoch)) {
        return Err(code::NOT_COORDINATOR);
    }
    broker
        .partition(OFFSETS_TOPIC, at.index)
        .filter(|p| p.leader_slot_epoch() == Some(epoch))
        .ok_or(code::NOT_COORDINATOR)
}

/// Cluster mode: an append the core's state already counted on was refused. The partition's
/// groups leave the core (their waiters answered NOT_COORDINATOR) and are read again from the
/// log, which holds exactly what was appended; called in the refused append's turn, so no
/// later append lands before the state is marked as loading (their turn then refuses them).
fn reload_after_refused_append<D: Disk, C: Clock>(broker: &Arc<Broker<D, C>>, at: &Target) {
    let Some(Some(epoch)) = at.expected else {
        return;
    };
    let partitions = offsets_partitions(broker);
    if broker.groups.reload(at.index, epoch, partitions) {
        tracing::warn!(
            partition = at.index,
            epoch,
            "offsets append refused: reloading"
        );
        tokio::spawn(Groups::load(broker.clone(), at.index, epoch, partitions));
    }
}

/// Kafka's translation of an offsets-topic append error into what group clients understand.
fn group_code(c: i16) -> i16 {
    match c {
        code::NOT_LEADER_OR_FOLLOWER | code::KAFKA_STORAGE_ERROR | code::FENCED_LEADER_EPOCH => {
            code::NOT_COORDINATOR
        }
        code::NOT_ENOUGH_REPLICAS
        | code::NOT_ENOUGH_REPLICAS_AFTER_APPEND
        | code::UNKNOWN_TOPIC_OR_PARTITION => code::COORDINATOR_NOT_AVAILABLE,
        code::MESSAGE_TOO_LARGE | code::RECORD_LIST_TOO_LARGE => code::INVALID_COMMIT_OFFSET_SIZE,
        other => other,
    }
}

/// Appends `records` as one batch to the group's offsets partition (in ticket order), waits
/// until the batch is committed (durable under policy `fsync`; in cluster mode also covered
/// by the high watermark), then applies commit `entries` to the core.
async fn persist<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    at: Target,
    group: &str,
    records: Vec<(Bytes, Option<Bytes>)>,
    entries: Vec<super::CommitEntry>,
) -> Result<(), i16> {
    let in_cluster = at.expected.is_some();
    let (partition, end, replicated) = {
        let done = TicketDone {
            order: &broker.groups.order,
            ticket: at.ticket,
        };
        let mut turn = broker.groups.order.subscribe();
        // The sender lives as long as `broker`: waiting cannot fail while we hold it.
        let _ = turn.wait_for(|next| *next >= at.ticket).await;
        let _order = broker.groups.write.lock().await;
        let now_ms = broker.clock.now_ms();
        let partition = match at.expected {
            Some(expected) => led_partition(broker, &at, expected)?,
            None if records.is_empty() => match broker.partition(OFFSETS_TOPIC, at.index) {
                Some(p) => p,
                None => return Ok(()),
            },
            None => offsets_partition(broker, group).await?,
        };
        if records.is_empty() {
            // Nothing to write: wait until what the core's state rests on is committed. In
            // cluster mode that is the whole log this leader holds: a coordinator that just
            // loaded its partition may hold records above the high watermark (its
            // predecessor's, not committed yet) and must not answer from them before they are
            // (simulator cluster_groups 2102, 5627: a member epoch handed out twice). On a
            // single node: the end of its own last append, at most the log end (a truncation
            // since may have cut below it; simulator cluster_groups 948).
            let log_end = partition.log_end_offset().await;
            let end = match in_cluster {
                true => Some(log_end),
                false => broker
                    .groups
                    .appended_end
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&at.index)
                    .map(|end| (*end).min(log_end)),
            };
            drop(done);
            let Some(end) = end else {
                return Ok(());
            };
            let replicated = match in_cluster {
                true => Some(isr_waiter(broker, &partition, end)?),
                false => None,
            };
            return committed(&partition, end, replicated).await;
        }
        let batch: Vec<Record> = records
            .into_iter()
            .map(|(key, value)| Record {
                key: Some(key),
                value,
                headers: Vec::new(),
                timestamp_ms: now_ms,
            })
            .collect();
        let bytes = build_batch(&batch, &BatchOptions::default()).freeze();
        let admitted = match in_cluster {
            true => partition.check_acks_all(),
            false => Ok(()),
        };
        let appended = match admitted {
            Ok(()) => partition.append(bytes, now_ms).await,
            Err(c) => Err(c),
        };
        let appended = match appended {
            Ok(a) => a,
            Err(c) if in_cluster => {
                // The core already applied these records to its state (and later steps may
                // build on them): rebuild it from the log, before the next append's turn
                // (simulator cluster_groups 2102: a refused append broke the chain of a KIP-848
                // group's records, the next coordinator dropped the group as inconsistent and
                // handed its member epochs out again).
                reload_after_refused_append(broker, &at);
                return Err(group_code(c));
            }
            Err(c) => return Err(c),
        };
        broker
            .groups
            .appended_end
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(partition.index, appended.end_offset);
        let replicated = match in_cluster {
            true => Some(isr_waiter(broker, &partition, appended.end_offset)?),
            false => None,
        };
        drop(done);
        // Planted bug `offsets_ack_before_isr` (simulation builds only): answer a commit once
        // it is durable here, without waiting for the ISR.
        let replicated = replicated.filter(|_| !broker.hooks.mutant("offsets_ack_before_isr"));
        (partition, appended.end_offset, replicated)
    };
    committed(&partition, end, replicated).await?;
    if !entries.is_empty() {
        let event = Event::OffsetsAppended {
            group: group.to_string(),
            entries,
            position: end,
        };
        broker
            .groups
            .apply_committed(at.index, at.expected, broker.clock.now_ms(), event);
    }
    Ok(())
}

/// Cluster mode: a waiter the leader core answers once its high watermark covers `end`
/// (NOT_COORDINATOR when this node no longer leads the partition).
fn isr_waiter<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    partition: &Arc<Partition<D>>,
    end: i64,
) -> Result<crate::replication::AcksAllWait, i16> {
    let (alter, waiter) = partition.leader_appended(end, true);
    crate::replication::send_alter_partitions(broker, partition, alter);
    waiter.ok_or(code::NOT_COORDINATOR)
}

/// Waits until the offsets partition is durable below `end` (policy `fsync`) and, in cluster
/// mode, until the leader's high watermark covers it (`replicated`, at most
/// `COMMIT_REPLICATION_TIMEOUT_MS`).
async fn committed<D: Disk>(
    partition: &Arc<Partition<D>>,
    end: i64,
    replicated: Option<crate::replication::AcksAllWait>,
) -> Result<(), i16> {
    let durable = wait_durable(partition, end).await;
    let Some((waiter, rx)) = replicated else {
        return durable;
    };
    durable.map_err(group_code)?;
    let limit = Duration::from_millis(COMMIT_REPLICATION_TIMEOUT_MS);
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(c))) => Err(group_code(c)),
        Ok(Err(_)) => Err(code::NOT_COORDINATOR),
        Err(_) => {
            // Forgetting a waiter never changes the ISR: no AlterPartition to send.
            let _ = partition
                .leader_step(samsa_cluster::replica::LeaderEvent::WaiterTimedOut { waiter });
            Err(code::REQUEST_TIMED_OUT)
        }
    }
}

/// Waits until the offsets partition is durable below `end` (policy `fsync`; else at once).
async fn wait_durable<D: Disk>(partition: &Arc<Partition<D>>, end: i64) -> Result<(), i16> {
    if partition.config().flush_policy != FlushPolicy::Fsync {
        return Ok(());
    }
    match partition.wait_durable(end).await {
        Ok(Outcome::Durable) => Ok(()),
        Ok(Outcome::Refused) => Err(code::REQUEST_TIMED_OUT),
        Ok(Outcome::Failed) | Err(_) => Err(code::KAFKA_STORAGE_ERROR),
    }
}

/// The coordinator's timer: ticks the core every `TICK_MS` until `stop` turns true.
pub fn spawn_tick<D: Disk, C: Clock>(
    broker: Arc<Broker<D, C>>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(TICK_MS));
        loop {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                _ = tick.tick() => {}
            }
            let effects = broker.groups.step(broker.clock.now_ms(), Event::Tick);
            spawn_effects(&broker, effects);
        }
    })
}
