//! `ringway demo`: ringway in front of two in-process mock backends, so a newcomer can
//! send a chat completion through it seconds after cloning.

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use ringway_mock::MockConfig;

use crate::config::Config;

/// Starts two mock backends on free loopback ports and ringway in front of them (on the
/// configured listen address), prints what to try, and serves until stopped.
pub fn run(base: Config, token_delay_ms: u64) -> Result<(), Box<dyn Error>> {
    let any_port: SocketAddr = "127.0.0.1:0".parse()?;
    let names = ["mock-a", "mock-b"];
    let mocks = names
        .into_iter()
        .map(|name| {
            let config = MockConfig {
                token_delay: Duration::from_millis(token_delay_ms),
                tokens: 24,
                ..MockConfig::named(name)
            };
            ringway_mock::spawn(any_port, config)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut text = format!(
        "[server]\nlisten = \"{}\"\nshards = {}\n[proxy]\nbalancer = \"round-robin\"\n",
        base.server.listen, base.server.shards
    );
    for (name, mock) in names.iter().zip(&mocks) {
        text += &format!(
            "[[endpoints]]\nname = \"{name}\"\nurl = \"http://{}\"\ntype = \"ollama\"\n",
            mock.addr()
        );
    }
    let config = Config::from_toml(&text, "the demo configuration")?;
    let server = crate::start(config)?;
    let addr = server.local_addr();
    println!(
        r#"
ringway demo: listening on http://{addr}, balancing round-robin over two mock backends
({mocks}). Try:

  curl -s http://{addr}/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{{"model":"llama3.2:latest","messages":[{{"role":"user","content":"Hello"}}]}}'

  curl -sN http://{addr}/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{{"model":"llama3.2:latest","stream":true,"messages":[{{"role":"user","content":"Hello"}}]}}'

  curl -sN http://{addr}/api/chat -d '{{"model":"llama3.2:latest","messages":[{{"role":"user","content":"Hello"}}]}}'

  curl -si http://{addr}/v1/models      # see X-Olla-Endpoint alternate between the mocks

Ctrl-C to stop."#,
        mocks = names
            .iter()
            .zip(&mocks)
            .map(|(name, m)| format!("{name} on {}", m.addr()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    server.wait()?;
    Ok(())
}
