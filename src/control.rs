//! The control thread: everything slow, off the shards. One task per endpoint checks its
//! health (`checks`) and reads its model list when due (`discovery`), which publishes
//! each new model catalogue to every shard over the shard's own channel; another reads
//! what its engine holds in memory and how deep its own queue is (`engine`). All talk to
//! endpoints with `fetch`, a minimal HTTP/1.1 GET. It also re-reads the configuration
//! when asked (`reload`): the tasks of a generation (`crate::live`) run until the next
//! one replaces it.

mod checks;
mod discovery;
mod engine;
mod fetch;
mod reload;

use std::rc::Rc;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use crate::config::Config;
use crate::dns::{DnsWatcher, Update as DnsUpdate};
use crate::events::Kind;
use crate::live::expand::{self, Answers};
use crate::live::{Live, Update};
use crate::log::{info, warning};
use crate::reload::Asked;
use crate::stop::StopSignal;
use crate::tls::listener::CertStore;
use crate::upstream::Upstreams;

pub use reload::ConfigSource;

/// How often the control thread looks for a reload request or a stop.
const TICK: Duration = Duration::from_millis(25);

/// What the control thread is started with.
pub(crate) struct Control {
    pub(crate) live: Arc<Live>,
    pub(crate) stop: Arc<StopSignal>,
    pub(crate) shards: Vec<mpsc::Sender<Update>>,
    pub(crate) asked: mpsc::Receiver<Asked>,
    /// Where a reload reads the configuration; `None`: there is no file to re-read.
    pub(crate) source: Option<ConfigSource>,
    /// The TLS listener's certificate, which a reload renews; `None`: plain HTTP.
    pub(crate) certs: Option<Arc<CertStore>>,
}

/// Watches every endpoint of the running generation, one task each, applies reloads and
/// follows host names' addresses, until `stop` fires. Runs once per process, on the
/// control thread, whatever the number of shards.
pub(crate) async fn run(control: Control) {
    let Control {
        mut live,
        stop,
        shards,
        asked,
        source,
        certs,
    } = control;
    let mut dns = Names::start(&live.config);
    let mut discovery = Rc::new(discovery::Discovery::new(&live, shards.clone()));
    // Reload requests waiting, and the one being read with those it answers.
    let mut waiting: Vec<Asked> = Vec::new();
    let mut reading: Option<(reload::Reading, Vec<Asked>)> = None;
    loop {
        // This generation's tasks: they end when it is replaced, or at the stop.
        let generation = Arc::new(StopSignal::default());
        watch(&live, &generation, &discovery);
        let next = loop {
            if stop.is_triggered() {
                generation.trigger();
                return;
            }
            waiting.extend(asked.try_iter());
            if reading.is_none() && !waiting.is_empty() {
                let batch = std::mem::take(&mut waiting);
                match reload::read(source.as_ref()) {
                    Some(read) => reading = Some((read, batch)),
                    None => answer(batch, &Err(reload::nothing_to_reload())),
                }
            }
            let read = match &reading {
                Some((read, _)) => match read.try_recv() {
                    Ok(config) => Some(config),
                    Err(mpsc::TryRecvError::Empty) => None,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        Some(Err(crate::config::ConfigError {
                            origin: live.config.origin.clone(),
                            key: String::new(),
                            message: "reading the configuration failed".into(),
                        }))
                    }
                },
                None => None,
            };
            if let Some(read) = read {
                let (_, batch) = reading.take().expect("a read in progress");
                match reload::apply(&live, read, dns.answers(), certs.as_deref()) {
                    Ok((next, applied)) => {
                        answer(batch, &Ok(applied));
                        dns.follow(&next.config);
                        break next;
                    }
                    Err(why) => answer(batch, &Err(why)),
                }
            }
            if let Some(next) = dns.take_changes(&live) {
                break next;
            }
            monoio::time::sleep(TICK).await;
        };
        generation.trigger();
        let next = Arc::new(next);
        discovery = Rc::new(discovery.next(&live, &next));
        let catalog = discovery.catalog();
        for shard in &shards {
            let _ = shard.send(Update::Live(next.clone(), catalog.clone()));
        }
        live = next;
    }
}

/// Sends each asker the reload's outcome.
fn answer(batch: Vec<Asked>, outcome: &crate::reload::Outcome) {
    for ask in batch {
        if let Some(reply) = ask.reply {
            let _ = reply.send(outcome.clone());
        }
    }
}

/// The endpoints' host names, kept resolved by a [`DnsWatcher`] while
/// `dns.refresh_interval_ms` is not 0, and their latest addresses.
struct Names {
    watcher: Option<DnsWatcher>,
    answers: Answers,
}

impl Names {
    fn start(config: &Config) -> Names {
        let mut names = Names {
            watcher: None,
            answers: Answers::new(),
        };
        names.follow(config);
        names
    }

    fn answers(&self) -> &Answers {
        &self.answers
    }

    /// Watches the names of `config` (a reload's), with its `[dns]`.
    fn follow(&mut self, config: &Config) {
        let hosts = config.host_names();
        if config.dns.refresh_interval.is_none() || hosts.is_empty() {
            self.watcher = None;
            return;
        }
        match &self.watcher {
            Some(watcher) => {
                watcher.configure(&config.dns);
                watcher.watch(hosts);
            }
            None => match DnsWatcher::start(&config.dns, hosts) {
                Ok(watcher) => self.watcher = Some(watcher),
                Err(e) => warning!(
                    "dns: cannot start the resolver thread ({e}); host names are not re-resolved"
                ),
            },
        }
    }

    /// Takes in the watcher's answers; the next generation of `live` if the endpoints
    /// it routes to changed.
    fn take_changes(&mut self, live: &Live) -> Option<Live> {
        let watcher = self.watcher.as_ref()?;
        let mut changed = false;
        while let Some(update) = watcher.try_recv() {
            match update {
                DnsUpdate::Resolved(answer) => {
                    changed |= self.answers.get(&answer.host) != Some(&answer.addrs);
                    self.answers.insert(answer.host.clone(), answer.addrs);
                }
                DnsUpdate::Failed { host, error, kept } => {
                    let kept = if kept.is_some() {
                        "; its last addresses are kept"
                    } else {
                        ""
                    };
                    warning!("dns: cannot resolve {host}: {error}{kept}");
                }
            }
        }
        if !changed {
            return None;
        }
        let (endpoints, too_many) = expand::endpoints(&live.config, &self.answers);
        if expand::same(&endpoints, &live.upstreams.endpoints) {
            return None;
        }
        if let Some(w) = too_many {
            warning!("dns: {w}");
        }
        let next = live.next(live.config.clone(), &endpoints);
        let summary = format!(
            "host names resolved to other addresses: generation {}, {} endpoint(s)",
            next.generation,
            next.upstreams.endpoints.len()
        );
        info!("{summary}");
        next.upstreams.events.record(Kind::Reloaded, None, summary);
        Some(next)
    }
}

/// Starts the tasks of generation `live`: a health checker per endpoint, an engine
/// reader per endpoint when on, the sweep of the sticky memory.
fn watch(live: &Arc<Live>, stop: &Arc<StopSignal>, discovery: &Rc<discovery::Discovery>) {
    let endpoints = live.upstreams.endpoints.len();
    for index in 0..endpoints {
        let (live, stop, discovery) = (live.clone(), stop.clone(), discovery.clone());
        monoio::spawn(async move {
            let (ups, config) = (&live.upstreams, &live.config);
            let ep = &ups.endpoints[index];
            checks::watch(ep, &ups.events, config, &stop, &discovery).await;
        });
    }
    if let Some(every) = live.config.models_loaded_refresh_interval {
        for index in 0..endpoints {
            let (live, stop, discovery) = (live.clone(), stop.clone(), discovery.clone());
            monoio::spawn(async move {
                let ep = &live.upstreams.endpoints[index];
                engine::watch(ep, every, &stop, &discovery).await;
            });
        }
    }
    monoio::spawn(sweep_seen_keys(live.clone(), stop.clone()));
}

/// Once a second: forgets the sticky keys that expired, and unpins those recorded on an
/// endpoint that stopped being routable since the last pass (Olla's purge of dead
/// endpoints: their next request is a `repin`).
async fn sweep_seen_keys(live: Arc<Live>, stop: Arc<StopSignal>) {
    let upstreams: &Upstreams = &live.upstreams;
    let endpoints = &upstreams.endpoints;
    let mut was_routable = vec![true; endpoints.len()];
    while !stop.is_triggered() {
        monoio::time::sleep(std::time::Duration::from_secs(1)).await;
        let now = crate::clock::now_ms();
        let routable: Vec<bool> = endpoints
            .iter()
            .map(|ep| ep.health().is_routable(now))
            .collect();
        let mut went_down = [false; 512];
        for (i, ep) in endpoints.iter().enumerate() {
            went_down[ep.seen_tag()] |= was_routable[i] && !routable[i];
        }
        upstreams.seen.sweep(now, |tag| went_down[tag]);
        was_routable = routable;
    }
}
