//! samsa-raft: the metadata quorum as a pure Raft state machine (events in, effects out).
//! Never performs I/O, never reads a clock, never draws unseeded randomness.
