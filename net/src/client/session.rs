//! `Session`: the connections one client holds, keyed by broker address, plus the partition
//! leaders the last Metadata answer named. Requests not aimed at a leader go to a bootstrap
//! broker. A connection that saw an ambiguous failure is dropped, so a late answer can never be
//! taken for the next request's. Never connects to more than `CONNECTIONS_MAX` brokers at once.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::Request;

use super::admin::{metadata_from, metadata_request, Metadata};
use super::{ClientConfig, ClientError, Connection, BOOTSTRAP_ADDRS_MAX, RETRIES_MAX};
use crate::error::code;
use crate::io::Net;

/// Open connections per client.
pub const CONNECTIONS_MAX: usize = 64;
/// Cached partition leaders per client.
pub const LEADERS_MAX: usize = 100_000;

pub(crate) struct Session<N: Net> {
    net: N,
    bootstrap: Vec<SocketAddr>,
    config: ClientConfig,
    conns: BTreeMap<SocketAddr, Connection<N>>,
    /// The bootstrap connection in use for requests that may go to any broker.
    any: Option<SocketAddr>,
    /// Index of the bootstrap address to try first next time (rotates on failure).
    next_addr: usize,
    /// (topic, partition) -> the leader's address, from Metadata.
    leaders: BTreeMap<(String, i32), SocketAddr>,
}

impl<N: Net> Session<N> {
    pub(crate) fn new(net: N, mut bootstrap: Vec<SocketAddr>, config: ClientConfig) -> Self {
        bootstrap.truncate(BOOTSTRAP_ADDRS_MAX);
        Session {
            net,
            bootstrap,
            config,
            conns: BTreeMap::new(),
            any: None,
            next_addr: 0,
            leaders: BTreeMap::new(),
        }
    }

    pub(crate) fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Opens (or reuses) the connection to `target`, or to a bootstrap broker when `None`.
    /// Returns its address.
    async fn connect(&mut self, target: Option<SocketAddr>) -> Result<SocketAddr, ClientError> {
        if let Some(addr) = target {
            if !self.conns.contains_key(&addr) {
                match Connection::connect(&self.net, addr, &self.config).await {
                    Ok(conn) => self.insert(conn),
                    Err(e) => {
                        // Unreachable leader: route through a bootstrap broker until Metadata
                        // names one again.
                        self.leaders.retain(|_, a| *a != addr);
                        return Err(e);
                    }
                }
            }
            return Ok(addr);
        }
        if let Some(addr) = self.any.filter(|a| self.conns.contains_key(a)) {
            return Ok(addr);
        }
        if self.bootstrap.is_empty() {
            return Err(ClientError::InvalidInput {
                reason: "no bootstrap address",
            });
        }
        let mut last = None;
        for _ in 0..self.bootstrap.len() {
            let addr = self.bootstrap[self.next_addr % self.bootstrap.len()];
            let existing = self.conns.contains_key(&addr);
            let connected = if existing {
                Ok(())
            } else {
                Connection::connect(&self.net, addr, &self.config)
                    .await
                    .map(|conn| self.insert(conn))
            };
            match connected {
                Ok(()) => {
                    self.any = Some(addr);
                    return Ok(addr);
                }
                Err(e) => {
                    self.next_addr = (self.next_addr + 1) % self.bootstrap.len();
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(ClientError::Connect {
            reason: "no bootstrap address answered".into(),
        }))
    }

    fn insert(&mut self, conn: Connection<N>) {
        if self.conns.len() >= CONNECTIONS_MAX {
            // Evict one that is not the bootstrap connection (deterministic: the lowest address).
            let victim = self.conns.keys().copied().find(|a| Some(*a) != self.any);
            if let Some(victim) = victim {
                self.conns.remove(&victim);
            }
        }
        self.conns.insert(conn.addr(), conn);
    }

    fn drop_connection(&mut self, addr: SocketAddr) {
        self.conns.remove(&addr);
        if self.any == Some(addr) {
            self.any = None;
            if !self.bootstrap.is_empty() {
                self.next_addr = (self.next_addr + 1) % self.bootstrap.len();
            }
        }
        // Whoever led through this address may have moved: ask Metadata again when needed.
        self.leaders.retain(|_, a| *a != addr);
    }

    /// The version a bootstrap connection uses for `api_key`.
    pub(crate) async fn version(&mut self, api_key: i16) -> Result<i16, ClientError> {
        let addr = self.connect(None).await?;
        self.conns
            .get(&addr)
            .and_then(|c| c.version(api_key))
            .ok_or(ClientError::Unsupported { api_key })
    }

    /// Sends `request` to `target` (a bootstrap broker when `None`) and waits for its answer.
    pub(crate) async fn call_to<R: Request>(
        &mut self,
        target: Option<SocketAddr>,
        request: &R,
        extra_wait: Duration,
    ) -> Result<R::Response, ClientError> {
        let addr = self.connect(target).await?;
        let Some(conn) = self.conns.get_mut(&addr) else {
            return Err(ClientError::Connect {
                reason: format!("{addr}: connection vanished"),
            });
        };
        let result = conn.call(request, extra_wait).await;
        if let Err(e) = &result {
            if e.poisons_connection() {
                self.drop_connection(addr);
            }
        }
        result
    }

    pub(crate) async fn call<R: Request>(
        &mut self,
        request: &R,
        extra_wait: Duration,
    ) -> Result<R::Response, ClientError> {
        self.call_to(None, request, extra_wait).await
    }

    /// Sends `request` to `target` without waiting for an answer (Produce with acks=0).
    pub(crate) async fn send_only_to<R: Request>(
        &mut self,
        target: Option<SocketAddr>,
        request: &R,
    ) -> Result<(), ClientError> {
        let addr = self.connect(target).await?;
        let Some(conn) = self.conns.get_mut(&addr) else {
            return Err(ClientError::Connect {
                reason: format!("{addr}: connection vanished"),
            });
        };
        let result = conn.send_only(request).await;
        if let Err(e) = &result {
            if e.poisons_connection() {
                self.drop_connection(addr);
            }
        }
        result
    }

    /// Runs a read-only call, retrying transport failures up to `config.retries` times.
    pub(crate) async fn call_read<R: Request>(
        &mut self,
        request: &R,
        extra_wait: Duration,
    ) -> Result<R::Response, ClientError> {
        let attempts = self.config.retries.min(RETRIES_MAX) + 1;
        let backoff = Duration::from_millis(self.config.retry_backoff_ms);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.call(request, extra_wait).await {
                Err(e) if e.is_retriable() && attempt < attempts => {
                    tokio::time::sleep(backoff).await;
                }
                result => return result,
            }
        }
    }

    /// A read aimed at a partition's leader: retries transport failures, and answers whose
    /// `partition_error` says the leader moved (after asking Metadata again), up to
    /// `config.retries` times. The last answer is returned as it is.
    pub(crate) async fn call_partition<R: Request>(
        &mut self,
        topic: &str,
        partition: i32,
        request: &R,
        extra_wait: Duration,
        partition_error: impl Fn(&R::Response) -> Option<i16>,
    ) -> Result<R::Response, ClientError> {
        let attempts = self.config.retries.min(RETRIES_MAX) + 1;
        let backoff = Duration::from_millis(self.config.retry_backoff_ms);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let target = self.leader(topic, partition);
            let result = self.call_to(target, request, extra_wait).await;
            let retry = match &result {
                Ok(response) => {
                    let moved = partition_error(response).is_some_and(|c| {
                        c == code::NOT_LEADER_OR_FOLLOWER || c == code::LEADER_NOT_AVAILABLE
                    });
                    if moved && attempt < attempts {
                        self.leader_moved(topic, partition).await;
                    }
                    moved
                }
                Err(e) => e.is_retriable(),
            };
            if !retry || attempt >= attempts {
                return result;
            }
            tokio::time::sleep(backoff).await;
        }
    }

    /// Metadata for `topics` (all when `None`) from a bootstrap broker; remembers the leaders.
    pub(crate) async fn metadata(
        &mut self,
        topics: Option<Vec<String>>,
    ) -> Result<Metadata, ClientError> {
        let version = self.version(ApiKey::Metadata as i16).await?;
        let request = metadata_request(version, topics.as_deref());
        let response = self.call_read(&request, Duration::ZERO).await?;
        let metadata = metadata_from(&response);
        self.learn_leaders(&metadata);
        Ok(metadata)
    }

    fn learn_leaders(&mut self, metadata: &Metadata) {
        // With a single broker there is nothing to route: keep using the bootstrap address,
        // which is known to be reachable even if the advertised one is not.
        if metadata.brokers.len() <= 1 {
            return;
        }
        let addrs: BTreeMap<i32, SocketAddr> = metadata
            .brokers
            .iter()
            .filter_map(|b| {
                let ip: IpAddr = b.host.parse().ok()?;
                let port = u16::try_from(b.port).ok()?;
                (!ip.is_unspecified()).then_some((b.node_id, SocketAddr::new(ip, port)))
            })
            .collect();
        for topic in &metadata.topics {
            for p in &topic.partitions {
                let key = (topic.name.clone(), p.partition);
                match addrs.get(&p.leader_id) {
                    Some(addr) if p.error_code == 0 => {
                        if self.leaders.len() < LEADERS_MAX || self.leaders.contains_key(&key) {
                            self.leaders.insert(key, *addr);
                        }
                    }
                    _ => {
                        self.leaders.remove(&key);
                    }
                }
            }
        }
    }

    /// Where requests for `topic`/`partition` go: its known leader, else a bootstrap broker.
    pub(crate) fn leader(&self, topic: &str, partition: i32) -> Option<SocketAddr> {
        self.leaders.get(&(topic.to_owned(), partition)).copied()
    }

    /// The partition's leader moved or is unknown: forget it and ask Metadata again. Failures
    /// only mean the next request goes to a bootstrap broker.
    pub(crate) async fn leader_moved(&mut self, topic: &str, partition: i32) {
        self.leaders.remove(&(topic.to_owned(), partition));
        let _ = self.metadata(Some(vec![topic.to_owned()])).await;
    }
}
