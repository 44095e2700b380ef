//! Check `offsets_unique` ("inconsistent offsets"): across every acknowledgement, every poll
//! and the final log, no (partition, offset) is ever seen holding two different values. Offsets
//! in reported-corrupt ranges are excused. Never compares values across partitions.

use std::collections::BTreeMap;

use crate::history::{Call, History, Outcome};

pub fn check(h: &History) -> Result<(), String> {
    let mut seen: BTreeMap<(i32, i64), (String, String)> = BTreeMap::new();
    let mut note = |p: i32, o: i64, v: &str, source: String| -> Result<(), String> {
        if h.final_log.is_corrupt(p, o) {
            return Ok(());
        }
        match seen.get(&(p, o)) {
            Some((prev, prev_source)) if prev != v => Err(format!(
                "{p}/{o} holds {prev:?} ({prev_source}) and {v:?} ({source})"
            )),
            Some(_) => Ok(()),
            None => {
                seen.insert((p, o), (v.to_string(), source));
                Ok(())
            }
        }
    };
    for (p, records) in &h.final_log.partitions {
        for (o, v) in records {
            note(*p, *o, v, "final log".into())?;
        }
    }
    for op in &h.ops {
        match (&op.call, &op.outcome) {
            (
                Call::Send {
                    partition, value, ..
                },
                Outcome::Sent { offset },
            ) => note(*partition, *offset, value, format!("ack of op {}", op.id))?,
            (Call::Poll { partition, .. }, Outcome::Polled { records, .. }) => {
                for (o, v) in records {
                    note(*partition, *o, v, format!("poll op {}", op.id))?;
                }
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

    #[test]
    fn two_acks_at_one_offset_fail() {
        let mut h = History::default();
        send(&mut h, 1, "a", Outcome::Sent { offset: 3 });
        send(&mut h, 2, "b", Outcome::Sent { offset: 3 });
        assert!(check(&h).expect_err("dup offset").contains("3"));
    }

    #[test]
    fn poll_disagreeing_with_final_log_fails_but_agreement_passes() {
        let mut h = History::default();
        poll(&mut h, 1, 0, &[(0, "a")], 1);
        final_log(&mut h, &[(0, "a")]);
        assert!(check(&h).is_ok());
        poll(&mut h, 2, 0, &[(0, "x")], 1);
        assert!(check(&h).is_err());
    }
}
