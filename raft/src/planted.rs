//! Planted bugs (mutants) of the Raft core, used to prove the harness and the simulator catch
//! them. The switches exist only in test and simulation builds; everywhere else every accessor
//! is a constant `false`, so production code can never take a planted path.

use samsa_net::hooks::Hooks;

/// Mutant names as the simulator's `Hooks::mutant` knows them.
pub const VOTE_WITHOUT_LOG_CHECK: &str = "raft_vote_without_log_check";
pub const VOTE_PERSISTED_AFTER_REPLY: &str = "raft_vote_persisted_after_reply";
pub const COMMIT_OLD_TERM: &str = "raft_commit_old_term";
pub const INTRODUCTIONS_IGNORED: &str = "raft_introductions_ignored";

/// Which planted bugs are switched on. `Default` is "none".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Planted {
    /// Grant votes without checking that the candidate's log is at least as up to date.
    #[cfg(any(test, madsim))]
    pub vote_without_log_check: bool,
    /// Send the vote response before the persist effect that records the vote.
    #[cfg(any(test, madsim))]
    pub vote_persisted_after_reply: bool,
    /// Advance the commit index over an entry of an older term by counting its replicas.
    #[cfg(any(test, madsim))]
    pub commit_old_term: bool,
    /// Voters never learn an observer from its introduction (only configured ones follow).
    #[cfg(any(test, madsim))]
    pub introductions_ignored: bool,
}

impl Planted {
    /// Reads the switches from the simulator's hooks (always none outside simulation builds).
    pub fn from_hooks(hooks: &Hooks) -> Planted {
        #[cfg(any(test, madsim))]
        {
            Planted {
                vote_without_log_check: hooks.mutant(VOTE_WITHOUT_LOG_CHECK),
                vote_persisted_after_reply: hooks.mutant(VOTE_PERSISTED_AFTER_REPLY),
                commit_old_term: hooks.mutant(COMMIT_OLD_TERM),
                introductions_ignored: hooks.mutant(INTRODUCTIONS_IGNORED),
            }
        }
        #[cfg(not(any(test, madsim)))]
        {
            let _ = hooks;
            Planted {}
        }
    }

    #[inline(always)]
    pub fn vote_without_log_check(&self) -> bool {
        #[cfg(any(test, madsim))]
        return self.vote_without_log_check;
        #[cfg(not(any(test, madsim)))]
        false
    }

    #[inline(always)]
    pub fn vote_persisted_after_reply(&self) -> bool {
        #[cfg(any(test, madsim))]
        return self.vote_persisted_after_reply;
        #[cfg(not(any(test, madsim)))]
        false
    }

    #[inline(always)]
    pub fn commit_old_term(&self) -> bool {
        #[cfg(any(test, madsim))]
        return self.commit_old_term;
        #[cfg(not(any(test, madsim)))]
        false
    }

    #[inline(always)]
    pub fn introductions_ignored(&self) -> bool {
        #[cfg(any(test, madsim))]
        return self.introductions_ignored;
        #[cfg(not(any(test, madsim)))]
        false
    }
}
