//! Per-shard keep-alive pools of connections to endpoints, used by the `attempt` phase.
//!
//! Life of a pooled connection:
//! 1. `take` hands out the most recently used idle connection (LIFO: the one least
//!    likely to have been closed by the backend), dropping any idle for longer than
//!    `idle_timeout` (which is set below the backends' own keep-alive timeouts), and
//!    any that is not quiet: bytes arrived on it while it was idle (a stale response, a
//!    `408`, a body after a HEAD answer) or the backend closed it. Its next client would
//!    read those bytes as its answer. Over TLS the records that arrived are processed
//!    first: session tickets and a KeyUpdate do not count, a close_notify does
//!    (`upstream/tls.rs`).
//! 2. The request path uses it for exactly one request/response exchange.
//! 3. `put` takes it back only after a clean end of the response message with nothing
//!    unread, no timeout and no error: a connection in any other state is dropped (closed),
//!    so a later request can never read the tail of an earlier response.
//! 4. If a reused connection turns out closed before any response byte arrives, the
//!    request path retries once on a fresh connection (the backend never saw it).
//! 5. `evict_expired`, run periodically by the shard, closes connections idle too long so
//!    the shard does not hold sockets the backend has given up on.
//!
//!
//! A pool is indexed by the endpoints' positions in the shard's configuration
//! generation, and each connection is tagged with its endpoint's identity
//! (`Endpoint::uid`): when the shard takes a new generation, `follow` moves each backend's
//! connections to its new position and closes those of backends it no longer has; a
//! request of the older generation returning a connection to a position that is now
//! another backend's cannot hand it to that backend's requests (the tag differs).
//!
//! Shard-local: `RefCell`, no locks; the pool is never borrowed across an `.await`.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use super::{Endpoint, EndpointConn, Upstreams};

pub(crate) struct Pool {
    idle: RefCell<Vec<Vec<Idle>>>,
    idle_timeout: Duration,
    max_idle: usize,
}

struct Idle {
    conn: EndpointConn,
    since: Instant,
    /// Its endpoint's `uid`.
    uid: u32,
}

impl Pool {
    pub(crate) fn new(endpoints: usize, idle_timeout: Duration, max_idle: usize) -> Pool {
        Pool {
            idle: RefCell::new((0..endpoints).map(|_| Vec::new()).collect()),
            idle_timeout,
            max_idle,
        }
    }

    /// The most recently returned live, quiet connection to endpoint `ep`, if any, at
    /// `now`. One non-blocking system call per connection looked at.
    pub(crate) fn take(&self, ep: &Endpoint, now: Instant) -> Option<EndpointConn> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(ep.index)?;
        while let Some(mut newest) = list.pop() {
            if newest.uid != ep.uid() {
                continue; // returned by a request of an older generation: closed
            }
            if now.saturating_duration_since(newest.since) >= self.idle_timeout {
                // The newest is expired, so all older ones are too.
                list.clear();
                return None;
            }
            if newest.conn.is_quiet() {
                return Some(newest.conn);
            }
            // Dropped: closed.
        }
        None
    }

    /// Returns a connection whose last exchange ended cleanly at `now`. With
    /// `max_idle` 0 (no pooling) it is closed.
    pub(crate) fn put(&self, ep: &Endpoint, conn: EndpointConn, now: Instant) {
        debug_assert!(conn.buf.is_empty(), "pooled connection with unread bytes");
        if self.max_idle == 0 {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let Some(list) = idle.get_mut(ep.index) else {
            return;
        };
        if list.len() >= self.max_idle {
            list.remove(0); // the oldest goes
        }
        let uid = ep.uid();
        list.push(Idle {
            conn,
            since: now,
            uid,
        });
    }

    /// Follows the shard from generation `old` to `new`: each backend's connections move
    /// to its position in `new`; those of backends `new` does not have are closed.
    pub(crate) fn follow(&self, old: &Upstreams, new: &Upstreams) {
        let mut idle = self.idle.borrow_mut();
        let mut lists: Vec<Vec<Idle>> = (0..new.endpoints.len()).map(|_| Vec::new()).collect();
        for (ep, list) in old.endpoints.iter().zip(idle.iter_mut()) {
            if let Some(now) = new.find(ep) {
                lists[now.index] = std::mem::take(list);
            }
        }
        *idle = lists;
    }

    /// Closes connections idle longer than the timeout.
    pub(crate) fn evict_expired(&self) {
        let now = Instant::now();
        for list in self.idle.borrow_mut().iter_mut() {
            let expired = list
                .iter()
                .take_while(|i| now - i.since >= self.idle_timeout)
                .count();
            list.drain(..expired);
        }
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpListener;

    use super::*;
    use crate::config::Config;
    use crate::upstream::conn;

    /// A generation of endpoints named `names`, all at `addr`.
    fn endpoints(addr: std::net::SocketAddr, names: &[&str]) -> Config {
        let text: String = names
            .iter()
            .map(|n| {
                format!("[[endpoints]]\nname = \"{n}\"\nurl = \"http://{addr}\"\ntype = \"vllm\"\n")
            })
            .collect();
        Config::from_toml(&text, "test").unwrap()
    }

    fn on_both_drivers(test: impl AsyncFn()) {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(test());
        if let Ok(mut rt) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
        {
            rt.block_on(test());
        }
    }

    /// The pool's promise: a connection on which anything arrived while it was idle, or
    /// that the peer closed, is never handed out; a quiet one is.
    #[test]
    fn only_quiet_connections_are_handed_out() {
        on_both_drivers(async || {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let pool = Pool::new(1, Duration::from_secs(60), 16);
            let config = endpoints(addr, &["a"]);
            let ups = Upstreams::new(&config.endpoints, &config.sticky, 1);
            let ep = &ups.endpoints[0];
            let mut peers = Vec::new();
            for _ in 0..4 {
                let conn = conn::open(addr, None).await.unwrap();
                peers.push(listener.accept().unwrap().0);
                pool.put(ep, conn, Instant::now());
            }
            // Oldest to newest: quiet, stale bytes, a 408 and a close, closed.
            peers[1]
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTALE")
                .unwrap();
            peers[2]
                .write_all(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n")
                .unwrap();
            peers[2].shutdown(std::net::Shutdown::Both).unwrap();
            peers[3].shutdown(std::net::Shutdown::Write).unwrap();
            monoio::time::sleep(Duration::from_millis(50)).await;
            let mut taken = pool.take(ep, Instant::now()).expect("the quiet one");
            assert!(taken.is_quiet());
            assert!(
                pool.take(ep, Instant::now()).is_none(),
                "the others were dropped"
            );
        });
    }

    #[test]
    fn expired_connections_are_not_handed_out() {
        on_both_drivers(async || {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let pool = Pool::new(1, Duration::from_millis(100), 16);
            let addr = listener.local_addr().unwrap();
            let config = endpoints(addr, &["a"]);
            let ups = Upstreams::new(&config.endpoints, &config.sticky, 1);
            let ep = &ups.endpoints[0];
            let conn = conn::open(addr, None).await.unwrap();
            let _peer = listener.accept().unwrap();
            let then = Instant::now();
            pool.put(ep, conn, then);
            assert!(pool.take(ep, then + Duration::from_millis(100)).is_none());
        });
    }

    /// A new generation moves each backend's connections to its new position and closes
    /// the others; a connection returned under the old generation to a position that is
    /// now another backend's is never handed to that backend's requests.
    #[test]
    fn connections_follow_their_backend_across_generations() {
        on_both_drivers(async || {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let pool = Pool::new(2, Duration::from_secs(60), 16);
            let first = endpoints(addr, &["a", "b"]);
            let old = Upstreams::new(&first.endpoints, &first.sticky, 1);
            let mut peers = Vec::new();
            for ep in old.endpoints.iter() {
                pool.put(ep, conn::open(addr, None).await.unwrap(), Instant::now());
                peers.push(listener.accept().unwrap().0);
            }
            // "a" is gone, "c" is new and takes position 0, "b" moves to 1.
            let second = endpoints(addr, &["c", "b"]);
            let new = old.next(&second.endpoints);
            pool.follow(&old, &new);
            let (c, b) = (&new.endpoints[0], &new.endpoints[1]);
            assert!(
                pool.take(c, Instant::now()).is_none(),
                "a's connection closed"
            );
            assert!(
                pool.take(b, Instant::now()).is_some(),
                "b's connection moved"
            );
            // A request of the old generation returns a connection to "a" (position 0).
            pool.put(
                &old.endpoints[0],
                conn::open(addr, None).await.unwrap(),
                Instant::now(),
            );
            assert!(pool.take(c, Instant::now()).is_none(), "never handed to c");
        });
    }
}
