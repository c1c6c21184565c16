//! Supervision: the shard and control threads, and learning when any of them ends
//! however it ends (so a dead shard stops the process instead of leaving it limping on
//! with fewer cores); and panic isolation per connection ([`CatchUnwind`]).

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::stop::StopSignal;

/// A shard or control thread that ended without being asked to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadDied {
    pub thread: String,
    pub panicked: bool,
}

impl fmt::Display for ThreadDied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.panicked { "panicked" } else { "exited" };
        write!(f, "thread {} {how} unexpectedly", self.thread)
    }
}

impl std::error::Error for ThreadDied {}

/// Owns the shard threads and learns when any of them ends, however it ends.
pub(super) struct Supervisor {
    threads: Vec<JoinHandle<()>>,
    exits_tx: mpsc::Sender<ThreadDied>,
    exits: mpsc::Receiver<ThreadDied>,
}

/// Reports its shard's end when dropped, which also happens while a panic unwinds.
struct ExitNotice {
    thread: String,
    tx: mpsc::Sender<ThreadDied>,
}

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let _ = self.tx.send(ThreadDied {
            thread: std::mem::take(&mut self.thread),
            panicked: std::thread::panicking(),
        });
    }
}

impl Supervisor {
    pub(super) fn new() -> Supervisor {
        let (exits_tx, exits) = mpsc::channel();
        Supervisor {
            threads: Vec::new(),
            exits_tx,
            exits,
        }
    }

    pub(super) fn spawn(&mut self, name: String, body: impl FnOnce() + Send + 'static) {
        let notice = ExitNotice {
            thread: name.clone(),
            tx: self.exits_tx.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let _notice = notice;
                body();
            })
            .expect("spawn a shard thread");
        self.threads.push(thread);
    }

    /// Blocks until `stop` fires (`Ok`) or a shard thread ends first (`Err`).
    pub(super) fn wait(&self, stop: &StopSignal) -> Result<(), ThreadDied> {
        loop {
            match self.exits.recv_timeout(Duration::from_millis(200)) {
                Ok(_) if stop.is_triggered() => return Ok(()),
                Ok(died) => return Err(died),
                Err(mpsc::RecvTimeoutError::Timeout) if stop.is_triggered() => return Ok(()),
                Err(_) => {}
            }
        }
    }

    pub(super) fn join(&mut self) {
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Runs a future and turns a panic inside it into an `Err`, so one connection's bug
/// cannot take down the shard and every other connection on it.
pub(super) struct CatchUnwind<F>(pub(super) Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

pub(super) fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "(non-string panic)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monoio::{LegacyDriver, RuntimeBuilder};
    use std::sync::Arc;

    #[test]
    fn a_shard_that_dies_is_reported() {
        let stop = StopSignal::default();
        let mut supervisor = Supervisor::new();
        supervisor.spawn("a".into(), || std::thread::sleep(Duration::from_secs(2)));
        supervisor.spawn("b".into(), || panic!("injected shard failure"));
        let died = supervisor.wait(&stop).unwrap_err();
        let expected = ThreadDied {
            thread: "b".into(),
            panicked: true,
        };
        assert_eq!(died, expected);
    }

    #[test]
    fn a_requested_stop_is_not_a_death() {
        let stop = Arc::new(StopSignal::default());
        let mut supervisor = Supervisor::new();
        let s = stop.clone();
        supervisor.spawn("a".into(), move || {
            while !s.is_triggered() {
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        stop.trigger();
        assert_eq!(supervisor.wait(&stop), Ok(()));
        supervisor.join();
    }

    #[test]
    fn catch_unwind_contains_a_panicking_future() {
        let mut rt = RuntimeBuilder::<LegacyDriver>::new().build().unwrap();
        let caught = rt.block_on(CatchUnwind(Box::pin(async { panic!("boom") })));
        assert_eq!(panic_message(&*caught.unwrap_err()), "boom");
        let fine = rt.block_on(CatchUnwind(Box::pin(async { 7 })));
        assert_eq!(fine.unwrap(), 7);
    }
}
