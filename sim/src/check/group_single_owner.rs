//! Check `group_single_owner`: within one generation of the group no partition is assigned to
//! two members (judged from the assignments members received from SyncGroup). For KIP-848
//! members (a `GroupHeartbeat` completed `Joined` with the member epoch and whole assignment):
//! no partition is given to two members with the same member epoch, and no partition is given
//! to a member while another live member still holds it. A member surely holds a partition
//! from the completion of the heartbeat that gave it until the invocation of its last
//! successful heartbeat that still reported it as owned, or, when the member was told to give it
//! up, of its next heartbeat if that succeeded (the coordinator saw the member alive then, so
//! it had neither released the partition nor expired before; a leave proves nothing: leaving
//! after being expired succeeds too); a grant whose whole
//! invoke..complete window falls strictly inside that span happened while the other member
//! held the partition. Never judges ambiguous outcomes.
//! On a cluster: a member's `Joined` completes only after SyncGroup (classic) or the heartbeat
//! (KIP-848) was answered, i.e. after the coordinator stored that generation's assignment or
//! epoch; a coordinator that takes over loads it and continues from there, so a generation or
//! member epoch is never handed out twice, and a member's spans of ownership are judged by its
//! own successful heartbeats whichever node answered them. Refusals with a coordinator code
//! prove nothing and are not successes. Generations reused after a coordinator lost its state
//! (an unreplicated `__consumer_offsets` wiped) fail here, as they should.

use std::collections::{BTreeMap, BTreeSet};

use crate::history::{Call, History, Op, Outcome};

pub fn check(h: &History) -> Result<(), String> {
    classic(h)?;
    kip848(h)
}

fn classic(h: &History) -> Result<(), String> {
    // (generation, partition) -> (member id, op id) of the first member seen owning it.
    let mut owners: BTreeMap<(i32, i32), (&str, u64)> = BTreeMap::new();
    for op in &h.ops {
        let (
            Call::GroupJoin { member },
            Outcome::Joined {
                member_id,
                generation,
                partitions,
            },
        ) = (&op.call, &op.outcome)
        else {
            continue;
        };
        for p in partitions {
            match owners.get(&(*generation, *p)) {
                Some((other, other_op)) if *other != member_id.as_str() => {
                    return Err(format!(
                        "generation {generation}: partition {p} assigned to {other} (op \
                         {other_op}) and to {member_id} (member {member}, op {})",
                        op.id
                    ));
                }
                Some(_) => {}
                None => {
                    owners.insert((*generation, *p), (member_id.as_str(), op.id));
                }
            }
        }
    }
    Ok(())
}

/// A partition one KIP-848 member holds: since when (completion of the grant), by which grant.
struct Held<'a> {
    member_id: &'a str,
    since_ms: u64,
    grant_op: u64,
    /// Invocation of the latest successful heartbeat that reported it as owned.
    seen_ms: Option<u64>,
    /// The member was told to give it up: its next heartbeat or leave reports the release.
    releasing: bool,
}

/// One span during which `member_id` surely held `partition`.
struct Span<'a> {
    partition: i32,
    member_id: &'a str,
    from_ms: u64,
    to_ms: u64,
    grant_op: u64,
}

/// One grant: the heartbeat `op` gave `partition` to `member_id`.
struct Grant<'a> {
    partition: i32,
    member_id: &'a str,
    op: &'a Op,
}

/// Ends the member's hold on `p`; `release_ms` = invocation of the successful op that
/// reported it released, if there was one.
fn close<'a>(
    held: &mut BTreeMap<i32, Held<'a>>,
    p: i32,
    release_ms: Option<u64>,
    spans: &mut Vec<Span<'a>>,
) {
    if let Some(x) = held.remove(&p) {
        let end = if x.releasing { release_ms } else { None };
        if let Some(to_ms) = end.or(x.seen_ms).filter(|t| *t > x.since_ms) {
            spans.push(Span {
                partition: p,
                member_id: x.member_id,
                from_ms: x.since_ms,
                to_ms,
                grant_op: x.grant_op,
            });
        }
    }
}

fn kip848(h: &History) -> Result<(), String> {
    let processes: BTreeSet<u32> = h
        .ops
        .iter()
        .filter(|op| {
            matches!(
                (&op.call, &op.outcome),
                (Call::GroupHeartbeat { .. }, Outcome::Joined { .. })
            )
        })
        .map(|op| op.process)
        .collect();
    if processes.is_empty() {
        return Ok(());
    }
    let mut held: BTreeMap<u32, BTreeMap<i32, Held>> = BTreeMap::new();
    let mut spans: Vec<Span> = Vec::new();
    let mut grants: Vec<Grant> = Vec::new();
    // (member epoch, partition) -> (member id, op) of the first member given it at that epoch.
    let mut by_epoch: BTreeMap<(i32, i32), (&str, u64)> = BTreeMap::new();
    for op in h.ops.iter().filter(|op| processes.contains(&op.process)) {
        let mine = held.entry(op.process).or_default();
        let reports = matches!(
            op.call,
            Call::GroupHeartbeat { .. } | Call::GroupLeave { .. }
        );
        if !reports {
            continue;
        }
        let ok = matches!(op.outcome, Outcome::Joined { .. } | Outcome::GroupOk);
        let joining = matches!(op.call, Call::GroupHeartbeat { generation: 0, .. });
        // Partitions given up before this op end here; a leave or join ends everything.
        let ending: Vec<i32> = mine
            .iter()
            .filter(|(_, x)| x.releasing || joining || matches!(op.call, Call::GroupLeave { .. }))
            .map(|(p, _)| *p)
            .collect();
        // Only a heartbeat proves the member was still alive (a leave of a member the
        // coordinator already expired may succeed too).
        let heartbeat = matches!(op.call, Call::GroupHeartbeat { .. });
        let release_ms = (ok && heartbeat && !joining).then_some(op.invoke_ms);
        for p in ending {
            close(mine, p, release_ms, &mut spans);
        }
        let (Call::GroupHeartbeat { .. }, true) = (&op.call, ok) else {
            continue;
        };
        for x in mine.values_mut() {
            x.seen_ms = Some(op.invoke_ms);
        }
        let Outcome::Joined {
            member_id,
            generation: epoch,
            partitions,
        } = &op.outcome
        else {
            continue;
        };
        let Some(done_ms) = op.complete_ms else {
            continue;
        };
        for p in partitions {
            match by_epoch.get(&(*epoch, *p)) {
                Some((other, other_op)) if *other != member_id.as_str() => {
                    return Err(format!(
                        "member epoch {epoch}: partition {p} given to {other} (op \
                         {other_op}) and to {member_id} (op {})",
                        op.id
                    ));
                }
                Some(_) => {}
                None => {
                    by_epoch.insert((*epoch, *p), (member_id.as_str(), op.id));
                }
            }
        }
        for (p, x) in mine.iter_mut() {
            if !partitions.contains(p) {
                x.releasing = true;
            }
        }
        for p in partitions {
            if mine.contains_key(p) {
                continue;
            }
            mine.insert(
                *p,
                Held {
                    member_id: member_id.as_str(),
                    since_ms: done_ms,
                    grant_op: op.id,
                    seen_ms: None,
                    releasing: false,
                },
            );
            grants.push(Grant {
                partition: *p,
                member_id: member_id.as_str(),
                op,
            });
        }
    }
    for mine in held.values_mut() {
        let ps: Vec<i32> = mine.keys().copied().collect();
        for p in ps {
            close(mine, p, None, &mut spans);
        }
    }
    for g in &grants {
        let Some(done_ms) = g.op.complete_ms else {
            continue;
        };
        for s in &spans {
            if s.partition == g.partition
                && s.member_id != g.member_id
                && s.from_ms < g.op.invoke_ms
                && done_ms < s.to_ms
            {
                return Err(format!(
                    "partition {}: given to {} (op {}, {}..{} ms) while {} held it (given by \
                     op {} at {} ms, still reported owned at {} ms)",
                    g.partition,
                    g.member_id,
                    g.op.id,
                    g.op.invoke_ms,
                    done_ms,
                    s.member_id,
                    s.grant_op,
                    s.from_ms,
                    s.to_ms
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

    #[test]
    fn two_owners_in_one_generation_fail() {
        let mut h = History::default();
        join(&mut h, 1, "m1", 3, &[0, 1]);
        join(&mut h, 2, "m2", 3, &[1, 2]);
        let e = check(&h).expect_err("double owner");
        assert!(e.contains("partition 1"), "{e}");
    }

    #[test]
    fn handover_across_generations_passes() {
        let mut h = History::default();
        join(&mut h, 1, "m1", 1, &[0, 1, 2]);
        join(&mut h, 1, "m1", 2, &[0, 1]);
        join(&mut h, 2, "m2", 2, &[2]);
        join(&mut h, 2, "m2", 3, &[0, 1, 2]);
        assert_eq!(check(&h), Ok(()));
    }

    /// A KIP-848 heartbeat of `member` (process) invoked at `at` and completed at `done`.
    fn hb848(h: &mut History, member: u32, epoch: i32, at: u64, done: u64, outcome: Outcome) {
        let call = Call::GroupHeartbeat {
            member,
            member_id: format!("m{member}"),
            generation: epoch,
        };
        let id = h.invoke(member, at, call).expect("room");
        h.complete(id, done, outcome);
    }

    fn assigned(member: u32, epoch: i32, parts: &[i32]) -> Outcome {
        Outcome::Joined {
            member_id: format!("m{member}"),
            generation: epoch,
            partitions: parts.to_vec(),
        }
    }

    #[test]
    fn kip848_grant_before_the_old_owner_released_fails() {
        let mut h = History::default();
        hb848(&mut h, 1, 0, 0, 10, assigned(1, 1, &[0, 1]));
        hb848(&mut h, 2, 0, 100, 110, assigned(2, 2, &[]));
        // m1 told to give up 1 (still epoch 1) ...
        hb848(&mut h, 1, 1, 200, 210, assigned(1, 1, &[0]));
        // ... but m2 gets 1 before m1's next heartbeat reported it released.
        hb848(&mut h, 2, 2, 220, 230, assigned(2, 2, &[1]));
        hb848(&mut h, 1, 1, 300, 310, assigned(1, 2, &[0]));
        let e = check(&h).expect_err("two holders");
        assert!(e.contains("partition 1"), "{e}");
    }

    #[test]
    fn kip848_grant_after_release_passes_and_same_epoch_twice_fails() {
        let mut h = History::default();
        hb848(&mut h, 1, 0, 0, 10, assigned(1, 1, &[0, 1]));
        hb848(&mut h, 2, 0, 100, 110, assigned(2, 2, &[]));
        hb848(&mut h, 1, 1, 200, 210, assigned(1, 1, &[0]));
        hb848(&mut h, 1, 1, 300, 310, assigned(1, 2, &[0]));
        hb848(&mut h, 2, 2, 320, 330, assigned(2, 2, &[1]));
        hb848(&mut h, 1, 2, 400, 410, Outcome::GroupOk);
        assert_eq!(check(&h), Ok(()));
        hb848(&mut h, 2, 2, 500, 510, assigned(2, 2, &[0, 1]));
        let e = check(&h).expect_err("epoch 2 gave 0 twice");
        assert!(e.contains("member epoch 2"), "{e}");
    }

    #[test]
    fn kip848_a_leave_after_expiry_proves_nothing() {
        let mut h = History::default();
        hb848(&mut h, 1, 0, 0, 10, assigned(1, 1, &[0, 1]));
        hb848(&mut h, 2, 0, 100, 110, assigned(2, 2, &[]));
        hb848(&mut h, 1, 1, 200, 210, assigned(1, 1, &[0]));
        // m1 stalls past its revocation timeout and is expired; m2 gets everything.
        hb848(&mut h, 2, 2, 5_000, 5_010, assigned(2, 3, &[0, 1]));
        let id = h
            .invoke(
                1,
                9_000,
                Call::GroupLeave {
                    member: 1,
                    member_id: "m1".into(),
                },
            )
            .expect("room");
        h.complete(id, 9_010, Outcome::GroupOk);
        assert_eq!(check(&h), Ok(()));
    }
}
