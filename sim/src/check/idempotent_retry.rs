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
                return Err(format!(
                    "op {}: duplicate of {value:?} ({back} back) rejected: {m}",
                    op.id
                ))
            }
            _ => {}
        }
    }
    Ok(())
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
        let mut h2 = History::default();
        send(&mut h2, 1, "p1-0", Outcome::Sent { offset: 0 });
        resend(&mut h2, "p1-0", 0, Outcome::Sent { offset: 2 });
        assert!(check(&h2).expect_err("appended").contains("appended at 2"));
    }
}
