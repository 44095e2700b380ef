//! Check `compaction_tombstone_retention`: a key whose latest durable acknowledged write is a
//! tombstone disappears only after `delete.retention.ms`. Conservative on time: it compares the
//! earliest moment the tombstone could have been written (its send's invocation) with the latest
//! moment its absence could have been observed (the end of the final read), in simulated time,
//! which the compaction scenarios keep in step with the broker's clock (constant offset, no
//! drift, no jumps). Skips a key when a later write of it could explain the absence (an ambiguous
//! tombstone completing after this one was invoked). Never judges a topic that is not compacted.

use std::collections::BTreeMap;

use crate::check::compaction_latest::{keyed_writes, KeyedWrite};
use crate::history::{is_tombstone, History};

pub fn check(h: &History) -> Result<(), String> {
    let Some(retention_ms) = h.delete_retention_ms else {
        return Ok(());
    };
    if !h.final_log.complete {
        return Ok(());
    }
    let writes = keyed_writes(h);
    let mut latest: BTreeMap<(i32, &str), &KeyedWrite<'_>> = BTreeMap::new();
    for w in writes.values().filter(|w| w.durable) {
        let slot = latest.entry((w.partition, w.key)).or_insert(w);
        if w.acked > slot.acked {
            *slot = w;
        }
    }
    let read_done_ms = h.final_log.read_done_ms;
    for ((p, key), last) in latest {
        let Some(at) = last.acked else { continue };
        if !is_tombstone(last.value) || h.final_log.value_at(p, at).is_some() {
            continue;
        }
        let keys = h.final_log.keys.get(&p);
        let later_of_key = keys.is_some_and(|k| k.range(at + 1..).any(|(_, k)| k == key));
        let later_tombstone = writes.values().any(|w| {
            w.partition == p
                && w.key == key
                && w.acked.is_none()
                && !w.failed
                && is_tombstone(w.value)
                && w.op.complete_ms.is_none_or(|c| c >= last.op.invoke_ms)
        });
        if later_of_key || later_tombstone {
            continue;
        }
        let elapsed_ms = read_done_ms.saturating_sub(last.op.invoke_ms);
        if i64::try_from(elapsed_ms).unwrap_or(i64::MAX) < retention_ms {
            return Err(format!(
                "key {key:?} on partition {p}: tombstone {:?} (offset {at}, op {}, sent at \
                 {} ms) was gone by {read_done_ms} ms, {elapsed_ms} ms later, before \
                 delete.retention.ms={retention_ms}",
                last.value, last.op.id, last.op.invoke_ms
            ));
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
    fn a_tombstone_gone_after_the_retention_passes() {
        let mut h = History::default();
        send_keyed(&mut h, "a", "p1-0", 0, Outcome::Sent { offset: 0 });
        send_keyed(&mut h, "a", "~p1-1", 100, Outcome::Sent { offset: 1 });
        final_keyed(&mut h, &[], 5_100);
        h.delete_retention_ms = Some(5_000);
        assert_eq!(check(&h), Ok(()));
        // Still there is always fine.
        final_keyed(&mut h, &[(1, "a", "~p1-1")], 200);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn a_tombstone_gone_too_early_fails() {
        let mut h = History::default();
        send_keyed(&mut h, "a", "p1-0", 0, Outcome::Sent { offset: 0 });
        send_keyed(&mut h, "a", "~p1-1", 100, Outcome::Sent { offset: 1 });
        final_keyed(&mut h, &[], 3_000);
        h.delete_retention_ms = Some(5_000);
        let e = check(&h).expect_err("too early");
        assert!(e.contains("before delete.retention.ms=5000"), "{e}");
        // Not compacted: nothing to judge.
        h.delete_retention_ms = None;
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn a_later_ambiguous_tombstone_excuses_the_absence() {
        let mut h = History::default();
        send_keyed(&mut h, "a", "~p1-0", 100, Outcome::Sent { offset: 0 });
        send_keyed(&mut h, "a", "~p1-1", 200, Outcome::Info("timeout".into()));
        final_keyed(&mut h, &[], 300);
        h.delete_retention_ms = Some(5_000);
        assert_eq!(check(&h), Ok(()));
    }
}
