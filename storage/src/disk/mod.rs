//! The `Disk` trait: byte-addressed files and a few directory operations, with the durability
//! contract every caller must program against. `real` is the only implementation that touches the
//! host file system; the simulator supplies `SimDisk` (in samsa-sim) with a crash and fault model.

use std::fmt;
use std::future::Future;

#[cfg(not(madsim))]
pub mod real;

/// How to open a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// The file must exist.
    Existing,
    /// Create the file if missing (the new name is durable only after `sync_dir` of its parent).
    CreateOrOpen,
    /// Create a new empty file; fail with `AlreadyExists` if the name is taken.
    CreateNew,
}

/// Errors a `Disk` reports. `Io` covers EIO and friends; after a failed `sync` the caller must
/// assume the unsynced bytes of that file are gone (fsyncgate) and must not simply retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskError {
    NotFound,
    AlreadyExists,
    /// ENOSPC: nothing was written.
    NoSpace,
    /// EIO or any other failure, with context for the log.
    Io(String),
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskError::NotFound => write!(f, "not found"),
            DiskError::AlreadyExists => write!(f, "already exists"),
            DiskError::NoSpace => write!(f, "no space left on device"),
            DiskError::Io(msg) => write!(f, "i/o error: {msg}"),
        }
    }
}

impl std::error::Error for DiskError {}

/// Byte-addressed files under one root directory. Paths are relative, `/`-separated, and never
/// contain `..` (implementations reject them with `Io`).
///
/// # Durability contract (to ensure correctness, every caller relies on exactly this)
/// - Bytes passed to `write_at` are durable only once a *later* `sync` of the same file returns
///   `Ok`. Until then a crash may leave, for any unsynced range, the old bytes, the new bytes, or a
///   torn mix of both, at any granularity; unsynced writes may also survive in any subset and
///   order.
/// - A created, renamed or removed name is durable only after `sync_dir` of its parent directory
///   returns `Ok`. A file whose creation was never followed by `sync_dir` may vanish on crash even
///   if its contents were synced.
/// - `set_len` (truncate/extend) is a write: durable after `sync`.
/// - A failed `sync` means the dirty bytes of that file may be lost even though later reads (before
///   a crash) still show them (fsyncgate). The caller must not retry and carry on; it must treat
///   the unsynced range as lost (re-write it or stop serving the file).
/// - Reads may return corrupt bytes without an error (bit rot, misdirected writes): callers verify
///   checksums (CRC-32C) on everything they read back.
/// - `write_at` may fail with `NoSpace` having written nothing, or with `Io` having written any
///   prefix.
pub trait Disk: Clone + Send + Sync + 'static {
    type File: Clone + Send + Sync + 'static;

    fn open(
        &self,
        path: &str,
        mode: OpenMode,
    ) -> impl Future<Output = Result<Self::File, DiskError>> + Send;

    /// Reads up to `buf.len()` bytes at `position_bytes`; returns how many were read (less only at
    /// end of file).
    fn read_at(
        &self,
        file: &Self::File,
        position_bytes: u64,
        buf: &mut [u8],
    ) -> impl Future<Output = Result<usize, DiskError>> + Send;

    /// Writes all of `bytes` at `position_bytes` (extending the file if needed). Not durable
    /// until `sync`.
    fn write_at(
        &self,
        file: &Self::File,
        position_bytes: u64,
        bytes: &[u8],
    ) -> impl Future<Output = Result<(), DiskError>> + Send;

    /// Makes every completed `write_at`/`set_len` of this file durable.
    fn sync(&self, file: &Self::File) -> impl Future<Output = Result<(), DiskError>> + Send;

    /// Current length in bytes (as visible to reads, durable or not).
    fn len(&self, file: &Self::File) -> impl Future<Output = Result<u64, DiskError>> + Send;

    /// Truncates or extends (with zeros) to `len_bytes`. Not durable until `sync`.
    fn set_len(
        &self,
        file: &Self::File,
        len_bytes: u64,
    ) -> impl Future<Output = Result<(), DiskError>> + Send;

    /// Creates a directory and any missing parents (durable after `sync_dir` of each parent).
    fn create_dir_all(&self, path: &str) -> impl Future<Output = Result<(), DiskError>> + Send;

    /// Names (not paths) of the entries of a directory, sorted ascending.
    fn list(&self, dir: &str) -> impl Future<Output = Result<Vec<String>, DiskError>> + Send;

    /// Atomically replaces `to` with `from` (both files). Durable after `sync_dir`.
    fn rename(&self, from: &str, to: &str) -> impl Future<Output = Result<(), DiskError>> + Send;

    /// Removes a file, or an empty directory. Durable after `sync_dir`.
    fn remove(&self, path: &str) -> impl Future<Output = Result<(), DiskError>> + Send;

    /// Makes the directory's entries (creations, renames, removals) durable. `""` is the root.
    fn sync_dir(&self, dir: &str) -> impl Future<Output = Result<(), DiskError>> + Send;
}
