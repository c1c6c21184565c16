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

use crate::live::{Live, Update};
use crate::reload::Asked;
use crate::stop::StopSignal;
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
}

/// Watches every endpoint of the running generation, one task each, and applies
/// reloads, until `stop` fires. Runs once per process, on the control thread, whatever
/// the number of shards.
pub(crate) async fn run(control: Control) {
    let Control {
        mut live,
        stop,
        shards,
        asked,
        source,
    } = control;
    let mut discovery = Rc::new(discovery::Discovery::new(&live, shards.clone()));
    loop {
        // This generation's tasks: they end when it is replaced, or at the stop.
        let generation = Arc::new(StopSignal::default());
        watch(&live, &generation, &discovery);
        let next = loop {
            if stop.is_triggered() {
                generation.trigger();
                return;
            }
            if let Ok(ask) = asked.try_recv() {
                let outcome = reload::apply(&live, source.as_ref());
                let (next, answer) = match outcome {
                    Ok((next, applied)) => (Some(next), Ok(applied)),
                    Err(why) => (None, Err(why)),
                };
                if let Some(reply) = ask.reply {
                    let _ = reply.send(answer);
                }
                if let Some(next) = next {
                    break next;
                }
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
