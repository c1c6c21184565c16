//! Criterion micro-benchmarks of the Anthropic translator (`src/api/anthropic/`), calling
//! its own functions (`ringway::bench`): a streamed chunk (text, and tool-call arguments),
//! and a Claude-Code-like 50 KB request translated and counted.
//! `cargo bench --bench anthropic`.
//!
//! The stream groups translate a whole stream of `n` chunks per iteration (with its
//! `message_start`, block events and end); their throughput in elements per second is
//! chunks per second, and the time per chunk is the iteration time over `n`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringway::bench::{
    anthropic_count_tokens, anthropic_request, anthropic_stream, claude_code_request,
    openai_stream_events,
};

fn stream(c: &mut Criterion) {
    let mut group = c.benchmark_group("anthropic_stream");
    let n = 200;
    let mut out = Vec::with_capacity(4096);
    for (name, tool) in [("text_chunks", false), ("tool_argument_chunks", true)] {
        let events = openai_stream_events(n, tool);
        group.throughput(Throughput::Elements(events.len() as u64));
        group.bench_with_input(BenchmarkId::new(name, n), &events, |b, events| {
            b.iter(|| anthropic_stream(black_box(events), &mut out))
        });
    }
    group.finish();
}

fn request(c: &mut Criterion) {
    let mut group = c.benchmark_group("anthropic_request");
    let body = claude_code_request(50 * 1024);
    group.throughput(Throughput::Bytes(body.len() as u64));
    let mut out = Vec::with_capacity(body.len());
    group.bench_function("to_openai_50KB", |b| {
        b.iter(|| anthropic_request(black_box(&body), &mut out))
    });
    group.bench_function("count_tokens_50KB", |b| {
        b.iter(|| anthropic_count_tokens(black_box(&body), &mut out))
    });
    group.finish();
}

criterion_group!(benches, stream, request);
criterion_main!(benches);
