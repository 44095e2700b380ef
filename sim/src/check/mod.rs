//! The checkers: one file per check, each a pure function of the run's `History` returning the
//! first violation it finds. `ALL` lists them in the order they are reported. Never mutates the
//! history and never consults anything but it.

use crate::history::History;

pub mod acked_durable;
pub mod compaction_equivalence;
pub mod compaction_latest;
pub mod compaction_tombstone_retention;
pub mod epoch_cache_matches_log;
pub mod epoch_cache_truncated;
pub mod group_commits_monotonic;
pub mod group_no_gap;
pub mod group_single_owner;
pub mod group_stale_commit_rejected;
pub mod hw_bounded;
pub mod hw_safety;
pub mod idempotent_retry;
pub mod leader_from_isr;
pub mod liveness;
pub mod no_corrupt_served;
pub mod no_corruption_reported;
pub mod no_duplicates;
pub mod no_panic;
pub mod no_truncation_below_hw;
pub mod offsets_unique;
pub mod one_leader_per_epoch;
pub mod poll_monotonic;
pub mod producer_order;
pub mod raft_applied_agree;
pub mod raft_liveness;
pub mod raft_no_double_vote;
pub mod raft_one_leader_per_term;
pub mod reads_valid;
pub mod replica_epochs_monotonic;
pub mod replicas_agree;

/// A check: `Err(message)` names the first violation.
pub type CheckFn = fn(&History) -> Result<(), String>;

/// Every check, by name.
pub const ALL: &[(&str, CheckFn)] = &[
    ("no_panic", no_panic::check),
    ("acked_durable", acked_durable::check),
    ("offsets_unique", offsets_unique::check),
    ("no_duplicates", no_duplicates::check),
    ("reads_valid", reads_valid::check),
    ("no_corrupt_served", no_corrupt_served::check),
    ("poll_monotonic", poll_monotonic::check),
    ("producer_order", producer_order::check),
    ("hw_bounded", hw_bounded::check),
    ("idempotent_retry", idempotent_retry::check),
    ("no_corruption_reported", no_corruption_reported::check),
    ("liveness", liveness::check),
    ("group_single_owner", group_single_owner::check),
    ("group_commits_monotonic", group_commits_monotonic::check),
    (
        "group_stale_commit_rejected",
        group_stale_commit_rejected::check,
    ),
    ("group_no_gap", group_no_gap::check),
    ("compaction_latest", compaction_latest::check),
    ("compaction_equivalence", compaction_equivalence::check),
    (
        "compaction_tombstone_retention",
        compaction_tombstone_retention::check,
    ),
    ("raft_one_leader_per_term", raft_one_leader_per_term::check),
    ("raft_applied_agree", raft_applied_agree::check),
    ("raft_no_double_vote", raft_no_double_vote::check),
    ("raft_liveness", raft_liveness::check),
    ("replicas_agree", replicas_agree::check),
    ("replica_epochs_monotonic", replica_epochs_monotonic::check),
    ("leader_from_isr", leader_from_isr::check),
    ("one_leader_per_epoch", one_leader_per_epoch::check),
    ("hw_safety", hw_safety::check),
    ("epoch_cache_truncated", epoch_cache_truncated::check),
    ("no_truncation_below_hw", no_truncation_below_hw::check),
    ("epoch_cache_matches_log", epoch_cache_matches_log::check),
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckFailure {
    pub check: &'static str,
    pub message: String,
}

/// Runs the checks named in `names` (all when empty); returns every failure.
pub fn run(history: &History, names: &[&str]) -> Vec<CheckFailure> {
    ALL.iter()
        .filter(|(name, _)| names.is_empty() || names.contains(name))
        .filter_map(|(name, f)| {
            f(history).err().map(|message| CheckFailure {
                check: name,
                message,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::build::*;
    use crate::history::Outcome;

    #[test]
    fn a_clean_history_passes_everything() {
        let mut h = History::default();
        send(&mut h, 1, "p1-0", Outcome::Sent { offset: 0 });
        send(&mut h, 1, "p1-1", Outcome::Sent { offset: 1 });
        poll(&mut h, 1, 0, &[(0, "p1-0"), (1, "p1-1")], 2);
        final_log(&mut h, &[(0, "p1-0"), (1, "p1-1")]);
        assert_eq!(run(&h, &[]), vec![]);
    }

    #[test]
    fn run_filters_by_name() {
        let mut h = History::default();
        h.panics.push(("n1".into(), "boom".into()));
        final_log(&mut h, &[]);
        assert_eq!(run(&h, &["acked_durable"]), vec![]);
        assert_eq!(run(&h, &["no_panic"]).len(), 1);
    }
}
