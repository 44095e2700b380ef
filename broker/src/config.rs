//! `NodeConfig`: everything a node is told at start, read from TOML (unknown keys are errors) on
//! top of embedded defaults, then validated. Pure data; never reads files or the environment
//! (the binary reads the file and hands the text in).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use serde::Deserialize;

use crate::topic_config::{validate_entry, ConfigError, TopicDefaults};

/// Seven days, Kafka's default `retention.ms` and `segment.ms`.
pub const WEEK_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// Upper bound on `num_partitions` (per topic) and on CreateTopics/CreatePartitions counts.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;
/// Upper bound on `socket_request_max_bytes` (frames are buffered whole).
pub const SOCKET_REQUEST_BYTES_MAX: usize = 1 << 30;
/// Upper bound on `max_connections`.
pub const CONNECTIONS_MAX: usize = 100_000;
/// Most voters `voters` may name (Raft quorums beyond this only slow commits down).
pub const VOTERS_MAX: usize = 15;

/// Node ids a cluster may use (0..this). Each node hands out producer ids `n * this + node_id`
/// from its own durable counter `n`, so two nodes never hand out the same id.
pub const CLUSTER_NODE_IDS_MAX: i64 = 1 << 16;

/// The node's configuration. Field names are the TOML keys.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// This node's id (also the controller id in combined mode).
    pub node_id: i32,
    /// Address to listen on, `HOST:PORT` (port 0 picks a free port).
    pub listen: String,
    /// `HOST:PORT` given to clients in Metadata; default: the actual bound address.
    pub advertised_listen: Option<String>,
    /// Directory for the metadata log and the partition logs.
    pub data_dir: String,
    /// `error`, `warn`, `info`, `debug` or `trace` (RUST_LOG overrides).
    pub log_level: String,
    /// Partitions of an auto-created topic (Kafka's `num.partitions`).
    pub num_partitions: i32,
    /// Create unknown topics on Metadata/Produce (Kafka's `auto.create.topics.enable`).
    pub auto_create_topics_enable: bool,
    /// Largest request frame accepted (Kafka's `socket.request.max.bytes`).
    pub socket_request_max_bytes: usize,
    /// Largest record batch accepted (Kafka's `message.max.bytes`; topic default
    /// `max.message.bytes`).
    pub message_max_bytes: i32,
    /// Most client connections served at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// Default `segment.bytes`: roll the active segment beyond this size.
    pub segment_bytes: i64,
    /// Default `segment.ms`: roll the active segment after this age.
    pub segment_ms: i64,
    /// Default `retention.ms`: delete whole segments older than this; -1 keeps forever.
    pub retention_ms: i64,
    /// Default `retention.bytes`: delete old segments beyond this partition size; -1 = no limit.
    pub retention_bytes: i64,
    /// Default `flush.policy`:
    /// - `fsync` (default): acks=1/-1 are answered only after the batch is fsynced; one sync
    ///   serves every request that arrived before it (group commit). Nothing acked is lost.
    /// - `interval`: fsync every `flush_interval_ms` and answer at once: a power failure can
    ///   lose up to that window of acknowledged records.
    /// - `none`: page cache only (Kafka's default), synced at segment roll and clean shutdown:
    ///   a power failure can lose whatever the OS had not written back.
    pub flush_policy: String,
    /// Default `flush.interval.ms` (policy `interval`).
    pub flush_interval_ms: i64,
    /// Default `message.timestamp.type`: `CreateTime` or `LogAppendTime`.
    pub message_timestamp_type: String,
    /// How often retention is enforced.
    pub retention_check_interval_ms: u64,
    /// The seed of every random choice the node makes (cluster id, topic ids).
    pub seed: u64,
    /// Kafka's `group.initial.rebalance.delay.ms` (Kafka: 3000; shorter here).
    pub group_initial_rebalance_delay_ms: u64,
    /// Kafka's `group.min.session.timeout.ms`.
    pub group_min_session_timeout_ms: i32,
    /// Kafka's `group.max.session.timeout.ms`.
    pub group_max_session_timeout_ms: i32,
    /// Kafka's `offsets.topic.num.partitions` (partitions of `__consumer_offsets`).
    pub offsets_topic_num_partitions: i32,
    /// Kafka's `group.consumer.session.timeout.ms` (KIP-848 groups).
    pub group_consumer_session_timeout_ms: u64,
    /// Kafka's `group.consumer.heartbeat.interval.ms` (KIP-848 groups).
    pub group_consumer_heartbeat_interval_ms: i32,
    /// Cluster mode: the metadata quorum's voters, `ID@HOST:PORT,...` (their controller
    /// addresses). Unset (the default): a single node that is its own controller, with its
    /// metadata in its own log.
    pub voters: Option<String>,
    /// Cluster mode: where this node's quorum peer listener binds, `HOST:PORT`; default: this
    /// node's own entry in `voters`.
    pub controller_listen: Option<String>,
    /// Cluster mode: `broker,controller` (default), `broker` or `controller`.
    pub process_roles: String,
    /// Cluster mode: a broker that has not heartbeaten for this long is fenced.
    pub broker_session_timeout_ms: u64,
    /// Cluster mode: how often a broker heartbeats to the active controller.
    pub broker_heartbeat_interval_ms: u64,
}

/// Cluster-mode settings, parsed and checked (`NodeConfig::cluster`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Voter id -> controller address, in id order.
    pub voters: BTreeMap<i32, SocketAddr>,
    /// Voter id -> pinned directory id (`ID@HOST:PORT:DIRID`): only a node whose quorum
    /// directory carries that id votes or leads as that voter.
    pub voter_directories: BTreeMap<i32, u128>,
    /// Where this node's quorum listener binds.
    pub controller_listen: SocketAddr,
    pub broker: bool,
    pub controller: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: 1,
            listen: "127.0.0.1:9092".to_string(),
            advertised_listen: None,
            data_dir: "./samsa-data".to_string(),
            log_level: "info".to_string(),
            num_partitions: 1,
            auto_create_topics_enable: true,
            socket_request_max_bytes: 104_857_600,
            message_max_bytes: 1_048_588,
            max_connections: 10_000,
            segment_bytes: 1 << 30,
            segment_ms: WEEK_MS,
            retention_ms: WEEK_MS,
            retention_bytes: -1,
            flush_policy: "fsync".to_string(),
            flush_interval_ms: 1000,
            message_timestamp_type: "CreateTime".to_string(),
            retention_check_interval_ms: 300_000,
            seed: 0,
            group_initial_rebalance_delay_ms: 300,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            offsets_topic_num_partitions: 1,
            group_consumer_session_timeout_ms: 45_000,
            group_consumer_heartbeat_interval_ms: 5_000,
            voters: None,
            controller_listen: None,
            process_roles: "broker,controller".to_string(),
            broker_session_timeout_ms: 9_000,
            broker_heartbeat_interval_ms: 1_000,
        }
    }
}

/// A configuration that cannot be used, with a message naming the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadConfig(pub String);

impl fmt::Display for BadConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad configuration: {}", self.0)
    }
}

impl std::error::Error for BadConfig {}

impl From<ConfigError> for BadConfig {
    fn from(e: ConfigError) -> Self {
        BadConfig(e.0)
    }
}

impl NodeConfig {
    /// Parses TOML text over the embedded defaults and validates the result.
    pub fn from_toml(text: &str) -> Result<NodeConfig, BadConfig> {
        let cfg: NodeConfig = toml::from_str(text).map_err(|e| BadConfig(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every value; the message names the key.
    pub fn validate(&self) -> Result<(), BadConfig> {
        if self.node_id < 0 {
            return Err(BadConfig(format!(
                "node_id must be >= 0, got {}",
                self.node_id
            )));
        }
        self.listen_addr()?;
        if let Some(adv) = &self.advertised_listen {
            split_host_port(adv)
                .ok_or_else(|| BadConfig(format!("advertised_listen {adv:?} is not HOST:PORT")))?;
        }
        if self.data_dir.is_empty() {
            return Err(BadConfig("data_dir must not be empty".to_string()));
        }
        if !matches!(
            self.log_level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            return Err(BadConfig(format!(
                "log_level {:?}: expected error, warn, info, debug or trace",
                self.log_level
            )));
        }
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&self.num_partitions) {
            return Err(BadConfig(format!(
                "num_partitions must be in [1, {PARTITIONS_PER_TOPIC_MAX}], got {}",
                self.num_partitions
            )));
        }
        if !(1024..=SOCKET_REQUEST_BYTES_MAX).contains(&self.socket_request_max_bytes) {
            return Err(BadConfig(format!(
                "socket_request_max_bytes must be in [1024, {SOCKET_REQUEST_BYTES_MAX}], got {}",
                self.socket_request_max_bytes
            )));
        }
        if self.message_max_bytes < 64 {
            return Err(BadConfig(format!(
                "message_max_bytes must be >= 64, got {}",
                self.message_max_bytes
            )));
        }
        if !(1..=CONNECTIONS_MAX).contains(&self.max_connections) {
            return Err(BadConfig(format!(
                "max_connections must be in [1, {CONNECTIONS_MAX}], got {}",
                self.max_connections
            )));
        }
        if self.retention_check_interval_ms == 0 {
            return Err(BadConfig(
                "retention_check_interval_ms must be > 0".to_string(),
            ));
        }
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&self.offsets_topic_num_partitions) {
            return Err(BadConfig(format!(
                "offsets_topic_num_partitions must be in [1, {PARTITIONS_PER_TOPIC_MAX}], got {}",
                self.offsets_topic_num_partitions
            )));
        }
        if self.group_min_session_timeout_ms < 1
            || self.group_max_session_timeout_ms < self.group_min_session_timeout_ms
        {
            return Err(BadConfig(
                "need 1 <= group_min_session_timeout_ms <= group_max_session_timeout_ms"
                    .to_string(),
            ));
        }
        if self.group_consumer_session_timeout_ms == 0
            || self.group_consumer_heartbeat_interval_ms < 1
        {
            return Err(BadConfig(
                "group_consumer_session_timeout_ms and group_consumer_heartbeat_interval_ms \
                 must be > 0"
                    .to_string(),
            ));
        }
        self.cluster()?;
        // The topic defaults are validated under their Kafka names, with the TOML key named.
        for (key, name, value) in self.topic_default_entries() {
            validate_entry(name, &value).map_err(|e| BadConfig(format!("{key}: {e}")))?;
        }
        Ok(())
    }

    /// Cluster mode's settings: `None` without `voters` (single node), an error naming the key
    /// for a bad voter list, duplicate ids, bad roles, or a controller missing from `voters`.
    pub fn cluster(&self) -> Result<Option<ClusterConfig>, BadConfig> {
        let Some(text) = &self.voters else {
            if self.controller_listen.is_some() {
                return Err(BadConfig(
                    "controller_listen needs voters (cluster mode)".to_string(),
                ));
            }
            if self.process_roles != "broker,controller" {
                return Err(BadConfig(
                    "process_roles needs voters (cluster mode)".to_string(),
                ));
            }
            return Ok(None);
        };
        let voters = parse_voters(text)?;
        let voter_directories = parse_voter_directories(text)?;
        if i64::from(self.node_id) >= CLUSTER_NODE_IDS_MAX {
            // Producer ids are striped by node id in cluster mode (handlers/admin.rs).
            return Err(BadConfig(format!(
                "node_id must be below {CLUSTER_NODE_IDS_MAX} in cluster mode, got {}",
                self.node_id
            )));
        }
        let (broker, controller) = match self.process_roles.as_str() {
            "broker,controller" | "controller,broker" => (true, true),
            "controller" => (false, true),
            "broker" => (true, false),
            other => {
                return Err(BadConfig(format!(
                    "process_roles {other:?}: expected broker,controller, broker or controller"
                )))
            }
        };
        let own = voters.get(&self.node_id).copied();
        if controller && own.is_none() {
            return Err(BadConfig(format!(
                "voters must include this node (node_id {}) since it is a controller",
                self.node_id
            )));
        }
        if !controller && own.is_some() {
            return Err(BadConfig(format!(
                "process_roles = broker: voters must not include this node (node_id {}); a \
                 broker-only node follows the metadata quorum as an observer",
                self.node_id
            )));
        }
        let controller_listen = match &self.controller_listen {
            Some(text) => parse_addr("controller_listen", text)?,
            None if !controller => {
                return Err(BadConfig(
                    "process_roles = broker needs controller_listen: the address (HOST:PORT) \
                     the voters replicate the metadata log to"
                        .to_string(),
                ))
            }
            None => own.ok_or_else(|| BadConfig("controller_listen is required".to_string()))?,
        };
        if !controller && (controller_listen.ip().is_unspecified() || controller_listen.port() == 0)
        {
            return Err(BadConfig(format!(
                "process_roles = broker: controller_listen {controller_listen} is announced to \
                 the voters, so it needs a concrete address and port"
            )));
        }
        if self.broker_session_timeout_ms == 0
            || self.broker_heartbeat_interval_ms == 0
            || self.broker_heartbeat_interval_ms >= self.broker_session_timeout_ms
        {
            return Err(BadConfig(
                "need 0 < broker_heartbeat_interval_ms < broker_session_timeout_ms".to_string(),
            ));
        }
        Ok(Some(ClusterConfig {
            voters,
            voter_directories,
            controller_listen,
            broker,
            controller,
        }))
    }

    /// The group coordinator's settings.
    pub fn group_config(&self) -> crate::group::GroupConfig {
        crate::group::GroupConfig {
            initial_rebalance_delay_ms: self.group_initial_rebalance_delay_ms,
            min_session_timeout_ms: self.group_min_session_timeout_ms,
            max_session_timeout_ms: self.group_max_session_timeout_ms,
            consumer_session_timeout_ms: self.group_consumer_session_timeout_ms,
            consumer_heartbeat_interval_ms: self.group_consumer_heartbeat_interval_ms,
        }
    }

    fn topic_default_entries(&self) -> Vec<(&'static str, &'static str, String)> {
        vec![
            (
                "segment_bytes",
                "segment.bytes",
                self.segment_bytes.to_string(),
            ),
            ("segment_ms", "segment.ms", self.segment_ms.to_string()),
            (
                "retention_ms",
                "retention.ms",
                self.retention_ms.to_string(),
            ),
            (
                "retention_bytes",
                "retention.bytes",
                self.retention_bytes.to_string(),
            ),
            ("flush_policy", "flush.policy", self.flush_policy.clone()),
            (
                "flush_interval_ms",
                "flush.interval.ms",
                self.flush_interval_ms.to_string(),
            ),
            (
                "message_timestamp_type",
                "message.timestamp.type",
                self.message_timestamp_type.clone(),
            ),
            (
                "message_max_bytes",
                "max.message.bytes",
                self.message_max_bytes.to_string(),
            ),
        ]
    }

    /// The defaults every topic starts from.
    pub fn topic_defaults(&self) -> Result<TopicDefaults, BadConfig> {
        let mut values = BTreeMap::new();
        for (_, name, value) in self.topic_default_entries() {
            values.insert(name.to_string(), value);
        }
        values.insert("cleanup.policy".to_string(), "delete".to_string());
        values.insert("compression.type".to_string(), "producer".to_string());
        values.insert("min.insync.replicas".to_string(), "1".to_string());
        Ok(TopicDefaults::new(values)?)
    }

    /// `listen` as a socket address (a host name other than `localhost` is not resolved).
    pub fn listen_addr(&self) -> Result<SocketAddr, BadConfig> {
        parse_addr("listen", &self.listen)
    }

    /// The host and port clients are told to use, given the address actually bound.
    pub fn advertised(&self, bound: SocketAddr) -> (String, i32) {
        if let Some((host, port)) = self.advertised_listen.as_deref().and_then(split_host_port) {
            return (host.to_string(), i32::from(port));
        }
        let host = if bound.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            bound.ip().to_string()
        };
        (host, i32::from(bound.port()))
    }
}

/// `HOST:PORT` as a socket address; `key` names the setting in the error. Only `localhost` is
/// resolved (to 127.0.0.1); any other host must be an IP address.
fn parse_addr(key: &str, text: &str) -> Result<SocketAddr, BadConfig> {
    let (host, port) = split_host_port(text)
        .ok_or_else(|| BadConfig(format!("{key} {text:?} is not HOST:PORT")))?;
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = host
        .parse()
        .map_err(|_| BadConfig(format!("{key} {text:?}: host must be an IP address")))?;
    Ok(SocketAddr::new(ip, port))
}

/// Parses `ID@HOST:PORT,ID@HOST:PORT,...` (at most `VOTERS_MAX`, ids >= 0 and distinct); an
/// entry may pin the voter's directory id: `ID@HOST:PORT:DIRID` (32 hex digits, as printed by
/// `samsa format`). The addresses, in id order.
pub fn parse_voters(text: &str) -> Result<BTreeMap<i32, SocketAddr>, BadConfig> {
    Ok(parse_voter_entries(text)?
        .into_iter()
        .map(|(id, (addr, _))| (id, addr))
        .collect())
}

/// The pinned directory ids of `voters` (entries without one are absent).
pub fn parse_voter_directories(text: &str) -> Result<BTreeMap<i32, u128>, BadConfig> {
    Ok(parse_voter_entries(text)?
        .into_iter()
        .filter_map(|(id, (_, dir))| Some((id, dir?)))
        .collect())
}

/// Hex digits of a pinned directory id.
pub const DIRECTORY_ID_HEX_DIGITS: usize = 32;

type VoterEntry = (SocketAddr, Option<u128>);

fn parse_voter_entries(text: &str) -> Result<BTreeMap<i32, VoterEntry>, BadConfig> {
    let mut voters = BTreeMap::new();
    for item in text.split(',').map(str::trim) {
        if voters.len() >= VOTERS_MAX {
            return Err(BadConfig(format!("voters: more than {VOTERS_MAX} voters")));
        }
        let (id, rest) = item
            .split_once('@')
            .ok_or_else(|| BadConfig(format!("voters: {item:?} is not ID@HOST:PORT")))?;
        let id: i32 = id
            .parse()
            .ok()
            .filter(|id| *id >= 0)
            .ok_or_else(|| BadConfig(format!("voters: bad node id in {item:?}")))?;
        // A port has at most 5 digits, so a last field of 32 hex digits is a directory id.
        let (addr, dir) = match rest.rsplit_once(':') {
            Some((addr, dir)) if dir.len() == DIRECTORY_ID_HEX_DIGITS => {
                let dir = u128::from_str_radix(dir, 16)
                    .ok()
                    .filter(|d| *d != 0)
                    .ok_or_else(|| BadConfig(format!("voters: bad directory id in {item:?}")))?;
                (addr, Some(dir))
            }
            _ => (rest, None),
        };
        let addr = parse_addr("voters", addr)?;
        if voters.insert(id, (addr, dir)).is_some() {
            return Err(BadConfig(format!("voters: node id {id} appears twice")));
        }
    }
    Ok(voters)
}

/// Splits `HOST:PORT` (the port is after the last colon).
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    if host.is_empty() {
        return None;
    }
    Some((host, port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones_and_valid() {
        let cfg = NodeConfig::from_toml("").expect("empty file = defaults");
        assert_eq!(cfg, NodeConfig::default());
        assert_eq!(cfg.node_id, 1);
        assert_eq!(cfg.listen, "127.0.0.1:9092");
        assert_eq!(cfg.data_dir, "./samsa-data");
        assert_eq!(cfg.retention_ms, WEEK_MS);
        assert_eq!(cfg.flush_policy, "fsync");
        let d = cfg.topic_defaults().expect("defaults");
        assert_eq!(d.get("retention.ms"), Some("604800000"));
    }

    #[test]
    fn file_values_override_defaults() {
        let cfg = NodeConfig::from_toml("node_id = 7\nlisten = \"127.0.0.1:0\"\nseed = 42\n")
            .expect("valid");
        assert_eq!(cfg.node_id, 7);
        assert_eq!(cfg.listen_addr().expect("addr").port(), 0);
        assert_eq!(cfg.seed, 42);
        assert_eq!(cfg.num_partitions, 1);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_clear_errors() {
        let e = NodeConfig::from_toml("nodeid = 3\n").expect_err("unknown key");
        assert!(e.to_string().contains("nodeid"), "{e}");
        let e = NodeConfig::from_toml("flush_policy = \"sometimes\"\n").expect_err("bad policy");
        assert!(e.to_string().contains("flush_policy"), "{e}");
        let e = NodeConfig::from_toml("listen = \"nowhere\"\n").expect_err("bad listen");
        assert!(e.to_string().contains("listen"), "{e}");
        let e = NodeConfig::from_toml("num_partitions = 0\n").expect_err("bad partitions");
        assert!(e.to_string().contains("num_partitions"), "{e}");
    }

    #[test]
    fn cluster_settings_parse_and_bad_ones_are_named() {
        assert_eq!(NodeConfig::default().cluster().expect("ok"), None);
        let cfg = NodeConfig::from_toml(
            "node_id = 2\nvoters = \"1@127.0.0.1:19093, 2@localhost:19095,3@127.0.0.1:19097\"\n",
        )
        .expect("valid");
        let c = cfg.cluster().expect("ok").expect("cluster mode");
        assert_eq!(c.voters.len(), 3);
        assert_eq!(
            c.controller_listen,
            "127.0.0.1:19095".parse().expect("addr")
        );
        assert!(c.broker && c.controller);
        assert!(c.voter_directories.is_empty());
        let pinned = NodeConfig::from_toml(
            "node_id = 2\nvoters = \"1@127.0.0.1:19093:0123456789abcdef0123456789ABCDEF, \
             2@[::1]:19095:00000000000000000000000000000002,3@localhost:19097\"\n",
        )
        .expect("valid")
        .cluster()
        .expect("ok")
        .expect("cluster mode");
        assert_eq!(
            pinned.voters.values().map(|a| a.port()).collect::<Vec<_>>(),
            [19093, 19095, 19097]
        );
        assert_eq!(
            pinned.voter_directories,
            BTreeMap::from([(1, 0x0123456789abcdef0123456789abcdef_u128), (2, 2)])
        );
        assert_eq!(pinned.controller_listen.port(), 19095);
        let bad = [
            ("voters = \"1@127.0.0.1:1,1@127.0.0.1:2\"", "twice"),
            ("voters = \"1-127.0.0.1:1\"", "ID@HOST:PORT"),
            ("voters = \"x@127.0.0.1:1\"", "bad node id"),
            ("voters = \"1@127.0.0.1\"", "HOST:PORT"),
            (
                "voters = \"1@127.0.0.1:1:0000000000000000000000000000000g\"",
                "bad directory id",
            ),
            (
                "voters = \"1@127.0.0.1:1:00000000000000000000000000000000\"",
                "bad directory id",
            ),
            ("voters = \"1@127.0.0.1:1:abc\"", "HOST:PORT"),
            ("voters = \"2@127.0.0.1:1\"", "must include this node"),
            (
                "voters = \"1@127.0.0.1:1\"\nprocess_roles = \"cook\"",
                "process_roles",
            ),
            ("controller_listen = \"127.0.0.1:1\"", "needs voters"),
            (
                "node_id = 4\nvoters = \"1@127.0.0.1:1\"\nprocess_roles = \"broker\"",
                "needs controller_listen",
            ),
            (
                "voters = \"1@127.0.0.1:1\"\nprocess_roles = \"broker\"\n\
                 controller_listen = \"127.0.0.1:2\"",
                "must not include this node",
            ),
            (
                "node_id = 4\nvoters = \"1@127.0.0.1:1\"\nprocess_roles = \"broker\"\n\
                 controller_listen = \"0.0.0.0:2\"",
                "concrete address",
            ),
            (
                "node_id = 65536\nvoters = \"65536@127.0.0.1:1\"",
                "below 65536 in cluster mode",
            ),
        ];
        for (text, needle) in bad {
            let e = NodeConfig::from_toml(text).expect_err(text);
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
        let cfg = NodeConfig::from_toml(
            "voters = \"1@127.0.0.1:1\"\ncontroller_listen = \"0.0.0.0:7\"\n\
             process_roles = \"controller\"",
        )
        .expect("valid");
        let c = cfg.cluster().expect("ok").expect("cluster");
        assert!(!c.broker && c.controller);
        assert_eq!(c.controller_listen.port(), 7);
        let cfg = NodeConfig::from_toml(
            "node_id = 4\nvoters = \"1@127.0.0.1:1\"\ncontroller_listen = \"127.0.0.1:8\"\n\
             process_roles = \"broker\"",
        )
        .expect("valid");
        let c = cfg.cluster().expect("ok").expect("cluster");
        assert!(c.broker && !c.controller);
        assert_eq!(c.controller_listen.port(), 8);
    }

    #[test]
    fn advertised_defaults_to_bound_address() {
        let cfg = NodeConfig::default();
        let bound: SocketAddr = "127.0.0.1:40001".parse().expect("addr");
        assert_eq!(cfg.advertised(bound), ("127.0.0.1".to_string(), 40001));
        let cfg = NodeConfig {
            advertised_listen: Some("broker.example:19092".to_string()),
            ..NodeConfig::default()
        };
        assert_eq!(cfg.advertised(bound), ("broker.example".to_string(), 19092));
    }
}
