//! Health checking and failover: a backend killed under load costs no request, a
//! restarted one is back within a second, retryable answers fail over, the breaker keeps
//! a failing endpoint out, and one checker serves all shards.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::*;

fn chat_request() -> String {
    post("/v1/chat/completions", &chat("llama3.2:latest", false), "")
}

/// What a client saw: when the answer arrived, its status (0 for a transport error)
/// and the endpoint that served it.
type Seen = (Instant, u16, String);

/// Runs `threads` clients sending requests back to back until `stop`.
fn load(
    addr: SocketAddr,
    threads: usize,
    stop: Arc<AtomicBool>,
) -> Vec<thread::JoinHandle<Vec<Seen>>> {
    (0..threads)
        .map(|_| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut seen = Vec::new();
                let mut client = Client::connect(addr);
                // Bounded in time by `stop`, in count as a backstop.
                for _ in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        client.request(chat_request().as_bytes())
                    })) {
                        Ok(r) => {
                            let ep = r.header("X-Olla-Endpoint").unwrap_or("").to_string();
                            seen.push((Instant::now(), r.status, ep));
                        }
                        Err(_) => {
                            seen.push((Instant::now(), 0, String::new()));
                            client = Client::connect(addr);
                        }
                    }
                }
                seen
            })
        })
        .collect()
}

#[test]
fn a_backend_killed_under_load_costs_no_request_and_returns_on_restart() {
    // b answers slowly, so that many requests are in flight on it when it is killed: all
    // of them fail at the same instant, which must neither reach a client nor keep b
    // out of rotation once it is back.
    let a = mock_with(MockConfig {
        first_token_delay: Duration::from_millis(20),
        ..MockConfig::named("a")
    });
    let mut b = MockProcess::spawn(
        "127.0.0.1:0".parse().unwrap(),
        &["--name", "b", "--first-token-delay-ms", "20"],
    );
    let endpoints = [Ep::new("a", &a), Ep::at("b", b.addr)];
    let proxy = proxy(&endpoints, "shards = 2", "");
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(proxy.local_addr(), 16, stop.clone());
    thread::sleep(Duration::from_millis(800));
    b.kill();
    let killed = Instant::now();
    assert!(eventually(Duration::from_secs(1), || endpoint_status(
        &proxy, "b"
    )["status"]
        == "offline"));
    thread::sleep(Duration::from_millis(500));
    let _b = MockProcess::spawn(b.addr, &["--name", "b", "--first-token-delay-ms", "20"]);
    let restarted = Instant::now();
    thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Seen> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let failed: Vec<_> = seen
        .iter()
        .filter(|(_, status, _)| *status != 200)
        .collect();
    let by_b = |from: Instant, to: Instant| {
        seen.iter()
            .filter(|(t, _, ep)| ep == "b" && *t >= from && *t < to)
            .count()
    };
    assert!(seen.len() > 200, "only {} requests", seen.len());
    assert!(
        by_b(killed - Duration::from_secs(1), killed) > 20,
        "b served little before the kill"
    );
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        seen.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        by_b(restarted, Instant::now()) > 0,
        "b got no traffic within 1 s of its restart"
    );
}

#[test]
fn a_restarted_backend_is_back_within_a_second() {
    let a = mock("a");
    let b = mock("b");
    let b_addr = b.addr();
    let proxy = proxy(&[Ep::new("a", &a), Ep::new("b", &b)], "", "");
    b.stop();
    // Requests notice (passive detection) and are all served by a.
    let mut client = Client::connect(proxy.local_addr());
    assert!(eventually(Duration::from_secs(2), || {
        let r = client.request(chat_request().as_bytes());
        assert_eq!((r.status, r.header("X-Olla-Endpoint")), (200, Some("a")));
        endpoint_status(&proxy, "b")["status"] == "offline"
    }));
    thread::sleep(Duration::from_millis(1500)); // long enough for the probing to back off

    let b = ringway_mock::spawn(b_addr, MockConfig::named("b")).expect("restart b");
    let restarted = Instant::now();
    assert!(
        eventually(
            Duration::from_secs(1),
            || endpoint_status(&proxy, "b")["status"] == "healthy"
        ),
        "b not back within 1 s"
    );
    let back_after = restarted.elapsed();
    // And it takes traffic again.
    assert!(eventually(Duration::from_secs(1), || {
        client
            .request(chat_request().as_bytes())
            .header("X-Olla-Endpoint")
            == Some("b")
    }));
    assert!(b.stats().requests() > 0);
    eprintln!("b back in rotation {back_after:?} after its restart");
}

#[test]
fn retryable_statuses_fail_over_only_when_configured() {
    let (a, b) = (mock("a"), mock("b"));
    b.control().set_status_override(Some(503));
    let endpoints = [Ep::new("a", &a), Ep::new("b", &b)];
    let rr = "[sticky]\nenabled = false\n[proxy]\nbalancer = \"round-robin\"";

    // Default retry_on_status includes 503: every client request succeeds on a.
    let proxy_ = proxy(&endpoints, "", rr);
    let mut client = Client::connect(proxy_.local_addr());
    for _ in 0..10 {
        let r = client.request(chat_request().as_bytes());
        assert_eq!(
            (r.status, r.header("X-Olla-Endpoint")),
            (200, Some("a")),
            "{}",
            r.text()
        );
    }
    assert!(b.stats().requests() > 0, "b was tried");
    drop(proxy_);

    // Without 503 in the list the backend's answer is passed through as is.
    let proxy_ = proxy(&endpoints, "", &format!("{rr}\nretry_on_status = []"));
    let mut client = Client::connect(proxy_.local_addr());
    let statuses: Vec<u16> = (0..4)
        .map(|_| client.request(chat_request().as_bytes()).status)
        .collect();
    assert!(
        statuses.contains(&503) && statuses.contains(&200),
        "{statuses:?}"
    );
}

#[test]
fn when_every_endpoint_refuses_the_last_answer_is_passed_on() {
    let (a, b) = (mock("a"), mock("b"));
    a.control().set_status_override(Some(503));
    b.control().set_status_override(Some(503));
    let proxy = proxy(&[Ep::new("a", &a), Ep::new("b", &b)], "", "");
    let r = one_shot(proxy.local_addr(), chat_request().as_bytes());
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json()["error"]["code"],
        "mock_status",
        "the endpoint's own body"
    );
    assert_eq!(
        a.stats().requests() + b.stats().requests(),
        2,
        "each tried once"
    );
}

#[test]
fn the_breaker_keeps_a_failing_endpoint_out_then_lets_it_back() {
    let (a, b) = (mock("a"), mock("b"));
    // b fails its requests but passes its health checks, so the breaker alone keeps it
    // out (a failing check would take it down, racing the status read below).
    b.control().set_inference_status_override(Some(503));
    let proxy = proxy(
        &[Ep::new("a", &a), Ep::new("b", &b)],
        "",
        "[proxy]\nbalancer = \"round-robin\"\n[sticky]\nenabled = false\n[health]\ncheck_interval_ms = 3600000\nbreaker_threshold = 3\nbreaker_cooldown_ms = 600",
    );
    let mut client = Client::connect(proxy.local_addr());
    for _ in 0..20 {
        assert_eq!(client.request(chat_request().as_bytes()).status, 200);
    }
    assert_eq!(b.stats().requests(), 3, "open after 3 consecutive failures");
    assert_eq!(endpoint_status(&proxy, "b")["status"], "circuit-open");

    // b recovers; after the cool-down a trial request closes the breaker.
    b.control().set_inference_status_override(None);
    thread::sleep(Duration::from_millis(700));
    let served_by_b = (0..4)
        .filter(|_| {
            client
                .request(chat_request().as_bytes())
                .header("X-Olla-Endpoint")
                == Some("b")
        })
        .count();
    assert!(served_by_b >= 1);
    assert_eq!(endpoint_status(&proxy, "b")["status"], "healthy");
}

/// A failure seen late (a slow 503) opens the breaker for its whole cool-down from then,
/// not from when the request started: with a 1 s cool-down and a 1.5 s answer, a clock
/// read at the start would open it "until" a time already past.
#[test]
fn a_slow_failure_opens_the_breaker_from_when_it_is_seen() {
    let a = mock("a");
    let proxy = proxy(
        &[Ep::new("a", &a)],
        "",
        "[health]\ncheck_interval_ms = 3600000\nbreaker_threshold = 1\nbreaker_cooldown_ms = 1000\nbreaker_max_cooldown_ms = 1000",
    );
    let r = one_shot(
        proxy.local_addr(),
        post(
            "/v1/chat/completions",
            &chat("llama3.2:latest", false),
            "X-Mock-Status: 503\r\nX-Mock-First-Token-Delay-Ms: 1500\r\n",
        )
        .as_bytes(),
    );
    let seen = Instant::now();
    assert_eq!(
        r.status, 503,
        "no other endpoint: the endpoint's own answer"
    );
    assert_eq!(endpoint_status(&proxy, "a")["status"], "circuit-open");
    assert!(
        seen.elapsed() < Duration::from_millis(800),
        "the check came too late"
    );
    // And it closes again once the cool-down has passed (half-open).
    assert!(eventually(Duration::from_secs(3), || endpoint_status(
        &proxy, "a"
    )["status"]
        == "healthy"));
}

#[test]
fn one_health_checker_whatever_the_number_of_shards() {
    let mut counts = Vec::new();
    for shards in [1, 4] {
        let a = mock("a");
        let proxy = proxy(
            &[Ep::new("a", &a)],
            &format!("shards = {shards}"),
            "[health]\ncheck_interval_ms = 100",
        );
        let (start, since) = (a.stats().health_checks(), Instant::now());
        thread::sleep(Duration::from_millis(1000));
        let n = a.stats().health_checks() - start;
        counts.push((n, since.elapsed()));
        drop(proxy);
    }
    // Checks never come faster than the interval (each waits a whole interval after the
    // last), however many shards: the bound holds on a loaded machine, where checks can
    // only come later. And they do come.
    for &(n, window) in &counts {
        let most = window.as_millis() as u64 / 100 + 1;
        assert!(
            (2..=most).contains(&n),
            "{n} checks in {window:?}: {counts:?}"
        );
    }
}

#[test]
fn the_status_page_describes_each_endpoint() {
    let a = mock("a");
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = proxy(
        &[
            Ep::new("a", &a),
            Ep::at("dead", dead).kind("vllm").priority(7),
        ],
        "",
        "",
    );
    one_shot(proxy.local_addr(), chat_request().as_bytes());
    let page = status_page(&proxy);
    assert_eq!(page["total_count"], 2);
    let a_status = endpoint_status(&proxy, "a");
    assert_eq!(a_status["status"], "healthy");
    assert_eq!(a_status["type"], "ollama");
    assert_eq!(a_status["url"], format!("http://{}", a.addr()));
    assert_eq!(a_status["last_check_status"], 200);
    assert!(a_status["last_check"].is_string());
    assert!(a_status["last_check_latency_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(a_status["health_check"]["path"], "/");
    assert_eq!(a_status["in_flight"], 0);
    let dead_status = endpoint_status(&proxy, "dead");
    assert_eq!(dead_status["priority"], 7);
    assert_eq!(dead_status["health_check"]["path"], "/health");
    // Checked once at start (refused) and, with the default threshold of 2, marked
    // down by the next probe or at once by a request that cannot connect.
    assert!(eventually(Duration::from_secs(2), || {
        one_shot(
            proxy.local_addr(),
            b"GET /olla/vllm/health HTTP/1.1\r\nHost: t\r\n\r\n",
        );
        endpoint_status(&proxy, "dead")["status"] == "offline"
    }));
    assert_eq!(status_page(&proxy)["routable_count"], 1);
}

#[test]
fn when_every_endpoint_is_unreachable_the_error_names_them() {
    let dead = |_| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (x, y) = (dead(0), dead(1));
    let proxy = proxy(&[Ep::at("x", x), Ep::at("y", y)], "", "");
    let r = one_shot(proxy.local_addr(), chat_request().as_bytes());
    assert_eq!(r.status, 502);
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("tried x, y") || message.contains("tried y, x"),
        "{message}"
    );
    // Both are now known to be down: no more connect attempts, a quick 503.
    let r = one_shot(proxy.local_addr(), chat_request().as_bytes());
    assert_eq!(r.status, 503);
    assert_eq!(r.header("Retry-After"), Some("1"));
}

#[test]
fn max_attempts_bounds_the_endpoints_tried() {
    let mocks = [mock("a"), mock("b"), mock("c")];
    for m in &mocks {
        m.control().set_status_override(Some(503));
    }
    let endpoints: Vec<Ep<'_>> = ["a", "b", "c"]
        .iter()
        .zip(&mocks)
        .map(|(n, m)| Ep::new(n, m))
        .collect();
    let proxy = proxy(&endpoints, "", "[proxy]\nmax_attempts = 2");
    let r = one_shot(proxy.local_addr(), chat_request().as_bytes());
    assert_eq!(r.status, 503, "the second endpoint's own answer");
    let tried: u64 = mocks.iter().map(|m| m.stats().requests()).sum();
    assert_eq!(tried, 2);
}
