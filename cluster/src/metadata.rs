//! The metadata image: brokers, topics and partitions as they stand after applying the
//! metadata log in commit order. `apply` is deterministic and refuses any record that would
//! break an invariant (leader ∈ isr ⊆ replicas, replicas distinct and registered, epochs only
//! rise), leaving the image unchanged. It never reads a clock and never decides anything: the
//! controller decides, the image records.

use std::collections::BTreeMap;

use crate::records::{
    BrokerId, MetadataRecord, PartitionChange, PartitionRecord, TopicId, NO_LEADER, REPLICAS_MAX,
};

/// Most brokers one image registers.
pub const BROKERS_MAX: usize = 4096;
/// Most topics one image holds.
pub const TOPICS_MAX: usize = 100_000;
/// Most partitions of one topic.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

/// Topic config keys the cores read.
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";
pub const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerImage {
    pub broker_id: BrokerId,
    pub incarnation: u128,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    pub fenced: bool,
    /// Hosts no partition replicas (`process_roles = controller`).
    pub controller_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionImage {
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: TopicId,
    pub configs: BTreeMap<String, String>,
    pub partitions: BTreeMap<i32, PartitionImage>,
}

impl TopicImage {
    /// `min.insync.replicas`, 1 when unset or unreadable.
    pub fn min_insync_replicas(&self) -> usize {
        self.configs
            .get(MIN_INSYNC_REPLICAS)
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1)
    }

    /// The topic's replication factor: the most replicas any of its partitions has (0 with
    /// no partitions).
    pub fn replication_factor(&self) -> usize {
        self.partitions
            .values()
            .map(|p| p.replicas.len())
            .max()
            .unwrap_or(0)
    }

    /// `unclean.leader.election.enable`, false unless set to "true".
    pub fn unclean_leader_election(&self) -> bool {
        self.configs
            .get(UNCLEAN_LEADER_ELECTION_ENABLE)
            .is_some_and(|v| v == "true")
    }
}

/// Why `apply` refused a record. The image is unchanged after an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyError {
    UnknownBroker(BrokerId),
    UnknownTopic(TopicId),
    TopicExists(String),
    UnknownPartition(TopicId, i32),
    PartitionExists(TopicId, i32),
    TooMany(&'static str),
    /// The record would break the named invariant.
    Invariant(&'static str),
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

/// The state every node derives from the committed metadata log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataImage {
    pub brokers: BTreeMap<BrokerId, BrokerImage>,
    pub topics: BTreeMap<TopicId, TopicImage>,
    pub topic_ids: BTreeMap<String, TopicId>,
}

impl MetadataImage {
    pub fn new() -> Self {
        MetadataImage::default()
    }

    pub fn partition(&self, topic_id: TopicId, partition: i32) -> Option<&PartitionImage> {
        self.topics.get(&topic_id)?.partitions.get(&partition)
    }

    /// The partitions of the topic named `name` (0 when there is no such topic).
    pub fn partition_count(&self, name: &str) -> i32 {
        self.topic_ids
            .get(name)
            .and_then(|id| self.topics.get(id))
            .map_or(0, |t| i32::try_from(t.partitions.len()).unwrap_or(i32::MAX))
    }

    /// Registered and not fenced.
    pub fn is_live(&self, broker_id: BrokerId) -> bool {
        self.brokers.get(&broker_id).is_some_and(|b| !b.fenced)
    }

    /// Applies one committed record, or refuses it and changes nothing.
    pub fn apply(&mut self, record: &MetadataRecord) -> Result<(), ApplyError> {
        match record {
            MetadataRecord::RegisterBroker {
                broker_id,
                incarnation,
                host,
                port,
                rack,
                controller_only,
            } => {
                if *broker_id < 0 {
                    return Err(ApplyError::Invariant("broker id is negative"));
                }
                if !self.brokers.contains_key(broker_id) && self.brokers.len() >= BROKERS_MAX {
                    return Err(ApplyError::TooMany("BROKERS_MAX"));
                }
                self.brokers.insert(
                    *broker_id,
                    BrokerImage {
                        broker_id: *broker_id,
                        incarnation: *incarnation,
                        host: host.clone(),
                        port: *port,
                        rack: rack.clone(),
                        fenced: true,
                        controller_only: *controller_only,
                    },
                );
            }
            MetadataRecord::FenceBroker { broker_id }
            | MetadataRecord::UnfenceBroker { broker_id } => {
                let broker = self
                    .brokers
                    .get_mut(broker_id)
                    .ok_or(ApplyError::UnknownBroker(*broker_id))?;
                broker.fenced = matches!(record, MetadataRecord::FenceBroker { .. });
            }
            MetadataRecord::Topic {
                name,
                topic_id,
                configs,
            } => {
                if self.topic_ids.contains_key(name) || self.topics.contains_key(topic_id) {
                    return Err(ApplyError::TopicExists(name.clone()));
                }
                if self.topics.len() >= TOPICS_MAX {
                    return Err(ApplyError::TooMany("TOPICS_MAX"));
                }
                self.topic_ids.insert(name.clone(), *topic_id);
                self.topics.insert(
                    *topic_id,
                    TopicImage {
                        name: name.clone(),
                        topic_id: *topic_id,
                        configs: configs.clone(),
                        partitions: BTreeMap::new(),
                    },
                );
            }
            MetadataRecord::Partition(p) => self.apply_partition(p)?,
            MetadataRecord::PartitionChange(c) => self.apply_partition_change(c)?,
            MetadataRecord::RemoveTopic { topic_id } => {
                let topic = self
                    .topics
                    .remove(topic_id)
                    .ok_or(ApplyError::UnknownTopic(*topic_id))?;
                self.topic_ids.remove(&topic.name);
            }
            MetadataRecord::ConfigChange {
                topic_id,
                key,
                value,
            } => {
                let topic = self
                    .topics
                    .get_mut(topic_id)
                    .ok_or(ApplyError::UnknownTopic(*topic_id))?;
                match value {
                    Some(value) => {
                        if !topic.configs.contains_key(key)
                            && topic.configs.len() >= crate::records::CONFIGS_MAX
                        {
                            return Err(ApplyError::TooMany("CONFIGS_MAX"));
                        }
                        topic.configs.insert(key.clone(), value.clone());
                    }
                    None => {
                        topic.configs.remove(key);
                    }
                }
            }
        }
        Ok(())
    }

    fn apply_partition(&mut self, p: &PartitionRecord) -> Result<(), ApplyError> {
        let topic = self
            .topics
            .get(&p.topic_id)
            .ok_or(ApplyError::UnknownTopic(p.topic_id))?;
        if p.partition < 0 || p.partition >= PARTITIONS_PER_TOPIC_MAX {
            return Err(ApplyError::Invariant("partition index out of range"));
        }
        if topic.partitions.contains_key(&p.partition) {
            return Err(ApplyError::PartitionExists(p.topic_id, p.partition));
        }
        if p.leader_epoch < 0 || p.partition_epoch < 0 {
            return Err(ApplyError::Invariant("epochs are negative"));
        }
        let image = PartitionImage {
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
        };
        self.check_partition(&image)?;
        self.topics
            .get_mut(&p.topic_id)
            .ok_or(ApplyError::UnknownTopic(p.topic_id))?
            .partitions
            .insert(p.partition, image);
        Ok(())
    }

    fn apply_partition_change(&mut self, c: &PartitionChange) -> Result<(), ApplyError> {
        let current = self
            .partition(c.topic_id, c.partition)
            .ok_or(ApplyError::UnknownPartition(c.topic_id, c.partition))?;
        let mut next = current.clone();
        if let Some(replicas) = &c.replicas {
            next.replicas = replicas.clone();
        }
        if let Some(isr) = &c.isr {
            next.isr = isr.clone();
        }
        let leader_changed = c.leader.is_some_and(|l| l != current.leader);
        if let Some(leader) = c.leader {
            next.leader = leader;
        }
        // Epochs move forward by exactly one step: a new leader gets a new leader epoch, and
        // every change gets a new partition epoch, so stale AlterPartition requests are fenced.
        let leader_epoch_expected = current.leader_epoch + i32::from(leader_changed);
        if c.leader_epoch != leader_epoch_expected {
            return Err(ApplyError::Invariant(
                "leader epoch must rise by one iff leader changes",
            ));
        }
        if c.partition_epoch != current.partition_epoch + 1 {
            return Err(ApplyError::Invariant("partition epoch must rise by one"));
        }
        next.leader_epoch = c.leader_epoch;
        next.partition_epoch = c.partition_epoch;
        self.check_partition(&next)?;
        self.topics
            .get_mut(&c.topic_id)
            .ok_or(ApplyError::UnknownTopic(c.topic_id))?
            .partitions
            .insert(c.partition, next);
        Ok(())
    }

    /// leader ∈ isr ⊆ replicas (or leader = -1), all distinct, replicas registered, and an
    /// empty ISR only on an offline partition.
    fn check_partition(&self, p: &PartitionImage) -> Result<(), ApplyError> {
        if p.replicas.is_empty() || p.replicas.len() > REPLICAS_MAX {
            return Err(ApplyError::Invariant("replica count out of range"));
        }
        if !distinct(&p.replicas) || !distinct(&p.isr) {
            return Err(ApplyError::Invariant("replicas and isr must be distinct"));
        }
        if let Some(unknown) = p.replicas.iter().find(|r| !self.brokers.contains_key(r)) {
            return Err(ApplyError::UnknownBroker(*unknown));
        }
        if !p.isr.iter().all(|b| p.replicas.contains(b)) {
            return Err(ApplyError::Invariant("isr must be a subset of replicas"));
        }
        if p.leader != NO_LEADER && !p.isr.contains(&p.leader) {
            return Err(ApplyError::Invariant("leader must be in the isr"));
        }
        if p.isr.is_empty() && p.leader != NO_LEADER {
            return Err(ApplyError::Invariant("an empty isr has no leader"));
        }
        Ok(())
    }

    /// The whole image as records that rebuild it from empty (brokers, topics, partitions, in
    /// key order, so equal images give equal snapshots).
    pub fn snapshot(&self) -> Vec<MetadataRecord> {
        let mut out = Vec::new();
        for b in self.brokers.values() {
            out.push(MetadataRecord::RegisterBroker {
                broker_id: b.broker_id,
                incarnation: b.incarnation,
                host: b.host.clone(),
                port: b.port,
                rack: b.rack.clone(),
                controller_only: b.controller_only,
            });
            if !b.fenced {
                out.push(MetadataRecord::UnfenceBroker {
                    broker_id: b.broker_id,
                });
            }
        }
        for t in self.topics.values() {
            out.push(MetadataRecord::Topic {
                name: t.name.clone(),
                topic_id: t.topic_id,
                configs: t.configs.clone(),
            });
            for (index, p) in &t.partitions {
                out.push(MetadataRecord::Partition(PartitionRecord {
                    topic_id: t.topic_id,
                    partition: *index,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                }));
            }
        }
        out
    }

    /// Rebuilds an image from `snapshot()` output; refuses a snapshot that breaks an invariant.
    pub fn from_snapshot(records: &[MetadataRecord]) -> Result<MetadataImage, ApplyError> {
        let mut image = MetadataImage::new();
        for record in records {
            image.apply(record)?;
        }
        Ok(image)
    }

    /// Sweeps every partition; for tests and the simulator's checkers.
    pub fn check_invariants(&self) -> Result<(), ApplyError> {
        for t in self.topics.values() {
            for p in t.partitions.values() {
                self.check_partition(p)?;
            }
        }
        Ok(())
    }
}

fn distinct(ids: &[BrokerId]) -> bool {
    ids.iter().enumerate().all(|(i, id)| !ids[..i].contains(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(id: BrokerId) -> MetadataRecord {
        MetadataRecord::RegisterBroker {
            broker_id: id,
            incarnation: id as u128 + 100,
            host: "127.0.0.1".into(),
            port: 9000 + id as u16,
            rack: None,
            controller_only: false,
        }
    }

    fn base() -> MetadataImage {
        let mut image = MetadataImage::new();
        for id in 1..=3 {
            image.apply(&register(id)).unwrap();
            image
                .apply(&MetadataRecord::UnfenceBroker { broker_id: id })
                .unwrap();
        }
        image
            .apply(&MetadataRecord::Topic {
                name: "t".into(),
                topic_id: 7,
                configs: BTreeMap::from([(MIN_INSYNC_REPLICAS.into(), "2".into())]),
            })
            .unwrap();
        image
            .apply(&MetadataRecord::Partition(PartitionRecord {
                topic_id: 7,
                partition: 0,
                replicas: vec![1, 2, 3],
                isr: vec![1, 2, 3],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
            }))
            .unwrap();
        image
    }

    fn change(isr: Option<Vec<i32>>, leader: Option<i32>, le: i32, pe: i32) -> MetadataRecord {
        MetadataRecord::PartitionChange(PartitionChange {
            topic_id: 7,
            partition: 0,
            replicas: None,
            isr,
            leader,
            leader_epoch: le,
            partition_epoch: pe,
        })
    }

    #[test]
    fn partition_change_moves_epochs_forward_by_one() {
        let mut image = base();
        image.apply(&change(Some(vec![1, 2]), None, 0, 1)).unwrap();
        image.apply(&change(Some(vec![2]), Some(2), 1, 2)).unwrap();
        let p = image.partition(7, 0).unwrap();
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (2, 1, 2));
        assert_eq!(p.isr, vec![2]);
        // A stale partition epoch, a leader epoch bumped without a new leader, or a new leader
        // without a bump are all refused and change nothing.
        let before = image.clone();
        assert!(image.apply(&change(Some(vec![2, 3]), None, 1, 2)).is_err());
        assert!(image.apply(&change(Some(vec![2, 3]), None, 2, 3)).is_err());
        assert!(image
            .apply(&change(Some(vec![2, 3]), Some(3), 1, 3))
            .is_err());
        assert_eq!(image, before);
    }

    #[test]
    fn invariant_breaking_records_are_refused() {
        let mut image = base();
        let before = image.clone();
        // Leader outside the ISR.
        assert_eq!(
            image.apply(&change(Some(vec![2, 3]), None, 0, 1)),
            Err(ApplyError::Invariant("leader must be in the isr"))
        );
        // ISR member outside the replicas.
        assert!(image.apply(&change(Some(vec![1, 4]), None, 0, 1)).is_err());
        // Duplicate ISR member.
        assert!(image.apply(&change(Some(vec![1, 1]), None, 0, 1)).is_err());
        // Unregistered replica.
        assert_eq!(
            image.apply(&MetadataRecord::PartitionChange(PartitionChange {
                topic_id: 7,
                partition: 0,
                replicas: Some(vec![1, 2, 9]),
                isr: None,
                leader: None,
                leader_epoch: 0,
                partition_epoch: 1,
            })),
            Err(ApplyError::UnknownBroker(9))
        );
        // Duplicate topic name.
        assert!(image
            .apply(&MetadataRecord::Topic {
                name: "t".into(),
                topic_id: 8,
                configs: BTreeMap::new()
            })
            .is_err());
        assert_eq!(image, before);
        // Offline partition: leader -1 with the last ISR member kept.
        image
            .apply(&change(Some(vec![1]), Some(NO_LEADER), 1, 1))
            .unwrap();
        image.check_invariants().unwrap();
    }

    fn small_record() -> impl proptest::strategy::Strategy<Value = MetadataRecord> {
        use proptest::prelude::*;
        let ids = || proptest::collection::vec(-1i32..5, 0..4);
        prop_oneof![
            (0i32..5, 0u128..3).prop_map(|(broker_id, incarnation)| {
                MetadataRecord::RegisterBroker {
                    broker_id,
                    incarnation,
                    host: "h".into(),
                    port: 1,
                    rack: None,
                    controller_only: false,
                }
            }),
            (0i32..5).prop_map(|broker_id| MetadataRecord::FenceBroker { broker_id }),
            (0i32..5).prop_map(|broker_id| MetadataRecord::UnfenceBroker { broker_id }),
            (0u128..3).prop_map(|topic_id| MetadataRecord::Topic {
                name: format!("t{topic_id}"),
                topic_id,
                configs: BTreeMap::new(),
            }),
            (0u128..3, 0i32..2, ids(), ids(), -1i32..5, 0i32..3, 0i32..3).prop_map(
                |(topic_id, partition, replicas, isr, leader, leader_epoch, partition_epoch)| {
                    MetadataRecord::Partition(PartitionRecord {
                        topic_id,
                        partition,
                        replicas,
                        isr,
                        leader,
                        leader_epoch,
                        partition_epoch,
                    })
                }
            ),
            (
                0u128..3,
                0i32..2,
                proptest::option::of(ids()),
                proptest::option::of(-1i32..5),
                0i32..4,
                0i32..4
            )
                .prop_map(
                    |(topic_id, partition, isr, leader, leader_epoch, partition_epoch)| {
                        MetadataRecord::PartitionChange(PartitionChange {
                            topic_id,
                            partition,
                            replicas: None,
                            isr,
                            leader,
                            leader_epoch,
                            partition_epoch,
                        })
                    }
                ),
            (0u128..3).prop_map(|topic_id| MetadataRecord::RemoveTopic { topic_id }),
        ]
    }

    proptest::proptest! {
        /// Whatever records arrive, a refused one changes nothing, an accepted one keeps every
        /// invariant, and epochs never go backwards.
        #[test]
        fn apply_never_breaks_an_invariant(
            records in proptest::collection::vec(small_record(), 0..60)
        ) {
            let mut image = MetadataImage::new();
            for r in &records {
                let before = image.clone();
                match image.apply(r) {
                    Ok(()) => {
                        proptest::prop_assert!(image.check_invariants().is_ok());
                        for (id, t) in &before.topics {
                            for (i, p) in &t.partitions {
                                if let Some(q) = image.partition(*id, *i) {
                                    proptest::prop_assert!(q.leader_epoch >= p.leader_epoch);
                                    proptest::prop_assert!(q.partition_epoch >= p.partition_epoch);
                                }
                            }
                        }
                    }
                    Err(_) => proptest::prop_assert_eq!(&image, &before),
                }
            }
        }
    }

    #[test]
    fn snapshot_rebuilds_an_equal_image() {
        let mut image = base();
        image
            .apply(&MetadataRecord::FenceBroker { broker_id: 3 })
            .unwrap();
        image.apply(&change(Some(vec![1, 2]), None, 0, 1)).unwrap();
        image
            .apply(&MetadataRecord::ConfigChange {
                topic_id: 7,
                key: UNCLEAN_LEADER_ELECTION_ENABLE.into(),
                value: Some("true".into()),
            })
            .unwrap();
        let snapshot = image.snapshot();
        let bytes = crate::records::encode_batch(&snapshot);
        let decoded = crate::records::decode_batch(&bytes).unwrap();
        let rebuilt = MetadataImage::from_snapshot(&decoded).unwrap();
        assert_eq!(rebuilt, image);
        assert!(rebuilt.topics[&7].unclean_leader_election());
        assert_eq!(rebuilt.topics[&7].min_insync_replicas(), 2);
        image
            .apply(&MetadataRecord::RemoveTopic { topic_id: 7 })
            .unwrap();
        assert!(image.topic_ids.is_empty());
    }
}
