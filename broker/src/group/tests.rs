//! Core tests for the group coordinator: each feeds events and checks the effects that come
//! out (join, two-step join, sync, heartbeat, leave, session expiry, static members, commits,
//! replay). No I/O, no clock: time is the `now` each test passes.

use bytes::{BufMut, Bytes, BytesMut};
use samsa_net::error::code;

use super::*;

const SESSION_MS: i32 = 10_000;
const DELAY_MS: u64 = 300;

struct Harness {
    core: Coordinator,
    next: RequestId,
    now: u64,
    /// Every record the core asked to persist, in order (the offsets log).
    log: Vec<(Bytes, Option<Bytes>)>,
}

fn harness() -> Harness {
    Harness {
        core: Coordinator::new(
            GroupConfig {
                initial_rebalance_delay_ms: DELAY_MS,
                ..GroupConfig::default()
            },
            0xabc,
        ),
        next: 1,
        now: 1_000,
        log: Vec::new(),
    }
}

/// A consumer-protocol assignment of `partitions` of topic `t`.
fn assignment(partitions: &[i32]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(1);
    b.put_i16(1);
    b.put_slice(b"t");
    b.put_i32(partitions.len() as i32);
    for p in partitions {
        b.put_i32(*p);
    }
    b.put_i32(-1);
    b.freeze()
}

impl Harness {
    fn step(&mut self, e: Event) -> Vec<Effect> {
        let mut effects = Vec::new();
        self.core.step(self.now, e, &mut effects);
        for e in &effects {
            if let Effect::Persist { records, .. } = e {
                self.log.extend(records.iter().cloned());
            }
        }
        effects
    }

    /// A new coordinator rebuilt from this one's log, as after a restart at `now`.
    fn restart(&self) -> Harness {
        let mut h = harness();
        h.now = self.now;
        h.next = self.next + 1_000;
        h.core = Coordinator::new(GroupConfig::default(), 0xdef);
        for (k, v) in &self.log {
            if let Some(stored) = schema::decode(k, v.as_deref()) {
                h.core.replay(stored);
            }
        }
        h.core.finish_replay(h.now);
        h.log = self.log.clone();
        h
    }

    /// The offsets-log position of the next commit (the log's length after it).
    fn next_position(&self) -> i64 {
        self.log.len() as i64
    }

    fn request(&mut self) -> RequestId {
        self.next += 1;
        self.next
    }

    fn advance(&mut self, ms: u64) -> Vec<Effect> {
        self.now += ms;
        self.step(Event::Tick)
    }

    fn join_event(&mut self, member: &str, instance: Option<&str>) -> (RequestId, Event) {
        let request = self.request();
        let e = Event::Join(Join {
            request,
            group: "g".into(),
            member_id: member.into(),
            instance_id: instance.map(str::to_string),
            client_id: "c".into(),
            client_host: "h".into(),
            session_timeout_ms: SESSION_MS,
            rebalance_timeout_ms: 20_000,
            protocol_type: "consumer".into(),
            protocols: vec![
                ("range".into(), Bytes::from_static(b"r")),
                ("roundrobin".into(), Bytes::from_static(b"rr")),
            ],
            require_known_member_id: true,
        });
        (request, e)
    }

    /// Joins through MEMBER_ID_REQUIRED; returns the member id and the parked join's request.
    fn join_new(&mut self) -> (String, RequestId) {
        let (r, e) = self.join_event("", None);
        let effects = self.step(e);
        let JoinReply {
            error, member_id, ..
        } = join_reply(&effects, r);
        assert_eq!(error, code::MEMBER_ID_REQUIRED);
        let (r2, e) = self.join_event(&member_id, None);
        let effects = self.step(e);
        assert!(
            find(&effects, r2).is_none(),
            "second join waits for the rebalance"
        );
        (member_id, r2)
    }

    fn sync(
        &mut self,
        member: &str,
        generation: i32,
        a: Vec<(String, Bytes)>,
    ) -> (RequestId, Vec<Effect>) {
        let request = self.request();
        let effects = self.step(Event::Sync {
            request,
            group: "g".into(),
            generation,
            member_id: member.into(),
            instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignments: a,
        });
        (request, effects)
    }

    fn heartbeat(&mut self, member: &str, generation: i32) -> i16 {
        let request = self.request();
        let effects = self.step(Event::Heartbeat {
            request,
            group: "g".into(),
            generation,
            member_id: member.into(),
            instance_id: None,
        });
        match find(&effects, request) {
            Some(Reply::Code(c)) => c,
            other => panic!("heartbeat answered {other:?}"),
        }
    }

    fn commit(&mut self, member: &str, generation: i32, offset: i64) -> Vec<Effect> {
        let request = self.request();
        self.step(Event::CommitOffsets {
            request,
            group: "g".into(),
            generation,
            member_id: member.into(),
            instance_id: None,
            entries: vec![CommitEntry {
                topic: "t".into(),
                partition: 0,
                value: OffsetValue {
                    offset,
                    leader_epoch: 0,
                    metadata: "m".into(),
                    commit_timestamp_ms: 5,
                },
            }],
        })
    }

    fn state(&self) -> State {
        self.core.group("g").expect("group").state
    }

    /// Two members through join and sync to Stable at generation 1: (leader, follower).
    fn stable_pair(&mut self) -> (String, String) {
        let (a, ra) = self.join_new();
        let (b, rb) = self.join_new();
        let effects = self.advance(DELAY_MS);
        let ja = join_reply(&effects, ra);
        let jb = join_reply(&effects, rb);
        assert_eq!((ja.error, jb.error), (code::NONE, code::NONE));
        assert_eq!((ja.generation, jb.generation), (1, 1));
        let (leader, follower) = if ja.leader == a { (a, b) } else { (b, a) };
        let (rf, effects) = self.sync(&follower, 1, vec![]);
        assert!(
            find(&effects, rf).is_none(),
            "follower waits for the leader"
        );
        let (rl, effects) = self.sync(
            &leader,
            1,
            vec![
                (leader.clone(), assignment(&[0, 1, 2])),
                (follower.clone(), assignment(&[3, 4, 5])),
            ],
        );
        let sl = sync_reply(&effects, rl);
        let sf = sync_reply(&effects, rf);
        assert_eq!((sl.error, sf.error), (code::NONE, code::NONE));
        // Assignments leave only once the generation is durable, so a power loss can never
        // hand the same generation out twice (simulator: single_groups 252136786814423).
        assert!(answered_after_persist(&effects, rl) && answered_after_persist(&effects, rf));
        assert_eq!(sl.assignment, assignment(&[0, 1, 2]));
        assert_eq!(sf.assignment, assignment(&[3, 4, 5]));
        assert_eq!(self.state(), State::Stable);
        (leader, follower)
    }
}

/// The reply to `request`, sent now or once a persist is durable (the shell's job).
fn find(effects: &[Effect], request: RequestId) -> Option<Reply> {
    effects.iter().find_map(|e| match e {
        Effect::Reply { request: r, reply } if *r == request => Some(reply.clone()),
        Effect::Persist { then, .. } => then
            .iter()
            .find(|(r, _)| *r == request)
            .map(|(_, reply)| reply.clone()),
        _ => None,
    })
}

/// True when the reply to `request` waits for a group record to be durable.
fn answered_after_persist(effects: &[Effect], request: RequestId) -> bool {
    effects.iter().any(|e| match e {
        Effect::Persist { then, records, .. } => {
            then.iter().any(|(r, _)| *r == request) && !records.is_empty()
        }
        _ => false,
    })
}

fn join_reply(effects: &[Effect], request: RequestId) -> JoinReply {
    match find(effects, request) {
        Some(Reply::Join(j)) => j,
        other => panic!("join {request} answered {other:?} in {effects:?}"),
    }
}

fn sync_reply(effects: &[Effect], request: RequestId) -> SyncReply {
    match find(effects, request) {
        Some(Reply::Sync(s)) => s,
        other => panic!("sync {request} answered {other:?}"),
    }
}

#[test]
fn first_join_without_member_id_gets_member_id_required_and_a_deterministic_id() {
    let mut h = harness();
    let (r, e) = h.join_event("", None);
    let effects = h.step(e);
    let j = join_reply(&effects, r);
    assert_eq!(j.error, code::MEMBER_ID_REQUIRED);
    assert_eq!(j.member_id, "c-abc-1");
    let mut again = harness();
    let (r, e) = again.join_event("", None);
    assert_eq!(
        join_reply(&again.step(e), r).member_id,
        "c-abc-1",
        "same seed, same id"
    );
}

#[test]
fn join_with_an_id_never_handed_out_is_unknown_member() {
    let mut h = harness();
    h.join_new();
    let (r, e) = h.join_event("made-up", None);
    assert_eq!(join_reply(&h.step(e), r).error, code::UNKNOWN_MEMBER_ID);
}

#[test]
fn initial_delay_holds_the_first_rebalance_then_one_generation_and_leader() {
    let mut h = harness();
    let (a, ra) = h.join_new();
    assert!(
        h.advance(DELAY_MS - 1).is_empty(),
        "still inside the initial delay"
    );
    let effects = h.advance(1);
    let j = join_reply(&effects, ra);
    assert_eq!(j.error, code::NONE);
    assert_eq!(j.generation, 1);
    assert_eq!(j.leader, a);
    assert_eq!(j.protocol_name.as_deref(), Some("range"));
    assert_eq!(j.members.len(), 1, "the leader sees every member");
    assert_eq!(h.state(), State::CompletingRebalance);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Persist { request: None, .. })),
        "the new generation is persisted"
    );
}

#[test]
fn two_members_split_through_sync_and_heartbeats_succeed() {
    let mut h = harness();
    let (leader, follower) = h.stable_pair();
    assert_eq!(h.heartbeat(&leader, 1), code::NONE);
    assert_eq!(h.heartbeat(&follower, 1), code::NONE);
    assert_eq!(h.heartbeat(&follower, 0), code::ILLEGAL_GENERATION);
    assert_eq!(h.heartbeat("nobody", 1), code::UNKNOWN_MEMBER_ID);
}

#[test]
fn leader_assignment_giving_one_partition_twice_is_refused() {
    let mut h = harness();
    let (a, ra) = h.join_new();
    let (b, _) = h.join_new();
    let effects = h.advance(DELAY_MS);
    let leader = join_reply(&effects, ra).leader;
    let other = if leader == a { b } else { a };
    let (r, effects) = h.sync(
        &leader,
        1,
        vec![
            (leader.clone(), assignment(&[0, 1])),
            (other, assignment(&[1, 2])),
        ],
    );
    assert_eq!(sync_reply(&effects, r).error, code::INVALID_REQUEST);
    assert_eq!(h.state(), State::CompletingRebalance);
}

#[test]
fn a_new_member_makes_heartbeats_say_rebalance_and_bumps_the_generation() {
    let mut h = harness();
    let (leader, follower) = h.stable_pair();
    let (_c, rc) = h.join_new();
    assert_eq!(h.state(), State::PreparingRebalance);
    assert_eq!(h.heartbeat(&follower, 1), code::REBALANCE_IN_PROGRESS);
    // Commits of the current generation are still accepted while preparing.
    assert!(matches!(
        h.commit(&follower, 1, 7)[..],
        [Effect::Persist { .. }]
    ));
    let (rl, e) = h.join_event(&leader, None);
    h.step(e);
    let (rf, e) = h.join_event(&follower, None);
    let effects = h.step(e);
    for r in [rl, rf, rc] {
        let j = join_reply(&effects, r);
        assert_eq!((j.error, j.generation), (code::NONE, 2));
    }
    assert_eq!(h.state(), State::CompletingRebalance);
    assert!(matches!(
        h.commit(&follower, 2, 8)[..],
        [Effect::Reply {
            reply: Reply::Offsets(code::REBALANCE_IN_PROGRESS),
            ..
        }]
    ));
}

#[test]
fn leave_triggers_a_rebalance_of_the_rest() {
    let mut h = harness();
    let (leader, follower) = h.stable_pair();
    let request = h.request();
    let effects = h.step(Event::Leave {
        request,
        group: "g".into(),
        members: vec![(leader.clone(), None), ("ghost".into(), None)],
    });
    match find(&effects, request) {
        Some(Reply::Leave(_, results)) => {
            assert_eq!(results[0].2, code::NONE);
            assert_eq!(results[1].2, code::UNKNOWN_MEMBER_ID);
        }
        other => panic!("leave answered {other:?}"),
    }
    assert_eq!(h.state(), State::PreparingRebalance);
    let (rf, e) = h.join_event(&follower, None);
    let j = join_reply(&h.step(e), rf);
    assert_eq!((j.error, j.generation), (code::NONE, 2));
    assert_eq!(j.leader, follower, "the remaining member leads");
    // The departed member's commits are refused.
    assert!(matches!(
        h.commit(&leader, 2, 1)[..],
        [Effect::Reply { reply: Reply::Offsets(c), .. }] if c != code::NONE
    ));
}

#[test]
fn a_silent_member_expires_after_its_session_timeout() {
    let mut h = harness();
    let (leader, follower) = h.stable_pair();
    for _ in 0..4 {
        h.now += 3_000;
        assert_eq!(h.heartbeat(&leader, 1), code::NONE);
        h.step(Event::Tick);
    }
    let members = &h.core.group("g").expect("g").members;
    assert!(
        !members.contains_key(&follower),
        "the silent member expired"
    );
    assert_eq!(h.state(), State::PreparingRebalance);
    assert_eq!(h.heartbeat(&follower, 1), code::UNKNOWN_MEMBER_ID);
    let (r, e) = h.join_event(&leader, None);
    let j = join_reply(&h.step(e), r);
    assert_eq!((j.error, j.generation, j.members.len()), (code::NONE, 2, 1));
    // The stale generation's commit is refused: the planted-bug check of the simulator.
    assert!(matches!(
        h.commit(&leader, 1, 9)[..],
        [Effect::Reply {
            reply: Reply::Offsets(code::REBALANCE_IN_PROGRESS | code::ILLEGAL_GENERATION),
            ..
        }]
    ));
}

#[test]
fn static_member_rejoining_fences_its_old_incarnation() {
    let mut h = harness();
    let (r, e) = h.join_event("", Some("inst-1"));
    assert!(
        find(&h.step(e), r).is_none(),
        "a static member joins without the extra step"
    );
    let effects = h.advance(DELAY_MS);
    let old = join_reply(&effects, r);
    assert_eq!(old.error, code::NONE);
    let (rs, effects) = h.sync(
        &old.member_id,
        1,
        vec![(old.member_id.clone(), assignment(&[0]))],
    );
    assert_eq!(sync_reply(&effects, rs).error, code::NONE);
    // A restarted process with the same instance id.
    let (r2, e) = h.join_event("", Some("inst-1"));
    // The only member is back: the rebalance completes at once.
    let effects = h.step(e);
    let new = join_reply(&effects, r2);
    assert_eq!(new.error, code::NONE);
    assert_ne!(new.member_id, old.member_id);
    let request = h.request();
    let effects = h.step(Event::Heartbeat {
        request,
        group: "g".into(),
        generation: new.generation,
        member_id: old.member_id.clone(),
        instance_id: Some("inst-1".into()),
    });
    assert_eq!(
        find(&effects, request),
        Some(Reply::Code(code::FENCED_INSTANCE_ID))
    );
}

#[test]
fn static_member_rejoining_a_stable_group_keeps_its_assignment_without_a_rebalance() {
    for static_leads in [false, true] {
        let mut h = harness();
        let (d, rd, rs);
        if static_leads {
            let (r, e) = h.join_event("", Some("inst"));
            h.step(e);
            rs = r;
            (d, rd) = h.join_new();
        } else {
            (d, rd) = h.join_new();
            let (r, e) = h.join_event("", Some("inst"));
            h.step(e);
            rs = r;
        }
        let effects = h.advance(DELAY_MS);
        let js = join_reply(&effects, rs);
        let jd = join_reply(&effects, rd);
        assert_eq!((js.generation, jd.generation), (1, 1));
        let s = js.member_id.clone();
        assert_eq!(js.leader == s, static_leads);
        let (leader, follower) = if static_leads { (&s, &d) } else { (&d, &s) };
        let (leader, follower) = (leader.clone(), follower.clone());
        let (rf, _) = h.sync(&follower, 1, vec![]);
        let a = vec![
            (s.clone(), assignment(&[0, 1])),
            (d.clone(), assignment(&[2])),
        ];
        let (rl, effects) = h.sync(&leader, 1, a);
        assert_eq!(sync_reply(&effects, rl).error, code::NONE);
        assert_eq!(sync_reply(&effects, rf).error, code::NONE);
        assert_eq!(h.state(), State::Stable);

        // The static member's process restarts and joins with no member id.
        let (r, e) = h.join_event("", Some("inst"));
        let effects = h.step(e);
        let j = join_reply(&effects, r);
        assert_eq!(j.error, code::NONE, "answered at once");
        assert_eq!(j.generation, 1, "no new generation");
        assert_ne!(j.member_id, s);
        assert_eq!(j.skip_assignment, static_leads);
        assert_eq!(j.members.is_empty(), !static_leads);
        assert_eq!(h.state(), State::Stable);
        assert_eq!(
            h.heartbeat(&d, 1),
            code::NONE,
            "the other member does not rebalance"
        );
        let (r, effects) = h.sync(&j.member_id, 1, vec![]);
        assert_eq!(sync_reply(&effects, r).assignment, assignment(&[0, 1]));
        // The old incarnation is fenced.
        let request = h.request();
        let effects = h.step(Event::Heartbeat {
            request,
            group: "g".into(),
            generation: 1,
            member_id: s.clone(),
            instance_id: Some("inst".into()),
        });
        assert_eq!(
            find(&effects, request),
            Some(Reply::Code(code::FENCED_INSTANCE_ID))
        );
    }
}

/// A ConsumerProtocolSubscription v0 naming `topics`.
fn subscription(topics: &[&str]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(topics.len() as i32);
    for t in topics {
        b.put_i16(t.len() as i16);
        b.put_slice(t.as_bytes());
    }
    b.put_i32(-1);
    b.freeze()
}

#[test]
fn offset_delete_refuses_only_topics_the_members_subscribe_to() {
    let mut h = harness();
    let (r, e) = h.join_event("", Some("i"));
    let Event::Join(mut j) = e else {
        panic!("join_event makes a join")
    };
    j.protocols = vec![("range".into(), subscription(&["t"]))];
    h.step(Event::Join(j));
    let effects = h.advance(DELAY_MS);
    let m = join_reply(&effects, r).member_id;
    let (rs, effects) = h.sync(&m, 1, vec![(m.clone(), assignment(&[0]))]);
    assert_eq!(sync_reply(&effects, rs).error, code::NONE);
    for topic in ["t", "gone"] {
        let request = h.request();
        let effects = h.step(Event::CommitOffsets {
            request,
            group: "g".into(),
            generation: 1,
            member_id: m.clone(),
            instance_id: Some("i".into()),
            entries: vec![CommitEntry {
                topic: topic.into(),
                partition: 0,
                value: OffsetValue {
                    offset: 3,
                    leader_epoch: 0,
                    metadata: String::new(),
                    commit_timestamp_ms: 0,
                },
            }],
        });
        let Some(Effect::Persist { group, entries, .. }) = effects.first().cloned() else {
            panic!("commit refused: {effects:?}")
        };
        let position = h.next_position();
        h.step(Event::OffsetsAppended {
            group,
            entries,
            position,
        });
    }
    let request = h.request();
    let effects = h.step(Event::DeleteOffsets {
        request,
        group: "g".into(),
        partitions: vec![("t".into(), 0), ("gone".into(), 0)],
    });
    match &effects[..] {
        [Effect::Persist { records, then, .. }] => {
            assert_eq!(records, &vec![(schema::offset_key("g", "gone", 0), None)]);
            assert_eq!(
                then,
                &vec![(
                    request,
                    Reply::OffsetsDeleted(vec![("t".into(), 0, code::GROUP_SUBSCRIBED_TO_TOPIC)])
                )]
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let g = h.core.group("g").expect("g");
    assert!(g.offsets.contains_key(&("t".to_string(), 0)));
    assert!(!g.offsets.contains_key(&("gone".to_string(), 0)));
    // Metadata that is not a subscription: every topic counts as subscribed.
    assert_eq!(consumer_subscription_topics(b"r"), None);
    // Cut anywhere before the end of the topic list (12 bytes), it is not a subscription.
    for n in 0..12 {
        assert_eq!(
            consumer_subscription_topics(&subscription(&["a", "b"])[..n]),
            None
        );
    }
}

#[test]
fn simple_commit_on_an_empty_group_is_persisted_then_applied() {
    let mut h = harness();
    let effects = h.commit("", -1, 42);
    let Some(Effect::Persist {
        request: Some(_),
        group,
        entries,
        records,
        ..
    }) = effects.first().cloned()
    else {
        panic!("expected a persist, got {effects:?}");
    };
    assert_eq!(records.len(), 1);
    assert!(
        h.core.group("g").is_none(),
        "nothing applied before the append"
    );
    let position = h.next_position();
    h.step(Event::OffsetsAppended {
        group,
        entries,
        position,
    });
    let g = h.core.group("g").expect("group created by the commit");
    assert_eq!(g.offsets[&("t".to_string(), 0)].offset, 42);
    assert_eq!(g.offsets[&("t".to_string(), 0)].metadata, "m");
    assert_eq!(g.state, State::Empty);
    // A generation-checked commit against a group that does not exist is refused.
    let mut h = harness();
    assert!(matches!(
        h.commit("m", 3, 1)[..],
        [Effect::Reply {
            reply: Reply::Offsets(code::ILLEGAL_GENERATION),
            ..
        }]
    ));
}

#[test]
fn delete_refuses_a_group_with_members_and_tombstones_an_empty_one() {
    let mut h = harness();
    h.stable_pair();
    let request = h.request();
    let effects = h.step(Event::DeleteGroup {
        request,
        group: "g".into(),
    });
    assert_eq!(
        find(&effects, request),
        Some(Reply::Code(code::NON_EMPTY_GROUP))
    );
    let mut h = harness();
    let effects = h.commit("", -1, 1);
    if let Some(Effect::Persist { group, entries, .. }) = effects.first().cloned() {
        let position = h.next_position();
        h.step(Event::OffsetsAppended {
            group,
            entries,
            position,
        });
    }
    let request = h.request();
    let effects = h.step(Event::DeleteGroup {
        request,
        group: "g".into(),
    });
    match &effects[..] {
        [Effect::Persist { records, .. }] => {
            assert_eq!(
                records.len(),
                2,
                "one offset tombstone and the group tombstone"
            );
            assert!(records.iter().all(|(_, v)| v.is_none()));
        }
        other => panic!("expected tombstones, got {other:?}"),
    }
    assert!(h.core.group("g").is_none());
}

#[test]
fn replay_restores_offsets_and_never_lowers_the_generation() {
    let mut h = harness();
    let value = |generation| GroupValue {
        protocol_type: "consumer".into(),
        generation,
        protocol: Some("range".into()),
        leader: None,
        state_timestamp_ms: 0,
    };
    h.core.replay(Stored::Group {
        group: "g".into(),
        value: Some(value(5)),
    });
    h.core.replay(Stored::Group {
        group: "g".into(),
        value: Some(value(3)),
    });
    let offset = |o| OffsetValue {
        offset: o,
        leader_epoch: 2,
        metadata: "x".into(),
        commit_timestamp_ms: 1,
    };
    for (p, o) in [(0, 10), (1, 11), (0, 12)] {
        h.core.replay(Stored::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: p,
            value: Some(offset(o)),
        });
    }
    h.core.replay(Stored::Offset {
        group: "g".into(),
        topic: "t".into(),
        partition: 1,
        value: None,
    });
    let g = h.core.group("g").expect("g");
    assert_eq!(g.generation, 5);
    assert_eq!(g.offsets.len(), 1);
    assert_eq!(g.offsets[&("t".to_string(), 0)], offset(12));
    // A new member after the restart starts the next generation.
    let (_, r) = h.join_new();
    let j = join_reply(&h.advance(DELAY_MS), r);
    assert_eq!(j.generation, 6);
}

#[test]
fn consumer_assignment_decoder_survives_every_truncation() {
    let a = assignment(&[1, 2, 3]);
    assert_eq!(
        consumer_assignment_partitions(&a),
        Some(vec![("t".into(), 1), ("t".into(), 2), ("t".into(), 3)])
    );
    for n in 1..a.len() - 4 {
        // Cut inside the topic list: must be rejected, never panic.
        let _ = consumer_assignment_partitions(&a[..n]);
    }
    assert_eq!(
        consumer_assignment_partitions(&[0, 0, 0x7f, 0xff, 0xff, 0xff]),
        None
    );
}

#[test]
fn a_leader_that_never_syncs_is_removed_and_the_waiting_follower_rebalances() {
    let mut h = harness();
    let (a, ra) = h.join_new();
    let (b, _) = h.join_new();
    let effects = h.advance(DELAY_MS);
    let leader = join_reply(&effects, ra).leader;
    let follower = if leader == a { b } else { a };
    let (rf, effects) = h.sync(&follower, 1, vec![]);
    assert!(find(&effects, rf).is_none());
    // The follower waits in SyncGroup past its session timeout: parked, so not expired. The
    // leader heartbeats but never syncs: it is removed at the rebalance timeout (20 s).
    for _ in 0..6 {
        assert!(
            find(&h.advance(3_000), rf).is_none(),
            "still waiting for the leader"
        );
        assert_eq!(h.heartbeat(&leader, 1), code::NONE);
    }
    let effects = h.advance(2_000);
    assert_eq!(sync_reply(&effects, rf).error, code::REBALANCE_IN_PROGRESS);
    let g = h.core.group("g").expect("g");
    assert_eq!(g.state, State::PreparingRebalance);
    assert!(!g.members.contains_key(&leader) && g.members.contains_key(&follower));
}

// ---- KIP-848 consumer groups. ----

mod kip848 {
    use std::collections::BTreeMap;

    use uuid::Uuid;

    use super::*;
    use crate::group::consumer::{Heartbeat, HeartbeatReply, Partitions, TopicInfo};

    const TOPIC_ID: Uuid = Uuid::from_u128(7);

    fn topics() -> BTreeMap<String, TopicInfo> {
        BTreeMap::from([(
            "t".to_string(),
            TopicInfo {
                id: TOPIC_ID,
                partitions: 6,
            },
        )])
    }

    /// A ConsumerGroupHeartbeat of group "cg" (subscribing to "t" with the uniform assignor
    /// when `subscribe`).
    fn consumer_hb(
        request: RequestId,
        member: &str,
        epoch: i32,
        owned: Option<&[i32]>,
        subscribe: bool,
        connection: u64,
    ) -> Heartbeat {
        Heartbeat {
            request,
            group: "cg".into(),
            member_id: member.into(),
            member_epoch: epoch,
            instance_id: None,
            rack_id: None,
            rebalance_timeout_ms: 30_000,
            subscribed: subscribe.then(|| vec!["t".to_string()]),
            assignor: subscribe.then(|| "uniform".to_string()),
            owned: owned.map(|ps| vec![(TOPIC_ID, ps.to_vec())]),
            client_id: "c".into(),
            client_host: "h".into(),
            topics: topics(),
            connection,
        }
    }

    fn hb(
        h: &mut Harness,
        member: &str,
        epoch: i32,
        owned: Option<&[i32]>,
        subscribe: bool,
    ) -> HeartbeatReply {
        let request = h.request();
        let effects = h.step(Event::ConsumerHeartbeat(consumer_hb(
            request, member, epoch, owned, subscribe, 1,
        )));
        match find(&effects, request) {
            Some(Reply::ConsumerHeartbeat(r)) => r,
            other => panic!("heartbeat answered {other:?}"),
        }
    }

    fn parts(a: &Option<Partitions>) -> Vec<i32> {
        a.as_ref()
            .and_then(|a| a.get(&TOPIC_ID))
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_partition_is_revoked_from_its_owner_before_the_newcomer_gets_it() {
        let mut h = harness();
        let a = hb(&mut h, "a", 0, None, true);
        assert_eq!(a.error, code::NONE);
        assert!(a.member_epoch > 0);
        assert_eq!(parts(&a.assignment), [0, 1, 2, 3, 4, 5]);
        let b = hb(&mut h, "b", 0, None, true);
        assert!(
            b.member_epoch > a.member_epoch,
            "a new member moves the group epoch"
        );
        assert!(parts(&b.assignment).is_empty(), "a still owns everything");
        // a learns it must give up half, keeping its epoch until it has done so.
        let a2 = hb(
            &mut h,
            "a",
            a.member_epoch,
            Some(&[0, 1, 2, 3, 4, 5]),
            false,
        );
        assert_eq!(a2.member_epoch, a.member_epoch);
        assert_eq!(parts(&a2.assignment), [0, 2, 4]);
        let b2 = hb(&mut h, "b", b.member_epoch, Some(&[]), false);
        assert!(
            parts(&b2.assignment).is_empty(),
            "not before a released them"
        );
        let a3 = hb(&mut h, "a", a.member_epoch, Some(&[0, 2, 4]), false);
        assert_eq!(
            a3.member_epoch, b.member_epoch,
            "a reaches the group's epoch"
        );
        let b3 = hb(&mut h, "b", b.member_epoch, Some(&[]), false);
        assert_eq!(parts(&b3.assignment), [1, 3, 5]);
        let g = h.core.consumer_group("cg").expect("cg");
        assert_eq!(g.state(), "Stable");
    }

    /// A heartbeat on connection `connection` (the other helpers use connection 1).
    fn hb_on(
        h: &mut Harness,
        member: &str,
        epoch: i32,
        owned: &[i32],
        connection: u64,
    ) -> HeartbeatReply {
        let request = h.request();
        let effects = h.step(Event::ConsumerHeartbeat(consumer_hb(
            request,
            member,
            epoch,
            Some(owned),
            false,
            connection,
        )));
        match find(&effects, request) {
            Some(Reply::ConsumerHeartbeat(r)) => r,
            other => panic!("heartbeat answered {other:?}"),
        }
    }

    /// single_groups 9533775993149: a heartbeat the client had given up on (it timed out, the
    /// client moved to a new connection) arrived seconds later listing nothing owned, and
    /// released a partition its member still held.
    #[test]
    fn a_late_heartbeat_on_a_replaced_connection_releases_nothing() {
        let mut h = harness();
        let a = hb(&mut h, "a", 0, None, true);
        let b = hb(&mut h, "b", 0, None, true);
        // a is told to give up half, on its new connection 2.
        let a2 = hb_on(&mut h, "a", a.member_epoch, &[0, 1, 2, 3, 4, 5], 2);
        assert_eq!(parts(&a2.assignment), [0, 2, 4]);
        // The stale copy from connection 1 claims a owns nothing: refused, believed in nothing.
        let stale = hb_on(&mut h, "a", a.member_epoch, &[], 1);
        assert_eq!(stale.error, code::COORDINATOR_NOT_AVAILABLE);
        let b2 = hb(&mut h, "b", b.member_epoch, Some(&[]), false);
        assert!(parts(&b2.assignment).is_empty(), "a still holds 1, 3 and 5");
        // The real release on the current connection hands them over.
        hb_on(&mut h, "a", a.member_epoch, &[0, 2, 4], 2);
        let b3 = hb(&mut h, "b", b.member_epoch, Some(&[]), false);
        assert_eq!(parts(&b3.assignment), [1, 3, 5]);
    }

    #[test]
    fn stale_and_future_epochs_are_fenced_and_commits_need_the_current_epoch() {
        let mut h = harness();
        let epoch = hb(&mut h, "a", 0, None, true).member_epoch;
        let fenced = hb(&mut h, "a", epoch + 1, None, false);
        assert_eq!(fenced.error, code::FENCED_MEMBER_EPOCH);
        assert_eq!(
            hb(&mut h, "zz", 1, None, false).error,
            code::UNKNOWN_MEMBER_ID
        );
        let commit = |h: &mut Harness, generation| {
            let request = h.request();
            let effects = h.step(Event::CommitOffsets {
                request,
                group: "cg".into(),
                generation,
                member_id: "a".into(),
                instance_id: None,
                entries: vec![],
            });
            (request, effects)
        };
        let (request, effects) = commit(&mut h, epoch - 1);
        assert_eq!(
            find(&effects, request),
            Some(Reply::Offsets(code::STALE_MEMBER_EPOCH))
        );
        let (_, effects) = commit(&mut h, epoch);
        assert!(matches!(effects[..], [Effect::Persist { .. }]));
    }

    #[test]
    fn an_expired_member_frees_its_partitions_for_the_rest() {
        let mut h = harness();
        let ea = hb(&mut h, "a", 0, None, true).member_epoch;
        let eb = hb(&mut h, "b", 0, None, true).member_epoch;
        hb(&mut h, "a", ea, Some(&[0, 1, 2, 3, 4, 5]), false);
        hb(&mut h, "a", ea, Some(&[0, 2, 4]), false);
        let b = hb(&mut h, "b", eb, Some(&[]), false);
        assert_eq!(parts(&b.assignment), [1, 3, 5]);
        // a keeps heartbeating as a client would (its epoch and what it owns); b is silent.
        let (mut epoch, mut owned) = (eb, vec![0, 2, 4]);
        for _ in 0..10 {
            h.now += 5_000;
            let r = hb(&mut h, "a", epoch, Some(&owned), false);
            assert_eq!(r.error, code::NONE);
            epoch = r.member_epoch;
            if r.assignment.is_some() {
                owned = parts(&r.assignment);
            }
            h.step(Event::Tick);
        }
        let g = h.core.consumer_group("cg").expect("cg");
        assert!(!g.members.contains_key("b"), "b's session expired");
        assert_eq!(owned, [0, 1, 2, 3, 4, 5], "a took over b's partitions");
        let a = hb(&mut h, "a", epoch, Some(&owned), false);
        assert_eq!(a.error, code::NONE);
        assert!(a.member_epoch > eb);
        // A classic join on the id of a live consumer group is refused.
        let (r, e) = h.join_event("", None);
        let Event::Join(mut j) = e else {
            panic!("join_event makes a join")
        };
        j.group = "cg".into();
        assert_eq!(
            join_reply(&h.step(Event::Join(j)), r).error,
            code::INCONSISTENT_GROUP_PROTOCOL
        );
    }

    /// Like `hb`, also saying whether the reply waited for records to be durable.
    fn hb_persisted(
        h: &mut Harness,
        member: &str,
        epoch: i32,
        owned: Option<&[i32]>,
    ) -> (HeartbeatReply, bool) {
        let request = h.request();
        let effects = h.step(Event::ConsumerHeartbeat(consumer_hb(
            request, member, epoch, owned, false, 1,
        )));
        let waited = answered_after_persist(&effects, request);
        match find(&effects, request) {
            Some(Reply::ConsumerHeartbeat(r)) => (r, waited),
            other => panic!("heartbeat answered {other:?}"),
        }
    }

    #[test]
    fn replies_that_move_epochs_or_assignments_wait_for_the_records() {
        let mut h = harness();
        let request = h.request();
        let effects = h.step(Event::ConsumerHeartbeat(consumer_hb(
            request, "a", 0, None, true, 1,
        )));
        assert!(answered_after_persist(&effects, request), "join waits");
        let Some(Reply::ConsumerHeartbeat(a)) = find(&effects, request) else {
            panic!("no reply")
        };
        // A plain heartbeat that changes nothing is answered at once, writing nothing.
        let before = h.log.len();
        let (r, waited) = hb_persisted(&mut h, "a", a.member_epoch, Some(&[0, 1, 2, 3, 4, 5]));
        assert_eq!(r.error, code::NONE);
        assert!(!waited);
        assert_eq!(h.log.len(), before, "nothing changed, nothing written");
        // A second member moves the group epoch and a's assignment: a's reply waits.
        hb(&mut h, "b", 0, None, true);
        let (r, waited) = hb_persisted(&mut h, "a", a.member_epoch, Some(&[0, 1, 2, 3, 4, 5]));
        assert_eq!(parts(&r.assignment), [0, 2, 4]);
        assert!(waited, "a revocation is answered once it is durable");
    }

    #[test]
    fn a_restart_keeps_epochs_members_and_assignments() {
        let mut h = harness();
        let a = hb(&mut h, "a", 0, None, true);
        let b = hb(&mut h, "b", 0, None, true);
        hb(
            &mut h,
            "a",
            a.member_epoch,
            Some(&[0, 1, 2, 3, 4, 5]),
            false,
        );
        let a2 = hb(&mut h, "a", a.member_epoch, Some(&[0, 2, 4]), false);
        let b2 = hb(&mut h, "b", b.member_epoch, Some(&[]), false);
        assert_eq!(parts(&b2.assignment), [1, 3, 5]);
        let group_epoch = h.core.consumer_group("cg").expect("cg").epoch;

        let mut r = h.restart();
        let g = r.core.consumer_group("cg").expect("restored");
        assert_eq!(g.epoch, group_epoch);
        assert_eq!(g.state(), "Stable");
        assert_eq!(g.members["a"].member_epoch, a2.member_epoch);
        assert_eq!(g.members["b"].member_epoch, b2.member_epoch);
        // Both continue with their epochs; the full assignment is sent again once.
        let (ra, _) = hb_persisted(&mut r, "a", a2.member_epoch, Some(&[0, 2, 4]));
        assert_eq!(ra.error, code::NONE);
        assert_eq!(ra.member_epoch, a2.member_epoch);
        assert_eq!(parts(&ra.assignment), [0, 2, 4]);
        let (rb, waited) = hb_persisted(&mut r, "b", b2.member_epoch, Some(&[1, 3, 5]));
        assert_eq!(rb.error, code::NONE);
        assert_eq!(parts(&rb.assignment), [1, 3, 5]);
        assert!(!waited, "nothing changed by the restart");
        // A member silent after the restart expires one session later and b takes over.
        r.now += GroupConfig::default().consumer_session_timeout_ms / 2;
        hb_persisted(&mut r, "b", b2.member_epoch, Some(&[1, 3, 5]));
        r.now += GroupConfig::default().consumer_session_timeout_ms / 2 + 1;
        r.step(Event::Tick);
        let g = r.core.consumer_group("cg").expect("cg");
        assert!(!g.members.contains_key("a"));
        assert!(g.epoch > group_epoch);
        // ... and a further restart still knows a is gone (its records were tombstoned).
        let r2 = r.restart();
        let g = r2.core.consumer_group("cg").expect("cg");
        assert_eq!(g.members.keys().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn a_revocation_in_flight_survives_a_restart() {
        let mut h = harness();
        let a = hb(&mut h, "a", 0, None, true);
        hb(
            &mut h,
            "a",
            a.member_epoch,
            Some(&[0, 1, 2, 3, 4, 5]),
            false,
        );
        let b = hb(&mut h, "b", 0, None, true);
        let a2 = hb(
            &mut h,
            "a",
            a.member_epoch,
            Some(&[0, 1, 2, 3, 4, 5]),
            false,
        );
        assert_eq!(parts(&a2.assignment), [0, 2, 4], "a is revoking 1, 3, 5");
        let mut r = h.restart();
        // b must not get a's partitions before a released them, restart or not.
        let (rb, _) = hb_persisted(&mut r, "b", b.member_epoch, Some(&[]));
        assert!(parts(&rb.assignment).is_empty());
        hb_persisted(&mut r, "a", a.member_epoch, Some(&[0, 2, 4]));
        let (rb, _) = hb_persisted(&mut r, "b", b.member_epoch, Some(&[]));
        assert_eq!(parts(&rb.assignment), [1, 3, 5]);
    }
}

/// The `OffsetsAppended` a commit's `Persist` leads to once committed at log `position`.
fn committed_at(effects: &[Effect], position: i64) -> Event {
    let Some(Effect::Persist { group, entries, .. }) = effects.first().cloned() else {
        panic!("commit refused: {effects:?}")
    };
    Event::OffsetsAppended {
        group,
        entries,
        position,
    }
}

#[test]
fn commits_committed_out_of_log_order_keep_the_later_offset() {
    let mut h = harness();
    let (a, _) = h.stable_pair();
    let first = h.commit(&a, 1, 10);
    let second = h.commit(&a, 1, 20);
    // Cluster mode: the second batch may reach the high watermark's waiter first.
    h.step(committed_at(&second, 2));
    h.step(committed_at(&first, 1));
    let g = h.core.group("g").expect("group");
    assert_eq!(g.offsets[&("t".to_string(), 0)].offset, 20);
    // Nothing is applied before it is committed: a commit whose batch never commits is
    // never shown.
    let _lost = h.commit(&a, 1, 30);
    let g = h.core.group("g").expect("group");
    assert_eq!(g.offsets[&("t".to_string(), 0)].offset, 20);
}

#[test]
fn unloading_a_partition_drops_its_groups_and_answers_their_waiters_not_coordinator() {
    let mut h = harness();
    let (a, _) = h.stable_pair();
    let done = h.commit(&a, 1, 7);
    h.step(committed_at(&done, 1));
    // A new member parks a JoinGroup that only the rebalance answers.
    let (_, rejoin) = h.join_new();
    let mut effects = Vec::new();
    let dropped = h.core.unload(|g| g == "g", &mut effects);
    assert_eq!(dropped, 1);
    assert!(h.core.group("g").is_none(), "the group left the core");
    assert_eq!(
        find(&effects, rejoin),
        Some(Reply::Code(code::NOT_COORDINATOR))
    );
    // Another group's partition stays.
    let mut effects = Vec::new();
    assert_eq!(h.core.unload(|g| g == "other", &mut effects), 0);
    assert!(effects.is_empty());
    // Loading it again from the log brings the committed offset back.
    let h2 = h.restart();
    let g = h2.core.group("g").expect("group replayed");
    assert_eq!(g.offsets[&("t".to_string(), 0)].offset, 7);
}
