//! Handlers for the consumer-group APIs (classic protocol): FindCoordinator, JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, OffsetDelete, DescribeGroups,
//! ListGroups and DeleteGroups. They translate Kafka messages to core events and core replies
//! back; all decisions live in `crate::group`. Never blocks a connection's reader on a rebalance
//! (waiting answers are `Reply::Later`) and never panics on request contents.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as FoundCoordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use samsa_net::Clock;
use samsa_storage::Disk;
use tokio::sync::oneshot;

use super::{code, encode, respond, s, topic_name, Reply};
use crate::broker::Broker;
use crate::group::shell::{spawn_effects, OFFSETS_TOPIC};
use crate::group::{self, CommitEntry, Event, Join, OffsetValue};
use crate::wire::RequestFrame;

/// Committed offsets by topic: (topic, [(partition, offset if committed)]).
type TopicOffsets = Vec<(String, Vec<(i32, Option<OffsetValue>)>)>;
/// A commit request's shape: (topic, [(partition, error known before the core is asked)]).
type CommitShape = Vec<(String, Vec<(i32, Option<i16>)>)>;

/// Most topics, partitions, groups or members one group request may name.
pub const ENTRIES_PER_REQUEST_MAX: usize = 100_000;
/// The `timeout_ms` of the CreateTopics a broker forwards for `__consumer_offsets`.
pub const OFFSETS_TOPIC_CREATE_TIMEOUT_MS: i32 = 10_000;

fn text(v: &StrBytes) -> String {
    v.to_string()
}

fn opt(v: &Option<StrBytes>) -> Option<String> {
    v.as_ref().map(|x| x.to_string())
}

fn sopt(v: &Option<String>) -> Option<StrBytes> {
    v.as_deref().map(s)
}

/// Submits `make` to the coordinator and answers with `build(reply)` once the core replies.
fn submit<D: Disk, C: Clock, T: kafka_protocol::protocol::Encodable + Send + 'static>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    group: &str,
    make: impl FnOnce(group::RequestId) -> Event,
    build: impl FnOnce(Option<group::Reply>) -> T + Send + 'static,
) -> Reply {
    if let Err(c) = broker.serve_group(group) {
        return respond(req, &build(Some(group::Reply::Code(c))));
    }
    let Some((rx, effects)) = broker.groups.submit(broker.clock.now_ms(), make) else {
        return respond(req, &build(None));
    };
    spawn_effects(broker, effects);
    later(req, rx, build)
}

/// The error a builder answers when the core gave it nothing it expected: the coordinator
/// gate's refusal (`Reply::Code`, e.g. NOT_COORDINATOR) or COORDINATOR_NOT_AVAILABLE.
fn refusal(reply: &Option<group::Reply>) -> i16 {
    match reply {
        Some(group::Reply::Code(c)) => *c,
        _ => code::COORDINATOR_NOT_AVAILABLE,
    }
}

fn later<T: kafka_protocol::protocol::Encodable + Send + 'static>(
    req: &RequestFrame,
    rx: oneshot::Receiver<group::Reply>,
    build: impl FnOnce(Option<group::Reply>) -> T + Send + 'static,
) -> Reply {
    let req = req.clone();
    Reply::Later(Box::pin(async move {
        let reply = rx.await.ok();
        encode(&req, &build(reply))
    }))
}

pub async fn find_coordinator<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: FindCoordinatorRequest,
) -> Reply {
    // Groups: this node on a single node; in cluster mode the leader of the group's partition
    // of `__consumer_offsets` (created through the controller on the first lookup).
    let coordinator_of = |group: &str| -> Result<(i32, String, i32), i16> {
        let Some(c) = broker.cluster.get() else {
            return Ok((
                broker.node_id,
                broker.advertised_host.clone(),
                broker.advertised_port,
            ));
        };
        let partitions = c.partition_count(OFFSETS_TOPIC);
        if partitions == 0 {
            ensure_offsets_topic(broker);
            return Err(code::COORDINATOR_NOT_AVAILABLE);
        }
        let index = group::schema::partition_for(group, partitions);
        c.partition_leader(OFFSETS_TOPIC, index)
            .map(|(id, host, port)| (id, host, i32::from(port)))
    };
    let found = |key: StrBytes| -> FoundCoordinator {
        let c = FoundCoordinator::default().with_key(key.clone());
        match (body.key_type, coordinator_of(&key)) {
            (0, Ok((id, host, port))) => c
                .with_node_id(BrokerId(id))
                .with_host(s(&host))
                .with_port(port)
                .with_error_code(code::NONE),
            (0, Err(e)) => c
                .with_node_id(BrokerId(-1))
                .with_host(s(""))
                .with_port(-1)
                .with_error_code(e)
                .with_error_message(Some(s("the group coordinator is not available"))),
            // Transactions are not served yet: say so rather than send clients somewhere.
            _ => c
                .with_node_id(BrokerId(-1))
                .with_host(s(""))
                .with_port(-1)
                .with_error_code(code::COORDINATOR_NOT_AVAILABLE)
                .with_error_message(Some(s("no transaction coordinator on this broker"))),
        }
    };
    let response = if req.api_version >= 4 {
        let coordinators = body
            .coordinator_keys
            .iter()
            .take(ENTRIES_PER_REQUEST_MAX)
            .map(|k| found(k.clone()))
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        let c = found(body.key.clone());
        FindCoordinatorResponse::default()
            .with_error_code(c.error_code)
            .with_error_message(c.error_message)
            .with_node_id(c.node_id)
            .with_host(c.host)
            .with_port(c.port)
    };
    respond(req, &response)
}

/// Cluster mode: creates `__consumer_offsets` through the active controller unless it exists
/// or a creation is under way (one at a time per node; the next lookup retries a failure).
/// RF min(3, registered brokers) and `min.insync.replicas` min(2, RF), compacted; waits until
/// that many brokers are live (`ClusterNode::offsets_topic_replication`).
fn ensure_offsets_topic<D: Disk, C: Clock>(broker: &Arc<Broker<D, C>>) {
    use std::sync::atomic::Ordering;
    let Some(c) = broker.cluster.get() else {
        return;
    };
    let Some((rf, min_isr)) = c.offsets_topic_replication() else {
        return;
    };
    if broker
        .groups
        .creating_offsets_topic
        .swap(true, Ordering::SeqCst)
    {
        return;
    }
    let broker = broker.clone();
    tokio::spawn(async move {
        let partitions = broker.groups.offsets_partitions;
        let configs = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("min.insync.replicas".to_string(), min_isr.to_string()),
        ]);
        let result = match broker.cluster.get() {
            Some(c) if c.controller_id() == Some(broker.node_id) => {
                let request = samsa_cluster::controller::CreateTopic {
                    name: OFFSETS_TOPIC.to_string(),
                    partitions,
                    replication_factor: rf,
                    configs,
                };
                c.create_topic(broker.clock.now_ms(), request)
                    .await
                    .map(drop)
            }
            Some(c) => {
                let topic = create_topics_request::CreatableTopic::default()
                    .with_name(TopicName(s(OFFSETS_TOPIC)))
                    .with_num_partitions(partitions)
                    .with_replication_factor(rf)
                    .with_configs(
                        configs
                            .iter()
                            .map(|(k, v)| {
                                create_topics_request::CreatableTopicConfig::default()
                                    .with_name(s(k))
                                    .with_value(Some(s(v)))
                            })
                            .collect(),
                    );
                let request = CreateTopicsRequest::default()
                    .with_topics(vec![topic])
                    .with_timeout_ms(OFFSETS_TOPIC_CREATE_TIMEOUT_MS);
                let answer: Result<CreateTopicsResponse, i16> = c
                    .forward_to_controller(ApiKey::CreateTopics, 5, &request)
                    .await;
                answer.and_then(|r| match r.topics.first().map(|t| t.error_code) {
                    Some(code::NONE) => Ok(()),
                    Some(e) => Err(e),
                    None => Err(code::UNKNOWN_SERVER_ERROR),
                })
            }
            None => Ok(()),
        };
        match result {
            Ok(()) => tracing::info!(partitions, rf, min_isr, "{OFFSETS_TOPIC} created"),
            Err(code::TOPIC_ALREADY_EXISTS) => {}
            Err(e) => tracing::warn!(
                code = e,
                "creating {OFFSETS_TOPIC} failed; next lookup retries"
            ),
        }
        broker
            .groups
            .creating_offsets_topic
            .store(false, Ordering::SeqCst);
    });
}

pub async fn join_group<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: JoinGroupRequest,
) -> Reply {
    let v = req.api_version;
    let join = Join {
        request: 0,
        group: body.group_id.0.to_string(),
        member_id: text(&body.member_id),
        instance_id: opt(&body.group_instance_id),
        client_id: req.client_id.clone().unwrap_or_default(),
        client_host: "/127.0.0.1".to_string(),
        session_timeout_ms: body.session_timeout_ms,
        rebalance_timeout_ms: if v >= 1 {
            body.rebalance_timeout_ms
        } else {
            body.session_timeout_ms
        },
        protocol_type: text(&body.protocol_type),
        protocols: body
            .protocols
            .iter()
            .take(group::PROTOCOLS_PER_JOIN_MAX + 1)
            .map(|p| (text(&p.name), p.metadata.clone()))
            .collect(),
        require_known_member_id: v >= 4,
    };
    let member_id = join.member_id.clone();
    submit(
        broker,
        req,
        &body.group_id.0,
        |request| Event::Join(Join { request, ..join }),
        move |reply| {
            let r = match reply {
                Some(group::Reply::Join(r)) => r,
                other => {
                    return JoinGroupResponse::default()
                        .with_error_code(refusal(&other))
                        .with_generation_id(-1)
                        .with_member_id(s(&member_id))
                }
            };
            let members = r
                .members
                .iter()
                .map(|(id, instance, metadata)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(s(id))
                        .with_group_instance_id(if v >= 5 { sopt(instance) } else { None })
                        .with_metadata(metadata.clone())
                })
                .collect();
            let mut out = JoinGroupResponse::default()
                .with_error_code(r.error)
                .with_generation_id(r.generation)
                .with_protocol_name(sopt(&r.protocol_name))
                .with_leader(s(&r.leader))
                .with_member_id(s(&r.member_id))
                .with_members(members);
            if v >= 7 {
                out = out.with_protocol_type(sopt(&r.protocol_type));
            }
            if v >= 9 {
                out = out.with_skip_assignment(r.skip_assignment);
            }
            if v < 7 && out.protocol_name.is_none() {
                // Non-nullable before v7.
                out = out.with_protocol_name(Some(s("")));
            }
            out
        },
    )
}

pub async fn sync_group<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: SyncGroupRequest,
) -> Reply {
    let v = req.api_version;
    let assignments: Vec<(String, Bytes)> = body
        .assignments
        .iter()
        .take(group::MEMBERS_PER_GROUP_MAX)
        .map(|a| (text(&a.member_id), a.assignment.clone()))
        .collect();
    submit(
        broker,
        req,
        &body.group_id.0,
        |request| Event::Sync {
            request,
            group: body.group_id.0.to_string(),
            generation: body.generation_id,
            member_id: text(&body.member_id),
            instance_id: opt(&body.group_instance_id),
            protocol_type: opt(&body.protocol_type),
            protocol_name: opt(&body.protocol_name),
            assignments,
        },
        move |reply| match reply {
            Some(group::Reply::Sync(r)) => {
                let mut out = SyncGroupResponse::default()
                    .with_error_code(r.error)
                    .with_assignment(r.assignment);
                if v >= 5 {
                    out = out
                        .with_protocol_type(sopt(&r.protocol_type))
                        .with_protocol_name(sopt(&r.protocol_name));
                }
                out
            }
            other => SyncGroupResponse::default().with_error_code(refusal(&other)),
        },
    )
}

pub async fn heartbeat<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: HeartbeatRequest,
) -> Reply {
    submit(
        broker,
        req,
        &body.group_id.0,
        |request| Event::Heartbeat {
            request,
            group: body.group_id.0.to_string(),
            generation: body.generation_id,
            member_id: text(&body.member_id),
            instance_id: opt(&body.group_instance_id),
        },
        |reply| {
            let c = match reply {
                Some(group::Reply::Code(c)) => c,
                _ => code::COORDINATOR_NOT_AVAILABLE,
            };
            HeartbeatResponse::default().with_error_code(c)
        },
    )
}

pub async fn leave_group<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: LeaveGroupRequest,
) -> Reply {
    let v = req.api_version;
    let members: Vec<(String, Option<String>)> = if v >= 3 {
        body.members
            .iter()
            .take(ENTRIES_PER_REQUEST_MAX)
            .map(|m| (text(&m.member_id), opt(&m.group_instance_id)))
            .collect()
    } else {
        vec![(text(&body.member_id), None)]
    };
    submit(
        broker,
        req,
        &body.group_id.0,
        |request| Event::Leave {
            request,
            group: body.group_id.0.to_string(),
            members,
        },
        move |reply| match reply {
            Some(group::Reply::Leave(top, results)) => {
                if v >= 3 {
                    let members = results
                        .iter()
                        .map(|(m, i, c)| {
                            MemberResponse::default()
                                .with_member_id(s(m))
                                .with_group_instance_id(sopt(i))
                                .with_error_code(*c)
                        })
                        .collect();
                    // v3+: errors are per member; the top level has no group-wide one here.
                    let top = code::NONE;
                    LeaveGroupResponse::default()
                        .with_error_code(top)
                        .with_members(members)
                } else {
                    LeaveGroupResponse::default().with_error_code(top)
                }
            }
            other => LeaveGroupResponse::default().with_error_code(refusal(&other)),
        },
    )
}

pub async fn offset_commit<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: OffsetCommitRequest,
) -> Reply {
    let now_ms = broker.clock.now_ms();
    // Per partition: Ok(entry) to commit, or an error known before the core is asked.
    let mut shape: CommitShape = Vec::new();
    let mut entries = Vec::new();
    let mut budget = ENTRIES_PER_REQUEST_MAX;
    for t in &body.topics {
        let name = t.name.0.to_string();
        let mut parts = Vec::new();
        for p in &t.partitions {
            if budget == 0 {
                break;
            }
            budget -= 1;
            let known = name != OFFSETS_TOPIC
                && broker
                    .topic_shape(&name)
                    .await
                    .is_some_and(|(_, n)| (0..n).contains(&p.partition_index));
            if !known {
                parts.push((p.partition_index, Some(code::UNKNOWN_TOPIC_OR_PARTITION)));
                continue;
            }
            parts.push((p.partition_index, None));
            entries.push(CommitEntry {
                topic: name.clone(),
                partition: p.partition_index,
                value: OffsetValue {
                    offset: p.committed_offset,
                    leader_epoch: if req.api_version >= 6 {
                        p.committed_leader_epoch
                    } else {
                        -1
                    },
                    metadata: opt(&p.committed_metadata).unwrap_or_default(),
                    commit_timestamp_ms: now_ms,
                },
            });
        }
        shape.push((name, parts));
    }
    let build = move |reply: Option<group::Reply>| {
        let c = match reply {
            Some(group::Reply::Offsets(c)) => c,
            other => refusal(&other),
        };
        let topics = shape
            .iter()
            .map(|(name, parts)| {
                OffsetCommitResponseTopic::default()
                    .with_name(topic_name(name))
                    .with_partitions(
                        parts
                            .iter()
                            .map(|(index, early)| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(*index)
                                    .with_error_code(early.unwrap_or(c))
                            })
                            .collect(),
                    )
            })
            .collect();
        OffsetCommitResponse::default().with_topics(topics)
    };
    if entries.is_empty() {
        let reply = match broker.serve_group(&body.group_id.0) {
            Ok(()) => group::Reply::Offsets(code::NONE),
            Err(c) => group::Reply::Code(c),
        };
        return respond(req, &build(Some(reply)));
    }
    submit(
        broker,
        req,
        &body.group_id.0,
        |request| Event::CommitOffsets {
            request,
            group: body.group_id.0.to_string(),
            generation: body.generation_id_or_member_epoch,
            member_id: text(&body.member_id),
            instance_id: opt(&body.group_instance_id),
            entries,
        },
        build,
    )
}

/// Committed offsets of `group` for the asked partitions (all of them when `None`).
fn fetch_offsets<D: Disk, C: Clock>(
    broker: &Broker<D, C>,
    group_id: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> TopicOffsets {
    broker.groups.read(|core| {
        let offsets = core.group(group_id).map(|g| &g.offsets);
        match topics {
            Some(topics) => topics
                .into_iter()
                .map(|(t, parts)| {
                    let got = parts
                        .into_iter()
                        .map(|p| {
                            let v = offsets.and_then(|o| o.get(&(t.clone(), p))).cloned();
                            (p, v)
                        })
                        .collect();
                    (t, got)
                })
                .collect(),
            None => {
                let mut out: TopicOffsets = Vec::new();
                for ((t, p), v) in offsets.into_iter().flatten() {
                    match out.last_mut() {
                        Some((last, parts)) if last == t => parts.push((*p, Some(v.clone()))),
                        _ => out.push((t.clone(), vec![(*p, Some(v.clone()))])),
                    }
                }
                out
            }
        }
    })
}

pub async fn offset_fetch<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: OffsetFetchRequest,
) -> Reply {
    let v = req.api_version;
    let epoch = |o: &OffsetValue| if v >= 5 { o.leader_epoch } else { -1 };
    if v >= 8 {
        let groups = body
            .groups
            .iter()
            .take(ENTRIES_PER_REQUEST_MAX)
            .map(|g| {
                let asked = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .take(ENTRIES_PER_REQUEST_MAX)
                        .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                if let Err(c) = broker.serve_group(&g.group_id.0) {
                    return OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id.clone())
                        .with_error_code(c);
                }
                let got = fetch_offsets(broker, &g.group_id.0, asked);
                let topics = got
                    .into_iter()
                    .map(|(t, parts)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(topic_name(&t))
                            .with_partitions(
                                parts
                                    .into_iter()
                                    .map(|(p, o)| {
                                        let (offset, leader_epoch, metadata) =
                                            committed(o.as_ref(), epoch);
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p)
                                            .with_error_code(code::NONE)
                                            .with_committed_offset(offset)
                                            .with_committed_leader_epoch(leader_epoch)
                                            .with_metadata(Some(metadata))
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_topics(topics)
                    .with_error_code(code::NONE)
            })
            .collect();
        return respond(req, &OffsetFetchResponse::default().with_groups(groups));
    }
    let asked = body.topics.as_ref().map(|ts| {
        ts.iter()
            .take(ENTRIES_PER_REQUEST_MAX)
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let gate = broker.serve_group(&body.group_id.0);
    if let (Err(c), true) = (gate, v >= 2) {
        return respond(req, &OffsetFetchResponse::default().with_error_code(c));
    }
    // Before v2 there is no group-wide error: a refusal goes on every partition.
    let each = gate.err().unwrap_or(code::NONE);
    let got = fetch_offsets(broker, &body.group_id.0, asked);
    let topics = got
        .into_iter()
        .map(|(t, parts)| {
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(&t))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, o)| {
                            let o = o.filter(|_| each == code::NONE);
                            let (offset, leader_epoch, metadata) = committed(o.as_ref(), epoch);
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_error_code(each)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(leader_epoch)
                                .with_metadata(Some(metadata))
                        })
                        .collect(),
                )
        })
        .collect();
    let mut out = OffsetFetchResponse::default().with_topics(topics);
    if v >= 2 {
        out = out.with_error_code(code::NONE);
    }
    respond(req, &out)
}

pub async fn offset_delete<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: OffsetDeleteRequest,
) -> Reply {
    let shape: Vec<(String, Vec<i32>)> = body
        .topics
        .iter()
        .take(ENTRIES_PER_REQUEST_MAX)
        .map(|t| {
            let parts = t
                .partitions
                .iter()
                .take(ENTRIES_PER_REQUEST_MAX)
                .map(|p| p.partition_index)
                .collect();
            (t.name.0.to_string(), parts)
        })
        .collect();
    let partitions = shape
        .iter()
        .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
        .take(ENTRIES_PER_REQUEST_MAX)
        .collect();
    submit(
        broker,
        req,
        &body.group_id.0,
        |request| Event::DeleteOffsets {
            request,
            group: body.group_id.0.to_string(),
            partitions,
        },
        move |reply| {
            let (c, refused) = match reply {
                Some(group::Reply::Offsets(c)) => (c, Vec::new()),
                Some(group::Reply::OffsetsDeleted(refused)) => (code::NONE, refused),
                other => (refusal(&other), Vec::new()),
            };
            // Group-wide errors go at the top; per-partition ones on each partition.
            let (top, each) = match c {
                code::GROUP_ID_NOT_FOUND
                | code::COORDINATOR_NOT_AVAILABLE
                | code::NOT_COORDINATOR
                | code::COORDINATOR_LOAD_IN_PROGRESS => (c, code::NONE),
                _ => (code::NONE, c),
            };
            let refused: std::collections::BTreeMap<(String, i32), i16> =
                refused.into_iter().map(|(t, p, e)| ((t, p), e)).collect();
            let topics = shape
                .iter()
                .map(|(t, ps)| {
                    OffsetDeleteResponseTopic::default()
                        .with_name(topic_name(t))
                        .with_partitions(
                            ps.iter()
                                .map(|p| {
                                    let e =
                                        refused.get(&(t.to_string(), *p)).copied().unwrap_or(each);
                                    OffsetDeleteResponsePartition::default()
                                        .with_partition_index(*p)
                                        .with_error_code(e)
                                })
                                .collect(),
                        )
                })
                .collect();
            OffsetDeleteResponse::default()
                .with_error_code(top)
                .with_topics(topics)
        },
    )
}

pub async fn describe_groups<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: DescribeGroupsRequest,
) -> Reply {
    let v = req.api_version;
    let groups = body
        .groups
        .iter()
        .take(ENTRIES_PER_REQUEST_MAX)
        .map(|id| {
            let gate = broker.serve_group(&id.0);
            broker.groups.read(|core| {
                let base = DescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_authorized_operations(i32::MIN);
                if let Err(c) = gate {
                    return base
                        .with_error_code(c)
                        .with_group_state(s(""))
                        .with_protocol_type(s(""))
                        .with_protocol_data(s(""));
                }
                let Some(g) = core.group(&id.0) else {
                    let base = base
                        .with_error_code(code::NONE)
                        .with_group_state(s("Dead"))
                        .with_protocol_type(s(""))
                        .with_protocol_data(s(""));
                    return if v >= 6 {
                        base.with_error_code(code::GROUP_ID_NOT_FOUND)
                    } else {
                        base
                    };
                };
                let (state, members) = core.describe(&id.0).unwrap_or((g.state, Vec::new()));
                let members = members
                    .into_iter()
                    .map(|m| {
                        DescribedGroupMember::default()
                            .with_member_id(s(&m.member_id))
                            .with_group_instance_id(if v >= 4 {
                                sopt(&m.instance_id)
                            } else {
                                None
                            })
                            .with_client_id(s(&m.client_id))
                            .with_client_host(s(&m.client_host))
                            .with_member_metadata(m.metadata)
                            .with_member_assignment(m.assignment)
                    })
                    .collect();
                base.with_error_code(code::NONE)
                    .with_group_state(s(state.as_str()))
                    .with_protocol_type(s(g.protocol_type.as_deref().unwrap_or("")))
                    .with_protocol_data(s(g.protocol_name.as_deref().unwrap_or("")))
                    .with_members(members)
            })
        })
        .collect();
    respond(req, &DescribeGroupsResponse::default().with_groups(groups))
}

pub async fn list_groups<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: ListGroupsRequest,
) -> Reply {
    let v = req.api_version;
    let states: Vec<String> = body.states_filter.iter().map(text).collect();
    let types: Vec<String> = body.types_filter.iter().map(|t| t.to_lowercase()).collect();
    // Every broker answers with the groups it coordinates (in cluster mode its core holds
    // exactly the groups of the offsets partitions it has loaded).
    let groups = broker.groups.read(|core| {
        let consumer: Vec<ListedGroup> = core
            .consumer_groups()
            .filter(|(_, g)| states.is_empty() || states.iter().any(|st| st == g.state()))
            .filter(|_| types.is_empty() || types.iter().any(|t| t == "consumer"))
            .map(|(id, g)| {
                let mut l = ListedGroup::default()
                    .with_group_id(GroupId(s(id)))
                    .with_protocol_type(s("consumer"));
                if v >= 4 {
                    l = l.with_group_state(s(g.state()));
                }
                if v >= 5 {
                    l = l.with_group_type(s("consumer"));
                }
                l
            })
            .collect();
        let classic: Vec<ListedGroup> = core
            .groups()
            .filter(|(id, _)| core.consumer_group(id).is_none())
            .filter(|(_, g)| states.is_empty() || states.iter().any(|st| st == g.state.as_str()))
            .filter(|_| types.is_empty() || types.iter().any(|t| t == "classic"))
            .map(|(id, g)| {
                let mut l = ListedGroup::default()
                    .with_group_id(GroupId(s(id)))
                    .with_protocol_type(s(g.protocol_type.as_deref().unwrap_or("")));
                if v >= 4 {
                    l = l.with_group_state(s(g.state.as_str()));
                }
                if v >= 5 {
                    l = l.with_group_type(s("classic"));
                }
                l
            })
            .collect();
        classic.into_iter().chain(consumer).collect::<Vec<_>>()
    });
    respond(
        req,
        &ListGroupsResponse::default()
            .with_error_code(code::NONE)
            .with_groups(groups),
    )
}

pub async fn delete_groups<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: DeleteGroupsRequest,
) -> Reply {
    let mut waits = Vec::new();
    for id in body.groups_names.iter().take(ENTRIES_PER_REQUEST_MAX) {
        if let Err(c) = broker.serve_group(&id.0) {
            waits.push((id.clone(), Err(c)));
            continue;
        }
        let group = id.0.to_string();
        let submitted = broker
            .groups
            .submit(broker.clock.now_ms(), |request| Event::DeleteGroup {
                request,
                group: group.clone(),
            });
        match submitted {
            Some((rx, effects)) => {
                spawn_effects(broker, effects);
                waits.push((id.clone(), Ok(rx)));
            }
            None => waits.push((id.clone(), Err(code::COORDINATOR_NOT_AVAILABLE))),
        }
    }
    let req = req.clone();
    Reply::Later(Box::pin(async move {
        let mut results = Vec::new();
        for (id, rx) in waits {
            let c = match rx {
                Ok(rx) => match rx.await {
                    Ok(group::Reply::Code(c) | group::Reply::Offsets(c)) => c,
                    _ => code::COORDINATOR_NOT_AVAILABLE,
                },
                Err(c) => c,
            };
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(id)
                    .with_error_code(c),
            );
        }
        encode(&req, &DeleteGroupsResponse::default().with_results(results))
    }))
}

fn cg_assignment(
    partitions: &group::consumer::Partitions,
) -> Vec<consumer_group_heartbeat_response::TopicPartitions> {
    partitions
        .iter()
        .map(|(id, ps)| {
            consumer_group_heartbeat_response::TopicPartitions::default()
                .with_topic_id(*id)
                .with_partitions(ps.iter().copied().collect())
        })
        .collect()
}

pub async fn consumer_group_heartbeat<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: ConsumerGroupHeartbeatRequest,
    connection: u64,
) -> Reply {
    let group_id = body.group_id.0.to_string();
    let subscribed: Option<Vec<String>> = body.subscribed_topic_names.as_ref().map(|ts| {
        ts.iter()
            .take(group::consumer::SUBSCRIBED_TOPICS_MAX)
            .map(|t| t.0.to_string())
            .collect()
    });
    // Metadata of every topic the group would subscribe to, looked up before the core runs.
    let mut names = broker
        .groups
        .read(|core| core.consumer_subscriptions(&group_id));
    names.extend(subscribed.iter().flatten().cloned());
    let mut topics = BTreeMap::new();
    for n in names.iter().filter(|n| n.as_str() != OFFSETS_TOPIC) {
        if let Some((id, partitions)) = broker.topic_shape(n).await {
            topics.insert(n.clone(), group::consumer::TopicInfo { id, partitions });
        }
    }
    let hb = group::consumer::Heartbeat {
        request: 0,
        group: group_id,
        member_id: text(&body.member_id),
        member_epoch: body.member_epoch,
        instance_id: opt(&body.instance_id),
        rack_id: opt(&body.rack_id),
        rebalance_timeout_ms: body.rebalance_timeout_ms,
        subscribed,
        assignor: opt(&body.server_assignor),
        owned: body.topic_partitions.as_ref().map(|tps| {
            tps.iter()
                .take(ENTRIES_PER_REQUEST_MAX)
                .map(|tp| (tp.topic_id, tp.partitions.clone()))
                .collect()
        }),
        client_id: req.client_id.clone().unwrap_or_default(),
        client_host: "/127.0.0.1".to_string(),
        topics,
        connection,
    };
    submit(
        broker,
        req,
        &body.group_id.0,
        |request| Event::ConsumerHeartbeat(group::consumer::Heartbeat { request, ..hb }),
        |reply| match reply {
            Some(group::Reply::ConsumerHeartbeat(r)) => {
                let assignment = r.assignment.as_ref().map(|a| {
                    consumer_group_heartbeat_response::Assignment::default()
                        .with_topic_partitions(cg_assignment(a))
                });
                ConsumerGroupHeartbeatResponse::default()
                    .with_error_code(r.error)
                    .with_member_id(Some(s(&r.member_id)))
                    .with_member_epoch(r.member_epoch)
                    .with_heartbeat_interval_ms(r.heartbeat_interval_ms)
                    .with_assignment(assignment)
            }
            other => ConsumerGroupHeartbeatResponse::default().with_error_code(refusal(&other)),
        },
    )
}

pub async fn consumer_group_describe<D: Disk, C: Clock>(
    broker: &Arc<Broker<D, C>>,
    req: &RequestFrame,
    body: ConsumerGroupDescribeRequest,
) -> Reply {
    use consumer_group_describe_response as cgd;
    let names = broker.topic_names_by_id().await;
    let described = |a: &group::consumer::Partitions| -> cgd::Assignment {
        cgd::Assignment::default().with_topic_partitions(
            a.iter()
                .map(|(id, ps)| {
                    cgd::TopicPartitions::default()
                        .with_topic_id(*id)
                        .with_topic_name(topic_name(names.get(id).map_or("", |n| n.as_str())))
                        .with_partitions(ps.iter().copied().collect())
                })
                .collect(),
        )
    };
    let groups = body
        .group_ids
        .iter()
        .take(ENTRIES_PER_REQUEST_MAX)
        .map(|id| {
            let gate = broker.serve_group(&id.0);
            broker.groups.read(|core| {
                let base = cgd::DescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_authorized_operations(i32::MIN);
                if let Err(c) = gate {
                    return base.with_error_code(c);
                }
                let Some(g) = core.consumer_group(&id.0) else {
                    return base
                        .with_error_code(code::GROUP_ID_NOT_FOUND)
                        .with_group_state(s("Dead"));
                };
                let members = g
                    .members
                    .values()
                    .map(|m| {
                        let target = g.target.get(&m.member_id).cloned().unwrap_or_default();
                        cgd::Member::default()
                            .with_member_id(s(&m.member_id))
                            .with_instance_id(sopt(&m.instance_id))
                            .with_rack_id(sopt(&m.rack_id))
                            .with_member_epoch(m.member_epoch)
                            .with_client_id(s(&m.client_id))
                            .with_client_host(s(&m.client_host))
                            .with_subscribed_topic_names(
                                m.subscribed.iter().map(|t| topic_name(t)).collect(),
                            )
                            .with_assignment(described(&m.assigned))
                            .with_target_assignment(described(&target))
                            .with_member_type(1)
                    })
                    .collect();
                base.with_error_code(code::NONE)
                    .with_group_state(s(g.state()))
                    .with_group_epoch(g.epoch)
                    .with_assignment_epoch(g.assignment_epoch)
                    .with_assignor_name(s(&g.assignor))
                    .with_members(members)
            })
        })
        .collect();
    respond(
        req,
        &ConsumerGroupDescribeResponse::default().with_groups(groups),
    )
}

/// Offset, leader epoch and metadata of one OffsetFetch partition; -1/-1/"" when nothing is
/// committed. `epoch` hides the leader epoch from versions that do not carry it.
fn committed(o: Option<&OffsetValue>, epoch: impl Fn(&OffsetValue) -> i32) -> (i64, i32, StrBytes) {
    match o {
        Some(o) => (o.offset, epoch(o), s(&o.metadata)),
        None => (-1, -1, s("")),
    }
}
