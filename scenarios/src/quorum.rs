//! Scenario `cluster_quorum`: the Raft metadata quorum alone under faults. Builds 3 or 5 madsim
//! nodes each running a `QuorumNode` on its `SimDisk`, a client proposing payloads to whichever
//! node leads (following NotLeader hints), a nemesis (partitions one-way, split and
//! isolate-leader, pauses, power loss, one wiped voter), then heals everything and probes
//! liveness. An omniscient recorder (the nodes' `ShellObserver`) fills `History::raft` for the
//! raft checks. Never shares state between runs; never draws from anything but the run's seed.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use bytes::{BufMut, Bytes, BytesMut};
use madsim::net::NetSim;
use madsim::runtime::Handle;
use samsa_broker::quorum::{
    fresh_directory_id, ProposeFailure, QuorumConfig, QuorumHandle, QuorumNode, ShellObserver,
    StateMachine,
};
use samsa_net::TokioNet;
use samsa_raft::{DirectoryId, Entry, HardState, NodeId, Role, SnapshotMeta, Voter};
use samsa_sim::coverage::Coverage;
use samsa_sim::disk::{DiskFaults, SimDisk, SimFs};
use samsa_sim::history::{History, RaftHistory};
use samsa_sim::seed::{child_seed, Seed};
use samsa_sim::trace::Trace;

use crate::sim_run::Run;

pub const SCENARIO: &str = "cluster_quorum";
/// Controller port every quorum node listens on (each node has its own IP).
pub const QUORUM_PORT: u16 = 9093;
/// Most proposals the client makes in one run (bounds the recorder).
pub const PROPOSALS_MAX: u64 = 2_000;
/// How long the client waits for one proposal before trying another node.
pub const PROPOSE_TIMEOUT_MS: u64 = 3_000;
/// Most applied entries recorded per node (beyond it the recorder stops recording applies).
pub const APPLIED_RECORDS_MAX: usize = 50_000;
/// Voters waiting for the vote-crash nemesis; more are not crashed.
pub const VOTE_CRASH_QUEUE_MAX: usize = 16;
/// Attempts to start a node's quorum shell (its address may still be held just after a kill).
pub const START_ATTEMPTS_MAX: u32 = 50;
/// Pause between start attempts.
pub const START_RETRY_MS: u64 = 100;

fn now_ms() -> u64 {
    samsa_sim::sim_now_ms()
}

fn node_ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 3, (i + 1) as u8))
}

/// The omniscient recorder: what every node did, in simulated-time order.
struct Recorder {
    raft: Mutex<RaftHistory>,
    trace: Trace,
    /// Voters that just granted a vote, for the vote-crash nemesis (full queue: dropped).
    voted: Option<mpsc::Sender<u32>>,
}

impl Recorder {
    fn with<T>(&self, f: impl FnOnce(&mut RaftHistory) -> T) -> T {
        let mut g = self.raft.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }
}

impl ShellObserver for Recorder {
    fn hard_state_persisted(&self, node: NodeId, dir: DirectoryId, hs: HardState) {
        if let Some((c, _)) = hs.voted_for {
            self.with(|r| {
                r.votes_durable
                    .push((now_ms(), node.0, dir.0, hs.term, c.0))
            });
        }
    }

    fn vote_granted(&self, node: NodeId, dir: DirectoryId, term: u64, candidate: NodeId) {
        self.with(|r| {
            r.votes_sent
                .push((now_ms(), node.0, dir.0, term, candidate.0))
        });
        if let Some(tx) = &self.voted {
            let _ = tx.try_send(node.0);
        }
    }

    fn applied(&self, node: NodeId, entries: &[Entry]) {
        self.with(|r| {
            let v = r.applied.entry(node.0).or_default();
            for e in entries {
                if v.len() >= APPLIED_RECORDS_MAX {
                    return;
                }
                v.push((e.index, e.term, e.payload.to_vec()));
            }
        });
    }

    fn snapshot_installed(&self, node: NodeId, meta: SnapshotMeta) {
        self.trace.event(format!(
            "{node} installed snapshot index={} term={}",
            meta.index, meta.term
        ));
    }

    fn role_changed(&self, node: NodeId, role: Role, term: u64, leader: Option<NodeId>) {
        self.trace.event(format!(
            "{node} role={role:?} term={term} leader={leader:?}"
        ));
        if role == Role::Leader {
            self.with(|r| r.leaders.push((now_ms(), node.0, term)));
        }
    }
}

/// The replicated state: the applied (index, payload) pairs. Snapshots carry them all.
#[derive(Default)]
struct ListMachine {
    applied: Vec<(u64, Bytes)>,
}

impl StateMachine for ListMachine {
    fn apply(&mut self, entries: &[Entry]) {
        for e in entries {
            self.applied.push((e.index, e.payload.clone()));
        }
    }

    fn snapshot(&self) -> Bytes {
        let mut b = BytesMut::new();
        for (i, p) in &self.applied {
            b.put_u64(*i);
            b.put_u32(p.len() as u32);
            b.put_slice(p);
        }
        b.freeze()
    }

    fn restore(&mut self, data: Bytes) {
        self.applied.clear();
        let mut at = 0usize;
        while at + 12 <= data.len() {
            let mut i = [0u8; 8];
            i.copy_from_slice(&data[at..at + 8]);
            let mut l = [0u8; 4];
            l.copy_from_slice(&data[at + 8..at + 12]);
            let end = at + 12 + u32::from_be_bytes(l) as usize;
            if end > data.len() {
                break;
            }
            self.applied
                .push((u64::from_be_bytes(i), data.slice(at + 12..end)));
            at = end;
        }
    }
}

type Handles = Arc<Mutex<BTreeMap<u32, QuorumHandle>>>;

fn handle_of(handles: &Handles, i: u32) -> Option<QuorumHandle> {
    handles
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&i)
        .cloned()
}

/// Node `i` (0-based) that currently claims to lead, if any (running, role Leader).
fn current_leader(handles: &Handles, n: u32) -> Option<u32> {
    (0..n).find(|&i| {
        handle_of(handles, i).is_some_and(|h| {
            let s = h.status();
            s.running && s.role == Role::Leader
        })
    })
}

/// Runs one seed of `cluster_quorum`; returns the history, simulated ms and coverage.
pub(crate) async fn supervise(run: Run) -> (History, u64, Coverage) {
    let h = Handle::current();
    let fs = madsim::plugin::simulator::<SimFs>();
    fs.shared.set_run_seed(run.seed);
    fs.shared.set_trace(run.trace.clone());
    let o = run.opts.clone();
    let n = o.quorum_nodes.clamp(1, 5);
    let v = o.quorum_voters.clamp(1, n);
    let mut qseed = Seed::new(run.seed).child("quorum");
    let snapshot_every = *qseed.pick(&[0u64, 7, 25, 100]).unwrap_or(&0);
    // Narrow election windows make split votes (two candidates in one term) common.
    let (election_min, election_max) = *qseed
        .pick(&[(300u64, 600u64), (300, 330), (150, 170)])
        .unwrap_or(&(300, 600));
    // Crash a voter right after it granted a vote (while the vote may still be persisting).
    let vote_crash_p = qseed.rate(0.4, 0.5);
    // Half the runs configure nobody with the observers: they introduce themselves.
    let observers_configured = qseed.chance(0.5);
    run.trace.event(format!(
        "quorum nodes={n} voters={v} snapshot_every={snapshot_every} \
         election_ms={election_min}..{election_max} vote_crash={vote_crash_p:.2} \
         observers_configured={observers_configured}"
    ));
    let (voted_tx, mut voted_rx) = mpsc::channel::<u32>(VOTE_CRASH_QUEUE_MAX);

    let addrs: BTreeMap<NodeId, SocketAddr> = (0..n)
        .map(|i| (NodeId(i + 1), SocketAddr::new(node_ip(i), QUORUM_PORT)))
        .collect();
    let base_seeds: Vec<u64> = (0..n)
        .map(|i| child_seed(run.seed, &format!("quorum/n{i}")))
        .collect();
    let voters: Vec<Voter> = (0..v)
        .map(|i| Voter {
            id: NodeId(i + 1),
            directory_id: Some(fresh_directory_id(base_seeds[i as usize])),
        })
        .collect();
    let observers: Vec<NodeId> = (v..n).map(|i| NodeId(i + 1)).collect();
    let recorder = Arc::new(Recorder {
        raft: Mutex::new(RaftHistory {
            voters: (1..=v).collect(),
            ..RaftHistory::default()
        }),
        trace: run.trace.clone(),
        voted: (vote_crash_p > 0.0).then_some(voted_tx),
    });
    let handles: Handles = Arc::new(Mutex::new(BTreeMap::new()));

    let mut node_ids = Vec::new();
    for i in 0..n {
        let incarnations = Arc::new(AtomicU64::new(0));
        let observer = i >= v;
        let cfg = QuorumConfig {
            id: NodeId(i + 1),
            listen: addrs[&NodeId(i + 1)],
            peers: if observers_configured {
                addrs.clone()
            } else {
                addrs
                    .iter()
                    .filter(|(id, _)| id.0 <= v)
                    .map(|(id, a)| (*id, *a))
                    .collect()
            },
            voters: voters.clone(),
            observers: if observers_configured {
                observers.clone()
            } else {
                Vec::new()
            },
            announce: (observer && !observers_configured).then(|| addrs[&NodeId(i + 1)]),
            data_dir: "quorum".to_string(),
            election_timeout_min_ms: election_min,
            election_timeout_max_ms: election_max,
            heartbeat_interval_ms: 100,
            batch_entries_max: 8,
            snapshot_every_entries: snapshot_every,
            hooks: run.hooks.hooks(),
        };
        let (recorder, handles, trace, base) = (
            recorder.clone(),
            handles.clone(),
            run.trace.clone(),
            base_seeds[i as usize],
        );
        let node = h
            .create_node()
            .name(format!("quorum{}", i + 1))
            .ip(node_ip(i))
            .init(move || {
                let (cfg, recorder, handles, trace, incarnations) = (
                    cfg.clone(),
                    recorder.clone(),
                    handles.clone(),
                    trace.clone(),
                    incarnations.clone(),
                );
                async move {
                    let k = incarnations.fetch_add(1, Ordering::SeqCst);
                    let seed = if k == 0 {
                        base
                    } else {
                        child_seed(base, &format!("incarnation{k}"))
                    };
                    let observer: Arc<dyn ShellObserver> = recorder;
                    // A restarted node's old listener may still hold the address for a moment
                    // (sim seed 888000111529): retry, bounded, instead of staying down.
                    for attempt in 0..START_ATTEMPTS_MAX {
                        let started = QuorumNode::spawn(
                            cfg.clone(),
                            SimDisk::current(),
                            TokioNet,
                            seed,
                            ListMachine::default(),
                            Some(observer.clone()),
                        )
                        .await;
                        match started {
                            Ok(handle) => {
                                let s = handle.status();
                                trace.event(format!(
                                    "n{} start #{k} dir={:x} role={:?} term={}",
                                    i + 1,
                                    s.directory_id.0 >> 96,
                                    s.role,
                                    s.term
                                ));
                                handles
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .insert(i, handle);
                                std::future::pending::<()>().await;
                            }
                            Err(e) => {
                                trace.event(format!("n{} failed to start ({attempt}): {e}", i + 1));
                                madsim::time::sleep(Duration::from_millis(START_RETRY_MS)).await;
                            }
                        }
                    }
                }
            })
            .build();
        fs.shared
            .set_faults(samsa_sim::disk::node_number(node.id()), o.disk.clone());
        node_ids.push(node.id());
    }

    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (handles, stop, trace) = (handles.clone(), stop.clone(), run.trace.clone());
        let mut s = Seed::new(run.seed).child("quorum/client");
        madsim::task::spawn(async move {
            let mut target = 0u32;
            let mut k = 0u64;
            let mut committed = 0u64;
            while !stop.load(Ordering::SeqCst) && k < PROPOSALS_MAX {
                madsim::time::sleep(Duration::from_millis(s.range_u64(5, 80))).await;
                let Some(handle) = handle_of(&handles, target) else {
                    target = (target + 1) % n;
                    continue;
                };
                let payload = Bytes::from(format!("p{k}"));
                k += 1;
                let r = madsim::time::timeout(
                    Duration::from_millis(PROPOSE_TIMEOUT_MS),
                    handle.propose(payload),
                )
                .await;
                match r {
                    Ok(Ok(_)) => committed += 1,
                    Ok(Err(ProposeFailure::NotLeader {
                        leader_hint: Some(l),
                    })) if l.0 >= 1 && l.0 <= n => target = l.0 - 1,
                    _ => target = (target + 1) % n,
                }
            }
            trace.event(format!("client proposed={k} committed={committed}"));
        })
    };

    // Vote-crash nemesis: runs through the safety phase only.
    let vote_crasher = {
        let (handles, stop, trace, ids) = (
            handles.clone(),
            stop.clone(),
            run.trace.clone(),
            node_ids.clone(),
        );
        let mut s = Seed::new(run.seed).child("quorum/vote_crash");
        let h = h.clone();
        madsim::task::spawn(async move {
            while let Some(node) = voted_rx.recv().await {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                if !s.chance(vote_crash_p) {
                    continue;
                }
                let i = node.saturating_sub(1) as usize;
                let Some(&id) = ids.get(i) else { continue };
                madsim::time::sleep(Duration::from_micros(s.range_u64(0, 3_000))).await;
                trace.event(format!("nemesis: power-fail n{node} after its vote"));
                h.kill(id);
                handles
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&(i as u32));
                madsim::time::sleep(Duration::from_millis(s.range_u64(5, 300))).await;
                // Kill first: another nemesis may have restarted it meanwhile (seed 888000111529).

                h.kill(id);

                h.restart(id);
            }
        })
    };

    // Safety phase.
    let net = NetSim::current();
    let mut seed = Seed::new(run.seed).child("nemesis");
    let mut counts = Coverage::default();
    for name in [
        "nemesis.crash",
        "nemesis.pause",
        "nemesis.partition",
        "nemesis.wipe",
        "nemesis.isolate_leader",
        "nemesis.one_way",
    ] {
        counts.add(name, 0);
    }
    let mut wiped: Option<u32> = None;
    let safety_end = now_ms() + o.safety_ms;
    while now_ms() < safety_end {
        let step = seed.range_u64(o.nemesis_step_ms.0, o.nemesis_step_ms.1);
        madsim::time::sleep(Duration::from_millis(step)).await;
        let pick = |seed: &mut Seed| seed.range_u64(0, u64::from(n) - 1) as u32;
        if wiped.is_none() && seed.chance(o.wipe_p) {
            let i = seed.range_u64(0, u64::from(v) - 1) as u32;
            run.trace.event(format!("nemesis: wipe voter n{}", i + 1));
            counts.add("nemesis.wipe", 1);
            wiped = Some(i);
            h.kill(node_ids[i as usize]);
            handles.lock().unwrap_or_else(|p| p.into_inner()).remove(&i);
            fs.shared
                .wipe(samsa_sim::disk::node_number(node_ids[i as usize]));
            madsim::time::sleep(Duration::from_millis(seed.range_u64(10, 1_000))).await;
            // Kill first: another nemesis may have restarted it meanwhile (seed 888000111529).

            h.kill(node_ids[i as usize]);

            h.restart(node_ids[i as usize]);
        } else if seed.chance(o.crash_p) {
            let i = pick(&mut seed);
            run.trace.event(format!("nemesis: power-fail n{}", i + 1));
            counts.add("nemesis.crash", 1);
            h.kill(node_ids[i as usize]);
            handles.lock().unwrap_or_else(|p| p.into_inner()).remove(&i);
            madsim::time::sleep(Duration::from_millis(seed.range_u64(10, 2_000))).await;
            // Kill first: another nemesis may have restarted it meanwhile (seed 888000111529).

            h.kill(node_ids[i as usize]);

            h.restart(node_ids[i as usize]);
        } else if seed.chance(o.pause_p) {
            let i = pick(&mut seed);
            let d = seed.range_u64(200, 3_000);
            run.trace.event(format!("nemesis: pause n{} {d} ms", i + 1));
            counts.add("nemesis.pause", 1);
            h.pause(node_ids[i as usize]);
            madsim::time::sleep(Duration::from_millis(d)).await;
            h.resume(node_ids[i as usize]);
        } else if seed.chance(o.partition_p) {
            let d = seed.range_u64(200, 5_000);
            counts.add("nemesis.partition", 1);
            match seed.range_u64(0, 2) {
                0 => {
                    let i = current_leader(&handles, n).unwrap_or_else(|| pick(&mut seed));
                    run.trace
                        .event(format!("nemesis: isolate n{} (leader?) {d} ms", i + 1));
                    counts.add("nemesis.isolate_leader", 1);
                    net.clog_node(node_ids[i as usize]);
                    madsim::time::sleep(Duration::from_millis(d)).await;
                    net.unclog_node(node_ids[i as usize]);
                }
                1 => {
                    let a = pick(&mut seed);
                    let b = (a + 1 + seed.range_u64(0, u64::from(n) - 2) as u32) % n;
                    run.trace.event(format!(
                        "nemesis: one-way n{} -x-> n{} {d} ms",
                        a + 1,
                        b + 1
                    ));
                    counts.add("nemesis.one_way", 1);
                    net.clog_link(node_ids[a as usize], node_ids[b as usize]);
                    madsim::time::sleep(Duration::from_millis(d)).await;
                    net.unclog_link(node_ids[a as usize], node_ids[b as usize]);
                }
                _ => {
                    // Split: a random side against the rest, both directions.
                    let side: Vec<bool> = (0..n).map(|_| seed.chance(0.5)).collect();
                    run.trace.event(format!("nemesis: split {side:?} {d} ms"));
                    let pairs: Vec<(usize, usize)> = (0..n as usize)
                        .flat_map(|a| (0..n as usize).map(move |b| (a, b)))
                        .filter(|&(a, b)| side[a] != side[b])
                        .collect();
                    for &(a, b) in &pairs {
                        net.clog_link(node_ids[a], node_ids[b]);
                    }
                    madsim::time::sleep(Duration::from_millis(d)).await;
                    for &(a, b) in &pairs {
                        net.unclog_link(node_ids[a], node_ids[b]);
                    }
                }
            }
        }
    }

    // Liveness phase: heal, stop the client, then require a leader and a fresh commit on a
    // majority of the voters that still hold their original disks.
    run.trace.event("liveness: heal");
    for id in &node_ids {
        fs.shared
            .set_faults(samsa_sim::disk::node_number(*id), DiskFaults::NONE);
        net.unclog_node(*id);
    }
    net.update_config(|c| c.packet_loss_rate = 0.0);
    run.hooks.set_enabled(false);
    stop.store(true, Ordering::SeqCst);
    vote_crasher.abort();
    // The vote-crash nemesis may have been stopped between a kill and its restart.
    for i in 0..n {
        if handle_of(&handles, i).is_none() {
            run.trace.event(format!("liveness: restart n{}", i + 1));
            // Kill first: another nemesis may have restarted it meanwhile (seed 888000111529).

            h.kill(node_ids[i as usize]);

            h.restart(node_ids[i as usize]);
        }
    }
    let _ = madsim::time::timeout(Duration::from_millis(PROPOSE_TIMEOUT_MS * 2), client).await;
    let liveness = probe_liveness(&handles, n, v, wiped, o.liveness_ms, &run.trace).await;
    run.trace.event(format!("liveness: {liveness:?}"));

    let mut raft = std::mem::take(&mut *recorder.raft.lock().unwrap_or_else(|p| p.into_inner()));
    raft.liveness = Some(liveness);
    let history = History {
        raft,
        ..History::default()
    };
    let sim_ms = now_ms();
    counts.merge(&fs.shared.coverage());
    counts.merge(&run.hooks.coverage());
    (history, sim_ms, counts)
}

/// After healing: within `bound_ms`, some node leads, accepts a fresh proposal, and a majority
/// of the voter set (not counting a wiped voter) and every observer have applied it.
async fn probe_liveness(
    handles: &Handles,
    n: u32,
    v: u32,
    wiped: Option<u32>,
    bound_ms: u64,
    trace: &Trace,
) -> Result<(), String> {
    let end = now_ms() + bound_ms;
    let majority = v / 2 + 1;
    let mut last_err = String::from("no leader");
    let mut attempt = 0u64;
    while now_ms() < end {
        madsim::time::sleep(Duration::from_millis(100)).await;
        let Some(l) = current_leader(handles, n) else {
            last_err = "no leader".into();
            continue;
        };
        let Some(handle) = handle_of(handles, l) else {
            continue;
        };
        attempt += 1;
        let payload = Bytes::from(format!("liveness{attempt}"));
        let left = end.saturating_sub(now_ms()).max(1);
        let index = match madsim::time::timeout(
            Duration::from_millis(left.min(PROPOSE_TIMEOUT_MS)),
            handle.propose(payload),
        )
        .await
        {
            Ok(Ok(index)) => index,
            Ok(Err(e)) => {
                last_err = format!("leader n{} refused the probe: {e:?}", l + 1);
                continue;
            }
            Err(_) => {
                last_err = format!("probe on n{} timed out", l + 1);
                continue;
            }
        };
        let mut lagging = None;
        while now_ms() < end {
            let applied = (0..v)
                .filter(|&i| Some(i) != wiped)
                .filter(|&i| {
                    handle_of(handles, i).is_some_and(|h| h.status().applied_index >= index)
                })
                .count() as u32;
            // Observers (configured or introduced) follow too: each must apply the probe.
            lagging = (v..n)
                .filter(|_| applied >= majority)
                .find(|&i| handle_of(handles, i).is_none_or(|h| h.status().applied_index < index));
            if applied >= majority && lagging.is_none() {
                trace.event(format!(
                    "liveness probe index {index} applied on {applied} voters and every observer"
                ));
                // No disk errors are in this atlas: every node must still be running.
                let stopped =
                    (0..n).find(|&i| handle_of(handles, i).is_none_or(|h| !h.status().running));
                return match stopped {
                    Some(i) => Err(format!("n{} is not running after healing", i + 1)),
                    None => Ok(()),
                };
            }
            madsim::time::sleep(Duration::from_millis(50)).await;
        }
        last_err = match lagging {
            Some(o) => format!("probe index {index} not applied on observer n{}", o + 1),
            None => format!("probe index {index} not applied on a majority of voters"),
        };
    }
    Err(last_err)
}
