//! Planted bugs of the cluster cores: switches that exist only in test and simulation builds
//! (`cfg(any(test, madsim))`), driven there by `Hooks::mutant(name)`. In every other build each
//! query is the constant `false`, so production code paths cannot be changed by them.

use samsa_net::hooks::Hooks;

/// Names of the planted bugs, as `Hooks::mutant` knows them.
pub const ISR_ACK_BEFORE_REPLICATED: &str = "isr_ack_before_replicated";
pub const ISR_HW_BELOW_MIN_ISR: &str = "hw_advance_below_min_isr";
pub const FOLLOWER_TRUNCATE_TO_HW: &str = "truncate_to_own_hw";
pub const FOLLOWER_TRUNCATE_OFF_BY_ONE: &str = "truncate_off_by_one";
pub const OFLE_NEWER_EPOCH: &str = "ofle_newer_epoch";
pub const EPOCH_CACHE_NOT_TRUNCATED: &str = "epoch_cache_not_truncated";
pub const UNCLEAN_ELECTION_WHEN_DISABLED: &str = "unclean_election_when_disabled";
pub const ACKS_WAITER_BELOW_HW: &str = "acks_waiter_below_hw";

/// Every planted bug of this crate.
pub const ALL: &[&str] = &[
    ISR_ACK_BEFORE_REPLICATED,
    ISR_HW_BELOW_MIN_ISR,
    FOLLOWER_TRUNCATE_TO_HW,
    FOLLOWER_TRUNCATE_OFF_BY_ONE,
    OFLE_NEWER_EPOCH,
    EPOCH_CACHE_NOT_TRUNCATED,
    UNCLEAN_ELECTION_WHEN_DISABLED,
    ACKS_WAITER_BELOW_HW,
];

/// Which planted bugs are on. `Planted::default()` has none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Planted {
    #[cfg(any(test, madsim))]
    on: [bool; 8],
}

impl Planted {
    /// None switched on.
    pub fn none() -> Planted {
        Planted::default()
    }

    /// Reads every switch from the simulator's hooks (all off outside simulation builds).
    pub fn from_hooks(hooks: &Hooks) -> Planted {
        #[cfg(any(test, madsim))]
        {
            let mut planted = Planted::default();
            for (i, name) in ALL.iter().enumerate() {
                planted.on[i] = hooks.mutant(name);
            }
            planted
        }
        #[cfg(not(any(test, madsim)))]
        {
            let _ = hooks;
            Planted::default()
        }
    }

    /// Switches one planted bug on by name (tests and the simulator's model only).
    #[cfg(any(test, madsim))]
    pub fn with(mut self, name: &str) -> Planted {
        let index = ALL.iter().position(|n| *n == name);
        assert!(index.is_some(), "unknown planted bug {name}");
        if let Some(i) = index {
            self.on[i] = true;
        }
        self
    }

    #[inline(always)]
    fn is_on(&self, name: &'static str) -> bool {
        #[cfg(any(test, madsim))]
        {
            ALL.iter()
                .position(|n| *n == name)
                .is_some_and(|i| self.on[i])
        }
        #[cfg(not(any(test, madsim)))]
        {
            let _ = name;
            false
        }
    }

    /// acks=all answered once the leader has the write, before the ISR has it.
    pub fn isr_ack_before_replicated(&self) -> bool {
        self.is_on(ISR_ACK_BEFORE_REPLICATED)
    }
    /// An acks=all waiter that comes in below the high watermark (a duplicate, an empty write)
    /// is queued for the next advance instead of answered at once.
    pub fn acks_waiter_below_hw(&self) -> bool {
        self.is_on(ACKS_WAITER_BELOW_HW)
    }
    /// High watermark advanced while the ISR is below `min.insync.replicas`.
    pub fn isr_hw_below_min_isr(&self) -> bool {
        self.is_on(ISR_HW_BELOW_MIN_ISR)
    }
    /// A new follower truncates to its own high watermark (pre-KIP-101).
    pub fn follower_truncate_to_hw(&self) -> bool {
        self.is_on(FOLLOWER_TRUNCATE_TO_HW)
    }
    /// A follower truncates one offset below the divergence point (so a whole batch more,
    /// once the log rounds the cut down to a batch boundary).
    pub fn follower_truncate_off_by_one(&self) -> bool {
        self.is_on(FOLLOWER_TRUNCATE_OFF_BY_ONE)
    }
    /// The leader answers OffsetForLeaderEpoch with the requested epoch even when its own
    /// largest epoch at or below it is older (pre-KIP-279).
    pub fn ofle_newer_epoch(&self) -> bool {
        self.is_on(OFLE_NEWER_EPOCH)
    }
    /// The leader-epoch cache is not truncated with the log.
    pub fn epoch_cache_not_truncated(&self) -> bool {
        self.is_on(EPOCH_CACHE_NOT_TRUNCATED)
    }
    /// Unclean leader election although the topic disables it.
    pub fn unclean_election_when_disabled(&self) -> bool {
        self.is_on(UNCLEAN_ELECTION_WHEN_DISABLED)
    }
}
