//! Buggify sites and planted bugs (mutants). Both exist only in simulation builds: outside
//! `--cfg madsim` every query answers `false` and compiles to nothing, so production code paths
//! cannot be changed by them. The simulator installs a `HookSink` per node, driven by the run's
//! seed, which decides (activate per run, fire per hit) and counts coverage.

use std::sync::Arc;

/// What the simulator plugs in. Implementations must be deterministic functions of the seed.
pub trait HookSink: Send + Sync + 'static {
    /// Should the buggify site `site` misbehave (legally) this time?
    fn buggify(&self, site: &'static str) -> bool;
    /// Is the planted bug `name` switched on for this run?
    fn mutant(&self, name: &'static str) -> bool;
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
