//! `GroupCommit`: the sans-IO core that decides when a partition is fsynced and which produce
//! requests may be answered. One sync serves every append that finished before it started;
//! appends that arrive while a sync is in flight are covered by the next one.
//! Never awaits, never touches the disk or a clock: the node executes each `Effect::Sync` and
//! feeds the outcome back as `Event::SyncDone` / `Event::SyncFailed`.

use std::collections::VecDeque;

/// Identifies one request waiting for durability (chosen by the caller, unique per partition).
pub type WaiterId = u64;

/// Most requests that may wait on one partition at once. Connections × in-flight requests bound
/// this in practice; past it a request is answered with `Refused` instead of queued.
pub const WAITERS_MAX: usize = 65_536;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Bytes up to `end_offset` (exclusive) were written (not yet durable).
    Appended { end_offset: i64 },
    /// `waiter` wants an answer once everything below `end_offset` is durable.
    Wait { waiter: WaiterId, end_offset: i64 },
    /// The sync in flight completed: everything below `end_offset` is durable.
    SyncDone { end_offset: i64 },
    /// The sync failed: the unsynced bytes may be lost (fsyncgate); never acknowledge again.
    SyncFailed,
    /// A timer tick (policy `interval`): sync if anything is dirty.
    Tick,
    /// The log was cut back to `end_offset` (follower truncation): nothing at or past it is
    /// appended or durable any more, and a waiter for bytes past it is refused (the bytes it
    /// waited for are gone; what is written there next is other data).
    Truncated { end_offset: i64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Durable: answer with success.
    Durable,
    /// The partition failed a sync: answer KAFKA_STORAGE_ERROR.
    Failed,
    /// Too many waiters: answer with a retriable error.
    Refused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Sync the partition; everything appended below `up_to` is covered.
    Sync { up_to: i64 },
    /// Answer `waiter`.
    Reply { waiter: WaiterId, outcome: Outcome },
}

#[derive(Debug)]
pub struct GroupCommit {
    /// Sync as soon as anything is dirty (policy `fsync`); otherwise only on `Tick`.
    eager: bool,
    appended_end: i64,
    durable_end: i64,
    sync_in_flight: Option<i64>,
    waiting: VecDeque<(WaiterId, i64)>,
    failed: bool,
}

impl GroupCommit {
    /// `durable_end`: the log end offset recovered at open (everything on disk after recovery
    /// counts as durable: recovery synced it or it was synced before the crash).
    pub fn new(eager: bool, durable_end: i64) -> GroupCommit {
        GroupCommit {
            eager,
            appended_end: durable_end,
            durable_end,
            sync_in_flight: None,
            waiting: VecDeque::new(),
            failed: false,
        }
    }

    /// Everything below this offset is durable (the high watermark under policy `fsync`).
    pub fn durable_end(&self) -> i64 {
        self.durable_end
    }

    pub fn appended_end(&self) -> i64 {
        self.appended_end
    }

    pub fn is_failed(&self) -> bool {
        self.failed
    }

    pub fn set_eager(&mut self, eager: bool) {
        self.eager = eager;
    }

    pub fn step(&mut self, event: Event, effects: &mut Vec<Effect>) {
        match event {
            Event::Appended { end_offset } => {
                self.appended_end = self.appended_end.max(end_offset);
                if self.eager {
                    self.maybe_sync(effects);
                }
            }
            Event::Wait { waiter, end_offset } => self.on_wait(waiter, end_offset, effects),
            Event::SyncDone { end_offset } => self.on_sync_done(end_offset, effects),
            Event::SyncFailed => self.on_sync_failed(effects),
            Event::Tick => self.maybe_sync(effects),
            Event::Truncated { end_offset } => self.on_truncated(end_offset, effects),
        }
        self.assert_invariants();
    }

    fn on_wait(&mut self, waiter: WaiterId, end_offset: i64, effects: &mut Vec<Effect>) {
        let outcome = if self.failed {
            Some(Outcome::Failed)
        } else if end_offset <= self.durable_end {
            Some(Outcome::Durable)
        } else if self.waiting.len() >= WAITERS_MAX {
            Some(Outcome::Refused)
        } else {
            None
        };
        match outcome {
            Some(outcome) => effects.push(Effect::Reply { waiter, outcome }),
            None => {
                // A waiter never waits for bytes that were not appended.
                self.appended_end = self.appended_end.max(end_offset);
                self.waiting.push_back((waiter, end_offset));
                if self.eager {
                    self.maybe_sync(effects);
                }
            }
        }
    }

    fn on_sync_done(&mut self, end_offset: i64, effects: &mut Vec<Effect>) {
        // The sync may have covered more than it was started for (appends that reached the log
        // before the plan was taken), never less than what was durable before.
        assert!(
            self.sync_in_flight.is_some(),
            "sync completion without its start"
        );
        self.sync_in_flight = None;
        if self.failed {
            return;
        }
        self.durable_end = self.durable_end.max(end_offset);
        self.appended_end = self.appended_end.max(self.durable_end);
        let durable_end = self.durable_end;
        // Waiters are not necessarily sorted (appends of different requests interleave), so
        // keep the ones still waiting in their order.
        let mut still = VecDeque::with_capacity(self.waiting.len());
        for (waiter, end) in self.waiting.drain(..) {
            if end <= durable_end {
                effects.push(Effect::Reply {
                    waiter,
                    outcome: Outcome::Durable,
                });
            } else {
                still.push_back((waiter, end));
            }
        }
        self.waiting = still;
        if self.eager || !self.waiting.is_empty() {
            self.maybe_sync(effects);
        }
    }

    fn on_truncated(&mut self, end_offset: i64, effects: &mut Vec<Effect>) {
        let end_offset = end_offset.max(0);
        self.durable_end = self.durable_end.min(end_offset);
        self.appended_end = self.appended_end.min(end_offset);
        // A sync in flight still completes; the log reports what it really made durable (its
        // plan is void after a truncation), so only the target is capped here.
        self.sync_in_flight = self.sync_in_flight.map(|up_to| up_to.min(end_offset));
        let mut still = VecDeque::with_capacity(self.waiting.len());
        for (waiter, end) in self.waiting.drain(..) {
            if end > end_offset {
                effects.push(Effect::Reply {
                    waiter,
                    outcome: Outcome::Refused,
                });
            } else {
                still.push_back((waiter, end));
            }
        }
        self.waiting = still;
    }

    fn on_sync_failed(&mut self, effects: &mut Vec<Effect>) {
        self.sync_in_flight = None;
        self.failed = true;
        for (waiter, _) in self.waiting.drain(..) {
            effects.push(Effect::Reply {
                waiter,
                outcome: Outcome::Failed,
            });
        }
    }

    fn maybe_sync(&mut self, effects: &mut Vec<Effect>) {
        if self.failed || self.sync_in_flight.is_some() || self.appended_end <= self.durable_end {
            return;
        }
        self.sync_in_flight = Some(self.appended_end);
        effects.push(Effect::Sync {
            up_to: self.appended_end,
        });
    }

    fn assert_invariants(&self) {
        assert!(
            self.durable_end <= self.appended_end,
            "durable beyond appended"
        );
        if let Some(up_to) = self.sync_in_flight {
            // Equal to `durable_end` only after a truncation capped it.
            assert!(
                up_to >= self.durable_end && up_to <= self.appended_end,
                "bad sync target"
            );
        }
        assert!(self.waiting.len() <= WAITERS_MAX);
        debug_assert!(self.waiting.iter().all(|(_, end)| *end > self.durable_end));
        assert!(
            !self.failed || self.waiting.is_empty(),
            "failed partition keeps waiters"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(gc: &mut GroupCommit, e: Event) -> Vec<Effect> {
        let mut out = Vec::new();
        gc.step(e, &mut out);
        out
    }

    #[test]
    fn produce_is_answered_only_after_its_sync() {
        let mut gc = GroupCommit::new(true, 0);
        assert_eq!(
            step(&mut gc, Event::Appended { end_offset: 3 }),
            [Effect::Sync { up_to: 3 }]
        );
        assert_eq!(
            step(
                &mut gc,
                Event::Wait {
                    waiter: 1,
                    end_offset: 3
                }
            ),
            []
        );
        assert_eq!(
            step(&mut gc, Event::SyncDone { end_offset: 3 }),
            [Effect::Reply {
                waiter: 1,
                outcome: Outcome::Durable
            }]
        );
        assert_eq!(gc.durable_end(), 3);
    }

    #[test]
    fn appends_during_a_sync_share_the_next_sync() {
        let mut gc = GroupCommit::new(true, 10);
        assert_eq!(
            step(&mut gc, Event::Appended { end_offset: 11 }),
            [Effect::Sync { up_to: 11 }]
        );
        assert_eq!(
            step(
                &mut gc,
                Event::Wait {
                    waiter: 1,
                    end_offset: 11
                }
            ),
            []
        );
        // Three more requests arrive while the first sync is in flight: no new sync yet.
        for (w, end) in [(2, 12), (3, 13), (4, 14)] {
            assert_eq!(step(&mut gc, Event::Appended { end_offset: end }), []);
            assert_eq!(
                step(
                    &mut gc,
                    Event::Wait {
                        waiter: w,
                        end_offset: end
                    }
                ),
                []
            );
        }
        assert_eq!(
            step(&mut gc, Event::SyncDone { end_offset: 11 }),
            [
                Effect::Reply {
                    waiter: 1,
                    outcome: Outcome::Durable
                },
                Effect::Sync { up_to: 14 }
            ]
        );
        assert_eq!(
            step(&mut gc, Event::SyncDone { end_offset: 14 }),
            [
                Effect::Reply {
                    waiter: 2,
                    outcome: Outcome::Durable
                },
                Effect::Reply {
                    waiter: 3,
                    outcome: Outcome::Durable
                },
                Effect::Reply {
                    waiter: 4,
                    outcome: Outcome::Durable
                },
            ]
        );
        assert_eq!(gc.durable_end(), 14);
    }

    #[test]
    fn failed_sync_fails_waiters_and_everything_after() {
        let mut gc = GroupCommit::new(true, 0);
        step(&mut gc, Event::Appended { end_offset: 1 });
        step(
            &mut gc,
            Event::Wait {
                waiter: 7,
                end_offset: 1,
            },
        );
        assert_eq!(
            step(&mut gc, Event::SyncFailed),
            [Effect::Reply {
                waiter: 7,
                outcome: Outcome::Failed
            }]
        );
        assert_eq!(step(&mut gc, Event::Appended { end_offset: 2 }), []);
        assert_eq!(
            step(
                &mut gc,
                Event::Wait {
                    waiter: 8,
                    end_offset: 2
                }
            ),
            [Effect::Reply {
                waiter: 8,
                outcome: Outcome::Failed
            }]
        );
        assert_eq!(gc.durable_end(), 0);
        assert!(gc.is_failed());
    }

    #[test]
    fn lazy_policy_syncs_only_on_tick() {
        let mut gc = GroupCommit::new(false, 0);
        assert_eq!(step(&mut gc, Event::Appended { end_offset: 5 }), []);
        assert_eq!(step(&mut gc, Event::Tick), [Effect::Sync { up_to: 5 }]);
        assert_eq!(step(&mut gc, Event::Tick), []);
        assert_eq!(step(&mut gc, Event::SyncDone { end_offset: 5 }), []);
        assert_eq!(gc.durable_end(), 5);
        assert_eq!(step(&mut gc, Event::Tick), []);
    }

    #[test]
    fn a_sync_that_covered_more_answers_later_waiters_too() {
        let mut gc = GroupCommit::new(true, 0);
        assert_eq!(
            step(&mut gc, Event::Appended { end_offset: 2 }),
            [Effect::Sync { up_to: 2 }]
        );
        assert_eq!(
            step(
                &mut gc,
                Event::Wait {
                    waiter: 1,
                    end_offset: 2
                }
            ),
            []
        );
        assert_eq!(
            step(
                &mut gc,
                Event::Wait {
                    waiter: 2,
                    end_offset: 5
                }
            ),
            []
        );
        // The flush plan was taken after offsets 2..5 reached the log.
        assert_eq!(
            step(&mut gc, Event::SyncDone { end_offset: 5 }),
            [
                Effect::Reply {
                    waiter: 1,
                    outcome: Outcome::Durable
                },
                Effect::Reply {
                    waiter: 2,
                    outcome: Outcome::Durable
                },
            ]
        );
        assert_eq!(gc.durable_end(), 5);
        assert_eq!(step(&mut gc, Event::Appended { end_offset: 4 }), []);
    }

    #[test]
    fn already_durable_wait_is_answered_at_once() {
        let mut gc = GroupCommit::new(true, 9);
        assert_eq!(
            step(
                &mut gc,
                Event::Wait {
                    waiter: 1,
                    end_offset: 9
                }
            ),
            [Effect::Reply {
                waiter: 1,
                outcome: Outcome::Durable
            }]
        );
    }

    /// A follower that truncates below what it had synced must sync the bytes written in the
    /// truncated range again before anyone counts them durable (the bug this event fixes: the
    /// core kept its old durable end and answered such a wait at once).
    #[test]
    fn truncation_lowers_durable_and_refuses_waiters_past_the_cut() {
        let mut gc = GroupCommit::new(true, 0);
        assert_eq!(
            step(&mut gc, Event::Appended { end_offset: 10 }),
            [Effect::Sync { up_to: 10 }]
        );
        assert_eq!(step(&mut gc, Event::SyncDone { end_offset: 10 }), []);
        assert_eq!(gc.durable_end(), 10);
        // More appended and waited on, then the log is cut back to 6.
        assert_eq!(
            step(&mut gc, Event::Appended { end_offset: 12 }),
            [Effect::Sync { up_to: 12 }]
        );
        let wait = Event::Wait {
            waiter: 7,
            end_offset: 12,
        };
        assert_eq!(step(&mut gc, wait), []);
        assert_eq!(
            step(&mut gc, Event::Truncated { end_offset: 6 }),
            [Effect::Reply {
                waiter: 7,
                outcome: Outcome::Refused
            }]
        );
        assert_eq!((gc.durable_end(), gc.appended_end()), (6, 6));
        // The sync in flight completes: the log says what it made durable (its plan was void).
        assert_eq!(step(&mut gc, Event::SyncDone { end_offset: 6 }), []);
        // Re-replicated bytes at 6..9: a wait for them needs a new sync.
        assert_eq!(
            step(&mut gc, Event::Appended { end_offset: 9 }),
            [Effect::Sync { up_to: 9 }]
        );
        let wait = Event::Wait {
            waiter: 8,
            end_offset: 9,
        };
        assert_eq!(step(&mut gc, wait), []);
        assert_eq!(
            step(&mut gc, Event::SyncDone { end_offset: 9 }),
            [Effect::Reply {
                waiter: 8,
                outcome: Outcome::Durable
            }]
        );
    }
}
