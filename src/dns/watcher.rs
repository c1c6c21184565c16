//! Re-resolution while running: a thread (`ringway-dns`) that keeps a set of names
//! resolved, and reports each change of their addresses, and each failure, on a channel
//! the control thread reads without blocking ([`DnsWatcher::try_recv`] on every tick).
//!
//! Each name is resolved again after `min(TTL, dns.refresh_interval_ms)`, never sooner
//! than [`MIN_REFRESH`]; the system resolver gives no TTL, so its answers last the
//! refresh interval. A failed lookup is retried after 1 s, then 2, 4... up to the refresh
//! interval. A failure never withdraws an answer: the last good one stays in force and
//! comes along with the failure ([`Update::Failed`]), so a flapping DNS server cannot
//! drain a fleet; whoever reads the updates decides what an NXDOMAIN means.
//!
//! Each lookup runs on a short-lived thread of its own, so that a name whose server is
//! timing out does not hold up the others (a lookup is bounded by
//! [`Resolver::budget`]; one name has at most one lookup running). Starting a thread
//! costs some microseconds, once per name every few seconds at most.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Answer, DnsConfig, DnsError, MIN_REFRESH, Resolver};

/// Longest wait between retries of a failing name when names are resolved only once
/// (`dns.refresh_interval_ms = 0`), until it is resolved.
const ONCE_RETRY_CEILING: Duration = Duration::from_secs(30);

/// What the watcher reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// A name's first answer, or one whose addresses differ from the last reported.
    Resolved(Answer),
    /// A lookup failed. `kept` is the last good answer, which stays in force.
    Failed {
        host: String,
        error: DnsError,
        kept: Option<Answer>,
    },
}

impl Update {
    /// The name the update is about.
    pub fn host(&self) -> &str {
        match self {
            Update::Resolved(answer) => &answer.host,
            Update::Failed { host, .. } => host,
        }
    }
}

/// The watcher thread's handle: give it names, read its updates. Dropping it stops the
/// thread (lookups still running end on their own, their answers dropped).
pub struct DnsWatcher {
    commands: mpsc::Sender<Msg>,
    updates: mpsc::Receiver<Update>,
    thread: Option<JoinHandle<()>>,
}

enum Msg {
    /// The names to keep resolved from now on.
    Watch(Vec<String>),
    /// Resolve with these from now on (a reload changed `[dns]`).
    Configure {
        resolver: Resolver,
        refresh: Option<Duration>,
    },
    /// A lookup ended.
    Done {
        host: String,
        lookup: u64,
        result: Result<Answer, DnsError>,
    },
    Stop,
}

impl DnsWatcher {
    /// Starts the thread, resolving `hosts` at once.
    pub fn start(
        config: &DnsConfig,
        hosts: impl IntoIterator<Item = String>,
    ) -> io::Result<DnsWatcher> {
        let (commands, inbox) = mpsc::channel();
        let (publish, updates) = mpsc::channel();
        let state = Watcher {
            resolver: Arc::new(Resolver::new(config)),
            refresh: config.refresh_interval,
            names: HashMap::new(),
            lookups: 0,
            inbox,
            loopback: commands.clone(),
            publish,
        };
        let thread = std::thread::Builder::new()
            .name("ringway-dns".into())
            .spawn(move || state.run())?;
        let watcher = DnsWatcher {
            commands,
            updates,
            thread: Some(thread),
        };
        watcher.watch(hosts);
        Ok(watcher)
    }

    /// Replaces the set of names kept resolved (after a reload): new ones are resolved at
    /// once, those kept keep their answers and schedule, the others are forgotten.
    pub fn watch(&self, hosts: impl IntoIterator<Item = String>) {
        let _ = self.commands.send(Msg::Watch(hosts.into_iter().collect()));
    }

    /// Resolves with `config` from now on (after a reload that changed `[dns]`): every
    /// watched name is resolved again at once, lookups still running are disregarded,
    /// and the answers so far stay in force until then.
    pub fn configure(&self, config: &DnsConfig) {
        let _ = self.commands.send(Msg::Configure {
            resolver: Resolver::new(config),
            refresh: config.refresh_interval,
        });
    }

    /// The next update, if one is waiting; never blocks.
    pub fn try_recv(&self) -> Option<Update> {
        self.updates.try_recv().ok()
    }

    /// Waits up to `timeout` for the next update (for tests and tools; the control thread
    /// uses [`DnsWatcher::try_recv`]).
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Update> {
        self.updates.recv_timeout(timeout).ok()
    }
}

impl Drop for DnsWatcher {
    fn drop(&mut self) {
        let _ = self.commands.send(Msg::Stop);
        if let Some(thread) = self.thread.take() {
            // Never blocked for long: the thread itself only waits on its channel.
            let _ = thread.join();
        }
    }
}

/// The watcher thread's state.
struct Watcher {
    resolver: Arc<Resolver>,
    refresh: Option<Duration>,
    names: HashMap<String, Name>,
    /// Lookups started so far: each one's number, so that the answer of a lookup for a
    /// name that was forgotten and watched again is not taken for the new one's.
    lookups: u64,
    inbox: mpsc::Receiver<Msg>,
    /// Given to each lookup thread, to send its answer back.
    loopback: mpsc::Sender<Msg>,
    publish: mpsc::Sender<Update>,
}

/// One watched name.
struct Name {
    last: Option<Answer>,
    /// When to resolve it next; `None`: never (resolved once, or an IP address).
    due: Option<Instant>,
    /// The lookup running, by number.
    running: Option<u64>,
    /// Failures in a row, for the retry backoff.
    failures: u32,
}

impl Watcher {
    fn run(mut self) {
        loop {
            self.start_due_lookups();
            let next_due = self
                .names
                .values()
                .filter(|n| n.running.is_none())
                .filter_map(|n| n.due)
                .min();
            let msg = match next_due {
                Some(due) => {
                    let wait = due.saturating_duration_since(Instant::now());
                    match self.inbox.recv_timeout(wait) {
                        Ok(msg) => msg,
                        Err(mpsc::RecvTimeoutError::Timeout) => continue,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
                None => match self.inbox.recv() {
                    Ok(msg) => msg,
                    Err(_) => return,
                },
            };
            match msg {
                Msg::Watch(hosts) => self.replace(hosts),
                Msg::Configure { resolver, refresh } => {
                    self.resolver = Arc::new(resolver);
                    self.refresh = refresh;
                    let now = Instant::now();
                    for name in self.names.values_mut() {
                        (name.due, name.running, name.failures) = (Some(now), None, 0);
                    }
                }
                Msg::Done {
                    host,
                    lookup,
                    result,
                } => self.finish(host, lookup, result),
                Msg::Stop => return,
            }
        }
    }

    fn replace(&mut self, hosts: Vec<String>) {
        self.names.retain(|host, _| hosts.contains(host));
        let now = Instant::now();
        for host in hosts {
            self.names.entry(host).or_insert(Name {
                last: None,
                due: Some(now),
                running: None,
                failures: 0,
            });
        }
    }

    fn start_due_lookups(&mut self) {
        let now = Instant::now();
        for (host, name) in &mut self.names {
            if name.running.is_some() || name.due.is_none_or(|due| due > now) {
                continue;
            }
            self.lookups += 1;
            let lookup = self.lookups;
            name.running = Some(lookup);
            let (resolver, back, asked) =
                (self.resolver.clone(), self.loopback.clone(), host.clone());
            let spawned = std::thread::Builder::new()
                .name("ringway-dns-lookup".into())
                .spawn(move || {
                    let result = resolver.resolve(&asked);
                    let _ = back.send(Msg::Done {
                        host: asked,
                        lookup,
                        result,
                    });
                });
            if let Err(e) = spawned {
                let why = format!("cannot start a lookup thread: {e}");
                let _ = self.loopback.send(Msg::Done {
                    host: host.clone(),
                    lookup,
                    result: Err(DnsError::Failed(why)),
                });
            }
        }
    }

    fn finish(&mut self, host: String, lookup: u64, result: Result<Answer, DnsError>) {
        let Some(name) = self.names.get_mut(&host) else {
            return;
        };
        if name.running != Some(lookup) {
            return;
        }
        name.running = None;
        let now = Instant::now();
        match result {
            Ok(answer) => {
                name.failures = 0;
                name.due = self.refresh.and_then(|ceiling| {
                    // An IP address never changes.
                    if host.parse::<std::net::IpAddr>().is_ok() {
                        return None;
                    }
                    let wait = answer.ttl.map_or(ceiling, |ttl| ttl.min(ceiling));
                    Some(now + wait.max(MIN_REFRESH))
                });
                let changed = name
                    .last
                    .as_ref()
                    .is_none_or(|last| last.addrs != answer.addrs);
                name.last = Some(answer.clone());
                if changed {
                    let _ = self.publish.send(Update::Resolved(answer));
                }
            }
            Err(error) => {
                name.failures = name.failures.saturating_add(1);
                let ceiling = self.refresh.unwrap_or(ONCE_RETRY_CEILING).max(MIN_REFRESH);
                let backoff = MIN_REFRESH.saturating_mul(1 << (name.failures - 1).min(16));
                // Resolved once and for all already: nothing more to do.
                name.due = match (self.refresh, &name.last) {
                    (None, Some(_)) => None,
                    _ => Some(now + backoff.min(ceiling)),
                };
                let kept = name.last.clone();
                let _ = self.publish.send(Update::Failed { host, error, kept });
            }
        }
    }
}
