//! `SimClock`: one node's wall clock as the node believes it, built on madsim's simulated
//! `SystemTime` (via `SystemClock`) plus a per-node offset, a drift in parts per million and
//! jumps (forward or backward) applied by the nemesis. Survives node restarts (like hardware).
//! Never touches timers: `tokio::time` stays shared and monotonic; only `Clock::now_ms` skews.

use std::sync::{Arc, Mutex};

use samsa_net::{Clock, SystemClock};

use crate::coverage::Coverage;
use crate::trace::lock;

/// Largest drift the nemesis may set, in parts per million (NTP's own bound is 500).
pub const DRIFT_PPM_MAX: i64 = 1_000;
/// Largest single jump, in milliseconds.
pub const JUMP_MS_MAX: i64 = 24 * 60 * 60 * 1000;

#[derive(Debug, Default)]
struct ClockState {
    offset_ms: i64,
    drift_ppm: i64,
    /// Base time at which the current drift started.
    drift_anchor_ms: i64,
    jumps_forward: u64,
    jumps_backward: u64,
    drifts_set: u64,
}

/// Cheap to clone; every clone sees the same skew.
#[derive(Clone, Debug, Default)]
pub struct SimClock {
    state: Arc<Mutex<ClockState>>,
}

impl SimClock {
    pub fn new(offset_ms: i64) -> Self {
        let c = SimClock::default();
        lock(&c.state).offset_ms = offset_ms;
        c
    }

    fn base_ms() -> i64 {
        SystemClock.now_ms()
    }

    /// Folds the drift accumulated so far into the offset and restarts it from now.
    fn settle(s: &mut ClockState, base: i64) {
        let elapsed = base.saturating_sub(s.drift_anchor_ms);
        s.offset_ms = s
            .offset_ms
            .saturating_add(elapsed.saturating_mul(s.drift_ppm) / 1_000_000);
        s.drift_anchor_ms = base;
    }

    /// Sets the drift (clamped to +/- `DRIFT_PPM_MAX`).
    pub fn set_drift_ppm(&self, ppm: i64) {
        let base = Self::base_ms();
        let mut s = lock(&self.state);
        Self::settle(&mut s, base);
        s.drift_ppm = ppm.clamp(-DRIFT_PPM_MAX, DRIFT_PPM_MAX);
        if s.drift_ppm != 0 {
            s.drifts_set += 1;
        }
    }

    /// Steps the clock by `delta_ms` (clamped to +/- `JUMP_MS_MAX`), as an NTP step would.
    pub fn jump(&self, delta_ms: i64) {
        let delta = delta_ms.clamp(-JUMP_MS_MAX, JUMP_MS_MAX);
        let base = Self::base_ms();
        let mut s = lock(&self.state);
        Self::settle(&mut s, base);
        s.offset_ms = s.offset_ms.saturating_add(delta);
        if delta >= 0 {
            s.jumps_forward += 1;
        } else {
            s.jumps_backward += 1;
        }
    }

    /// Stops drifting (the liveness phase); the accumulated offset stays, as on real hosts.
    pub fn heal(&self) {
        self.set_drift_ppm(0);
    }

    pub fn offset_ms(&self) -> i64 {
        let base = Self::base_ms();
        let mut s = lock(&self.state);
        Self::settle(&mut s, base);
        s.offset_ms
    }

    pub fn coverage(&self) -> Coverage {
        let s = lock(&self.state);
        let mut c = Coverage::default();
        c.add("clock.jump_forward", s.jumps_forward);
        c.add("clock.jump_backward", s.jumps_backward);
        c.add("clock.drift", s.drifts_set);
        c
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        let base = Self::base_ms();
        let s = lock(&self.state);
        let drift = base
            .saturating_sub(s.drift_anchor_ms)
            .saturating_mul(s.drift_ppm)
            / 1_000_000;
        base.saturating_add(s.offset_ms).saturating_add(drift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_and_jumps_apply() {
        let c = SimClock::new(5_000);
        let base = SystemClock.now_ms();
        let now = c.now_ms();
        assert!(
            now >= base + 5_000 && now <= base + 5_000 + 1_000,
            "{now} vs {base}"
        );
        c.jump(-10_000);
        assert!(c.offset_ms() <= -5_000 + 1);
        c.jump(i64::MAX);
        assert!(c.offset_ms() <= -5_000 + JUMP_MS_MAX + 1);
        let cov = c.coverage();
        assert_eq!(cov.get("clock.jump_forward"), 1);
        assert_eq!(cov.get("clock.jump_backward"), 1);
    }

    #[test]
    fn drift_is_clamped_and_heals() {
        let c = SimClock::new(0);
        c.set_drift_ppm(1_000_000);
        assert_eq!(lock(&c.state).drift_ppm, DRIFT_PPM_MAX);
        c.heal();
        assert_eq!(lock(&c.state).drift_ppm, 0);
    }
}
