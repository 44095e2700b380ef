//! Check `group_single_owner`: within one generation of the group no partition is assigned to
//! two members (judged from the assignments members received from SyncGroup). Never looks at
//! anything but completed `GroupJoin` operations.

use std::collections::BTreeMap;

use crate::history::{Call, History, Outcome};

pub fn check(h: &History) -> Result<(), String> {
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
}
