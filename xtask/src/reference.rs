//! The configuration reference (`docs/configuration.md`) against the code: every
//! environment variable and config-file key the code reads is documented, and every
//! documented one is read. Run as tests, so plain `cargo test` catches a drift.
//!
//! What counts as read: a string literal shaped like an environment variable
//! (`"USAGE_BATCH_SIZE"`, but not the compiler's `env!("…")`) in the non-test part of a library or server source file
//! (`crates/*/src`, `apps/*/src`; the fake CPA in `crates/testkit` is left out),
//! `RUST_LOG` where `EnvFilter` reads its default variable, and `${NAME` in the image's
//! entry point script. Config keys are the fields of `RawFile` in the server's
//! `config.rs` (camelCase, as serde names them) and the `key: Some("…")` entries of
//! `config/compat.rs`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Documented names: backticked environment-variable names anywhere on the page, and
/// backticked keys in the "Config key" column of its tables.
pub struct Documented {
    pub variables: BTreeSet<String>,
    pub keys: BTreeSet<String>,
}

pub fn documented(page: &str) -> Documented {
    let mut variables = BTreeSet::new();
    let mut keys = BTreeSet::new();
    let mut key_column = None;
    for line in page.lines() {
        for token in backticked(line) {
            if is_env_name(token) {
                variables.insert(token.to_string());
            }
        }
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if !line.trim_start().starts_with('|') {
            key_column = None;
            continue;
        }
        if let Some(column) = cells.iter().position(|cell| *cell == "Config key") {
            key_column = Some(column);
            continue;
        }
        if let Some(cell) = key_column.and_then(|column| cells.get(column)) {
            keys.extend(backticked(cell).into_iter().map(str::to_string));
        }
    }
    Documented { variables, keys }
}

fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// `USAGE_BATCH_SIZE`, `RUST_LOG`: upper-case words joined by underscores.
pub fn is_env_name(text: &str) -> bool {
    text.len() > 3
        && text.contains('_')
        && !text.starts_with('_')
        && !text.ends_with('_')
        && text.starts_with(|first: char| first.is_ascii_uppercase())
        && text
            .bytes()
            .all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b'_')
}

/// Environment variables the code reads.
pub fn variables_read(root: &Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for file in source_files(root) {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let code = text.split("#[cfg(test)]").next().unwrap_or(&text);
        let pieces: Vec<&str> = code.split('"').collect();
        for index in (1..pieces.len()).step_by(2) {
            // `env!("CARGO_PKG_VERSION")` is read by the compiler, not at run time.
            let compile_time = pieces[index - 1].trim_end().ends_with("env!(");
            if is_env_name(pieces[index]) && !compile_time {
                names.insert(pieces[index].to_string());
            }
        }
        if code.contains("from_default_env") {
            names.insert("RUST_LOG".to_string());
        }
    }
    let script =
        std::fs::read_to_string(root.join("deploy/docker-entrypoint.sh")).unwrap_or_default();
    for piece in script.split("${").skip(1) {
        let name: String = piece
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if is_env_name(&name) {
            names.insert(name);
        }
    }
    names
}

/// Config-file keys the server reads: `RawFile`'s fields and the keys listed as
/// accepted but not applied.
pub fn keys_read(root: &Path) -> BTreeSet<String> {
    let config =
        std::fs::read_to_string(root.join("apps/cpamp-server/src/config.rs")).unwrap_or_default();
    let mut keys = BTreeSet::new();
    let body = config
        .split("struct RawFile {")
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .unwrap_or_default();
    let mut rename = None;
    for line in body.lines().map(str::trim) {
        if let Some(name) = line
            .strip_prefix("#[serde(rename = \"")
            .and_then(|rest| rest.split('"').next())
        {
            rename = Some(name.to_string());
            continue;
        }
        if line.starts_with("//") || line.starts_with('#') {
            continue;
        }
        if let Some((field, _)) = line.split_once(':') {
            let field = field.trim_start_matches("pub ").trim();
            if !field.is_empty()
                && field
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                keys.insert(rename.take().unwrap_or_else(|| camel_case(field)));
            }
        }
    }
    let compat = std::fs::read_to_string(root.join("apps/cpamp-server/src/config/compat.rs"))
        .unwrap_or_default();
    let code = compat.split("#[cfg(test)]").next().unwrap_or(&compat);
    for piece in code.split("key: Some(\"").skip(1) {
        if let Some(key) = piece.split('"').next() {
            keys.insert(key.to_string());
        }
    }
    keys
}

fn camel_case(snake: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn source_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for parent in ["crates", "apps"] {
        let Ok(entries) = std::fs::read_dir(root.join(parent)) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            if entry.file_name() == "testkit" {
                continue;
            }
            collect_rs(&entry.path().join("src"), &mut files);
        }
    }
    files.sort();
    files
}

fn collect_rs(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            collect_rs(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> String {
        std::fs::read_to_string(crate::project_root().join("docs/configuration.md"))
            .expect("docs/configuration.md")
    }

    #[test]
    fn configuration_reference_lists_every_variable_the_code_reads_and_no_other() {
        let read = variables_read(&crate::project_root());
        let documented = documented(&page()).variables;
        let missing: Vec<&String> = read.difference(&documented).collect();
        let stale: Vec<&String> = documented.difference(&read).collect();
        assert!(
            missing.is_empty(),
            "read by the code but missing from docs/configuration.md (add a table row with default and meaning): {missing:?}"
        );
        assert!(
            stale.is_empty(),
            "listed in docs/configuration.md but read nowhere (remove it, or read it): {stale:?}"
        );
    }

    #[test]
    fn configuration_reference_lists_every_config_key_the_server_reads_and_no_other() {
        let read = keys_read(&crate::project_root());
        assert!(
            read.contains("httpAddr") && read.contains("pprofAddr"),
            "{read:?}"
        );
        let documented = documented(&page()).keys;
        let missing: Vec<&String> = read.difference(&documented).collect();
        let stale: Vec<&String> = documented.difference(&read).collect();
        assert!(
            missing.is_empty(),
            "config keys missing from the Config key column of docs/configuration.md: {missing:?}"
        );
        assert!(
            stale.is_empty(),
            "documented config keys the server does not read: {stale:?}"
        );
    }

    #[test]
    fn the_reference_parser_sees_names_keys_and_literals() {
        let parsed = documented(
            "text `NOT_A_TABLE_VAR`\n\n| Variable | Config key | Default | Meaning |\n|---|---|---|---|\n| `HTTP_ADDR` | `httpAddr` | `0.0.0.0:18317` | x |\n| `RUST_LOG` | — | `info` | y |\n\nafter `plainWord`\n",
        );
        assert_eq!(
            parsed
                .variables
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["HTTP_ADDR", "NOT_A_TABLE_VAR", "RUST_LOG"]
        );
        assert_eq!(
            parsed.keys.iter().map(String::as_str).collect::<Vec<_>>(),
            ["httpAddr"]
        );
        assert!(
            is_env_name("USAGE_BATCH_SIZE")
                && !is_env_name("usage")
                && !is_env_name("GET")
                && !is_env_name("A_")
        );
        assert_eq!(
            camel_case("usage_import_chunk_bytes"),
            "usageImportChunkBytes"
        );
    }
}
