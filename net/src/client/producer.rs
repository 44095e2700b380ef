//! `Producer`: one batch per `send`, sequential (one request in flight). Idempotent mode gets a
//! producer id at start, numbers batches per partition, and retries a batch with the very same
//! bytes and sequence so the broker's duplicate window answers a retry of an applied batch with
//! its original offsets. A failure after any ambiguous attempt is reported as ambiguous.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{ClientConfig, ClientError, Session, RETRIES_MAX};
use crate::compression::Compression;
use crate::error::{code, ErrorCode};
use crate::io::Net;
use crate::records::{build_batch, BatchOptions, Record, RECORDS_PER_BATCH_MAX};

/// Error codes that send the producer back to Metadata for the partition's leader.
const LEADER_MOVED_CODES: &[ErrorCode] = &[
    code::UNKNOWN_TOPIC_OR_PARTITION,
    code::LEADER_NOT_AVAILABLE,
    code::NOT_LEADER_OR_FOLLOWER,
];
/// Error codes after which the producer id must be renewed before the next batch.
const RENEW_PRODUCER_CODES: &[ErrorCode] = &[
    code::OUT_OF_ORDER_SEQUENCE_NUMBER,
    code::INVALID_PRODUCER_EPOCH,
    code::UNKNOWN_PRODUCER_ID,
    code::PRODUCER_FENCED,
];

#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// 0 (no answer), 1 (leader) or -1 (all in-sync replicas).
    pub acks: i16,
    pub idempotent: bool,
    pub compression: Compression,
    pub request_timeout_ms: u64,
    /// Extra attempts after the first (bounded by `RETRIES_MAX`).
    pub retries: u32,
    pub retry_backoff_ms: u64,
    pub client_id: String,
    pub connect_timeout_ms: u64,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        let client = ClientConfig::default();
        ProducerConfig {
            acks: -1,
            idempotent: false,
            compression: Compression::None,
            request_timeout_ms: client.request_timeout_ms,
            retries: client.retries,
            retry_backoff_ms: client.retry_backoff_ms,
            client_id: client.client_id,
            connect_timeout_ms: client.connect_timeout_ms,
        }
    }
}

/// A batch the broker took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProduceOk {
    /// False with acks=0: nothing came back, so the batch may or may not be in the log.
    pub acknowledged: bool,
    /// Offset of the batch's first record; -1 with acks=0 (no answer).
    pub base_offset: i64,
    /// -1 unless the topic uses LogAppendTime.
    pub log_append_time: i64,
    pub log_start_offset: i64,
    /// A non-idempotent retry followed an ambiguous attempt: the records may be in the log twice.
    pub maybe_duplicated: bool,
}

pub struct Producer<N: Net> {
    session: Session<N>,
    config: ProducerConfig,
    producer_id: i64,
    producer_epoch: i16,
    /// Next base sequence per (topic, partition), idempotent mode only.
    sequences: BTreeMap<(String, i32), i32>,
    /// The producer id is missing or its sequence state is unknown.
    needs_producer_id: bool,
}

/// The outcome of one attempt.
enum Attempt {
    Done(ProduceOk),
    Failed(ClientError),
}

impl<N: Net> Producer<N> {
    pub fn new(net: N, bootstrap: Vec<SocketAddr>, config: ProducerConfig) -> Self {
        let client = ClientConfig {
            client_id: config.client_id.clone(),
            connect_timeout_ms: config.connect_timeout_ms,
            request_timeout_ms: config.request_timeout_ms,
            retries: config.retries,
            retry_backoff_ms: config.retry_backoff_ms,
        };
        let needs_producer_id = config.idempotent;
        Producer {
            session: Session::new(net, bootstrap, client),
            config,
            producer_id: -1,
            producer_epoch: -1,
            sequences: BTreeMap::new(),
            needs_producer_id,
        }
    }

    /// The producer id and epoch in use (-1, -1 when not idempotent or not yet initialised).
    pub fn producer_id_and_epoch(&self) -> (i64, i16) {
        (self.producer_id, self.producer_epoch)
    }

    /// Gets a producer id, or (KIP-360) a bumped epoch of the one in use; every partition's
    /// sequence restarts at 0. Re-initialising bumps the epoch rather than taking a new id so
    /// the broker fences a request of the old epoch that is still in flight (held by a
    /// partition, say): under a new id it would land after newer sends and break their order
    /// (simulator: single_net_chaos seed 0).
    pub async fn init_producer_id(&mut self) -> Result<(), ClientError> {
        let mut request = InitProducerIdRequest::default();
        request.transactional_id = None;
        request.transaction_timeout_ms = -1;
        request.producer_id = self.producer_id.into();
        request.producer_epoch = self.producer_epoch;
        let response = self.session.call_read(&request, Duration::ZERO).await?;
        if response.error_code != 0 {
            return Err(ClientError::broker(
                ApiKey::InitProducerId as i16,
                response.error_code,
                None,
            ));
        }
        self.producer_id = response.producer_id.0;
        self.producer_epoch = response.producer_epoch;
        self.sequences.clear();
        self.needs_producer_id = false;
        Ok(())
    }

    /// Sends `records` as one batch to `topic`/`partition`, retrying up to `retries` times.
    pub async fn send(
        &mut self,
        topic: &str,
        partition: i32,
        records: Vec<Record>,
    ) -> Result<ProduceOk, ClientError> {
        if records.is_empty() || records.len() > RECORDS_PER_BATCH_MAX {
            return Err(ClientError::InvalidInput {
                reason: "record count out of range",
            });
        }
        if self.config.idempotent && self.config.acks == 0 {
            // Without answers the sequence state cannot be known (Kafka goes further and asks
            // for acks=-1; acks=1 is allowed here so single-node workloads can mix settings).
            return Err(ClientError::InvalidInput {
                reason: "idempotence needs acks != 0",
            });
        }
        if self.config.idempotent && self.needs_producer_id {
            // Nothing of this batch is sent if this fails: the error is definite for it.
            self.init_producer_id().await.map_err(|e| match e {
                e if e.is_definite() => e,
                e => ClientError::Connect {
                    reason: format!("InitProducerId: {e}"),
                },
            })?;
        }
        let key = (topic.to_owned(), partition);
        let base_sequence = if self.config.idempotent {
            self.sequences.get(&key).copied().unwrap_or(0)
        } else {
            -1
        };
        let options = BatchOptions {
            compression: self.config.compression,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence,
            transactional: false,
        };
        // Built once: every retry carries the same bytes and the same sequence.
        let batch = build_batch(&records, &options).freeze();
        let request = self.produce_request(topic, partition, batch);

        let attempts = self.config.retries.min(RETRIES_MAX) + 1;
        let backoff = Duration::from_millis(self.config.retry_backoff_ms);
        let mut ambiguous_seen = false;
        let mut last_error = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(backoff).await;
            }
            match self.attempt(&request, topic, partition).await {
                Attempt::Done(mut ok) => {
                    if self.config.idempotent {
                        let next = base_sequence.wrapping_add(records.len() as i32);
                        // Sequences wrap from i32::MAX to 0, as Kafka's do.
                        self.sequences
                            .insert(key, if next < 0 { next - i32::MIN } else { next });
                    }
                    ok.maybe_duplicated = ambiguous_seen && !self.config.idempotent;
                    return Ok(ok);
                }
                Attempt::Failed(e) => {
                    ambiguous_seen |= !e.is_definite();
                    let retriable = e.is_retriable();
                    let moved = e
                        .error_code()
                        .is_some_and(|c| LEADER_MOVED_CODES.contains(&c));
                    if moved && attempt + 1 < attempts {
                        self.session.leader_moved(topic, partition).await;
                    }
                    last_error = Some(e);
                    if !retriable {
                        break;
                    }
                }
            }
        }
        let last = last_error.unwrap_or(ClientError::InvalidInput {
            reason: "no attempt made",
        });
        if self.config.idempotent
            && (ambiguous_seen
                || last
                    .error_code()
                    .is_some_and(|c| RENEW_PRODUCER_CODES.contains(&c)))
        {
            // The broker may hold this sequence or not: start over under a new producer id.
            self.needs_producer_id = true;
        }
        if ambiguous_seen && last.is_definite() {
            return Err(ClientError::Unresolved {
                last: Box::new(last),
            });
        }
        Err(last)
    }

    fn produce_request(&self, topic: &str, partition: i32, batch: Bytes) -> ProduceRequest {
        let mut data = PartitionProduceData::default();
        data.index = partition;
        data.records = Some(batch);
        let mut topic_data = TopicProduceData::default();
        topic_data.name = TopicName(StrBytes::from_string(topic.to_owned()));
        topic_data.partition_data = vec![data];
        let mut request = ProduceRequest::default();
        request.transactional_id = None;
        request.acks = self.config.acks;
        request.timeout_ms = i32::try_from(self.config.request_timeout_ms).unwrap_or(i32::MAX);
        request.topic_data = vec![topic_data];
        request
    }

    async fn attempt(&mut self, request: &ProduceRequest, topic: &str, partition: i32) -> Attempt {
        let target = self.session.leader(topic, partition);
        if self.config.acks == 0 {
            return match self.session.send_only_to(target, request).await {
                Ok(()) => Attempt::Done(ProduceOk {
                    acknowledged: false,
                    base_offset: -1,
                    log_append_time: -1,
                    log_start_offset: -1,
                    maybe_duplicated: false,
                }),
                Err(e) => Attempt::Failed(e),
            };
        }
        let response = match self.session.call_to(target, request, Duration::ZERO).await {
            Ok(response) => response,
            Err(e) => return Attempt::Failed(e),
        };
        let found = response
            .responses
            .iter()
            .filter(|t| t.name.0.as_str() == topic)
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == partition);
        let Some(p) = found else {
            return Attempt::Failed(ClientError::Protocol {
                reason: format!("no answer for {topic}/{partition}"),
            });
        };
        let duplicate = self.config.idempotent && p.error_code == code::DUPLICATE_SEQUENCE_NUMBER;
        if p.error_code == 0 || duplicate {
            return Attempt::Done(ProduceOk {
                acknowledged: true,
                base_offset: p.base_offset,
                log_append_time: p.log_append_time_ms,
                log_start_offset: p.log_start_offset,
                maybe_duplicated: false,
            });
        }
        Attempt::Failed(ClientError::broker(
            ApiKey::Produce as i16,
            p.error_code,
            p.error_message.as_ref(),
        ))
    }
}
