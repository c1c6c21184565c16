//! Criterion micro-benchmarks of the per-request decisions, calling the request path's
//! own functions (`ringway::bench`): balancer picks, sticky key derivation + rendezvous
//! placement, the seen-key memory, request-head parsing, routing with the model lookup, head rewriting.
//! `cargo bench --bench hot_paths`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringway::Balancer;
use ringway::bench::{Fleet, RequestHeadBuf, parse_request_head};

/// A chat request whose conversation opening is about `size` bytes, with a few turns.
fn chat_body(size: usize) -> Vec<u8> {
    let document = "lorem ipsum dolor sit amet ".repeat(size / 27 + 1);
    format!(
        r#"{{"model":"llama3.1:8b","stream":true,"messages":[{{"role":"system","content":"You are a helpful assistant."}},{{"role":"user","content":"{}"}},{{"role":"assistant","content":"Sure."}},{{"role":"user","content":"Go on."}}],"temperature":0.7}}"#,
        &document[..size]
    )
    .into_bytes()
}

fn balancers(c: &mut Criterion) {
    let mut group = c.benchmark_group("balancer");
    for n in [2, 8] {
        let fleet = Fleet::new(n);
        for (name, balancer) in [
            ("round-robin", Balancer::RoundRobin),
            ("least-connections", Balancer::LeastConnections),
        ] {
            group.bench_with_input(BenchmarkId::new(name, n), &fleet, |b, fleet| {
                b.iter(|| fleet.pick(black_box(balancer)).unwrap())
            });
        }
    }
    group.finish();
}

fn sticky(c: &mut Criterion) {
    let mut group = c.benchmark_group("sticky_key_and_placement");
    for size in [1024, 32 * 1024] {
        let body = chat_body(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        for n in [2, 8, 32] {
            let fleet = Fleet::new(n);
            let id = BenchmarkId::new(format!("{}KB", size / 1024), n);
            group.bench_with_input(id, &body, |b, body| {
                b.iter(|| fleet.place(black_box(body)).unwrap())
            });
        }
    }
    group.finish();
}

/// A chat request of about `size` bytes whose system prompt (shared by the tenant's
/// conversations) is about 60% of it.
fn tenant_body(size: usize) -> Vec<u8> {
    let text = "You answer questions about the attached product manual. ".repeat(size / 56 + 1);
    let system = &text[..size * 6 / 10];
    let question = &text[..size * 3 / 10];
    format!(
        r#"{{"model":"llama3.1:8b","stream":true,"messages":[{{"role":"system","content":"{system}"}},{{"role":"user","content":"{question}"}}],"temperature":0.7}}"#
    )
    .into_bytes()
}

/// Key derivation (conversation and shared-prefix keys) and placement in the prefix
/// group: the prefix-group path of `select_backend`.
fn prefix_groups(c: &mut Criterion) {
    let mut group = c.benchmark_group("prefix_group_key_and_placement");
    for size in [1024, 32 * 1024] {
        let body = tenant_body(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        for n in [2, 8, 32] {
            let fleet = Fleet::new(n);
            let id = BenchmarkId::new(format!("{}KB", size / 1024), n);
            group.bench_with_input(id, &body, |b, body| {
                b.iter(|| fleet.place_in_group(black_box(body)).unwrap())
            });
        }
    }
    group.finish();
}

/// The seen-key memory behind the sticky outcome labels: one `observe` per request with a
/// key. `hits`: 1,000 conversations cycled (each key found); `misses`: a new key every
/// time, in a full table (each evicts the least recently seen of its bucket).
fn seen_keys(c: &mut Criterion) {
    let mut group = c.benchmark_group("sticky_seen_keys");
    let fleet = Fleet::new(4);
    let keys: Vec<u64> = (0..1000u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect();
    for &k in &keys {
        fleet.observe(k, 1);
    }
    let mut i = 0;
    group.bench_function("hits", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            fleet.observe(black_box(keys[i]), 1)
        })
    });
    let mut next = 1u64 << 40;
    group.bench_function("misses", |b| {
        b.iter(|| {
            next = next.wrapping_add(0x9e37_79b9_7f4a_7c15);
            fleet.observe(black_box(next), 2)
        })
    });
    group.finish();
}

fn request_head(c: &mut Criterion) {
    let head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:40114\r\n\
        User-Agent: OpenAI/Python 1.54.0\r\nAccept: application/json\r\n\
        Content-Type: application/json\r\nAuthorization: Bearer sk-local\r\n\
        X-Stainless-Lang: python\r\nX-Stainless-Runtime: CPython\r\nContent-Length: 250\r\n\r\n";
    let mut parsed = RequestHeadBuf::default();
    c.bench_function("parse_request_head", |b| {
        b.iter(|| parse_request_head(black_box(head), &mut parsed))
    });
}

fn routing_and_rewriting(c: &mut Criterion) {
    let fleet = Fleet::new(4);
    let body = chat_body(1024);
    c.bench_function("route_and_model_1KB", |b| {
        b.iter(|| fleet.route(black_box(b"/v1/chat/completions"), black_box(&body)))
    });
    let head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:40114\r\n\
        User-Agent: OpenAI/Python 1.54.0\r\nAccept: application/json\r\n\
        Content-Type: application/json\r\nAuthorization: Bearer sk-local\r\n\
        Connection: keep-alive\r\nX-Stainless-Lang: python\r\nContent-Length: 250\r\n\r\n";
    let mut parsed = RequestHeadBuf::default();
    assert!(parse_request_head(head, &mut parsed) > 0);
    let mut out = Vec::with_capacity(1024);
    c.bench_function("rewrite_request_head", |b| {
        b.iter(|| fleet.rewrite_head(black_box(head), &parsed, &mut out))
    });
}

criterion_group!(
    benches,
    balancers,
    sticky,
    prefix_groups,
    seen_keys,
    request_head,
    routing_and_rewriting
);
criterion_main!(benches);
