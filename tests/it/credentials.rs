//! Endpoint credentials in Olla's shape (an `auth` block) and static `headers`: what the
//! endpoint receives, and what of the client's never reaches it.

use std::time::Duration;

use crate::harness::*;
use ringway::Config;

/// Starts `config` on a free port with one shard, once every endpoint has been checked.
pub(crate) fn start(mut config: Config) -> ringway::Server {
    config.set_listen("127.0.0.1:0").unwrap();
    config.server.shards = 1;
    let server = ringway::start(config).expect("start ringway");
    let settled = eventually(Duration::from_secs(5), || {
        let status = status_page(&server);
        let endpoints = status["endpoints"].as_array().unwrap();
        endpoints
            .iter()
            .all(|e| e["last_check_status"] == 200 && !e["model_count"].is_null())
    });
    assert!(settled, "endpoints not healthy: {}", status_page(&server));
    server
}

#[test]
fn basic_auth_and_static_headers_replace_the_clients_copies() {
    let a = mock("echo");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshards = 1\n[proxy]\nforward_client_auth = true\n\
         [health]\ncheck_interval_ms = 3600000\n\
         [[endpoints]]\nname = \"locked\"\nurl = \"http://{}\"\ntype = \"ollama\"\n\
         auth = {{ type = \"basic\", username = \"user\", password = \"pass\" }}\n\
         headers = {{ \"X-Tenant\" = \"acme\", \"X-Api-Key\" = \"static-key\" }}\n",
        a.addr()
    );
    let proxy = start(Config::from_toml(&text, "test").unwrap());
    // Even with forward_client_auth on, the client's copies of what the endpoint sets
    // itself never reach it; its other headers do.
    let r = one_shot(
        proxy.local_addr(),
        post(
            "/olla/proxy/mock/echo",
            "{}",
            "Authorization: Bearer client-token\r\nx-tenant: evil\r\nX-API-KEY: client-key\r\nX-Custom: kept\r\n",
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let headers = echoed_headers(&r);
    assert_eq!(values(&headers, "authorization"), ["Basic dXNlcjpwYXNz"]);
    assert_eq!(values(&headers, "x-tenant"), ["acme"]);
    assert_eq!(values(&headers, "x-api-key"), ["static-key"]);
    assert_eq!(values(&headers, "x-custom"), ["kept"]);
}
