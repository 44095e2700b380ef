//! Check `raft_liveness`: after every fault healed, the quorum elected a leader and a fresh
//! proposal committed and was applied on a majority of the voters within the phase's bound.
//! Never judges safety; the other raft checks do.

use crate::history::History;

pub fn check(h: &History) -> Result<(), String> {
    match &h.raft.liveness {
        None => Ok(()),
        Some(Ok(())) => Ok(()),
        Some(Err(why)) => Err(format!("quorum not live after healing: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_probe_fails() {
        let mut h = History::default();
        assert_eq!(check(&h), Ok(()));
        h.raft.liveness = Some(Ok(()));
        assert_eq!(check(&h), Ok(()));
        h.raft.liveness = Some(Err("no leader".into()));
        assert!(check(&h).expect_err("not live").contains("no leader"));
    }
}
