//! Tests of the log cleaner: the bounded key map, the batch rewrite (offsets kept, latest per
//! key survives, tombstones until their delete horizon, producer fields and codecs kept), whole
//! passes on `RealDisk` with reopen, a crash after every swap step, and a throughput figure.
//! Never touches anything outside its own temp dirs.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use samsa_net::batch::BatchHeader;
use samsa_net::records::{build_batch, decode_fetched, decode_records, BatchOptions, Record};

use super::*;
use crate::disk::real::RealDisk;
use crate::log::{LogConfig, ReadResult};

const DIR: &str = "c-0";

fn rec(key: &str, value: Option<&str>, ts: i64) -> Record {
    Record {
        key: Some(Bytes::from(key.to_string())),
        value: value.map(|v| Bytes::from(v.to_string())),
        headers: vec![("h".to_string(), Some(Bytes::from_static(b"x")))],
        timestamp_ms: ts,
    }
}

/// A stored batch: `records` at base offset `base`, as the log would hold it.
fn stored(records: &[Record], options: &BatchOptions, base: i64) -> Vec<u8> {
    let mut b = build_batch(records, options);
    batch_view::patch(&mut b, base, 3, None);
    b.to_vec()
}

fn map_of(entries: &[(&str, i64)]) -> OffsetMap {
    let mut map = OffsetMap::new();
    for (k, o) in entries {
        assert!(map.put(&Bytes::from(k.to_string()), *o));
    }
    map
}

fn rules(map: &OffsetMap, now_ms: i64, keep_if_empty: bool) -> RewriteRules<'_> {
    RewriteRules {
        map,
        now_ms,
        delete_retention_ms: 500,
        keep_if_empty,
    }
}

fn replaced(r: Rewritten) -> Vec<u8> {
    match r {
        Rewritten::Replaced(b) => b,
        other => panic!("expected a rewritten batch, got {other:?}"),
    }
}

type Kv = (i64, String, Option<String>, i64);

fn decoded(bytes: &[u8]) -> Vec<Kv> {
    decode_records(bytes)
        .expect("decodes")
        .into_iter()
        .map(|(o, r)| {
            let s = |b: Bytes| String::from_utf8(b.to_vec()).expect("utf8");
            (o, s(r.key.expect("key")), r.value.map(s), r.timestamp_ms)
        })
        .collect()
}

#[test]
fn offset_map_keeps_latest_and_is_bounded() {
    let mut map = OffsetMap::new();
    let a = Bytes::from_static(b"a");
    assert!(map.put(&a, 3));
    assert!(map.put(&a, 9));
    assert_eq!(map.latest(b"a"), Some(9));
    assert_eq!(map.latest(b"b"), None);
    for i in 1..OFFSET_MAP_KEYS_MAX {
        assert!(map.put(&Bytes::from(format!("k{i}")), i as i64));
    }
    assert_eq!(map.len(), OFFSET_MAP_KEYS_MAX);
    assert!(!map.put(&Bytes::from_static(b"one-too-many"), 1));
    assert_eq!(map.latest(b"one-too-many"), None);
    // An existing key still updates when the map is full.
    assert!(map.put(&a, 11));
    assert_eq!(map.latest(b"a"), Some(11));
}

#[test]
fn rewrite_keeps_latest_per_key_and_never_renumbers() {
    let options = BatchOptions {
        producer_id: 42,
        producer_epoch: 3,
        base_sequence: 17,
        ..BatchOptions::default()
    };
    let recs = [
        rec("a", Some("a0"), 10),
        rec("b", Some("b0"), 11),
        rec("a", Some("a1"), 12),
        rec("c", Some("c0"), 13),
        rec("b", Some("b1"), 14),
    ];
    let batch = stored(&recs, &options, 100);
    let map = map_of(&[("a", 102), ("b", 104), ("c", 103)]);
    let out = replaced(rewrite_batch(&batch, &rules(&map, 0, false)).unwrap());
    let before = BatchHeader::parse(&batch).unwrap();
    let after = BatchHeader::parse(&out).unwrap();
    assert_eq!(after.base_offset, 100);
    assert_eq!(after.last_offset_delta, before.last_offset_delta);
    assert_eq!(
        (after.producer_id, after.producer_epoch, after.base_sequence),
        (42, 3, 17)
    );
    assert_eq!(after.partition_leader_epoch, before.partition_leader_epoch);
    assert_eq!(after.max_timestamp, before.max_timestamp);
    assert_eq!(after.record_count, 3);
    assert!(batch_view::crc_ok(&out));
    assert_eq!(
        decoded(&out),
        vec![
            (102, "a".into(), Some("a1".into()), 12),
            (103, "c".into(), Some("c0".into()), 13),
            (104, "b".into(), Some("b1".into()), 14),
        ]
    );
    // Nothing superseded: the stored bytes are kept as they are.
    let all_latest = map_of(&[("a", 1), ("b", 1), ("c", 1)]);
    let early = stored(&[rec("a", Some("x"), 1)], &BatchOptions::default(), 1);
    assert_eq!(
        rewrite_batch(&early, &rules(&all_latest, 0, false)).unwrap(),
        Rewritten::Unchanged
    );
}

#[test]
fn tombstones_stay_until_the_delete_horizon() {
    let batch = stored(
        &[rec("a", Some("a0"), 10), rec("a", None, 20)],
        &BatchOptions::default(),
        0,
    );
    let map = map_of(&[("a", 1)]);
    // First cleaning at t=1000: the tombstone stays, the batch gets horizon 1000 + 500.
    let first = replaced(rewrite_batch(&batch, &rules(&map, 1000, false)).unwrap());
    let hdr = BatchHeader::parse(&first).unwrap();
    assert!(hdr.has_delete_horizon());
    assert_eq!(hdr.first_timestamp, 1500);
    assert_eq!(hdr.last_offset_delta, 1);
    // The record keeps its own timestamp although the base timestamp moved.
    assert_eq!(decoded(&first), vec![(1, "a".into(), None, 20)]);
    // Before the horizon: nothing to do.
    assert_eq!(
        rewrite_batch(&first, &rules(&map, 1499, false)).unwrap(),
        Rewritten::Unchanged
    );
    // After it: the tombstone goes; the batch is dropped, or kept empty for producer state.
    assert_eq!(
        rewrite_batch(&first, &rules(&map, 1500, false)).unwrap(),
        Rewritten::Dropped
    );
    let empty = replaced(rewrite_batch(&first, &rules(&map, 1500, true)).unwrap());
    let hdr = BatchHeader::parse(&empty).unwrap();
    assert_eq!(
        (hdr.base_offset, hdr.last_offset_delta, hdr.record_count),
        (0, 1, 0)
    );
    assert_eq!(empty.len(), HEADER_BYTES);
    assert!(batch_view::crc_ok(&empty));
    assert!(decode_records(&empty).unwrap().is_empty());
}

#[test]
fn compressed_batches_keep_their_codec() {
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let options = BatchOptions {
            compression: codec,
            ..BatchOptions::default()
        };
        let recs: Vec<Record> = (0..20)
            .map(|i| rec(&format!("k{}", i % 4), Some(&format!("v{i}")), i))
            .collect();
        let batch = stored(&recs, &options, 50);
        let map = map_of(&[("k0", 66), ("k1", 67), ("k2", 68), ("k3", 69)]);
        let out = replaced(rewrite_batch(&batch, &rules(&map, 0, false)).unwrap());
        let hdr = BatchHeader::parse(&out).unwrap();
        assert_eq!(hdr.compression(), Some(codec), "{codec:?}");
        let offsets: Vec<i64> = decoded(&out).iter().map(|r| r.0).collect();
        assert_eq!(offsets, vec![66, 67, 68, 69], "{codec:?}");
    }
}

#[test]
fn corrupt_batches_are_refused_not_rewritten() {
    let mut batch = stored(&[rec("a", Some("a0"), 1)], &BatchOptions::default(), 0);
    let last = batch.len() - 1;
    batch[last] ^= 0xff;
    let map = map_of(&[("a", 5)]);
    assert!(rewrite_batch(&batch, &rules(&map, 0, false)).is_err());
    assert!(rewrite_batch(&batch[..30], &rules(&map, 0, false)).is_err());
}

// ---------------------------------------------------------------------------------------------
// Whole passes on RealDisk.

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

async fn open(tmp: &tempfile::TempDir) -> PartitionLog<RealDisk> {
    let disk = RealDisk::new(tmp.path()).expect("disk");
    PartitionLog::open(disk, DIR, config())
        .await
        .expect("open")
        .0
}

/// What was written: offset -> (key, value).
type Written = BTreeMap<i64, (String, Option<String>)>;

/// Appends `n` single-record batches over `keys` keys (every 7th a tombstone), flushed.
async fn fill(log: &mut PartitionLog<RealDisk>, n: usize, keys: usize, written: &mut Written) {
    for i in 0..n {
        let key = format!("key-{}", (i * 7 + i / 3) % keys);
        let value = (i % 7 != 6).then(|| format!("value-{i}-{}", "p".repeat(i % 40)));
        let batch = build_batch(
            &[rec(&key, value.as_deref(), 1000 + i as i64)],
            &BatchOptions::default(),
        );
        let info = log.append(batch, 1000 + i as i64, 0).await.expect("append");
        written.insert(info.base_offset, (key, value));
    }
    log.flush().await.expect("flush");
}

async fn read_all(log: &PartitionLog<RealDisk>) -> Vec<(i64, String, Option<String>)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let ReadResult {
            bytes, next_offset, ..
        } = log.read(offset, 64 * 1024, None).await.expect("read");
        assert!(next_offset > offset, "reads make progress");
        for (o, r) in decode_fetched(&bytes).expect("decodes") {
            let s = |b: Bytes| String::from_utf8(b.to_vec()).expect("utf8");
            out.push((o, s(r.key.expect("key")), r.value.map(s)));
        }
        offset = next_offset;
    }
    out
}

fn latest(written: &Written) -> BTreeMap<String, (i64, Option<String>)> {
    let mut out = BTreeMap::new();
    for (o, (k, v)) in written {
        out.insert(k.clone(), (*o, v.clone()));
    }
    out
}

/// Every record read is the one written at its offset; every key's latest write below
/// `cleaned_end` is present unless `tombstones_gone` (then only live values must be).
fn check_read(read: &[(i64, String, Option<String>)], written: &Written) {
    let mut last = -1;
    for (o, k, v) in read {
        assert!(*o > last, "offsets ascend");
        last = *o;
        assert_eq!(written.get(o), Some(&(k.clone(), v.clone())), "offset {o}");
    }
    let seen: BTreeMap<i64, ()> = read.iter().map(|r| (r.0, ())).collect();
    for (key, (o, v)) in latest(written) {
        if v.is_some() {
            assert!(seen.contains_key(&o), "latest of {key} at {o} survives");
        }
    }
}

#[tokio::test]
async fn clean_then_reopen_reads_latest_per_key() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(&tmp).await;
    let mut written = Written::new();
    fill(&mut log, 400, 10, &mut written).await;
    let before = read_all(&log).await;
    assert_eq!(before.len(), 400);
    let size_before = log.size_bytes();
    let info = log.dirty_info(10_000, 0).await.unwrap();
    assert!(info.dirty_ratio() > 0.9, "{info:?}");
    let options = CleanOptions {
        now_ms: 10_000,
        ..CleanOptions::default()
    };
    let stats = log.clean(&options).await.unwrap();
    assert!(
        stats.segments_cleaned > 0 && stats.records_removed > 300,
        "{stats:?}"
    );
    assert!(stats.bytes_written < stats.bytes_read, "{stats:?}");
    assert!(log.size_bytes() < size_before);
    let after = read_all(&log).await;
    check_read(&after, &written);
    // Above the cleaned range nothing changed.
    let active_base = *log.segment_bases().last().unwrap();
    let tail_before: Vec<_> = before.iter().filter(|r| r.0 >= active_base).collect();
    let tail_after: Vec<_> = after.iter().filter(|r| r.0 >= active_base).collect();
    assert_eq!(tail_before, tail_after);
    let info = log.dirty_info(10_000, 0).await.unwrap();
    assert_eq!(info.dirty_bytes, 0);
    assert_eq!(info.first_dirty_offset, stats.first_dirty_offset);
    // A second pass with nothing dirty does nothing.
    assert_eq!(log.clean(&options).await.unwrap().segments_cleaned, 0);

    drop(log);
    let mut log = open(&tmp).await;
    assert_eq!(read_all(&log).await, after);
    // Reads from inside a gap start at the next surviving batch.
    let gap = (0..after.last().unwrap().0)
        .find(|o| !after.iter().any(|r| r.0 == *o))
        .expect("a removed offset");
    let from_gap = log.read(gap, 1 << 20, None).await.unwrap();
    let first = decode_fetched(&from_gap.bytes).unwrap()[0].0;
    assert!(first > gap);
    // Appends go on at the same end; a later pass with the horizon past drops tombstones.
    fill(&mut log, 100, 10, &mut written).await;
    let later = CleanOptions {
        now_ms: 10_000 + 86_400_001,
        ..CleanOptions::default()
    };
    log.clean(&later).await.unwrap();
    let read = read_all(&log).await;
    check_read(&read, &written);
    // Tombstones cleaned in the first pass had horizon 10_000 + delete.retention.ms: gone now.
    let first_cleaned_end = stats.first_dirty_offset;
    assert!(read.iter().any(|r| r.2.is_none()), "newer tombstones stay");
    assert!(
        read.iter()
            .all(|r| r.0 >= first_cleaned_end || r.2.is_some()),
        "tombstones past their horizon are gone"
    );
}

#[tokio::test]
async fn idempotent_producer_survives_cleaning() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(&tmp).await;
    let idem = |seq: i32, value: &str| {
        let options = BatchOptions {
            producer_id: 9,
            producer_epoch: 1,
            base_sequence: seq,
            ..BatchOptions::default()
        };
        build_batch(&[rec("key-0", Some(value), 5)], &options)
    };
    // Seven batches: the producer-state window (5) holds the last five (sequences 2..=6).
    for seq in 0..7 {
        log.append(idem(seq, &format!("p{seq}")), 5, 0)
            .await
            .unwrap();
    }
    let mut written = Written::new();
    // Later plain writes supersede the key and fill segments.
    fill(&mut log, 200, 1, &mut written).await;
    log.clean(&CleanOptions::default()).await.unwrap();
    // The batches in the producer's dedup window stay as empty headers, older ones are gone
    // (single_compaction 210980146613466: a retry three batches back after a restart must still
    // be recognised as a duplicate).
    let first = log.read(0, 1 << 20, None).await.unwrap();
    let hdr = BatchHeader::parse(&first.bytes).unwrap();
    assert_eq!(
        (hdr.base_offset, hdr.producer_id, hdr.base_sequence),
        (2, 9, 2)
    );
    assert_eq!(hdr.record_count, 0);
    drop(log);
    let mut log = open(&tmp).await;
    // Duplicates anywhere in the window are recognised, the next sequence is accepted, a gap
    // is refused.
    for seq in [2, 4, 6] {
        let dup = log.append(idem(seq, "again"), 6, 0).await.unwrap();
        assert!(dup.duplicate, "sequence {seq}");
        assert_eq!(dup.base_offset, i64::from(seq));
    }
    let next = log.append(idem(7, "p7"), 6, 0).await.unwrap();
    assert!(!next.duplicate);
    assert!(log.append(idem(9, "p9"), 6, 0).await.is_err());
}

#[tokio::test]
async fn crash_after_every_swap_step_leaves_old_or_new() {
    for step in 1..=3u32 {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = open(&tmp).await;
        let mut written = Written::new();
        fill(&mut log, 300, 6, &mut written).await;
        let options = CleanOptions {
            now_ms: 5000,
            stop_after_step: Some(step),
            ..CleanOptions::default()
        };
        assert!(log.clean(&options).await.is_err(), "step {step}");
        drop(log);
        let mut log = open(&tmp).await;
        let read = read_all(&log).await;
        check_read(&read, &written);
        let files = RealDisk::new(tmp.path()).unwrap().list(DIR).await.unwrap();
        assert!(
            files.iter().all(|f| !f.ends_with(CLEANED_SUFFIX)),
            "step {step}: {files:?}"
        );
        // The first segment is whole: either untouched or cleaned.
        let first_base = log.segment_bases()[0];
        let first_seg: Vec<_> = read
            .iter()
            .filter(|r| r.0 < log.segment_bases()[1])
            .collect();
        let untouched = first_seg.len() as i64 == log.segment_bases()[1] - first_base;
        assert_eq!(untouched, step < 3, "step {step}");
        // Finishing the job afterwards gives the full result.
        log.clean(&CleanOptions {
            stop_after_step: None,
            ..options
        })
        .await
        .unwrap();
        check_read(&read_all(&log).await, &written);
        drop(log);
        let log = open(&tmp).await;
        check_read(&read_all(&log).await, &written);
    }
}

#[tokio::test]
async fn cleaning_a_larger_log_shrinks_it() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = RealDisk::new(tmp.path()).expect("disk");
    let config = LogConfig {
        segment_bytes: 1024 * 1024,
        ..LogConfig::default()
    };
    let (mut log, _) = PartitionLog::open(disk, DIR, config).await.unwrap();
    let value = "v".repeat(200);
    let mut ts = 0i64;
    for round in 0..40 {
        let recs: Vec<Record> = (0..500)
            .map(|i| {
                ts += 1;
                rec(
                    &format!("key-{}", (round * 500 + i) % 2000),
                    Some(&value),
                    ts,
                )
            })
            .collect();
        let batch = build_batch(&recs[..250], &BatchOptions::default());
        log.append(BytesMut::from(&batch[..]), ts, 0).await.unwrap();
        let batch = build_batch(&recs[250..], &BatchOptions::default());
        log.append(batch, ts, 0).await.unwrap();
    }
    log.flush().await.unwrap();
    let before = log.size_bytes();
    let stats = log.clean(&CleanOptions::default()).await.unwrap();
    assert!(stats.bytes_read > 0 && stats.bytes_written < stats.bytes_read);
    assert!(log.size_bytes() < before);
}

#[tokio::test]
async fn stepped_pass_lets_appends_in_between() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(&tmp).await;
    let mut written = Written::new();
    fill(&mut log, 300, 8, &mut written).await;
    let options = CleanOptions {
        now_ms: 50_000,
        ..CleanOptions::default()
    };
    let mut plan = log.clean_plan(&options).await.unwrap().expect("cleanable");
    assert!(plan.targets.len() > 1);
    for base in plan.targets.clone() {
        log.clean_segment(&mut plan, base, &options).await.unwrap();
        // Appends (and rolls) between steps never touch the plan's segments.
        fill(&mut log, 5, 8, &mut written).await;
        check_read(&read_all(&log).await, &written);
    }
    let map_end = plan.map_end;
    let stats = log.clean_finish(plan).await.unwrap();
    assert_eq!(stats.first_dirty_offset, map_end);
    assert!(stats.segments_cleaned > 0, "{stats:?}");
    assert_eq!(log.first_dirty_offset().await.unwrap(), map_end);
    drop(log);
    let log = open(&tmp).await;
    check_read(&read_all(&log).await, &written);
}

/// Prints the cleaner's throughput on this machine (a figure, not a timed assertion): a 16 MiB
/// log of 2,000 keys in 1 MiB segments, one pass, MB/s of segment bytes read and rewritten.
/// Wall time comes through `samsa_net::SystemClock`, the one clock this workspace reads.
#[tokio::test]
async fn cleaner_throughput_figure() {
    use samsa_net::{Clock, SystemClock};
    let tmp = tempfile::tempdir().unwrap();
    let disk = RealDisk::new(tmp.path()).expect("disk");
    let config = LogConfig {
        segment_bytes: 1024 * 1024,
        ..LogConfig::default()
    };
    let (mut log, _) = PartitionLog::open(disk, DIR, config).await.unwrap();
    let value = "v".repeat(200);
    let mut ts = 0i64;
    while log.size_bytes() < 16 * 1024 * 1024 {
        let recs: Vec<Record> = (0..250)
            .map(|i| {
                ts += 1;
                rec(&format!("key-{}", (ts + i) % 2000), Some(&value), ts)
            })
            .collect();
        log.append(build_batch(&recs, &BatchOptions::default()), ts, 0)
            .await
            .unwrap();
    }
    log.flush().await.unwrap();
    let before = log.size_bytes();
    let started = SystemClock.now_ms();
    let stats = log.clean(&CleanOptions::default()).await.unwrap();
    let elapsed_ms = (SystemClock.now_ms() - started).max(1);
    let mb = |b: u64| b as f64 / 1e6;
    println!(
        "cleaner: {:.1} MB log, read {:.1} MB (map + rewrite), cleaned {:.1} MB, wrote {:.2} MB, \
         {} segments swapped in {elapsed_ms} ms: {:.1} MB/s cleaned, {:.1} MB/s read",
        mb(before),
        mb(stats.bytes_read),
        mb(stats.bytes_cleaned),
        mb(stats.bytes_written),
        stats.segments_cleaned,
        mb(stats.bytes_cleaned) * 1000.0 / elapsed_ms as f64,
        mb(stats.bytes_read) * 1000.0 / elapsed_ms as f64,
    );
    assert!(stats.segments_cleaned > 0);
    assert!(log.size_bytes() < before);
}
