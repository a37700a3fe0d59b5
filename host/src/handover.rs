//! What the client hands over for an app crate: the crate directory alone, or, when its
//! path dependencies reach workspace siblings, also the root of the workspace it is a member
//! of (a second descriptor; the daemon finds the crate in that tree by device and inode).
//! Judged by parsing the manifests (`toml_edit`), transitively.

use std::path::{Path, PathBuf};

use appbuild::manifest::Manifest;

/// Most crates looked at.
const MAX_CRATES: usize = 256;

/// The tree to hand over with the crate at `dir` (absolute): `None` when every path
/// dependency lies inside the crate (or is the host's own `sandbox_abi`), else the nearest
/// enclosing workspace root that holds them all, if any (without one the daemon refuses the
/// dependency and says why).
pub fn tree_for(dir: &Path) -> Option<PathBuf> {
    let deps = path_dependencies(dir);
    let abi = appbuild::stage::host_abi();
    let outside: Vec<&PathBuf> = deps
        .iter()
        .filter(|d| !d.starts_with(dir) && abi.as_ref() != Some(*d))
        .collect();
    if outside.is_empty() {
        return None;
    }
    dir.ancestors()
        .skip(1)
        .find(|a| is_workspace_root(a) && outside.iter().all(|d| d.starts_with(a)))
        .map(Path::to_path_buf)
}

fn is_workspace_root(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml"))
        .ok()
        .and_then(|t| Manifest::parse(&t).ok())
        .is_some_and(|m| m.has_workspace())
}

/// The path dependencies of the crate at `dir`, transitively, canonical.
fn path_dependencies(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(krate) = todo.pop() {
        let Some(mut manifest) = std::fs::read_to_string(krate.join("Cargo.toml"))
            .ok()
            .and_then(|t| Manifest::parse(&t).ok())
        else {
            continue;
        };
        for value in manifest.dependency_paths() {
            let Ok(dep) = krate.join(&value).canonicalize() else {
                continue;
            };
            if dep == dir || found.contains(&dep) || !dep.join("Cargo.toml").is_file() {
                continue;
            }
            if found.len() >= MAX_CRATES {
                return found;
            }
            found.push(dep.clone());
            todo.push(dep);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, text: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn a_member_with_sibling_dependencies_hands_over_its_workspace() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = tmp.path().canonicalize().unwrap().join("ws");
        write(
            &ws.join("Cargo.toml"),
            "[workspace]\nmembers = [\"app\", \"util\", \"base\"]\n",
        );
        write(
            &ws.join("app/Cargo.toml"),
            "[package]\nname = \"app\"\n[dependencies]\nutil = { path = \"../util\" }\n\
             hex = { path = \"vendor/hex\" }\n",
        );
        write(
            &ws.join("app/vendor/hex/Cargo.toml"),
            "[package]\nname = \"hex\"\n",
        );
        write(
            &ws.join("util/Cargo.toml"),
            "[package]\nname = \"util\"\n[dependencies]\nbase = { path = \"../base\" }\n",
        );
        write(&ws.join("base/Cargo.toml"), "[package]\nname = \"base\"\n");
        write(
            &ws.join("alone/Cargo.toml"),
            "[package]\nname = \"alone\"\n[dependencies]\nhex = { path = \"vendor/hex\" }\n",
        );
        write(
            &ws.join("alone/vendor/hex/Cargo.toml"),
            "[package]\nname = \"hex\"\n",
        );
        assert_eq!(tree_for(&ws.join("app")), Some(ws.clone()));
        assert_eq!(tree_for(&ws.join("alone")), None);
        // Outside any workspace that holds it: nothing more is handed over.
        write(
            &ws.join("base/Cargo.toml"),
            "[package]\nname = \"base\"\n[dependencies]\nx = { path = \"../../x\" }\n",
        );
        write(
            &tmp.path().join("x/Cargo.toml"),
            "[package]\nname = \"x\"\n",
        );
        assert_eq!(tree_for(&ws.join("app")), None);
    }
}
