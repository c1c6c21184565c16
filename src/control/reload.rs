//! Applying a reload on the control thread: read the configuration again through its
//! source, validate it (a file that fails is rejected whole, and the running generation
//! stays), and build the next generation from it (`crate::live`). Validating it reads
//! the TLS listener's certificate and key again: the certificate of a new generation is
//! put in force for new connections (`tls/listener.rs`).

use std::sync::{Arc, mpsc};

use crate::config::{Config, ConfigError};
use crate::events::Kind;
use crate::live::expand::{self, Answers};
use crate::live::{self, Live};
use crate::log::{error, info, warning};
use crate::reload::Applied;
use crate::tls::listener::CertStore;

/// Where a reload reads the configuration from: the file ringway was started with,
/// with the command line's overrides applied again. Called on a thread of its own:
/// reading the file resolves its host names, which may take seconds.
pub type ConfigSource = Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// A configuration being read.
pub(super) type Reading = mpsc::Receiver<Result<Config, ConfigError>>;

/// Starts reading the configuration through `source`, off the control thread; `None`
/// when there is nothing to read (the answer is then [`nothing_to_reload`]).
pub(super) fn read(source: Option<&ConfigSource>) -> Option<Reading> {
    let source = source?.clone();
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("ringway-reload".into())
        .spawn(move || {
            let _ = tx.send(source());
        });
    match spawned {
        Ok(_) => Some(rx),
        Err(e) => {
            error!("reload: cannot start a thread to read the configuration: {e}");
            None
        }
    }
}

/// Why a reload without a source does nothing.
pub(super) fn nothing_to_reload() -> String {
    let why = "nothing to reload: ringway was started without a configuration file";
    warning!("reload: {why}");
    why.into()
}

/// Turns the configuration read into the next generation (its host names at their
/// latest `answers`) and what the reload says, or says why the running one stays.
pub(super) fn apply(
    running: &Live,
    read: Result<Config, ConfigError>,
    answers: &Answers,
    certs: Option<&CertStore>,
) -> Result<(Live, Applied), String> {
    let events = &running.upstreams.events;
    let config = match read {
        Ok(config) => config,
        Err(e) => {
            let why = format!("{e}; the running configuration is kept");
            error!("reload rejected: {why}");
            events.record(Kind::ConfigError, None, why.clone());
            return Err(why);
        }
    };
    let mut warnings = live::restart_only(&running.config, &config);
    warnings.extend(config.warnings.iter().cloned());
    let config = live::keep_restart_only(&running.config, config);
    if let (Some(certs), Some(tls)) = (certs, &config.server.tls) {
        certs.install(tls.clone());
        info!(
            "reload: TLS certificate read again from {} (key {}); new connections use it",
            tls.cert_file.display(),
            tls.key_file.display()
        );
    }
    crate::log::set_level(config.log_level);
    let config = Arc::new(config);
    let (endpoints, too_many) = expand::endpoints(&config, answers);
    warnings.extend(too_many);
    let next = running.next(config.clone(), &endpoints);
    for w in &warnings {
        warning!("reload: {w}");
    }
    let summary = format!(
        "configuration reloaded from {}: generation {}, {} endpoint(s)",
        config.origin,
        next.generation,
        next.upstreams.endpoints.len()
    );
    info!("{summary}");
    events.record(Kind::Reloaded, None, summary);
    let applied = Applied {
        generation: next.generation,
        warnings,
    };
    Ok((next, applied))
}
