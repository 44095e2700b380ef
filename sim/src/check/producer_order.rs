//! Check `producer_order`: with idempotence, the values one producer sent to one partition appear
//! in the final log in the order it sent them (values are `p<producer>-<sequence>`, sequences
//! rising in send order). Never judges non-idempotent producers or values it cannot parse.

use std::collections::BTreeMap;

use crate::history::{Call, History};

/// `p3-17` -> (3, 17).
pub fn parse_value(value: &str) -> Option<(u32, u64)> {
    let rest = value.strip_prefix('p')?;
    let (producer, seq) = rest.split_once('-')?;
    Some((producer.parse().ok()?, seq.parse().ok()?))
}

pub fn check(h: &History) -> Result<(), String> {
    let mut idempotent: BTreeMap<&str, bool> = BTreeMap::new();
    for op in &h.ops {
        if let Call::Send {
            value,
            idempotent: on,
            ..
        } = &op.call
        {
            idempotent.insert(value.as_str(), *on);
        }
    }
    for (p, records) in &h.final_log.partitions {
        let mut last: BTreeMap<u32, (u64, i64)> = BTreeMap::new();
        for (offset, value) in records {
            if idempotent.get(value.as_str()) != Some(&true) {
                continue;
            }
            let Some((producer, seq)) = parse_value(value) else {
                continue;
            };
            if let Some((prev_seq, prev_offset)) = last.get(&producer) {
                if seq <= *prev_seq {
                    return Err(format!(
                        "producer {producer} on partition {p}: seq {seq} at {offset} after seq \
                         {prev_seq} at {prev_offset}"
                    ));
                }
            }
            last.insert(producer, (seq, *offset));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::build::*;
    use crate::history::Outcome;

    #[test]
    fn reordered_values_fail() {
        let mut h = History::default();
        send(&mut h, 1, "p1-0", Outcome::Info("timeout".into()));
        send(&mut h, 1, "p1-1", Outcome::Sent { offset: 0 });
        final_log(&mut h, &[(0, "p1-1"), (1, "p1-0")]);
        assert!(check(&h).expect_err("reorder").contains("seq 0"));
    }

    #[test]
    fn in_order_with_gaps_passes() {
        let mut h = History::default();
        send(&mut h, 1, "p1-0", Outcome::Sent { offset: 0 });
        send(&mut h, 1, "p1-1", Outcome::Fail("definite".into()));
        send(&mut h, 1, "p1-2", Outcome::Sent { offset: 1 });
        send(&mut h, 2, "p2-0", Outcome::Sent { offset: 2 });
        final_log(&mut h, &[(0, "p1-0"), (1, "p1-2"), (2, "p2-0")]);
        assert!(check(&h).is_ok());
        assert_eq!(parse_value("p12-345"), Some((12, 345)));
        assert_eq!(parse_value("x"), None);
    }
}
