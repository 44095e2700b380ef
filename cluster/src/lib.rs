//! samsa-cluster: pure cores of the replicated cluster (controller metadata state machine,
//! partition replication over the log's leader-epoch cache). Never performs I/O or reads a
//! clock.
//!
//! - `records`: the metadata log's records and their CRC-protected encoding.
//! - `metadata`: the image every node derives from the committed metadata log.
//! - `controller`: the active controller's decisions (records to propose, or an error code).
//! - `replica`: a partition leader's follower tracking, high watermark, acks=all and ISR
//!   proposals; a follower's truncation step (over the leader-epoch cache, which lives with
//!   the log in `samsa_storage::log::epoch_cache`).
//! - `planted`: planted bugs (test and simulation builds only).
//! - `model`: a seeded multi-replica model that drives all of the above (test and simulation
//!   builds only).

pub mod controller;
pub mod metadata;
#[cfg(any(test, madsim))]
pub mod model;
pub mod planted;
pub mod records;
pub mod replica;
