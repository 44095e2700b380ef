//! Running one seed under madsim: builds the runtime (seeded, with the `SimFs` disk plugin),
//! starts the broker on its own node with a `SimDisk`, `SimClock`, `ChaosNet` and `SimHooks`,
//! starts the client workload on client nodes, drives the nemesis through the safety phase, heals
//! everything for the liveness phase, reads the final log and runs the scenario's checks.
//! Panics anywhere in the simulation are caught and reported as `no_panic`. Never shares state
//! between runs except the deliberate leak of the `nondeterminism_canary` mutant.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::net::NetSim;
use madsim::runtime::{Handle, Runtime};
use samsa_broker::NodeConfig;
use samsa_net::{HookSink, TokioNet};
use samsa_sim::chaos::{Chaos, ChaosConfig, ChaosNet};
use samsa_sim::check::{self, CheckFailure};
use samsa_sim::clock::SimClock;
use samsa_sim::coverage::Coverage;
use samsa_sim::disk::{DiskFaults, SimDisk, SimFs};
use samsa_sim::history::History;
use samsa_sim::hooks::SimHooks;
use samsa_sim::seed::{child_seed, Seed};
use samsa_sim::trace::Trace;

use crate::workload::{self, Workload};
use crate::{options_for, RunOutcome, Scenario, SimOptions, RUN_SIM_MS_MAX};

pub const BROKER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const BROKER_PORT: u16 = 9092;
/// How long after healing clients may still start new operations.
pub const LIVENESS_NEW_OPS_MS: u64 = 3_000;
/// Client nodes a run may create (producers + consumers + the final reader).
pub const CLIENT_NODES_MAX: u32 = 16;

/// The deliberate leak of the `nondeterminism_canary` mutant: process-global, so two runs of the
/// same seed in one process see different values. Nothing else in the simulator may do this.
static CANARY_RUNS: AtomicU64 = AtomicU64::new(0);

/// Runs `seed` of `scenario`. `keep_trace` keeps the trace lines (for `--trace` and reports).
///
/// Every run gets a fresh OS thread, so nothing thread-local outlives a run. In particular madsim
/// can only make std's `RandomState` (the iteration order of every std `HashMap` in madsim and in
/// our dependencies) a function of the seed the first time a thread builds one; std keeps the
/// keys per thread and counts them up after that, so a second run on the same thread would see
/// other hash orders than a fresh process does.
pub fn run_seed(
    scenario: &Scenario,
    seed: u64,
    mutant: Option<&str>,
    keep_trace: bool,
) -> RunOutcome {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name(format!("sim-{seed}"))
            .spawn_scoped(s, || {
                run_seed_on_this_thread(scenario, seed, mutant, keep_trace)
            })
            .expect("spawn a simulation thread")
            .join()
            .unwrap_or_else(|payload| std::panic::resume_unwind(payload))
    })
}

fn run_seed_on_this_thread(
    scenario: &Scenario,
    seed: u64,
    mutant: Option<&str>,
    keep_trace: bool,
) -> RunOutcome {
    let opts = options_for(scenario, seed);
    let mut config = madsim::Config::default();
    config.net.packet_loss_rate = opts.packet_loss;
    let (lo, hi) = opts.latency_ms;
    config.net.send_latency = Duration::from_millis(lo)..Duration::from_millis(hi.max(lo + 1));
    let mut rt = Runtime::with_seed_and_config(seed, config);
    rt.add_simulator::<SimFs>();
    rt.set_time_limit(Duration::from_millis(RUN_SIM_MS_MAX));

    let trace = Trace::new(keep_trace);
    let hooks = SimHooks::new(seed, opts.buggify, mutant.map(str::to_string));
    if opts.clean_now_p > 0.0 {
        hooks.set_hot("broker.cleaner.clean_now", opts.clean_now_p);
    }
    let run = Run {
        seed,
        opts: opts.clone(),
        trace: trace.clone(),
        hooks: hooks.clone(),
    };
    // Host time, read outside the simulation (before and after `block_on`), only to report
    // the CPU cost per seed; nothing inside the run can see it.
    let wall = std::time::Instant::now();
    let result = if scenario.name == crate::quorum::SCENARIO {
        block_on_caught(rt, crate::quorum::supervise(run))
    } else if scenario.name == crate::replication::SCENARIO
        || scenario.name == crate::replication::GROUPS_SCENARIO
    {
        block_on_caught(rt, crate::replication::supervise(run))
    } else {
        block_on_caught(rt, supervise(run))
    };
    let wall_us = u64::try_from(wall.elapsed().as_micros()).unwrap_or(u64::MAX);

    let mut outcome = RunOutcome {
        scenario: scenario.name.to_string(),
        seed,
        mutant: mutant.map(str::to_string),
        config_line: opts.describe(),
        wall_us,
        ..RunOutcome::default()
    };
    match result {
        Ok((history, sim_ms, coverage)) => {
            outcome.failures = check::run(&history, scenario.checks);
            outcome.sim_ms = sim_ms;
            outcome.coverage = coverage;
        }
        Err(message) => {
            trace.record(u64::MAX, format!("PANIC {message}"));
            outcome.failures = vec![CheckFailure {
                check: "no_panic",
                message,
            }];
        }
    }
    for f in &outcome.failures {
        trace.record(
            outcome.sim_ms,
            format!("CHECK FAILED {}: {}", f.check, f.message),
        );
    }
    outcome.trace_hash = trace.hash();
    outcome.trace_lines = trace.lines();
    outcome
}

/// Runs `fut` to completion; a panic anywhere in the simulation (any node's task, or the
/// supervisor) comes back as `Err(message)` instead of unwinding into the runner.
pub fn block_on_caught<F: std::future::Future>(rt: Runtime, fut: F) -> Result<F::Output, String> {
    match catch_unwind(AssertUnwindSafe(|| rt.block_on(fut))) {
        Ok(v) => {
            drop(rt);
            Ok(v)
        }
        Err(payload) => {
            // A panicked runtime may panic again on drop: leak it (the child process exits soon).
            std::mem::forget(rt);
            Err(panic_message(&payload))
        }
    }
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        return (*s).to_string();
    }
    if let Some(s) = payload.downcast_ref::<String>() {
        return s.clone();
    }
    "panic with a non-string payload".to_string()
}

/// Everything the runner hands one seed's supervisor (every scenario kind).
#[derive(Clone)]
pub(crate) struct Run {
    pub(crate) seed: u64,
    pub(crate) opts: SimOptions,
    pub(crate) trace: Trace,
    pub(crate) hooks: Arc<SimHooks>,
}

fn now_ms() -> u64 {
    samsa_sim::sim_now_ms()
}

/// The supervisor (madsim node 0, no IP): builds the nodes, runs both phases, returns the
/// history, the simulated duration and the coverage counters.
async fn supervise(run: Run) -> (History, u64, Coverage) {
    let h = Handle::current();
    let fs = madsim::plugin::simulator::<SimFs>();
    fs.shared.set_run_seed(run.seed);
    fs.shared.set_trace(run.trace.clone());
    if run.opts.net_buggify {
        madsim::buggify::enable();
    }
    if run.hooks.mutant("nondeterminism_canary") {
        let n = CANARY_RUNS.fetch_add(1, Ordering::Relaxed);
        let probe = Box::new(n);
        let address = &*probe as *const u64 as usize;
        run.trace.event(format!("canary run={n} probe={address:x}"));
    }
    let mut seed = Seed::new(run.seed).child("nemesis");
    let clock = SimClock::new(run.opts.clock_offset_ms);
    clock.set_drift_ppm(run.opts.clock_drift_ppm);
    let broker_chaos = Chaos::new(child_seed(run.seed, "broker/chaos"), run.opts.chaos.clone());
    let client_chaos = Chaos::new(child_seed(run.seed, "client/chaos"), run.opts.chaos.clone());
    let broker_up = Arc::new(AtomicBool::new(false));
    let broker_addr = SocketAddr::new(IpAddr::V4(BROKER_IP), BROKER_PORT);

    let broker = {
        let (run, clock, chaos, up) = (
            run.clone(),
            clock.clone(),
            broker_chaos.clone(),
            broker_up.clone(),
        );
        h.create_node()
            .name("broker")
            .ip(IpAddr::V4(BROKER_IP))
            .init(move || {
                let (run, clock, chaos, up) =
                    (run.clone(), clock.clone(), chaos.clone(), up.clone());
                async move {
                    let cfg = broker_config(&run, broker_addr);
                    let disk = SimDisk::current();
                    let net = ChaosNet::new(TokioNet, chaos);
                    up.store(true, Ordering::SeqCst);
                    run.trace.event("broker start");
                    let result = samsa_broker::run_node(
                        cfg,
                        disk,
                        clock,
                        net,
                        run.hooks.hooks(),
                        std::future::pending::<()>(),
                    )
                    .await;
                    up.store(false, Ordering::SeqCst);
                    match result {
                        Ok(()) => run.trace.event("broker exited"),
                        Err(e) => run.trace.event(format!("broker halted: {e}")),
                    }
                }
            })
            .build()
    };
    let broker_id = broker.id();
    let broker_disk = samsa_sim::disk::node_number(broker_id);
    fs.shared.set_faults(broker_disk, run.opts.disk.clone());

    let history = Arc::new(Mutex::new(History {
        fsync_policy: run.opts.flush_policy == "fsync",
        corruption_in_atlas: run.opts.corruption_in_atlas,
        delete_retention_ms: run.opts.compacted.then_some(run.opts.delete_retention_ms),
        ..History::default()
    }));
    let wl = Workload {
        seed: run.seed,
        broker: broker_addr,
        chaos: client_chaos.clone(),
        history: history.clone(),
        trace: run.trace.clone(),
        opts: run.opts.clone(),
        stop: Arc::new(AtomicBool::new(false)),
        bootstrap: Vec::new(),
    };
    let mut client_ids = Vec::new();
    let mut tasks = Vec::new();
    let actors = (run.opts.producers + run.opts.consumers + run.opts.group_members)
        .min(CLIENT_NODES_MAX - 1);
    for i in 0..actors {
        let node = h
            .create_node()
            .name(format!("client{i}"))
            .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 1, (i + 1) as u8)))
            .build();
        client_ids.push(node.id());
        let wl = wl.clone();
        let (producers, consumers) = (run.opts.producers, run.opts.consumers);
        let task = if i < producers {
            node.spawn(async move { workload::producer(wl, i).await })
        } else if i >= producers + consumers {
            node.spawn(async move { crate::groups::member(wl, i - producers - consumers).await })
        } else {
            node.spawn(async move { workload::consumer(wl, i - run.opts.producers).await })
        };
        tasks.push(task);
    }

    // Safety phase: faults.
    let net = NetSim::current();
    let mut counts = Coverage::default();
    for name in [
        "nemesis.crash",
        "nemesis.pause",
        "nemesis.partition",
        "nemesis.clock_jump",
    ] {
        counts.add(name, 0);
    }
    let safety_end = now_ms() + run.opts.safety_ms;
    let o = &run.opts;
    while now_ms() < safety_end {
        let step = seed.range_u64(o.nemesis_step_ms.0, o.nemesis_step_ms.1);
        madsim::time::sleep(Duration::from_millis(step)).await;
        if seed.chance(o.crash_p) {
            run.trace.event("nemesis: power-fail broker");
            h.kill(broker_id);
            counts.add("nemesis.crash", 1);
            let down = seed.range_u64(10, 2_000);
            madsim::time::sleep(Duration::from_millis(down)).await;
            h.restart(broker_id);
        } else if seed.chance(o.pause_p) {
            let d = seed.range_u64(200, 4_000);
            run.trace.event(format!("nemesis: pause broker {d} ms"));
            counts.add("nemesis.pause", 1);
            h.pause(broker_id);
            madsim::time::sleep(Duration::from_millis(d)).await;
            h.resume(broker_id);
        } else if seed.chance(o.partition_p) && !client_ids.is_empty() {
            let i = seed.range_u64(0, client_ids.len() as u64 - 1) as usize;
            let d = seed.range_u64(200, 5_000);
            run.trace
                .event(format!("nemesis: partition client{i} {d} ms"));
            counts.add("nemesis.partition", 1);
            net.clog_link(client_ids[i], broker_id);
            net.clog_link(broker_id, client_ids[i]);
            madsim::time::sleep(Duration::from_millis(d)).await;
            net.unclog_link(client_ids[i], broker_id);
            net.unclog_link(broker_id, client_ids[i]);
        } else if seed.chance(o.clock_jump_p) {
            let delta = seed.range_u64(0, 600_000) as i64 - 300_000;
            run.trace.event(format!("nemesis: clock jump {delta} ms"));
            counts.add("nemesis.clock_jump", 1);
            clock.jump(delta);
        }
    }

    // Liveness phase: heal everything, restart the broker on a healed disk, require progress.
    run.trace.event("liveness: heal");
    fs.shared.set_faults(broker_disk, DiskFaults::NONE);
    broker_chaos.set_config(ChaosConfig::NONE);
    client_chaos.set_config(ChaosConfig::NONE);
    run.hooks.set_enabled(false);
    clock.heal();
    madsim::buggify::disable();
    net.update_config(|c| c.packet_loss_rate = 0.0);
    for id in &client_ids {
        net.unclog_link(*id, broker_id);
        net.unclog_link(broker_id, *id);
    }
    h.kill(broker_id);
    h.restart(broker_id);
    let liveness_end = now_ms() + run.opts.liveness_ms;
    // A few operations after healing, then nothing new: everything in flight must resolve.
    madsim::time::sleep(Duration::from_millis(LIVENESS_NEW_OPS_MS)).await;
    wl.stop.store(true, Ordering::SeqCst);
    let mut pending = 0u64;
    for task in tasks {
        let left = liveness_end.saturating_sub(now_ms()).max(1);
        match madsim::time::timeout(Duration::from_millis(left), task).await {
            Ok(_) => {}
            Err(_) => pending += 1,
        }
    }
    let reader = h
        .create_node()
        .name("final-reader")
        .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 2, 1)))
        .build();
    let left = liveness_end.saturating_sub(now_ms()).max(1_000);
    let final_log = {
        let wl = wl.clone();
        let read = reader.spawn(async move { workload::final_read(wl).await });
        match madsim::time::timeout(Duration::from_millis(left), read).await {
            Ok(Ok(log)) => log,
            _ => Default::default(),
        }
    };
    run.trace
        .event(format!("final log complete={}", final_log.complete));

    let mut history = std::mem::take(
        &mut *history
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    );
    history.final_log = final_log;
    history.liveness_pending = pending;
    history.liveness_converged = pending == 0 && history.final_log.complete;
    let sim_ms = now_ms();
    counts.merge(&fs.shared.coverage());
    counts.merge(&broker_chaos.coverage());
    counts.merge(&client_chaos.coverage());
    counts.merge(&clock.coverage());
    counts.merge(&run.hooks.coverage());
    (history, sim_ms, counts)
}

fn broker_config(run: &Run, addr: SocketAddr) -> NodeConfig {
    NodeConfig {
        node_id: 1,
        listen: addr.to_string(),
        data_dir: "data".to_string(),
        flush_policy: run.opts.flush_policy.to_string(),
        segment_bytes: run.opts.segment_bytes,
        num_partitions: run.opts.partitions,
        seed: child_seed(run.seed, "broker/config"),
        ..NodeConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_a_node_is_caught_and_reported() {
        let rt = Runtime::with_seed_and_config(1, madsim::Config::default());
        let result = block_on_caught(rt, async {
            let h = Handle::current();
            let node = h.create_node().name("victim").build();
            let task = node.spawn(async {
                madsim::time::sleep(Duration::from_millis(5)).await;
                panic!("invariant broken: hw regressed");
            });
            let _ = task.await;
            madsim::time::sleep(Duration::from_secs(1)).await;
        });
        let message = result.expect_err("the panic must surface");
        assert!(message.contains("hw regressed"), "{message}");

        let rt = Runtime::with_seed_and_config(1, madsim::Config::default());
        assert_eq!(block_on_caught(rt, async { 7 }), Ok(7));
    }
}
