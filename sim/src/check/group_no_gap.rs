//! Check `group_no_gap`: after healing, every record of the final log below a partition's
//! highest committed offset (acknowledged commits and OffsetFetch answers) was returned to some
//! group member by a poll: no record was skipped past a commit. Records missing from the final
//! log are `acked_durable`'s business, not this check's. Never looks at plain consumers' polls.
//! On a cluster nothing changes: polls read below the high watermark from each partition's
//! leader, the final log is read after every ISR is full again, and which node coordinated a
//! commit does not matter (a lost commit only lowers the committed offset, never opens a gap).

use std::collections::{BTreeMap, BTreeSet};

use crate::history::{Call, History, Outcome, GROUP_CONSUMER_BASE};

pub fn check(h: &History) -> Result<(), String> {
    let mut committed: BTreeMap<i32, (i64, u64)> = BTreeMap::new();
    let mut consumed: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
    for op in &h.ops {
        let observed: &[(i32, i64)] = match (&op.call, &op.outcome) {
            (Call::GroupCommit { offsets, .. }, Outcome::GroupOk) => offsets,
            (Call::GroupFetch { .. }, Outcome::Offsets(offsets)) => offsets,
            (
                Call::Poll {
                    consumer,
                    partition,
                    ..
                },
                Outcome::Polled { records, .. },
            ) if *consumer >= GROUP_CONSUMER_BASE => {
                consumed
                    .entry(*partition)
                    .or_default()
                    .extend(records.iter().map(|(o, _)| *o));
                &[]
            }
            _ => &[],
        };
        for (p, o) in observed {
            let e = committed.entry(*p).or_insert((*o, op.id));
            if *o > e.0 {
                *e = (*o, op.id);
            }
        }
    }
    for (p, (upto, op)) in &committed {
        let Some(log) = h.final_log.partitions.get(p) else {
            continue;
        };
        let seen = consumed.get(p);
        for (offset, value) in log.range(..*upto) {
            if h.final_log.is_corrupt(*p, *offset) {
                continue;
            }
            if !seen.is_some_and(|s| s.contains(offset)) {
                return Err(format!(
                    "partition {p}: offset {offset} ({value}) is below committed offset {upto} \
                     (op {op}) but no group member ever consumed it"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::build::*;

    fn log(h: &mut History, partition: i32, n: i64) {
        let p = h.final_log.partitions.entry(partition).or_default();
        for o in 0..n {
            p.insert(o, format!("v{o}"));
        }
        h.final_log.log_end_offsets.insert(partition, n);
        h.final_log.complete = true;
    }

    #[test]
    fn a_commit_past_unconsumed_records_fails() {
        let mut h = History::default();
        join(&mut h, 1, "m1", 1, &[0]);
        group_poll(&mut h, 1, 0, 0, &[(0, "v0"), (1, "v1")]);
        commit(&mut h, 1, "m1", (1, 1), &[(0, 2)], Outcome::GroupOk);
        // A stale commit moved the position past records nobody read.
        commit(&mut h, 2, "m2", (1, 2), &[(0, 4)], Outcome::GroupOk);
        log(&mut h, 0, 5);
        let e = check(&h).expect_err("gap");
        assert!(e.contains("offset 2"), "{e}");
    }

    #[test]
    fn a_fetched_offset_ahead_of_consumption_fails() {
        let mut h = History::default();
        group_poll(&mut h, 1, 0, 0, &[(0, "v0")]);
        fetch_offsets(&mut h, 2, &[(0, 3)]);
        log(&mut h, 0, 3);
        assert!(check(&h).is_err());
    }

    #[test]
    fn handover_from_committed_positions_passes() {
        let mut h = History::default();
        group_poll(&mut h, 1, 0, 0, &[(0, "v0"), (1, "v1")]);
        commit(&mut h, 1, "m1", (1, 1), &[(0, 2)], Outcome::GroupOk);
        fetch_offsets(&mut h, 2, &[(0, 2)]);
        group_poll(&mut h, 2, 0, 2, &[(2, "v2")]);
        commit(&mut h, 2, "m2", (2, 2), &[(0, 3)], Outcome::GroupOk);
        // Unconsumed records above the committed offset are fine; so are plain consumers.
        poll(&mut h, 9, 0, &[(3, "v3")], 5);
        log(&mut h, 0, 5);
        assert_eq!(check(&h), Ok(()));
    }
}
