//! samsa-sim: the deterministic simulator's parts (SimDisk, skewed clocks, chaos network,
//! buggify hooks, seeds, trace, history and checkers). Only `scenarios` and tests depend on it.
//! Pure parts build and are tested in normal builds; madsim-only parts sit behind `cfg(madsim)`.
//! Never holds process-global state: everything per run lives in values the runner creates.

pub mod chaos;
pub mod check;
pub mod clock;
pub mod coverage;
pub mod disk;
pub mod history;
pub mod hooks;
pub mod seed;
pub mod trace;

pub use chaos::{Chaos, ChaosConfig, ChaosNet, ChaosStream};
pub use clock::SimClock;
pub use coverage::{Coverage, CoverageTable};
pub use disk::{DiskFaults, SimDisk, SimFsShared};
pub use hooks::{SimHooks, MUTANTS};
pub use seed::Seed;
pub use trace::Trace;

/// Simulated milliseconds since the run started (0 outside a madsim runtime).
pub fn sim_now_ms() -> u64 {
    #[cfg(madsim)]
    {
        match madsim::time::TimeHandle::try_current() {
            Some(t) => u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX),
            None => 0,
        }
    }
    #[cfg(not(madsim))]
    {
        0
    }
}
