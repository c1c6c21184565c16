//! Olla's YAML configuration file, run as is: its routes, its balancer, an endpoint
//! behind the credentials it describes.

use crate::credentials::start;
use crate::harness::*;
use ringway::Config;

/// An Olla file of the shape Olla ships: two endpoints (one behind a bearer token read
/// from the environment, with a default), round-robin, the usual ignored sections.
const OLLA_YAML: &str = r#"
server:
  host: "localhost"
  port: 40114
  read_timeout: 30s
  write_timeout: 0s
  shutdown_timeout: 5s
  request_logging: false
  rate_limits:
    global_requests_per_minute: 1000
    per_ip_requests_per_minute: 100
proxy:
  engine: "olla"
  profile: "auto"
  load_balancer: "round-robin"
  connection_timeout: 5s
  response_timeout: 10m
  read_timeout: 5m
discovery:
  type: "static"
  static:
    endpoints:
      - url: "http://{A}"
        name: "alpha"
        type: "openai"
        priority: 100
        check_interval: 1h
        check_timeout: 2s
      - url: "http://{B}"
        name: "beta"
        type: "openai-compatible"
        priority: 100
        check_interval: 1h
        check_timeout: 2s
        auth:
          type: bearer
          token: "${RINGWAY_IT_SURELY_UNSET_TOKEN:-beta-secret}"
        headers:
          X-Tenant-ID: "team-a"
  model_discovery:
    enabled: true
    interval: 5m
model_registry:
  type: "memory"
  routing_strategy:
    type: "strict"
translators:
  anthropic:
    enabled: true
logging:
  level: "warn"
  format: "text"
"#;

#[test]
fn ollas_yaml_file_serves_chats_on_ollas_routes_and_the_root_api() {
    let a = mock("alpha");
    let mut locked = MockConfig::named("beta");
    locked.api_key = Some("beta-secret".into());
    let b = mock_with(locked);
    let yaml = OLLA_YAML
        .replace("{A}", &a.addr().to_string())
        .replace("{B}", &b.addr().to_string());
    // A `.yaml` file is read as Olla's.
    let path = std::env::temp_dir().join(format!("ringway-test-olla-{}.yaml", std::process::id()));
    std::fs::write(&path, yaml).unwrap();
    let _cleanup = TempFile(path.clone());
    let config = Config::load(&path).expect("Olla's file loads");
    // What ringway does not do is said, by key.
    let warnings = config.warnings.join("\n");
    assert!(warnings.contains("`proxy.engine`"), "{warnings}");
    // The Anthropic translator is ringway's `[anthropic]`: no news.
    assert!(!warnings.contains("translators"), "{warnings}");
    assert!(config.anthropic.enabled && config.anthropic.passthrough);
    let proxy = start(config);
    // beta's model list was read with its token: both endpoints serve the model.
    assert_eq!(endpoint_status(&proxy, "beta")["model_count"], 2);
    let mut served = Vec::new();
    for path in [
        "/olla/openai/v1/chat/completions",
        "/olla/openai-compatible/v1/chat/completions",
        "/olla/proxy/v1/chat/completions",
        "/v1/chat/completions",
    ] {
        let r = one_shot(
            proxy.local_addr(),
            post(path, &chat("llama3.2:latest", false), "").as_bytes(),
        );
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert!(r.text().contains("choices"), "{}", r.text());
        served.push(r.header("x-olla-endpoint").unwrap().to_string());
    }
    // Round-robin, as the file says: both endpoints served.
    assert!(served.iter().any(|e| e == "alpha"), "{served:?}");
    assert!(served.iter().any(|e| e == "beta"), "{served:?}");
    assert!(b.stats().requests() >= 1);
}
