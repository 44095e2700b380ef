//! The group coordinator's shell: holds the core behind a lock, hands each request a waiter,
//! executes the core's effects (replies go to their waiters; `Persist` appends record batches to
//! `__consumer_offsets` through the partition log and its group commit, in the order the core
//! made them, answering only once the records are durable under policy `fsync`), ticks the
//! core, and rebuilds it from the offsets topic at start. Never reads the wall clock except
//! through `Clock` (made monotonic here), and never names `std::fs`/`tokio::fs`.

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

struct Inner {
    core: Coordinator,
    waiters: BTreeMap<RequestId, oneshot::Sender<Reply>>,
    next_request: RequestId,
    last_now_ms: u64,
    /// The ticket the next `Persist` effect gets (tickets fix the order of appends).
    next_ticket: u64,
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
            }),
            write: tokio::sync::Mutex::new(()),
            order: watch::channel(0).0,
            appended_end: Mutex::new(BTreeMap::new()),
            offsets_partitions,
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
            tokio::spawn(async move {
                let result = persist(&broker, ticket, &group, records, entries).await;
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

/// The offsets partition of `group`, creating the offsets topic on first use.
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

/// Appends `records` as one batch to the group's offsets partition, applies commit `entries`
/// to the core in log order, and waits until the batch is durable (policy `fsync`).
async fn persist<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    ticket: u64,
    group: &str,
    records: Vec<(Bytes, Option<Bytes>)>,
    entries: Vec<super::CommitEntry>,
) -> Result<(), i16> {
    let (partition, appended) = {
        let done = TicketDone {
            order: &broker.groups.order,
            ticket,
        };
        let mut turn = broker.groups.order.subscribe();
        // The sender lives as long as `broker`: waiting cannot fail while we hold it.
        let _ = turn.wait_for(|next| *next >= ticket).await;
        let _order = broker.groups.write.lock().await;
        let now_ms = broker.clock.now_ms();
        if records.is_empty() {
            // Nothing to write: wait until what was appended before is durable.
            let index = schema::partition_for(group, broker.groups.offsets_partitions);
            let end = broker
                .groups
                .appended_end
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&index)
                .copied();
            drop(done);
            let (Some(end), Some(partition)) = (end, broker.partition(OFFSETS_TOPIC, index)) else {
                return Ok(());
            };
            return wait_durable(&partition, end).await;
        }
        let partition = offsets_partition(broker, group).await?;
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
        let appended = partition.append(bytes, now_ms).await?;
        broker
            .groups
            .appended_end
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(partition.index, appended.end_offset);
        if !entries.is_empty() {
            let group = group.to_string();
            let effects = broker
                .groups
                .step(now_ms, Event::OffsetsAppended { group, entries });
            assert!(effects.is_empty(), "applying a commit produced effects");
        }
        drop(done);
        (partition, appended)
    };
    wait_durable(&partition, appended.end_offset).await
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
