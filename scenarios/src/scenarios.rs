//! The single-node scenarios and their fault atlases. Each `options` function draws a whole run
//! configuration from the seed (swarm testing: faults are often switched off entirely so the
//! others dominate). The atlas of each scenario says which faults may appear so that every seed
//! stays recoverable in principle; a fault outside it is never drawn.
//! Never draws from anything but the `Seed` it is handed.

use samsa_sim::chaos::ChaosConfig;
use samsa_sim::disk::DiskFaults;
use samsa_sim::seed::Seed;

use crate::{Scenario, SimOptions};

const SAFETY_CHECKS: &[&str] = &[
    "no_panic",
    "acked_durable",
    "offsets_unique",
    "no_duplicates",
    "reads_valid",
    "no_corrupt_served",
    "poll_monotonic",
    "producer_order",
    "hw_bounded",
    "idempotent_retry",
    "no_corruption_reported",
    "liveness",
];

const GROUP_CHECKS: &[&str] = &[
    "no_panic",
    "acked_durable",
    "offsets_unique",
    "no_duplicates",
    "reads_valid",
    "poll_monotonic",
    "producer_order",
    "hw_bounded",
    "liveness",
    "group_single_owner",
    "group_commits_monotonic",
    "group_stale_commit_rejected",
    "group_no_gap",
];

/// Compaction removes records and leaves offset gaps: `acked_durable`, `reads_valid` and
/// `poll_monotonic` give way to the compaction checks, which judge the same properties per key.
const COMPACTION_CHECKS: &[&str] = &[
    "no_panic",
    "offsets_unique",
    "no_duplicates",
    "no_corrupt_served",
    "producer_order",
    "hw_bounded",
    "idempotent_retry",
    "no_corruption_reported",
    "liveness",
    "compaction_latest",
    "compaction_equivalence",
    "compaction_tombstone_retention",
];

pub const ALL: &[Scenario] = &[
    Scenario {
        name: "single_durability",
        about: "producers acks=-1 (idempotent or not), crash/restart with power loss, disk and \
                clock faults; atlas: no bit flips (at rest or on read), no wipe",
        options: single_durability,
        checks: SAFETY_CHECKS,
    },
    Scenario {
        name: "single_torn_tail",
        about: "frequent power loss during writes: lost, reordered and torn unsynced writes; \
                recovery must keep every acked record and drop only the torn tail",
        options: single_torn_tail,
        checks: SAFETY_CHECKS,
    },
    Scenario {
        name: "single_corruption",
        about: "bit flips at rest and on read: never wrong data (an error or the right bytes); \
                acked loss allowed only in ranges the broker reported corrupt",
        options: single_corruption,
        // Every check: a flip the broker detects must surface as an error (which excuses the
        // range in `acked_durable`), never as silent truncation or offset reuse.
        checks: SAFETY_CHECKS,
    },
    Scenario {
        name: "single_net_chaos",
        about: "short reads/writes, resets after a request went out, refused connects, \
                client<->broker partitions, packet loss, latency and process pauses",
        options: single_net_chaos,
        checks: SAFETY_CHECKS,
    },
    Scenario {
        name: "single_groups",
        about: "2-4 consumer-group members join, poll from committed offsets, commit, leave, \
                crash and pause past the session timeout, plus delayed stale-generation commits; \
                broker power loss and network faults; atlas: no bit flips, no wipe",
        options: single_groups,
        checks: GROUP_CHECKS,
    },
    Scenario {
        name: "single_compaction",
        about: "a compacted topic with few hot keys, cold keys and tombstones, tiny segments, \
                the cleaner buggified to run often, power loss and disk faults mid-clean; \
                atlas: no bit flips, no wipe, no clock drift or jumps",
        options: single_compaction,
        checks: COMPACTION_CHECKS,
    },
    Scenario {
        name: "cluster_quorum",
        about: "the Raft metadata quorum alone: 3 or 5 nodes with 1/3/5 voters, a client \
                proposing to the leader, partitions (one-way, split, isolated leader), pauses, \
                power loss and restarts, a wiped voter (back as an observer); atlas: no disk \
                EIO or bit flips, no clock faults (the quorum runs on monotonic time)",
        options: cluster_quorum,
        checks: QUORUM_CHECKS,
    },
    Scenario {
        name: "cluster_replication",
        about: "3-5 brokers in cluster mode (all voters), a topic with RF 1-3 and min ISR \
                1-RF, idempotent acks=all producers; power loss and restart of one node, of a \
                partition's leader mid-produce or of a whole ISR at once, pauses, one node cut \
                off from its peers (both ways, one way), from everyone or only on its \
                controller port, clock jumps; then full ISRs, every acked record at its offset, \
                in-sync replicas byte-identical below the high watermark; atlas: no disk EIO, \
                no bit flips, no wipe",
        options: cluster_replication,
        checks: REPLICATION_CHECKS,
    },
    Scenario {
        name: "cluster_groups",
        about: "consumer groups on a replicated cluster: cluster_replication's layouts and \
                faults (crashes incl. leaders mid-produce and whole ISRs, pauses, partitions, \
                controller-port cuts, clock jumps, one wipe when min ISR >= 2) plus 2-4 group \
                members (classic or KIP-848) that bootstrap over every broker, find the \
                coordinator, leave, crash, pause past the session and re-send stale commits",
        options: cluster_groups,
        checks: CLUSTER_GROUP_CHECKS,
    },
];

/// The single-node safety checks that hold for a replicated partition too, plus agreement of
/// the in-sync replicas. Not `hw_bounded`: a new leader may report a lower high watermark than
/// its predecessor told the same client (Kafka's too: followers learn the high watermark one
/// fetch late), so it goes backwards across a leader change (seed 17: 11, then 10 from the
/// new leader).
const REPLICATION_CHECKS: &[&str] = &[
    "no_panic",
    "acked_durable",
    "offsets_unique",
    "no_duplicates",
    "reads_valid",
    "poll_monotonic",
    "producer_order",
    "idempotent_retry",
    "liveness",
    "replicas_agree",
    "replica_epochs_monotonic",
    "leader_from_isr",
    "one_leader_per_epoch",
    "hw_safety",
    "epoch_cache_truncated",
    "epoch_cache_matches_log",
    "no_truncation_below_hw",
];

/// Atlas: 3-5 nodes; in half the runs every node is a voter and a broker, else 1 or 3 of them
/// are voters and the rest broker-only (Raft observers that introduce themselves), and in some
/// runs the first voter is controller-only (no replicas); RF 1..=min(3, brokers) and min ISR
/// 1..=RF; power loss with torn/reordered unsynced writes on one node, on a partition's
/// leader while a send is in flight, or on every member of a partition's ISR at the same
/// instant; pauses, partitions between one node and its peers (both ways or one way), from
/// everyone or on its controller port only, packet loss, short reads/writes and resets, slow
/// disks, per-node clock offsets, drift and jumps; with min ISR >= 2, one disk wipe. The flush
/// policy stays `fsync`, so a power loss never excuses a lost acked record (RF 1 included). No
/// EIO, no bit flips.
pub fn cluster_replication(s: &mut Seed) -> SimOptions {
    cluster_layout_and_faults(s)
}

/// The draws `cluster_replication` and `cluster_groups` share (the atlas above): node count,
/// voter layout, replication factor and min ISR, the producer workload and every fault.
/// `cluster_replication` is exactly this, so its seeds keep their meaning; other cluster
/// scenarios draw their own parts after it.
pub fn cluster_layout_and_faults(s: &mut Seed) -> SimOptions {
    let mut o = SimOptions::base();
    o.partitions = s.range_u64(1, 3) as i32;
    o.quorum_nodes = s.range_u64(3, 5) as u32;
    o.quorum_voters = o.quorum_nodes;
    o.replication_factor = s.range_u64(1, u64::from(o.quorum_nodes.min(3))) as i16;
    o.min_insync = s.range_u64(1, o.replication_factor as u64) as i32;
    o.producers = s.range_u64(1, 2) as u32;
    o.idempotent = vec![true; o.producers as usize];
    o.consumers = s.range_u64(0, 1) as u32;
    o.sends_per_producer = s.range_u64(20, 120) as u32;
    o.send_pause_ms = s.range_u64(20, 300);
    o.safety_ms = s.range_u64(10_000, 30_000);
    o.liveness_ms = 60_000;
    o.segment_bytes = *s.pick(&[4_096i64, 16_384, 1 << 20]).unwrap_or(&(1 << 20));
    o.key_bytes = *s.pick(&[0u64, 100, 700]).unwrap_or(&0);
    o.buggify = s.chance(0.5);
    o.latency_ms = (1, s.range_u64(2, 10));
    clock(s, &mut o);
    o.crash_p = s.rate(0.3, 0.3);
    o.pause_p = s.rate(0.5, 0.2);
    o.partition_p = s.rate(0.3, 0.4);
    o.leader_crash_p = s.rate(0.4, 0.3);
    o.isr_crash_p = s.rate(0.5, 0.2);
    o.controller_cut_p = s.rate(0.4, 0.4);
    o.packet_loss = s.rate(0.6, 0.02);
    o.chaos = ChaosConfig {
        short_read: s.rate(0.5, 0.3),
        short_write: s.rate(0.5, 0.3),
        reset_after_flush: s.rate(0.7, 0.02),
        connect_refused: s.rate(0.7, 0.05),
    };
    o.disk = DiskFaults {
        crash_torn: s.rate(0.3, 0.7),
        crash_reorder: s.rate(0.3, 0.7),
        latency_us: if s.chance(0.3) {
            Some((10, s.range_u64(100, 5_000)))
        } else {
            None
        },
        ..DiskFaults::NONE
    };
    o.nemesis_step_ms = (300, s.range_u64(800, 2_500));
    // Process roles, drawn last so the other draws stay what they were for older seeds.
    let nodes = o.quorum_nodes;
    if s.chance(0.5) {
        let fewer: Vec<u32> = [1u32, 3].into_iter().filter(|v| *v < nodes).collect();
        o.quorum_voters = *s.pick(&fewer).unwrap_or(&nodes);
    }
    if s.chance(0.3) {
        o.controller_only_voters = 1;
    }
    let brokers = nodes - o.controller_only_voters;
    o.replication_factor = o.replication_factor.min(brokers as i16);
    o.min_insync = o.min_insync.min(i32::from(o.replication_factor));
    // One disk wipe per run (nemesis: a broker-only node or one of at least three voters, only
    // while every ISR is full), only where every acked record is on two disks.
    if o.min_insync >= 2 {
        o.wipe_p = s.rate(0.4, 0.15);
    }
    o
}

/// The replication checks plus the group checks (see each group check's header for why its
/// reasoning holds while the coordinator moves between nodes, crashes or is wiped).
const CLUSTER_GROUP_CHECKS: &[&str] = &[
    "no_panic",
    "acked_durable",
    "offsets_unique",
    "no_duplicates",
    "reads_valid",
    "poll_monotonic",
    "producer_order",
    "idempotent_retry",
    "liveness",
    "replicas_agree",
    "replica_epochs_monotonic",
    "leader_from_isr",
    "one_leader_per_epoch",
    "hw_safety",
    "epoch_cache_truncated",
    "epoch_cache_matches_log",
    "no_truncation_below_hw",
    "group_single_owner",
    "group_commits_monotonic",
    "group_stale_commit_rejected",
    "group_no_gap",
];

/// Atlas: `cluster_replication`'s (layouts, RF/min ISR, every node fault, the one wipe when
/// min ISR >= 2, clock trouble) plus `single_groups`' member faults: 2-4 members (classic or
/// KIP-848 by seed) that leave, crash, pause past the session timeout and re-send stale
/// commits, over 2-6 partitions, with no plain consumers. The group coordinator is whichever
/// node the brokers name; the nemesis does not aim at it on purpose (a node fault hits it one
/// time in the node count).
pub fn cluster_groups(s: &mut Seed) -> SimOptions {
    let mut o = cluster_layout_and_faults(s);
    o.partitions = s.range_u64(2, 6) as i32;
    o.consumers = 0;
    o.group_members = s.range_u64(2, 4) as u32;
    o.sends_per_producer = s.range_u64(10, 80) as u32;
    o.member_leave_p = s.rate(0.5, 0.05);
    o.member_crash_p = s.rate(0.5, 0.05);
    o.member_pause_p = s.rate(0.5, 0.04);
    o.stale_commit_p = 0.2 + s.rate(0.0, 0.8);
    o
}

const QUORUM_CHECKS: &[&str] = &[
    "no_panic",
    "raft_one_leader_per_term",
    "raft_applied_agree",
    "raft_no_double_vote",
    "raft_liveness",
];

/// Atlas: crashes with power loss (torn, reordered and partially named unsynced writes),
/// pauses, partitions of every shape, packet loss, slow disks, one wiped voter. No EIO and no
/// bit flips (a lone corrupt vote file stops its node by design), no clock faults.
pub fn cluster_quorum(s: &mut Seed) -> SimOptions {
    let mut o = SimOptions::base();
    o.quorum_nodes = *s.pick(&[3u32, 5]).unwrap_or(&3);
    let voters: &[u32] = if o.quorum_nodes == 3 {
        &[1, 3]
    } else {
        &[1, 3, 5]
    };
    o.quorum_voters = *s.pick(voters).unwrap_or(&3);
    o.producers = 1;
    o.idempotent = vec![false];
    o.consumers = 0;
    o.safety_ms = s.range_u64(5_000, 25_000);
    o.liveness_ms = 20_000;
    o.latency_ms = (1, s.range_u64(2, 30));
    o.packet_loss = s.rate(0.5, 0.05);
    o.crash_p = s.rate(0.3, 0.4);
    o.pause_p = s.rate(0.5, 0.2);
    o.partition_p = s.rate(0.3, 0.6);
    o.wipe_p = if o.quorum_voters >= 3 {
        s.rate(0.5, 0.3)
    } else {
        0.0
    };
    o.buggify = false;
    o.disk.crash_torn = s.rate(0.3, 0.8);
    o.disk.crash_reorder = s.rate(0.5, 0.5);
    o.disk.crash_names_partial = s.rate(0.5, 0.5);
    if s.chance(0.6) {
        o.disk.latency_us = Some((10, s.range_u64(100, 5_000)));
    }
    o.nemesis_step_ms = (100, s.range_u64(500, 2_000));
    o
}

fn workload(s: &mut Seed, o: &mut SimOptions) {
    o.partitions = s.range_u64(1, 3) as i32;
    o.producers = s.range_u64(1, 3) as u32;
    o.idempotent = (0..o.producers).map(|_| s.chance(0.6)).collect();
    o.consumers = s.range_u64(0, 3) as u32;
    o.sends_per_producer = s.range_u64(10, 100) as u32;
    o.safety_ms = s.range_u64(5_000, 30_000);
    o.segment_bytes = *s.pick(&[4_096i64, 16_384, 1 << 20]).unwrap_or(&(1 << 20));
    o.buggify = s.chance(0.8);
    o.latency_ms = (1, s.range_u64(2, 20));
    o.duplicate_p = s.rate(0.5, 0.3);
    o.key_bytes = *s.pick(&[0u64, 100, 700, 1_500]).unwrap_or(&0);
}

fn clock(s: &mut Seed, o: &mut SimOptions) {
    if s.chance(0.5) {
        o.clock_offset_ms = s.range_u64(0, 120_000) as i64 - 60_000;
        o.clock_drift_ppm = s.range_u64(0, 400) as i64 - 200;
        o.clock_jump_p = s.rate(0.4, 0.1);
    }
}

/// Atlas: write/read/fsync EIO, ENOSPC, slow I/O, torn/reordered unsynced writes at power loss.
/// No bit flips and no wipe: those lose acked data by construction on a single node.
pub fn single_durability(s: &mut Seed) -> SimOptions {
    let mut o = SimOptions::base();
    workload(s, &mut o);
    clock(s, &mut o);
    o.crash_p = s.rate(0.2, 0.3);
    o.pause_p = s.rate(0.5, 0.1);
    o.disk = DiskFaults {
        write_eio: s.rate(0.5, 0.01),
        read_eio: s.rate(0.7, 0.005),
        fsync_eio: s.rate(0.5, 0.02),
        enospc_after_bytes: if s.chance(0.15) {
            Some(s.range_u64(2_000, 200_000))
        } else {
            None
        },
        latency_us: if s.chance(0.3) {
            Some((10, s.range_u64(100, 20_000)))
        } else {
            None
        },
        crash_torn: s.rate(0.3, 0.7),
        crash_reorder: s.rate(0.3, 0.7),
        ..DiskFaults::NONE
    };
    o
}

/// Atlas: power loss at a high rate while writes are in flight; torn and reordered tails.
pub fn single_torn_tail(s: &mut Seed) -> SimOptions {
    let mut o = SimOptions::base();
    workload(s, &mut o);
    o.crash_p = 0.3 + s.rate(0.0, 0.4);
    o.nemesis_step_ms = (50, 800);
    // Slow syncs and busy producers keep unsynced bytes around when the power goes.
    o.send_pause_ms = s.range_u64(0, 50);
    o.key_bytes = *s.pick(&[300u64, 700, 1_500]).unwrap_or(&700);
    o.disk = DiskFaults {
        crash_torn: 0.3 + s.rate(0.0, 0.7),
        crash_reorder: s.rate(0.2, 1.0),
        latency_us: Some((500, s.range_u64(5_000, 40_000))),
        ..DiskFaults::NONE
    };
    o
}

/// Atlas: at-rest flips (per power loss) in sealed segments and index files, transient flips on
/// read, plus crashes. The broker must refuse corrupt ranges, never serve wrong bytes.
pub fn single_corruption(s: &mut Seed) -> SimOptions {
    let mut o = SimOptions::base();
    workload(s, &mut o);
    o.crash_p = 0.1 + s.rate(0.0, 0.3);
    o.consumers = o.consumers.max(1);
    o.corruption_in_atlas = true;
    o.disk = DiskFaults {
        bitflip_at_rest: 0.2 + s.rate(0.0, 0.8),
        bitflip_at_rest_sealed_only: true,
        bitflip_on_read: s.rate(0.3, 0.05),
        crash_torn: s.rate(0.5, 0.5),
        ..DiskFaults::NONE
    };
    o
}

/// Atlas: network only (the disk is perfect), plus pauses and crashes without power loss
/// surprises beyond the durability contract.
pub fn single_net_chaos(s: &mut Seed) -> SimOptions {
    let mut o = SimOptions::base();
    workload(s, &mut o);
    o.partition_p = s.rate(0.2, 0.4);
    o.pause_p = s.rate(0.4, 0.2);
    o.crash_p = s.rate(0.6, 0.1);
    o.packet_loss = s.rate(0.5, 0.05);
    o.net_buggify = s.chance(0.3);
    o.chaos = ChaosConfig {
        short_read: s.rate(0.3, 0.5),
        short_write: s.rate(0.3, 0.5),
        reset_after_flush: s.rate(0.3, 0.05),
        connect_refused: s.rate(0.5, 0.1),
    };
    o
}

/// Atlas: group members' own faults (leave, crash, pause past the session timeout, delayed
/// commits from an old generation), broker power loss (with torn/reordered unsynced writes),
/// pauses, client partitions, packet loss and short reads/writes. No bit flips, no wipe.
pub fn single_groups(s: &mut Seed) -> SimOptions {
    let mut o = SimOptions::base();
    o.partitions = s.range_u64(2, 6) as i32;
    o.producers = s.range_u64(1, 2) as u32;
    o.idempotent = (0..o.producers).map(|_| s.chance(0.6)).collect();
    o.consumers = 0;
    o.group_members = s.range_u64(2, 4) as u32;
    o.sends_per_producer = s.range_u64(10, 60) as u32;
    o.send_pause_ms = s.range_u64(50, 400);
    o.safety_ms = s.range_u64(8_000, 20_000);
    o.buggify = s.chance(0.5);
    o.latency_ms = (1, s.range_u64(2, 10));
    o.member_leave_p = s.rate(0.5, 0.05);
    o.member_crash_p = s.rate(0.5, 0.05);
    o.member_pause_p = s.rate(0.5, 0.04);
    o.stale_commit_p = 0.2 + s.rate(0.0, 0.8);
    o.crash_p = s.rate(0.5, 0.2);
    o.pause_p = s.rate(0.6, 0.1);
    o.partition_p = s.rate(0.6, 0.2);
    o.packet_loss = s.rate(0.7, 0.02);
    o.chaos = ChaosConfig {
        short_read: s.rate(0.5, 0.3),
        short_write: s.rate(0.5, 0.3),
        reset_after_flush: s.rate(0.6, 0.03),
        connect_refused: s.rate(0.6, 0.05),
    };
    o.disk = DiskFaults {
        crash_torn: s.rate(0.5, 0.5),
        crash_reorder: s.rate(0.5, 0.5),
        ..DiskFaults::NONE
    };
    o
}

/// Atlas: power loss with torn/reordered unsynced writes and unsynced names resolved one by one
/// (often while the cleaner swaps), write/read/fsync EIO, slow I/O, pauses. No bit flips, no
/// wipe. The broker's clock keeps a constant offset (no drift, no jumps) so
/// `compaction_tombstone_retention` can measure `delete.retention.ms` in simulated time.
pub fn single_compaction(s: &mut Seed) -> SimOptions {
    let mut o = SimOptions::base();
    o.compacted = true;
    o.partitions = s.range_u64(1, 2) as i32;
    o.producers = s.range_u64(1, 3) as u32;
    o.idempotent = (0..o.producers).map(|_| s.chance(0.6)).collect();
    o.consumers = s.range_u64(0, 2) as u32;
    o.sends_per_producer = s.range_u64(40, 200) as u32;
    o.send_pause_ms = s.range_u64(20, 200);
    o.safety_ms = s.range_u64(8_000, 25_000);
    o.keys_hot = s.range_u64(1, 6) as u32;
    o.keys_cold = s.range_u64(0, 20) as u32;
    o.tombstone_p = s.rate(0.8, 0.3);
    o.segment_bytes = *s.pick(&[1_024i64, 2_048, 4_096]).unwrap_or(&1_024);
    o.segment_ms = *s.pick(&[0i64, 500, 2_000]).unwrap_or(&0);
    o.min_cleanable_dirty_ratio = *s.pick(&[0.01f64, 0.1, 0.3, 0.5]).unwrap_or(&0.1);
    o.delete_retention_ms = *s.pick(&[0i64, 1_000, 5_000, 60_000]).unwrap_or(&1_000);
    o.buggify = s.chance(0.85);
    o.clean_now_p = 0.5 + s.rate(0.0, 0.5);
    o.latency_ms = (1, s.range_u64(2, 10));
    o.duplicate_p = s.rate(0.5, 0.2);
    o.key_bytes = 0;
    if s.chance(0.5) {
        o.clock_offset_ms = s.range_u64(0, 120_000) as i64 - 60_000;
    }
    o.crash_p = s.rate(0.2, 0.3);
    o.pause_p = s.rate(0.6, 0.1);
    o.nemesis_step_ms = (100, 1_200);
    o.disk = DiskFaults {
        write_eio: s.rate(0.6, 0.01),
        read_eio: s.rate(0.7, 0.005),
        fsync_eio: s.rate(0.6, 0.01),
        latency_us: if s.chance(0.3) {
            Some((10, s.range_u64(100, 10_000)))
        } else {
            None
        },
        crash_torn: s.rate(0.3, 0.7),
        crash_reorder: s.rate(0.3, 0.7),
        crash_names_partial: s.rate(0.3, 1.0),
        ..DiskFaults::NONE
    };
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn cluster_replication_draws_nodes_rf_and_min_isr_within_bounds() {
        let mut shapes = BTreeSet::new();
        let mut layouts = BTreeSet::new();
        let mut faults = [0u32; 3];
        for seed in 0..2_000u64 {
            let o = cluster_replication(&mut Seed::new(seed).child("options"));
            let nodes = o.quorum_nodes;
            assert!((3..=5).contains(&nodes), "seed {seed}: {nodes} nodes");
            let (voters, controllers) = (o.quorum_voters, o.controller_only_voters);
            assert!(
                voters == nodes || voters == 1 || voters == 3,
                "seed {seed}: {voters} voters of {nodes}"
            );
            assert!(controllers <= 1 && controllers <= voters, "seed {seed}");
            layouts.insert((nodes, voters, controllers));
            let brokers = nodes - controllers;
            let rf = o.replication_factor as u32;
            assert!(
                rf >= 1 && rf <= brokers.min(3),
                "seed {seed}: rf {rf} on {brokers} brokers"
            );
            assert!(
                o.min_insync >= 1 && o.min_insync as u32 <= rf,
                "seed {seed}"
            );
            assert_eq!(
                o.flush_policy, "fsync",
                "acked records must survive power loss"
            );
            shapes.insert((nodes, rf, o.min_insync));
            for (count, p) in
                faults
                    .iter_mut()
                    .zip([o.isr_crash_p, o.leader_crash_p, o.controller_cut_p])
            {
                *count += u32::from(p > 0.0);
            }
        }
        // Every (nodes, rf, min ISR) combination appears: 3 node counts x 6 (rf, min ISR).
        assert_eq!(shapes.len(), 18, "{shapes:?}");
        // Voters: 3 nodes {3, 1}, 4 nodes {4, 1, 3}, 5 nodes {5, 1, 3}; each with and without
        // a controller-only voter.
        assert_eq!(layouts.len(), 16, "{layouts:?}");
        // Swarm: each new fault is on in some seeds and off in others.
        for count in faults {
            assert!(count > 500 && count < 1_500, "{faults:?}");
        }
    }

    #[test]
    fn cluster_groups_shares_the_cluster_draws_and_adds_members() {
        let mut kinds = BTreeSet::new();
        let mut wipes = 0;
        for seed in 0..2_000u64 {
            let base = cluster_replication(&mut Seed::new(seed).child("options"));
            let o = cluster_groups(&mut Seed::new(seed).child("options"));
            // Same layout and faults as cluster_replication for the same seed.
            assert_eq!(
                (o.quorum_nodes, o.quorum_voters, o.controller_only_voters),
                (
                    base.quorum_nodes,
                    base.quorum_voters,
                    base.controller_only_voters
                ),
                "seed {seed}"
            );
            assert_eq!(
                (o.replication_factor, o.min_insync, o.wipe_p.to_bits()),
                (
                    base.replication_factor,
                    base.min_insync,
                    base.wipe_p.to_bits()
                ),
                "seed {seed}"
            );
            assert_eq!(o.disk, base.disk, "seed {seed}");
            assert!((2..=4).contains(&o.group_members), "seed {seed}");
            assert!((2..=6).contains(&o.partitions), "seed {seed}");
            assert_eq!(o.consumers, 0, "seed {seed}");
            assert!(o.stale_commit_p >= 0.2, "seed {seed}");
            kinds.insert((o.member_leave_p > 0.0, o.member_crash_p > 0.0));
            wipes += u32::from(o.wipe_p > 0.0);
        }
        // Swarm: member faults on and off in every combination; some runs may wipe a disk.
        assert_eq!(kinds.len(), 4, "{kinds:?}");
        assert!(wipes > 100, "{wipes}");
    }
}
