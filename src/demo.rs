//! `ringway demo`: ringway in front of in-process mock backends, so a newcomer can send
//! a chat completion through it seconds after cloning: two Ollama-type mocks serving
//! `llama3.2:latest` and `qwen2.5:7b` (balanced, and Anthropic requests pass through to
//! their native `/v1/messages`), and an OpenAI-compatible one serving `gpt-4o-mini`
//! (Anthropic requests for it are translated).

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use ringway_mock::MockConfig;

use crate::config::Config;

/// The model of the demo's OpenAI-compatible mock.
const OPENAI_MODEL: &str = "gpt-4o-mini";

/// Starts the mock backends on free loopback ports and ringway in front of them (on the
/// configured listen address), prints what to try, and serves until stopped.
pub fn run(base: Config, token_delay_ms: u64) -> Result<(), Box<dyn Error>> {
    let any_port: SocketAddr = "127.0.0.1:0".parse()?;
    let names = ["mock-a", "mock-b", "mock-openai"];
    let types = ["ollama", "ollama", "openai"];
    let mocks = names
        .into_iter()
        .map(|name| {
            let mut config = MockConfig {
                token_delay: Duration::from_millis(token_delay_ms),
                tokens: 24,
                ..MockConfig::named(name)
            };
            if name == "mock-openai" {
                config.models = vec![OPENAI_MODEL.to_owned()];
            }
            ringway_mock::spawn(any_port, config)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut text = format!(
        "[server]\nlisten = \"{}\"\nshards = {}\n[proxy]\nbalancer = \"round-robin\"\n",
        base.server.listen, base.server.shards
    );
    // The configuration's TLS listener, if it has one (`ringway demo --config`).
    let (scheme, trust) = match &base.server.tls {
        Some(tls) => {
            let cert = tls.cert_file.display();
            let trust = format!(
                "\nTLS only (the certificate in {cert}): give curl its CA with --cacert FILE."
            );
            ("https", trust)
        }
        None => ("http", String::new()),
    };
    for ((name, kind), mock) in names.iter().zip(types).zip(&mocks) {
        text += &format!(
            "[[endpoints]]\nname = \"{name}\"\nurl = \"http://{}\"\ntype = \"{kind}\"\n",
            mock.addr()
        );
    }
    let mut config = Config::from_toml(&text, "the demo configuration")?;
    config.server.tls = base.server.tls.clone();
    let server = crate::start(config)?;
    let addr = server.local_addr();
    println!(
        r#"
ringway demo: listening on {scheme}://{addr}, in front of three mock backends ({mocks}):
llama3.2:latest and qwen2.5:7b are balanced round-robin over the two Ollama-type mocks,
{OPENAI_MODEL} is on the OpenAI-compatible one.{trust} Try:

  curl -s {scheme}://{addr}/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{{"model":"llama3.2:latest","messages":[{{"role":"user","content":"Hello"}}]}}'

  curl -sN {scheme}://{addr}/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{{"model":"llama3.2:latest","stream":true,"messages":[{{"role":"user","content":"Hello"}}]}}'

  curl -sN {scheme}://{addr}/api/chat -d '{{"model":"llama3.2:latest","messages":[{{"role":"user","content":"Hello"}}]}}'

  curl -si {scheme}://{addr}/v1/models      # see X-Olla-Endpoint alternate between the mocks

Anthropic's Messages API (Claude Code: ANTHROPIC_BASE_URL={scheme}://{addr}), passed through
to the Ollama mocks' own /v1/messages (X-Olla-Mode: passthrough), or translated to the
OpenAI mock's chat API:

  curl -sN {scheme}://{addr}/v1/messages -H 'content-type: application/json' -H 'x-api-key: any' \
    -d '{{"model":"llama3.2:latest","max_tokens":64,"stream":true,"messages":[{{"role":"user","content":"Hello"}}]}}'

  curl -sN {scheme}://{addr}/v1/messages -H 'content-type: application/json' -H 'x-api-key: any' \
    -d '{{"model":"{OPENAI_MODEL}","max_tokens":64,"stream":true,"messages":[{{"role":"user","content":"Hello"}}]}}'

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
