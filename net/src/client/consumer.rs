//! `Consumer`: Fetch from an offset (no group, no session: every fetch is a full one) and
//! ListOffsets. Both are reads, so transport failures are retried up to `retries` times.
//! Never returns records before the requested offset, nor records of a partial batch.

use std::net::SocketAddr;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{ApiKey, FetchRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{ClientConfig, ClientError, Session};
use crate::io::Net;
use crate::records::{decode_fetched, next_offset_after, Record};

/// Largest `max_wait_ms` a fetch may ask for.
pub const FETCH_WAIT_MS_MAX: i32 = 60_000;

/// What one Fetch returned for the partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchOk {
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// Records at or after the requested offset, in offset order.
    pub records: Vec<(i64, Record)>,
    /// Where the next fetch should start: after the last complete batch returned (which may hold
    /// only control records), or the requested offset when none was complete.
    pub next_offset: i64,
}

/// The answer to ListOffsets for one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListOffsetsOk {
    pub offset: i64,
    pub timestamp: i64,
}

pub struct Consumer<N: Net> {
    session: Session<N>,
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

impl<N: Net> Consumer<N> {
    pub fn new(net: N, bootstrap: Vec<SocketAddr>, config: ClientConfig) -> Self {
        Consumer {
            session: Session::new(net, bootstrap, config),
        }
    }

    /// Fetches from `offset`, waiting up to `max_wait_ms` for at least one byte.
    pub async fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
        max_bytes: i32,
    ) -> Result<FetchOk, ClientError> {
        if !(0..=FETCH_WAIT_MS_MAX).contains(&max_wait_ms) || max_bytes <= 0 || offset < 0 {
            return Err(ClientError::InvalidInput {
                reason: "fetch arguments out of range",
            });
        }
        let mut fetch_partition = FetchPartition::default();
        fetch_partition.partition = partition;
        fetch_partition.current_leader_epoch = -1;
        fetch_partition.fetch_offset = offset;
        fetch_partition.last_fetched_epoch = -1;
        fetch_partition.log_start_offset = -1;
        fetch_partition.partition_max_bytes = max_bytes;
        let mut fetch_topic = FetchTopic::default();
        fetch_topic.topic = topic_name(topic);
        fetch_topic.partitions = vec![fetch_partition];
        let mut request = FetchRequest::default();
        request.replica_id = (-1).into();
        request.max_wait_ms = max_wait_ms;
        request.min_bytes = 1;
        request.max_bytes = max_bytes;
        request.isolation_level = 0;
        request.session_id = 0;
        request.session_epoch = -1;
        request.topics = vec![fetch_topic];

        let extra_wait = Duration::from_millis(max_wait_ms as u64);
        let response = self
            .session
            .call_partition(topic, partition, &request, extra_wait, |r| {
                let found = r
                    .responses
                    .iter()
                    .filter(|t| t.topic.0.as_str() == topic)
                    .flat_map(|t| t.partitions.iter())
                    .find(|p| p.partition_index == partition);
                found.map(|p| p.error_code)
            })
            .await?;
        if response.error_code != 0 {
            return Err(ClientError::broker(
                ApiKey::Fetch as i16,
                response.error_code,
                None,
            ));
        }
        let found = response
            .responses
            .iter()
            .filter(|t| t.topic.0.as_str() == topic)
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == partition);
        let Some(p) = found else {
            return Err(ClientError::Protocol {
                reason: format!("no fetch answer for {topic}/{partition}"),
            });
        };
        if p.error_code != 0 {
            return Err(ClientError::broker(
                ApiKey::Fetch as i16,
                p.error_code,
                None,
            ));
        }
        let bytes = p.records.as_deref().unwrap_or(&[]);
        let mut records = decode_fetched(bytes).map_err(ClientError::CorruptRecords)?;
        // A batch may start before the requested offset (the broker sends whole batches).
        records.retain(|(o, _)| *o >= offset);
        let next_offset = next_offset_after(bytes).map_or(offset, |next| next.max(offset));
        Ok(FetchOk {
            high_watermark: p.high_watermark,
            log_start_offset: p.log_start_offset,
            records,
            next_offset,
        })
    }

    /// ListOffsets: `timestamp` -1 = latest (log end), -2 = earliest, -3 = max timestamp,
    /// otherwise the first offset whose timestamp is at or after it (-1 offset if none).
    pub async fn list_offsets(
        &mut self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<ListOffsetsOk, ClientError> {
        let mut list_partition = ListOffsetsPartition::default();
        list_partition.partition_index = partition;
        list_partition.current_leader_epoch = -1;
        list_partition.timestamp = timestamp;
        let mut list_topic = ListOffsetsTopic::default();
        list_topic.name = topic_name(topic);
        list_topic.partitions = vec![list_partition];
        let mut request = ListOffsetsRequest::default();
        request.replica_id = (-1).into();
        request.isolation_level = 0;
        request.topics = vec![list_topic];
        request.timeout_ms =
            i32::try_from(self.session.config().request_timeout_ms).unwrap_or(i32::MAX);
        let response = self
            .session
            .call_partition(topic, partition, &request, Duration::ZERO, |r| {
                let found = r
                    .topics
                    .iter()
                    .filter(|t| t.name.0.as_str() == topic)
                    .flat_map(|t| t.partitions.iter())
                    .find(|p| p.partition_index == partition);
                found.map(|p| p.error_code)
            })
            .await?;
        let found = response
            .topics
            .iter()
            .filter(|t| t.name.0.as_str() == topic)
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == partition);
        let Some(p) = found else {
            return Err(ClientError::Protocol {
                reason: format!("no list-offsets answer for {topic}/{partition}"),
            });
        };
        if p.error_code != 0 {
            return Err(ClientError::broker(
                ApiKey::ListOffsets as i16,
                p.error_code,
                None,
            ));
        }
        Ok(ListOffsetsOk {
            offset: p.offset,
            timestamp: p.timestamp,
        })
    }
}
