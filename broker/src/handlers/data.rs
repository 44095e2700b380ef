//! Handlers for the data path: Produce (acks 0/1/-1, answered after group commit under policy
//! `fsync`), Fetch (long poll woken by high-watermark advances, stored batches returned as
//! stored), ListOffsets, DeleteRecords and OffsetForLeaderEpoch.
//! Never decodes individual records on the success path (only to name the keyless records of
//! a produce a compacted topic refused) and never busy-polls.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::fetch_response::FetchableTopicResponse;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::*;
use samsa_net::batch::{split_batches, validate_records, BatchBounds};
use samsa_net::Clock;
use samsa_storage::Disk;
use uuid::Uuid;

use super::{code, encode, respond, topic_name, Reply};
use crate::broker::Broker;
use crate::group_commit::Outcome;
use crate::partition::Partition;
use crate::topic_config::FlushPolicy;
use crate::wire::RequestFrame;

/// Most topics/partitions one data request may name.
pub const PARTITIONS_PER_REQUEST_MAX: usize = 100_000;
/// Largest Fetch response body we assemble, whatever the client asks for.
pub const FETCH_RESPONSE_BYTES_MAX: usize = 64 << 20;
/// Longest long poll honoured.
pub const FETCH_WAIT_MS_MAX: i32 = 60_000;
const _: () = assert!(FETCH_RESPONSE_BYTES_MAX <= i32::MAX as usize);
/// Most `record_errors` entries one partition's Produce answer lists.
pub const RECORD_ERRORS_MAX: usize = 10_000;
/// First Produce version with `record_errors` and `error_message` (KIP-467).
const PRODUCE_RECORD_ERRORS_VERSION: i16 = 8;
const KEYLESS_ON_COMPACTED: &str = "compacted topic cannot accept a record without a key";

/// Longest acks=all wait honoured (the request's `timeout_ms`, clamped).
pub const PRODUCE_TIMEOUT_MS_MAX: i32 = 300_000;

/// An answer that waits: on the group-commit sync and, in cluster mode with acks=all, on the
/// partition leader's high watermark.
struct ProduceWait<D: Disk> {
    topic: usize,
    partition: usize,
    durable: Option<tokio::sync::oneshot::Receiver<Outcome>>,
    replicated: Option<(Arc<Partition<D>>, crate::replication::AcksAllWait)>,
}

pub async fn produce<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: ProduceRequest,
) -> Reply {
    let acks = body.acks;
    let now_ms = broker.clock.now_ms();
    let acks_valid = (-1..=1).contains(&acks);
    let ack_early = broker.hooks.mutant("ack_before_fsync");
    // Cluster mode: the partition leader's core takes every append; acks=all waits for it.
    let replicated = broker.cluster.get().is_some();
    let timeout_ms = body.timeout_ms.clamp(0, PRODUCE_TIMEOUT_MS_MAX);
    let mut responses = Vec::new();
    let mut waits: Vec<ProduceWait<D>> = Vec::new();
    let mut budget = PARTITIONS_PER_REQUEST_MAX;
    for topic in body.topic_data {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::new();
        for pd in topic.partition_data {
            if budget == 0 {
                break;
            }
            budget -= 1;
            let mut r = PartitionProduceResponse::default()
                .with_index(pd.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            let mut partition = broker.partition(&name, pd.index);
            let lead = broker.lead_check(&name, pd.index);
            let unready = partition
                .as_ref()
                .is_none_or(|p| p.leader_slot_epoch().is_none());
            if replicated && lead.is_ok() && unready && name != crate::group::shell::OFFSETS_TOPIC {
                // The image names this node leader but the image watcher has not set the
                // partition up yet: catch up now rather than refuse.
                broker.reconcile_cluster().await;
                partition = broker.partition(&name, pd.index);
            }
            // Keyless records a compacted topic refused, by index in the produce input.
            let mut keyless = Vec::new();
            let outcome = if !acks_valid {
                Err(code::INVALID_REQUIRED_ACKS)
            } else {
                match (&partition, pd.records) {
                    // Only the group coordinator writes its internal topic (Kafka says the same).
                    _ if name == crate::group::shell::OFFSETS_TOPIC => {
                        Err(code::INVALID_TOPIC_EXCEPTION)
                    }
                    _ if lead.is_err() => Err(lead.err().unwrap_or(code::NOT_LEADER_OR_FOLLOWER)),
                    (None, _) => Err(code::UNKNOWN_TOPIC_OR_PARTITION),
                    (Some(_), None) => Err(code::CORRUPT_MESSAGE),
                    (Some(p), Some(records)) => {
                        let config = p.config();
                        match validate_produce(&records, config.max_message_bytes, config.compact) {
                            Ok(()) => {
                                // Kafka checks the ISR against min.insync.replicas before the
                                // append; acks=0/1 only need this node to lead.
                                let admitted = match (replicated, acks) {
                                    (false, _) => Ok(()),
                                    (true, -1) => p.check_acks_all(),
                                    (true, _) => p
                                        .leader_slot_epoch()
                                        .map(|_| ())
                                        .ok_or(code::NOT_LEADER_OR_FOLLOWER),
                                };
                                match admitted {
                                    Ok(()) => p.append(records, now_ms).await,
                                    Err(c) => Err(c),
                                }
                            }
                            Err(c) => {
                                if c == code::INVALID_RECORD && config.compact {
                                    keyless = keyless_record_indices(&records);
                                }
                                Err(c)
                            }
                        }
                    }
                }
            };
            if replicated {
                tracing::debug!(topic = %name, partition = pd.index, acks,
                    outcome = ?outcome.as_ref().map(|a| (a.base_offset, a.end_offset)),
                    "produce appended");
            }
            let outcome = match (outcome, &partition) {
                (Ok(a), Some(p)) if replicated => {
                    let (alter, waiter) = p.leader_appended(a.end_offset, acks == -1);
                    crate::replication::send_alter_partitions(broker, p, alter);
                    match waiter {
                        // Planted bug: answer after the local append, not once the ISR has it.
                        Some(_) if broker.hooks.mutant("ack_before_isr") => Ok((a, None)),
                        Some(wait) => Ok((a, Some((p.clone(), wait)))),
                        None if acks == -1 => Err(code::NOT_LEADER_OR_FOLLOWER),
                        None => Ok((a, None)),
                    }
                }
                (outcome, _) => outcome.map(|a| (a, None)),
            };
            match outcome {
                Ok((a, replication)) => {
                    r = r
                        .with_error_code(code::NONE)
                        .with_base_offset(a.base_offset)
                        .with_log_append_time_ms(a.log_append_time_ms)
                        .with_log_start_offset(a.log_start_offset);
                    if let Some(p) = &partition {
                        let fsync = p.config().flush_policy == FlushPolicy::Fsync;
                        let durable = (acks != 0 && fsync && !ack_early)
                            .then(|| p.wait_durable(a.end_offset));
                        if durable.is_some() || replication.is_some() {
                            waits.push(ProduceWait {
                                topic: responses.len(),
                                partition: partitions.len(),
                                durable,
                                replicated: replication,
                            });
                        }
                    }
                }
                Err(c) => {
                    r = r.with_error_code(c);
                    if !keyless.is_empty() && req.api_version >= PRODUCE_RECORD_ERRORS_VERSION {
                        // Clients fail exactly these records and retry the rest of the batch.
                        r = r
                            .with_error_message(Some(KEYLESS_ON_COMPACTED.into()))
                            .with_record_errors(
                                keyless
                                    .iter()
                                    .map(|&i| {
                                        BatchIndexAndErrorMessage::default()
                                            .with_batch_index(i)
                                            .with_batch_index_error_message(Some(
                                                KEYLESS_ON_COMPACTED.into(),
                                            ))
                                    })
                                    .collect(),
                            );
                    }
                }
            }
            partitions.push(r);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic_name(&name))
                .with_partition_responses(partitions),
        );
    }
    if acks == 0 && acks_valid {
        // acks=0: the client expects no response at all.
        return Reply::Now(None);
    }
    let response = ProduceResponse::default()
        .with_responses(responses)
        .with_throttle_time_ms(0);
    if waits.is_empty() {
        return respond(req, &response);
    }
    let req = req.clone();
    Reply::Later(Box::pin(async move {
        let mut response = response;
        // The acks=all deadline starts with the request.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms as u64);
        for w in waits {
            let mut error = code::NONE;
            if let Some(rx) = w.durable {
                error = match rx.await.unwrap_or(Outcome::Failed) {
                    Outcome::Durable => code::NONE,
                    Outcome::Failed => code::KAFKA_STORAGE_ERROR,
                    Outcome::Refused => code::REQUEST_TIMED_OUT,
                };
            }
            if let Some((p, (waiter, rx))) = w.replicated {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let answered = tokio::time::timeout(left, rx).await;
                let replicated = match answered {
                    Ok(Ok(result)) => result.err().unwrap_or(code::NONE),
                    Ok(Err(_)) => code::NOT_LEADER_OR_FOLLOWER,
                    Err(_) => {
                        p.leader_step(samsa_cluster::replica::LeaderEvent::WaiterTimedOut {
                            waiter,
                        });
                        tracing::warn!(topic = %p.topic, partition = p.index, timeout_ms,
                            leader = ?p.leader_summary(),
                            "acks=all produce timed out waiting for the ISR");
                        code::REQUEST_TIMED_OUT
                    }
                };
                if error == code::NONE {
                    error = replicated;
                }
            }
            if error == code::NONE {
                continue;
            }
            if let Some(r) = response
                .responses
                .get_mut(w.topic)
                .and_then(|t| t.partition_responses.get_mut(w.partition))
            {
                r.error_code = error;
                r.base_offset = -1;
            }
        }
        encode(&req, &response)
    }))
}

/// Splits and validates produce input for one partition: batch length, size against
/// `max.message.bytes`, magic, CRC-32C, record count, record framing, and keys on compacted
/// topics. Each failure maps to the error code Kafka gives.
fn validate_produce(records: &[u8], max_message_bytes: i64, compact: bool) -> Result<(), i16> {
    let max = usize::try_from(max_message_bytes).unwrap_or(0);
    let bounds = BatchBounds::with_max_batch_bytes(max);
    let batches = split_batches(records, &bounds).map_err(|e| e.error_code())?;
    for (range, header) in &batches {
        validate_records(&records[range.clone()], header, compact, &bounds)
            .map_err(|e| e.error_code())?;
    }
    Ok(())
}

/// Indices (counted across the batches of one partition's produce input) of the records that
/// have no key, at most `RECORD_ERRORS_MAX`; empty if the input does not decode. Only called
/// after `validate_produce` refused the input, so its sizes are already bounded.
fn keyless_record_indices(records: &[u8]) -> Vec<i32> {
    let Ok(decoded) = samsa_net::records::decode_records(records) else {
        return Vec::new();
    };
    decoded
        .iter()
        .enumerate()
        .filter(|(_, (_, r))| r.key.is_none())
        .filter_map(|(i, _)| i32::try_from(i).ok())
        .take(RECORD_ERRORS_MAX)
        .collect()
}

/// One partition a Fetch asks for.
#[derive(Clone)]
struct FetchTarget {
    partition: i32,
    fetch_offset: i64,
    partition_max_bytes: i32,
    /// KIP-320: the leader epoch the fetcher believes in (-1: unknown).
    current_leader_epoch: i32,
}

#[derive(Clone)]
struct FetchTopicTarget {
    name: Option<String>,
    id: Uuid,
    partitions: Vec<FetchTarget>,
}

/// Reads every target once; returns the response and how many record bytes it holds.
async fn fetch_once<D: Disk, C: Clock>(
    broker: &Broker<D, C>,
    version: i16,
    topics: &[FetchTopicTarget],
    max_bytes: usize,
    replica: bool,
) -> (FetchResponse, usize) {
    let mut total = 0usize;
    let mut responses = Vec::new();
    for t in topics {
        let name = match &t.name {
            Some(n) => Some(n.clone()),
            None => broker.topic_name_by_id(t.id).await,
        };
        let mut parts = Vec::new();
        for target in &t.partitions {
            let mut pd = FetchPartitionData::default()
                .with_partition_index(target.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_records(Some(Bytes::new()));
            let partition = name
                .as_ref()
                .and_then(|n| broker.partition(n, target.partition));
            let lead = match &name {
                Some(n) if replica => replica_lead_check(broker, n, target),
                Some(n) => broker.lead_check(n, target.partition),
                None => Ok(()),
            };
            match partition {
                _ if lead.is_err() => {
                    pd = pd.with_error_code(lead.err().unwrap_or(code::NOT_LEADER_OR_FOLLOWER));
                }
                None => {
                    let c = if name.is_none() && version >= 13 {
                        code::UNKNOWN_TOPIC_ID
                    } else {
                        code::UNKNOWN_TOPIC_OR_PARTITION
                    };
                    pd = pd.with_error_code(c);
                }
                Some(p) => {
                    let remaining = max_bytes.saturating_sub(total);
                    let mut limit = (target.partition_max_bytes.max(0) as usize).min(remaining);
                    if broker.hooks.buggify("broker.fetch.short_response") {
                        // Buggify: the smallest legal answer (KIP-74 still returns one batch).
                        limit = 1;
                    }
                    let hw = p.high_watermark();
                    pd = pd
                        .with_high_watermark(hw)
                        .with_last_stable_offset(hw)
                        .with_log_start_offset(p.log_start_offset().await);
                    // KIP-74: the first batch is returned whole even beyond the limits, so a
                    // consumer can always make progress.
                    let read = if replica {
                        // Followers read up to the log end; the high watermark tells them
                        // how much of it is committed.
                        match p.read_replica(target.fetch_offset, limit).await {
                            Ok(b) if total > 0 && b.len() > limit => Ok(Bytes::new()),
                            other => other,
                        }
                    } else {
                        p.read(target.fetch_offset, limit, total == 0).await
                    };
                    match read {
                        Ok(records) => {
                            total += records.len();
                            pd = pd.with_error_code(code::NONE).with_records(Some(records));
                        }
                        Err(c) => pd = pd.with_error_code(c),
                    }
                }
            }
            parts.push(pd);
        }
        let mut topic = FetchableTopicResponse::default().with_partitions(parts);
        if version >= 13 {
            topic = topic.with_topic_id(t.id);
        } else {
            topic = topic.with_topic(topic_name(t.name.as_deref().unwrap_or("")));
        }
        responses.push(topic);
    }
    let response = FetchResponse::default()
        .with_throttle_time_ms(0)
        .with_error_code(code::NONE)
        .with_session_id(0)
        .with_responses(responses);
    (response, total)
}

type FetchPartitionData = fetch_response::PartitionData;

pub async fn fetch<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: FetchRequest,
) -> Reply {
    let version = req.api_version;
    let mut budget = PARTITIONS_PER_REQUEST_MAX;
    let topics: Vec<FetchTopicTarget> = body
        .topics
        .iter()
        .map(|t| FetchTopicTarget {
            name: if version >= 13 {
                None
            } else {
                Some(t.topic.0.to_string())
            },
            id: t.topic_id,
            partitions: t
                .partitions
                .iter()
                .take_while(|_| {
                    let more = budget > 0;
                    budget = budget.saturating_sub(1);
                    more
                })
                .map(|p| FetchTarget {
                    partition: p.partition,
                    fetch_offset: p.fetch_offset,
                    partition_max_bytes: p.partition_max_bytes,
                    current_leader_epoch: p.current_leader_epoch,
                })
                .collect(),
        })
        .collect();
    let max_bytes = if version >= 3 {
        (body.max_bytes.max(0) as usize).min(FETCH_RESPONSE_BYTES_MAX)
    } else {
        FETCH_RESPONSE_BYTES_MAX
    };
    let min_bytes = body.min_bytes.max(0) as usize;
    let wait_ms = body.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX) as u64;
    // The deadline starts now, not when the writer gets to this reply.
    let deadline = tokio::time::sleep(Duration::from_millis(wait_ms));
    // A follower's fetch (replica id >= 0) in cluster mode: its fetch offset is its log end,
    // which the partition leader's core takes as progress (once per request).
    let replica_id = if version >= 15 {
        body.replica_state.replica_id.0
    } else {
        body.replica_id.0
    };
    let replica = replica_id >= 0 && broker.cluster.get().is_some();
    if replica {
        follower_progress(broker, replica_id, &topics);
    }
    let (response, total) = fetch_once(broker, version, &topics, max_bytes, replica).await;
    // As Kafka does, a partition error ends the long poll at once: the client needs to see it
    // (a consumer walking past a refused corrupt range would otherwise wait out every poll).
    if total >= min_bytes || wait_ms == 0 || any_partition_error(&response) {
        return respond(req, &response);
    }
    let broker = broker.clone();
    let req = req.clone();
    let mut stopping = broker.stopping.subscribe();
    Reply::Later(Box::pin(async move {
        tokio::pin!(deadline);
        loop {
            let notified = broker.data_arrived.notified();
            tokio::pin!(notified);
            // Register before re-checking so an advance between the two is not missed.
            notified.as_mut().enable();
            let (response, total) = fetch_once(&broker, version, &topics, max_bytes, replica).await;
            if total >= min_bytes || any_partition_error(&response) {
                return encode(&req, &response);
            }
            tokio::select! {
                biased;
                // (The watch guard must not live in the select output: it is not Send.)
                () = async { let _ = stopping.wait_for(|s| *s).await; } => {
                    return encode(&req, &response);
                }
                () = &mut deadline => {
                    let (response, _) =
                        fetch_once(&broker, version, &topics, max_bytes, replica).await;
                    return encode(&req, &response);
                }
                () = notified => {}
            }
        }
    }))
}

/// A follower may fetch only from the partition's leader, in the leader epoch it names
/// (KIP-320: an older one is FENCED_LEADER_EPOCH, a newer one UNKNOWN_LEADER_EPOCH).
fn replica_lead_check<D: Disk, C: Clock>(
    broker: &Broker<D, C>,
    name: &str,
    target: &FetchTarget,
) -> Result<(), i16> {
    let Some(cluster) = broker.cluster.get() else {
        return Ok(());
    };
    let epoch = cluster.lead_check(name, target.partition)?;
    match target.current_leader_epoch {
        e if e < 0 || e == epoch => Ok(()),
        e if e < epoch => Err(code::FENCED_LEADER_EPOCH),
        _ => Err(code::UNKNOWN_LEADER_EPOCH),
    }
}

/// Feeds each partition's follower fetch to its leader core (`FollowerFetch`), sending the
/// AlterPartition proposals that follow.
fn follower_progress<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    replica_id: i32,
    topics: &[FetchTopicTarget],
) {
    let Some(cluster) = broker.cluster.get() else {
        return;
    };
    let Some(incarnation) = cluster.incarnation_of(replica_id) else {
        tracing::debug!(
            replica_id,
            "follower fetch not counted: unknown incarnation"
        );
        return;
    };
    let now_ms = broker.clock.now_ms();
    for t in topics {
        let Some(name) = &t.name else {
            continue;
        };
        for target in &t.partitions {
            if let Err(c) = replica_lead_check(broker, name, target) {
                tracing::debug!(replica_id, topic = %name, partition = target.partition,
                    code = c, "follower fetch not counted: lead check");
                continue;
            }
            let Some(p) = broker.partition(name, target.partition) else {
                continue;
            };
            let alter = p.leader_step(samsa_cluster::replica::LeaderEvent::FollowerFetch {
                replica: replica_id,
                incarnation,
                fetch_offset: target.fetch_offset,
                now_ms,
            });
            tracing::debug!(replica_id, topic = %name, partition = target.partition,
                fetch_offset = target.fetch_offset, leader = ?p.leader_summary(),
                "follower fetch");
            crate::replication::send_alter_partitions(broker, &p, alter);
        }
    }
}

fn any_partition_error(response: &FetchResponse) -> bool {
    response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .any(|p| p.error_code != code::NONE)
}

pub async fn list_offsets<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: ListOffsetsRequest,
) -> Reply {
    let v = req.api_version;
    let mut topics = Vec::new();
    for t in body.topics.into_iter().take(PARTITIONS_PER_REQUEST_MAX) {
        let name = t.name.0.to_string();
        let mut parts = Vec::new();
        for p in t.partitions.into_iter().take(PARTITIONS_PER_REQUEST_MAX) {
            let mut r = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            if v >= 4 {
                r = r.with_leader_epoch(0);
            }
            let lead = broker.lead_check(&name, p.partition_index);
            let result = match broker.partition(&name, p.partition_index) {
                _ if lead.is_err() => Err(lead.err().unwrap_or(code::NOT_LEADER_OR_FOLLOWER)),
                None => Err(code::UNKNOWN_TOPIC_OR_PARTITION),
                Some(part) => match p.timestamp {
                    -1 => Ok(Some((part.high_watermark(), -1))),
                    -2 | -4 => Ok(Some((part.log_start_offset().await, -1))),
                    -3 => part.max_timestamp().await,
                    ts if ts >= 0 => part.offset_for_time(ts).await,
                    _ => Err(code::INVALID_REQUEST),
                },
            };
            r = match result {
                Ok(Some((offset, ts))) => r
                    .with_error_code(code::NONE)
                    .with_offset(offset)
                    .with_timestamp(ts),
                Ok(None) => r.with_error_code(code::NONE),
                Err(c) => r.with_error_code(c),
            };
            parts.push(r);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic_name(&name))
                .with_partitions(parts),
        );
    }
    respond(req, &ListOffsetsResponse::default().with_topics(topics))
}

pub async fn delete_records<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: DeleteRecordsRequest,
) -> Reply {
    let mut topics = Vec::new();
    for t in body.topics.into_iter().take(PARTITIONS_PER_REQUEST_MAX) {
        let name = t.name.0.to_string();
        let mut parts = Vec::new();
        for p in t.partitions.into_iter().take(PARTITIONS_PER_REQUEST_MAX) {
            let r = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            let lead = broker.lead_check(&name, p.partition_index);
            let result = match broker.partition(&name, p.partition_index) {
                _ if lead.is_err() => Err(lead.err().unwrap_or(code::NOT_LEADER_OR_FOLLOWER)),
                None => Err(code::UNKNOWN_TOPIC_OR_PARTITION),
                Some(part) => {
                    let hw = part.high_watermark();
                    let before = if p.offset == -1 { hw } else { p.offset };
                    if before < 0 || before > hw {
                        Err(code::OFFSET_OUT_OF_RANGE)
                    } else {
                        part.delete_records(before).await
                    }
                }
            };
            parts.push(match result {
                Ok(low) => r.with_error_code(code::NONE).with_low_watermark(low),
                Err(c) => r.with_error_code(c),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic_name(&name))
                .with_partitions(parts),
        );
    }
    respond(req, &DeleteRecordsResponse::default().with_topics(topics))
}

pub async fn offset_for_leader_epoch<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: OffsetForLeaderEpochRequest,
) -> Reply {
    let mut topics = Vec::new();
    for t in body.topics.into_iter().take(PARTITIONS_PER_REQUEST_MAX) {
        let name = t.topic.0.to_string();
        let mut parts = Vec::new();
        for p in t.partitions.into_iter().take(PARTITIONS_PER_REQUEST_MAX) {
            let mut r = EpochEndOffset::default()
                .with_partition(p.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1);
            let cluster_lead = broker
                .cluster
                .get()
                .map(|c| c.lead_check(&name, p.partition));
            r = match broker.partition(&name, p.partition) {
                // Cluster mode: the leader answers from its epoch cache (KIP-279/320).
                _ if matches!(cluster_lead, Some(Err(_))) => r.with_error_code(
                    cluster_lead
                        .and_then(|l| l.err())
                        .unwrap_or(code::NOT_LEADER_OR_FOLLOWER),
                ),
                None => r.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION),
                Some(part) if cluster_lead.is_some() => {
                    let epoch = cluster_lead.and_then(|l| l.ok()).unwrap_or(-1);
                    let current = (p.current_leader_epoch >= 0).then_some(p.current_leader_epoch);
                    match part
                        .offset_for_leader_epoch(epoch, current, p.leader_epoch)
                        .await
                    {
                        Ok((e, end)) => r
                            .with_error_code(code::NONE)
                            .with_leader_epoch(e)
                            .with_end_offset(end),
                        Err(c) => r.with_error_code(c),
                    }
                }
                // A single node has only ever had leader epoch 0.
                Some(part) if p.leader_epoch == 0 => r
                    .with_error_code(code::NONE)
                    .with_leader_epoch(0)
                    .with_end_offset(part.high_watermark()),
                Some(_) => r.with_error_code(code::NONE),
            };
            parts.push(r);
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic_name(&name))
                .with_partitions(parts),
        );
    }
    respond(
        req,
        &OffsetForLeaderEpochResponse::default().with_topics(topics),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use samsa_net::records::{build_batch, BatchOptions, Record};

    fn record(key: Option<&'static [u8]>) -> Record {
        Record {
            key: key.map(Bytes::from_static),
            value: Some(Bytes::from_static(b"v")),
            headers: Vec::new(),
            timestamp_ms: 1,
        }
    }

    /// A compacted topic refuses the input and names exactly its keyless records (librdkafka
    /// 0011 fails those with INVALID_RECORD and the rest with _INVALID_DIFFERENT_RECORD).
    #[test]
    fn keyless_records_are_named() {
        let records: Vec<Record> = (0..10)
            .map(|i| record(if i % 4 == 0 { None } else { Some(b"k") }))
            .collect();
        let batch = build_batch(&records, &BatchOptions::default()).freeze();
        assert_eq!(
            validate_produce(&batch, 1 << 20, true),
            Err(code::INVALID_RECORD)
        );
        assert_eq!(validate_produce(&batch, 1 << 20, false), Ok(()));
        assert_eq!(keyless_record_indices(&batch), vec![0, 4, 8]);
        let keyed: Vec<Record> = (0..3).map(|_| record(Some(b"k"))).collect();
        let batch = build_batch(&keyed, &BatchOptions::default()).freeze();
        assert_eq!(keyless_record_indices(&batch), Vec::<i32>::new());
        assert_eq!(keyless_record_indices(b"garbage"), Vec::<i32>::new());
    }
}
