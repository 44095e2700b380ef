//! Check `one_leader_per_epoch`: along the committed metadata log, a partition's leader epoch
//! and partition epoch never go backwards, the partition epoch moves on every change of leader,
//! ISR or replicas, and each leader epoch names one leader (a second leader in the same epoch
//! would let two replicas write different batches under one epoch, which truncation by epoch
//! cannot tell apart).
//! Judges only the partition states the replication scenarios read from the controllers'
//! storage. Passes when nothing was recorded.

use std::collections::BTreeMap;

use crate::history::{History, PartitionState};

use super::leader_from_isr::NO_LEADER;

pub fn check(h: &History) -> Result<(), String> {
    let mut previous: BTreeMap<(u128, i32), &PartitionState> = BTreeMap::new();
    let mut leaders: BTreeMap<(u128, i32, i32), i32> = BTreeMap::new();
    for s in &h.partition_states {
        let name = format!("partition {} (metadata index {})", s.partition, s.log_index);
        let key = (s.topic_id, s.partition);
        if let Some(before) = previous.get(&key) {
            if s.leader_epoch < before.leader_epoch {
                return Err(format!(
                    "{name}: leader epoch {} after {}",
                    s.leader_epoch, before.leader_epoch
                ));
            }
            let changed =
                s.leader != before.leader || s.isr != before.isr || s.replicas != before.replicas;
            let stale = if changed {
                s.partition_epoch <= before.partition_epoch
            } else {
                s.partition_epoch < before.partition_epoch
            };
            if stale {
                return Err(format!(
                    "{name}: partition epoch {} after {}",
                    s.partition_epoch, before.partition_epoch
                ));
            }
        }
        if s.leader != NO_LEADER {
            let epoch = (s.topic_id, s.partition, s.leader_epoch);
            match leaders.get(&epoch) {
                Some(other) if *other != s.leader => {
                    return Err(format!(
                        "{name}: leader epoch {} has two leaders, {other} and {}",
                        s.leader_epoch, s.leader
                    ));
                }
                _ => {
                    leaders.insert(epoch, s.leader);
                }
            }
        }
        previous.insert(key, s);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(partition_epoch: i32, leader: i32, epoch: i32) -> PartitionState {
        PartitionState {
            log_index: partition_epoch as u64,
            from_snapshot: false,
            topic_id: 9,
            partition: 0,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            leader,
            leader_epoch: epoch,
            partition_epoch,
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
    fn moving_epochs_pass() {
        assert_eq!(check(&History::default()), Ok(()));
        let h = history(vec![
            state(0, 1, 0),
            state(1, 1, 0),
            state(2, NO_LEADER, 0),
            state(3, 2, 1),
            state(4, 2, 1),
        ]);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn two_leaders_in_one_epoch_or_epochs_going_back_are_caught() {
        let err = check(&history(vec![state(0, 1, 0), state(1, 2, 0)])).unwrap_err();
        assert!(err.contains("has two leaders, 1 and 2"), "{err}");
        let err = check(&history(vec![state(0, 1, 3), state(1, 1, 2)])).unwrap_err();
        assert!(err.contains("leader epoch 2 after 3"), "{err}");
        let err = check(&history(vec![state(4, 1, 3), state(4, 2, 4)])).unwrap_err();
        assert!(err.contains("partition epoch 4 after 4"), "{err}");
        // A config change alone (the unclean flag) keeps the partition epoch.
        let mut same = vec![state(4, 1, 3), state(4, 1, 3)];
        same[1].unclean_allowed = true;
        assert_eq!(check(&history(same)), Ok(()));
    }
}
