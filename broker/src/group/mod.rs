//! The group coordinator core (classic protocol): one state machine per consumer group, stepped
//! by events (`step(now_ms, event, &mut effects)`): JoinGroup with the KIP-394 two-step join,
//! SyncGroup, Heartbeat, LeaveGroup, static membership (KIP-345), the initial rebalance delay,
//! rebalance and session timeouts, offset commits and deletes, and the replay of
//! `__consumer_offsets`. Performs no I/O, never reads a clock (the shell passes a monotonic
//! `now_ms`), never draws randomness (member ids come from a boot stamp and a counter) and keeps
//! every map ordered. Invariants are asserted after every step.

pub mod consumer;
pub mod schema;
pub mod shell;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use samsa_net::error::code;

pub use schema::{GroupValue, OffsetValue, Stored};

/// Identifies one request waiting for its reply.
pub type RequestId = u64;

/// Most groups one coordinator holds.
pub const GROUPS_MAX: usize = 100_000;
/// Most members (joined or pending) in one group (Kafka's `group.max.size` default is unbounded;
/// we bound it).
pub const MEMBERS_PER_GROUP_MAX: usize = 10_000;
/// Most protocols one JoinGroup may offer.
pub const PROTOCOLS_PER_JOIN_MAX: usize = 64;
/// Longest commit metadata kept (Kafka's `offset.metadata.max.bytes`).
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// Longest group id, member id or instance id accepted.
pub const ID_BYTES_MAX: usize = 1024;

/// Group settings (broker config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group waits
    /// for more members.
    pub initial_rebalance_delay_ms: u64,
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i32,
    /// `group.consumer.session.timeout.ms` (KIP-848 groups).
    pub consumer_session_timeout_ms: u64,
    /// `group.consumer.heartbeat.interval.ms` (KIP-848 groups).
    pub consumer_heartbeat_interval_ms: i32,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay_ms: 300,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            consumer_session_timeout_ms: 45_000,
            consumer_heartbeat_interval_ms: 5_000,
        }
    }
}

/// Kafka's classic group states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl State {
    /// The name DescribeGroups and ListGroups report.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
            State::Dead => "Dead",
        }
    }
}

/// A JoinGroup as the core sees it.
#[derive(Clone, Debug)]
pub struct Join {
    pub request: RequestId,
    pub group: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (name, metadata) in the member's preference order.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: an unknown member must first be given an id (MEMBER_ID_REQUIRED).
    pub require_known_member_id: bool,
}

/// One offset to commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitEntry {
    pub topic: String,
    pub partition: i32,
    pub value: OffsetValue,
}

#[derive(Clone, Debug)]
pub enum Event {
    Join(Join),
    Sync {
        request: RequestId,
        group: String,
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
        protocol_type: Option<String>,
        protocol_name: Option<String>,
        assignments: Vec<(String, Bytes)>,
    },
    Heartbeat {
        request: RequestId,
        group: String,
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
    },
    /// (member id, instance id) pairs; LeaveGroup v0-2 sends one member id.
    Leave {
        request: RequestId,
        group: String,
        members: Vec<(String, Option<String>)>,
    },
    /// Validates a commit; the answer is `Persist` (then `OffsetsAppended`) or a `Reply`.
    CommitOffsets {
        request: RequestId,
        group: String,
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
        entries: Vec<CommitEntry>,
    },
    /// The commit's records are committed in the offsets log (durable, and in cluster mode
    /// replicated to the ISR): apply them. `position` is the log end offset after the commit's
    /// batch; commits may complete out of log order, so an entry older than the one applied
    /// for the same partition is ignored.
    OffsetsAppended {
        group: String,
        entries: Vec<CommitEntry>,
        position: i64,
    },
    /// Removes a group with no members and its offsets (DeleteGroups).
    DeleteGroup {
        request: RequestId,
        group: String,
    },
    /// Removes committed offsets (OffsetDelete); partitions of topics the members subscribe to
    /// are refused with GROUP_SUBSCRIBED_TO_TOPIC, as Kafka does.
    DeleteOffsets {
        request: RequestId,
        group: String,
        partitions: Vec<(String, i32)>,
    },
    /// KIP-848 ConsumerGroupHeartbeat.
    ConsumerHeartbeat(consumer::Heartbeat),
    /// Time passed: expire sessions and pending members, finish joins whose deadline passed.
    Tick,
}

/// What JoinGroup answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinReply {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only the leader gets the members: (member id, instance id, metadata).
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// JoinGroup v9+ (KIP-814): a static leader rejoining a Stable group must not assign.
    pub skip_assignment: bool,
}

impl JoinReply {
    fn error(error: i16, member_id: &str) -> JoinReply {
        JoinReply {
            error,
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncReply {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncReply {
    fn error(error: i16) -> SyncReply {
        SyncReply {
            error,
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Join(JoinReply),
    Sync(SyncReply),
    /// Heartbeat, DeleteGroup: one error code.
    Code(i16),
    /// LeaveGroup: the top-level error and one (member id, instance id, error) per member.
    Leave(i16, Vec<(String, Option<String>, i16)>),
    /// OffsetCommit / OffsetDelete: one error for every partition of the request.
    Offsets(i16),
    /// OffsetDelete that ran: the partitions refused (GROUP_SUBSCRIBED_TO_TOPIC); the rest were
    /// deleted.
    OffsetsDeleted(Vec<(String, i32, i16)>),
    ConsumerHeartbeat(consumer::HeartbeatReply),
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Reply {
        request: RequestId,
        reply: Reply,
    },
    /// Append these records to the offsets partition of `group`; answer `request` (if any)
    /// with `Reply::Offsets(NONE)` once they are durable, or a storage error.
    Persist {
        request: Option<RequestId>,
        group: String,
        records: Vec<(Bytes, Option<Bytes>)>,
        /// For commits: the entries to apply with `OffsetsAppended` after the append.
        entries: Vec<CommitEntry>,
        /// Replies to send only once the records are durable (a successful SyncGroup: its
        /// generation must never be handed out again after a crash); on a storage error each
        /// is answered with that error instead.
        then: Vec<(RequestId, Reply)>,
    },
}

#[derive(Clone, Debug)]
pub struct Member {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    awaiting_join: Option<RequestId>,
    awaiting_sync: Option<RequestId>,
    last_heartbeat_ms: u64,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

#[derive(Clone, Debug)]
pub struct Group {
    pub state: State,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, each with its expiry.
    pending: BTreeMap<String, u64>,
    /// instance id → member id (static members).
    statics: BTreeMap<String, String>,
    /// PreparingRebalance: when the join phase ends even if members are missing.
    join_deadline_ms: u64,
    /// PreparingRebalance from Empty: the initial delay may still extend the join phase.
    initial_delay: bool,
    /// The generation whose assignment was stored (one per generation).
    assigned_generation: i32,
    pub offsets: BTreeMap<(String, i32), OffsetValue>,
    /// Log position (`OffsetsAppended::position`) of the commit each offset came from.
    positions: BTreeMap<(String, i32), i64>,
}

impl Group {
    fn new() -> Group {
        Group {
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            statics: BTreeMap::new(),
            join_deadline_ms: 0,
            initial_delay: false,
            assigned_generation: 0,
            offsets: BTreeMap::new(),
            positions: BTreeMap::new(),
        }
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    /// The protocol every member supports, by the leader's preference order (Kafka votes; with
    /// one candidate set this agrees with it in the common case).
    fn select_protocol(&self) -> Option<String> {
        let leader = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .or_else(|| self.members.values().next())?;
        leader
            .protocols
            .iter()
            .map(|(n, _)| n)
            .find(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == *n))
            })
            .cloned()
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self
            .protocol_type
            .as_deref()
            .is_some_and(|t| t != protocol_type)
        {
            return false;
        }
        protocols.iter().any(|(n, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(p, _)| p == n))
        })
    }
}

/// Summary DescribeGroups reports for one member.
#[derive(Clone, Debug)]
pub struct MemberView {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// The coordinator core: every group this node coordinates.
pub struct Coordinator {
    config: GroupConfig,
    groups: BTreeMap<String, Group>,
    /// KIP-848 consumer groups (their offsets live in `groups`).
    consumer: BTreeMap<String, consumer::ConsumerGroup>,
    /// The records last written for each consumer group (key → value), to write only changes.
    consumer_written: BTreeMap<String, BTreeMap<Bytes, Bytes>>,
    /// Distinguishes member ids across restarts (the clock reading at start, from the shell).
    boot_stamp: u64,
    next_member: u64,
    /// Planted bugs (simulation builds only; inert everywhere else).
    hooks: samsa_net::Hooks,
}

fn valid_id(s: &str) -> bool {
    s.len() <= ID_BYTES_MAX
}

fn reply(effects: &mut Vec<Effect>, request: RequestId, r: Reply) {
    effects.push(Effect::Reply { request, reply: r });
}

impl Coordinator {
    pub fn new(config: GroupConfig, boot_stamp: u64) -> Coordinator {
        Coordinator {
            config,
            groups: BTreeMap::new(),
            consumer: BTreeMap::new(),
            consumer_written: BTreeMap::new(),
            boot_stamp,
            next_member: 0,
            hooks: samsa_net::Hooks::default(),
        }
    }

    /// Installs the node's hooks (the simulator's planted bugs).
    pub fn set_hooks(&mut self, hooks: samsa_net::Hooks) {
        self.hooks = hooks;
    }

    pub fn group(&self, id: &str) -> Option<&Group> {
        self.groups.get(id)
    }

    pub fn groups(&self) -> impl Iterator<Item = (&String, &Group)> {
        self.groups.iter()
    }

    /// Members as DescribeGroups shows them.
    pub fn describe(&self, id: &str) -> Option<(State, Vec<MemberView>)> {
        let g = self.groups.get(id)?;
        let protocol = g.protocol_name.clone().unwrap_or_default();
        let members = g
            .members
            .values()
            .map(|m| MemberView {
                member_id: m.member_id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: m.metadata(&protocol),
                assignment: m.assignment.clone(),
            })
            .collect();
        Some((g.state, members))
    }

    /// Applies one record of `__consumer_offsets` (start-up replay).
    pub fn replay(&mut self, record: Stored) {
        match record {
            Stored::Offset {
                group,
                topic,
                partition,
                value,
            } => match value {
                Some(v) => {
                    if self.groups.len() < GROUPS_MAX || self.groups.contains_key(&group) {
                        let g = self.groups.entry(group).or_insert_with(Group::new);
                        g.offsets.insert((topic, partition), v);
                    }
                }
                None => {
                    if let Some(g) = self.groups.get_mut(&group) {
                        g.offsets.remove(&(topic, partition));
                    }
                }
            },
            Stored::Group { group, value } => match value {
                Some(v) => {
                    if self.groups.len() < GROUPS_MAX || self.groups.contains_key(&group) {
                        let g = self.groups.entry(group).or_insert_with(Group::new);
                        // Generations only rise, whatever order the records were written in.
                        g.generation = g.generation.max(v.generation);
                        g.assigned_generation = g.generation;
                        if !v.protocol_type.is_empty() {
                            g.protocol_type = Some(v.protocol_type);
                        }
                    }
                }
                None => {
                    self.groups.remove(&group);
                }
            },
            other => self.replay_consumer(other),
        }
    }

    /// Drops every group `owned` selects (cluster mode: their offsets partition is now led,
    /// and its groups coordinated, elsewhere). The requests their members still wait on
    /// (JoinGroup, SyncGroup) are answered NOT_COORDINATOR, so clients look the coordinator up
    /// again. Answers how many groups were dropped.
    pub fn unload(&mut self, owned: impl Fn(&str) -> bool, effects: &mut Vec<Effect>) -> usize {
        let ids: Vec<String> = self.groups.keys().filter(|g| owned(g)).cloned().collect();
        for id in &ids {
            let Some(g) = self.groups.remove(id) else {
                continue;
            };
            for m in g.members.values() {
                for r in [m.awaiting_join, m.awaiting_sync].into_iter().flatten() {
                    reply(effects, r, Reply::Code(code::NOT_COORDINATOR));
                }
            }
        }
        let before = ids.len();
        let consumer: Vec<String> = self.consumer.keys().filter(|g| owned(g)).cloned().collect();
        for id in &consumer {
            self.consumer.remove(id);
            self.consumer_written.remove(id);
        }
        before + consumer.iter().filter(|g| !ids.contains(g)).count()
    }

    pub fn step(&mut self, now_ms: u64, event: Event, effects: &mut Vec<Effect>) {
        let touched: Option<String> = match &event {
            Event::Join(j) => Some(j.group.clone()),
            Event::Sync { group, .. }
            | Event::Heartbeat { group, .. }
            | Event::Leave { group, .. }
            | Event::CommitOffsets { group, .. }
            | Event::OffsetsAppended { group, .. }
            | Event::DeleteGroup { group, .. }
            | Event::DeleteOffsets { group, .. } => Some(group.clone()),
            Event::ConsumerHeartbeat(h) => Some(h.group.clone()),
            Event::Tick => None,
        };
        let before = touched
            .as_ref()
            .and_then(|g| self.groups.get(g))
            .map(|g| (g.generation, g.assigned_generation));
        match event {
            Event::Join(j) => self.on_join(now_ms, j, effects),
            Event::Sync {
                request,
                group,
                generation,
                member_id,
                instance_id,
                protocol_type,
                protocol_name,
                assignments,
            } => {
                let r = self.on_sync(
                    now_ms,
                    request,
                    &group,
                    generation,
                    &member_id,
                    instance_id.as_deref(),
                    (protocol_type, protocol_name),
                    assignments,
                    effects,
                );
                match (r, self.groups.get(&group)) {
                    (Some(r), Some(g)) if r.error == code::NONE => {
                        // A successful SyncGroup hands out the generation's assignment: answer
                        // only once the generation is durable (Kafka does the same).
                        let then = vec![(request, Reply::Sync(r))];
                        effects.push(persist_group_then(&group, g, now_ms, then));
                    }
                    (Some(r), _) => reply(effects, request, Reply::Sync(r)),
                    (None, _) => {}
                }
            }
            Event::Heartbeat {
                request,
                group,
                generation,
                member_id,
                instance_id,
            } => {
                let c = self.on_heartbeat(
                    now_ms,
                    &group,
                    generation,
                    &member_id,
                    instance_id.as_deref(),
                );
                reply(effects, request, Reply::Code(c));
            }
            Event::Leave {
                request,
                group,
                members,
            } => self.on_leave(now_ms, request, &group, members, effects),
            Event::CommitOffsets {
                request,
                group,
                generation,
                member_id,
                instance_id,
                entries,
            } => self.on_commit(
                request,
                group,
                generation,
                &member_id,
                instance_id.as_deref(),
                entries,
                effects,
            ),
            Event::OffsetsAppended {
                group,
                entries,
                position,
            } => {
                if self.groups.len() < GROUPS_MAX || self.groups.contains_key(&group) {
                    let g = self.groups.entry(group).or_insert_with(Group::new);
                    for e in entries {
                        let key = (e.topic, e.partition);
                        if g.positions.get(&key).is_some_and(|p| *p >= position) {
                            continue;
                        }
                        g.positions.insert(key.clone(), position);
                        g.offsets.insert(key, e.value);
                    }
                }
            }
            Event::DeleteGroup { request, group } => self.on_delete_group(request, &group, effects),
            Event::DeleteOffsets {
                request,
                group,
                partitions,
            } => self.on_delete_offsets(request, &group, partitions, effects),
            Event::ConsumerHeartbeat(h) => {
                let group = h.group.clone();
                let mut local = Vec::new();
                self.on_consumer_heartbeat(now_ms, h, &mut local);
                self.persist_consumer(&group, local, effects);
            }
            Event::Tick => {
                self.on_tick(now_ms, effects);
                self.consumer_tick(now_ms, effects);
            }
        }
        if let (Some(id), Some((generation, assigned))) = (&touched, before) {
            if let Some(g) = self.groups.get(id) {
                assert!(
                    g.generation >= generation,
                    "group {id}: generation fell from {generation} to {}",
                    g.generation
                );
                assert!(
                    g.assigned_generation >= assigned,
                    "group {id}: assignment regressed"
                );
            }
        }
        self.assert_invariants();
    }

    fn assert_invariants(&self) {
        assert!(self.groups.len() <= GROUPS_MAX);
        self.assert_consumer_invariants();
        for (id, g) in &self.groups {
            assert!(
                g.members.len() + g.pending.len() <= MEMBERS_PER_GROUP_MAX,
                "group {id}: too many members"
            );
            assert!(
                g.assigned_generation <= g.generation,
                "group {id}: assignment ahead"
            );
            match g.state {
                State::Empty => assert!(g.members.is_empty(), "group {id}: Empty with members"),
                State::Stable => {
                    assert!(!g.members.is_empty(), "group {id}: Stable without members");
                    assert_eq!(
                        g.assigned_generation, g.generation,
                        "group {id}: Stable without this generation's assignment"
                    );
                }
                State::CompletingRebalance => {
                    assert!(
                        !g.members.is_empty(),
                        "group {id}: Completing without members"
                    );
                    assert!(g.leader.as_ref().is_some_and(|l| g.members.contains_key(l)));
                }
                State::PreparingRebalance | State::Dead => {}
            }
            for (instance, member) in &g.statics {
                let m = g.members.get(member);
                assert!(
                    m.is_some_and(|m| m.instance_id.as_deref() == Some(instance.as_str())),
                    "group {id}: static member {instance} maps to a missing member"
                );
            }
            if g.state == State::Stable {
                debug_assert!(
                    assignment_owners_disjoint(g),
                    "group {id}: a partition has two owners in generation {}",
                    g.generation
                );
            }
        }
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        self.next_member += 1;
        let prefix: String = client_id.chars().take(64).collect();
        format!("{prefix}-{:x}-{}", self.boot_stamp, self.next_member)
    }

    fn on_join(&mut self, now_ms: u64, j: Join, effects: &mut Vec<Effect>) {
        let request = j.request;
        let fail = |effects: &mut Vec<Effect>, c: i16| {
            reply(
                effects,
                request,
                Reply::Join(JoinReply::error(c, &j.member_id)),
            );
        };
        if j.group.is_empty() || !valid_id(&j.group) {
            return fail(effects, code::INVALID_GROUP_ID);
        }
        if !valid_id(&j.member_id) || j.instance_id.as_deref().is_some_and(|i| !valid_id(i)) {
            return fail(effects, code::INVALID_REQUEST);
        }
        if j.session_timeout_ms < self.config.min_session_timeout_ms
            || j.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return fail(effects, code::INVALID_SESSION_TIMEOUT);
        }
        if j.protocols.is_empty() || j.protocols.len() > PROTOCOLS_PER_JOIN_MAX {
            return fail(effects, code::INCONSISTENT_GROUP_PROTOCOL);
        }
        if self
            .consumer
            .get(&j.group)
            .is_some_and(|g| !g.members.is_empty())
        {
            return fail(effects, code::INCONSISTENT_GROUP_PROTOCOL);
        }
        if !self.groups.contains_key(&j.group) {
            if !j.member_id.is_empty() {
                return fail(effects, code::UNKNOWN_MEMBER_ID);
            }
            if self.groups.len() >= GROUPS_MAX {
                return fail(effects, code::COORDINATOR_NOT_AVAILABLE);
            }
            self.groups.insert(j.group.clone(), Group::new());
        }
        let g = self.groups.get(&j.group).expect("group inserted above");
        if g.state == State::Dead {
            return fail(effects, code::COORDINATOR_NOT_AVAILABLE);
        }
        if !g.supports(&j.protocol_type, &j.protocols) {
            return fail(effects, code::INCONSISTENT_GROUP_PROTOCOL);
        }
        let size = g.members.len() + g.pending.len();
        if j.member_id.is_empty() {
            // Static member coming back under a new incarnation: it replaces the old member id.
            if let Some(instance) = &j.instance_id {
                let member_id = self.new_member_id(&j.client_id);
                let g = self.groups.get_mut(&j.group).expect("group exists");
                if g.state == State::Stable
                    && g.statics
                        .get(instance)
                        .is_some_and(|m| g.members.contains_key(m))
                {
                    let group_id = j.group.clone();
                    static_rejoin_stable(g, now_ms, j, member_id, effects);
                    return self.maybe_complete_join(now_ms, &group_id, effects);
                }
                if let Some(old) = g.statics.get(instance).cloned() {
                    if let Some(mut m) = g.members.remove(&old) {
                        if let Some(r) = m.awaiting_join.take() {
                            reply(
                                effects,
                                r,
                                Reply::Join(JoinReply::error(code::FENCED_INSTANCE_ID, &old)),
                            );
                        }
                        if let Some(r) = m.awaiting_sync.take() {
                            reply(
                                effects,
                                r,
                                Reply::Sync(SyncReply::error(code::FENCED_INSTANCE_ID)),
                            );
                        }
                        if g.leader.as_deref() == Some(old.as_str()) {
                            g.leader = None;
                        }
                    }
                    g.statics.remove(instance);
                } else if size >= MEMBERS_PER_GROUP_MAX {
                    return fail(effects, code::GROUP_MAX_SIZE_REACHED);
                }
                return self.add_and_join(now_ms, j, member_id, effects);
            }
            if size >= MEMBERS_PER_GROUP_MAX {
                return fail(effects, code::GROUP_MAX_SIZE_REACHED);
            }
            let member_id = self.new_member_id(&j.client_id);
            if j.require_known_member_id {
                let g = self.groups.get_mut(&j.group).expect("group exists");
                let expiry = now_ms + j.session_timeout_ms.max(0) as u64;
                g.pending.insert(member_id.clone(), expiry);
                reply(
                    effects,
                    request,
                    Reply::Join(JoinReply::error(code::MEMBER_ID_REQUIRED, &member_id)),
                );
                return;
            }
            return self.add_and_join(now_ms, j, member_id, effects);
        }
        // A known (or pending) member id.
        if let Some(instance) = &j.instance_id {
            if let Some(current) = g.statics.get(instance) {
                if *current != j.member_id {
                    return fail(effects, code::FENCED_INSTANCE_ID);
                }
            }
        }
        if g.pending.contains_key(&j.member_id) {
            let member_id = j.member_id.clone();
            self.groups
                .get_mut(&j.group)
                .expect("group exists")
                .pending
                .remove(&member_id);
            return self.add_and_join(now_ms, j, member_id, effects);
        }
        let Some(m) = g.members.get(&j.member_id) else {
            return fail(effects, code::UNKNOWN_MEMBER_ID);
        };
        let same = m.protocols == j.protocols && m.protocol_type == j.protocol_type;
        let is_leader = g.leader.as_deref() == Some(j.member_id.as_str());
        match g.state {
            State::Stable | State::CompletingRebalance if same && !is_leader => {
                // Nothing changed: answer with the current generation (Kafka does the same).
                let g = self.groups.get_mut(&j.group).expect("group exists");
                let m = g.members.get_mut(&j.member_id).expect("member exists");
                m.last_heartbeat_ms = now_ms;
                let r = JoinReply {
                    error: code::NONE,
                    generation: g.generation,
                    protocol_type: g.protocol_type.clone(),
                    protocol_name: g.protocol_name.clone(),
                    leader: g.leader.clone().unwrap_or_default(),
                    member_id: j.member_id.clone(),
                    members: Vec::new(),
                    skip_assignment: false,
                };
                reply(effects, request, Reply::Join(r));
            }
            _ => {
                let member_id = j.member_id.clone();
                self.add_and_join(now_ms, j, member_id, effects);
            }
        }
    }

    /// Adds (or updates) the member, parks its join and moves the group toward a rebalance.
    fn add_and_join(&mut self, now_ms: u64, j: Join, member_id: String, effects: &mut Vec<Effect>) {
        let config = self.config.clone();
        let g = self.groups.get_mut(&j.group).expect("group exists");
        let previous = g.members.remove(&member_id);
        let mut m = Member {
            member_id: member_id.clone(),
            instance_id: j.instance_id.clone(),
            client_id: j.client_id,
            client_host: j.client_host,
            session_timeout_ms: j.session_timeout_ms,
            rebalance_timeout_ms: j.rebalance_timeout_ms.max(j.session_timeout_ms),
            protocol_type: j.protocol_type.clone(),
            protocols: j.protocols,
            assignment: Bytes::new(),
            awaiting_join: Some(j.request),
            awaiting_sync: None,
            last_heartbeat_ms: now_ms,
        };
        if let Some(mut p) = previous {
            // A second join from the same member replaces the first one's wait.
            if let Some(r) = p.awaiting_join.take() {
                reply(
                    effects,
                    r,
                    Reply::Join(JoinReply::error(code::REBALANCE_IN_PROGRESS, &member_id)),
                );
            }
            if let Some(r) = p.awaiting_sync.take() {
                reply(
                    effects,
                    r,
                    Reply::Sync(SyncReply::error(code::REBALANCE_IN_PROGRESS)),
                );
            }
            m.assignment = p.assignment;
        }
        if let Some(instance) = &j.instance_id {
            g.statics.insert(instance.clone(), member_id.clone());
        }
        g.members.insert(member_id.clone(), m);
        if g.members.len() == 1 || g.protocol_type.is_none() {
            g.protocol_type = Some(j.protocol_type);
        }
        if g.leader.is_none() {
            g.leader = Some(member_id);
        }
        match g.state {
            State::Empty => {
                g.state = State::PreparingRebalance;
                g.initial_delay = true;
                g.join_deadline_ms = now_ms + config.initial_rebalance_delay_ms;
            }
            State::Stable | State::CompletingRebalance => {
                prepare_rebalance(g, now_ms, effects);
            }
            State::PreparingRebalance => {
                if g.initial_delay {
                    // Each new member extends the initial delay, up to the rebalance timeout.
                    let cap = max_rebalance_timeout(g);
                    g.join_deadline_ms =
                        (now_ms + config.initial_rebalance_delay_ms).min(now_ms + cap);
                }
            }
            State::Dead => {}
        }
        let group_id = j.group;
        self.maybe_complete_join(now_ms, &group_id, effects);
    }

    fn maybe_complete_join(&mut self, now_ms: u64, group_id: &str, effects: &mut Vec<Effect>) {
        let Some(g) = self.groups.get_mut(group_id) else {
            return;
        };
        if g.state != State::PreparingRebalance {
            return;
        }
        let deadline_passed = now_ms >= g.join_deadline_ms;
        if g.initial_delay && !deadline_passed {
            return;
        }
        if !deadline_passed && !g.all_joined() {
            return;
        }
        // Members that did not rejoin in time are out; pending ids no longer hold the join.
        let missing: Vec<String> = g
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in missing {
            remove_member(g, &id, effects);
        }
        g.pending.clear();
        g.initial_delay = false;
        g.generation += 1;
        if g.members.is_empty() {
            g.state = State::Empty;
            g.protocol_name = None;
            g.leader = None;
            g.assigned_generation = g.generation;
            effects.push(persist_group(group_id, g, now_ms));
            return;
        }
        if !g.leader.as_ref().is_some_and(|l| g.members.contains_key(l)) {
            g.leader = g.members.keys().next().cloned();
        }
        g.protocol_name = g.select_protocol();
        g.state = State::CompletingRebalance;
        // Members that have not sent SyncGroup by then are removed (Kafka's pending-sync timeout).
        g.join_deadline_ms = now_ms + max_rebalance_timeout(g);
        let protocol = g.protocol_name.clone().unwrap_or_default();
        let leader = g.leader.clone().unwrap_or_default();
        let all: Vec<(String, Option<String>, Bytes)> = g
            .members
            .values()
            .map(|m| {
                (
                    m.member_id.clone(),
                    m.instance_id.clone(),
                    m.metadata(&protocol),
                )
            })
            .collect();
        for m in g.members.values_mut() {
            m.assignment = Bytes::new();
            m.last_heartbeat_ms = now_ms;
            if let Some(r) = m.awaiting_join.take() {
                let members = if m.member_id == leader {
                    all.clone()
                } else {
                    Vec::new()
                };
                let jr = JoinReply {
                    error: code::NONE,
                    generation: g.generation,
                    protocol_type: g.protocol_type.clone(),
                    protocol_name: g.protocol_name.clone(),
                    leader: leader.clone(),
                    member_id: m.member_id.clone(),
                    members,
                    skip_assignment: false,
                };
                reply(effects, r, Reply::Join(jr));
            }
        }
        effects.push(persist_group(group_id, g, now_ms));
    }

    #[allow(clippy::too_many_arguments)]
    fn on_sync(
        &mut self,
        now_ms: u64,
        request: RequestId,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        protocol: (Option<String>, Option<String>),
        assignments: Vec<(String, Bytes)>,
        effects: &mut Vec<Effect>,
    ) -> Option<SyncReply> {
        let Some(g) = self.groups.get_mut(group_id) else {
            return Some(SyncReply::error(code::UNKNOWN_MEMBER_ID));
        };
        if let Some(c) = check_member(g, member_id, instance_id) {
            return Some(SyncReply::error(c));
        }
        if generation != g.generation {
            return Some(SyncReply::error(code::ILLEGAL_GENERATION));
        }
        let (ptype, pname) = protocol;
        if ptype.is_some_and(|t| Some(&t) != g.protocol_type.as_ref())
            || pname.is_some_and(|n| Some(&n) != g.protocol_name.as_ref())
        {
            return Some(SyncReply::error(code::INCONSISTENT_GROUP_PROTOCOL));
        }
        match g.state {
            State::Empty | State::Dead => Some(SyncReply::error(code::UNKNOWN_MEMBER_ID)),
            State::PreparingRebalance => Some(SyncReply::error(code::REBALANCE_IN_PROGRESS)),
            State::Stable => {
                let m = g.members.get(member_id).expect("checked member");
                Some(SyncReply {
                    error: code::NONE,
                    protocol_type: g.protocol_type.clone(),
                    protocol_name: g.protocol_name.clone(),
                    assignment: m.assignment.clone(),
                })
            }
            State::CompletingRebalance => {
                let is_leader = g.leader.as_deref() == Some(member_id);
                if is_leader {
                    if g.protocol_type.as_deref() == Some("consumer")
                        && !consumer_assignments_disjoint(&assignments)
                    {
                        // The leader gave one partition to two members: refuse to install it.
                        return Some(SyncReply::error(code::INVALID_REQUEST));
                    }
                    assert!(
                        g.assigned_generation < g.generation,
                        "group {group_id}: second assignment for generation {}",
                        g.generation
                    );
                    g.assigned_generation = g.generation;
                    for (id, a) in assignments {
                        if let Some(m) = g.members.get_mut(&id) {
                            m.assignment = a;
                        }
                    }
                    g.state = State::Stable;
                    let m = g.members.get_mut(member_id).expect("checked member");
                    m.awaiting_sync = Some(request);
                    let mut then = Vec::new();
                    for m in g.members.values_mut() {
                        if let Some(r) = m.awaiting_sync.take() {
                            let sr = SyncReply {
                                error: code::NONE,
                                protocol_type: g.protocol_type.clone(),
                                protocol_name: g.protocol_name.clone(),
                                assignment: m.assignment.clone(),
                            };
                            then.push((r, Reply::Sync(sr)));
                        }
                    }
                    // Assignments go out only once this generation is durable.
                    effects.push(persist_group_then(group_id, g, now_ms, then));
                    None
                } else {
                    let m = g.members.get_mut(member_id).expect("checked member");
                    if let Some(r) = m.awaiting_sync.replace(request) {
                        reply(
                            effects,
                            r,
                            Reply::Sync(SyncReply::error(code::REBALANCE_IN_PROGRESS)),
                        );
                    }
                    None
                }
            }
        }
    }

    fn on_heartbeat(
        &mut self,
        now_ms: u64,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> i16 {
        let Some(g) = self.groups.get_mut(group_id) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        if let Some(c) = check_member(g, member_id, instance_id) {
            return c;
        }
        if generation != g.generation {
            return code::ILLEGAL_GENERATION;
        }
        let m = g.members.get_mut(member_id).expect("checked member");
        m.last_heartbeat_ms = now_ms;
        match g.state {
            State::PreparingRebalance => code::REBALANCE_IN_PROGRESS,
            State::Stable | State::CompletingRebalance => code::NONE,
            State::Empty | State::Dead => code::UNKNOWN_MEMBER_ID,
        }
    }

    fn on_leave(
        &mut self,
        now_ms: u64,
        request: RequestId,
        group_id: &str,
        members: Vec<(String, Option<String>)>,
        effects: &mut Vec<Effect>,
    ) {
        let Some(g) = self.groups.get_mut(group_id) else {
            let results = members
                .into_iter()
                .map(|(m, i)| (m, i, code::UNKNOWN_MEMBER_ID))
                .collect();
            reply(
                effects,
                request,
                Reply::Leave(code::UNKNOWN_MEMBER_ID, results),
            );
            return;
        };
        let mut results = Vec::new();
        let mut removed = false;
        for (member_id, instance_id) in members.into_iter().take(MEMBERS_PER_GROUP_MAX) {
            let target = match &instance_id {
                Some(instance) => match g.statics.get(instance) {
                    Some(current) if member_id.is_empty() || *current == member_id => {
                        Ok(current.clone())
                    }
                    Some(_) => Err(code::FENCED_INSTANCE_ID),
                    None => Err(code::UNKNOWN_MEMBER_ID),
                },
                None if g.members.contains_key(&member_id) => Ok(member_id.clone()),
                None if g.pending.remove(&member_id).is_some() => {
                    results.push((member_id, instance_id, code::NONE));
                    continue;
                }
                None => Err(code::UNKNOWN_MEMBER_ID),
            };
            match target {
                Ok(id) => {
                    remove_member(g, &id, effects);
                    removed = true;
                    results.push((member_id, instance_id, code::NONE));
                }
                Err(c) => results.push((member_id, instance_id, c)),
            }
        }
        let top = if results.len() == 1 {
            results[0].2
        } else {
            code::NONE
        };
        if removed {
            after_member_loss(g, now_ms, effects);
        }
        reply(effects, request, Reply::Leave(top, results));
        self.maybe_complete_join(now_ms, group_id, effects);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_commit(
        &mut self,
        request: RequestId,
        group_id: String,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        entries: Vec<CommitEntry>,
        effects: &mut Vec<Effect>,
    ) {
        let error = match self.groups.get(&group_id) {
            _ if group_id.is_empty() || !valid_id(&group_id) => Some(code::INVALID_GROUP_ID),
            None if generation < 0 => {
                if self.groups.len() >= GROUPS_MAX {
                    Some(code::COORDINATOR_NOT_AVAILABLE)
                } else {
                    None
                }
            }
            _ if self.consumer.contains_key(&group_id) => {
                self.consumer_commit_error(&group_id, member_id, generation)
            }
            None => Some(code::ILLEGAL_GENERATION),
            Some(g) => commit_error(g, generation, member_id, instance_id, &self.hooks),
        };
        if let Some(c) = error {
            reply(effects, request, Reply::Offsets(c));
            return;
        }
        if entries
            .iter()
            .any(|e| e.value.metadata.len() > OFFSET_METADATA_BYTES_MAX)
        {
            reply(
                effects,
                request,
                Reply::Offsets(code::OFFSET_METADATA_TOO_LARGE),
            );
            return;
        }
        let records = entries
            .iter()
            .map(|e| {
                (
                    schema::offset_key(&group_id, &e.topic, e.partition),
                    Some(schema::offset_value(&e.value)),
                )
            })
            .collect();
        effects.push(Effect::Persist {
            request: Some(request),
            group: group_id,
            records,
            entries,
            then: Vec::new(),
        });
    }

    fn on_delete_group(&mut self, request: RequestId, group_id: &str, effects: &mut Vec<Effect>) {
        let Some(g) = self.groups.get(group_id) else {
            reply(effects, request, Reply::Code(code::GROUP_ID_NOT_FOUND));
            return;
        };
        if g.state != State::Empty {
            reply(effects, request, Reply::Code(code::NON_EMPTY_GROUP));
            return;
        }
        let g = self.groups.remove(group_id).expect("group exists");
        let mut records: Vec<(Bytes, Option<Bytes>)> = g
            .offsets
            .keys()
            .map(|(t, p)| (schema::offset_key(group_id, t, *p), None))
            .collect();
        records.push((schema::group_key(group_id), None));
        effects.push(Effect::Persist {
            request: Some(request),
            group: group_id.to_string(),
            records,
            entries: Vec::new(),
            then: Vec::new(),
        });
    }

    fn on_delete_offsets(
        &mut self,
        request: RequestId,
        group_id: &str,
        partitions: Vec<(String, i32)>,
        effects: &mut Vec<Effect>,
    ) {
        // KIP-848 groups: the topics their members name; classic groups: the topics in the
        // consumer-protocol subscriptions (`None` = unknown, every topic counts as subscribed).
        let subscribed: Option<BTreeSet<String>> = match self.consumer.get(group_id) {
            Some(cg) if !cg.members.is_empty() => Some(self.consumer_subscriptions(group_id)),
            _ => self.groups.get(group_id).and_then(classic_subscriptions),
        };
        let Some(g) = self.groups.get_mut(group_id) else {
            reply(effects, request, Reply::Offsets(code::GROUP_ID_NOT_FOUND));
            return;
        };
        let mut records = Vec::new();
        let mut refused = Vec::new();
        for (t, p) in partitions {
            let in_use = match &subscribed {
                Some(topics) => topics.contains(&t),
                None => true,
            };
            if in_use {
                refused.push((t, p, code::GROUP_SUBSCRIBED_TO_TOPIC));
            } else if g.offsets.remove(&(t.clone(), p)).is_some() {
                records.push((schema::offset_key(group_id, &t, p), None));
            }
        }
        let r = Reply::OffsetsDeleted(refused);
        if records.is_empty() {
            reply(effects, request, r);
            return;
        }
        effects.push(Effect::Persist {
            request: None,
            group: group_id.to_string(),
            records,
            entries: Vec::new(),
            then: vec![(request, r)],
        });
    }

    fn on_tick(&mut self, now_ms: u64, effects: &mut Vec<Effect>) {
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for id in ids {
            let g = self.groups.get_mut(&id).expect("listed group");
            g.pending.retain(|_, expiry| *expiry > now_ms);
            let expired: Vec<String> = g
                .members
                .values()
                .filter(|m| {
                    // A member parked in JoinGroup or SyncGroup is alive; a member that never
                    // sends SyncGroup is removed once the sync deadline passes.
                    let parked = m.awaiting_join.is_some() || m.awaiting_sync.is_some();
                    let silent = now_ms >= m.last_heartbeat_ms + m.session_timeout_ms.max(0) as u64;
                    let sync_overdue = g.state == State::CompletingRebalance
                        && now_ms >= g.join_deadline_ms
                        && m.awaiting_sync.is_none();
                    (!parked && silent) || sync_overdue
                })
                .map(|m| m.member_id.clone())
                .collect();
            if !expired.is_empty() {
                for m in &expired {
                    tracing::info!(group = %id, member = %m, "session expired");
                    remove_member(g, m, effects);
                }
                after_member_loss(g, now_ms, effects);
            }
            self.maybe_complete_join(now_ms, &id, effects);
        }
    }
}

/// Kafka's checks for a commit against a live group.
fn commit_error(
    g: &Group,
    generation: i32,
    member_id: &str,
    instance_id: Option<&str>,
    hooks: &samsa_net::Hooks,
) -> Option<i16> {
    if g.state == State::Dead {
        return Some(code::COORDINATOR_NOT_AVAILABLE);
    }
    if let Some(instance) = instance_id {
        if g.statics.get(instance).is_some_and(|m| m != member_id) {
            return Some(code::FENCED_INSTANCE_ID);
        }
    }
    if generation < 0 && g.state == State::Empty {
        return None; // a "simple" commit (assign() consumers)
    }
    if g.state == State::CompletingRebalance {
        return Some(code::REBALANCE_IN_PROGRESS);
    }
    if !g.members.contains_key(member_id) {
        return Some(code::UNKNOWN_MEMBER_ID);
    }
    if generation != g.generation && !hooks.mutant("group_accept_stale_commit") {
        return Some(code::ILLEGAL_GENERATION);
    }
    None
}

/// UNKNOWN_MEMBER_ID / FENCED_INSTANCE_ID for a member that is not (or no longer) in the group.
fn check_member(g: &Group, member_id: &str, instance_id: Option<&str>) -> Option<i16> {
    if let Some(instance) = instance_id {
        if let Some(current) = g.statics.get(instance) {
            if current != member_id {
                return Some(code::FENCED_INSTANCE_ID);
            }
        }
    }
    if !g.members.contains_key(member_id) {
        return Some(code::UNKNOWN_MEMBER_ID);
    }
    None
}

/// A known static member (`group.instance.id`) rejoins a Stable group under a new member id
/// (KIP-345): the new id replaces the old one and keeps its assignment. If the group's protocol
/// stays the same there is no rebalance: the member gets the current generation back (a
/// rejoining leader gets the members with `skip_assignment`, KIP-814); otherwise the group
/// rebalances with the new member's join parked.
fn static_rejoin_stable(
    g: &mut Group,
    now_ms: u64,
    j: Join,
    member_id: String,
    effects: &mut Vec<Effect>,
) {
    let instance = j.instance_id.clone().expect("static join");
    let old = g.statics[&instance].clone();
    let mut m = g.members.remove(&old).expect("static member exists");
    // The old incarnation may still have a request parked: it is fenced now.
    if let Some(r) = m.awaiting_join.take() {
        let e = JoinReply::error(code::FENCED_INSTANCE_ID, &old);
        reply(effects, r, Reply::Join(e));
    }
    if let Some(r) = m.awaiting_sync.take() {
        let e = SyncReply::error(code::FENCED_INSTANCE_ID);
        reply(effects, r, Reply::Sync(e));
    }
    m.member_id = member_id.clone();
    m.client_id = j.client_id;
    m.client_host = j.client_host;
    m.session_timeout_ms = j.session_timeout_ms;
    m.rebalance_timeout_ms = j.rebalance_timeout_ms.max(j.session_timeout_ms);
    m.protocols = j.protocols;
    m.last_heartbeat_ms = now_ms;
    g.members.insert(member_id.clone(), m);
    g.statics.insert(instance, member_id.clone());
    if g.leader.as_deref() == Some(old.as_str()) {
        g.leader = Some(member_id.clone());
    }
    if g.select_protocol().is_some() && g.select_protocol() == g.protocol_name {
        tracing::info!(old = %old, new = %member_id, "static member rejoined without rebalance");
        let is_leader = g.leader.as_deref() == Some(member_id.as_str());
        let protocol = g.protocol_name.clone().unwrap_or_default();
        let members = if is_leader {
            g.members
                .values()
                .map(|m| {
                    let metadata = m.metadata(&protocol);
                    (m.member_id.clone(), m.instance_id.clone(), metadata)
                })
                .collect()
        } else {
            Vec::new()
        };
        let r = JoinReply {
            error: code::NONE,
            generation: g.generation,
            protocol_type: g.protocol_type.clone(),
            protocol_name: g.protocol_name.clone(),
            leader: g.leader.clone().unwrap_or_default(),
            member_id,
            members,
            skip_assignment: is_leader,
        };
        reply(effects, j.request, Reply::Join(r));
        return;
    }
    // The protocol would change: rebalance, this member's join waits for it.
    let m = g.members.get_mut(&member_id).expect("inserted above");
    m.awaiting_join = Some(j.request);
    prepare_rebalance(g, now_ms, effects);
}

fn max_rebalance_timeout(g: &Group) -> u64 {
    g.members
        .values()
        .map(|m| m.rebalance_timeout_ms.max(0) as u64)
        .max()
        .unwrap_or(0)
}

fn prepare_rebalance(g: &mut Group, now_ms: u64, effects: &mut Vec<Effect>) {
    // Followers still waiting for the leader's assignment learn to rejoin.
    for m in g.members.values_mut() {
        if let Some(r) = m.awaiting_sync.take() {
            reply(
                effects,
                r,
                Reply::Sync(SyncReply::error(code::REBALANCE_IN_PROGRESS)),
            );
        }
    }
    g.state = State::PreparingRebalance;
    g.initial_delay = false;
    g.join_deadline_ms = now_ms + max_rebalance_timeout(g);
}

/// Removes one member, answering whatever it was waiting for.
fn remove_member(g: &mut Group, member_id: &str, effects: &mut Vec<Effect>) {
    if let Some(mut m) = g.members.remove(member_id) {
        if let Some(r) = m.awaiting_join.take() {
            reply(
                effects,
                r,
                Reply::Join(JoinReply::error(code::UNKNOWN_MEMBER_ID, member_id)),
            );
        }
        if let Some(r) = m.awaiting_sync.take() {
            reply(
                effects,
                r,
                Reply::Sync(SyncReply::error(code::UNKNOWN_MEMBER_ID)),
            );
        }
        if let Some(instance) = &m.instance_id {
            if g.statics.get(instance).is_some_and(|id| id == member_id) {
                g.statics.remove(instance);
            }
        }
    }
    if g.leader.as_deref() == Some(member_id) {
        g.leader = g.members.keys().next().cloned();
    }
}

/// After members left or expired: rebalance the rest, or go Empty.
fn after_member_loss(g: &mut Group, now_ms: u64, effects: &mut Vec<Effect>) {
    match g.state {
        State::Stable | State::CompletingRebalance => {
            if g.members.is_empty() {
                g.generation += 1;
                g.assigned_generation = g.generation;
                g.state = State::Empty;
                g.protocol_name = None;
                g.leader = None;
            } else {
                prepare_rebalance(g, now_ms, effects);
            }
        }
        State::PreparingRebalance | State::Empty | State::Dead => {}
    }
}

fn persist_group(group_id: &str, g: &Group, now_ms: u64) -> Effect {
    let value = GroupValue {
        protocol_type: g.protocol_type.clone().unwrap_or_default(),
        generation: g.generation,
        protocol: g.protocol_name.clone(),
        leader: g.leader.clone(),
        state_timestamp_ms: i64::try_from(now_ms).unwrap_or(i64::MAX),
    };
    Effect::Persist {
        request: None,
        group: group_id.to_string(),
        records: vec![(
            schema::group_key(group_id),
            Some(schema::group_value(&value)),
        )],
        entries: Vec::new(),
        then: Vec::new(),
    }
}

/// The group record of `g`, with `then` answered once it is durable.
fn persist_group_then(
    group_id: &str,
    g: &Group,
    now_ms: u64,
    then: Vec<(RequestId, Reply)>,
) -> Effect {
    match persist_group(group_id, g, now_ms) {
        Effect::Persist {
            request,
            group,
            records,
            entries,
            then: _,
        } => Effect::Persist {
            request,
            group,
            records,
            entries,
            then,
        },
        other => other,
    }
}

/// The topics a classic group's members subscribe to, from their consumer-protocol metadata
/// (Kafka's rule): empty for a group without members, `None` when unknown (another protocol
/// type, no protocol chosen yet, or metadata that does not decode).
fn classic_subscriptions(g: &Group) -> Option<BTreeSet<String>> {
    if g.members.is_empty() {
        return Some(BTreeSet::new());
    }
    if g.protocol_type.as_deref() != Some("consumer") {
        return None;
    }
    let protocol = g.protocol_name.as_deref()?;
    let mut topics = BTreeSet::new();
    for m in g.members.values() {
        topics.extend(consumer_subscription_topics(&m.metadata(protocol))?);
    }
    Some(topics)
}

/// The topics of a ConsumerProtocolSubscription (version, [topic], user data, ...), or `None`
/// if the bytes are not one. Never panics on the (untrusted) bytes.
pub fn consumer_subscription_topics(bytes: &[u8]) -> Option<Vec<String>> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let end = at.checked_add(n)?;
        let s = bytes.get(at..end)?;
        at = end;
        Some(s)
    };
    let _version = take(2)?;
    let count = i32::from_be_bytes(take(4)?.try_into().ok()?);
    if !(0..=ASSIGNMENT_ENTRIES_MAX as i32).contains(&count) {
        return None;
    }
    let mut out = Vec::new();
    for _ in 0..count {
        let len = i16::from_be_bytes(take(2)?.try_into().ok()?);
        if len < 0 {
            return None;
        }
        out.push(String::from_utf8(take(len as usize)?.to_vec()).ok()?);
    }
    Some(out)
}

/// Most topics or partitions one consumer assignment may list for the decoder to walk.
pub const ASSIGNMENT_ENTRIES_MAX: usize = 1_000_000;

/// The partitions of a `consumer` protocol assignment (version, [topic, [partition]], user data),
/// or `None` if the bytes are not one. Never panics on the (untrusted) bytes.
pub fn consumer_assignment_partitions(bytes: &[u8]) -> Option<Vec<(String, i32)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let end = at.checked_add(n)?;
        let s = bytes.get(at..end)?;
        at = end;
        Some(s)
    };
    let _version = take(2)?;
    let topics = i32::from_be_bytes(take(4)?.try_into().ok()?);
    if !(0..=ASSIGNMENT_ENTRIES_MAX as i32).contains(&topics) {
        return None;
    }
    let mut out = Vec::new();
    for _ in 0..topics {
        let len = i16::from_be_bytes(take(2)?.try_into().ok()?);
        if len < 0 {
            return None;
        }
        let topic = String::from_utf8(take(len as usize)?.to_vec()).ok()?;
        let count = i32::from_be_bytes(take(4)?.try_into().ok()?);
        if !(0..=ASSIGNMENT_ENTRIES_MAX as i32).contains(&count) {
            return None;
        }
        for _ in 0..count {
            let p = i32::from_be_bytes(take(4)?.try_into().ok()?);
            if out.len() >= ASSIGNMENT_ENTRIES_MAX {
                return None;
            }
            out.push((topic.clone(), p));
        }
    }
    Some(out)
}

/// True unless two members' consumer assignments name the same partition. Bytes that are not
/// a consumer assignment are not judged (a client may use its own format).
fn consumer_assignments_disjoint(assignments: &[(String, Bytes)]) -> bool {
    let mut owners = std::collections::BTreeSet::new();
    for (_, a) in assignments {
        let Some(parts) = consumer_assignment_partitions(a) else {
            continue;
        };
        for p in parts {
            if !owners.insert(p) {
                return false;
            }
        }
    }
    true
}

fn assignment_owners_disjoint(g: &Group) -> bool {
    if g.protocol_type.as_deref() != Some("consumer") {
        return true;
    }
    let all: Vec<(String, Bytes)> = g
        .members
        .values()
        .map(|m| (m.member_id.clone(), m.assignment.clone()))
        .collect();
    consumer_assignments_disjoint(&all)
}
