//! Cluster mode (issue 4, phase A): a node started with `voters` runs a `QuorumNode` whose state
//! machine applies `samsa_cluster` metadata records to a `MetadataImage`; the node that leads
//! the quorum is the active controller and runs the `Controller`. Every broker registers and
//! heartbeats to it: in-process when it is this node, otherwise over Kafka's
//! BrokerRegistration (62) / BrokerHeartbeat (63) requests sent to the active controller's
//! client listener, whose address every node reads from the image (the controller registers
//! itself first, in-process). BrokerHeartbeat's `broker_epoch` carries the low 64 bits of the
//! broker's incarnation (its quorum directory id).
//! Never reads a wall clock (time comes from the caller's `Clock`), never draws unseeded
//! randomness, never panics on bytes from peers (bad frames and records are logged and
//! dropped), never touches files except through the quorum's `Disk`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{
    alter_partition_request, broker_registration_request, AlterPartitionRequest,
    AlterPartitionResponse, ApiKey, BrokerHeartbeatRequest, BrokerHeartbeatResponse,
    BrokerRegistrationRequest, BrokerRegistrationResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use samsa_cluster::controller::{
    AlterPartition, BrokerRegistration, Controller, ControllerConfig, CreateTopic, ElectionType,
};
use samsa_cluster::metadata::{BrokerImage, MetadataImage, TopicImage};
use samsa_cluster::planted::Planted;
use samsa_cluster::records::{decode_batch, encode_batch, MetadataRecord, TopicId};
use samsa_net::error::{code, ErrorCode};
use samsa_net::hooks::Observation;
use samsa_net::watch;
use samsa_net::{Clock, Hooks, Net};
use samsa_raft::{DirectoryId, Entry, NodeId, Role, Voter};
use samsa_storage::Disk;

use crate::config::ClusterConfig;
use crate::quorum::{ProposeFailure, QuorumConfig, QuorumHandle, QuorumNode, StateMachine};

/// `registration_index` before this process registered.
const NOT_REGISTERED: u64 = u64::MAX;
/// Directory (under the node's data dir) of the metadata quorum's files.
pub const QUORUM_DIR: &str = "__cluster_metadata";
/// Raft timing of the metadata quorum.
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 1_000;
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 2_000;
pub const RAFT_HEARTBEAT_MS: u64 = 100;
pub const RAFT_BATCH_ENTRIES_MAX: usize = 64;
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 1_000;
/// Largest controller RPC response read (registration answers are tiny).
pub const RPC_RESPONSE_BYTES_MAX: usize = 64 * 1024;
/// How long one controller RPC (connect, send, answer) may take.
pub const RPC_TIMEOUT_MS: u64 = 2_000;
/// A topic created with replication factor -1 gets min(this, live brokers) replicas.
pub const DEFAULT_REPLICATION_FACTOR_MAX: usize = 3;
/// Client id of the admin requests a node forwards to the active controller.
pub const FORWARDED_CLIENT_ID: &str = "samsa-forwarded";
/// Largest answer to a forwarded admin request read.
pub const FORWARD_RESPONSE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// How long a forwarded admin request (its commit included) may take.
pub const FORWARD_TIMEOUT_MS: u64 = 10_000;
/// BrokerRegistration / BrokerHeartbeat versions this node sends.
const REGISTRATION_VERSION: i16 = 0;
const HEARTBEAT_VERSION: i16 = 0;
/// The listener name a controller-only node registers its client listener under (it hosts no
/// replicas; brokers and clients reach the active controller there).
const CONTROLLER_ONLY_LISTENER: &str = "CONTROLLER";
/// AlterPartition version this node sends (v3: topic ids, ISR members with broker epochs).
const ALTER_PARTITION_VERSION: i16 = 3;

/// Applies committed metadata batches to the shared image. A batch that does not decode or a
/// record the image refuses is logged and skipped (every node skips it alike: the image stays
/// a function of the committed log).
struct ImageMachine {
    image: Arc<Mutex<MetadataImage>>,
    /// Bumped after every apply or restore: the broker's image watcher waits on it.
    applied: watch::Sender<u64>,
}

fn lock(image: &Mutex<MetadataImage>) -> std::sync::MutexGuard<'_, MetadataImage> {
    image.lock().unwrap_or_else(|p| p.into_inner())
}

impl StateMachine for ImageMachine {
    fn apply(&mut self, entries: &[Entry]) {
        let mut image = lock(&self.image);
        for entry in entries.iter().filter(|e| !e.payload.is_empty()) {
            let records = match decode_batch(&entry.payload) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(index = entry.index, "undecodable metadata batch: {e:?}");
                    continue;
                }
            };
            for record in &records {
                if let Err(e) = image.apply(record) {
                    tracing::warn!(index = entry.index, "metadata record refused: {e}");
                }
            }
        }
        drop(image);
        self.applied.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn snapshot(&self) -> Bytes {
        Bytes::from(encode_batch(&lock(&self.image).snapshot()))
    }

    fn restore(&mut self, data: Bytes) {
        let restored = if data.is_empty() {
            Ok(MetadataImage::new())
        } else {
            decode_batch(&data)
                .map_err(|e| format!("{e:?}"))
                .and_then(|r| MetadataImage::from_snapshot(&r).map_err(|e| e.to_string()))
        };
        match restored {
            Ok(image) => *lock(&self.image) = image,
            Err(e) => tracing::error!("metadata snapshot refused: {e}"),
        }
        self.applied.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// A Kafka node id as a Raft node id (`NodeConfig::validate` keeps ids >= 0).
fn nid(id: i32) -> NodeId {
    NodeId(u32::try_from(id).unwrap_or(0))
}

struct ControllerSlot {
    controller: Controller,
    /// The quorum term in which `controller` became active (its sessions start then).
    active_term: Option<u64>,
}

/// One node's part of the cluster: quorum handle, metadata image, controller.
pub struct ClusterNode {
    pub cfg: ClusterConfig,
    pub node_id: i32,
    pub quorum: QuorumHandle,
    /// This node's directory id: its broker incarnation (a wiped disk gets a new one).
    pub incarnation: u128,
    /// The cluster id every node reports: derived from the voter set (all nodes share it).
    pub cluster_id: String,
    image: Arc<Mutex<MetadataImage>>,
    slot: tokio::sync::Mutex<ControllerSlot>,
    heartbeat_interval_ms: u64,
    /// Counts applied batches (see `ImageMachine::applied`).
    applied: watch::Receiver<u64>,
    /// Connections to peers' client listeners (follower fetches, controller calls).
    connector: Arc<dyn crate::replication::Connect>,
    /// Correlation ids of AlterPartition calls.
    alter_correlation: std::sync::atomic::AtomicI32,
    /// The metadata log index of this process's BrokerRegistration (`NOT_REGISTERED` before).
    /// Until the local image has applied it the node neither leads nor follows: the image it
    /// restarted with may still name it leader of an epoch in which it has since lost unsynced
    /// batches that a follower already holds; registering again takes it out of the ISRs and
    /// moves leadership to a new epoch first, and the local image must show that before the node
    /// acts on it (simulator: cluster_replication 225595114327928, 225595114301800).
    registration_index: std::sync::atomic::AtomicU64,
    /// The simulator's hooks (observations of registrations; nothing outside simulation).
    hooks: Hooks,
}

impl ClusterNode {
    /// Starts the metadata quorum (its files under `QUORUM_DIR`). The directory id of a fresh
    /// data dir is drawn from `seed` (the node's seed: OS entropy in production) and persisted.
    pub async fn start<D: Disk, N: Net>(
        node: &crate::config::NodeConfig,
        cfg: ClusterConfig,
        disk: D,
        net: N,
        hooks: Hooks,
    ) -> Result<Arc<ClusterNode>, String> {
        let planted = Planted::from_hooks(&hooks);
        let quorum_cfg = QuorumConfig {
            id: nid(node.node_id),
            listen: cfg.controller_listen,
            peers: cfg
                .voters
                .iter()
                .filter(|(id, _)| **id != node.node_id)
                .map(|(id, addr)| (nid(*id), *addr))
                .collect(),
            voters: cfg
                .voters
                .keys()
                .map(|id| Voter {
                    id: nid(*id),
                    directory_id: cfg.voter_directories.get(id).map(|d| DirectoryId(*d)),
                })
                .collect(),
            observers: Vec::new(),
            // A broker-only node is an observer the voters learn from its introduction.
            announce: (!cfg.voters.contains_key(&node.node_id)).then_some(cfg.controller_listen),
            data_dir: QUORUM_DIR.to_string(),
            election_timeout_min_ms: ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max_ms: ELECTION_TIMEOUT_MAX_MS,
            heartbeat_interval_ms: RAFT_HEARTBEAT_MS,
            batch_entries_max: RAFT_BATCH_ENTRIES_MAX,
            snapshot_every_entries: SNAPSHOT_EVERY_ENTRIES,
            hooks: hooks.clone(),
        };
        let image = Arc::new(Mutex::new(MetadataImage::new()));
        let (applied_tx, applied) = watch::channel(0u64);
        let machine = ImageMachine {
            image: image.clone(),
            applied: applied_tx,
        };
        let connector: Arc<dyn crate::replication::Connect> =
            Arc::new(crate::replication::NetConnect(net.clone()));
        let quorum = QuorumNode::spawn(quorum_cfg, disk, net, node.seed, machine, None)
            .await
            .map_err(|e| e.to_string())?;
        let incarnation = quorum.status().directory_id.0;
        match cfg.voter_directories.get(&node.node_id) {
            Some(pinned) if *pinned != incarnation => tracing::warn!(
                directory_id = format!("{incarnation:032x}"),
                pinned = format!("{pinned:032x}"),
                "this node's metadata directory is not the one its voters entry pins (disk \
                 wiped or replaced?): it follows the quorum as an observer and never votes or \
                 leads; voter changes (KIP-853 AddVoter/RemoveVoter) are not supported yet"
            ),
            Some(_) => tracing::info!("directory id matches this node's pinned voters entry"),
            None if cfg.voters.contains_key(&node.node_id) => tracing::warn!(
                "this node's voters entry pins no directory id: a restart with an empty disk \
                 would vote again as this voter; pin it (ID@HOST:PORT:DIRID, see `samsa \
                 format`)"
            ),
            None => {}
        }
        let controller = Controller::new(
            ControllerConfig {
                session_timeout_ms: i64::try_from(node.broker_session_timeout_ms)
                    .unwrap_or(i64::MAX),
            },
            node.seed ^ 0xc0_47_01_1e,
            planted,
        );
        tracing::info!(
            controller_listen = %quorum.local_addr(),
            directory_id = format!("{incarnation:032x}"),
            role = ?quorum.status().role,
            "metadata quorum started"
        );
        let cluster_id = cluster_id_of(&cfg);
        Ok(Arc::new(ClusterNode {
            cluster_id,
            cfg,
            node_id: node.node_id,
            quorum,
            incarnation,
            image,
            slot: tokio::sync::Mutex::new(ControllerSlot {
                controller,
                active_term: None,
            }),
            heartbeat_interval_ms: node.broker_heartbeat_interval_ms,
            applied,
            connector,
            alter_correlation: std::sync::atomic::AtomicI32::new(0),
            registration_index: std::sync::atomic::AtomicU64::new(NOT_REGISTERED),
            hooks,
        }))
    }

    /// Opens connections to peers through the node's `Net`.
    pub fn connector(&self) -> &dyn crate::replication::Connect {
        &*self.connector
    }

    /// The incarnation broker `id` is registered with.
    pub fn incarnation_of(&self, id: i32) -> Option<u128> {
        lock(&self.image).brokers.get(&id).map(|b| b.incarnation)
    }

    /// The client listener of broker `id` as the image registers it.
    pub fn broker_addr(&self, id: i32) -> Option<SocketAddr> {
        lock(&self.image).brokers.get(&id).and_then(|b| {
            let host = if b.host == "localhost" {
                "127.0.0.1"
            } else {
                &b.host
            };
            host.parse().ok().map(|ip| SocketAddr::new(ip, b.port))
        })
    }

    /// The controller side of AlterPartition (this node must be the active controller).
    pub async fn alter_partition(&self, now_ms: i64, r: &AlterPartition) -> Result<(), ErrorCode> {
        self.decide(now_ms, |c, image| c.alter_partition(image, r))
            .await
    }

    /// ElectLeaders for one partition (active controller only): preferred moves leadership to
    /// the first replica when it is live and in the ISR; unclean elects for a leaderless
    /// partition from outside the ISR.
    pub async fn elect_leader(
        &self,
        now_ms: i64,
        topic_id: TopicId,
        partition: i32,
        election: ElectionType,
    ) -> Result<(), ErrorCode> {
        self.decide(now_ms, |c, image| {
            c.elect_leaders(image, topic_id, partition, election)
        })
        .await
    }

    /// A partition leader's AlterPartition: in-process when this node is the active
    /// controller, else over Kafka's AlterPartition (56) to the controller's client listener.
    pub async fn send_alter_partition(
        &self,
        now_ms: i64,
        r: &AlterPartition,
    ) -> Result<(), ErrorCode> {
        let leader = self.controller_id().ok_or(code::NOT_CONTROLLER)?;
        if leader == self.node_id {
            return self.alter_partition(now_ms, r).await;
        }
        let addr = self.broker_addr(leader).ok_or(code::NOT_CONTROLLER)?;
        let correlation = self
            .alter_correlation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let isr = r
            .new_isr
            .iter()
            .map(|b| {
                let epoch = r
                    .added
                    .iter()
                    .find(|(id, _)| id == b)
                    .map_or(-1, |(_, inc)| *inc as u64 as i64);
                alter_partition_request::BrokerState::default()
                    .with_broker_id((*b).into())
                    .with_broker_epoch(epoch)
            })
            .collect();
        let req = AlterPartitionRequest::default()
            .with_broker_id(r.broker_id.into())
            .with_broker_epoch(self.incarnation as u64 as i64)
            .with_topics(vec![alter_partition_request::TopicData::default()
                .with_topic_id(uuid::Uuid::from_u128(r.topic_id))
                .with_partitions(vec![
                    alter_partition_request::PartitionData::default()
                        .with_partition_index(r.partition)
                        .with_leader_epoch(r.leader_epoch)
                        .with_new_isr_with_epochs(isr)
                        .with_partition_epoch(r.partition_epoch),
                ])]);
        let resp: AlterPartitionResponse = call_boxed(
            self.connector(),
            addr,
            ApiKey::AlterPartition,
            ALTER_PARTITION_VERSION,
            correlation,
            &req,
        )
        .await?;
        if resp.error_code != code::NONE {
            return Err(resp.error_code);
        }
        let error = resp
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .map_or(code::UNKNOWN_SERVER_ERROR, |p| p.error_code);
        match error {
            0 => Ok(()),
            e => Err(e),
        }
    }

    /// A copy of the current metadata image.
    pub fn image(&self) -> MetadataImage {
        lock(&self.image).clone()
    }

    /// A receiver that changes after every batch the image applies (the image watcher).
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// The topic named `name` in the image.
    pub fn topic(&self, name: &str) -> Option<TopicImage> {
        let image = lock(&self.image);
        let id = image.topic_ids.get(name)?;
        image.topics.get(id).cloned()
    }

    /// The topic with id `id` in the image.
    pub fn topic_by_id(&self, id: TopicId) -> Option<TopicImage> {
        lock(&self.image).topics.get(&id).cloned()
    }

    /// Who may serve Produce/Fetch/ListOffsets for a partition: `Ok(leader_epoch)` when this
    /// node leads it, `NOT_LEADER_OR_FOLLOWER` when another node does (or none),
    /// `UNKNOWN_TOPIC_OR_PARTITION` when the image has no such partition.
    pub fn lead_check(&self, name: &str, index: i32) -> Result<i32, ErrorCode> {
        let image = lock(&self.image);
        let p = image
            .topic_ids
            .get(name)
            .and_then(|id| image.partition(*id, index))
            .ok_or(code::UNKNOWN_TOPIC_OR_PARTITION)?;
        if p.leader == self.node_id && self.registered_this_run() {
            Ok(p.leader_epoch)
        } else {
            Err(code::NOT_LEADER_OR_FOLLOWER)
        }
    }

    /// Whether this process has registered and its own image has applied that registration
    /// (see `registration_index`): before that the node takes no partition role.
    pub fn registered_this_run(&self) -> bool {
        let index = self
            .registration_index
            .load(std::sync::atomic::Ordering::SeqCst);
        index != NOT_REGISTERED && self.quorum.status().applied_index >= index
    }

    /// Whether this process's registration has been accepted (its image may still lag).
    fn registration_sent(&self) -> bool {
        self.registration_index
            .load(std::sync::atomic::Ordering::SeqCst)
            != NOT_REGISTERED
    }

    /// Creates a topic through the controller; answers once its records are committed and
    /// applied here. A replication factor of -1 means min(3, live brokers). `NOT_CONTROLLER`
    /// unless this node is the active controller.
    pub async fn create_topic(
        &self,
        now_ms: i64,
        mut request: CreateTopic,
    ) -> Result<TopicId, ErrorCode> {
        let mut created = None;
        self.decide(now_ms, |c, image| {
            if request.replication_factor == -1 {
                let live = image
                    .brokers
                    .values()
                    .filter(|b| !b.fenced && !b.controller_only)
                    .count();
                request.replication_factor =
                    i16::try_from(live.min(DEFAULT_REPLICATION_FACTOR_MAX)).unwrap_or(1);
            }
            let (id, records) = c.create_topic(image, &request)?;
            created = Some(id);
            Ok(records)
        })
        .await?;
        created.ok_or(code::UNKNOWN_SERVER_ERROR)
    }

    /// Deletes a topic through the controller (same answers as `create_topic`).
    pub async fn delete_topic(&self, now_ms: i64, name: &str) -> Result<TopicId, ErrorCode> {
        let mut deleted = None;
        self.decide(now_ms, |c, image| {
            deleted = image.topic_ids.get(name).copied();
            c.delete_topic(image, name)
        })
        .await?;
        deleted.ok_or(code::UNKNOWN_TOPIC_OR_PARTITION)
    }

    /// Replaces a topic's config overrides through the controller (AlterConfigs and
    /// IncrementalAlterConfigs). `compute` gets the topic's overrides and replication factor as
    /// the controller's image holds them and answers the new overrides (or why not); with
    /// `validate_only` nothing is committed. Answers once the change is committed and applied
    /// here; `NOT_CONTROLLER` unless this node is the active controller.
    pub async fn alter_topic_configs(
        &self,
        now_ms: i64,
        name: &str,
        validate_only: bool,
        compute: impl FnOnce(
            &BTreeMap<String, String>,
            usize,
        ) -> Result<BTreeMap<String, String>, ErrorCode>,
    ) -> Result<(), ErrorCode> {
        self.decide(now_ms, |c, image| {
            let topic = image
                .topic_ids
                .get(name)
                .and_then(|id| image.topics.get(id))
                .ok_or(code::UNKNOWN_TOPIC_OR_PARTITION)?;
            let next = compute(&topic.configs, topic.replication_factor())?;
            let records = c.alter_topic_configs(image, name, &next)?;
            Ok(if validate_only { Vec::new() } else { records })
        })
        .await
    }

    /// Grows a topic to `count` partitions through the controller (CreatePartitions), placed
    /// by the controller or by `assignments` (one replica list per new partition); with
    /// `validate_only` nothing is committed. Same answers as `alter_topic_configs`.
    pub async fn create_partitions(
        &self,
        now_ms: i64,
        name: &str,
        count: i32,
        assignments: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<(), ErrorCode> {
        self.decide(now_ms, |c, image| {
            let records = c.create_partitions(image, name, count, assignments.as_deref())?;
            Ok(if validate_only { Vec::new() } else { records })
        })
        .await
    }

    /// Whether a client's admin request that only the active controller may decide
    /// (AlterConfigs, IncrementalAlterConfigs, CreatePartitions) should be forwarded to it
    /// (Kafka's KIP-590 forwarding: clients send some of these to any broker): when another
    /// node is the controller and the request was not itself forwarded (never twice).
    pub fn forwards(&self, client_id: Option<&str>) -> bool {
        client_id != Some(FORWARDED_CLIENT_ID)
            && self.controller_id().is_some_and(|c| c != self.node_id)
    }

    /// Sends a client's request on to the active controller's client listener as it is
    /// (same version) and answers the controller's response (`NOT_CONTROLLER` when there is
    /// none to reach, other codes for transport failures).
    pub async fn forward_to_controller<Req: Encodable, Resp: Decodable>(
        &self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Resp, ErrorCode> {
        let leader = self.controller_id().ok_or(code::NOT_CONTROLLER)?;
        if leader == self.node_id {
            return Err(code::NOT_CONTROLLER);
        }
        let addr = self.broker_addr(leader).ok_or(code::NOT_CONTROLLER)?;
        let correlation = self
            .alter_correlation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let call = crate::replication::Call {
            client_id: FORWARDED_CLIENT_ID,
            key,
            version,
            correlation,
            response_bytes_max: FORWARD_RESPONSE_BYTES_MAX,
        };
        call.over(self.connector().connect(addr), request, FORWARD_TIMEOUT_MS)
            .await
    }

    /// Registered, unfenced brokers in id order.
    pub fn live_brokers(&self) -> Vec<BrokerImage> {
        lock(&self.image)
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .cloned()
            .collect()
    }

    /// The partitions of the topic named `name` in the image (0 when it has none).
    pub fn partition_count(&self, name: &str) -> i32 {
        lock(&self.image).partition_count(name)
    }

    /// The leader of partition `index` of `name`, `(id, host, port)`, while it is a live
    /// broker: the coordinator of the groups whose offsets that partition of
    /// `__consumer_offsets` holds. `COORDINATOR_NOT_AVAILABLE` while it has none.
    pub fn partition_leader(
        &self,
        name: &str,
        index: i32,
    ) -> Result<(i32, String, u16), ErrorCode> {
        let image = lock(&self.image);
        let leader = image
            .topic_ids
            .get(name)
            .and_then(|id| image.partition(*id, index))
            .map(|p| p.leader)
            .ok_or(code::COORDINATOR_NOT_AVAILABLE)?;
        match image.brokers.get(&leader) {
            Some(b) if !b.fenced => Ok((leader, b.host.clone(), b.port)),
            _ => Err(code::COORDINATOR_NOT_AVAILABLE),
        }
    }

    /// The replication factor and `min.insync.replicas` `__consumer_offsets` is created with:
    /// min(3, brokers registered so far) replicas (Kafka's `offsets.topic.replication.factor`
    /// is 3) and min(2, RF) in-sync ones, so an acknowledged commit survives the loss of any
    /// one replica. `None` until that many brokers are live (Kafka too waits for enough
    /// brokers rather than create the topic under-replicated).
    pub fn offsets_topic_replication(&self) -> Option<(i16, usize)> {
        let image = lock(&self.image);
        let brokers = image.brokers.values().filter(|b| !b.controller_only);
        let registered = brokers.clone().count();
        let live = brokers.filter(|b| !b.fenced).count();
        let rf = registered.min(DEFAULT_REPLICATION_FACTOR_MAX);
        (rf > 0 && live >= rf).then(|| (i16::try_from(rf).unwrap_or(1), rf.min(2)))
    }

    /// The active controller's id, if the quorum has a leader.
    pub fn controller_id(&self) -> Option<i32> {
        self.quorum
            .status()
            .leader
            .map(|l| i32::try_from(l.0).unwrap_or(i32::MAX))
    }

    /// Runs one controller decision against the image and commits its records. Decisions are
    /// serialised, and each one sees the records of the previous (they are applied before
    /// `propose` answers). `NOT_CONTROLLER` unless this node leads the quorum.
    async fn decide(
        &self,
        now_ms: i64,
        f: impl FnOnce(&mut Controller, &MetadataImage) -> Result<Vec<MetadataRecord>, ErrorCode>,
    ) -> Result<(), ErrorCode> {
        self.decide_at(now_ms, f).await.map(drop)
    }

    /// `decide`, answering the metadata log index the records were committed at (the commit
    /// index when there were none).
    async fn decide_at(
        &self,
        now_ms: i64,
        f: impl FnOnce(&mut Controller, &MetadataImage) -> Result<Vec<MetadataRecord>, ErrorCode>,
    ) -> Result<u64, ErrorCode> {
        let mut slot = self.slot.lock().await;
        let status = self.quorum.status();
        if status.role != Role::Leader {
            slot.active_term = None;
            return Err(code::NOT_CONTROLLER);
        }
        let image = self.image();
        if slot.active_term != Some(status.term) {
            slot.controller.on_become_active(&image, now_ms);
            slot.active_term = Some(status.term);
        }
        let records = f(&mut slot.controller, &image)?;
        if records.is_empty() {
            return Ok(status.commit_index);
        }
        match self
            .quorum
            .propose(Bytes::from(encode_batch(&records)))
            .await
        {
            Ok(index) => Ok(index),
            Err(ProposeFailure::NotLeader { .. }) | Err(ProposeFailure::Stopped) => {
                Err(code::NOT_CONTROLLER)
            }
            Err(ProposeFailure::PayloadTooLarge) => Err(code::INVALID_REQUEST),
            Err(ProposeFailure::Busy) | Err(ProposeFailure::Unknown) => {
                Err(code::REQUEST_TIMED_OUT)
            }
        }
    }

    /// Registers a broker; answers the metadata log index of its registration (Kafka's broker
    /// epoch: the registering node takes no partition role before its own image has applied it).
    pub async fn register(&self, now_ms: i64, r: BrokerRegistration) -> Result<u64, ErrorCode> {
        self.decide_at(now_ms, |c, image| c.register_broker(image, now_ms, &r))
            .await
    }

    /// A heartbeat; `epoch` is the low 64 bits of the broker's incarnation.
    pub async fn heartbeat(&self, now_ms: i64, broker: i32, epoch: i64) -> Result<(), ErrorCode> {
        self.decide(now_ms, |c, image| {
            let b = image
                .brokers
                .get(&broker)
                .ok_or(code::BROKER_ID_NOT_REGISTERED)?;
            if b.incarnation as u64 as i64 != epoch {
                return Err(code::STALE_BROKER_EPOCH);
            }
            c.heartbeat(image, now_ms, broker, b.incarnation)
        })
        .await
    }

    /// Fences expired brokers and elects leaders (active controller only; else nothing).
    pub async fn tick(&self, now_ms: i64) {
        let _ = self
            .decide(now_ms, |c, image| Ok(c.tick(image, now_ms)))
            .await;
    }

    /// The broker's loop: registers (again, whenever the image does not hold this node with
    /// its incarnation) and heartbeats to the active controller; on the active controller it
    /// also ticks the controller. Ends when `stop` turns true or the quorum stops.
    pub async fn run<C: Clock, N: Net>(
        self: Arc<Self>,
        clock: C,
        net: N,
        advertised: (String, i32),
        mut stop: watch::Receiver<bool>,
    ) {
        let interval = Duration::from_millis(self.heartbeat_interval_ms);
        let mut correlation = 0i32;
        loop {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                () = tokio::time::sleep(interval) => {}
            }
            if !self.quorum.status().running {
                return;
            }
            let now = clock.now_ms();
            if self.cfg.controller {
                self.tick(now).await;
            }
            // A controller-only node registers too (flagged, so it gets no replicas): brokers
            // and clients find the active controller's listener through its registration.
            let Some(leader) = self.controller_id() else {
                continue;
            };
            // Every process registers once, even when the image still holds its incarnation
            // (a restart keeps the directory id): the controller then fences it and takes it out
            // of the ISRs until it has caught up, as Kafka does for a new broker epoch.
            let registered = self.registration_sent()
                && lock(&self.image)
                    .brokers
                    .get(&self.node_id)
                    .is_some_and(|b| b.incarnation == self.incarnation);
            let registration = BrokerRegistration {
                broker_id: self.node_id,
                incarnation: self.incarnation,
                host: advertised.0.clone(),
                port: u16::try_from(advertised.1).unwrap_or(0),
                rack: None,
                controller_only: !self.cfg.broker,
            };
            let epoch = self.incarnation as u64 as i64;
            let result = if leader == self.node_id {
                if registered {
                    self.heartbeat(now, self.node_id, epoch)
                        .await
                        .map(|()| None)
                } else {
                    self.register(now, registration).await.map(Some)
                }
            } else {
                let addr = self.broker_addr(leader);
                let Some(addr) = addr else {
                    // The controller has not registered itself yet: nothing to talk to.
                    continue;
                };
                correlation = correlation.wrapping_add(1);
                if registered {
                    heartbeat_rpc(&net, addr, correlation, self.node_id, epoch)
                        .await
                        .map(|()| None)
                } else {
                    registration_rpc(&net, addr, correlation, &registration)
                        .await
                        .map(Some)
                }
            };
            match result {
                Ok(Some(index)) => {
                    self.registration_index
                        .store(index, std::sync::atomic::Ordering::SeqCst);
                    self.hooks.observe(|| Observation::Registered {
                        node: self.node_id,
                        incarnation: self.incarnation,
                    });
                    tracing::info!(node = self.node_id, index, "registered with the controller");
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(leader, registered, "controller call failed: error {e}")
                }
            }
        }
    }
}

/// A Kafka-style cluster id (base64url of 16 bytes) that every node of one voter set computes
/// alike: two FNV-1a hashes of the canonical voter list. The metadata log has no cluster-id
/// record yet; this keeps clients from seeing a different cluster on every node.
pub fn cluster_id_of(cfg: &ClusterConfig) -> String {
    let text: String = cfg
        .voters
        .iter()
        .map(|(id, addr)| format!("{id}@{addr},"))
        .collect();
    let fnv = |basis: u64| {
        text.bytes().fold(basis, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&fnv(0xcbf2_9ce4_8422_2325).to_be_bytes());
    raw[8..].copy_from_slice(&fnv(0x5a5a_17e5_c0de_d00d).to_be_bytes());
    crate::metadata::base64url(&raw)
}

/// Sends one request to `addr` and reads its answer (a fresh connection each time: these are
/// rare and small). Every failure maps to an error code.
async fn call<N: Net, Req: Encodable, Resp: Decodable>(
    net: &N,
    addr: SocketAddr,
    key: ApiKey,
    version: i16,
    correlation: i32,
    request: &Req,
) -> Result<Resp, ErrorCode> {
    rpc(key, version, correlation)
        .over(net.connect(addr), request, RPC_TIMEOUT_MS)
        .await
}

/// `call` over the type-erased connector.
async fn call_boxed<Req: Encodable, Resp: Decodable>(
    connector: &dyn crate::replication::Connect,
    addr: SocketAddr,
    key: ApiKey,
    version: i16,
    correlation: i32,
    request: &Req,
) -> Result<Resp, ErrorCode> {
    rpc(key, version, correlation)
        .over(connector.connect(addr), request, RPC_TIMEOUT_MS)
        .await
}

fn rpc(key: ApiKey, version: i16, correlation: i32) -> crate::replication::Call<'static> {
    crate::replication::Call {
        client_id: "samsa",
        key,
        version,
        correlation,
        response_bytes_max: RPC_RESPONSE_BYTES_MAX,
    }
}

/// What the AlterPartition handler passes to `ClusterNode::alter_partition`: the ISR members'
/// broker epochs (low 64 bits of their incarnation) mapped back to the incarnations the image
/// holds (an epoch that matches none maps to 0, which the controller refuses to add).
pub fn alter_partitions_from_request(
    req: &AlterPartitionRequest,
    image: &MetadataImage,
) -> Vec<(uuid::Uuid, i32, AlterPartition)> {
    let mut out = Vec::new();
    for t in req
        .topics
        .iter()
        .take(crate::handlers::ALTER_PARTITIONS_MAX)
    {
        for p in t
            .partitions
            .iter()
            .take(crate::handlers::ALTER_PARTITIONS_MAX)
        {
            let mut new_isr = Vec::new();
            let mut added = Vec::new();
            for s in &p.new_isr_with_epochs {
                let id = s.broker_id.0;
                new_isr.push(id);
                let incarnation = image
                    .brokers
                    .get(&id)
                    .filter(|b| b.incarnation as u64 as i64 == s.broker_epoch)
                    .map_or(0, |b| b.incarnation);
                added.push((id, incarnation));
            }
            out.push((
                t.topic_id,
                p.partition_index,
                AlterPartition {
                    broker_id: req.broker_id.0,
                    topic_id: t.topic_id.as_u128(),
                    partition: p.partition_index,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    new_isr,
                    added,
                },
            ));
        }
    }
    out
}

/// Registers at the controller; answers the registration's metadata log index (carried as the
/// response's broker epoch, as Kafka's broker epoch is its registration record's offset).
async fn registration_rpc<N: Net>(
    net: &N,
    addr: SocketAddr,
    correlation: i32,
    r: &BrokerRegistration,
) -> Result<u64, ErrorCode> {
    let name = if r.controller_only {
        CONTROLLER_ONLY_LISTENER
    } else {
        "PLAINTEXT"
    };
    let listener = broker_registration_request::Listener::default()
        .with_name(StrBytes::from_static_str(name))
        .with_host(StrBytes::from_string(r.host.clone()))
        .with_port(r.port);
    let req = BrokerRegistrationRequest::default()
        .with_broker_id(r.broker_id.into())
        .with_incarnation_id(uuid::Uuid::from_u128(r.incarnation))
        .with_listeners(vec![listener]);
    let resp: BrokerRegistrationResponse = call(
        net,
        addr,
        ApiKey::BrokerRegistration,
        REGISTRATION_VERSION,
        correlation,
        &req,
    )
    .await?;
    match resp.error_code {
        0 => u64::try_from(resp.broker_epoch).map_err(|_| code::INVALID_REQUEST),
        e => Err(e),
    }
}

async fn heartbeat_rpc<N: Net>(
    net: &N,
    addr: SocketAddr,
    correlation: i32,
    broker: i32,
    epoch: i64,
) -> Result<(), ErrorCode> {
    let req = BrokerHeartbeatRequest::default()
        .with_broker_id(broker.into())
        .with_broker_epoch(epoch);
    let resp: BrokerHeartbeatResponse = call(
        net,
        addr,
        ApiKey::BrokerHeartbeat,
        HEARTBEAT_VERSION,
        correlation,
        &req,
    )
    .await?;
    match resp.error_code {
        0 => Ok(()),
        e => Err(e),
    }
}

/// What the BrokerRegistration handler passes to `ClusterNode::register`: the first listener's
/// host and port (`INVALID_REQUEST` without one).
pub fn registration_from_request(
    req: &BrokerRegistrationRequest,
) -> Result<BrokerRegistration, ErrorCode> {
    let listener = req.listeners.first().ok_or(code::INVALID_REQUEST)?;
    Ok(BrokerRegistration {
        broker_id: req.broker_id.0,
        incarnation: req.incarnation_id.as_u128(),
        host: listener.host.to_string(),
        port: listener.port,
        rack: req.rack.as_ref().map(|r| r.to_string()),
        controller_only: listener.name.as_str() == CONTROLLER_ONLY_LISTENER,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(id: i32) -> MetadataRecord {
        MetadataRecord::RegisterBroker {
            broker_id: id,
            incarnation: 7 + id as u128,
            host: "127.0.0.1".to_string(),
            port: 9000 + id as u16,
            rack: None,
            controller_only: false,
        }
    }

    fn entry(index: u64, payload: Vec<u8>) -> Entry {
        Entry {
            term: 1,
            index,
            payload: Bytes::from(payload),
        }
    }

    #[test]
    fn image_machine_applies_batches_skips_garbage_and_snapshots() {
        let image = Arc::new(Mutex::new(MetadataImage::new()));
        let mut sm = ImageMachine {
            image: image.clone(),
            applied: watch::channel(0).0,
        };
        sm.apply(&[
            entry(1, Vec::new()),
            entry(2, encode_batch(&[register(1), register(2)])),
            entry(3, vec![0xde, 0xad, 0xbe, 0xef]),
            entry(
                4,
                encode_batch(&[MetadataRecord::UnfenceBroker { broker_id: 2 }]),
            ),
            // Refused by the image (unknown broker): skipped, the rest still applies.
            entry(
                5,
                encode_batch(&[MetadataRecord::UnfenceBroker { broker_id: 9 }]),
            ),
        ]);
        let got = lock(&image).clone();
        assert_eq!(got.brokers.len(), 2);
        assert!(!got.is_live(1) && got.is_live(2));

        let other = Arc::new(Mutex::new(MetadataImage::new()));
        let mut restored = ImageMachine {
            image: other.clone(),
            applied: watch::channel(0).0,
        };
        restored.restore(sm.snapshot());
        assert_eq!(*lock(&other), got);
        // A snapshot that does not decode leaves the image as it was.
        restored.restore(Bytes::from_static(b"not a snapshot"));
        assert_eq!(*lock(&other), got);
        restored.restore(Bytes::new());
        assert_eq!(*lock(&other), MetadataImage::new());
    }

    #[test]
    fn cluster_id_is_shared_by_one_voter_set_only() {
        let cfg = |text: &str| ClusterConfig {
            voters: crate::config::parse_voters(text).expect("voters"),
            voter_directories: crate::config::parse_voter_directories(text).expect("dirs"),
            controller_listen: "127.0.0.1:1".parse().expect("addr"),
            broker: true,
            controller: true,
        };
        let a = cluster_id_of(&cfg("1@127.0.0.1:1,2@127.0.0.1:2"));
        assert_eq!(a.len(), 22);
        assert_eq!(a, cluster_id_of(&cfg("2@127.0.0.1:2, 1@127.0.0.1:1")));
        assert_ne!(a, cluster_id_of(&cfg("1@127.0.0.1:1,2@127.0.0.1:3")));
    }
}
