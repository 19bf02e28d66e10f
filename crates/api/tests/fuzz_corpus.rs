//! The fuzz targets on the stable toolchain: every seed (`fuzz/seeds/<target>/`, written
//! from the fixtures by `cargo xtask fuzz --seeds`) and every saved regression input
//! (`fuzz/regressions/<target>/`, inputs that once broke a target) goes through the
//! target function libFuzzer runs, so a finding stays fixed without a nightly toolchain.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

#[path = "../../../fuzz/src/lib.rs"]
mod targets;

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

fn replay(target: &str) {
    let (_, run) = targets::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap();
    let seeds = inputs("seeds", target);
    assert!(
        seeds.len() >= 4,
        "fuzz/seeds/{target} holds {} inputs; run `cargo xtask fuzz --seeds`",
        seeds.len()
    );
    for (path, bytes) in seeds.iter().chain(&inputs("regressions", target)) {
        let outcome = std::panic::catch_unwind(|| run(bytes));
        assert!(outcome.is_ok(), "{target} failed on {}", path.display());
    }
}

#[test]
fn decode_corpus() {
    replay("decode");
}

#[test]
fn resp_corpus() {
    replay("resp");
}

#[test]
fn import_corpus() {
    replay("import");
}

#[test]
fn analytics_corpus() {
    replay("analytics");
}

/// Every target is replayed above.
#[test]
fn every_target_is_replayed() {
    let names: Vec<&str> = targets::TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["decode", "resp", "import", "analytics"]);
}
