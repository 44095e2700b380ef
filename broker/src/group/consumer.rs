//! KIP-848 consumer groups (ConsumerGroupHeartbeat): group epoch, member epochs, a target
//! assignment computed on the broker by the `uniform` or `range` assignor, and reconciliation
//! that revokes a partition from its old owner before it is given to the new one, so at most one
//! member owns a partition at any time. Every change of a group's persistent state (epochs,
//! members, topic metadata, target and current assignments) becomes records of
//! `__consumer_offsets` in Kafka's KIP-848 schemas, and a heartbeat whose reply depends on them
//! is answered only once they are durable; replay rebuilds the groups from those records. Part
//! of the coordinator core: no I/O, no clock reads, ordered maps only. Offsets of these groups
//! live in the classic `Group` entry of the same id.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use samsa_net::error::code;
use uuid::Uuid;

use super::schema::{self, Stored};
use super::{
    reply, Coordinator, Effect, Reply, RequestId, GROUPS_MAX, ID_BYTES_MAX, MEMBERS_PER_GROUP_MAX,
};

/// Most topics one member may subscribe to.
pub const SUBSCRIBED_TOPICS_MAX: usize = 10_000;

/// Partitions by topic id.
pub type Partitions = BTreeMap<Uuid, BTreeSet<i32>>;

/// What the shell knows about one subscribed topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    pub id: Uuid,
    pub partitions: i32,
}

/// One ConsumerGroupHeartbeat as the core sees it.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    pub request: RequestId,
    pub group: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub subscribed: Option<Vec<String>>,
    pub assignor: Option<String>,
    pub owned: Option<Vec<(Uuid, Vec<i32>)>>,
    pub client_id: String,
    pub client_host: String,
    /// Metadata of every topic the group (with this request) subscribes to, by name.
    pub topics: BTreeMap<String, TopicInfo>,
    /// The connection it came on (ids grow with every accepted connection of this broker).
    pub connection: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub error: i16,
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// `None` = unchanged since the last reply.
    pub assignment: Option<Partitions>,
}

#[derive(Clone, Debug)]
pub struct ConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub member_epoch: i32,
    previous_epoch: i32,
    pub rebalance_timeout_ms: i32,
    pub subscribed: Vec<String>,
    pub assignor: Option<String>,
    /// Partitions the member owns as far as we know (given to it, not yet revoked).
    pub assigned: Partitions,
    /// Partitions we asked it to give up; still owned until it says they are released.
    pub revoking: Partitions,
    revoking_since_ms: u64,
    /// Newest connection this member's heartbeats came on. A heartbeat on an older one was
    /// sent before that and arrives late (its client gave up on it): its `owned` list is stale
    /// and must not release partitions (sim: single_groups 9533775993149).
    last_connection: u64,
    last_heartbeat_ms: u64,
    last_sent: Option<Partitions>,
}

#[derive(Clone, Debug, Default)]
pub struct ConsumerGroup {
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: BTreeMap<String, ConsumerMember>,
    pub topics: BTreeMap<String, TopicInfo>,
    pub target: BTreeMap<String, Partitions>,
}

impl ConsumerGroup {
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.assignment_epoch < self.epoch {
            "Assigning"
        } else if self.members.values().any(|m| {
            m.member_epoch != self.assignment_epoch
                || !m.revoking.is_empty()
                || self.target.get(&m.member_id) != Some(&m.assigned)
        }) {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members
            .values()
            .flat_map(|m| m.subscribed.iter().cloned())
            .collect()
    }

    /// Recomputes the target assignment for the current members and topic metadata.
    fn compute_target(&mut self) {
        let mut target: BTreeMap<String, Partitions> = self
            .members
            .keys()
            .map(|m| (m.clone(), Partitions::new()))
            .collect();
        for (name, info) in &self.topics {
            let eligible: Vec<&String> = self
                .members
                .values()
                .filter(|m| m.subscribed.contains(name))
                .map(|m| &m.member_id)
                .collect();
            if eligible.is_empty() || info.partitions <= 0 {
                continue;
            }
            let n = eligible.len();
            let count = info.partitions as usize;
            for p in 0..count {
                let owner = if self.assignor == "range" {
                    // Contiguous ranges; the first `count % n` members get one extra.
                    let base = count / n;
                    let extra = count % n;
                    let cut = extra * (base + 1);
                    if p < cut {
                        p / (base + 1)
                    } else {
                        extra + (p - cut) / base.max(1)
                    }
                } else {
                    p % n
                };
                let owner = eligible[owner.min(n - 1)];
                target
                    .get_mut(owner)
                    .expect("eligible member has a target")
                    .entry(info.id)
                    .or_default()
                    .insert(p as i32);
            }
        }
        self.target = target;
        self.assignment_epoch = self.epoch;
    }

    fn owned_by_others(&self, member_id: &str, topic: &Uuid, p: i32) -> bool {
        self.members.values().any(|m| {
            m.member_id != member_id
                && (m.assigned.get(topic).is_some_and(|s| s.contains(&p))
                    || m.revoking.get(topic).is_some_and(|s| s.contains(&p)))
        })
    }

    fn bump(&mut self) {
        self.epoch += 1;
    }
}

impl ConsumerMember {
    /// A member restored from records, before its first heartbeat after the restart.
    fn restored(member_id: &str) -> ConsumerMember {
        ConsumerMember {
            member_id: member_id.to_string(),
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            member_epoch: 0,
            previous_epoch: -1,
            rebalance_timeout_ms: -1,
            subscribed: Vec::new(),
            assignor: None,
            assigned: Partitions::new(),
            revoking: Partitions::new(),
            revoking_since_ms: 0,
            last_connection: 0,
            last_heartbeat_ms: 0,
            last_sent: None,
        }
    }
}

/// The group's persistent state as `__consumer_offsets` records (key → value), in Kafka's
/// KIP-848 schemas. Comparing two snapshots yields the records one step must write.
fn snapshot(group_id: &str, g: &ConsumerGroup) -> BTreeMap<Bytes, Bytes> {
    use schema::{
        consumer_key, current_value, epoch_value, member_value, target_value, topics_value,
        CurrentAssignment, MemberMetadata, TopicMetadata, KEY_CONSUMER_CURRENT, KEY_CONSUMER_GROUP,
        KEY_CONSUMER_MEMBER, KEY_CONSUMER_TARGET, KEY_CONSUMER_TARGET_EPOCH, KEY_CONSUMER_TOPICS,
    };
    let mut out = BTreeMap::new();
    out.insert(
        consumer_key(KEY_CONSUMER_GROUP, group_id, None),
        epoch_value(g.epoch),
    );
    let topics: Vec<TopicMetadata> = g
        .topics
        .iter()
        .map(|(name, t)| TopicMetadata {
            id: t.id,
            name: name.clone(),
            partitions: t.partitions,
        })
        .collect();
    out.insert(
        consumer_key(KEY_CONSUMER_TOPICS, group_id, None),
        topics_value(g.epoch, &topics),
    );
    out.insert(
        consumer_key(KEY_CONSUMER_TARGET_EPOCH, group_id, None),
        epoch_value(g.assignment_epoch),
    );
    for m in g.members.values() {
        let id = Some(m.member_id.as_str());
        let meta = MemberMetadata {
            instance_id: m.instance_id.clone(),
            rack_id: m.rack_id.clone(),
            client_id: m.client_id.clone(),
            client_host: m.client_host.clone(),
            subscribed: m.subscribed.clone(),
            rebalance_timeout_ms: m.rebalance_timeout_ms,
            server_assignor: m.assignor.clone(),
        };
        out.insert(
            consumer_key(KEY_CONSUMER_MEMBER, group_id, id),
            member_value(&meta),
        );
        let target = g.target.get(&m.member_id).cloned().unwrap_or_default();
        let state = if !m.revoking.is_empty() {
            1
        } else if m.assigned != target {
            2
        } else {
            0
        };
        out.insert(
            consumer_key(KEY_CONSUMER_TARGET, group_id, id),
            target_value(&target),
        );
        let current = CurrentAssignment {
            member_epoch: m.member_epoch,
            previous_epoch: m.previous_epoch,
            state,
            assigned: m.assigned.clone(),
            revoking: m.revoking.clone(),
        };
        out.insert(
            consumer_key(KEY_CONSUMER_CURRENT, group_id, id),
            current_value(&current),
        );
    }
    out
}

/// Records that turn snapshot `old` into `new`: changed values, then tombstones.
fn diff(old: &BTreeMap<Bytes, Bytes>, new: &BTreeMap<Bytes, Bytes>) -> Vec<(Bytes, Option<Bytes>)> {
    let mut records: Vec<(Bytes, Option<Bytes>)> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    records.extend(
        old.keys()
            .filter(|k| !new.contains_key(*k))
            .map(|k| (k.clone(), None)),
    );
    records
}

fn subtract(a: &Partitions, b: &Partitions) -> Partitions {
    let mut out = Partitions::new();
    for (t, ps) in a {
        let rest: BTreeSet<i32> = match b.get(t) {
            Some(bs) => ps.difference(bs).copied().collect(),
            None => ps.clone(),
        };
        if !rest.is_empty() {
            out.insert(*t, rest);
        }
    }
    out
}

fn intersect(a: &Partitions, b: &Partitions) -> Partitions {
    let mut out = Partitions::new();
    for (t, ps) in a {
        if let Some(bs) = b.get(t) {
            let both: BTreeSet<i32> = ps.intersection(bs).copied().collect();
            if !both.is_empty() {
                out.insert(*t, both);
            }
        }
    }
    out
}

/// The invariants `assert_consumer_invariants` checks, as a test (for restored state).
fn consumer_group_consistent(g: &ConsumerGroup) -> bool {
    if g.assignment_epoch > g.epoch {
        return false;
    }
    let mut owners: BTreeSet<(Uuid, i32)> = BTreeSet::new();
    for m in g.members.values() {
        if m.member_epoch > g.epoch {
            return false;
        }
        for (t, ps) in m.assigned.iter().chain(m.revoking.iter()) {
            for p in ps {
                if !owners.insert((*t, *p)) {
                    return false;
                }
            }
        }
    }
    true
}

fn hb_error(error: i16, member_id: &str, epoch: i32) -> Reply {
    Reply::ConsumerHeartbeat(HeartbeatReply {
        error,
        member_id: member_id.to_string(),
        member_epoch: epoch,
        heartbeat_interval_ms: 0,
        assignment: None,
    })
}

impl Coordinator {
    pub fn consumer_group(&self, id: &str) -> Option<&ConsumerGroup> {
        self.consumer.get(id)
    }

    pub fn consumer_groups(&self) -> impl Iterator<Item = (&String, &ConsumerGroup)> {
        self.consumer.iter()
    }

    /// Writes what changed in consumer group `id` since its last records: the replies in
    /// `local` wait for those records to be durable; with nothing to write they go out at once.
    pub(super) fn persist_consumer(
        &mut self,
        id: &str,
        local: Vec<Effect>,
        effects: &mut Vec<Effect>,
    ) {
        let new = self
            .consumer
            .get(id)
            .map(|g| snapshot(id, g))
            .unwrap_or_default();
        let old = self.consumer_written.get(id);
        let records = match old {
            Some(old) => diff(old, &new),
            None => diff(&BTreeMap::new(), &new),
        };
        // A reply handing out an assignment may repeat state whose records are not durable yet
        // (an earlier step wrote them): it then waits behind them (a Persist with no records).
        let hands_out = local.iter().any(|e| {
            matches!(e, Effect::Reply {
                reply: Reply::ConsumerHeartbeat(r),
                ..
            } if r.error == code::NONE && r.assignment.is_some())
        });
        if records.is_empty() && !hands_out {
            effects.extend(local);
            return;
        }
        if records.is_empty() {
            // Nothing new to write.
        } else if new.is_empty() {
            self.consumer_written.remove(id);
        } else {
            self.consumer_written.insert(id.to_string(), new);
        }
        let mut then = Vec::new();
        for e in local {
            match e {
                Effect::Reply { request, reply } => then.push((request, reply)),
                other => effects.push(other),
            }
        }
        effects.push(Effect::Persist {
            request: None,
            group: id.to_string(),
            records,
            entries: Vec::new(),
            then,
        });
    }

    /// Applies one KIP-848 record of `__consumer_offsets` (start-up replay). Records are
    /// applied in log order; each is the latest value of its key when it was written.
    pub(super) fn replay_consumer(&mut self, record: Stored) {
        let group = match &record {
            Stored::ConsumerGroup { group, .. }
            | Stored::ConsumerTopics { group, .. }
            | Stored::ConsumerMember { group, .. }
            | Stored::ConsumerTargetEpoch { group, .. }
            | Stored::ConsumerTarget { group, .. }
            | Stored::ConsumerCurrent { group, .. } => group.clone(),
            Stored::Offset { .. } | Stored::Group { .. } => return,
        };
        if let Stored::ConsumerGroup { epoch: None, .. } = record {
            self.consumer.remove(&group);
            return;
        }
        if !self.consumer.contains_key(&group) {
            if self.consumer.len() >= GROUPS_MAX {
                return;
            }
            let g = ConsumerGroup {
                assignor: "uniform".to_string(),
                ..ConsumerGroup::default()
            };
            self.consumer.insert(group.clone(), g);
        }
        let g = self.consumer.get_mut(&group).expect("group exists");
        match record {
            Stored::ConsumerGroup { epoch, .. } => g.epoch = epoch.unwrap_or(0),
            Stored::ConsumerTopics { topics, .. } => {
                let topics: Vec<schema::TopicMetadata> = topics.unwrap_or_default();
                g.topics = topics
                    .into_iter()
                    .map(|t| {
                        let info = TopicInfo {
                            id: t.id,
                            partitions: t.partitions,
                        };
                        (t.name, info)
                    })
                    .collect();
            }
            Stored::ConsumerTargetEpoch { epoch, .. } => g.assignment_epoch = epoch.unwrap_or(0),
            Stored::ConsumerMember { member, value, .. } => match value {
                None => {
                    g.members.remove(&member);
                }
                Some(v) => {
                    if !g.members.contains_key(&member) && g.members.len() >= MEMBERS_PER_GROUP_MAX
                    {
                        return;
                    }
                    let m = g
                        .members
                        .entry(member.clone())
                        .or_insert_with(|| ConsumerMember::restored(&member));
                    m.instance_id = v.instance_id;
                    m.rack_id = v.rack_id;
                    m.client_id = v.client_id;
                    m.client_host = v.client_host;
                    m.subscribed = v.subscribed;
                    m.subscribed.truncate(SUBSCRIBED_TOPICS_MAX);
                    m.rebalance_timeout_ms = v.rebalance_timeout_ms;
                    if let Some(a) = &v.server_assignor {
                        if a == "uniform" || a == "range" {
                            g.assignor = a.clone();
                        }
                    }
                    m.assignor = v.server_assignor;
                }
            },
            Stored::ConsumerTarget {
                member, partitions, ..
            } => match partitions {
                None => {
                    g.target.remove(&member);
                }
                Some(p) => {
                    g.target.insert(member, p);
                }
            },
            Stored::ConsumerCurrent { member, value, .. } => match value {
                None => {}
                Some(v) => {
                    if let Some(m) = g.members.get_mut(&member) {
                        m.member_epoch = v.member_epoch;
                        m.previous_epoch = v.previous_epoch;
                        m.assigned = v.assigned;
                        m.revoking = v.revoking;
                    }
                }
            },
            Stored::Offset { .. } | Stored::Group { .. } => {}
        }
    }

    /// After replay: restored members get a full session (and revocation timeout) from now,
    /// targets of members that are gone are dropped, and the written snapshot is what replay
    /// rebuilt. A group whose restored state breaks an invariant is dropped, not trusted.
    pub fn finish_replay(&mut self, now_ms: u64) {
        self.finish_replay_of(now_ms, |_| true);
    }

    /// `finish_replay` for the consumer groups `owned` selects (one offsets partition loaded
    /// by a new coordinator in cluster mode; the other groups' members keep their clocks).
    pub fn finish_replay_of(&mut self, now_ms: u64, owned: impl Fn(&str) -> bool) {
        let ids: Vec<String> = self.consumer.keys().filter(|g| owned(g)).cloned().collect();
        for id in ids {
            let g = self.consumer.get_mut(&id).expect("listed group");
            let members: BTreeSet<String> = g.members.keys().cloned().collect();
            g.target.retain(|m, _| members.contains(m));
            for m in g.members.values_mut() {
                m.last_heartbeat_ms = now_ms;
                m.revoking_since_ms = now_ms;
                m.last_sent = None;
            }
            if !consumer_group_consistent(g) {
                tracing::warn!(group = %id, "restored consumer group is inconsistent; dropped");
                self.consumer.remove(&id);
                continue;
            }
            let snap = snapshot(&id, &self.consumer[&id]);
            self.consumer_written.insert(id, snap);
        }
    }

    /// Topic names the members of consumer group `id` subscribe to (for the shell's lookup).
    pub fn consumer_subscriptions(&self, id: &str) -> BTreeSet<String> {
        self.consumer
            .get(id)
            .map(ConsumerGroup::subscribed_topics)
            .unwrap_or_default()
    }

    /// OffsetCommit against a consumer group: the epoch must be the member's current one.
    pub(super) fn consumer_commit_error(
        &self,
        id: &str,
        member_id: &str,
        epoch: i32,
    ) -> Option<i16> {
        let g = self.consumer.get(id)?;
        if g.members.is_empty() && epoch < 0 {
            return None;
        }
        let Some(m) = g.members.get(member_id) else {
            return Some(code::UNKNOWN_MEMBER_ID);
        };
        if epoch != m.member_epoch {
            return Some(code::STALE_MEMBER_EPOCH);
        }
        None
    }

    pub(super) fn on_consumer_heartbeat(
        &mut self,
        now_ms: u64,
        hb: Heartbeat,
        effects: &mut Vec<super::Effect>,
    ) {
        let request = hb.request;
        let interval = self.config.consumer_heartbeat_interval_ms;
        if hb.group.is_empty() || hb.group.len() > ID_BYTES_MAX || hb.member_id.len() > ID_BYTES_MAX
        {
            return reply(
                effects,
                request,
                hb_error(code::INVALID_GROUP_ID, &hb.member_id, -1),
            );
        }
        if let Some(assignor) = &hb.assignor {
            if assignor != "uniform" && assignor != "range" {
                let e = hb_error(code::UNSUPPORTED_ASSIGNOR, &hb.member_id, hb.member_epoch);
                return reply(effects, request, e);
            }
        }
        if self
            .groups
            .get(&hb.group)
            .is_some_and(|g| !g.members.is_empty())
        {
            // A classic group with members owns this id.
            let e = hb_error(code::GROUP_ID_NOT_FOUND, &hb.member_id, hb.member_epoch);
            return reply(effects, request, e);
        }
        if !self.consumer.contains_key(&hb.group) {
            if hb.member_epoch != 0 {
                let e = hb_error(code::UNKNOWN_MEMBER_ID, &hb.member_id, hb.member_epoch);
                return reply(effects, request, e);
            }
            if self.consumer.len() >= GROUPS_MAX {
                let e = hb_error(code::COORDINATOR_NOT_AVAILABLE, &hb.member_id, 0);
                return reply(effects, request, e);
            }
            let g = ConsumerGroup {
                assignor: "uniform".to_string(),
                ..ConsumerGroup::default()
            };
            self.consumer.insert(hb.group.clone(), g);
        }
        let member_id = if hb.member_id.is_empty() {
            self.new_member_id(&hb.client_id)
        } else {
            hb.member_id.clone()
        };
        let g = self.consumer.get_mut(&hb.group).expect("group exists");
        if g.members
            .get(&member_id)
            .is_some_and(|m| hb.connection < m.last_connection)
        {
            // Sent on a connection the member has since replaced: a late copy of a request its
            // client gave up on. Refused (retriable) before anything in it is believed.
            let e = hb_error(code::COORDINATOR_NOT_AVAILABLE, &member_id, hb.member_epoch);
            return reply(effects, request, e);
        }
        match hb.member_epoch {
            -1 | -2 => {
                if g.members.remove(&member_id).is_some() {
                    g.bump();
                }
                let r = HeartbeatReply {
                    error: code::NONE,
                    member_id,
                    member_epoch: hb.member_epoch,
                    heartbeat_interval_ms: 0,
                    assignment: None,
                };
                return reply(effects, request, Reply::ConsumerHeartbeat(r));
            }
            0 => {
                let Some(subscribed) = hb.subscribed.clone() else {
                    let e = hb_error(code::INVALID_REQUEST, &member_id, 0);
                    return reply(effects, request, e);
                };
                if !g.members.contains_key(&member_id) && g.members.len() >= MEMBERS_PER_GROUP_MAX {
                    let e = hb_error(code::GROUP_MAX_SIZE_REACHED, &member_id, 0);
                    return reply(effects, request, e);
                }
                // A (re)join: any previous incarnation of this member id is gone.
                g.members.remove(&member_id);
                if let Some(instance) = &hb.instance_id {
                    let stale: Vec<String> = g
                        .members
                        .values()
                        .filter(|m| m.instance_id.as_deref() == Some(instance.as_str()))
                        .map(|m| m.member_id.clone())
                        .collect();
                    for m in stale {
                        g.members.remove(&m);
                    }
                }
                let mut subscribed = subscribed;
                subscribed.truncate(SUBSCRIBED_TOPICS_MAX);
                g.members.insert(
                    member_id.clone(),
                    ConsumerMember {
                        member_id: member_id.clone(),
                        instance_id: hb.instance_id.clone(),
                        rack_id: hb.rack_id.clone(),
                        client_id: hb.client_id.clone(),
                        client_host: hb.client_host.clone(),
                        member_epoch: 0,
                        previous_epoch: -1,
                        rebalance_timeout_ms: hb.rebalance_timeout_ms,
                        subscribed,
                        assignor: hb.assignor.clone(),
                        assigned: Partitions::new(),
                        revoking: Partitions::new(),
                        revoking_since_ms: now_ms,
                        last_connection: hb.connection,
                        last_heartbeat_ms: now_ms,
                        last_sent: None,
                    },
                );
                g.bump();
            }
            epoch => {
                let Some(m) = g.members.get(&member_id) else {
                    let e = hb_error(code::UNKNOWN_MEMBER_ID, &member_id, epoch);
                    return reply(effects, request, e);
                };
                let owned_ok = |m: &ConsumerMember| match &hb.owned {
                    None => true,
                    Some(owned) => owned.iter().all(|(t, ps)| {
                        ps.iter()
                            .all(|p| m.assigned.get(t).is_some_and(|s| s.contains(p)))
                    }),
                };
                if epoch > m.member_epoch
                    || (epoch < m.member_epoch && !(epoch == m.previous_epoch && owned_ok(m)))
                {
                    let e = hb_error(code::FENCED_MEMBER_EPOCH, &member_id, epoch);
                    return reply(effects, request, e);
                }
                let m = g.members.get_mut(&member_id).expect("member exists");
                // A member that is behind (an answer was lost, or it still lists partitions it
                // was told to give up) gets its whole assignment again.
                let owned_differs = hb.owned.as_ref().is_some_and(|o| {
                    let o: Partitions = o
                        .iter()
                        .filter(|(_, ps)| !ps.is_empty())
                        .map(|(t, ps)| (*t, ps.iter().copied().collect()))
                        .collect();
                    o != m.assigned
                });
                if epoch != m.member_epoch || owned_differs {
                    m.last_sent = None;
                }
                if let Some(mut subscribed) = hb.subscribed.clone() {
                    subscribed.truncate(SUBSCRIBED_TOPICS_MAX);
                    if subscribed != m.subscribed {
                        m.subscribed = subscribed;
                        g.epoch += 1;
                    }
                }
            }
        }
        if let Some(a) = &hb.assignor {
            g.assignor = a.clone();
        }
        let m = g.members.get_mut(&member_id).expect("member exists");
        m.last_heartbeat_ms = now_ms;
        m.last_connection = m.last_connection.max(hb.connection);
        if let Some(owned) = &hb.owned {
            // What the member no longer lists among its partitions is released.
            let owned: Partitions = owned
                .iter()
                .map(|(t, ps)| (*t, ps.iter().copied().collect()))
                .collect();
            m.revoking = intersect(&m.revoking, &owned);
        }
        // Topic metadata changes (created, deleted, more partitions) move the group epoch.
        let wanted = g.subscribed_topics();
        let topics: BTreeMap<String, TopicInfo> = hb
            .topics
            .into_iter()
            .filter(|(name, _)| wanted.contains(name))
            .collect();
        if topics != g.topics {
            g.topics = topics;
            g.epoch += 1;
        }
        if g.assignment_epoch < g.epoch {
            g.compute_target();
        }
        // Planted bug (simulation only): grant partitions their old owner has not released.
        let skip_revocation = self.hooks.mutant("group848_skip_revocation");
        let r = reconcile(g, &member_id, now_ms, interval, skip_revocation);
        reply(effects, request, Reply::ConsumerHeartbeat(r));
    }

    /// Session and revocation timeouts of consumer-group members.
    pub(super) fn consumer_tick(&mut self, now_ms: u64, effects: &mut Vec<Effect>) {
        let session = self.config.consumer_session_timeout_ms;
        let mut changed = Vec::new();
        for (id, g) in self.consumer.iter_mut() {
            let gone: Vec<String> = g
                .members
                .values()
                .filter(|m| {
                    let silent = now_ms >= m.last_heartbeat_ms + session;
                    let stuck = !m.revoking.is_empty()
                        && now_ms >= m.revoking_since_ms + m.rebalance_timeout_ms.max(0) as u64;
                    silent || stuck
                })
                .map(|m| m.member_id.clone())
                .collect();
            if !gone.is_empty() {
                for m in &gone {
                    tracing::info!(group = %id, member = %m, "consumer member expired");
                    g.members.remove(m);
                }
                g.bump();
                g.compute_target();
                changed.push(id.clone());
            }
        }
        for id in changed {
            self.persist_consumer(&id, Vec::new(), effects);
        }
    }

    pub(super) fn assert_consumer_invariants(&self) {
        for (id, g) in &self.consumer {
            assert!(
                g.assignment_epoch <= g.epoch,
                "group {id}: assignment ahead of epoch"
            );
            // At most one member owns (assigned or still revoking) a partition.
            let mut owners: BTreeSet<(Uuid, i32)> = BTreeSet::new();
            for m in g.members.values() {
                assert!(m.member_epoch <= g.epoch, "group {id}: member epoch ahead");
                for (t, ps) in m.assigned.iter().chain(m.revoking.iter()) {
                    for p in ps {
                        assert!(
                            owners.insert((*t, *p)),
                            "group {id}: partition {t}/{p} has two owners"
                        );
                    }
                }
            }
        }
    }
}

/// Moves one member toward its target: revoke first, then grant what no one else owns.
fn reconcile(
    g: &mut ConsumerGroup,
    member_id: &str,
    now_ms: u64,
    interval: i32,
    skip_revocation: bool,
) -> HeartbeatReply {
    let target = g.target.get(member_id).cloned().unwrap_or_default();
    let assignment_epoch = g.assignment_epoch;
    let (assigned, revoking) = {
        let m = &g.members[member_id];
        (m.assigned.clone(), m.revoking.clone())
    };
    let to_revoke = subtract(&assigned, &target);
    let m_epoch;
    if !to_revoke.is_empty() {
        let m = g.members.get_mut(member_id).expect("member exists");
        for (t, ps) in &to_revoke {
            m.revoking.entry(*t).or_default().extend(ps.iter().copied());
        }
        m.assigned = intersect(&assigned, &target);
        m.revoking_since_ms = now_ms;
        m_epoch = m.member_epoch;
    } else if revoking.is_empty() {
        let wanted = subtract(&target, &assigned);
        let mut grant = Partitions::new();
        for (t, ps) in &wanted {
            for p in ps {
                if !g.owned_by_others(member_id, t, *p) {
                    grant.entry(*t).or_default().insert(*p);
                } else if skip_revocation {
                    // The planted bug forgets that the old owner still holds it.
                    for other in g.members.values_mut() {
                        if let Some(ps) = other.revoking.get_mut(t) {
                            ps.remove(p);
                        }
                        other.revoking.retain(|_, ps| !ps.is_empty());
                    }
                    if !g.owned_by_others(member_id, t, *p) {
                        grant.entry(*t).or_default().insert(*p);
                    }
                }
            }
        }
        let m = g.members.get_mut(member_id).expect("member exists");
        for (t, ps) in grant {
            m.assigned.entry(t).or_default().extend(ps);
        }
        if m.member_epoch != assignment_epoch {
            m.previous_epoch = m.member_epoch;
            m.member_epoch = assignment_epoch;
        }
        m_epoch = m.member_epoch;
    } else {
        m_epoch = g.members[member_id].member_epoch;
    }
    let m = g.members.get_mut(member_id).expect("member exists");
    let send = if m.last_sent.as_ref() != Some(&m.assigned) {
        m.last_sent = Some(m.assigned.clone());
        Some(m.assigned.clone())
    } else {
        None
    };
    HeartbeatReply {
        error: code::NONE,
        member_id: member_id.to_string(),
        member_epoch: m_epoch,
        heartbeat_interval_ms: interval,
        assignment: send,
    }
}
