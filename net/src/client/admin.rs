//! `Admin`: Metadata, CreateTopics, DeleteTopics. Reads are retried on transport failures;
//! creates and deletes are sent once (a retry could report TOPIC_ALREADY_EXISTS for our own
//! success), so their ambiguous errors reach the caller as they are.

use std::net::SocketAddr;
use std::time::Duration;

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, DeleteTopicsRequest, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::{ClientConfig, ClientError, Session};
use crate::io::Net;

/// Most topics one admin call names.
pub const ADMIN_TOPICS_MAX: usize = 10_000;

/// One broker as Metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerInfo {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    pub error_code: i16,
    pub leader_id: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub topic_id: Uuid,
    pub error_code: i16,
    pub is_internal: bool,
    pub partitions: Vec<PartitionInfo>,
}

/// The cluster as one Metadata answer saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    pub brokers: Vec<BrokerInfo>,
    pub topics: Vec<TopicInfo>,
}

impl Metadata {
    pub fn topic(&self, name: &str) -> Option<&TopicInfo> {
        self.topics.iter().find(|t| t.name == name)
    }
}

/// Builds a Metadata request for `topics` (all when `None`) at `version`, never asking the
/// broker to auto-create (the field exists from v4; below it the broker's setting decides).
pub(crate) fn metadata_request(version: i16, topics: Option<&[String]>) -> MetadataRequest {
    let mut request = MetadataRequest::default();
    request.topics = topics.map(|names| {
        names
            .iter()
            .map(|n| {
                let mut t = MetadataRequestTopic::default();
                t.name = Some(topic_name(n));
                t
            })
            .collect()
    });
    request.allow_auto_topic_creation = version < 4;
    request
}

pub(crate) fn metadata_from(response: &MetadataResponse) -> Metadata {
    Metadata {
        cluster_id: response.cluster_id.as_ref().map(|c| c.as_str().to_owned()),
        controller_id: response.controller_id.0,
        brokers: response
            .brokers
            .iter()
            .map(|b| BrokerInfo {
                node_id: b.node_id.0,
                host: b.host.as_str().to_owned(),
                port: b.port,
            })
            .collect(),
        topics: response
            .topics
            .iter()
            .map(|t| TopicInfo {
                name: t
                    .name
                    .as_ref()
                    .map(|n| n.0.as_str().to_owned())
                    .unwrap_or_default(),
                topic_id: t.topic_id,
                error_code: t.error_code,
                is_internal: t.is_internal,
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| PartitionInfo {
                        partition: p.partition_index,
                        error_code: p.error_code,
                        leader_id: p.leader_id.0,
                        leader_epoch: p.leader_epoch,
                        replicas: p.replica_nodes.iter().map(|r| r.0).collect(),
                        isr: p.isr_nodes.iter().map(|r| r.0).collect(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// Cluster administration over one bootstrap connection at a time.
pub struct Admin<N: Net> {
    session: Session<N>,
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

impl<N: Net> Admin<N> {
    pub fn new(net: N, bootstrap: Vec<SocketAddr>, config: ClientConfig) -> Self {
        Admin {
            session: Session::new(net, bootstrap, config),
        }
    }

    fn timeout_ms(&self) -> i32 {
        i32::try_from(self.session.config().request_timeout_ms).unwrap_or(i32::MAX)
    }

    /// Metadata for `topics` (all topics when `None`). Never asks the broker to auto-create.
    pub async fn metadata(&mut self, topics: Option<Vec<String>>) -> Result<Metadata, ClientError> {
        if topics.as_ref().is_some_and(|t| t.len() > ADMIN_TOPICS_MAX) {
            return Err(ClientError::InvalidInput {
                reason: "too many topics",
            });
        }
        self.session.metadata(topics).await
    }

    /// Creates `name` with `partitions` partitions, the broker's default replication factor and
    /// the given topic configs. Returns the topic id (nil below CreateTopics v7).
    pub async fn create_topics(
        &mut self,
        name: &str,
        partitions: i32,
        configs: Vec<(String, String)>,
    ) -> Result<Uuid, ClientError> {
        if configs.len() > ADMIN_TOPICS_MAX {
            return Err(ClientError::InvalidInput {
                reason: "too many configs",
            });
        }
        let mut topic = CreatableTopic::default();
        topic.name = topic_name(name);
        topic.num_partitions = partitions;
        topic.replication_factor = -1;
        topic.configs = configs
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
        request.timeout_ms = self.timeout_ms();
        request.validate_only = false;
        let response = self.session.call(&request, Duration::ZERO).await?;
        let Some(result) = response.topics.iter().find(|t| t.name.0.as_str() == name) else {
            return Err(ClientError::Protocol {
                reason: format!("no result for topic {name}"),
            });
        };
        if result.error_code != 0 {
            return Err(ClientError::broker(
                ApiKey::CreateTopics as i16,
                result.error_code,
                result.error_message.as_ref(),
            ));
        }
        Ok(result.topic_id)
    }

    /// Deletes the named topics; the first per-topic error is returned.
    pub async fn delete_topics(&mut self, names: Vec<String>) -> Result<(), ClientError> {
        if names.len() > ADMIN_TOPICS_MAX {
            return Err(ClientError::InvalidInput {
                reason: "too many topics",
            });
        }
        let version = self.session.version(ApiKey::DeleteTopics as i16).await?;
        let mut request = DeleteTopicsRequest::default();
        if version >= 6 {
            request.topics = names
                .iter()
                .map(|n| {
                    let mut t = DeleteTopicState::default();
                    t.name = Some(topic_name(n));
                    t
                })
                .collect();
        } else {
            request.topic_names = names.iter().map(|n| topic_name(n)).collect();
        }
        request.timeout_ms = self.timeout_ms();
        let response = self.session.call(&request, Duration::ZERO).await?;
        if response.responses.len() != names.len() {
            return Err(ClientError::Protocol {
                reason: format!(
                    "{} results for {} topics",
                    response.responses.len(),
                    names.len()
                ),
            });
        }
        match response.responses.iter().find(|r| r.error_code != 0) {
            Some(r) => Err(ClientError::broker(
                ApiKey::DeleteTopics as i16,
                r.error_code,
                r.error_message.as_ref(),
            )),
            None => Ok(()),
        }
    }
}
