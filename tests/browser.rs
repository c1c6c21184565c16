//! The dashboard (`/internal/ui/`) in a real browser: headless Chromium, driven over the
//! DevTools protocol (`browser/cdp.rs`), loads the page from a ringway in front of two
//! mocks while traffic flows, and the test reads the DOM the page's script built.
//!
//! A test binary of its own: cargo runs test binaries one after another, so the browser
//! (the heaviest process of the suite) never competes with the timing-sensitive tests of
//! `tests/it`.
//!
//! Without Chromium installed the test says so and passes, unless
//! `RINGWAY_BROWSER_TESTS=require` (set by `.ci/run`, which installs Debian's `chromium`).
//! `RINGWAY_DASHBOARD_SCREENSHOT=DIR` also writes `dashboard.png` (desktop, after
//! `RINGWAY_DASHBOARD_WARMUP_S` seconds of traffic, 0 by default) and
//! `dashboard-phone-dark.png` there: the README's pictures.

#[path = "browser/cdp.rs"]
mod cdp;
#[allow(dead_code, unreachable_pub)]
#[path = "it/harness.rs"]
mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use harness::*;

/// Clients sending chat requests until `stop`, with a short pause between requests (the
/// browser needs the CPU too). Mixed: half carry a session id, so sticky counts move.
fn traffic(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> Vec<thread::JoinHandle<usize>> {
    (0..2)
        .map(|t| {
            let stop = stop.clone();
            thread::spawn(move || {
                let connect = || std::panic::catch_unwind(|| Client::connect(addr)).ok();
                let mut client = connect();
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) && sent < 100_000 {
                    let session = format!("X-Olla-Session-ID: s{}\r\n", sent % 7);
                    let headers = if t == 0 { session.as_str() } else { "" };
                    let body = chat("llama3.2:latest", false);
                    let Some(c) = client.as_mut() else {
                        thread::sleep(Duration::from_millis(50));
                        client = connect();
                        continue;
                    };
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        c.request(post("/v1/chat/completions", &body, headers).as_bytes())
                    }));
                    if r.is_err() {
                        client = connect();
                    }
                    sent += 1;
                    thread::sleep(Duration::from_millis(4));
                }
                sent
            })
        })
        .collect()
}

/// Each endpoint row's name and state, as the page shows them.
const ROWS: &str = "JSON.stringify([...document.querySelectorAll('#endpoint-rows tr')]\
    .map(r => [r.dataset.endpoint, r.dataset.status]))";

fn rows(page: &mut cdp::Page) -> Vec<(String, String)> {
    let text = page.eval(ROWS);
    serde_json::from_str(text.as_str().unwrap_or("[]")).unwrap()
}

fn total_requests(page: &mut cdp::Page) -> u64 {
    let text = page.eval("document.getElementById('total-requests').textContent");
    text.as_str().unwrap().replace(',', "").parse().unwrap_or(0)
}

fn polls(page: &mut cdp::Page) -> u64 {
    page.eval("Number((document.body && document.body.dataset.polls) || 0)")
        .as_u64()
        .unwrap_or(0)
}

/// Waits up to `within` for `done`, checking every 50 ms; whether it happened.
fn until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() >= within {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_dashboard_shows_the_fleet_live_in_a_real_browser() {
    let Some(chromium) = cdp::find_chromium() else {
        let required = std::env::var("RINGWAY_BROWSER_TESTS").is_ok_and(|v| v == "require");
        assert!(
            !required,
            "RINGWAY_BROWSER_TESTS=require, but no chromium was found"
        );
        eprintln!("skipped: no chromium on PATH (set RINGWAY_CHROMIUM, or install it)");
        return;
    };
    let a = mock("a");
    let mut b = MockProcess::spawn("127.0.0.1:0".parse().unwrap(), &["--name", "b"]);
    let endpoints = [Ep::new("a", &a), Ep::at("b", b.addr)];
    let proxy = proxy(
        &endpoints,
        "",
        "[health]\ncheck_interval_ms = 1000\n[sticky]\nenabled = true",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let clients = traffic(proxy.local_addr(), stop.clone());
    let stop_traffic = || {
        stop.store(true, Ordering::Relaxed);
    };

    let browser = cdp::Browser::launch(&chromium);
    let mut page = browser.page();
    for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
        page.call(domain, json!({}));
    }
    let desktop = json!({ "width": 1280, "height": 1180, "deviceScaleFactor": 1, "mobile": false });
    page.call("Emulation.setDeviceMetricsOverride", desktop);
    let url = format!("http://{}/internal/ui/", proxy.local_addr());
    page.call("Page.navigate", json!({ "url": url }));
    page.wait_for("Page.loadEventFired");

    // The script ran and polled: both endpoints listed, in rotation.
    assert!(
        until(Duration::from_secs(15), || polls(&mut page) >= 2),
        "the page did not poll twice within 15 s; errors: {:?}; browser: {}",
        page.errors(),
        browser.stderr()
    );
    let shown = rows(&mut page);
    let expect = |s: &str| {
        vec![
            ("a".to_string(), s.to_string()),
            ("b".to_string(), s.to_string()),
        ]
    };
    assert_eq!(shown, expect("healthy"), "endpoint rows");

    // Live: the request counter grows between two reads, without a reload.
    let first = total_requests(&mut page);
    let polled = polls(&mut page);
    assert!(
        until(Duration::from_secs(5), || polls(&mut page) >= polled + 2),
        "the page stopped polling"
    );
    let second = total_requests(&mut page);
    assert!(second > first, "requests shown: {first}, then {second}");
    let navigations = page
        .events
        .iter()
        .filter(|e| e["method"] == "Page.frameNavigated")
        .count();
    assert_eq!(navigations, 1, "the page reloaded itself");

    let shots = std::env::var_os("RINGWAY_DASHBOARD_SCREENSHOT").map(std::path::PathBuf::from);
    let warmup: u64 = std::env::var("RINGWAY_DASHBOARD_WARMUP_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if shots.is_some() && warmup > 0 {
        thread::sleep(Duration::from_secs(warmup));
    }

    // Kill one mock: the page shows it down within 2 s, and the event.
    b.kill();
    let killed = Instant::now();
    let down = until(Duration::from_secs(2), || {
        rows(&mut page)
            .iter()
            .any(|(n, s)| n == "b" && s == "offline")
    });
    let took = killed.elapsed();
    assert!(
        down,
        "b still shown {:?} 2 s after its kill",
        rows(&mut page)
    );
    eprintln!(
        "the page showed b offline {} ms after its kill",
        took.as_millis()
    );
    assert!(
        until(Duration::from_secs(2), || {
            page.eval(
                "[...document.querySelectorAll('#event-list li[data-kind=endpoint_down]')]\
                 .some(li => li.textContent.includes('b'))",
            ) == Value::Bool(true)
        }),
        "no endpoint_down event for b on the page"
    );
    assert_eq!(
        rows(&mut page).first().map(|r| r.1.clone()).as_deref(),
        Some("healthy"),
        "a stays in rotation"
    );
    if let Some(dir) = &shots {
        // A few more seconds, so the charts show the time after the kill.
        let polled = polls(&mut page);
        until(Duration::from_secs(10), || polls(&mut page) >= polled + 3);
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("dashboard.png"), page.screenshot()).unwrap();
    }

    // A phone, in dark mode: the page fits the screen's width (tables scroll inside
    // their box) and follows the colour scheme.
    let phone = json!({ "width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true });
    page.call("Emulation.setDeviceMetricsOverride", phone);
    let dark = json!({ "features": [{ "name": "prefers-color-scheme", "value": "dark" }] });
    page.call("Emulation.setEmulatedMedia", dark);
    let polled = polls(&mut page);
    assert!(until(Duration::from_secs(5), || polls(&mut page) > polled));
    let fits = page.eval("document.documentElement.scrollWidth <= window.innerWidth");
    assert_eq!(fits, Value::Bool(true), "the page is wider than a phone");
    let background = page.eval("getComputedStyle(document.body).backgroundColor");
    assert_eq!(background, json!("rgb(17, 18, 21)"), "dark mode");
    if let Some(dir) = &shots {
        page.call("Page.reload", json!({}));
        let start = Instant::now();
        until(Duration::from_secs(10), || polls(&mut page) >= 4);
        assert!(start.elapsed() < Duration::from_secs(10));
        std::fs::write(dir.join("dashboard-phone-dark.png"), page.screenshot()).unwrap();
    }

    stop_traffic();
    let sent: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    // One more call: every event the browser sent before it has been read.
    page.eval("1");
    let errors = page.errors();
    assert!(errors.is_empty(), "script errors: {errors:#?}");
    assert!(sent > 100, "only {sent} requests flowed");
}
