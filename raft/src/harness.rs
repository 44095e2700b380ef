//! Deterministic cluster harness for `RaftCore` (test builds only): a discrete-event loop with a
//! virtual clock, a seeded network (delay, loss, duplication, reordering, partitions), fake disks
//! that keep only what persist effects made durable, crashes (also between two effects of one
//! step), disk wipes, random proposals and snapshots. Omniscient checks run after every event.
//! Never reads a real clock or unseeded randomness: a seed replays exactly.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::core::{Config, Effect, Event, RaftCore, Restored};
use crate::message::{Body, Message};
use crate::planted::Planted;
use crate::types::{DirectoryId, Entry, HardState, NodeId, Role, SnapshotMeta, Voter};

/// Virtual time of the faulty phase.
const SAFETY_PHASE_MS: u64 = 4_000;
/// Virtual time after healing within which the cluster must converge.
const LIVENESS_PHASE_MS: u64 = 4_000;
/// Proposals stop this long before the end, so everything accepted can resolve.
const LIVENESS_QUIET_MS: u64 = 1_500;
/// Most events of one run (a livelock guard, far above what a run needs).
const EVENTS_MAX: u64 = 2_000_000;

/// The fault mix of one run, drawn from its seed (swarm testing).
#[derive(Clone, Debug)]
pub struct Options {
    pub voters: usize,
    pub observers: usize,
    pub loss_pct: u32,
    pub dup_pct: u32,
    pub delay_max_ms: u64,
    pub fault_every_ms: u64,
    /// Chance that a step which persists something is cut short by a crash.
    pub crash_mid_step_pct: u32,
    pub wipes_allowed: usize,
    pub snapshot_every_ms: u64,
    pub propose_every_ms: u64,
    pub batch_entries_max: usize,
    /// Whether the voters' configuration lists the observers; if not, the voters learn them
    /// from the observers' introductions.
    pub observers_configured: bool,
}

impl Options {
    fn draw(rng: &mut ChaCha8Rng) -> Options {
        let voters = [1, 3, 3, 5, 5][rng.gen_range(0..5)];
        Options {
            voters,
            observers: rng.gen_range(0..=1),
            loss_pct: rng.gen_range(0..=10),
            dup_pct: rng.gen_range(0..=5),
            delay_max_ms: rng.gen_range(2..=40),
            fault_every_ms: rng.gen_range(100..=600),
            crash_mid_step_pct: rng.gen_range(0..=30),
            wipes_allowed: if rng.gen_bool(0.5) {
                (voters - 1) / 2
            } else {
                0
            },
            snapshot_every_ms: rng.gen_range(100..=1_000),
            propose_every_ms: rng.gen_range(10..=80),
            batch_entries_max: [1, 2, 4, 64][rng.gen_range(0..4)],
            observers_configured: rng.gen_bool(0.5),
        }
    }
}

/// What survives a crash.
#[derive(Clone, Debug, Default)]
struct Disk {
    hard: HardState,
    snapshot: SnapshotMeta,
    snapshot_data: Bytes,
    log: Vec<Entry>,
}

struct Node {
    id: NodeId,
    dir: DirectoryId,
    core: Option<RaftCore>,
    disk: Disk,
    /// The state machine: how far it applied and a digest of everything applied.
    sm_index: u64,
    sm_digest: u64,
    incarnation: u64,
    tick_at: Option<u64>,
}

#[derive(Debug)]
enum Ev {
    Deliver {
        to: usize,
        bytes: Bytes,
    },
    Tick {
        node: usize,
    },
    Persisted {
        node: usize,
        incarnation: u64,
        up_to: u64,
        term: u64,
    },
    Restart {
        node: usize,
    },
    Fault,
    Propose,
    Snapshot,
}

/// Figures of one run, for the sweep's summary.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub events: u64,
    pub committed: u64,
    pub elections: u64,
    pub crashes: u64,
    pub snapshots_installed: u64,
    pub wipes: u64,
}

pub struct Sim {
    rng: ChaCha8Rng,
    opts: Options,
    planted: Planted,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    nodes: Vec<Node>,
    voters: Vec<Voter>,
    observers: Vec<NodeId>,
    blocked: BTreeSet<(usize, usize)>,
    healed: bool,
    wipes_used: usize,
    // Omniscient records.
    leaders: BTreeMap<u64, NodeId>,
    /// (voter, term) -> (candidate, the voter's directory when it voted).
    votes: BTreeMap<(NodeId, u64), (NodeId, DirectoryId)>,
    entries_seen: BTreeMap<(u64, u64), (u64, u64)>,
    committed: BTreeMap<u64, (u64, u64)>,
    accepted: Vec<(u64, u64)>,
    next_payload: u64,
    failure: Option<String>,
    stats: Stats,
    /// `RAFT_TRACE=1` prints every delivered message (for replaying a failing seed).
    trace: bool,
}

fn mix(digest: u64, bytes: &[u8]) -> u64 {
    // FNV-1a: enough to tell histories apart in a test.
    bytes.iter().fold(digest ^ 0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn entry_digest(prev: u64, e: &Entry) -> u64 {
    let mut buf = BytesMut::new();
    buf.put_u64(e.term);
    buf.put_u64(e.index);
    buf.put_slice(&e.payload);
    mix(prev, &buf)
}

fn snapshot_bytes(index: u64, digest: u64) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_u64(index);
    buf.put_u64(digest);
    // Padding so that snapshots take several chunks now and then.
    buf.put_bytes(0xab, (index % 3) as usize * 40_000);
    buf.freeze()
}

fn parse_snapshot(data: &[u8]) -> Option<(u64, u64)> {
    let index = u64::from_be_bytes(data.get(0..8)?.try_into().ok()?);
    let digest = u64::from_be_bytes(data.get(8..16)?.try_into().ok()?);
    Some((index, digest))
}

impl Sim {
    pub fn new(seed: u64, planted: Planted) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let opts = Options::draw(&mut rng);
        let total = opts.voters + opts.observers;
        let nodes: Vec<Node> = (0..total)
            .map(|k| Node {
                id: NodeId(k as u32 + 1),
                dir: DirectoryId(rng.gen()),
                core: None,
                disk: Disk::default(),
                sm_index: 0,
                sm_digest: 0,
                incarnation: 0,
                tick_at: None,
            })
            .collect();
        let voters = nodes[..opts.voters]
            .iter()
            .map(|n| Voter {
                id: n.id,
                directory_id: Some(n.dir),
            })
            .collect();
        let observers = nodes[opts.voters..].iter().map(|n| n.id).collect();
        let mut sim = Sim {
            rng,
            opts,
            planted,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes,
            voters,
            observers,
            blocked: BTreeSet::new(),
            healed: false,
            wipes_used: 0,
            leaders: BTreeMap::new(),
            votes: BTreeMap::new(),
            entries_seen: BTreeMap::new(),
            committed: BTreeMap::new(),
            accepted: Vec::new(),
            next_payload: 0,
            failure: None,
            stats: Stats::default(),
            trace: std::env::var_os("RAFT_TRACE").is_some(),
        };
        for n in 0..total {
            sim.start(n);
        }
        sim.schedule(sim.opts.fault_every_ms, Ev::Fault);
        sim.schedule(sim.opts.propose_every_ms, Ev::Propose);
        sim.schedule(sim.opts.snapshot_every_ms, Ev::Snapshot);
        sim
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    fn schedule(&mut self, after_ms: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((self.now + after_ms, self.seq), ev);
    }

    fn fail(&mut self, what: String) {
        if self.failure.is_none() {
            self.failure = Some(format!("t={}ms: {what}", self.now));
        }
    }

    fn config(&self, n: usize) -> Config {
        Config {
            id: self.nodes[n].id,
            directory_id: self.nodes[n].dir,
            voters: self.voters.clone(),
            observers: if self.opts.observers_configured {
                self.observers.clone()
            } else {
                Vec::new()
            },
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            heartbeat_interval_ms: 50,
            batch_entries_max: self.opts.batch_entries_max,
            planted: self.planted,
        }
    }

    fn start(&mut self, n: usize) {
        let seed = self.rng.gen();
        let disk = self.nodes[n].disk.clone();
        // A vote once sent is never forgotten: the restored hard state must account for it
        // (unless the disk was wiped, which makes the node a new, non-voting incarnation).
        let (id, dir) = (self.nodes[n].id, self.nodes[n].dir);
        let forgotten = self
            .votes
            .range((id, 0)..=(id, u64::MAX))
            .find(|(&(_, term), &(cand, d))| {
                d == dir
                    && (disk.hard.term < term
                        || (disk.hard.term == term
                            && disk.hard.voted_for.map(|v| v.0) != Some(cand)))
            })
            .map(|(&(_, term), &(cand, _))| (term, cand));
        if let Some((term, cand)) = forgotten {
            let hard = disk.hard;
            return self.fail(format!(
                "{id} restarted with {hard:?}, forgetting its vote for {cand} in term {term}"
            ));
        }
        let (sm_index, sm_digest) = if disk.snapshot.index == 0 {
            (0, 0)
        } else {
            parse_snapshot(&disk.snapshot_data).unwrap_or((0, 0))
        };
        let restored = Restored {
            hard_state: disk.hard,
            snapshot: disk.snapshot,
            snapshot_data: disk.snapshot_data.clone(),
            log: disk.log.clone(),
            applied_index: sm_index,
        };
        match RaftCore::new(self.config(n), seed, restored, self.now) {
            Ok(core) => {
                let node = &mut self.nodes[n];
                node.core = Some(core);
                node.sm_index = sm_index;
                node.sm_digest = sm_digest;
                node.tick_at = None;
                self.step(n, Event::Tick);
            }
            Err(e) => {
                let d = &self.nodes[n].disk;
                let log: Vec<(u64, u64)> = d.log.iter().map(|e| (e.index, e.term)).collect();
                let (snap, hard) = (d.snapshot, d.hard);
                self.fail(format!(
                    "node {n} cannot restart: {e:?} {snap:?} {hard:?} {log:?}"
                ))
            }
        }
    }

    fn crash(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        if node.core.is_none() {
            return;
        }
        node.core = None;
        node.incarnation += 1;
        node.tick_at = None;
        self.stats.crashes += 1;
        let is_voter = n < self.opts.voters;
        let may_wipe = !is_voter || self.wipes_used < self.opts.wipes_allowed;
        if may_wipe && self.rng.gen_ratio(1, 4) {
            if is_voter {
                self.wipes_used += 1;
            }
            self.stats.wipes += 1;
            let node = &mut self.nodes[n];
            node.disk = Disk::default();
            node.dir = DirectoryId(self.rng.gen());
        }
        let delay = if self.rng.gen_bool(0.5) {
            self.rng.gen_range(1..50)
        } else {
            self.rng.gen_range(50..1_000)
        };
        self.schedule(delay, Ev::Restart { node: n });
    }

    fn step(&mut self, n: usize, event: Event) {
        let mut effects = Vec::new();
        let Some(core) = self.nodes[n].core.as_mut() else {
            return;
        };
        let before = core.commit_index();
        core.step(self.now, event, &mut effects);
        // §5.4.2: a leader moves its commit index only onto an entry of its own term.
        let (role, term, after) = (core.role(), core.term(), core.commit_index());
        if role == Role::Leader && after > before && core.term_at(after) != Some(term) {
            let t = core.term_at(after);
            return self.fail(format!(
                "node {n} committed {after} of term {t:?} in term {term}"
            ));
        }
        self.run_effects(n, effects);
        // Commit never falls behind what the node's durable state already covers.
        let node = &self.nodes[n];
        if let Some(core) = node.core.as_ref() {
            if core.commit_index() < node.disk.snapshot.index.min(node.sm_index) {
                let c = core.commit_index();
                self.fail(format!("node {n}: commit {c} below its durable snapshot"));
            }
        }
    }

    fn run_effects(&mut self, n: usize, effects: Vec<Effect>) {
        // Crashes aim at steps that make something durable, hard-state changes most of all
        // (they are rare and matter most: terms and votes).
        let hard = effects
            .iter()
            .any(|e| matches!(e, Effect::PersistHardState(_)));
        let log = effects
            .iter()
            .any(|e| matches!(e, Effect::AppendLog { .. } | Effect::TruncateLog { .. }));
        let per_mille = match (hard, log) {
            (true, _) => self.opts.crash_mid_step_pct * 5,
            (false, true) => self.opts.crash_mid_step_pct,
            (false, false) => 0,
        };
        let mut crash_at = None;
        if per_mille > 0 && !self.healed && self.rng.gen_ratio(per_mille, 1_000) {
            crash_at = Some(self.rng.gen_range(0..=effects.len()));
        }
        for (k, effect) in effects.into_iter().enumerate() {
            if crash_at == Some(k) {
                break;
            }
            self.execute(n, effect);
        }
        if crash_at.is_some() {
            self.crash(n);
            return;
        }
        self.schedule_tick(n);
    }

    fn schedule_tick(&mut self, n: usize) {
        let now = self.now;
        let node = &mut self.nodes[n];
        let Some(deadline) = node.core.as_ref().and_then(|c| c.next_deadline_ms()) else {
            return;
        };
        let at = deadline.max(now + 1);
        if node.tick_at.is_none_or(|t| t <= now || at < t) {
            node.tick_at = Some(at);
            self.seq += 1;
            self.queue.insert((at, self.seq), Ev::Tick { node: n });
        }
    }

    fn execute(&mut self, n: usize, effect: Effect) {
        match effect {
            Effect::PersistHardState(h) => self.nodes[n].disk.hard = h,
            Effect::TruncateLog { from_index } => {
                self.nodes[n].disk.log.retain(|e| e.index < from_index)
            }
            Effect::AppendLog { entries } => self.append_log(n, entries),
            Effect::CompactLog { up_to_index } => {
                self.nodes[n].disk.log.retain(|e| e.index > up_to_index)
            }
            Effect::ApplySnapshot { index, term, data } => {
                self.stats.snapshots_installed += 1;
                let Some((at, digest)) = parse_snapshot(&data) else {
                    return self.fail(format!("node {n}: unreadable snapshot"));
                };
                if at != index {
                    return self.fail(format!("node {n}: snapshot {index} holds state at {at}"));
                }
                if let Some((t, d)) = self.committed.get(&index) {
                    if (*t, *d) != (term, digest) {
                        return self.fail(format!("node {n}: snapshot {index} diverges"));
                    }
                }
                let node = &mut self.nodes[n];
                node.sm_index = index;
                node.sm_digest = digest;
                node.disk.snapshot = SnapshotMeta { index, term };
                node.disk.snapshot_data = data;
                node.disk.log.retain(|e| e.index > index);
            }
            Effect::Apply { entries } => self.apply(n, entries),
            Effect::Send { to, msg } => self.send(n, to, msg),
            Effect::RoleChanged { role, term, .. } => {
                if role == Role::Leader {
                    self.on_new_leader(n, term);
                }
            }
        }
    }

    fn append_log(&mut self, n: usize, entries: Vec<Entry>) {
        let Some(core) = self.nodes[n].core.as_ref() else {
            return;
        };
        let mut checks = Vec::new();
        for e in &entries {
            let prev_term = core.term_at(e.index - 1).unwrap_or(u64::MAX);
            let hash = mix(0, &e.payload);
            checks.push(((e.index, e.term), (hash, prev_term)));
        }
        for (key, value) in checks {
            match self.entries_seen.get(&key) {
                Some(seen) if *seen != value => {
                    return self.fail(format!("log matching: entry {key:?} differs on node {n}"));
                }
                Some(_) => {}
                None => {
                    self.entries_seen.insert(key, value);
                }
            }
        }
        let disk = &mut self.nodes[n].disk;
        let expected = disk.log.last().map_or(disk.snapshot.index, |e| e.index) + 1;
        if entries.first().is_some_and(|e| e.index != expected) {
            let first = entries[0].index;
            return self.fail(format!(
                "node {n}: append at {first}, disk ends before {expected}"
            ));
        }
        let last = entries.last().map(|e| (e.index, e.term));
        disk.log.extend(entries);
        if let Some((up_to, term)) = last {
            let incarnation = self.nodes[n].incarnation;
            let delay = self.rng.gen_range(0..5);
            let ev = Ev::Persisted {
                node: n,
                incarnation,
                up_to,
                term,
            };
            self.schedule(delay, ev);
        }
    }

    fn apply(&mut self, n: usize, entries: Vec<Entry>) {
        for e in entries {
            let node = &mut self.nodes[n];
            if e.index != node.sm_index + 1 {
                let at = node.sm_index;
                return self.fail(format!("node {n}: applied {} after {at}", e.index));
            }
            node.sm_digest = entry_digest(node.sm_digest, &e);
            node.sm_index = e.index;
            let mine = (e.term, node.sm_digest);
            match self.committed.get(&e.index) {
                Some(agreed) if *agreed != mine => {
                    let i = e.index;
                    return self.fail(format!(
                        "state machine safety: node {n} applied {i} as {mine:?}, others {agreed:?}"
                    ));
                }
                Some(_) => {}
                None => {
                    self.committed.insert(e.index, mine);
                    self.stats.committed += 1;
                }
            }
        }
    }

    fn on_new_leader(&mut self, n: usize, term: u64) {
        self.stats.elections += 1;
        let id = self.nodes[n].id;
        if let Some(other) = self.leaders.insert(term, id) {
            if other != id {
                return self.fail(format!("two leaders in term {term}: {other} and {id}"));
            }
        }
        let Some(core) = self.nodes[n].core.as_ref() else {
            return;
        };
        let snapshot = core.snapshot_meta().index;
        let missing = self
            .committed
            .iter()
            .find(|(i, (t, _))| **i > snapshot && core.term_at(**i) != Some(*t))
            .map(|(i, _)| *i);
        if let Some(i) = missing {
            self.fail(format!(
                "leader completeness: {id} leads term {term} without entry {i}"
            ));
        }
    }

    fn send(&mut self, n: usize, to: NodeId, msg: Message) {
        if let Body::VoteResponse {
            pre_vote: false,
            granted: true,
        } = msg.body
        {
            let voter = self.nodes[n].id;
            let voter_dir = self.nodes[n].dir;
            if let Some((earlier, _)) = self.votes.insert((voter, msg.term), (to, voter_dir)) {
                if earlier != to {
                    let t = msg.term;
                    return self.fail(format!("{voter} voted for {earlier} and {to} in term {t}"));
                }
            }
        }
        let Some(dest) = self.nodes.iter().position(|x| x.id == to) else {
            return self.fail(format!("message to unknown node {to}"));
        };
        if self.blocked.contains(&(n, dest)) || self.rng.gen_ratio(self.opts.loss_pct, 100) {
            return;
        }
        let bytes = msg.encode();
        let copies = if self.rng.gen_ratio(self.opts.dup_pct, 100) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.rng.gen_range(1..=self.opts.delay_max_ms);
            let ev = Ev::Deliver {
                to: dest,
                bytes: bytes.clone(),
            };
            self.schedule(delay, ev);
        }
    }

    fn live_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|n| self.nodes[*n].core.is_some())
            .collect()
    }

    fn fault(&mut self) {
        match self.rng.gen_range(0..10) {
            0..=2 => {
                let n = self.rng.gen_range(0..self.nodes.len());
                self.crash(n);
            }
            3 => {
                // Symmetric split into two random sides.
                self.blocked.clear();
                let side: Vec<bool> = self.nodes.iter().map(|_| self.rng.gen()).collect();
                for a in 0..self.nodes.len() {
                    for b in 0..self.nodes.len() {
                        if side[a] != side[b] {
                            self.blocked.insert((a, b));
                        }
                    }
                }
            }
            4 => {
                // One-way: a random link loses its messages in one direction.
                let a = self.rng.gen_range(0..self.nodes.len());
                let b = self.rng.gen_range(0..self.nodes.len());
                self.blocked.insert((a, b));
            }
            5 => {
                // Isolate the current leader, if any.
                let leader = self.live_nodes().into_iter().find(|n| {
                    self.nodes[*n]
                        .core
                        .as_ref()
                        .is_some_and(|c| c.role() == Role::Leader)
                });
                if let Some(l) = leader {
                    for other in 0..self.nodes.len() {
                        if other != l {
                            self.blocked.insert((l, other));
                            self.blocked.insert((other, l));
                        }
                    }
                }
            }
            6 | 7 => self.blocked.clear(),
            _ => {}
        }
    }

    fn snapshot(&mut self) {
        let live = self.live_nodes();
        if live.is_empty() {
            return;
        }
        let n = live[self.rng.gen_range(0..live.len())];
        let node = &self.nodes[n];
        let Some(core) = node.core.as_ref() else {
            return;
        };
        let index = node.sm_index;
        if index <= node.disk.snapshot.index {
            return;
        }
        let Some(term) = core.term_at(index) else {
            return;
        };
        let data = snapshot_bytes(index, node.sm_digest);
        // The state machine makes its snapshot durable before telling the core.
        let node = &mut self.nodes[n];
        node.disk.snapshot = SnapshotMeta { index, term };
        node.disk.snapshot_data = data.clone();
        self.step(n, Event::SnapshotTaken { index, term, data });
    }

    fn propose(&mut self) {
        let leaders: Vec<usize> = self
            .live_nodes()
            .into_iter()
            .filter(|n| {
                self.nodes[*n]
                    .core
                    .as_ref()
                    .is_some_and(|c| c.role() == Role::Leader)
            })
            .collect();
        let Some(&n) = leaders.last() else {
            return;
        };
        self.next_payload += 1;
        let payload = Bytes::copy_from_slice(&self.next_payload.to_be_bytes());
        let mut effects = Vec::new();
        let now = self.now;
        let Some(core) = self.nodes[n].core.as_mut() else {
            return;
        };
        let term = core.term();
        if let Ok(index) = core.propose(now, payload, &mut effects) {
            self.accepted.push((index, term));
        }
        self.run_effects(n, effects);
    }

    fn heal(&mut self) {
        self.healed = true;
        self.blocked.clear();
        self.opts.loss_pct = 0;
        self.opts.dup_pct = 0;
        for n in 0..self.nodes.len() {
            if self.nodes[n].core.is_none() {
                self.nodes[n].incarnation += 1;
                self.start(n);
            }
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { to, bytes } => match Message::decode(&bytes) {
                Ok(msg) => {
                    if self.trace {
                        let c = self.nodes[to].core.as_ref().map(|c| {
                            (
                                c.role(),
                                c.term(),
                                c.commit_index(),
                                c.persisted_index(),
                                c.last_index(),
                            )
                        });
                        eprintln!("t={} deliver to {to} {c:?}: {msg:?}", self.now);
                    }
                    self.step(to, Event::Receive(msg))
                }
                Err(e) => self.fail(format!("undecodable message: {e}")),
            },
            Ev::Tick { node } => {
                if self.nodes[node].tick_at == Some(self.now) {
                    self.nodes[node].tick_at = None;
                }
                self.step(node, Event::Tick);
            }
            Ev::Persisted {
                node,
                incarnation,
                up_to,
                term,
            } => {
                if self.nodes[node].incarnation == incarnation {
                    self.step(node, Event::LogPersisted { up_to, term });
                }
            }
            Ev::Restart { node } => {
                if self.nodes[node].core.is_none() {
                    self.start(node);
                }
            }
            Ev::Fault => {
                if !self.healed {
                    self.fault();
                    self.schedule(self.opts.fault_every_ms, Ev::Fault);
                }
            }
            Ev::Propose => {
                if self.now < SAFETY_PHASE_MS + LIVENESS_PHASE_MS - LIVENESS_QUIET_MS {
                    self.propose();
                    self.schedule(self.opts.propose_every_ms, Ev::Propose);
                }
            }
            Ev::Snapshot => {
                self.snapshot();
                self.schedule(self.opts.snapshot_every_ms, Ev::Snapshot);
            }
        }
    }

    /// Runs the safety phase, heals, runs the liveness phase and checks convergence.
    pub fn run(mut self) -> Result<Stats, String> {
        let end = SAFETY_PHASE_MS + LIVENESS_PHASE_MS;
        while let Some(((at, _), ev)) = self.queue.pop_first() {
            if at > end {
                break;
            }
            if !self.healed && at >= SAFETY_PHASE_MS {
                self.now = SAFETY_PHASE_MS;
                self.heal();
            }
            self.now = at;
            self.handle(ev);
            self.stats.events += 1;
            if self.stats.events > EVENTS_MAX {
                self.fail("event budget exhausted".into());
            }
            if let Some(f) = self.failure.take() {
                return Err(f);
            }
        }
        self.check_liveness()?;
        Ok(self.stats)
    }

    fn check_liveness(&self) -> Result<(), String> {
        let leader = self
            .nodes
            .iter()
            .filter_map(|n| n.core.as_ref())
            .find(|c| c.role() == Role::Leader);
        let Some(leader) = leader else {
            return Err("liveness: no leader after healing".into());
        };
        for &(index, term) in &self.accepted {
            let resolved = self.committed.range(index..).next().is_some()
                || self.committed.values().any(|(t, _)| *t > term);
            if !resolved {
                return Err(format!(
                    "liveness: proposal {index}@{term} neither committed nor superseded"
                ));
            }
        }
        let commit = leader.commit_index();
        for (k, n) in self.nodes.iter().enumerate() {
            if n.sm_index != commit {
                return Err(format!(
                    "liveness: node {k} applied {} but the leader committed {commit}",
                    n.sm_index
                ));
            }
        }
        Ok(())
    }
}

/// Runs seeds `seeds`, returning the first failing seed with its message.
pub fn sweep(seeds: std::ops::Range<u64>, planted: Planted) -> Result<Stats, (u64, String)> {
    let mut total = Stats::default();
    for seed in seeds {
        let outcome = std::panic::catch_unwind(|| Sim::new(seed, planted).run());
        let stats = match outcome {
            Ok(Ok(stats)) => stats,
            Ok(Err(why)) => return Err((seed, why)),
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                return Err((seed, format!("panic: {why}")));
            }
        };
        total.events += stats.events;
        total.committed += stats.committed;
        total.elections += stats.elections;
        total.crashes += stats.crashes;
        total.snapshots_installed += stats.snapshots_installed;
        total.wipes += stats.wipes;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay_hint(seed: u64) -> String {
        format!(
            "replay: RAFT_SEED={seed} RAFT_TRACE=1 \
             cargo test -p samsa-raft --release harness::tests::replay_one_seed"
        )
    }

    #[test]
    fn sweep_without_planted_bugs_is_clean() {
        // `RAFT_SWEEP=start..end` sweeps other seeds (e.g. a long run before a release).
        let seeds = std::env::var("RAFT_SWEEP")
            .ok()
            .and_then(|r| {
                let (a, b) = r.split_once("..")?;
                Some(a.parse().ok()?..b.parse().ok()?)
            })
            .unwrap_or(0..400);
        let n = seeds.end - seeds.start;
        // Seeds per second: time this test alone (the harness never reads a real clock).
        match sweep(seeds, Planted::default()) {
            Ok(stats) => {
                println!("{n} seeds clean: {stats:?}");
                assert!(stats.committed > n * 10, "too little progress: {stats:?}");
                assert!(
                    stats.snapshots_installed > 0,
                    "no snapshot was ever installed"
                );
                assert!(stats.crashes > n, "too few crashes: {stats:?}");
                assert!(stats.wipes > n / 10, "too few disk wipes: {stats:?}");
            }
            Err((seed, why)) => panic!("seed {seed} failed: {why}\n{}", replay_hint(seed)),
        }
    }

    #[test]
    fn replay_one_seed() {
        let Ok(seed) = std::env::var("RAFT_SEED") else {
            // Without a seed to replay, run seed 0 so the test still checks something.
            assert!(Sim::new(0, Planted::default()).run().is_ok());
            return;
        };
        let seed: u64 = seed.parse().expect("RAFT_SEED is a number");
        let sim = Sim::new(seed, Planted::default());
        println!("options: {:?}", sim.options());
        if let Err(why) = sim.run() {
            panic!("seed {seed}: {why}");
        }
    }

    /// Runs seeds from 0 with one planted bug until the harness catches it.
    fn seeds_to_catch(planted: Planted, budget: u64) -> u64 {
        let budget = std::env::var("RAFT_BUDGET")
            .ok()
            .and_then(|b| b.parse().ok())
            .unwrap_or(budget);
        let start: u64 = std::env::var("RAFT_START")
            .ok()
            .and_then(|b| b.parse().ok())
            .unwrap_or(0);
        for seed in start..start + budget {
            let outcome = std::panic::catch_unwind(|| Sim::new(seed, planted).run());
            if !matches!(outcome, Ok(Ok(_))) {
                println!(
                    "{planted:?} caught at seed {seed}: {outcome:?}",
                    outcome = outcome.map_err(|_| "panic")
                );
                return seed - start + 1;
            }
        }
        panic!("{planted:?} survived {budget} seeds");
    }

    #[test]
    fn planted_vote_without_log_check_is_caught() {
        let planted = Planted {
            vote_without_log_check: true,
            ..Planted::default()
        };
        let seeds = seeds_to_catch(planted, 300);
        println!("raft_vote_without_log_check: caught after {seeds} seeds");
    }

    #[test]
    fn planted_vote_persisted_after_reply_is_caught() {
        let planted = Planted {
            vote_persisted_after_reply: true,
            ..Planted::default()
        };
        let seeds = seeds_to_catch(planted, 300);
        println!("raft_vote_persisted_after_reply: caught after {seeds} seeds");
    }

    #[test]
    fn planted_introductions_ignored_is_caught() {
        let planted = Planted {
            introductions_ignored: true,
            ..Planted::default()
        };
        let seeds = seeds_to_catch(planted, 300);
        println!("raft_introductions_ignored: caught after {seeds} seeds");
    }

    #[test]
    fn planted_commit_old_term_is_caught() {
        let planted = Planted {
            commit_old_term: true,
            ..Planted::default()
        };
        let seeds = seeds_to_catch(planted, 1000);
        println!("raft_commit_old_term: caught after {seeds} seeds");
    }

    #[test]
    fn a_seed_replays_identically() {
        let a = Sim::new(7, Planted::default()).run();
        let b = Sim::new(7, Planted::default()).run();
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }
}
