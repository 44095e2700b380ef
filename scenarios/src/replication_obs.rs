//! Omniscient observations of the replication scenarios: the partition states the committed
//! metadata log went through (leader, ISR, epochs, after every record), read from the
//! controllers' own storage after quiescence, for the checks `leader_from_isr` and
//! `one_leader_per_epoch`. Only entries that a majority of the nodes hold identically (by index
//! and term, or below their snapshot) count, so an uncommitted tail never does. Runs as the
//! last step of a run with every node paused (opening a store repairs a torn tail just as the
//! node's own restart would; nothing runs on it afterwards); never draws randomness. Also
//! reads a paused replica's raw leader-epoch checkpoint and its batches' epochs for
//! `epoch_cache_matches_log`.

use samsa_broker::cluster_mode::QUORUM_DIR;
use samsa_broker::quorum::QuorumStore;
use samsa_cluster::metadata::{MetadataImage, PartitionImage};
use samsa_cluster::records::{decode_batch, TopicId};
use samsa_net::batch::{BatchHeader, BATCH_HEADER_BYTES};
use samsa_raft::{DirectoryId, Entry, SnapshotMeta};
use samsa_sim::history::{PartitionState, ReplicaEpochs};
use samsa_storage::log::checkpoint;
use samsa_storage::log::epoch_cache::{LeaderEpochCache, CHECKPOINT_BYTES_MAX};
use samsa_storage::{Disk, LogConfig, PartitionLog};

/// Partition states recorded per run (a run writes a few hundred metadata records).
pub const PARTITION_STATES_MAX: usize = 100_000;

/// Bytes one read of a replica's log returns, and reads per replica (bounds the epoch walk).
pub const EPOCH_READ_BYTES: usize = 1 << 20;
pub const EPOCH_READS_MAX: u32 = 10_000;
/// Epoch changes recorded per replica log (one per leader epoch it holds).
pub const EPOCH_RUNS_MAX: usize = 100_000;

/// One paused replica's leader-epoch checkpoint exactly as its node left it (read before
/// anything reopens the log: recovery would repair it), then the epochs of every batch of its
/// log. The node must not be running.
pub async fn read_replica_epochs<D: Disk>(disk: D, dir: &str) -> Result<ReplicaEpochs, String> {
    let name = checkpoint::LEADER_EPOCH_CHECKPOINT;
    let raw = checkpoint::read_stable(&disk, dir, name, CHECKPOINT_BYTES_MAX)
        .await
        .map_err(|e| format!("read {dir}/{name}: {e}"))?;
    let checkpoint = match raw {
        None => Vec::new(),
        Some(bytes) => LeaderEpochCache::decode_checkpoint(&bytes)
            .map_err(|e| format!("{dir}/{name}: {e:?}"))?
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect(),
    };
    let (log, _) = PartitionLog::open(disk, dir, LogConfig::default())
        .await
        .map_err(|e| format!("open {dir}: {e}"))?;
    let (log_start, log_end) = (log.log_start_offset(), log.log_end_offset());
    let mut batches: Vec<(i32, i64)> = Vec::new();
    let mut at = log_start;
    for _ in 0..EPOCH_READS_MAX {
        if at >= log_end {
            return Ok(ReplicaEpochs {
                log_start,
                log_end,
                checkpoint,
                batches,
            });
        }
        let read = log
            .read(at, EPOCH_READ_BYTES, None)
            .await
            .map_err(|e| format!("read {dir} at {at}: {e}"))?;
        if read.bytes.is_empty() || read.next_offset <= at {
            return Err(format!(
                "{dir}: no batch at {at} below the log end {log_end}"
            ));
        }
        let mut rest = &read.bytes[..];
        while rest.len() >= BATCH_HEADER_BYTES {
            let hdr = BatchHeader::parse(rest).map_err(|e| format!("{dir}: {e:?}"))?;
            let len = hdr.total_bytes();
            if len < BATCH_HEADER_BYTES || len > rest.len() {
                return Err(format!(
                    "{dir}: batch at {} claims {len} bytes",
                    hdr.base_offset
                ));
            }
            let epoch = hdr.partition_leader_epoch;
            if epoch >= 0 && batches.last().is_none_or(|(e, _)| *e != epoch) {
                if batches.len() >= EPOCH_RUNS_MAX {
                    return Err(format!("{dir}: more than {EPOCH_RUNS_MAX} epoch changes"));
                }
                batches.push((epoch, hdr.base_offset));
            }
            rest = &rest[len..];
        }
        at = read.next_offset;
    }
    Err(format!("{dir}: more than {EPOCH_READS_MAX} reads"))
}

/// One node's metadata storage as read back: its snapshot and the log after it.
#[derive(Clone, Debug, Default)]
pub struct NodeMetadata {
    pub snapshot: SnapshotMeta,
    pub snapshot_data: bytes::Bytes,
    pub log: Vec<Entry>,
}

impl NodeMetadata {
    fn last(&self) -> (u64, u64) {
        match self.log.last() {
            Some(e) => (e.term, e.index),
            None => (self.snapshot.term, self.snapshot.index),
        }
    }

    /// Holds the entry `(index, term)`: in its log, or compacted into its snapshot (a
    /// snapshot covers only committed entries).
    fn holds(&self, index: u64, term: u64) -> bool {
        if index <= self.snapshot.index {
            return true;
        }
        let first = self.log.first().map_or(u64::MAX, |e| e.index);
        index
            .checked_sub(first)
            .and_then(|i| self.log.get(i as usize))
            .is_some_and(|e| e.index == index && e.term == term)
    }
}

/// Reads one node's metadata storage under `QUORUM_DIR` (the node must not be running).
pub async fn read_node<D: Disk>(disk: D) -> Result<NodeMetadata, String> {
    // The directory id exists on every node that ever started; the fresh id is never used
    // then (and a node that never started has nothing to read).
    let (_, loaded) = QuorumStore::open(disk, QUORUM_DIR, DirectoryId(0))
        .await
        .map_err(|e| format!("open {QUORUM_DIR}: {e}"))?;
    Ok(NodeMetadata {
        snapshot: loaded.snapshot,
        snapshot_data: loaded.snapshot_data,
        log: loaded.log,
    })
}

/// Pauses every node of the run, reads each one's metadata storage from its `SimDisk`,
/// resumes them, and returns the committed partition states (`voters` = every node here).
#[cfg(madsim)]
pub async fn partition_states_paused(
    node_ids: &[madsim::task::NodeId],
    trace: &samsa_sim::trace::Trace,
) -> Result<Vec<PartitionState>, String> {
    let h = madsim::runtime::Handle::current();
    let fs = madsim::plugin::simulator::<samsa_sim::disk::SimFs>();
    for id in node_ids {
        h.pause(*id);
    }
    let mut nodes = Vec::new();
    for id in node_ids {
        let disk = fs.shared.disk(samsa_sim::disk::node_number(*id));
        // A node whose storage cannot be read holds nothing: it still counts as a voter.
        match read_node(disk).await {
            Ok(n) => {
                trace.event(format!(
                    "metadata of {id}: snapshot {} log {:?}..{:?}",
                    n.snapshot.index,
                    n.log.first().map(|e| (e.index, e.term)),
                    n.log.last().map(|e| (e.index, e.term)),
                ));
                nodes.push(n);
            }
            Err(e) => trace.event(format!("metadata of {id}: {e}")),
        }
    }
    for id in node_ids {
        h.resume(*id);
    }
    partition_states(&nodes, node_ids.len())
}

/// One trace line per partition state (replays show how leaders and ISRs moved).
#[cfg(madsim)]
pub fn trace_states(trace: &samsa_sim::trace::Trace, states: &Result<Vec<PartitionState>, String>) {
    match states {
        Ok(states) => {
            for s in states {
                trace.event(format!(
                    "metadata #{}{}: partition {} leader {} epoch {} isr {:?} partition epoch {}",
                    s.log_index,
                    if s.from_snapshot { " (snapshot)" } else { "" },
                    s.partition,
                    s.leader,
                    s.leader_epoch,
                    s.isr,
                    s.partition_epoch
                ));
            }
        }
        Err(e) => trace.event(format!("metadata: unreadable: {e}")),
    }
}

/// The partition states of the committed metadata log, from the most up-to-date node's
/// storage, keeping only the prefix of its entries that a majority of `voters` hold.
pub fn partition_states(
    nodes: &[NodeMetadata],
    voters: usize,
) -> Result<Vec<PartitionState>, String> {
    let Some(base) = nodes.iter().max_by_key(|n| n.last()) else {
        return Ok(Vec::new());
    };
    let majority = voters.max(nodes.len()) / 2 + 1;
    let mut image = if base.snapshot.index == 0 || base.snapshot_data.is_empty() {
        MetadataImage::new()
    } else {
        let records = decode_batch(&base.snapshot_data).map_err(|e| format!("snapshot: {e:?}"))?;
        MetadataImage::from_snapshot(&records).map_err(|e| format!("snapshot: {e:?}"))?
    };
    let mut states = Vec::new();
    let mut last: std::collections::BTreeMap<(TopicId, i32), PartitionState> = Default::default();
    record(&image, base.snapshot.index, true, &mut last, &mut states)?;
    for entry in &base.log {
        let held = nodes
            .iter()
            .filter(|n| n.holds(entry.index, entry.term))
            .count();
        if held < majority {
            break;
        }
        if entry.payload.is_empty() {
            continue;
        }
        let records = decode_batch(&entry.payload)
            .map_err(|e| format!("entry {}: undecodable: {e:?}", entry.index))?;
        for r in &records {
            // The node's state machine skips a record its image refuses; so does this.
            if image.apply(r).is_ok() {
                record(&image, entry.index, false, &mut last, &mut states)?;
            }
        }
    }
    Ok(states)
}

/// Appends the state of every partition that changed since `last`.
fn record(
    image: &MetadataImage,
    log_index: u64,
    from_snapshot: bool,
    last: &mut std::collections::BTreeMap<(TopicId, i32), PartitionState>,
    states: &mut Vec<PartitionState>,
) -> Result<(), String> {
    for (topic_id, topic) in &image.topics {
        for (index, p) in &topic.partitions {
            let state = state_of(*topic_id, *index, p, topic.unclean_leader_election());
            let key = (*topic_id, *index);
            let same = last.get(&key).is_some_and(|s| same_state(s, &state));
            if same {
                continue;
            }
            if states.len() >= PARTITION_STATES_MAX {
                return Err(format!("more than {PARTITION_STATES_MAX} partition states"));
            }
            let state = PartitionState {
                log_index,
                from_snapshot,
                ..state
            };
            last.insert(key, state.clone());
            states.push(state);
        }
    }
    Ok(())
}

fn state_of(
    topic_id: TopicId,
    partition: i32,
    p: &PartitionImage,
    unclean: bool,
) -> PartitionState {
    PartitionState {
        log_index: 0,
        from_snapshot: false,
        topic_id,
        partition,
        replicas: p.replicas.clone(),
        isr: p.isr.clone(),
        leader: p.leader,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        unclean_allowed: unclean,
    }
}

fn same_state(a: &PartitionState, b: &PartitionState) -> bool {
    a.replicas == b.replicas
        && a.isr == b.isr
        && a.leader == b.leader
        && a.leader_epoch == b.leader_epoch
        && a.partition_epoch == b.partition_epoch
        && a.unclean_allowed == b.unclean_allowed
}

#[cfg(test)]
mod tests {
    use super::*;
    use samsa_cluster::records::{encode_batch, MetadataRecord, PartitionChange, PartitionRecord};

    const TOPIC: TopicId = 7;

    fn entry(index: u64, term: u64, records: &[MetadataRecord]) -> Entry {
        Entry {
            term,
            index,
            payload: bytes::Bytes::from(encode_batch(records)),
        }
    }

    fn topic_and_partition() -> Vec<MetadataRecord> {
        let brokers = (1..=3).map(|b| MetadataRecord::RegisterBroker {
            broker_id: b,
            incarnation: b as u128,
            host: "h".into(),
            port: 9092,
            rack: None,
            controller_only: false,
        });
        brokers
            .chain([
                MetadataRecord::Topic {
                    name: "t".into(),
                    topic_id: TOPIC,
                    configs: Default::default(),
                },
                MetadataRecord::Partition(PartitionRecord {
                    topic_id: TOPIC,
                    partition: 0,
                    replicas: vec![1, 2, 3],
                    isr: vec![1, 2, 3],
                    leader: 1,
                    leader_epoch: 0,
                    partition_epoch: 0,
                }),
            ])
            .collect()
    }

    fn shrink_and_elect() -> MetadataRecord {
        MetadataRecord::PartitionChange(PartitionChange {
            topic_id: TOPIC,
            partition: 0,
            replicas: None,
            isr: Some(vec![2, 3]),
            leader: Some(2),
            leader_epoch: 1,
            partition_epoch: 1,
        })
    }

    fn node(entries: Vec<Entry>) -> NodeMetadata {
        NodeMetadata {
            log: entries,
            ..NodeMetadata::default()
        }
    }

    #[test]
    fn states_follow_the_majority_prefix_of_the_most_up_to_date_log() {
        let committed = vec![
            entry(1, 1, &topic_and_partition()),
            entry(2, 1, &[shrink_and_elect()]),
        ];
        let mut tail = committed.clone();
        // An entry only the base node holds is not committed: ignored.
        tail.push(entry(
            3,
            2,
            &[MetadataRecord::PartitionChange(PartitionChange {
                topic_id: TOPIC,
                partition: 0,
                replicas: None,
                isr: Some(vec![3]),
                leader: Some(3),
                leader_epoch: 2,
                partition_epoch: 2,
            })],
        ));
        let nodes = [
            node(tail),
            node(committed.clone()),
            node(committed[..1].to_vec()),
        ];
        let states = partition_states(&nodes, 3).expect("states");
        assert_eq!(states.len(), 2, "{states:?}");
        assert_eq!(
            (states[0].leader, states[0].isr.clone()),
            (1, vec![1, 2, 3])
        );
        assert_eq!((states[1].leader, states[1].isr.clone()), (2, vec![2, 3]));
        assert_eq!(states[1].log_index, 2);
        assert!(!states[1].unclean_allowed && !states[1].from_snapshot);
    }

    #[test]
    fn nothing_read_gives_no_states() {
        assert_eq!(partition_states(&[], 3), Ok(Vec::new()));
        assert_eq!(partition_states(&[node(Vec::new())], 3), Ok(Vec::new()));
        // Two of three voters unreadable: the one left is no majority.
        let one = [node(vec![entry(1, 1, &topic_and_partition())])];
        assert_eq!(partition_states(&one, 3), Ok(Vec::new()));
    }
}
