//! The web panel in `frontend/`: build it, prove the committed build matches its sources,
//! and run its unit and end-to-end tests.
//!
//! - `frontend`: installs exactly the locked npm packages (when they are missing or the
//!   lockfile changed) and builds `frontend/dist/management.html`, the file the binary
//!   embeds. Prints its size and fails above the size budget.
//! - `frontend --check`: builds into `target/panel-check/` and fails when the result
//!   differs from the committed file; also type-checks and runs the unit tests (vitest).
//! - `e2e`: builds the server and the fake CPA, installs Debian's Chromium when it is
//!   missing, and drives the panel through the operator's path (playwright-core).
//! - `bench panel [--size N] [--data-dir DIR] [--runs R]`: the dashboard's first
//!   meaningful paint in Chromium against the release server on a database of N
//!   synthetic events (1,000,000; filled once into DIR), beside an empty database.
//!
//! A clone needs no Node to build or run the server: only these commands use it.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use xshell::{Shell, cmd};

/// Chromium as Debian packages it; a browser is never downloaded.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The committed build, relative to the project root.
const BUILT: &str = "frontend/dist/management.html";

pub fn run(shell: &Shell, args: &[String]) -> Result<(), String> {
    if args.iter().any(|arg| arg == "--check") {
        check(shell)
    } else {
        build(shell)
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::project_root().join("target"))
}

fn ensure_node(shell: &Shell) -> Result<(), String> {
    let version = cmd!(shell, "node --version").quiet().read().map_err(|_| {
        "Node.js (20.19 or newer) and npm are needed to build or test the panel; install them \
         (Debian: apt-get install nodejs npm) and retry. Running the server needs neither."
            .to_string()
    })?;
    let major: u32 = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .unwrap_or(0);
    if major < 20 {
        return Err(format!(
            "Node.js {version} is too old for the panel build; install 20.19 or newer"
        ));
    }
    Ok(())
}

/// `npm ci` unless `node_modules` was installed from exactly this lockfile.
fn ensure_packages(shell: &Shell) -> Result<(), String> {
    ensure_node(shell)?;
    let frontend = crate::project_root().join("frontend");
    let lockfile = std::fs::read(frontend.join("package-lock.json"))
        .map_err(|error| format!("read frontend/package-lock.json: {error}"))?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    lockfile.hash(&mut hasher);
    let fingerprint = format!("{:016x}", hasher.finish());
    let marker = frontend.join("node_modules/.cpamp-lockfile");
    if std::fs::read_to_string(&marker).is_ok_and(|saved| saved == fingerprint) {
        return Ok(());
    }
    crate::step("npm ci (frontend)");
    let _dir = shell.push_dir(&frontend);
    cmd!(shell, "npm ci --no-audit --no-fund")
        .run()
        .map_err(|error| error.to_string())?;
    std::fs::write(&marker, fingerprint).map_err(|error| format!("write {marker:?}: {error}"))
}

fn build(shell: &Shell) -> Result<(), String> {
    ensure_packages(shell)?;
    crate::step("build the panel");
    let _dir = shell.push_dir(crate::project_root().join("frontend"));
    cmd!(shell, "npm run --silent build -- --logLevel warn")
        .run()
        .map_err(|error| error.to_string())?;
    cmd!(shell, "node scripts/size.mjs dist/management.html")
        .run()
        .map_err(|error| error.to_string())
}

fn check(shell: &Shell) -> Result<(), String> {
    ensure_packages(shell)?;
    let out = target_dir().join("panel-check");
    let root = crate::project_root();
    let _dir = shell.push_dir(root.join("frontend"));
    crate::step("panel: type check");
    cmd!(shell, "npm run --silent check")
        .run()
        .map_err(|error| error.to_string())?;
    crate::step("panel: unit tests");
    cmd!(shell, "npm run --silent test")
        .run()
        .map_err(|error| error.to_string())?;
    crate::step("panel: the committed build matches its sources");
    cmd!(
        shell,
        "npm run --silent build -- --logLevel warn --outDir {out} --emptyOutDir"
    )
    .run()
    .map_err(|error| error.to_string())?;
    let fresh = out.join("management.html");
    cmd!(shell, "node scripts/size.mjs {fresh}")
        .run()
        .map_err(|error| error.to_string())?;
    same_file(&fresh, &root.join(BUILT))
}

fn same_file(fresh: &Path, committed: &Path) -> Result<(), String> {
    let fresh_bytes = std::fs::read(fresh).map_err(|error| format!("read {fresh:?}: {error}"))?;
    let committed_bytes =
        std::fs::read(committed).map_err(|error| format!("read {committed:?}: {error}"))?;
    if fresh_bytes == committed_bytes {
        return Ok(());
    }
    Err(format!(
        "{BUILT} differs from a fresh build of frontend/src ({} bytes committed, {} built); \
         run `cargo xtask frontend` and commit {BUILT}",
        committed_bytes.len(),
        fresh_bytes.len()
    ))
}

/// The end-to-end tests: the real binary, the fake CPA and Debian's Chromium.
pub fn e2e(shell: &Shell) -> Result<(), String> {
    ensure_packages(shell)?;
    ensure_chromium(shell)?;
    crate::step("build the server and the fake CPA for the panel tests");
    cmd!(
        shell,
        "cargo build --locked -p cpamp-server -p cpamp-testkit --bin cpamp-server --example fake_cpa"
    )
    .run()
    .map_err(|error| error.to_string())?;
    let target = target_dir();
    let server = target.join("debug/cpamp-server");
    let fake = target.join("debug/examples/fake_cpa");
    crate::step("panel: end-to-end tests in Chromium");
    let _dir = shell.push_dir(crate::project_root().join("frontend"));
    cmd!(shell, "npm run --silent e2e")
        .env("CPAMP_SERVER_BIN", &server)
        .env("CPAMP_FAKE_CPA_BIN", &fake)
        .env("CPAMP_CHROMIUM", CHROMIUM)
        .run()
        .map_err(|error| error.to_string())?;
    eprintln!("xtask: screenshots are in frontend/test-results/screenshots/");
    Ok(())
}

/// Installs Debian's `chromium` package when `/usr/bin/chromium` is missing.
pub fn ensure_chromium(shell: &Shell) -> Result<(), String> {
    if Path::new(CHROMIUM).is_file() {
        return Ok(());
    }
    crate::step("apt-get install chromium (for the panel tests)");
    let root = cmd!(shell, "id -u")
        .quiet()
        .read()
        .is_ok_and(|id| id.trim() == "0");
    let apt = |args: &[&str]| {
        let command = if root {
            cmd!(shell, "apt-get {args...}")
        } else {
            cmd!(shell, "sudo apt-get {args...}")
        };
        command.env("DEBIAN_FRONTEND", "noninteractive").run()
    };
    // A fresh machine may not know the package yet: refresh the lists once and retry.
    let installed = apt(&["install", "-y", "chromium"]).or_else(|_| {
        apt(&["update"])?;
        apt(&["install", "-y", "chromium"])
    });
    installed.map_err(|error| {
        format!(
            "installing Debian's chromium failed ({error}); install it with \
             `apt-get install chromium` (a downloaded browser is not used)"
        )
    })?;
    if Path::new(CHROMIUM).is_file() {
        Ok(())
    } else {
        Err(format!(
            "{CHROMIUM} is still missing after installing chromium"
        ))
    }
}

/// `cargo xtask bench panel`: first meaningful paint of the dashboard on a large database.
pub fn bench(shell: &Shell, args: &[String]) -> Result<(), String> {
    let mut size = "1000000".to_string();
    let mut data_dir: Option<PathBuf> = None;
    let mut runs = "7".to_string();
    let mut list = args.iter();
    while let Some(arg) = list.next() {
        let mut value = || {
            list.next()
                .cloned()
                .ok_or_else(|| format!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--size" => size = value()?.replace('_', ""),
            "--data-dir" => data_dir = Some(PathBuf::from(value()?)),
            "--runs" => runs = value()?,
            other => {
                return Err(format!(
                    "unknown option {other:?}; use --size N, --data-dir DIR, --runs R"
                ));
            }
        }
    }
    ensure_packages(shell)?;
    ensure_chromium(shell)?;
    cmd!(
        shell,
        "cargo build --release --locked -p cpamp-server -p cpamp-storage -p cpamp-testkit --bin cpamp-server --example fill_synthetic --example fake_cpa"
    )
    .run()
    .map_err(|error| error.to_string())?;
    let release = target_dir().join("release");
    let data_dir = data_dir.unwrap_or_else(|| target_dir().join(format!("bench-panel-{size}")));
    let database = data_dir.join("usage.sqlite");
    let fill = release.join("examples/fill_synthetic");
    cmd!(shell, "{fill} {database} {size}")
        .run()
        .map_err(|error| error.to_string())?;
    let _dir = shell.push_dir(crate::project_root().join("frontend"));
    cmd!(shell, "npm run --silent bench")
        .env("CPAMP_SERVER_BIN", release.join("cpamp-server"))
        .env("CPAMP_FAKE_CPA_BIN", release.join("examples/fake_cpa"))
        .env("CPAMP_CHROMIUM", CHROMIUM)
        .env("CPAMP_BENCH_DATA_DIR", &data_dir)
        .env("CPAMP_BENCH_RUNS", runs)
        .run()
        .map_err(|error| error.to_string())
}
