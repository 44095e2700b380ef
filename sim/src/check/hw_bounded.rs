//! Check `hw_bounded`: every high watermark a client saw is at most the log end offset reported
//! with it, and per client process and partition the high watermark never goes backwards.
//! Never looks at broker internals: only what clients were told.

use std::collections::BTreeMap;

use crate::history::{Call, History, Outcome};

pub fn check(h: &History) -> Result<(), String> {
    let mut seen: BTreeMap<(u32, i32), i64> = BTreeMap::new();
    for op in &h.ops {
        let (
            Call::Poll { partition, .. },
            Outcome::Polled {
                high_watermark,
                log_end_offset,
                ..
            },
        ) = (&op.call, &op.outcome)
        else {
            continue;
        };
        if let Some(leo) = log_end_offset {
            if high_watermark > leo {
                return Err(format!(
                    "poll op {}: high watermark {high_watermark} > log end offset {leo}",
                    op.id
                ));
            }
        }
        if let Some(prev) = seen.get(&(op.process, *partition)) {
            if high_watermark < prev {
                return Err(format!(
                    "process {} saw high watermark {high_watermark} after {prev}",
                    op.process
                ));
            }
        }
        seen.insert((op.process, *partition), *high_watermark);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::build::*;

    #[test]
    fn regressing_hw_fails() {
        let mut h = History::default();
        poll(&mut h, 1, 0, &[], 5);
        poll(&mut h, 1, 0, &[], 3);
        assert!(check(&h).expect_err("regress").contains("after 5"));
    }

    #[test]
    fn hw_above_leo_fails() {
        let mut h = History::default();
        let call = Call::Poll {
            consumer: 1,
            partition: 0,
            from_offset: 0,
        };
        let id = h.invoke(1, 0, call).expect("room");
        let outcome = Outcome::Polled {
            records: vec![],
            high_watermark: 4,
            log_end_offset: Some(3),
        };
        h.complete(id, 1, outcome);
        assert!(check(&h).expect_err("above").contains("> log end"));
    }

    #[test]
    fn rising_hw_passes() {
        let mut h = History::default();
        poll(&mut h, 1, 0, &[], 1);
        poll(&mut h, 1, 0, &[], 1);
        poll(&mut h, 1, 0, &[], 2);
        assert!(check(&h).is_ok());
    }
}
