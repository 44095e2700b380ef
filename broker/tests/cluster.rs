//! Cluster mode in-process (issue 4, phase A): three `run_node`s on `RealDisk` temp dirs and
//! real sockets on 127.0.0.1 elect a metadata quorum leader, answer DescribeQuorum with three
//! voters, list every registered broker in Metadata and DescribeCluster on every node, and a
//! restarted node keeps its directory id (even when restarted with another seed) while a wiped
//! one gets a new one. Topics go through the controller (phase B): CreateTopics at the active
//! controller (NOT_CONTROLLER elsewhere), every node's Metadata shows the image's leaders, the
//! leader of a partition takes Produce/Fetch/ListOffsets and the others answer
//! NOT_LEADER_OR_FOLLOWER, a restarted node reopens its replicas with their data. Replication
//! (phase B): five nodes, RF=3, min ISR 2: acks=all, ISR shrink and NOT_ENOUGH_REPLICAS,
//! catch-up and rejoin, failover to a new leader through samsa-net's client, identical logs.
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
    settle_ids(nodes, &[1, 2, 3]).await
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

// ---- Partition replication (phase B, steps 3–4) ----

const NOT_ENOUGH_REPLICAS: i16 = 19;
const ELECTION_NOT_NEEDED: i16 = 84;
/// A broker that stops heartbeating is fenced (and leaves every ISR) after this long.
const SESSION_TIMEOUT_MS: u64 = 3_000;
/// How long a replication step (catch-up, ISR change, failover) may take.
const REPLICATION_SETTLE_MS: u64 = 60_000;

async fn start_replicating_node(
    dir: &std::path::Path,
    id: i32,
    voters: &str,
    listen: Option<SocketAddr>,
) -> Running {
    let mut cfg = test_config(dir);
    cfg.node_id = id;
    cfg.seed = 500 + id as u64;
    cfg.voters = Some(voters.to_string());
    cfg.broker_heartbeat_interval_ms = 200;
    cfg.broker_session_timeout_ms = SESSION_TIMEOUT_MS;
    if let Some(addr) = listen {
        // A restarted node keeps its client port: the image still names it.
        cfg.listen = addr.to_string();
    }
    start_with(dir, cfg).await
}

/// Polls until every running node lists brokers `ids` and one controller; answers it.
async fn settle_ids(nodes: &[&Running], ids: &[i32]) -> i32 {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(SETTLE_MS);
    loop {
        let mut all = true;
        let mut leaders = Vec::new();
        for n in nodes {
            let (got, controller) = metadata_brokers(n.addr).await;
            all &= got == ids;
            leaders.push(controller);
        }
        if all && leaders.iter().all(|l| *l == leaders[0] && *l > 0) {
            return leaders[0];
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cluster did not settle: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create_topic_with(
    addr: SocketAddr,
    topic: &str,
    partitions: i32,
    rf: i16,
    min_isr: &str,
) -> i16 {
    let mut c = Client::connect(addr).await;
    let config = create_topics_request::CreatableTopicConfig::default()
        .with_name(StrBytes::from_static_str("min.insync.replicas"))
        .with_value(Some(StrBytes::from_string(min_isr.to_string())));
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![create_topics_request::CreatableTopic::default()
            .with_name(tname(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(rf)
            .with_configs(vec![config])]);
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 5, &req).await;
    resp.topics[0].error_code
}

fn record(key: &str) -> Record {
    Record {
        key: Some(Bytes::from(key.to_string())),
        value: Some(Bytes::from(format!("value-{key}"))),
        headers: Vec::new(),
        timestamp_ms: 1_000,
    }
}

/// One acks=all produce of one record on an open connection: `(error, base offset)`.
async fn produce_acks_all(
    c: &mut Client,
    topic: &str,
    partition: i32,
    key: &str,
    timeout_ms: i32,
) -> (i16, i64) {
    let records = build_batch(&[record(key)], &BatchOptions::default()).freeze();
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(timeout_ms)
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

/// Every record key a consumer fetch from the leader returns, from offset 0, in order.
async fn consume_keys(addr: SocketAddr, topic: &str, partition: i32) -> (i16, i64, Vec<String>) {
    let mut c = Client::connect(addr).await;
    let mut keys = Vec::new();
    let mut offset = 0;
    loop {
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
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])]);
        let resp: FetchResponse = c.call(ApiKey::Fetch, 12, &req).await;
        let p = &resp.responses[0].partitions[0];
        if p.error_code != 0 {
            return (p.error_code, p.high_watermark, keys);
        }
        let bytes = p.records.clone().unwrap_or_default();
        let records = samsa_net::records::decode_fetched(&bytes).expect("records decode");
        let before = keys.len();
        for (o, r) in records.iter().filter(|(o, _)| *o >= offset) {
            assert_eq!(
                *o,
                offset + (keys.len() - before) as i64,
                "offsets in order"
            );
            keys.push(String::from_utf8_lossy(r.key.as_deref().unwrap_or(b"")).into_owned());
        }
        if keys.len() == before {
            return (0, p.high_watermark, keys);
        }
        offset += (keys.len() - before) as i64;
    }
}

/// Polls `addr`'s Metadata until partition `index` of `topic` satisfies `done`.
async fn wait_partition(
    addr: SocketAddr,
    topic: &str,
    index: i32,
    what: &str,
    done: impl Fn(&PartitionView) -> bool,
) -> PartitionView {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(REPLICATION_SETTLE_MS);
    loop {
        let (error, parts) = topic_view(addr, topic).await;
        if let Some(p) = parts.iter().find(|p| p.0 == index) {
            if error == 0 && done(p) {
                return p.clone();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {error} {parts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// ElectLeaders (preferred) for one partition: (top-level error, partition error).
async fn elect_preferred(addr: SocketAddr, topic: &str, index: i32) -> (i16, i16) {
    let mut c = Client::connect(addr).await;
    let req = ElectLeadersRequest::default()
        .with_election_type(0)
        .with_timeout_ms(10_000)
        .with_topic_partitions(Some(vec![elect_leaders_request::TopicPartitions::default(
        )
        .with_topic(tname(topic))
        .with_partitions(vec![index])]));
    let resp: ElectLeadersResponse = c.call(ApiKey::ElectLeaders, 2, &req).await;
    let part = resp
        .replica_election_results
        .first()
        .and_then(|t| t.partition_result.first())
        .map_or(-1, |p| p.error_code);
    (resp.error_code, part)
}

fn sorted(mut v: Vec<i32>) -> Vec<i32> {
    v.sort_unstable();
    v
}

/// The topic id Metadata reports for `topic`.
async fn topic_id(addr: SocketAddr, topic: &str) -> uuid::Uuid {
    let mut c = Client::connect(addr).await;
    let req = MetadataRequest::default()
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
        )
        .with_name(Some(tname(topic)))]))
        .with_allow_auto_topic_creation(false);
    let resp: MetadataResponse = c.call(ApiKey::Metadata, 12, &req).await;
    resp.topics[0].topic_id
}

/// A stopped node's local log of one partition: its log end and its bytes below `end`.
async fn local_log(
    dir: &std::path::Path,
    topic: &str,
    index: i32,
    id: uuid::Uuid,
    end: i64,
) -> (i64, Vec<u8>) {
    let disk = samsa_storage::RealDisk::new(dir).expect("disk");
    let name = samsa_broker::partition::partition_dir(topic, index, id);
    let (log, _) =
        samsa_storage::PartitionLog::open(disk, &name, samsa_storage::LogConfig::default())
            .await
            .expect("open local log");
    let leo = log.log_end_offset();
    let mut bytes = Vec::new();
    let mut at = 0;
    while at < end.min(leo) {
        let read = log.read(at, 1 << 20, Some(end)).await.expect("read");
        if read.bytes.is_empty() {
            break;
        }
        let batches = samsa_net::records::decode_fetched(&read.bytes).expect("decodes");
        at = batches.last().map(|(o, _)| o + 1).expect("progress");
        bytes.extend_from_slice(&read.bytes);
    }
    (leo, bytes)
}

/// Five nodes (five voters, so two may stop and the metadata quorum lives on), a topic with
/// RF=3 and min ISR 2 led by the active controller: acks=all produces replicate to every ISR
/// member; one follower stopped shrinks the ISR to 2 and produces go on; a second stopped
/// makes them NOT_ENOUGH_REPLICAS; restarted, both catch up and rejoin the ISR; the leader
/// stopped, the controller elects a new one from the ISR and every acknowledged record is
/// there once, in order; every replica's local log holds the same bytes below the committed
/// end. Prints acks=all latency for RF=3 and RF=1 and the failover time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rf3_replicates_shrinks_refuses_rejoins_and_fails_over() {
    const NODES: usize = 5;
    const RECORDS: usize = 200;
    let dirs: Vec<tempfile::TempDir> = (0..NODES).map(|_| tempfile::tempdir().unwrap()).collect();
    let voters = voters(&free_ports(NODES));
    let mut nodes: Vec<Option<Running>> = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        nodes.push(Some(
            start_replicating_node(dir.path(), i as i32 + 1, &voters, None).await,
        ));
    }
    let all_ids: Vec<i32> = (1..=NODES as i32).collect();
    let addrs: Vec<SocketAddr> = nodes.iter().flatten().map(|n| n.addr).collect();
    let running: Vec<&Running> = nodes.iter().flatten().collect();
    let controller = settle_ids(&running, &all_ids).await;
    let caddr = addrs[controller as usize - 1];

    // AlterPartition travels in-process at the controller; pick a partition it leads.
    assert_eq!(
        create_topic_with(caddr, "repl", NODES as i32, 3, "2").await,
        0
    );
    assert_eq!(create_topic_with(caddr, "one", 1, 1, "1").await, 0);
    let view = settled_view(&running, "repl", NODES).await;
    let (index, leader, _, replicas, isr) = view
        .iter()
        .find(|p| p.1 == controller)
        .cloned()
        .expect("a partition led by the controller");
    assert_eq!(sorted(isr.clone()), sorted(replicas.clone()));
    assert_eq!(replicas.len(), 3);
    let followers: Vec<i32> = replicas.iter().copied().filter(|r| *r != leader).collect();
    let laddr = addrs[leader as usize - 1];

    // acks=all, RF=3: every record answered once all three have it (samsa_net's client,
    // which routes to the leader; the raw test client below pays delayed ACKs).
    let config = samsa_net::client::ProducerConfig {
        acks: -1,
        // The first send goes to a bootstrap node, which may not lead the partition.
        retries: 5,
        ..Default::default()
    };
    let mut producer =
        samsa_net::client::Producer::new(samsa_net::TokioNet, addrs.clone(), config.clone());
    let started = std::time::Instant::now();
    for i in 0..RECORDS {
        let sent = producer
            .send("repl", index, vec![record(&format!("k{i}"))])
            .await
            .expect("acks=all produce");
        assert_eq!(sent.base_offset, i as i64, "record {i}");
    }
    let rf3 = started.elapsed();
    drop(producer);
    let (error, hw, keys) = consume_keys(laddr, "repl", index).await;
    assert_eq!((error, hw, keys.len()), (0, RECORDS as i64, RECORDS));
    // The same at RF=1 for comparison.
    settled_view(&running, "one", 1).await;
    let mut producer = samsa_net::client::Producer::new(samsa_net::TokioNet, addrs.clone(), config);
    let started = std::time::Instant::now();
    for i in 0..RECORDS {
        let sent = producer
            .send("one", 0, vec![record(&format!("k{i}"))])
            .await;
        assert_eq!(sent.expect("acks=all produce").base_offset, i as i64);
    }
    let rf1 = started.elapsed();
    drop(producer);
    let mut c = Client::connect(laddr).await;
    println!(
        "acks=all, {RECORDS} sequential one-record produces: RF=3 {:.2} ms each ({:.0}/s), \
         RF=1 {:.2} ms each ({:.0}/s)",
        rf3.as_secs_f64() * 1e3 / RECORDS as f64,
        RECORDS as f64 / rf3.as_secs_f64(),
        rf1.as_secs_f64() * 1e3 / RECORDS as f64,
        RECORDS as f64 / rf1.as_secs_f64(),
    );

    // One follower stops: the ISR shrinks to two and acks=all produces still succeed.
    let mut acked = RECORDS;
    let (f1, f2) = (followers[0], followers[1]);
    nodes[f1 as usize - 1].take().expect("running").stop().await;
    let (error, base) = produce_acks_all(&mut c, "repl", index, &format!("k{acked}"), 30_000).await;
    assert_eq!((error, base), (0, acked as i64), "with one follower down");
    acked += 1;
    let p = wait_partition(laddr, "repl", index, "ISR of two", |p| p.4.len() == 2).await;
    assert_eq!(sorted(p.4), sorted(vec![leader, f2]));

    // A second follower stops: once the ISR is the leader alone, NOT_ENOUGH_REPLICAS.
    nodes[f2 as usize - 1].take().expect("running").stop().await;
    wait_partition(laddr, "repl", index, "ISR of one", |p| p.4 == vec![leader]).await;
    let (error, _) = produce_acks_all(&mut c, "repl", index, "refused", 5_000).await;
    assert_eq!(error, NOT_ENOUGH_REPLICAS);

    // Both restart: they catch up and rejoin the ISR; produces succeed again.
    for f in [f1, f2] {
        let idx = f as usize - 1;
        nodes[idx] =
            Some(start_replicating_node(dirs[idx].path(), f, &voters, Some(addrs[idx])).await);
    }
    let p = wait_partition(laddr, "repl", index, "ISR of three", |p| p.4.len() == 3).await;
    assert_eq!(sorted(p.4), sorted(replicas.clone()));
    let (error, base) = produce_acks_all(&mut c, "repl", index, &format!("k{acked}"), 30_000).await;
    assert_eq!((error, base), (0, acked as i64), "after the rejoin");
    acked += 1;
    drop(c);

    // The leader stops: a new leader from the ISR serves every acknowledged record once.
    let stopped_at = std::time::Instant::now();
    nodes[leader as usize - 1]
        .take()
        .expect("running")
        .stop()
        .await;
    let survivor = addrs[followers[0] as usize - 1];
    let p = wait_partition(survivor, "repl", index, "new leader", |p| {
        p.1 > 0 && p.1 != leader
    })
    .await;
    let new_leader = p.1;
    assert!(followers.contains(&new_leader), "{p:?}");
    let naddr = addrs[new_leader as usize - 1];
    // The client (samsa_net::client) finds the new leader itself: bootstrap from every node
    // still running, retries on NOT_LEADER_OR_FOLLOWER with a metadata refresh.
    let live: Vec<SocketAddr> = (1..=NODES as i32)
        .filter(|id| *id != leader)
        .map(|id| addrs[id as usize - 1])
        .collect();
    let config = samsa_net::client::ProducerConfig {
        acks: -1,
        retries: 100,
        retry_backoff_ms: 100,
        request_timeout_ms: 10_000,
        ..Default::default()
    };
    let mut producer = samsa_net::client::Producer::new(samsa_net::TokioNet, live, config);
    let sent = producer
        .send("repl", index, vec![record(&format!("k{acked}"))])
        .await
        .expect("the client fails over to the new leader");
    assert_eq!(
        sent.base_offset, acked as i64,
        "appended after every acked record"
    );
    assert!(!sent.maybe_duplicated);
    acked += 1;
    println!(
        "failover: {:.0} ms from stopping the leader to the first acks=all produce answered \
         by the new leader {new_leader}",
        stopped_at.elapsed().as_secs_f64() * 1e3
    );
    let (error, hw, keys) = consume_keys(naddr, "repl", index).await;
    assert_eq!((error, hw), (0, acked as i64));
    let want: Vec<String> = (0..acked).map(|i| format!("k{i}")).collect();
    assert_eq!(keys, want, "every acked record once, in order");

    // The old leader restarts as a follower: it truncates to the new leader's log, catches up
    // and is added back to the ISR. The new leader is usually not the active controller, so its
    // AlterPartition travels over the network (API 56).
    let idx = leader as usize - 1;
    nodes[idx] =
        Some(start_replicating_node(dirs[idx].path(), leader, &voters, Some(addrs[idx])).await);
    let p = wait_partition(naddr, "repl", index, "old leader back in the ISR", |p| {
        p.4.len() == 3
    })
    .await;
    assert_eq!(p.1, new_leader, "{p:?}");
    let sent = producer
        .send("repl", index, vec![record(&format!("k{acked}"))])
        .await
        .expect("acks=all with the old leader back in the ISR");
    assert_eq!(sent.base_offset, acked as i64);
    acked += 1;

    // Preferred leader election (ElectLeaders, at the active controller only): leadership goes
    // back to the first replica, which is in the ISR again; the producer follows it.
    let (_, ctrl) = metadata_brokers(naddr).await;
    let other = (1..=NODES as i32)
        .find(|id| *id != ctrl && nodes[*id as usize - 1].is_some())
        .expect("a running non-controller");
    let (top, _) = elect_preferred(addrs[other as usize - 1], "repl", index).await;
    assert_eq!(top, NOT_CONTROLLER, "ElectLeaders at a non-controller");
    let preferred = replicas[0];
    let (top, part) = elect_preferred(addrs[ctrl as usize - 1], "repl", index).await;
    assert_eq!(top, 0);
    if new_leader == preferred {
        assert_eq!(part, ELECTION_NOT_NEEDED);
    } else {
        assert_eq!(part, 0, "preferred election of {preferred}");
        wait_partition(naddr, "repl", index, "preferred leader", |p| {
            p.1 == preferred
        })
        .await;
    }
    println!("preferred election: leader {new_leader} -> {preferred} (controller {ctrl})");
    let (again, _) = elect_preferred(addrs[ctrl as usize - 1], "repl", index).await;
    assert_eq!(again, 0);
    let sent = producer
        .send("repl", index, vec![record(&format!("k{acked}"))])
        .await
        .expect("acks=all at the preferred leader");
    assert_eq!(sent.base_offset, acked as i64);
    acked += 1;

    // Every replica's local log holds the same bytes below the committed end.
    let id = topic_id(naddr, "repl").await;
    for n in nodes.into_iter().flatten() {
        n.stop().await;
    }
    let mut logs = Vec::new();
    for r in &replicas {
        let (leo, bytes) = local_log(
            dirs[*r as usize - 1].path(),
            "repl",
            index,
            id,
            acked as i64,
        )
        .await;
        assert!(leo >= acked as i64 - 1, "replica {r} log end {leo}");
        logs.push((r, leo, bytes));
    }
    let common = logs.iter().map(|l| l.2.len()).min().unwrap_or(0);
    assert!(common > 0);
    for (r, _, bytes) in &logs {
        assert_eq!(&bytes[..common], &logs[0].2[..common], "replica {r}");
    }
}
