//! Scenario `cluster_replication`: 3 to 5 madsim nodes each run the real broker in cluster mode
//! (all of them metadata voters and brokers, or 1 or 3 voters with the others broker-only
//! observers; the first voter may be controller-only) on their own `SimDisk`, skewed `SimClock` and
//! a chaos network; the single-node workload (samsa-net's client) creates a topic with a drawn
//! replication factor (1 to 3, so partitions may live on a subset of the nodes) and
//! `min.insync.replicas`, runs idempotent acks=all producers and an optional consumer; a
//! nemesis power-fails and restarts nodes (one at a time, a partition's current leader while a
//! send is in flight, or every replica of a partition's ISR at the same instant), pauses them,
//! cuts one node off from its peers (both ways, one way, or from everyone) or only its
//! controller-port traffic, and jumps node clocks. The liveness phase heals everything, waits
//! for every partition's ISR to hold all its replicas again, reads every partition from its
//! leader, then freezes the nodes and reads every in-sync replica's local log from its own disk
//! for `replicas_agree`. `cluster_groups` runs the same cluster and nemesis with consumer-group
//! members (`groups::member`) besides the producers. Never shares state between runs; never
//! draws from anything but the run's seed.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::net::NetSim;
use madsim::runtime::Handle;
use samsa_broker::quorum::fresh_directory_id;
use samsa_broker::NodeConfig;
use samsa_net::client::{Admin, ClientConfig};
use samsa_net::TokioNet;
use samsa_sim::chaos::{Chaos, ChaosConfig, ChaosNet, PortCut};
use samsa_sim::clock::SimClock;
use samsa_sim::coverage::Coverage;
use samsa_sim::disk::{DiskFaults, SimDisk, SimFs};
use samsa_sim::history::{Call, History, ReplicaLogs};
use samsa_sim::seed::{child_seed, Seed};

use crate::sim_run::Run;
use crate::workload::{self, Workload, PARTITIONS_MAX, TOPIC};

pub const SCENARIO: &str = "cluster_replication";
/// `cluster_groups`: the same cluster and nemesis, plus consumer-group members
/// (`groups::member`, bootstrapping over every broker).
pub const GROUPS_SCENARIO: &str = "cluster_groups";
/// Nodes (voters, brokers or both): the options draw 3 to this.
pub const NODES_MAX: u32 = 5;
/// Nodes when the options leave the count at 0.
pub const NODES_DEFAULT: u32 = 3;
pub const CLIENT_PORT: u16 = 9092;
pub const CONTROLLER_PORT: u16 = 9093;
/// Client nodes a run may create (producers + consumers).
pub const CLIENT_NODES_MAX: u32 = 8;
/// How long after healing clients may still start new operations.
pub const LIVENESS_NEW_OPS_MS: u64 = 3_000;
/// Attempts to start a node's broker (its address may still be held just after a kill).
pub const START_ATTEMPTS_MAX: u32 = 50;
pub const START_RETRY_MS: u64 = 100;
/// Metadata polls while waiting for every ISR to be full after healing.
pub const SETTLE_POLLS_MAX: u32 = 1_000;
pub const SETTLE_POLL_MS: u64 = 200;
/// Bytes one local-log read returns, and reads per replica (bounds the replica reader).
pub const REPLICA_READ_BYTES: usize = 1 << 20;
pub const REPLICA_READS_MAX: u32 = 10_000;
/// Before a wipe, every ISR must be full in two Metadata answers this far apart.
pub const WIPE_STEADY_MS: u64 = 1_500;
/// After a wipe the nemesis waits (at most this long, polling) for every ISR to be full again.
pub const WIPE_REJOIN_MS_MAX: u64 = 30_000;
pub const WIPE_POLL_MS: u64 = 500;
/// How long the nemesis waits for a client answer about leaders and ISRs before it falls back.
pub const NEMESIS_METADATA_MS: u64 = 3_000;
/// Before a leader or ISR power loss the nemesis waits for a send in flight (mid-produce), in
/// polls of `MID_PRODUCE_POLL_MS`, at most this many.
pub const MID_PRODUCE_POLLS_MAX: u32 = 500;
pub const MID_PRODUCE_POLL_MS: u64 = 2;
/// Once a send is in flight, the nemesis waits a drawn 0..=this many ms more before the kill.
pub const MID_PRODUCE_LAG_MS_MAX: u64 = 30;
/// Latest history ops searched for a send in flight (each producer sends one at a time, so
/// its send in flight is among its latest ops).
pub const IN_FLIGHT_SCAN_MAX: usize = 256;

fn now_ms() -> u64 {
    samsa_sim::sim_now_ms()
}

fn node_ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 4, (i + 1) as u8))
}

fn client_addr(i: u32) -> SocketAddr {
    SocketAddr::new(node_ip(i), CLIENT_PORT)
}

/// The run's node count.
fn node_count(o: &crate::SimOptions) -> u32 {
    if o.quorum_nodes == 0 {
        NODES_DEFAULT
    } else {
        o.quorum_nodes.clamp(1, NODES_MAX)
    }
}

/// The seed node `i` (0-based) starts with the first time (later starts derive their own).
fn node_base_seed(run_seed: u64, i: u32) -> u64 {
    child_seed(run_seed, &format!("broker/n{i}"))
}

/// The voter list, each voter's directory id pinned (`ID@HOST:PORT:DIRID`): the id its fresh
/// disk gets from its first seed, so a wiped voter comes back as an observer.
fn voters(run_seed: u64, voters: u32) -> String {
    (0..voters)
        .map(|i| {
            let dir = fresh_directory_id(node_base_seed(run_seed, i)).0;
            let addr = SocketAddr::new(node_ip(i), CONTROLLER_PORT);
            format!("{}@{addr}:{dir:032x}", i + 1)
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// How many of the run's nodes are voters (the first ones).
fn voter_count(o: &crate::SimOptions) -> u32 {
    if o.quorum_voters == 0 {
        node_count(o)
    } else {
        o.quorum_voters.min(node_count(o))
    }
}

/// Node `i` (0-based): the first `controller_only_voters` are controller-only voters, the rest
/// of the first `quorum_voters` combined voters, every later one a broker-only observer.
fn broker_config(run: &Run, i: u32, seed: u64) -> NodeConfig {
    let o = &run.opts;
    let voter_count = voter_count(o);
    let (process_roles, controller_listen) = if i >= voter_count {
        let own = SocketAddr::new(node_ip(i), CONTROLLER_PORT).to_string();
        ("broker", Some(own))
    } else if i < o.controller_only_voters {
        ("controller", None)
    } else {
        ("broker,controller", None)
    };
    NodeConfig {
        node_id: i as i32 + 1,
        listen: client_addr(i).to_string(),
        data_dir: "data".to_string(),
        flush_policy: run.opts.flush_policy.to_string(),
        segment_bytes: run.opts.segment_bytes,
        num_partitions: run.opts.partitions,
        seed,
        voters: Some(voters(run.seed, voter_count)),
        process_roles: process_roles.to_string(),
        controller_listen,
        broker_heartbeat_interval_ms: 300,
        broker_session_timeout_ms: 3_000,
        ..NodeConfig::default()
    }
}

fn client_config(name: &str) -> ClientConfig {
    ClientConfig {
        client_id: name.to_string(),
        connect_timeout_ms: 1_000,
        request_timeout_ms: 2_000,
        // At least one: the client re-learns a moved leader only when a retry is left.
        retries: 2,
        retry_backoff_ms: 100,
    }
}

/// Runs one seed of `cluster_replication`; returns the history, simulated ms and coverage.
pub(crate) async fn supervise(run: Run) -> (History, u64, Coverage) {
    let h = Handle::current();
    let fs = madsim::plugin::simulator::<SimFs>();
    fs.shared.set_run_seed(run.seed);
    fs.shared.set_trace(run.trace.clone());
    if run.opts.net_buggify {
        madsim::buggify::enable();
    }
    let o = run.opts.clone();
    let nodes = node_count(&o);
    run.trace.event(format!(
        "replication nodes={nodes} voters={} controller_only={} partitions={} rf={} min_isr={}",
        o.quorum_voters, o.controller_only_voters, o.partitions, o.replication_factor, o.min_insync
    ));
    let mut cseed = Seed::new(run.seed).child("replication/clocks");
    let clocks: Vec<SimClock> = (0..nodes)
        .map(|_| {
            let offset = if o.clock_offset_ms != 0 {
                cseed.range_u64(0, 2 * o.clock_offset_ms.unsigned_abs()) as i64
                    - o.clock_offset_ms.abs()
            } else {
                0
            };
            let c = SimClock::new(offset);
            if o.clock_drift_ppm != 0 {
                let d = o.clock_drift_ppm.abs();
                c.set_drift_ppm(cseed.range_u64(0, 2 * d as u64) as i64 - d);
            }
            c
        })
        .collect();
    let broker_chaos = Chaos::new(child_seed(run.seed, "broker/chaos"), o.chaos.clone());
    let client_chaos = Chaos::new(child_seed(run.seed, "client/chaos"), o.chaos.clone());
    // The controller-only partition: cut (node IP, controller port) endpoints, seen by every
    // broker's network (kept across restarts).
    let cut = PortCut::new();
    let run = Arc::new(run);

    let mut node_ids = Vec::new();
    for i in 0..nodes {
        let incarnations = Arc::new(AtomicU64::new(0));
        let base = node_base_seed(run.seed, i);
        let (run, clock, chaos, cut) = (
            run.clone(),
            clocks[i as usize].clone(),
            broker_chaos.clone(),
            cut.clone(),
        );
        let node = h
            .create_node()
            .name(format!("broker{}", i + 1))
            .ip(node_ip(i))
            .init(move || {
                let (run, clock, chaos, cut, incarnations) = (
                    run.clone(),
                    clock.clone(),
                    chaos.clone(),
                    cut.clone(),
                    incarnations.clone(),
                );
                async move {
                    let k = incarnations.fetch_add(1, Ordering::SeqCst);
                    let seed = if k == 0 {
                        base
                    } else {
                        child_seed(base, &format!("incarnation{k}"))
                    };
                    run.trace.event(format!("n{} start #{k}", i + 1));
                    // A restarted node's old listeners may still hold its addresses for a
                    // moment: retry a start that failed at once, bounded.
                    for attempt in 0..START_ATTEMPTS_MAX {
                        let net = ChaosNet::with_port_cut(
                            TokioNet,
                            chaos.clone(),
                            cut.clone(),
                            node_ip(i),
                        );
                        let result = samsa_broker::run_node(
                            broker_config(&run, i, seed),
                            SimDisk::current(),
                            clock.clone(),
                            net,
                            run.hooks.hooks(),
                            std::future::pending::<()>(),
                        )
                        .await;
                        match result {
                            Ok(()) => {
                                run.trace.event(format!("n{} exited", i + 1));
                                return;
                            }
                            Err(e) => {
                                run.trace
                                    .event(format!("n{} halted ({attempt}): {e}", i + 1));
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

    let history = Arc::new(Mutex::new(History {
        fsync_policy: o.flush_policy == "fsync",
        ..History::default()
    }));
    let wl = Workload {
        seed: run.seed,
        broker: client_addr(0),
        chaos: client_chaos.clone(),
        history: history.clone(),
        trace: run.trace.clone(),
        opts: o.clone(),
        stop: Arc::new(AtomicBool::new(false)),
        bootstrap: (0..nodes).map(client_addr).collect(),
    };
    let mut client_ids = Vec::new();
    let mut tasks = Vec::new();
    let actors = (o.producers + o.consumers + o.group_members).min(CLIENT_NODES_MAX);
    for i in 0..actors {
        let node = h
            .create_node()
            .name(format!("client{i}"))
            .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 1, (i + 1) as u8)))
            .build();
        client_ids.push(node.id());
        let wl = wl.clone();
        let (producers, consumers) = (o.producers, o.consumers);
        let task = if i < producers {
            node.spawn(async move { workload::producer(wl, i).await })
        } else if i >= producers + consumers {
            let member = i - producers - consumers;
            node.spawn(async move { crate::groups::member(wl, member).await })
        } else {
            node.spawn(async move { workload::consumer(wl, i - producers).await })
        };
        tasks.push(task);
    }

    // Safety phase: faults. The nemesis asks Metadata (leaders, ISRs) from a client node of
    // its own, over a network without chaos (clogged links still apply).
    let net = NetSim::current();
    let mut seed = Seed::new(run.seed).child("nemesis");
    let mut counts = Coverage::default();
    for name in NEMESIS_COVERAGE {
        counts.add(name, 0);
    }
    let nemesis = h
        .create_node()
        .name("nemesis")
        .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 2, 2)))
        .build();
    let nemesis_wl = Workload {
        chaos: Chaos::new(child_seed(run.seed, "nemesis/chaos"), ChaosConfig::NONE),
        ..wl.clone()
    };
    let partitions = o.partitions.clamp(1, PARTITIONS_MAX);
    let safety_end = now_ms() + o.safety_ms;
    let n = node_ids.len();
    let mut wiped = false;
    while now_ms() < safety_end {
        let step = seed.range_u64(o.nemesis_step_ms.0, o.nemesis_step_ms.1);
        madsim::time::sleep(Duration::from_millis(step)).await;
        let i = seed.range_u64(0, n as u64 - 1) as usize;
        if !wiped && seed.chance(o.wipe_p) {
            // One disk wipe per run (a replaced disk): a broker-only node, or a voter while at
            // least three are configured (the pinned directory id makes it an observer, and
            // the other voters keep a majority). Only while every ISR is full, as Metadata
            // says twice `WIPE_STEADY_MS` apart (a node restarted just before leaves the ISRs
            // when its registration applies): without KIP-966's eligible leader replicas a
            // partition whose last ISR member is wiped stays offline (seed 98).
            // Every node must say so, not one: a node that does not hear the metadata
            // quorum's leader answers Metadata from its stale image (seed 245219642382).
            wiped = true;
            let eligible = i as u32 >= voter_count(&o) || voter_count(&o) >= 3;
            let mut sole = None;
            if eligible {
                let first = isrs_full_everywhere(&nemesis, &nemesis_wl, partitions).await;
                madsim::time::sleep(Duration::from_millis(WIPE_STEADY_MS)).await;
                let second = isrs_full_everywhere(&nemesis, &nemesis_wl, partitions).await;
                if let Err(why) = first.and(second) {
                    sole = Some(why);
                }
            }
            match (eligible, sole) {
                (false, _) => {
                    run.trace.event(format!(
                        "nemesis: no wipe of n{} (one of {} voters)",
                        i + 1,
                        voter_count(&o)
                    ));
                    counts.add("nemesis.wipe_skipped", 1);
                }
                (true, Some(why)) => {
                    run.trace
                        .event(format!("nemesis: no wipe of n{}: {why}", i + 1));
                    counts.add("nemesis.wipe_skipped", 1);
                }
                (true, None) => {
                    run.trace.event(format!("nemesis: wipe n{}", i + 1));
                    counts.add("nemesis.wipe", 1);
                    let registered = run.hooks.registrations(i as i32 + 1);
                    h.kill(node_ids[i]);
                    fs.shared.wipe(samsa_sim::disk::node_number(node_ids[i]));
                    madsim::time::sleep(Duration::from_millis(seed.range_u64(10, 1_000))).await;
                    h.kill(node_ids[i]);
                    h.restart(node_ids[i]);
                    // Until the new disk registered, the ISRs still name the old one; a
                    // correlated power loss of the others in that window leaves it the last
                    // member, and its new registration then takes a partition offline for good
                    // (no KIP-966 ELR; seeds 911, 5076). The next fault waits until the new
                    // incarnation registered (the broker reports it through its hooks) and
                    // every ISR is full again.
                    let started = now_ms();
                    let mut rejoined = false;
                    while now_ms() < started + WIPE_REJOIN_MS_MAX {
                        madsim::time::sleep(Duration::from_millis(WIPE_POLL_MS)).await;
                        if run.hooks.registrations(i as i32 + 1) > registered
                            && isrs_full_everywhere(&nemesis, &nemesis_wl, partitions)
                                .await
                                .is_ok()
                        {
                            rejoined = true;
                            break;
                        }
                    }
                    run.trace.event(format!(
                        "nemesis: wiped n{} rejoined every ISR: {rejoined} after {} ms",
                        i + 1,
                        now_ms() - started
                    ));
                }
            }
        } else if seed.chance(o.crash_p) {
            run.trace.event(format!("nemesis: power-fail n{}", i + 1));
            counts.add("nemesis.crash", 1);
            h.kill(node_ids[i]);
            madsim::time::sleep(Duration::from_millis(seed.range_u64(10, 3_000))).await;
            h.kill(node_ids[i]);
            h.restart(node_ids[i]);
        } else if seed.chance(o.leader_crash_p) {
            // Leader crash mid-produce: the current leader of one partition, as Metadata says,
            // power-fails while a send to that partition is in flight (if one comes soon).
            let partition = seed.range_u64(0, partitions as u64 - 1) as i32;
            let down = seed.range_u64(10, 3_000);
            let view = cluster_view(&nemesis, &nemesis_wl).await;
            let leader = match &view {
                Ok(v) => v
                    .partitions
                    .get(&partition)
                    .map(|(leader, _)| *leader)
                    .filter(|l| *l >= 1 && *l as usize <= n)
                    .ok_or_else(|| format!("partition {partition} has no known leader")),
                Err(e) => Err(e.clone()),
            };
            let lag = seed.range_u64(0, MID_PRODUCE_LAG_MS_MAX);
            let in_flight = wait_for_send(&history, partition, lag).await;
            let victim = match &leader {
                Ok(l) => {
                    run.trace.event(format!(
                        "nemesis: power-fail n{l}, leader of partition {partition} \
                         (send in flight: {in_flight})"
                    ));
                    counts.add("nemesis.leader_crash", 1);
                    *l as usize - 1
                }
                Err(e) => {
                    run.trace.event(format!(
                        "nemesis: leader of partition {partition} unknown ({e}): power-fail \
                         n{} (send in flight: {in_flight})",
                        i + 1
                    ));
                    counts.add("nemesis.leader_unknown", 1);
                    i
                }
            };
            if in_flight {
                counts.add("nemesis.mid_produce", 1);
            }
            h.kill(node_ids[victim]);
            madsim::time::sleep(Duration::from_millis(down)).await;
            h.kill(node_ids[victim]);
            h.restart(node_ids[victim]);
        } else if seed.chance(o.isr_crash_p) {
            // Correlated power loss: every member of one partition's ISR fails at the same
            // instant (all nodes when Metadata does not answer), then they restart one by one
            // in a drawn order.
            let partition = seed.range_u64(0, partitions as u64 - 1) as i32;
            let view = cluster_view(&nemesis, &nemesis_wl).await;
            let isr: Vec<usize> = match &view {
                Ok(v) => v
                    .partitions
                    .get(&partition)
                    .map(|(_, isr)| {
                        isr.iter()
                            .filter(|m| **m >= 1 && **m as usize <= n)
                            .map(|m| *m as usize - 1)
                            .collect()
                    })
                    .unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            let (mut victims, whom) = if isr.is_empty() {
                counts.add("nemesis.isr_unknown", 1);
                (
                    (0..n).collect::<Vec<_>>(),
                    "every node (ISR unknown)".to_string(),
                )
            } else {
                (isr, format!("the ISR of partition {partition}"))
            };
            let lag = seed.range_u64(0, MID_PRODUCE_LAG_MS_MAX);
            let in_flight = wait_for_send(&history, partition, lag).await;
            let names: Vec<String> = victims.iter().map(|v| format!("n{}", v + 1)).collect();
            run.trace.event(format!(
                "nemesis: power-fail {whom} at once: {} (send in flight: {in_flight})",
                names.join(",")
            ));
            counts.add("nemesis.isr_crash", 1);
            if in_flight {
                counts.add("nemesis.mid_produce", 1);
            }
            for v in &victims {
                h.kill(node_ids[*v]);
            }
            for k in (1..victims.len()).rev() {
                let j = seed.range_u64(0, k as u64) as usize;
                victims.swap(k, j);
            }
            madsim::time::sleep(Duration::from_millis(seed.range_u64(10, 3_000))).await;
            for v in &victims {
                run.trace.event(format!("nemesis: restart n{}", v + 1));
                h.kill(node_ids[*v]);
                h.restart(node_ids[*v]);
                madsim::time::sleep(Duration::from_millis(seed.range_u64(0, 1_500))).await;
            }
        } else if seed.chance(o.pause_p) {
            let d = seed.range_u64(200, 5_000);
            run.trace.event(format!("nemesis: pause n{} {d} ms", i + 1));
            counts.add("nemesis.pause", 1);
            h.pause(node_ids[i]);
            madsim::time::sleep(Duration::from_millis(d)).await;
            h.resume(node_ids[i]);
        } else if seed.chance(o.partition_p) {
            let d = seed.range_u64(500, 8_000);
            counts.add("nemesis.partition", 1);
            let peers: Vec<usize> = (0..n).filter(|&j| j != i).collect();
            let links: Vec<(usize, usize)> = match seed.range_u64(0, 3) {
                0 => {
                    run.trace
                        .event(format!("nemesis: cut n{} from its peers {d} ms", i + 1));
                    counts.add("nemesis.isolate_from_peers", 1);
                    peers.iter().flat_map(|&j| [(i, j), (j, i)]).collect()
                }
                1 => {
                    run.trace
                        .event(format!("nemesis: isolate n{} {d} ms", i + 1));
                    counts.add("nemesis.isolate", 1);
                    net.clog_node(node_ids[i]);
                    madsim::time::sleep(Duration::from_millis(d)).await;
                    net.unclog_node(node_ids[i]);
                    continue;
                }
                2 => {
                    run.trace
                        .event(format!("nemesis: one-way n{} -x-> peers {d} ms", i + 1));
                    counts.add("nemesis.one_way", 1);
                    peers.iter().map(|&j| (i, j)).collect()
                }
                _ => {
                    run.trace
                        .event(format!("nemesis: one-way peers -x-> n{} {d} ms", i + 1));
                    counts.add("nemesis.one_way", 1);
                    peers.iter().map(|&j| (j, i)).collect()
                }
            };
            for &(a, b) in &links {
                net.clog_link(node_ids[a], node_ids[b]);
            }
            madsim::time::sleep(Duration::from_millis(d)).await;
            for &(a, b) in &links {
                net.unclog_link(node_ids[a], node_ids[b]);
            }
        } else if seed.chance(o.controller_cut_p) {
            // Controller-only partition: the node's Raft traffic (its controller port, both
            // ways) fails while its client and replication traffic flows. Broker heartbeats,
            // registrations and AlterPartition go to the active controller's client port, so a
            // port cut cannot separate them from client traffic: they keep flowing.
            // Half the time the victim is the active controller (as Metadata says), which
            // must lose its leadership while its client port still answers.
            let d = seed.range_u64(500, 8_000);
            let active = if seed.chance(0.5) {
                match cluster_view(&nemesis, &nemesis_wl).await {
                    Ok(v) if v.controller >= 1 && v.controller as usize <= n => {
                        Some(v.controller as usize - 1)
                    }
                    _ => None,
                }
            } else {
                None
            };
            if active.is_some() {
                counts.add("nemesis.controller_cut_active", 1);
            }
            let victim = active.unwrap_or(i);
            run.trace.event(format!(
                "nemesis: cut n{}'s controller port {CONTROLLER_PORT} {d} ms{}",
                victim + 1,
                if active.is_some() {
                    " (the active controller)"
                } else {
                    ""
                }
            ));
            counts.add("nemesis.controller_cut", 1);
            cut.cut(node_ip(victim as u32), CONTROLLER_PORT);
            madsim::time::sleep(Duration::from_millis(d)).await;
            cut.heal(node_ip(victim as u32), CONTROLLER_PORT);
        } else if seed.chance(o.clock_jump_p) {
            let delta = seed.range_u64(0, 600_000) as i64 - 300_000;
            run.trace
                .event(format!("nemesis: clock jump n{} {delta} ms", i + 1));
            counts.add("nemesis.clock_jump", 1);
            clocks[i].jump(delta);
        }
    }

    // Liveness phase: heal everything, let in-flight operations resolve, wait for full ISRs.
    run.trace.event("liveness: heal");
    for id in &node_ids {
        fs.shared
            .set_faults(samsa_sim::disk::node_number(*id), DiskFaults::NONE);
        net.unclog_node(*id);
    }
    cut.heal_all();
    for a in &node_ids {
        for b in &node_ids {
            net.unclog_link(*a, *b);
        }
    }
    broker_chaos.set_config(ChaosConfig::NONE);
    client_chaos.set_config(ChaosConfig::NONE);
    run.hooks.set_enabled(false);
    for c in &clocks {
        c.heal();
    }
    madsim::buggify::disable();
    net.update_config(|c| c.packet_loss_rate = 0.0);
    let liveness_end = now_ms() + o.liveness_ms;
    madsim::time::sleep(Duration::from_millis(LIVENESS_NEW_OPS_MS)).await;
    wl.stop.store(true, Ordering::SeqCst);
    let mut pending = 0u64;
    for task in tasks {
        let left = liveness_end.saturating_sub(now_ms()).max(1);
        if madsim::time::timeout(Duration::from_millis(left), task)
            .await
            .is_err()
        {
            pending += 1;
        }
    }
    let observer = h
        .create_node()
        .name("final-reader")
        .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 2, 1)))
        .build();
    let settled = {
        let (wl, end) = (wl.clone(), liveness_end);
        observer
            .spawn(async move { settle(&wl, end).await })
            .await
            .unwrap_or(Err("settle task lost".into()))
    };
    run.trace.event(format!("liveness: settled {settled:?}"));
    let final_log = {
        let wl = wl.clone();
        let left = liveness_end.saturating_sub(now_ms()).max(1_000);
        let read = observer.spawn(async move { workload::final_read(wl).await });
        match madsim::time::timeout(Duration::from_millis(left), read).await {
            Ok(Ok(log)) => log,
            _ => Default::default(),
        }
    };
    run.trace
        .event(format!("final log complete={}", final_log.complete));

    // Quiescence: no client writes any more and every ISR is full. Settle once more (the final
    // read took time), freeze the nodes, and read each in-sync replica's log from its own disk.
    let mut replicas = BTreeMap::new();
    if let Ok(first) = &settled {
        let again = {
            let (wl, end) = (wl.clone(), liveness_end);
            observer
                .spawn(async move { settle(&wl, end).await })
                .await
                .unwrap_or(Err("settle task lost".into()))
        };
        match again {
            Ok(view) if view == *first => {
                for id in &node_ids {
                    h.pause(*id);
                }
                for (partition, (leader, isr, hw)) in &view.partitions {
                    let mut logs = BTreeMap::new();
                    let mut epochs = BTreeMap::new();
                    for node in isr {
                        let disk = fs
                            .shared
                            .disk(samsa_sim::disk::node_number(node_ids[*node as usize - 1]));
                        let dir = samsa_broker::partition::partition_dir(
                            TOPIC,
                            *partition,
                            view.topic_id,
                        );
                        // The raw epoch checkpoint first: opening the log repairs it.
                        let epoch_view =
                            crate::replication_obs::read_replica_epochs(disk.clone(), &dir).await;
                        epochs.insert(*node, epoch_view);
                        let log = read_local_log(disk, &dir, *hw).await;
                        run.trace.event(format!(
                            "replica n{node} partition={partition} hw={hw} log={:?}",
                            log.as_ref().map(|(leo, b)| (*leo, b.len()))
                        ));
                        logs.insert(*node, log);
                    }
                    replicas.insert(
                        *partition,
                        ReplicaLogs {
                            high_watermark: *hw,
                            leader: *leader,
                            isr: isr.clone(),
                            logs,
                            epochs,
                        },
                    );
                }
                for id in &node_ids {
                    h.resume(*id);
                }
            }
            other => run.trace.event(format!(
                "liveness: view moved after the final read: {other:?}"
            )),
        }
    }

    // Omniscient: the committed metadata log's partition states (`replication_obs.rs`).
    let partition_states =
        crate::replication_obs::partition_states_paused(&node_ids, &run.trace).await;
    crate::replication_obs::trace_states(&run.trace, &partition_states);

    let mut history = std::mem::take(&mut *history.lock().unwrap_or_else(|p| p.into_inner()));
    history.partition_states = partition_states.unwrap_or_default();
    history.final_log = final_log;
    history.liveness_pending = pending;
    history.liveness_converged = pending == 0 && history.final_log.complete && settled.is_ok();
    history.replicas = replicas;
    // What the nodes reported through their hooks (`hw_safety`, `epoch_cache_truncated`).
    history.observed = run.hooks.take_observations();
    let sim_ms = now_ms();
    counts.merge(&fs.shared.coverage());
    counts.merge(&broker_chaos.coverage());
    counts.merge(&client_chaos.coverage());
    for c in &clocks {
        counts.merge(&c.coverage());
    }
    counts.merge(&cut.coverage());
    counts.merge(&run.hooks.coverage());
    (history, sim_ms, counts)
}

/// Coverage counters of the nemesis (each reported, 0 when it never fired).
const NEMESIS_COVERAGE: &[&str] = &[
    "nemesis.wipe",
    "nemesis.wipe_skipped",
    "nemesis.crash",
    "nemesis.leader_crash",
    "nemesis.leader_unknown",
    "nemesis.isr_crash",
    "nemesis.isr_unknown",
    "nemesis.mid_produce",
    "nemesis.pause",
    "nemesis.partition",
    "nemesis.isolate_from_peers",
    "nemesis.isolate",
    "nemesis.one_way",
    "nemesis.controller_cut",
    "nemesis.controller_cut_active",
    "nemesis.clock_jump",
];

/// One node's Metadata answer as the nemesis uses it: the active controller and, per partition
/// of the topic (none while the topic is unknown), (leader, ISR).
struct ClusterView {
    controller: i32,
    partitions: BTreeMap<i32, (i32, Vec<i32>)>,
    /// Per partition, its replicas.
    replicas: BTreeMap<i32, Vec<i32>>,
}

impl ClusterView {
    /// Every partition of the topic is known and its ISR holds all its replicas.
    fn isrs_full(&self, partitions: i32) -> bool {
        (0..partitions).all(|p| {
            let (Some((_, isr)), Some(replicas)) = (self.partitions.get(&p), self.replicas.get(&p))
            else {
                return false;
            };
            let mut isr = isr.clone();
            isr.sort_unstable();
            let mut replicas = replicas.clone();
            replicas.sort_unstable();
            !replicas.is_empty() && isr == replicas
        })
    }
}

/// Asks Metadata of every node in turn (each alone, from the nemesis node); `Ok` when every
/// node answers and every answer shows every ISR full, else why not. One answer is not enough:
/// a node cut off from the metadata quorum's leader answers from its stale image. In seed
/// 245219642382 n1, back from a one-way partition but not yet hearing the leader (its stream
/// stalled in a second partition), still showed partition 1's ISR as [4, 1] after the
/// controller had shrunk it to [4] (n1 fenced); the wipe of n4 then emptied that ISR for good.
async fn isrs_full_everywhere(
    nemesis: &madsim::runtime::NodeHandle,
    wl: &Workload,
    partitions: i32,
) -> Result<(), String> {
    for addr in wl.addrs() {
        let one = Workload {
            bootstrap: vec![addr],
            ..wl.clone()
        };
        match cluster_view(nemesis, &one).await {
            Ok(v) if v.isrs_full(partitions) => {}
            Ok(v) => return Err(format!("an ISR is not full on {addr}: {:?}", v.partitions)),
            Err(e) => return Err(format!("no view from {addr}: {e}")),
        }
    }
    Ok(())
}

/// Asks Metadata from the nemesis node; bounded in time.
async fn cluster_view(
    nemesis: &madsim::runtime::NodeHandle,
    wl: &Workload,
) -> Result<ClusterView, String> {
    let wl = wl.clone();
    let ask = nemesis.spawn(async move {
        let net = ChaosNet::new(TokioNet, wl.chaos.clone());
        let mut admin = Admin::new(net, wl.addrs(), client_config("nemesis"));
        let metadata = admin
            .metadata(Some(vec![TOPIC.to_string()]))
            .await
            .map_err(|e| format!("metadata: {e}"))?;
        let topic = metadata.topic(TOPIC).filter(|t| t.error_code == 0);
        let partitions = topic
            .map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (p.partition, (p.leader_id, p.isr.clone())))
                    .collect()
            })
            .unwrap_or_default();
        let replicas = topic
            .map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (p.partition, p.replicas.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(ClusterView {
            controller: metadata.controller_id,
            partitions,
            replicas,
        })
    });
    match madsim::time::timeout(Duration::from_millis(NEMESIS_METADATA_MS), ask).await {
        Ok(Ok(view)) => view,
        Ok(Err(_)) => Err("metadata task lost".to_string()),
        Err(_) => Err("metadata timed out".to_string()),
    }
}

/// A send to `partition` is in flight (invoked, not completed).
fn send_in_flight(history: &Mutex<History>, partition: i32) -> bool {
    let h = history.lock().unwrap_or_else(|p| p.into_inner());
    h.ops.iter().rev().take(IN_FLIGHT_SCAN_MAX).any(|op| {
        op.complete_ms.is_none()
            && matches!(&op.call, Call::Send { partition: p, .. } if *p == partition)
    })
}

/// Waits (bounded) until a send to `partition` is in flight, then `lag_ms` more, so a power
/// loss lands anywhere in a send's life (before the leader's append, between the followers'
/// appends and their syncs, as the answer leaves); true if a send is in flight at the end.
async fn wait_for_send(history: &Mutex<History>, partition: i32, lag_ms: u64) -> bool {
    for _ in 0..MID_PRODUCE_POLLS_MAX {
        if send_in_flight(history, partition) {
            break;
        }
        madsim::time::sleep(Duration::from_millis(MID_PRODUCE_POLL_MS)).await;
    }
    if lag_ms > 0 {
        madsim::time::sleep(Duration::from_millis(lag_ms)).await;
    }
    send_in_flight(history, partition)
}

/// The topic once settled: its id and, per partition, (leader, ISR sorted, high watermark).
#[derive(Clone, Debug, PartialEq, Eq)]
struct SettledView {
    topic_id: uuid::Uuid,
    partitions: BTreeMap<i32, (i32, Vec<i32>, i64)>,
}

/// Polls Metadata (and the leaders' high watermarks) until every partition of the topic has a
/// leader and a full ISR, and its high watermark has reached the listed end offset.
async fn settle(wl: &Workload, end_ms: u64) -> Result<SettledView, String> {
    let net = ChaosNet::new(TokioNet, wl.chaos.clone());
    let mut admin = Admin::new(net.clone(), wl.addrs(), client_config("settle"));
    let mut consumer =
        samsa_net::client::Consumer::new(net, wl.addrs(), client_config("settle-hw"));
    let partitions = wl.opts.partitions.clamp(1, PARTITIONS_MAX);
    let rf = wl.opts.replication_factor.max(1) as usize;
    let mut last = String::from("no answer");
    for _ in 0..SETTLE_POLLS_MAX {
        if now_ms() >= end_ms {
            break;
        }
        madsim::time::sleep(Duration::from_millis(SETTLE_POLL_MS)).await;
        let metadata = match admin.metadata(Some(vec![TOPIC.to_string()])).await {
            Ok(m) => m,
            Err(e) => {
                last = format!("metadata: {e}");
                continue;
            }
        };
        let Some(topic) = metadata.topic(TOPIC).filter(|t| t.error_code == 0) else {
            // The producers may have given up creating it while the controller refused
            // (INVALID_REPLICATION_FACTOR while a broker was fenced, seed 1765): create it now.
            last = "topic unknown".into();
            wl.ensure_topic("settle-admin".to_string()).await;
            continue;
        };
        let mut view = SettledView {
            topic_id: topic.topic_id,
            partitions: BTreeMap::new(),
        };
        for p in &topic.partitions {
            let mut isr = p.isr.clone();
            isr.sort_unstable();
            view.partitions.insert(p.partition, (p.leader_id, isr, -1));
        }
        let full = view.partitions.len() == partitions as usize
            && view
                .partitions
                .values()
                .all(|(leader, isr, _)| *leader > 0 && isr.len() == rf);
        if !full {
            last = format!("not full: {:?}", view.partitions);
            continue;
        }
        // Every node must see the same leaders, epochs and ISRs: a node that was cut off may
        // still believe in an old epoch (its metadata quorum catches up later) and would answer
        // Metadata and fetches as the leader it was (seeds 804, 861).
        let mut agreed = None;
        let mut disagree = None;
        for addr in wl.addrs() {
            let net = ChaosNet::new(TokioNet, wl.chaos.clone());
            let mut one = Admin::new(net, vec![addr], client_config("settle-one"));
            let seen = match one.metadata(Some(vec![TOPIC.to_string()])).await {
                Ok(m) => m.topic(TOPIC).map(|t| {
                    let mut parts: Vec<(i32, i32, i32, Vec<i32>)> = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let mut isr = p.isr.clone();
                            isr.sort_unstable();
                            (p.partition, p.leader_id, p.leader_epoch, isr)
                        })
                        .collect();
                    parts.sort_unstable();
                    parts
                }),
                Err(_) => None,
            };
            match (&agreed, seen) {
                (_, None) => disagree = Some(format!("{addr}: no view")),
                (None, Some(v)) => agreed = Some(v),
                (Some(a), Some(v)) if *a != v => disagree = Some(format!("{addr}: {v:?}")),
                _ => {}
            }
        }
        let same_as_view = agreed.as_ref().is_some_and(|a| {
            a.len() == view.partitions.len()
                && a.iter().all(|(p, leader, _, isr)| {
                    view.partitions
                        .get(p)
                        .is_some_and(|(l, i, _)| l == leader && i == isr)
                })
        });
        if let Some(d) = disagree {
            last = format!("nodes disagree: {d}");
            continue;
        }
        if !same_as_view {
            last = format!("view moved: {agreed:?}");
            continue;
        }
        // Every partition's high watermark must have reached its end (the producers stopped).
        let mut caught_up = true;
        for (partition, entry) in view.partitions.iter_mut() {
            let hw = consumer.list_offsets(TOPIC, *partition, -1).await;
            match hw {
                Ok(ok) => entry.2 = ok.offset,
                Err(e) => {
                    last = format!("list offsets {partition} (leader {}): {e}", entry.0);
                    caught_up = false;
                }
            }
        }
        if caught_up {
            return Ok(view);
        }
    }
    // Each node's own view, for the trace of a run that did not settle.
    for addr in wl.addrs() {
        let net = ChaosNet::new(TokioNet, wl.chaos.clone());
        let mut one = Admin::new(net, vec![addr], client_config("settle-one"));
        let seen = match one.metadata(Some(vec![TOPIC.to_string()])).await {
            Ok(m) => format!(
                "controller={} brokers={:?} {:?}",
                m.controller_id,
                m.brokers.iter().map(|b| b.node_id).collect::<Vec<_>>(),
                m.topic(TOPIC).map(|t| t
                    .partitions
                    .iter()
                    .map(|p| (p.partition, p.leader_id, p.leader_epoch, p.isr.clone()))
                    .collect::<Vec<_>>())
            ),
            Err(e) => e.to_string(),
        };
        wl.trace.event(format!("settle: {addr} sees {seen}"));
    }
    Err(last)
}

/// One replica's local log read from its own disk: (log end offset, stored bytes below `hw`).
async fn read_local_log(disk: SimDisk, dir: &str, hw: i64) -> Result<(i64, Vec<u8>), String> {
    let (log, _) =
        samsa_storage::PartitionLog::open(disk, dir, samsa_storage::LogConfig::default())
            .await
            .map_err(|e| format!("open {dir}: {e}"))?;
    let leo = log.log_end_offset();
    let mut bytes = Vec::new();
    let mut at = log.log_start_offset();
    for _ in 0..REPLICA_READS_MAX {
        if at >= hw.min(leo) {
            return Ok((leo, bytes));
        }
        let read = log
            .read(at, REPLICA_READ_BYTES, Some(hw))
            .await
            .map_err(|e| format!("read {dir} at {at}: {e}"))?;
        if read.bytes.is_empty() || read.next_offset <= at {
            return Ok((leo, bytes));
        }
        bytes.extend_from_slice(&read.bytes);
        at = read.next_offset;
    }
    Err(format!("{dir}: more than {REPLICA_READS_MAX} reads"))
}
