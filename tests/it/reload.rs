//! Live reconfiguration: the config file re-read while ringway serves (SIGHUP,
//! `POST /internal/reload`, `Server::reload`). A valid file is applied without dropping
//! anything; a broken one changes nothing; backends keep their state by name.

use std::time::Duration;

use super::harness::*;

/// Mocks whose streams last ~80 ms (16 tokens, 5 ms apart): a reload always finds
/// some in flight.
fn slow_mock(name: &str) -> MockServer {
    mock_with(MockConfig {
        tokens: 16,
        token_delay: Duration::from_millis(5),
        ..MockConfig::named(name)
    })
}

/// ringway started from a config file (so it can be reloaded), on 2 shards.
fn proxy_from_file(file: &TempFile) -> ringway::Server {
    let config = ringway::Config::load(&file.0).expect("valid test config");
    let server = ringway::start(config).expect("start ringway");
    let settled = eventually(Duration::from_secs(5), || {
        let page = status_page(&server);
        page["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["status"] == "healthy")
    });
    assert!(settled, "endpoints were not healthy within 5 s");
    server
}

fn config(endpoints: &[Ep<'_>]) -> String {
    config_text(endpoints, "shards = 2\n", "")
}

fn generation(proxy: &ringway::Server) -> u64 {
    let page = one_shot(
        proxy.local_addr(),
        b"GET /internal/status HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    page.json()["config"]["generation"].as_u64().unwrap()
}

/// 16 clients for 10 s while three reloads add an endpoint, remove one (its streams in
/// flight finish) and move one to another address; then a broken file. Not one request
/// fails, and each backend gets traffic exactly while the running file names it.
#[test]
fn reloads_under_load_lose_no_request() {
    let (a, b, c, d) = (
        slow_mock("a"),
        slow_mock("b"),
        slow_mock("c"),
        slow_mock("d"),
    );
    let file = TempFile::new(&config(&[Ep::new("a", &a), Ep::new("b", &b)]));
    let proxy = proxy_from_file(&file);
    let addr = proxy.local_addr();
    let load = ChatLoad::start(addr, 16);
    let pause = || std::thread::sleep(Duration::from_millis(2500));
    pause();
    // 1: c joins.
    std::fs::write(
        &file.0,
        config(&[Ep::new("a", &a), Ep::new("b", &b), Ep::new("c", &c)]),
    )
    .unwrap();
    assert_eq!(proxy.reload(), Ok(2));
    pause();
    let c_then = c.stats().requests();
    assert!(c_then > 0, "c got no traffic after it was added");
    // 2: a leaves; what it was streaming finishes.
    std::fs::write(&file.0, config(&[Ep::new("b", &b), Ep::new("c", &c)])).unwrap();
    assert_eq!(proxy.reload(), Ok(3));
    std::thread::sleep(Duration::from_millis(500));
    let a_after = a.stats().requests();
    pause();
    // 3: b moves to d's address.
    std::fs::write(&file.0, config(&[Ep::new("b", &d), Ep::new("c", &c)])).unwrap();
    assert_eq!(proxy.reload(), Ok(4));
    std::thread::sleep(Duration::from_millis(500));
    let b_after = b.stats().requests();
    std::thread::sleep(Duration::from_millis(1500));
    // A broken file: rejected, nothing changes.
    std::fs::write(&file.0, "[server\nlisten = ").unwrap();
    let rejected = proxy.reload().unwrap_err();
    assert!(rejected.contains("config error in"), "{rejected}");
    assert_eq!(generation(&proxy), 4);
    std::thread::sleep(Duration::from_millis(1000));
    let (served, failed) = load.stop();
    assert_eq!(failed, 0, "requests failed across the reloads");
    assert!(served > 500, "only {served} requests in 10 s");
    assert_eq!(
        a.stats().requests(),
        a_after,
        "a got requests after it was removed"
    );
    assert_eq!(
        b.stats().requests(),
        b_after,
        "b's old address got requests after the move"
    );
    assert!(d.stats().requests() > 0, "b's new address got no traffic");
    assert!(c.stats().requests() > c_then);
    assert_eq!(a.stats().aborted_streams(), 0, "a's streams were cut");
    assert_eq!(b.stats().aborted_streams(), 0, "b's streams were cut");
}

/// An endpoint the reload does not touch keeps its health and its counters; one it adds
/// gets no request before its first passing check (a dead one, none at all).
#[test]
fn untouched_endpoints_keep_their_state_and_new_ones_wait_for_a_check() {
    let (a, b) = (mock("a"), mock("b"));
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let health = "[health]\ncheck_interval_ms = 100\nunhealthy_threshold = 1\n";
    let text = |eps: &[Ep<'_>]| config_text(eps, "shards = 2\n", health);
    let file = TempFile::new(&text(&[Ep::new("a", &a), Ep::new("b", &b)]));
    let proxy = proxy_from_file(&file);
    let addr = proxy.local_addr();
    let chat_once = || {
        one_shot(
            addr,
            post("/api/chat", &chat("llama3.2:latest", false), "").as_bytes(),
        )
    };
    for _ in 0..6 {
        assert_eq!(chat_once().status, 200);
    }
    let count = |name: &str| {
        endpoint_status(&proxy, name)["request_count"]
            .as_u64()
            .unwrap()
    };
    let a_count = count("a");
    assert_eq!(a_count + count("b"), 6);
    b.control().set_healthy(false);
    assert!(eventually(Duration::from_secs(5), || {
        endpoint_status(&proxy, "b")["status"] == "offline"
    }));
    let b_changed = endpoint_status(&proxy, "b")["last_change"].clone();
    // The reload changes a's priority, leaves b alone and adds a dead endpoint.
    std::fs::write(
        &file.0,
        text(&[
            Ep::new("a", &a).priority(50),
            Ep::new("b", &b),
            Ep::at("dead", dead_addr),
        ]),
    )
    .unwrap();
    assert_eq!(proxy.reload(), Ok(2));
    assert_eq!(count("a"), a_count, "a's counters survived the reload");
    assert_eq!(endpoint_status(&proxy, "a")["priority"], 50);
    let b_now = endpoint_status(&proxy, "b");
    assert_eq!(b_now["status"], "offline", "b's health survived the reload");
    assert_eq!(b_now["last_change"], b_changed);
    assert_eq!(endpoint_status(&proxy, "dead")["status"], "offline");
    for _ in 0..6 {
        let r = chat_once();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-olla-endpoint"), Some("a"));
    }
    assert_eq!(count("dead"), 0);
}

/// Reloads do not check the fleet at once: a backend they carry keeps its schedule of
/// health checks, model-list and engine reads (checked every 2 s here, so no check is
/// due while five reloads run), and a new one is checked at once.
#[test]
fn reloads_keep_carried_backends_check_schedule() {
    let (a, b, c) = (mock("a"), mock("b"), mock("c"));
    let extra = "[health]\ncheck_interval_ms = 2000\n[models]\nloaded_refresh_interval_ms = 2000\n";
    let text = |eps: &[Ep<'_>]| config_text(eps, "shards = 2\n", extra);
    let file = TempFile::new(&text(&[Ep::new("a", &a), Ep::new("b", &b)]));
    let proxy = proxy_from_file(&file);
    let reads = |m: &MockServer| (m.stats().health_checks(), m.stats().model_lists());
    // The first model-list and engine reads follow the first passing check.
    std::thread::sleep(Duration::from_millis(300));
    let before = [reads(&a), reads(&b)];
    let started = std::time::Instant::now();
    for priority in [10, 20, 30, 40, 50] {
        let eps = [Ep::new("a", &a).priority(priority), Ep::new("b", &b)];
        std::fs::write(&file.0, text(&eps)).unwrap();
        proxy.reload().expect("a valid file");
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = [reads(&a), reads(&b)];
    if started.elapsed() < Duration::from_millis(1500) {
        assert_eq!(after, before, "no check, list or engine read fell due");
    }
    // A new endpoint is checked, and its models read, at once.
    let eps = [Ep::new("a", &a), Ep::new("b", &b), Ep::new("c", &c)];
    std::fs::write(&file.0, text(&eps)).unwrap();
    proxy.reload().expect("a valid file");
    assert!(eventually(Duration::from_secs(1), || {
        endpoint_status(&proxy, "c")["status"] == "healthy" && c.stats().model_lists() >= 1
    }));
}

/// `POST /internal/reload` answers how it went; other methods get 405; the status
/// page shows the generation and when it was loaded; SIGHUP-less start (no file) refuses.
#[test]
fn the_reload_page_answers_how_it_went() {
    let a = mock("a");
    let file = TempFile::new(&config(&[Ep::new("a", &a)]));
    let proxy = proxy_from_file(&file);
    let addr = proxy.local_addr();
    let page = one_shot(addr, b"GET /internal/status HTTP/1.1\r\nHost: t\r\n\r\n").json();
    assert_eq!(page["config"]["generation"], 1);
    assert_eq!(page["config"]["reloadable"], true);
    let loaded = page["config"]["loaded_unix_ms"].as_u64().unwrap();

    let get = one_shot(addr, b"GET /internal/reload HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(get.status, 405);
    assert_eq!(get.header("allow"), Some("POST"));
    assert_eq!(generation(&proxy), 1, "a GET reloads nothing");

    let post = |body: &str| {
        one_shot(
            addr,
            super::harness::post("/internal/reload", body, "").as_bytes(),
        )
    };
    let ok = post("");
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["generation"], 2);
    let page = one_shot(addr, b"GET /internal/status HTTP/1.1\r\nHost: t\r\n\r\n").json();
    assert_eq!(page["config"]["generation"], 2);
    assert!(page["config"]["loaded_unix_ms"].as_u64().unwrap() >= loaded);

    // A file naming a key ringway does not know: rejected with the file and key named.
    std::fs::write(
        &file.0,
        config(&[Ep::new("a", &a)]) + "[proxy]\nbalancr = \"x\"\n",
    )
    .unwrap();
    let bad = post("");
    assert_eq!(bad.status, 422);
    let error = bad.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains(&file.0.display().to_string()) && error.contains("balancr"),
        "{error}"
    );
    assert_eq!(generation(&proxy), 2);

    // A key that needs a restart: applied otherwise, with a warning naming it.
    std::fs::write(
        &file.0,
        config_text(&[Ep::new("a", &a)], "shards = 3\n", ""),
    )
    .unwrap();
    let warned = post("");
    assert_eq!(warned.status, 200);
    let warnings = warned.json()["warnings"].to_string();
    assert!(warnings.contains("server.shards"), "{warnings}");

    // Started from text, not a file: nothing to reload.
    let from_text = proxy_from_text_only(&a);
    assert!(
        from_text
            .reload()
            .unwrap_err()
            .contains("without a configuration file")
    );
}

fn proxy_from_text_only(a: &MockServer) -> ringway::Server {
    proxy(&[Ep::new("a", a)], "", "")
}
