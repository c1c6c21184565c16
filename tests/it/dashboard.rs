//! The dashboard's HTTP side (`/internal/ui/`): its files and its data, the ETag that
//! makes an unchanged answer a 304, and the API key rule. Its rendering in a browser is
//! tested in `tests/browser.rs`.

use std::time::Duration;

use crate::harness::*;

fn get(proxy: &ringway::Server, path: &str, headers: &str) -> Response {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n");
    one_shot(proxy.local_addr(), raw.as_bytes())
}

#[test]
fn the_page_and_its_files_are_served_from_the_binary() {
    let a = mock("a");
    let proxy = proxy(&[Ep::new("a", &a)], "", "");
    for (path, kind) in [
        ("/internal/ui/", "text/html"),
        ("/internal/ui", "text/html"),
        ("/internal/ui/app.js", "text/javascript"),
        ("/internal/ui/style.css", "text/css"),
        ("/internal/ui/data", "application/json"),
    ] {
        let r = get(&proxy, path, "");
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("Content-Type").unwrap().starts_with(kind),
            "{path}"
        );
        assert!(
            r.header("ETag").is_some_and(|t| t.starts_with('"')),
            "{path}"
        );
        let policy = r.header("Content-Security-Policy").unwrap();
        assert!(policy.contains("script-src 'self'"), "{path}: {policy}");
    }
    assert!(
        get(&proxy, "/internal/ui/", "")
            .text()
            .contains("/internal/ui/app.js")
    );
    assert_eq!(get(&proxy, "/internal/ui/nothing.js", "").status, 404);
}

#[test]
fn unchanged_data_answers_304_and_changed_data_a_new_tag() {
    let a = mock("a");
    let b = mock("b");
    let proxy = proxy(&[Ep::new("a", &a), Ep::new("b", &b)], "", "");
    let first = get(&proxy, "/internal/ui/data", "");
    let tag = first.header("ETag").unwrap().to_string();
    let data = first.json();
    assert_eq!(data["endpoints"][0]["name"], "a");
    assert_eq!(data["endpoints"][1]["status"], "healthy");
    assert_eq!(
        data["buckets"].as_array().unwrap().len() + 1,
        data["fleet"]["ttfb"].as_array().unwrap().len()
    );
    assert_eq!(data["events"][0]["kind"], "started");
    assert!(
        data["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "llama3.2:latest")
    );

    // Nothing changed (the dashboard's own requests are not counted in its data).
    let again = get(
        &proxy,
        "/internal/ui/data",
        &format!("If-None-Match: {tag}\r\n"),
    );
    assert_eq!(again.status, 304, "{}", again.text());
    assert!(again.body.is_empty());
    assert_eq!(again.header("ETag"), Some(tag.as_str()));
    assert_eq!(again.header("Content-Length"), None);
    let listed = format!("If-None-Match: \"x\", W/{tag}\r\n");
    assert_eq!(get(&proxy, "/internal/ui/data", &listed).status, 304);

    // A request served: new totals, a new tag.
    let mut client = Client::connect(proxy.local_addr());
    assert_eq!(
        client
            .post_json("/v1/chat/completions", &chat("llama3.2:latest", false), "")
            .status,
        200
    );
    let changed = get(
        &proxy,
        "/internal/ui/data",
        &format!("If-None-Match: {tag}\r\n"),
    );
    assert_eq!(changed.status, 200);
    assert_ne!(changed.header("ETag"), Some(tag.as_str()));
    assert_eq!(changed.json()["fleet"]["requests"], 1);

    // An endpoint going down is an event, with its name.
    b.stop();
    assert!(eventually(Duration::from_secs(3), || {
        client.post_json("/v1/chat/completions", &chat("llama3.2:latest", false), "");
        let data = get(&proxy, "/internal/ui/data", "").json();
        data["endpoints"][1]["status"] == "offline"
            && data["events"][0]["kind"] == "endpoint_down"
            && data["events"][0]["endpoint"] == "b"
    }));
}

#[test]
fn with_api_keys_the_page_loads_and_its_data_needs_the_key() {
    let a = mock("a");
    let keys = format!("api_keys = [\"{TEST_KEY}\"]");
    let proxy = proxy(&[Ep::new("a", &a)], &keys, "");
    assert_eq!(get(&proxy, "/internal/ui/", "").status, 200);
    assert_eq!(get(&proxy, "/internal/ui/app.js", "").status, 200);
    assert_eq!(get(&proxy, "/internal/ui/data", "").status, 401);
    let with_key = format!("X-Api-Key: {TEST_KEY}\r\n");
    assert_eq!(get(&proxy, "/internal/ui/data", &with_key).status, 200);
}
