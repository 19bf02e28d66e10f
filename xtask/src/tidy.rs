//! Repository conventions, checked as tests so plain `cargo test` catches them.

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    fn root() -> PathBuf {
        crate::project_root()
    }

    fn crate_dirs() -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = ["crates", "apps"]
            .iter()
            .flat_map(|parent| std::fs::read_dir(root().join(parent)).into_iter().flatten())
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.join("Cargo.toml").is_file())
            .collect();
        dirs.push(root().join("xtask"));
        dirs.sort();
        dirs
    }

    fn relative(path: &Path) -> String {
        path.strip_prefix(root())
            .unwrap_or(path)
            .display()
            .to_string()
    }

    #[test]
    fn every_crate_is_on_the_architecture_map() {
        let map = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
        let missing: Vec<String> = crate_dirs()
            .iter()
            .map(|dir| relative(dir))
            .filter(|dir| dir != "xtask" && !map.contains(&format!("`{dir}")))
            .collect();
        assert!(
            missing.is_empty(),
            "add these to ARCHITECTURE.md's code map: {missing:?}"
        );
    }

    #[test]
    fn every_crate_inherits_workspace_lints_and_is_unpublished() {
        for dir in crate_dirs() {
            let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("manifest");
            assert!(
                manifest.contains("[lints]\nworkspace = true"),
                "{}: add `[lints] workspace = true`",
                relative(&dir)
            );
            assert!(
                manifest.contains("publish.workspace = true"),
                "{}: inherit `publish = false` from the workspace",
                relative(&dir)
            );
        }
    }

    #[test]
    fn migrations_are_numbered_and_unique() {
        let dir = root().join("crates/storage/migrations");
        let mut versions = Vec::new();
        for entry in std::fs::read_dir(&dir)
            .expect("migrations")
            .filter_map(Result::ok)
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let (version, rest) = name.split_once('_').unwrap_or(("", ""));
            assert!(
                version.len() == 4
                    && version.bytes().all(|byte| byte.is_ascii_digit())
                    && rest.ends_with(".sql"),
                "migration {name:?} must be named NNNN_description.sql"
            );
            versions.push(version.to_string());
        }
        let count = versions.len();
        versions.sort();
        versions.dedup();
        assert_eq!(
            versions.len(),
            count,
            "two migrations share a version number"
        );
    }
}
