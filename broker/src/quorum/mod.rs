//! The metadata quorum's node shell: runs a `samsa_raft::RaftCore` against the `Disk`, `Net`
//! and `tokio::time` boundaries. `store` keeps the durable state, `shell` runs the event loop
//! and the peer connections. Never reads a wall clock, never draws unseeded randomness.

pub mod shell;
pub mod store;

pub use shell::{
    fresh_directory_id, NodeStatus, ProposeFailure, QuorumConfig, QuorumError, QuorumHandle,
    QuorumNode, ShellObserver, StateMachine,
};
pub use store::{Loaded, QuorumStore, StoreError};
