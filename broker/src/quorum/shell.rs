//! `QuorumNode`: the shell that runs one `RaftCore` on real I/O through our boundaries: the
//! `QuorumStore` (over `Disk`) for durable state, `Net` for peer connections, `tokio::time` for
//! monotonic time (simulated under madsim). One event loop owns the core and executes its effects
//! strictly in order, awaiting every persist before the next effect.
//! Never reads a wall clock, never draws unseeded randomness, never panics on peer bytes (bad
//! frames close the connection), and every queue has a named bound (full queues drop messages,
//! which Raft tolerates).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use samsa_net::frame::{read_frame, write_frame};
use samsa_net::hooks::Hooks;
use samsa_net::io::Net;
use samsa_net::watch;
use samsa_raft::{
    Body, Config, DirectoryId, Effect, Entry, Event, HardState, Message, NodeId, Planted,
    ProposeError, QuorumInfo, RaftCore, Restored, Role, SnapshotMeta, Voter, MESSAGE_BYTES_MAX,
};
use samsa_storage::disk::Disk;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::store::{QuorumStore, StoreError};

/// Messages waiting for one peer's connection; more are dropped (Raft retransmits).
pub const PEER_QUEUE_MAX: usize = 256;
/// Decoded messages waiting for the event loop; more are dropped.
pub const INBOUND_QUEUE_MAX: usize = 1024;
/// Proposals waiting for the event loop; `propose` waits for room.
pub const PROPOSE_QUEUE_MAX: usize = 256;
/// Proposals appended and not yet applied; beyond this, proposals are refused as busy.
pub const PENDING_PROPOSALS_MAX: usize = 4096;
/// Simultaneous inbound peer connections; further ones are closed at once.
pub const INBOUND_CONNECTIONS_MAX: usize = 64;
/// Reconnect backoff bounds for an outbound peer connection.
pub const RECONNECT_BACKOFF_MIN_MS: u64 = 20;
pub const RECONNECT_BACKOFF_MAX_MS: u64 = 1_000;
/// How long one connect attempt may take.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Peers learned from introductions (non-voters that announced their address); more are
/// ignored. The Raft core bounds the observers it learns by the same number.
pub const LEARNED_PEERS_MAX: usize = samsa_raft::OBSERVERS_MAX;
/// Introductions waiting for the event loop; more are dropped (they are repeated on every
/// reconnect).
pub const ANNOUNCE_QUEUE_MAX: usize = 64;
/// First bytes of an introduction frame (`HELLO`); a Raft message starts with `SR`.
const HELLO_MAGIC: [u8; 2] = *b"SH";
const HELLO_VERSION: u8 = 1;
/// Longest address text an introduction may carry.
const HELLO_ADDR_BYTES_MAX: usize = 256;
/// Effects executed for one outside event before the loop looks at its inputs again (a guard
/// against a feedback loop between the core and the shell).
const EFFECT_ROUNDS_MAX: usize = 64;

/// What the quorum replicates into. Entries arrive in index order, each exactly once since the
/// last `restore` (or start); empty payloads are the leaders' no-op entries.
pub trait StateMachine: Send + 'static {
    fn apply(&mut self, entries: &[Entry]);
    /// Everything applied so far, as bytes `restore` accepts.
    fn snapshot(&self) -> Bytes;
    /// Replaces the whole state with a snapshot's.
    fn restore(&mut self, data: Bytes);
}

/// What the shell did, for tests and the simulator's omniscient recorder. Called after the
/// effect is durable (or executed, for role changes and applies).
pub trait ShellObserver: Send + Sync + 'static {
    fn hard_state_persisted(&self, node: NodeId, dir: DirectoryId, hs: HardState);
    /// A (non-pre-) vote for `candidate` in `term` is being sent.
    fn vote_granted(&self, node: NodeId, dir: DirectoryId, term: u64, candidate: NodeId);
    fn applied(&self, node: NodeId, entries: &[Entry]);
    fn snapshot_installed(&self, node: NodeId, meta: SnapshotMeta);
    fn role_changed(&self, node: NodeId, role: Role, term: u64, leader: Option<NodeId>);
}

/// Static configuration of one quorum node.
#[derive(Clone, Debug)]
pub struct QuorumConfig {
    pub id: NodeId,
    pub listen: SocketAddr,
    /// Every other node's controller address (voters and observers).
    pub peers: BTreeMap<NodeId, SocketAddr>,
    pub voters: Vec<Voter>,
    pub observers: Vec<NodeId>,
    /// A node outside the voter set: the address the voters should replicate to, sent to them
    /// in an introduction on every connection, so they need not be configured with it.
    pub announce: Option<SocketAddr>,
    /// Directory under the disk's root holding the quorum's files.
    pub data_dir: String,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub batch_entries_max: usize,
    /// Take a snapshot once this many entries were applied since the last one (0: never).
    pub snapshot_every_entries: u64,
    pub hooks: Hooks,
}

/// Why the node could not start or stopped.
#[derive(Debug)]
pub enum QuorumError {
    Store(StoreError),
    Init(samsa_raft::InitError),
    Bind(std::io::Error),
}

impl std::fmt::Display for QuorumError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuorumError::Store(e) => write!(f, "{e}"),
            QuorumError::Init(e) => write!(f, "raft init: {e:?}"),
            QuorumError::Bind(e) => write!(f, "quorum listener: {e}"),
        }
    }
}

impl std::error::Error for QuorumError {}

impl From<StoreError> for QuorumError {
    fn from(e: StoreError) -> Self {
        QuorumError::Store(e)
    }
}

/// Why a proposal did not commit (as far as this node knows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposeFailure {
    NotLeader {
        leader_hint: Option<NodeId>,
    },
    PayloadTooLarge,
    Busy,
    /// Appended, but leadership changed before it was applied here: it may or may not commit.
    Unknown,
    /// The node stopped.
    Stopped,
}

/// A snapshot of the node's state for callers (Metadata, DescribeQuorum, tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: NodeId,
    pub directory_id: DirectoryId,
    pub role: Role,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub commit_index: u64,
    pub applied_index: u64,
    /// False once the event loop stopped (disk error or shutdown).
    pub running: bool,
}

enum Request {
    Propose(Bytes, oneshot::Sender<Result<u64, ProposeFailure>>),
    Info(oneshot::Sender<QuorumInfo>),
}

/// Handle to a running node. Cloning is cheap; dropping every handle does not stop the node
/// (call `shutdown`).
#[derive(Clone)]
pub struct QuorumHandle {
    requests: mpsc::Sender<Request>,
    status: watch::Receiver<NodeStatus>,
    shutdown: Arc<watch::Sender<bool>>,
    local_addr: SocketAddr,
}

impl QuorumHandle {
    pub fn status(&self) -> NodeStatus {
        *self.status.borrow()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits until the status changes (or the node stops).
    pub async fn changed(&mut self) -> bool {
        self.status.changed().await.is_ok()
    }

    /// Proposes `payload`; answers its index once this node applied it as leader.
    pub async fn propose(&self, payload: Bytes) -> Result<u64, ProposeFailure> {
        let (tx, rx) = oneshot::channel();
        if self
            .requests
            .send(Request::Propose(payload, tx))
            .await
            .is_err()
        {
            return Err(ProposeFailure::Stopped);
        }
        rx.await.unwrap_or(Err(ProposeFailure::Stopped))
    }

    /// DescribeQuorum's view (replica details only on the leader).
    pub async fn quorum_info(&self) -> Option<QuorumInfo> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(Request::Info(tx)).await.ok()?;
        rx.await.ok()
    }

    pub fn shutdown(&self) {
        self.shutdown.send(true);
    }
}

/// The directory id a fresh data directory gets from `seed` (so a caller that knows the seed
/// of a node's first start can configure the voter set with it).
pub fn fresh_directory_id(seed: u64) -> DirectoryId {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0d1c_7e11_d1d1_d1d1);
    DirectoryId(rng.gen::<u128>() | 1)
}

pub struct QuorumNode;

impl QuorumNode {
    /// Opens the store, builds the core, binds the controller listener and spawns the tasks.
    /// `seed` seeds the core's election timers and, for a fresh data directory, its id.
    pub async fn spawn<D: Disk, N: Net, S: StateMachine>(
        cfg: QuorumConfig,
        disk: D,
        net: N,
        seed: u64,
        mut sm: S,
        observer: Option<Arc<dyn ShellObserver>>,
    ) -> Result<QuorumHandle, QuorumError> {
        let (store, loaded) =
            QuorumStore::open(disk, &cfg.data_dir, fresh_directory_id(seed)).await?;
        let directory_id = loaded
            .directory_id
            .ok_or(StoreError::Corrupt("no directory id"))?;
        if loaded.snapshot.index > 0 {
            sm.restore(loaded.snapshot_data.clone());
        }
        let restored = Restored {
            hard_state: loaded.hard_state,
            snapshot: loaded.snapshot,
            snapshot_data: loaded.snapshot_data,
            log: loaded.log,
            applied_index: loaded.snapshot.index,
        };
        let core_cfg = Config {
            id: cfg.id,
            directory_id,
            voters: cfg.voters.clone(),
            observers: cfg.observers.clone(),
            election_timeout_min_ms: cfg.election_timeout_min_ms,
            election_timeout_max_ms: cfg.election_timeout_max_ms,
            heartbeat_interval_ms: cfg.heartbeat_interval_ms,
            batch_entries_max: cfg.batch_entries_max,
            planted: Planted::from_hooks(&cfg.hooks),
        };
        let start = tokio::time::Instant::now();
        let core = RaftCore::new(core_cfg, seed, restored, 0).map_err(QuorumError::Init)?;
        let listener = net.bind(cfg.listen).await.map_err(QuorumError::Bind)?;
        let local_addr = net.local_addr(&listener).map_err(QuorumError::Bind)?;

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE_MAX);
        let (announce_tx, announce_rx) = mpsc::channel(ANNOUNCE_QUEUE_MAX);
        let (req_tx, req_rx) = mpsc::channel(PROPOSE_QUEUE_MAX);
        let status = NodeStatus {
            id: cfg.id,
            directory_id,
            role: core.role(),
            term: core.term(),
            leader: core.leader(),
            commit_index: core.commit_index(),
            applied_index: core.applied_index(),
            running: true,
        };
        let (status_tx, status_rx) = watch::channel(status);

        tokio::spawn(accept_loop(
            net.clone(),
            listener,
            inbound_tx,
            announce_tx,
            shutdown_rx.clone(),
        ));
        let hello = cfg.announce.map(|addr| encode_hello(cfg.id, addr));
        let spawn_peer: PeerSpawner = {
            let (net, shutdown) = (net.clone(), shutdown_rx.clone());
            Box::new(move |addr| {
                let (tx, rx) = mpsc::channel(PEER_QUEUE_MAX);
                let loop_ = peer_loop(net.clone(), addr, hello.clone(), rx, shutdown.clone());
                tokio::spawn(loop_);
                tx
            })
        };
        let mut peers = BTreeMap::new();
        for (&id, &addr) in &cfg.peers {
            if id == cfg.id {
                continue;
            }
            peers.insert(id, spawn_peer(addr));
        }
        let configured = peers.keys().copied().collect();
        let last_snapshot_index = loaded.snapshot.index;
        let shell = Shell {
            id: cfg.id,
            core,
            store,
            sm,
            observer,
            peers,
            configured,
            learned: BTreeMap::new(),
            spawn_peer,
            start,
            status: status_tx,
            pending: BTreeMap::new(),
            snapshot_every: cfg.snapshot_every_entries,
            last_snapshot_index,
        };
        tokio::spawn(shell.run(inbound_rx, announce_rx, req_rx, shutdown_rx));
        Ok(QuorumHandle {
            requests: req_tx,
            status: status_rx,
            shutdown: Arc::new(shutdown_tx),
            local_addr,
        })
    }
}

/// Starts a connection task to one peer address; answers its outbox.
type PeerSpawner = Box<dyn Fn(SocketAddr) -> mpsc::Sender<Bytes> + Send>;

struct Shell<D: Disk, S: StateMachine> {
    id: NodeId,
    core: RaftCore,
    store: QuorumStore<D>,
    sm: S,
    observer: Option<Arc<dyn ShellObserver>>,
    /// Outboxes by peer: the configured ones and those learned from introductions.
    peers: BTreeMap<NodeId, mpsc::Sender<Bytes>>,
    /// Peers from the configuration: introductions never change them.
    configured: std::collections::BTreeSet<NodeId>,
    /// Peers learned from introductions, with the address each announced.
    learned: BTreeMap<NodeId, SocketAddr>,
    spawn_peer: PeerSpawner,
    start: Instant,
    status: watch::Sender<NodeStatus>,
    /// Proposals appended by this leader: index -> (term, reply).
    pending: BTreeMap<u64, (u64, oneshot::Sender<Result<u64, ProposeFailure>>)>,
    snapshot_every: u64,
    last_snapshot_index: u64,
}

impl<D: Disk, S: StateMachine> Shell<D, S> {
    fn now_ms(&self) -> u64 {
        let now = tokio::time::Instant::now();
        now.saturating_duration_since(self.start).as_millis() as u64
    }

    async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Message>,
        mut announce: mpsc::Receiver<(NodeId, SocketAddr)>,
        mut requests: mpsc::Receiver<Request>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let result = self
            .event_loop(&mut inbound, &mut announce, &mut requests, &mut shutdown)
            .await;
        if let Err(e) = &result {
            tracing::error!(node = %self.id, error = %e, "quorum node stopped");
        }
        for (_, (_, reply)) in std::mem::take(&mut self.pending) {
            let _ = reply.send(Err(ProposeFailure::Stopped));
        }
        self.status.send_modify(|s| s.running = false);
    }

    async fn event_loop(
        &mut self,
        inbound: &mut mpsc::Receiver<Message>,
        announce: &mut mpsc::Receiver<(NodeId, SocketAddr)>,
        requests: &mut mpsc::Receiver<Request>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        // A first tick starts the election timer's clock at once.
        let mut effects = Vec::new();
        self.core.step(self.now_ms(), Event::Tick, &mut effects);
        self.execute(effects).await?;
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let deadline = self
                .core
                .next_deadline_ms()
                .map(|ms| self.start + Duration::from_millis(ms));
            let far = self.start + Duration::from_millis(self.now_ms() + 3_600_000);
            let mut effects = Vec::new();
            tokio::select! {
                biased;
                _ = shutdown.changed() => return Ok(()),
                // Before messages: an introduction precedes its sender's messages.
                Some((id, addr)) = announce.recv() => self.learn_peer(id, addr),
                msg = inbound.recv() => {
                    let Some(msg) = msg else { return Ok(()) };
                    self.core.step(self.now_ms(), Event::Receive(msg), &mut effects);
                }
                req = requests.recv() => {
                    let Some(req) = req else { return Ok(()) };
                    self.on_request(req, &mut effects);
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)) => {
                    self.core.step(self.now_ms(), Event::Tick, &mut effects);
                }
            }
            self.execute(effects).await?;
        }
    }

    /// A non-voter introduced itself: replicate to the address it announced (a new address
    /// replaces the old connection). Configured peers and ids beyond `LEARNED_PEERS_MAX` are
    /// left alone. The core learns the node itself from its messages.
    fn learn_peer(&mut self, id: NodeId, addr: SocketAddr) {
        if id == self.id || self.configured.contains(&id) {
            return;
        }
        match self.learned.get(&id) {
            Some(known) if *known == addr => return,
            Some(_) => {}
            None if self.learned.len() >= LEARNED_PEERS_MAX => return,
            None => {}
        }
        tracing::info!(node = %id, %addr, "metadata quorum: observer introduced itself");
        self.learned.insert(id, addr);
        // Replacing the outbox closes the old one, which ends its connection task.
        self.peers.insert(id, (self.spawn_peer)(addr));
    }

    fn on_request(&mut self, req: Request, effects: &mut Vec<Effect>) {
        match req {
            Request::Info(reply) => {
                let _ = reply.send(self.core.quorum_info(self.now_ms()));
            }
            Request::Propose(payload, reply) => {
                if self.pending.len() >= PENDING_PROPOSALS_MAX {
                    let _ = reply.send(Err(ProposeFailure::Busy));
                    return;
                }
                let now = self.now_ms();
                match self.core.propose(now, payload, effects) {
                    Ok(index) => {
                        self.pending.insert(index, (self.core.term(), reply));
                    }
                    Err(ProposeError::NotLeader { leader_hint }) => {
                        let _ = reply.send(Err(ProposeFailure::NotLeader { leader_hint }));
                    }
                    Err(ProposeError::PayloadTooLarge) => {
                        let _ = reply.send(Err(ProposeFailure::PayloadTooLarge));
                    }
                    Err(ProposeError::LogFull) => {
                        let _ = reply.send(Err(ProposeFailure::Busy));
                    }
                }
            }
        }
    }

    /// Executes effects in order; persists complete before the next effect. Feeds back
    /// `LogPersisted` and `SnapshotTaken` and executes what they produce.
    async fn execute(&mut self, first: Vec<Effect>) -> Result<(), StoreError> {
        let mut queue: VecDeque<Effect> = first.into();
        let mut rounds = 0;
        loop {
            let mut persisted: Option<(u64, u64)> = None;
            let mut snapshot_taken: Option<(u64, u64, Bytes)> = None;
            while let Some(effect) = queue.pop_front() {
                match effect {
                    Effect::PersistHardState(hs) => {
                        self.store.save_hard_state(hs).await?;
                        if let Some(o) = &self.observer {
                            o.hard_state_persisted(self.id, self.core.directory_id(), hs);
                        }
                    }
                    Effect::TruncateLog { from_index } => {
                        self.store.truncate(from_index).await?;
                        self.fail_pending_from(from_index);
                    }
                    Effect::AppendLog { entries } => {
                        self.store.append(&entries).await?;
                        if let Some(last) = entries.last() {
                            persisted = Some((last.index, last.term));
                        }
                    }
                    Effect::CompactLog { up_to_index } => {
                        let up_to = up_to_index.min(self.store.snapshot_meta().index);
                        self.store.compact(up_to).await?;
                    }
                    Effect::ApplySnapshot { index, term, data } => {
                        let meta = SnapshotMeta { index, term };
                        self.store.save_snapshot(meta, &data).await?;
                        self.sm.restore(data);
                        self.last_snapshot_index = index;
                        self.fail_pending_from(0);
                        if let Some(o) = &self.observer {
                            o.snapshot_installed(self.id, meta);
                        }
                    }
                    Effect::Apply { entries } => {
                        self.sm.apply(&entries);
                        if let Some(o) = &self.observer {
                            o.applied(self.id, &entries);
                        }
                        for e in &entries {
                            if let Some((term, reply)) = self.pending.remove(&e.index) {
                                let r = if term == e.term {
                                    Ok(e.index)
                                } else {
                                    Err(ProposeFailure::Unknown)
                                };
                                let _ = reply.send(r);
                            }
                        }
                        if let Some(last) = entries.last() {
                            let due = self.snapshot_every > 0
                                && last.index >= self.last_snapshot_index + self.snapshot_every;
                            if due {
                                snapshot_taken = Some((last.index, last.term, self.sm.snapshot()));
                            }
                        }
                    }
                    Effect::Send { to, msg } => {
                        if let (
                            Some(o),
                            Body::VoteResponse {
                                pre_vote: false,
                                granted: true,
                            },
                        ) = (&self.observer, &msg.body)
                        {
                            o.vote_granted(self.id, self.core.directory_id(), msg.term, to);
                        }
                        if let Some(tx) = self.peers.get(&to) {
                            let _ = tx.try_send(msg.encode());
                        }
                    }
                    Effect::RoleChanged { role, term, leader } => {
                        tracing::info!(?role, term, ?leader, "metadata quorum role");
                        if role != Role::Leader {
                            self.fail_pending_from(0);
                        }
                        if let Some(o) = &self.observer {
                            o.role_changed(self.id, role, term, leader);
                        }
                    }
                }
            }
            self.publish_status();
            let mut effects = Vec::new();
            if let Some((index, term, data)) = snapshot_taken {
                let meta = SnapshotMeta { index, term };
                self.store.save_snapshot(meta, &data).await?;
                self.last_snapshot_index = index;
                self.core.step(
                    self.now_ms(),
                    Event::SnapshotTaken { index, term, data },
                    &mut effects,
                );
            }
            if let Some((up_to, term)) = persisted {
                self.core.step(
                    self.now_ms(),
                    Event::LogPersisted { up_to, term },
                    &mut effects,
                );
            }
            if effects.is_empty() {
                return Ok(());
            }
            rounds += 1;
            assert!(
                rounds <= EFFECT_ROUNDS_MAX,
                "raft core and shell keep feeding each other"
            );
            queue.extend(effects);
        }
    }

    /// Proposals at or above `from_index` will not be applied as proposed: answer Unknown.
    fn fail_pending_from(&mut self, from_index: u64) {
        let gone = self.pending.split_off(&from_index);
        for (_, (_, reply)) in gone {
            let _ = reply.send(Err(ProposeFailure::Unknown));
        }
    }

    fn publish_status(&self) {
        let next = NodeStatus {
            id: self.id,
            directory_id: self.core.directory_id(),
            role: self.core.role(),
            term: self.core.term(),
            leader: self.core.leader(),
            commit_index: self.core.commit_index(),
            applied_index: self.core.applied_index(),
            running: true,
        };
        self.status.send_if_modified(|s| {
            let changed = *s != next;
            *s = next;
            changed
        });
    }
}

/// An introduction: `SH`, version, node id, address text (`HOST:PORT`).
fn encode_hello(id: NodeId, addr: SocketAddr) -> Bytes {
    let text = addr.to_string();
    let mut out = Vec::with_capacity(9 + text.len());
    out.extend_from_slice(&HELLO_MAGIC);
    out.push(HELLO_VERSION);
    out.extend_from_slice(&id.0.to_be_bytes());
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    Bytes::from(out)
}

/// `None` unless `frame` is a well-formed introduction.
fn decode_hello(frame: &[u8]) -> Option<(NodeId, SocketAddr)> {
    let rest = frame.strip_prefix(&HELLO_MAGIC)?;
    let (&version, rest) = rest.split_first()?;
    if version != HELLO_VERSION || rest.len() < 6 {
        return None;
    }
    let id = u32::from_be_bytes(rest[..4].try_into().ok()?);
    let len = usize::from(u16::from_be_bytes(rest[4..6].try_into().ok()?));
    let text = &rest[6..];
    if len > HELLO_ADDR_BYTES_MAX || text.len() != len {
        return None;
    }
    let addr = std::str::from_utf8(text).ok()?.parse().ok()?;
    Some((NodeId(id), addr))
}

async fn accept_loop<N: Net>(
    net: N,
    listener: N::Listener,
    inbound: mpsc::Sender<Message>,
    announce: mpsc::Sender<(NodeId, SocketAddr)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            r = net.accept(&listener) => r,
        };
        let Ok((stream, _peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(RECONNECT_BACKOFF_MIN_MS)).await;
            continue;
        };
        if open.load(Ordering::Relaxed) >= INBOUND_CONNECTIONS_MAX {
            drop(stream);
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let open2 = open.clone();
        let inbound = inbound.clone();
        let announce = announce.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let (mut r, _w) = tokio::io::split(stream);
            loop {
                let frame = tokio::select! {
                    biased;
                    _ = shutdown.changed() => break,
                    f = read_frame(&mut r, MESSAGE_BYTES_MAX) => f,
                };
                let Ok(Some(body)) = frame else { break };
                if body.starts_with(&HELLO_MAGIC) {
                    let Some(hello) = decode_hello(&body) else {
                        break;
                    };
                    // A full queue drops it: the peer introduces itself on every reconnect.
                    let _ = announce.try_send(hello);
                    continue;
                }
                let Ok(msg) = Message::decode(&body) else {
                    break;
                };
                // A full queue drops the message: the sender retransmits.
                let _ = inbound.try_send(msg);
            }
            open2.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Keeps one connection to `addr` and writes the outbox to it, `hello` first on every new
/// connection. Ends at shutdown or when the outbox is closed.
async fn peer_loop<N: Net>(
    net: N,
    addr: SocketAddr,
    hello: Option<Bytes>,
    mut outbox: mpsc::Receiver<Bytes>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff_ms = RECONNECT_BACKOFF_MIN_MS;
    loop {
        let connect =
            tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), net.connect(addr));
        let connected = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            r = connect => r,
        };
        let Ok(Ok(stream)) = connected else {
            // Messages queued while the peer is unreachable are stale by the time it is back.
            loop {
                match outbox.try_recv() {
                    Ok(_) => {}
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
            }
            backoff_ms = (backoff_ms * 2).min(RECONNECT_BACKOFF_MAX_MS);
            continue;
        };
        backoff_ms = RECONNECT_BACKOFF_MIN_MS;
        let (mut r, mut w) = tokio::io::split(stream);
        if let Some(hello) = &hello {
            if write_frame(&mut w, hello).await.is_err() {
                tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                continue;
            }
        }
        let mut probe = [0u8; 1];
        loop {
            let next = tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                // The peer never writes: any read result means the connection is gone.
                _ = r.read(&mut probe) => None,
                m = outbox.recv() => match m {
                    Some(m) => Some(m),
                    None => return,
                },
            };
            let Some(bytes) = next else { break };
            if write_frame(&mut w, &bytes).await.is_err() {
                break;
            }
        }
    }
}

#[cfg(all(test, not(madsim)))]
mod tests;
