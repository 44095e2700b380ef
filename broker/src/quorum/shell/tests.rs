//! Tests of the quorum shell on real sockets and `RealDisk`: three nodes elect a leader, commit
//! proposals on every node, and a restarted node keeps its vote and log. Never leaves the
//! loopback interface or the temporary directories.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use samsa_net::hooks::Hooks;
use samsa_net::io::{Net, TokioNet};
use samsa_raft::{Entry, NodeId, Role, Voter};
use samsa_storage::disk::real::RealDisk;

use super::{
    fresh_directory_id, ProposeFailure, QuorumConfig, QuorumHandle, QuorumNode, StateMachine,
};

/// Applied payloads, shared with the test.
#[derive(Clone, Default)]
struct Applied(Arc<Mutex<Vec<Bytes>>>);

impl StateMachine for Applied {
    fn apply(&mut self, entries: &[Entry]) {
        let mut v = self.0.lock().expect("lock");
        v.extend(
            entries
                .iter()
                .filter(|e| !e.payload.is_empty())
                .map(|e| e.payload.clone()),
        );
    }
    fn snapshot(&self) -> Bytes {
        let v = self.0.lock().expect("lock");
        let mut b = BytesMut::new();
        for p in v.iter() {
            b.put_u32(p.len() as u32);
            b.put_slice(p);
        }
        b.freeze()
    }
    fn restore(&mut self, data: Bytes) {
        let mut v = self.0.lock().expect("lock");
        v.clear();
        let mut at = 0;
        while at + 4 <= data.len() {
            let len = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
            let end = at + 4 + len as usize;
            if end > data.len() {
                break;
            }
            v.push(data.slice(at + 4..end));
            at = end;
        }
    }
}

async fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let mut held = Vec::new();
    for _ in 0..n {
        let l = TokioNet
            .bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        held.push(l);
    }
    held.iter()
        .map(|l| TokioNet.local_addr(l).expect("addr"))
        .collect()
}

fn config(id: u32, addrs: &[SocketAddr]) -> QuorumConfig {
    let peers: BTreeMap<NodeId, SocketAddr> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (NodeId(i as u32 + 1), *a))
        .collect();
    let voters = (1..=addrs.len() as u32)
        .map(|i| Voter {
            id: NodeId(i),
            directory_id: Some(fresh_directory_id(u64::from(i))),
        })
        .collect();
    QuorumConfig {
        id: NodeId(id),
        listen: addrs[id as usize - 1],
        peers,
        voters,
        observers: Vec::new(),
        announce: None,
        data_dir: "quorum".to_string(),
        election_timeout_min_ms: 150,
        election_timeout_max_ms: 300,
        heartbeat_interval_ms: 50,
        batch_entries_max: 16,
        snapshot_every_entries: 8,
        hooks: Hooks::default(),
    }
}

async fn wait_leader(handles: &[QuorumHandle]) -> usize {
    for _ in 0..200 {
        if let Some(i) = handles
            .iter()
            .position(|h| h.status().running && h.status().role == Role::Leader)
        {
            return i;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no leader elected within 5 s");
}

async fn propose_until_ok(handles: &[QuorumHandle], payload: &str) -> u64 {
    for _ in 0..200 {
        let i = wait_leader(handles).await;
        match handles[i].propose(Bytes::from(payload.to_string())).await {
            Ok(index) => return index,
            Err(ProposeFailure::NotLeader { .. } | ProposeFailure::Unknown) => {
                tokio::time::sleep(Duration::from_millis(25)).await
            }
            Err(e) => panic!("propose failed: {e:?}"),
        }
    }
    panic!("proposal never committed");
}

#[tokio::test(flavor = "current_thread")]
async fn quorum_three_nodes_commit_everywhere_and_survive_restart() {
    let addrs = free_addrs(3).await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("tmp")).collect();
    let sms: Vec<Applied> = (0..3).map(|_| Applied::default()).collect();
    let mut handles = Vec::new();
    for i in 0..3u32 {
        let disk = RealDisk::new(dirs[i as usize].path()).expect("disk");
        let h = QuorumNode::spawn(
            config(i + 1, &addrs),
            disk,
            TokioNet,
            u64::from(i + 1),
            sms[i as usize].clone(),
            None,
        )
        .await
        .expect("spawn");
        handles.push(h);
    }
    let mut last = 0;
    for k in 0..20 {
        last = propose_until_ok(&handles, &format!("p{k}")).await;
    }
    // Every node applies every proposal, in the same order.
    for _ in 0..200 {
        if handles.iter().all(|h| h.status().applied_index >= last) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let want: Vec<Bytes> = (0..20).map(|k| Bytes::from(format!("p{k}"))).collect();
    for sm in &sms {
        assert_eq!(*sm.0.lock().expect("lock"), want);
    }
    let info = handles[wait_leader(&handles).await]
        .quorum_info()
        .await
        .expect("info");
    assert_eq!(info.voters.len(), 3);

    // Restart a follower from its data directory: it keeps its directory id and catches up.
    let leader = wait_leader(&handles).await;
    let f = (leader + 1) % 3;
    let old_dir_id = handles[f].status().directory_id;
    let old_term = handles[f].status().term;
    handles[f].shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sm = Applied::default();
    let disk = RealDisk::new(dirs[f].path()).expect("disk");
    handles[f] = QuorumNode::spawn(
        config(f as u32 + 1, &addrs),
        disk,
        TokioNet,
        77,
        sm.clone(),
        None,
    )
    .await
    .expect("respawn");
    assert_eq!(handles[f].status().directory_id, old_dir_id);
    assert!(handles[f].status().term >= old_term);
    last = propose_until_ok(&handles, "after-restart").await;
    for _ in 0..200 {
        if handles[f].status().applied_index >= last {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut want = want;
    want.push(Bytes::from("after-restart"));
    assert_eq!(*sm.0.lock().expect("lock"), want);
    for h in &handles {
        h.shutdown();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_unconfigured_observer_introduces_itself_and_applies_everything() {
    // Voters 1 and 2 know only each other; node 3 knows the voters and announces itself.
    let addrs = free_addrs(3).await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("tmp")).collect();
    let sms: Vec<Applied> = (0..3).map(|_| Applied::default()).collect();
    let mut handles = Vec::new();
    for i in 0..3u32 {
        let mut cfg = config((i + 1).min(2), &addrs[..2]);
        cfg.id = NodeId(i + 1);
        cfg.listen = addrs[i as usize];
        if i == 2 {
            cfg.announce = Some(addrs[2]);
        }
        let disk = RealDisk::new(dirs[i as usize].path()).expect("disk");
        let seed = u64::from(i + 1);
        let h = QuorumNode::spawn(cfg, disk, TokioNet, seed, sms[i as usize].clone(), None)
            .await
            .expect("spawn");
        handles.push(h);
    }
    assert_eq!(handles[2].status().role, Role::Observer);
    let mut last = 0;
    for k in 0..10 {
        last = propose_until_ok(&handles[..2], &format!("p{k}")).await;
    }
    for _ in 0..200 {
        if handles[2].status().applied_index >= last {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let want: Vec<Bytes> = (0..10).map(|k| Bytes::from(format!("p{k}"))).collect();
    assert_eq!(*sms[2].0.lock().expect("lock"), want);
    assert_eq!(handles[2].status().role, Role::Observer);
    let leader = wait_leader(&handles[..2]).await;
    let info = handles[leader].quorum_info().await.expect("info");
    assert_eq!(info.voters.len(), 2);
    let observers: Vec<NodeId> = info.observers.iter().map(|o| o.id).collect();
    assert_eq!(observers, vec![NodeId(3)]);
    for h in &handles {
        h.shutdown();
    }
}

#[test]
fn introductions_round_trip_and_garbage_is_refused() {
    let addr: SocketAddr = "10.0.0.7:9093".parse().expect("addr");
    let frame = super::encode_hello(NodeId(7), addr);
    assert_eq!(super::decode_hello(&frame), Some((NodeId(7), addr)));
    for cut in 0..frame.len() {
        assert_eq!(super::decode_hello(&frame[..cut]), None, "cut at {cut}");
    }
    let mut long = frame.to_vec();
    long.push(b'0');
    assert_eq!(super::decode_hello(&long), None);
    let mut bad = frame.to_vec();
    bad[2] = 9;
    assert_eq!(super::decode_hello(&bad), None, "unknown version");
}
