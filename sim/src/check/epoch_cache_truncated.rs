//! Check `epoch_cache_truncated` (the leader-epoch cache is truncated with the log, issue 4):
//! every replication truncation a node reported through its hooks
//! (`History::observed.truncations`, the cache read under the same log lock right after the
//! cut) that asked for an offset at or below the log end must leave no cache entry starting at
//! or past the new log end (KIP-101: the epochs of removed batches go with them; a leader's
//! empty epoch at the old log end goes too), and the entries must rise in both epoch and start
//! offset. Judged from the reported facts alone: never reads a planted-bug switch, never looks
//! at client operations; passes when nothing was observed.

use crate::history::{History, LogTruncation};

pub fn check(h: &History) -> Result<(), String> {
    for (i, t) in h.observed.truncations.iter().enumerate() {
        judge(t).map_err(|e| {
            format!(
                "truncation #{i} of {} (partition {}) to {} (log end {} -> {}), epochs {:?}: {e}",
                t.dir, t.partition, t.requested, t.log_end_before, t.log_end_after, t.epochs
            )
        })?;
    }
    Ok(())
}

fn judge(t: &LogTruncation) -> Result<(), String> {
    for pair in t.epochs.windows(2) {
        let ((e0, s0), (e1, s1)) = (pair[0], pair[1]);
        if e1 <= e0 || s1 <= s0 {
            return Err(format!(
                "entries ({e0}, {s0}) then ({e1}, {s1}) do not rise"
            ));
        }
    }
    if t.log_end_after > t.log_end_before {
        return Err("the log grew".into());
    }
    if t.requested > t.log_end_before {
        // Nothing to cut: the cache may keep a leader's epoch recorded at the log end.
        return Ok(());
    }
    match t.epochs.iter().find(|(_, start)| *start >= t.log_end_after) {
        Some((epoch, start)) => Err(format!(
            "epoch {epoch} still starts at {start}, at or past the new log end"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(requested: i64, before: i64, after: i64, epochs: &[(i32, i64)]) -> LogTruncation {
        LogTruncation {
            dir: "t-0-1".into(),
            partition: 0,
            requested,
            log_end_before: before,
            log_end_after: after,
            high_watermark: -1,
            epochs: epochs.to_vec(),
        }
    }

    fn history(truncations: Vec<LogTruncation>) -> History {
        let mut h = History::default();
        h.observed.truncations = truncations;
        h
    }

    #[test]
    fn passes_caches_cut_with_the_log_and_empty_histories() {
        assert_eq!(check(&History::default()), Ok(()));
        let ok = vec![
            cut(7, 12, 6, &[(1, 0), (3, 4)]),
            cut(6, 6, 6, &[(1, 0), (3, 4)]),
            cut(0, 6, 0, &[]),
            // Past the log end nothing is cut; a leader's empty epoch at the end may stay.
            cut(9, 6, 6, &[(1, 0), (4, 6)]),
        ];
        assert_eq!(check(&history(ok)), Ok(()));
    }

    #[test]
    fn an_epoch_left_past_the_cut_is_caught() {
        let stale = cut(5, 12, 5, &[(1, 0), (3, 8)]);
        let err = check(&history(vec![stale])).unwrap_err();
        assert!(err.contains("epoch 3 still starts at 8"), "{err}");
        // A leader's empty epoch at the log end must go when a follower cuts at its log end.
        let at_end = cut(6, 6, 6, &[(1, 0), (4, 6)]);
        let err = check(&history(vec![at_end])).unwrap_err();
        assert!(err.contains("epoch 4 still starts at 6"), "{err}");
    }

    #[test]
    fn disordered_entries_and_a_growing_log_are_caught() {
        let disordered = cut(9, 9, 9, &[(3, 0), (2, 4)]);
        assert!(check(&history(vec![disordered]))
            .unwrap_err()
            .contains("do not rise"));
        let grew = cut(9, 9, 10, &[(1, 0)]);
        assert!(check(&history(vec![grew])).unwrap_err().contains("grew"));
    }
}
