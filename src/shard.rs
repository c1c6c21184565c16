//! A shard's own state: what one thread-per-core event loop owns and every request on
//! it reads (configuration, endpoints, its pool, its counters, its cursor), built inside
//! the shard thread and never shared with another. `runtime.rs` starts shards; the
//! request path (`proxy/`) runs on them.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll, Waker};

use crate::config::Config;
use crate::live::{Live, Pinned, Update};
use crate::log::AccessLog;
use crate::metrics::{Metrics, ShardCounters};
use crate::reload::Reloads;
use crate::tls::listener::{CertStore, ShardCerts};
use crate::upstream::models::Catalog;
use crate::upstream::pool::Pool;

/// Everything one shard owns.
pub(crate) struct Shard {
    pub(crate) id: usize,
    /// "io_uring" or "epoll".
    pub(crate) driver: &'static str,
    /// The configuration ringway started with: for the settings that cannot change
    /// while it runs (`live::restart_only`). Everything else is read from the request's
    /// generation ([`Shard::live`]).
    pub(crate) started_with: Arc<Config>,
    pub(crate) pool: Pool,
    /// All shards' counters; this shard writes only its own block.
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) access_log: Option<Arc<AccessLog>>,
    /// The configuration generation new requests are served by, and its model
    /// catalogue; where new ones arrive.
    live: RefCell<Pinned>,
    catalog: RefCell<Arc<Catalog>>,
    updates: mpsc::Receiver<Update>,
    /// Where `POST /internal/reload` asks the control thread for a reload.
    pub(crate) reloads: Reloads,
    /// The TLS listener's certificate (this shard's copy); `None`: plain HTTP.
    pub(crate) listener_tls: Option<ShardCerts>,
    /// Where the balancer starts scanning: just after this shard's previous pick.
    pub(crate) next_pick: Cell<usize>,
    pub(crate) next_request: Cell<u64>,
    /// Distinguishes this process's generated request ids from another's.
    pub(crate) process_tag: u32,
    stopping: Cell<bool>,
    /// Client connections open on this shard.
    connections: Cell<usize>,
    /// Connections idle between requests, woken when the shard starts draining: slots
    /// of wakers (a freed slot is `None`, reused first).
    idle: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

/// What a shard is built from, handed to its thread.
pub(crate) struct ShardParts {
    pub(crate) id: usize,
    pub(crate) driver: &'static str,
    pub(crate) live: Arc<Live>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) access_log: Option<Arc<AccessLog>>,
    pub(crate) updates: mpsc::Receiver<Update>,
    pub(crate) process_tag: u32,
    pub(crate) reloads: Reloads,
    /// The TLS listener's certificate, shared by the shards; `None`: plain HTTP.
    pub(crate) certs: Option<Arc<CertStore>>,
}

impl Shard {
    pub(crate) fn new(parts: ShardParts) -> Shard {
        let config = parts.live.config.clone();
        let proxy = &config.proxy;
        let endpoints = parts.live.upstreams.endpoints.len();
        Shard {
            id: parts.id,
            driver: parts.driver,
            pool: Pool::new(endpoints, proxy.pool_idle_timeout, proxy.pool_max_idle),
            listener_tls: parts.certs.map(ShardCerts::new),
            metrics: parts.metrics,
            access_log: parts.access_log,
            catalog: RefCell::new(Arc::new(Catalog::new(
                vec![None; endpoints],
                vec![0; endpoints],
            ))),
            live: RefCell::new(Pinned::new(parts.live)),
            updates: parts.updates,
            reloads: parts.reloads,
            next_pick: Cell::new(parts.id),
            next_request: Cell::new(0),
            process_tag: parts.process_tag,
            stopping: Cell::new(false),
            connections: Cell::new(0),
            idle: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            started_with: config,
        }
    }

    /// Whether the shard is draining: connections close after their current request.
    pub(crate) fn is_draining(&self) -> bool {
        self.stopping.get()
    }

    /// Starts draining: idle connections are woken to close, busy ones close after
    /// their current request.
    pub(crate) fn drain(&self) {
        self.stopping.set(true);
        let idle = std::mem::take(&mut *self.idle.borrow_mut());
        idle.into_iter().flatten().for_each(Waker::wake);
    }

    /// Completes when the shard starts draining: what a connection idle between requests
    /// races its read against. Each connection keeps one: its waker is registered at the
    /// first poll and freed when the connection ends. (Not monoio's `Canceller`, which
    /// hashes every operation it tracks.)
    pub(crate) fn drained(&self) -> Drained<'_> {
        Drained {
            shard: self,
            slot: None,
        }
    }

    /// The latest configuration generation, taken in if one arrived: what a new request
    /// is served by, from its start to its end (its endpoint indices are this
    /// generation's).
    pub(crate) fn live(&self) -> Pinned {
        self.take_updates();
        self.live.borrow().clone()
    }

    /// The generation as it is, without taking in an update (the pages, which read the
    /// catalogue alongside).
    pub(crate) fn live_now(&self) -> Pinned {
        self.live.borrow().clone()
    }

    /// The model catalogue of the current generation. Never hold it across an `.await`.
    /// A request reads it right after [`Shard::live`], before any `.await`, so the two
    /// are of the same generation.
    pub(crate) fn catalog(&self) -> std::cell::Ref<'_, Arc<Catalog>> {
        self.catalog.borrow()
    }

    /// Takes in what the control thread sent: the newest generation, and the newest
    /// catalogue of the generation the shard then has (one indexed for an older
    /// generation is dropped: the control thread sends every generation with its own).
    pub(crate) fn take_updates(&self) {
        while let Ok(update) = self.updates.try_recv() {
            match update {
                Update::Live(live, catalog) => {
                    let old = self.live.replace(Pinned::new(live));
                    let new = self.live.borrow();
                    self.pool.follow(&old.upstreams, &new.upstreams);
                    *self.catalog.borrow_mut() = catalog;
                }
                Update::Catalog(catalog) => {
                    if catalog.generation == self.live.borrow().generation {
                        *self.catalog.borrow_mut() = catalog;
                    }
                }
            }
        }
    }

    /// This shard's own counters.
    pub(crate) fn counters(&self) -> &ShardCounters {
        self.metrics.shard(self.id)
    }

    /// Client connections open on this shard.
    pub(crate) fn connections(&self) -> usize {
        self.connections.get()
    }

    /// Counts a connection open until the guard is dropped, or `None` at
    /// `server.max_connections`.
    pub(crate) fn admit(self: &Rc<Shard>) -> Option<Admitted> {
        let open = self.connections.get();
        if open >= self.started_with.server.max_connections {
            return None;
        }
        self.connections.set(open + 1);
        Some(Admitted(self.clone()))
    }
}

/// See [`Shard::drained`].
pub(crate) struct Drained<'s> {
    shard: &'s Shard,
    slot: Option<usize>,
}

impl Future for Drained<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let shard = self.shard;
        if shard.is_draining() {
            return Poll::Ready(());
        }
        let mut idle = shard.idle.borrow_mut();
        match self.slot {
            Some(i) => match &mut idle[i] {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            },
            None => {
                let waker = Some(cx.waker().clone());
                let i = match shard.free.borrow_mut().pop() {
                    Some(i) => {
                        idle[i] = waker;
                        i
                    }
                    None => {
                        idle.push(waker);
                        idle.len() - 1
                    }
                };
                drop(idle);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for Drained<'_> {
    fn drop(&mut self) {
        let Some(i) = self.slot else { return };
        // Draining took the wakers: nothing left to free.
        let mut idle = self.shard.idle.borrow_mut();
        if let Some(slot) = idle.get_mut(i) {
            *slot = None;
            self.shard.free.borrow_mut().push(i);
        }
    }
}

/// A client connection counted against `server.max_connections` until dropped.
pub(crate) struct Admitted(Rc<Shard>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.connections.set(self.0.connections.get() - 1);
    }
}
