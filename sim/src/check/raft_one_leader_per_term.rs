//! Check `raft_one_leader_per_term`: Raft's election safety, at most one node becomes leader in
//! any term (across crashes and restarts). Never looks at anything but the recorded leaders.

use std::collections::BTreeMap;

use crate::history::History;

pub fn check(h: &History) -> Result<(), String> {
    let mut by_term: BTreeMap<u64, (u32, u64)> = BTreeMap::new();
    for &(at_ms, node, term) in &h.raft.leaders {
        match by_term.get(&term) {
            Some(&(other, other_ms)) if other != node => {
                return Err(format!(
                    "term {term} has two leaders: n{other} at {other_ms} ms and n{node} at \
                     {at_ms} ms"
                ));
            }
            _ => {
                by_term.insert(term, (node, at_ms));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_leaders_in_one_term_fail_and_re_election_passes() {
        let mut h = History::default();
        h.raft.leaders = vec![(1, 1, 1), (2, 2, 2), (3, 2, 2)];
        assert_eq!(check(&h), Ok(()));
        h.raft.leaders.push((4, 3, 2));
        assert!(check(&h).expect_err("two leaders").contains("term 2"));
    }
}
