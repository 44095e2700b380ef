//! Plain data shared by the Raft core, its messages and its shell: node identity, the persistent
//! hard state, log entries, roles and the named bounds. Holds no behaviour beyond small helpers
//! and never performs I/O.

use bytes::Bytes;

/// Most voters a static voter set may hold.
pub const VOTERS_MAX: usize = 16;
/// Most observers (non-voting replicas) a core replicates to.
pub const OBSERVERS_MAX: usize = 256;
/// Most unsnapshotted entries the core keeps in memory; a leader refuses proposals beyond it.
pub const LOG_ENTRIES_MAX: usize = 65_536;
/// Largest payload of one entry.
pub const ENTRY_PAYLOAD_BYTES_MAX: usize = 1024 * 1024;
/// Most entries in one `AppendEntries` message.
pub const BATCH_ENTRIES_MAX: usize = 64;
/// Most payload bytes in one `AppendEntries` message (a single larger entry is never produced
/// because `ENTRY_PAYLOAD_BYTES_MAX` fits).
pub const BATCH_BYTES_MAX: usize = 1024 * 1024;
/// Largest snapshot the core will hold or accept.
pub const SNAPSHOT_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Highest term a message may carry: far beyond any real cluster's lifetime, and low enough
/// that `term + 1` can never overflow however a peer misbehaves.
pub const TERM_MAX: u64 = 1 << 62;
/// Largest chunk of snapshot in one `InstallSnapshot` message.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 64 * 1024;

const _: () = assert!(ENTRY_PAYLOAD_BYTES_MAX <= BATCH_BYTES_MAX);
const _: () = assert!(SNAPSHOT_CHUNK_BYTES_MAX <= SNAPSHOT_BYTES_MAX);
const _: () = assert!(BATCH_ENTRIES_MAX <= LOG_ENTRIES_MAX);

/// A node of the cluster (Kafka's `node.id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u32);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// Random identity of one data directory (KIP-853's directory id). A node whose persistent
/// state is lost comes back with a fresh one, so it can no longer speak as its old self.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DirectoryId(pub u128);

/// One member of the static voter set. `directory_id: None` accepts any directory (bootstrap
/// only: it gives no protection against a voter that lost its disk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Voter {
    pub id: NodeId,
    pub directory_id: Option<DirectoryId>,
}

impl Voter {
    /// Does `(id, dir)` speak for this voter? The directory-id rule lives here and only here.
    pub fn matches(&self, id: NodeId, dir: DirectoryId) -> bool {
        self.id == id && self.directory_id.is_none_or(|d| d == dir)
    }
}

/// State that must be durable before the node acts on it (Raft's `currentTerm`, `votedFor`).
/// The vote records the candidate's directory id too, so a vote is for one incarnation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: u64,
    pub voted_for: Option<(NodeId, DirectoryId)>,
}

/// One log entry. Indices start at 1; an empty payload is the leader's no-op entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub term: u64,
    pub index: u64,
    pub payload: Bytes,
}

/// The last entry covered by a snapshot; `index == 0` means "no snapshot".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub index: u64,
    pub term: u64,
}

/// What a node is doing in the quorum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Not a voter (or a voter whose directory id does not match): replicates, never votes.
    Observer,
    Follower,
    /// Asking for pre-votes: has not raised its term yet.
    PreCandidate,
    Candidate,
    Leader,
}
