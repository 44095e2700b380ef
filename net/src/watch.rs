//! A single-value broadcast channel ("watch") whose wake-up order is a function of the program
//! alone: waiters are woken in the order they started waiting.
//!
//! Why not `tokio::sync::watch`: it spreads its waiters over eight `Notify`s and picks one per
//! waiter with tokio's thread-local random generator, whose seed mixes in a process-wide counter.
//! Under the simulator that made the order in which, say, the group coordinator's queued writes
//! resumed depend on how many runtimes the process had built before, so the same seed ran
//! differently the second time in one process (`single_groups 123217695684208`). This one has one
//! `Notify` and no randomness. The API is the subset of tokio's the broker uses, with one change:
//! `send` always stores the value (tokio's drops it when no receiver is left).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::Notify;

/// The sender is gone and the receiver has seen its last value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("watch channel closed")
    }
}

impl std::error::Error for Closed {}

#[derive(Debug)]
struct Shared<T> {
    value: RwLock<T>,
    /// Bumped after every store, under no lock: a receiver compares it with what it has seen.
    version: AtomicU64,
    /// Set when the sender is dropped.
    closed: AtomicBool,
    notify: Notify,
}

impl<T> Shared<T> {
    fn read(&self) -> RwLockReadGuard<'_, T> {
        self.value.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, T> {
        self.value.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writing end. Dropping it closes the channel.
#[derive(Debug)]
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// A reading end; remembers the last version it has seen. Clones start where the original is.
#[derive(Debug)]
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
    seen: u64,
}

/// A channel holding `init`; the receiver has seen it.
pub fn channel<T>(init: T) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        value: RwLock::new(init),
        version: AtomicU64::new(0),
        closed: AtomicBool::new(false),
        notify: Notify::new(),
    });
    let receiver = Receiver {
        shared: shared.clone(),
        seen: 0,
    };
    (Sender { shared }, receiver)
}

impl<T> Sender<T> {
    /// Stores `value` and wakes every waiting receiver.
    pub fn send(&self, value: T) {
        self.send_modify(|v| *v = value);
    }

    /// Changes the value in place and wakes every waiting receiver.
    pub fn send_modify(&self, modify: impl FnOnce(&mut T)) {
        self.send_if_modified(|v| {
            modify(v);
            true
        });
    }

    /// Changes the value in place; wakes the receivers only if `modify` returns true.
    pub fn send_if_modified(&self, modify: impl FnOnce(&mut T) -> bool) -> bool {
        let modified = {
            let mut value = self.shared.write();
            let modified = modify(&mut value);
            if modified {
                self.shared.version.fetch_add(1, Ordering::SeqCst);
            }
            modified
        };
        if modified {
            self.shared.notify.notify_waiters();
        }
        modified
    }

    /// The current value (holds a read lock: do not keep it across an await).
    pub fn borrow(&self) -> RwLockReadGuard<'_, T> {
        self.shared.read()
    }

    /// A new receiver that has seen the current value.
    pub fn subscribe(&self) -> Receiver<T> {
        Receiver {
            shared: self.shared.clone(),
            seen: self.shared.version.load(Ordering::SeqCst),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.notify.notify_waiters();
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        Receiver {
            shared: self.shared.clone(),
            seen: self.seen,
        }
    }
}

impl<T> Receiver<T> {
    /// The current value, without marking it seen (do not keep it across an await).
    pub fn borrow(&self) -> RwLockReadGuard<'_, T> {
        self.shared.read()
    }

    /// Waits for a value this receiver has not seen, and marks it seen. `Err` once the sender is
    /// gone and nothing unseen is left.
    pub async fn changed(&mut self) -> Result<(), Closed> {
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            // Registered before the checks, so a store between a check and the await still
            // wakes us.
            notified.as_mut().enable();
            let version = self.shared.version.load(Ordering::SeqCst);
            if version != self.seen {
                self.seen = version;
                return Ok(());
            }
            if self.shared.closed.load(Ordering::SeqCst) {
                return Err(Closed);
            }
            notified.await;
        }
    }

    /// Waits until `ready` holds for the current value (checked at once, then after every store)
    /// and marks it seen. `Err` if the sender is gone and the last value does not satisfy it.
    pub async fn wait_for(&mut self, mut ready: impl FnMut(&T) -> bool) -> Result<(), Closed> {
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let version = self.shared.version.load(Ordering::SeqCst);
            let ok = ready(&self.shared.read());
            self.seen = version;
            if ok {
                return Ok(());
            }
            if self.shared.closed.load(Ordering::SeqCst) {
                return Err(Closed);
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn changed_sees_each_new_value_once() {
        block_on(async {
            let (tx, mut rx) = channel(0u32);
            tx.send(1);
            rx.changed().await.expect("open");
            assert_eq!(*rx.borrow(), 1);
            tx.send_modify(|v| *v += 1);
            rx.changed().await.expect("open");
            assert_eq!(*rx.borrow(), 2);
            assert!(!tx.send_if_modified(|_| false));
            drop(tx);
            // The close is the only news left.
            assert_eq!(rx.changed().await, Err(Closed));
        });
    }

    #[test]
    fn wait_for_checks_the_current_value_first_and_fails_once_closed() {
        block_on(async {
            let (tx, mut rx) = channel(5u32);
            rx.wait_for(|v| *v == 5).await.expect("already true");
            let mut late = tx.subscribe();
            let waiter = tokio::spawn(async move { late.wait_for(|v| *v >= 7).await });
            tokio::task::yield_now().await;
            tx.send(6);
            tokio::task::yield_now().await;
            assert!(!waiter.is_finished(), "6 does not satisfy >= 7");
            tx.send(7);
            assert_eq!(waiter.await.expect("join"), Ok(()));
            drop(tx);
            assert_eq!(rx.wait_for(|v| *v == 99).await, Err(Closed));
            // A value that holds is still reported after the close.
            assert_eq!(rx.wait_for(|v| *v == 7).await, Ok(()));
        });
    }

    #[test]
    fn send_without_receivers_is_kept() {
        let (tx, rx) = channel(false);
        drop(rx);
        tx.send(true);
        assert!(*tx.borrow());
        assert!(*tx.subscribe().borrow());
    }

    /// The property the module exists for: waiters resume in the order they began waiting,
    /// every time.
    #[test]
    fn waiters_wake_in_the_order_they_waited() {
        let run = || {
            block_on(async {
                let (tx, _rx) = channel(0u64);
                let order = Arc::new(Mutex::new(Vec::new()));
                let mut tasks = Vec::new();
                for i in 0..16u64 {
                    let mut rx = tx.subscribe();
                    let order = order.clone();
                    tasks.push(tokio::spawn(async move {
                        rx.wait_for(|v| *v >= 1).await.expect("open");
                        order.lock().expect("order").push(i);
                    }));
                    tokio::task::yield_now().await;
                }
                tx.send(1);
                for t in tasks {
                    t.await.expect("join");
                }
                let order = order.lock().expect("order").clone();
                order
            })
        };
        let first = run();
        assert_eq!(first, (0..16).collect::<Vec<_>>());
        for _ in 0..4 {
            assert_eq!(run(), first);
        }
    }
}
