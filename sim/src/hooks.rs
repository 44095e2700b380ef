//! `SimHooks`: the simulator's `HookSink`. FoundationDB-style buggify: each site is activated per
//! run (p = `BUGGIFY_ACTIVATE_P`, a pure function of the run seed and the site name, so adding a
//! site never shifts another's activation) and fires per hit (p = `BUGGIFY_FIRE_P`, drawn from
//! the run's seeded stream). Counts hits and fires per site for the coverage table, and answers
//! which planted bug (mutant) is on, and records the nodes' `Observation`s (high-watermark
//! advances, log truncations; at most `OBSERVATIONS_MAX`) for the checks. Never consults
//! anything outside the seed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use samsa_net::hooks::Observation;
use samsa_net::{HookSink, Hooks};

use crate::coverage::Coverage;
use crate::history::NodeObservations;
use crate::seed::{child_seed, mix64};
use crate::trace::lock;

/// Probability that a buggify site is active in a run.
pub const BUGGIFY_ACTIVATE_P: f64 = 0.25;
/// Probability that an active site fires on one hit.
pub const BUGGIFY_FIRE_P: f64 = 0.25;
/// Distinct sites tracked; beyond it hits still answer but are not counted separately.
pub const BUGGIFY_SITES_MAX: usize = 1024;

/// Observations kept per run (a run makes a few thousand); later ones are counted as dropped.
pub const OBSERVATIONS_MAX: usize = 200_000;

/// The planted bugs, by name (CONTRACTS.md). `nondeterminism_canary` is the simulator's own.
pub const MUTANTS: &[&str] = &[
    "ack_before_fsync",
    "skip_crc_on_read",
    "recovery_truncate_short",
    "idempotence_window_one",
    "nondeterminism_canary",
    "group_accept_stale_commit",
    "group848_skip_revocation",
    "cleaner_drops_latest",
    "cleaner_touches_active",
    "cleaner_swap_no_sync_dir",
    "raft_vote_without_log_check",
    "raft_vote_persisted_after_reply",
    "raft_introductions_ignored",
    "ack_before_isr",
    "unclean_election_when_disabled",
    "truncate_to_own_hw",
    "truncate_off_by_one",
    "ofle_newer_epoch",
    "hw_advance_below_min_isr",
    "epoch_cache_not_truncated",
    "offsets_ack_before_isr",
    "acks_waiter_below_hw",
];

#[derive(Debug, Default, Clone, Copy)]
struct SiteStats {
    active: bool,
    hits: u64,
    fires: u64,
}

#[derive(Debug)]
struct HookState {
    enabled: bool,
    rng: ChaCha8Rng,
    sites: BTreeMap<&'static str, SiteStats>,
    mutant_queries: u64,
    /// Sites a scenario forces active in every run, with their own fire probability.
    hot: BTreeMap<&'static str, f64>,
    observed: NodeObservations,
    /// Observations made, taken or not (coverage).
    hw_advances_seen: u64,
    truncations_seen: u64,
    dropped_seen: u64,
    /// Acknowledged broker registrations per node id (the nemesis waits on them).
    registrations: BTreeMap<i32, u64>,
}

/// One per run, shared by every node of the run (clone the `Arc`).
#[derive(Debug)]
pub struct SimHooks {
    seed: u64,
    mutant: Option<String>,
    state: Mutex<HookState>,
}

impl SimHooks {
    /// `enabled`: buggify on for this run (swarm: some runs keep every site quiet).
    pub fn new(run_seed: u64, enabled: bool, mutant: Option<String>) -> Arc<Self> {
        let rng = ChaCha8Rng::seed_from_u64(child_seed(run_seed, "buggify/fire"));
        Arc::new(SimHooks {
            seed: run_seed,
            mutant,
            state: Mutex::new(HookState {
                enabled,
                rng,
                sites: BTreeMap::new(),
                mutant_queries: 0,
                hot: BTreeMap::new(),
                observed: NodeObservations::default(),
                hw_advances_seen: 0,
                truncations_seen: 0,
                dropped_seen: 0,
                registrations: BTreeMap::new(),
            }),
        })
    }

    /// The `Hooks` handle to put in a node's configuration.
    pub fn hooks(self: &Arc<Self>) -> Hooks {
        Hooks::new(self.clone())
    }

    /// Makes `site` active in this run (when buggify is on) and fire with `fire_p` per hit: a
    /// scenario's own focus (e.g. the compaction scenario keeps the cleaner busy).
    pub fn set_hot(&self, site: &'static str, fire_p: f64) {
        lock(&self.state).hot.insert(site, fire_p.clamp(0.0, 1.0));
    }

    /// Switches buggify off (liveness phase: heal everything).
    pub fn set_enabled(&self, enabled: bool) {
        lock(&self.state).enabled = enabled;
    }

    /// How many broker registrations of `node` the controller acknowledged so far.
    pub fn registrations(&self, node: i32) -> u64 {
        lock(&self.state)
            .registrations
            .get(&node)
            .copied()
            .unwrap_or(0)
    }

    /// Hands over every observation recorded so far (the scenario puts them in the history).
    pub fn take_observations(&self) -> NodeObservations {
        std::mem::take(&mut lock(&self.state).observed)
    }

    pub fn mutant_name(&self) -> Option<&str> {
        self.mutant.as_deref()
    }

    /// Per site: `buggify.<site>` = fires; plus `mutant.<name>.reached` = queries that said yes.
    pub fn coverage(&self) -> Coverage {
        let s = lock(&self.state);
        let mut c = Coverage::default();
        for (site, stats) in &s.sites {
            c.add(&format!("buggify.{site}"), stats.fires);
        }
        if let Some(m) = &self.mutant {
            c.add(&format!("mutant.{m}.reached"), s.mutant_queries);
        }
        // Only where nodes report them (replication scenarios), so other tables stay as they were.
        if s.hw_advances_seen + s.truncations_seen > 0 {
            c.add("observed.hw_advance", s.hw_advances_seen);
            c.add("observed.truncation", s.truncations_seen);
            c.add("observed.dropped", s.dropped_seen);
        }
        c
    }

    fn site_active(&self, site: &str) -> bool {
        let h = mix64(child_seed(self.seed, site) ^ 0x6275_6767_6966_7921);
        // Top 53 bits as a uniform fraction.
        let unit = (h >> 11) as f64 / (1u64 << 53) as f64;
        unit < BUGGIFY_ACTIVATE_P
    }
}

impl HookSink for SimHooks {
    fn buggify(&self, site: &'static str) -> bool {
        let mut s = lock(&self.state);
        if !s.enabled {
            return false;
        }
        let hot = s.hot.get(site).copied();
        let active = hot.is_some() || self.site_active(site);
        let fire = active && s.rng.gen_bool(hot.unwrap_or(BUGGIFY_FIRE_P));
        let tracked = s.sites.len() < BUGGIFY_SITES_MAX || s.sites.contains_key(site);
        if tracked {
            let stats = s.sites.entry(site).or_default();
            stats.active = active;
            stats.hits += 1;
            if fire {
                stats.fires += 1;
            }
        }
        fire
    }

    fn mutant(&self, name: &'static str) -> bool {
        let on = self.mutant.as_deref() == Some(name);
        if on {
            lock(&self.state).mutant_queries += 1;
        }
        on
    }

    fn observing(&self) -> bool {
        true
    }

    fn observe(&self, observation: Observation) {
        let mut s = lock(&self.state);
        match &observation {
            Observation::HighWatermark(_) => s.hw_advances_seen += 1,
            Observation::Truncation(_) => s.truncations_seen += 1,
            Observation::Registered { node, .. } => {
                *s.registrations.entry(*node).or_insert(0) += 1;
                return;
            }
        }
        let kept = s.observed.hw_advances.len() + s.observed.truncations.len();
        if kept >= OBSERVATIONS_MAX {
            s.observed.dropped += 1;
            s.dropped_seen += 1;
            return;
        }
        match observation {
            Observation::HighWatermark(a) => s.observed.hw_advances.push(a),
            Observation::Truncation(t) => s.observed.truncations.push(t),
            Observation::Registered { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_is_per_run_and_firing_is_seeded() {
        let mut active_runs = 0;
        for seed in 0..400 {
            let h = SimHooks::new(seed, true, None);
            if h.site_active("storage.append.split_write") {
                active_runs += 1;
            }
        }
        // About a quarter of runs activate a given site.
        assert!((60..=140).contains(&active_runs), "{active_runs}");

        let seed = (0..400).find(|s| SimHooks::new(*s, true, None).site_active("x.y.z"));
        let seed = seed.expect("some seed activates the site");
        let a = SimHooks::new(seed, true, None);
        let b = SimHooks::new(seed, true, None);
        let fa: Vec<bool> = (0..64).map(|_| a.buggify("x.y.z")).collect();
        let fb: Vec<bool> = (0..64).map(|_| b.buggify("x.y.z")).collect();
        assert_eq!(fa, fb);
        assert!(fa.iter().any(|f| *f));
        assert!(fa.iter().any(|f| !*f));
        assert_eq!(
            a.coverage().get("buggify.x.y.z"),
            fa.iter().filter(|f| **f).count() as u64
        );
    }

    #[test]
    fn a_hot_site_is_active_in_every_run_and_fires_at_its_own_rate() {
        for seed in 0..20 {
            let h = SimHooks::new(seed, true, None);
            h.set_hot("broker.cleaner.clean_now", 1.0);
            assert!((0..10).all(|_| h.buggify("broker.cleaner.clean_now")));
            let off = SimHooks::new(seed, false, None);
            off.set_hot("broker.cleaner.clean_now", 1.0);
            assert!(!off.buggify("broker.cleaner.clean_now"));
        }
    }

    #[test]
    fn disabled_never_fires_and_mutant_matches_by_name() {
        let h = SimHooks::new(3, false, Some("skip_crc_on_read".into()));
        assert!((0..100).all(|_| !h.buggify("a.b.c")));
        assert!(h.mutant("skip_crc_on_read"));
        assert!(!h.mutant("ack_before_fsync"));
        assert_eq!(h.coverage().get("mutant.skip_crc_on_read.reached"), 1);
    }

    #[test]
    fn observations_are_kept_in_order_and_taken_once() {
        use samsa_net::hooks::{HwAdvance, LogTruncation};
        let h = SimHooks::new(1, false, None);
        let hooks = h.hooks();
        for to in 1..=3 {
            let advance = HwAdvance {
                to,
                ..HwAdvance::default()
            };
            hooks.observe(|| Observation::HighWatermark(advance));
        }
        hooks.observe(|| Observation::Truncation(LogTruncation::default()));
        let expected = if cfg!(madsim) { (3, 1) } else { (0, 0) };
        assert_eq!(h.coverage().get("observed.hw_advance"), expected.0);
        let taken = h.take_observations();
        let tos: Vec<i64> = taken.hw_advances.iter().map(|a| a.to).collect();
        assert_eq!(tos.len() as u64, expected.0);
        assert!(tos.windows(2).all(|w| w[0] < w[1]), "{tos:?}");
        assert_eq!(taken.truncations.len() as u64, expected.1);
        assert_eq!(h.take_observations(), NodeObservations::default());
        // The sink itself records whatever reaches it, in any build.
        h.observe(Observation::Truncation(LogTruncation::default()));
        assert_eq!(h.take_observations().truncations.len(), 1);
    }
}
