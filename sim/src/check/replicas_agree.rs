//! Check `replicas_agree` (committed-prefix agreement): after quiescence, every in-sync replica
//! of a partition holds a log end at or past the high watermark and exactly the same stored
//! bytes below it (leader epochs and base offsets included). Judges only what the replication
//! scenarios read from the nodes' own storage; passes when nothing was recorded.

use crate::history::History;

pub fn check(h: &History) -> Result<(), String> {
    for (partition, r) in &h.replicas {
        if !r.isr.contains(&r.leader) {
            return Err(format!(
                "partition {partition}: leader {} not in ISR {:?}",
                r.leader, r.isr
            ));
        }
        let mut reference: Option<(i32, &[u8])> = None;
        for node in &r.isr {
            let (leo, bytes) = match r.logs.get(node) {
                Some(Ok((leo, bytes))) => (*leo, bytes.as_slice()),
                Some(Err(e)) => {
                    return Err(format!(
                        "partition {partition}: ISR member {node}'s log unreadable: {e}"
                    ))
                }
                None => {
                    return Err(format!(
                        "partition {partition}: ISR member {node}'s log was not read"
                    ))
                }
            };
            if leo < r.high_watermark {
                return Err(format!(
                    "partition {partition}: ISR member {node} ends at {leo}, below the high \
                     watermark {}",
                    r.high_watermark
                ));
            }
            match reference {
                None => reference = Some((*node, bytes)),
                Some((first, want)) if want != bytes => {
                    let at = want
                        .iter()
                        .zip(bytes)
                        .position(|(a, b)| a != b)
                        .unwrap_or(want.len().min(bytes.len()));
                    return Err(format!(
                        "partition {partition}: replicas {first} and {node} differ below the \
                         high watermark {} ({} vs {} bytes, first difference at byte {at})",
                        r.high_watermark,
                        want.len(),
                        bytes.len()
                    ));
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::ReplicaLogs;
    use std::collections::BTreeMap;

    /// (node, its log read back: (log end offset, bytes below the high watermark) or an error).
    type Entry = (i32, Result<(i64, Vec<u8>), String>);

    fn logs(entries: &[Entry]) -> ReplicaLogs {
        ReplicaLogs {
            high_watermark: 3,
            leader: 1,
            isr: entries.iter().map(|(n, _)| *n).collect(),
            logs: entries.iter().cloned().collect::<BTreeMap<_, _>>(),
            ..ReplicaLogs::default()
        }
    }

    #[test]
    fn identical_replicas_pass_and_nothing_recorded_passes() {
        let mut h = History::default();
        assert!(check(&h).is_ok());
        h.replicas.insert(
            0,
            logs(&[(1, Ok((3, vec![1, 2, 3]))), (2, Ok((4, vec![1, 2, 3])))]),
        );
        assert!(check(&h).is_ok());
    }

    #[test]
    fn a_differing_byte_fails_and_names_it() {
        let mut h = History::default();
        h.replicas.insert(
            0,
            logs(&[(1, Ok((3, vec![1, 2, 3]))), (3, Ok((3, vec![1, 9, 3])))]),
        );
        let e = check(&h).expect_err("differs");
        assert!(e.contains("byte 1"), "{e}");
    }

    #[test]
    fn a_short_or_unreadable_isr_member_fails() {
        let mut h = History::default();
        h.replicas.insert(
            0,
            logs(&[(1, Ok((3, vec![1, 2, 3]))), (2, Ok((2, vec![1, 2])))]),
        );
        assert!(check(&h).expect_err("short").contains("below the high"));
        h.replicas.insert(
            0,
            logs(&[(1, Ok((3, vec![1]))), (2, Err("corrupt".into()))]),
        );
        assert!(check(&h).expect_err("unreadable").contains("corrupt"));
    }

    #[test]
    fn a_leader_outside_the_isr_fails() {
        let mut h = History::default();
        let mut r = logs(&[(2, Ok((3, vec![1])))]);
        r.leader = 1;
        h.replicas.insert(0, r);
        assert!(check(&h).expect_err("leader").contains("not in ISR"));
    }
}
