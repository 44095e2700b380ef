//! Check `leader_from_isr` (clean election): along the committed metadata log, every partition's
//! leader is in its ISR and the ISR within its replicas, and a new leader comes from the ISR of
//! the state just before it, unless the topic allows unclean election at that point (KIP-966's
//! and Kafka's rule: a replica outside the ISR may lack acknowledged records). Judges only the
//! partition states the replication scenarios read from the controllers' storage; a state
//! restored from a snapshot has no known predecessor. Passes when nothing was recorded.

use std::collections::BTreeMap;

use crate::history::{History, PartitionState};

/// `PartitionState::leader` when a partition has no leader.
pub const NO_LEADER: i32 = -1;

pub fn check(h: &History) -> Result<(), String> {
    let mut previous: BTreeMap<(u128, i32), &PartitionState> = BTreeMap::new();
    for s in &h.partition_states {
        let name = format!("partition {} (metadata index {})", s.partition, s.log_index);
        if s.leader != NO_LEADER && !s.isr.contains(&s.leader) {
            return Err(format!(
                "{name}: leader {} not in ISR {:?}",
                s.leader, s.isr
            ));
        }
        if let Some(r) = s.isr.iter().find(|r| !s.replicas.contains(r)) {
            return Err(format!(
                "{name}: ISR member {r} not a replica {:?}",
                s.replicas
            ));
        }
        let key = (s.topic_id, s.partition);
        if let Some(before) = previous.get(&key) {
            let new_leader = s.leader != NO_LEADER && s.leader != before.leader;
            if !s.from_snapshot
                && new_leader
                && !s.unclean_allowed
                && !before.isr.contains(&s.leader)
            {
                return Err(format!(
                    "{name}: leader {} elected in epoch {} from outside the ISR {:?} (leader {} \
                     in epoch {}), unclean election disabled",
                    s.leader, s.leader_epoch, before.isr, before.leader, before.leader_epoch
                ));
            }
        }
        previous.insert(key, s);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(index: u64, leader: i32, epoch: i32, isr: &[i32]) -> PartitionState {
        PartitionState {
            log_index: index,
            from_snapshot: false,
            topic_id: 9,
            partition: 0,
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
            leader,
            leader_epoch: epoch,
            partition_epoch: index as i32,
            unclean_allowed: false,
        }
    }

    fn history(states: Vec<PartitionState>) -> History {
        History {
            partition_states: states,
            ..History::default()
        }
    }

    #[test]
    fn clean_elections_pass() {
        assert_eq!(check(&History::default()), Ok(()));
        let h = history(vec![
            state(1, 1, 0, &[1, 2, 3]),
            state(2, 1, 0, &[1, 2]),
            // 1 is gone: 2 (in the ISR) leads; then nobody is live but the last member.
            state(3, 2, 1, &[2]),
            state(4, NO_LEADER, 1, &[2]),
            state(5, 2, 2, &[2]),
            state(6, 2, 2, &[2, 3]),
        ]);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn a_leader_from_outside_the_isr_is_caught_unless_unclean_is_allowed() {
        let states = vec![
            state(1, 1, 0, &[1, 2, 3]),
            state(2, 1, 0, &[1]),
            state(3, NO_LEADER, 0, &[1]),
            state(4, 3, 1, &[3]),
        ];
        let err = check(&history(states.clone())).unwrap_err();
        assert!(
            err.contains("leader 3 elected in epoch 1 from outside the ISR [1]"),
            "{err}"
        );
        let mut allowed = states.clone();
        allowed[3].unclean_allowed = true;
        assert_eq!(check(&history(allowed)), Ok(()));
        let mut restored = states;
        restored[3].from_snapshot = true;
        assert_eq!(check(&history(restored)), Ok(()));
    }

    #[test]
    fn leader_outside_its_own_isr_or_isr_outside_replicas_is_caught() {
        let err = check(&history(vec![state(1, 2, 0, &[1, 3])])).unwrap_err();
        assert!(err.contains("not in ISR"), "{err}");
        let err = check(&history(vec![state(1, 1, 0, &[1, 4])])).unwrap_err();
        assert!(err.contains("not a replica"), "{err}");
    }
}
