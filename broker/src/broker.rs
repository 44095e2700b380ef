//! `Broker`: the state one node shares between its connections: config, metadata store, the open
//! partitions and the long-poll wake-up. Topic changes go through the metadata store first
//! (durable), then open/close partitions. Never reads the wall clock except through `Clock`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use samsa_net::{Clock, Hooks};
use samsa_storage::Disk;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::config::NodeConfig;
use crate::metadata::{MetaError, MetadataStore, TopicMeta};
use crate::node::NodeError;
use crate::partition::Partition;
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
            cfg,
        });
        for topic in &topics {
            broker
                .open_partitions(topic, 0)
                .await
                .map_err(NodeError::Storage)?;
        }
        broker.remove_orphans().await;
        broker.groups.set_hooks(broker.hooks.clone());
        broker.groups.replay(&broker).await;
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
