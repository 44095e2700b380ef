//! Controller decisions, run on the Raft leader: requests and time in, metadata records to
//! propose (or a Kafka error code) out. Pure: it reads the committed image it is handed, keeps
//! only broker session deadlines of its own, never performs I/O and never reads a clock.
//! The caller applies the returned records (to its uncommitted image, as Kafka's controller
//! does) before asking for the next decision, so decisions always build on each other.

use std::collections::BTreeMap;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use samsa_net::error::{code, ErrorCode};

use crate::metadata::{
    MetadataImage, PartitionImage, TopicImage, MIN_INSYNC_REPLICAS, PARTITIONS_PER_TOPIC_MAX,
    UNCLEAN_LEADER_ELECTION_ENABLE,
};
use crate::planted::Planted;
use crate::records::{
    BrokerId, MetadataRecord, PartitionChange, PartitionRecord, TopicId, CONFIGS_MAX, NO_LEADER,
    REPLICAS_MAX, STRING_BYTES_MAX,
};

/// Kafka's limit on topic name length.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Longest host name a broker may register.
pub const HOST_BYTES_MAX: usize = 255;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerConfig {
    /// A broker that has not heartbeaten for this long is fenced.
    pub session_timeout_ms: i64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            session_timeout_ms: 9_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub broker_id: BrokerId,
    /// The log directory id: a new value means the broker's disk was wiped.
    pub incarnation: u128,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    /// A controller-only node (`process_roles = controller`): registered so brokers and
    /// clients can reach the active controller's listener, never given a partition replica.
    pub controller_only: bool,
}

/// A partition leader asks to change the ISR (Kafka's AlterPartition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlterPartition {
    pub broker_id: BrokerId,
    pub topic_id: TopicId,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<BrokerId>,
    /// The incarnation of each joining member as the leader saw it fetch (KIP-903's broker
    /// epoch): a member that re-registered since (wiped disk) may not join on old progress.
    pub added: Vec<(BrokerId, u128)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElectionType {
    /// Move leadership to the first replica, if it is in the ISR and live.
    Preferred,
    /// Elect a leader for an offline partition, from outside the ISR if need be.
    Unclean,
}

pub struct Controller {
    config: ControllerConfig,
    /// Last heartbeat (or registration) of each broker, in controller milliseconds. Kept only
    /// by the active controller; a new one grants every broker a fresh session.
    last_heartbeat_ms: BTreeMap<BrokerId, i64>,
    rng: ChaCha8Rng,
    planted: Planted,
}

impl Controller {
    pub fn new(config: ControllerConfig, seed: u64, planted: Planted) -> Controller {
        assert!(config.session_timeout_ms > 0);
        Controller {
            config,
            last_heartbeat_ms: BTreeMap::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            planted,
        }
    }

    /// This node just became the active controller: every registered broker gets a session
    /// that starts now.
    pub fn on_become_active(&mut self, image: &MetadataImage, now_ms: i64) {
        self.last_heartbeat_ms = image.brokers.keys().map(|b| (*b, now_ms)).collect();
    }

    pub fn create_topic(
        &mut self,
        image: &MetadataImage,
        request: &CreateTopic,
    ) -> Result<(TopicId, Vec<MetadataRecord>), ErrorCode> {
        let name_ok = !request.name.is_empty()
            && request.name.len() <= TOPIC_NAME_BYTES_MAX
            && request.name != "."
            && request.name != ".."
            && request
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
        if !name_ok {
            return Err(code::INVALID_TOPIC_EXCEPTION);
        }
        if image.topic_ids.contains_key(&request.name) {
            return Err(code::TOPIC_ALREADY_EXISTS);
        }
        if request.partitions <= 0 || request.partitions > PARTITIONS_PER_TOPIC_MAX {
            return Err(code::INVALID_PARTITIONS);
        }
        let live: Vec<BrokerId> = image
            .brokers
            .values()
            .filter(|b| !b.fenced && !b.controller_only)
            .map(|b| b.broker_id)
            .collect();
        let rf = request.replication_factor;
        if rf <= 0 || rf as usize > live.len() || rf as usize > REPLICAS_MAX {
            return Err(code::INVALID_REPLICATION_FACTOR);
        }
        let configs_ok = request.configs.len() <= CONFIGS_MAX
            && request
                .configs
                .iter()
                .all(|(k, v)| k.len() <= STRING_BYTES_MAX && v.len() <= STRING_BYTES_MAX);
        let min_isr_ok = request
            .configs
            .get(MIN_INSYNC_REPLICAS)
            .is_none_or(|v| v.parse::<i32>().is_ok_and(|n| n >= 1));
        let unclean_ok = request
            .configs
            .get(UNCLEAN_LEADER_ELECTION_ENABLE)
            .is_none_or(|v| v == "true" || v == "false");
        if !configs_ok || !min_isr_ok || !unclean_ok {
            return Err(code::INVALID_CONFIG);
        }
        let mut topic_id = 0;
        while topic_id == 0 || image.topics.contains_key(&topic_id) {
            topic_id = u128::from(self.rng.next_u64()) << 64 | u128::from(self.rng.next_u64());
        }
        let mut records = vec![MetadataRecord::Topic {
            name: request.name.clone(),
            topic_id,
            configs: request.configs.clone(),
        }];
        // Partition p starts at live[(start + p) % n], so leaders go round robin over the live
        // brokers; the start is drawn from the seed so that topics do not all lead on one node.
        let n = live.len();
        let start = (self.rng.next_u64() % n as u64) as usize;
        for p in 0..request.partitions {
            let first = (start + p as usize) % n;
            let replicas: Vec<BrokerId> = (0..rf as usize).map(|i| live[(first + i) % n]).collect();
            records.push(MetadataRecord::Partition(PartitionRecord {
                topic_id,
                partition: p,
                leader: replicas[0],
                isr: replicas.clone(),
                replicas,
                leader_epoch: 0,
                partition_epoch: 0,
            }));
        }
        Ok((topic_id, records))
    }

    pub fn delete_topic(
        &mut self,
        image: &MetadataImage,
        name: &str,
    ) -> Result<Vec<MetadataRecord>, ErrorCode> {
        let topic_id = *image
            .topic_ids
            .get(name)
            .ok_or(code::UNKNOWN_TOPIC_OR_PARTITION)?;
        Ok(vec![MetadataRecord::RemoveTopic { topic_id }])
    }

    /// Sets (`Some`) or deletes (`None`) one topic config, validating the keys the cores read.
    pub fn alter_config(
        &mut self,
        image: &MetadataImage,
        name: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<Vec<MetadataRecord>, ErrorCode> {
        let topic_id = *image
            .topic_ids
            .get(name)
            .ok_or(code::UNKNOWN_TOPIC_OR_PARTITION)?;
        let topic = &image.topics[&topic_id];
        let fits =
            key.len() <= STRING_BYTES_MAX && value.is_none_or(|v| v.len() <= STRING_BYTES_MAX);
        let room =
            value.is_none() || topic.configs.contains_key(key) || topic.configs.len() < CONFIGS_MAX;
        let valid = match (key, value) {
            (MIN_INSYNC_REPLICAS, Some(v)) => v.parse::<i32>().is_ok_and(|n| n >= 1),
            (UNCLEAN_LEADER_ELECTION_ENABLE, Some(v)) => v == "true" || v == "false",
            _ => true,
        };
        if !fits || !room || !valid {
            return Err(code::INVALID_CONFIG);
        }
        Ok(vec![MetadataRecord::ConfigChange {
            topic_id,
            key: key.to_string(),
            value: value.map(str::to_string),
        }])
    }

    /// Replaces a topic's config overrides with `next` (AlterConfigs and IncrementalAlterConfigs
    /// at the controller, after the broker validated every value it understands): one
    /// `ConfigChange` per key removed (first, so the room check holds) or set to a new value;
    /// none when nothing changes. Checks the keys the cores read, `min.insync.replicas` against
    /// the topic's replication factor.
    pub fn alter_topic_configs(
        &mut self,
        image: &MetadataImage,
        name: &str,
        next: &BTreeMap<String, String>,
    ) -> Result<Vec<MetadataRecord>, ErrorCode> {
        let topic_id = *image
            .topic_ids
            .get(name)
            .ok_or(code::UNKNOWN_TOPIC_OR_PARTITION)?;
        let topic = &image.topics[&topic_id];
        let fits = next.len() <= CONFIGS_MAX
            && next
                .iter()
                .all(|(k, v)| k.len() <= STRING_BYTES_MAX && v.len() <= STRING_BYTES_MAX);
        let rf = topic.replication_factor().max(1);
        let min_isr_ok = next
            .get(MIN_INSYNC_REPLICAS)
            .is_none_or(|v| v.parse::<usize>().is_ok_and(|n| n >= 1 && n <= rf));
        let unclean_ok = next
            .get(UNCLEAN_LEADER_ELECTION_ENABLE)
            .is_none_or(|v| v == "true" || v == "false");
        if !fits || !min_isr_ok || !unclean_ok {
            return Err(code::INVALID_CONFIG);
        }
        let removed = topic
            .configs
            .keys()
            .filter(|k| !next.contains_key(*k))
            .map(|k| MetadataRecord::ConfigChange {
                topic_id,
                key: k.clone(),
                value: None,
            });
        let set = next
            .iter()
            .filter(|(k, v)| topic.configs.get(*k) != Some(*v))
            .map(|(k, v)| MetadataRecord::ConfigChange {
                topic_id,
                key: k.clone(),
                value: Some(v.clone()),
            });
        Ok(removed.chain(set).collect())
    }

    /// Grows a topic to `count` partitions (CreatePartitions). The new partitions get the
    /// topic's replication factor: from `assignments` when given (one replica list per new
    /// partition, each of live, distinct, non-controller-only brokers), else placed like
    /// `create_topic` places them (leaders round robin over the live brokers).
    pub fn create_partitions(
        &mut self,
        image: &MetadataImage,
        name: &str,
        count: i32,
        assignments: Option<&[Vec<BrokerId>]>,
    ) -> Result<Vec<MetadataRecord>, ErrorCode> {
        let topic_id = *image
            .topic_ids
            .get(name)
            .ok_or(code::UNKNOWN_TOPIC_OR_PARTITION)?;
        let topic = &image.topics[&topic_id];
        let current = topic
            .partitions
            .keys()
            .next_back()
            .map_or(0, |last| last + 1);
        if count <= current || count > PARTITIONS_PER_TOPIC_MAX {
            return Err(code::INVALID_PARTITIONS);
        }
        let rf = topic.replication_factor();
        if rf == 0 {
            return Err(code::INVALID_PARTITIONS);
        }
        let placeable = |b: &BrokerId| {
            image
                .brokers
                .get(b)
                .is_some_and(|b| !b.fenced && !b.controller_only)
        };
        let new = (count - current) as usize;
        let placements: Vec<Vec<BrokerId>> = match assignments {
            Some(given) => {
                let valid = given.len() == new
                    && given.iter().all(|replicas| {
                        replicas.len() == rf
                            && replicas
                                .iter()
                                .enumerate()
                                .all(|(i, b)| !replicas[..i].contains(b) && placeable(b))
                    });
                if !valid {
                    return Err(code::INVALID_REPLICA_ASSIGNMENT);
                }
                given.to_vec()
            }
            None => {
                let live: Vec<BrokerId> = image
                    .brokers
                    .keys()
                    .copied()
                    .filter(|b| placeable(b))
                    .collect();
                if rf > live.len() {
                    return Err(code::INVALID_REPLICATION_FACTOR);
                }
                let n = live.len();
                let start = (self.rng.next_u64() % n as u64) as usize;
                (0..new)
                    .map(|p| (0..rf).map(|i| live[(start + p + i) % n]).collect())
                    .collect()
            }
        };
        let records = placements
            .into_iter()
            .zip(current..count)
            .map(|(replicas, partition)| {
                MetadataRecord::Partition(PartitionRecord {
                    topic_id,
                    partition,
                    leader: replicas[0],
                    isr: replicas.clone(),
                    replicas,
                    leader_epoch: 0,
                    partition_epoch: 0,
                })
            })
            .collect();
        Ok(records)
    }

    /// A broker (re)registers. It is fenced until its first heartbeat; it leaves every ISR,
    /// and with a new incarnation (wiped disk) it does not even stay as the last member.
    pub fn register_broker(
        &mut self,
        image: &MetadataImage,
        now_ms: i64,
        registration: &BrokerRegistration,
    ) -> Result<Vec<MetadataRecord>, ErrorCode> {
        let r = registration;
        if r.broker_id < 0 || r.host.len() > HOST_BYTES_MAX {
            return Err(code::INVALID_REQUEST);
        }
        if r.rack
            .as_ref()
            .is_some_and(|rack| rack.len() > STRING_BYTES_MAX)
        {
            return Err(code::INVALID_REQUEST);
        }
        let previous = image.brokers.get(&r.broker_id);
        let new_incarnation = previous.is_some_and(|b| b.incarnation != r.incarnation);
        self.last_heartbeat_ms.insert(r.broker_id, now_ms);
        let mut records = vec![MetadataRecord::RegisterBroker {
            broker_id: r.broker_id,
            incarnation: r.incarnation,
            host: r.host.clone(),
            port: r.port,
            rack: r.rack.clone(),
            controller_only: r.controller_only,
        }];
        if previous.is_some() {
            let removal = Removal {
                broker: r.broker_id,
                keep_last: !new_incarnation,
            };
            records.extend(self.reassess_all(image, Some(removal)));
        }
        Ok(records)
    }

    /// A broker's heartbeat: renews its session, and unfences it (electing it where it is the
    /// only eligible leader) if it was fenced.
    pub fn heartbeat(
        &mut self,
        image: &MetadataImage,
        now_ms: i64,
        broker_id: BrokerId,
        incarnation: u128,
    ) -> Result<Vec<MetadataRecord>, ErrorCode> {
        let broker = image
            .brokers
            .get(&broker_id)
            .ok_or(code::BROKER_ID_NOT_REGISTERED)?;
        if broker.incarnation != incarnation {
            return Err(code::STALE_BROKER_EPOCH);
        }
        self.last_heartbeat_ms.insert(broker_id, now_ms);
        if !broker.fenced {
            return Ok(Vec::new());
        }
        let mut records = vec![MetadataRecord::UnfenceBroker { broker_id }];
        let live = |b: BrokerId| b == broker_id || image.is_live(b);
        for (topic_id, topic) in &image.topics {
            for (index, p) in &topic.partitions {
                if let Some(c) = self.reassess(topic, *topic_id, *index, p, &live, None) {
                    records.push(MetadataRecord::PartitionChange(c));
                }
            }
        }
        Ok(records)
    }

    /// Fences brokers whose session expired (removing them from ISRs and re-electing leaders)
    /// and elects leaders for offline partitions that have become electable.
    pub fn tick(&mut self, image: &MetadataImage, now_ms: i64) -> Vec<MetadataRecord> {
        let expired: Vec<BrokerId> = image
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .filter(|b| {
                let last = self.last_heartbeat_ms.get(&b.broker_id).copied();
                last.is_none_or(|last| now_ms - last > self.config.session_timeout_ms)
            })
            .map(|b| b.broker_id)
            .collect();
        match expired.first() {
            // One broker per tick keeps each decision a function of one image; the next tick
            // (after the caller applied these records) fences the next one.
            Some(broker) => self.fence(image, *broker),
            None => self.reassess_all(image, None),
        }
    }

    /// Fences `broker` now (session expiry, or a controlled shutdown).
    pub fn fence(&mut self, image: &MetadataImage, broker: BrokerId) -> Vec<MetadataRecord> {
        if !image.is_live(broker) {
            return Vec::new();
        }
        let mut records = vec![MetadataRecord::FenceBroker { broker_id: broker }];
        records.extend(self.reassess_all(
            image,
            Some(Removal {
                broker,
                keep_last: true,
            }),
        ));
        records
    }

    pub fn alter_partition(
        &mut self,
        image: &MetadataImage,
        request: &AlterPartition,
    ) -> Result<Vec<MetadataRecord>, ErrorCode> {
        let p = image
            .partition(request.topic_id, request.partition)
            .ok_or(code::UNKNOWN_TOPIC_OR_PARTITION)?;
        if request.leader_epoch < p.leader_epoch {
            return Err(code::FENCED_LEADER_EPOCH);
        }
        if request.leader_epoch > p.leader_epoch || p.leader != request.broker_id {
            return Err(code::NOT_LEADER_OR_FOLLOWER);
        }
        if request.partition_epoch != p.partition_epoch {
            return Err(code::INVALID_UPDATE_VERSION);
        }
        let isr = &request.new_isr;
        let distinct = isr.iter().enumerate().all(|(i, b)| !isr[..i].contains(b));
        if !distinct || !isr.contains(&p.leader) || !isr.iter().all(|b| p.replicas.contains(b)) {
            return Err(code::INVALID_REQUEST);
        }
        // A broker may join the ISR only while it is live: a fenced one may be a wiped disk or
        // a node the controller has already written off.
        let eligible = |b: &BrokerId| {
            let seen = request
                .added
                .iter()
                .find(|(id, _)| id == b)
                .map(|(_, inc)| *inc);
            let broker = image.brokers.get(b);
            broker.is_some_and(|broker| !broker.fenced && Some(broker.incarnation) == seen)
        };
        if isr.iter().any(|b| !p.isr.contains(b) && !eligible(b)) {
            return Err(code::INELIGIBLE_REPLICA);
        }
        if *isr == p.isr {
            return Ok(Vec::new());
        }
        Ok(vec![MetadataRecord::PartitionChange(PartitionChange {
            topic_id: request.topic_id,
            partition: request.partition,
            replicas: None,
            isr: Some(isr.clone()),
            leader: None,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch + 1,
        })])
    }

    pub fn elect_leaders(
        &mut self,
        image: &MetadataImage,
        topic_id: TopicId,
        partition: i32,
        election: ElectionType,
    ) -> Result<Vec<MetadataRecord>, ErrorCode> {
        let p = image
            .partition(topic_id, partition)
            .ok_or(code::UNKNOWN_TOPIC_OR_PARTITION)?;
        let (leader, isr) = match election {
            ElectionType::Preferred => {
                let preferred = p.replicas[0];
                if p.leader == preferred {
                    return Err(code::ELECTION_NOT_NEEDED);
                }
                if !p.isr.contains(&preferred) || !image.is_live(preferred) {
                    return Err(code::PREFERRED_LEADER_NOT_AVAILABLE);
                }
                (preferred, p.isr.clone())
            }
            ElectionType::Unclean => {
                if p.leader != NO_LEADER {
                    return Err(code::ELECTION_NOT_NEEDED);
                }
                elect(p, &|b| image.is_live(b), true).ok_or(code::ELIGIBLE_LEADERS_NOT_AVAILABLE)?
            }
        };
        Ok(vec![change(topic_id, partition, p, leader, isr)])
    }

    /// Re-examines every partition (optionally with `removal` leaving ISRs) and returns the
    /// changes that restore "leader is the first live ISR member if any".
    fn reassess_all(&self, image: &MetadataImage, removal: Option<Removal>) -> Vec<MetadataRecord> {
        let gone = removal.map(|r| r.broker);
        let live = |b: BrokerId| Some(b) != gone && image.is_live(b);
        let mut records = Vec::new();
        for (topic_id, topic) in &image.topics {
            for (index, p) in &topic.partitions {
                if let Some(c) = self.reassess(topic, *topic_id, *index, p, &live, removal) {
                    records.push(MetadataRecord::PartitionChange(c));
                }
            }
        }
        records
    }

    fn reassess(
        &self,
        topic: &TopicImage,
        topic_id: TopicId,
        index: i32,
        p: &PartitionImage,
        live: &dyn Fn(BrokerId) -> bool,
        removal: Option<Removal>,
    ) -> Option<PartitionChange> {
        let mut isr = p.isr.clone();
        if let Some(r) = removal {
            isr.retain(|b| *b != r.broker);
            // Kafka keeps the last ISR member (its log is the only complete one); a wiped
            // disk holds nothing, so a new incarnation leaves even then.
            if isr.is_empty() && r.keep_last && p.isr.contains(&r.broker) {
                isr.push(r.broker);
            }
        }
        let leader_ok = p.leader != NO_LEADER && isr.contains(&p.leader) && live(p.leader);
        let (leader, isr) = if leader_ok {
            (p.leader, isr)
        } else {
            let unclean =
                topic.unclean_leader_election() || self.planted.unclean_election_when_disabled();
            let trial = PartitionImage {
                isr: isr.clone(),
                ..p.clone()
            };
            elect(&trial, live, unclean).unwrap_or((NO_LEADER, isr))
        };
        if leader == p.leader && isr == p.isr {
            return None;
        }
        match change(topic_id, index, p, leader, isr) {
            MetadataRecord::PartitionChange(c) => Some(c),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Removal {
    broker: BrokerId,
    keep_last: bool,
}

/// Clean election: the first replica, in assignment order, that is in the ISR and live.
/// Unclean (only when allowed): the first live replica, which becomes the whole ISR.
fn elect(
    p: &PartitionImage,
    live: &dyn Fn(BrokerId) -> bool,
    unclean: bool,
) -> Option<(BrokerId, Vec<BrokerId>)> {
    if let Some(b) = p.replicas.iter().find(|b| p.isr.contains(b) && live(**b)) {
        return Some((*b, p.isr.clone()));
    }
    if unclean {
        if let Some(b) = p.replicas.iter().find(|b| live(**b)) {
            return Some((*b, vec![*b]));
        }
    }
    None
}

/// The record that moves `p` to `leader` and `isr`: a new leader gets leader_epoch + 1, and
/// every change gets partition_epoch + 1.
fn change(
    topic_id: TopicId,
    partition: i32,
    p: &PartitionImage,
    leader: BrokerId,
    isr: Vec<BrokerId>,
) -> MetadataRecord {
    let leader_changed = leader != p.leader;
    MetadataRecord::PartitionChange(PartitionChange {
        topic_id,
        partition,
        replicas: None,
        isr: (isr != p.isr).then_some(isr),
        leader: leader_changed.then_some(leader),
        leader_epoch: p.leader_epoch + i32::from(leader_changed),
        partition_epoch: p.partition_epoch + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_000;

    struct Fixture {
        image: MetadataImage,
        controller: Controller,
    }

    impl Fixture {
        fn new(brokers: i32, planted: Planted) -> Fixture {
            let mut f = Fixture {
                image: MetadataImage::new(),
                controller: Controller::new(ControllerConfig::default(), 7, planted),
            };
            for b in 1..=brokers {
                f.register(b, b as u128);
                f.heartbeat(b, T0);
            }
            f
        }
        fn apply(&mut self, records: Vec<MetadataRecord>) {
            for r in &records {
                self.image.apply(r).unwrap();
            }
        }
        fn register(&mut self, b: BrokerId, incarnation: u128) {
            let reg = BrokerRegistration {
                broker_id: b,
                incarnation,
                host: "h".into(),
                port: 1,
                rack: None,
                controller_only: false,
            };
            let rs = self
                .controller
                .register_broker(&self.image, T0, &reg)
                .unwrap();
            self.apply(rs);
        }
        fn heartbeat(&mut self, b: BrokerId, now: i64) {
            let inc = self.image.brokers[&b].incarnation;
            let rs = self.controller.heartbeat(&self.image, now, b, inc).unwrap();
            self.apply(rs);
        }
        fn create(&mut self, partitions: i32, rf: i16, unclean: bool) -> TopicId {
            let req = CreateTopic {
                name: "t".into(),
                partitions,
                replication_factor: rf,
                configs: BTreeMap::from([
                    (MIN_INSYNC_REPLICAS.to_string(), "2".to_string()),
                    (
                        UNCLEAN_LEADER_ELECTION_ENABLE.to_string(),
                        unclean.to_string(),
                    ),
                ]),
            };
            let (id, rs) = self.controller.create_topic(&self.image, &req).unwrap();
            self.apply(rs);
            id
        }
        fn fence(&mut self, b: BrokerId) {
            let rs = self.controller.fence(&self.image, b);
            self.apply(rs);
        }
        fn p(&self, t: TopicId, i: i32) -> PartitionImage {
            self.image.partition(t, i).unwrap().clone()
        }
    }

    #[test]
    fn create_topic_spreads_leaders_and_checks_replication_factor() {
        let mut f = Fixture::new(3, Planted::none());
        let t = f.create(6, 2, false);
        let mut leaders = BTreeMap::new();
        for i in 0..6 {
            let p = f.p(t, i);
            assert_eq!(p.isr, p.replicas);
            assert_eq!(p.leader, p.replicas[0]);
            *leaders.entry(p.leader).or_insert(0) += 1;
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        let req = CreateTopic {
            name: "u".into(),
            partitions: 1,
            replication_factor: 4,
            configs: BTreeMap::new(),
        };
        assert_eq!(
            f.controller.create_topic(&f.image, &req).map(|_| ()),
            Err(code::INVALID_REPLICATION_FACTOR)
        );
        f.fence(3);
        let req = CreateTopic {
            replication_factor: 3,
            ..req
        };
        assert_eq!(
            f.controller.create_topic(&f.image, &req).map(|_| ()),
            Err(code::INVALID_REPLICATION_FACTOR)
        );
        let req = CreateTopic {
            name: "t".into(),
            replication_factor: 1,
            ..req
        };
        assert_eq!(
            f.controller.create_topic(&f.image, &req).map(|_| ()),
            Err(code::TOPIC_ALREADY_EXISTS)
        );
    }

    #[test]
    fn a_controller_only_node_is_registered_but_never_placed() {
        let mut f = Fixture::new(2, Planted::none());
        let reg = BrokerRegistration {
            broker_id: 3,
            incarnation: 3,
            host: "h".into(),
            port: 1,
            rack: None,
            controller_only: true,
        };
        let rs = f.controller.register_broker(&f.image, T0, &reg).unwrap();
        f.apply(rs);
        f.heartbeat(3, T0);
        assert!(f.image.is_live(3) && f.image.brokers[&3].controller_only);
        let req = CreateTopic {
            name: "u".into(),
            partitions: 1,
            replication_factor: 3,
            configs: BTreeMap::new(),
        };
        assert_eq!(
            f.controller.create_topic(&f.image, &req).map(|_| ()),
            Err(code::INVALID_REPLICATION_FACTOR)
        );
        let t = f.create(8, 2, false);
        for i in 0..8 {
            assert!(!f.p(t, i).replicas.contains(&3), "partition {i} on node 3");
        }
        // It survives a snapshot round trip.
        let image = MetadataImage::from_snapshot(&f.image.snapshot()).unwrap();
        assert!(image.brokers[&3].controller_only && !image.brokers[&1].controller_only);
    }

    #[test]
    fn fencing_shrinks_isr_and_reelects_in_assignment_order() {
        let mut f = Fixture::new(3, Planted::none());
        let t = f.create(1, 3, false);
        let p0 = f.p(t, 0);
        let (a, b, c) = (p0.replicas[0], p0.replicas[1], p0.replicas[2]);
        f.fence(a);
        let p = f.p(t, 0);
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (b, 1, 1));
        assert_eq!(p.isr, vec![b, c]);
        f.fence(c);
        let p = f.p(t, 0);
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (b, 1, 2));
        assert_eq!(p.isr, vec![b]);
        // The last ISR member stays; the partition goes offline, and unclean election is off.
        f.fence(b);
        let p = f.p(t, 0);
        assert_eq!(
            (p.leader, p.isr.clone(), p.leader_epoch),
            (NO_LEADER, vec![b], 2)
        );
        f.heartbeat(a, T0 + 1);
        assert_eq!(
            f.p(t, 0).leader,
            NO_LEADER,
            "a is not in the ISR: no unclean election"
        );
        let rs = f.controller.tick(&f.image, T0 + 2);
        assert!(rs.is_empty(), "{rs:?}");
        // b returns: it is the last ISR member, so it leads again (a new epoch).
        f.heartbeat(b, T0 + 3);
        let p = f.p(t, 0);
        assert_eq!((p.leader, p.leader_epoch), (b, 3));
        f.image.check_invariants().unwrap();
    }

    #[test]
    fn unclean_election_only_when_the_topic_allows_it() {
        for (unclean, planted) in [
            (false, Planted::none()),
            (true, Planted::none()),
            (
                false,
                Planted::none().with(crate::planted::UNCLEAN_ELECTION_WHEN_DISABLED),
            ),
        ] {
            let mut f = Fixture::new(2, planted);
            let t = f.create(1, 2, unclean);
            let p0 = f.p(t, 0);
            let (a, b) = (p0.replicas[0], p0.replicas[1]);
            f.fence(b);
            f.fence(a);
            f.heartbeat(b, T0 + 1);
            let p = f.p(t, 0);
            let expect_unclean = unclean || planted.unclean_election_when_disabled();
            if expect_unclean {
                assert_eq!((p.leader, p.isr), (b, vec![b]));
            } else {
                assert_eq!((p.leader, p.isr), (NO_LEADER, vec![a]));
                // An operator may still ask for it explicitly.
                let rs = f
                    .controller
                    .elect_leaders(&f.image, t, 0, ElectionType::Unclean)
                    .unwrap();
                f.apply(rs);
                assert_eq!(f.p(t, 0).leader, b);
            }
        }
    }

    #[test]
    fn session_timeout_fences() {
        let mut f = Fixture::new(3, Planted::none());
        let t = f.create(1, 3, false);
        let leader = f.p(t, 0).leader;
        for b in 1..=3 {
            if b != leader {
                f.heartbeat(b, T0 + 8_000);
            }
        }
        assert!(f.controller.tick(&f.image, T0 + 9_000).is_empty());
        let rs = f.controller.tick(&f.image, T0 + 9_001);
        assert_eq!(rs[0], MetadataRecord::FenceBroker { broker_id: leader });
        f.apply(rs);
        assert!(!f.p(t, 0).isr.contains(&leader));
        assert_ne!(f.p(t, 0).leader, leader);
    }

    #[test]
    fn alter_partition_fences_stale_requests() {
        let mut f = Fixture::new(3, Planted::none());
        let t = f.create(1, 3, false);
        let p = f.p(t, 0);
        let (a, b, c) = (p.replicas[0], p.replicas[1], p.replicas[2]);
        let req = AlterPartition {
            broker_id: a,
            topic_id: t,
            partition: 0,
            leader_epoch: 0,
            partition_epoch: 0,
            new_isr: vec![a, b],
            added: vec![],
        };
        let rs = f.controller.alter_partition(&f.image, &req).unwrap();
        f.apply(rs);
        assert_eq!(f.p(t, 0).isr, vec![a, b]);
        assert_eq!(f.p(t, 0).partition_epoch, 1);
        // Same request again: its partition epoch is now stale.
        assert_eq!(
            f.controller.alter_partition(&f.image, &req),
            Err(code::INVALID_UPDATE_VERSION)
        );
        let stale = AlterPartition {
            leader_epoch: -1,
            partition_epoch: 1,
            ..req.clone()
        };
        assert_eq!(
            f.controller.alter_partition(&f.image, &stale),
            Err(code::FENCED_LEADER_EPOCH)
        );
        let wrong = AlterPartition {
            broker_id: b,
            partition_epoch: 1,
            ..req.clone()
        };
        assert_eq!(
            f.controller.alter_partition(&f.image, &wrong),
            Err(code::NOT_LEADER_OR_FOLLOWER)
        );
        f.fence(c);
        let add_fenced = AlterPartition {
            partition_epoch: f.p(t, 0).partition_epoch,
            new_isr: vec![a, b, c],
            added: vec![(c, c as u128)],
            ..req
        };
        assert_eq!(
            f.controller.alter_partition(&f.image, &add_fenced),
            Err(code::INELIGIBLE_REPLICA)
        );
    }

    #[test]
    fn preferred_election_and_new_incarnation() {
        let mut f = Fixture::new(3, Planted::none());
        let t = f.create(1, 3, false);
        let p = f.p(t, 0);
        let (a, b) = (p.replicas[0], p.replicas[1]);
        assert_eq!(
            f.controller
                .elect_leaders(&f.image, t, 0, ElectionType::Preferred),
            Err(code::ELECTION_NOT_NEEDED)
        );
        f.fence(a);
        assert_eq!(f.p(t, 0).leader, b);
        assert_eq!(
            f.controller
                .elect_leaders(&f.image, t, 0, ElectionType::Preferred),
            Err(code::PREFERRED_LEADER_NOT_AVAILABLE)
        );
        f.heartbeat(a, T0 + 1);
        // a is live again but not in the ISR until the leader adds it back.
        assert!(!f.p(t, 0).isr.contains(&a));
        let p = f.p(t, 0);
        let mut isr = p.isr.clone();
        isr.push(a);
        let req = AlterPartition {
            broker_id: b,
            topic_id: t,
            partition: 0,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            new_isr: isr,
            added: vec![(a, 12345)],
        };
        // The leader saw an older incarnation of a fetch: refused.
        assert_eq!(
            f.controller.alter_partition(&f.image, &req),
            Err(code::INELIGIBLE_REPLICA)
        );
        let req = AlterPartition {
            added: vec![(a, a as u128)],
            ..req
        };
        let rs = f.controller.alter_partition(&f.image, &req).unwrap();
        f.apply(rs);
        let rs = f
            .controller
            .elect_leaders(&f.image, t, 0, ElectionType::Preferred)
            .unwrap();
        f.apply(rs);
        assert_eq!(f.p(t, 0).leader, a);
        // a comes back with a wiped disk: it leaves the ISR and leadership at once.
        f.register(a, 999);
        let p = f.p(t, 0);
        assert!(!p.isr.contains(&a));
        assert_eq!(p.leader, b);
        f.image.check_invariants().unwrap();
    }

    #[test]
    fn config_changes_and_deletion() {
        let mut f = Fixture::new(2, Planted::none());
        let t = f.create(1, 2, false);
        let c = &mut f.controller;
        assert_eq!(
            c.alter_config(&f.image, "t", MIN_INSYNC_REPLICAS, Some("0")),
            Err(code::INVALID_CONFIG)
        );
        assert_eq!(
            c.alter_config(&f.image, "x", "k", None),
            Err(code::UNKNOWN_TOPIC_OR_PARTITION)
        );
        let rs = c
            .alter_config(&f.image, "t", UNCLEAN_LEADER_ELECTION_ENABLE, Some("true"))
            .unwrap();
        f.apply(rs);
        assert!(f.image.topics[&t].unclean_leader_election());
        let rs = f.controller.delete_topic(&f.image, "t").unwrap();
        f.apply(rs);
        assert!(f.image.topics.is_empty());
        assert_eq!(
            f.controller.delete_topic(&f.image, "t"),
            Err(code::UNKNOWN_TOPIC_OR_PARTITION)
        );
    }

    #[test]
    fn topic_configs_are_replaced_key_by_key_and_checked_against_the_replication_factor() {
        let mut f = Fixture::new(3, Planted::none());
        let t = f.create(2, 2, false);
        let before = f.image.topics[&t].configs.clone();
        let next = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        // min.insync.replicas may not exceed the replication factor (2), nor be 0.
        for bad in ["3", "0", "x"] {
            assert_eq!(
                f.controller.alter_topic_configs(
                    &f.image,
                    "t",
                    &next(&[(MIN_INSYNC_REPLICAS, bad)])
                ),
                Err(code::INVALID_CONFIG),
                "{bad}"
            );
        }
        assert_eq!(
            f.controller.alter_topic_configs(
                &f.image,
                "t",
                &next(&[(UNCLEAN_LEADER_ELECTION_ENABLE, "yes")])
            ),
            Err(code::INVALID_CONFIG)
        );
        assert_eq!(
            f.controller
                .alter_topic_configs(&f.image, "nope", &next(&[])),
            Err(code::UNKNOWN_TOPIC_OR_PARTITION)
        );
        assert_eq!(
            f.image.topics[&t].configs, before,
            "refusals change nothing"
        );
        // The unchanged key produces no record; the dropped one is removed first.
        let wanted = next(&[(MIN_INSYNC_REPLICAS, "2"), ("retention.ms", "1000")]);
        let rs = f
            .controller
            .alter_topic_configs(&f.image, "t", &wanted)
            .unwrap();
        assert_eq!(
            rs,
            vec![
                MetadataRecord::ConfigChange {
                    topic_id: t,
                    key: UNCLEAN_LEADER_ELECTION_ENABLE.into(),
                    value: None,
                },
                MetadataRecord::ConfigChange {
                    topic_id: t,
                    key: "retention.ms".into(),
                    value: Some("1000".into()),
                },
            ]
        );
        f.apply(rs);
        assert_eq!(f.image.topics[&t].configs, wanted);
        assert_eq!(
            f.controller.alter_topic_configs(&f.image, "t", &wanted),
            Ok(Vec::new()),
            "nothing to change"
        );
    }

    #[test]
    fn create_partitions_places_like_create_topic_or_follows_valid_assignments() {
        let mut f = Fixture::new(4, Planted::none());
        let t = f.create(1, 3, false);
        for bad in [0, 1, PARTITIONS_PER_TOPIC_MAX + 1] {
            assert_eq!(
                f.controller.create_partitions(&f.image, "t", bad, None),
                Err(code::INVALID_PARTITIONS),
                "{bad}"
            );
        }
        assert_eq!(
            f.controller.create_partitions(&f.image, "x", 2, None),
            Err(code::UNKNOWN_TOPIC_OR_PARTITION)
        );
        // Placed: partitions 1..=4 with RF 3, leaders spread over all four brokers.
        let rs = f
            .controller
            .create_partitions(&f.image, "t", 5, None)
            .unwrap();
        assert_eq!(rs.len(), 4);
        f.apply(rs);
        let mut leaders = BTreeMap::new();
        for i in 1..5 {
            let p = f.p(t, i);
            assert_eq!(p.replicas.len(), 3);
            assert_eq!(
                (p.isr.clone(), p.leader),
                (p.replicas.clone(), p.replicas[0])
            );
            assert_eq!((p.leader_epoch, p.partition_epoch), (0, 0));
            *leaders.entry(p.leader).or_insert(0) += 1;
        }
        assert_eq!(leaders.len(), 4, "{leaders:?}");
        // Manual assignments: right count, RF, distinct, live, placeable brokers only.
        f.fence(4);
        for bad in [
            vec![vec![1, 2, 3], vec![1, 2, 3]],
            vec![vec![1, 2]],
            vec![vec![1, 1, 2]],
            vec![vec![1, 2, 9]],
            vec![vec![1, 2, 4]],
        ] {
            assert_eq!(
                f.controller
                    .create_partitions(&f.image, "t", 6, Some(bad.as_slice())),
                Err(code::INVALID_REPLICA_ASSIGNMENT),
                "{bad:?}"
            );
        }
        let rs = f
            .controller
            .create_partitions(&f.image, "t", 6, Some(&[vec![3, 1, 2]]))
            .unwrap();
        f.apply(rs);
        assert_eq!((f.p(t, 5).replicas, f.p(t, 5).leader), (vec![3, 1, 2], 3));
        // Placement needs RF live brokers.
        f.fence(3);
        assert_eq!(
            f.controller.create_partitions(&f.image, "t", 7, None),
            Err(code::INVALID_REPLICATION_FACTOR)
        );
        f.image.check_invariants().unwrap();
    }

    #[test]
    fn heartbeats_from_unknown_or_old_incarnations_are_refused() {
        let mut f = Fixture::new(2, Planted::none());
        assert_eq!(
            f.controller.heartbeat(&f.image, T0, 9, 9),
            Err(code::BROKER_ID_NOT_REGISTERED)
        );
        assert_eq!(
            f.controller.heartbeat(&f.image, T0, 1, 77),
            Err(code::STALE_BROKER_EPOCH)
        );
        // A live broker's heartbeat only renews its session.
        assert_eq!(f.controller.heartbeat(&f.image, T0, 1, 1), Ok(Vec::new()));
    }

    #[test]
    fn wiped_last_isr_member_leaves_the_isr_empty() {
        let mut f = Fixture::new(2, Planted::none());
        let t = f.create(1, 1, false);
        let a = f.p(t, 0).leader;
        f.register(a, 12345);
        let p = f.p(t, 0);
        assert_eq!((p.leader, p.isr.len()), (NO_LEADER, 0));
        f.heartbeat(a, T0 + 1);
        assert_eq!(
            f.p(t, 0).leader,
            NO_LEADER,
            "a wiped replica never leads cleanly"
        );
    }
}
