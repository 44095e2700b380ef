//! Check `no_truncation_below_hw` (issue 4: "no truncation below a committed offset"): no
//! replica cuts its log below the high watermark it knew when it cut. Below that mark every
//! record was committed, so it is on every in-sync replica, and a leader elected from the ISR
//! holds it at the same offset: a correct follower's divergence point is never lower (KIP-101,
//! KIP-279). Judged from the truncations the nodes reported through their hooks
//! (`History::observed.truncations`, with the replica's high watermark read under the same
//! log lock); a truncation whose replica knew no high watermark yet (-1) is not judged, nor
//! one that cut nothing. Never reads a planted-bug switch; passes when nothing was observed.
//! Unclean leader election would excuse such a cut, but the replication workload never
//! enables it (and `leader_from_isr` fails any run that elects outside the ISR).

use crate::history::History;

pub fn check(h: &History) -> Result<(), String> {
    for (i, t) in h.observed.truncations.iter().enumerate() {
        if t.high_watermark < 0 || t.log_end_after >= t.log_end_before {
            continue;
        }
        let committed = t.high_watermark.min(t.log_end_before);
        if t.log_end_after < committed {
            return Err(format!(
                "truncation #{i} of {} (partition {}): asked for {}, cut the log from {} to {}, \
                 below the high watermark {} it knew",
                t.dir,
                t.partition,
                t.requested,
                t.log_end_before,
                t.log_end_after,
                t.high_watermark
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::LogTruncation;

    fn cut(before: i64, after: i64, hw: i64) -> LogTruncation {
        LogTruncation {
            dir: "t-0-1".into(),
            partition: 0,
            requested: after,
            log_end_before: before,
            log_end_after: after,
            high_watermark: hw,
            epochs: Vec::new(),
        }
    }

    #[test]
    fn a_cut_below_the_known_high_watermark_fails_and_others_pass() {
        let mut h = History::default();
        assert_eq!(check(&h), Ok(()));
        h.observed.truncations = vec![
            cut(20, 15, 15),
            cut(20, 20, 30),
            cut(20, 5, -1),
            cut(20, 12, 40),
        ];
        let e = check(&h).expect_err("cut to 12 below high watermark 20 (capped by log end)");
        assert!(
            e.contains("#3") && e.contains("below the high watermark 40"),
            "{e}"
        );
        h.observed.truncations.pop();
        assert_eq!(check(&h), Ok(()));
    }
}
