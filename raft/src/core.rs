//! `RaftCore`: the metadata quorum's Raft as a sans-IO state machine. Events go in through
//! `step` (and `propose`), effects come out in the order the shell must execute them.
//! Never performs I/O, never reads a clock (time arrives as `now_ms`), never draws randomness
//! except from its own seeded `ChaCha8Rng`, never panics on a message from the network.
//!
//! Protocol: Raft with pre-vote, check-quorum, a no-op entry per new leader, push replication
//! (`AppendEntries`) with conflict-term backtracking, chunked `InstallSnapshot`.
//!
//! Directory-id rule (KIP-853's idea): the voter set records each voter as `(id, directory id)`.
//! A node counts as that voter only while its own directory id matches the recorded one. A node
//! that does not match (for example after its disk was wiped and it came back with a fresh
//! directory id) is an `Observer`: it never campaigns and never grants a vote or pre-vote, and the
//! other nodes neither count its votes nor count its acknowledgements towards the commit index.
//! Votes are recorded with the candidate's directory id, so a vote is given to one incarnation.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::{Bytes, BytesMut};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::message::{Body, Message};
use crate::planted::Planted;
use crate::types::{
    DirectoryId, Entry, HardState, NodeId, Role, SnapshotMeta, Voter, BATCH_BYTES_MAX,
    BATCH_ENTRIES_MAX, ENTRY_PAYLOAD_BYTES_MAX, LOG_ENTRIES_MAX, OBSERVERS_MAX, SNAPSHOT_BYTES_MAX,
    SNAPSHOT_CHUNK_BYTES_MAX, TERM_MAX, VOTERS_MAX,
};

/// Static configuration of one node.
#[derive(Clone, Debug)]
pub struct Config {
    pub id: NodeId,
    /// This node's data directory (fresh and random whenever its persistent state is new).
    pub directory_id: DirectoryId,
    pub voters: Vec<Voter>,
    /// Non-voting replicas the leader also replicates to.
    pub observers: Vec<NodeId>,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// Most entries per `AppendEntries`, `1..=BATCH_ENTRIES_MAX` (small values suit tests).
    pub batch_entries_max: usize,
    pub planted: Planted,
}

/// What the shell restores from disk when it (re)starts a node.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    pub hard_state: HardState,
    pub snapshot: SnapshotMeta,
    pub snapshot_data: Bytes,
    /// Durable entries; any at or below `snapshot.index` are ignored.
    pub log: Vec<Entry>,
    /// Index the state machine has applied (and made durable); at least `snapshot.index`.
    pub applied_index: u64,
}

#[derive(Clone, Debug)]
pub enum Event {
    /// Time passed; the shell steps at least at `next_deadline_ms`.
    Tick,
    /// A decoded message from a peer.
    Receive(Message),
    /// The log is durable up to `up_to`, whose entry has term `term`. Stale reports (about
    /// entries since truncated) are recognised by the term and ignored.
    LogPersisted { up_to: u64, term: u64 },
    /// The state machine durably stored a snapshot of everything up to `index` (which it has
    /// applied); the core may drop that log prefix.
    SnapshotTaken { index: u64, term: u64, data: Bytes },
}

/// An order for the shell. **Contract:** the shell executes the effects of one step in order.
/// `PersistHardState`, `TruncateLog`, `AppendLog` and `ApplySnapshot` are durable before any
/// later effect of the same step is executed (so "vote persisted before reply" is simply the
/// persist effect preceding the `Send`). After an `AppendLog` is durable the shell reports
/// `Event::LogPersisted` (it may coalesce several); the core counts an entry as durable only
/// from that event. `CompactLog` may be executed lazily. A crash may stop the sequence at any
/// point; the core is correct for every prefix that was executed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    PersistHardState(HardState),
    /// Remove every entry with `index >= from_index`.
    TruncateLog {
        from_index: u64,
    },
    /// Append contiguous entries right after the current durable log end.
    AppendLog {
        entries: Vec<Entry>,
    },
    /// The log prefix up to `up_to_index` is covered by a durable snapshot and may be dropped.
    CompactLog {
        up_to_index: u64,
    },
    /// Durably replace the state machine with this snapshot (received from the leader) and
    /// drop log entries up to `index`; later `Apply` effects continue from `index + 1`.
    ApplySnapshot {
        index: u64,
        term: u64,
        data: Bytes,
    },
    /// Committed entries, in order, each exactly once for the `applied_index` restored.
    Apply {
        entries: Vec<Entry>,
    },
    Send {
        to: NodeId,
        msg: Message,
    },
    RoleChanged {
        role: Role,
        term: u64,
        leader: Option<NodeId>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposeError {
    NotLeader {
        leader_hint: Option<NodeId>,
    },
    PayloadTooLarge,
    /// `LOG_ENTRIES_MAX` unsnapshotted entries are in memory; snapshot first.
    LogFull,
}

/// Why a core could not be built: bad configuration or an inconsistent restored state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    Config(&'static str),
    Corrupt(&'static str),
}

/// One replica's view for DescribeQuorum (known only on the leader).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaInfo {
    pub id: NodeId,
    pub directory_id: Option<DirectoryId>,
    pub log_end_offset: Option<u64>,
    pub last_fetch_ms: Option<u64>,
    pub last_caught_up_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumInfo {
    pub leader_id: Option<NodeId>,
    pub leader_epoch: u64,
    pub high_watermark: u64,
    pub voters: Vec<ReplicaInfo>,
    pub observers: Vec<ReplicaInfo>,
}

/// The leader's view of one peer.
#[derive(Clone, Debug)]
struct Progress {
    next_index: u64,
    match_index: u64,
    /// The directory id the peer last answered with; acks count only from a matching voter.
    dir: Option<DirectoryId>,
    recent_active: bool,
    acked_since_heartbeat: bool,
    last_fetch_ms: Option<u64>,
    last_caught_up_ms: Option<u64>,
    /// Snapshot being sent: (snapshot index, next byte offset).
    snapshot_send: Option<(u64, u64)>,
}

impl Progress {
    fn new(next_index: u64) -> Progress {
        Progress {
            next_index,
            match_index: 0,
            dir: None,
            recent_active: false,
            acked_since_heartbeat: false,
            last_fetch_ms: None,
            last_caught_up_ms: None,
            snapshot_send: None,
        }
    }
}

/// A snapshot arriving in chunks (bounded by `SNAPSHOT_BYTES_MAX`, checked by decode).
#[derive(Debug)]
struct IncomingSnapshot {
    index: u64,
    term: u64,
    total_bytes: u64,
    buf: BytesMut,
}

pub struct RaftCore {
    config: Config,
    rng: ChaCha8Rng,
    hard: HardState,
    /// What the last `PersistHardState` made durable.
    persisted_hard: HardState,
    role: Role,
    leader: Option<NodeId>,
    snapshot: SnapshotMeta,
    snapshot_data: Bytes,
    /// Entries `snapshot.index + 1 ..= last_index`.
    log: VecDeque<Entry>,
    /// The log (and snapshot) is durable up to here; `>= snapshot.index`.
    persisted_index: u64,
    commit_index: u64,
    applied_index: u64,
    election_deadline_ms: u64,
    last_leader_contact_ms: Option<u64>,
    heartbeat_due_ms: u64,
    check_quorum_due_ms: u64,
    votes: BTreeSet<NodeId>,
    progress: BTreeMap<NodeId, Progress>,
    /// Follower: highest index known to match the current leader's log.
    verified_index: u64,
    /// Follower: highest commit index the current leader has announced.
    leader_commit_seen: u64,
    incoming: Option<IncomingSnapshot>,
    last_reported: Option<(Role, u64, Option<NodeId>)>,
    /// For the invariants checked after every step.
    prev_term: u64,
    prev_commit: u64,
    prev_vote: Option<(NodeId, DirectoryId)>,
}

impl RaftCore {
    pub fn new(
        config: Config,
        seed: u64,
        restored: Restored,
        now_ms: u64,
    ) -> Result<RaftCore, InitError> {
        validate_config(&config)?;
        let Restored {
            hard_state,
            snapshot,
            snapshot_data,
            log,
            applied_index,
        } = restored;
        if snapshot_data.len() > SNAPSHOT_BYTES_MAX {
            return Err(InitError::Corrupt("snapshot too large"));
        }
        if hard_state.term > TERM_MAX {
            return Err(InitError::Corrupt("term out of range"));
        }
        if snapshot.term > hard_state.term {
            return Err(InitError::Corrupt("snapshot term above current term"));
        }
        let mut entries = VecDeque::new();
        let mut last = (snapshot.index, snapshot.term);
        for e in log.into_iter().filter(|e| e.index > snapshot.index) {
            if e.index != last.0 + 1 || e.term < last.1 || e.term > hard_state.term {
                return Err(InitError::Corrupt("restored log not contiguous"));
            }
            if entries.len() >= LOG_ENTRIES_MAX || e.payload.len() > ENTRY_PAYLOAD_BYTES_MAX {
                return Err(InitError::Corrupt("restored log beyond bounds"));
            }
            last = (e.index, e.term);
            entries.push_back(e);
        }
        if applied_index < snapshot.index || applied_index > last.0 {
            return Err(InitError::Corrupt("applied index outside the log"));
        }
        let mut core = RaftCore {
            rng: ChaCha8Rng::seed_from_u64(seed),
            hard: hard_state,
            persisted_hard: hard_state,
            role: Role::Follower,
            leader: None,
            snapshot,
            snapshot_data,
            log: entries,
            persisted_index: last.0,
            commit_index: applied_index,
            applied_index,
            election_deadline_ms: now_ms,
            last_leader_contact_ms: None,
            heartbeat_due_ms: now_ms,
            check_quorum_due_ms: now_ms,
            votes: BTreeSet::new(),
            progress: BTreeMap::new(),
            verified_index: applied_index,
            leader_commit_seen: 0,
            incoming: None,
            last_reported: None,
            prev_term: hard_state.term,
            prev_commit: applied_index,
            prev_vote: hard_state.voted_for,
            config,
        };
        core.role = if core.is_voter_self() {
            Role::Follower
        } else {
            Role::Observer
        };
        core.reset_election_timer(now_ms);
        core.assert_invariants();
        Ok(core)
    }

    pub fn step(&mut self, now_ms: u64, event: Event, effects: &mut Vec<Effect>) {
        match event {
            Event::Tick => self.on_tick(now_ms, effects),
            Event::Receive(msg) => self.on_message(now_ms, msg, effects),
            Event::LogPersisted { up_to, term } => self.on_log_persisted(up_to, term, effects),
            Event::SnapshotTaken { index, term, data } => {
                self.on_snapshot_taken(index, term, data, effects)
            }
        }
        self.finish_step(effects);
    }

    /// Appends `payload` as a new entry if this node leads; returns its index. The entry is
    /// committed (and later applied) only if this leadership lasts long enough.
    pub fn propose(
        &mut self,
        now_ms: u64,
        payload: Bytes,
        effects: &mut Vec<Effect>,
    ) -> Result<u64, ProposeError> {
        // Time is not needed to append; the parameter keeps every entry point shaped alike.
        let _ = now_ms;
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if payload.len() > ENTRY_PAYLOAD_BYTES_MAX {
            return Err(ProposeError::PayloadTooLarge);
        }
        if self.log.len() >= LOG_ENTRIES_MAX {
            return Err(ProposeError::LogFull);
        }
        let index = self.append_as_leader(payload, effects);
        let caught_up: Vec<NodeId> = self
            .progress
            .iter()
            .filter(|(_, p)| p.next_index == index)
            .map(|(id, _)| *id)
            .collect();
        for peer in caught_up {
            self.send_append(peer, effects);
        }
        self.finish_step(effects);
        Ok(index)
    }

    // ---- read accessors -------------------------------------------------------------------

    pub fn id(&self) -> NodeId {
        self.config.id
    }
    pub fn directory_id(&self) -> DirectoryId {
        self.config.directory_id
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn term(&self) -> u64 {
        self.hard.term
    }
    pub fn hard_state(&self) -> HardState {
        self.hard
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    pub fn commit_index(&self) -> u64 {
        self.commit_index
    }
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }
    pub fn persisted_index(&self) -> u64 {
        self.persisted_index
    }
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot
    }
    pub fn last_index(&self) -> u64 {
        self.snapshot.index + self.log.len() as u64
    }
    pub fn last_term(&self) -> u64 {
        self.log.back().map_or(self.snapshot.term, |e| e.term)
    }
    /// Term of the entry at `index`, if known (the snapshot's last entry counts).
    pub fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        self.entry(index).map(|e| e.term)
    }
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        if index <= self.snapshot.index {
            return None;
        }
        self.log.get((index - self.snapshot.index - 1) as usize)
    }
    /// The unsnapshotted entries in memory.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.log.iter()
    }

    /// When the shell must step this core with `Event::Tick` at the latest.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        match self.role {
            Role::Leader => Some(self.heartbeat_due_ms.min(self.check_quorum_due_ms)),
            Role::Observer => Some(self.heartbeat_due_ms),
            Role::Follower => Some(self.election_deadline_ms),
            Role::PreCandidate | Role::Candidate => {
                Some(self.election_deadline_ms.min(self.heartbeat_due_ms))
            }
        }
    }

    /// DescribeQuorum's view: replica details are filled in on the leader only.
    pub fn quorum_info(&self, now_ms: u64) -> QuorumInfo {
        let info = |id: NodeId, directory_id: Option<DirectoryId>| {
            if self.role == Role::Leader && id == self.config.id {
                return ReplicaInfo {
                    id,
                    directory_id: Some(self.config.directory_id),
                    log_end_offset: Some(self.persisted_index),
                    last_fetch_ms: Some(now_ms),
                    last_caught_up_ms: Some(now_ms),
                };
            }
            let p = self.progress.get(&id);
            ReplicaInfo {
                id,
                directory_id: p.and_then(|p| p.dir).or(directory_id),
                log_end_offset: p.map(|p| p.match_index),
                last_fetch_ms: p.and_then(|p| p.last_fetch_ms),
                last_caught_up_ms: p.and_then(|p| p.last_caught_up_ms),
            }
        };
        QuorumInfo {
            leader_id: self.leader,
            leader_epoch: self.hard.term,
            high_watermark: self.commit_index,
            voters: self
                .config
                .voters
                .iter()
                .map(|v| info(v.id, v.directory_id))
                .collect(),
            observers: self
                .config
                .observers
                .iter()
                .map(|id| info(*id, None))
                .collect(),
        }
    }

    // ---- membership -----------------------------------------------------------------------

    fn is_voter_self(&self) -> bool {
        self.counts_as_voter(self.config.id, self.config.directory_id)
    }

    fn counts_as_voter(&self, id: NodeId, dir: DirectoryId) -> bool {
        self.config.voters.iter().any(|v| v.matches(id, dir))
    }

    fn majority(&self) -> usize {
        self.config.voters.len() / 2 + 1
    }

    fn peers(&self) -> Vec<NodeId> {
        let me = self.config.id;
        let voters = self.config.voters.iter().map(|v| v.id);
        voters
            .chain(self.config.observers.iter().copied())
            .filter(|id| *id != me)
            .collect()
    }

    /// An observer that hears no leader introduces itself to every voter: a failed
    /// `AppendResponse` that asks for entries from its log end. Voters that do not know it yet
    /// learn it from that (`learn_observer`), so observers need not be configured anywhere.
    fn introduce_self(&mut self, effects: &mut Vec<Effect>) {
        let body = Body::AppendResponse {
            success: false,
            match_index: 0,
            conflict_index: self.last_index() + 1,
            conflict_term: None,
        };
        let me = self.config.id;
        let voters: Vec<NodeId> = self.config.voters.iter().map(|v| v.id).collect();
        for voter in voters.into_iter().filter(|v| *v != me) {
            self.send(voter, body.clone(), effects);
        }
    }

    /// Remembers `id`, a node that answered or introduced itself while neither a voter nor a
    /// known observer, as an observer (at most `OBSERVERS_MAX`; the rest are ignored). Every
    /// voter learns it, so whichever one leads next replicates to it; a leader starts at once.
    fn learn_observer(&mut self, id: NodeId, effects: &mut Vec<Effect>) {
        let known = id == self.config.id
            || self.config.voters.iter().any(|v| v.id == id)
            || self.config.observers.contains(&id);
        if known || self.config.observers.len() >= OBSERVERS_MAX {
            return;
        }
        if self.config.planted.introductions_ignored() {
            return;
        }
        self.config.observers.push(id);
        if self.role == Role::Leader {
            self.progress
                .insert(id, Progress::new(self.last_index() + 1));
            self.send_append(id, effects);
        }
    }

    // ---- timers and role transitions ------------------------------------------------------

    fn reset_election_timer(&mut self, now_ms: u64) {
        let min = self.config.election_timeout_min_ms;
        let max = self.config.election_timeout_max_ms;
        self.election_deadline_ms = now_ms + self.rng.gen_range(min..max);
    }

    fn hears_leader(&self, now_ms: u64) -> bool {
        self.role == Role::Leader
            || self
                .last_leader_contact_ms
                .is_some_and(|t| now_ms < t + self.config.election_timeout_min_ms)
    }

    fn set_term(&mut self, term: u64) {
        assert!(
            term > self.hard.term,
            "term regressed: {term} <= {}",
            self.hard.term
        );
        self.hard.term = term;
        self.hard.voted_for = None;
    }

    fn become_follower(&mut self, now_ms: u64, term: u64, leader: Option<NodeId>) {
        if term > self.hard.term {
            self.set_term(term);
        }
        let changed = self.leader != leader || !matches!(self.role, Role::Follower);
        self.role = if self.is_voter_self() {
            Role::Follower
        } else {
            Role::Observer
        };
        if changed {
            self.verified_index = self.commit_index;
            self.leader_commit_seen = 0;
        }
        self.leader = leader;
        self.votes.clear();
        self.progress.clear();
        self.reset_election_timer(now_ms);
    }

    fn on_tick(&mut self, now_ms: u64, effects: &mut Vec<Effect>) {
        match self.role {
            Role::Leader => {
                if now_ms >= self.check_quorum_due_ms {
                    let active = self.active_voters();
                    if active < self.majority() {
                        let id = self.config.id;
                        tracing::debug!(%id, active, "check-quorum: stepping down");
                        let term = self.hard.term;
                        self.become_follower(now_ms, term, None);
                        return;
                    }
                    for p in self.progress.values_mut() {
                        p.recent_active = false;
                    }
                    self.check_quorum_due_ms = now_ms + self.config.election_timeout_max_ms;
                }
                if now_ms >= self.heartbeat_due_ms {
                    self.heartbeat_due_ms = now_ms + self.config.heartbeat_interval_ms;
                    for p in self.progress.values_mut() {
                        // Nothing came back since the last heartbeat: resend from the last
                        // acknowledged entry instead of trusting the optimistic `next_index`.
                        if !p.acked_since_heartbeat && p.match_index > 0 {
                            p.next_index = p.match_index + 1;
                        }
                        p.acked_since_heartbeat = false;
                    }
                    for peer in self.peers() {
                        self.send_append(peer, effects);
                    }
                }
            }
            Role::Observer => {
                if now_ms >= self.heartbeat_due_ms {
                    self.heartbeat_due_ms = now_ms + self.config.heartbeat_interval_ms;
                    if !self.hears_leader(now_ms) {
                        self.introduce_self(effects);
                    }
                }
            }
            Role::Follower | Role::PreCandidate | Role::Candidate => {
                if now_ms >= self.election_deadline_ms {
                    self.start_pre_vote(now_ms, effects);
                } else if self.role != Role::Follower && now_ms >= self.heartbeat_due_ms {
                    // Requests may be lost: ask the voters that have not answered yes again.
                    self.heartbeat_due_ms = now_ms + self.config.heartbeat_interval_ms;
                    self.request_votes(self.role == Role::PreCandidate, effects);
                }
            }
        }
    }

    fn active_voters(&self) -> usize {
        let mut active = 1; // The leader itself.
        for v in &self.config.voters {
            if v.id == self.config.id {
                continue;
            }
            if let Some(p) = self.progress.get(&v.id) {
                if p.recent_active && p.dir.is_some_and(|d| v.matches(v.id, d)) {
                    active += 1;
                }
            }
        }
        active
    }

    fn start_pre_vote(&mut self, now_ms: u64, effects: &mut Vec<Effect>) {
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.config.id);
        self.reset_election_timer(now_ms);
        self.heartbeat_due_ms = now_ms + self.config.heartbeat_interval_ms;
        if self.votes.len() >= self.majority() {
            self.start_election(now_ms, effects);
            return;
        }
        self.request_votes(true, effects);
    }

    fn start_election(&mut self, now_ms: u64, effects: &mut Vec<Effect>) {
        let term = self.hard.term + 1;
        self.set_term(term);
        self.hard.voted_for = Some((self.config.id, self.config.directory_id));
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.config.id);
        self.reset_election_timer(now_ms);
        self.heartbeat_due_ms = now_ms + self.config.heartbeat_interval_ms;
        self.persist_hard_state(effects);
        if self.votes.len() >= self.majority() {
            self.become_leader(now_ms, effects);
            return;
        }
        self.request_votes(false, effects);
    }

    fn request_votes(&mut self, pre_vote: bool, effects: &mut Vec<Effect>) {
        let term = if pre_vote {
            self.hard.term + 1
        } else {
            self.hard.term
        };
        let body = Body::VoteRequest {
            pre_vote,
            last_log_index: self.last_index(),
            last_log_term: self.last_term(),
        };
        let voters: Vec<NodeId> = (self.config.voters.iter())
            .map(|v| v.id)
            .filter(|id| !self.votes.contains(id))
            .collect();
        for to in voters {
            self.send_with_term(to, term, body.clone(), effects);
        }
    }

    fn become_leader(&mut self, now_ms: u64, effects: &mut Vec<Effect>) {
        assert!(self.is_voter_self());
        assert_eq!(
            self.hard.voted_for,
            Some((self.config.id, self.config.directory_id))
        );
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.votes.clear();
        self.incoming = None;
        let next_index = self.last_index() + 1;
        self.progress = self
            .peers()
            .into_iter()
            .map(|id| (id, Progress::new(next_index)))
            .collect();
        self.heartbeat_due_ms = now_ms + self.config.heartbeat_interval_ms;
        self.check_quorum_due_ms = now_ms + self.config.election_timeout_max_ms;
        // The no-op lets this term commit entries of earlier terms (§5.4.2). A log full of
        // uncommitted entries (a pathological case) skips it until a snapshot frees room.
        if self.log.len() < LOG_ENTRIES_MAX {
            self.append_as_leader(Bytes::new(), effects);
        }
        for peer in self.peers() {
            self.send_append(peer, effects);
        }
    }

    fn append_as_leader(&mut self, payload: Bytes, effects: &mut Vec<Effect>) -> u64 {
        let entry = Entry {
            term: self.hard.term,
            index: self.last_index() + 1,
            payload,
        };
        let index = entry.index;
        self.log.push_back(entry.clone());
        effects.push(Effect::AppendLog {
            entries: vec![entry],
        });
        index
    }

    // ---- sending --------------------------------------------------------------------------

    /// Every send goes through here: the hard state is made durable before anything leaves.
    fn send_with_term(&mut self, to: NodeId, term: u64, body: Body, effects: &mut Vec<Effect>) {
        self.persist_hard_state(effects);
        effects.push(self.message(to, term, body));
    }

    fn send(&mut self, to: NodeId, body: Body, effects: &mut Vec<Effect>) {
        let term = self.hard.term;
        self.send_with_term(to, term, body, effects);
    }

    fn message(&self, to: NodeId, term: u64, body: Body) -> Effect {
        Effect::Send {
            to,
            msg: Message {
                from: self.config.id,
                from_dir: self.config.directory_id,
                term,
                body,
            },
        }
    }

    fn persist_hard_state(&mut self, effects: &mut Vec<Effect>) {
        if self.hard != self.persisted_hard {
            effects.push(Effect::PersistHardState(self.hard));
            self.persisted_hard = self.hard;
        }
    }

    fn send_append(&mut self, peer: NodeId, effects: &mut Vec<Effect>) {
        let Some(p) = self.progress.get(&peer) else {
            return;
        };
        if p.next_index <= self.snapshot.index {
            self.send_snapshot_chunk(peer, effects);
            return;
        }
        let next_index = p.next_index.min(self.last_index() + 1);
        let prev_index = next_index - 1;
        let prev_term = self
            .term_at(prev_index)
            .expect("prev entry is in memory or snapshot");
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        let mut index = next_index;
        while let Some(e) = self.entry(index) {
            if entries.len() >= self.config.batch_entries_max
                || (!entries.is_empty() && bytes + e.payload.len() > BATCH_BYTES_MAX)
            {
                break;
            }
            bytes += e.payload.len();
            entries.push(e.clone());
            index += 1;
        }
        if let Some(p) = self.progress.get_mut(&peer) {
            p.next_index = index;
        }
        let body = Body::AppendEntries {
            prev_index,
            prev_term,
            leader_commit: self.commit_index,
            entries,
        };
        self.send(peer, body, effects);
    }

    fn send_snapshot_chunk(&mut self, peer: NodeId, effects: &mut Vec<Effect>) {
        let snapshot = self.snapshot;
        let total = self.snapshot_data.len() as u64;
        let Some(p) = self.progress.get_mut(&peer) else {
            return;
        };
        let offset = match p.snapshot_send {
            Some((index, offset)) if index == snapshot.index => offset.min(total),
            _ => 0,
        };
        p.snapshot_send = Some((snapshot.index, offset));
        let end = (offset + SNAPSHOT_CHUNK_BYTES_MAX as u64).min(total);
        let chunk = self.snapshot_data.slice(offset as usize..end as usize);
        let body = Body::InstallSnapshot {
            last_index: snapshot.index,
            last_term: snapshot.term,
            total_bytes: total,
            offset,
            chunk,
        };
        self.send(peer, body, effects);
    }

    // ---- receiving ------------------------------------------------------------------------

    fn on_message(&mut self, now_ms: u64, msg: Message, effects: &mut Vec<Effect>) {
        if !msg.is_well_formed() || msg.from == self.config.id {
            return;
        }
        match msg.body {
            Body::VoteRequest {
                pre_vote: true,
                last_log_index,
                last_log_term,
            } => self.on_pre_vote_request(now_ms, &msg, last_log_index, last_log_term, effects),
            Body::VoteRequest {
                pre_vote: false,
                last_log_index,
                last_log_term,
            } => self.on_vote_request(now_ms, &msg, last_log_index, last_log_term, effects),
            Body::VoteResponse { pre_vote, granted } => {
                self.on_vote_response(now_ms, &msg, pre_vote, granted, effects)
            }
            Body::AppendEntries {
                prev_index,
                prev_term,
                leader_commit,
                ref entries,
            } => {
                let entries = entries.clone();
                let (from, term) = (msg.from, msg.term);
                self.on_append(
                    now_ms,
                    from,
                    term,
                    prev_index,
                    prev_term,
                    leader_commit,
                    entries,
                    effects,
                )
            }
            Body::AppendResponse {
                success,
                match_index,
                conflict_index,
                conflict_term,
            } => {
                self.learn_observer(msg.from, effects);
                if let Some(peer) = self.leader_sees_response(now_ms, &msg) {
                    if success {
                        self.on_append_success(now_ms, peer, match_index, effects);
                    } else {
                        self.on_append_conflict(peer, conflict_index, conflict_term, effects);
                    }
                }
            }
            Body::InstallSnapshot {
                last_index,
                last_term,
                total_bytes,
                offset,
                ref chunk,
            } => {
                let chunk = chunk.clone();
                let (from, term) = (msg.from, msg.term);
                let snap = (last_index, last_term, total_bytes, offset);
                self.on_install_snapshot(now_ms, from, term, snap, chunk, effects)
            }
            Body::SnapshotResponse {
                last_index,
                next_offset,
                done,
            } => {
                if let Some(peer) = self.leader_sees_response(now_ms, &msg) {
                    self.on_snapshot_response(now_ms, peer, last_index, next_offset, done, effects);
                }
            }
        }
    }

    /// Is `(last_index, last_term)` at least as up to date as this node's log (§5.4.1)?
    fn log_ok(&self, last_index: u64, last_term: u64) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    fn on_pre_vote_request(
        &mut self,
        now_ms: u64,
        msg: &Message,
        last_index: u64,
        last_term: u64,
        effects: &mut Vec<Effect>,
    ) {
        let log_ok =
            self.config.planted.vote_without_log_check() || self.log_ok(last_index, last_term);
        let granted = self.is_voter_self()
            && self.counts_as_voter(msg.from, msg.from_dir)
            && msg.term > self.hard.term
            && !self.hears_leader(now_ms)
            && log_ok;
        // A pre-vote changes no state: the reply names the term asked for when granted, else
        // this node's term so a candidate that is behind learns it.
        let term = if granted { msg.term } else { self.hard.term };
        let body = Body::VoteResponse {
            pre_vote: true,
            granted,
        };
        self.send_with_term(msg.from, term, body, effects);
    }

    fn on_vote_request(
        &mut self,
        now_ms: u64,
        msg: &Message,
        last_index: u64,
        last_term: u64,
        effects: &mut Vec<Effect>,
    ) {
        if msg.term > self.hard.term {
            self.become_follower(now_ms, msg.term, None);
        }
        let candidate = (msg.from, msg.from_dir);
        let log_ok =
            self.config.planted.vote_without_log_check() || self.log_ok(last_index, last_term);
        let granted = msg.term == self.hard.term
            && self.is_voter_self()
            && self.counts_as_voter(msg.from, msg.from_dir)
            && self.hard.voted_for.is_none_or(|v| v == candidate)
            && log_ok;
        if granted {
            self.hard.voted_for = Some(candidate);
            self.reset_election_timer(now_ms);
        }
        let body = Body::VoteResponse {
            pre_vote: false,
            granted,
        };
        if granted && self.config.planted.vote_persisted_after_reply() {
            let reply = self.message(msg.from, self.hard.term, body);
            effects.push(reply);
            self.persist_hard_state(effects);
        } else {
            self.send(msg.from, body, effects);
        }
    }

    fn on_vote_response(
        &mut self,
        now_ms: u64,
        msg: &Message,
        pre_vote: bool,
        granted: bool,
        effects: &mut Vec<Effect>,
    ) {
        // A granted pre-vote names the term asked for; every other answer names the voter's.
        if (!granted || !pre_vote) && msg.term > self.hard.term {
            self.become_follower(now_ms, msg.term, None);
            return;
        }
        if !granted || !self.counts_as_voter(msg.from, msg.from_dir) {
            return;
        }
        if pre_vote {
            if self.role != Role::PreCandidate || msg.term != self.hard.term + 1 {
                return;
            }
            self.votes.insert(msg.from);
            if self.votes.len() >= self.majority() {
                self.start_election(now_ms, effects);
            }
        } else {
            if self.role != Role::Candidate || msg.term != self.hard.term {
                return;
            }
            self.votes.insert(msg.from);
            if self.votes.len() >= self.majority() {
                self.become_leader(now_ms, effects);
            }
        }
    }

    /// Accepts `leader` for `term` (>= ours). Returns false if this node leads the same term,
    /// which only a broken peer can cause: the message is then ignored.
    fn accept_leader(&mut self, now_ms: u64, term: u64, leader: NodeId) -> bool {
        if term == self.hard.term && self.role == Role::Leader {
            tracing::error!(id = %self.config.id, %leader, term, "second leader in my term");
            return false;
        }
        let following = matches!(self.role, Role::Follower | Role::Observer);
        if term > self.hard.term || !following || self.leader != Some(leader) {
            self.become_follower(now_ms, term, Some(leader));
        }
        self.last_leader_contact_ms = Some(now_ms);
        self.reset_election_timer(now_ms);
        true
    }

    fn append_response(&self, success: bool, conflict: (u64, Option<u64>)) -> Body {
        Body::AppendResponse {
            success,
            match_index: if success {
                self.persisted_index.min(self.verified_index)
            } else {
                0
            },
            conflict_index: conflict.0,
            conflict_term: conflict.1,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_append(
        &mut self,
        now_ms: u64,
        from: NodeId,
        term: u64,
        prev_index: u64,
        prev_term: u64,
        leader_commit: u64,
        mut entries: Vec<Entry>,
        effects: &mut Vec<Effect>,
    ) {
        if term < self.hard.term {
            let body = self.append_response(false, (0, None));
            self.send(from, body, effects);
            return;
        }
        if !self.accept_leader(now_ms, term, from) {
            return;
        }
        let (mut prev_index, mut prev_term) = (prev_index, prev_term);
        if prev_index < self.snapshot.index {
            // Entries up to the snapshot are committed, so they match every leader's log.
            let skip = (self.snapshot.index - prev_index) as usize;
            entries.drain(..skip.min(entries.len()));
            prev_index = self.snapshot.index;
            prev_term = self.snapshot.term;
        }
        match self.term_at(prev_index) {
            None => {
                let body = self.append_response(false, (self.last_index() + 1, None));
                self.send(from, body, effects);
                return;
            }
            Some(t) if t != prev_term => {
                let mut first = prev_index;
                while first > self.snapshot.index + 1 && self.term_at(first - 1) == Some(t) {
                    first -= 1;
                }
                let body = self.append_response(false, (first, Some(t)));
                self.send(from, body, effects);
                return;
            }
            Some(_) => {}
        }
        // The term this entry batch comes from is durable before any entry of it is.
        self.persist_hard_state(effects);
        let mut matched = 0usize;
        for e in &entries {
            match self.term_at(e.index) {
                Some(t) if t == e.term => matched += 1,
                Some(_) => {
                    if e.index <= self.commit_index {
                        let (id, index) = (self.config.id, e.index);
                        tracing::error!(%id, index, "leader conflicts with a committed entry");
                        return;
                    }
                    self.truncate_from(e.index, effects);
                    break;
                }
                None => break,
            }
        }
        let room = LOG_ENTRIES_MAX - self.log.len();
        let new: Vec<Entry> = entries.into_iter().skip(matched).take(room).collect();
        let appended = new.len();
        if !new.is_empty() {
            self.log.extend(new.iter().cloned());
            effects.push(Effect::AppendLog { entries: new });
        }
        let verified = prev_index + (matched + appended) as u64;
        self.verified_index = self.verified_index.max(verified);
        self.leader_commit_seen = self.leader_commit_seen.max(leader_commit);
        self.advance_follower_commit();
        let body = self.append_response(true, (0, None));
        self.send(from, body, effects);
    }

    fn truncate_from(&mut self, from_index: u64, effects: &mut Vec<Effect>) {
        assert!(
            from_index > self.commit_index,
            "truncating committed entry {from_index}"
        );
        assert!(from_index > self.snapshot.index);
        let keep = (from_index - self.snapshot.index - 1) as usize;
        self.log.truncate(keep);
        self.persisted_index = self.persisted_index.min(from_index - 1);
        self.verified_index = self.verified_index.min(from_index - 1);
        effects.push(Effect::TruncateLog { from_index });
    }

    fn advance_follower_commit(&mut self) {
        let bound = self
            .leader_commit_seen
            .min(self.verified_index)
            .min(self.persisted_index);
        if bound > self.commit_index {
            self.commit_index = bound;
        }
    }

    /// Common checks for responses to a leader; returns the peer when the leader should act.
    fn leader_sees_response(&mut self, now_ms: u64, msg: &Message) -> Option<NodeId> {
        if msg.term > self.hard.term {
            self.become_follower(now_ms, msg.term, None);
            return None;
        }
        if self.role != Role::Leader || msg.term != self.hard.term {
            return None;
        }
        let p = self.progress.get_mut(&msg.from)?;
        if p.dir != Some(msg.from_dir) {
            // A new incarnation of the peer (its disk may be gone): forget what it had.
            if p.dir.is_some() {
                p.match_index = 0;
                p.snapshot_send = None;
            }
            p.dir = Some(msg.from_dir);
        }
        p.recent_active = true;
        p.acked_since_heartbeat = true;
        p.last_fetch_ms = Some(now_ms);
        Some(msg.from)
    }

    fn on_append_success(
        &mut self,
        now_ms: u64,
        peer: NodeId,
        match_index: u64,
        effects: &mut Vec<Effect>,
    ) {
        let last_index = self.last_index();
        if match_index > last_index {
            return;
        }
        let Some(p) = self.progress.get_mut(&peer) else {
            return;
        };
        p.match_index = p.match_index.max(match_index);
        p.next_index = p.next_index.max(p.match_index + 1);
        if p.match_index == last_index {
            p.last_caught_up_ms = Some(now_ms);
        }
        let more = p.next_index <= last_index;
        self.advance_leader_commit();
        if more {
            self.send_append(peer, effects);
        }
    }

    fn on_append_conflict(
        &mut self,
        peer: NodeId,
        conflict_index: u64,
        conflict_term: Option<u64>,
        effects: &mut Vec<Effect>,
    ) {
        let mut next = conflict_index;
        if let Some(t) = conflict_term {
            if let Some(e) = self.log.iter().rev().find(|e| e.term == t) {
                next = e.index + 1;
            }
        }
        let last_index = self.last_index();
        let Some(p) = self.progress.get_mut(&peer) else {
            return;
        };
        p.next_index = next.max(p.match_index + 1).min(last_index + 1);
        self.send_append(peer, effects);
    }

    fn advance_leader_commit(&mut self) {
        let mut matches: Vec<u64> = Vec::with_capacity(self.config.voters.len());
        for v in &self.config.voters {
            if v.id == self.config.id {
                matches.push(self.persisted_index);
            } else {
                let m = self
                    .progress
                    .get(&v.id)
                    .filter(|p| p.dir.is_some_and(|d| v.matches(v.id, d)))
                    .map_or(0, |p| p.match_index);
                matches.push(m);
            }
        }
        matches.sort_unstable_by(|a, b| b.cmp(a));
        // Even when a majority of the others hold an entry, this node applies it only once it
        // is durable here too, so a restart never finds an applied entry missing from its log.
        let candidate = matches[self.majority() - 1].min(self.persisted_index);
        if candidate <= self.commit_index {
            return;
        }
        let current_term = self.term_at(candidate) == Some(self.hard.term);
        if current_term || self.config.planted.commit_old_term() {
            self.commit_index = candidate;
        }
    }

    fn on_install_snapshot(
        &mut self,
        now_ms: u64,
        from: NodeId,
        term: u64,
        (last_index, last_term, total_bytes, offset): (u64, u64, u64, u64),
        chunk: Bytes,
        effects: &mut Vec<Effect>,
    ) {
        let reply = |next_offset: u64, done: bool| Body::SnapshotResponse {
            last_index,
            next_offset,
            done,
        };
        if term < self.hard.term {
            self.send(from, reply(0, false), effects);
            return;
        }
        if !self.accept_leader(now_ms, term, from) {
            return;
        }
        if last_index <= self.commit_index {
            self.send(from, reply(total_bytes, true), effects);
            return;
        }
        let same = self.incoming.as_ref().is_some_and(|s| {
            (s.index, s.term, s.total_bytes) == (last_index, last_term, total_bytes)
        });
        if !same {
            if offset != 0 {
                self.send(from, reply(0, false), effects);
                return;
            }
            self.incoming = Some(IncomingSnapshot {
                index: last_index,
                term: last_term,
                total_bytes,
                buf: BytesMut::new(),
            });
        }
        let Some(inc) = self.incoming.as_mut() else {
            return;
        };
        if offset != inc.buf.len() as u64 {
            let have = inc.buf.len() as u64;
            self.send(from, reply(have, false), effects);
            return;
        }
        // Decode bounded `offset + chunk <= total_bytes <= SNAPSHOT_BYTES_MAX`.
        inc.buf.extend_from_slice(&chunk);
        if (inc.buf.len() as u64) < total_bytes {
            let have = inc.buf.len() as u64;
            self.send(from, reply(have, false), effects);
            return;
        }
        let Some(inc) = self.incoming.take() else {
            return;
        };
        self.persist_hard_state(effects);
        self.install_snapshot(inc.index, inc.term, inc.buf.freeze(), effects);
        self.send(from, reply(total_bytes, true), effects);
    }

    fn install_snapshot(&mut self, index: u64, term: u64, data: Bytes, effects: &mut Vec<Effect>) {
        assert!(index > self.commit_index);
        if self.term_at(index) == Some(term) {
            // Our log already holds the snapshot's last entry: keep the suffix after it.
            let drop = (index - self.snapshot.index) as usize;
            self.log.drain(..drop);
        } else {
            // The snapshot covers every committed entry we hold (its index is above our
            // commit index), so the whole log may go, committed prefix included.
            if !self.log.is_empty() {
                effects.push(Effect::TruncateLog {
                    from_index: self.snapshot.index + 1,
                });
            }
            self.log.clear();
            self.persisted_index = self.snapshot.index;
        }
        effects.push(Effect::ApplySnapshot {
            index,
            term,
            data: data.clone(),
        });
        self.snapshot = SnapshotMeta { index, term };
        self.snapshot_data = data;
        self.persisted_index = self.persisted_index.max(index);
        self.commit_index = index;
        self.applied_index = index;
        self.verified_index = self.verified_index.max(index);
    }

    fn on_snapshot_response(
        &mut self,
        now_ms: u64,
        peer: NodeId,
        last_index: u64,
        next_offset: u64,
        done: bool,
        effects: &mut Vec<Effect>,
    ) {
        let snapshot_index = self.snapshot.index;
        let last = self.last_index();
        let Some(p) = self.progress.get_mut(&peer) else {
            return;
        };
        if done {
            if last_index <= last {
                p.match_index = p.match_index.max(last_index);
                p.next_index = p.next_index.max(p.match_index + 1);
            }
            p.snapshot_send = None;
            if p.match_index == last {
                p.last_caught_up_ms = Some(now_ms);
            }
            self.advance_leader_commit();
            self.send_append(peer, effects);
        } else if last_index == snapshot_index {
            p.snapshot_send = Some((snapshot_index, next_offset));
            self.send_snapshot_chunk(peer, effects);
        }
    }

    fn on_log_persisted(&mut self, up_to: u64, term: u64, effects: &mut Vec<Effect>) {
        if up_to <= self.persisted_index || self.term_at(up_to) != Some(term) {
            return;
        }
        self.persisted_index = up_to;
        match self.role {
            Role::Leader => self.advance_leader_commit(),
            Role::Follower | Role::Observer => {
                if let Some(leader) = self.leader {
                    self.advance_follower_commit();
                    let body = self.append_response(true, (0, None));
                    self.send(leader, body, effects);
                }
            }
            Role::PreCandidate | Role::Candidate => {}
        }
    }

    fn on_snapshot_taken(&mut self, index: u64, term: u64, data: Bytes, effects: &mut Vec<Effect>) {
        if index <= self.snapshot.index
            || index > self.applied_index
            || self.term_at(index) != Some(term)
            || data.len() > SNAPSHOT_BYTES_MAX
        {
            tracing::debug!(id = %self.config.id, index, "ignoring stale or invalid snapshot");
            return;
        }
        let drop = (index - self.snapshot.index) as usize;
        self.log.drain(..drop);
        self.snapshot = SnapshotMeta { index, term };
        self.snapshot_data = data;
        effects.push(Effect::CompactLog { up_to_index: index });
    }

    // ---- end of step ----------------------------------------------------------------------

    fn finish_step(&mut self, effects: &mut Vec<Effect>) {
        self.persist_hard_state(effects);
        if self.commit_index > self.applied_index {
            let entries: Vec<Entry> = ((self.applied_index + 1)..=self.commit_index)
                .map(|i| self.entry(i).expect("committed entry in memory").clone())
                .collect();
            self.applied_index = self.commit_index;
            effects.push(Effect::Apply { entries });
        }
        let now = (self.role, self.hard.term, self.leader);
        if self.last_reported != Some(now) {
            self.last_reported = Some(now);
            effects.push(Effect::RoleChanged {
                role: now.0,
                term: now.1,
                leader: now.2,
            });
        }
        self.assert_invariants();
    }

    /// Broken invariants are bugs of this core, never of its input: they panic with context.
    fn assert_invariants(&mut self) {
        let id = self.config.id;
        assert!(self.hard.term >= self.prev_term, "{id}: term regressed");
        assert!(
            self.commit_index >= self.prev_commit,
            "{id}: commit regressed"
        );
        if self.hard.term == self.prev_term && self.prev_vote.is_some() {
            assert_eq!(
                self.hard.voted_for, self.prev_vote,
                "{id}: second vote in a term"
            );
        }
        assert_eq!(
            self.hard, self.persisted_hard,
            "{id}: hard state not persisted"
        );
        assert!(
            self.snapshot.index <= self.applied_index,
            "{id}: snapshot beyond applied"
        );
        assert!(
            self.applied_index <= self.commit_index,
            "{id}: applied beyond commit"
        );
        assert!(
            self.commit_index <= self.persisted_index,
            "{id}: commit {} beyond persisted {}",
            self.commit_index,
            self.persisted_index
        );
        assert!(
            self.persisted_index <= self.last_index(),
            "{id}: persisted beyond log"
        );
        assert!(self.log.len() <= LOG_ENTRIES_MAX, "{id}: log beyond bound");
        assert!(
            self.last_term() <= self.hard.term,
            "{id}: entry from a future term"
        );
        let me = (self.config.id, self.config.directory_id);
        match self.role {
            Role::Leader => {
                assert_eq!(self.leader, Some(self.config.id));
                assert_eq!(
                    self.hard.voted_for,
                    Some(me),
                    "{id}: leader without own vote"
                );
                assert!(self.is_voter_self());
            }
            Role::Candidate => assert_eq!(self.hard.voted_for, Some(me)),
            Role::Observer => assert!(!self.is_voter_self()),
            Role::Follower | Role::PreCandidate => assert!(self.is_voter_self()),
        }
        debug_assert!(self
            .log
            .iter()
            .enumerate()
            .all(|(k, e)| { e.index == self.snapshot.index + 1 + k as u64 }));
        debug_assert!(self
            .log
            .iter()
            .try_fold(self.snapshot.term, |t, e| (e.term >= t).then_some(e.term))
            .is_some());
        self.prev_term = self.hard.term;
        self.prev_commit = self.commit_index;
        self.prev_vote = self.hard.voted_for;
    }
}

fn validate_config(config: &Config) -> Result<(), InitError> {
    let voters = &config.voters;
    if voters.is_empty() || voters.len() > VOTERS_MAX {
        return Err(InitError::Config("voter count out of range"));
    }
    if config.observers.len() > OBSERVERS_MAX {
        return Err(InitError::Config("too many observers"));
    }
    let mut ids = BTreeSet::new();
    for id in voters
        .iter()
        .map(|v| v.id)
        .chain(config.observers.iter().copied())
    {
        if !ids.insert(id) {
            return Err(InitError::Config("duplicate node id"));
        }
    }
    if config.batch_entries_max == 0 || config.batch_entries_max > BATCH_ENTRIES_MAX {
        return Err(InitError::Config("batch_entries_max out of range"));
    }
    if config.heartbeat_interval_ms == 0
        || config.heartbeat_interval_ms >= config.election_timeout_min_ms
        || config.election_timeout_min_ms >= config.election_timeout_max_ms
    {
        return Err(InitError::Config(
            "timeouts must satisfy 0 < heartbeat < min < max",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{any, prop_oneof, Just, Strategy};

    fn dir(id: u32) -> DirectoryId {
        DirectoryId(u128::from(id) * 100)
    }

    fn config(id: u32, voters: u32, my_dir: DirectoryId) -> Config {
        Config {
            id: NodeId(id),
            directory_id: my_dir,
            voters: (1..=voters)
                .map(|v| Voter {
                    id: NodeId(v),
                    directory_id: Some(dir(v)),
                })
                .collect(),
            observers: Vec::new(),
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            heartbeat_interval_ms: 50,
            batch_entries_max: BATCH_ENTRIES_MAX,
            planted: Planted::default(),
        }
    }

    fn node(id: u32, voters: u32) -> RaftCore {
        RaftCore::new(config(id, voters, dir(id)), 7, Restored::default(), 0).expect("valid")
    }

    fn from(id: u32, term: u64, body: Body) -> Event {
        from_dir(id, dir(id), term, body)
    }

    fn from_dir(id: u32, d: DirectoryId, term: u64, body: Body) -> Event {
        Event::Receive(Message {
            from: NodeId(id),
            from_dir: d,
            term,
            body,
        })
    }

    fn vote_request(pre_vote: bool, last_log_index: u64, last_log_term: u64) -> Body {
        Body::VoteRequest {
            pre_vote,
            last_log_index,
            last_log_term,
        }
    }

    fn step(core: &mut RaftCore, now_ms: u64, event: Event) -> Vec<Effect> {
        let mut effects = Vec::new();
        core.step(now_ms, event, &mut effects);
        effects
    }

    fn sent(effects: &[Effect]) -> Vec<(NodeId, Message)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send { to, msg } => Some((*to, msg.clone())),
                _ => None,
            })
            .collect()
    }

    fn granted(effects: &[Effect]) -> Option<bool> {
        sent(effects).iter().find_map(|(_, m)| match m.body {
            Body::VoteResponse { granted, .. } => Some(granted),
            _ => None,
        })
    }

    fn entry(term: u64, index: u64, payload: &'static [u8]) -> Entry {
        Entry {
            term,
            index,
            payload: Bytes::from_static(payload),
        }
    }

    fn append(prev: (u64, u64), commit: u64, entries: Vec<Entry>) -> Body {
        Body::AppendEntries {
            prev_index: prev.0,
            prev_term: prev.1,
            leader_commit: commit,
            entries,
        }
    }

    fn acked_match(effects: &[Effect]) -> Option<u64> {
        sent(effects).iter().find_map(|(_, m)| match m.body {
            Body::AppendResponse {
                success: true,
                match_index,
                ..
            } => Some(match_index),
            _ => None,
        })
    }

    #[test]
    fn vote_is_persisted_before_the_reply() {
        let mut n1 = node(1, 3);
        let effects = step(&mut n1, 0, from(2, 1, vote_request(false, 0, 0)));
        let persisted = HardState {
            term: 1,
            voted_for: Some((NodeId(2), dir(2))),
        };
        let persist_at = effects
            .iter()
            .position(|e| *e == Effect::PersistHardState(persisted));
        let send_at = effects
            .iter()
            .position(|e| matches!(e, Effect::Send { .. }));
        assert_eq!(granted(&effects), Some(true));
        assert!(persist_at.expect("vote persisted") < send_at.expect("reply sent"));
        // A second candidate of the same term is refused, and nothing new is persisted.
        let effects = step(&mut n1, 1, from(3, 1, vote_request(false, 5, 1)));
        assert_eq!(granted(&effects), Some(false));
        assert!(!effects
            .iter()
            .any(|e| matches!(e, Effect::PersistHardState(_))));
    }

    #[test]
    fn planted_reply_before_persist_reorders_the_effects() {
        let mut cfg = config(1, 3, dir(1));
        cfg.planted.vote_persisted_after_reply = true;
        let mut n1 = RaftCore::new(cfg, 7, Restored::default(), 0).expect("valid");
        let effects = step(&mut n1, 0, from(2, 1, vote_request(false, 0, 0)));
        let persist_at = effects
            .iter()
            .position(|e| matches!(e, Effect::PersistHardState(_)));
        let send_at = effects
            .iter()
            .position(|e| matches!(e, Effect::Send { .. }));
        assert!(send_at.expect("reply") < persist_at.expect("persist"));
    }

    #[test]
    fn candidate_with_a_stale_log_is_refused_but_its_term_is_adopted() {
        let restored = Restored {
            hard_state: HardState {
                term: 1,
                voted_for: None,
            },
            log: vec![entry(1, 1, b"x")],
            ..Restored::default()
        };
        let mut n1 = RaftCore::new(config(1, 3, dir(1)), 7, restored, 0).expect("valid");
        let effects = step(&mut n1, 0, from(2, 2, vote_request(false, 0, 0)));
        assert_eq!(granted(&effects), Some(false));
        assert_eq!(
            n1.hard_state(),
            HardState {
                term: 2,
                voted_for: None
            }
        );
        let persist_at = effects
            .iter()
            .position(|e| matches!(e, Effect::PersistHardState(_)));
        let send_at = effects
            .iter()
            .position(|e| matches!(e, Effect::Send { .. }));
        assert!(persist_at.expect("term persisted") < send_at.expect("reply"));
    }

    #[test]
    fn pre_vote_is_refused_while_a_leader_is_heard_and_changes_no_state() {
        let mut n1 = node(1, 3);
        step(&mut n1, 0, from(2, 1, append((0, 0), 0, vec![])));
        assert_eq!(n1.leader(), Some(NodeId(2)));
        let effects = step(&mut n1, 10, from(3, 2, vote_request(true, 0, 0)));
        assert_eq!(granted(&effects), Some(false));
        assert_eq!(n1.term(), 1);
        // Once the leader has been silent for an election timeout, the pre-vote is granted,
        // still without raising the term or recording a vote.
        let effects = step(&mut n1, 1_000, from(3, 2, vote_request(true, 0, 0)));
        assert_eq!(granted(&effects), Some(true));
        assert_eq!(
            n1.hard_state(),
            HardState {
                term: 1,
                voted_for: None
            }
        );
        assert!(!effects
            .iter()
            .any(|e| matches!(e, Effect::PersistHardState(_))));
    }

    #[test]
    fn a_voter_with_a_new_directory_is_an_observer() {
        let mut wiped = RaftCore::new(config(1, 3, DirectoryId(999)), 7, Restored::default(), 0)
            .expect("valid");
        let effects = step(&mut wiped, 10_000, Event::Tick);
        assert_eq!(wiped.role(), Role::Observer);
        let votes = sent(&effects)
            .into_iter()
            .filter(|(_, m)| matches!(m.body, Body::VoteRequest { .. }))
            .count();
        assert_eq!(votes, 0, "an observer never campaigns");
        let effects = step(&mut wiped, 10_001, from(2, 1, vote_request(false, 0, 0)));
        assert_eq!(granted(&effects), Some(false));
        assert_eq!(wiped.hard_state().voted_for, None);
        // It still replicates.
        let effects = step(
            &mut wiped,
            10_002,
            from(2, 1, append((0, 0), 0, vec![entry(1, 1, b"")])),
        );
        assert_eq!(wiped.last_index(), 1);
        assert!(effects
            .iter()
            .any(|e| matches!(e, Effect::AppendLog { .. })));
    }

    #[test]
    fn an_unconfigured_observer_introduces_itself_and_the_leader_replicates_to_it() {
        // Node 9 is in nobody's configuration: it knows the voters, they do not know it.
        let mut cfg = config(9, 1, DirectoryId(9));
        cfg.observers = Vec::new();
        let mut observer = RaftCore::new(cfg, 7, Restored::default(), 0).expect("valid");
        assert_eq!(observer.role(), Role::Observer);
        let hello = step(&mut observer, 10, Event::Tick);
        let hello = sent(&hello);
        assert_eq!(hello.len(), 1, "one hello per voter: {hello:?}");
        assert_eq!(hello[0].0, NodeId(1));
        // Heard no leader: it introduces itself again one heartbeat later, not before.
        assert!(sent(&step(&mut observer, 20, Event::Tick)).is_empty());
        assert_eq!(sent(&step(&mut observer, 60, Event::Tick)).len(), 1);

        let mut leader = node(1, 1);
        step(&mut leader, 1_000, Event::Tick);
        assert_eq!(leader.role(), Role::Leader);
        let (_, msg) = hello[0].clone();
        let effects = step(&mut leader, 1_001, Event::Receive(msg.clone()));
        let appends: Vec<_> = sent(&effects)
            .into_iter()
            .filter(|(to, m)| *to == NodeId(9) && matches!(m.body, Body::AppendEntries { .. }))
            .collect();
        assert_eq!(
            appends.len(),
            1,
            "the leader replicates at once: {effects:?}"
        );
        assert_eq!(leader.quorum_info(1_002).observers.len(), 1);
        // A second hello does not add it twice.
        step(&mut leader, 1_003, Event::Receive(msg));
        assert_eq!(leader.quorum_info(1_004).observers.len(), 1);

        // The observer follows; once it hears the leader it stops introducing itself, and its
        // acknowledgement never counts towards the commit index of a one-voter quorum.
        let (_, mut append) = appends[0].clone();
        let mut rounds = 0;
        while observer.last_index() < 1 {
            rounds += 1;
            assert!(rounds <= 3, "the observer never caught up");
            let answer = step(&mut observer, 1_005, Event::Receive(append));
            let (_, answer) = sent(&answer).pop().expect("an answer to the leader");
            let next = step(&mut leader, 1_006, Event::Receive(answer));
            append = match sent(&next).pop() {
                Some((_, m)) => m,
                None => break,
            };
        }
        assert_eq!(observer.last_index(), 1);
        assert_eq!(observer.leader(), Some(NodeId(1)));
        let later = step(&mut observer, 1_100, Event::Tick);
        assert!(sent(&later).is_empty(), "hears the leader: {later:?}");
        assert_eq!(
            leader.commit_index(),
            0,
            "only the leader's own persist commits"
        );
    }

    #[test]
    fn observers_learned_are_bounded() {
        let mut leader = node(1, 1);
        step(&mut leader, 1_000, Event::Tick);
        let hello = Body::AppendResponse {
            success: false,
            match_index: 0,
            conflict_index: 1,
            conflict_term: None,
        };
        let first = 100;
        for id in first..first + OBSERVERS_MAX as u32 + 10 {
            step(&mut leader, 1_001, from(id, 0, hello.clone()));
        }
        assert_eq!(leader.quorum_info(1_002).observers.len(), OBSERVERS_MAX);
    }

    #[test]
    fn votes_from_a_wiped_voter_do_not_count() {
        let mut n1 = node(1, 3);
        step(&mut n1, 1_000, Event::Tick);
        assert_eq!(n1.role(), Role::PreCandidate);
        let pre = Body::VoteResponse {
            pre_vote: true,
            granted: true,
        };
        step(&mut n1, 1_001, from_dir(2, DirectoryId(5), 1, pre.clone()));
        assert_eq!(
            n1.role(),
            Role::PreCandidate,
            "wrong directory id: not counted"
        );
        step(&mut n1, 1_002, from(2, 1, pre));
        assert_eq!(n1.role(), Role::Candidate);
        let yes = Body::VoteResponse {
            pre_vote: false,
            granted: true,
        };
        step(&mut n1, 1_003, from_dir(3, DirectoryId(5), 1, yes.clone()));
        assert_eq!(n1.role(), Role::Candidate);
        let effects = step(&mut n1, 1_004, from(3, 1, yes));
        assert_eq!(n1.role(), Role::Leader);
        let noop = entry(1, 1, b"");
        assert!(effects.contains(&Effect::AppendLog {
            entries: vec![noop]
        }));
        assert!(effects.contains(&Effect::RoleChanged {
            role: Role::Leader,
            term: 1,
            leader: Some(NodeId(1)),
        }));
    }

    #[test]
    fn single_voter_commits_only_what_it_persisted() {
        let mut n1 = node(1, 1);
        step(&mut n1, 1_000, Event::Tick);
        assert_eq!(n1.role(), Role::Leader);
        let mut effects = Vec::new();
        assert_eq!(
            n1.propose(1_001, Bytes::from_static(b"a"), &mut effects),
            Ok(2)
        );
        assert_eq!(n1.commit_index(), 0);
        let effects = step(&mut n1, 1_002, Event::LogPersisted { up_to: 1, term: 1 });
        assert_eq!(
            effects,
            vec![Effect::Apply {
                entries: vec![entry(1, 1, b"")]
            }]
        );
        let effects = step(&mut n1, 1_003, Event::LogPersisted { up_to: 2, term: 1 });
        assert_eq!(
            effects,
            vec![Effect::Apply {
                entries: vec![entry(1, 2, b"a")]
            }]
        );
        let info = n1.quorum_info(1_004);
        assert_eq!(
            (info.leader_id, info.leader_epoch, info.high_watermark),
            (Some(NodeId(1)), 1, 2)
        );
        assert_eq!(info.voters[0].log_end_offset, Some(2));
    }

    #[test]
    fn follower_refuses_proposals_with_a_leader_hint() {
        let mut n1 = node(1, 3);
        step(&mut n1, 0, from(2, 3, append((0, 0), 0, vec![])));
        let mut effects = Vec::new();
        let refused = n1.propose(1, Bytes::from_static(b"a"), &mut effects);
        assert_eq!(
            refused,
            Err(ProposeError::NotLeader {
                leader_hint: Some(NodeId(2))
            })
        );
        assert!(effects.is_empty());
    }

    #[test]
    fn follower_acknowledges_only_persisted_entries() {
        let mut n1 = node(1, 3);
        let body = append((0, 0), 2, vec![entry(1, 1, b"a"), entry(1, 2, b"b")]);
        let effects = step(&mut n1, 0, from(2, 1, body));
        assert_eq!(acked_match(&effects), Some(0));
        assert_eq!(n1.commit_index(), 0, "nothing durable yet");
        let effects = step(&mut n1, 1, Event::LogPersisted { up_to: 2, term: 1 });
        assert_eq!(acked_match(&effects), Some(2));
        assert_eq!(n1.commit_index(), 2);
        assert!(effects
            .iter()
            .any(|e| matches!(e, Effect::Apply { entries } if entries.len() == 2)));
    }

    #[test]
    fn stale_persist_report_after_truncation_is_ignored() {
        let mut n1 = node(1, 3);
        step(
            &mut n1,
            0,
            from(
                2,
                1,
                append((0, 0), 0, vec![entry(1, 1, b"a"), entry(1, 2, b"b")]),
            ),
        );
        // A new leader replaces index 2 before the old write was reported durable.
        let effects = step(
            &mut n1,
            5,
            from(3, 2, append((1, 1), 0, vec![entry(2, 2, b"c")])),
        );
        assert!(effects.contains(&Effect::TruncateLog { from_index: 2 }));
        step(&mut n1, 6, Event::LogPersisted { up_to: 2, term: 1 });
        assert_eq!(n1.persisted_index(), 0);
        step(&mut n1, 7, Event::LogPersisted { up_to: 2, term: 2 });
        assert_eq!(n1.persisted_index(), 2);
    }

    #[test]
    fn conflict_hint_names_the_first_index_of_the_conflicting_term() {
        let mut n1 = node(1, 3);
        let old = vec![entry(1, 1, b"a"), entry(2, 2, b"b"), entry(2, 3, b"c")];
        step(&mut n1, 0, from(2, 2, append((0, 0), 0, old)));
        let effects = step(&mut n1, 5, from(3, 3, append((3, 3), 0, vec![])));
        let hint = sent(&effects).iter().find_map(|(_, m)| match m.body {
            Body::AppendResponse {
                success: false,
                conflict_index,
                conflict_term,
                ..
            } => Some((conflict_index, conflict_term)),
            _ => None,
        });
        assert_eq!(hint, Some((2, Some(2))));
    }

    #[test]
    fn leader_without_a_quorum_steps_down() {
        let mut n1 = node(1, 3);
        step(&mut n1, 1_000, Event::Tick);
        let pre = Body::VoteResponse {
            pre_vote: true,
            granted: true,
        };
        step(&mut n1, 1_001, from(2, 1, pre));
        let yes = Body::VoteResponse {
            pre_vote: false,
            granted: true,
        };
        step(&mut n1, 1_002, from(2, 1, yes));
        assert_eq!(n1.role(), Role::Leader);
        let mut now = 1_002;
        while n1.role() == Role::Leader && now < 5_000 {
            now += 10;
            step(&mut n1, now, Event::Tick);
        }
        assert_eq!(n1.role(), Role::Follower);
        assert!(now <= 1_002 + 300 + 10, "stepped down at {now}");
        assert_eq!(n1.term(), 1);
    }

    #[test]
    fn snapshot_arrives_in_chunks_and_replaces_a_conflicting_log() {
        let mut n1 = node(1, 3);
        step(
            &mut n1,
            0,
            from(2, 1, append((0, 0), 0, vec![entry(1, 1, b"old")])),
        );
        let chunk = |offset: u64, bytes: &'static [u8]| Body::InstallSnapshot {
            last_index: 5,
            last_term: 2,
            total_bytes: 6,
            offset,
            chunk: Bytes::from_static(bytes),
        };
        let reply = |effects: &[Effect]| {
            sent(effects).iter().find_map(|(_, m)| match m.body {
                Body::SnapshotResponse {
                    next_offset, done, ..
                } => Some((next_offset, done)),
                _ => None,
            })
        };
        // A chunk that does not start where the buffer ends is answered with the offset wanted.
        let effects = step(&mut n1, 1, from(3, 2, chunk(3, b"def")));
        assert_eq!(reply(&effects), Some((0, false)));
        let effects = step(&mut n1, 2, from(3, 2, chunk(0, b"abc")));
        assert_eq!(reply(&effects), Some((3, false)));
        let effects = step(&mut n1, 3, from(3, 2, chunk(3, b"def")));
        assert_eq!(reply(&effects), Some((6, true)));
        let truncate_at = effects
            .iter()
            .position(|e| *e == Effect::TruncateLog { from_index: 1 });
        let install = Effect::ApplySnapshot {
            index: 5,
            term: 2,
            data: Bytes::from_static(b"abcdef"),
        };
        let install_at = effects.iter().position(|e| *e == install);
        assert!(truncate_at.expect("log dropped") < install_at.expect("snapshot applied"));
        assert_eq!(
            (n1.commit_index(), n1.applied_index(), n1.last_index()),
            (5, 5, 5)
        );
        assert_eq!(n1.snapshot_meta(), SnapshotMeta { index: 5, term: 2 });
    }

    fn arb_event() -> impl Strategy<Value = (u64, Event)> {
        let body = prop_oneof![
            (any::<bool>(), 0u64..8, 0u64..5).prop_map(|(p, i, t)| vote_request(p, i, t)),
            (any::<bool>(), any::<bool>())
                .prop_map(|(pre_vote, granted)| Body::VoteResponse { pre_vote, granted }),
            (0u64..6, 0u64..4, 0u64..8, 0usize..4).prop_map(|(prev, pt, commit, n)| {
                let entries = (0..n as u64)
                    .map(|k| entry(pt.max(1), prev + 1 + k, b"p"))
                    .collect();
                append((prev, pt), commit, entries)
            }),
            (
                any::<bool>(),
                0u64..8,
                0u64..8,
                proptest::option::of(0u64..4)
            )
                .prop_map(|(success, match_index, conflict_index, conflict_term)| {
                    Body::AppendResponse {
                        success,
                        match_index,
                        conflict_index,
                        conflict_term,
                    }
                }),
            (1u64..8, 0u64..3, 0u64..4).prop_map(|(last_index, last_term, offset)| {
                Body::InstallSnapshot {
                    last_index,
                    last_term,
                    total_bytes: 4,
                    offset: offset.min(2),
                    chunk: Bytes::from_static(b"ab"),
                }
            }),
            (0u64..8, 0u64..8, any::<bool>()).prop_map(|(last_index, next_offset, done)| {
                Body::SnapshotResponse {
                    last_index,
                    next_offset,
                    done,
                }
            }),
        ];
        let receive = (1u32..=4, 1u64..4, body, any::<bool>()).prop_map(|(id, term, body, d)| {
            let d = if d { dir(id) } else { DirectoryId(1) };
            from_dir(id, d, term, body)
        });
        let event = prop_oneof![
            4 => receive,
            1 => Just(Event::Tick),
            1 => (1u64..8, 1u64..4).prop_map(|(up_to, term)| Event::LogPersisted { up_to, term }),
            1 => (1u64..8, 1u64..4).prop_map(|(index, term)| Event::SnapshotTaken {
                index,
                term,
                data: Bytes::from_static(b"s"),
            }),
        ];
        (0u64..400, event)
    }

    proptest::proptest! {
        /// Whatever well-formed messages (and local events) arrive in whatever order, the core
        /// keeps its invariants (checked after every step) and never panics.
        #[test]
        fn arbitrary_events_never_break_the_core(
            voters in 1u32..=3,
            events in proptest::collection::vec(arb_event(), 1..60),
        ) {
            let mut core = node(1, voters);
            let mut now = 0;
            for (dt, event) in events {
                now += dt;
                let mut effects = Vec::new();
                if matches!(event, Event::Tick) && core.role() == Role::Leader {
                    let _ = core.propose(now, Bytes::from_static(b"x"), &mut effects);
                }
                core.step(now, event, &mut effects);
                proptest::prop_assert!(core.commit_index() <= core.last_index());
            }
        }
    }

    #[test]
    fn restore_rejects_a_log_with_a_gap() {
        let restored = Restored {
            hard_state: HardState {
                term: 1,
                voted_for: None,
            },
            log: vec![entry(1, 1, b"a"), entry(1, 3, b"c")],
            ..Restored::default()
        };
        let err = RaftCore::new(config(1, 3, dir(1)), 7, restored, 0).err();
        assert_eq!(err, Some(InitError::Corrupt("restored log not contiguous")));
        let mut bad = config(1, 3, dir(1));
        bad.heartbeat_interval_ms = 500;
        assert!(matches!(
            RaftCore::new(bad, 7, Restored::default(), 0),
            Err(InitError::Config(_))
        ));
    }
}
