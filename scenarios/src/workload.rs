//! The client workload of the single-node scenarios, on samsa-net's pure-Rust client over a
//! `ChaosNet`: producers send `p<id>-<seq>` values one at a time (acks and idempotence from the
//! seed), consumers poll forward from offset 0, and after healing a final reader reads the whole
//! partition. Every client operation goes into the history as invoke then ok / fail (definite) /
//! info (ambiguous), exactly as the client classified it. On a compacted topic (the compaction
//! scenario) sends are keyed (hot and cold keys) and some are tombstones, whose id travels in a
//! record header; the final reader records keys too. Never decides pass or fail itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{CreateTopicsRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use samsa_net::client::{
    Admin, ClientConfig, ClientError, Connection, Consumer, Producer, ProducerConfig,
};
use samsa_net::error::code;
use samsa_net::records::{build_batch, BatchOptions, Record};
use samsa_net::TokioNet;
use samsa_sim::chaos::{Chaos, ChaosNet};
use samsa_sim::history::{Call, FinalLog, History, Outcome, SIM_ID_HEADER, TOMBSTONE_PREFIX};
use samsa_sim::seed::Seed;
use samsa_sim::trace::Trace;

use crate::SimOptions;

pub const TOPIC: &str = "t";
/// Partitions the workload may use (the options draw 1..=this).
pub const PARTITIONS_MAX: i32 = 8;
/// Attempts to create the topic before the workload gives up on it.
pub const CREATE_ATTEMPTS_MAX: u32 = 20;
/// Fetches the final reader may issue (bounds the loop whatever the broker answers).
pub const FINAL_FETCHES_MAX: u32 = 10_000;
/// Bytes per fetch.
pub const FETCH_BYTES_MAX: i32 = 1 << 20;

#[derive(Clone)]
pub struct Workload {
    pub seed: u64,
    pub broker: SocketAddr,
    pub chaos: Chaos,
    pub history: Arc<Mutex<History>>,
    pub trace: Trace,
    pub opts: SimOptions,
    /// Set by the supervisor during the liveness phase: invoke nothing new, let in-flight
    /// operations resolve.
    pub stop: Arc<AtomicBool>,
    /// Every broker's client address (cluster scenarios); empty: `broker` alone.
    pub bootstrap: Vec<SocketAddr>,
}

fn lock(h: &Mutex<History>) -> std::sync::MutexGuard<'_, History> {
    h.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now_ms() -> u64 {
    samsa_sim::sim_now_ms()
}

fn client_config(name: String) -> ClientConfig {
    ClientConfig {
        client_id: name,
        connect_timeout_ms: 1_000,
        request_timeout_ms: 2_000,
        retries: 3,
        retry_backoff_ms: 100,
    }
}

impl Workload {
    fn net(&self) -> ChaosNet<TokioNet> {
        ChaosNet::new(TokioNet, self.chaos.clone())
    }

    /// The clients' bootstrap addresses.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        if self.bootstrap.is_empty() {
            vec![self.broker]
        } else {
            self.bootstrap.clone()
        }
    }

    fn invoke(&self, process: u32, call: Call) -> Option<u64> {
        let line = format!("invoke p{process} {call:?}");
        let id = lock(&self.history).invoke(process, now_ms(), call);
        self.trace.event(line);
        id
    }

    fn complete(&self, id: Option<u64>, process: u32, outcome: Outcome) {
        let Some(id) = id else { return };
        self.trace
            .event(format!("complete p{process} op{id} {outcome:?}"));
        lock(&self.history).complete(id, now_ms(), outcome);
    }

    /// Creates the topic (already existing is fine); bounded attempts.
    pub(crate) async fn ensure_topic(&self, name: String) {
        if self.opts.replication_factor > 0 {
            return self.ensure_replicated_topic(name).await;
        }
        let mut admin = Admin::new(self.net(), self.addrs(), client_config(name));
        for _ in 0..CREATE_ATTEMPTS_MAX {
            let partitions = self.opts.partitions.clamp(1, PARTITIONS_MAX);
            match admin
                .create_topics(TOPIC, partitions, topic_configs(&self.opts))
                .await
            {
                Ok(_) => return,
                Err(e) if e.error_code() == Some(code::TOPIC_ALREADY_EXISTS) => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

impl Workload {
    /// Cluster scenarios: CreateTopics with the drawn replication factor, sent to each broker
    /// in turn until the active controller takes it (the others answer NOT_CONTROLLER).
    async fn ensure_replicated_topic(&self, name: String) {
        let config = client_config(name);
        let addrs = self.addrs();
        for attempt in 0..CREATE_ATTEMPTS_MAX {
            let addr = addrs[attempt as usize % addrs.len()];
            let mut topic = CreatableTopic::default();
            topic.name = TopicName(StrBytes::from_static_str(TOPIC));
            topic.num_partitions = self.opts.partitions.clamp(1, PARTITIONS_MAX);
            topic.replication_factor = self.opts.replication_factor;
            topic.configs = topic_configs(&self.opts)
                .into_iter()
                .map(|(k, v)| {
                    let mut c = CreatableTopicConfig::default();
                    c.name = StrBytes::from_string(k);
                    c.value = Some(StrBytes::from_string(v));
                    c
                })
                .collect();
            let mut request = CreateTopicsRequest::default();
            request.topics = vec![topic];
            request.timeout_ms = 5_000;
            let answer = match Connection::connect(&self.net(), addr, &config).await {
                Ok(mut conn) => conn.call(&request, Duration::ZERO).await,
                Err(e) => Err(e),
            };
            let error = match &answer {
                Ok(r) => r.topics.first().map(|t| t.error_code),
                Err(_) => None,
            };
            match error {
                Some(code::NONE) | Some(code::TOPIC_ALREADY_EXISTS) => return,
                Some(code::NOT_CONTROLLER) => {}
                _ => {
                    self.trace.event(format!(
                        "create topic at {addr}: {:?}",
                        answer.map(|r| r.topics.first().map(|t| t.error_code))
                    ));
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
            }
        }
    }
}

/// The topic's configs: none, the replication scenario's `min.insync.replicas`, or the
/// compaction scenario's drawn ones.
pub fn topic_configs(o: &SimOptions) -> Vec<(String, String)> {
    if !o.compacted {
        if o.min_insync > 0 {
            return vec![("min.insync.replicas".to_string(), o.min_insync.to_string())];
        }
        return Vec::new();
    }
    let mut configs = vec![
        ("cleanup.policy".to_string(), "compact".to_string()),
        (
            "min.cleanable.dirty.ratio".to_string(),
            format!("{}", o.min_cleanable_dirty_ratio),
        ),
        (
            "delete.retention.ms".to_string(),
            o.delete_retention_ms.to_string(),
        ),
    ];
    if o.segment_ms > 0 {
        configs.push(("segment.ms".to_string(), o.segment_ms.to_string()));
    }
    configs
}

/// The record of one send: unkeyed (or `key_bytes` of `k`) normally; on a compacted topic a
/// hot or cold key and, sometimes, a tombstone. Returns (key for the history, value, record).
fn record_for(
    o: &SimOptions,
    seed: &mut Seed,
    id: u32,
    seq: u32,
) -> (Option<String>, String, Record) {
    let timestamp_ms = 1_700_000_000_000 + i64::from(seq);
    if !o.compacted {
        let value = format!("p{id}-{seq}");
        let record = Record {
            key: (o.key_bytes > 0).then(|| Bytes::from(vec![b'k'; o.key_bytes as usize])),
            value: Some(Bytes::from(value.clone())),
            headers: Vec::new(),
            timestamp_ms,
        };
        return (None, value, record);
    }
    let key = if o.keys_cold > 0 && seed.chance(0.25) {
        format!("c{}", seed.range_u64(0, u64::from(o.keys_cold) - 1))
    } else {
        format!("k{}", seed.range_u64(0, u64::from(o.keys_hot.max(1)) - 1))
    };
    let tombstone = seed.chance(o.tombstone_p);
    let value = if tombstone {
        format!("{TOMBSTONE_PREFIX}p{id}-{seq}")
    } else {
        format!("p{id}-{seq}")
    };
    let record = Record {
        key: Some(Bytes::from(key.clone())),
        value: (!tombstone).then(|| Bytes::from(value.clone())),
        headers: if tombstone {
            vec![(SIM_ID_HEADER.to_string(), Some(Bytes::from(value.clone())))]
        } else {
            Vec::new()
        },
        timestamp_ms,
    };
    (Some(key), value, record)
}

fn outcome_of_error(e: &ClientError) -> Outcome {
    if e.is_definite() {
        Outcome::Fail(e.to_string())
    } else {
        Outcome::Info(e.to_string())
    }
}

/// A record's key as text (compaction scenario keys are short ASCII).
fn key_string(r: &Record) -> Option<String> {
    r.key
        .as_ref()
        .map(|k| String::from_utf8_lossy(k).into_owned())
}

/// A record's value as the history spells it: a tombstone is named by its id header.
fn value_string(r: &Record) -> String {
    match &r.value {
        Some(v) => String::from_utf8_lossy(v).into_owned(),
        None => r
            .headers
            .iter()
            .find(|(name, _)| name == SIM_ID_HEADER)
            .and_then(|(_, v)| v.as_ref())
            .map_or("<null>".to_string(), |v| {
                String::from_utf8_lossy(v).into_owned()
            }),
    }
}

/// An acknowledged idempotent batch kept for delayed duplicates:
/// (value, record, producer id, epoch, sequence).
type AckedBatch = (String, Record, i64, i16, i32);

/// One producer: `sends_per_producer` values, one request at a time.
pub async fn producer(wl: Workload, id: u32) {
    let mut seed = Seed::new(wl.seed).child(&format!("producer{id}"));
    let idempotent = wl
        .opts
        .idempotent
        .get(id as usize)
        .copied()
        .unwrap_or(false);
    wl.ensure_topic(format!("p{id}-admin")).await;
    let config = ProducerConfig {
        acks: wl.opts.acks,
        idempotent,
        request_timeout_ms: 2_000,
        retries: 5,
        retry_backoff_ms: 100,
        client_id: format!("p{id}"),
        connect_timeout_ms: 1_000,
        ..ProducerConfig::default()
    };
    let mut producer = Producer::new(wl.net(), wl.addrs(), config);
    // Batches acknowledged under the current producer id and epoch, in sequence order, for
    // delayed duplicates: (value, record, producer id, epoch, sequence).
    // Per partition (the client keeps one sequence per partition).
    let mut acked: BTreeMap<i32, Vec<AckedBatch>> = BTreeMap::new();
    let mut traced_id = (-1i64, -1i16);
    let partitions = wl.opts.partitions.clamp(1, PARTITIONS_MAX);
    for seq in 0..wl.opts.sends_per_producer {
        if wl.stop.load(Ordering::SeqCst) {
            break;
        }
        let partition = seed.range_u64(0, partitions as u64 - 1) as i32;
        let (key, value, record) = record_for(&wl.opts, &mut seed, id, seq);
        let call = Call::Send {
            producer: id,
            partition,
            key,
            value: value.clone(),
            acks: wl.opts.acks,
            idempotent,
        };
        let op = wl.invoke(id, call);
        let outcome = match producer.send(TOPIC, partition, vec![record.clone()]).await {
            Ok(ok) => {
                if idempotent && producer.producer_id_and_epoch() != traced_id {
                    traced_id = producer.producer_id_and_epoch();
                    wl.trace.event(format!(
                        "p{id} producer id {} epoch {}",
                        traced_id.0, traced_id.1
                    ));
                }
                if idempotent {
                    let (pid, epoch) = producer.producer_id_and_epoch();
                    if acked.values().flatten().any(|a| (a.2, a.3) != (pid, epoch)) {
                        acked.clear();
                    }
                    let list = acked.entry(partition).or_default();
                    let next_seq = list.len() as i32;
                    list.push((value, record, pid, epoch, next_seq));
                }
                Outcome::Sent {
                    offset: ok.base_offset,
                }
            }
            Err(e) => {
                if e.error_code() == Some(code::UNKNOWN_TOPIC_OR_PARTITION) {
                    // The topic was never created (the broker was down): create it again.
                    wl.ensure_topic(format!("p{id}-admin")).await;
                }
                outcome_of_error(&e)
            }
        };
        wl.complete(op, id, outcome);
        let list = acked.get(&partition).filter(|l| !l.is_empty());
        if let Some(list) = list.filter(|_| idempotent && seed.chance(wl.opts.duplicate_p)) {
            let back = seed.range_u64(0, (list.len() as u64 - 1).min(4)) as usize;
            let (value, record, pid, epoch, batch_seq) = list[list.len() - 1 - back].clone();
            let batch = (partition, pid, epoch, batch_seq);
            resend(&wl, id, value, record, batch, back as u32).await;
        }
        let pause = seed.range_u64(0, wl.opts.send_pause_ms);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// Re-sends one acknowledged batch with its original producer id, epoch and sequence on a fresh
/// connection: what a network that delivered a retried request late would do.
async fn resend(
    wl: &Workload,
    id: u32,
    value: String,
    record: Record,
    (partition, pid, epoch, batch_seq): (i32, i64, i16, i32),
    back: u32,
) {
    let call = Call::Resend {
        producer: id,
        partition,
        value,
        back,
    };
    let op = wl.invoke(id, call);
    let options = BatchOptions {
        producer_id: pid,
        producer_epoch: epoch,
        base_sequence: batch_seq,
        ..BatchOptions::default()
    };
    let batch = build_batch(&[record], &options).freeze();
    let mut data = PartitionProduceData::default();
    data.index = partition;
    data.records = Some(batch);
    let mut topic = TopicProduceData::default();
    topic.name = TopicName(StrBytes::from_static_str(TOPIC));
    topic.partition_data = vec![data];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 2_000;
    request.topic_data = vec![topic];
    let config = client_config(format!("p{id}-dup"));
    let outcome = match Connection::connect(&wl.net(), wl.broker, &config).await {
        Err(e) => outcome_of_error(&e),
        Ok(mut conn) => match conn.call(&request, Duration::ZERO).await {
            Err(e) => outcome_of_error(&e),
            Ok(response) => {
                let found = response
                    .responses
                    .iter()
                    .flat_map(|t| t.partition_responses.iter())
                    .find(|p| p.index == partition);
                match found {
                    Some(p) if p.error_code == 0 => Outcome::Sent {
                        offset: p.base_offset,
                    },
                    Some(p) => Outcome::Info(format!("Broker {{ code: {} }}", p.error_code)),
                    None => Outcome::Info("no partition in the response".into()),
                }
            }
        },
    };
    wl.complete(op, id, outcome);
}

/// One consumer: polls forward from 0 until the safety phase is over.
pub async fn consumer(wl: Workload, id: u32) {
    let process = 100 + id;
    let mut seed = Seed::new(wl.seed).child(&format!("consumer{id}"));
    wl.ensure_topic(format!("c{id}-admin")).await;
    let mut consumer = Consumer::new(wl.net(), wl.addrs(), client_config(format!("c{id}")));
    let partition = (id as i32) % wl.opts.partitions.clamp(1, PARTITIONS_MAX);
    let mut position = 0i64;
    // A consumer whose position became invalid restarts as a new incarnation (a new "consumer"
    // in the history), so the monotonic-poll check judges each incarnation on its own.
    let mut incarnation = 0u32;
    let stop_at = wl.opts.safety_ms;
    while now_ms() < stop_at && !wl.stop.load(Ordering::SeqCst) {
        let call = Call::Poll {
            consumer: id * 1000 + incarnation,
            partition,
            from_offset: position,
        };
        let op = wl.invoke(process, call);
        let outcome = match consumer
            .fetch(TOPIC, partition, position, 200, FETCH_BYTES_MAX)
            .await
        {
            Ok(ok) => {
                let records: Vec<(i64, String)> = ok
                    .records
                    .iter()
                    .filter(|(o, _)| *o >= position)
                    .map(|(o, r)| (*o, value_string(r)))
                    .collect();
                if let Some((last, _)) = records.last() {
                    position = last + 1;
                }
                // Past batches the cleaner emptied or gaps it left (compacted topics).
                position = position.max(ok.next_offset);
                Outcome::Polled {
                    records,
                    high_watermark: ok.high_watermark,
                    log_end_offset: None,
                }
            }
            Err(e) => {
                if e.error_code() == Some(code::OFFSET_OUT_OF_RANGE) {
                    position = 0;
                    incarnation += 1;
                }
                outcome_of_error(&e)
            }
        };
        wl.complete(op, process, outcome);
        let pause = seed.range_u64(10, 300);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// After healing: every partition, from offset 0 to its listed end offset.
pub async fn final_read(wl: Workload) -> FinalLog {
    let mut log = FinalLog {
        complete: true,
        ..FinalLog::default()
    };
    // The final reader retries on its own terms (see `final_read_partition`): client-level
    // retries with backoff would make walking a long refused range outlast the liveness bound.
    // In a cluster it needs one retry: the client learns the partition leaders only when an
    // answer says the leader moved and a retry is left.
    let config = ClientConfig {
        retries: if wl.bootstrap.is_empty() { 0 } else { 2 },
        ..client_config("final".into())
    };
    let mut consumer = Consumer::new(wl.net(), wl.addrs(), config);
    for partition in 0..wl.opts.partitions.clamp(1, PARTITIONS_MAX) {
        let done = final_read_partition(&wl, &mut consumer, partition, &mut log).await;
        log.complete &= done;
    }
    log.read_done_ms = now_ms();
    log
}

/// Reads one partition into `log`; true when it reached the listed end offset.
async fn final_read_partition(
    wl: &Workload,
    consumer: &mut Consumer<ChaosNet<TokioNet>>,
    partition: i32,
    log: &mut FinalLog,
) -> bool {
    let mut end = None;
    for _ in 0..CREATE_ATTEMPTS_MAX {
        match consumer.list_offsets(TOPIC, partition, -1).await {
            Ok(ok) => {
                end = Some(ok.offset);
                break;
            }
            Err(e) if e.error_code() == Some(code::UNKNOWN_TOPIC_OR_PARTITION) => {
                // Nothing was ever created: an empty log.
                end = Some(0);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let Some(end) = end else { return false };
    log.log_end_offsets.insert(partition, end);
    let mut records = BTreeMap::new();
    let mut corrupt = Vec::new();
    let mut position = 0i64;
    let mut failures_here = 0u32;
    let mut complete = false;
    for _ in 0..FINAL_FETCHES_MAX {
        if position >= end {
            complete = true;
            break;
        }
        match consumer
            .fetch(TOPIC, partition, position, 100, FETCH_BYTES_MAX)
            .await
        {
            Ok(ok) => {
                failures_here = 0;
                let before = position;
                let fresh: Vec<(i64, String, Option<String>)> = ok
                    .records
                    .iter()
                    .filter(|(o, _)| *o >= before)
                    .map(|(o, r)| (*o, value_string(r), key_string(r)))
                    .collect();
                let got: Vec<String> = fresh
                    .iter()
                    .map(|(o, v, k)| match k.as_ref().filter(|_| wl.opts.compacted) {
                        Some(k) => format!("{o}:{k}={v}"),
                        None => o.to_string(),
                    })
                    .collect();
                wl.trace.event(format!(
                    "final fetch partition={partition} from={before} got=[{}] hw={}",
                    got.join(", "),
                    ok.high_watermark
                ));
                for (o, v, k) in fresh {
                    records.insert(o, v);
                    if let Some(k) = k.filter(|_| wl.opts.compacted) {
                        log.keys.entry(partition).or_default().insert(o, k);
                    }
                    position = o + 1;
                }
                // Past batches the cleaner emptied (kept for producer state) or gaps it left.
                position = position.max(ok.next_offset.min(end));
                if position == before && ok.records.is_empty() && ok.high_watermark <= position {
                    // Nothing more to read although the listed end is further: stop.
                    break;
                }
            }
            Err(e) => {
                failures_here += 1;
                let is_corrupt = matches!(e, ClientError::CorruptRecords(_))
                    || e.error_code() == Some(code::CORRUPT_MESSAGE)
                    || e.error_code() == Some(code::KAFKA_STORAGE_ERROR);
                if is_corrupt && failures_here >= 3 {
                    // The broker reports this offset unreadable: record it and move past it.
                    corrupt.push((partition, position..position + 1));
                    position += 1;
                    failures_here = 0;
                } else if !is_corrupt {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                // A corruption error is retried at once: read flips do not heal with time, and a
                // refused range can span a whole segment that must be walked offset by offset.
            }
        }
    }
    wl.trace.event(format!(
        "final read partition={partition} end={end} records={}",
        records.len()
    ));
    log.partitions.insert(partition, records);
    log.corrupt.extend(corrupt);
    complete
}
