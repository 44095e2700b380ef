//! Cluster mode in-process (issue 4, phase A): three `run_node`s on `RealDisk` temp dirs and
//! real sockets on 127.0.0.1 elect a metadata quorum leader, answer DescribeQuorum with three
//! voters, list every registered broker in Metadata and DescribeCluster on every node, and a
//! restarted node keeps its directory id (even when restarted with another seed) while a wiped
//! one gets a new one. Topics go through the controller (phase B): CreateTopics at the active
//! controller (NOT_CONTROLLER elsewhere), every node's Metadata shows the image's leaders, the
//! leader of a partition takes Produce/Fetch/ListOffsets and the others answer
//! NOT_LEADER_OR_FOLLOWER, a restarted node reopens its replicas with their data.
//! Never leaves a node running: every node is stopped and awaited. Not built under madsim.
#![cfg(not(madsim))]

mod common;
use common::{start_with, test_config, Client, Running};

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use samsa_net::records::{build_batch, BatchOptions, Record};

/// How long the cluster may take to elect a leader and register every broker.
const SETTLE_MS: u64 = 30_000;

/// Free controller ports: bound to 127.0.0.1:0 and released (the node binds them again).
fn free_ports(n: usize) -> Vec<SocketAddr> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    held.iter().map(|l| l.local_addr().expect("addr")).collect()
}

fn voters(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}@{a}", i + 1))
        .collect::<Vec<_>>()
        .join(",")
}

async fn start_node(dir: &std::path::Path, id: i32, voters: &str, seed: u64) -> Running {
    let mut cfg = test_config(dir);
    cfg.node_id = id;
    cfg.seed = seed;
    cfg.voters = Some(voters.to_string());
    cfg.broker_heartbeat_interval_ms = 200;
    start_with(dir, cfg).await
}

async fn describe_quorum_v(addr: SocketAddr, version: i16) -> DescribeQuorumResponse {
    let mut c = Client::connect(addr).await;
    c.call(
        ApiKey::DescribeQuorum,
        version,
        &DescribeQuorumRequest::default(),
    )
    .await
}

async fn describe_quorum(addr: SocketAddr) -> DescribeQuorumResponse {
    describe_quorum_v(addr, 2).await
}

async fn metadata_brokers(addr: SocketAddr) -> (Vec<i32>, i32) {
    let mut c = Client::connect(addr).await;
    let resp: MetadataResponse = c
        .call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(Some(Vec::new())),
        )
        .await;
    let ids = resp.brokers.iter().map(|b| b.node_id.0).collect();
    (ids, resp.controller_id.0)
}

async fn cluster_brokers(addr: SocketAddr) -> (String, Vec<(i32, i32)>) {
    let mut c = Client::connect(addr).await;
    let resp: DescribeClusterResponse = c
        .call(
            ApiKey::DescribeCluster,
            1,
            &DescribeClusterRequest::default(),
        )
        .await;
    assert_eq!(resp.error_code, 0);
    let brokers = resp
        .brokers
        .iter()
        .map(|b| (b.broker_id.0, b.port))
        .collect();
    (resp.cluster_id.to_string(), brokers)
}

/// Polls until every node lists all three brokers; answers the leader's id.
async fn settle(nodes: &[&Running]) -> i32 {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(SETTLE_MS);
    loop {
        let mut all = true;
        let mut leaders = Vec::new();
        for n in nodes {
            let (ids, controller) = metadata_brokers(n.addr).await;
            all &= ids == vec![1, 2, 3];
            leaders.push(controller);
        }
        if all && leaders.iter().all(|l| *l == leaders[0] && *l > 0) {
            return leaders[0];
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cluster did not settle: leaders {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn directory_of(resp: &DescribeQuorumResponse, id: i32) -> uuid::Uuid {
    let p = &resp.topics[0].partitions[0];
    p.current_voters
        .iter()
        .find(|v| v.replica_id.0 == id)
        .map(|v| v.replica_directory_id)
        .expect("voter listed")
}

/// The leader's view once it has heard from every voter (directory ids known).
async fn leader_view(addr: SocketAddr) -> DescribeQuorumResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(SETTLE_MS);
    loop {
        let resp = describe_quorum(addr).await;
        let known = resp.error_code == 0
            && resp.topics.len() == 1
            && resp.topics[0].partitions[0]
                .current_voters
                .iter()
                .all(|v| !v.replica_directory_id.is_nil() && v.log_end_offset >= 0);
        if known {
            return resp;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "leader view: {resp:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn three_nodes_elect_register_and_keep_directory_ids() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let voters = voters(&free_ports(3));
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        nodes.push(Some(
            start_node(dir.path(), i as i32 + 1, &voters, 100 + i as u64).await,
        ));
    }
    let running: Vec<&Running> = nodes.iter().flatten().collect();
    let leader = settle(&running).await;
    assert!((1..=3).contains(&leader));

    // DescribeQuorum: every node names the same leader and three voters.
    for n in &running {
        let resp = describe_quorum(n.addr).await;
        assert_eq!(resp.error_code, 0);
        assert_eq!(resp.topics.len(), 1);
        assert_eq!(resp.topics[0].topic_name.0.as_str(), "__cluster_metadata");
        let p = &resp.topics[0].partitions[0];
        assert_eq!(p.leader_id.0, leader);
        assert!(p.leader_epoch >= 1);
        assert_eq!(resp.nodes.len(), 3);
    }
    let leader_addr = running[leader as usize - 1].addr;
    let view = leader_view(leader_addr).await;
    let p = &view.topics[0].partitions[0];
    let mut ids: Vec<i32> = p.current_voters.iter().map(|v| v.replica_id.0).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2, 3]);
    assert!(p.high_watermark > 0, "registrations are committed");
    // Older versions answer too (without the v2-only directory ids and nodes).
    for version in 0..=1 {
        let old = describe_quorum_v(leader_addr, version).await;
        assert_eq!(old.error_code, 0, "v{version}");
        let p = &old.topics[0].partitions[0];
        assert_eq!(
            (p.leader_id.0, p.current_voters.len()),
            (leader, 3),
            "v{version}"
        );
        assert!(p
            .current_voters
            .iter()
            .all(|v| v.replica_directory_id.is_nil()));
        assert!(old.nodes.is_empty());
    }

    // DescribeCluster lists each broker with its own client port, and one cluster id, on
    // every node.
    let mut cluster_ids = Vec::new();
    for n in &running {
        let (cluster_id, brokers) = cluster_brokers(n.addr).await;
        cluster_ids.push(cluster_id);
        let want: Vec<(i32, i32)> = running
            .iter()
            .enumerate()
            .map(|(i, r)| (i as i32 + 1, i32::from(r.addr.port())))
            .collect();
        assert_eq!(brokers, want);
    }
    assert_eq!(cluster_ids[0].len(), 22);
    assert!(
        cluster_ids.iter().all(|c| *c == cluster_ids[0]),
        "{cluster_ids:?}"
    );

    // Restart a follower with another seed: its directory id comes from its disk.
    let follower = if leader == 1 { 2 } else { 1 };
    let before = directory_of(&view, follower);
    let idx = follower as usize - 1;
    nodes[idx].take().expect("running").stop().await;
    nodes[idx] = Some(start_node(dirs[idx].path(), follower, &voters, 999).await);
    let running: Vec<&Running> = nodes.iter().flatten().collect();
    let leader_now = settle(&running).await;
    let addr = running[leader_now as usize - 1].addr;
    let after = directory_of(&leader_view(addr).await, follower);
    assert_eq!(before, after, "directory id survives a restart");

    // The same node on a wiped disk gets a new directory id (so the check above can fail).
    nodes[idx].take().expect("running").stop().await;
    let wiped = tempfile::tempdir().expect("dir");
    nodes[idx] = Some(start_node(wiped.path(), follower, &voters, 999).await);
    let running: Vec<&Running> = nodes.iter().flatten().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(SETTLE_MS);
    loop {
        let leader_now = settle(&running).await;
        let addr = running[leader_now as usize - 1].addr;
        let now = directory_of(&leader_view(addr).await, follower);
        if now != before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "wiped node kept its old id"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    for n in nodes.into_iter().flatten() {
        n.stop().await;
    }
}

#[tokio::test]
async fn single_node_has_no_quorum_and_lists_itself() {
    let dir = tempfile::tempdir().expect("dir");
    let node = start_with(dir.path(), test_config(dir.path())).await;
    for version in 0..=2 {
        let resp = describe_quorum_v(node.addr, version).await;
        assert_eq!(resp.error_code, 42, "INVALID_REQUEST at v{version}");
        assert!(resp.topics.is_empty());
    }
    assert_eq!(metadata_brokers(node.addr).await, (vec![1], 1));
    let (_, brokers) = cluster_brokers(node.addr).await;
    assert_eq!(brokers, vec![(1, i32::from(node.addr.port()))]);
    node.stop().await;
}

const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const NOT_CONTROLLER: i16 = 41;

fn tname(t: &str) -> TopicName {
    TopicName(StrBytes::from_string(t.to_string()))
}

async fn create_topic(addr: SocketAddr, topic: &str, partitions: i32, rf: i16) -> i16 {
    let mut c = Client::connect(addr).await;
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![create_topics_request::CreatableTopic::default()
            .with_name(tname(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(rf)]);
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 5, &req).await;
    assert_eq!(resp.topics.len(), 1);
    let t = &resp.topics[0];
    if t.error_code == 0 {
        assert_eq!((t.num_partitions, t.replication_factor), (partitions, rf));
    }
    t.error_code
}

/// `(partition, leader, leader_epoch, replicas, isr)` of one topic as `addr` sees it.
type PartitionView = (i32, i32, i32, Vec<i32>, Vec<i32>);

async fn topic_view(addr: SocketAddr, topic: &str) -> (i16, Vec<PartitionView>) {
    let mut c = Client::connect(addr).await;
    let req = MetadataRequest::default()
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
        )
        .with_name(Some(tname(topic)))]))
        .with_allow_auto_topic_creation(false);
    let resp: MetadataResponse = c.call(ApiKey::Metadata, 12, &req).await;
    let t = &resp.topics[0];
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<_>>();
    let parts = t
        .partitions
        .iter()
        .map(|p| {
            (
                p.partition_index,
                p.leader_id.0,
                p.leader_epoch,
                ids(&p.replica_nodes),
                ids(&p.isr_nodes),
            )
        })
        .collect();
    (t.error_code, parts)
}

async fn produce_one(addr: SocketAddr, topic: &str, partition: i32, key: &str) -> (i16, i64) {
    let record = Record {
        key: Some(Bytes::from(key.to_string())),
        value: Some(Bytes::from(format!("value-{key}"))),
        headers: Vec::new(),
        timestamp_ms: 1_000,
    };
    let records = build_batch(&[record], &BatchOptions::default()).freeze();
    let mut c = Client::connect(addr).await;
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(tname(topic))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(records)),
            ])]);
    let resp: ProduceResponse = c.call(ApiKey::Produce, 9, &req).await;
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// `(error, high watermark, record bytes)` of a fetch from offset 0.
async fn fetch_all(addr: SocketAddr, topic: &str, partition: i32) -> (i16, i64, usize) {
    let mut c = Client::connect(addr).await;
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(tname(topic))
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let resp: FetchResponse = c.call(ApiKey::Fetch, 12, &req).await;
    let p = &resp.responses[0].partitions[0];
    let bytes = p.records.as_ref().map_or(0, |r| r.len());
    (p.error_code, p.high_watermark, bytes)
}

async fn latest_offset(addr: SocketAddr, topic: &str, partition: i32) -> (i16, i64) {
    let mut c = Client::connect(addr).await;
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
            .with_name(tname(topic))
            .with_partitions(vec![
                list_offsets_request::ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(-1),
            ])]);
    let resp: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 5, &req).await;
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.offset)
}

/// Polls until every node shows `topic` with `partitions` partitions, all with a leader, and
/// the same view everywhere; answers that view.
async fn settled_view(nodes: &[&Running], topic: &str, partitions: usize) -> Vec<PartitionView> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(SETTLE_MS);
    loop {
        let mut views = Vec::new();
        for n in nodes {
            views.push(topic_view(n.addr, topic).await);
        }
        let (error, first) = &views[0];
        let done = *error == 0
            && first.len() == partitions
            && first.iter().all(|p| p.1 > 0)
            && views.iter().all(|v| v == &views[0]);
        if done {
            return first.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metadata did not converge: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn topics_go_through_the_controller_and_partitions_lead_where_the_image_says() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let voters = voters(&free_ports(3));
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        nodes.push(Some(
            start_node(dir.path(), i as i32 + 1, &voters, 300 + i as u64).await,
        ));
    }
    let running: Vec<&Running> = nodes.iter().flatten().collect();
    let controller = settle(&running).await;
    let addr_of = |running: &[&Running], id: i32| running[id as usize - 1].addr;

    // A node that is not the controller refuses; the controller creates.
    let other = if controller == 1 { 2 } else { 1 };
    assert_eq!(
        create_topic(addr_of(&running, other), "orders", 6, 1).await,
        NOT_CONTROLLER
    );
    assert_eq!(
        create_topic(addr_of(&running, controller), "orders", 6, 1).await,
        0
    );
    assert_eq!(
        create_topic(addr_of(&running, controller), "orders", 6, 1).await,
        36,
        "TOPIC_ALREADY_EXISTS"
    );
    assert_eq!(
        create_topic(addr_of(&running, controller), "too-wide", 1, 4).await,
        38,
        "INVALID_REPLICATION_FACTOR above the broker count"
    );

    // Every node shows the same leaders, spread over all three brokers, RF 1.
    let view = settled_view(&running, "orders", 6).await;
    let mut leaders: Vec<i32> = view.iter().map(|p| p.1).collect();
    leaders.sort_unstable();
    leaders.dedup();
    assert_eq!(leaders, vec![1, 2, 3], "{view:?}");
    for (index, leader, epoch, replicas, isr) in &view {
        assert_eq!(
            (replicas.clone(), isr.clone()),
            (vec![*leader], vec![*leader])
        );
        assert!(*epoch >= 0, "partition {index}");
    }

    // Produce at each partition's leader works; at the others NOT_LEADER_OR_FOLLOWER.
    for (index, leader, ..) in &view {
        for id in 1..=3 {
            let addr = addr_of(&running, id);
            let (error, base) = produce_one(addr, "orders", *index, &format!("k{index}")).await;
            if id == *leader {
                assert_eq!((error, base), (0, 0), "partition {index} at its leader");
                assert_eq!(latest_offset(addr, "orders", *index).await, (0, 1));
                let (error, hw, bytes) = fetch_all(addr, "orders", *index).await;
                assert_eq!((error, hw), (0, 1));
                assert!(bytes > 0);
            } else {
                assert_eq!(
                    error, NOT_LEADER_OR_FOLLOWER,
                    "partition {index} at node {id}"
                );
                assert_eq!(
                    fetch_all(addr, "orders", *index).await.0,
                    NOT_LEADER_OR_FOLLOWER
                );
                assert_eq!(
                    latest_offset(addr, "orders", *index).await.0,
                    NOT_LEADER_OR_FOLLOWER
                );
            }
        }
    }

    // Restart a node that is not the controller: it keeps its partitions and their data.
    let restarted = if controller == 3 { 2 } else { 3 };
    let idx = restarted as usize - 1;
    nodes[idx].take().expect("running").stop().await;
    nodes[idx] = Some(start_node(dirs[idx].path(), restarted, &voters, 777).await);
    let running: Vec<&Running> = nodes.iter().flatten().collect();
    settle(&running).await;
    assert_eq!(settled_view(&running, "orders", 6).await, view);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(SETTLE_MS);
    for (index, leader, ..) in view.iter().filter(|p| p.1 == restarted) {
        let addr = addr_of(&running, *leader);
        loop {
            // The replica reopens once the restarted node has replayed the image.
            let got = fetch_all(addr, "orders", *index).await;
            if got.0 == 0 {
                assert_eq!(got.1, 1, "partition {index} kept its record");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{got:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (error, base) = produce_one(addr, "orders", *index, "again").await;
        assert_eq!(
            (error, base),
            (0, 1),
            "partition {index} appends after its record"
        );
    }

    // DeleteTopics through the controller: the topic disappears from every node.
    let mut c = Client::connect(addr_of(&running, controller)).await;
    let resp: DeleteTopicsResponse = c
        .call(
            ApiKey::DeleteTopics,
            4,
            &DeleteTopicsRequest::default()
                .with_topic_names(vec![tname("orders")])
                .with_timeout_ms(10_000),
        )
        .await;
    assert_eq!(resp.responses[0].error_code, 0);
    for n in &running {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(SETTLE_MS);
        while topic_view(n.addr, "orders").await.0 != 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "orders still listed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    for n in nodes.into_iter().flatten() {
        n.stop().await;
    }
}
