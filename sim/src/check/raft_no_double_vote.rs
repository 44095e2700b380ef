//! Check `raft_no_double_vote`: one incarnation of a voter (node id and directory id) grants its
//! vote to at most one candidate per term, even across crashes: judged on votes as sent and as
//! made durable. Never looks at anything but the recorded votes.

use std::collections::BTreeMap;

use crate::history::History;

pub fn check(h: &History) -> Result<(), String> {
    let mut granted: BTreeMap<(u32, u128, u64), (u32, u64)> = BTreeMap::new();
    let all = h.raft.votes_sent.iter().chain(h.raft.votes_durable.iter());
    for &(at_ms, node, dir, term, candidate) in all {
        match granted.get(&(node, dir, term)) {
            Some(&(other, other_ms)) if other != candidate => {
                return Err(format!(
                    "n{node} voted twice in term {term}: for n{other} at {other_ms} ms and for \
                     n{candidate} at {at_ms} ms"
                ));
            }
            _ => {
                granted.insert((node, dir, term), (candidate, at_ms));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_candidate_in_one_term_fails() {
        let mut h = History::default();
        h.raft.votes_sent = vec![(1, 1, 7, 3, 2), (2, 1, 7, 4, 3)];
        h.raft.votes_durable = vec![(1, 1, 7, 3, 2)];
        assert_eq!(check(&h), Ok(()));
        // A wiped node (new directory id) is a new incarnation.
        h.raft.votes_sent.push((3, 1, 8, 3, 3));
        assert_eq!(check(&h), Ok(()));
        h.raft.votes_sent.push((4, 1, 7, 3, 3));
        assert!(check(&h).expect_err("double vote").contains("term 3"));
    }
}
