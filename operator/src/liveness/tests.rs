//! The heartbeat: beats after every poll, wakes an idle future, and goes stale. No IO.

use std::sync::atomic::AtomicUsize;

use super::*;

#[test]
fn a_new_heartbeat_is_alive() {
    let heartbeat = Heartbeat::default();
    assert!(heartbeat.alive());
    assert!(heartbeat.age() < STALE_AFTER);
}

#[test]
fn without_a_beat_for_longer_than_stale_after_it_is_not_alive() {
    let heartbeat = Heartbeat::beaten_ago(STALE_AFTER + Duration::from_secs(5));
    assert!(!heartbeat.alive());
    assert!(heartbeat.age() > STALE_AFTER);
    heartbeat.beat();
    assert!(heartbeat.alive());
    assert!(heartbeat.age() < Duration::from_secs(1));
}

/// Never ready; counts its polls.
struct CountPolls(Arc<AtomicUsize>);

impl Future for CountPolls {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _context: &mut Context<'_>) -> Poll<()> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Poll::Pending
    }
}

#[tokio::test]
async fn an_idle_future_is_woken_to_beat() {
    let polls = Arc::new(AtomicUsize::new(0));
    let heartbeat = Heartbeat::beaten_ago(STALE_AFTER * 2);
    assert!(!heartbeat.alive());
    let kept = heartbeat.keep_every(CountPolls(Arc::clone(&polls)), Duration::from_millis(10));
    let timed_out = tokio::time::timeout(Duration::from_millis(200), kept).await;
    assert!(timed_out.is_err(), "the wrapped future never finishes");
    // Nothing but the heartbeat's own timer woke it.
    assert!(
        polls.load(Ordering::Relaxed) >= 5,
        "polled {} times in 200 ms",
        polls.load(Ordering::Relaxed)
    );
    assert!(heartbeat.alive());
}

#[tokio::test]
async fn the_output_is_the_wrapped_futures() {
    let heartbeat = Heartbeat::beaten_ago(STALE_AFTER * 2);
    assert_eq!(heartbeat.keep(async { 42 }).await, 42);
    assert!(heartbeat.alive());
}

/// Pending at its first poll; blocks its thread at the second until released (a reconcile
/// stuck on a lock).
struct StuckAtTheSecondPoll {
    polls: usize,
    entered: std::sync::mpsc::Sender<()>,
    release: std::sync::mpsc::Receiver<()>,
}

impl Future for StuckAtTheSecondPoll {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _context: &mut Context<'_>) -> Poll<()> {
        self.polls += 1;
        if self.polls == 1 {
            return Poll::Pending;
        }
        let _ = self.entered.send(());
        let _ = self.release.recv();
        Poll::Ready(())
    }
}

#[test]
fn a_poll_that_does_not_return_stops_the_beat() {
    let heartbeat = Heartbeat::default();
    let (entered, stuck) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel();
    let kept = heartbeat.clone();
    let controller = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime builds")
            .block_on(kept.keep_every(
                StuckAtTheSecondPoll {
                    polls: 0,
                    entered,
                    release: released,
                },
                Duration::from_millis(10),
            ));
    });
    stuck
        .recv_timeout(Duration::from_secs(10))
        .expect("the timer woke the future for a second poll");
    let age_when_stuck = heartbeat.age();
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        heartbeat.age() >= age_when_stuck + Duration::from_millis(100),
        "no beat while the poll is stuck"
    );
    release.send(()).expect("the stuck poll waits");
    controller.join().expect("the controller thread ends");
    assert!(
        heartbeat.age() < Duration::from_millis(100),
        "beat once it returned"
    );
}
