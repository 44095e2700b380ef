//! Checkpoint files of a partition directory (`log-start-offset.checkpoint`,
//! `recovery-point.checkpoint`): one i64 with a magic and a CRC-32C, replaced atomically (write a
//! `.tmp`, sync it, rename over the old name, sync the directory). Never trusts what it reads back:
//! a missing, torn or rotted checkpoint reads as `None` and the caller falls back to a scan.
//! The `leader-epoch-checkpoint` (Kafka's text format, no checksum) is replaced the same way and
//! read back with `read_stable`; its caller checks every entry against the log.

use crate::disk::{Disk, DiskError, OpenMode};
use crate::log::index::be_u32;

/// Magic of a checkpoint file ("SMCK").
pub const CHECKPOINT_MAGIC: u32 = 0x534d_434b;
/// Encoded size: magic u32 + value i64 + crc u32.
pub const CHECKPOINT_BYTES: usize = 16;

pub const LOG_START_CHECKPOINT: &str = "log-start-offset.checkpoint";
pub const RECOVERY_POINT_CHECKPOINT: &str = "recovery-point.checkpoint";
/// The cleaner's first dirty offset (everything below it was cleaned at least once).
pub const CLEANER_CHECKPOINT: &str = "cleaner-offset.checkpoint";
/// The leader-epoch cache (`epoch_cache`'s text format, as Kafka names and writes it).
pub const LEADER_EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";

pub fn encode(value: i64) -> [u8; CHECKPOINT_BYTES] {
    let mut out = [0u8; CHECKPOINT_BYTES];
    out[0..4].copy_from_slice(&CHECKPOINT_MAGIC.to_be_bytes());
    out[4..12].copy_from_slice(&value.to_be_bytes());
    let crc = crc32c::crc32c(&out[0..12]);
    out[12..16].copy_from_slice(&crc.to_be_bytes());
    out
}

pub fn decode(bytes: &[u8]) -> Option<i64> {
    if bytes.len() != CHECKPOINT_BYTES || be_u32(&bytes[0..4]) != CHECKPOINT_MAGIC {
        return None;
    }
    if crc32c::crc32c(&bytes[0..12]) != be_u32(&bytes[12..16]) {
        return None;
    }
    let mut value = [0u8; 8];
    value.copy_from_slice(&bytes[4..12]);
    Some(i64::from_be_bytes(value))
}

/// Reads `dir/name`; `Ok(None)` when absent or damaged.
pub async fn read<D: Disk>(disk: &D, dir: &str, name: &str) -> Result<Option<i64>, DiskError> {
    let file = match disk
        .open(&format!("{dir}/{name}"), OpenMode::Existing)
        .await
    {
        Ok(file) => file,
        Err(DiskError::NotFound) => return Ok(None),
        Err(e) => return Err(e),
    };
    // A checkpoint that fails its CRC is read again first: ignoring the recovery point because
    // of a transient flip on the read path sends recovery over sealed segments, where an old
    // at-rest flip then looks like a torn tail (simulator: single_corruption).
    let mut buf = [0u8; CHECKPOINT_BYTES + 1];
    let mut n = disk.read_at(&file, 0, &mut buf).await?;
    let mut value = decode(&buf[..n]);
    for _ in 0..crate::log::segment::REREADS_ON_MISMATCH {
        if value.is_some() {
            break;
        }
        n = disk.read_at(&file, 0, &mut buf).await?;
        value = decode(&buf[..n]);
    }
    if value.is_none() {
        tracing::warn!(dir, name, bytes = n, "ignoring damaged checkpoint");
    }
    Ok(value)
}

/// Atomically replaces `dir/name` with `value`; durable when this returns `Ok`.
pub async fn write<D: Disk>(disk: &D, dir: &str, name: &str, value: i64) -> Result<(), DiskError> {
    write_bytes(disk, dir, name, &encode(value)).await
}

/// Atomically replaces `dir/name` with `bytes` (write `.tmp`, sync, rename, sync the directory);
/// durable when this returns `Ok`. A crash at any step leaves the old file or the new one.
pub async fn write_bytes<D: Disk>(
    disk: &D,
    dir: &str,
    name: &str,
    bytes: &[u8],
) -> Result<(), DiskError> {
    let tmp = format!("{dir}/{name}.tmp");
    let file = disk.open(&tmp, OpenMode::CreateOrOpen).await?;
    disk.set_len(&file, 0).await?;
    disk.write_at(&file, 0, bytes).await?;
    disk.sync(&file).await?;
    disk.rename(&tmp, &format!("{dir}/{name}")).await?;
    disk.sync_dir(dir).await
}

/// Reads all of `dir/name` (at most `max_bytes`) for a format without a checksum: the file is
/// read until two consecutive reads agree, so a transient flip on the read path is not taken for
/// the content. `Ok(None)` when absent, larger than `max_bytes`, or never read the same twice.
pub async fn read_stable<D: Disk>(
    disk: &D,
    dir: &str,
    name: &str,
    max_bytes: usize,
) -> Result<Option<Vec<u8>>, DiskError> {
    let file = match disk
        .open(&format!("{dir}/{name}"), OpenMode::Existing)
        .await
    {
        Ok(file) => file,
        Err(DiskError::NotFound) => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = disk.len(&file).await?;
    if len > max_bytes as u64 {
        tracing::warn!(dir, name, len, "ignoring oversized checkpoint");
        return Ok(None);
    }
    let mut last: Option<Vec<u8>> = None;
    for _ in 0..=crate::log::segment::REREADS_ON_MISMATCH {
        let mut buf = vec![0u8; len as usize];
        let n = disk.read_at(&file, 0, &mut buf).await?;
        buf.truncate(n);
        if last.as_ref() == Some(&buf) {
            return Ok(Some(buf));
        }
        last = Some(buf);
    }
    tracing::warn!(dir, name, "checkpoint reads disagree; ignoring it");
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_and_reject_damage() {
        for value in [0i64, 1, -1, i64::MAX, 123_456_789] {
            assert_eq!(decode(&encode(value)), Some(value));
        }
        let mut bad = encode(42);
        bad[7] ^= 4;
        assert_eq!(decode(&bad), None);
        assert_eq!(decode(&encode(42)[..15]), None);
    }
}
