//! Check `idempotent_retry`: a delayed duplicate of one of a producer's last five batches (same
//! producer id, epoch and sequence: Kafka's idempotence window) is answered as a duplicate, at the
//! original offset; it is neither appended again nor rejected. Never judges resends older than
//! the window, or resends that failed in transport (they say nothing about the broker).

use std::collections::BTreeMap;

use crate::history::{Call, History, Outcome};

/// Batches per producer the broker must remember (Kafka's `max.in.flight` bound).
pub const IDEMPOTENCE_WINDOW: u32 = 5;

/// How the workload records a broker's sequence-based rejections of a resend
/// (OUT_OF_ORDER_SEQUENCE_NUMBER, DUPLICATE_SEQUENCE_NUMBER). Other errors (storage, timeouts)
/// say nothing about idempotence.
pub const SEQUENCE_REJECTIONS: &[&str] = &["Broker { code: 45 }", "Broker { code: 46 }"];

pub fn check(h: &History) -> Result<(), String> {
    let mut acked: BTreeMap<(i32, &str), i64> = BTreeMap::new();
    for op in &h.ops {
        if let (
            Call::Send {
                partition, value, ..
            },
            Outcome::Sent { offset },
        ) = (&op.call, &op.outcome)
        {
            acked.insert((*partition, value.as_str()), *offset);
        }
    }
    for op in &h.ops {
        let Call::Resend {
            partition,
            value,
            back,
            ..
        } = &op.call
        else {
            continue;
        };
        if *back >= IDEMPOTENCE_WINDOW {
            continue;
        }
        let Some(original) = acked.get(&(*partition, value.as_str())) else {
            continue;
        };
        match &op.outcome {
            Outcome::Sent { offset } if offset == original => {}
            Outcome::Sent { offset } => {
                return Err(format!(
                    "op {}: duplicate of {value:?} ({back} back) appended at {offset}, \
                     original at {original}",
                    op.id
                ))
            }
            Outcome::Fail(m) | Outcome::Info(m) if SEQUENCE_REJECTIONS.iter().any(|r| m == r) => {
                // `back` counts acknowledged batches only; unacknowledged sends that reached the
                // log also occupy the broker's window. Judge only when the original is certainly
                // still inside it (simulator: single_torn_tail, a send lost its ack to a crash
                // but not its bytes, pushing the original out).
                if later_sends_maybe_in_log(h, op.id, value) >= IDEMPOTENCE_WINDOW {
                    continue;
                }
                // A range the broker reported corrupt at or below the original (single_corruption)
                // stops the producer-state replay after a restart: the broker cannot know the
                // batches it cannot read, so a sequence rejection is all it can answer
                // (single_corruption 268566736583945).
                if h.final_log
                    .corrupt
                    .iter()
                    .any(|(p, r)| p == partition && r.start <= *original)
                {
                    continue;
                }
                return Err(format!(
                    "op {}: duplicate of {value:?} ({back} back) rejected: {m}",
                    op.id
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Sends of the producer and partition that sent `value`, invoked after that send and before
/// the resend `resend_id`, that may have reached the log (anything but a definite failure).
fn later_sends_maybe_in_log(h: &History, resend_id: u64, value: &str) -> u32 {
    let mut original: Option<(u32, i32)> = None;
    let mut count = 0u32;
    for op in h.ops.iter().take_while(|op| op.id != resend_id) {
        let Call::Send {
            producer,
            partition,
            value: v,
            ..
        } = &op.call
        else {
            continue;
        };
        match original {
            None if v == value => original = Some((*producer, *partition)),
            Some(key)
                if key == (*producer, *partition) && !matches!(op.outcome, Outcome::Fail(_)) =>
            {
                count += 1;
            }
            _ => {}
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::build::*;

    fn resend(h: &mut History, value: &str, back: u32, outcome: Outcome) {
        let call = Call::Resend {
            producer: 1,
            partition: 0,
            value: value.into(),
            back,
        };
        let id = h.invoke(1, 0, call).expect("room");
        h.complete(id, 1, outcome);
    }

    #[test]
    fn duplicate_answered_at_original_offset_passes() {
        let mut h = History::default();
        send(&mut h, 1, "p1-0", Outcome::Sent { offset: 0 });
        send(&mut h, 1, "p1-1", Outcome::Sent { offset: 1 });
        resend(&mut h, "p1-0", 1, Outcome::Sent { offset: 0 });
        resend(&mut h, "p1-0", 1, Outcome::Info("timeout".into()));
        resend(
            &mut h,
            "p1-0",
            7,
            Outcome::Fail("Broker { code: 45 }".into()),
        );
        assert!(check(&h).is_ok());
    }

    #[test]
    fn rejected_or_reappended_duplicate_fails() {
        let mut h = History::default();
        send(&mut h, 1, "p1-0", Outcome::Sent { offset: 0 });
        send(&mut h, 1, "p1-1", Outcome::Sent { offset: 1 });
        resend(
            &mut h,
            "p1-0",
            1,
            Outcome::Info("Broker { code: 45 }".into()),
        );
        assert!(check(&h).expect_err("rejected").contains("rejected"));
        // A corrupt range above the original does not excuse it; one at or below it does
        // (the broker could not replay the original into its producer state).
        h.final_log.corrupt.push((0, 1..2));
        assert!(check(&h).is_err(), "corruption above the original");
        h.final_log.corrupt.push((0, 0..1));
        assert_eq!(check(&h), Ok(()));
        let mut h2 = History::default();
        send(&mut h2, 1, "p1-0", Outcome::Sent { offset: 0 });
        resend(&mut h2, "p1-0", 0, Outcome::Sent { offset: 2 });
        assert!(check(&h2).expect_err("appended").contains("appended at 2"));
    }

    #[test]
    fn unacknowledged_sends_that_may_be_logged_push_the_original_out_of_the_window() {
        let mut h = History::default();
        send(&mut h, 1, "p1-0", Outcome::Sent { offset: 0 });
        for i in 1..=4 {
            send(&mut h, 1, &format!("p1-{i}"), Outcome::Sent { offset: i });
        }
        // Lost its ack to a crash, perhaps not its bytes: p1-0 may now be 6th from the end.
        send(&mut h, 1, "p1-5", Outcome::Info("timeout".into()));
        let rejected = Outcome::Fail("Broker { code: 45 }".into());
        resend(&mut h, "p1-0", 4, rejected.clone());
        assert!(check(&h).is_ok());

        // A later send that certainly failed never reached the log: no excuse.
        let mut h2 = History::default();
        send(&mut h2, 1, "p1-0", Outcome::Sent { offset: 0 });
        for i in 1..=4 {
            send(&mut h2, 1, &format!("p1-{i}"), Outcome::Sent { offset: i });
        }
        send(&mut h2, 1, "p1-5", Outcome::Fail("definite".into()));
        resend(&mut h2, "p1-0", 4, rejected);
        assert!(check(&h2).expect_err("rejected").contains("rejected"));
    }
}
