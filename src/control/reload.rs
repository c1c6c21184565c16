//! Applying a reload on the control thread: read the configuration again through its
//! source, validate it (a file that fails is rejected whole, and the running generation
//! stays), and build the next generation from it (`crate::live`).

use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::events::Kind;
use crate::live::{self, Live};
use crate::log::{error, info, warning};
use crate::reload::Applied;

/// Where a reload reads the configuration from: the file ringway was started with,
/// with the command line's overrides applied again.
pub type ConfigSource = Box<dyn Fn() -> Result<Config, ConfigError> + Send>;

/// Reads and validates the configuration again: the next generation and what the
/// reload says, or why the running one stays.
pub(super) fn apply(
    running: &Live,
    source: Option<&ConfigSource>,
) -> Result<(Live, Applied), String> {
    let events = &running.upstreams.events;
    let Some(source) = source else {
        let why = "nothing to reload: ringway was started without a configuration file";
        warning!("reload: {why}");
        return Err(why.into());
    };
    let config = match source() {
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
    crate::log::set_level(config.log_level);
    let config = Arc::new(config);
    let next = running.next(config.clone(), &config.endpoints);
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
