//! `ConsumerMember`: a minimal KIP-848 group consumer for the simulator: ConsumerGroupHeartbeat
//! (join with epoch 0, heartbeat with the partitions it owns, leave with epoch -1),
//! OffsetCommit with its member epoch and OffsetFetch. The broker computes the assignment; the
//! caller decides when it has released revoked partitions (it reports what it owns on every
//! heartbeat). Routes its requests like `GroupMember` (`group::CoordinatorRoute`): the one
//! bootstrap broker, or in a cluster the coordinator FindCoordinator names, looked up again when
//! it moved or its connection failed. Never retries a write after an ambiguous failure, never
//! reads the wall clock, never draws randomness; every decoded list is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::{ApiKey, ConsumerGroupHeartbeatRequest, GroupId, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::group::CoordinatorRoute;
use super::{ClientConfig, ClientError, Session};
use crate::io::Net;

/// Partitions one heartbeat answer may assign for the client to keep them.
pub const ASSIGNED_PARTITIONS_MAX: usize = 100_000;

/// A topic id (KIP-848 names topics by id).
pub type TopicId = Uuid;
/// Partitions by topic id, as KIP-848 names them.
pub type TopicIdPartitions = BTreeMap<TopicId, BTreeSet<i32>>;

/// What a successful heartbeat answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatOk {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's whole assignment when it changed; `None` = as before.
    pub assignment: Option<TopicIdPartitions>,
}

/// Settings of one KIP-848 member.
#[derive(Clone, Debug)]
pub struct ConsumerMemberConfig {
    pub group: String,
    pub topics: Vec<String>,
    pub rebalance_timeout_ms: i32,
    /// `uniform` or `range`.
    pub assignor: Option<String>,
}

/// One KIP-848 consumer-group member.
pub struct ConsumerMember<N: Net> {
    session: Session<N>,
    route: CoordinatorRoute,
    config: ConsumerMemberConfig,
    member_id: String,
    member_epoch: i32,
}

impl<N: Net> ConsumerMember<N> {
    pub fn new(
        net: N,
        bootstrap: Vec<std::net::SocketAddr>,
        client: ClientConfig,
        config: ConsumerMemberConfig,
    ) -> Self {
        ConsumerMember {
            route: CoordinatorRoute::new(&config.group, &bootstrap),
            session: Session::new(net, bootstrap, client),
            config,
            member_id: String::new(),
            member_epoch: 0,
        }
    }

    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The epoch the next heartbeat carries (0 = not joined).
    pub fn member_epoch(&self) -> i32 {
        self.member_epoch
    }

    /// Forgets the member id and epoch: the next heartbeat joins afresh (after a fence).
    pub fn reset(&mut self) {
        self.member_id.clear();
        self.member_epoch = 0;
    }

    /// One ConsumerGroupHeartbeat reporting `owned`. Epoch 0 (a join) sends the subscription
    /// and assignor; later ones only what the member owns. Refusals come back as the broker's
    /// code (FENCED_MEMBER_EPOCH / UNKNOWN_MEMBER_ID: `reset` and join again).
    pub async fn heartbeat(
        &mut self,
        owned: &TopicIdPartitions,
    ) -> Result<HeartbeatOk, ClientError> {
        let joining = self.member_epoch == 0;
        let mut request = ConsumerGroupHeartbeatRequest::default();
        request.group_id = GroupId(StrBytes::from_string(self.config.group.clone()));
        request.member_id = StrBytes::from_string(self.member_id.clone());
        request.member_epoch = self.member_epoch;
        request.rebalance_timeout_ms = if joining {
            self.config.rebalance_timeout_ms
        } else {
            -1
        };
        if joining {
            request.subscribed_topic_names = Some(
                self.config
                    .topics
                    .iter()
                    .map(|t| TopicName(StrBytes::from_string(t.clone())))
                    .collect(),
            );
            request.server_assignor = self.config.assignor.clone().map(StrBytes::from_string);
        }
        request.topic_partitions = Some(
            owned
                .iter()
                .map(|(id, ps)| {
                    let mut t = TopicPartitions::default();
                    t.topic_id = *id;
                    t.partitions = ps.iter().copied().collect();
                    t
                })
                .collect(),
        );
        let r = self
            .route
            .call(&mut self.session, &request, Duration::ZERO, false, |r| {
                Some(r.error_code)
            })
            .await?;
        if r.error_code != 0 {
            return Err(ClientError::broker(
                ApiKey::ConsumerGroupHeartbeat as i16,
                r.error_code,
                r.error_message.as_ref(),
            ));
        }
        if let Some(id) = &r.member_id {
            self.member_id = id.as_str().to_owned();
        }
        self.member_epoch = r.member_epoch;
        let assignment = match r.assignment {
            None => None,
            Some(a) => {
                let mut out = TopicIdPartitions::new();
                let mut count = 0usize;
                for t in a.topic_partitions {
                    count += t.partitions.len();
                    if count > ASSIGNED_PARTITIONS_MAX {
                        return Err(ClientError::Protocol {
                            reason: format!("assignment of more than {ASSIGNED_PARTITIONS_MAX}"),
                        });
                    }
                    out.entry(t.topic_id).or_default().extend(t.partitions);
                }
                Some(out)
            }
        };
        Ok(HeartbeatOk {
            member_id: self.member_id.clone(),
            member_epoch: r.member_epoch,
            heartbeat_interval_ms: r.heartbeat_interval_ms,
            assignment,
        })
    }

    /// Leaves the group (epoch -1); forgets the member id whatever the answer.
    pub async fn leave(&mut self) -> Result<(), ClientError> {
        if self.member_id.is_empty() {
            return Ok(());
        }
        let mut request = ConsumerGroupHeartbeatRequest::default();
        request.group_id = GroupId(StrBytes::from_string(self.config.group.clone()));
        request.member_id = StrBytes::from_string(self.member_id.clone());
        request.member_epoch = -1;
        request.rebalance_timeout_ms = -1;
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
                ApiKey::ConsumerGroupHeartbeat as i16,
                r.error_code,
                r.error_message.as_ref(),
            ));
        }
        Ok(())
    }

    /// OffsetCommit of `offsets` (partition, next offset) on `topic` with member `epoch`
    /// (normally `self.member_epoch()`). All partitions must succeed.
    pub async fn commit(
        &mut self,
        epoch: i32,
        topic: &str,
        offsets: &[(i32, i64)],
    ) -> Result<(), ClientError> {
        let (group, member) = (self.config.group.clone(), self.member_id.clone());
        super::group::commit_offsets(
            &mut self.session,
            &mut self.route,
            &group,
            epoch,
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
        super::group::fetch_committed(
            &mut self.session,
            &mut self.route,
            &group,
            topic,
            partitions,
        )
        .await
    }
}
