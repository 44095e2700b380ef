//! Check `epoch_cache_matches_log` (issue 4: the leader-epoch cache kept in step with the log):
//! for every in-sync replica the replication scenarios read after quiescence
//! (`ReplicaLogs::epochs`), the leader-epoch checkpoint its node left on disk must describe its
//! log: the entries rise in epoch and start offset, none starts past the log end, only the last
//! may start at the log end (a leader's epoch before its first batch), and every other entry is
//! the first batch of its epoch, one entry per epoch the batches hold (the first one moved up
//! to the log start when records were deleted below it). Never reads a planted-bug switch, never
//! looks at client operations; passes when nothing was recorded.

use crate::history::{History, ReplicaEpochs};

pub fn check(h: &History) -> Result<(), String> {
    for (partition, r) in &h.replicas {
        for (node, epochs) in &r.epochs {
            // An unreadable log is `replicas_agree`'s to report.
            let Ok(e) = epochs else {
                continue;
            };
            judge(e).map_err(|msg| {
                format!(
                    "partition {partition} replica n{node} (log {}..{}, checkpoint {:?}, \
                     batch epochs {:?}): {msg}",
                    e.log_start, e.log_end, e.checkpoint, e.batches
                )
            })?;
        }
    }
    Ok(())
}

fn judge(e: &ReplicaEpochs) -> Result<(), String> {
    for pair in e.checkpoint.windows(2) {
        let ((e0, s0), (e1, s1)) = (pair[0], pair[1]);
        if e1 <= e0 || s1 <= s0 {
            return Err(format!(
                "entries ({e0}, {s0}) then ({e1}, {s1}) do not rise"
            ));
        }
    }
    let last = e.checkpoint.len().saturating_sub(1);
    for (i, (epoch, start)) in e.checkpoint.iter().enumerate() {
        if *start > e.log_end || (*start == e.log_end && i != last) {
            return Err(format!(
                "epoch {epoch} starts at {start}, past the log's batches"
            ));
        }
    }
    let in_log = normalise(
        e.checkpoint.iter().filter(|(_, s)| *s < e.log_end),
        e.log_start,
    );
    let batches = normalise(e.batches.iter(), e.log_start);
    if in_log != batches {
        return Err(format!(
            "the cache says {in_log:?} where the batches say {batches:?}"
        ));
    }
    Ok(())
}

/// Epoch runs as the log holds them from `log_start`: runs that end at or below it dropped,
/// the first one starting at it at the earliest.
fn normalise<'a>(runs: impl Iterator<Item = &'a (i32, i64)>, log_start: i64) -> Vec<(i32, i64)> {
    let runs: Vec<(i32, i64)> = runs.copied().collect();
    let first = runs.iter().rposition(|(_, s)| *s <= log_start).unwrap_or(0);
    let mut kept = runs[first.min(runs.len())..].to_vec();
    if let Some(head) = kept.first_mut() {
        head.1 = head.1.max(log_start);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::ReplicaLogs;

    fn epochs(
        start: i64,
        end: i64,
        checkpoint: &[(i32, i64)],
        batches: &[(i32, i64)],
    ) -> ReplicaEpochs {
        ReplicaEpochs {
            log_start: start,
            log_end: end,
            checkpoint: checkpoint.to_vec(),
            batches: batches.to_vec(),
        }
    }

    fn history(replicas: Vec<ReplicaEpochs>) -> History {
        let mut h = History::default();
        let epochs = replicas
            .into_iter()
            .enumerate()
            .map(|(i, e)| (i as i32 + 1, Ok(e)))
            .collect();
        h.replicas.insert(
            0,
            ReplicaLogs {
                epochs,
                ..ReplicaLogs::default()
            },
        );
        h
    }

    #[test]
    fn caches_that_describe_their_logs_pass() {
        assert_eq!(check(&History::default()), Ok(()));
        let ok = vec![
            epochs(0, 10, &[(0, 0), (2, 4)], &[(0, 0), (2, 4)]),
            // A leader's new epoch at the log end, before its first batch.
            epochs(0, 10, &[(0, 0), (2, 4), (5, 10)], &[(0, 0), (2, 4)]),
            // Records deleted below 6: the cache starts there, the first batch below it.
            epochs(6, 10, &[(2, 6)], &[(0, 0), (2, 4)]),
            epochs(0, 0, &[], &[]),
            epochs(0, 0, &[(3, 0)], &[]),
        ];
        assert_eq!(check(&history(ok)), Ok(()));
    }

    #[test]
    fn an_entry_past_the_log_or_without_its_batches_is_caught() {
        let past = epochs(0, 10, &[(0, 0), (4, 12)], &[(0, 0)]);
        let err = check(&history(vec![past])).unwrap_err();
        assert!(err.contains("epoch 4 starts at 12"), "{err}");
        let stale_at_end = epochs(0, 10, &[(0, 0), (4, 10), (5, 11)], &[(0, 0)]);
        assert!(check(&history(vec![stale_at_end])).is_err());
        // An epoch whose batches were cut, still in the cache below the log end.
        let cut = epochs(0, 10, &[(0, 0), (3, 6), (4, 8)], &[(0, 0), (4, 8)]);
        let err = check(&history(vec![cut])).unwrap_err();
        assert!(err.contains("the cache says"), "{err}");
        // A batch epoch the cache does not know.
        let missing = epochs(0, 10, &[(0, 0)], &[(0, 0), (4, 8)]);
        assert!(check(&history(vec![missing])).is_err());
        let disordered = epochs(0, 10, &[(4, 0), (2, 5)], &[(4, 0), (2, 5)]);
        let err = check(&history(vec![disordered])).unwrap_err();
        assert!(err.contains("do not rise"), "{err}");
    }

    #[test]
    fn the_replica_is_named() {
        let ok = epochs(0, 10, &[(0, 0)], &[(0, 0)]);
        let bad = epochs(0, 10, &[(0, 0), (1, 3)], &[(0, 0)]);
        let err = check(&history(vec![ok, bad])).unwrap_err();
        assert!(err.starts_with("partition 0 replica n2"), "{err}");
    }
}
