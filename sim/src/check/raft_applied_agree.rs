//! Check `raft_applied_agree`: Raft's state machine safety. Every node applies, at each index,
//! the same entry (term and payload) as every other node, and a node that re-applies an index
//! after a restart applies the same entry again. Never looks at anything but the applies.

use std::collections::BTreeMap;

use crate::history::History;

pub fn check(h: &History) -> Result<(), String> {
    let mut first: BTreeMap<u64, (u32, u64, &[u8])> = BTreeMap::new();
    for (&node, applied) in &h.raft.applied {
        for (index, term, payload) in applied {
            match first.get(index) {
                Some(&(other, t, p)) if t != *term || p != payload.as_slice() => {
                    return Err(format!(
                        "index {index}: n{other} applied term {t} {:?}, n{node} applied term \
                         {term} {:?}",
                        String::from_utf8_lossy(p),
                        String::from_utf8_lossy(payload)
                    ));
                }
                Some(_) => {}
                None => {
                    first.insert(*index, (node, *term, payload.as_slice()));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divergent_applies_fail_and_identical_prefixes_pass() {
        let mut h = History::default();
        h.raft
            .applied
            .insert(1, vec![(1, 1, b"a".to_vec()), (2, 1, b"b".to_vec())]);
        h.raft.applied.insert(2, vec![(1, 1, b"a".to_vec())]);
        assert_eq!(check(&h), Ok(()));
        h.raft
            .applied
            .insert(3, vec![(1, 1, b"a".to_vec()), (2, 2, b"c".to_vec())]);
        assert!(check(&h).expect_err("diverged").contains("index 2"));
    }
}
