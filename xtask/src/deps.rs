//! Proves the layering: lower crates never link the frameworks of upper ones.
//!
//! `cargo tree -e normal -i <crate>` fails with "did not match any packages" when the
//! crate is not in the package's dependency graph, and prints nothing when it is
//! reached only through dev-dependencies; either is what we want.

use xshell::{Shell, cmd};

/// (package, crate it must not link).
const FORBIDDEN: &[(&str, &str)] = &[
    ("cpamp-domain", "sqlx"),
    ("cpamp-domain", "actix-web"),
    ("cpamp-domain", "tokio"),
    ("cpamp-domain", "hyper"),
    ("cpamp-api", "sqlx"),
    ("cpamp-storage", "actix-web"),
    ("cpamp-storage", "hyper"),
    ("cpamp-collector", "actix-web"),
    ("cpamp-collector", "sqlx"),
];

pub fn check(shell: &Shell) -> Result<(), String> {
    let mut violations = Vec::new();
    for (package, forbidden) in FORBIDDEN {
        let output = cmd!(
            shell,
            "cargo tree -p {package} -e normal -i {forbidden} --locked"
        )
        .quiet()
        .ignore_status()
        .output()
        .map_err(|error| error.to_string())?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        // A crate reached only through dev-dependencies is in the resolved graph, so
        // `cargo tree` succeeds, but prints nothing for the normal edges.
        if output.status.success() && !stdout.trim().is_empty() {
            violations.push(format!(
                "{package} links {forbidden}:\n{}",
                String::from_utf8_lossy(&output.stdout)
            ));
        } else if !output.status.success() && !stderr.contains("did not match any packages") {
            return Err(format!("cargo tree failed for {package}: {stderr}"));
        } else {
            eprintln!("ok: {package} does not link {forbidden}");
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "dependency direction violated:\n{}",
            violations.join("\n")
        ))
    }
}
