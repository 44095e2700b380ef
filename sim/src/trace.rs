//! The run trace: one line per interesting event, stamped with simulated milliseconds only, and
//! a running FNV-1a hash of every line (the determinism double-run compares these hashes).
//! Never records wall-clock time, addresses or anything else that is not a function of the seed
//! (except under the `nondeterminism_canary` mutant, on purpose).

use std::sync::{Arc, Mutex};

use crate::seed::{fnv1a64, FNV_OFFSET};

/// Lines kept in memory for `--trace`; beyond it lines are only hashed (and counted).
pub const TRACE_LINES_MAX: usize = 200_000;

#[derive(Debug)]
struct TraceState {
    hash: u64,
    lines: Vec<String>,
    count: u64,
    keep: bool,
}

/// Shared, cheap to clone. One per run, created by the runner and handed to every component.
#[derive(Clone, Debug)]
pub struct Trace {
    state: Arc<Mutex<TraceState>>,
}

impl Trace {
    /// `keep`: keep the lines (for `--trace` and failure reports), not only their hash.
    pub fn new(keep: bool) -> Self {
        Trace {
            state: Arc::new(Mutex::new(TraceState {
                hash: FNV_OFFSET,
                lines: Vec::new(),
                count: 0,
                keep,
            })),
        }
    }

    /// Records `line` at simulated time `at_ms`.
    pub fn record(&self, at_ms: u64, line: impl AsRef<str>) {
        let line = line.as_ref();
        let mut s = lock(&self.state);
        s.hash = fnv1a64(s.hash, &at_ms.to_le_bytes());
        s.hash = fnv1a64(s.hash, line.as_bytes());
        s.hash = fnv1a64(s.hash, b"\n");
        s.count += 1;
        if s.keep && s.lines.len() < TRACE_LINES_MAX {
            s.lines
                .push(format!("{:>9}.{:03} {line}", at_ms / 1000, at_ms % 1000));
        }
    }

    /// Records at the current simulated time.
    pub fn event(&self, line: impl AsRef<str>) {
        self.record(crate::sim_now_ms(), line);
    }

    pub fn hash(&self) -> u64 {
        lock(&self.state).hash
    }

    pub fn len(&self) -> u64 {
        lock(&self.state).count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kept lines (empty unless built with `keep`).
    pub fn lines(&self) -> Vec<String> {
        lock(&self.state).lines.clone()
    }
}

/// Poisoning only happens after a panic elsewhere, which the runner reports; keep going.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_lines_same_hash_and_order_matters() {
        let a = Trace::new(true);
        let b = Trace::new(false);
        let c = Trace::new(false);
        a.record(1, "x");
        a.record(2, "y");
        b.record(1, "x");
        b.record(2, "y");
        c.record(2, "y");
        c.record(1, "x");
        assert_eq!(a.hash(), b.hash());
        assert_ne!(a.hash(), c.hash());
        assert_eq!(a.lines().len(), 2);
        assert!(b.lines().is_empty());
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn time_is_part_of_the_hash() {
        let a = Trace::new(false);
        let b = Trace::new(false);
        a.record(1, "x");
        b.record(2, "x");
        assert_ne!(a.hash(), b.hash());
    }
}
