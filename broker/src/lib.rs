//! samsa-broker: the broker's sans-IO cores, the node shell that runs them against a `Disk`,
//! `Net` and `Clock`, the Kafka request handlers, and the `samsa` binary.
//! Never reads a clock or randomness except through the `Clock` and seed it is handed.

pub mod broker;
pub mod cleaner;
pub mod cluster_mode;
pub mod config;
pub mod group;
pub mod group_commit;
pub mod handlers;
pub mod metadata;
pub mod node;
pub mod partition;
pub mod quorum;
pub mod replication;
pub mod topic_config;
pub mod wire;

pub use config::NodeConfig;
pub use node::{run_node, NodeError};
