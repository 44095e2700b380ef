//! `QuorumStore`: the metadata quorum's durable state through the `Disk` trait only: the data
//! directory's id (created once), Raft's hard state (tmp + sync + rename + sync_dir, CRC-checked),
//! the log (an append-only file of CRC-framed entries) and the latest snapshot.
//! Never touches the file system directly, never returns a silent default for a corrupt file,
//! never allocates from a length read from disk before checking it against a named bound.
//!
//! Files under `dir`: `directory_id`, `hard_state`, `log`, `snapshot` (and `*.tmp` while a
//! replacement is written). Log frame: `len u32 | crc32c u32 | term u64 | index u64 | payload`,
//! big-endian, where `len` counts `term..payload` and the CRC covers the same bytes. On open the
//! log is read up to the first bad frame (torn or corrupt tail), which is cut off durably.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};
use samsa_raft::{
    DirectoryId, Entry, HardState, NodeId, SnapshotMeta, ENTRY_PAYLOAD_BYTES_MAX, LOG_ENTRIES_MAX,
    SNAPSHOT_BYTES_MAX, TERM_MAX,
};
use samsa_storage::disk::{Disk, DiskError, OpenMode};

/// Bytes of a log frame's `len | crc` prefix.
const FRAME_HEAD_BYTES: usize = 8;
/// Bytes of a log frame's fixed body part (`term | index`).
const ENTRY_FIXED_BYTES: usize = 16;
/// Most bytes of one log frame body.
pub const LOG_FRAME_BYTES_MAX: usize = ENTRY_FIXED_BYTES + ENTRY_PAYLOAD_BYTES_MAX;
/// Most frames read back from the log on open (the core holds at most `LOG_ENTRIES_MAX`).
pub const LOG_FRAMES_MAX: usize = LOG_ENTRIES_MAX;
/// Chunk size used when copying the log tail during compaction.
const COPY_CHUNK_BYTES: usize = 1024 * 1024;

const DIR_ID_MAGIC: u32 = 0x5351_4449; // "SQDI"
const HARD_MAGIC: u32 = 0x5351_4853; // "SQHS"
const SNAP_MAGIC: u32 = 0x5351_534e; // "SQSN"
const FORMAT_VERSION: u8 = 1;
/// `magic u32 | version u8 | dir u128 | crc u32`.
const DIR_ID_FILE_BYTES: usize = 4 + 1 + 16 + 4;
/// `magic u32 | version u8 | term u64 | voted u8 | node u32 | dir u128 | crc u32`.
const HARD_FILE_BYTES: usize = 4 + 1 + 8 + 1 + 4 + 16 + 4;
/// `magic u32 | version u8 | index u64 | term u64 | len u32 | crc u32`, then `len` data bytes.
const SNAP_HEAD_BYTES: usize = 4 + 1 + 8 + 8 + 4 + 4;

/// Why the store could not open or write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    Disk(DiskError),
    /// A file that must be intact is not (never replaced by a default).
    Corrupt(&'static str),
    /// A caller broke the store's contract (non-contiguous append, oversized entry).
    Contract(&'static str),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Disk(e) => write!(f, "quorum store disk: {e}"),
            StoreError::Corrupt(what) => write!(f, "quorum store corrupt: {what}"),
            StoreError::Contract(what) => write!(f, "quorum store misuse: {what}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<DiskError> for StoreError {
    fn from(e: DiskError) -> Self {
        StoreError::Disk(e)
    }
}

/// Everything read back on open.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    pub directory_id: Option<DirectoryId>,
    /// True when this open created the directory id (a fresh or wiped data directory).
    pub fresh: bool,
    pub hard_state: HardState,
    pub snapshot: SnapshotMeta,
    pub snapshot_data: Bytes,
    pub log: Vec<Entry>,
}

pub struct QuorumStore<D: Disk> {
    disk: D,
    dir: String,
    log_file: D::File,
    /// Byte offset of each entry's frame, for entries `first_index..`.
    offsets: VecDeque<u64>,
    /// Index of the first entry in the log file (`snapshot.index + 1` when empty).
    first_index: u64,
    /// Byte length of the valid log.
    log_len: u64,
    /// Term of the last entry in the log (or the snapshot's term).
    last_term: u64,
    snapshot: SnapshotMeta,
}

impl<D: Disk> QuorumStore<D> {
    /// Opens (or creates) the store under `dir`. A data directory without a directory id gets
    /// `fresh_id` (the caller draws it from its seed or entropy source), but only if it holds no
    /// other quorum file: a missing id next to existing state is corruption.
    pub async fn open(
        disk: D,
        dir: &str,
        fresh_id: DirectoryId,
    ) -> Result<(QuorumStore<D>, Loaded), StoreError> {
        disk.create_dir_all(dir).await?;
        let names = disk.list(dir).await?;
        let has = |n: &str| names.iter().any(|x| x == n);
        let mut loaded = Loaded::default();
        let dir_path = format!("{dir}/directory_id");
        if has("directory_id") {
            let bytes = read_all(&disk, &dir_path, DIR_ID_FILE_BYTES).await?;
            loaded.directory_id = Some(decode_dir_id(&bytes)?);
        } else {
            if has("hard_state") || has("snapshot") || has("log") {
                return Err(StoreError::Corrupt("quorum state without a directory id"));
            }
            let mut b = BytesMut::with_capacity(DIR_ID_FILE_BYTES);
            b.put_u32(DIR_ID_MAGIC);
            b.put_u8(FORMAT_VERSION);
            b.put_u128(fresh_id.0);
            let crc = crc32c::crc32c(&b);
            b.put_u32(crc);
            replace_file(&disk, dir, "directory_id", &b).await?;
            loaded.directory_id = Some(fresh_id);
            loaded.fresh = true;
        }
        if has("hard_state") {
            let bytes = read_all(&disk, &format!("{dir}/hard_state"), HARD_FILE_BYTES).await?;
            loaded.hard_state = decode_hard(&bytes)?;
        }
        if has("snapshot") {
            let (meta, data) = read_snapshot(&disk, &format!("{dir}/snapshot")).await?;
            loaded.snapshot = meta;
            loaded.snapshot_data = data;
        }
        let log_path = format!("{dir}/log");
        let log_file = disk.open(&log_path, OpenMode::CreateOrOpen).await?;
        if !has("log") {
            disk.sync(&log_file).await?;
            disk.sync_dir(dir).await?;
        }
        let mut store = QuorumStore {
            disk,
            dir: dir.to_string(),
            log_file,
            offsets: VecDeque::new(),
            first_index: loaded.snapshot.index + 1,
            log_len: 0,
            last_term: loaded.snapshot.term,
            snapshot: loaded.snapshot,
        };
        loaded.log = store.load_log().await?;
        Ok((store, loaded))
    }

    /// Reads every intact frame; cuts the file at the first bad one. Entries at or below the
    /// snapshot are skipped (left by a compaction that the snapshot already covers).
    async fn load_log(&mut self) -> Result<Vec<Entry>, StoreError> {
        let file_len = self.disk.len(&self.log_file).await?;
        let mut pos = 0u64;
        let mut out: Vec<Entry> = Vec::new();
        let mut first: Option<u64> = None;
        let mut offsets = VecDeque::new();
        loop {
            if pos + FRAME_HEAD_BYTES as u64 > file_len || offsets.len() >= LOG_FRAMES_MAX {
                break;
            }
            let mut head = [0u8; FRAME_HEAD_BYTES];
            if read_exact_at(&self.disk, &self.log_file, pos, &mut head)
                .await
                .is_err()
            {
                break;
            }
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let crc = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
            if !(ENTRY_FIXED_BYTES..=LOG_FRAME_BYTES_MAX).contains(&len)
                || pos + (FRAME_HEAD_BYTES + len) as u64 > file_len
            {
                break;
            }
            let mut body = vec![0u8; len];
            if read_exact_at(
                &self.disk,
                &self.log_file,
                pos + FRAME_HEAD_BYTES as u64,
                &mut body,
            )
            .await
            .is_err()
                || crc32c::crc32c(&body) != crc
            {
                break;
            }
            let term = u64::from_be_bytes(body[0..8].try_into().unwrap_or([0; 8]));
            let index = u64::from_be_bytes(body[8..16].try_into().unwrap_or([0; 8]));
            let expected = first.map(|f| f + offsets.len() as u64);
            let prev_term = out.last().map_or(0, |e: &Entry| e.term);
            if expected.is_some_and(|x| x != index)
                || index == 0
                || term > TERM_MAX
                || term < prev_term
            {
                break;
            }
            first.get_or_insert(index);
            offsets.push_back(pos);
            out.push(Entry {
                term,
                index,
                payload: Bytes::copy_from_slice(&body[ENTRY_FIXED_BYTES..]),
            });
            pos += (FRAME_HEAD_BYTES + len) as u64;
        }
        if pos < file_len {
            self.disk.set_len(&self.log_file, pos).await?;
            self.disk.sync(&self.log_file).await?;
        }
        self.log_len = pos;
        // Entries covered by the snapshot stay in the file until the next compaction; keep the
        // offsets of the live ones only.
        let snap = self.snapshot.index;
        let first = first.unwrap_or(snap + 1);
        if first > snap + 1 {
            return Err(StoreError::Corrupt(
                "log starts after a gap above the snapshot",
            ));
        }
        let skip = (snap + 1 - first) as usize;
        if skip >= offsets.len() {
            // Nothing live: the log is empty above the snapshot.
            self.offsets.clear();
            self.first_index = snap + 1;
            self.last_term = self.snapshot.term;
            if self.log_len > 0 {
                self.disk.set_len(&self.log_file, 0).await?;
                self.disk.sync(&self.log_file).await?;
                self.log_len = 0;
            }
            return Ok(Vec::new());
        }
        self.offsets = offsets.into_iter().skip(skip).collect();
        let live: Vec<Entry> = out.into_iter().skip(skip).collect();
        if skip > 0 && live[0].term < self.snapshot.term {
            return Err(StoreError::Corrupt(
                "log entry term below the snapshot term",
            ));
        }
        self.first_index = snap + 1;
        self.last_term = live.last().map_or(self.snapshot.term, |e| e.term);
        Ok(live)
    }

    pub fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot
    }

    /// Index of the last entry in the log (or of the snapshot).
    pub fn last_index(&self) -> u64 {
        self.first_index + self.offsets.len() as u64 - 1
    }

    /// Durably replaces the hard state.
    pub async fn save_hard_state(&mut self, hs: HardState) -> Result<(), StoreError> {
        let mut b = BytesMut::with_capacity(HARD_FILE_BYTES);
        b.put_u32(HARD_MAGIC);
        b.put_u8(FORMAT_VERSION);
        b.put_u64(hs.term);
        match hs.voted_for {
            Some((node, dir)) => {
                b.put_u8(1);
                b.put_u32(node.0);
                b.put_u128(dir.0);
            }
            None => {
                b.put_u8(0);
                b.put_u32(0);
                b.put_u128(0);
            }
        }
        let crc = crc32c::crc32c(&b);
        b.put_u32(crc);
        replace_file(&self.disk, &self.dir, "hard_state", &b).await
    }

    /// Appends contiguous entries right after the last one and syncs.
    pub async fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index != self.last_index() + 1 {
            return Err(StoreError::Contract("append not contiguous with the log"));
        }
        if self.offsets.len() + entries.len() > LOG_FRAMES_MAX {
            return Err(StoreError::Contract("log beyond LOG_FRAMES_MAX"));
        }
        let mut buf = BytesMut::new();
        let mut new_offsets = Vec::with_capacity(entries.len());
        let mut last_term = self.last_term;
        for (expect, e) in (first.index..).zip(entries.iter()) {
            if e.index != expect || e.term < last_term {
                return Err(StoreError::Contract("entries not contiguous"));
            }
            if e.payload.len() > ENTRY_PAYLOAD_BYTES_MAX {
                return Err(StoreError::Contract("entry payload too large"));
            }
            new_offsets.push(self.log_len + buf.len() as u64);
            let len = ENTRY_FIXED_BYTES + e.payload.len();
            let mut body = BytesMut::with_capacity(len);
            body.put_u64(e.term);
            body.put_u64(e.index);
            body.put_slice(&e.payload);
            buf.put_u32(len as u32);
            buf.put_u32(crc32c::crc32c(&body));
            buf.put_slice(&body);
            last_term = e.term;
        }
        self.disk
            .write_at(&self.log_file, self.log_len, &buf)
            .await?;
        self.disk.sync(&self.log_file).await?;
        self.log_len += buf.len() as u64;
        self.offsets.extend(new_offsets);
        self.last_term = last_term;
        Ok(())
    }

    /// Removes every entry with `index >= from_index` durably (set_len + sync).
    pub async fn truncate(&mut self, from_index: u64) -> Result<(), StoreError> {
        if from_index <= self.snapshot.index {
            return Err(StoreError::Contract("truncate below the snapshot"));
        }
        if from_index > self.last_index() {
            return Ok(());
        }
        let keep = (from_index - self.first_index) as usize;
        let cut = self.offsets[keep];
        self.disk.set_len(&self.log_file, cut).await?;
        self.disk.sync(&self.log_file).await?;
        self.offsets.truncate(keep);
        self.log_len = cut;
        self.last_term = if keep == 0 {
            self.snapshot.term
        } else {
            self.read_term(keep - 1).await?
        };
        Ok(())
    }

    async fn read_term(&self, slot: usize) -> Result<u64, StoreError> {
        let mut b = [0u8; 8];
        let at = self.offsets[slot] + FRAME_HEAD_BYTES as u64;
        read_exact_at(&self.disk, &self.log_file, at, &mut b).await?;
        Ok(u64::from_be_bytes(b))
    }

    /// Durably stores a snapshot covering everything up to `meta.index` (tmp + rename), then
    /// drops the log prefix it covers. A log that ends below the snapshot becomes empty.
    pub async fn save_snapshot(
        &mut self,
        meta: SnapshotMeta,
        data: &[u8],
    ) -> Result<(), StoreError> {
        if data.len() > SNAPSHOT_BYTES_MAX {
            return Err(StoreError::Contract("snapshot too large"));
        }
        if meta.index < self.snapshot.index {
            return Err(StoreError::Contract("snapshot older than the current one"));
        }
        let mut b = BytesMut::with_capacity(SNAP_HEAD_BYTES + data.len());
        b.put_u32(SNAP_MAGIC);
        b.put_u8(FORMAT_VERSION);
        b.put_u64(meta.index);
        b.put_u64(meta.term);
        b.put_u32(data.len() as u32);
        let mut crc_input = BytesMut::with_capacity(16 + data.len());
        crc_input.put_u64(meta.index);
        crc_input.put_u64(meta.term);
        crc_input.put_slice(data);
        b.put_u32(crc32c::crc32c(&crc_input));
        b.put_slice(data);
        replace_file(&self.disk, &self.dir, "snapshot", &b).await?;
        let old_last = self.last_index();
        let keep_from = meta.index + 1;
        self.snapshot = meta;
        if old_last < keep_from || self.first_index > keep_from {
            // Nothing of the log survives (or it would leave a gap): empty it.
            self.rewrite_log_from(None).await?;
            self.first_index = keep_from;
            self.last_term = meta.term;
        } else {
            self.compact(meta.index).await?;
        }
        Ok(())
    }

    /// Drops entries up to `up_to_index` (covered by the durable snapshot) by rewriting the
    /// log's tail into a new file that replaces the old one atomically.
    pub async fn compact(&mut self, up_to_index: u64) -> Result<(), StoreError> {
        if up_to_index > self.snapshot.index {
            return Err(StoreError::Contract("compaction beyond the snapshot"));
        }
        if up_to_index < self.first_index {
            return Ok(());
        }
        let drop_n = ((up_to_index + 1 - self.first_index) as usize).min(self.offsets.len());
        let from = self.offsets.get(drop_n).copied();
        let base = from.unwrap_or(self.log_len);
        let rest: VecDeque<u64> = self.offsets.iter().skip(drop_n).map(|o| o - base).collect();
        let new_len = self.log_len - base;
        self.rewrite_log_from(from).await?;
        self.offsets = rest;
        self.log_len = new_len;
        self.first_index += drop_n as u64;
        if self.offsets.is_empty() {
            self.first_index = self.snapshot.index + 1;
            self.last_term = self.snapshot.term;
        }
        Ok(())
    }

    /// Replaces the log with the bytes from `from` to its end (`None`: empty).
    async fn rewrite_log_from(&mut self, from: Option<u64>) -> Result<(), StoreError> {
        let tmp = format!("{}/log.tmp", self.dir);
        let log_path = format!("{}/log", self.dir);
        let _ = self.disk.remove(&tmp).await;
        let out = self.disk.open(&tmp, OpenMode::CreateNew).await?;
        let mut written = 0u64;
        if let Some(mut pos) = from {
            let mut chunk = vec![0u8; COPY_CHUNK_BYTES];
            while pos < self.log_len {
                let want = ((self.log_len - pos) as usize).min(COPY_CHUNK_BYTES);
                read_exact_at(&self.disk, &self.log_file, pos, &mut chunk[..want]).await?;
                self.disk.write_at(&out, written, &chunk[..want]).await?;
                written += want as u64;
                pos += want as u64;
            }
        }
        self.disk.sync(&out).await?;
        self.disk.rename(&tmp, &log_path).await?;
        self.disk.sync_dir(&self.dir).await?;
        self.log_file = out;
        if from.is_none() {
            self.offsets.clear();
            self.log_len = 0;
        }
        Ok(())
    }
}

async fn read_exact_at<D: Disk>(
    disk: &D,
    file: &D::File,
    pos: u64,
    buf: &mut [u8],
) -> Result<(), StoreError> {
    let mut got = 0;
    while got < buf.len() {
        let n = disk
            .read_at(file, pos + got as u64, &mut buf[got..])
            .await?;
        if n == 0 {
            return Err(StoreError::Corrupt("file shorter than expected"));
        }
        got += n;
    }
    Ok(())
}

/// Reads a whole small file of exactly `expect` bytes.
async fn read_all<D: Disk>(disk: &D, path: &str, expect: usize) -> Result<Vec<u8>, StoreError> {
    let f = disk.open(path, OpenMode::Existing).await?;
    if disk.len(&f).await? != expect as u64 {
        return Err(StoreError::Corrupt("file has the wrong length"));
    }
    let mut buf = vec![0u8; expect];
    read_exact_at(disk, &f, 0, &mut buf).await?;
    Ok(buf)
}

/// Writes `name.tmp`, syncs it, renames it over `name`, syncs the directory.
async fn replace_file<D: Disk>(
    disk: &D,
    dir: &str,
    name: &str,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let tmp = format!("{dir}/{name}.tmp");
    let _ = disk.remove(&tmp).await;
    let f = disk.open(&tmp, OpenMode::CreateNew).await?;
    disk.write_at(&f, 0, bytes).await?;
    disk.sync(&f).await?;
    disk.rename(&tmp, &format!("{dir}/{name}")).await?;
    disk.sync_dir(dir).await?;
    Ok(())
}

fn split_crc(bytes: &[u8]) -> Result<(&[u8], u32), StoreError> {
    if bytes.len() < 4 {
        return Err(StoreError::Corrupt("file too short"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let crc = u32::from_be_bytes(crc.try_into().unwrap_or([0; 4]));
    if crc32c::crc32c(body) != crc {
        return Err(StoreError::Corrupt("checksum mismatch"));
    }
    Ok((body, crc))
}

fn decode_dir_id(bytes: &[u8]) -> Result<DirectoryId, StoreError> {
    let (body, _) = split_crc(bytes)?;
    let magic = u32::from_be_bytes(body[0..4].try_into().unwrap_or([0; 4]));
    if magic != DIR_ID_MAGIC || body[4] != FORMAT_VERSION {
        return Err(StoreError::Corrupt("directory id: bad magic or version"));
    }
    Ok(DirectoryId(u128::from_be_bytes(
        body[5..21].try_into().unwrap_or([0; 16]),
    )))
}

fn decode_hard(bytes: &[u8]) -> Result<HardState, StoreError> {
    let (body, _) = split_crc(bytes)?;
    let magic = u32::from_be_bytes(body[0..4].try_into().unwrap_or([0; 4]));
    if magic != HARD_MAGIC || body[4] != FORMAT_VERSION {
        return Err(StoreError::Corrupt("hard state: bad magic or version"));
    }
    let term = u64::from_be_bytes(body[5..13].try_into().unwrap_or([0; 8]));
    if term > TERM_MAX {
        return Err(StoreError::Corrupt("hard state: term out of range"));
    }
    let voted_for = match body[13] {
        0 => None,
        1 => Some((
            NodeId(u32::from_be_bytes(
                body[14..18].try_into().unwrap_or([0; 4]),
            )),
            DirectoryId(u128::from_be_bytes(
                body[18..34].try_into().unwrap_or([0; 16]),
            )),
        )),
        _ => return Err(StoreError::Corrupt("hard state: bad vote flag")),
    };
    Ok(HardState { term, voted_for })
}

async fn read_snapshot<D: Disk>(disk: &D, path: &str) -> Result<(SnapshotMeta, Bytes), StoreError> {
    let f = disk.open(path, OpenMode::Existing).await?;
    let len = disk.len(&f).await?;
    if len < SNAP_HEAD_BYTES as u64 {
        return Err(StoreError::Corrupt("snapshot: too short"));
    }
    let mut head = [0u8; SNAP_HEAD_BYTES];
    read_exact_at(disk, &f, 0, &mut head).await?;
    let magic = u32::from_be_bytes(head[0..4].try_into().unwrap_or([0; 4]));
    if magic != SNAP_MAGIC || head[4] != FORMAT_VERSION {
        return Err(StoreError::Corrupt("snapshot: bad magic or version"));
    }
    let index = u64::from_be_bytes(head[5..13].try_into().unwrap_or([0; 8]));
    let term = u64::from_be_bytes(head[13..21].try_into().unwrap_or([0; 8]));
    let data_len = u32::from_be_bytes(head[21..25].try_into().unwrap_or([0; 4])) as usize;
    let crc = u32::from_be_bytes(head[25..29].try_into().unwrap_or([0; 4]));
    if data_len > SNAPSHOT_BYTES_MAX || len != (SNAP_HEAD_BYTES + data_len) as u64 {
        return Err(StoreError::Corrupt("snapshot: bad length"));
    }
    let mut data = vec![0u8; data_len];
    read_exact_at(disk, &f, SNAP_HEAD_BYTES as u64, &mut data).await?;
    let mut crc_input = BytesMut::with_capacity(16 + data_len);
    crc_input.put_u64(index);
    crc_input.put_u64(term);
    crc_input.put_slice(&data);
    if crc32c::crc32c(&crc_input) != crc || term > TERM_MAX {
        return Err(StoreError::Corrupt("snapshot: checksum mismatch"));
    }
    Ok((SnapshotMeta { index, term }, Bytes::from(data)))
}

#[cfg(all(test, not(madsim)))]
mod tests;
