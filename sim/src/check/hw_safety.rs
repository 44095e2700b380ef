//! Check `hw_safety` (high-watermark safety, issue 4): every high-watermark advance a partition
//! leader reported through its hooks (`History::observed.hw_advances`) is judged from the facts
//! reported with it, recomputed here: the new high watermark is at most the smallest log end
//! offset among the members the leader counted, every member of its ISR was counted (the
//! leader too), it does not pass the leader's own log end, and it never advances while the ISR
//! as the leader sees it is smaller than `min.insync.replicas`. Never reads a planted-bug
//! switch and never looks at client operations; passes when nothing was observed.

use crate::history::{History, HwAdvance};

pub fn check(h: &History) -> Result<(), String> {
    for (i, a) in h.observed.hw_advances.iter().enumerate() {
        judge(a).map_err(|e| {
            format!(
                "advance #{i}: leader n{} partition {} epoch {} (partition epoch {}) moved the \
                 high watermark {} -> {}: {e}",
                a.node, a.partition, a.leader_epoch, a.partition_epoch, a.from, a.to
            )
        })?;
    }
    Ok(())
}

fn judge(a: &HwAdvance) -> Result<(), String> {
    if a.to <= a.from {
        return Err("not an advance".into());
    }
    if a.isr.len() < a.min_insync_replicas {
        return Err(format!(
            "the ISR {:?} is below min.insync.replicas {}",
            a.isr, a.min_insync_replicas
        ));
    }
    if !a.isr.contains(&a.node) {
        return Err(format!("the leader is not in its ISR {:?}", a.isr));
    }
    for member in &a.isr {
        if !a.counted.iter().any(|(r, _)| r == member) {
            return Err(format!(
                "ISR member n{member} was not counted (counted {:?})",
                a.counted
            ));
        }
    }
    if a.to > a.leader_log_end {
        return Err(format!("past the leader's log end {}", a.leader_log_end));
    }
    let lowest = a.counted.iter().min_by_key(|(_, leo)| *leo);
    match lowest {
        Some((member, leo)) if a.to > *leo => Err(format!(
            "above the log end {leo} of counted member n{member} (ISR {:?}, counted {:?})",
            a.isr, a.counted
        )),
        Some(_) => Ok(()),
        None => Err("no member counted".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advance(
        from: i64,
        to: i64,
        min_isr: usize,
        isr: &[i32],
        counted: &[(i32, i64)],
    ) -> HwAdvance {
        HwAdvance {
            node: 1,
            topic_id: 7,
            partition: 0,
            leader_epoch: 3,
            partition_epoch: 5,
            from,
            to,
            leader_log_end: 20,
            min_insync_replicas: min_isr,
            isr: isr.to_vec(),
            counted: counted.to_vec(),
        }
    }

    fn history(advances: Vec<HwAdvance>) -> History {
        let mut h = History::default();
        h.observed.hw_advances = advances;
        h
    }

    #[test]
    fn passes_advances_within_the_isr_and_empty_histories() {
        assert_eq!(check(&History::default()), Ok(()));
        let ok = vec![
            advance(0, 12, 2, &[1, 2], &[(1, 20), (2, 12)]),
            // A joining member (maximal ISR) may be counted beyond the committed ISR.
            advance(12, 15, 2, &[1, 2], &[(1, 20), (2, 18), (3, 15)]),
            advance(15, 20, 1, &[1], &[(1, 20)]),
        ];
        assert_eq!(check(&history(ok)), Ok(()));
    }

    #[test]
    fn an_advance_while_the_isr_is_below_min_isr_is_caught() {
        let bad = advance(10, 20, 2, &[1], &[(1, 20)]);
        let err = check(&history(vec![bad])).unwrap_err();
        assert!(
            err.contains("below min.insync.replicas 2") && err.contains("10 -> 20"),
            "{err}"
        );
    }

    #[test]
    fn an_advance_past_a_counted_member_or_an_uncounted_member_is_caught() {
        let past = advance(10, 15, 1, &[1, 2], &[(1, 20), (2, 14)]);
        let err = check(&history(vec![past])).unwrap_err();
        assert!(err.contains("log end 14 of counted member n2"), "{err}");
        let pending = advance(10, 15, 1, &[1, 2], &[(1, 20), (2, 18), (3, -1)]);
        let err = check(&history(vec![pending])).unwrap_err();
        assert!(err.contains("log end -1 of counted member n3"), "{err}");
        let uncounted = advance(10, 15, 1, &[1, 2], &[(1, 20)]);
        let err = check(&history(vec![uncounted])).unwrap_err();
        assert!(err.contains("n2 was not counted"), "{err}");
        let beyond = advance(10, 21, 1, &[1], &[(1, 21)]);
        let err = check(&history(vec![beyond])).unwrap_err();
        assert!(err.contains("past the leader's log end 20"), "{err}");
        let back = advance(10, 10, 1, &[1], &[(1, 20)]);
        assert!(check(&history(vec![back])).is_err());
    }
}
