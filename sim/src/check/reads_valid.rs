//! Check `reads_valid`: every value a poll returned was actually sent by some client, and where
//! the final log covers that offset it holds the same value (no reading data the log does not
//! have). Offsets beyond the final log's end are judged by `acked_durable`, not here; offsets in
//! reported-corrupt ranges are excused. Never requires reads to be complete.

use crate::history::{Call, History, Outcome};

pub fn check(h: &History) -> Result<(), String> {
    let sent = h.sent_values();
    for op in &h.ops {
        let (Call::Poll { partition, .. }, Outcome::Polled { records, .. }) =
            (&op.call, &op.outcome)
        else {
            continue;
        };
        for (offset, value) in records {
            if h.final_log.is_corrupt(*partition, *offset) {
                continue;
            }
            if !sent.contains_key(value.as_str()) {
                return Err(format!(
                    "poll op {} read {value:?} at {partition}/{offset}: never written",
                    op.id
                ));
            }
            if !h.final_log.complete {
                continue;
            }
            let end = h
                .final_log
                .log_end_offsets
                .get(partition)
                .copied()
                .unwrap_or(0);
            if *offset >= end {
                continue;
            }
            match h.final_log.value_at(*partition, *offset) {
                Some(v) if v == value => {}
                other => {
                    return Err(format!(
                    "poll op {} read {value:?} at {partition}/{offset}; final log has {other:?}",
                    op.id
                ))
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::build::*;

    #[test]
    fn reading_a_value_never_written_fails() {
        let mut h = History::default();
        send(&mut h, 1, "a", Outcome::Sent { offset: 0 });
        poll(&mut h, 1, 0, &[(0, "garbage")], 1);
        final_log(&mut h, &[(0, "a")]);
        assert!(check(&h).expect_err("garbage").contains("never written"));
    }

    #[test]
    fn reading_a_value_the_final_log_lacks_fails() {
        let mut h = History::default();
        send(&mut h, 1, "a", Outcome::Sent { offset: 0 });
        send(&mut h, 1, "b", Outcome::Info("timeout".into()));
        poll(&mut h, 1, 0, &[(0, "b")], 1);
        final_log(&mut h, &[(0, "a")]);
        assert!(check(&h)
            .expect_err("aborted read")
            .contains("final log has"));
    }

    #[test]
    fn reads_past_the_final_end_are_not_judged_here() {
        let mut h = History::default();
        send(&mut h, 1, "a", Outcome::Info("timeout".into()));
        poll(&mut h, 1, 0, &[(0, "a")], 1);
        final_log(&mut h, &[]);
        assert!(check(&h).is_ok());
    }
}
