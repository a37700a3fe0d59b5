//! The manifest and cargo config of a staged crate: dependency paths that stay inside what
//! the client sent kept as written, the others anchored at the client's path; a crate's
//! `.cargo/config.toml` checked (source replacement only, [`appbuild::cargo_config`]).

use std::path::{Component, Path};

use appbuild::manifest::Manifest;

use super::stage_error::StageError;

/// The manifest of a crate handed over as `named`, `depth` directories below the top of the
/// tree handed over, parsed (`toml_edit`): a dependency `path` that stays inside that tree
/// (`vendor/hex`, a workspace sibling `../abi`) is kept as written, so it names the copy; any other relative one is made absolute against `named` (the build then
/// allows it only when it is the host's own `sandbox_abi`); and the crate is made its own
/// workspace root.
pub(crate) fn rewrite_manifest(
    text: &str,
    named: &Path,
    depth: usize,
) -> Result<String, appbuild::manifest::ManifestError> {
    let mut manifest = Manifest::parse(text)?;
    manifest.rewrite_paths(|value| {
        let p = Path::new(value);
        if p.is_absolute() || stays_inside(p, depth) {
            None
        } else {
            Some(named.join(p).to_string_lossy().into_owned())
        }
    });
    manifest.ensure_workspace();
    Ok(manifest.to_text())
}

/// Whether relative path `p`, starting `depth` directories below the top of the tree, never
/// climbs above that top.
fn stays_inside(p: &Path, mut depth: usize) -> bool {
    for c in p.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Checks the copy's `.cargo/config.toml` (see [`appbuild::cargo_config`]), naming the
/// client's file in the error.
pub(crate) fn check_cargo_config(dest: &Path, named: &Path) -> Result<(), StageError> {
    let Some(file) = appbuild::cargo_config::find(dest) else {
        return Ok(());
    };
    let shown = named.join(file.strip_prefix(dest).unwrap_or(&file));
    let text = std::fs::read_to_string(&file).map_err(|source| StageError::Io {
        path: shown.clone(),
        source,
    })?;
    appbuild::cargo_config::check(&text, &shown).map_err(|e| StageError::Refused {
        path: shown,
        why: e.to_string(),
    })?;
    Ok(())
}
