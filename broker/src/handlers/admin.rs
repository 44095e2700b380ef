//! Handlers for cluster and topic administration: Metadata (with auto-create), CreateTopics,
//! DeleteTopics, CreatePartitions, InitProducerId, DescribeCluster, DescribeConfigs,
//! AlterConfigs and IncrementalAlterConfigs, plus the single-node answers of
//! DescribeTopicPartitions, ElectLeaders, List/AlterPartitionReassignments, DescribeLogDirs and
//! AlterReplicaLogDirs (this node leads and holds every partition). Every change is durable in
//! the metadata store before it is answered. In cluster mode Metadata, CreateTopics,
//! DeleteTopics, CreatePartitions, AlterConfigs and IncrementalAlterConfigs use the quorum's
//! image and controller instead (committed and applied here before the answer; NOT_CONTROLLER
//! off the active controller; a client's AlterConfigs, IncrementalAlterConfigs and
//! CreatePartitions reaching another node are forwarded to it once, as Kafka's KIP-590 does),
//! and DescribeConfigs reads topic configs from the image on any node. Never panics on request
//! contents.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::*;
use samsa_cluster::controller::CreateTopic;
use samsa_cluster::metadata::{
    MetadataImage, TopicImage, MIN_INSYNC_REPLICAS, UNCLEAN_LEADER_ELECTION_ENABLE,
};
use samsa_net::Clock;
use samsa_storage::Disk;
use uuid::Uuid;

use super::{code, respond, s, topic_name, Reply};
use crate::broker::Broker;
use crate::cluster_mode::ClusterNode;
use crate::config::PARTITIONS_PER_TOPIC_MAX;
use crate::metadata::{valid_topic_name, MetaError, TopicMeta};
use crate::topic_config::{validate_overrides, TOPIC_CONFIG_NAMES};
use crate::wire::RequestFrame;

/// Most topics one admin request may name (untrusted count).
pub const TOPICS_PER_REQUEST_MAX: usize = 10_000;
/// ConfigResource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// DescribeConfigs config sources.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// `(name, value, source, read_only)` of one described config.
type ConfigRow = (String, String, i8, bool);

fn meta_error_code(e: &MetaError) -> i16 {
    match e {
        MetaError::TopicExists => code::TOPIC_ALREADY_EXISTS,
        MetaError::UnknownTopic => code::UNKNOWN_TOPIC_OR_PARTITION,
        MetaError::TooMany => code::POLICY_VIOLATION,
        MetaError::Disk(_) | MetaError::Corrupt(_) => code::KAFKA_STORAGE_ERROR,
    }
}

fn partition_entries<D: Disk, C: Clock>(
    broker: &Broker<D, C>,
    meta: &TopicMeta,
) -> Vec<MetadataResponsePartition> {
    let node = BrokerId(broker.node_id);
    (0..meta.partitions)
        .map(|i| {
            // A partition whose log could not be opened is offline.
            let error = match broker.partition(&meta.name, i) {
                Some(_) => code::NONE,
                None => code::KAFKA_STORAGE_ERROR,
            };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(i)
                .with_leader_id(node)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
                .with_offline_replicas(vec![])
        })
        .collect()
}

fn topic_entry<D: Disk, C: Clock>(
    broker: &Broker<D, C>,
    meta: &TopicMeta,
    version: i16,
) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default()
        .with_error_code(code::NONE)
        .with_name(Some(topic_name(&meta.name)))
        .with_is_internal(meta.name == crate::group::shell::OFFSETS_TOPIC)
        .with_partitions(partition_entries(broker, meta));
    if version >= 10 {
        t = t.with_topic_id(meta.id);
    }
    t
}

fn error_topic(name: Option<&str>, id: Uuid, error: i16, version: i16) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default()
        .with_error_code(error)
        .with_name(name.map(topic_name));
    if version >= 10 {
        t = t.with_topic_id(id);
    }
    t
}

pub async fn metadata<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: MetadataRequest,
) -> Reply {
    let v = req.api_version;
    // v0: an empty list means all topics; v1+: null means all.
    let requested = match body.topics {
        None => None,
        Some(list) if list.is_empty() && v == 0 => None,
        Some(list) => Some(list),
    };
    let allow_create =
        broker.cfg.auto_create_topics_enable && (v < 4 || body.allow_auto_topic_creation);
    let mut topics = Vec::new();
    if let Some(cluster) = broker.cluster.get() {
        topics = cluster_topics(broker, cluster, requested, allow_create, v).await;
        return metadata_response(broker, req, topics).await;
    }
    match requested {
        None => {
            let store = broker.meta.lock().await;
            for meta in store.state().topics.values() {
                topics.push(topic_entry(broker, meta, v));
            }
        }
        Some(list) => {
            for t in list.into_iter().take(TOPICS_PER_REQUEST_MAX) {
                let name = t.name.as_ref().map(|n| n.0.to_string());
                let existing = {
                    let store = broker.meta.lock().await;
                    match &name {
                        Some(n) => store.topic(n).cloned(),
                        None => store.topic_by_id(t.topic_id).cloned(),
                    }
                };
                if let Some(meta) = existing {
                    topics.push(topic_entry(broker, &meta, v));
                    continue;
                }
                let Some(name) = name else {
                    topics.push(error_topic(None, t.topic_id, code::UNKNOWN_TOPIC_ID, v));
                    continue;
                };
                if !valid_topic_name(&name) {
                    topics.push(error_topic(
                        Some(&name),
                        Uuid::nil(),
                        code::INVALID_TOPIC_EXCEPTION,
                        v,
                    ));
                    continue;
                }
                if !allow_create {
                    topics.push(error_topic(
                        Some(&name),
                        Uuid::nil(),
                        code::UNKNOWN_TOPIC_OR_PARTITION,
                        v,
                    ));
                    continue;
                }
                let created = broker
                    .create_topic(&name, broker.cfg.num_partitions, BTreeMap::new())
                    .await;
                match created {
                    Ok(meta) => topics.push(topic_entry(broker, &meta, v)),
                    // Another connection created it meanwhile: answer with what exists.
                    Err(MetaError::TopicExists) => {
                        let meta = broker.meta.lock().await.topic(&name).cloned();
                        match meta {
                            Some(meta) => topics.push(topic_entry(broker, &meta, v)),
                            None => topics.push(error_topic(
                                Some(&name),
                                Uuid::nil(),
                                code::UNKNOWN_TOPIC_OR_PARTITION,
                                v,
                            )),
                        }
                    }
                    Err(e) => topics.push(error_topic(
                        Some(&name),
                        Uuid::nil(),
                        meta_error_code(&e),
                        v,
                    )),
                }
            }
        }
    }
    metadata_response(broker, req, topics).await
}

async fn metadata_response<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    topics: Vec<MetadataResponseTopic>,
) -> Reply {
    let cluster_id = cluster_id(broker).await;
    let body = MetadataResponse::default()
        .with_throttle_time_ms(0)
        .with_brokers(
            listed_brokers(broker)
                .into_iter()
                .map(|(id, host, port)| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(id))
                        .with_host(s(&host))
                        .with_port(port)
                })
                .collect(),
        )
        .with_cluster_id(Some(s(&cluster_id)))
        .with_controller_id(BrokerId(controller_id(broker)))
        .with_topics(topics);
    respond(req, &body)
}

/// A topic of the cluster image as Metadata shows it: each partition's leader, leader epoch,
/// replicas, ISR and offline replicas (replicas that are not live brokers).
fn image_topic_entry(
    image: &MetadataImage,
    topic: &TopicImage,
    version: i16,
) -> MetadataResponseTopic {
    let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
    let partitions = topic
        .partitions
        .iter()
        .map(|(index, p)| {
            let offline: Vec<i32> = p
                .replicas
                .iter()
                .copied()
                .filter(|b| !image.is_live(*b))
                .collect();
            let error = if p.leader < 0 {
                code::LEADER_NOT_AVAILABLE
            } else {
                code::NONE
            };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(*index)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr))
                .with_offline_replicas(ids(&offline))
        })
        .collect();
    let mut t = MetadataResponseTopic::default()
        .with_error_code(code::NONE)
        .with_name(Some(topic_name(&topic.name)))
        .with_partitions(partitions);
    if version >= 10 {
        t = t.with_topic_id(Uuid::from_u128(topic.topic_id));
    }
    t
}

/// Cluster mode: Metadata's topics from the image; unknown topics are auto-created through the
/// controller when allowed. Only the active controller can create one: elsewhere the answer is
/// LEADER_NOT_AVAILABLE (Kafka's answer while a topic is being created) and the client retries.
async fn cluster_topics<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    cluster: &ClusterNode,
    requested: Option<Vec<metadata_request::MetadataRequestTopic>>,
    allow_create: bool,
    v: i16,
) -> Vec<MetadataResponseTopic> {
    let Some(list) = requested else {
        let image = cluster.image();
        return image
            .topics
            .values()
            .map(|t| image_topic_entry(&image, t, v))
            .collect();
    };
    let mut topics = Vec::new();
    for t in list.into_iter().take(TOPICS_PER_REQUEST_MAX) {
        let name = t.name.as_ref().map(|n| n.0.to_string());
        let image = cluster.image();
        let existing = match &name {
            Some(n) => image.topic_ids.get(n).and_then(|id| image.topics.get(id)),
            None => image.topics.get(&t.topic_id.as_u128()),
        };
        if let Some(topic) = existing {
            topics.push(image_topic_entry(&image, topic, v));
            continue;
        }
        let Some(name) = name else {
            topics.push(error_topic(None, t.topic_id, code::UNKNOWN_TOPIC_ID, v));
            continue;
        };
        if !valid_topic_name(&name) {
            topics.push(error_topic(
                Some(&name),
                Uuid::nil(),
                code::INVALID_TOPIC_EXCEPTION,
                v,
            ));
            continue;
        }
        if !allow_create {
            topics.push(error_topic(
                Some(&name),
                Uuid::nil(),
                code::UNKNOWN_TOPIC_OR_PARTITION,
                v,
            ));
            continue;
        }
        let request = CreateTopic {
            name: name.clone(),
            partitions: broker.cfg.num_partitions,
            replication_factor: -1,
            configs: BTreeMap::new(),
        };
        let entry = match cluster.create_topic(broker.clock.now_ms(), request).await {
            Ok(_) | Err(code::TOPIC_ALREADY_EXISTS) => {
                broker.reconcile_cluster().await;
                let image = cluster.image();
                match image
                    .topic_ids
                    .get(&name)
                    .and_then(|id| image.topics.get(id))
                {
                    Some(topic) => image_topic_entry(&image, topic, v),
                    None => error_topic(Some(&name), Uuid::nil(), code::LEADER_NOT_AVAILABLE, v),
                }
            }
            // Kafka answers a topic being auto-created elsewhere with LEADER_NOT_AVAILABLE.
            Err(code::NOT_CONTROLLER) => {
                error_topic(Some(&name), Uuid::nil(), code::LEADER_NOT_AVAILABLE, v)
            }
            Err(e) => error_topic(Some(&name), Uuid::nil(), e, v),
        };
        topics.push(entry);
    }
    topics
}

/// Config entries of a CreateTopics/AlterConfigs request as a validated map; `Err` on
/// nulls/duplicates or a value a single node refuses.
fn config_map<'a>(
    entries: impl Iterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<BTreeMap<String, String>, String> {
    let map = config_entries(entries)?;
    validate_overrides(&map).map_err(|e| e.0)?;
    Ok(map)
}

/// Config entries as a map, not validated; `Err` on nulls/duplicates.
fn config_entries<'a>(
    entries: impl Iterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for (name, value) in entries {
        let Some(value) = value else {
            return Err(format!("config {name} has a null value"));
        };
        if map.insert(name.to_string(), value.to_string()).is_some() {
            return Err(format!("config {name} given twice"));
        }
    }
    Ok(map)
}

/// Validates a cluster topic's full override set: `min.insync.replicas` in [1, replication
/// factor], `unclean.leader.election.enable` a boolean, the rest as on a single node.
fn validate_cluster_overrides(
    overrides: &BTreeMap<String, String>,
    replication_factor: usize,
) -> Result<(), String> {
    let mut rest = overrides.clone();
    if let Some(v) = rest.remove(MIN_INSYNC_REPLICAS) {
        let rf = replication_factor.max(1);
        if !v.parse::<usize>().is_ok_and(|n| (1..=rf).contains(&n)) {
            return Err(format!(
                "invalid value {v:?} for {MIN_INSYNC_REPLICAS}: expected an integer in [1, {rf}] \
                 (the replication factor)"
            ));
        }
    }
    if let Some(v) = rest.remove(UNCLEAN_LEADER_ELECTION_ENABLE) {
        if v != "true" && v != "false" {
            return Err(format!(
                "invalid value {v:?} for {UNCLEAN_LEADER_ELECTION_ENABLE}: expected true or false"
            ));
        }
    }
    validate_overrides(&rest).map_err(|e| e.0)
}

/// Whether a topic config name may be set: the names a single node knows, plus
/// `unclean.leader.election.enable` in cluster mode (the controller reads it).
fn settable_config(name: &str, cluster: bool) -> bool {
    TOPIC_CONFIG_NAMES.contains(&name) || (cluster && name == UNCLEAN_LEADER_ELECTION_ENABLE)
}

/// `config_map` in cluster mode: `min.insync.replicas` is validated against the replication
/// factor (a single node only allows 1), the rest as on a single node.
fn cluster_configs<'a>(
    entries: impl Iterator<Item = &'a create_topics_request::CreatableTopicConfig>,
    replication_factor: usize,
) -> Result<BTreeMap<String, String>, String> {
    const MIN_ISR: &str = "min.insync.replicas";
    let mut min_isr = None;
    let mut rest = Vec::new();
    for c in entries {
        if &*c.name == MIN_ISR {
            if min_isr.is_some() {
                return Err(format!("config {MIN_ISR} given twice"));
            }
            let value = c
                .value
                .as_deref()
                .ok_or(format!("config {MIN_ISR} is null"))?;
            let n: usize = value
                .parse()
                .map_err(|_| format!("{MIN_ISR} must be a number"))?;
            if n < 1 || n > replication_factor.max(1) {
                return Err(format!("{MIN_ISR} must be in [1, {replication_factor}]"));
            }
            min_isr = Some(value.to_string());
        } else {
            rest.push((&*c.name, c.value.as_deref()));
        }
    }
    let mut map = config_map(rest.into_iter())?;
    if let Some(v) = min_isr {
        map.insert(MIN_ISR.to_string(), v);
    }
    Ok(map)
}

/// A manual replica assignment a single node can honour: exactly one replica, this node.
fn this_node_only(node_id: i32, replicas: &[BrokerId]) -> bool {
    matches!(replicas, [only] if only.0 == node_id)
}

pub async fn create_topics<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: CreateTopicsRequest,
) -> Reply {
    let v = req.api_version;
    let cluster = broker.cluster.get();
    let mut seen = BTreeSet::new();
    let duplicates: BTreeSet<String> = body
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.0.to_string()))
        .map(|t| t.name.0.to_string())
        .collect();
    let mut results = Vec::new();
    for t in body.topics.into_iter().take(TOPICS_PER_REQUEST_MAX) {
        let name = t.name.0.to_string();
        let partitions = if !t.assignments.is_empty() {
            i32::try_from(t.assignments.len()).unwrap_or(i32::MAX)
        } else if t.num_partitions == -1 {
            broker.cfg.num_partitions
        } else {
            t.num_partitions
        };
        let assignment_error = (!t.assignments.is_empty())
            .then(|| {
                let n = t.assignments.len();
                let indexes: BTreeSet<i32> =
                    t.assignments.iter().map(|a| a.partition_index).collect();
                if t.num_partitions != -1 || t.replication_factor != -1 {
                    Some("give either assignments or partitions/replication factor")
                } else if indexes.len() != n || indexes.iter().any(|&i| i < 0 || i as usize >= n) {
                    Some("assignments must name partitions 0..n-1 once each")
                } else if cluster.is_none()
                    && !t
                        .assignments
                        .iter()
                        .all(|a| this_node_only(broker.node_id, &a.broker_ids))
                {
                    Some("every partition's replicas must be exactly this node")
                } else {
                    None
                }
            })
            .flatten();
        let configs =
            config_map(t.configs.iter().map(|c| (&*c.name, c.value.as_deref()))).or_else(|e| {
                // Cluster mode: `min.insync.replicas` may be up to the replication factor.
                let rf = match t.replication_factor {
                    -1 => crate::cluster_mode::DEFAULT_REPLICATION_FACTOR_MAX,
                    n => usize::try_from(n).unwrap_or(1).max(1),
                };
                cluster
                    .map(|_| cluster_configs(t.configs.iter(), rf))
                    .unwrap_or(Err(e))
            });
        let error: Option<(i16, String)> = if duplicates.contains(&name) {
            Some((code::INVALID_REQUEST, "topic named more than once".into()))
        } else if !valid_topic_name(&name) {
            Some((
                code::INVALID_TOPIC_EXCEPTION,
                format!("invalid topic name {name:?}"),
            ))
        } else if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
            Some((
                code::INVALID_PARTITIONS,
                format!("partitions must be in [1, {PARTITIONS_PER_TOPIC_MAX}]"),
            ))
        } else if cluster.is_some()
            && (t.replication_factor == 0 || t.replication_factor < -1 || !t.assignments.is_empty())
        {
            Some((
                code::INVALID_REPLICATION_FACTOR,
                "replication factor must be -1 or positive; no manual assignments".into(),
            ))
        } else if cluster.is_none() && t.replication_factor != 1 && t.replication_factor != -1 {
            Some((
                code::INVALID_REPLICATION_FACTOR,
                "replication factor must be 1 on a single node".into(),
            ))
        } else if let Some(m) = assignment_error {
            Some((code::INVALID_REPLICA_ASSIGNMENT, m.into()))
        } else if let Err(e) = &configs {
            Some((code::INVALID_CONFIG, e.clone()))
        } else if cluster.is_none() && broker.meta.lock().await.topic(&name).is_some()
            || cluster.is_some_and(|c| c.topic(&name).is_some())
        {
            Some((
                code::TOPIC_ALREADY_EXISTS,
                format!("topic {name:?} already exists"),
            ))
        } else {
            None
        };
        let mut result = CreatableTopicResult::default().with_name(t.name.clone());
        let mut replication_factor = 1;
        let (error_code, message, meta) = match error {
            Some((c, m)) => (c, Some(m), None),
            None if body.validate_only => (code::NONE, None, None),
            None if cluster.is_some() => {
                let configs = configs.unwrap_or_default();
                let Some(cluster) = cluster else {
                    continue;
                };
                let request = CreateTopic {
                    name: name.clone(),
                    partitions,
                    replication_factor: t.replication_factor,
                    configs: configs.clone(),
                };
                match cluster.create_topic(broker.clock.now_ms(), request).await {
                    Ok(id) => {
                        broker.reconcile_cluster().await;
                        replication_factor = cluster
                            .topic_by_id(id)
                            .and_then(|t| t.partitions.get(&0).map(|p| p.replicas.len()))
                            .and_then(|n| i16::try_from(n).ok())
                            .unwrap_or(-1);
                        let meta = TopicMeta {
                            name: name.clone(),
                            id: Uuid::from_u128(id),
                            partitions,
                            configs,
                        };
                        (code::NONE, None, Some(meta))
                    }
                    Err(c) => (c, Some(format!("controller refused: error {c}")), None),
                }
            }
            None => {
                let configs = configs.unwrap_or_default();
                match broker.create_topic(&name, partitions, configs).await {
                    Ok(meta) => (code::NONE, None, Some(meta)),
                    Err(e) => (meta_error_code(&e), Some(e.to_string()), None),
                }
            }
        };
        result = result.with_error_code(error_code);
        if v >= 1 {
            result = result.with_error_message(message.as_deref().map(s));
        }
        if v >= 5 {
            if error_code == code::NONE {
                let overrides = meta.as_ref().map(|m| m.configs.clone()).unwrap_or_default();
                let described = broker
                    .defaults
                    .describe(&overrides)
                    .into_iter()
                    .map(|(n, val, default)| {
                        CreatableTopicConfigs::default()
                            .with_name(s(&n))
                            .with_value(Some(s(&val)))
                            .with_config_source(if default {
                                SOURCE_DEFAULT
                            } else {
                                SOURCE_DYNAMIC_TOPIC
                            })
                    })
                    .collect();
                result = result
                    .with_num_partitions(partitions)
                    .with_replication_factor(replication_factor)
                    .with_configs(Some(described));
            } else {
                result = result.with_num_partitions(-1).with_replication_factor(-1);
            }
        }
        if v >= 7 {
            result = result.with_topic_id(meta.map(|m| m.id).unwrap_or_default());
        }
        results.push(result);
    }
    respond(req, &CreateTopicsResponse::default().with_topics(results))
}

pub async fn delete_topics<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: DeleteTopicsRequest,
) -> Reply {
    let v = req.api_version;
    // v0-5 name topics in `topic_names`; v6 in `topics` (by name or by id).
    let targets: Vec<(Option<String>, Uuid)> = if v >= 6 {
        body.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        body.topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::new();
    for (name, id) in targets.into_iter().take(TOPICS_PER_REQUEST_MAX) {
        let resolved = match &name {
            Some(n) => Some(n.clone()),
            None => broker.topic_name_by_id(id).await,
        };
        let (error_code, topic_id) = match (&resolved, broker.cluster.get()) {
            (None, _) => (code::UNKNOWN_TOPIC_ID, id),
            (Some(n), Some(cluster)) => {
                match cluster.delete_topic(broker.clock.now_ms(), n).await {
                    Ok(deleted) => {
                        broker.reconcile_cluster().await;
                        (code::NONE, Uuid::from_u128(deleted))
                    }
                    Err(c) => (c, id),
                }
            }
            (Some(n), None) => match broker.delete_topic(n).await {
                Ok(meta) => (code::NONE, meta.id),
                Err(e) => (meta_error_code(&e), id),
            },
        };
        let mut r = DeletableTopicResult::default()
            .with_name(resolved.as_deref().map(topic_name))
            .with_error_code(error_code);
        if v >= 6 {
            r = r.with_topic_id(topic_id);
        }
        responses.push(r);
    }
    respond(
        req,
        &DeleteTopicsResponse::default().with_responses(responses),
    )
}

pub async fn create_partitions<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: CreatePartitionsRequest,
) -> Reply {
    if let Some(cluster) = broker.cluster.get() {
        return create_partitions_cluster(broker, cluster, req, body).await;
    }
    let mut results = Vec::new();
    for t in body.topics.into_iter().take(TOPICS_PER_REQUEST_MAX) {
        let name = t.name.0.to_string();
        let current = broker.meta.lock().await.topic(&name).map(|m| m.partitions);
        let (error_code, message) = match current {
            None => (
                code::UNKNOWN_TOPIC_OR_PARTITION,
                Some(format!("unknown topic {name:?}")),
            ),
            Some(n) if t.count <= n => (
                code::INVALID_PARTITIONS,
                Some(format!("topic has {n} partitions; {} is not more", t.count)),
            ),
            Some(_) if t.count > PARTITIONS_PER_TOPIC_MAX => (
                code::INVALID_PARTITIONS,
                Some(format!("at most {PARTITIONS_PER_TOPIC_MAX}")),
            ),
            Some(n)
                if t.assignments.as_ref().is_some_and(|a| {
                    a.len() != (t.count - n) as usize
                        || !a
                            .iter()
                            .all(|p| this_node_only(broker.node_id, &p.broker_ids))
                }) =>
            {
                (
                    code::INVALID_REPLICA_ASSIGNMENT,
                    Some(
                        "assignments must cover each new partition with exactly this node"
                            .to_string(),
                    ),
                )
            }
            Some(_) if body.validate_only => (code::NONE, None),
            Some(_) => match broker.add_partitions(&name, t.count).await {
                Ok(()) => (code::NONE, None),
                Err(e) => (meta_error_code(&e), Some(e.to_string())),
            },
        };
        results.push(
            CreatePartitionsTopicResult::default()
                .with_name(t.name)
                .with_error_code(error_code)
                .with_error_message(message.as_deref().map(s)),
        );
    }
    respond(
        req,
        &CreatePartitionsResponse::default().with_results(results),
    )
}

/// CreatePartitions in cluster mode, at the active controller (elsewhere NOT_CONTROLLER): the
/// controller places the new partitions (or checks the request's assignments) and commits them;
/// each topic is answered once its partitions are applied here, and every node's image watcher
/// opens its new replicas.
async fn create_partitions_cluster<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    cluster: &ClusterNode,
    req: &RequestFrame,
    body: CreatePartitionsRequest,
) -> Reply {
    if cluster.forwards(req.client_id.as_deref()) {
        let forwarded = cluster
            .forward_to_controller(ApiKey::CreatePartitions, req.api_version, &body)
            .await;
        let resp = forwarded.unwrap_or_else(|c| {
            let results = body
                .topics
                .iter()
                .take(TOPICS_PER_REQUEST_MAX)
                .map(|t| {
                    CreatePartitionsTopicResult::default()
                        .with_name(t.name.clone())
                        .with_error_code(c)
                        .with_error_message(Some(s(&forward_failed(c))))
                })
                .collect();
            CreatePartitionsResponse::default().with_results(results)
        });
        return respond(req, &resp);
    }
    let mut seen = BTreeSet::new();
    let duplicates: BTreeSet<String> = body
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.0.to_string()))
        .map(|t| t.name.0.to_string())
        .collect();
    let mut results = Vec::new();
    for t in body.topics.into_iter().take(TOPICS_PER_REQUEST_MAX) {
        let name = t.name.0.to_string();
        let assignments: Option<Vec<Vec<i32>>> = t.assignments.as_ref().map(|a| {
            a.iter()
                .take(PARTITIONS_PER_TOPIC_MAX as usize + 1)
                .map(|p| {
                    p.broker_ids
                        .iter()
                        .take(samsa_cluster::records::REPLICAS_MAX + 1)
                        .map(|b| b.0)
                        .collect()
                })
                .collect()
        });
        let (error_code, message) = if duplicates.contains(&name) {
            (
                code::INVALID_REQUEST,
                Some("topic named more than once".to_string()),
            )
        } else {
            let now_ms = broker.clock.now_ms();
            let result = cluster
                .create_partitions(now_ms, &name, t.count, assignments, body.validate_only)
                .await;
            match result {
                Ok(()) => {
                    if !body.validate_only {
                        broker.reconcile_cluster().await;
                    }
                    (code::NONE, None)
                }
                Err(c) => {
                    let m = match c {
                        code::UNKNOWN_TOPIC_OR_PARTITION => format!("unknown topic {name:?}"),
                        code::INVALID_PARTITIONS => format!(
                            "{} partitions is not more than the topic has, or above \
                             {PARTITIONS_PER_TOPIC_MAX}",
                            t.count
                        ),
                        code::INVALID_REPLICA_ASSIGNMENT => "assignments must give each new \
                            partition the topic's replication factor of distinct live brokers"
                            .to_string(),
                        code::INVALID_REPLICATION_FACTOR => {
                            "fewer live brokers than the topic's replication factor".to_string()
                        }
                        c => format!("controller refused: error {c}"),
                    };
                    (c, Some(m))
                }
            }
        };
        results.push(
            CreatePartitionsTopicResult::default()
                .with_name(t.name)
                .with_error_code(error_code)
                .with_error_message(message.as_deref().map(s)),
        );
    }
    respond(
        req,
        &CreatePartitionsResponse::default().with_results(results),
    )
}

pub async fn init_producer_id<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: InitProducerIdRequest,
) -> Reply {
    let mut resp = InitProducerIdResponse::default().with_producer_id(ProducerId(-1));
    resp = resp.with_producer_epoch(-1);
    if body
        .transactional_id
        .as_ref()
        .is_some_and(|t| !t.0.is_empty())
    {
        // Transactions are not implemented yet: say so with a retriable coordinator error
        // rather than pretend.
        resp = resp.with_error_code(code::COORDINATOR_NOT_AVAILABLE);
        return respond(req, &resp);
    }
    let existing = body.producer_id.0;
    if existing >= 0 && body.producer_epoch >= 0 && body.producer_epoch < i16::MAX - 1 {
        // KIP-360: an idempotent producer re-initialising keeps its id with a bumped epoch.
        resp = resp
            .with_error_code(code::NONE)
            .with_producer_id(ProducerId(existing))
            .with_producer_epoch(body.producer_epoch + 1);
        return respond(req, &resp);
    }
    let allocated = broker.meta.lock().await.allocate_producer_id().await;
    // Cluster mode: every node allocates from its own counter, so the ids are striped by node id
    // (a producer that bootstraps to another node must never get the same id: both would share
    // one duplicate window; simulator cluster_replication 15).
    let allocated = match broker.cluster.get() {
        Some(_) => allocated.map(|n| striped_producer_id(n, broker.node_id)),
        None => allocated,
    };
    resp = match allocated {
        Ok(id) => resp
            .with_error_code(code::NONE)
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            tracing::error!("producer id allocation failed: {e}");
            resp.with_error_code(code::KAFKA_STORAGE_ERROR)
        }
    };
    respond(req, &resp)
}

/// The cluster-wide producer id for the `n`th id this node hands out.
fn striped_producer_id(n: i64, node_id: i32) -> i64 {
    let node = i64::from(node_id);
    assert!(
        (0..crate::config::CLUSTER_NODE_IDS_MAX).contains(&node),
        "node id {node} out of the striped range (config validation)"
    );
    n * crate::config::CLUSTER_NODE_IDS_MAX + node
}

pub async fn describe_cluster<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    _body: DescribeClusterRequest,
) -> Reply {
    let cluster_id = cluster_id(broker).await;
    let body = DescribeClusterResponse::default()
        .with_error_code(code::NONE)
        .with_cluster_id(s(&cluster_id))
        .with_controller_id(BrokerId(controller_id(broker)))
        .with_brokers(
            listed_brokers(broker)
                .into_iter()
                .map(|(id, host, port)| {
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(id))
                        .with_host(s(&host))
                        .with_port(port)
                })
                .collect(),
        );
    respond(req, &body)
}

/// The brokers Metadata and DescribeCluster list, `(id, host, port)` in id order: this node on
/// a single node; every registered, unfenced broker in cluster mode.
fn listed_brokers<D: Disk, C: Clock>(broker: &Broker<D, C>) -> Vec<(i32, String, i32)> {
    match broker.cluster.get() {
        None => vec![(
            broker.node_id,
            broker.advertised_host.clone(),
            broker.advertised_port,
        )],
        Some(cluster) => cluster
            .live_brokers()
            .into_iter()
            .map(|b| (b.broker_id, b.host, i32::from(b.port)))
            .collect(),
    }
}

/// The metadata store's cluster id on a single node; the voter set's in cluster mode.
async fn cluster_id<D: Disk, C: Clock>(broker: &Broker<D, C>) -> String {
    match broker.cluster.get() {
        None => broker.meta.lock().await.cluster_id().to_string(),
        Some(cluster) => cluster.cluster_id.clone(),
    }
}

/// This node on a single node; the quorum leader (or -1 while there is none) in cluster mode.
fn controller_id<D: Disk, C: Clock>(broker: &Broker<D, C>) -> i32 {
    match broker.cluster.get() {
        None => broker.node_id,
        Some(cluster) => cluster.controller_id().unwrap_or(-1),
    }
}

/// The metadata quorum's topic name in DescribeQuorum.
pub const QUORUM_TOPIC: &str = "__cluster_metadata";

/// DescribeQuorum from the quorum's own view (replica details only on the leader).
/// INVALID_REQUEST on a single node (there is no quorum), NOT_LEADER_OR_FOLLOWER-style errors
/// are left to the partition entry as Kafka does.
pub async fn describe_quorum<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    _body: DescribeQuorumRequest,
) -> Reply {
    use kafka_protocol::messages::describe_quorum_response::{
        Listener, Node, PartitionData, ReplicaState, TopicData,
    };
    let Some(cluster) = broker.cluster.get() else {
        let body = DescribeQuorumResponse::default()
            .with_error_code(code::INVALID_REQUEST)
            .with_error_message(Some(s("not in cluster mode: this node has no quorum")));
        return respond(req, &body);
    };
    let Some(info) = cluster.quorum.quorum_info().await else {
        let body = DescribeQuorumResponse::default().with_error_code(code::BROKER_NOT_AVAILABLE);
        return respond(req, &body);
    };
    // v2 adds directory ids and `nodes`; the crate refuses to encode them in older versions.
    let v2 = req.api_version >= 2;
    let replica = |r: &samsa_raft::ReplicaInfo| {
        let ms = |v: Option<u64>| v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
        ReplicaState::default()
            .with_replica_id(BrokerId(i32::try_from(r.id.0).unwrap_or(i32::MAX)))
            .with_replica_directory_id(match r.directory_id {
                Some(d) if v2 => Uuid::from_u128(d.0),
                _ => Uuid::nil(),
            })
            .with_log_end_offset(ms(r.log_end_offset))
            .with_last_fetch_timestamp(ms(r.last_fetch_ms))
            .with_last_caught_up_timestamp(ms(r.last_caught_up_ms))
    };
    let leader = info
        .leader_id
        .map_or(-1, |l| i32::try_from(l.0).unwrap_or(i32::MAX));
    let partition = PartitionData::default()
        .with_partition_index(0)
        .with_error_code(if leader < 0 {
            code::NOT_LEADER_OR_FOLLOWER
        } else {
            code::NONE
        })
        .with_leader_id(BrokerId(leader))
        .with_leader_epoch(i32::try_from(info.leader_epoch).unwrap_or(i32::MAX))
        .with_high_watermark(i64::try_from(info.high_watermark).unwrap_or(i64::MAX))
        .with_current_voters(info.voters.iter().map(replica).collect())
        .with_observers(info.observers.iter().map(replica).collect());
    let nodes = cluster
        .cfg
        .voters
        .iter()
        .filter(|_| v2)
        .map(|(id, addr)| {
            Node::default()
                .with_node_id(BrokerId(*id))
                .with_listeners(vec![Listener::default()
                    .with_name(s("CONTROLLER"))
                    .with_host(s(&addr.ip().to_string()))
                    .with_port(addr.port())])
        })
        .collect();
    let body = DescribeQuorumResponse::default()
        .with_error_code(code::NONE)
        .with_topics(vec![TopicData::default()
            .with_topic_name(topic_name(QUORUM_TOPIC))
            .with_partitions(vec![partition])])
        .with_nodes(nodes);
    respond(req, &body)
}

/// BrokerRegistration (cluster mode, sent by our own brokers to the active controller's client
/// listener): registers through the `Controller`. NOT_CONTROLLER elsewhere.
pub async fn broker_registration<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: BrokerRegistrationRequest,
) -> Reply {
    let result = match broker.cluster.get() {
        None => Err(code::NOT_CONTROLLER),
        Some(cluster) => match crate::cluster_mode::registration_from_request(&body) {
            Ok(r) => cluster.register(broker.clock.now_ms(), r).await,
            Err(e) => Err(e),
        },
    };
    // As Kafka's, the broker epoch is the registration record's position in the metadata log:
    // the broker takes no partition role before its own image has applied it.
    let (error, epoch) = match result {
        Ok(index) => (code::NONE, i64::try_from(index).unwrap_or(i64::MAX)),
        Err(c) => (c, -1),
    };
    let body = BrokerRegistrationResponse::default()
        .with_error_code(error)
        .with_broker_epoch(epoch);
    respond(req, &body)
}

/// BrokerHeartbeat (cluster mode): renews the broker's session at the active controller.
pub async fn broker_heartbeat<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: BrokerHeartbeatRequest,
) -> Reply {
    let (result, fenced) = match broker.cluster.get() {
        None => (Err(code::NOT_CONTROLLER), true),
        Some(cluster) => {
            let now = broker.clock.now_ms();
            let r = cluster
                .heartbeat(now, body.broker_id.0, body.broker_epoch)
                .await;
            (r, !cluster.image().is_live(body.broker_id.0))
        }
    };
    let body = BrokerHeartbeatResponse::default()
        .with_error_code(result.err().unwrap_or(code::NONE))
        .with_is_caught_up(true)
        .with_is_fenced(fenced);
    respond(req, &body)
}

/// AlterPartition (56), at the active controller: each partition's ISR change goes through
/// `Controller::alter_partition`; answered with the partition as the image now holds it.
pub async fn alter_partition<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: AlterPartitionRequest,
) -> Reply {
    use kafka_protocol::messages::alter_partition_response::{PartitionData, TopicData};
    let Some(cluster) = broker.cluster.get() else {
        let resp = AlterPartitionResponse::default().with_error_code(code::NOT_CONTROLLER);
        return respond(req, &resp);
    };
    if cluster.controller_id() != Some(broker.node_id) {
        let resp = AlterPartitionResponse::default().with_error_code(code::NOT_CONTROLLER);
        return respond(req, &resp);
    }
    let requests = crate::cluster_mode::alter_partitions_from_request(&body, &cluster.image());
    let mut topics: Vec<TopicData> = Vec::new();
    for (topic_id, index, request) in requests {
        let now = broker.clock.now_ms();
        let result = cluster.alter_partition(now, &request).await;
        let mut part = PartitionData::default()
            .with_partition_index(index)
            .with_error_code(result.err().unwrap_or(code::NONE));
        if let Some(p) = cluster.image().partition(topic_id.as_u128(), index) {
            part = part
                .with_leader_id(p.leader.into())
                .with_leader_epoch(p.leader_epoch)
                .with_isr(p.isr.iter().map(|b| (*b).into()).collect())
                .with_partition_epoch(p.partition_epoch);
        }
        match topics.iter_mut().find(|t| t.topic_id == topic_id) {
            Some(t) => t.partitions.push(part),
            None => topics.push(
                TopicData::default()
                    .with_topic_id(topic_id)
                    .with_partitions(vec![part]),
            ),
        }
    }
    let resp = AlterPartitionResponse::default()
        .with_error_code(code::NONE)
        .with_topics(topics);
    respond(req, &resp)
}

/// Kafka's `ConfigType` of a config, for DescribeConfigs v3+ (STRING 2, INT 3, LONG 5, LIST 7,
/// BOOLEAN 1).
fn config_type(name: &str) -> i8 {
    match name {
        "cleanup.policy" | "advertised.listeners" => 7,
        "auto.create.topics.enable" => 1,
        "max.message.bytes"
        | "min.insync.replicas"
        | "node.id"
        | "num.partitions"
        | "socket.request.max.bytes"
        | "message.max.bytes" => 3,
        n if n.ends_with(".ms") || n.ends_with(".bytes") => 5,
        _ => 2,
    }
}

/// The broker-level configs DescribeConfigs reports (read-only, static).
fn broker_configs<D: Disk, C: Clock>(broker: &Broker<D, C>) -> Vec<(String, String)> {
    let c = &broker.cfg;
    vec![
        ("node.id".into(), c.node_id.to_string()),
        (
            "advertised.listeners".into(),
            format!(
                "PLAINTEXT://{}:{}",
                broker.advertised_host, broker.advertised_port
            ),
        ),
        ("num.partitions".into(), c.num_partitions.to_string()),
        (
            "auto.create.topics.enable".into(),
            c.auto_create_topics_enable.to_string(),
        ),
        (
            "socket.request.max.bytes".into(),
            c.socket_request_max_bytes.to_string(),
        ),
        ("message.max.bytes".into(), c.message_max_bytes.to_string()),
        ("log.segment.bytes".into(), c.segment_bytes.to_string()),
        ("log.roll.ms".into(), c.segment_ms.to_string()),
        ("log.retention.ms".into(), c.retention_ms.to_string()),
        ("log.retention.bytes".into(), c.retention_bytes.to_string()),
        (
            "log.message.timestamp.type".into(),
            c.message_timestamp_type.clone(),
        ),
    ]
}

/// The message of a request this node could not forward to the active controller.
fn forward_failed(c: i16) -> String {
    format!("could not forward to the active controller: error {c}")
}

/// A topic's config overrides: the local store on a single node, the image in cluster mode
/// (on any node); `None` for an unknown topic.
async fn topic_overrides<D: Disk, C: Clock>(
    broker: &Broker<D, C>,
    name: &str,
) -> Option<BTreeMap<String, String>> {
    match broker.cluster.get() {
        Some(cluster) => cluster.topic(name).map(|t| t.configs),
        None => broker
            .meta
            .lock()
            .await
            .topic(name)
            .map(|m| m.configs.clone()),
    }
}

pub async fn describe_configs<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: DescribeConfigsRequest,
) -> Reply {
    let v = req.api_version;
    let mut results = Vec::new();
    for r in body.resources.into_iter().take(TOPICS_PER_REQUEST_MAX) {
        let wanted: Option<BTreeSet<String>> = r
            .configuration_keys
            .as_ref()
            .map(|k| k.iter().map(|s| s.to_string()).collect());
        let keep = |n: &str| wanted.as_ref().is_none_or(|w| w.contains(n));
        let name = r.resource_name.to_string();
        let mut result = DescribeConfigsResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let entries: Result<Vec<ConfigRow>, (i16, String)> = match r.resource_type {
            RESOURCE_TOPIC => match topic_overrides(broker, &name).await {
                None => Err((
                    code::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("unknown topic {name:?}"),
                )),
                Some(overrides) => {
                    let mut rows: Vec<ConfigRow> = broker
                        .defaults
                        .describe(&overrides)
                        .into_iter()
                        .map(|(n, val, default)| {
                            let src = if default {
                                SOURCE_DEFAULT
                            } else {
                                SOURCE_DYNAMIC_TOPIC
                            };
                            (n, val, src, false)
                        })
                        .collect();
                    // Cluster-only overrides (unclean.leader.election.enable) the defaults
                    // do not list.
                    rows.extend(
                        overrides
                            .iter()
                            .filter(|(n, _)| !TOPIC_CONFIG_NAMES.contains(&n.as_str()))
                            .map(|(n, val)| (n.clone(), val.clone(), SOURCE_DYNAMIC_TOPIC, false)),
                    );
                    Ok(rows)
                }
            },
            RESOURCE_BROKER => {
                if name.is_empty() || name == broker.node_id.to_string() {
                    Ok(broker_configs(broker)
                        .into_iter()
                        .map(|(n, val)| (n, val, SOURCE_STATIC_BROKER, true))
                        .collect())
                } else {
                    Err((code::INVALID_REQUEST, format!("unknown broker {name:?}")))
                }
            }
            other => Err((
                code::INVALID_REQUEST,
                format!("resource type {other} not supported"),
            )),
        };
        match entries {
            Ok(entries) => {
                let configs = entries
                    .into_iter()
                    .filter(|(n, ..)| keep(n))
                    .map(|(n, val, src, read_only)| {
                        let mut e = DescribeConfigsResourceResult::default()
                            .with_name(s(&n))
                            .with_value(Some(s(&val)))
                            .with_read_only(read_only)
                            .with_is_sensitive(false);
                        if v >= 1 {
                            e = e.with_config_source(src);
                        }
                        if v >= 3 {
                            e = e.with_config_type(config_type(&n));
                        }
                        e
                    })
                    .collect();
                result = result.with_error_code(code::NONE).with_configs(configs);
            }
            Err((c, m)) => {
                result = result.with_error_code(c).with_error_message(Some(s(&m)));
            }
        }
        results.push(result);
    }
    respond(
        req,
        &DescribeConfigsResponse::default().with_results(results),
    )
}

/// Applies a new full override map to a topic (validate_only = check only).
async fn alter_topic<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    name: &str,
    compute: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String>,
    validate_only: bool,
) -> (i16, Option<String>) {
    if let Some(cluster) = broker.cluster.get() {
        return alter_topic_cluster(broker, cluster, name, compute, validate_only).await;
    }
    let current = broker
        .meta
        .lock()
        .await
        .topic(name)
        .map(|m| m.configs.clone());
    let Some(current) = current else {
        return (
            code::UNKNOWN_TOPIC_OR_PARTITION,
            Some(format!("unknown topic {name:?}")),
        );
    };
    let next = match compute(&current) {
        Ok(n) => n,
        Err(m) => return (code::INVALID_CONFIG, Some(m)),
    };
    if let Err(e) = validate_overrides(&next) {
        return (code::INVALID_CONFIG, Some(e.0));
    }
    if validate_only {
        return (code::NONE, None);
    }
    match broker.set_topic_configs(name, next).await {
        Ok(()) => (code::NONE, None),
        Err(e) => (meta_error_code(&e), Some(e.to_string())),
    }
}

/// `alter_topic` in cluster mode: computed and validated against the controller's image at the
/// active controller, committed as config records and applied here before the answer (every
/// other node applies them from the metadata log); `NOT_CONTROLLER` elsewhere.
async fn alter_topic_cluster<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    cluster: &ClusterNode,
    name: &str,
    compute: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String>,
    validate_only: bool,
) -> (i16, Option<String>) {
    let mut refusal = None;
    let now_ms = broker.clock.now_ms();
    let result = cluster
        .alter_topic_configs(now_ms, name, validate_only, |current, rf| {
            let checked = compute(current).and_then(|next| {
                validate_cluster_overrides(&next, rf)?;
                Ok(next)
            });
            checked.map_err(|m| {
                refusal = Some(m);
                code::INVALID_CONFIG
            })
        })
        .await;
    match result {
        Ok(()) => {
            if !validate_only {
                broker.reconcile_cluster().await;
            }
            (code::NONE, None)
        }
        Err(c) if c == code::UNKNOWN_TOPIC_OR_PARTITION => {
            (c, Some(format!("unknown topic {name:?}")))
        }
        Err(c) => (
            c,
            Some(refusal.unwrap_or_else(|| format!("controller refused: error {c}"))),
        ),
    }
}

pub async fn alter_configs<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: AlterConfigsRequest,
) -> Reply {
    if let Some(cluster) = broker.cluster.get() {
        if cluster.forwards(req.client_id.as_deref()) {
            let forwarded = cluster
                .forward_to_controller(ApiKey::AlterConfigs, req.api_version, &body)
                .await;
            let resp = forwarded.unwrap_or_else(|c| {
                let responses = body
                    .resources
                    .iter()
                    .take(TOPICS_PER_REQUEST_MAX)
                    .map(|r| {
                        alter_configs_response::AlterConfigsResourceResponse::default()
                            .with_error_code(c)
                            .with_error_message(Some(s(&forward_failed(c))))
                            .with_resource_type(r.resource_type)
                            .with_resource_name(r.resource_name.clone())
                    })
                    .collect();
                AlterConfigsResponse::default().with_responses(responses)
            });
            return respond(req, &resp);
        }
    }
    let mut responses = Vec::new();
    for r in body.resources.into_iter().take(TOPICS_PER_REQUEST_MAX) {
        let name = r.resource_name.to_string();
        let (error_code, message) = if r.resource_type != RESOURCE_TOPIC {
            (
                code::INVALID_REQUEST,
                Some("only topic configs can be altered".to_string()),
            )
        } else {
            // AlterConfigs replaces the whole override set.
            let entries: Vec<(String, Option<String>)> = r
                .configs
                .iter()
                .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                .collect();
            // Validated by `alter_topic` (single node or cluster rules).
            let compute = move |_: &BTreeMap<String, String>| {
                config_entries(entries.iter().map(|(n, v)| (n.as_str(), v.as_deref())))
            };
            alter_topic(broker, &name, compute, body.validate_only).await
        };
        responses.push(
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(error_code)
                .with_error_message(message.as_deref().map(s))
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name),
        );
    }
    respond(
        req,
        &AlterConfigsResponse::default().with_responses(responses),
    )
}

/// The topic configs whose value is a comma-separated list (IncrementalAlterConfigs APPEND and
/// SUBTRACT apply to these only).
const LIST_CONFIGS: &[&str] = &["cleanup.policy"];
/// Most items a list config may hold after APPEND.
const LIST_CONFIG_ITEMS_MAX: usize = 16;

/// IncrementalAlterConfigs APPEND (2) or SUBTRACT (3) of `value`'s items on the list config
/// `name` whose value is `current`: the new value, or why not. Validation of the result is
/// left to `alter_topic`.
fn apply_list_op(name: &str, current: &str, op: i8, value: &str) -> Result<String, String> {
    if !LIST_CONFIGS.contains(&name) {
        return Err(format!(
            "operation {op} not supported for {name}: not a list config"
        ));
    }
    let items = |v: &str| -> Vec<String> {
        v.split(',')
            .map(|i| i.trim().to_string())
            .filter(|i| !i.is_empty())
            .collect()
    };
    let mut list = items(current);
    for item in items(value) {
        match op {
            2 if !list.contains(&item) => list.push(item),
            3 => list.retain(|i| *i != item),
            _ => {}
        }
    }
    if list.len() > LIST_CONFIG_ITEMS_MAX {
        return Err(format!(
            "{name} would have more than {LIST_CONFIG_ITEMS_MAX} items"
        ));
    }
    Ok(list.join(","))
}

pub async fn incremental_alter_configs<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: IncrementalAlterConfigsRequest,
) -> Reply {
    if let Some(cluster) = broker.cluster.get() {
        if cluster.forwards(req.client_id.as_deref()) {
            let forwarded = cluster
                .forward_to_controller(ApiKey::IncrementalAlterConfigs, req.api_version, &body)
                .await;
            let resp = forwarded.unwrap_or_else(|c| {
                let responses = body
                    .resources
                    .iter()
                    .take(TOPICS_PER_REQUEST_MAX)
                    .map(|r| {
                        incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                            .with_error_code(c)
                            .with_error_message(Some(s(&forward_failed(c))))
                            .with_resource_type(r.resource_type)
                            .with_resource_name(r.resource_name.clone())
                    })
                    .collect();
                IncrementalAlterConfigsResponse::default().with_responses(responses)
            });
            return respond(req, &resp);
        }
    }
    let mut responses = Vec::new();
    for r in body.resources.into_iter().take(TOPICS_PER_REQUEST_MAX) {
        let name = r.resource_name.to_string();
        let (error_code, message) = if r.resource_type != RESOURCE_TOPIC {
            (
                code::INVALID_REQUEST,
                Some("only topic configs can be altered".to_string()),
            )
        } else {
            let ops: Vec<(String, i8, Option<String>)> = r
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        c.config_operation,
                        c.value.as_ref().map(|v| v.to_string()),
                    )
                })
                .collect();
            let defaults: BTreeMap<String, String> = LIST_CONFIGS
                .iter()
                .filter_map(|n| Some((n.to_string(), broker.defaults.get(n)?.to_string())))
                .collect();
            let cluster = broker.cluster.get().is_some();
            let compute = move |current: &BTreeMap<String, String>| {
                let mut next = current.clone();
                for (n, op, value) in ops {
                    if !settable_config(&n, cluster) {
                        return Err(format!("unknown topic config {n:?}"));
                    }
                    match (op, value) {
                        // SET
                        (0, Some(v)) => {
                            next.insert(n, v);
                        }
                        // DELETE (back to the default)
                        (1, _) => {
                            next.remove(&n);
                        }
                        (0, None) => return Err(format!("SET {n} without a value")),
                        // APPEND / SUBTRACT on a list config (cleanup.policy), from the
                        // topic's value or else the broker default.
                        (op @ (2 | 3), Some(v)) => {
                            let base = next
                                .get(&n)
                                .or_else(|| defaults.get(&n))
                                .cloned()
                                .unwrap_or_default();
                            let merged = apply_list_op(&n, &base, op, &v)?;
                            next.insert(n, merged);
                        }
                        (op, _) => return Err(format!("operation {op} not supported for {n}")),
                    }
                }
                Ok(next)
            };
            alter_topic(broker, &name, compute, body.validate_only).await
        };
        responses.push(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(error_code)
                .with_error_message(message.as_deref().map(s))
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name),
        );
    }
    respond(
        req,
        &IncrementalAlterConfigsResponse::default().with_responses(responses),
    )
}

/// Most partitions one DescribeTopicPartitions page carries (Kafka's default limit is 2000).
const DESCRIBE_PARTITIONS_PAGE_MAX: i32 = 2000;

/// DescribeTopicPartitions (KIP-966): Metadata's partition view, paged by a cursor. This node
/// leads every partition; there are no eligible-leader-replica sets beyond it.
pub async fn describe_topic_partitions<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: DescribeTopicPartitionsRequest,
) -> Reply {
    use kafka_protocol::messages::describe_topic_partitions_response::{
        Cursor, DescribeTopicPartitionsResponsePartition as Part,
        DescribeTopicPartitionsResponseTopic as Topic,
    };
    let node = BrokerId(broker.node_id);
    let limit = body
        .response_partition_limit
        .clamp(1, DESCRIBE_PARTITIONS_PAGE_MAX);
    let mut budget = limit;
    let store = broker.meta.lock().await;
    // Topics in name order; all of them when the request names none.
    let mut names: Vec<String> = if body.topics.is_empty() {
        store.state().topics.keys().cloned().collect()
    } else {
        let wanted: BTreeSet<String> = body
            .topics
            .iter()
            .take(TOPICS_PER_REQUEST_MAX)
            .map(|t| t.name.0.to_string())
            .collect();
        wanted.into_iter().collect()
    };
    let (first_topic, first_partition) = match &body.cursor {
        Some(c) => (Some(c.topic_name.0.to_string()), c.partition_index.max(0)),
        None => (None, 0),
    };
    if let Some(first) = &first_topic {
        names.retain(|n| n >= first);
    }
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names {
        let Some(meta) = store.topic(&name) else {
            topics.push(
                Topic::default()
                    .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION)
                    .with_name(Some(topic_name(&name))),
            );
            continue;
        };
        let start = if first_topic.as_deref() == Some(name.as_str()) {
            first_partition
        } else {
            0
        };
        if budget == 0 {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(topic_name(&name))
                    .with_partition_index(start),
            );
            break;
        }
        let mut parts = Vec::new();
        for i in start..meta.partitions {
            if budget == 0 {
                next_cursor = Some(
                    Cursor::default()
                        .with_topic_name(topic_name(&name))
                        .with_partition_index(i),
                );
                break;
            }
            budget -= 1;
            let error = match broker.partition(&name, i) {
                Some(_) => code::NONE,
                None => code::KAFKA_STORAGE_ERROR,
            };
            parts.push(
                Part::default()
                    .with_error_code(error)
                    .with_partition_index(i)
                    .with_leader_id(node)
                    .with_leader_epoch(0)
                    .with_replica_nodes(vec![node])
                    .with_isr_nodes(vec![node])
                    .with_eligible_leader_replicas(Some(vec![]))
                    .with_last_known_elr(Some(vec![]))
                    .with_offline_replicas(vec![]),
            );
        }
        topics.push(
            Topic::default()
                .with_error_code(code::NONE)
                .with_name(Some(topic_name(&name)))
                .with_topic_id(meta.id)
                .with_is_internal(name == crate::group::shell::OFFSETS_TOPIC)
                .with_partitions(parts)
                .with_topic_authorized_operations(i32::MIN),
        );
        if next_cursor.is_some() {
            break;
        }
    }
    drop(store);
    respond(
        req,
        &DescribeTopicPartitionsResponse::default()
            .with_topics(topics)
            .with_next_cursor(next_cursor),
    )
}

/// `(topic, partitions)` a partition-scoped admin request names, or every partition of every
/// topic when it names none (`None`), each checked against the metadata: `Ok` if it exists.
async fn scoped_partitions<D: Disk, C: Clock>(
    broker: &Broker<D, C>,
    named: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<(String, Vec<(i32, bool)>)> {
    let store = broker.meta.lock().await;
    match named {
        None => store
            .state()
            .topics
            .values()
            .map(|m| {
                (
                    m.name.clone(),
                    (0..m.partitions).map(|i| (i, true)).collect(),
                )
            })
            .collect(),
        Some(named) => named
            .into_iter()
            .take(TOPICS_PER_REQUEST_MAX)
            .map(|(name, parts)| {
                let count = store.topic(&name).map(|m| m.partitions).unwrap_or(0);
                let parts = parts
                    .into_iter()
                    .take(PARTITIONS_PER_TOPIC_MAX as usize)
                    .map(|i| (i, (0..count).contains(&i)))
                    .collect();
                (name, parts)
            })
            .collect(),
    }
}

/// ElectLeaders: this node already leads every partition, so every election is not needed.
pub async fn elect_leaders<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: ElectLeadersRequest,
) -> Reply {
    use kafka_protocol::messages::elect_leaders_response::{
        PartitionResult, ReplicaElectionResult,
    };
    if let Some(cluster) = broker.cluster.get() {
        return elect_leaders_cluster(broker, cluster, req, body).await;
    }
    let named = body.topic_partitions.map(|tps| {
        tps.into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect()
    });
    let results = scoped_partitions(broker, named)
        .await
        .into_iter()
        .map(|(name, parts)| {
            let partition_result = parts
                .into_iter()
                .map(|(i, exists)| {
                    let (c, m) = if exists {
                        (code::ELECTION_NOT_NEEDED, "this node already leads it")
                    } else {
                        (
                            code::UNKNOWN_TOPIC_OR_PARTITION,
                            "unknown topic or partition",
                        )
                    };
                    PartitionResult::default()
                        .with_partition_id(i)
                        .with_error_code(c)
                        .with_error_message(Some(s(m)))
                })
                .collect();
            ReplicaElectionResult::default()
                .with_topic(topic_name(&name))
                .with_partition_result(partition_result)
        })
        .collect();
    respond(
        req,
        &ElectLeadersResponse::default()
            .with_error_code(code::NONE)
            .with_replica_election_results(results),
    )
}

/// ElectLeaders in cluster mode, at the active controller (elsewhere NOT_CONTROLLER, so admin
/// clients refresh metadata and retry there). Election type 0 is preferred, 1 unclean.
async fn elect_leaders_cluster<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    cluster: &ClusterNode,
    req: &RequestFrame,
    body: ElectLeadersRequest,
) -> Reply {
    use kafka_protocol::messages::elect_leaders_response::{
        PartitionResult, ReplicaElectionResult,
    };
    use samsa_cluster::controller::ElectionType;
    if cluster.controller_id() != Some(broker.node_id) {
        let resp = ElectLeadersResponse::default().with_error_code(code::NOT_CONTROLLER);
        return respond(req, &resp);
    }
    let election = match body.election_type {
        0 => ElectionType::Preferred,
        1 => ElectionType::Unclean,
        _ => {
            let resp = ElectLeadersResponse::default().with_error_code(code::INVALID_REQUEST);
            return respond(req, &resp);
        }
    };
    let image = cluster.image();
    // (name, topic id if known, partitions): every partition of every topic when none named.
    let scope: Vec<(String, Option<u128>, Vec<i32>)> = match body.topic_partitions {
        None => image
            .topics
            .values()
            .map(|t| {
                (
                    t.name.clone(),
                    Some(t.topic_id),
                    t.partitions.keys().copied().collect(),
                )
            })
            .collect(),
        Some(tps) => tps
            .into_iter()
            .take(TOPICS_PER_REQUEST_MAX)
            .map(|t| {
                let name = t.topic.0.to_string();
                let id = image.topic_ids.get(&name).copied();
                let parts = t
                    .partitions
                    .into_iter()
                    .take(PARTITIONS_PER_TOPIC_MAX as usize)
                    .collect();
                (name, id, parts)
            })
            .collect(),
    };
    let mut results = Vec::new();
    for (name, id, parts) in scope {
        let mut partition_result = Vec::new();
        for i in parts {
            let outcome = match id {
                Some(id) if image.partition(id, i).is_some() => {
                    let now_ms = broker.clock.now_ms();
                    cluster.elect_leader(now_ms, id, i, election).await
                }
                _ => Err(code::UNKNOWN_TOPIC_OR_PARTITION),
            };
            let error = outcome.err().unwrap_or(code::NONE);
            partition_result.push(
                PartitionResult::default()
                    .with_partition_id(i)
                    .with_error_code(error)
                    .with_error_message(
                        (error != code::NONE).then(|| s(samsa_net::error::name(error))),
                    ),
            );
        }
        results.push(
            ReplicaElectionResult::default()
                .with_topic(topic_name(&name))
                .with_partition_result(partition_result),
        );
    }
    respond(
        req,
        &ElectLeadersResponse::default()
            .with_error_code(code::NONE)
            .with_replica_election_results(results),
    )
}

/// ListPartitionReassignments: a single node never has a reassignment in progress.
pub async fn list_partition_reassignments<D: Disk, C: Clock>(
    _broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    _body: ListPartitionReassignmentsRequest,
) -> Reply {
    respond(
        req,
        &ListPartitionReassignmentsResponse::default()
            .with_error_code(code::NONE)
            .with_topics(vec![]),
    )
}

/// AlterPartitionReassignments: moving a partition to exactly this node is a no-op that
/// succeeds; any other replica set cannot be honoured; cancelling finds nothing in progress.
pub async fn alter_partition_reassignments<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: AlterPartitionReassignmentsRequest,
) -> Reply {
    use kafka_protocol::messages::alter_partition_reassignments_response::{
        ReassignablePartitionResponse, ReassignableTopicResponse,
    };
    let mut responses = Vec::new();
    for t in body.topics.into_iter().take(TOPICS_PER_REQUEST_MAX) {
        let count = broker
            .meta
            .lock()
            .await
            .topic(&t.name.0)
            .map(|m| m.partitions)
            .unwrap_or(0);
        let partitions = t
            .partitions
            .into_iter()
            .take(PARTITIONS_PER_TOPIC_MAX as usize)
            .map(|p| {
                let (c, m) = if !(0..count).contains(&p.partition_index) {
                    (
                        code::UNKNOWN_TOPIC_OR_PARTITION,
                        Some("unknown topic or partition"),
                    )
                } else {
                    match &p.replicas {
                        None => (code::NO_REASSIGNMENT_IN_PROGRESS, Some("none in progress")),
                        Some(r) if this_node_only(broker.node_id, r) => (code::NONE, None),
                        Some(_) => (
                            code::INVALID_REPLICA_ASSIGNMENT,
                            Some("a single node can only hold its partitions itself"),
                        ),
                    }
                };
                ReassignablePartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(c)
                    .with_error_message(m.map(s))
            })
            .collect();
        responses.push(
            ReassignableTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    respond(
        req,
        &AlterPartitionReassignmentsResponse::default()
            .with_error_code(code::NONE)
            .with_responses(responses),
    )
}

/// The one log directory of this node, as DescribeLogDirs names it.
fn log_dir_name<D: Disk, C: Clock>(broker: &Broker<D, C>) -> String {
    broker.cfg.data_dir.clone()
}

/// DescribeLogDirs: the node's single data directory with each partition's size on disk.
/// Total/usable bytes are unknown to the broker (no filesystem statistics): reported as -1,
/// which Kafka uses for "not available".
pub async fn describe_log_dirs<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: DescribeLogDirsRequest,
) -> Reply {
    use kafka_protocol::messages::describe_log_dirs_response::{
        DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
    };
    let named = body.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect()
    });
    let mut topics = Vec::new();
    for (name, parts) in scoped_partitions(broker, named).await {
        let mut partitions = Vec::new();
        for (i, exists) in parts {
            let Some(p) = exists.then(|| broker.partition(&name, i)).flatten() else {
                continue;
            };
            partitions.push(
                DescribeLogDirsPartition::default()
                    .with_partition_index(i)
                    .with_partition_size(i64::try_from(p.size_bytes().await).unwrap_or(i64::MAX))
                    .with_offset_lag(0)
                    .with_is_future_key(false),
            );
        }
        if !partitions.is_empty() {
            topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(topic_name(&name))
                    .with_partitions(partitions),
            );
        }
    }
    let result = DescribeLogDirsResult::default()
        .with_error_code(code::NONE)
        .with_log_dir(s(&log_dir_name(broker)))
        .with_topics(topics)
        .with_total_bytes(-1)
        .with_usable_bytes(-1);
    respond(
        req,
        &DescribeLogDirsResponse::default()
            .with_error_code(code::NONE)
            .with_results(vec![result]),
    )
}

/// AlterReplicaLogDirs: a replica can only "move" to the directory it is already in.
pub async fn alter_replica_log_dirs<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: AlterReplicaLogDirsRequest,
) -> Reply {
    use kafka_protocol::messages::alter_replica_log_dirs_response::{
        AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
    };
    let ours = log_dir_name(broker);
    let mut results = Vec::new();
    for dir in body.dirs.into_iter().take(TOPICS_PER_REQUEST_MAX) {
        let same_dir = dir.path.as_str() == ours;
        let named = dir
            .topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partitions))
            .collect();
        for (name, parts) in scoped_partitions(broker, Some(named)).await {
            let partitions = parts
                .into_iter()
                .map(|(i, exists)| {
                    let c = match (exists, same_dir) {
                        (false, _) => code::UNKNOWN_TOPIC_OR_PARTITION,
                        (true, false) => code::LOG_DIR_NOT_FOUND,
                        (true, true) => code::NONE,
                    };
                    AlterReplicaLogDirPartitionResult::default()
                        .with_partition_index(i)
                        .with_error_code(c)
                })
                .collect();
            results.push(
                AlterReplicaLogDirTopicResult::default()
                    .with_topic_name(topic_name(&name))
                    .with_partitions(partitions),
            );
        }
    }
    respond(
        req,
        &AlterReplicaLogDirsResponse::default().with_results(results),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two nodes never hand out the same producer id, whatever their counters say.
    #[test]
    fn striped_producer_ids_are_disjoint_across_nodes() {
        let mut seen = std::collections::BTreeSet::new();
        for node in [0, 1, 2, 3, 65_535] {
            for n in [0, 1, 2, 999, 1_000, 123_456] {
                let id = striped_producer_id(n, node);
                assert!(id >= 0);
                assert!(seen.insert(id), "id {id} handed out twice");
            }
        }
        assert_eq!(striped_producer_id(0, 2), 2);
        assert_eq!(striped_producer_id(1, 2), 65_538);
    }

    /// Cluster topics: min.insync.replicas up to the replication factor, the unclean flag a
    /// boolean, everything else by the single-node rules.
    #[test]
    fn cluster_overrides_check_min_isr_against_the_replication_factor() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let ok = map(&[
            (MIN_INSYNC_REPLICAS, "3"),
            (UNCLEAN_LEADER_ELECTION_ENABLE, "false"),
            ("retention.ms", "1000"),
        ]);
        assert_eq!(validate_cluster_overrides(&ok, 3), Ok(()));
        assert!(
            validate_overrides(&ok).is_err(),
            "a single node allows only 1"
        );
        for (k, v, rf) in [
            (MIN_INSYNC_REPLICAS, "4", 3),
            (MIN_INSYNC_REPLICAS, "0", 3),
            (MIN_INSYNC_REPLICAS, "two", 3),
            (UNCLEAN_LEADER_ELECTION_ENABLE, "maybe", 3),
            ("retention.ms", "-7", 3),
            ("no.such.config", "1", 3),
        ] {
            let bad = map(&[(k, v)]);
            assert!(validate_cluster_overrides(&bad, rf).is_err(), "{k}={v}");
        }
        assert!(settable_config(UNCLEAN_LEADER_ELECTION_ENABLE, true));
        assert!(!settable_config(UNCLEAN_LEADER_ELECTION_ENABLE, false));
        assert!(settable_config("retention.ms", false));
    }

    /// librdkafka 0011 APPENDs `compact` to cleanup.policy and SUBTRACTs it again.
    #[test]
    fn list_config_append_subtract() {
        let p = "cleanup.policy";
        assert_eq!(
            apply_list_op(p, "delete", 2, "compact").unwrap(),
            "delete,compact"
        );
        assert_eq!(
            apply_list_op(p, "delete,compact", 2, "compact").unwrap(),
            "delete,compact"
        );
        assert_eq!(
            apply_list_op(p, "delete,compact", 3, "compact").unwrap(),
            "delete"
        );
        assert_eq!(apply_list_op(p, "compact", 3, "delete").unwrap(), "compact");
        assert_eq!(
            apply_list_op(p, "", 2, "compact, delete").unwrap(),
            "compact,delete"
        );
        assert!(apply_list_op("retention.ms", "1", 2, "2").is_err());
        let many: Vec<String> = (0..=LIST_CONFIG_ITEMS_MAX)
            .map(|i| format!("x{i}"))
            .collect();
        assert!(apply_list_op(p, "", 2, &many.join(",")).is_err());
    }

    /// kafka-python's test_create_partitions assigns `[[0], [0]]` to a broker with node id 0.
    #[test]
    fn single_node_assignments() {
        assert!(this_node_only(0, &[BrokerId(0)]));
        assert!(this_node_only(7, &[BrokerId(7)]));
        assert!(!this_node_only(0, &[BrokerId(1)]));
        assert!(!this_node_only(0, &[]));
        assert!(!this_node_only(0, &[BrokerId(0), BrokerId(0)]));
        assert_eq!(config_type("advertised.listeners"), 7);
    }
}
