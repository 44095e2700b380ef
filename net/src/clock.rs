//! The broker's only source of wall-clock time. Timers use `tokio::time` (simulated by madsim);
//! this trait exists so the simulator can give each node its own offset, drift and jumps.
//! `SystemClock` is the one place in the workspace allowed to read `SystemTime::now`.

/// Wall-clock milliseconds since the Unix epoch, as the node believes it to be. May jump backwards
/// (NTP steps, the simulator's clock faults): callers that need monotonic time use `tokio::time`.
pub trait Clock: Clone + Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// The host clock. Under `--cfg madsim` `SystemTime` itself is simulated, so this is
/// deterministic there too (but shared by every node: no skew).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
    }
}
