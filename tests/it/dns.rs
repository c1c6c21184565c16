//! Endpoint host names: the resolver and its watcher against the loopback DNS server
//! (`dns_server.rs`), and ringway resolving its endpoints through `dns.servers` at start.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use ringway::dns::{Answer, DnsConfig, DnsError, DnsWatcher, Family, Resolver, Update};
use ringway::{Config, Expand};

use crate::dns_server::DnsServer;
use crate::harness::*;

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn config(servers: &[SocketAddr], timeout_ms: u64) -> DnsConfig {
    DnsConfig {
        refresh_interval: Some(Duration::from_secs(30)),
        servers: servers.to_vec(),
        timeout: Duration::from_millis(timeout_ms),
        family: Family::Both,
    }
}

/// The watcher's next update, within `within`.
fn next(watcher: &DnsWatcher, within: Duration) -> Update {
    watcher
        .recv_timeout(within)
        .unwrap_or_else(|| panic!("no update within {within:?}"))
}

/// The next update, which must be an answer.
fn next_answer(watcher: &DnsWatcher, within: Duration) -> Answer {
    match next(watcher, within) {
        Update::Resolved(answer) => answer,
        other => panic!("expected an answer, got {other:?}"),
    }
}

#[test]
fn the_watcher_follows_the_names_addresses_as_their_ttls_expire() {
    let dns = DnsServer::start();
    dns.set("backends.test", &ips(&["127.0.0.3", "127.0.0.2"]), 1);
    let watcher = DnsWatcher::start(&config(&[dns.addr()], 500), ["backends.test".into()]).unwrap();
    let first = next_answer(&watcher, Duration::from_secs(5));
    assert_eq!(first.host, "backends.test");
    assert_eq!(first.addrs, ips(&["127.0.0.2", "127.0.0.3"]), "sorted");
    assert_eq!(first.ttl, Some(Duration::from_secs(1)));

    // The TTL (1 s), not the refresh interval (30 s), says when to ask again.
    dns.set(
        "backends.test",
        &ips(&["127.0.0.2", "127.0.0.3", "127.0.0.4"]),
        1,
    );
    let changed = Instant::now();
    let three = next_answer(&watcher, Duration::from_secs(5));
    assert_eq!(three.addrs, ips(&["127.0.0.2", "127.0.0.3", "127.0.0.4"]));
    assert!(
        changed.elapsed() < Duration::from_millis(2500),
        "{:?}",
        changed.elapsed()
    );
    assert!(three.resolved_at > first.resolved_at);

    // Two others, one of them IPv6 (an AAAA record), duplicates dropped.
    dns.set(
        "backends.test",
        &ips(&["fd00::5", "127.0.0.9", "127.0.0.9"]),
        1,
    );
    let others = next_answer(&watcher, Duration::from_secs(5));
    assert_eq!(others.addrs, ips(&["127.0.0.9", "fd00::5"]));

    // An unchanged answer is not reported again, though the name is still asked for
    // (at least a second apart, not in a hot loop, with TTL 0).
    dns.set("backends.test", &ips(&["127.0.0.9", "fd00::5"]), 0);
    let asked = dns.udp_queries();
    assert_eq!(watcher.recv_timeout(Duration::from_millis(2500)), None);
    let since = dns.udp_queries() - asked;
    // Two queries (A, AAAA) per lookup, one lookup a second: 2 or 3 lookups.
    assert!((2..=8).contains(&since), "{since} queries in 2.5 s");
}

#[test]
fn truncated_answers_are_asked_again_over_tcp() {
    let dns = DnsServer::start();
    let resolver = Resolver::new(&config(&[dns.addr()], 1000));
    dns.set("small.test", &ips(&["127.0.0.2", "::1"]), 60);
    dns.truncate_udp(true);
    let a = resolver.resolve("small.test").unwrap();
    assert_eq!(a.addrs, ips(&["127.0.0.2", "::1"]));
    assert_eq!(a.ttl, Some(Duration::from_secs(60)));
    assert_eq!(dns.tcp_queries(), 2, "A and AAAA, both truncated over UDP");
    dns.truncate_udp(false);

    // An answer larger than the 1232 bytes advertised with EDNS0 (200 A records, some
    // 3.2 KB) comes back truncated, as from a real server: read whole over TCP.
    let many: Vec<IpAddr> = (0..200).map(|i| IpAddr::from([127, 0, 1, i])).collect();
    dns.set("many.test", &many, 60);
    let a = resolver.resolve("many.test").unwrap();
    assert_eq!(a.addrs, many);
    assert_eq!(dns.tcp_queries(), 3, "only the A query was too large");
}

#[test]
fn a_server_that_stops_answering_leaves_the_last_good_answer() {
    let dns = DnsServer::start();
    dns.set("pods.test", &ips(&["127.0.0.2", "127.0.0.3"]), 1);
    let watcher = DnsWatcher::start(&config(&[dns.addr()], 200), ["pods.test".into()]).unwrap();
    let good = next_answer(&watcher, Duration::from_secs(5));

    dns.silence(true);
    match next(&watcher, Duration::from_secs(5)) {
        Update::Failed { host, error, kept } => {
            assert_eq!(host, "pods.test");
            assert_eq!(error, DnsError::Timeout);
            assert_eq!(kept.as_ref(), Some(&good), "the last good answer stays");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    // Still failing, retried (1 s, then 2 s apart): never an empty answer.
    match next(&watcher, Duration::from_secs(5)) {
        Update::Failed { error, kept, .. } => {
            assert_eq!(error, DnsError::Timeout);
            assert_eq!(kept.map(|k| k.addrs), Some(good.addrs.clone()));
        }
        other => panic!("expected a failure, got {other:?}"),
    }

    // SERVFAIL is a failure too; the answer stays.
    dns.silence(false);
    dns.servfail(true);
    match next(&watcher, Duration::from_secs(6)) {
        Update::Failed { error, kept, .. } => {
            assert!(error.is_transient());
            assert!(error.to_string().contains("SERVFAIL"), "{error}");
            assert_eq!(kept.map(|k| k.addrs), Some(good.addrs.clone()));
        }
        other => panic!("expected a failure, got {other:?}"),
    }

    // Back, with other addresses: picked up at the next retry.
    dns.servfail(false);
    dns.set("pods.test", &ips(&["127.0.0.4"]), 1);
    let back = next_answer(&watcher, Duration::from_secs(10));
    assert_eq!(back.addrs, ips(&["127.0.0.4"]));
}

#[test]
fn nxdomain_is_told_apart_from_a_timeout() {
    let dns = DnsServer::start();
    let resolver = Resolver::new(&config(&[dns.addr()], 300));
    assert_eq!(resolver.resolve("nowhere.test"), Err(DnsError::NxDomain));
    dns.set("v4only.test", &ips(&["127.0.0.2"]), 5);
    let v6 = Resolver::new(&DnsConfig {
        family: Family::Ipv6,
        ..config(&[dns.addr()], 300)
    });
    assert_eq!(v6.resolve("v4only.test"), Err(DnsError::NoAddress));
    dns.silence(true);
    let started = Instant::now();
    assert_eq!(resolver.resolve("v4only.test"), Err(DnsError::Timeout));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // Through the watcher: NXDOMAIN is reported as such, and the answer kept.
    dns.silence(false);
    let watcher = DnsWatcher::start(&config(&[dns.addr()], 300), ["v4only.test".into()]).unwrap();
    let good = next_answer(&watcher, Duration::from_secs(5));
    dns.remove("v4only.test");
    match next(&watcher, Duration::from_secs(8)) {
        Update::Failed { error, kept, .. } => {
            assert_eq!(error, DnsError::NxDomain);
            assert!(!error.is_transient());
            assert_eq!(kept, Some(good));
        }
        other => panic!("expected NXDOMAIN, got {other:?}"),
    }
}

#[test]
fn the_next_server_is_asked_when_one_does_not_answer() {
    let (dead, live) = (DnsServer::start(), DnsServer::start());
    dead.silence(true);
    live.set("backends.test", &ips(&["127.0.0.2"]), 5);
    let resolver = Resolver::new(&config(&[dead.addr(), live.addr()], 300));
    let a = resolver.resolve("backends.test").unwrap();
    assert_eq!(a.addrs, ips(&["127.0.0.2"]));
    assert!(dead.udp_queries() >= 1 && live.udp_queries() >= 1);
}

#[test]
fn lost_datagrams_are_sent_again_within_the_timeout() {
    let dns = DnsServer::start();
    dns.set("backends.test", &ips(&["127.0.0.2"]), 5);
    // Both first queries (A and AAAA) are lost.
    dns.drop_udp(2);
    let resolver = Resolver::new(&config(&[dns.addr()], 900));
    let asked = Instant::now();
    let a = resolver.resolve("backends.test").unwrap();
    assert_eq!(a.addrs, ips(&["127.0.0.2"]));
    assert!(
        asked.elapsed() < Duration::from_millis(900),
        "answered by the resend"
    );
    assert_eq!(dns.udp_queries(), 4, "each query sent twice");
}

#[test]
fn cname_chains_lead_to_their_targets_addresses() {
    let dns = DnsServer::start();
    dns.set_cname("vllm.test", "pods.cluster.test", 30);
    dns.set_cname("pods.cluster.test", "endpoints.cluster.test", 20);
    dns.set(
        "endpoints.cluster.test",
        &ips(&["127.0.0.2", "127.0.0.3"]),
        60,
    );
    let resolver = Resolver::new(&config(&[dns.addr()], 1000));
    let a = resolver.resolve("VLLM.test.").unwrap();
    assert_eq!(a.addrs, ips(&["127.0.0.2", "127.0.0.3"]));
    assert_eq!(
        a.ttl,
        Some(Duration::from_secs(20)),
        "the chain's smallest TTL"
    );
}

#[test]
fn the_watched_names_can_be_replaced() {
    let dns = DnsServer::start();
    dns.set("a.test", &ips(&["127.0.0.2"]), 1);
    dns.set("b.test", &ips(&["127.0.0.3"]), 1);
    let watcher = DnsWatcher::start(&config(&[dns.addr()], 300), ["a.test".into()]).unwrap();
    assert_eq!(next_answer(&watcher, Duration::from_secs(5)).host, "a.test");
    watcher.watch(["b.test".to_string()]);
    let b = next_answer(&watcher, Duration::from_secs(5));
    assert_eq!(
        (b.host.as_str(), b.addrs.clone()),
        ("b.test", ips(&["127.0.0.3"]))
    );
    // a.test is forgotten: its change is not reported (its TTL is 1 s).
    dns.set("a.test", &ips(&["127.0.0.4"]), 1);
    assert_eq!(watcher.recv_timeout(Duration::from_millis(2500)), None);
    // Watched again, it is resolved at once.
    watcher.watch(["a.test".to_string(), "b.test".to_string()]);
    let a = next_answer(&watcher, Duration::from_secs(5));
    assert_eq!((a.host.as_str(), a.addrs), ("a.test", ips(&["127.0.0.4"])));
}

#[test]
fn a_reload_can_point_the_watcher_at_other_servers() {
    let (old, new) = (DnsServer::start(), DnsServer::start());
    old.set("backends.test", &ips(&["127.0.0.2"]), 300);
    new.set("backends.test", &ips(&["127.0.0.3"]), 300);
    let watcher = DnsWatcher::start(&config(&[old.addr()], 300), ["backends.test".into()]).unwrap();
    assert_eq!(
        next_answer(&watcher, Duration::from_secs(5)).addrs,
        ips(&["127.0.0.2"])
    );
    // Resolved again at once through the new server, not 300 s later.
    watcher.configure(&config(&[new.addr()], 300));
    assert_eq!(
        next_answer(&watcher, Duration::from_secs(5)).addrs,
        ips(&["127.0.0.3"])
    );
    assert_eq!(old.udp_queries(), 2);
}

/// Mock backends, one per address of `hosts`, all on one port (as the addresses of one
/// name must be, the port being the URL's).
fn mocks_on_one_port(hosts: &[[u8; 4]]) -> Vec<MockServer> {
    mocks_on_one_port_with(hosts, MockConfig::named)
}

/// Mocks on `hosts` (all of 127/8 is loopback), one port for all, each configured by
/// `config` from its name (`mock-<last byte>`).
fn mocks_on_one_port_with(
    hosts: &[[u8; 4]],
    config: impl Fn(&str) -> MockConfig,
) -> Vec<MockServer> {
    for _ in 0..20 {
        let first = SocketAddr::from((hosts[0], 0));
        let Ok(mock) = ringway_mock::spawn(first, config(&ip_name(hosts[0]))) else {
            continue;
        };
        let port = mock.addr().port();
        let mut mocks = vec![mock];
        for &h in &hosts[1..] {
            match ringway_mock::spawn((h, port).into(), config(&ip_name(h))) {
                Ok(m) => mocks.push(m),
                Err(_) => break,
            }
        }
        if mocks.len() == hosts.len() {
            return mocks;
        }
    }
    panic!("no port free on all of {hosts:?}");
}

fn ip_name(h: [u8; 4]) -> String {
    format!("mock-{}", h[3])
}

#[test]
fn ringway_resolves_its_endpoints_through_dns_servers_at_start() {
    let mocks = mocks_on_one_port(&[[127, 0, 0, 2], [127, 0, 0, 3]]);
    let port = mocks[0].addr().port();
    assert_eq!(mocks[1].addr(), SocketAddr::from(([127, 0, 0, 3], port)));
    let dns = DnsServer::start();
    // A name only the test's server knows (the system resolver does not).
    dns.set("backends.test", &ips(&["127.0.0.2"]), 30);
    dns.set("fleet.test", &ips(&["127.0.0.3", "127.0.0.2"]), 30);
    let dns_section = format!("[dns]\nservers = [\"{}\"]\ntimeout_ms = 1000\n", dns.addr());
    let text = config_text(&[Ep::new("gpu", &mocks[0])], "", &dns_section).replace(
        &format!("http://127.0.0.2:{port}"),
        &format!("http://backends.test:{port}"),
    );
    assert!(text.contains("backends.test"), "{text}");
    let proxy = proxy_from(&text);
    let r = Client::connect(proxy.local_addr()).post_json(
        "/v1/chat/completions",
        &chat("llama3.2:latest", false),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("X-Mock-Backend"), Some("mock-2"));
    assert_eq!(r.header("X-Olla-Endpoint"), Some("gpu"));

    // expand = "addresses": every address of the name, on the URL's port, in the
    // endpoint's configuration (for the endpoint table to expand).
    let expanded = format!(
        "{dns_section}[[endpoints]]\nname = \"fleet\"\nurl = \"http://fleet.test:{port}\"\nexpand = \"addresses\"\n"
    );
    let c = Config::from_toml(&expanded, "test config").unwrap();
    let e = &c.endpoints[0];
    assert_eq!(e.expand, Expand::Addresses);
    assert_eq!((e.host.as_str(), e.port), ("fleet.test", port));
    let want: Vec<SocketAddr> = mocks.iter().map(MockServer::addr).collect();
    assert_eq!(e.addrs, want);
    assert_eq!(c.host_names(), ["fleet.test"]);
    // Both addresses reach their own mock.
    for (addr, name) in want.iter().zip(["mock-2", "mock-3"]) {
        let r = Client::connect(*addr).get("/api/tags");
        assert_eq!(r.header("X-Mock-Backend"), Some(name));
    }

    // A name the server does not know: the error names the endpoint and its key.
    let unknown = expanded.replace("fleet.test", "gone.test");
    let e = Config::from_toml(&unknown, "test config").unwrap_err();
    assert_eq!(e.key, "endpoints[0].url");
    assert!(
        e.message.contains("\"fleet\"") && e.message.contains("NXDOMAIN"),
        "{}",
        e.message
    );
}

#[test]
fn check_config_reports_dns_and_expand() {
    let dns = DnsServer::start();
    dns.set("fleet.test", &ips(&["127.0.0.2", "127.0.0.3"]), 30);
    let bin = env!("CARGO_BIN_EXE_ringway");
    let dir = std::env::temp_dir();
    let write = |name: &str, text: &str| {
        let path = dir.join(format!("ringway-dns-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    };
    let good = write(
        "good",
        &format!(
            "[dns]\nservers = [\"{}\"]\n[[endpoints]]\nname = \"fleet\"\nurl = \"http://fleet.test:8000\"\nexpand = \"addresses\"\n",
            dns.addr()
        ),
    );
    let out = Command::new(bin)
        .args(["--check-config", "-c"])
        .arg(&good)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&dns.addr().to_string()), "{stdout}");
    assert!(
        stdout.contains("expand addresses: 127.0.0.2, 127.0.0.3"),
        "{stdout}"
    );

    let literal = write(
        "literal",
        "[[endpoints]]\nurl = \"http://127.0.0.1:8000\"\nexpand = \"addresses\"\n",
    );
    let out = Command::new(bin)
        .args(["--check-config", "-c"])
        .arg(&literal)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&*literal.to_string_lossy()) && stderr.contains("endpoints[0].expand"),
        "{stderr}"
    );
    for path in [good, literal] {
        let _ = std::fs::remove_file(path);
    }
}

/// `expand = "addresses"` under load: the name gives 2 addresses, then 3, then 2 others;
/// the endpoints follow (`fleet/ADDR`), a new address is used once checked, a removed
/// one takes no new request and its streams finish, and not one request fails.
#[test]
fn an_expanded_name_follows_its_addresses_and_no_request_fails() {
    let hosts = [
        [127, 0, 0, 2],
        [127, 0, 0, 3],
        [127, 0, 0, 4],
        [127, 0, 0, 5],
        [127, 0, 0, 6],
    ];
    let mocks = mocks_on_one_port_with(&hosts, |name| MockConfig {
        tokens: 16,
        token_delay: Duration::from_millis(5),
        ..MockConfig::named(name)
    });
    let port = mocks[0].addr().port();
    let dns = DnsServer::start();
    dns.set("fleet.test", &ips(&["127.0.0.2", "127.0.0.3"]), 1);
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshards = 2\n\
         [dns]\nservers = [\"{}\"]\ntimeout_ms = 1000\nrefresh_interval_ms = 1000\n\
         [health]\ncheck_interval_ms = 3600000\n[models]\nloaded_refresh_interval_ms = 0\n\
         [[endpoints]]\nname = \"fleet\"\nurl = \"http://fleet.test:{port}\"\ntype = \"ollama\"\nexpand = \"addresses\"\n",
        dns.addr()
    );
    let proxy = proxy_from(&text);
    let addr = proxy.local_addr();
    let names = || -> Vec<(String, String)> {
        status_page(&proxy)["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_string(),
                    e["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let healthy = |want: &[&str]| {
        let want: Vec<(String, String)> = want
            .iter()
            .map(|n| (format!("fleet/{n}"), "healthy".to_string()))
            .collect();
        eventually(Duration::from_secs(6), || names() == want)
    };
    assert!(healthy(&["127.0.0.2", "127.0.0.3"]), "{:?}", names());

    let load = ChatLoad::start(addr, 8);
    let requests = |i: usize| mocks[i].stats().requests();
    std::thread::sleep(Duration::from_millis(500));
    dns.set(
        "fleet.test",
        &ips(&["127.0.0.2", "127.0.0.3", "127.0.0.4"]),
        1,
    );
    assert!(
        healthy(&["127.0.0.2", "127.0.0.3", "127.0.0.4"]),
        "{:?}",
        names()
    );
    assert!(
        eventually(Duration::from_secs(3), || requests(2) > 0),
        "the new address got no traffic"
    );
    dns.set("fleet.test", &ips(&["127.0.0.5", "127.0.0.6"]), 1);
    assert!(healthy(&["127.0.0.5", "127.0.0.6"]), "{:?}", names());
    // Streams already on the removed addresses finish (~80 ms); then nothing new.
    std::thread::sleep(Duration::from_millis(300));
    let gone: Vec<u64> = (0..3).map(requests).collect();
    std::thread::sleep(Duration::from_millis(1000));
    let (served, failed) = load.stop();
    assert!(served > 50, "only {served} requests served");
    assert_eq!(
        failed, 0,
        "requests failed while the name's addresses changed"
    );
    assert_eq!(
        (0..3).map(requests).collect::<Vec<_>>(),
        gone,
        "removed addresses got requests"
    );
    assert!(
        requests(3) > 0 && requests(4) > 0,
        "the new addresses got no traffic"
    );
    for m in &mocks[..3] {
        assert_eq!(
            m.stats().aborted_streams(),
            0,
            "a stream on a removed address was cut"
        );
    }
}
