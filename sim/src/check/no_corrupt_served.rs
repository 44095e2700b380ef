//! Check `no_corrupt_served`: no fetch ever hands a client a batch whose CRC fails. The simulated
//! network never damages bytes, so a client-side CRC failure means the broker served bytes it
//! should have refused (its read path must verify every batch and answer CORRUPT_MESSAGE or
//! KAFKA_STORAGE_ERROR instead). Clients reject such batches, so without this check the bug
//! would only surface as slow or failed polls. Never judges produce or admin calls.

use crate::history::{Call, History, Outcome};

/// How the workload records a client-side CRC (or framing) failure of fetched records.
pub const CLIENT_SAW_CORRUPT_RECORDS: &str = "CorruptRecords";

pub fn check(h: &History) -> Result<(), String> {
    for op in &h.ops {
        let Call::Poll { partition, .. } = &op.call else {
            continue;
        };
        if let Outcome::Fail(m) | Outcome::Info(m) = &op.outcome {
            if m.contains(CLIENT_SAW_CORRUPT_RECORDS) {
                return Err(format!(
                    "poll op {} on partition {partition}: the broker served records that fail \
                     their checks: {m}",
                    op.id
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::build::*;

    #[test]
    fn a_poll_that_got_corrupt_records_fails_other_errors_pass() {
        let mut h = History::default();
        poll(&mut h, 100, 0, &[(0, "p1-0")], 1);
        let id = h
            .invoke(
                100,
                0,
                Call::Poll {
                    consumer: 0,
                    partition: 0,
                    from_offset: 1,
                },
            )
            .expect("room");
        h.complete(
            id,
            100,
            Outcome::Fail("definite: Broker { code: 2 }".into()),
        );
        assert!(check(&h).is_ok(), "an error answer from the broker is fine");
        let id = h
            .invoke(
                100,
                0,
                Call::Poll {
                    consumer: 0,
                    partition: 0,
                    from_offset: 1,
                },
            )
            .expect("room");
        let served = "definite: CorruptRecords(Crc { position_bytes: 0 })";
        h.complete(id, 100, Outcome::Fail(served.into()));
        assert!(check(&h).expect_err("corrupt").contains("served records"));
    }
}
