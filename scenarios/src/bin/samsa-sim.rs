//! `samsa-sim`, the scenario runner: `list`, `run` (replay one seed bit for bit, optionally with
//! its full trace), `sweep` (fresh seeds in child processes, progress, summary, coverage table,
//! regressions, determinism double-runs), `mutants` (every planted bug must be caught), `smoke`,
//! and the internal `batch` mode the parent uses to run seeds in a child process.
//! Built without `--cfg madsim` it can only `list` and explains how to build the real thing.
//! Never runs two seeds' simulations in one runtime; never reads host time inside a run.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use samsa_scenarios::{
    all, find, mutant_budget_factor, mutant_targets, RunOutcome, MUTANT_SEED_BUDGET,
};
use samsa_sim::coverage::CoverageTable;
use samsa_sim::hooks::MUTANTS;

/// Seeds per child process (small enough that a child's output fits a pipe buffer).
const BATCH_SEEDS_MAX: u64 = 8;
/// Double-run one seed in this many (>= 5 %).
const DOUBLE_EVERY: u64 = 16;
/// Child processes at once, whatever `--jobs` says.
const JOBS_MAX: usize = 64;
/// Seeds a sweep may be asked for.
const SWEEP_SEEDS_MAX: u64 = 10_000_000;
/// Lines of `regressions.txt` read.
const REGRESSIONS_MAX: usize = 10_000;

const BUILD_HINT: &str = "samsa-sim was built without --cfg madsim, so it cannot run scenarios.\n\
Build and run it with:\n  ci/sim.sh <list|run|sweep|mutants|smoke> ...\nor by hand:\n  \
RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/sim cargo build --profile sim -p \
samsa-scenarios\n  target/sim/sim/samsa-sim list";

#[derive(Parser)]
#[command(name = "samsa-sim", about = "Samsa's deterministic simulation runner")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Scenarios and mutants.
    List,
    /// Replay one seed bit for bit.
    Run {
        scenario: String,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        mutant: Option<String>,
        /// Print the full trace (simulated timestamps only) and the broker's logs.
        #[arg(long)]
        trace: bool,
        /// Run the seed twice and compare trace hashes (replays a determinism failure).
        #[arg(long)]
        twice: bool,
    },
    /// Fresh seeds across every scenario, plus the regression seeds.
    Sweep {
        #[arg(long)]
        seeds: Option<u64>,
        #[arg(long)]
        minutes: Option<f64>,
        #[arg(long)]
        jobs: Option<usize>,
        /// Seed base (ci/sim.sh derives it from the commit hash).
        #[arg(long)]
        base: Option<u64>,
    },
    /// Each scenario with seeds 0..32, plus the regression seeds.
    Smoke {
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Every planted bug must be caught within its seed budget (`--budget` times the bug's
    /// factor: 10 for the rare cluster interleavings, else 1).
    Mutants {
        #[arg(long, default_value_t = MUTANT_SEED_BUDGET)]
        budget: u64,
        #[arg(long)]
        jobs: Option<usize>,
        /// Only this mutant.
        #[arg(long)]
        only: Option<String>,
    },
    /// Internal: run seeds in this process and print one RESULT line each.
    Batch {
        #[arg(long)]
        scenario: String,
        /// Comma-separated seeds.
        #[arg(long)]
        seeds: String,
        #[arg(long)]
        mutant: Option<String>,
        /// Run every seed twice and compare trace hashes.
        #[arg(long)]
        double_all: bool,
        /// Run seeds divisible by this twice.
        #[arg(long, default_value_t = DOUBLE_EVERY)]
        double_every: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::List => list(),
        Cmd::Run {
            scenario,
            seed,
            mutant,
            trace,
            twice,
        } => run_one(&scenario, seed, mutant, trace, twice),
        Cmd::Batch {
            scenario,
            seeds,
            mutant,
            double_all,
            double_every,
        } => batch(&scenario, &seeds, mutant, double_all, double_every),
        Cmd::Sweep {
            seeds,
            minutes,
            jobs,
            base,
        } => {
            let base = base
                .or_else(|| {
                    std::env::var("SAMSA_SIM_BASE")
                        .ok()
                        .and_then(|v| v.parse().ok())
                })
                .unwrap_or(0);
            let budget = match (seeds, minutes) {
                (_, Some(m)) => Budget::Minutes(m),
                (Some(n), None) => Budget::Seeds(n.min(SWEEP_SEEDS_MAX)),
                (None, None) => Budget::Seeds(200),
            };
            sweep(budget, jobs, base, "sweep")
        }
        Cmd::Smoke { jobs } => sweep(Budget::Smoke, jobs, 0, "smoke"),
        Cmd::Mutants { budget, jobs, only } => mutants(budget, jobs, only),
    }
}

fn list() -> ExitCode {
    println!("scenarios:");
    for s in all() {
        println!(
            "  {:<20} {}",
            s.name,
            s.about.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        println!("  {:<20} checks: {}", "", s.checks.join(", "));
        if samsa_scenarios::NOT_IN_ROTATION.contains(&s.name) {
            println!(
                "  {:<20} (by name only: not in sweep or smoke rotation)",
                ""
            );
        }
    }
    println!("mutants:");
    for m in MUTANTS {
        println!("  {:<26} hunted in: {}", m, mutant_targets(m).join(", "));
    }
    if !cfg!(madsim) {
        println!("\n{BUILD_HINT}");
    }
    ExitCode::SUCCESS
}

fn replay_command(o: &RunOutcome) -> String {
    let mut cmd = format!("ci/sim.sh run {} --seed {}", o.scenario, o.seed);
    if let Some(m) = &o.mutant {
        cmd.push_str(&format!(" --mutant {m}"));
    }
    if o.failures.iter().any(|f| f.check == "determinism") {
        cmd.push_str(" --twice");
    }
    cmd.push_str(" --trace");
    cmd
}

#[cfg(not(madsim))]
fn run_seed_here(_: &str, _: u64, _: Option<&str>, _: bool) -> Option<RunOutcome> {
    eprintln!("{BUILD_HINT}");
    None
}

#[cfg(madsim)]
fn run_seed_here(
    scenario: &str,
    seed: u64,
    mutant: Option<&str>,
    keep: bool,
) -> Option<RunOutcome> {
    let Some(s) = find(scenario) else {
        eprintln!("unknown scenario {scenario:?} (see `list`)");
        return None;
    };
    Some(samsa_scenarios::sim_run::run_seed(s, seed, mutant, keep))
}

fn check_mutant(mutant: &Option<String>) -> bool {
    match mutant {
        Some(m) if !MUTANTS.contains(&m.as_str()) => {
            eprintln!("unknown mutant {m:?} (see `list`)");
            false
        }
        _ => true,
    }
}

fn run_one(
    scenario: &str,
    seed: u64,
    mutant: Option<String>,
    trace: bool,
    twice: bool,
) -> ExitCode {
    if !check_mutant(&mutant) || find(scenario).is_none() {
        if find(scenario).is_none() {
            eprintln!("unknown scenario {scenario:?} (see `list`)");
        }
        return ExitCode::from(2);
    }
    if trace {
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string());
        let _ = tracing_subscriber::fmt()
            .without_time()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let Some(mut o) = run_seed_here(scenario, seed, mutant.as_deref(), true) else {
        return ExitCode::from(2);
    };
    if twice {
        if let Some(again) = run_seed_here(scenario, seed, mutant.as_deref(), false) {
            if again.trace_hash != o.trace_hash {
                o.failures.insert(
                    0,
                    samsa_sim::check::CheckFailure {
                        check: "determinism",
                        message: format!(
                            "trace hash {:016x} then {:016x}",
                            o.trace_hash, again.trace_hash
                        ),
                    },
                );
            }
        }
    }
    println!(
        "scenario={} seed={} mutant={}",
        o.scenario,
        o.seed,
        o.mutant.as_deref().unwrap_or("-")
    );
    println!("config: {}", o.config_line);
    if trace {
        for line in &o.trace_lines {
            println!("{line}");
        }
    }
    println!(
        "trace_hash={:016x} sim_s={:.1} wall_ms={:.1}",
        o.trace_hash,
        o.sim_ms as f64 / 1000.0,
        o.wall_us as f64 / 1000.0
    );
    if o.passed() {
        println!("PASS");
        ExitCode::SUCCESS
    } else {
        for f in &o.failures {
            println!("FAIL {}: {}", f.check, f.message);
        }
        println!("REPRODUCE: {}", replay_command(&o));
        ExitCode::from(1)
    }
}

fn batch(
    scenario: &str,
    seeds: &str,
    mutant: Option<String>,
    double_all: bool,
    double_every: u64,
) -> ExitCode {
    if !check_mutant(&mutant) {
        return ExitCode::from(2);
    }
    // Panics are caught and reported per seed; keep stderr quiet.
    std::panic::set_hook(Box::new(|_| {}));
    for token in seeds.split(',').filter(|t| !t.is_empty()) {
        let Ok(seed) = token.parse::<u64>() else {
            continue;
        };
        let Some(mut o) = run_seed_here(scenario, seed, mutant.as_deref(), false) else {
            return ExitCode::from(2);
        };
        let double = double_all || (double_every > 0 && seed % double_every == 0);
        if double {
            if let Some(again) = run_seed_here(scenario, seed, mutant.as_deref(), false) {
                if again.trace_hash != o.trace_hash {
                    o.failures.insert(
                        0,
                        samsa_sim::check::CheckFailure {
                            check: "determinism",
                            message: format!(
                                "trace hash {:016x} then {:016x}",
                                o.trace_hash, again.trace_hash
                            ),
                        },
                    );
                }
                o.coverage.add("determinism.double_run", 1);
            }
        }
        // Locked per line, never across a run: runs happen on their own threads and the broker
        // under test prints to stdout too.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", o.encode());
        let _ = out.flush();
    }
    ExitCode::SUCCESS
}

/// One unit of work for a child process.
#[derive(Clone, Debug)]
struct Job {
    scenario: String,
    seeds: Vec<u64>,
    mutant: Option<String>,
    double_all: bool,
    double_every: u64,
}

struct Running {
    job: Job,
    child: Child,
}

/// Runs jobs in up to `jobs` child processes; calls `on_result` for each seed's outcome and
/// stops dispatching when it returns false. Children that die without output are reported as
/// failures of every seed they held (a crash of the runner itself is a failure too).
fn run_jobs(
    mut queue: impl FnMut() -> Option<Job>,
    jobs: usize,
    mut on_result: impl FnMut(RunOutcome) -> bool,
) {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot find own executable: {e}");
            return;
        }
    };
    let mut running: Vec<Running> = Vec::new();
    let mut more = true;
    loop {
        while more && running.len() < jobs {
            let Some(job) = queue() else {
                more = false;
                break;
            };
            let seeds: Vec<String> = job.seeds.iter().map(u64::to_string).collect();
            let mut cmd = Command::new(&exe);
            cmd.arg("batch")
                .arg("--scenario")
                .arg(&job.scenario)
                .arg("--seeds")
                .arg(seeds.join(","));
            cmd.arg("--double-every").arg(job.double_every.to_string());
            if job.double_all {
                cmd.arg("--double-all");
            }
            if let Some(m) = &job.mutant {
                cmd.arg("--mutant").arg(m);
            }
            cmd.stdout(Stdio::piped())
                .stderr(Stdio::null())
                .stdin(Stdio::null());
            match cmd.spawn() {
                Ok(child) => running.push(Running { job, child }),
                Err(e) => {
                    eprintln!("cannot spawn a child: {e}");
                    more = false;
                }
            }
        }
        if running.is_empty() {
            return;
        }
        // The parent runs no simulation: a host sleep between child polls is fine here.
        std::thread::sleep(Duration::from_millis(5));
        let mut i = 0;
        while i < running.len() {
            let done = matches!(running[i].child.try_wait(), Ok(Some(_)) | Err(_));
            if !done {
                i += 1;
                continue;
            }
            let mut r = running.swap_remove(i);
            let mut text = String::new();
            if let Some(mut out) = r.child.stdout.take() {
                let _ = out.read_to_string(&mut text);
            }
            let mut seen = BTreeMap::new();
            for line in text.lines() {
                if let Some(o) = RunOutcome::decode(line) {
                    seen.insert(o.seed, ());
                    if !on_result(o) {
                        more = false;
                    }
                }
            }
            for seed in r.job.seeds.iter().filter(|s| !seen.contains_key(s)) {
                let o = RunOutcome {
                    scenario: r.job.scenario.clone(),
                    seed: *seed,
                    mutant: r.job.mutant.clone(),
                    failures: vec![samsa_sim::check::CheckFailure {
                        check: "no_panic",
                        message: "the child process died without reporting this seed".into(),
                    }],
                    ..RunOutcome::default()
                };
                if !on_result(o) {
                    more = false;
                }
            }
        }
    }
}

fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The regression seeds, compiled in (`scenario seed  # comment` per line): `ci/sim.sh` always
/// rebuilds, so an edit to the file takes effect on the next run.
const REGRESSIONS: &str = include_str!("../../seeds/regressions.txt");

fn read_regressions() -> Vec<(String, u64)> {
    REGRESSIONS
        .lines()
        .take(REGRESSIONS_MAX)
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("").trim();
            let mut parts = line.split_whitespace();
            let scenario = parts.next()?;
            let seed = parts.next()?.parse().ok()?;
            find(scenario).map(|s| (s.name.to_string(), seed))
        })
        .collect()
}

enum Budget {
    Seeds(u64),
    Minutes(f64),
    Smoke,
}

#[derive(Default)]
struct ScenarioStats {
    seeds: u64,
    failures: u64,
    wall_us: u64,
    sim_ms: u64,
}

fn sweep(budget: Budget, jobs: Option<usize>, base: u64, label: &str) -> ExitCode {
    if !cfg!(madsim) {
        eprintln!("{BUILD_HINT}");
        return ExitCode::from(2);
    }
    let jobs = jobs.unwrap_or_else(default_jobs).clamp(1, JOBS_MAX);
    let scenarios: Vec<&str> = samsa_scenarios::in_rotation().map(|s| s.name).collect();
    let regs = read_regressions();
    let started = Instant::now();
    // Work list: regressions first, then fresh seeds round-robin over the scenarios.
    let mut reg_jobs: Vec<Job> = regs
        .iter()
        .map(|(s, seed)| Job {
            scenario: s.clone(),
            seeds: vec![*seed],
            mutant: None,
            // Some regressions are determinism failures: every one runs twice.
            double_all: true,
            double_every: 0,
        })
        .collect();
    reg_jobs.reverse();
    let total: Option<u64> = match budget {
        Budget::Seeds(n) => Some(n),
        Budget::Smoke => Some(32 * scenarios.len() as u64),
        Budget::Minutes(_) => None,
    };
    let deadline = match budget {
        Budget::Minutes(m) => Some(started + Duration::from_secs_f64(m.max(0.0) * 60.0)),
        _ => None,
    };
    let smoke = matches!(budget, Budget::Smoke);
    let mut next_index = 0u64;
    let queue = || {
        if let Some(j) = reg_jobs.pop() {
            return Some(j);
        }
        if let Some(t) = total {
            if next_index >= t {
                return None;
            }
        }
        if let Some(d) = deadline {
            if Instant::now() >= d {
                return None;
            }
        }
        // One scenario per batch; consecutive batches rotate scenarios.
        let k = scenarios.len() as u64;
        let batch_no = next_index / BATCH_SEEDS_MAX;
        let scenario = scenarios[(batch_no % k) as usize].to_string();
        let mut seeds = Vec::new();
        for _ in 0..BATCH_SEEDS_MAX {
            if total.is_some_and(|t| next_index >= t) {
                break;
            }
            let within =
                next_index / (BATCH_SEEDS_MAX * k) * BATCH_SEEDS_MAX + next_index % BATCH_SEEDS_MAX;
            seeds.push(if smoke {
                within
            } else {
                base.wrapping_add(within)
            });
            next_index += 1;
        }
        Some(Job {
            scenario,
            seeds,
            mutant: None,
            double_all: false,
            double_every: DOUBLE_EVERY,
        })
    };
    let tty = std::io::stderr().is_terminal();
    let mut coverage = CoverageTable::default();
    let mut per: BTreeMap<String, ScenarioStats> = BTreeMap::new();
    let mut failures: Vec<RunOutcome> = Vec::new();
    let mut doubled = 0u64;
    let mut mismatches = 0u64;
    let mut done = 0u64;
    let mut last_report = 0u64;
    run_jobs(queue, jobs, |o| {
        done += 1;
        let st = per.entry(o.scenario.clone()).or_default();
        st.seeds += 1;
        st.wall_us += o.wall_us;
        st.sim_ms += o.sim_ms;
        doubled += o.coverage.get("determinism.double_run");
        if o.failures.iter().any(|f| f.check == "determinism") {
            mismatches += 1;
        }
        coverage.add_run(&o.coverage);
        if !o.passed() {
            st.failures += 1;
            eprintln!(
                "{}FAIL {} seed {}: {}: {}\n  replay: {}",
                if tty { "\r" } else { "" },
                o.scenario,
                o.seed,
                o.failures.first().map(|f| f.check).unwrap_or("?"),
                o.failures.first().map(|f| f.message.as_str()).unwrap_or(""),
                replay_command(&o)
            );
            failures.push(o);
        }
        let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
        if tty {
            let width = 30usize;
            let frac = total
                .map_or(0.0, |t| done as f64 / t.max(1) as f64)
                .min(1.0);
            let filled = (frac * width as f64) as usize;
            eprint!(
                "\r[{}{}] {done} seeds, {} failures, {rate:.1} seeds/s   ",
                "#".repeat(filled),
                ".".repeat(width - filled),
                failures.len()
            );
        } else if done >= last_report + 50 || done == 1 {
            last_report = done;
            eprintln!(
                "{label}: {done} seeds, {} failures, {rate:.1} seeds/s",
                failures.len()
            );
        }
        true
    });
    if tty {
        eprintln!();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sim_ms: u64 = per.values().map(|s| s.sim_ms).sum();
    println!("== {label} summary (seed base {base}, jobs {jobs}) ==");
    println!(
        "seeds run: {done} (regressions {})  failures: {}  wall: {elapsed:.1} s  seeds/s: {:.2}  \
         simulated: {:.3} h",
        regs.len(),
        failures.len(),
        done as f64 / elapsed.max(1e-9),
        sim_ms as f64 / 3_600_000.0
    );
    println!("determinism: {doubled} seeds double-run, {mismatches} trace-hash mismatches");
    println!(
        "{:<20} {:>6} {:>6} {:>12} {:>12}",
        "scenario", "seeds", "fail", "cpu ms/seed", "sim s/seed"
    );
    for (name, s) in &per {
        let n = s.seeds.max(1) as f64;
        println!(
            "{name:<20} {:>6} {:>6} {:>12.1} {:>12.1}",
            s.seeds,
            s.failures,
            s.wall_us as f64 / 1000.0 / n,
            s.sim_ms as f64 / 1000.0 / n
        );
    }
    println!("fault coverage (seeds in which each fired):");
    print!("{}", coverage.render());
    if failures.is_empty() {
        println!("PASS");
        ExitCode::SUCCESS
    } else {
        println!("FAILED seeds:");
        for o in &failures {
            let check = o.failures.first().map(|f| f.check).unwrap_or("?");
            println!("  {check:<16} {}", replay_command(o));
        }
        ExitCode::from(1)
    }
}

fn mutants(budget: u64, jobs: Option<usize>, only: Option<String>) -> ExitCode {
    if !cfg!(madsim) {
        eprintln!("{BUILD_HINT}");
        return ExitCode::from(2);
    }
    std::panic::set_hook(Box::new(|_| {}));
    let jobs = jobs.unwrap_or_else(default_jobs).clamp(1, JOBS_MAX);
    let mut survived = 0;
    println!(
        "{:<26} {:>10} {:<18} seed / replay",
        "mutant", "seeds", "caught by"
    );
    for m in MUTANTS
        .iter()
        .filter(|m| only.as_deref().is_none_or(|o| o == **m))
    {
        let targets = mutant_targets(m);
        let budget = budget.saturating_mul(mutant_budget_factor(m));
        let canary = *m == "nondeterminism_canary";
        // Seeds 0.. in order, alternating target scenarios batch by batch.
        let mut next = 0u64;
        let mut batch_no = 0u64;
        let queue = || {
            if next >= budget {
                return None;
            }
            let scenario = targets[(batch_no % targets.len() as u64) as usize].to_string();
            batch_no += 1;
            let end = (next + BATCH_SEEDS_MAX).min(budget);
            let seeds: Vec<u64> = (next..end).collect();
            next = end;
            Some(Job {
                scenario,
                seeds,
                mutant: Some(m.to_string()),
                double_all: canary,
                double_every: 0,
            })
        };
        // A failing seed counts only if the clean code passes it (else it is a real bug that
        // the mutant did not cause); the earliest confirmed seed is the detection.
        let mut caught: Option<RunOutcome> = None;
        let mut confounded = 0u64;
        let mut ran = 0u64;
        run_jobs(queue, jobs, |o| {
            ran += 1;
            if !o.passed() && caught.as_ref().is_none_or(|c| o.seed < c.seed) {
                if clean_passes(&o.scenario, o.seed) {
                    caught = Some(o);
                } else {
                    confounded += 1;
                }
            }
            caught.is_none()
        });
        let note = if confounded > 0 {
            format!(" ({confounded} earlier failing seeds also fail without the mutant)")
        } else {
            String::new()
        };
        match caught {
            Some(o) => {
                let check = o.failures.first().map(|f| f.check).unwrap_or("?");
                println!(
                    "{m:<26} {:>10} {check:<18} {}{note}",
                    o.seed + 1,
                    replay_command(&o)
                );
            }
            None => {
                println!(
                    "{m:<26} {:>10} {:<18} SURVIVED{note}",
                    format!(">{ran}"),
                    "-"
                );
                survived += 1;
            }
        }
    }
    if survived > 0 {
        println!("{survived} mutant(s) not caught");
        ExitCode::from(1)
    } else {
        println!("every mutant caught");
        ExitCode::SUCCESS
    }
}

fn clean_passes(scenario: &str, seed: u64) -> bool {
    let job = Job {
        scenario: scenario.to_string(),
        seeds: vec![seed],
        mutant: None,
        double_all: false,
        double_every: 0,
    };
    let mut once = Some(job);
    let mut passed = false;
    run_jobs(
        || once.take(),
        1,
        |o| {
            passed = o.passed();
            true
        },
    );
    passed
}
