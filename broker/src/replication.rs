//! Partition replication in cluster mode (issue 4, phase B): the shell around
//! `samsa_cluster::replica`. Leader side: `LeaderSlot` holds a partition's `PartitionLeader`
//! core next to the `Partition`, feeds it appends and follower fetches, applies its high
//! watermark and answers acks=all waiters; its AlterPartition effects go to the controller.
//! Follower side: `run_follower` fetches from the leader's client listener (OffsetForLeaderEpoch
//! first, KIP-279 truncation, then Fetch with our replica id) and appends with
//! `Partition::append_replicated`. Each high-watermark advance is reported to the simulator's
//! hooks with the facts it was computed from (`observe_hw`; nothing outside simulation builds).
//! Never reads a wall clock (time from `Clock`), never draws randomness, never panics on bytes
//! from the leader (every bad answer is an error code and a back-off), never runs on a single
//! node (nothing here is reached without `voters`), and every loop has a bound or a stop signal.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{
    fetch_request, offset_for_leader_epoch_request, ApiKey, BrokerId as KBrokerId, FetchRequest,
    FetchResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use samsa_cluster::planted::Planted;
use samsa_cluster::replica::{
    first_requested_epoch, follower_truncation, LeaderConfig, LeaderEffect, LeaderEvent,
    LeaderStart, PartitionLeader, TruncationStep, WaiterId,
};
use samsa_net::error::{code, ErrorCode};
use samsa_net::frame::{read_frame, write_frame};
use samsa_net::hooks::{HwAdvance, Observation};
use samsa_net::{watch, Clock, Hooks, Net};
use samsa_storage::log::epoch_cache::UNDEFINED_EPOCH;
use samsa_storage::{Disk, LogError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use crate::broker::Broker;
use crate::group_commit::Outcome;
use crate::partition::Partition;
use crate::topic_config::FlushPolicy;

/// Kafka's `replica.lag.time.max.ms`: a follower that has not caught up for this long leaves
/// the ISR. The leader ticks its cores every half of it.
pub const REPLICA_LAG_TIME_MAX_MS: i64 = 10_000;
/// How long a follower's Fetch may wait at the leader for new data.
pub const FOLLOWER_FETCH_MAX_WAIT_MS: i32 = 500;
/// Most record bytes one follower fetch asks for.
pub const FOLLOWER_FETCH_MAX_BYTES: i32 = 1 << 20;
/// Largest answer a follower reads from the leader (the fetch limit plus headers, with room
/// for KIP-74's one oversized batch up to the largest message the broker accepts).
pub const FOLLOWER_RESPONSE_BYTES_MAX: usize = 16 << 20;
/// A follower's pause after an error before it asks the leader again.
pub const FOLLOWER_BACKOFF_MS: u64 = 200;
/// How long one request of a follower (connect, send, answer) may take beyond its long poll.
pub const FOLLOWER_RPC_TIMEOUT_MS: u64 = 5_000;
/// Most OffsetForLeaderEpoch rounds of one truncation (KIP-279 walks back one epoch a round).
pub const TRUNCATION_ROUNDS_MAX: usize = 1_000;
/// Fetch and OffsetForLeaderEpoch versions a follower sends (both name topics, not ids).
const FETCH_VERSION: i16 = 12;
const OFLE_VERSION: i16 = 4;

/// A byte stream from the type-erased connector (the node's `Net` behind it).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
pub type BoxStream = Box<dyn Stream>;
/// An acks=all produce's wait on the leader core: its waiter id and the answer.
pub type AcksAllWait = (WaiterId, oneshot::Receiver<Result<(), ErrorCode>>);
pub type ConnectFuture<'a> = Pin<Box<dyn Future<Output = io::Result<BoxStream>> + Send + 'a>>;

/// Opens connections to peers (the node's `Net`, so the simulator's network is used in sim).
pub trait Connect: Send + Sync {
    fn connect(&self, addr: SocketAddr) -> ConnectFuture<'_>;
}

/// `Connect` over a `Net`.
pub struct NetConnect<N: Net>(pub N);

impl<N: Net> Connect for NetConnect<N> {
    fn connect(&self, addr: SocketAddr) -> ConnectFuture<'_> {
        Box::pin(async move {
            let stream = self.0.connect(addr).await?;
            Ok(Box::new(stream) as BoxStream)
        })
    }
}

/// The leader side of one partition: its core and the acks=all produces waiting on it.
pub struct LeaderSlot {
    pub topic_id: u128,
    pub core: PartitionLeader,
    next_waiter: WaiterId,
    waiters: BTreeMap<WaiterId, oneshot::Sender<Result<(), ErrorCode>>>,
    /// The largest log end offset fed to the core (appends may finish out of order).
    fed_log_end: i64,
}

impl LeaderSlot {
    pub fn new(topic_id: u128, core: PartitionLeader, log_end_offset: i64) -> LeaderSlot {
        LeaderSlot {
            topic_id,
            core,
            next_waiter: 0,
            waiters: BTreeMap::new(),
            fed_log_end: log_end_offset,
        }
    }

    pub fn leader_epoch(&self) -> i32 {
        self.core.leader_epoch()
    }

    /// The largest log end offset fed to the core.
    pub fn fed_log_end(&self) -> i64 {
        self.fed_log_end
    }
}

/// What a core step asks of the shell beyond the partition itself.
pub struct SlotOutcome {
    pub high_watermark: Option<i64>,
    pub alter: Vec<LeaderEffect>,
    /// The core's high watermark before the step.
    pub high_watermark_before: i64,
}

/// Steps a slot's core and delivers its replies; returns the high watermark to apply and the
/// AlterPartition effects to send.
pub fn step_slot(slot: &mut LeaderSlot, event: LeaderEvent) -> SlotOutcome {
    let before = slot.core.high_watermark();
    let mut effects = Vec::new();
    slot.core.step(event, &mut effects);
    let mut out = deliver(slot, effects);
    out.high_watermark_before = before;
    out
}

/// Reports the high-watermark advance of a step (if it made one) to the simulator's hooks,
/// with what the core computed it from; nothing at all outside simulation builds. Call it with
/// the slot still locked, right after the step.
pub fn observe_hw(hooks: &Hooks, slot: &LeaderSlot, partition: i32, outcome: &SlotOutcome) {
    let Some(to) = outcome.high_watermark else {
        return;
    };
    hooks.observe(|| {
        Observation::HighWatermark(HwAdvance {
            node: slot.core.local(),
            topic_id: slot.topic_id,
            partition,
            leader_epoch: slot.core.leader_epoch(),
            partition_epoch: slot.core.partition_epoch(),
            from: outcome.high_watermark_before,
            to,
            leader_log_end: slot.core.log_end_offset(),
            min_insync_replicas: slot.core.min_insync_replicas(),
            isr: slot.core.isr().to_vec(),
            counted: slot.core.counted_log_ends(),
        })
    });
}

fn deliver(slot: &mut LeaderSlot, effects: Vec<LeaderEffect>) -> SlotOutcome {
    let mut out = SlotOutcome {
        high_watermark: None,
        alter: Vec::new(),
        high_watermark_before: slot.core.high_watermark(),
    };
    for effect in effects {
        match effect {
            LeaderEffect::HighWatermark(hw) => out.high_watermark = Some(hw),
            LeaderEffect::Reply { waiter, result } => {
                if let Some(tx) = slot.waiters.remove(&waiter) {
                    let _ = tx.send(result);
                }
            }
            alter @ LeaderEffect::AlterPartition { .. } => out.alter.push(alter),
        }
    }
    out
}

/// Feeds an append that ended at `end_offset` to the slot; with `acks_all`, registers a waiter
/// answered once the high watermark covers it (or with an error). `None` when the slot is
/// gone (leadership lost) or refused the waiter count.
pub fn slot_appended(
    slot: &mut LeaderSlot,
    end_offset: i64,
    acks_all: bool,
) -> (SlotOutcome, Option<AcksAllWait>) {
    slot.fed_log_end = slot.fed_log_end.max(end_offset);
    let waiter = acks_all.then(|| {
        let id = slot.next_waiter;
        slot.next_waiter += 1;
        let (tx, rx) = oneshot::channel();
        slot.waiters.insert(id, tx);
        (id, rx)
    });
    let event = LeaderEvent::Appended {
        log_end_offset: slot.fed_log_end,
        waiter: waiter.as_ref().map(|(id, _)| *id),
    };
    (step_slot(slot, event), waiter)
}

/// Leadership is gone: every waiter answers NOT_LEADER_OR_FOLLOWER.
pub fn resign_slot(mut slot: LeaderSlot) {
    let mut effects = Vec::new();
    let core = slot.core.clone();
    core.resign(&mut effects);
    deliver(&mut slot, effects);
    for (_, tx) in std::mem::take(&mut slot.waiters) {
        let _ = tx.send(Err(code::NOT_LEADER_OR_FOLLOWER));
    }
}

/// A new core for a partition this node now leads in `leader_epoch`.
pub fn new_leader_core(
    local: i32,
    min_insync_replicas: usize,
    start: LeaderStart,
    now_ms: i64,
    hooks: &Hooks,
) -> PartitionLeader {
    let config = LeaderConfig {
        local,
        min_insync_replicas,
        replica_lag_time_max_ms: REPLICA_LAG_TIME_MAX_MS,
    };
    // Planted bugs (`hw_advance_below_min_isr`) exist only in simulation builds.
    PartitionLeader::new(config, start, now_ms, Planted::from_hooks(hooks))
}

/// AlterPartition refusals that prove the controller did not apply the request: only these
/// release the core's pending proposal early.
const ALTER_PARTITION_NOT_APPLIED: &[ErrorCode] = &[
    code::INELIGIBLE_REPLICA,
    code::INVALID_REQUEST,
    code::UNKNOWN_TOPIC_OR_PARTITION,
];

/// Sends the AlterPartition effects of `partition`'s core to the controller, each in its own
/// task; an acceptance goes back to the core as `AlterPartitionAccepted`, a refusal that proves
/// nothing was applied as `AlterPartitionFailed`; anything else leaves the proposal pending
/// until the image watcher delivers the partition's newer state.
pub fn send_alter_partitions<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    partition: &Arc<Partition<D>>,
    alter: Vec<LeaderEffect>,
) {
    let Some(cluster) = broker.cluster.get().cloned() else {
        return;
    };
    for effect in alter {
        let LeaderEffect::AlterPartition {
            leader_epoch,
            partition_epoch,
            new_isr,
            added,
        } = effect
        else {
            continue;
        };
        let Some(topic_id) = partition.leader_topic_id() else {
            return;
        };
        let request = samsa_cluster::controller::AlterPartition {
            broker_id: broker.node_id,
            topic_id,
            partition: partition.index,
            leader_epoch,
            partition_epoch,
            new_isr,
            added,
        };
        let broker = broker.clone();
        let partition = partition.clone();
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let now = broker.clock.now_ms();
            let result = cluster.send_alter_partition(now, &request).await;
            tracing::debug!(topic = %partition.topic, partition = partition.index,
                isr = ?request.new_isr, ?result, "AlterPartition");
            let event = match result {
                // Refusals that prove the controller did not apply it at our epoch.
                Err(error) if ALTER_PARTITION_NOT_APPLIED.contains(&error) => {
                    LeaderEvent::AlterPartitionFailed { error }
                }
                // The partition moved on (INVALID_UPDATE_VERSION, FENCED_LEADER_EPOCH, ...) or
                // the answer was lost (timeouts, a controller change): it may have been applied.
                // The proposal stays pending, so the high watermark keeps counting a joining
                // replica, until the image shows a newer partition epoch or a new leader epoch
                // replaces this core (simulator: cluster_replication 225595114309733).
                Err(_) => return,
                // The controller's result is known from the request alone (its checks passed
                // at our partition epoch); the local image may not show it yet.
                Ok(()) => LeaderEvent::AlterPartitionAccepted {
                    new_isr: request.new_isr.clone(),
                    partition_epoch: request.partition_epoch,
                },
            };
            let more = partition.leader_step(event);
            send_alter_partitions(&broker, &partition, more);
        });
    }
}

/// One follower task's identity: whom it follows, in which epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowTarget {
    pub leader: i32,
    pub leader_epoch: i32,
}

/// Why one session with the leader ended.
#[derive(Debug)]
enum SessionEnd {
    Stopped,
    Retry(&'static str, ErrorCode),
}

/// The follower fetch loop of one partition: follows `target` until `stop` turns true (the
/// image watcher stops it when the leader or epoch changes) or the node stops. Every failure
/// backs off `FOLLOWER_BACKOFF_MS` and starts again with the epoch check.
pub async fn run_follower<D: Disk, C: Clock>(
    broker: Arc<Broker<D, C>>,
    partition: Arc<Partition<D>>,
    target: FollowTarget,
    mut stop: watch::Receiver<bool>,
) {
    let mut correlation = 0i32;
    loop {
        if *stop.borrow() {
            return;
        }
        let session = follow_session(&broker, &partition, target, &mut correlation);
        let end = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => SessionEnd::Stopped,
            end = session => end,
        };
        match end {
            SessionEnd::Stopped => return,
            SessionEnd::Retry(what, error) => {
                tracing::debug!(topic = %partition.topic, partition = partition.index,
                    leader = target.leader, what, error, "follower retries");
            }
        }
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(Duration::from_millis(FOLLOWER_BACKOFF_MS)) => {}
        }
    }
}

struct Conn {
    reader: tokio::io::ReadHalf<BoxStream>,
    writer: tokio::io::WriteHalf<BoxStream>,
}

impl Conn {
    async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        correlation: i32,
        request: &Req,
        timeout_ms: u64,
    ) -> Result<Resp, ErrorCode> {
        let call = Call {
            client_id: "samsa-follower",
            key,
            version,
            correlation,
            response_bytes_max: FOLLOWER_RESPONSE_BYTES_MAX,
        };
        let exchange = call.exchange(&mut self.reader, &mut self.writer, request);
        tokio::time::timeout(Duration::from_millis(timeout_ms), exchange)
            .await
            .unwrap_or(Err(code::REQUEST_TIMED_OUT))
    }
}

/// One request/response exchange between brokers (follower fetches, AlterPartition, broker
/// registration and heartbeats). Every failure maps to an error code; the caller bounds the
/// time.
pub(crate) struct Call<'a> {
    pub client_id: &'a str,
    pub key: ApiKey,
    pub version: i16,
    pub correlation: i32,
    /// Largest answer read.
    pub response_bytes_max: usize,
}

impl Call<'_> {
    /// Sends `request` on an open connection and reads its answer.
    pub(crate) async fn exchange<R, W, Req, Resp>(
        &self,
        reader: &mut R,
        writer: &mut W,
        request: &Req,
    ) -> Result<Resp, ErrorCode>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
        Req: Encodable,
        Resp: Decodable,
    {
        let key = self.key as i16;
        let frame = samsa_net::codec::encode_request(
            key,
            self.version,
            self.correlation,
            Some(self.client_id),
            request,
        )
        .map_err(|_| code::INVALID_REQUEST)?;
        write_frame(writer, &frame)
            .await
            .map_err(|_| code::NETWORK_EXCEPTION)?;
        let body = read_frame(reader, self.response_bytes_max)
            .await
            .map_err(|_| code::NETWORK_EXCEPTION)?
            .ok_or(code::NETWORK_EXCEPTION)?;
        let (corr, resp) =
            samsa_net::codec::decode_response::<Resp>(key, self.version, body.freeze())
                .map_err(|_| code::CORRUPT_MESSAGE)?;
        if corr != self.correlation {
            return Err(code::CORRUPT_MESSAGE);
        }
        Ok(resp)
    }

    /// Connects (`connect`), exchanges once, within `timeout_ms` in all.
    pub(crate) async fn over<S, F, Req, Resp>(
        &self,
        connect: F,
        request: &Req,
        timeout_ms: u64,
    ) -> Result<Resp, ErrorCode>
    where
        S: AsyncRead + AsyncWrite,
        F: Future<Output = io::Result<S>>,
        Req: Encodable,
        Resp: Decodable,
    {
        let exchange = async {
            let stream = connect.await.map_err(|_| code::NETWORK_EXCEPTION)?;
            let (mut r, mut w) = tokio::io::split(stream);
            self.exchange(&mut r, &mut w, request).await
        };
        tokio::time::timeout(Duration::from_millis(timeout_ms), exchange)
            .await
            .unwrap_or(Err(code::REQUEST_TIMED_OUT))
    }
}

fn tname(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// One connection to the leader: epoch check and truncation, then fetches until an error.
/// Runs a change to the local log in a task of its own, so it finishes even when the follower
/// session is dropped at an await point (a stop or a new leader drops it): a truncation cut
/// between its file cut and its in-memory update left the log's end beyond the file, and every
/// later truncation failed on the missing bytes (sim: cluster_replication 2624). `None` only
/// if that task panicked.
async fn to_the_end<T: Send + 'static>(
    change: impl std::future::Future<Output = T> + Send + 'static,
) -> Option<T> {
    tokio::spawn(change).await.ok()
}

async fn follow_session<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    partition: &Arc<Partition<D>>,
    target: FollowTarget,
    correlation: &mut i32,
) -> SessionEnd {
    let Some(cluster) = broker.cluster.get().cloned() else {
        return SessionEnd::Stopped;
    };
    let Some(addr) = cluster.broker_addr(target.leader) else {
        return SessionEnd::Retry("leader address", code::LEADER_NOT_AVAILABLE);
    };
    let connect = tokio::time::timeout(
        Duration::from_millis(FOLLOWER_RPC_TIMEOUT_MS),
        cluster.connector().connect(addr),
    );
    let stream = match connect.await {
        Ok(Ok(s)) => s,
        _ => return SessionEnd::Retry("connect", code::NETWORK_EXCEPTION),
    };
    let (reader, writer) = tokio::io::split(stream);
    let mut conn = Conn { reader, writer };

    // KIP-279: find the divergence point with the leader, one epoch a round.
    let mut requested = first_requested_epoch(&partition.epoch_cache().await);
    let mut rounds = 0;
    loop {
        rounds += 1;
        if rounds > TRUNCATION_ROUNDS_MAX {
            return SessionEnd::Retry("truncation rounds", code::UNKNOWN_SERVER_ERROR);
        }
        *correlation = correlation.wrapping_add(1);
        let req = OffsetForLeaderEpochRequest::default()
            .with_replica_id(KBrokerId(broker.node_id))
            .with_topics(vec![
                offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                    .with_topic(tname(&partition.topic))
                    .with_partitions(vec![
                        offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                            .with_partition(partition.index)
                            .with_current_leader_epoch(target.leader_epoch)
                            .with_leader_epoch(requested),
                    ]),
            ]);
        let resp: OffsetForLeaderEpochResponse = match conn
            .call(
                ApiKey::OffsetForLeaderEpoch,
                OFLE_VERSION,
                *correlation,
                &req,
                FOLLOWER_RPC_TIMEOUT_MS,
            )
            .await
        {
            Ok(r) => r,
            Err(e) => return SessionEnd::Retry("OffsetForLeaderEpoch", e),
        };
        let Some(answer) = resp
            .topics
            .first()
            .and_then(|t| t.partitions.iter().find(|p| p.partition == partition.index))
        else {
            return SessionEnd::Retry("OffsetForLeaderEpoch answer", code::CORRUPT_MESSAGE);
        };
        if answer.error_code != code::NONE {
            return SessionEnd::Retry("OffsetForLeaderEpoch", answer.error_code);
        }
        let cache = partition.epoch_cache().await;
        let leo = partition.log_end_offset().await;
        let step = follower_truncation(
            &cache,
            leo,
            partition.high_watermark(),
            (answer.leader_epoch, answer.end_offset),
            // Planted bug `truncate_to_own_hw` (simulation builds only).
            Planted::from_hooks(&broker.hooks),
        );
        let cut = match step {
            TruncationStep::Done { truncate_to } => (truncate_to, None),
            TruncationStep::Continue {
                truncate_to,
                next_requested_epoch,
            } => (truncate_to, Some(next_requested_epoch)),
            TruncationStep::LeaderUnaware => {
                return SessionEnd::Retry("leader unaware of our epoch", code::NONE)
            }
        };
        if cut.0 <= leo {
            let truncated = {
                let p = partition.clone();
                to_the_end(async move { p.truncate_to(cut.0).await }).await
            };
            let Some(truncated) = truncated else {
                return SessionEnd::Retry("truncate", code::UNKNOWN_SERVER_ERROR);
            };
            if let Err(e) = truncated {
                tracing::warn!(topic = %partition.topic, partition = partition.index,
                    to = cut.0, leo, error = %e, "follower truncation failed");
                return SessionEnd::Retry("truncate", e.error_code());
            }
            if cut.0 < leo {
                tracing::info!(topic = %partition.topic, partition = partition.index,
                    from = leo, to = cut.0, "follower truncated to the divergence point");
            }
        }
        match cut.1 {
            Some(next) => requested = next,
            None => break,
        }
    }

    // Fetch from our log end until something goes wrong.
    loop {
        let leo = partition.log_end_offset().await;
        let last_epoch = partition.latest_epoch().await.unwrap_or(UNDEFINED_EPOCH);
        *correlation = correlation.wrapping_add(1);
        let req = FetchRequest::default()
            .with_replica_id(KBrokerId(broker.node_id))
            .with_max_wait_ms(FOLLOWER_FETCH_MAX_WAIT_MS)
            .with_min_bytes(1)
            .with_max_bytes(FOLLOWER_FETCH_MAX_BYTES)
            .with_session_epoch(-1)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(tname(&partition.topic))
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_partition(partition.index)
                    .with_current_leader_epoch(target.leader_epoch)
                    .with_last_fetched_epoch(last_epoch)
                    .with_fetch_offset(leo)
                    .with_partition_max_bytes(FOLLOWER_FETCH_MAX_BYTES)])]);
        let wait = FOLLOWER_RPC_TIMEOUT_MS + FOLLOWER_FETCH_MAX_WAIT_MS as u64;
        let resp: FetchResponse = match conn
            .call(ApiKey::Fetch, FETCH_VERSION, *correlation, &req, wait)
            .await
        {
            Ok(r) => r,
            Err(e) => return SessionEnd::Retry("fetch", e),
        };
        if resp.error_code != code::NONE {
            return SessionEnd::Retry("fetch", resp.error_code);
        }
        let Some(data) = resp.responses.first().and_then(|t| {
            t.partitions
                .iter()
                .find(|p| p.partition_index == partition.index)
        }) else {
            return SessionEnd::Retry("fetch answer", code::CORRUPT_MESSAGE);
        };
        if data.error_code == code::OFFSET_OUT_OF_RANGE && leo < data.log_start_offset {
            // Everything we could fetch next is gone on the leader (DeleteRecords, retention,
            // or we were down or wiped that long): start over at its log start (Kafka's
            // truncateFullyAndStartAt); what we hold lies wholly below it.
            let start = data.log_start_offset;
            let p = partition.clone();
            let reset = to_the_end(async move { p.truncate_fully_and_start_at(start).await });
            match reset.await {
                Some(Ok(())) => {
                    tracing::info!(topic = %partition.topic, partition = partition.index,
                        from = leo, to = start, "follower behind the leader's log start: \
                        log replaced by an empty one starting there");
                    continue;
                }
                Some(Err(e)) => return SessionEnd::Retry("start over", e.error_code()),
                None => return SessionEnd::Retry("start over", code::UNKNOWN_SERVER_ERROR),
            }
        }
        if data.error_code != code::NONE {
            // FENCED_LEADER_EPOCH, NOT_LEADER_OR_FOLLOWER, UNKNOWN_LEADER_EPOCH,
            // OFFSET_OUT_OF_RANGE and the rest: start over with the epoch check.
            return SessionEnd::Retry("fetch partition", data.error_code);
        }
        let records: Bytes = data.records.clone().unwrap_or_default();
        if !records.is_empty() {
            let now = broker.clock.now_ms();
            let append = |records: Bytes| {
                let p = partition.clone();
                to_the_end(async move { p.append_replicated(records, now).await })
            };
            let Some(mut appended) = append(records.clone()).await else {
                return SessionEnd::Retry("append", code::UNKNOWN_SERVER_ERROR);
            };
            if let Err(LogError::OffsetMismatch { expected, got }) = appended {
                // We just started over at the leader's log start, which lies inside this
                // batch: start at the batch's base instead and append it (Kafka does the same
                // on UnexpectedAppendOffsetException). Our log start then follows the leader's
                // again below, once our high watermark passes it.
                let empty = partition.log_start_offset().await == expected;
                if empty && got < expected {
                    let p = partition.clone();
                    let reset = to_the_end(async move { p.truncate_fully_and_start_at(got).await });
                    match reset.await {
                        Some(Ok(())) => {}
                        Some(Err(e)) => return SessionEnd::Retry("start over", e.error_code()),
                        None => return SessionEnd::Retry("start over", code::UNKNOWN_SERVER_ERROR),
                    }
                    let Some(again) = append(records).await else {
                        return SessionEnd::Retry("append", code::UNKNOWN_SERVER_ERROR);
                    };
                    appended = again;
                }
            }
            match appended {
                // Under `fsync` the next Fetch (whose offset tells the leader what we hold, and
                // so moves its high watermark and answers acks=all) waits for our own sync:
                // otherwise a power loss of the whole ISR lost acknowledged records that only
                // page caches held (sim: cluster_replication 3899).
                Ok(appended) if partition.config().flush_policy == FlushPolicy::Fsync => {
                    match partition.wait_durable(appended.end_offset).await {
                        Ok(Outcome::Durable) => {}
                        _ => return SessionEnd::Retry("sync", code::KAFKA_STORAGE_ERROR),
                    }
                }
                Ok(_) => {}
                // Someone else moved our log end: fetch again from there.
                Err(LogError::OffsetMismatch { .. }) => continue,
                Err(e) => return SessionEnd::Retry("append", e.error_code()),
            }
        }
        let leo = partition.log_end_offset().await;
        let hw = data.high_watermark.min(leo);
        partition.set_replication_hw(hw);
        // The leader's log start moved (DeleteRecords, retention): follow it up to our own
        // high watermark, so deleted records do not come back when this replica leads.
        if data.log_start_offset > partition.log_start_offset().await {
            let to = data.log_start_offset.min(hw);
            if to > partition.log_start_offset().await {
                let p = partition.clone();
                let deleted = to_the_end(async move { p.delete_records(to).await }).await;
                if let Err(c) = deleted.unwrap_or(Err(code::UNKNOWN_SERVER_ERROR)) {
                    return SessionEnd::Retry("log start", c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(isr: &[i32], min_isr: usize) -> LeaderSlot {
        let start = LeaderStart {
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
            leader_epoch: 4,
            partition_epoch: 7,
            log_end_offset: 10,
            high_watermark: 10,
        };
        LeaderSlot::new(
            9,
            new_leader_core(1, min_isr, start, 0, &Hooks::default()),
            10,
        )
    }

    fn fetch(replica: i32, fetch_offset: i64) -> LeaderEvent {
        LeaderEvent::FollowerFetch {
            replica,
            incarnation: 1,
            fetch_offset,
            now_ms: 1,
        }
    }

    #[test]
    fn acks_all_waiters_answer_when_the_isr_has_the_batch_and_appends_may_finish_late() {
        let mut s = slot(&[1, 2, 3], 2);
        let (_, w1) = slot_appended(&mut s, 12, true);
        let (_, mut rx1) = w1.expect("waiter");
        // An append that finished earlier but is fed later never moves the log end back.
        let (_, w2) = slot_appended(&mut s, 11, true);
        let (_, mut rx2) = w2.expect("waiter");
        assert_eq!(s.fed_log_end(), 12);
        assert!(step_slot(&mut s, fetch(2, 12)).high_watermark.is_none());
        assert!(rx1.try_recv().is_err(), "3 has not fetched yet");
        let out = step_slot(&mut s, fetch(3, 12));
        assert_eq!(out.high_watermark, Some(12));
        assert_eq!(rx1.try_recv(), Ok(Ok(())));
        assert_eq!(rx2.try_recv(), Ok(Ok(())));
        // A waiter that times out answers REQUEST_TIMED_OUT; resigning fails the rest.
        let (_, w3) = slot_appended(&mut s, 13, true);
        let (id3, mut rx3) = w3.expect("waiter");
        step_slot(&mut s, LeaderEvent::WaiterTimedOut { waiter: id3 });
        assert_eq!(rx3.try_recv(), Ok(Err(code::REQUEST_TIMED_OUT)));
        let (_, w4) = slot_appended(&mut s, 14, true);
        let (_, mut rx4) = w4.expect("waiter");
        resign_slot(s);
        assert_eq!(rx4.try_recv(), Ok(Err(code::NOT_LEADER_OR_FOLLOWER)));
    }

    #[test]
    fn below_min_isr_acks_all_is_refused_and_the_hw_holds() {
        let mut s = slot(&[1], 2);
        assert_eq!(s.core.check_acks_all(), Err(code::NOT_ENOUGH_REPLICAS));
        let (out, w) = slot_appended(&mut s, 12, true);
        assert!(out.high_watermark.is_none());
        let (_, mut rx) = w.expect("waiter");
        assert_eq!(
            rx.try_recv(),
            Ok(Err(code::NOT_ENOUGH_REPLICAS_AFTER_APPEND))
        );
        // A caught-up follower is proposed for the ISR (AlterPartition to the controller).
        let out = step_slot(&mut s, fetch(2, 12));
        assert_eq!(out.alter.len(), 1, "{:?}", out.alter.len());
        assert!(out.high_watermark.is_none());
    }
}
