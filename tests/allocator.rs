//! The allocator's build tuning (`.cargo/config.toml`) reached mimalloc: arenas are
//! reserved 64 MiB at a time, not 1 GiB (whose bookkeeping alone is 188 KiB resident).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[test]
fn mimalloc_reserves_64_mib_arenas() {
    let block = vec![1u8; 100_000];
    let stats = mimalloc::MiMalloc::stats_json().expect("mimalloc statistics");
    let stats: serde_json::Value =
        serde_json::from_str(stats.to_str().expect("UTF-8")).expect("JSON");
    let reserved = stats["reserved"]["current"]
        .as_u64()
        .expect("reserved.current");
    assert!(block.iter().all(|&b| b == 1));
    assert!(
        (1..=128 << 20).contains(&reserved),
        "mimalloc reserved {reserved} bytes: was libmimalloc-sys built without \
         -DMI_DEFAULT_ARENA_RESERVE=65536 (.cargo/config.toml)?"
    );
}
