//! Check `no_duplicates`: with idempotence on, each value sent appears at most once in the final
//! log, however many times the client retried it. Never judges non-idempotent producers (their
//! retries may legally duplicate).

use std::collections::BTreeMap;

use crate::history::{Call, History};

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
    let mut where_seen: BTreeMap<&str, (i32, i64)> = BTreeMap::new();
    for (p, records) in &h.final_log.partitions {
        for (o, v) in records {
            if idempotent.get(v.as_str()) != Some(&true) {
                continue;
            }
            if let Some((p0, o0)) = where_seen.insert(v.as_str(), (*p, *o)) {
                return Err(format!("{v:?} appears at {p0}/{o0} and {p}/{o}"));
            }
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
    fn idempotent_duplicate_fails() {
        let mut h = History::default();
        send(&mut h, 1, "a", Outcome::Sent { offset: 0 });
        final_log(&mut h, &[(0, "a"), (1, "a")]);
        assert!(check(&h).expect_err("dup").contains("\"a\""));
    }

    #[test]
    fn non_idempotent_duplicate_is_allowed() {
        let mut h = History::default();
        send_with(&mut h, 1, "a", false, Outcome::Info("reset".into()));
        final_log(&mut h, &[(0, "a"), (1, "a")]);
        assert!(check(&h).is_ok());
    }
}
