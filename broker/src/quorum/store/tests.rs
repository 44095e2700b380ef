//! Tests of `QuorumStore` on `RealDisk` in a temporary directory: round trips across reopen,
//! truncation, compaction, torn tails and corrupt files. Never touches the host outside the
//! temporary directory.

use bytes::Bytes;
use samsa_raft::{DirectoryId, Entry, HardState, NodeId, SnapshotMeta};
use samsa_storage::disk::real::RealDisk;
use samsa_storage::disk::{Disk, OpenMode};

use super::{QuorumStore, StoreError};

const DIR: &str = "quorum";

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        term,
        index,
        payload: Bytes::from(format!("e{index}t{term}")),
    }
}

fn entries(term: u64, from: u64, to: u64) -> Vec<Entry> {
    (from..=to).map(|i| entry(term, i)).collect()
}

async fn open(disk: &RealDisk, id: u128) -> (QuorumStore<RealDisk>, super::Loaded) {
    QuorumStore::open(disk.clone(), DIR, DirectoryId(id))
        .await
        .expect("open")
}

#[tokio::test]
async fn quorum_store_directory_id_is_created_once() {
    let tmp = tempfile::tempdir().expect("tmp");
    let disk = RealDisk::new(tmp.path()).expect("disk");
    let (_s, l) = open(&disk, 7).await;
    assert!(l.fresh);
    assert_eq!(l.directory_id, Some(DirectoryId(7)));
    let (_s, l) = open(&disk, 9).await;
    assert!(!l.fresh);
    assert_eq!(l.directory_id, Some(DirectoryId(7)));
}

#[tokio::test]
async fn quorum_store_round_trips_hard_state_log_and_truncation() {
    let tmp = tempfile::tempdir().expect("tmp");
    let disk = RealDisk::new(tmp.path()).expect("disk");
    let (mut s, l) = open(&disk, 1).await;
    assert_eq!(l.hard_state, HardState::default());
    let hs = HardState {
        term: 3,
        voted_for: Some((NodeId(2), DirectoryId(99))),
    };
    s.save_hard_state(hs).await.expect("hs");
    s.append(&entries(1, 1, 5)).await.expect("append");
    s.append(&entries(2, 6, 8)).await.expect("append");
    assert!(matches!(
        s.append(&entries(2, 10, 10)).await,
        Err(StoreError::Contract(_))
    ));
    s.truncate(7).await.expect("truncate");
    s.append(&entries(3, 7, 7)).await.expect("append");
    drop(s);
    let (s, l) = open(&disk, 1).await;
    assert_eq!(l.hard_state, hs);
    let mut want = entries(1, 1, 5);
    want.push(entry(2, 6));
    want.push(entry(3, 7));
    assert_eq!(l.log, want);
    assert_eq!(s.last_index(), 7);
}

#[tokio::test]
async fn quorum_store_cuts_a_torn_tail_and_keeps_the_prefix() {
    let tmp = tempfile::tempdir().expect("tmp");
    let disk = RealDisk::new(tmp.path()).expect("disk");
    let (mut s, _) = open(&disk, 1).await;
    s.append(&entries(1, 1, 4)).await.expect("append");
    drop(s);
    let f = disk
        .open("quorum/log", OpenMode::Existing)
        .await
        .expect("log");
    let len = disk.len(&f).await.expect("len");
    // Flip a byte in the last frame's payload and add half a frame of garbage.
    disk.write_at(&f, len - 1, &[0xff]).await.expect("flip");
    disk.write_at(&f, len, &[1, 2, 3]).await.expect("garbage");
    disk.sync(&f).await.expect("sync");
    let (mut s, l) = open(&disk, 1).await;
    assert_eq!(l.log, entries(1, 1, 3));
    s.append(&entries(2, 4, 4)).await.expect("append after cut");
    drop(s);
    let (_s, l) = open(&disk, 1).await;
    let mut want = entries(1, 1, 3);
    want.push(entry(2, 4));
    assert_eq!(l.log, want);
}

#[tokio::test]
async fn quorum_store_corrupt_hard_state_is_an_error_not_a_default() {
    let tmp = tempfile::tempdir().expect("tmp");
    let disk = RealDisk::new(tmp.path()).expect("disk");
    let (mut s, _) = open(&disk, 1).await;
    s.save_hard_state(HardState {
        term: 5,
        voted_for: None,
    })
    .await
    .expect("hs");
    drop(s);
    let f = disk
        .open("quorum/hard_state", OpenMode::Existing)
        .await
        .expect("hs file");
    disk.write_at(&f, 7, &[0x55]).await.expect("flip");
    disk.sync(&f).await.expect("sync");
    let r = QuorumStore::open(disk.clone(), DIR, DirectoryId(1)).await;
    assert!(matches!(r, Err(StoreError::Corrupt(_))));
}

#[tokio::test]
async fn quorum_store_state_without_directory_id_is_corrupt() {
    let tmp = tempfile::tempdir().expect("tmp");
    let disk = RealDisk::new(tmp.path()).expect("disk");
    let (mut s, _) = open(&disk, 1).await;
    s.append(&entries(1, 1, 2)).await.expect("append");
    drop(s);
    disk.remove("quorum/directory_id").await.expect("rm");
    let r = QuorumStore::open(disk.clone(), DIR, DirectoryId(2)).await;
    assert!(matches!(r, Err(StoreError::Corrupt(_))));
}

#[tokio::test]
async fn quorum_store_snapshot_compacts_the_prefix_and_survives_reopen() {
    let tmp = tempfile::tempdir().expect("tmp");
    let disk = RealDisk::new(tmp.path()).expect("disk");
    let (mut s, _) = open(&disk, 1).await;
    s.append(&entries(1, 1, 10)).await.expect("append");
    let meta = SnapshotMeta { index: 6, term: 1 };
    s.save_snapshot(meta, b"state@6").await.expect("snap");
    assert_eq!(s.last_index(), 10);
    s.append(&entries(2, 11, 12)).await.expect("append");
    s.truncate(12).await.expect("truncate");
    drop(s);
    let (mut s, l) = open(&disk, 1).await;
    assert_eq!(l.snapshot, meta);
    assert_eq!(&l.snapshot_data[..], b"state@6");
    let mut want = entries(1, 7, 10);
    want.push(entry(2, 11));
    assert_eq!(l.log, want);
    // A snapshot past the log's end (received from a leader) empties the log.
    let meta = SnapshotMeta { index: 20, term: 3 };
    s.save_snapshot(meta, b"state@20").await.expect("snap");
    assert_eq!(s.last_index(), 20);
    s.append(&entries(3, 21, 22)).await.expect("append");
    drop(s);
    let (_s, l) = open(&disk, 1).await;
    assert_eq!(l.snapshot, meta);
    assert_eq!(l.log, entries(3, 21, 22));
}
