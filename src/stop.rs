//! The stop signal: how a signal handler or `Server::shutdown` tells every shard and the
//! control thread to stop, from any thread.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

/// Stops a [`Server`](crate::Server) from any thread.
#[derive(Clone)]
pub struct Stopper(pub(crate) Arc<StopSignal>);

impl Stopper {
    pub fn stop(&self) {
        self.0.trigger();
    }
}

/// Tells every shard to stop. The only lock is taken when a shard starts waiting and
/// when the signal fires, never on the request path.
#[derive(Default)]
pub(crate) struct StopSignal {
    stopped: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl StopSignal {
    pub(crate) fn trigger(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        wakers.into_iter().for_each(Waker::wake);
    }

    pub(crate) fn is_triggered(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    pub(crate) fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.is_triggered() {
                return Poll::Ready(());
            }
            let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            drop(wakers);
            if self.is_triggered() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}
