//! Check `no_corruption_reported`: outside a scenario whose fault atlas includes bit flips, the
//! broker never reports stored data as corrupt (to a poll, or to the final read). Torn and lost
//! unsynced writes must be cut by recovery, not kept and served as damaged batches.
//! Never applies when corruption is in the atlas (single_corruption).

use crate::history::{Call, History, Outcome};

pub fn check(h: &History) -> Result<(), String> {
    if h.corruption_in_atlas {
        return Ok(());
    }
    if let Some((p, range)) = h.final_log.corrupt.first() {
        return Err(format!(
            "after healing, the broker kept refusing {p}/{}..{} as unreadable (corrupt or \
             storage error) although no bit flip is in the atlas",
            range.start, range.end
        ));
    }
    for op in &h.ops {
        let (
            Call::Poll {
                partition,
                from_offset,
                ..
            },
            Outcome::Fail(m) | Outcome::Info(m),
        ) = (&op.call, &op.outcome)
        else {
            continue;
        };
        if m.contains("CorruptRecords") || m.contains("CORRUPT") {
            return Err(format!(
                "poll op {} at {partition}/{from_offset}: {m}",
                op.id
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::build::*;

    #[test]
    fn corrupt_range_outside_the_atlas_fails_inside_it_passes() {
        let mut h = History::default();
        final_log(&mut h, &[(0, "a")]);
        assert!(check(&h).is_ok());
        h.final_log.corrupt.push((0, 1..2));
        assert!(check(&h).expect_err("corrupt").contains("0/1..2"));
        h.corruption_in_atlas = true;
        assert!(check(&h).is_ok());
    }

    #[test]
    fn corrupt_poll_outside_the_atlas_fails() {
        let mut h = History::default();
        let call = Call::Poll {
            consumer: 1,
            partition: 0,
            from_offset: 3,
        };
        let id = h.invoke(101, 0, call).expect("room");
        h.complete(id, 1, Outcome::Fail("definite: CorruptRecords(Crc)".into()));
        assert!(check(&h).expect_err("corrupt poll").contains("0/3"));
    }
}
