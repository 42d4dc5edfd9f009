//! Liveness: whether the controller's loop is still turning, for `/healthz`.
//!
//! The controller is one future, which `main` drives: kube-runtime polls the watches and every
//! reconcile inside it (reconciles are not spawned as tasks of their own). [`Heartbeat::keep`]
//! wraps that future and beats each time a poll of it returns, and wakes it every
//! [`BEAT_EVERY`] so that an idle controller — no events, or a replica that does not lead —
//! still beats. A poll that never returns (a reconcile stuck on a lock or in a loop) stops the
//! beat; after [`STALE_AFTER`] without one the controller is not alive and `/healthz` answers
//! 503, so the kubelet restarts the process. An `await` that never finishes inside one
//! reconcile does not stop the beat: the other reconciles go on.
//!
//! Not covered: the fleet tick, which runs in a task of its own inside the controller (a beat
//! from it would need a hook in the controller); and the process as a whole, which ends when the
//! controller's future ends. No IO: reads the monotonic clock.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

/// How often a waiting controller is woken to beat.
pub const BEAT_EVERY: Duration = Duration::from_secs(1);

/// The controller is not alive once it has not beaten for this long. Generous: a poll is a
/// burst of in-memory work, and a busy two-core machine may keep the task waiting for its turn
/// besides; the kubelet's liveness probe then needs its own failures in a row (three, 10 s
/// apart, in the chart) before it restarts the process.
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// The time of the controller's latest beat, shared between the controller's future and
/// the `/healthz` handler.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    origin: Instant,
    /// Milliseconds from `origin` to the latest beat.
    latest: Arc<AtomicU64>,
}

impl Default for Heartbeat {
    /// A heartbeat that has just beaten.
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            latest: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Heartbeat {
    /// Records a beat now.
    pub fn beat(&self) {
        let millis = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.latest.fetch_max(millis, Ordering::Relaxed);
    }

    /// Time since the latest beat.
    pub fn age(&self) -> Duration {
        self.origin
            .elapsed()
            .saturating_sub(Duration::from_millis(self.latest.load(Ordering::Relaxed)))
    }

    /// Whether the latest beat is recent enough ([`STALE_AFTER`]).
    pub fn alive(&self) -> bool {
        self.age() <= STALE_AFTER
    }

    /// `future`, beating this heartbeat after every poll and woken every [`BEAT_EVERY`].
    pub fn keep<F: Future>(&self, future: F) -> Beating<F> {
        self.keep_every(future, BEAT_EVERY)
    }

    fn keep_every<F: Future>(&self, future: F, every: Duration) -> Beating<F> {
        Beating {
            inner: Box::pin(future),
            every,
            ticker: None,
            heartbeat: self.clone(),
        }
    }
}

/// A future that beats a [`Heartbeat`] each time a poll of it returns (see
/// [`Heartbeat::keep`]). Its output is the wrapped future's.
pub struct Beating<F> {
    inner: Pin<Box<F>>,
    every: Duration,
    /// Made at the first poll, inside the runtime.
    ticker: Option<tokio::time::Interval>,
    heartbeat: Heartbeat,
}

impl<F> std::fmt::Debug for Beating<F> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Beating")
            .field("every", &self.every)
            .field("heartbeat", &self.heartbeat)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Beating<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let every = this.every;
        let ticker = this.ticker.get_or_insert_with(|| {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker
        });
        // Drained until it is pending, so that the next tick wakes this task. The wrapped
        // future is then polled without having been woken itself, which futures allow.
        while ticker.poll_tick(context).is_ready() {}
        let output = this.inner.as_mut().poll(context);
        this.heartbeat.beat();
        output
    }
}

#[cfg(test)]
impl Heartbeat {
    /// A heartbeat whose latest beat was `age` ago.
    pub(crate) fn beaten_ago(age: Duration) -> Self {
        Self {
            origin: Instant::now()
                .checked_sub(age)
                .expect("the monotonic clock has run longer than the test's age"),
            latest: Arc::new(AtomicU64::new(0)),
        }
    }
}

#[cfg(test)]
mod tests;
