//! Load- and cache-aware placement: prefix groups agree across shards and replicas, grow
//! under load and shrink back; a backend's `Retry-After` keeps requests off it on every
//! shard; load counts request bytes, not only requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::harness::*;

/// A tenant's shared system prompt, about 2 KB: long enough to form a group.
fn system_prompt(tenant: usize) -> String {
    format!("Tenant {tenant}. ") + &"You answer questions about our product manual. ".repeat(45)
}

fn chat_body(system: &str, user: &str) -> String {
    serde_json::json!({
        "model": "llama3.2:latest",
        "stream": false,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
        ],
    })
    .to_string()
}

/// One request on a fresh connection: (endpoint, X-Ringway-Prefix-Group).
fn placed(addr: SocketAddr, body: &str, headers: &str) -> (String, Option<String>) {
    let r = one_shot(addr, post("/v1/chat/completions", body, headers).as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    (
        r.header("X-Olla-Endpoint").unwrap().to_string(),
        r.header("X-Ringway-Prefix-Group").map(str::to_string),
    )
}

/// Requests held in flight: each waits `delay` at the mock before answering.
fn hold(addr: SocketAddr, body: String, headers: String, delay: Duration) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let headers = format!(
            "{headers}X-Mock-First-Token-Delay-Ms: {}\r\n",
            delay.as_millis()
        );
        let r = one_shot(
            addr,
            post("/v1/chat/completions", &body, &headers).as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    })
}

/// Waits until the proxy counts `n` requests in flight in all.
fn in_flight(proxy: &ringway::Server, n: u64) {
    let settled = eventually(Duration::from_secs(5), || {
        let page = status_page(proxy);
        let eps = page["endpoints"].as_array().unwrap();
        eps.iter()
            .map(|e| e["in_flight"].as_u64().unwrap())
            .sum::<u64>()
            == n
    });
    assert!(settled, "{n} requests never were in flight");
}

#[test]
fn groups_are_placed_alike_by_every_shard_and_by_two_replicas() {
    let names = ["gpu-0", "gpu-1", "gpu-2", "gpu-3", "gpu-4"];
    let mocks: Vec<MockServer> = names.iter().map(|n| mock(n)).collect();
    let eps: Vec<Ep<'_>> = names
        .iter()
        .zip(&mocks)
        .map(|(n, m)| Ep::new(n, m))
        .collect();
    let reversed: Vec<Ep<'_>> = names
        .iter()
        .zip(&mocks)
        .rev()
        .map(|(n, m)| Ep::new(n, m))
        .collect();
    let one = proxy(&eps, "shards = 2", "");
    let other = proxy(&reversed, "shards = 1", "");
    let mut members = HashMap::<usize, std::collections::BTreeSet<String>>::new();
    for tenant in 0..8 {
        let system = system_prompt(tenant);
        for user in 0..8 {
            let body = chat_body(&system, &format!("Question {user} of tenant {tenant}?"));
            // Fresh connections: each lands on either shard of the first replica.
            let (ep, group) = placed(one.local_addr(), &body, "");
            for _ in 0..2 {
                assert_eq!(
                    placed(one.local_addr(), &body, ""),
                    (ep.clone(), group.clone())
                );
            }
            assert_eq!(
                placed(other.local_addr(), &body, ""),
                (ep.clone(), group.clone()),
                "the replicas disagree on tenant {tenant}, user {user}"
            );
            let group = group.expect("a 2 KB system prompt forms a group");
            assert!(group.ends_with("; size=2"), "{group}");
            members.entry(tenant).or_default().insert(ep);
        }
    }
    // Each tenant's conversations live on two backends, and the tenants use them all.
    let all: std::collections::BTreeSet<&String> = members.values().flatten().collect();
    // (Eight conversations all on one of the two happens one time in 128.)
    assert!(members.values().all(|m| m.len() <= 2), "{members:?}");
    let pairs = members.values().filter(|m| m.len() == 2).count();
    assert!(pairs >= 6, "{members:?}");
    assert!(all.len() >= 4, "{members:?}");
    // The stats page lists the groups with their two members.
    let mut c = Client::connect(one.local_addr());
    let page = c.get("/internal/stats/sticky").json();
    let groups = page["prefix_groups"]["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 8, "{page}");
    assert!(
        groups
            .iter()
            .all(|g| g["members"].as_array().unwrap().len() == 2)
    );
    assert_eq!(page["prefix_groups"]["requests"], 8 * 8 * 3);
}

#[test]
fn a_group_grows_while_its_members_are_loaded_and_shrinks_back() {
    let names = ["gpu-0", "gpu-1", "gpu-2", "gpu-3"];
    let mocks: Vec<MockServer> = names.iter().map(|n| mock(n)).collect();
    let eps: Vec<Ep<'_>> = names
        .iter()
        .zip(&mocks)
        .map(|(n, m)| Ep::new(n, m))
        .collect();
    let proxy = proxy(&eps, "shards = 2", "");
    let addr = proxy.local_addr();
    let system = system_prompt(1);
    let probe = chat_body(&system, "How do I reset it?");
    let (home, group) = placed(addr, &probe, "");
    assert!(group.unwrap().ends_with("; size=2"));
    let members: Vec<String> = (0..40)
        .map(|u| placed(addr, &chat_body(&system, &format!("User {u} asks.")), "").0)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(members.len(), 2, "{members:?}");
    // Session keys whose rendezvous home (no group: a short body) is each member.
    let short = chat_body("Be brief.", "Hi");
    let mut sessions = HashMap::<String, Vec<String>>::new();
    for s in 0..200 {
        let header = format!("X-Olla-Session-ID: s{s}\r\n");
        let (ep, group) = placed(addr, &short, &header);
        assert_eq!(group, None);
        sessions.entry(ep).or_default().push(header);
    }
    // Four slow requests on each member: both far over 1.25 x the mean load.
    let delay = Duration::from_secs(3);
    let started = Instant::now();
    let held: Vec<JoinHandle<()>> = members
        .iter()
        .flat_map(|m| sessions[m][..4].to_vec())
        .map(|header| hold(addr, short.clone(), header, delay))
        .collect();
    in_flight(&proxy, 8);
    let (spilled, group) = placed(addr, &probe, "");
    assert!(
        started.elapsed() < delay,
        "the slow requests ended too soon"
    );
    assert!(!members.contains(&spilled), "{spilled} is a member");
    assert!(
        group.unwrap().ends_with("; size=3"),
        "the group grew by one"
    );
    // Every conversation of the group spills to that same third backend.
    for u in 0..6 {
        let body = chat_body(&system, &format!("User {u} asks."));
        assert_eq!(placed(addr, &body, "").0, spilled);
    }
    for h in held {
        h.join().unwrap();
    }
    in_flight(&proxy, 0);
    // Load gone: the group is two again, each conversation back on its member.
    let (back, group) = placed(addr, &probe, "");
    assert_eq!(back, home);
    assert!(group.unwrap().ends_with("; size=2"));
    let mut c = Client::connect(addr);
    let page = c.get("/internal/stats/sticky").json();
    let g = &page["prefix_groups"]["groups"][0];
    assert!(g["widened"].as_u64().unwrap() >= 7, "{page}");
}

#[test]
fn retry_after_keeps_new_requests_off_an_endpoint_on_every_shard() {
    let (a, b) = (mock("a"), mock("b"));
    let proxy = proxy(
        &[Ep::new("a", &a), Ep::new("b", &b)],
        "shards = 2",
        "[sticky]\nenabled = false\n[proxy]\nbalancer = \"round-robin\"\n",
    );
    let addr = proxy.local_addr();
    a.control().set_inference_status_override(Some(429));
    a.control().set_retry_after(Some(2));
    let body = chat("llama3.2:latest", false);
    // Until a request reaches a: its 429 is retried on b, and a is busy from then on.
    let mut pushed_back = None;
    for _ in 0..8 {
        let r = one_shot(addr, post("/v1/chat/completions", &body, "").as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("X-Olla-Endpoint"), Some("b"));
        if a.stats().requests() > 0 {
            assert_eq!(r.header("X-Ringway-Attempts"), Some("2"));
            pushed_back = Some(Instant::now());
            break;
        }
    }
    let pushed_back = pushed_back.expect("round-robin never tried a");
    assert_eq!(endpoint_status(&proxy, "a")["status"], "busy");
    // It would answer now, but asked for two seconds: nobody sends it anything.
    a.control().set_inference_status_override(None);
    let mut sent = 0;
    while pushed_back.elapsed() < Duration::from_millis(1500) {
        let r = one_shot(addr, post("/v1/chat/completions", &body, "").as_bytes());
        assert_eq!(r.status, 200);
        assert_eq!(r.header("X-Olla-Endpoint"), Some("b"));
        sent += 1;
    }
    assert!(sent >= 10, "{sent}");
    assert_eq!(a.stats().requests(), 1, "a got requests while busy");
    // After the two seconds, a takes its turns again, on both shards, and its breaker
    // never counted the 429.
    std::thread::sleep(Duration::from_millis(2200).saturating_sub(pushed_back.elapsed()));
    let served: Vec<String> = (0..8)
        .map(|_| {
            let r = one_shot(addr, post("/v1/chat/completions", &body, "").as_bytes());
            r.header("X-Olla-Endpoint").unwrap().to_string()
        })
        .collect();
    assert!(served.iter().any(|e| e == "a"), "{served:?}");
    let status = endpoint_status(&proxy, "a");
    assert_eq!(status["status"], "healthy");
    assert_eq!(status["consecutive_failures"], 0, "{status}");
}

#[test]
fn load_counts_request_bytes_so_a_small_request_avoids_a_huge_prefill() {
    let (a, b) = (mock("a"), mock("b"));
    let proxy = proxy(
        &[Ep::new("a", &a), Ep::new("b", &b)],
        "",
        "[sticky]\nenabled = false\n[proxy]\nbalancer = \"least-connections\"\n",
    );
    let addr = proxy.local_addr();
    let delay = Duration::from_secs(3);
    let huge = chat_body("Summarise.", &"a long shared document ".repeat(10_000));
    let small = chat("llama3.2:latest", false);
    let started = Instant::now();
    // One 230 KB prompt in flight on one endpoint, two small ones on the other.
    let mut held = vec![hold(addr, huge, String::new(), delay)];
    in_flight(&proxy, 1);
    held.push(hold(addr, small.clone(), String::new(), delay));
    in_flight(&proxy, 2);
    held.push(hold(addr, small.clone(), String::new(), delay));
    in_flight(&proxy, 3);
    let page = status_page(&proxy);
    let eps = page["endpoints"].as_array().unwrap();
    let busy_with_prefill = eps
        .iter()
        .find(|e| e["in_flight_bytes"].as_u64().unwrap() > 200_000)
        .expect("the huge request is in flight");
    assert_eq!(busy_with_prefill["in_flight"], 1, "{page}");
    let prefilling = busy_with_prefill["name"].as_str().unwrap().to_string();
    // By request count, the endpoint with one request in flight would win; by what they
    // cost, the one with two small requests does.
    let (ep, _) = placed(addr, &small, "");
    assert!(
        started.elapsed() < delay,
        "the held requests ended too soon"
    );
    assert_ne!(ep, prefilling);
    for h in held {
        h.join().unwrap();
    }
}
