//! Check `replica_epochs_monotonic` (per-replica leader epochs monotonic): in every replica log
//! the replication scenarios read after quiescence, the stored batches' partition leader epochs
//! never go down along the log, and batches follow each other without a hole or an overlap
//! (unless the topic is compacted). A leader writes only its own epoch, a follower copies the
//! leader's batches after truncating to the divergence point, so an epoch going backwards means
//! a replica kept or appended batches a newer leader had replaced. Never decides anything from
//! client operations; passes when nothing was recorded.

use samsa_net::batch::{BatchHeader, BATCH_HEADER_BYTES};

use crate::history::History;

/// Batches walked per replica log (each is at least `BATCH_HEADER_BYTES` long, so the recorded
/// bytes bound the walk anyway; this names the bound).
pub const BATCHES_PER_LOG_MAX: usize = 1 << 20;

pub fn check(h: &History) -> Result<(), String> {
    let compacted = h.delete_retention_ms.is_some();
    for (partition, r) in &h.replicas {
        for (node, log) in &r.logs {
            // An unreadable log is `replicas_agree`'s to report.
            let Ok((_, bytes)) = log else {
                continue;
            };
            walk(bytes, compacted)
                .map_err(|e| format!("partition {partition} replica {node}: {e}"))?;
        }
    }
    Ok(())
}

/// Walks one replica's stored batches in log order.
fn walk(bytes: &[u8], compacted: bool) -> Result<(), String> {
    let mut at = 0usize;
    let mut previous: Option<BatchHeader> = None;
    for _ in 0..BATCHES_PER_LOG_MAX {
        if at >= bytes.len() {
            return Ok(());
        }
        let rest = &bytes[at..];
        if rest.len() < BATCH_HEADER_BYTES {
            return Err(format!("{} stray bytes at byte {at}", rest.len()));
        }
        let hdr = BatchHeader::parse(rest)
            .map_err(|e| format!("bad batch header at byte {at}: {e:?}"))?;
        let len = hdr.total_bytes();
        if len < BATCH_HEADER_BYTES || len > rest.len() {
            return Err(format!("batch at byte {at} claims {len} bytes"));
        }
        if let Some(prev) = &previous {
            if hdr.partition_leader_epoch < prev.partition_leader_epoch {
                return Err(format!(
                    "leader epoch goes back from {} (offset {}) to {} (offset {})",
                    prev.partition_leader_epoch,
                    prev.base_offset,
                    hdr.partition_leader_epoch,
                    hdr.base_offset
                ));
            }
            let expected = prev.last_offset() + 1;
            let hole_or_overlap = if compacted {
                hdr.base_offset < expected
            } else {
                hdr.base_offset != expected
            };
            if hole_or_overlap {
                return Err(format!(
                    "batch at offset {} follows one that ends at {}",
                    hdr.base_offset,
                    prev.last_offset()
                ));
            }
        }
        previous = Some(hdr);
        at += len;
    }
    Err(format!("more than {BATCHES_PER_LOG_MAX} batches"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::ReplicaLogs;
    use samsa_net::batch::{patch_base_offset, patch_leader_epoch};
    use samsa_net::records::{build_batch, BatchOptions, Record};

    fn batch(base: i64, epoch: i32, records: usize) -> Vec<u8> {
        let records: Vec<Record> = (0..records)
            .map(|i| Record {
                key: None,
                value: Some(bytes::Bytes::from(format!("v{base}-{i}"))),
                headers: Vec::new(),
                timestamp_ms: 0,
            })
            .collect();
        let mut b = build_batch(&records, &BatchOptions::default()).to_vec();
        patch_base_offset(&mut b, base);
        patch_leader_epoch(&mut b, epoch);
        b
    }

    fn history(logs: &[(i32, Vec<u8>)]) -> History {
        let mut h = History::default();
        h.replicas.insert(
            0,
            ReplicaLogs {
                high_watermark: 0,
                leader: logs[0].0,
                isr: logs.iter().map(|(n, _)| *n).collect(),
                logs: logs
                    .iter()
                    .map(|(n, b)| (*n, Ok((b.len() as i64, b.clone()))))
                    .collect(),
                ..ReplicaLogs::default()
            },
        );
        h
    }

    #[test]
    fn passes_monotonic_contiguous_logs_and_empty_histories() {
        assert_eq!(check(&History::default()), Ok(()));
        let log = [
            batch(0, 0, 2),
            batch(2, 0, 1),
            batch(3, 2, 3),
            batch(6, 5, 1),
        ]
        .concat();
        assert_eq!(check(&history(&[(1, log.clone()), (2, log)])), Ok(()));
        assert_eq!(check(&history(&[(1, Vec::new())])), Ok(()));
    }

    #[test]
    fn an_epoch_going_back_is_caught() {
        let log = [batch(0, 3, 2), batch(2, 2, 1)].concat();
        let err = check(&history(&[(1, Vec::new()), (2, log)])).unwrap_err();
        assert!(
            err.contains("replica 2") && err.contains("goes back"),
            "{err}"
        );
    }

    #[test]
    fn holes_and_overlaps_are_caught_unless_a_compacted_topic_skips_offsets() {
        let hole = [batch(0, 1, 2), batch(3, 1, 1)].concat();
        let overlap = [batch(0, 1, 2), batch(1, 1, 1)].concat();
        for log in [&hole, &overlap] {
            let err = check(&history(&[(1, log.clone())])).unwrap_err();
            assert!(err.contains("follows one that ends at 1"), "{err}");
        }
        let mut compacted = history(&[(1, hole)]);
        compacted.delete_retention_ms = Some(1_000);
        assert_eq!(check(&compacted), Ok(()));
        let mut compacted = history(&[(1, overlap)]);
        compacted.delete_retention_ms = Some(1_000);
        assert!(check(&compacted).is_err());
    }

    #[test]
    fn torn_bytes_are_reported_not_panicked_on() {
        let mut log = batch(0, 1, 2);
        log.truncate(log.len() - 1);
        assert!(check(&history(&[(1, log)])).is_err());
        assert!(check(&history(&[(1, vec![0u8; 10])])).is_err());
    }
}
