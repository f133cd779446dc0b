//! Drain and kill, as every task sees them: a phase any task reads with one
//! atomic load, and a `Notify` for the tasks that sleep until it changes.
//!
//! A connection task polls its kill signal on every wake-up (every read a
//! tunnel relays). tokio's `Notified`, and so `watch::Receiver::changed`,
//! takes the `Notify`'s waiter lock on each such poll, and that lock is one
//! for the whole process: a lock shared by every connection on the hot
//! path. Here a waiting task takes it twice in its life (to register, and
//! to leave the list) and otherwise costs one load and a pointer compare.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

// The phases, in order; 0 is running.
const DRAINING: u8 = 1;
const KILLED: u8 = 2;

/// sluice's lifecycle: running, then draining (stop accepting, let open
/// connections finish), then killed (cut whatever is still open).
#[derive(Debug, Default)]
pub struct Shutdown {
    phase: AtomicU8,
    notify: Notify,
}

impl Shutdown {
    /// Stop taking new connections and new requests on kept-alive ones.
    pub fn drain(&self) {
        self.advance(DRAINING);
    }

    /// Cut every connection still open (implies draining).
    pub fn kill(&self) {
        self.advance(KILLED);
    }

    fn advance(&self, to: u8) {
        // The phase is set before waking anyone: a woken task reads it.
        self.phase.fetch_max(to, Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    fn phase(&self) -> u8 {
        self.phase.load(Ordering::Acquire)
    }

    fn is_draining(&self) -> bool {
        self.phase() >= DRAINING
    }

    /// Resolves once draining has begun.
    pub async fn draining(&self) {
        self.until(DRAINING).await;
    }

    /// Resolves once sluice is killed.
    pub async fn killed(&self) {
        self.until(KILLED).await;
    }

    /// Runs `task` until it ends or sluice is killed, whichever is first.
    ///
    /// Every change of phase wakes a guarded task, so inside `task`
    /// [`Shutdown::drain_begun`] needs no registration of its own.
    ///
    /// `task` is pinned by the caller, in place: taken by value, a
    /// connection's whole future would be stored twice in its task.
    pub async fn guard<F: Future<Output = ()>>(&self, task: Pin<&mut F>) {
        // Biased, the kill watch first: it is armed at the current phase
        // before `task` reads the phase, so no change falls between them.
        tokio::select! {
            biased;
            () = self.killed() => {}
            () = task => {}
        }
    }

    /// Resolves once draining has begun, for a future polled inside
    /// [`Shutdown::guard`]: it registers nothing (one load per poll), and
    /// relies on the guard to wake its task when the phase changes.
    /// Elsewhere use [`Shutdown::draining`].
    pub fn drain_begun(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|_| {
            if self.is_draining() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    async fn until(&self, phase: u8) {
        loop {
            // Made before the phase is read: a change after this point
            // completes it, so none is missed.
            let notified = pin!(self.notify.notified());
            let seen = self.phase();
            if seen >= phase {
                return;
            }
            Quiet {
                notified,
                shutdown: self,
                seen,
                waker: None,
            }
            .await;
        }
    }
}

/// Waits for the phase to move from `seen`. Registers its waker through
/// `notified` on the first poll (and again only if polled by another
/// task); every later poll is a load and a compare.
struct Quiet<'a, 'n> {
    notified: Pin<&'n mut Notified<'a>>,
    shutdown: &'a Shutdown,
    seen: u8,
    waker: Option<Waker>,
}

impl Future for Quiet<'_, '_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        // A change is made before its notification: if the registered
        // waker was woken for it, the phase already shows it.
        if this.shutdown.phase() != this.seen {
            return Poll::Ready(());
        }
        if this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        if this.notified.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        this.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll_with<F: Future>(f: Pin<&mut F>, count: &Arc<Count>) -> Poll<F::Output> {
        let waker = Waker::from(count.clone());
        f.poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_waiting_task_is_woken_by_each_phase_and_sees_it() {
        let s = Shutdown::default();
        let count = Arc::new(Count::default());
        let mut draining = pin!(s.draining());
        let mut idle = pin!(std::future::pending());
        let mut killed = pin!(s.guard(idle.as_mut()));
        assert!(poll_with(draining.as_mut(), &count).is_pending());
        assert!(poll_with(killed.as_mut(), &count).is_pending());
        // Polled again with the same waker: still waiting, nothing woken.
        assert!(poll_with(draining.as_mut(), &count).is_pending());
        assert!(poll_with(killed.as_mut(), &count).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 0);

        s.drain();
        assert_eq!(count.0.load(Ordering::SeqCst), 2, "both waiters woken");
        assert!(poll_with(draining.as_mut(), &count).is_ready());
        assert!(s.is_draining());
        assert!(
            poll_with(killed.as_mut(), &count).is_pending(),
            "drain is not kill"
        );

        s.kill();
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            3,
            "the guard re-armed for kill"
        );
        assert!(poll_with(killed.as_mut(), &count).is_ready());
    }

    #[test]
    fn a_task_that_starts_waiting_late_resolves_at_once() {
        let s = Shutdown::default();
        s.kill();
        let count = Arc::new(Count::default());
        assert!(poll_with(pin!(s.draining()), &count).is_ready());
        let idle = pin!(std::future::pending());
        assert!(poll_with(pin!(s.guard(idle)), &count).is_ready());
        assert!(poll_with(pin!(s.drain_begun()), &count).is_ready());
    }

    #[test]
    fn a_waiter_polled_by_another_task_moves_its_registration() {
        let s = Shutdown::default();
        let (first, second) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let mut draining = pin!(s.draining());
        assert!(poll_with(draining.as_mut(), &first).is_pending());
        assert!(poll_with(draining.as_mut(), &second).is_pending());
        s.drain();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn guarded_tasks_stop_between_requests_on_drain_and_all_stop_on_kill() {
        let s = Arc::new(Shutdown::default());
        let (armed, mut all_armed) = tokio::sync::mpsc::unbounded_channel();
        // "Idle" tasks wait like a kept-alive connection between requests;
        // "busy" ones like a tunnel, which drain does not end.
        let spawn = |busy: bool| {
            let (s, armed) = (s.clone(), armed.clone());
            tokio::spawn(async move {
                let task = pin!(async {
                    // The guard's watch is armed by now (it is polled first).
                    armed.send(()).unwrap();
                    if busy {
                        std::future::pending::<()>().await;
                    }
                    s.drain_begun().await;
                });
                s.guard(task).await;
            })
        };
        let idle: Vec<_> = (0..50).map(|_| spawn(false)).collect();
        let busy: Vec<_> = (0..50).map(|_| spawn(true)).collect();
        for _ in 0..100 {
            all_armed.recv().await.unwrap();
        }
        s.drain();
        for t in idle {
            t.await.unwrap();
        }
        assert!(busy.iter().all(|t| !t.is_finished()));
        s.kill();
        for t in busy {
            t.await.unwrap();
        }
    }
}
