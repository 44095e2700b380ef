//! Check `group_commits_monotonic`: the committed offset of each partition, as seen by
//! acknowledged commits and by OffsetFetch answers, never goes backwards (this workload never
//! resets offsets). A fetch may lag an ambiguous commit but never an acknowledged one, except
//! that an ambiguous commit may land late (its request was still in flight): a fetch may then
//! see exactly the offset such a commit carried. Once such a late commit has been seen, the
//! committed offset really went back (members resume from it), so observations that start after
//! that one are bounded below only by what was seen since. Never judges failed or ambiguous
//! commits by themselves.
//!
//! On a cluster (`cluster_groups`) the reasoning is unchanged: whichever node coordinates, an
//! acknowledged commit must stay visible to every later OffsetFetch that succeeds until a newer
//! commit replaces it, across a coordinator move, crash or disk wipe (the offsets must be on
//! the new coordinator before the old one acknowledged). An answer NOT_COORDINATOR /
//! COORDINATOR_NOT_AVAILABLE / COORDINATOR_LOAD_IN_PROGRESS is a refusal (nothing committed,
//! no observation); a commit whose answer was lost with its coordinator is ambiguous and may
//! land late like any other. So an acked commit lost with a wiped or failed-over coordinator
//! shows up here as a fetch below it (typically -1, "no offset").

use std::collections::BTreeMap;

use crate::history::{Call, History, Outcome};

pub fn check(h: &History) -> Result<(), String> {
    // Observations in completion order: (complete time, op id, partition, offset, what).
    let mut seen: Vec<(u64, u64, i32, i64, &str)> = Vec::new();
    // (partition, offset) -> earliest invoke time of an ambiguous commit carrying it.
    let mut in_doubt: BTreeMap<(i32, i64), u64> = BTreeMap::new();
    for op in &h.ops {
        if let (Call::GroupCommit { offsets, .. }, Outcome::Info(_) | Outcome::Pending) =
            (&op.call, &op.outcome)
        {
            for (p, o) in offsets {
                let t = in_doubt.entry((*p, *o)).or_insert(op.invoke_ms);
                *t = (*t).min(op.invoke_ms);
            }
        }
        let Some(done) = op.complete_ms else { continue };
        match (&op.call, &op.outcome) {
            (Call::GroupCommit { offsets, .. }, Outcome::GroupOk) => {
                seen.extend(
                    offsets
                        .iter()
                        .map(|(p, o)| (done, op.id, *p, *o, "commit ack")),
                );
            }
            (Call::GroupFetch { .. }, Outcome::Offsets(offsets)) => {
                seen.extend(
                    offsets
                        .iter()
                        .map(|(p, o)| (done, op.id, *p, *o, "offset fetch")),
                );
            }
            _ => {}
        }
    }
    // Ops of different processes complete in any order; only an observation that *started*
    // after another completed must not see less. Use each op's invoke time for that.
    let invoked: BTreeMap<u64, u64> = h.ops.iter().map(|op| (op.id, op.invoke_ms)).collect();
    seen.sort();
    // partition -> (highest offset seen, completion time, op id, what)
    let mut high: BTreeMap<i32, Vec<(u64, i64, u64, &str)>> = BTreeMap::new();
    // partition -> completion times of observations that saw a late commit take the offset back.
    let mut went_back: BTreeMap<i32, Vec<u64>> = BTreeMap::new();
    for (done, id, p, offset, what) in seen {
        let start = invoked.get(&id).copied().unwrap_or(done);
        // The last time, before this op started, that the offset was seen to go back.
        let since = went_back
            .get(&p)
            .and_then(|ts| ts.iter().filter(|t| **t < start).max().copied())
            .unwrap_or(0);
        if let Some(list) = high.get(&p) {
            // Every observation completed strictly before this op was invoked (and not before
            // the offset last went back) bounds it below.
            let floor = list
                .iter()
                .filter(|(t, ..)| *t < start && *t >= since)
                .max_by_key(|(_, o, ..)| *o);
            if let Some((_, o, other, other_what)) = floor {
                if offset < *o {
                    let late = in_doubt.get(&(p, offset)).is_some_and(|t| *t <= done);
                    if !late {
                        return Err(format!(
                            "partition {p}: {what} op {id} saw committed offset {offset} after \
                             {other_what} op {other} saw {o}"
                        ));
                    }
                    went_back.entry(p).or_default().push(done);
                }
            }
        }
        high.entry(p).or_default().push((done, offset, id, what));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::build::*;
    use crate::history::{Op, Outcome};

    fn at(h: &mut History, invoke: u64, done: u64) {
        let op: &mut Op = h.ops.last_mut().expect("an op");
        op.invoke_ms = invoke;
        op.complete_ms = Some(done);
    }

    #[test]
    fn a_fetch_below_an_acked_commit_fails() {
        let mut h = History::default();
        commit(&mut h, 1, "m1", (2, 2), &[(0, 10)], Outcome::GroupOk);
        at(&mut h, 0, 5);
        fetch_offsets(&mut h, 2, &[(0, 7)]);
        at(&mut h, 10, 12);
        let e = check(&h).expect_err("regressed");
        assert!(e.contains("partition 0"), "{e}");
    }

    #[test]
    fn rising_commits_and_concurrent_fetches_pass() {
        let mut h = History::default();
        commit(&mut h, 1, "m1", (2, 2), &[(0, 10)], Outcome::GroupOk);
        at(&mut h, 0, 5);
        // Concurrent with the commit: may see the old value.
        fetch_offsets(&mut h, 2, &[(0, 4)]);
        at(&mut h, 1, 6);
        // A refused commit of a lower offset is not an observation.
        commit(
            &mut h,
            3,
            "m3",
            (1, 2),
            &[(0, 3)],
            Outcome::GroupRefused { code: 22 },
        );
        at(&mut h, 7, 8);
        fetch_offsets(&mut h, 2, &[(0, 10)]);
        at(&mut h, 9, 10);
        commit(&mut h, 2, "m2", (3, 3), &[(0, 12)], Outcome::GroupOk);
        at(&mut h, 11, 12);
        // An ambiguous commit of 11 that lands late may be seen after 12 was acknowledged.
        commit(
            &mut h,
            2,
            "m2",
            (3, 3),
            &[(0, 11)],
            Outcome::Info("timeout".into()),
        );
        at(&mut h, 9, 11);
        fetch_offsets(&mut h, 2, &[(0, 11)]);
        at(&mut h, 13, 14);
        assert_eq!(check(&h), Ok(()));
    }

    /// single_groups 192859621212217: a timed-out commit of 3 landed after 16 was acknowledged;
    /// the member fetched 3, re-read from there and committed 8. Legitimate, not a regression;
    /// but a later drop below 8 is.
    #[test]
    fn members_may_resume_from_a_late_commit_but_not_below_it() {
        let mut h = History::default();
        commit(
            &mut h,
            1,
            "m1",
            (2, 2),
            &[(0, 3)],
            Outcome::Info("timeout".into()),
        );
        at(&mut h, 0, 20);
        commit(&mut h, 1, "m1", (2, 2), &[(0, 16)], Outcome::GroupOk);
        at(&mut h, 30, 31);
        fetch_offsets(&mut h, 1, &[(0, 3)]);
        at(&mut h, 40, 41);
        commit(&mut h, 1, "m1", (3, 3), &[(0, 8)], Outcome::GroupOk);
        at(&mut h, 42, 43);
        assert_eq!(check(&h), Ok(()));
        fetch_offsets(&mut h, 1, &[(0, 5)]);
        at(&mut h, 44, 45);
        let e = check(&h).expect_err("went below the commit of 8");
        assert!(e.contains("saw 8"), "{e}");
    }
}
