//! The client history of one run, in Jepsen's vocabulary: each operation is invoked, then
//! completes `Ok` (with what the broker answered), `Fail` (definite: certainly not applied) or
//! `Info` (ambiguous: may have been applied), or stays pending. Plus what the checkers need
//! beyond client ops: the final log read after healing, node panics and the liveness report,
//! and the nodes' own observations (high-watermark advances, truncations).
//! Plain data; never decides anything itself.

use std::collections::BTreeMap;
use std::ops::Range;

pub use samsa_net::hooks::{HwAdvance, LogTruncation};

/// Operations kept per run; the workload stops invoking past it.
pub const HISTORY_OPS_MAX: usize = 100_000;
/// `Call::Poll` consumer ids of group members start here (one id per member and join), so the
/// group checks can tell them from plain consumers.
pub const GROUP_CONSUMER_BASE: u32 = 1_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// Produce one record `value` to `partition`, keyed by `key` when the scenario's checks
    /// follow keys (compaction); a `value` starting with `TOMBSTONE_PREFIX` is a tombstone (a
    /// null value whose id travels in the `SIM_ID_HEADER` record header).
    Send {
        producer: u32,
        partition: i32,
        key: Option<String>,
        value: String,
        acks: i16,
        idempotent: bool,
    },
    /// A delayed duplicate: the batch that carried `value`, `back` batches before the producer's
    /// latest, re-sent with its original producer id, epoch and sequence.
    Resend {
        producer: u32,
        partition: i32,
        value: String,
        back: u32,
    },
    /// Fetch from `from_offset` for the consumer `consumer`.
    Poll {
        consumer: u32,
        partition: i32,
        from_offset: i64,
    },
    /// Group member `member` joins (JoinGroup, two-step if asked, then SyncGroup).
    GroupJoin { member: u32 },
    /// Heartbeat of `member_id` at `generation`.
    GroupHeartbeat {
        member: u32,
        member_id: String,
        generation: i32,
    },
    /// OffsetCommit of (partition, next offset) sent with `generation`, while the member's own
    /// latest generation was `known_generation` (older `generation` = a deliberately stale one).
    GroupCommit {
        member: u32,
        member_id: String,
        generation: i32,
        known_generation: i32,
        offsets: Vec<(i32, i64)>,
    },
    /// OffsetFetch of `partitions` for the group.
    GroupFetch { member: u32, partitions: Vec<i32> },
    /// LeaveGroup of `member_id`.
    GroupLeave { member: u32, member_id: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    /// Send acknowledged at `offset`.
    Sent {
        offset: i64,
    },
    /// Poll returned `records` (offset, value) and the broker's high watermark / log end.
    Polled {
        records: Vec<(i64, String)>,
        high_watermark: i64,
        log_end_offset: Option<i64>,
    },
    /// Join + sync done: this member's id, generation and assigned partitions.
    Joined {
        member_id: String,
        generation: i32,
        partitions: Vec<i32>,
    },
    /// A group op (heartbeat, commit, leave) succeeded.
    GroupOk,
    /// OffsetFetch answered (partition, committed offset; -1 = none).
    Offsets(Vec<(i32, i64)>),
    /// The coordinator refused a group op with `code` (definite: nothing applied).
    GroupRefused {
        code: i16,
    },
    /// Definite failure: the op certainly had no effect.
    Fail(String),
    /// Ambiguous failure: the op may or may not have taken effect.
    Info(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub id: u64,
    /// The client process (one sequential actor).
    pub process: u32,
    pub invoke_ms: u64,
    pub complete_ms: Option<u64>,
    pub call: Call,
    pub outcome: Outcome,
}

/// The log as read back after healing: per partition, every (offset, value) from the log start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FinalLog {
    pub partitions: BTreeMap<i32, BTreeMap<i64, String>>,
    /// End offset per partition, as listed after healing.
    pub log_end_offsets: BTreeMap<i32, i64>,
    /// Ranges the broker reported corrupt (single_corruption: losing these is allowed).
    pub corrupt: Vec<(i32, Range<i64>)>,
    /// Did the final read reach every end offset?
    pub complete: bool,
    /// Per partition, the key of every keyed record read (compaction scenarios).
    pub keys: BTreeMap<i32, BTreeMap<i64, String>>,
    /// Simulated milliseconds when the final read finished (0 = never ran).
    pub read_done_ms: u64,
}

impl FinalLog {
    pub fn value_at(&self, partition: i32, offset: i64) -> Option<&str> {
        self.partitions
            .get(&partition)
            .and_then(|p| p.get(&offset))
            .map(String::as_str)
    }

    pub fn is_corrupt(&self, partition: i32, offset: i64) -> bool {
        self.corrupt
            .iter()
            .any(|(p, r)| *p == partition && r.contains(&offset))
    }
}

/// Everything the checkers look at for one run.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub ops: Vec<Op>,
    pub final_log: FinalLog,
    /// (node, message) of every panic or failed assertion caught in a node.
    pub panics: Vec<(String, String)>,
    /// Liveness phase: ops still pending after the bound, and whether the cluster converged.
    pub liveness_pending: u64,
    pub liveness_converged: bool,
    /// The run's durability promise: acks=-1 with fsync flush policy means acked = durable.
    pub fsync_policy: bool,
    /// Corruption is inside the scenario's fault atlas: offsets the broker reported corrupt
    /// excuse lost acknowledged writes. Outside it, a reported corruption excuses nothing.
    pub corruption_in_atlas: bool,
    /// The topic's `delete.retention.ms` when it is compacted (`None`: not compacted, and the
    /// compaction checks have nothing to judge). The
    /// compaction scenarios keep the broker's clock in step with simulated time (a constant
    /// offset, no drift, no jumps), so elapsed simulated time is elapsed broker time.
    pub delete_retention_ms: Option<i64>,
    /// What the Raft quorum scenarios recorded (empty elsewhere: the raft checks pass).
    pub raft: RaftHistory,
    /// Replication scenarios: per partition, the replicas' local logs read after quiescence
    /// (empty elsewhere, and when the cluster never went quiet: `replicas_agree` passes).
    pub replicas: BTreeMap<i32, ReplicaLogs>,
    /// Replication scenarios: every partition state the committed metadata log went through,
    /// in log order, read from the controllers' storage after quiescence (empty elsewhere).
    pub partition_states: Vec<PartitionState>,
    /// Replication scenarios: what the nodes reported through their hooks (empty elsewhere).
    pub observed: NodeObservations,
}

/// Omniscient facts the nodes reported through `Hooks::observe` during the run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeObservations {
    /// Every high-watermark advance of a partition leader, in the order they happened.
    pub hw_advances: Vec<HwAdvance>,
    /// Every replication truncation of a replica's log, with its epoch cache after the cut.
    pub truncations: Vec<LogTruncation>,
    /// Observations past the simulator's bound, not kept (the checks judge the kept ones).
    pub dropped: u64,
}

/// One partition's state after a metadata record (replication scenarios; see
/// `scenarios/src/replication_obs.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionState {
    /// Metadata log index of the record (a snapshot's index for states restored from it).
    pub log_index: u64,
    /// True for a state restored from a snapshot: the transition into it is unknown.
    pub from_snapshot: bool,
    pub topic_id: u128,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// `-1`: no leader.
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// The topic's `unclean.leader.election.enable` at that point.
    pub unclean_allowed: bool,
}

/// One partition's replicas after quiescence, read from each node's own storage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaLogs {
    /// The high watermark the leader reported once every fault had healed.
    pub high_watermark: i64,
    pub leader: i32,
    pub isr: Vec<i32>,
    /// Per ISR member: its log end offset and its stored batches below the high watermark,
    /// or why its log could not be read.
    pub logs: BTreeMap<i32, Result<(i64, Vec<u8>), String>>,
    /// Per ISR member: its leader-epoch checkpoint as its node left it on disk next to the
    /// epochs of its whole log, or why they could not be read (`epoch_cache_matches_log`).
    pub epochs: BTreeMap<i32, Result<ReplicaEpochs, String>>,
}

/// One replica's leader-epoch cache as its node left it on disk (the raw checkpoint, read
/// before anything reopens the log, whose recovery would repair it) and its batches' epochs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaEpochs {
    pub log_start: i64,
    pub log_end: i64,
    /// `(epoch, start offset)` of every checkpoint entry (empty when there is no checkpoint).
    pub checkpoint: Vec<(i32, i64)>,
    /// `(epoch, base offset)` of every batch where the epoch changes, in log order, from the
    /// first batch the log holds (whose base may lie below `log_start`).
    pub batches: Vec<(i32, i64)>,
}

/// The omniscient record of a Raft quorum run: what every node did, durably or on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftHistory {
    /// Every "became leader": (at_ms, node, term).
    pub leaders: Vec<(u64, u32, u64)>,
    /// Every granted (non-pre-) vote as sent: (at_ms, node, directory id, term, candidate).
    pub votes_sent: Vec<(u64, u32, u128, u64, u32)>,
    /// Every durable hard state with a vote: (at_ms, node, directory id, term, candidate).
    pub votes_durable: Vec<(u64, u32, u128, u64, u32)>,
    /// Per node, every applied entry in apply order: (index, term, payload). Restarts re-apply
    /// from the snapshot, so an index may repeat; it must repeat identically.
    pub applied: BTreeMap<u32, Vec<(u64, u64, Vec<u8>)>>,
    /// Voters by node id (liveness counts a majority of them).
    pub voters: Vec<u32>,
    /// Liveness probe after healing: `None` when it was not run (not a Raft run).
    pub liveness: Option<Result<(), String>>,
}

/// A sent value starting with this is a tombstone (the record's value is null).
pub const TOMBSTONE_PREFIX: char = '~';
/// Record header carrying a tombstone's id, so the reader can tell tombstones apart.
pub const SIM_ID_HEADER: &str = "sim.id";

/// Is this sent (or read) value a tombstone?
pub fn is_tombstone(value: &str) -> bool {
    value.starts_with(TOMBSTONE_PREFIX)
}

impl History {
    pub fn invoke(&mut self, process: u32, at_ms: u64, call: Call) -> Option<u64> {
        if self.ops.len() >= HISTORY_OPS_MAX {
            return None;
        }
        let id = self.ops.len() as u64;
        self.ops.push(Op {
            id,
            process,
            invoke_ms: at_ms,
            complete_ms: None,
            call,
            outcome: Outcome::Pending,
        });
        Some(id)
    }

    pub fn complete(&mut self, id: u64, at_ms: u64, outcome: Outcome) {
        if let Some(op) = self.ops.get_mut(id as usize) {
            op.complete_ms = Some(at_ms);
            op.outcome = outcome;
        }
    }

    /// Every value ever sent (for "read of a value never written").
    pub fn sent_values(&self) -> BTreeMap<&str, &Op> {
        let mut m = BTreeMap::new();
        for op in &self.ops {
            if let Call::Send { value, .. } = &op.call {
                m.insert(value.as_str(), op);
            }
        }
        m
    }
}

/// Hand-written histories for the checkers' unit tests.
#[cfg(test)]
pub mod build {
    use super::*;

    pub fn send(h: &mut History, producer: u32, value: &str, outcome: Outcome) -> u64 {
        send_with(h, producer, value, true, outcome)
    }

    pub fn send_with(
        h: &mut History,
        producer: u32,
        value: &str,
        idempotent: bool,
        outcome: Outcome,
    ) -> u64 {
        let call = Call::Send {
            producer,
            partition: 0,
            key: None,
            value: value.to_string(),
            acks: -1,
            idempotent,
        };
        let id = h.invoke(producer, 0, call).expect("room");
        h.complete(id, 1, outcome);
        id
    }

    pub fn poll(h: &mut History, consumer: u32, from: i64, records: &[(i64, &str)], hw: i64) {
        let call = Call::Poll {
            consumer,
            partition: 0,
            from_offset: from,
        };
        let id = h.invoke(100 + consumer, 0, call).expect("room");
        let records = records.iter().map(|(o, v)| (*o, v.to_string())).collect();
        h.complete(
            id,
            1,
            Outcome::Polled {
                records,
                high_watermark: hw,
                log_end_offset: Some(hw),
            },
        );
    }

    pub fn final_log(h: &mut History, records: &[(i64, &str)]) {
        let p = h.final_log.partitions.entry(0).or_default();
        for (o, v) in records {
            p.insert(*o, v.to_string());
        }
        let end = records.iter().map(|(o, _)| o + 1).max().unwrap_or(0);
        h.final_log.log_end_offsets.insert(0, end);
        h.final_log.complete = true;
        h.liveness_converged = true;
        h.fsync_policy = true;
    }

    pub fn join(h: &mut History, member: u32, member_id: &str, generation: i32, parts: &[i32]) {
        let id = h
            .invoke(member, 0, Call::GroupJoin { member })
            .expect("room");
        let outcome = Outcome::Joined {
            member_id: member_id.to_string(),
            generation,
            partitions: parts.to_vec(),
        };
        h.complete(id, 1, outcome);
    }

    pub fn commit(
        h: &mut History,
        member: u32,
        member_id: &str,
        (generation, known_generation): (i32, i32),
        offsets: &[(i32, i64)],
        outcome: Outcome,
    ) {
        let call = Call::GroupCommit {
            member,
            member_id: member_id.to_string(),
            generation,
            known_generation,
            offsets: offsets.to_vec(),
        };
        let id = h.invoke(member, 0, call).expect("room");
        h.complete(id, 1, outcome);
    }

    pub fn heartbeat(h: &mut History, member: u32, member_id: &str, gen: i32, outcome: Outcome) {
        let call = Call::GroupHeartbeat {
            member,
            member_id: member_id.to_string(),
            generation: gen,
        };
        let id = h.invoke(member, 0, call).expect("room");
        h.complete(id, 1, outcome);
    }

    pub fn fetch_offsets(h: &mut History, member: u32, offsets: &[(i32, i64)]) {
        let partitions = offsets.iter().map(|(p, _)| *p).collect();
        let id = h
            .invoke(member, 0, Call::GroupFetch { member, partitions })
            .expect("room");
        h.complete(id, 1, Outcome::Offsets(offsets.to_vec()));
    }

    /// A group member's poll of `partition` (consumer id `GROUP_CONSUMER_BASE + consumer`).
    pub fn group_poll(
        h: &mut History,
        consumer: u32,
        partition: i32,
        from: i64,
        records: &[(i64, &str)],
    ) {
        let call = Call::Poll {
            consumer: GROUP_CONSUMER_BASE + consumer,
            partition,
            from_offset: from,
        };
        let id = h.invoke(consumer, 0, call).expect("room");
        let records = records.iter().map(|(o, v)| (*o, v.to_string())).collect();
        let hw = from + 1_000;
        h.complete(
            id,
            1,
            Outcome::Polled {
                records,
                high_watermark: hw,
                log_end_offset: None,
            },
        );
    }

    /// A keyed send to partition 0 (compaction checks), invoked at `at_ms`.
    pub fn send_keyed(h: &mut History, key: &str, value: &str, at_ms: u64, outcome: Outcome) {
        let call = Call::Send {
            producer: 1,
            partition: 0,
            key: Some(key.to_string()),
            value: value.to_string(),
            acks: -1,
            idempotent: true,
        };
        let id = h.invoke(1, at_ms, call).expect("room");
        h.complete(id, at_ms + 1, outcome);
    }

    /// A complete final log of partition 0 with keys: (offset, key, value).
    pub fn final_keyed(h: &mut History, records: &[(i64, &str, &str)], read_done_ms: u64) {
        let plain: Vec<(i64, &str)> = records.iter().map(|(o, _, v)| (*o, *v)).collect();
        final_log(h, &plain);
        let keys = h.final_log.keys.entry(0).or_default();
        for (o, k, _) in records {
            keys.insert(*o, k.to_string());
        }
        h.final_log.read_done_ms = read_done_ms;
        h.delete_retention_ms.get_or_insert(86_400_000);
    }
}
