//! `Broker`: the state one node shares between its connections: config, metadata store, the open
//! partitions and the long-poll wake-up. Topic changes go through the metadata store first
//! (durable), then open/close partitions. In cluster mode the topics live in the quorum's image
//! and an image watcher opens/removes the replicas assigned to this node.
//! Never reads the wall clock except through `Clock`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use samsa_net::error::code;
use samsa_net::watch;
use samsa_net::{Clock, Hooks};
use samsa_storage::Disk;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::config::NodeConfig;
use crate::group::shell::OFFSETS_TOPIC;
use crate::metadata::{MetaError, MetadataStore, TopicMeta};
use crate::node::NodeError;
use crate::partition::Partition;
use crate::replication::{FollowTarget, LeaderSlot};
use crate::topic_config::{TopicConfig, TopicDefaults};

pub type PartitionKey = (String, i32);

pub struct Broker<D: Disk, C: Clock> {
    pub cfg: NodeConfig,
    pub node_id: i32,
    pub advertised_host: String,
    pub advertised_port: i32,
    pub defaults: TopicDefaults,
    pub disk: D,
    pub clock: C,
    pub hooks: Hooks,
    pub meta: tokio::sync::Mutex<MetadataStore<D>>,
    partitions: Mutex<BTreeMap<PartitionKey, Arc<Partition<D>>>>,
    /// Woken whenever any partition's high watermark advances (Fetch long poll).
    pub data_arrived: Arc<Notify>,
    /// Turns true when the node shuts down: connections stop reading, long polls answer.
    pub stopping: watch::Sender<bool>,
    /// The group coordinator (every group: a single node coordinates them all).
    pub groups: crate::group::shell::Groups,
    /// Cluster mode (`voters` set): the metadata quorum, image and controller. Set once by the
    /// node shell right after `open`; unset on a single node.
    pub cluster: std::sync::OnceLock<Arc<crate::cluster_mode::ClusterNode>>,
    /// Cluster mode: the partitions the image watcher opened (replicas assigned to this node),
    /// with their topic ids. Only these are ever closed by the watcher.
    replicas: Mutex<BTreeMap<PartitionKey, Uuid>>,
    /// Serialises image reconciliations (two must never open one partition twice).
    reconciling: tokio::sync::Mutex<()>,
    /// Cluster mode: the follower fetch task of each partition this node follows, with whom
    /// it follows and the signal that stops it.
    followers: Mutex<BTreeMap<PartitionKey, (FollowTarget, watch::Sender<bool>)>>,
    /// Cluster mode: the `min.insync.replicas` each leader core applies (a committed change is
    /// stepped into the core, see `reconcile_cluster`).
    leader_min_isr: Mutex<BTreeMap<PartitionKey, usize>>,
}

impl<D: Disk, C: Clock> Broker<D, C> {
    /// Opens the metadata store and recovers every partition it names.
    pub async fn open(
        cfg: NodeConfig,
        disk: D,
        clock: C,
        hooks: Hooks,
        bound: SocketAddr,
    ) -> Result<Arc<Self>, NodeError> {
        let defaults = cfg.topic_defaults().map_err(NodeError::Config)?;
        let meta = MetadataStore::open(disk.clone(), cfg.seed)
            .await
            .map_err(NodeError::Metadata)?;
        let (advertised_host, advertised_port) = cfg.advertised(bound);
        let topics: Vec<TopicMeta> = meta.state().topics.values().cloned().collect();
        // Member ids carry the start time so ids from before a restart never come back.
        let boot_stamp = u64::try_from(clock.now_ms()).unwrap_or(0);
        let broker = Arc::new(Broker {
            node_id: cfg.node_id,
            advertised_host,
            advertised_port,
            defaults,
            disk,
            clock,
            hooks,
            meta: tokio::sync::Mutex::new(meta),
            partitions: Mutex::new(BTreeMap::new()),
            data_arrived: Arc::new(Notify::new()),
            stopping: watch::channel(false).0,
            groups: crate::group::shell::Groups::new(
                cfg.group_config(),
                boot_stamp,
                cfg.offsets_topic_num_partitions,
            ),
            cluster: std::sync::OnceLock::new(),
            replicas: Mutex::new(BTreeMap::new()),
            reconciling: tokio::sync::Mutex::new(()),
            followers: Mutex::new(BTreeMap::new()),
            leader_min_isr: Mutex::new(BTreeMap::new()),
            cfg,
        });
        for topic in &topics {
            broker
                .open_partitions(topic, 0)
                .await
                .map_err(NodeError::Storage)?;
        }
        // In cluster mode the topics live in the metadata image (replayed later by the quorum),
        // not in the local store: their directories are not orphans.
        if !matches!(broker.cfg.cluster(), Ok(Some(_))) {
            broker.remove_orphans().await;
        }
        broker.groups.set_hooks(broker.hooks.clone());
        // In cluster mode groups are loaded per offsets partition as this node comes to lead
        // one (`reconcile_cluster`); a single node has them all, now.
        if !matches!(broker.cfg.cluster(), Ok(Some(_))) {
            broker.groups.replay(&broker).await;
        }
        tracing::info!(topics = topics.len(), "metadata and partitions recovered");
        Ok(broker)
    }

    /// Removes partition directories of topics the metadata no longer names (a crash between a
    /// durable DeleteTopics and the removal of its files). Only names of our own pattern are
    /// touched; anything else in the data dir is left alone.
    async fn remove_orphans(&self) {
        let Ok(names) = self.disk.list("").await else {
            return;
        };
        let live: Vec<String> = self
            .lock_partitions()
            .values()
            .map(|p| p.dir.clone())
            .collect();
        let ids: Vec<String> = {
            let store = self.meta.lock().await;
            store
                .state()
                .topics
                .values()
                .map(|t| t.id.simple().to_string())
                .collect()
        };
        for name in names {
            let Some(id) = crate::partition::dir_topic_id(&name) else {
                continue;
            };
            if live.contains(&name) || ids.contains(&id) {
                continue;
            }
            tracing::warn!(dir = %name, "removing the files of a deleted topic");
            let result = async {
                for file in self.disk.list(&name).await? {
                    self.disk.remove(&format!("{name}/{file}")).await?;
                }
                self.disk.remove(&name).await?;
                self.disk.sync_dir("").await
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(dir = %name, "could not remove an orphaned partition: {e}");
            }
        }
    }

    pub fn topic_config(&self, meta: &TopicMeta) -> TopicConfig {
        self.defaults.resolve(&meta.configs)
    }

    /// Opens (recovering) partitions `from..meta.partitions` of a topic; one that fails stays
    /// offline and the others still open.
    pub async fn open_partitions(&self, meta: &TopicMeta, from: i32) -> Result<(), String> {
        let config = self.topic_config(meta);
        let mut failed = Vec::new();
        for index in from..meta.partitions {
            let opened = Partition::open(
                self.disk.clone(),
                self.hooks.clone(),
                &meta.name,
                meta.id,
                index,
                config.clone(),
                self.data_arrived.clone(),
            )
            .await;
            match opened {
                Ok(p) => {
                    self.lock_partitions()
                        .insert((meta.name.clone(), index), Arc::new(p));
                }
                Err(e) => failed.push(e),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }

    fn lock_partitions(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<PartitionKey, Arc<Partition<D>>>> {
        // A panic while holding this lock is a broken invariant elsewhere; keep serving.
        self.partitions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition<D>>> {
        self.lock_partitions()
            .get(&(topic.to_string(), index))
            .cloned()
    }

    pub fn all_partitions(&self) -> Vec<Arc<Partition<D>>> {
        self.lock_partitions().values().cloned().collect()
    }

    /// Creates a topic durably and opens its partitions.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMeta, MetaError> {
        let meta = {
            let mut store = self.meta.lock().await;
            store.create_topic(name, partitions, configs).await?
        };
        tracing::info!(topic = name, partitions, id = %meta.id, "topic created");
        if let Err(e) = self.open_partitions(&meta, 0).await {
            tracing::error!(topic = name, "opening partitions failed: {e}");
        }
        Ok(meta)
    }

    /// Deletes a topic durably, closes its partitions and removes their files.
    pub async fn delete_topic(&self, name: &str) -> Result<TopicMeta, MetaError> {
        let meta = {
            let mut store = self.meta.lock().await;
            store.delete_topic(name).await?
        };
        let removed: Vec<Arc<Partition<D>>> = {
            let mut map = self.lock_partitions();
            (0..meta.partitions)
                .filter_map(|i| map.remove(&(name.to_string(), i)))
                .collect()
        };
        for p in removed {
            p.delete().await;
        }
        tracing::info!(topic = name, "topic deleted");
        Ok(meta)
    }

    pub async fn add_partitions(&self, name: &str, count: i32) -> Result<(), MetaError> {
        let (meta, before) = {
            let mut store = self.meta.lock().await;
            let before = store
                .topic(name)
                .map(|t| t.partitions)
                .ok_or(MetaError::UnknownTopic)?;
            store.set_partitions(name, count).await?;
            (
                store.topic(name).cloned().ok_or(MetaError::UnknownTopic)?,
                before,
            )
        };
        if let Err(e) = self.open_partitions(&meta, before).await {
            tracing::error!(topic = name, "opening new partitions failed: {e}");
        }
        Ok(())
    }

    pub async fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), MetaError> {
        let meta = {
            let mut store = self.meta.lock().await;
            store.set_configs(name, configs).await?;
            store.topic(name).cloned().ok_or(MetaError::UnknownTopic)?
        };
        let config = self.topic_config(&meta);
        for i in 0..meta.partitions {
            if let Some(p) = self.partition(name, i) {
                p.set_config(config.clone()).await;
            }
        }
        Ok(())
    }

    /// Cluster mode: makes the open partitions match the image. Every replica assigned to this
    /// node is opened (recovering its log; directory from name, index and topic id), and the
    /// partitions of topics the image no longer holds (or holds under another id) are closed
    /// and their files removed. A partition that fails to open is retried on the next call.
    /// Topic config changes reach the open replicas (retention, cleanup, segments, ...) and,
    /// for `min.insync.replicas`, the leader cores.
    pub async fn reconcile_cluster(self: &Arc<Self>) {
        let Some(cluster) = self.cluster.get() else {
            return;
        };
        let _serial = self.reconciling.lock().await;
        let image = cluster.image();
        let mut wanted: BTreeMap<PartitionKey, (Uuid, TopicMeta)> = BTreeMap::new();
        for t in image.topics.values() {
            let meta = TopicMeta {
                name: t.name.clone(),
                id: Uuid::from_u128(t.topic_id),
                partitions: i32::try_from(t.partitions.len()).unwrap_or(i32::MAX),
                configs: t.configs.clone(),
            };
            for (index, p) in &t.partitions {
                if p.replicas.contains(&self.node_id) {
                    wanted.insert((t.name.clone(), *index), (meta.id, meta.clone()));
                }
            }
        }
        let stale: Vec<PartitionKey> = self
            .lock_replicas()
            .iter()
            .filter(|(key, id)| wanted.get(*key).is_none_or(|(want, _)| want != *id))
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            self.stop_follower(&key);
            self.lock_leader_min_isr().remove(&key);
            self.lock_replicas().remove(&key);
            if key.0 == OFFSETS_TOPIC {
                let partitions = image.partition_count(OFFSETS_TOPIC);
                self.groups.unload(key.1, partitions);
            }
            let removed = self.lock_partitions().remove(&key);
            if let Some(p) = removed {
                p.resign_leader();
                p.delete().await;
                tracing::info!(topic = %key.0, partition = key.1, "replica removed");
            }
        }
        // Replicas opened now are served only once their role below is set up (a leader's
        // core installed), so no request sees one without it.
        let mut fresh: BTreeMap<PartitionKey, (Uuid, Arc<Partition<D>>)> = BTreeMap::new();
        for (key, (id, meta)) in wanted {
            if self.lock_replicas().contains_key(&key) {
                // Open already: a committed config change reaches it here.
                let open = self.lock_partitions().get(&key).cloned();
                let config = self.topic_config(&meta);
                if let Some(p) = open.filter(|p| p.config() != config) {
                    tracing::info!(node = self.node_id, topic = %key.0, partition = key.1,
                        "topic configs changed");
                    p.set_config(config).await;
                }
                continue;
            }
            let opened = Partition::open(
                self.disk.clone(),
                self.hooks.clone(),
                &key.0,
                id,
                key.1,
                self.topic_config(&meta),
                self.data_arrived.clone(),
            )
            .await;
            match opened {
                Ok(p) => {
                    // Nothing is committed until a leader says so.
                    p.set_replication_hw(0);
                    fresh.insert(key.clone(), (id, Arc::new(p)));
                    tracing::info!(node = self.node_id, topic = %key.0, partition = key.1,
                        "replica opened");
                }
                Err(e) => tracing::error!(topic = %key.0, partition = key.1, "open failed: {e}"),
            }
        }
        // Partitions this node leads write their batches with the controller's leader epoch,
        // recorded in the log's epoch cache before the first batch of it, and get a leader
        // core; the others get a follower fetch task for their current leader and epoch.
        let now_ms = self.clock.now_ms();
        // Before this process registered, the image's roles for this node are stale: none taken.
        let registered = cluster.registered_this_run();
        // Offsets partitions this node now leads, loaded once every opened replica is served.
        let mut loads: Vec<(i32, i32, i32)> = Vec::new();
        for t in image.topics.values() {
            let offsets = t.name == OFFSETS_TOPIC;
            let count = i32::try_from(t.partitions.len()).unwrap_or(i32::MAX);
            for (index, p) in &t.partitions {
                if !p.replicas.contains(&self.node_id) {
                    continue;
                }
                let key = (t.name.clone(), *index);
                let known = fresh.get(&key).map(|(_, p)| p.clone());
                let Some(partition) = known.or_else(|| self.lock_partitions().get(&key).cloned())
                else {
                    continue;
                };
                if p.leader != self.node_id || !registered {
                    self.lock_leader_min_isr().remove(&key);
                    partition.resign_leader();
                    if offsets {
                        self.groups.unload(key.1, count);
                    }
                    if p.leader < 0 || p.leader == self.node_id {
                        self.stop_follower(&key);
                    } else {
                        let target = FollowTarget {
                            leader: p.leader,
                            leader_epoch: p.leader_epoch,
                        };
                        self.ensure_follower(&key, &partition, target);
                    }
                    continue;
                }
                self.stop_follower(&key);
                if let Err(c) = partition.become_leader(p.leader_epoch).await {
                    tracing::error!(topic = %key.0, partition = key.1, code = c,
                        "cannot record the leader epoch");
                    continue;
                }
                let min_isr = t.min_insync_replicas();
                // A committed `min.insync.replicas` change (AlterConfigs) reaches the leader
                // core of the same epoch as one event: its waiters and a pending ISR addition
                // stay (a new core would drop the addition and let the high watermark pass the
                // joining replica).
                let min_isr_changed = self
                    .lock_leader_min_isr()
                    .get(&key)
                    .is_some_and(|installed| *installed != min_isr);
                if min_isr_changed && partition.leader_slot_epoch() == Some(p.leader_epoch) {
                    let alter = partition.leader_step(
                        samsa_cluster::replica::LeaderEvent::MinInsyncReplicasChanged {
                            min_insync_replicas: min_isr,
                        },
                    );
                    self.lock_leader_min_isr().insert(key.clone(), min_isr);
                    tracing::info!(node = self.node_id, topic = %key.0, partition = key.1,
                        epoch = p.leader_epoch, min_isr, "min.insync.replicas changed");
                    crate::replication::send_alter_partitions(self, &partition, alter);
                }
                let alter = match partition.leader_slot_epoch() {
                    // Only a new partition epoch is news to the core: an image change elsewhere
                    // must not read as the answer to an AlterPartition still in flight (the core
                    // would drop its pending ISR addition and let the high watermark pass the
                    // joining replica, which the addition then admits behind it: simulator
                    // cluster_replication 225595114309733).
                    Some(e)
                        if e == p.leader_epoch
                            && partition.leader_partition_epoch() == Some(p.partition_epoch) =>
                    {
                        Vec::new()
                    }
                    Some(e) if e == p.leader_epoch => {
                        partition.leader_step(samsa_cluster::replica::LeaderEvent::IsrCommitted {
                            isr: p.isr.clone(),
                            leader_epoch: p.leader_epoch,
                            partition_epoch: p.partition_epoch,
                        })
                    }
                    _ => {
                        let leo = partition.log_end_offset().await;
                        let hw = partition.replication_hw().clamp(0, leo.max(0));
                        let start = samsa_cluster::replica::LeaderStart {
                            replicas: p.replicas.clone(),
                            isr: p.isr.clone(),
                            leader_epoch: p.leader_epoch,
                            partition_epoch: p.partition_epoch,
                            log_end_offset: leo,
                            high_watermark: hw,
                        };
                        let core = crate::replication::new_leader_core(
                            self.node_id,
                            min_isr,
                            start,
                            now_ms,
                            &self.hooks,
                        );
                        self.lock_leader_min_isr().insert(key.clone(), min_isr);
                        tracing::info!(node = self.node_id, topic = %key.0, partition = key.1,
                            epoch = p.leader_epoch, isr = ?p.isr, leo, hw, min_isr, "leading");
                        partition.install_leader(LeaderSlot::new(t.topic_id, core, leo))
                    }
                };
                crate::replication::send_alter_partitions(self, &partition, alter);
                if offsets && self.groups.begin_load(key.1, p.leader_epoch, count) {
                    loads.push((key.1, p.leader_epoch, count));
                }
            }
        }
        for (key, (id, p)) in fresh {
            self.lock_partitions().insert(key.clone(), p);
            self.lock_replicas().insert(key, id);
        }
        for (index, epoch, count) in loads {
            tokio::spawn(crate::group::shell::Groups::load(
                self.clone(),
                index,
                epoch,
                count,
            ));
        }
    }

    /// Starts the follower fetch task of `key` unless one already follows `target`.
    fn ensure_follower(
        self: &Arc<Self>,
        key: &PartitionKey,
        partition: &Arc<Partition<D>>,
        target: FollowTarget,
    ) {
        let mut followers = self.lock_followers();
        if followers.get(key).is_some_and(|(t, _)| *t == target) {
            return;
        }
        if let Some((_, stop)) = followers.remove(key) {
            stop.send(true);
        }
        let (tx, rx) = watch::channel(false);
        followers.insert(key.clone(), (target, tx));
        drop(followers);
        tracing::info!(node = self.node_id, topic = %key.0, partition = key.1,
            leader = target.leader, epoch = target.leader_epoch, "following");
        tokio::spawn(crate::replication::run_follower(
            self.clone(),
            partition.clone(),
            target,
            rx,
        ));
    }

    fn stop_follower(&self, key: &PartitionKey) {
        if let Some((_, stop)) = self.lock_followers().remove(key) {
            stop.send(true);
        }
    }

    fn lock_followers(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<PartitionKey, (FollowTarget, watch::Sender<bool>)>>
    {
        self.followers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cluster mode: ticks every leader core (ISR shrink of lagging followers).
    pub fn tick_leaders(self: &Arc<Self>) {
        let now_ms = self.clock.now_ms();
        for p in self.all_partitions() {
            let alter = p.leader_step(samsa_cluster::replica::LeaderEvent::Tick { now_ms });
            crate::replication::send_alter_partitions(self, &p, alter);
        }
    }

    fn lock_leader_min_isr(&self) -> std::sync::MutexGuard<'_, BTreeMap<PartitionKey, usize>> {
        self.leader_min_isr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn lock_replicas(&self) -> std::sync::MutexGuard<'_, BTreeMap<PartitionKey, Uuid>> {
        self.replicas.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cluster mode: reconciles once now and again after every batch the image applies, until
    /// `stop` turns true.
    pub fn spawn_image_watcher(self: &Arc<Self>, stop: watch::Receiver<bool>) -> JoinHandle<()> {
        let broker = self.clone();
        let mut stop = stop;
        tokio::spawn(async move {
            let Some(mut applied) = broker.cluster.get().map(|c| c.applied()) else {
                return;
            };
            let tick_every =
                Duration::from_millis(crate::replication::REPLICA_LAG_TIME_MAX_MS as u64 / 2);
            let mut next_tick = tokio::time::Instant::now() + tick_every;
            loop {
                broker.reconcile_cluster().await;
                loop {
                    tokio::select! {
                        biased;
                        _ = stop.wait_for(|s| *s) => {
                            broker.stop_all_followers();
                            return;
                        }
                        changed = applied.changed() => {
                            if changed.is_err() {
                                broker.stop_all_followers();
                                return;
                            }
                            break;
                        }
                        () = tokio::time::sleep_until(next_tick) => {
                            next_tick = tokio::time::Instant::now() + tick_every;
                            broker.tick_leaders();
                        }
                    }
                }
            }
        })
    }

    fn stop_all_followers(&self) {
        let all = std::mem::take(&mut *self.lock_followers());
        for (_, (_, stop)) in all {
            stop.send(true);
        }
    }

    /// Whether this node may serve Produce/Fetch/ListOffsets for a partition: always on a
    /// single node; in cluster mode only as the partition's leader in the image
    /// (`NOT_LEADER_OR_FOLLOWER` otherwise, `UNKNOWN_TOPIC_OR_PARTITION` when unknown).
    pub fn lead_check(&self, topic: &str, index: i32) -> Result<(), i16> {
        match self.cluster.get() {
            None => Ok(()),
            Some(c) => c.lead_check(topic, index).map(|_| ()),
        }
    }

    /// Whether this node serves consumer group `group`: always on a single node; in cluster
    /// mode only while it leads the group's partition of `__consumer_offsets` and has loaded
    /// it in that leader epoch (NOT_COORDINATOR when another node leads it, so clients look
    /// the coordinator up again; COORDINATOR_LOAD_IN_PROGRESS while loading;
    /// COORDINATOR_NOT_AVAILABLE before the offsets topic exists).
    pub fn serve_group(&self, group: &str) -> Result<(), i16> {
        use crate::group::shell::Load;
        let Some(c) = self.cluster.get() else {
            return Ok(());
        };
        let partitions = c.partition_count(OFFSETS_TOPIC);
        if partitions == 0 {
            return Err(code::COORDINATOR_NOT_AVAILABLE);
        }
        let index = crate::group::schema::partition_for(group, partitions);
        let led = self
            .partition(OFFSETS_TOPIC, index)
            .and_then(|p| p.leader_slot_epoch());
        let Some(epoch) = led else {
            return Err(code::NOT_COORDINATOR);
        };
        match self.groups.load_state(index) {
            Some(Load::Loaded(e)) if e == epoch => Ok(()),
            Some(Load::Loading(e)) if e == epoch => Err(code::COORDINATOR_LOAD_IN_PROGRESS),
            _ => Err(code::NOT_COORDINATOR),
        }
    }

    /// A topic's id and partition count: the local store on a single node, the image in cluster
    /// mode (where this node may host none of its partitions).
    pub async fn topic_shape(&self, name: &str) -> Option<(Uuid, i32)> {
        match self.cluster.get() {
            Some(c) => c.topic(name).map(|t| {
                let partitions = t.partitions.keys().max().map_or(0, |m| m + 1);
                (Uuid::from_u128(t.topic_id), partitions)
            }),
            None => self
                .meta
                .lock()
                .await
                .topic(name)
                .map(|t| (t.id, t.partitions)),
        }
    }

    /// Every topic's name by id: the local store on a single node, the image in cluster mode.
    pub async fn topic_names_by_id(&self) -> BTreeMap<Uuid, String> {
        match self.cluster.get() {
            Some(c) => c
                .image()
                .topics
                .values()
                .map(|t| (Uuid::from_u128(t.topic_id), t.name.clone()))
                .collect(),
            None => self
                .meta
                .lock()
                .await
                .state()
                .topics
                .values()
                .map(|t| (t.id, t.name.clone()))
                .collect(),
        }
    }

    /// A topic's name from its id: the local store on a single node, the image in cluster mode.
    pub async fn topic_name_by_id(&self, id: Uuid) -> Option<String> {
        match self.cluster.get() {
            Some(c) => c.topic_by_id(id.as_u128()).map(|t| t.name),
            None => self
                .meta
                .lock()
                .await
                .topic_by_id(id)
                .map(|t| t.name.clone()),
        }
    }

    /// Background tasks: the interval flusher, the retention timer, the log cleaner and the
    /// group tick. They end when `stop` turns true.
    pub fn spawn_background(self: &Arc<Self>, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        let broker = self.clone();
        let mut stop_a = stop.clone();
        tasks.push(tokio::spawn(async move {
            // Policy `interval`: one tick serves every partition; the core syncs only dirty ones.
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    biased;
                    _ = stop_a.wait_for(|s| *s) => break,
                    _ = tick.tick() => {}
                }
                let now = broker.clock.now_ms();
                for p in broker.all_partitions() {
                    p.interval_tick(now);
                }
            }
        }));
        let broker = self.clone();
        let stop_b_group = stop.clone();
        let mut stop_b = stop;
        tasks.push(tokio::spawn(async move {
            let every = Duration::from_millis(broker.cfg.retention_check_interval_ms);
            loop {
                tokio::select! {
                    biased;
                    _ = stop_b.wait_for(|s| *s) => break,
                    () = tokio::time::sleep(every) => {}
                }
                let now = broker.clock.now_ms();
                for p in broker.all_partitions() {
                    p.enforce_retention(now).await;
                }
            }
        }));
        tasks.push(crate::cleaner::spawn(self.clone(), stop_b_group.clone()));
        tasks.push(crate::group::shell::spawn_tick(self.clone(), stop_b_group));
        tasks
    }

    /// Clean shutdown: flush, sync and close every partition.
    pub async fn close(&self) {
        for p in self.all_partitions() {
            p.close().await;
        }
    }
}
