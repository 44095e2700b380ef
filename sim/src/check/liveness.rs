//! Check `liveness`: after the liveness phase healed every fault, every client operation has
//! resolved and the final read reached every partition's end offset within the phase's bound.
//! Never judges what the operations returned; the safety checks do that.

use crate::history::{History, Outcome};

pub fn check(h: &History) -> Result<(), String> {
    let pending = h
        .ops
        .iter()
        .filter(|op| op.outcome == Outcome::Pending)
        .count() as u64;
    let pending = pending.max(h.liveness_pending);
    if pending > 0 {
        return Err(format!("{pending} operations still pending after healing"));
    }
    if !h.liveness_converged {
        return Err("the cluster did not converge after healing".into());
    }
    if !h.final_log.complete {
        return Err("the final read did not reach the end offsets".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::build::*;
    use crate::history::Call;

    #[test]
    fn pending_op_fails() {
        let mut h = History::default();
        let call = Call::Poll {
            consumer: 1,
            partition: 0,
            from_offset: 0,
        };
        h.invoke(1, 0, call).expect("room");
        final_log(&mut h, &[]);
        assert!(check(&h).expect_err("pending").contains("1 operations"));
    }

    #[test]
    fn incomplete_final_read_fails_and_healthy_passes() {
        let mut h = History::default();
        final_log(&mut h, &[]);
        assert!(check(&h).is_ok());
        h.final_log.complete = false;
        assert!(check(&h).expect_err("incomplete").contains("final read"));
        h.final_log.complete = true;
        h.liveness_converged = false;
        assert!(check(&h).is_err());
    }
}
