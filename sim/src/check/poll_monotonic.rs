//! Check `poll_monotonic`: a consumer's fetch returns consecutive offsets starting at the offset
//! it asked for (no skip, nothing earlier), and successive fetches of one consumer never go
//! backwards. An empty fetch is always fine. Never applies across consumers.

use std::collections::BTreeMap;

use crate::history::{Call, History, Outcome};

pub fn check(h: &History) -> Result<(), String> {
    let mut last: BTreeMap<(u32, i32), i64> = BTreeMap::new();
    for op in &h.ops {
        let (
            Call::Poll {
                consumer,
                partition,
                from_offset,
            },
            Outcome::Polled { records, .. },
        ) = (&op.call, &op.outcome)
        else {
            continue;
        };
        for (expect, (offset, _)) in (*from_offset..).zip(records.iter()) {
            if *offset != expect {
                let what = if *offset > expect {
                    "skipped to"
                } else {
                    "went back to"
                };
                return Err(format!(
                    "consumer {consumer} poll op {} from {from_offset}: expected {expect}, \
                     {what} {offset}",
                    op.id
                ));
            }
        }
        if let Some((first, _)) = records.first() {
            if let Some(prev) = last.get(&(*consumer, *partition)) {
                if *first <= *prev {
                    return Err(format!(
                        "consumer {consumer} poll op {} returned {first} after {prev}",
                        op.id
                    ));
                }
            }
        }
        if let Some((l, _)) = records.last() {
            last.insert((*consumer, *partition), *l);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::build::*;

    #[test]
    fn skip_inside_a_poll_fails() {
        let mut h = History::default();
        poll(&mut h, 1, 0, &[(0, "a"), (2, "c")], 3);
        assert!(check(&h).expect_err("skip").contains("skipped"));
    }

    #[test]
    fn going_backwards_across_polls_fails() {
        let mut h = History::default();
        poll(&mut h, 1, 0, &[(0, "a"), (1, "b")], 2);
        poll(&mut h, 1, 1, &[(1, "b")], 2);
        assert!(check(&h).expect_err("backwards").contains("after"));
    }

    #[test]
    fn contiguous_polls_and_other_consumers_pass() {
        let mut h = History::default();
        poll(&mut h, 1, 0, &[(0, "a")], 2);
        poll(&mut h, 1, 1, &[(1, "b")], 2);
        poll(&mut h, 2, 0, &[(0, "a")], 2);
        poll(&mut h, 2, 1, &[], 2);
        assert!(check(&h).is_ok());
    }
}
