//! Cluster mode in-process (issue 4, phase A): three `run_node`s on `RealDisk` temp dirs and
//! real sockets on 127.0.0.1 elect a metadata quorum leader, answer DescribeQuorum with three
//! voters, list every registered broker in Metadata and DescribeCluster on every node, and a
//! restarted node keeps its directory id (even when restarted with another seed) while a wiped
//! one gets a new one.
//! Never leaves a node running: every node is stopped and awaited. Not built under madsim.
#![cfg(not(madsim))]

mod common;
use common::{start_with, test_config, Client, Running};

use std::net::SocketAddr;
use std::time::Duration;

use kafka_protocol::messages::*;

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
