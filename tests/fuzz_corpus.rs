//! Replays the fuzz corpus (`tools/fuzz/corpus/<target>/`) through the fuzz targets'
//! entry points (`ringway::fuzzing`), on stable, in the normal test suite: every seed and
//! every input fuzzing kept (past findings included) must pass the targets' checks.
//! How the corpus is kept: `tools/fuzz/README.md`.

use std::fs;
use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tools/fuzz/corpus")
        .join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let data =
                fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            (path, data)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the corpus {} is empty", dir.display());
    files
}

/// Runs `target` on every file of its corpus, naming the file that fails.
fn replay(name: &str, target: fn(&[u8])) {
    for (path, data) in corpus(name) {
        let outcome = std::panic::catch_unwind(|| target(&data));
        if let Err(panic) = outcome {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            panic!("{name} failed on {}: {what}", path.display());
        }
    }
}

#[test]
fn request_head_corpus() {
    replay("request_head", ringway::fuzzing::request_head);
}

#[test]
fn response_head_corpus() {
    replay("response_head", ringway::fuzzing::response_head);
}

#[test]
fn chunked_body_corpus() {
    replay("chunked_body", ringway::fuzzing::chunked_body);
}

#[test]
fn body_keys_corpus() {
    replay("body_keys", ringway::fuzzing::body_keys);
}

#[test]
fn head_writer_corpus() {
    replay("head_writer", ringway::fuzzing::head_writer);
}

#[test]
fn anthropic_stream_corpus() {
    replay("anthropic_stream", ringway::fuzzing::anthropic_stream);
}

#[test]
fn anthropic_stream_ops_corpus() {
    replay(
        "anthropic_stream_ops",
        ringway::fuzzing::anthropic_stream_ops,
    );
}

#[test]
fn anthropic_request_corpus() {
    replay("anthropic_request", ringway::fuzzing::anthropic_request);
}

#[test]
fn anthropic_response_corpus() {
    replay("anthropic_response", ringway::fuzzing::anthropic_response);
}
