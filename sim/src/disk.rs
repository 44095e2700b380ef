//! `SimDisk`: the simulator's `Disk`, with the crash and fault model the `Disk` contract allows.
//! Per file it keeps `volatile` (what reads see), `durable` (what survives power loss) and the
//! `pending` writes/truncates since the last good `sync`; the namespace has a volatile and a
//! durable copy, and `sync_dir` copies one directory's entries across. A power failure (madsim
//! `kill` via the `SimFs` plugin, or `SimFs::power_fail`) keeps a seeded subset of pending writes,
//! possibly reordered or torn at 512-byte sectors, reverts unsynced names and may flip bits at
//! rest. Faults draw from a per-node `ChaCha8Rng` seeded from the run seed, node and "disk".
//! Never touches the host file system; never iterates a hash map; never panics on caller input.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use samsa_storage::disk::{Disk, DiskError, OpenMode};

use crate::coverage::Coverage;
use crate::seed::child_seed;
use crate::trace::lock;

/// Torn writes and bit flips happen at this granularity.
pub const SECTOR_BYTES: u64 = 512;
/// Largest file the simulated disk holds; larger writes fail with `NoSpace`.
pub const FILE_BYTES_MAX: u64 = 1 << 30;
/// Longest path accepted.
pub const PATH_BYTES_MAX: usize = 4096;
/// Pending operations per file before a write forces... nothing: the bound is enforced by
/// refusing the write with `Io` so an unsynced writer cannot grow memory without limit.
pub const PENDING_OPS_MAX: usize = 1 << 16;

/// Every counter the disk keeps, listed so the coverage table shows faults that never fired.
pub const DISK_COUNTERS: &[&str] = &[
    "disk.bitflip_at_rest",
    "disk.bitflip_on_read",
    "disk.crash_lost_writes",
    "disk.crash_names_reverted",
    "disk.crash_reordered",
    "disk.crash_names_partial",
    "disk.crash_torn",
    "disk.enospc",
    "disk.fsync_eio",
    "disk.power_fail",
    "disk.read_eio",
    "disk.slow_io",
    "disk.wipe",
    "disk.write_eio",
];

/// Fault rates for one node's disk (probabilities per operation unless said otherwise).
#[derive(Clone, Debug, PartialEq)]
pub struct DiskFaults {
    pub write_eio: f64,
    pub read_eio: f64,
    /// fsyncgate: the pending writes are dropped (still readable until a crash), EIO returned.
    pub fsync_eio: f64,
    /// Transient: the returned buffer has one bit flipped; the stored bytes are fine.
    pub bitflip_on_read: f64,
    /// Per power failure: flip one bit of one durable file.
    pub bitflip_at_rest: f64,
    /// Limit at-rest flips to what one node can detect and refuse (sealed `.log` segments) or
    /// rebuild (`.index`, `.timeindex`). A flip in the active segment's synced tail or in the
    /// metadata log looks exactly like a torn unsynced write to a lone node; telling them apart
    /// needs redundancy (a replica, or mirrored records), so it is outside the single-node atlas.
    pub bitflip_at_rest_sealed_only: bool,
    /// Cumulative `write_at` bytes after which writes fail with `NoSpace`.
    pub enospc_after_bytes: Option<u64>,
    /// Extra simulated latency per operation, in microseconds (min, max).
    pub latency_us: Option<(u64, u64)>,
    /// Per power failure: probability that pending writes are torn rather than whole.
    pub crash_torn: f64,
    /// Per power failure: probability that surviving pending writes are applied out of order.
    pub crash_reorder: f64,
    /// Per power failure: probability that unsynced file names resolve one by one (each
    /// created, renamed-over or removed name keeps its new or its old state on a coin) instead
    /// of all reverting: without `sync_dir`, POSIX orders nothing between directory entries.
    /// Directories themselves still revert as a whole.
    pub crash_names_partial: f64,
}

impl DiskFaults {
    pub const NONE: DiskFaults = DiskFaults {
        write_eio: 0.0,
        read_eio: 0.0,
        fsync_eio: 0.0,
        bitflip_on_read: 0.0,
        bitflip_at_rest: 0.0,
        bitflip_at_rest_sealed_only: false,
        enospc_after_bytes: None,
        latency_us: None,
        crash_torn: 0.0,
        crash_reorder: 0.0,
        crash_names_partial: 0.0,
    };
}

impl Default for DiskFaults {
    fn default() -> Self {
        DiskFaults::NONE
    }
}

#[derive(Clone, Debug)]
enum PendingOp {
    Write { position: u64, bytes: Vec<u8> },
    SetLen { len: u64 },
}

#[derive(Clone, Debug, Default)]
struct Inode {
    volatile: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<PendingOp>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    File(u64),
    Dir,
}

/// One node's disk.
#[derive(Debug)]
struct NodeDisk {
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    volatile_ns: BTreeMap<String, Entry>,
    durable_ns: BTreeMap<String, Entry>,
    faults: DiskFaults,
    rng: ChaCha8Rng,
    written_bytes: u64,
    /// Bumped by every power failure: handles from before it are stale.
    generation: u64,
    counters: BTreeMap<&'static str, u64>,
}

impl NodeDisk {
    fn new(seed: u64) -> Self {
        NodeDisk {
            inodes: BTreeMap::new(),
            next_inode: 1,
            volatile_ns: BTreeMap::new(),
            durable_ns: BTreeMap::new(),
            faults: DiskFaults::NONE,
            rng: ChaCha8Rng::seed_from_u64(seed),
            written_bytes: 0,
            generation: 0,
            counters: BTreeMap::new(),
        }
    }

    fn count(&mut self, name: &'static str) {
        *self.counters.entry(name).or_insert(0) += 1;
    }

    fn roll(&mut self, p: f64) -> bool {
        p > 0.0 && (p >= 1.0 || self.rng.gen_bool(p))
    }

    fn dir_exists(&self, dir: &str) -> bool {
        dir.is_empty() || self.volatile_ns.get(dir) == Some(&Entry::Dir)
    }

    fn inode(&mut self, file: &SimFile) -> Result<&mut Inode, DiskError> {
        if file.generation != self.generation {
            return Err(DiskError::Io("stale handle (disk power-failed)".into()));
        }
        self.inodes
            .get_mut(&file.inode)
            .ok_or_else(|| DiskError::Io("handle to a vanished file".into()))
    }

    /// Partial name durability at a power failure: every file name whose volatile state differs
    /// from its durable one takes the volatile state on a coin (only under a directory that is
    /// durable, so no name outlives its directory). Called before names revert.
    fn resolve_names_one_by_one(&mut self) {
        let mut paths: BTreeSet<String> = BTreeSet::new();
        for (p, e) in &self.volatile_ns {
            if matches!(e, Entry::File(_)) && self.durable_ns.get(p) != Some(e) {
                paths.insert(p.clone());
            }
        }
        for (p, e) in &self.durable_ns {
            if matches!(e, Entry::File(_)) && self.volatile_ns.get(p) != Some(e) {
                paths.insert(p.clone());
            }
        }
        let mut kept = 0u64;
        for p in paths {
            let parent = parent_of(&p);
            let parent_durable =
                parent.is_empty() || self.durable_ns.get(parent) == Some(&Entry::Dir);
            if !parent_durable || !self.rng.gen_bool(0.5) {
                continue;
            }
            match self.volatile_ns.get(&p) {
                Some(e) => self.durable_ns.insert(p, *e),
                None => self.durable_ns.remove(&p),
            };
            kept += 1;
        }
        if kept > 0 {
            self.count("disk.crash_names_partial");
        }
    }

    /// Power failure: unsynced state is resolved by the seeded RNG, names revert to durable.
    fn power_fail(&mut self) {
        self.generation += 1;
        let torn = self.roll(self.faults.crash_torn);
        let reorder = self.roll(self.faults.crash_reorder);
        let names_partial = self.roll(self.faults.crash_names_partial);
        // Per crash, what fraction of pending writes survives: none, all, or a coin per write.
        let keep_mode: u8 = self.rng.gen_range(0..3);
        let ids: Vec<u64> = self.inodes.keys().copied().collect();
        for id in ids {
            let Some(inode) = self.inodes.get_mut(&id) else {
                continue;
            };
            let mut pending = std::mem::take(&mut inode.pending);
            if pending.is_empty() {
                inode.volatile = inode.durable.clone();
                continue;
            }
            if reorder {
                pending.shuffle(&mut self.rng);
                *self.counters.entry("disk.crash_reordered").or_insert(0) += 1;
            }
            let mut durable = std::mem::take(&mut inode.durable);
            let mut lost = 0u64;
            for op in pending {
                let keep = match keep_mode {
                    0 => false,
                    1 => true,
                    _ => self.rng.gen_bool(0.5),
                };
                if !keep {
                    lost += 1;
                    continue;
                }
                match op {
                    PendingOp::SetLen { len } => durable.resize(len as usize, 0),
                    PendingOp::Write { position, bytes } => {
                        if torn {
                            apply_torn(&mut durable, position, &bytes, &mut self.rng);
                            *self.counters.entry("disk.crash_torn").or_insert(0) += 1;
                        } else {
                            apply_write(&mut durable, position, &bytes);
                        }
                    }
                }
            }
            if lost > 0 {
                *self.counters.entry("disk.crash_lost_writes").or_insert(0) += lost;
            }
            inode.volatile = durable.clone();
            inode.durable = durable;
        }
        // Names: unsynced creations vanish, renames and removals revert.
        let changed = self.volatile_ns != self.durable_ns;
        if changed {
            self.count("disk.crash_names_reverted");
        }
        if changed && names_partial {
            self.resolve_names_one_by_one();
        }
        self.volatile_ns = self.durable_ns.clone();
        // Inodes no durable name points at are gone for good.
        let live: BTreeSet<u64> = self
            .durable_ns
            .values()
            .filter_map(|e| {
                if let Entry::File(i) = e {
                    Some(*i)
                } else {
                    None
                }
            })
            .collect();
        self.inodes.retain(|id, _| live.contains(id));
        if self.roll(self.faults.bitflip_at_rest) {
            self.flip_at_rest();
        }
        self.count("disk.power_fail");
    }

    fn flip_at_rest(&mut self) {
        let allowed = if self.faults.bitflip_at_rest_sealed_only {
            Some(sealed_only(&self.durable_ns))
        } else {
            None
        };
        let candidates: Vec<u64> = self
            .inodes
            .iter()
            .filter(|(_, i)| !i.durable.is_empty())
            .map(|(id, _)| *id)
            .filter(|id| allowed.as_ref().is_none_or(|a| a.contains(id)))
            .collect();
        let Some(id) = candidates.choose(&mut self.rng).copied() else {
            return;
        };
        let byte_index;
        let bit;
        {
            let len = self.inodes.get(&id).map(|i| i.durable.len()).unwrap_or(0);
            if len == 0 {
                return;
            }
            byte_index = self.rng.gen_range(0..len);
            bit = self.rng.gen_range(0..8u32);
        }
        if let Some(inode) = self.inodes.get_mut(&id) {
            inode.durable[byte_index] ^= 1 << bit;
            inode.volatile = inode.durable.clone();
        }
        self.count("disk.bitflip_at_rest");
    }

    fn wipe(&mut self) {
        self.generation += 1;
        self.inodes.clear();
        self.volatile_ns.clear();
        self.durable_ns.clear();
        self.count("disk.wipe");
    }
}

fn apply_write(data: &mut Vec<u8>, position: u64, bytes: &[u8]) {
    let start = position as usize;
    let end = start + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[start..end].copy_from_slice(bytes);
}

/// Applies a random subset of the write's sectors (absolute 512-byte alignment).
fn apply_torn(data: &mut Vec<u8>, position: u64, bytes: &[u8], rng: &mut ChaCha8Rng) {
    let end = position + bytes.len() as u64;
    let mut at = position;
    while at < end {
        let sector_end = ((at / SECTOR_BYTES) + 1) * SECTOR_BYTES;
        let piece_end = sector_end.min(end);
        if rng.gen_bool(0.5) {
            let from = (at - position) as usize;
            let to = (piece_end - position) as usize;
            apply_write(data, at, &bytes[from..to]);
        }
        at = piece_end;
    }
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[..i],
        None => "",
    }
}

fn check_path(path: &str) -> Result<(), DiskError> {
    if path.len() > PATH_BYTES_MAX
        || path.starts_with('/')
        || path.ends_with('/')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == ".." || c == ".")
    {
        return Err(DiskError::Io(format!("invalid path {path:?}")));
    }
    Ok(())
}

/// Every node's disk for one run. Shared by the madsim plugin and the `SimDisk` handles.
#[derive(Debug, Default)]
pub struct SimFsState {
    run_seed: u64,
    nodes: BTreeMap<u64, NodeDisk>,
    /// Where namespace operations, syncs and power failures are recorded, if anywhere.
    trace: Option<crate::trace::Trace>,
}

/// Cheap to clone: the per-run set of simulated disks.
#[derive(Clone, Debug, Default)]
pub struct SimFsShared {
    state: Arc<Mutex<SimFsState>>,
}

impl SimFsShared {
    pub fn new(run_seed: u64) -> Self {
        let shared = SimFsShared::default();
        lock(&shared.state).run_seed = run_seed;
        shared
    }

    fn with_node<T>(&self, node: u64, f: impl FnOnce(&mut NodeDisk) -> T) -> T {
        let mut s = lock(&self.state);
        let seed = child_seed(s.run_seed, &format!("node{node}/disk"));
        let disk = s.nodes.entry(node).or_insert_with(|| NodeDisk::new(seed));
        f(disk)
    }

    /// Records namespace operations, syncs and power failures in `trace` from now on.
    pub fn set_trace(&self, trace: crate::trace::Trace) {
        lock(&self.state).trace = Some(trace);
    }

    fn note(&self, node: u64, line: impl FnOnce() -> String) {
        let trace = lock(&self.state).trace.clone();
        if let Some(t) = trace {
            t.event(format!("disk{node}: {}", line()));
        }
    }

    /// Sets the run seed (before any node's disk is first used).
    pub fn set_run_seed(&self, run_seed: u64) {
        let mut s = lock(&self.state);
        s.run_seed = run_seed;
        s.nodes.clear();
    }

    pub fn set_faults(&self, node: u64, faults: DiskFaults) {
        self.with_node(node, |d| {
            d.faults = faults;
            d.written_bytes = 0;
        });
    }

    pub fn faults(&self, node: u64) -> DiskFaults {
        self.with_node(node, |d| d.faults.clone())
    }

    /// Power failure of `node`'s disk (what madsim's `kill` triggers through the plugin).
    pub fn power_fail(&self, node: u64) {
        let summary = self.with_node(node, |d| {
            let before: BTreeMap<&'static str, u64> = d.counters.clone();
            d.power_fail();
            let delta = |k: &str| {
                d.counters.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0)
            };
            format!(
                "power failure: lost_writes={} torn={} reordered={} names_reverted={} \
                 names_partial={} files={}",
                delta("disk.crash_lost_writes"),
                delta("disk.crash_torn"),
                delta("disk.crash_reordered"),
                delta("disk.crash_names_reverted"),
                delta("disk.crash_names_partial"),
                d.durable_ns.len()
            )
        });
        self.note(node, || summary);
    }

    /// Destroys every byte and name on `node`'s disk (only when the node is down).
    pub fn wipe(&self, node: u64) {
        self.with_node(node, |d| d.wipe());
    }

    /// A handle on `node`'s disk.
    pub fn disk(&self, node: u64) -> SimDisk {
        SimDisk {
            fs: self.clone(),
            node,
        }
    }

    /// Fault counters of every node, summed, named `disk.*`.
    pub fn coverage(&self) -> Coverage {
        let s = lock(&self.state);
        let mut c = Coverage::default();
        for name in DISK_COUNTERS {
            c.add(name, 0);
        }
        for d in s.nodes.values() {
            for (name, n) in &d.counters {
                c.add(name, *n);
            }
        }
        c
    }

    /// Durable contents of `path` on `node` (for omniscient checks and tests).
    pub fn durable_bytes(&self, node: u64, path: &str) -> Option<Vec<u8>> {
        self.with_node(node, |d| match d.durable_ns.get(path) {
            Some(Entry::File(i)) => d.inodes.get(i).map(|n| n.durable.clone()),
            _ => None,
        })
    }
}

/// A handle to one file: the inode and the disk generation it was opened in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimFile {
    inode: u64,
    generation: u64,
}

/// `Disk` for one simulated node.
#[derive(Clone, Debug)]
pub struct SimDisk {
    fs: SimFsShared,
    node: u64,
}

impl SimDisk {
    pub fn node(&self) -> u64 {
        self.node
    }

    /// The handle of the current madsim node, from the `SimFs` plugin.
    #[cfg(madsim)]
    pub fn current() -> SimDisk {
        let fs = madsim::plugin::simulator::<SimFs>();
        fs.shared.disk(node_number(madsim::plugin::node()))
    }

    async fn latency(&self) {
        let delay = self.fs.with_node(self.node, |d| {
            d.faults.latency_us.map(|(lo, hi)| {
                let us = if hi > lo {
                    d.rng.gen_range(lo..=hi)
                } else {
                    lo
                };
                *d.counters.entry("disk.slow_io").or_insert(0) += 1;
                us
            })
        });
        if let Some(us) = delay {
            tokio::time::sleep(Duration::from_micros(us)).await;
        }
    }
}

impl Disk for SimDisk {
    type File = SimFile;

    async fn open(&self, path: &str, mode: OpenMode) -> Result<SimFile, DiskError> {
        check_path(path)?;
        self.latency().await;
        let r = self.fs.with_node(self.node, |d| {
            let generation = d.generation;
            match (d.volatile_ns.get(path).copied(), mode) {
                (Some(Entry::Dir), _) => Err(DiskError::Io(format!("{path} is a directory"))),
                (Some(Entry::File(_)), OpenMode::CreateNew) => Err(DiskError::AlreadyExists),
                (Some(Entry::File(inode)), _) => Ok((SimFile { inode, generation }, false)),
                (None, OpenMode::Existing) => Err(DiskError::NotFound),
                (None, _) => {
                    if !d.dir_exists(parent_of(path)) {
                        return Err(DiskError::NotFound);
                    }
                    let inode = d.next_inode;
                    d.next_inode += 1;
                    d.inodes.insert(inode, Inode::default());
                    d.volatile_ns.insert(path.to_string(), Entry::File(inode));
                    Ok((SimFile { inode, generation }, true))
                }
            }
        });
        if let Ok((f, true)) = &r {
            self.fs
                .note(self.node, || format!("create {path} inode {}", f.inode));
        }
        r.map(|(f, _)| f)
    }

    async fn read_at(
        &self,
        file: &SimFile,
        position_bytes: u64,
        buf: &mut [u8],
    ) -> Result<usize, DiskError> {
        self.latency().await;
        self.fs.with_node(self.node, |d| {
            if d.roll(d.faults.read_eio) {
                d.count("disk.read_eio");
                return Err(DiskError::Io("injected read EIO".into()));
            }
            let flip = d.roll(d.faults.bitflip_on_read);
            let inode = d.inode(file)?;
            let len = inode.volatile.len() as u64;
            if position_bytes >= len {
                return Ok(0);
            }
            let n = (len - position_bytes).min(buf.len() as u64) as usize;
            let start = position_bytes as usize;
            buf[..n].copy_from_slice(&inode.volatile[start..start + n]);
            if flip && n > 0 {
                let i = d.rng.gen_range(0..n);
                let bit = d.rng.gen_range(0..8u32);
                buf[i] ^= 1 << bit;
                d.count("disk.bitflip_on_read");
            }
            Ok(n)
        })
    }

    async fn write_at(
        &self,
        file: &SimFile,
        position_bytes: u64,
        bytes: &[u8],
    ) -> Result<(), DiskError> {
        self.latency().await;
        self.fs.with_node(self.node, |d| {
            let end = position_bytes.checked_add(bytes.len() as u64);
            if end.is_none_or(|e| e > FILE_BYTES_MAX) {
                return Err(DiskError::NoSpace);
            }
            if let Some(limit) = d.faults.enospc_after_bytes {
                if d.written_bytes + bytes.len() as u64 > limit {
                    d.count("disk.enospc");
                    return Err(DiskError::NoSpace);
                }
            }
            // EIO may have written any prefix.
            let mut take = bytes.len();
            let eio = d.roll(d.faults.write_eio);
            if eio {
                take = if bytes.is_empty() {
                    0
                } else {
                    d.rng.gen_range(0..bytes.len())
                };
                d.count("disk.write_eio");
            }
            d.written_bytes += take as u64;
            let inode = d.inode(file)?;
            if inode.pending.len() >= PENDING_OPS_MAX {
                return Err(DiskError::Io("too many unsynced writes".into()));
            }
            if take > 0 {
                apply_write(&mut inode.volatile, position_bytes, &bytes[..take]);
                let op = PendingOp::Write {
                    position: position_bytes,
                    bytes: bytes[..take].into(),
                };
                inode.pending.push(op);
            }
            if eio {
                return Err(DiskError::Io("injected write EIO".into()));
            }
            Ok(())
        })
    }

    async fn sync(&self, file: &SimFile) -> Result<(), DiskError> {
        self.latency().await;
        let r = self.sync_inner(file);
        self.fs
            .note(self.node, || format!("sync inode {} -> {r:?}", file.inode));
        r
    }

    async fn len(&self, file: &SimFile) -> Result<u64, DiskError> {
        self.fs
            .with_node(self.node, |d| Ok(d.inode(file)?.volatile.len() as u64))
    }

    async fn set_len(&self, file: &SimFile, len_bytes: u64) -> Result<(), DiskError> {
        let r = self.set_len_inner(file, len_bytes).await;
        self.fs.note(self.node, || {
            format!("set_len inode {} {len_bytes} -> {r:?}", file.inode)
        });
        r
    }

    async fn create_dir_all(&self, path: &str) -> Result<(), DiskError> {
        let r = self.create_dir_all_inner(path);
        self.fs
            .note(self.node, || format!("mkdir -p {path} -> {r:?}"));
        r
    }

    async fn list(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        self.list_inner(dir)
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        self.latency().await;
        let r = self.rename_inner(from, to);
        self.fs
            .note(self.node, || format!("rename {from} -> {to}: {r:?}"));
        r
    }

    async fn remove(&self, path: &str) -> Result<(), DiskError> {
        let r = self.remove_inner(path);
        self.fs.note(self.node, || format!("remove {path}: {r:?}"));
        r
    }

    async fn sync_dir(&self, dir: &str) -> Result<(), DiskError> {
        self.latency().await;
        let r = self.sync_dir_inner(dir);
        self.fs
            .note(self.node, || format!("sync_dir {dir:?} -> {r:?}"));
        r
    }
}

impl SimDisk {
    fn sync_inner(&self, file: &SimFile) -> Result<(), DiskError> {
        self.fs.with_node(self.node, |d| {
            let fail = d.roll(d.faults.fsync_eio);
            if fail {
                d.count("disk.fsync_eio");
            }
            let inode = d.inode(file)?;
            let pending = std::mem::take(&mut inode.pending);
            if fail {
                // fsyncgate: dropped from the dirty set, still visible to reads until a crash.
                return Err(DiskError::Io("injected fsync EIO".into()));
            }
            for op in pending {
                match op {
                    PendingOp::Write { position, bytes } => {
                        apply_write(&mut inode.durable, position, &bytes)
                    }
                    PendingOp::SetLen { len } => inode.durable.resize(len as usize, 0),
                }
            }
            Ok(())
        })
    }

    async fn set_len_inner(&self, file: &SimFile, len_bytes: u64) -> Result<(), DiskError> {
        if len_bytes > FILE_BYTES_MAX {
            return Err(DiskError::NoSpace);
        }
        self.latency().await;
        self.fs.with_node(self.node, |d| {
            let inode = d.inode(file)?;
            if inode.pending.len() >= PENDING_OPS_MAX {
                return Err(DiskError::Io("too many unsynced writes".into()));
            }
            inode.volatile.resize(len_bytes as usize, 0);
            inode.pending.push(PendingOp::SetLen { len: len_bytes });
            Ok(())
        })
    }

    fn create_dir_all_inner(&self, path: &str) -> Result<(), DiskError> {
        if path.is_empty() {
            return Ok(());
        }
        check_path(path)?;
        self.fs.with_node(self.node, |d| {
            let mut prefix = String::new();
            for component in path.split('/') {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(component);
                match d.volatile_ns.get(&prefix) {
                    Some(Entry::Dir) => {}
                    Some(Entry::File(_)) => {
                        return Err(DiskError::Io(format!("{prefix} is a file")));
                    }
                    None => {
                        d.volatile_ns.insert(prefix.clone(), Entry::Dir);
                    }
                }
            }
            Ok(())
        })
    }

    fn list_inner(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        if !dir.is_empty() {
            check_path(dir)?;
        }
        self.fs.with_node(self.node, |d| {
            if !d.dir_exists(dir) {
                return Err(DiskError::NotFound);
            }
            let names = d
                .volatile_ns
                .keys()
                .filter(|p| parent_of(p) == dir && p.as_str() != dir)
                .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
                .collect();
            Ok(names)
        })
    }

    fn rename_inner(&self, from: &str, to: &str) -> Result<(), DiskError> {
        check_path(from)?;
        check_path(to)?;
        self.fs.with_node(self.node, |d| {
            let entry = match d.volatile_ns.get(from) {
                Some(Entry::File(i)) => Entry::File(*i),
                Some(Entry::Dir) => return Err(DiskError::Io("rename of a directory".into())),
                None => return Err(DiskError::NotFound),
            };
            if d.volatile_ns.get(to) == Some(&Entry::Dir) {
                return Err(DiskError::Io(format!("{to} is a directory")));
            }
            if !d.dir_exists(parent_of(to)) {
                return Err(DiskError::NotFound);
            }
            d.volatile_ns.remove(from);
            d.volatile_ns.insert(to.to_string(), entry);
            Ok(())
        })
    }

    fn remove_inner(&self, path: &str) -> Result<(), DiskError> {
        check_path(path)?;
        self.fs
            .with_node(self.node, |d| match d.volatile_ns.get(path) {
                None => Err(DiskError::NotFound),
                Some(Entry::Dir) => {
                    let prefix = format!("{path}/");
                    if d.volatile_ns
                        .range(prefix.clone()..)
                        .next()
                        .is_some_and(|(k, _)| k.starts_with(&prefix))
                    {
                        return Err(DiskError::Io(format!("{path} is not empty")));
                    }
                    d.volatile_ns.remove(path);
                    Ok(())
                }
                Some(Entry::File(_)) => {
                    d.volatile_ns.remove(path);
                    Ok(())
                }
            })
    }

    fn sync_dir_inner(&self, dir: &str) -> Result<(), DiskError> {
        if !dir.is_empty() {
            check_path(dir)?;
        }
        self.fs.with_node(self.node, |d| {
            if !d.dir_exists(dir) {
                return Err(DiskError::NotFound);
            }
            let durable_children: Vec<String> = d
                .durable_ns
                .keys()
                .filter(|p| parent_of(p) == dir && p.as_str() != dir)
                .cloned()
                .collect();
            for p in durable_children {
                if !d.volatile_ns.contains_key(&p) {
                    d.durable_ns.remove(&p);
                }
            }
            let volatile_children: Vec<(String, Entry)> = d
                .volatile_ns
                .iter()
                .filter(|(p, _)| parent_of(p) == dir && p.as_str() != dir)
                .map(|(p, e)| (p.clone(), *e))
                .collect();
            for (p, e) in volatile_children {
                d.durable_ns.insert(p, e);
            }
            Ok(())
        })
    }
}

/// madsim's node id as a number (its inner field is private; `Display` prints it).
#[cfg(madsim)]
pub fn node_number(id: madsim::task::NodeId) -> u64 {
    id.to_string().parse().unwrap_or(u64::MAX)
}

/// The madsim plugin: `kill` (and restart-on-panic) power-fail the node's disk.
#[cfg(madsim)]
pub struct SimFs {
    pub shared: SimFsShared,
}

#[cfg(madsim)]
impl madsim::plugin::Simulator for SimFs {
    fn new(
        _rand: &madsim::rand::GlobalRng,
        _time: &madsim::time::TimeHandle,
        _config: &madsim::Config,
    ) -> Self {
        // The run seed is set by the runner (`SimFsShared::set_run_seed`) before nodes start.
        SimFs {
            shared: SimFsShared::default(),
        }
    }

    fn reset_node(&self, id: madsim::task::NodeId) {
        // Called under madsim's simulator-registry lock: must not look up plugins here.
        self.shared.power_fail(node_number(id));
    }
}

/// Inodes of sealed segment logs (every `.log` of a partition directory but its newest) and of
/// offset/time index files: the at-rest flip targets of `bitflip_at_rest_sealed_only`.
fn sealed_only(names: &BTreeMap<String, Entry>) -> BTreeSet<u64> {
    let mut newest_log: BTreeMap<&str, &str> = BTreeMap::new();
    for name in names.keys().filter(|n| n.ends_with(".log")) {
        let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
        newest_log.insert(dir, name.as_str()); // BTreeMap order: the last one wins
    }
    names
        .iter()
        .filter_map(|(name, entry)| {
            let Entry::File(inode) = entry else {
                return None;
            };
            let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
            let is_index = name.ends_with(".index") || name.ends_with(".timeindex");
            let is_sealed_log = name.ends_with(".log")
                && dir != "meta"
                && newest_log
                    .get(dir)
                    .is_some_and(|newest| *newest != name.as_str());
            (is_index || is_sealed_log).then_some(*inode)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        // The disk never awaits real I/O and latency is off in these tests: a trivial executor.
        let mut f = std::pin::pin!(f);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        loop {
            if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    async fn read_all(d: &SimDisk, f: &SimFile) -> Vec<u8> {
        let len = d.len(f).await.expect("len");
        let mut buf = vec![0u8; len as usize];
        let n = d.read_at(f, 0, &mut buf).await.expect("read");
        buf.truncate(n);
        buf
    }

    #[test]
    fn synced_data_survives_power_failure() {
        block_on(async {
            let fs = SimFsShared::new(1);
            let d = fs.disk(1);
            d.create_dir_all("t/p0").await.expect("mkdir");
            d.sync_dir("").await.expect("sync root");
            d.sync_dir("t").await.expect("sync t");
            let f = d
                .open("t/p0/log", OpenMode::CreateNew)
                .await
                .expect("create");
            d.write_at(&f, 0, b"hello").await.expect("write");
            d.sync(&f).await.expect("sync");
            d.sync_dir("t/p0").await.expect("sync dir");
            fs.power_fail(1);
            // Old handle is stale.
            assert!(d.len(&f).await.is_err());
            let f = d
                .open("t/p0/log", OpenMode::Existing)
                .await
                .expect("reopen");
            assert_eq!(read_all(&d, &f).await, b"hello");
        });
    }

    #[test]
    fn unsynced_writes_may_be_lost_and_are_lost_in_some_seed() {
        let mut outcomes = BTreeSet::new();
        for seed in 0..40 {
            let got = block_on(async {
                let fs = SimFsShared::new(seed);
                fs.set_faults(
                    1,
                    DiskFaults {
                        crash_torn: 0.5,
                        ..DiskFaults::NONE
                    },
                );
                let d = fs.disk(1);
                let f = d.open("log", OpenMode::CreateNew).await.expect("create");
                d.sync_dir("").await.expect("sync root");
                d.write_at(&f, 0, &[1u8; 1024]).await.expect("write");
                d.sync(&f).await.expect("sync");
                d.write_at(&f, 1024, &[2u8; 1024]).await.expect("write");
                fs.power_fail(1);
                let f = d.open("log", OpenMode::Existing).await.expect("reopen");
                let bytes = read_all(&d, &f).await;
                // Synced prefix always intact.
                assert_eq!(&bytes[..1024], &[1u8; 1024][..]);
                bytes.len()
            });
            outcomes.insert(got);
        }
        // Seeds differ: lost (1024) and kept/torn (2048) both happen.
        assert!(outcomes.contains(&1024), "{outcomes:?}");
        assert!(outcomes.contains(&2048), "{outcomes:?}");
    }

    #[test]
    fn partial_names_keep_some_unsynced_entries_and_not_others() {
        let mut mixed = false;
        for seed in 0..40 {
            let kept = block_on(async {
                let fs = SimFsShared::new(seed);
                let faults = DiskFaults {
                    crash_names_partial: 1.0,
                    ..DiskFaults::NONE
                };
                fs.set_faults(1, faults);
                let d = fs.disk(1);
                for name in ["x", "y", "z", "w"] {
                    let f = d.open(name, OpenMode::CreateNew).await.expect("create");
                    d.sync(&f).await.expect("sync");
                }
                fs.power_fail(1);
                let mut kept = 0;
                for name in ["x", "y", "z", "w"] {
                    if d.open(name, OpenMode::Existing).await.is_ok() {
                        kept += 1;
                    }
                }
                kept
            });
            mixed |= kept > 0 && kept < 4;
        }
        assert!(mixed, "some crash must keep some names and lose others");
    }

    #[test]
    fn directory_entries_need_sync_dir() {
        block_on(async {
            let fs = SimFsShared::new(5);
            let d = fs.disk(2);
            let a = d.open("a", OpenMode::CreateNew).await.expect("create a");
            d.write_at(&a, 0, b"A").await.expect("write");
            d.sync(&a).await.expect("sync");
            // `a` is synced but its name never was: it vanishes.
            fs.power_fail(2);
            assert_eq!(
                d.open("a", OpenMode::Existing).await,
                Err(DiskError::NotFound)
            );

            let b = d
                .open("b.tmp", OpenMode::CreateNew)
                .await
                .expect("create b");
            d.write_at(&b, 0, b"B").await.expect("write");
            d.sync(&b).await.expect("sync");
            d.sync_dir("").await.expect("sync root");
            d.rename("b.tmp", "b").await.expect("rename");
            // Rename not synced: reverts.
            fs.power_fail(2);
            assert_eq!(d.list("").await.expect("list"), vec!["b.tmp".to_string()]);
            d.rename("b.tmp", "b").await.expect("rename");
            d.sync_dir("").await.expect("sync root");
            fs.power_fail(2);
            assert_eq!(d.list("").await.expect("list"), vec!["b".to_string()]);
            let b = d.open("b", OpenMode::Existing).await.expect("open b");
            assert_eq!(read_all(&d, &b).await, b"B");
        });
    }

    #[test]
    fn fsync_eio_drops_dirty_data_fsyncgate() {
        block_on(async {
            let fs = SimFsShared::new(9);
            let d = fs.disk(1);
            let f = d.open("log", OpenMode::CreateNew).await.expect("create");
            d.sync_dir("").await.expect("sync root");
            fs.set_faults(
                1,
                DiskFaults {
                    fsync_eio: 1.0,
                    ..DiskFaults::NONE
                },
            );
            d.write_at(&f, 0, b"lost").await.expect("write");
            assert!(matches!(d.sync(&f).await, Err(DiskError::Io(_))));
            // Still readable before the crash...
            assert_eq!(read_all(&d, &f).await, b"lost");
            fs.set_faults(1, DiskFaults::NONE);
            // ...and a later good sync does not persist it.
            d.sync(&f).await.expect("sync");
            fs.power_fail(1);
            let f = d.open("log", OpenMode::Existing).await.expect("reopen");
            assert_eq!(read_all(&d, &f).await, b"");
            assert_eq!(fs.coverage().get("disk.fsync_eio"), 1);
            let names: Vec<String> = fs.coverage().counts.keys().cloned().collect();
            assert!(
                names.iter().all(|n| DISK_COUNTERS.contains(&n.as_str())),
                "{names:?}"
            );
        });
    }

    #[test]
    fn errors_enospc_paths_and_transient_flips() {
        block_on(async {
            let fs = SimFsShared::new(11);
            let d = fs.disk(1);
            assert!(d.open("../x", OpenMode::CreateNew).await.is_err());
            assert_eq!(
                d.open("no/dir", OpenMode::CreateNew).await,
                Err(DiskError::NotFound)
            );
            let f = d.open("x", OpenMode::CreateNew).await.expect("create");
            assert_eq!(
                d.open("x", OpenMode::CreateNew).await,
                Err(DiskError::AlreadyExists)
            );
            fs.set_faults(
                1,
                DiskFaults {
                    enospc_after_bytes: Some(4),
                    ..DiskFaults::NONE
                },
            );
            assert_eq!(d.write_at(&f, 0, b"12345").await, Err(DiskError::NoSpace));
            assert_eq!(d.len(&f).await, Ok(0));
            fs.set_faults(
                1,
                DiskFaults {
                    bitflip_on_read: 1.0,
                    ..DiskFaults::NONE
                },
            );
            d.write_at(&f, 0, b"abcd").await.expect("write");
            let mut buf = [0u8; 4];
            d.read_at(&f, 0, &mut buf).await.expect("read");
            assert_ne!(&buf, b"abcd");
            fs.set_faults(1, DiskFaults::NONE);
            d.read_at(&f, 0, &mut buf).await.expect("read");
            assert_eq!(&buf, b"abcd");
            d.set_len(&f, 2).await.expect("truncate");
            assert_eq!(read_all(&d, &f).await, b"ab");
            d.create_dir_all("d/e").await.expect("mkdir");
            assert!(d.remove("d").await.is_err());
            d.remove("d/e").await.expect("rmdir");
            d.remove("d").await.expect("rmdir");
            fs.wipe(1);
            assert_eq!(d.list("").await.expect("list"), Vec::<String>::new());
        });
    }

    #[test]
    fn at_rest_flip_changes_durable_bytes() {
        block_on(async {
            let fs = SimFsShared::new(13);
            let d = fs.disk(1);
            let f = d.open("x", OpenMode::CreateNew).await.expect("create");
            d.sync_dir("").await.expect("sync root");
            d.write_at(&f, 0, &[0u8; 64]).await.expect("write");
            d.sync(&f).await.expect("sync");
            fs.set_faults(
                1,
                DiskFaults {
                    bitflip_at_rest: 1.0,
                    ..DiskFaults::NONE
                },
            );
            fs.power_fail(1);
            let bytes = fs.durable_bytes(1, "x").expect("durable");
            assert_eq!(bytes.iter().map(|b| b.count_ones()).sum::<u32>(), 1);
        });
    }
}

#[cfg(all(test, madsim))]
mod madsim_tests {
    use super::*;

    #[test]
    fn kill_power_fails_the_nodes_disk() {
        let rt = madsim::runtime::Runtime::with_seed_and_config(7, madsim::Config::default());
        rt.add_simulator::<SimFs>();
        rt.block_on(async {
            let h = madsim::runtime::Handle::current();
            let node = h.create_node().name("n1").build();
            let (names, number) = node
                .spawn(async {
                    let d = SimDisk::current();
                    let f = d.open("log", OpenMode::CreateNew).await.expect("create");
                    d.sync_dir("").await.expect("sync root");
                    d.write_at(&f, 0, b"durable").await.expect("write");
                    d.sync(&f).await.expect("sync");
                    let g = d.open("tmp", OpenMode::CreateNew).await.expect("create");
                    d.write_at(&g, 0, b"x").await.expect("write");
                    (d.list("").await.expect("list"), d.node())
                })
                .await
                .expect("task");
            assert_eq!(names, vec!["log".to_string(), "tmp".to_string()]);
            h.kill(node.id());
            let fs = madsim::plugin::simulator::<SimFs>();
            let d = fs.shared.disk(number);
            assert_eq!(d.list("").await.expect("list"), vec!["log".to_string()]);
            assert_eq!(
                fs.shared.durable_bytes(number, "log"),
                Some(b"durable".to_vec())
            );
        });
    }
}
