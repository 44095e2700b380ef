//! The group-member workload of `single_groups`: each member is one client process running
//! samsa-net's classic `GroupMember` on the workload topic. It joins, fetches the committed
//! offsets of its assigned partitions, polls them forward from there, commits its positions and
//! heartbeats; from the seed it sometimes leaves, crashes (drops its member without leaving: it
//! simply stops heartbeating), pauses past its session timeout, or re-sends an old commit with
//! the generation it held before its latest rebalance (a delayed commit, which the coordinator
//! must refuse). In half the seeds (decided per run, so one group never mixes protocols) every
//! member is a KIP-848 member instead (`ConsumerMember`, see `member848`). Every group op goes
//! into the history as invoke then ok / fail / info, exactly as the client classified it.
//! In the cluster scenario (`cluster_groups`) every client bootstraps over all brokers: the
//! members find the group coordinator themselves (`GroupMember` / `ConsumerMember`) and look
//! it up again when it moves; polls go to each partition's leader.
//! Never decides pass or fail itself.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use samsa_net::client::{
    group_error_is_definite, Admin, ClientConfig, ClientError, Consumer, ConsumerMember,
    ConsumerMemberConfig, GroupConfig, GroupMember, TopicId, TopicIdPartitions,
};
use samsa_net::error::code;
use samsa_net::TokioNet;
use samsa_sim::chaos::ChaosNet;
use samsa_sim::history::{Call, Outcome, GROUP_CONSUMER_BASE};
use samsa_sim::seed::Seed;

use crate::workload::{Workload, FETCH_BYTES_MAX, PARTITIONS_MAX, TOPIC};

/// The group every member joins.
pub const GROUP: &str = "g";
/// Session timeout members ask for (the broker's minimum is 6 s).
pub const SESSION_TIMEOUT_MS: i32 = 6_000;
/// Rebalance timeout members ask for.
pub const REBALANCE_TIMEOUT_MS: i32 = 3_000;
/// Consumer ids one member may use in `Call::Poll` (one per join or position reset).
pub const CONSUMER_IDS_PER_MEMBER: u32 = 100_000;
/// Work rounds per member incarnation before it rejoins anyway (bounds the inner loop).
pub const ROUNDS_PER_JOIN_MAX: u32 = 10_000;
/// Incarnations (fresh member ids) per member process.
pub const INCARNATIONS_MAX: u32 = 1_000;
/// Attempts to create the topic before the member gives up on it.
pub const CREATE_ATTEMPTS_MAX: u32 = 20;

type Net = ChaosNet<TokioNet>;

fn client_config(name: String) -> ClientConfig {
    ClientConfig {
        client_id: name,
        connect_timeout_ms: 1_000,
        request_timeout_ms: 2_000,
        retries: 2,
        retry_backoff_ms: 100,
    }
}

fn now_ms() -> u64 {
    samsa_sim::sim_now_ms()
}

fn outcome_of(e: &ClientError) -> Outcome {
    if let (Some(c), true) = (e.error_code(), matches!(e, ClientError::Broker { .. })) {
        if group_error_is_definite(e) {
            return Outcome::GroupRefused { code: c };
        }
    }
    if group_error_is_definite(e) {
        Outcome::Fail(e.to_string())
    } else {
        Outcome::Info(e.to_string())
    }
}

fn net(wl: &Workload) -> Net {
    ChaosNet::new(TokioNet, wl.chaos.clone())
}

fn invoke(wl: &Workload, process: u32, call: Call) -> Option<u64> {
    let line = format!("invoke p{process} {call:?}");
    let id = lock(wl).invoke(process, now_ms(), call);
    wl.trace.event(line);
    id
}

fn complete(wl: &Workload, id: Option<u64>, process: u32, outcome: Outcome) {
    let Some(id) = id else { return };
    wl.trace
        .event(format!("complete p{process} op{id} {outcome:?}"));
    lock(wl).complete(id, now_ms(), outcome);
}

fn lock(wl: &Workload) -> std::sync::MutexGuard<'_, samsa_sim::history::History> {
    wl.history.lock().unwrap_or_else(|p| p.into_inner())
}

fn stopping(wl: &Workload) -> bool {
    wl.stop.load(Ordering::SeqCst) || now_ms() >= wl.opts.safety_ms
}

async fn ensure_topic(wl: &Workload, name: String) {
    if wl.opts.replication_factor > 0 {
        // A cluster: the workload's own creation (drawn RF and min ISR, via the controller).
        return wl.ensure_topic(name).await;
    }
    let mut admin = Admin::new(net(wl), vec![wl.broker], client_config(name));
    let partitions = wl.opts.partitions.clamp(1, PARTITIONS_MAX);
    for _ in 0..CREATE_ATTEMPTS_MAX {
        match admin.create_topics(TOPIC, partitions, Vec::new()).await {
            Ok(_) => return,
            Err(e) if e.error_code() == Some(code::TOPIC_ALREADY_EXISTS) => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// What a member does after a round.
enum Next {
    Continue,
    Rejoin,
    /// Drop the member id (crashed or fenced for good): start a fresh incarnation.
    Fresh,
    /// Left the group with LeaveGroup: start a fresh incarnation.
    Left,
}

/// Per member process state across joins.
struct Member {
    wl: Workload,
    index: u32,
    process: u32,
    seed: Seed,
    /// Next consumer id suffix for `Call::Poll`.
    next_consumer: u32,
    /// The last acknowledged commit of an earlier generation: (generation, offsets).
    old_commit: Option<(i32, Vec<(i32, i64)>)>,
}

/// True when this run's members use the KIP-848 protocol (drawn once per run from the seed).
pub fn kip848_run(seed: u64) -> bool {
    Seed::new(seed).child("group-protocol").chance(0.5)
}

/// One group member process: incarnations until the safety phase ends, then it leaves.
pub async fn member(wl: Workload, index: u32) {
    if kip848_run(wl.seed) {
        return member848(wl, index).await;
    }
    let process = 200 + index;
    let seed = Seed::new(wl.seed).child(&format!("member{index}"));
    ensure_topic(&wl, format!("m{index}-admin")).await;
    let mut m = Member {
        wl,
        index,
        process,
        seed,
        next_consumer: 0,
        old_commit: None,
    };
    // Members join at staggered times so the group rebalances as they arrive.
    let delay = m.seed.range_u64(0, 3_000);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    for incarnation in 0..INCARNATIONS_MAX {
        if stopping(&m.wl) {
            break;
        }
        let config = GroupConfig {
            group: GROUP.to_string(),
            topics: vec![TOPIC.to_string()],
            session_timeout_ms: SESSION_TIMEOUT_MS,
            rebalance_timeout_ms: REBALANCE_TIMEOUT_MS,
        };
        let client = client_config(format!("m{index}-{incarnation}"));
        let mut gm = GroupMember::new(net(&m.wl), m.wl.addrs(), client, config);
        let left = m.incarnation(&mut gm).await;
        if !left && stopping(&m.wl) && !gm.member_id().is_empty() {
            m.leave(&mut gm).await;
        }
        m.old_commit = None;
    }
}

impl Member {
    /// Joins and works until the member leaves, crashes or is fenced for good. True when it
    /// already left the group.
    async fn incarnation(&mut self, gm: &mut GroupMember<Net>) -> bool {
        let partitions = self.wl.opts.partitions.clamp(1, PARTITIONS_MAX);
        let topics = BTreeMap::from([(TOPIC.to_string(), partitions)]);
        while !stopping(&self.wl) {
            let op = invoke(
                &self.wl,
                self.process,
                Call::GroupJoin { member: self.index },
            );
            let assigned = match gm.join_and_sync(&topics).await {
                Ok(a) => {
                    let parts: Vec<i32> = a.partitions.iter().map(|(_, p)| *p).collect();
                    let outcome = Outcome::Joined {
                        member_id: a.member_id.clone(),
                        generation: a.generation,
                        partitions: parts.clone(),
                    };
                    complete(&self.wl, op, self.process, outcome);
                    parts
                }
                Err(e) => {
                    complete(&self.wl, op, self.process, outcome_of(&e));
                    let pause = self.seed.range_u64(100, 500);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    continue;
                }
            };
            match self.work(gm, &assigned).await {
                Next::Continue | Next::Rejoin => {}
                Next::Fresh => return false,
                Next::Left => return true,
            }
        }
        false
    }

    /// One Poll op per held partition from its position; positions move past what was read.
    async fn poll_all(
        &mut self,
        consumer: &mut Consumer<Net>,
        consumer_id: u32,
        positions: &mut BTreeMap<i32, i64>,
    ) {
        for (p, position) in positions.iter_mut() {
            let call = Call::Poll {
                consumer: consumer_id,
                partition: *p,
                from_offset: *position,
            };
            let op = invoke(&self.wl, self.process, call);
            let outcome = match consumer
                .fetch(TOPIC, *p, *position, 100, FETCH_BYTES_MAX)
                .await
            {
                Ok(ok) => {
                    let from = *position;
                    let records: Vec<(i64, String)> = ok
                        .records
                        .iter()
                        .filter(|(o, _)| *o >= from)
                        .map(|(o, r)| (*o, value_string(r)))
                        .collect();
                    if let Some((last, _)) = records.last() {
                        *position = last + 1;
                    }
                    Outcome::Polled {
                        records,
                        high_watermark: ok.high_watermark,
                        log_end_offset: None,
                    }
                }
                Err(e) => outcome_of_read(&e),
            };
            complete(&self.wl, op, self.process, outcome);
        }
    }

    fn consumer_id(&mut self) -> u32 {
        let id = GROUP_CONSUMER_BASE
            + self.index * CONSUMER_IDS_PER_MEMBER
            + self.next_consumer % CONSUMER_IDS_PER_MEMBER;
        self.next_consumer += 1;
        id
    }

    async fn leave(&mut self, gm: &mut GroupMember<Net>) {
        let call = Call::GroupLeave {
            member: self.index,
            member_id: gm.member_id().to_string(),
        };
        let op = invoke(&self.wl, self.process, call);
        let outcome = match gm.leave().await {
            Ok(()) => Outcome::GroupOk,
            Err(e) => outcome_of(&e),
        };
        complete(&self.wl, op, self.process, outcome);
    }

    /// After a refused group op: what to do next.
    fn after_refusal(e: &ClientError) -> Next {
        match e.error_code() {
            Some(code::UNKNOWN_MEMBER_ID) => Next::Fresh,
            Some(_) => Next::Rejoin,
            None => Next::Continue,
        }
    }

    /// Fetches the committed offsets of `assigned`, then polls, commits and heartbeats in
    /// rounds until a rebalance, a fence or a fault decided by the seed.
    async fn work(&mut self, gm: &mut GroupMember<Net>, assigned: &[i32]) -> Next {
        let generation = gm.generation();
        let call = Call::GroupFetch {
            member: self.index,
            partitions: assigned.to_vec(),
        };
        let op = invoke(&self.wl, self.process, call);
        let mut positions: BTreeMap<i32, i64> = match gm.fetch_offsets(TOPIC, assigned).await {
            Ok(offsets) => {
                complete(
                    &self.wl,
                    op,
                    self.process,
                    Outcome::Offsets(offsets.clone()),
                );
                offsets.into_iter().map(|(p, o)| (p, o.max(0))).collect()
            }
            Err(e) => {
                complete(&self.wl, op, self.process, outcome_of(&e));
                return Self::after_refusal(&e).max_rejoin();
            }
        };
        for p in assigned {
            positions.entry(*p).or_insert(0);
        }
        let name = format!("m{}-c{}", self.index, self.next_consumer);
        let mut consumer = Consumer::new(net(&self.wl), self.wl.addrs(), client_config(name));
        let mut consumer_id = self.consumer_id();
        // A delayed commit from the previous generation, now that this one is known.
        if let Some((old_gen, old_offsets)) = self.old_commit.clone() {
            if old_gen < generation && self.seed.chance(self.wl.opts.stale_commit_p) {
                let call = Call::GroupCommit {
                    member: self.index,
                    member_id: gm.member_id().to_string(),
                    generation: old_gen,
                    known_generation: generation,
                    offsets: old_offsets.clone(),
                };
                let op = invoke(&self.wl, self.process, call);
                let outcome = match gm.commit(old_gen, TOPIC, &old_offsets).await {
                    Ok(()) => Outcome::GroupOk,
                    Err(e) => outcome_of(&e),
                };
                complete(&self.wl, op, self.process, outcome);
            }
        }
        let mut committed: Vec<(i32, i64)> = Vec::new();
        for _ in 0..ROUNDS_PER_JOIN_MAX {
            if stopping(&self.wl) {
                return Next::Rejoin;
            }
            self.poll_all(&mut consumer, consumer_id, &mut positions)
                .await;
            // Positions reset by OFFSET_OUT_OF_RANGE would go backwards: never here (commits
            // only name offsets below the high watermark), so a new consumer id is not needed.
            if !positions.is_empty() {
                let offsets: Vec<(i32, i64)> = positions.iter().map(|(p, o)| (*p, *o)).collect();
                let call = Call::GroupCommit {
                    member: self.index,
                    member_id: gm.member_id().to_string(),
                    generation,
                    known_generation: generation,
                    offsets: offsets.clone(),
                };
                let op = invoke(&self.wl, self.process, call);
                match gm.commit(generation, TOPIC, &offsets).await {
                    Ok(()) => {
                        complete(&self.wl, op, self.process, Outcome::GroupOk);
                        committed = offsets;
                    }
                    Err(e) => {
                        complete(&self.wl, op, self.process, outcome_of(&e));
                        let next = Self::after_refusal(&e);
                        if !matches!(next, Next::Continue) {
                            self.remember(generation, &committed);
                            return next;
                        }
                    }
                }
            }
            let call = Call::GroupHeartbeat {
                member: self.index,
                member_id: gm.member_id().to_string(),
                generation,
            };
            let op = invoke(&self.wl, self.process, call);
            match gm.heartbeat().await {
                Ok(()) => complete(&self.wl, op, self.process, Outcome::GroupOk),
                Err(e) => {
                    complete(&self.wl, op, self.process, outcome_of(&e));
                    let next = Self::after_refusal(&e);
                    if !matches!(next, Next::Continue) {
                        self.remember(generation, &committed);
                        return next;
                    }
                }
            }
            let o = &self.wl.opts;
            let (leave_p, crash_p, pause_p) =
                (o.member_leave_p, o.member_crash_p, o.member_pause_p);
            if self.seed.chance(leave_p) {
                self.trace("leaves");
                self.leave(gm).await;
                return Next::Left;
            }
            if self.seed.chance(crash_p) {
                // A crashed process just stops: no LeaveGroup, no more heartbeats.
                self.trace("crashes");
                let down = self.seed.range_u64(100, 3_000);
                tokio::time::sleep(Duration::from_millis(down)).await;
                return Next::Fresh;
            }
            if self.seed.chance(pause_p) {
                let pause = self.seed.range_u64(SESSION_TIMEOUT_MS as u64, 9_000);
                self.trace(&format!("pauses {pause} ms"));
                tokio::time::sleep(Duration::from_millis(pause)).await;
                // Carries on with its old generation: the coordinator must fence it.
                consumer_id = self.consumer_id();
                continue;
            }
            let pause = self.seed.range_u64(150, 600);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        self.remember(generation, &committed);
        Next::Rejoin
    }

    fn remember(&mut self, generation: i32, committed: &[(i32, i64)]) {
        if !committed.is_empty() {
            self.old_commit = Some((generation, committed.to_vec()));
        }
    }

    fn trace(&self, what: &str) {
        self.wl.trace.event(format!("member{} {what}", self.index));
    }
}

impl Next {
    /// A failed read before any work: rejoin at least.
    fn max_rejoin(self) -> Next {
        match self {
            Next::Continue => Next::Rejoin,
            other => other,
        }
    }
}

/// One KIP-848 member process. Its history, in the vocabulary the group checks read: each
/// ConsumerGroupHeartbeat is `Call::GroupHeartbeat` with the member epoch it carried (0 = a
/// join), completed `Joined` (the member id, its new epoch and its whole new assignment) when
/// the assignment changed, `GroupOk` when it did not. A heartbeat always reports as owned
/// exactly the partitions of the last assignment received: revoked partitions are committed
/// and dropped before the next heartbeat. Commits carry the member epoch as their generation.
pub async fn member848(wl: Workload, index: u32) {
    let process = 200 + index;
    let seed = Seed::new(wl.seed).child(&format!("member{index}"));
    ensure_topic(&wl, format!("k{index}-admin")).await;
    let mut m = Member {
        wl,
        index,
        process,
        seed,
        next_consumer: 0,
        old_commit: None,
    };
    let delay = m.seed.range_u64(0, 3_000);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    for incarnation in 0..INCARNATIONS_MAX {
        if stopping(&m.wl) {
            break;
        }
        let assignor = if m.seed.chance(0.5) {
            "uniform"
        } else {
            "range"
        };
        let config = ConsumerMemberConfig {
            group: GROUP.to_string(),
            topics: vec![TOPIC.to_string()],
            rebalance_timeout_ms: REBALANCE_TIMEOUT_MS,
            assignor: Some(assignor.to_string()),
        };
        let client = client_config(format!("k{index}-{incarnation}"));
        let mut cm = ConsumerMember::new(net(&m.wl), m.wl.addrs(), client, config);
        let left = m.incarnation848(&mut cm).await;
        if !left && stopping(&m.wl) && !cm.member_id().is_empty() {
            m.leave848(&mut cm).await;
        }
    }
}

/// Partitions of the workload topic in a KIP-848 assignment (the only topic subscribed).
fn topic_partitions(a: &TopicIdPartitions) -> (Option<TopicId>, Vec<i32>) {
    match a.iter().next() {
        Some((id, ps)) => (Some(*id), ps.iter().copied().collect()),
        None => (None, Vec::new()),
    }
}

impl Member {
    async fn leave848(&mut self, cm: &mut ConsumerMember<Net>) {
        let call = Call::GroupLeave {
            member: self.index,
            member_id: cm.member_id().to_string(),
        };
        let op = invoke(&self.wl, self.process, call);
        let outcome = match cm.leave().await {
            Ok(()) => Outcome::GroupOk,
            Err(e) => outcome_of(&e),
        };
        complete(&self.wl, op, self.process, outcome);
    }

    /// Commits `offsets` with the member's epoch; false when the member must start afresh.
    async fn commit848(&mut self, cm: &mut ConsumerMember<Net>, offsets: Vec<(i32, i64)>) -> bool {
        if offsets.is_empty() {
            return true;
        }
        let epoch = cm.member_epoch();
        let call = Call::GroupCommit {
            member: self.index,
            member_id: cm.member_id().to_string(),
            generation: epoch,
            known_generation: epoch,
            offsets: offsets.clone(),
        };
        let op = invoke(&self.wl, self.process, call);
        match cm.commit(epoch, TOPIC, &offsets).await {
            Ok(()) => {
                complete(&self.wl, op, self.process, Outcome::GroupOk);
                true
            }
            Err(e) => {
                complete(&self.wl, op, self.process, outcome_of(&e));
                e.error_code() != Some(code::UNKNOWN_MEMBER_ID)
            }
        }
    }

    /// Heartbeats, takes up assigned partitions from their committed offsets, polls, commits,
    /// and gives revoked partitions back after committing them; until it leaves, crashes or is
    /// fenced. True when it already left the group.
    async fn incarnation848(&mut self, cm: &mut ConsumerMember<Net>) -> bool {
        let mut topic_id: Option<TopicId> = None;
        let mut held: BTreeMap<i32, i64> = BTreeMap::new();
        let name = format!("k{}-c{}", self.index, self.next_consumer);
        let mut consumer = Consumer::new(net(&self.wl), self.wl.addrs(), client_config(name));
        let mut consumer_id = self.consumer_id();
        for _ in 0..ROUNDS_PER_JOIN_MAX {
            if stopping(&self.wl) {
                return false;
            }
            let owned: TopicIdPartitions = match topic_id {
                Some(id) if !held.is_empty() => {
                    BTreeMap::from([(id, held.keys().copied().collect())])
                }
                _ => TopicIdPartitions::new(),
            };
            let call = Call::GroupHeartbeat {
                member: self.index,
                member_id: cm.member_id().to_string(),
                generation: cm.member_epoch(),
            };
            let op = invoke(&self.wl, self.process, call);
            match cm.heartbeat(&owned).await {
                Ok(hb) => match hb.assignment {
                    None => complete(&self.wl, op, self.process, Outcome::GroupOk),
                    Some(a) => {
                        let (id, parts) = topic_partitions(&a);
                        if id.is_some() {
                            topic_id = id;
                        }
                        let outcome = Outcome::Joined {
                            member_id: hb.member_id.clone(),
                            generation: hb.member_epoch,
                            partitions: parts.clone(),
                        };
                        complete(&self.wl, op, self.process, outcome);
                        // Revoked: commit where we are, then let go.
                        let revoked: Vec<(i32, i64)> = held
                            .iter()
                            .filter(|(p, _)| !parts.contains(p))
                            .map(|(p, o)| (*p, *o))
                            .collect();
                        if !revoked.is_empty() {
                            self.trace(&format!("revokes {revoked:?}"));
                            if !self.commit848(cm, revoked.clone()).await {
                                return false;
                            }
                            for (p, _) in &revoked {
                                held.remove(p);
                            }
                        }
                        // Newly assigned: start from the committed offsets.
                        let added: Vec<i32> = parts
                            .iter()
                            .filter(|p| !held.contains_key(p))
                            .copied()
                            .collect();
                        if !added.is_empty() {
                            let call = Call::GroupFetch {
                                member: self.index,
                                partitions: added.clone(),
                            };
                            let op = invoke(&self.wl, self.process, call);
                            match cm.fetch_offsets(TOPIC, &added).await {
                                Ok(offsets) => {
                                    complete(
                                        &self.wl,
                                        op,
                                        self.process,
                                        Outcome::Offsets(offsets.clone()),
                                    );
                                    for p in &added {
                                        let o = offsets
                                            .iter()
                                            .find(|(q, _)| q == p)
                                            .map_or(0, |(_, o)| (*o).max(0));
                                        held.insert(*p, o);
                                    }
                                    // Positions may start below earlier ones: a new poller.
                                    consumer_id = self.consumer_id();
                                }
                                Err(e) => {
                                    complete(&self.wl, op, self.process, outcome_of(&e));
                                    // Not taken up: the member drops its assignment and
                                    // starts afresh rather than report partitions it skipped.
                                    self.drop848(cm).await;
                                    return false;
                                }
                            }
                        }
                    }
                },
                Err(e) => {
                    complete(&self.wl, op, self.process, outcome_of(&e));
                    match e.error_code() {
                        Some(code::UNKNOWN_MEMBER_ID) | Some(code::FENCED_MEMBER_EPOCH) => {
                            // Fenced: everything it held is gone; join again as a new member.
                            return false;
                        }
                        _ => {
                            let pause = self.seed.range_u64(100, 500);
                            tokio::time::sleep(Duration::from_millis(pause)).await;
                            continue;
                        }
                    }
                }
            }
            self.poll_all(&mut consumer, consumer_id, &mut held).await;
            let offsets: Vec<(i32, i64)> = held.iter().map(|(p, o)| (*p, *o)).collect();
            if !self.commit848(cm, offsets).await {
                return false;
            }
            let o = &self.wl.opts;
            let (leave_p, crash_p, pause_p) =
                (o.member_leave_p, o.member_crash_p, o.member_pause_p);
            if self.seed.chance(leave_p) {
                self.trace("leaves");
                self.leave848(cm).await;
                return true;
            }
            if self.seed.chance(crash_p) {
                self.trace("crashes");
                let down = self.seed.range_u64(100, 3_000);
                tokio::time::sleep(Duration::from_millis(down)).await;
                return false;
            }
            if self.seed.chance(pause_p) {
                let pause = self.seed.range_u64(SESSION_TIMEOUT_MS as u64, 9_000);
                self.trace(&format!("pauses {pause} ms"));
                tokio::time::sleep(Duration::from_millis(pause)).await;
                continue;
            }
            let pause = self.seed.range_u64(150, 600);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        false
    }

    /// Gives up the whole assignment by leaving (the next incarnation joins afresh).
    async fn drop848(&mut self, cm: &mut ConsumerMember<Net>) {
        self.trace("drops its assignment");
        self.leave848(cm).await;
    }
}

fn outcome_of_read(e: &ClientError) -> Outcome {
    if e.is_definite() {
        Outcome::Fail(e.to_string())
    } else {
        Outcome::Info(e.to_string())
    }
}

fn value_string(r: &samsa_net::records::Record) -> String {
    match &r.value {
        Some(v) => String::from_utf8_lossy(v).into_owned(),
        None => "<null>".to_string(),
    }
}
