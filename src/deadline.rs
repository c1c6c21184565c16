//! Deadlines without a timer per I/O: each connection task owns one timer and moves it
//! from deadline to deadline (waiting for a head, an exchange with an endpoint, a gap in
//! a stream), racing whatever it awaits against it.
//!
//! Moving a registered timer to a later time is a store, not a timer-wheel operation
//! (monoio's `Sleep::reset` extends in place; the wheel re-files the entry only if it
//! comes due early), so a request that moves its connection's deadline forward costs
//! almost nothing, where a `timeout()` per read or write inserts and removes a timer
//! each time.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::{Duration, Instant};

use monoio::time::Sleep;

/// Far enough to mean "no deadline", near enough for the timer wheel (its range is ~2
/// years).
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// The deadline passed before the awaited operation completed. The operation was
/// cancelled: a connection it was reading or writing may have lost data and must be
/// closed, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// A connection's one timer. Create the timer with [`timer`] and pin it in the task.
pub(crate) struct Deadline<'t> {
    timer: Pin<&'t mut Sleep>,
    at: Instant,
}

/// A timer for [`Deadline::new`], set to no deadline yet.
pub(crate) fn timer(now: Instant) -> Sleep {
    monoio::time::sleep_until((now + FAR).into())
}

impl<'t> Deadline<'t> {
    pub(crate) fn new(timer: Pin<&'t mut Sleep>) -> Deadline<'t> {
        let at = timer.deadline().into_std();
        Deadline { timer, at }
    }

    pub(crate) fn at(&self) -> Instant {
        self.at
    }

    /// Moves the deadline (earlier or later).
    pub(crate) fn set(&mut self, at: Instant) {
        if at != self.at {
            self.timer.as_mut().reset(at.into());
            self.at = at;
        }
    }

    /// Awaits `work` unless the deadline passes first.
    pub(crate) async fn run<F: Future>(&mut self, work: F) -> Result<F::Output, Elapsed> {
        let mut work = pin!(work);
        self.race(work.as_mut()).await
    }

    /// Like [`Deadline::run`], for a pinned future the caller may go on awaiting after
    /// the deadline passed (moving it first).
    pub(crate) async fn race<F: Future>(
        &mut self,
        mut work: Pin<&mut F>,
    ) -> Result<F::Output, Elapsed> {
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = work.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            self.timer.as_mut().poll(cx).map(|()| Err(Elapsed))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<F: Future>(test: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(test)
    }

    #[test]
    fn work_that_finishes_first_wins_and_a_late_deadline_cuts_the_rest() {
        run(async {
            let now = Instant::now();
            let mut t = pin!(timer(now));
            let mut deadline = Deadline::new(t.as_mut());
            deadline.set(now + Duration::from_millis(200));
            assert_eq!(deadline.run(async { 7 }).await, Ok(7));
            deadline.set(Instant::now() + Duration::from_millis(20));
            let slow = monoio::time::sleep(Duration::from_secs(5));
            assert_eq!(deadline.run(slow).await, Err(Elapsed));
            assert!(now.elapsed() < Duration::from_secs(2));
        });
    }

    #[test]
    fn a_deadline_moved_later_does_not_fire_at_its_old_time() {
        run(async {
            let now = Instant::now();
            let mut t = pin!(timer(now));
            let mut deadline = Deadline::new(t.as_mut());
            deadline.set(now + Duration::from_millis(10));
            // Registered at +10 ms, then moved to +80 ms: still running at +40 ms.
            assert_eq!(deadline.run(async {}).await, Ok(()));
            deadline.set(now + Duration::from_millis(80));
            let short = monoio::time::sleep(Duration::from_millis(40));
            assert_eq!(deadline.run(short).await, Ok(()));
            let long = monoio::time::sleep(Duration::from_secs(5));
            assert_eq!(deadline.run(long).await, Err(Elapsed));
            let waited = now.elapsed();
            assert!(waited >= Duration::from_millis(75), "{waited:?}");
        });
    }

    #[test]
    fn an_elapsed_deadline_can_be_moved_and_raced_again() {
        run(async {
            let mut t = pin!(timer(Instant::now()));
            let mut deadline = Deadline::new(t.as_mut());
            deadline.set(Instant::now() + Duration::from_millis(5));
            let mut slow = pin!(monoio::time::sleep(Duration::from_millis(60)));
            assert_eq!(deadline.race(slow.as_mut()).await, Err(Elapsed));
            deadline.set(Instant::now() + Duration::from_secs(5));
            assert_eq!(deadline.race(slow.as_mut()).await, Ok(()));
        });
    }
}
