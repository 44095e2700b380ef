//! `GroupMember`: a minimal classic-protocol group consumer for the simulator and the CLI:
//! FindCoordinator, JoinGroup (with the MEMBER_ID_REQUIRED two-step join), SyncGroup with a
//! range assignment computed by the leader, Heartbeat, OffsetCommit, OffsetFetch and LeaveGroup.
//! With one bootstrap address that broker is the coordinator (a single node, or the CLI aimed at
//! one broker); with several (a cluster) the member asks FindCoordinator, sends its group
//! requests there, and looks the coordinator up again after NOT_COORDINATOR,
//! COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS or a lost connection
//! (`CoordinatorRoute`). Never retries a write after an ambiguous failure (only after a definite
//! one: a moved coordinator changed nothing), never reads the wall clock, never draws
//! randomness; every decoded list is bounded.
//!
//! Errors keep the client's definite/ambiguous split; the group codes below are definite for
//! group requests (the coordinator checks them before it changes or persists anything).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};

use super::{ClientConfig, ClientError, Session};
use crate::error::{code, ErrorCode};
use crate::io::Net;

/// Members one JoinGroup answer may list for the leader to assign.
pub const GROUP_MEMBERS_MAX: usize = 10_000;
/// Topics or partitions one subscription or assignment may list.
pub const ASSIGNMENT_ENTRIES_MAX: usize = 100_000;
/// Longest topic name in an assignment.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// JoinGroup rounds per `join` (the MEMBER_ID_REQUIRED step plus rejoins on REBALANCE_IN_PROGRESS).
pub const JOIN_ROUNDS_MAX: usize = 4;

/// Attempts of one group request in a cluster: a moved or unreachable coordinator is looked up
/// again before the next (only definite failures are tried again, and reads).
pub const COORDINATOR_ATTEMPTS_MAX: u32 = 3;

/// Codes that say the broker asked does not (or not yet) coordinate the group: look it up again.
pub const COORDINATOR_MOVED_CODES: &[ErrorCode] = &[
    code::NOT_COORDINATOR,
    code::COORDINATOR_NOT_AVAILABLE,
    code::COORDINATOR_LOAD_IN_PROGRESS,
];

/// Codes a group request gets back before the coordinator changed anything.
pub const GROUP_DEFINITE_CODES: &[ErrorCode] = &[
    code::COORDINATOR_LOAD_IN_PROGRESS,
    code::COORDINATOR_NOT_AVAILABLE,
    code::NOT_COORDINATOR,
    code::ILLEGAL_GENERATION,
    code::INCONSISTENT_GROUP_PROTOCOL,
    code::INVALID_GROUP_ID,
    code::UNKNOWN_MEMBER_ID,
    code::REBALANCE_IN_PROGRESS,
    code::GROUP_AUTHORIZATION_FAILED,
    code::OFFSET_METADATA_TOO_LARGE,
    code::MEMBER_ID_REQUIRED,
    code::GROUP_MAX_SIZE_REACHED,
    code::FENCED_INSTANCE_ID,
    code::GROUP_ID_NOT_FOUND,
    code::NON_EMPTY_GROUP,
];

/// True when a group request certainly had no effect.
pub fn group_error_is_definite(e: &ClientError) -> bool {
    e.is_definite()
        || matches!(e, ClientError::Broker { code, .. } if GROUP_DEFINITE_CODES.contains(code))
}

/// Group settings of one member.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    pub group: String,
    pub topics: Vec<String>,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
}

/// What one completed join + sync gave this member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub generation: i32,
    pub member_id: String,
    pub leader: bool,
    /// (topic, partition), sorted.
    pub partitions: Vec<(String, i32)>,
}

/// One group as ListGroups names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedGroup {
    pub group: String,
    pub protocol_type: String,
    /// Empty when the broker's version does not report it.
    pub state: String,
}

/// One member as DescribeGroups shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// (topic, partition) from its `consumer` assignment (empty if none or not decodable).
    pub partitions: Vec<(String, i32)>,
}

/// DescribeGroups of one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// Where one member's group requests go (see the header): the bootstrap broker when there is
/// only one, else the coordinator FindCoordinator named, forgotten when it moved or failed.
pub(super) struct CoordinatorRoute {
    group: String,
    discover: bool,
    addr: Option<SocketAddr>,
}

/// The coordinator's address from a FindCoordinator answer (hosts are IP literals or
/// `localhost`; names are not resolved here).
fn coordinator_addr(host: &str, port: i32) -> Option<SocketAddr> {
    let port = u16::try_from(port).ok()?;
    let ip = if host == "localhost" {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?
    };
    Some(SocketAddr::new(ip, port))
}

/// A failure before the group request was sent: definite (COORDINATOR_NOT_AVAILABLE).
fn not_found(why: String) -> ClientError {
    ClientError::Broker {
        api_key: ApiKey::FindCoordinator as i16,
        code: code::COORDINATOR_NOT_AVAILABLE,
        message: Some(why),
    }
}

impl CoordinatorRoute {
    pub(super) fn new(group: &str, bootstrap: &[SocketAddr]) -> Self {
        CoordinatorRoute {
            group: group.to_owned(),
            discover: bootstrap.len() > 1,
            addr: None,
        }
    }

    /// The coordinator last found (`None` before a lookup, after a move, or on one broker).
    pub(super) fn current(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// FindCoordinator from a bootstrap broker: (node id, host, port).
    pub(super) async fn find<N: Net>(
        &self,
        session: &mut Session<N>,
    ) -> Result<(i32, String, i32), ClientError> {
        let mut request = FindCoordinatorRequest::default();
        request.key = StrBytes::from_string(self.group.clone());
        let r = session.call_read(&request, Duration::ZERO).await?;
        if r.error_code != 0 {
            return Err(ClientError::broker(
                ApiKey::FindCoordinator as i16,
                r.error_code,
                r.error_message.as_ref(),
            ));
        }
        Ok((r.node_id.0, r.host.as_str().to_owned(), r.port))
    }

    /// Where the next group request goes: `None` = the bootstrap broker.
    async fn target<N: Net>(
        &mut self,
        session: &mut Session<N>,
    ) -> Result<Option<SocketAddr>, ClientError> {
        if !self.discover {
            return Ok(None);
        }
        if let Some(addr) = self.addr {
            return Ok(Some(addr));
        }
        let (node, host, port) = self
            .find(session)
            .await
            .map_err(|e| not_found(format!("find coordinator: {e}")))?;
        let addr = coordinator_addr(&host, port)
            .ok_or_else(|| not_found(format!("coordinator {node} at {host}:{port}")))?;
        self.addr = Some(addr);
        Ok(Some(addr))
    }

    /// Sends a group request to the coordinator. `moved` reads the answer's coordinator code.
    /// In a cluster, a moved code or a failure before the request went out (and, for `read`s,
    /// any transport failure) forgets the coordinator and tries again after a lookup, up to
    /// `COORDINATOR_ATTEMPTS_MAX` times; the last answer or error is returned as it is. With
    /// one bootstrap broker: one call (reads retry transport failures), as on a single node.
    pub(super) async fn call<N: Net, R: Request>(
        &mut self,
        session: &mut Session<N>,
        request: &R,
        extra_wait: Duration,
        read: bool,
        moved: impl Fn(&R::Response) -> Option<ErrorCode>,
    ) -> Result<R::Response, ClientError> {
        if !self.discover {
            return if read {
                session.call_read(request, extra_wait).await
            } else {
                session.call(request, extra_wait).await
            };
        }
        let backoff = Duration::from_millis(session.config().retry_backoff_ms);
        for attempt in 1..=COORDINATOR_ATTEMPTS_MAX {
            let last = attempt == COORDINATOR_ATTEMPTS_MAX;
            let result = match self.target(session).await {
                Ok(target) => session.call_to(target, request, extra_wait).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(r) => {
                    let moved = moved(&r).is_some_and(|c| COORDINATOR_MOVED_CODES.contains(&c));
                    if !moved {
                        return Ok(r);
                    }
                    self.addr = None;
                    if last {
                        return Ok(r);
                    }
                }
                Err(e) => {
                    // Unreachable, timed out or lost: whoever coordinates now, ask again.
                    self.addr = None;
                    if last || !(read || e.is_definite() || group_error_is_definite(&e)) {
                        return Err(e);
                    }
                }
            }
            tokio::time::sleep(backoff).await;
        }
        Err(not_found("no attempt made".into()))
    }
}

/// The first coordinator code among an OffsetCommit answer's partitions.
fn commit_moved(r: &kafka_protocol::messages::OffsetCommitResponse) -> Option<ErrorCode> {
    r.topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| p.error_code)
        .find(|c| COORDINATOR_MOVED_CODES.contains(c))
}

/// An OffsetFetch answer's coordinator code (top level, or on a partition for old versions).
fn fetch_moved(r: &kafka_protocol::messages::OffsetFetchResponse) -> Option<ErrorCode> {
    if r.error_code != 0 {
        return Some(r.error_code);
    }
    r.topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| p.error_code)
        .find(|c| COORDINATOR_MOVED_CODES.contains(c))
}

/// One member of a classic consumer group.
pub struct GroupMember<N: Net> {
    session: Session<N>,
    route: CoordinatorRoute,
    config: GroupConfig,
    member_id: String,
    generation: i32,
}

impl<N: Net> GroupMember<N> {
    pub fn new(
        net: N,
        bootstrap: Vec<std::net::SocketAddr>,
        client: ClientConfig,
        config: GroupConfig,
    ) -> Self {
        GroupMember {
            route: CoordinatorRoute::new(&config.group, &bootstrap),
            session: Session::new(net, bootstrap, client),
            config,
            member_id: String::new(),
            generation: -1,
        }
    }

    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// Forgets the member id and generation (after UNKNOWN_MEMBER_ID): the next join is fresh.
    pub fn reset(&mut self) {
        self.member_id.clear();
        self.generation = -1;
    }

    /// FindCoordinator for the group: (node id, host, port).
    pub async fn find_coordinator(&mut self) -> Result<(i32, String, i32), ClientError> {
        self.route.find(&mut self.session).await
    }

    /// The coordinator this member's group requests go to, once looked up (cluster only).
    pub fn coordinator(&self) -> Option<SocketAddr> {
        self.route.current()
    }

    /// JoinGroup (two-step when the broker asks for a member id), then SyncGroup; the leader
    /// computes a range assignment over `partitions` (topic -> partition count).
    pub async fn join_and_sync(
        &mut self,
        partitions: &BTreeMap<String, i32>,
    ) -> Result<Assignment, ClientError> {
        let metadata = encode_subscription(&self.config.topics);
        let mut answer = None;
        for _ in 0..JOIN_ROUNDS_MAX {
            let mut protocol = JoinGroupRequestProtocol::default();
            protocol.name = StrBytes::from_static_str("range");
            protocol.metadata = metadata.clone();
            let mut request = JoinGroupRequest::default();
            request.group_id = GroupId(StrBytes::from_string(self.config.group.clone()));
            request.session_timeout_ms = self.config.session_timeout_ms;
            request.rebalance_timeout_ms = self.config.rebalance_timeout_ms;
            request.member_id = StrBytes::from_string(self.member_id.clone());
            request.protocol_type = StrBytes::from_static_str("consumer");
            request.protocols = vec![protocol];
            let wait = Duration::from_millis(self.config.rebalance_timeout_ms.max(0) as u64);
            let r = self
                .route
                .call(&mut self.session, &request, wait, false, |r| {
                    Some(r.error_code)
                })
                .await?;
            if r.error_code == code::MEMBER_ID_REQUIRED {
                self.member_id = r.member_id.as_str().to_owned();
                continue;
            }
            if r.error_code == code::UNKNOWN_MEMBER_ID {
                self.reset();
            }
            if r.error_code != 0 {
                return Err(ClientError::broker(
                    ApiKey::JoinGroup as i16,
                    r.error_code,
                    None,
                ));
            }
            answer = Some(r);
            break;
        }
        let Some(joined) = answer else {
            return Err(ClientError::Broker {
                api_key: ApiKey::JoinGroup as i16,
                code: code::MEMBER_ID_REQUIRED,
                message: Some("join did not settle".into()),
            });
        };
        self.member_id = joined.member_id.as_str().to_owned();
        self.generation = joined.generation_id;
        let leader = joined.leader.as_str() == self.member_id;
        let mut assignments = Vec::new();
        if leader {
            if joined.members.len() > GROUP_MEMBERS_MAX {
                return Err(ClientError::Protocol {
                    reason: "too many members in JoinGroup answer".into(),
                });
            }
            let mut subs = Vec::new();
            for m in &joined.members {
                let topics = decode_subscription(&m.metadata).unwrap_or_default();
                subs.push((m.member_id.as_str().to_owned(), topics));
            }
            for (member, plan) in range_assign(&subs, partitions) {
                let mut a = SyncGroupRequestAssignment::default();
                a.member_id = StrBytes::from_string(member);
                a.assignment = encode_assignment(&plan);
                assignments.push(a);
            }
        }
        let mut request = SyncGroupRequest::default();
        request.group_id = GroupId(StrBytes::from_string(self.config.group.clone()));
        request.generation_id = self.generation;
        request.member_id = StrBytes::from_string(self.member_id.clone());
        request.assignments = assignments;
        let wait = Duration::from_millis(self.config.rebalance_timeout_ms.max(0) as u64);
        let r = self
            .route
            .call(&mut self.session, &request, wait, false, |r| {
                Some(r.error_code)
            })
            .await?;
        if r.error_code == code::UNKNOWN_MEMBER_ID {
            self.reset();
        }
        if r.error_code != 0 {
            return Err(ClientError::broker(
                ApiKey::SyncGroup as i16,
                r.error_code,
                None,
            ));
        }
        let mut partitions: Vec<(String, i32)> = decode_assignment(&r.assignment)
            .ok_or_else(|| ClientError::Protocol {
                reason: "assignment does not decode".into(),
            })?
            .into_iter()
            .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
            .collect();
        partitions.sort();
        partitions.dedup();
        Ok(Assignment {
            generation: self.generation,
            member_id: self.member_id.clone(),
            leader,
            partitions,
        })
    }

    /// Heartbeat at the current generation. Ok(()) or the broker's code as an error
    /// (REBALANCE_IN_PROGRESS: rejoin; UNKNOWN_MEMBER_ID / ILLEGAL_GENERATION: fenced).
    pub async fn heartbeat(&mut self) -> Result<(), ClientError> {
        let mut request = HeartbeatRequest::default();
        request.group_id = GroupId(StrBytes::from_string(self.config.group.clone()));
        request.generation_id = self.generation;
        request.member_id = StrBytes::from_string(self.member_id.clone());
        let r = self
            .route
            .call(&mut self.session, &request, Duration::ZERO, false, |r| {
                Some(r.error_code)
            })
            .await?;
        if r.error_code != 0 {
            return Err(ClientError::broker(
                ApiKey::Heartbeat as i16,
                r.error_code,
                None,
            ));
        }
        Ok(())
    }

    /// OffsetCommit of `offsets` (partition, next offset) on `topic` with an explicit
    /// `generation` (normally `self.generation()`). All partitions must succeed.
    pub async fn commit(
        &mut self,
        generation: i32,
        topic: &str,
        offsets: &[(i32, i64)],
    ) -> Result<(), ClientError> {
        let (group, member) = (self.config.group.clone(), self.member_id.clone());
        commit_offsets(
            &mut self.session,
            &mut self.route,
            &group,
            generation,
            &member,
            topic,
            offsets,
        )
        .await
    }

    /// OffsetFetch: the committed offset per partition (-1 when none).
    pub async fn fetch_offsets(
        &mut self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<(i32, i64)>, ClientError> {
        let group = self.config.group.clone();
        fetch_committed(
            &mut self.session,
            &mut self.route,
            &group,
            topic,
            partitions,
        )
        .await
    }

    /// LeaveGroup for this member; forgets the member id afterwards whatever the answer.
    pub async fn leave(&mut self) -> Result<(), ClientError> {
        let mut request = LeaveGroupRequest::default();
        request.group_id = GroupId(StrBytes::from_string(self.config.group.clone()));
        request.member_id = StrBytes::from_string(self.member_id.clone());
        let result = self
            .route
            .call(&mut self.session, &request, Duration::ZERO, false, |r| {
                Some(r.error_code)
            })
            .await;
        self.reset();
        let r = result?;
        if r.error_code != 0 {
            return Err(ClientError::broker(
                ApiKey::LeaveGroup as i16,
                r.error_code,
                None,
            ));
        }
        Ok(())
    }

    /// ListGroups: every group the coordinator knows.
    pub async fn list_groups(&mut self) -> Result<Vec<ListedGroup>, ClientError> {
        let r = self
            .session
            .call_read(&ListGroupsRequest::default(), Duration::ZERO)
            .await?;
        if r.error_code != 0 {
            return Err(ClientError::broker(
                ApiKey::ListGroups as i16,
                r.error_code,
                None,
            ));
        }
        Ok(r.groups
            .iter()
            .take(GROUP_MEMBERS_MAX)
            .map(|g| ListedGroup {
                group: g.group_id.0.as_str().to_owned(),
                protocol_type: g.protocol_type.as_str().to_owned(),
                state: g.group_state.as_str().to_owned(),
            })
            .collect())
    }

    /// DescribeGroups of this member's group.
    pub async fn describe(&mut self) -> Result<GroupDescription, ClientError> {
        let mut request = DescribeGroupsRequest::default();
        request.groups = vec![GroupId(StrBytes::from_string(self.config.group.clone()))];
        let r = self
            .route
            .call(&mut self.session, &request, Duration::ZERO, true, |r| {
                r.groups.first().map(|g| g.error_code)
            })
            .await?;
        let Some(g) = r.groups.first() else {
            return Err(ClientError::Protocol {
                reason: "DescribeGroups answered no group".into(),
            });
        };
        if g.error_code != 0 {
            return Err(ClientError::broker(
                ApiKey::DescribeGroups as i16,
                g.error_code,
                None,
            ));
        }
        let members = g
            .members
            .iter()
            .take(GROUP_MEMBERS_MAX)
            .map(|m| MemberDescription {
                member_id: m.member_id.as_str().to_owned(),
                instance_id: m.group_instance_id.as_ref().map(|i| i.as_str().to_owned()),
                client_id: m.client_id.as_str().to_owned(),
                client_host: m.client_host.as_str().to_owned(),
                partitions: decode_assignment(&m.member_assignment)
                    .unwrap_or_default()
                    .into_iter()
                    .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
                    .collect(),
            })
            .collect();
        Ok(GroupDescription {
            state: g.group_state.as_str().to_owned(),
            protocol_type: g.protocol_type.as_str().to_owned(),
            protocol: g.protocol_data.as_str().to_owned(),
            members,
        })
    }

    /// OffsetFetch of every committed offset of the group: (topic, partition, offset).
    pub async fn fetch_all_offsets(&mut self) -> Result<Vec<(String, i32, i64)>, ClientError> {
        let mut request = OffsetFetchRequest::default();
        request.group_id = GroupId(StrBytes::from_string(self.config.group.clone()));
        request.topics = None;
        let r = self
            .route
            .call(
                &mut self.session,
                &request,
                Duration::ZERO,
                true,
                fetch_moved,
            )
            .await?;
        if r.error_code != 0 {
            return Err(ClientError::broker(
                ApiKey::OffsetFetch as i16,
                r.error_code,
                None,
            ));
        }
        let mut out = Vec::new();
        for t in r.topics.iter().take(ASSIGNMENT_ENTRIES_MAX) {
            for p in t.partitions.iter().take(ASSIGNMENT_ENTRIES_MAX) {
                if p.error_code == 0 && p.committed_offset >= 0 {
                    out.push((
                        t.name.0.as_str().to_owned(),
                        p.partition_index,
                        p.committed_offset,
                    ));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Kafka's range assignor: per topic, members subscribed to it in member-id order each get a
/// contiguous range; the first `count % members` get one extra. Pure and deterministic.
pub fn range_assign(
    members: &[(String, Vec<String>)],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, BTreeMap<String, Vec<i32>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
    for (m, _) in members {
        out.entry(m.clone()).or_default();
    }
    for (topic, &count) in partitions {
        let mut subscribed: Vec<&String> = members
            .iter()
            .filter(|(_, topics)| topics.iter().any(|t| t == topic))
            .map(|(m, _)| m)
            .collect();
        subscribed.sort();
        subscribed.dedup();
        if subscribed.is_empty() || count <= 0 {
            continue;
        }
        let n = subscribed.len() as i32;
        let (per, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, m) in subscribed.into_iter().enumerate() {
            let take = per + i32::from((i as i32) < extra);
            let range: Vec<i32> = (next..next + take).collect();
            next += take;
            if !range.is_empty() {
                out.entry(m.clone())
                    .or_default()
                    .insert(topic.clone(), range);
            }
        }
    }
    out
}

fn put_string(b: &mut BytesMut, s: &str) {
    let len = s.len().min(i16::MAX as usize);
    b.put_i16(len as i16);
    b.put_slice(&s.as_bytes()[..len]);
}

fn get_string(b: &mut Bytes) -> Option<String> {
    if b.remaining() < 2 {
        return None;
    }
    let len = usize::try_from(b.get_i16()).ok()?;
    if len > TOPIC_NAME_BYTES_MAX || b.remaining() < len {
        return None;
    }
    let s = b.split_to(len);
    String::from_utf8(s.to_vec()).ok()
}

fn get_count(b: &mut Bytes) -> Option<usize> {
    if b.remaining() < 4 {
        return None;
    }
    let n = b.get_i32();
    if n < 0 {
        return Some(0);
    }
    let n = n as usize;
    (n <= ASSIGNMENT_ENTRIES_MAX).then_some(n)
}

/// ConsumerProtocolSubscription v0: version, topics, null user data.
pub fn encode_subscription(topics: &[String]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(topics.len() as i32);
    for t in topics {
        put_string(&mut b, t);
    }
    b.put_i32(-1);
    b.freeze()
}

/// The topics of a subscription (any version: later fields are ignored).
pub fn decode_subscription(bytes: &Bytes) -> Option<Vec<String>> {
    let mut b = bytes.clone();
    if b.remaining() < 2 {
        return None;
    }
    b.get_i16();
    let n = get_count(&mut b)?;
    (0..n).map(|_| get_string(&mut b)).collect()
}

/// ConsumerProtocolAssignment v0: version, [topic, [partition]], null user data.
pub fn encode_assignment(plan: &BTreeMap<String, Vec<i32>>) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(plan.len() as i32);
    for (t, ps) in plan {
        put_string(&mut b, t);
        b.put_i32(ps.len() as i32);
        for p in ps {
            b.put_i32(*p);
        }
    }
    b.put_i32(-1);
    b.freeze()
}

/// (topic, partitions) of an assignment; empty bytes are an empty assignment.
pub fn decode_assignment(bytes: &Bytes) -> Option<Vec<(String, Vec<i32>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let mut b = bytes.clone();
    if b.remaining() < 2 {
        return None;
    }
    b.get_i16();
    let n = get_count(&mut b)?;
    let mut out = Vec::new();
    for _ in 0..n {
        let t = get_string(&mut b)?;
        let k = get_count(&mut b)?;
        if b.remaining() < k * 4 {
            return None;
        }
        out.push((t, (0..k).map(|_| b.get_i32()).collect()));
    }
    Some(out)
}

/// OffsetCommit of `offsets` (partition, next offset) on `topic` for `member_id` with a classic
/// generation or a KIP-848 member epoch. All partitions must succeed. Shared by both members.
pub(super) async fn commit_offsets<N: Net>(
    session: &mut Session<N>,
    route: &mut CoordinatorRoute,
    group: &str,
    generation_or_epoch: i32,
    member_id: &str,
    topic: &str,
    offsets: &[(i32, i64)],
) -> Result<(), ClientError> {
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.to_owned()));
    t.partitions = offsets
        .iter()
        .map(|&(p, o)| {
            let mut e = OffsetCommitRequestPartition::default();
            e.partition_index = p;
            e.committed_offset = o;
            e.committed_leader_epoch = -1;
            e.committed_metadata = Some(StrBytes::from_static_str(""));
            e
        })
        .collect();
    let mut request = OffsetCommitRequest::default();
    request.group_id = GroupId(StrBytes::from_string(group.to_owned()));
    request.generation_id_or_member_epoch = generation_or_epoch;
    request.member_id = StrBytes::from_string(member_id.to_owned());
    request.retention_time_ms = -1;
    request.topics = vec![t];
    let r = route
        .call(session, &request, Duration::ZERO, false, commit_moved)
        .await?;
    let mut seen = 0usize;
    for p in r.topics.iter().flat_map(|t| t.partitions.iter()) {
        seen += 1;
        if p.error_code != 0 {
            return Err(ClientError::broker(
                ApiKey::OffsetCommit as i16,
                p.error_code,
                None,
            ));
        }
    }
    if seen != offsets.len() {
        return Err(ClientError::Protocol {
            reason: format!("commit answered {seen} of {} partitions", offsets.len()),
        });
    }
    Ok(())
}

/// OffsetFetch: the committed offset per partition of `topic` (-1 when none).
pub(super) async fn fetch_committed<N: Net>(
    session: &mut Session<N>,
    route: &mut CoordinatorRoute,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<(i32, i64)>, ClientError> {
    let mut t = OffsetFetchRequestTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.to_owned()));
    t.partition_indexes = partitions.to_vec();
    let mut request = OffsetFetchRequest::default();
    request.group_id = GroupId(StrBytes::from_string(group.to_owned()));
    request.topics = Some(vec![t]);
    let r = route
        .call(session, &request, Duration::ZERO, true, fetch_moved)
        .await?;
    if r.error_code != 0 {
        return Err(ClientError::broker(
            ApiKey::OffsetFetch as i16,
            r.error_code,
            None,
        ));
    }
    let mut out = Vec::new();
    for p in r
        .topics
        .iter()
        .filter(|t| t.name.0.as_str() == topic)
        .flat_map(|t| t.partitions.iter())
    {
        if p.error_code != 0 {
            return Err(ClientError::broker(
                ApiKey::OffsetFetch as i16,
                p.error_code,
                None,
            ));
        }
        out.push((p.partition_index, p.committed_offset));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(ms: &[&str]) -> Vec<(String, Vec<String>)> {
        ms.iter()
            .map(|m| (m.to_string(), vec!["t".to_string()]))
            .collect()
    }

    #[test]
    fn range_assign_splits_contiguously_and_covers_everything() {
        let parts = BTreeMap::from([("t".to_string(), 5)]);
        let plan = range_assign(&subs(&["b", "a"]), &parts);
        assert_eq!(plan["a"]["t"], vec![0, 1, 2]);
        assert_eq!(plan["b"]["t"], vec![3, 4]);
        let plan = range_assign(
            &subs(&["a", "b", "c", "d"]),
            &BTreeMap::from([("t".into(), 2)]),
        );
        assert_eq!(plan["a"]["t"], vec![0]);
        assert_eq!(plan["b"]["t"], vec![1]);
        assert!(plan["c"].is_empty() && plan["d"].is_empty());
    }

    #[test]
    fn assignment_and_subscription_round_trip() {
        let plan = BTreeMap::from([("t".to_string(), vec![0, 3]), ("u".to_string(), vec![1])]);
        let got = decode_assignment(&encode_assignment(&plan)).expect("decodes");
        assert_eq!(got, vec![("t".into(), vec![0, 3]), ("u".into(), vec![1])]);
        let topics = vec!["t".to_string(), "u".to_string()];
        assert_eq!(
            decode_subscription(&encode_subscription(&topics)),
            Some(topics)
        );
        assert_eq!(decode_assignment(&Bytes::new()), Some(vec![]));
    }

    #[test]
    fn hostile_assignments_are_refused_not_allocated() {
        let mut b = BytesMut::new();
        b.put_i16(0);
        b.put_i32(i32::MAX);
        assert_eq!(decode_assignment(&b.freeze()), None);
        let mut b = BytesMut::new();
        b.put_i16(0);
        b.put_i32(1);
        put_string(&mut b, "t");
        b.put_i32(50_000);
        assert_eq!(decode_assignment(&b.freeze()), None);
        assert_eq!(decode_assignment(&Bytes::from_static(&[0])), None);
    }

    #[test]
    fn coordinator_addresses_parse_and_one_bootstrap_broker_is_the_coordinator() {
        assert_eq!(
            coordinator_addr("10.0.4.2", 9092),
            Some("10.0.4.2:9092".parse().expect("addr"))
        );
        assert_eq!(
            coordinator_addr("localhost", 9092),
            Some("127.0.0.1:9092".parse().expect("addr"))
        );
        assert_eq!(
            coordinator_addr("[::1]", 9),
            Some("[::1]:9".parse().expect("addr"))
        );
        assert_eq!(coordinator_addr("broker-1.example", 9092), None);
        assert_eq!(coordinator_addr("10.0.4.2", -1), None);
        assert_eq!(coordinator_addr("10.0.4.2", 70_000), None);
        let one: Vec<SocketAddr> = vec!["10.0.0.1:9092".parse().expect("addr")];
        assert!(!CoordinatorRoute::new("g", &one).discover);
        let three: Vec<SocketAddr> = (1..=3)
            .map(|i| format!("10.0.4.{i}:9092").parse().expect("addr"))
            .collect();
        let route = CoordinatorRoute::new("g", &three);
        assert!(route.discover && route.current().is_none());
        // A lookup that failed before anything was sent is a definite group failure.
        assert!(group_error_is_definite(&not_found("x".into())));
        for c in COORDINATOR_MOVED_CODES {
            assert!(GROUP_DEFINITE_CODES.contains(c), "{c}");
        }
    }

    #[test]
    fn group_codes_are_definite_for_group_requests() {
        let e = ClientError::Broker {
            api_key: ApiKey::OffsetCommit as i16,
            code: code::ILLEGAL_GENERATION,
            message: None,
        };
        assert!(group_error_is_definite(&e));
        let e = ClientError::Broker {
            api_key: ApiKey::OffsetCommit as i16,
            code: code::REQUEST_TIMED_OUT,
            message: None,
        };
        assert!(!group_error_is_definite(&e));
        assert!(!group_error_is_definite(&ClientError::Timeout {
            api_key: 8
        }));
    }
}
