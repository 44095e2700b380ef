//! samsa-cluster: pure cores of the replicated cluster (controller metadata state machine,
//! partition replication, leader-epoch cache). Never performs I/O or reads a clock.
