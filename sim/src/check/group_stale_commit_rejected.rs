//! Check `group_stale_commit_rejected`: an OffsetCommit sent with a generation older than the
//! newest one its member had already been given, or sent after the member was fenced at that
//! generation (UNKNOWN_MEMBER_ID / ILLEGAL_GENERATION), must not succeed. Judged per member
//! process, in the order of its own (sequential) operations. Never judges ambiguous outcomes.
//! On a cluster the generation is the group's, not a node's: a coordinator that takes over
//! loads it from the replicated group metadata, so generations never go back when the group
//! moves. A commit refused with a coordinator code (a definite refusal) is not a success here;
//! a coordinator that lost the group's state (a wipe of an unreplicated `__consumer_offsets`)
//! restarts at generation 1 and accepts commits below the member's newest generation: that is
//! the lost state showing, and fails here too.

use std::collections::BTreeMap;

use crate::history::{Call, History, Outcome};

/// UNKNOWN_MEMBER_ID and ILLEGAL_GENERATION: the coordinator has moved past this member.
const FENCE_CODES: &[i16] = &[25, 22];

pub fn check(h: &History) -> Result<(), String> {
    // member process -> newest generation it was given.
    let mut newest: BTreeMap<u32, i32> = BTreeMap::new();
    // (member id, generation) pairs the coordinator fenced.
    let mut fenced: BTreeMap<(&str, i32), u64> = BTreeMap::new();
    for op in &h.ops {
        match (&op.call, &op.outcome) {
            (Call::GroupJoin { member }, Outcome::Joined { generation, .. }) => {
                let n = newest.entry(*member).or_insert(*generation);
                *n = (*n).max(*generation);
            }
            (
                Call::GroupHeartbeat {
                    member_id,
                    generation,
                    ..
                },
                Outcome::GroupRefused { code },
            ) if FENCE_CODES.contains(code) => {
                fenced.insert((member_id.as_str(), *generation), op.id);
            }
            (
                Call::GroupCommit {
                    member,
                    member_id,
                    generation,
                    ..
                },
                outcome,
            ) => {
                if *outcome == Outcome::GroupOk {
                    if let Some(n) = newest.get(member).filter(|n| **n > *generation) {
                        return Err(format!(
                            "member {member} ({member_id}) commit op {} with generation \
                             {generation} succeeded after it had been given generation {n}",
                            op.id
                        ));
                    }
                    if let Some(f) = fenced.get(&(member_id.as_str(), *generation)) {
                        return Err(format!(
                            "member {member} ({member_id}) commit op {} with generation \
                             {generation} succeeded after op {f} fenced it",
                            op.id
                        ));
                    }
                }
                if let Outcome::GroupRefused { code } = outcome {
                    if FENCE_CODES.contains(code) {
                        fenced.insert((member_id.as_str(), *generation), op.id);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::build::*;

    #[test]
    fn an_accepted_commit_from_an_older_generation_fails() {
        let mut h = History::default();
        join(&mut h, 1, "m1", 1, &[0, 1]);
        join(&mut h, 1, "m1", 2, &[0]);
        commit(&mut h, 1, "m1", (1, 2), &[(1, 5)], Outcome::GroupOk);
        let e = check(&h).expect_err("stale commit accepted");
        assert!(e.contains("generation 1"), "{e}");
    }

    #[test]
    fn an_accepted_commit_after_a_fence_fails() {
        let mut h = History::default();
        join(&mut h, 1, "m1", 4, &[0]);
        heartbeat(&mut h, 1, "m1", 4, Outcome::GroupRefused { code: 25 });
        commit(&mut h, 1, "m1", (4, 4), &[(0, 5)], Outcome::GroupOk);
        assert!(check(&h).expect_err("fenced").contains("fenced"));
    }

    #[test]
    fn rejected_stale_commits_and_current_ones_pass() {
        let mut h = History::default();
        join(&mut h, 1, "m1", 1, &[0, 1]);
        commit(&mut h, 1, "m1", (1, 1), &[(0, 3)], Outcome::GroupOk);
        join(&mut h, 1, "m1", 2, &[0]);
        commit(
            &mut h,
            1,
            "m1",
            (1, 2),
            &[(1, 5)],
            Outcome::GroupRefused { code: 22 },
        );
        commit(
            &mut h,
            1,
            "m1",
            (1, 2),
            &[(1, 5)],
            Outcome::Info("timeout".into()),
        );
        commit(&mut h, 1, "m1", (2, 2), &[(0, 7)], Outcome::GroupOk);
        // Another member's generations do not make this member's commits stale.
        join(&mut h, 2, "m2", 3, &[1]);
        commit(&mut h, 1, "m1", (2, 2), &[(0, 8)], Outcome::GroupOk);
        assert_eq!(check(&h), Ok(()));
    }
}
