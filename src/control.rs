//! The control thread: everything slow, off the shards. One task per endpoint checks its
//! health (`checks`) and reads its model list when due (`discovery`), which publishes
//! each new model catalogue to every shard over the shard's own channel; another reads
//! what its engine holds in memory and how deep its own queue is (`engine`). All talk to
//! endpoints with `fetch`, a minimal HTTP/1.1 GET.

mod checks;
mod discovery;
mod engine;
mod fetch;

use std::rc::Rc;
use std::sync::{Arc, mpsc};

use crate::config::Config;
use crate::stop::StopSignal;
use crate::upstream::Upstreams;
use crate::upstream::models::Catalog;

/// Watches every endpoint, one task each, until `stop` fires. Runs once per process, on
/// the control thread, whatever the number of shards.
pub(crate) async fn run(
    upstreams: Arc<Upstreams>,
    config: Arc<Config>,
    stop: Arc<StopSignal>,
    shards: Vec<mpsc::Sender<Arc<Catalog>>>,
) {
    let discovery = Rc::new(discovery::Discovery::new(upstreams.endpoints.len(), shards));
    for index in 0..upstreams.endpoints.len() {
        let (upstreams, config, stop) = (upstreams.clone(), config.clone(), stop.clone());
        let discovery = discovery.clone();
        monoio::spawn(async move {
            let ep = &upstreams.endpoints[index];
            checks::watch(ep, &upstreams.events, &config, &stop, &discovery).await;
        });
    }
    if let Some(every) = config.models_loaded_refresh_interval {
        for index in 0..upstreams.endpoints.len() {
            let (upstreams, stop, discovery) = (upstreams.clone(), stop.clone(), discovery.clone());
            monoio::spawn(async move {
                let ep = &upstreams.endpoints[index];
                engine::watch(ep, every, &stop, &discovery).await;
            });
        }
    }
    monoio::spawn(sweep_seen_keys(upstreams.clone(), stop.clone()));
    // The watchers notice the stop within one sleep slice; a probe in progress is
    // abandoned with the runtime.
    stop.wait().await;
}

/// Once a second: forgets the sticky keys that expired, and unpins those recorded on an
/// endpoint that stopped being routable since the last pass (Olla's purge of dead
/// endpoints: their next request is a `repin`).
async fn sweep_seen_keys(upstreams: Arc<Upstreams>, stop: Arc<StopSignal>) {
    let endpoints = &upstreams.endpoints;
    let mut was_routable = vec![true; endpoints.len()];
    while !stop.is_triggered() {
        monoio::time::sleep(std::time::Duration::from_secs(1)).await;
        let now = crate::clock::now_ms();
        let routable: Vec<bool> = endpoints
            .iter()
            .map(|ep| ep.health().is_routable(now))
            .collect();
        let went_down =
            |i: usize| was_routable.get(i) == Some(&true) && routable.get(i) == Some(&false);
        upstreams.seen.sweep(now, went_down);
        was_routable = routable;
    }
}
