//! Consumer groups end to end in one process: `run_node` on `RealDisk` in a temp dir and real
//! sockets on 127.0.0.1:0, driven with raw Kafka frames (kafka-protocol). Two members join
//! (MEMBER_ID_REQUIRED two-step), split partitions through SyncGroup, heartbeat and commit;
//! stale commits are refused; the node restarts on the same directory and the committed
//! offsets (with metadata and leader epoch) come back from `__consumer_offsets`.
//! Never leaves a node running. Real files and sockets only: not built under `--cfg madsim`.
#![cfg(not(madsim))]

mod common;
use common::{start_with, test_config, Client, Running};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use samsa_broker::NodeConfig;
use samsa_net::records::{build_batch, BatchOptions, Record};

async fn start(dir: &std::path::Path) -> Running {
    let cfg = NodeConfig {
        group_initial_rebalance_delay_ms: 50,
        ..test_config(dir)
    };
    start_with(dir, cfg).await
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn name(v: &str) -> TopicName {
    TopicName(s(v))
}

const GROUP: &str = "g1";
const TOPIC: &str = "orders";

/// A consumer-protocol assignment of `partitions` of `TOPIC`.
fn assignment(partitions: &[i32]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(1);
    b.put_i16(TOPIC.len() as i16);
    b.put_slice(TOPIC.as_bytes());
    b.put_i32(partitions.len() as i32);
    for p in partitions {
        b.put_i32(*p);
    }
    b.put_i32(-1);
    b.freeze()
}

fn join_request(member_id: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member_id))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
        )
        .with_name(s("range"))
        .with_metadata(Bytes::from_static(b"subscription"))])
}

async fn join(c: &mut Client, member_id: &str) -> JoinGroupResponse {
    c.call(ApiKey::JoinGroup, 5, &join_request(member_id)).await
}

async fn sync(
    c: &mut Client,
    generation: i32,
    member_id: &str,
    assignments: Vec<(String, Bytes)>,
) -> SyncGroupResponse {
    let req = SyncGroupRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_generation_id(generation)
        .with_member_id(s(member_id))
        .with_assignments(
            assignments
                .into_iter()
                .map(|(m, a)| {
                    sync_group_request::SyncGroupRequestAssignment::default()
                        .with_member_id(s(&m))
                        .with_assignment(a)
                })
                .collect(),
        );
    c.call(ApiKey::SyncGroup, 3, &req).await
}

async fn commit(
    c: &mut Client,
    generation: i32,
    member_id: &str,
    partitions: &[(i32, i64)],
) -> Vec<i16> {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member_id))
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(name(TOPIC))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|(p, o)| {
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(*p)
                                .with_committed_offset(*o)
                                .with_committed_leader_epoch(0)
                                .with_committed_metadata(Some(s(&format!("meta-{p}"))))
                        })
                        .collect(),
                ),
        ]);
    let resp: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 8, &req).await;
    resp.topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect()
}

/// (offset, leader epoch, metadata) per partition 0..4, by OffsetFetch v5 and v8 (batched).
async fn fetch_offsets(c: &mut Client) -> Vec<(i64, i32, String)> {
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_topics(Some(vec![
            offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(name(TOPIC))
                .with_partition_indexes(vec![0, 1, 2, 3]),
        ]));
    let resp: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 5, &req).await;
    assert_eq!(resp.error_code, 0);
    let v5: Vec<(i64, i32, String)> = resp.topics[0]
        .partitions
        .iter()
        .map(|p| {
            let meta = p
                .metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            (p.committed_offset, p.committed_leader_epoch, meta)
        })
        .collect();
    let req = OffsetFetchRequest::default().with_groups(vec![
        offset_fetch_request::OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(s(GROUP)))
            .with_topics(None),
    ]);
    let resp: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 8, &req).await;
    assert_eq!(resp.groups.len(), 1);
    let all: usize = resp.groups[0]
        .topics
        .iter()
        .map(|t| t.partitions.len())
        .sum();
    let committed = v5.iter().filter(|(o, _, _)| *o >= 0).count();
    assert_eq!(
        all, committed,
        "v8 with no topics lists every committed partition"
    );
    v5
}

async fn describe(c: &mut Client) -> describe_groups_response::DescribedGroup {
    let req = DescribeGroupsRequest::default().with_groups(vec![GroupId(s(GROUP))]);
    let resp: DescribeGroupsResponse = c.call(ApiKey::DescribeGroups, 5, &req).await;
    resp.groups.into_iter().next().expect("one group")
}

async fn delete_group(c: &mut Client) -> i16 {
    let req = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(GROUP))]);
    let resp: DeleteGroupsResponse = c.call(ApiKey::DeleteGroups, 2, &req).await;
    resp.results[0].error_code
}

#[tokio::test]
async fn two_members_split_commit_and_offsets_survive_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let mut admin = Client::connect(node.addr).await;
    let req = CreateTopicsRequest::default()
        .with_topics(vec![create_topics_request::CreatableTopic::default()
            .with_name(name(TOPIC))
            .with_num_partitions(4)
            .with_replication_factor(1)])
        .with_timeout_ms(5000);
    let resp: CreateTopicsResponse = admin.call(ApiKey::CreateTopics, 5, &req).await;
    assert_eq!(resp.topics[0].error_code, 0);

    // FindCoordinator: single key (v3) and batched keys (v4); transactions are not served.
    let found: FindCoordinatorResponse = admin
        .call(
            ApiKey::FindCoordinator,
            3,
            &FindCoordinatorRequest::default().with_key(s(GROUP)),
        )
        .await;
    assert_eq!(found.error_code, 0);
    assert_eq!(found.port, i32::from(node.addr.port()));
    let req = FindCoordinatorRequest::default()
        .with_key_type(0)
        .with_coordinator_keys(vec![s("a"), s("b")]);
    let found: FindCoordinatorResponse = admin.call(ApiKey::FindCoordinator, 4, &req).await;
    assert_eq!(found.coordinators.len(), 2);
    assert!(found.coordinators.iter().all(|c| c.error_code == 0));
    let req = FindCoordinatorRequest::default()
        .with_key_type(1)
        .with_coordinator_keys(vec![s("txn")]);
    let found: FindCoordinatorResponse = admin.call(ApiKey::FindCoordinator, 4, &req).await;
    assert_eq!(
        found.coordinators[0].error_code, 15,
        "COORDINATOR_NOT_AVAILABLE"
    );

    // Two-step join: MEMBER_ID_REQUIRED hands out the ids.
    let mut a = Client::connect(node.addr).await;
    let mut b = Client::connect(node.addr).await;
    let ra = join(&mut a, "").await;
    let rb = join(&mut b, "").await;
    assert_eq!((ra.error_code, rb.error_code), (79, 79));
    let (ida, idb) = (ra.member_id.to_string(), rb.member_id.to_string());
    assert_ne!(ida, idb);
    let (ja, jb) = tokio::join!(join(&mut a, &ida), join(&mut b, &idb));
    assert_eq!((ja.error_code, jb.error_code), (0, 0));
    assert_eq!((ja.generation_id, jb.generation_id), (1, 1));
    assert_eq!(ja.leader, jb.leader);
    let a_leads = ja.leader.as_str() == ida;
    let (leader_members, follower_members) = if a_leads {
        (ja.members.len(), jb.members.len())
    } else {
        (jb.members.len(), ja.members.len())
    };
    assert_eq!((leader_members, follower_members), (2, 0));
    let plan = vec![
        (ida.clone(), assignment(&[0, 1])),
        (idb.clone(), assignment(&[2, 3])),
    ];
    let (sa, sb) = if a_leads {
        tokio::join!(sync(&mut a, 1, &ida, plan), sync(&mut b, 1, &idb, vec![]))
    } else {
        tokio::join!(sync(&mut a, 1, &ida, vec![]), sync(&mut b, 1, &idb, plan))
    };
    assert_eq!((sa.error_code, sb.error_code), (0, 0));
    assert_eq!(sa.assignment, assignment(&[0, 1]));
    assert_eq!(sb.assignment, assignment(&[2, 3]));
    for (c, id) in [(&mut a, &ida), (&mut b, &idb)] {
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(s(GROUP)))
            .with_generation_id(1)
            .with_member_id(s(id));
        let hb: HeartbeatResponse = c.call(ApiKey::Heartbeat, 3, &req).await;
        assert_eq!(hb.error_code, 0);
    }

    // Commits: each member its own partitions; stale generation and strangers are refused.
    assert_eq!(commit(&mut a, 1, &ida, &[(0, 10), (1, 11)]).await, [0, 0]);
    assert_eq!(commit(&mut b, 1, &idb, &[(2, 12), (3, 13)]).await, [0, 0]);
    assert_eq!(
        commit(&mut b, 0, &idb, &[(2, 99)]).await,
        [22],
        "ILLEGAL_GENERATION"
    );
    assert_eq!(
        commit(&mut b, 1, "who", &[(2, 99)]).await,
        [25],
        "UNKNOWN_MEMBER_ID"
    );
    let expected: Vec<(i64, i32, String)> = (0..4)
        .map(|p| (10 + i64::from(p), 0, format!("meta-{p}")))
        .collect();
    assert_eq!(fetch_offsets(&mut admin).await, expected);
    let described = describe(&mut admin).await;
    assert_eq!(described.group_state.as_str(), "Stable");
    assert_eq!(described.members.len(), 2);
    let listed: ListGroupsResponse = admin
        .call(ApiKey::ListGroups, 4, &ListGroupsRequest::default())
        .await;
    assert!(listed.groups.iter().any(|g| g.group_id.as_str() == GROUP));
    assert_eq!(delete_group(&mut admin).await, 68, "NON_EMPTY_GROUP");

    // Both leave in one batched LeaveGroup (v3+): the group is empty.
    let req = LeaveGroupRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_members(vec![
            leave_group_request::MemberIdentity::default().with_member_id(s(&ida)),
            leave_group_request::MemberIdentity::default().with_member_id(s(&idb)),
        ]);
    let left: LeaveGroupResponse = a.call(ApiKey::LeaveGroup, 4, &req).await;
    assert_eq!(left.error_code, 0);
    assert!(left.members.iter().all(|m| m.error_code == 0));
    assert_eq!(describe(&mut admin).await.group_state.as_str(), "Empty");
    node.stop().await;

    // Restart on the same directory: the offsets come back from __consumer_offsets.
    let node = start(dir.path()).await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(fetch_offsets(&mut c).await, expected);
    let md: MetadataResponse = c
        .call(
            ApiKey::Metadata,
            9,
            &MetadataRequest::default().with_topics(None),
        )
        .await;
    let internal = md
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.as_str()) == Some("__consumer_offsets"))
        .expect("offsets topic listed");
    assert!(internal.is_internal);
    // Clients may not write the internal topic.
    let batch = build_batch(
        &[Record {
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![],
            timestamp_ms: 0,
        }],
        &BatchOptions::default(),
    );
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(name("__consumer_offsets"))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch.freeze())),
            ])]);
    let resp: ProduceResponse = c.call(ApiKey::Produce, 8, &req).await;
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 17);
    // A simple (generation -1) commit on the empty group, then DeleteGroups, then a restart.
    assert_eq!(commit(&mut c, -1, "", &[(0, 20)]).await, [0]);
    assert_eq!(
        fetch_offsets(&mut c).await[0],
        (20, 0, "meta-0".to_string())
    );
    assert_eq!(delete_group(&mut c).await, 0);
    node.stop().await;
    let node = start(dir.path()).await;
    let mut c = Client::connect(node.addr).await;
    let gone = fetch_offsets(&mut c).await;
    assert!(gone.iter().all(|(o, _, _)| *o == -1), "{gone:?}");
    node.stop().await;
}

#[tokio::test]
async fn kip848_heartbeat_assigns_every_partition_and_describe_shows_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let mut c = Client::connect(node.addr).await;
    let req = CreateTopicsRequest::default()
        .with_topics(vec![create_topics_request::CreatableTopic::default()
            .with_name(name(TOPIC))
            .with_num_partitions(3)
            .with_replication_factor(1)])
        .with_timeout_ms(5000);
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req).await;
    let topic_id = resp.topics[0].topic_id;
    let req = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s("cg")))
        .with_member_id(s("m-1"))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(vec![name(TOPIC)]))
        .with_server_assignor(Some(s("range")))
        .with_topic_partitions(Some(vec![]));
    let r: ConsumerGroupHeartbeatResponse = c.call(ApiKey::ConsumerGroupHeartbeat, 1, &req).await;
    assert_eq!(r.error_code, 0);
    assert!(r.member_epoch > 0);
    let a = r.assignment.expect("an assignment");
    assert_eq!(a.topic_partitions[0].topic_id, topic_id);
    assert_eq!(a.topic_partitions[0].partitions, [0, 1, 2]);
    // A commit with the member epoch is accepted; an older epoch is stale.
    let commit = |epoch: i32| {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(s("cg")))
            .with_generation_id_or_member_epoch(epoch)
            .with_member_id(s("m-1"))
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(name(TOPIC))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(5),
                    ]),
            ])
    };
    let ok: OffsetCommitResponse = c
        .call(ApiKey::OffsetCommit, 9, &commit(r.member_epoch))
        .await;
    assert_eq!(ok.topics[0].partitions[0].error_code, 0);
    let stale: OffsetCommitResponse = c
        .call(ApiKey::OffsetCommit, 9, &commit(r.member_epoch - 1))
        .await;
    assert_eq!(
        stale.topics[0].partitions[0].error_code, 113,
        "STALE_MEMBER_EPOCH"
    );
    let req = ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(s("cg"))]);
    let d: ConsumerGroupDescribeResponse = c.call(ApiKey::ConsumerGroupDescribe, 0, &req).await;
    let g = &d.groups[0];
    assert_eq!((g.error_code, g.group_state.as_str()), (0, "Stable"));
    assert_eq!(g.assignor_name.as_str(), "range");
    assert_eq!(
        g.members[0].assignment.topic_partitions[0]
            .topic_name
            .as_str(),
        TOPIC
    );
    // A restart keeps the group: the member carries on with its epoch and gets its whole
    // assignment again; the group epoch has not moved.
    let epoch = r.member_epoch;
    node.stop().await;
    let node = start(dir.path()).await;
    let mut c = Client::connect(node.addr).await;
    let again = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s("cg")))
        .with_member_id(s("m-1"))
        .with_member_epoch(epoch)
        .with_rebalance_timeout_ms(-1)
        .with_topic_partitions(Some(vec![
            consumer_group_heartbeat_request::TopicPartitions::default()
                .with_topic_id(topic_id)
                .with_partitions(vec![0, 1, 2]),
        ]));
    let r: ConsumerGroupHeartbeatResponse = c.call(ApiKey::ConsumerGroupHeartbeat, 1, &again).await;
    assert_eq!(
        (r.error_code, r.member_epoch),
        (0, epoch),
        "same epoch after restart"
    );
    let a = r
        .assignment
        .expect("the assignment is sent again after a restart");
    assert_eq!(a.topic_partitions[0].partitions, [0, 1, 2]);
    let d: ConsumerGroupDescribeResponse = c.call(ApiKey::ConsumerGroupDescribe, 0, &req).await;
    assert_eq!(d.groups[0].group_epoch, epoch);
    assert_eq!(d.groups[0].group_state.as_str(), "Stable");
    // Offsets of a KIP-848 group: one not subscribed to a topic may be deleted, the
    // subscribed one is refused with GROUP_SUBSCRIBED_TO_TOPIC.
    let del = OffsetDeleteRequest::default()
        .with_group_id(GroupId(s("cg")))
        .with_topics(vec![
            offset_delete_request::OffsetDeleteRequestTopic::default()
                .with_name(name(TOPIC))
                .with_partitions(vec![
                    offset_delete_request::OffsetDeleteRequestPartition::default()
                        .with_partition_index(0),
                ]),
        ]);
    let r: OffsetDeleteResponse = c.call(ApiKey::OffsetDelete, 0, &del).await;
    assert_eq!(r.error_code, 0);
    assert_eq!(
        r.topics[0].partitions[0].error_code, 86,
        "GROUP_SUBSCRIBED_TO_TOPIC"
    );
    // Leaving (epoch -1) empties the group.
    let leave = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s("cg")))
        .with_member_id(s("m-1"))
        .with_member_epoch(-1);
    let r: ConsumerGroupHeartbeatResponse = c.call(ApiKey::ConsumerGroupHeartbeat, 1, &leave).await;
    assert_eq!((r.error_code, r.member_epoch), (0, -1));
    let d: ConsumerGroupDescribeResponse = c.call(ApiKey::ConsumerGroupDescribe, 0, &req).await;
    assert_eq!(d.groups[0].group_state.as_str(), "Empty");
    node.stop().await;
}
