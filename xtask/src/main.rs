//! Project automation in plain Rust: `cargo xtask <command>`.
//!
//! - `ci`: everything CI runs, in CI's order (fmt check, lint, tests, the load smoke
//!   test, the panel's build check, unit tests and end-to-end tests).
//! - `fmt [--check]`: format the workspace.
//! - `lint`: clippy with warnings denied, the dependency-direction checks, and
//!   `cargo doc --workspace --no-deps` with rustdoc warnings denied.
//! - `test`: every test target, the doctests (the library crates' examples) and the
//!   embedding example `cpamp-collector/examples/embed.rs`.
//! - `bench <name>`: run a benchmark and print its table (see `bench.rs`).
//! - `frontend [--check]`: build the web panel, or prove the committed build is fresh
//!   (see `frontend.rs`); `e2e`: the panel's end-to-end tests in Chromium.
//! - `deploy-check`: hadolint, shellcheck and `systemd-analyze` on `deploy/` (see `deploy.rs`).
//! - `dist [--debug]`: the native release archive in `target/dist/`.
//! - `fuzz [--smoke] [target] [--runs N] [--seeds]`: the libFuzzer targets (see `fuzz.rs`).

mod bench;
mod deploy;
mod deps;
mod frontend;
mod fuzz;
#[cfg(test)]
mod reference;
mod tidy;

use std::process::ExitCode;

use xshell::{Shell, cmd};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = run(&args);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let shell = Shell::new().map_err(|error| error.to_string())?;
    shell.change_dir(project_root());
    let command = args.first().map(String::as_str).unwrap_or("help");
    let rest = &args[args.len().min(1)..];
    match command {
        "ci" => ci(&shell),
        "fmt" => fmt(&shell, rest.iter().any(|arg| arg == "--check")),
        "lint" => lint(&shell),
        "test" => test(&shell),
        "bench" => bench::run(&shell, rest),
        "frontend" => frontend::run(&shell, rest),
        "e2e" => frontend::e2e(&shell),
        "deploy-check" => deploy::check(&shell),
        "dist" => deploy::dist(&shell, rest),
        "dist-check" => deploy::dist_check(&shell),
        "fuzz" => fuzz::run(&shell, rest),
        "help" | "--help" | "-h" => {
            println!(
                "usage: cargo xtask <ci | fmt [--check] | lint | test | bench <name> | frontend [--check] | e2e | deploy-check | dist [--debug] | fuzz [--smoke] [target] [--runs N] [--seeds]>"
            );
            println!("benchmarks: {}", bench::NAMES.join(", "));
            println!("fuzz targets: {}", fuzz::TARGETS.join(", "));
            Ok(())
        }
        other => Err(format!("unknown command {other:?}; try `cargo xtask help`")),
    }
}

pub(crate) fn project_root() -> std::path::PathBuf {
    let manifest_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

pub(crate) fn step(name: &str) {
    eprintln!("\n== xtask: {name}");
}

/// The whole CI pipeline, in the order of `.github/workflows/ci.yml`.
fn ci(shell: &Shell) -> Result<(), String> {
    fmt(shell, true)?;
    lint(shell)?;
    test(shell)?;
    step("load smoke (no lost event, no unexpected answer under load)");
    bench::load(shell, &["--smoke".to_string()])?;
    fuzz::run(shell, &["--smoke".to_string()])?;
    frontend::run(shell, &["--check".to_string()])?;
    frontend::e2e(shell)?;
    deploy::check(shell)?;
    deploy::dist_check(shell)
}

fn fmt(shell: &Shell, check: bool) -> Result<(), String> {
    step(if check { "fmt --check" } else { "fmt" });
    let check_flag = if check { Some("--check") } else { None };
    cmd!(shell, "cargo fmt --all -- {check_flag...}")
        .run()
        .map_err(|error| error.to_string())
}

fn lint(shell: &Shell) -> Result<(), String> {
    step("clippy");
    cmd!(
        shell,
        "cargo clippy --workspace --all-targets --locked -- -D warnings"
    )
    .run()
    .map_err(|error| error.to_string())?;
    step("dependency directions");
    deps::check(shell)?;
    step("doc (warnings are errors)");
    cmd!(shell, "cargo doc --workspace --no-deps --locked")
        .env("RUSTDOCFLAGS", "-D warnings")
        .run()
        .map_err(|error| error.to_string())
}

fn test(shell: &Shell) -> Result<(), String> {
    step("tests");
    cmd!(shell, "cargo test --workspace --all-targets --locked")
        .run()
        .map_err(|error| error.to_string())?;
    step("doctests (the crate examples)");
    cmd!(shell, "cargo test --workspace --doc --locked")
        .run()
        .map_err(|error| error.to_string())?;
    step("embedding example (collector + storage, no web framework)");
    cmd!(
        shell,
        "cargo run --locked -p cpamp-collector --example embed"
    )
    .run()
    .map_err(|error| error.to_string())
}
