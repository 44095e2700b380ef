//! samsa-raft: the metadata quorum as a pure Raft state machine (events in, effects out).
//! Never performs I/O, never reads a clock, never draws unseeded randomness.
//!
//! `RaftCore::step` takes an `Event` and pushes `Effect`s that the node shell executes in order
//! (the durability contract is written on `Effect`). Messages travel as `Message::encode` bytes.
//!
//! How a shell drives it:
//! - Start: `RaftCore::new(config, seed, Restored { hard_state, snapshot, log, applied_index,
//!   .. }, now_ms)`. A fresh data directory gets a fresh random `DirectoryId`; the voter set
//!   records each voter's directory id, so a node whose disk was lost comes back as an observer.
//! - Step with `Event::Tick` no later than `next_deadline_ms()`, with `Event::Receive` for each
//!   decoded message, with `Event::LogPersisted` once appended entries are durable, and with
//!   `Event::SnapshotTaken` after the state machine stored a snapshot.
//! - Execute effects in order: persist, truncate and append durably before the next effect;
//!   `Apply` feeds the state machine; `Send` encodes and sends; `RoleChanged` informs the broker.
//! - `propose` on the leader appends a payload; `quorum_info` answers DescribeQuorum.
//!
//! Tests: `harness` (test builds) is a seeded discrete-event cluster with faults and omniscient
//! checks; `Planted` switches in three known bugs that it must catch.

pub mod core;
pub mod message;
pub mod planted;
pub mod types;

#[cfg(test)]
mod harness;

pub use crate::core::{
    Config, Effect, Event, InitError, ProposeError, QuorumInfo, RaftCore, ReplicaInfo, Restored,
};
pub use crate::message::{Body, DecodeError, Message, MESSAGE_BYTES_MAX};
pub use crate::planted::Planted;
pub use crate::types::*;
