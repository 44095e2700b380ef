//! Check `compaction_equivalence`: compaction only ever removes records. Every offset a reader
//! sees (the final log and every poll) holds the record originally written there: a value sent
//! with a key, under that key, at its acknowledged offset if it was acknowledged, and at one
//! offset only (offsets are never renumbered; a non-idempotent producer's retries may append a
//! value more than once, so its values may sit at several offsets); each poll returns rising
//! offsets. Never judges
//! unkeyed sends, which only non-compaction scenarios make, nor a topic that is not compacted.

use std::collections::BTreeMap;

use crate::check::compaction_latest::keyed_writes;
use crate::history::{Call, History, Outcome};

pub fn check(h: &History) -> Result<(), String> {
    if h.delete_retention_ms.is_none() {
        return Ok(());
    }
    let writes = keyed_writes(h);
    // Where each value was first seen: (partition, offset, source).
    let mut placed: BTreeMap<&str, (i32, i64, String)> = BTreeMap::new();
    for w in writes.values() {
        if let Some(offset) = w.acked {
            placed.insert(
                w.value,
                (w.partition, offset, format!("ack of op {}", w.op.id)),
            );
        }
    }
    let mut sighting = |p: i32, offset: i64, value: &str, source: String| -> Result<(), String> {
        if h.final_log.is_corrupt(p, offset) {
            return Ok(());
        }
        let Some(w) = writes.get(value) else {
            return Err(format!(
                "{source} read {value:?} at {p}/{offset}: never sent with a key"
            ));
        };
        if w.partition != p {
            return Err(format!(
                "{source} read {value:?} at {p}/{offset}; it was sent to partition {}",
                w.partition
            ));
        }
        match placed.get(value) {
            Some((_, at, first)) if *at != offset && w.idempotent => Err(format!(
                "{value:?} is at {p}/{offset} ({source}) but at {p}/{at} ({first}): renumbered"
            )),
            Some(_) => Ok(()),
            None => {
                placed.insert(w.value, (p, offset, source));
                Ok(())
            }
        }
    };
    for (p, records) in &h.final_log.partitions {
        let keys = h.final_log.keys.get(p);
        for (offset, value) in records {
            sighting(*p, *offset, value, "final log".into())?;
            let Some(w) = writes.get(value.as_str()) else {
                continue;
            };
            let key = keys.and_then(|k| k.get(offset));
            if key.map(String::as_str) != Some(w.key) {
                return Err(format!(
                    "final log {p}/{offset} holds {value:?} under key {key:?}; it was sent \
                     under {:?}",
                    w.key
                ));
            }
        }
    }
    for op in &h.ops {
        let (Call::Poll { partition, .. }, Outcome::Polled { records, .. }) =
            (&op.call, &op.outcome)
        else {
            continue;
        };
        let mut previous: Option<i64> = None;
        for (offset, value) in records {
            if previous.is_some_and(|p| p >= *offset) {
                return Err(format!(
                    "poll op {} on partition {partition}: offset {offset} after {previous:?}",
                    op.id
                ));
            }
            previous = Some(*offset);
            sighting(*partition, *offset, value, format!("poll op {}", op.id))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::build::*;

    #[test]
    fn removed_records_and_gaps_pass() {
        let mut h = History::default();
        send_keyed(&mut h, "a", "p1-0", 0, Outcome::Sent { offset: 0 });
        send_keyed(&mut h, "a", "p1-1", 0, Outcome::Info("reset".into()));
        send_keyed(&mut h, "b", "p1-2", 0, Outcome::Sent { offset: 2 });
        poll(&mut h, 1, 0, &[(0, "p1-0"), (1, "p1-1"), (2, "p1-2")], 3);
        final_keyed(&mut h, &[(1, "a", "p1-1"), (2, "b", "p1-2")], 10);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn a_renumbered_record_fails() {
        let mut h = History::default();
        send_keyed(&mut h, "a", "p1-0", 0, Outcome::Sent { offset: 0 });
        send_keyed(&mut h, "a", "p1-1", 0, Outcome::Sent { offset: 1 });
        final_keyed(&mut h, &[(0, "a", "p1-1")], 10);
        assert!(check(&h).expect_err("moved").contains("renumbered"));
    }

    #[test]
    fn a_record_under_the_wrong_key_or_never_sent_fails() {
        let mut h = History::default();
        send_keyed(&mut h, "a", "p1-0", 0, Outcome::Sent { offset: 0 });
        final_keyed(&mut h, &[(0, "b", "p1-0")], 10);
        assert!(check(&h).expect_err("key").contains("under key"));
        let mut h = History::default();
        send_keyed(&mut h, "a", "p1-0", 0, Outcome::Sent { offset: 0 });
        poll(&mut h, 1, 0, &[(0, "p1-0"), (1, "zz")], 2);
        final_keyed(&mut h, &[(0, "a", "p1-0")], 10);
        assert!(check(&h).expect_err("unknown").contains("never sent"));
    }

    #[test]
    fn a_non_idempotent_retry_may_append_a_value_twice() {
        let mut h = History::default();
        let call = Call::Send {
            producer: 2,
            partition: 0,
            key: Some("a".into()),
            value: "p2-0".into(),
            acks: -1,
            idempotent: false,
        };
        let id = h.invoke(2, 0, call).expect("room");
        h.complete(id, 1, Outcome::Sent { offset: 1 });
        final_keyed(&mut h, &[(0, "a", "p2-0"), (1, "a", "p2-0")], 10);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn a_poll_going_backwards_fails() {
        let mut h = History::default();
        send_keyed(&mut h, "a", "p1-0", 0, Outcome::Sent { offset: 0 });
        send_keyed(&mut h, "a", "p1-1", 0, Outcome::Sent { offset: 1 });
        poll(&mut h, 1, 0, &[(1, "p1-1"), (0, "p1-0")], 2);
        final_keyed(&mut h, &[(1, "a", "p1-1")], 10);
        assert!(check(&h).expect_err("backwards").contains("after"));
    }
}
