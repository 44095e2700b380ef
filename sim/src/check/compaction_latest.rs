//! Check `compaction_latest`: on a compacted topic, a reader from the log start sees, per key, a
//! subsequence of the values ever written to that key (acknowledged or ambiguous, never a
//! definitely failed one) ending in the latest acknowledged value, or in a value written later
//! than it (at a higher offset, necessarily an ambiguous one). A latest value that is a tombstone
//! may be gone (once `delete.retention.ms` passed: `compaction_tombstone_retention` judges when).
//! Only acks=-1 under the fsync flush policy promise durability; without it, or when the final
//! read is incomplete, nothing is required. Never judges unkeyed sends or uncompacted topics.

use std::collections::BTreeMap;

use crate::history::{is_tombstone, Call, History, Op, Outcome};

/// One keyed write as the checks see it.
#[derive(Clone, Debug)]
pub struct KeyedWrite<'a> {
    pub op: &'a Op,
    pub partition: i32,
    pub key: &'a str,
    pub value: &'a str,
    /// The acknowledged offset (`None`: ambiguous or failed).
    pub acked: Option<i64>,
    /// True when the acknowledgement promises durability (acks=-1, fsync policy).
    pub durable: bool,
    /// Definitely not applied.
    pub failed: bool,
    /// Sent by an idempotent producer (client retries cannot append it twice).
    pub idempotent: bool,
}

/// Every keyed send of the history, by value (values are unique per run).
pub fn keyed_writes(h: &History) -> BTreeMap<&str, KeyedWrite<'_>> {
    let mut out = BTreeMap::new();
    for op in &h.ops {
        let Call::Send {
            partition,
            key: Some(key),
            value,
            acks,
            idempotent,
            ..
        } = &op.call
        else {
            continue;
        };
        let acked = match op.outcome {
            Outcome::Sent { offset } => Some(offset),
            _ => None,
        };
        let write = KeyedWrite {
            op,
            partition: *partition,
            key: key.as_str(),
            value: value.as_str(),
            acked,
            durable: acked.is_some() && *acks == -1 && h.fsync_policy,
            failed: matches!(op.outcome, Outcome::Fail(_)),
            idempotent: *idempotent,
        };
        out.insert(value.as_str(), write);
    }
    out
}

pub fn check(h: &History) -> Result<(), String> {
    if h.delete_retention_ms.is_none() || !h.final_log.complete {
        return Ok(());
    }
    let writes = keyed_writes(h);
    // Per (partition, key): the final log's values in offset order.
    let mut seen: BTreeMap<(i32, &str), Vec<(i64, &str)>> = BTreeMap::new();
    for (p, records) in &h.final_log.partitions {
        for (offset, value) in records {
            if h.final_log.is_corrupt(*p, *offset) {
                continue;
            }
            let Some(w) = writes.get(value.as_str()) else {
                // A value nobody sent with a key: `compaction_equivalence` reports it.
                continue;
            };
            if w.failed {
                return Err(format!(
                    "{p}/{offset} holds {value:?} of key {:?}, whose send failed definitely \
                     (op {})",
                    w.key, w.op.id
                ));
            }
            seen.entry((w.partition, w.key))
                .or_default()
                .push((*offset, value.as_str()));
        }
    }
    // Per (partition, key): the durable acknowledged write with the highest offset.
    let mut latest: BTreeMap<(i32, &str), &KeyedWrite<'_>> = BTreeMap::new();
    for w in writes.values().filter(|w| w.durable) {
        let slot = latest.entry((w.partition, w.key)).or_insert(w);
        if w.acked > slot.acked {
            *slot = w;
        }
    }
    for ((p, key), last) in latest {
        let Some(at) = last.acked else { continue };
        let values = seen.get(&(p, key)).map_or(&[][..], Vec::as_slice);
        match values.last() {
            None if is_tombstone(last.value) => {}
            None => {
                return Err(format!(
                    "key {key:?} on partition {p}: latest acked value {:?} (offset {at}, op {}) \
                     is gone and nothing of the key is left",
                    last.value, last.op.id
                ))
            }
            Some((offset, value)) if *offset < at && !is_tombstone(last.value) => {
                return Err(format!(
                    "key {key:?} on partition {p}: the log ends the key in {value:?} at \
                     {offset}, but {:?} was acked later at {at} (op {})",
                    last.value, last.op.id
                ))
            }
            Some((offset, value)) if *offset < at => {
                // The latest is a tombstone that may have been removed, but then every older
                // value of the key must have gone with it.
                return Err(format!(
                    "key {key:?} on partition {p}: tombstone {:?} acked at {at} (op {}) is gone \
                     but the older {value:?} at {offset} is still there",
                    last.value, last.op.id
                ));
            }
            Some((offset, value)) if *offset == at && *value != last.value => {
                return Err(format!(
                    "key {key:?} on partition {p}: offset {at} acked {:?} but holds {value:?}",
                    last.value
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::build::*;

    fn sent(offset: i64) -> Outcome {
        Outcome::Sent { offset }
    }

    #[test]
    fn compacted_log_ending_in_the_latest_passes() {
        let mut h = History::default();
        send_keyed(&mut h, "a", "p1-0", 0, sent(0));
        send_keyed(&mut h, "b", "p1-1", 0, sent(1));
        send_keyed(&mut h, "a", "p1-2", 0, sent(2));
        send_keyed(&mut h, "b", "~p1-3", 0, sent(3));
        send_keyed(&mut h, "a", "p1-4", 0, Outcome::Info("timeout".into()));
        // `a` ends in a later ambiguous write; `b`'s tombstone is gone with all of `b`.
        final_keyed(&mut h, &[(2, "a", "p1-2"), (5, "a", "p1-4")], 10);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn a_dropped_latest_value_fails() {
        let mut h = History::default();
        send_keyed(&mut h, "a", "p1-0", 0, sent(0));
        send_keyed(&mut h, "a", "p1-1", 0, sent(1));
        final_keyed(&mut h, &[(0, "a", "p1-0")], 10);
        let e = check(&h).expect_err("latest dropped");
        assert!(e.contains("acked later at 1"), "{e}");
        final_keyed(&mut h, &[], 10);
        h.final_log.partitions.clear();
        assert!(check(&h)
            .expect_err("all gone")
            .contains("nothing of the key"));
    }

    #[test]
    fn a_tombstone_gone_with_older_values_left_fails() {
        let mut h = History::default();
        send_keyed(&mut h, "a", "p1-0", 0, sent(0));
        send_keyed(&mut h, "a", "~p1-1", 0, sent(1));
        final_keyed(&mut h, &[(0, "a", "p1-0")], 10);
        assert!(check(&h).expect_err("resurrected").contains("still there"));
    }

    #[test]
    fn a_definitely_failed_value_in_the_log_fails() {
        let mut h = History::default();
        send_keyed(
            &mut h,
            "a",
            "p1-0",
            0,
            Outcome::Fail("INVALID_RECORD".into()),
        );
        final_keyed(&mut h, &[(0, "a", "p1-0")], 10);
        assert!(check(&h).expect_err("failed").contains("failed definitely"));
    }
}
