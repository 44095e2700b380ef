//! Buggify sites and planted bugs (mutants). Both exist only in simulation builds: outside
//! `--cfg madsim` every query answers `false` and compiles to nothing, so production code paths
//! cannot be changed by them. The simulator installs a `HookSink` per node, driven by the run's
//! seed, which decides (activate per run, fire per hit) and counts coverage. Nodes may also
//! report omniscient `Observation`s (a leader's high-watermark advance, a log truncation) for
//! the simulator's checks; outside `--cfg madsim` `observe` compiles to nothing and never builds
//! the observation, so production builds pay nothing. Never changes behaviour by observing.

use std::sync::Arc;

/// What the simulator plugs in. Implementations must be deterministic functions of the seed.
pub trait HookSink: Send + Sync + 'static {
    /// Should the buggify site `site` misbehave (legally) this time?
    fn buggify(&self, site: &'static str) -> bool;
    /// Is the planted bug `name` switched on for this run?
    fn mutant(&self, name: &'static str) -> bool;
    /// Does this sink record observations? (`false`: `Hooks::observe` never builds one.)
    fn observing(&self) -> bool {
        false
    }
    /// Records one observation (called only when `observing()` said yes).
    fn observe(&self, observation: Observation) {
        let _ = observation;
    }
}

/// A fact a node reports to the simulator's checks: never read back by the node itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    HighWatermark(HwAdvance),
    Truncation(LogTruncation),
    /// Cluster mode: the controller acknowledged this process's broker registration (`node`,
    /// with the incarnation it registered).
    Registered {
        node: i32,
        incarnation: u128,
    },
}

/// A partition leader's high watermark moved from `from` to `to`, with the facts it computed
/// it from at that moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HwAdvance {
    /// The leader's broker id.
    pub node: i32,
    pub topic_id: u128,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub from: i64,
    pub to: i64,
    /// The leader's own log end offset.
    pub leader_log_end: i64,
    /// The topic's `min.insync.replicas` as the leader applies it.
    pub min_insync_replicas: usize,
    /// The committed ISR as the leader sees it.
    pub isr: Vec<i32>,
    /// Every member the leader counted (its maximal ISR, the leader included) with the log end
    /// offset it knew for it (`-1`: none known yet).
    pub counted: Vec<(i32, i64)>,
}

/// A replica's log was truncated for replication (a follower cutting to its divergence
/// point): the leader-epoch cache right after the cut, under the same log lock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogTruncation {
    /// The partition's directory (names topic, partition and topic id; not the node).
    pub dir: String,
    pub partition: i32,
    /// The offset asked for.
    pub requested: i64,
    pub log_end_before: i64,
    pub log_end_after: i64,
    /// The replica's own high watermark (what it knew was committed) when it cut; -1 when it
    /// knew none yet (a restarted process before its first fetch).
    pub high_watermark: i64,
    /// `(epoch, start offset)` of every leader-epoch cache entry after the cut.
    pub epochs: Vec<(i32, i64)>,
}

/// Cheap to clone; carried in the node config.
#[derive(Clone, Default)]
pub struct Hooks {
    #[cfg_attr(not(madsim), allow(dead_code))]
    sink: Option<Arc<dyn HookSink>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("installed", &self.sink.is_some())
            .finish()
    }
}

impl Hooks {
    pub fn new(sink: Arc<dyn HookSink>) -> Self {
        Hooks { sink: Some(sink) }
    }

    /// True when the site should take its unusual-but-legal path. Always false outside sim builds.
    #[inline(always)]
    pub fn buggify(&self, site: &'static str) -> bool {
        #[cfg(madsim)]
        {
            self.sink.as_ref().is_some_and(|s| s.buggify(site))
        }
        #[cfg(not(madsim))]
        {
            let _ = site;
            false
        }
    }

    /// True when an installed sink records observations. Always false outside sim builds: use
    /// it to skip gathering what an observation needs (e.g. behind an `.await`).
    #[inline(always)]
    pub fn observing(&self) -> bool {
        #[cfg(madsim)]
        {
            self.sink.as_ref().is_some_and(|s| s.observing())
        }
        #[cfg(not(madsim))]
        {
            false
        }
    }

    /// Reports the observation `make` builds, only when a sink records them: `make` is never
    /// called otherwise (and outside sim builds this is nothing at all).
    #[inline(always)]
    pub fn observe(&self, make: impl FnOnce() -> Observation) {
        #[cfg(madsim)]
        {
            if let Some(s) = self.sink.as_ref().filter(|s| s.observing()) {
                s.observe(make());
            }
        }
        #[cfg(not(madsim))]
        {
            let _ = make;
        }
    }

    /// True when the planted bug `name` is active. Always false outside sim builds.
    #[inline(always)]
    pub fn mutant(&self, name: &'static str) -> bool {
        #[cfg(madsim)]
        {
            self.sink.as_ref().is_some_and(|s| s.mutant(name))
        }
        #[cfg(not(madsim))]
        {
            let _ = name;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A sink that wants every observation and counts them.
    #[derive(Default)]
    struct Counting(AtomicU64);

    impl HookSink for Counting {
        fn buggify(&self, _site: &'static str) -> bool {
            false
        }
        fn mutant(&self, _name: &'static str) -> bool {
            false
        }
        fn observing(&self) -> bool {
            true
        }
        fn observe(&self, _observation: Observation) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn observations_reach_a_sink_only_in_simulation_builds() {
        let sink = Arc::new(Counting::default());
        let hooks = Hooks::new(sink.clone());
        let built = AtomicU64::new(0);
        hooks.observe(|| {
            built.fetch_add(1, Ordering::SeqCst);
            Observation::HighWatermark(HwAdvance::default())
        });
        let expected = u64::from(cfg!(madsim));
        assert_eq!(built.load(Ordering::SeqCst), expected);
        assert_eq!(sink.0.load(Ordering::SeqCst), expected);
        assert_eq!(hooks.observing(), cfg!(madsim));
        // No sink: nothing is built, in any build.
        Hooks::default().observe(|| {
            built.fetch_add(1, Ordering::SeqCst);
            Observation::Truncation(LogTruncation::default())
        });
        assert_eq!(built.load(Ordering::SeqCst), expected);
    }
}
