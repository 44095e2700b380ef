//! Request dispatch: parse the header, decode the typed body, run the handler for its api key,
//! encode the response at the request's version. Bad input (unknown keys or versions, bodies
//! that do not decode) is logged once per connection and answered with UNSUPPORTED_VERSION where
//! Kafka does so, else the connection is closed. Never panics on input bytes.

mod admin;
mod data;
mod group;

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};
use samsa_net::Clock;
use samsa_storage::Disk;

use crate::broker::Broker;
use crate::node::PendingReply;
use crate::wire::{self, CodecError, RequestFrame};

pub use samsa_net::error::code;

/// Most topics (and partitions per topic) one AlterPartition request may name.
pub const ALTER_PARTITIONS_MAX: usize = 10_000;

/// Per-connection state the dispatcher keeps: which kinds of bad input were already logged.
#[derive(Default)]
pub struct ConnState {
    warned: BTreeSet<&'static str>,
    /// This connection's id: ids grow with every connection the broker accepts.
    pub id: u64,
}

impl ConnState {
    pub fn new(id: u64) -> ConnState {
        ConnState {
            warned: BTreeSet::new(),
            id,
        }
    }

    fn warn_once(&mut self, kind: &'static str, detail: impl FnOnce() -> String) {
        if self.warned.insert(kind) {
            tracing::warn!(kind, "bad request: {}", detail());
        }
    }
}

/// What to do with one request's answer.
pub enum Reply {
    /// Send this now (in order); `None` sends nothing (acks=0 produce).
    Now(Option<BytesMut>),
    /// Send this once it resolves (still in request order).
    Later(PendingReply),
    /// Close the connection (Kafka's answer to unparseable requests).
    Close,
}

pub(crate) fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

pub(crate) fn topic_name(v: &str) -> TopicName {
    TopicName(s(v))
}

/// Encodes `body` as the response to `req`; an encoding failure is our bug: log it and close.
pub(crate) fn respond<T: Encodable>(req: &RequestFrame, body: &T) -> Reply {
    match encode(req, body) {
        Some(b) => Reply::Now(Some(b)),
        None => Reply::Close,
    }
}

pub(crate) fn encode<T: Encodable>(req: &RequestFrame, body: &T) -> Option<BytesMut> {
    match wire::encode_response(req.api_key, req.api_version, req.correlation_id, body) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::error!(
                api_key = req.api_key,
                api_version = req.api_version,
                "cannot encode response: {e}"
            );
            None
        }
    }
}

fn decode<T: Decodable + Message>(req: &RequestFrame, conn: &mut ConnState) -> Option<T> {
    match wire::decode_body::<T>(req) {
        Ok(v) => Some(v),
        Err(e) => {
            conn.warn_once("malformed body", || {
                format!("api {} v{}: {e}; closing", req.api_key, req.api_version)
            });
            None
        }
    }
}

/// Handles one request frame.
pub async fn dispatch<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    frame: Bytes,
    conn: &mut ConnState,
) -> Reply {
    let req = match wire::decode_request_header(frame) {
        Ok(req) => req,
        Err(e) => {
            // Only an ApiVersions request at an unknown version is answered (KIP-511); Kafka
            // closes the connection on everything else it cannot parse.
            if let Some(body) = e.response() {
                return Reply::Now(Some(body));
            }
            let kind = match &e {
                CodecError::Truncated { .. } => "short frame",
                CodecError::UnknownApiKey { .. } => "unknown api key",
                CodecError::UnsupportedVersion { .. } => "unsupported version",
                CodecError::Malformed { .. } => "malformed header",
                CodecError::Encode { .. } => "encode",
            };
            conn.warn_once(kind, || format!("{e}; closing"));
            return Reply::Close;
        }
    };
    tracing::trace!(
        api_key = req.api_key,
        api_version = req.api_version,
        correlation_id = req.correlation_id,
        client_id = req.client_id.as_deref().unwrap_or(""),
        "request"
    );
    macro_rules! handle {
        ($ty:ty, $f:path) => {
            match decode::<$ty>(&req, conn) {
                Some(body) => $f(broker, &req, body).await,
                None => Reply::Close,
            }
        };
    }
    match ApiKey::try_from(req.api_key) {
        Ok(ApiKey::ApiVersions) => api_versions(&req, conn),
        Ok(ApiKey::Metadata) => handle!(MetadataRequest, admin::metadata),
        Ok(ApiKey::CreateTopics) => handle!(CreateTopicsRequest, admin::create_topics),
        Ok(ApiKey::DeleteTopics) => handle!(DeleteTopicsRequest, admin::delete_topics),
        Ok(ApiKey::CreatePartitions) => {
            handle!(CreatePartitionsRequest, admin::create_partitions)
        }
        Ok(ApiKey::InitProducerId) => handle!(InitProducerIdRequest, admin::init_producer_id),
        Ok(ApiKey::DescribeCluster) => handle!(DescribeClusterRequest, admin::describe_cluster),
        Ok(ApiKey::DescribeQuorum) => handle!(DescribeQuorumRequest, admin::describe_quorum),
        Ok(ApiKey::BrokerRegistration) => {
            handle!(BrokerRegistrationRequest, admin::broker_registration)
        }
        Ok(ApiKey::BrokerHeartbeat) => handle!(BrokerHeartbeatRequest, admin::broker_heartbeat),
        Ok(ApiKey::AlterPartition) => handle!(AlterPartitionRequest, admin::alter_partition),
        Ok(ApiKey::DescribeConfigs) => handle!(DescribeConfigsRequest, admin::describe_configs),
        Ok(ApiKey::AlterConfigs) => handle!(AlterConfigsRequest, admin::alter_configs),
        Ok(ApiKey::IncrementalAlterConfigs) => {
            handle!(
                IncrementalAlterConfigsRequest,
                admin::incremental_alter_configs
            )
        }
        Ok(ApiKey::DescribeTopicPartitions) => {
            handle!(
                DescribeTopicPartitionsRequest,
                admin::describe_topic_partitions
            )
        }
        Ok(ApiKey::ElectLeaders) => handle!(ElectLeadersRequest, admin::elect_leaders),
        Ok(ApiKey::ListPartitionReassignments) => {
            handle!(
                ListPartitionReassignmentsRequest,
                admin::list_partition_reassignments
            )
        }
        Ok(ApiKey::AlterPartitionReassignments) => {
            handle!(
                AlterPartitionReassignmentsRequest,
                admin::alter_partition_reassignments
            )
        }
        Ok(ApiKey::DescribeLogDirs) => handle!(DescribeLogDirsRequest, admin::describe_log_dirs),
        Ok(ApiKey::AlterReplicaLogDirs) => {
            handle!(AlterReplicaLogDirsRequest, admin::alter_replica_log_dirs)
        }
        Ok(ApiKey::Produce) => handle!(ProduceRequest, data::produce),
        Ok(ApiKey::Fetch) => handle!(FetchRequest, data::fetch),
        Ok(ApiKey::ListOffsets) => handle!(ListOffsetsRequest, data::list_offsets),
        Ok(ApiKey::DeleteRecords) => handle!(DeleteRecordsRequest, data::delete_records),
        Ok(ApiKey::OffsetForLeaderEpoch) => {
            handle!(OffsetForLeaderEpochRequest, data::offset_for_leader_epoch)
        }
        Ok(ApiKey::FindCoordinator) => handle!(FindCoordinatorRequest, group::find_coordinator),
        Ok(ApiKey::JoinGroup) => handle!(JoinGroupRequest, group::join_group),
        Ok(ApiKey::SyncGroup) => handle!(SyncGroupRequest, group::sync_group),
        Ok(ApiKey::Heartbeat) => handle!(HeartbeatRequest, group::heartbeat),
        Ok(ApiKey::LeaveGroup) => handle!(LeaveGroupRequest, group::leave_group),
        Ok(ApiKey::OffsetCommit) => handle!(OffsetCommitRequest, group::offset_commit),
        Ok(ApiKey::OffsetFetch) => handle!(OffsetFetchRequest, group::offset_fetch),
        Ok(ApiKey::OffsetDelete) => handle!(OffsetDeleteRequest, group::offset_delete),
        Ok(ApiKey::DescribeGroups) => handle!(DescribeGroupsRequest, group::describe_groups),
        Ok(ApiKey::ListGroups) => handle!(ListGroupsRequest, group::list_groups),
        Ok(ApiKey::DeleteGroups) => handle!(DeleteGroupsRequest, group::delete_groups),
        Ok(ApiKey::ConsumerGroupHeartbeat) => {
            match decode::<ConsumerGroupHeartbeatRequest>(&req, conn) {
                Some(body) => group::consumer_group_heartbeat(broker, &req, body, conn.id).await,
                None => Reply::Close,
            }
        }
        Ok(ApiKey::ConsumerGroupDescribe) => {
            handle!(ConsumerGroupDescribeRequest, group::consumer_group_describe)
        }
        _ => {
            // The header check admits only served keys, so this is a table mismatch.
            conn.warn_once("unserved api", || {
                format!("api key {} has no handler", req.api_key)
            });
            Reply::Close
        }
    }
}

fn api_versions(req: &RequestFrame, conn: &mut ConnState) -> Reply {
    // Kafka answers a v3+ body it cannot parse with INVALID_REQUEST; the versions still help.
    let error_code = match wire::decode_body::<ApiVersionsRequest>(req) {
        Ok(_) => code::NONE,
        Err(e) => {
            conn.warn_once("malformed ApiVersions", || e.to_string());
            code::INVALID_REQUEST
        }
    };
    let body = wire::api_versions_response(error_code).with_throttle_time_ms(0);
    respond(req, &body)
}
