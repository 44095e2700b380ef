//! Check `acked_durable`: every write acknowledged with acks=-1 under the fsync flush policy is
//! in the final log at the acknowledged offset, with its value ("lost write"). Offsets inside a
//! range the broker reported corrupt are excused when corruption is in the scenario's atlas
//! (single_corruption), and only then. Never judges acks=0/1.

use crate::history::{Call, History, Outcome};

pub fn check(h: &History) -> Result<(), String> {
    if !h.fsync_policy || !h.final_log.complete {
        return Ok(());
    }
    for op in &h.ops {
        let (
            Call::Send {
                partition,
                value,
                acks: -1,
                ..
            },
            Outcome::Sent { offset },
        ) = (&op.call, &op.outcome)
        else {
            continue;
        };
        if h.corruption_in_atlas && h.final_log.is_corrupt(*partition, *offset) {
            continue;
        }
        match h.final_log.value_at(*partition, *offset) {
            Some(v) if v == value => {}
            Some(other) => {
                return Err(format!(
                    "op {}: {value:?} acked at {partition}/{offset}, final log has {other:?}",
                    op.id
                ))
            }
            None => {
                return Err(format!(
                    "op {}: {value:?} acked at {partition}/{offset}, absent from the final log",
                    op.id
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::build::*;
    use std::ops::Range;

    #[test]
    fn lost_acked_write_fails() {
        let mut h = History::default();
        send(&mut h, 1, "a", Outcome::Sent { offset: 0 });
        send(&mut h, 1, "b", Outcome::Sent { offset: 1 });
        final_log(&mut h, &[(0, "a")]);
        assert!(check(&h).expect_err("lost").contains("absent"));
    }

    #[test]
    fn overwritten_acked_write_fails_and_corrupt_ranges_are_excused() {
        let mut h = History::default();
        send(&mut h, 1, "a", Outcome::Sent { offset: 0 });
        final_log(&mut h, &[(0, "z")]);
        assert!(check(&h).expect_err("overwritten").contains("\"z\""));
        let range: Range<i64> = 0..1;
        h.final_log.corrupt.push((0, range));
        // Outside the corruption atlas a reported corruption excuses nothing...
        assert!(check(&h).is_err());
        // ...inside it, the reported range is excused.
        h.corruption_in_atlas = true;
        assert!(check(&h).is_ok());
    }

    #[test]
    fn ambiguous_and_failed_writes_may_vanish() {
        let mut h = History::default();
        send(&mut h, 1, "a", Outcome::Info("timeout".into()));
        send(&mut h, 1, "b", Outcome::Fail("NOT_ENOUGH_REPLICAS".into()));
        final_log(&mut h, &[]);
        assert!(check(&h).is_ok());
    }
}
