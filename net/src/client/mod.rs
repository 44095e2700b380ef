//! A small pure-Rust Kafka client over any `Net`: `Admin`, `Producer`, `Consumer`. Used by the
//! simulator's workloads (inside madsim), the CLI and benches. One request at a time per
//! connection; every wait has a `tokio::time` timeout and every retry loop a named bound.
//! Produce, Fetch and ListOffsets go to the partition leader once Metadata has named one on a
//! multi-broker cluster (after NOT_LEADER_OR_FOLLOWER and friends); everything else, and every
//! request to a single broker, goes to a bootstrap address.
//! Never reads the wall clock, never draws randomness, never spawns threads or tasks.
//!
//! Errors say whether the request was certainly not applied (`is_definite`) or may have been
//! (timeout or connection lost after sending, or a broker code that does not rule it out): the
//! simulator's history checker depends on that split being exactly right, so any doubt is
//! reported as ambiguous.

mod admin;
mod consumer;
mod consumer_member;
mod group;
mod producer;
mod session;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Request, StrBytes};

use crate::codec;
use crate::error::{code, ErrorCode};
use crate::frame;
use crate::io::Net;
use crate::records::RecordsError;

pub use admin::{Admin, BrokerInfo, Metadata, PartitionInfo, TopicInfo};
pub use consumer::{Consumer, FetchOk, ListOffsetsOk};
pub use consumer_member::{
    ConsumerMember, ConsumerMemberConfig, HeartbeatOk, TopicId, TopicIdPartitions,
};
pub use group::{
    decode_assignment, group_error_is_definite, range_assign, Assignment, GroupConfig,
    GroupDescription, GroupMember, ListedGroup, MemberDescription, GROUP_DEFINITE_CODES,
};
pub use producer::{ProduceOk, Producer, ProducerConfig};
pub(crate) use session::Session;

/// Largest response frame the client reads.
pub const RESPONSE_BYTES_MAX: usize = 128 * 1024 * 1024;
/// Bound on retries whatever a config asks for.
pub const RETRIES_MAX: u32 = 1_000;
/// Bootstrap addresses tried per connection attempt.
pub const BOOTSTRAP_ADDRS_MAX: usize = 64;
/// ApiVersions handshakes per connection (the first may be answered by the KIP-511 fallback).
const HANDSHAKE_ATTEMPTS_MAX: usize = 2;

/// The versions this client can speak: (api key, min, max). Capped below what kafka-protocol
/// knows where a later version changes the shape we use (Produce/Fetch v13 address topics by id).
pub const CLIENT_VERSIONS: &[(i16, i16, i16)] = &[
    (ApiKey::Produce as i16, 3, 12),
    (ApiKey::Fetch as i16, 4, 12),
    (ApiKey::ListOffsets as i16, 1, 8),
    (ApiKey::Metadata as i16, 1, 12),
    (ApiKey::ApiVersions as i16, 0, 3),
    (ApiKey::CreateTopics as i16, 2, 7),
    (ApiKey::DeleteTopics as i16, 1, 6),
    (ApiKey::InitProducerId as i16, 0, 4),
    // Group APIs (`group.rs`): capped where a later version changes the shape it fills in.
    (ApiKey::FindCoordinator as i16, 0, 3),
    (ApiKey::JoinGroup as i16, 4, 7),
    (ApiKey::SyncGroup as i16, 0, 4),
    (ApiKey::Heartbeat as i16, 0, 4),
    (ApiKey::LeaveGroup as i16, 0, 2),
    (ApiKey::OffsetCommit as i16, 2, 7),
    (ApiKey::OffsetFetch as i16, 1, 7),
    (ApiKey::ListGroups as i16, 0, 4),
    (ApiKey::DescribeGroups as i16, 0, 5),
    // KIP-848 (`consumer_member.rs`).
    (ApiKey::ConsumerGroupHeartbeat as i16, 0, 0),
];

/// Broker error codes after which the request was certainly not applied (NOT_ENOUGH_REPLICAS is
/// checked before the append). Any other non-zero
/// code (REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS_AFTER_APPEND, KAFKA_STORAGE_ERROR,
/// UNKNOWN_SERVER_ERROR, codes we do not know, ...) leaves the outcome open. So does
/// NOT_LEADER_OR_FOLLOWER: a leader that loses its partition while an acks=all produce waits for
/// the ISR answers it after the append, as Kafka's delayed produce does (simulator:
/// cluster_replication 1489, where treating it as definite made the producer reuse the sequence
/// for the next record, which was then acked as a duplicate and never stored).
pub const DEFINITE_CODES: &[ErrorCode] = &[
    code::OFFSET_OUT_OF_RANGE,
    code::CORRUPT_MESSAGE,
    code::UNKNOWN_TOPIC_OR_PARTITION,
    code::INVALID_FETCH_SIZE,
    code::LEADER_NOT_AVAILABLE,
    code::MESSAGE_TOO_LARGE,
    code::INVALID_TOPIC_EXCEPTION,
    code::RECORD_LIST_TOO_LARGE,
    code::NOT_ENOUGH_REPLICAS,
    code::INVALID_REQUIRED_ACKS,
    code::TOPIC_AUTHORIZATION_FAILED,
    code::CLUSTER_AUTHORIZATION_FAILED,
    code::INVALID_TIMESTAMP,
    code::UNSUPPORTED_VERSION,
    code::TOPIC_ALREADY_EXISTS,
    code::INVALID_PARTITIONS,
    code::INVALID_REPLICATION_FACTOR,
    code::INVALID_REPLICA_ASSIGNMENT,
    code::INVALID_CONFIG,
    code::INVALID_REQUEST,
    code::UNSUPPORTED_FOR_MESSAGE_FORMAT,
    code::POLICY_VIOLATION,
    code::OUT_OF_ORDER_SEQUENCE_NUMBER,
    code::INVALID_PRODUCER_EPOCH,
    code::UNKNOWN_PRODUCER_ID,
    code::TOPIC_DELETION_DISABLED,
    code::UNSUPPORTED_COMPRESSION_TYPE,
    code::INVALID_RECORD,
    code::THROTTLING_QUOTA_EXCEEDED,
    code::PRODUCER_FENCED,
    code::UNKNOWN_TOPIC_ID,
];

/// Codes worth retrying: the leader moved or is not ready yet; nothing was applied. (Every code
/// outside `DEFINITE_CODES`, NOT_LEADER_OR_FOLLOWER among them, is retried too.)
const RETRIABLE_DEFINITE_CODES: &[ErrorCode] = &[
    code::UNKNOWN_TOPIC_OR_PARTITION,
    code::LEADER_NOT_AVAILABLE,
    code::NOT_ENOUGH_REPLICAS,
];

/// Connection-level settings shared by every client type.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub client_id: String,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    /// Retries of reads (metadata, fetch, list offsets); writes are never retried by `Admin`.
    pub retries: u32,
    pub retry_backoff_ms: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            client_id: "samsa-client".to_owned(),
            connect_timeout_ms: 5_000,
            request_timeout_ms: 30_000,
            retries: 3,
            retry_backoff_ms: 100,
        }
    }
}

/// What went wrong, and whether the request may have been applied anyway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// Could not connect or complete the handshake; nothing of the request was sent. Definite.
    Connect { reason: String },
    /// The broker does not serve any version of `api_key` we speak. Nothing sent. Definite.
    Unsupported { api_key: i16 },
    /// The caller asked for something we refuse to send. Definite.
    InvalidInput { reason: &'static str },
    /// The broker answered with an error code. Definite iff the code is in `DEFINITE_CODES`.
    Broker {
        api_key: i16,
        code: ErrorCode,
        message: Option<String>,
    },
    /// The records in a fetch response do not decode. A read: nothing applied. Definite.
    CorruptRecords(RecordsError),
    /// No answer within the timeout after the request was (perhaps partly) sent. Ambiguous.
    Timeout { api_key: i16 },
    /// The connection broke after the request was (perhaps partly) sent. Ambiguous.
    ConnectionLost { reason: String },
    /// The answer could not be understood (bad frame, wrong correlation id). Ambiguous.
    Protocol { reason: String },
    /// An earlier attempt was ambiguous and the last one failed definitely: the first may still
    /// have been applied. Ambiguous.
    Unresolved { last: Box<ClientError> },
}

impl ClientError {
    /// True when the request was certainly not applied.
    pub fn is_definite(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::Unsupported { .. }
            | ClientError::InvalidInput { .. }
            | ClientError::CorruptRecords(_) => true,
            ClientError::Broker { code, .. } => DEFINITE_CODES.contains(code),
            ClientError::Timeout { .. }
            | ClientError::ConnectionLost { .. }
            | ClientError::Protocol { .. }
            | ClientError::Unresolved { .. } => false,
        }
    }

    /// The Kafka error code, when the broker sent one (also inside `Unresolved`).
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            ClientError::Unresolved { last } => last.error_code(),
            _ => None,
        }
    }

    /// Worth another attempt: transport trouble or a leader that is moving.
    fn is_retriable(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::Timeout { .. }
            | ClientError::ConnectionLost { .. }
            | ClientError::Protocol { .. } => true,
            ClientError::Broker { code, .. } => {
                RETRIABLE_DEFINITE_CODES.contains(code) || !DEFINITE_CODES.contains(code)
            }
            _ => false,
        }
    }

    /// After this error the connection's byte stream can no longer be trusted.
    fn poisons_connection(&self) -> bool {
        matches!(
            self,
            ClientError::Timeout { .. }
                | ClientError::ConnectionLost { .. }
                | ClientError::Protocol { .. }
        )
    }

    fn broker(api_key: i16, code: ErrorCode, message: Option<&StrBytes>) -> ClientError {
        ClientError::Broker {
            api_key,
            code,
            message: message.map(|m| m.as_str().to_owned()),
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.is_definite() {
            "definite"
        } else {
            "ambiguous"
        };
        write!(f, "{kind}: {self:?}")
    }
}

impl std::error::Error for ClientError {}

/// The version of `api_key` to use given the broker's advertised ranges.
fn negotiate(api_key: i16, broker: &BTreeMap<i16, (i16, i16)>) -> Option<i16> {
    let &(_, ours_min, ours_max) = CLIENT_VERSIONS.iter().find(|(k, _, _)| *k == api_key)?;
    let &(theirs_min, theirs_max) = broker.get(&api_key)?;
    let high = ours_max.min(theirs_max);
    (high >= ours_min.max(theirs_min)).then_some(high)
}

fn encode_request<R: Request>(
    version: i16,
    correlation_id: i32,
    client_id: &str,
    body: &R,
) -> Result<BytesMut, ClientError> {
    codec::encode_request(R::KEY, version, correlation_id, Some(client_id), body).map_err(|_| {
        ClientError::InvalidInput {
            reason: "request does not encode",
        }
    })
}

/// Splits a response frame into correlation id and body (never panics on the frame's bytes).
fn decode_response<R: Request>(version: i16, frame: Bytes) -> Result<(i32, R::Response), String> {
    codec::decode_response::<R::Response>(R::KEY, version, frame).map_err(|e| e.to_string())
}

/// One connection after a successful ApiVersions handshake.
pub struct Connection<N: Net> {
    stream: N::Stream,
    addr: SocketAddr,
    client_id: String,
    next_correlation_id: i32,
    /// API key -> version chosen for it.
    versions: BTreeMap<i16, i16>,
    request_timeout: Duration,
}

impl<N: Net> Connection<N> {
    /// Connects to `addr` and negotiates versions. Any failure here is definite: no request of
    /// the caller's has been sent yet.
    pub async fn connect(
        net: &N,
        addr: SocketAddr,
        config: &ClientConfig,
    ) -> Result<Self, ClientError> {
        let connect_timeout = Duration::from_millis(config.connect_timeout_ms);
        let stream = match tokio::time::timeout(connect_timeout, net.connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Err(ClientError::Connect {
                    reason: format!("{addr}: {e}"),
                })
            }
            Err(_) => {
                return Err(ClientError::Connect {
                    reason: format!("{addr}: timed out"),
                })
            }
        };
        let mut conn = Connection {
            stream,
            addr,
            client_id: config.client_id.clone(),
            next_correlation_id: 1,
            versions: BTreeMap::new(),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
        };
        let mut version = 3;
        for _ in 0..HANDSHAKE_ATTEMPTS_MAX {
            let response = conn
                .api_versions(version)
                .await
                .map_err(|e| ClientError::Connect {
                    reason: format!("{addr}: ApiVersions handshake: {e}"),
                })?;
            let broker: BTreeMap<i16, (i16, i16)> = response
                .api_keys
                .iter()
                .map(|k| (k.api_key, (k.min_version, k.max_version)))
                .collect();
            if response.error_code == code::UNSUPPORTED_VERSION {
                // KIP-511: the broker does not know our version and told us its range.
                match negotiate(ApiKey::ApiVersions as i16, &broker) {
                    Some(v) if v != version => {
                        version = v;
                        continue;
                    }
                    _ => {
                        return Err(ClientError::Unsupported {
                            api_key: ApiKey::ApiVersions as i16,
                        })
                    }
                }
            }
            if response.error_code != 0 {
                return Err(ClientError::Connect {
                    reason: format!("{addr}: ApiVersions error {}", response.error_code),
                });
            }
            conn.versions = CLIENT_VERSIONS
                .iter()
                .filter_map(|&(key, _, _)| negotiate(key, &broker).map(|v| (key, v)))
                .collect();
            return Ok(conn);
        }
        Err(ClientError::Connect {
            reason: format!("{addr}: ApiVersions did not settle"),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The negotiated version of `api_key`, if the broker serves one we speak.
    pub fn version(&self, api_key: i16) -> Option<i16> {
        self.versions.get(&api_key).copied()
    }

    async fn api_versions(&mut self, version: i16) -> Result<ApiVersionsResponse, ClientError> {
        let mut request = ApiVersionsRequest::default();
        if version >= 3 {
            request.client_software_name = StrBytes::from_static_str("samsa-client");
            request.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
        }
        let correlation_id = self.take_correlation_id();
        let frame = encode_request(version, correlation_id, &self.client_id, &request)?;
        self.write(&frame, ApiKey::ApiVersions as i16).await?;
        let response = self
            .read(ApiKey::ApiVersions as i16, Duration::ZERO)
            .await?;
        // An UNSUPPORTED_VERSION answer carries a v0 body whatever we asked for (KIP-511).
        let mut peek = response.clone();
        let error_code = if peek.len() >= 6 {
            peek.advance(4);
            peek.get_i16()
        } else {
            0
        };
        let version = if error_code == code::UNSUPPORTED_VERSION {
            0
        } else {
            version
        };
        let (got, body) = decode_response::<ApiVersionsRequest>(version, response)
            .map_err(|reason| ClientError::Protocol { reason })?;
        check_correlation(correlation_id, got)?;
        Ok(body)
    }

    fn take_correlation_id(&mut self) -> i32 {
        let id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1).max(1);
        id
    }

    async fn write(&mut self, frame: &[u8], api_key: i16) -> Result<(), ClientError> {
        match tokio::time::timeout(
            self.request_timeout,
            frame::write_frame(&mut self.stream, frame),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ClientError::ConnectionLost {
                reason: format!("write: {e}"),
            }),
            Err(_) => Err(ClientError::Timeout { api_key }),
        }
    }

    async fn read(&mut self, api_key: i16, extra_wait: Duration) -> Result<Bytes, ClientError> {
        let wait = self.request_timeout.saturating_add(extra_wait);
        match tokio::time::timeout(
            wait,
            frame::read_frame(&mut self.stream, RESPONSE_BYTES_MAX),
        )
        .await
        {
            Ok(Ok(Some(frame))) => Ok(frame.freeze()),
            Ok(Ok(None)) => Err(ClientError::ConnectionLost {
                reason: "closed by broker".into(),
            }),
            Ok(Err(e)) => Err(ClientError::ConnectionLost {
                reason: format!("read: {e}"),
            }),
            Err(_) => Err(ClientError::Timeout { api_key }),
        }
    }

    /// Sends `request` and waits for its answer (up to the request timeout plus `extra_wait`,
    /// for long polls). Errors after the first byte is written are ambiguous.
    pub async fn call<R: Request>(
        &mut self,
        request: &R,
        extra_wait: Duration,
    ) -> Result<R::Response, ClientError> {
        let version = self
            .version(R::KEY)
            .ok_or(ClientError::Unsupported { api_key: R::KEY })?;
        let correlation_id = self.take_correlation_id();
        let frame = encode_request(version, correlation_id, &self.client_id, request)?;
        self.write(&frame, R::KEY).await?;
        let response = self.read(R::KEY, extra_wait).await?;
        let (got, body) = decode_response::<R>(version, response)
            .map_err(|reason| ClientError::Protocol { reason })?;
        check_correlation(correlation_id, got)?;
        Ok(body)
    }

    /// Sends `request` without waiting for an answer (Produce with acks=0).
    pub async fn send_only<R: Request>(&mut self, request: &R) -> Result<(), ClientError> {
        let version = self
            .version(R::KEY)
            .ok_or(ClientError::Unsupported { api_key: R::KEY })?;
        let correlation_id = self.take_correlation_id();
        let frame = encode_request(version, correlation_id, &self.client_id, request)?;
        self.write(&frame, R::KEY).await
    }
}

fn check_correlation(expected: i32, got: i32) -> Result<(), ClientError> {
    if expected == got {
        Ok(())
    } else {
        Err(ClientError::Protocol {
            reason: format!("correlation id {got}, expected {expected}"),
        })
    }
}
