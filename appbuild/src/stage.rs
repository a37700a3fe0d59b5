//! Stages a crate for the build sandbox: a private copy the build may write, the path
//! dependencies it may read, and, after the build, the one `.so` taken out of its target dir.
//!
//! The rule for path dependencies: each must be a crate directory (it holds a `Cargo.toml`)
//! inside the crate's *source root* — the outermost ancestor of the crate holding a
//! `Cargo.toml` with a `[workspace]` table (else the crate's parent directory) — and must not
//! be the source root itself, an ancestor of the crate, or lie under a `target` or hidden
//! directory or the compiler's own target dir. The `sandbox_abi` of the tree this binary was
//! built from (the contract every app uses) is always allowed. Each one is bound read-only at
//! its own host
//! path under `/src`, so relative paths between them keep working; of the rest of the tree
//! only the manifests of the workspaces those dependencies belong to are visible (read-only,
//! for `edition.workspace = true` and the like).

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use isolation::root::Bind;

use crate::error::BuildError;
use crate::inside;
use crate::manifest::Manifest;
use crate::sync::{chown, write_owned};

/// Most bytes of a crate copied for a build.
const COPY_BYTES_CAP: u64 = 256 << 20;
/// Most files and directories of a crate copied for a build.
const COPY_ENTRIES_CAP: usize = 20_000;
/// Largest library taken out of a build.
pub const ARTIFACT_CAP: u64 = 256 << 20;

fn fail(diagnostics: String) -> BuildError {
    BuildError::failed(diagnostics)
}

/// A crate staged for one build.
#[derive(Debug)]
pub struct Staged {
    /// The copy's path inside the sandbox (`/src/<the crate's host path>`).
    pub crate_inside: PathBuf,
    /// Binds: the copy read-write, the path dependencies read-only.
    pub binds: Vec<Bind>,
    /// `--config` arguments from the crate's own `.cargo/config.toml` (source replacement
    /// only, see [`crate::cargo_config`]).
    pub config_args: Vec<String>,
}

/// The in-sandbox path of host path `p` (canonical) under [`inside::SRC`].
pub fn src_path(p: &Path) -> PathBuf {
    Path::new(inside::SRC).join(p.strip_prefix("/").unwrap_or(p))
}

/// The `sandbox_abi` crate of the source tree this binary was built from, if it still exists.
pub fn host_abi() -> Option<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sandbox_abi")
        .canonicalize()
        .ok()
        .filter(|d| d.join("Cargo.toml").is_file())
}

/// The file a daemon puts beside a tree a client handed over (`<key>/<tree>`): the tree is
/// the source root of every crate in it, whatever lies above.
pub const TREE_MARKER: &str = ".sandbox-host-tree";

/// The tree a daemon staged `dir` in (see [`TREE_MARKER`]), if it was.
pub fn handed_over_tree(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|a| {
            a.parent()
                .is_some_and(|p| std::fs::symlink_metadata(p.join(TREE_MARKER)).is_ok())
        })
        .map(Path::to_path_buf)
}

/// The tree `dir` was handed over in (the ancestor, or `dir` itself, whose parent holds
/// [`TREE_MARKER`]), else the outermost ancestor of `dir` with a `Cargo.toml` that has a
/// `[workspace]` table, else `dir`'s parent.
pub fn source_root(dir: &Path) -> PathBuf {
    if let Some(tree) = handed_over_tree(dir) {
        return tree;
    }
    let mut found = None;
    for a in dir.ancestors().skip(1) {
        if std::fs::read_to_string(a.join("Cargo.toml")).is_ok_and(|m| has_workspace(&m)) {
            found = Some(a.to_path_buf());
        }
    }
    found.unwrap_or_else(|| dir.parent().unwrap_or(Path::new("/")).to_path_buf())
}

/// Whether `manifest` parses and has a `[workspace]` table.
fn has_workspace(manifest: &str) -> bool {
    Manifest::parse(manifest).is_ok_and(|m| m.has_workspace())
}

/// `dir`'s manifest, parsed.
fn parse_manifest(dir: &Path) -> Result<Manifest, BuildError> {
    let text = read_manifest(dir)?;
    Manifest::parse(&text).map_err(|e| fail(format!("{}/Cargo.toml: {e}", dir.display())))
}

/// The path dependencies of the crate at `dir` (canonical), transitively, checked against the
/// rule in the module docs.
pub fn path_dependencies(dir: &Path, forbidden: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let root = source_root(dir);
    let mut found: Vec<PathBuf> = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(krate) = todo.pop() {
        for value in parse_manifest(&krate)?.dependency_paths() {
            let Ok(dep) = krate.join(&value).canonicalize() else {
                continue;
            };
            if dep.starts_with(&krate) || !dep.join("Cargo.toml").is_file() {
                continue; // a file of this crate ([lib] path, build = ...), or not a crate
            }
            let allowed = host_abi().is_some_and(|abi| abi == dep);
            let checked = match allowed {
                true => Ok(()),
                false => check_dependency(&dep, dir, &root, forbidden),
            };
            checked.map_err(|why| {
                fail(format!(
                    "path dependency {value:?} of {} ({}) {why}; path dependencies must be \
                     crates inside the source root {} or the host's own sandbox_abi (see the \
                     README's Builds paragraph)",
                    krate.display(),
                    dep.display(),
                    root.display()
                ))
            })?;
            if dep != dir && !found.contains(&dep) {
                found.push(dep.clone());
                todo.push(dep);
            }
        }
    }
    Ok(found)
}

fn check_dependency(
    dep: &Path,
    krate: &Path,
    root: &Path,
    forbidden: &Path,
) -> Result<(), &'static str> {
    if !dep.starts_with(root) {
        return Err("is outside the source root");
    }
    if dep == root || krate.starts_with(dep) {
        return Err("contains the crate being built");
    }
    if dep.starts_with(forbidden) {
        return Err("is in the build directory");
    }
    let rel = dep.strip_prefix(root).unwrap_or(dep);
    let hidden = rel.components().any(|c| match c {
        Component::Normal(n) => n == "target" || n.as_bytes().starts_with(b"."),
        _ => true,
    });
    if hidden {
        return Err("is under a target or hidden directory");
    }
    Ok(())
}

pub(crate) fn read_manifest(dir: &Path) -> Result<String, BuildError> {
    let path = dir.join("Cargo.toml");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| fail(format!("{} is not a cargo crate: {e}", path.display())))?;
    let mut s = String::new();
    (&mut f)
        .take(1 << 20)
        .read_to_string(&mut s)
        .map_err(|e| BuildError::io(&path, e))?;
    Ok(s)
}

/// Brings the crate's copy `to` up to date with the crate at `from` (canonical), for the
/// build ([`crate::sync`]: only changed files written): no `target/`, `.cargo` or `.git`,
/// symlinks copied as symlinks (never followed, so a link to a host file copies no content), manifest paths to dependencies outside the crate rewritten to their in-sandbox
/// place, a `[workspace]` table added when missing, `src/lib.rs` replaced by `lib_rs` when
/// given, and everything owned by `owner`.
pub fn stage(
    from: &Path,
    to: &Path,
    lib_rs: Option<&str>,
    owner: Option<(u32, u32)>,
    forbidden: &Path,
) -> Result<Staged, BuildError> {
    let mut manifest = parse_manifest(from)?;
    let deps = path_dependencies(from, forbidden)?;
    let (vendor, vendor_base) = vendor_config(from)?;
    let cap = (COPY_BYTES_CAP, COPY_ENTRIES_CAP);
    crate::sync::sync_tree(from, to, true, owner, &mut cap.clone(), cap)?;
    manifest.rewrite_paths(|value| {
        let dep = from.join(value).canonicalize().ok()?;
        deps.contains(&dep)
            .then(|| src_path(&dep).to_string_lossy().into_owned())
    });
    manifest.ensure_workspace();
    write_owned(&to.join("Cargo.toml"), manifest.to_text().as_bytes(), owner)?;
    if let Some(src) = lib_rs {
        let dir = to.join("src");
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(|e| BuildError::io(&dir, e))?;
            chown(&dir, owner)?;
        }
        write_owned(&dir.join("lib.rs"), src.as_bytes(), owner)?;
    }
    let crate_inside = src_path(from);
    let mut binds = vec![Bind {
        src: to.to_path_buf(),
        dst: crate_inside.clone(),
        writable: true,
    }];
    binds.extend(deps.iter().map(|d| Bind {
        src: d.clone(),
        dst: src_path(d),
        writable: false,
    }));
    // A dependency that inherits from its workspace (`edition.workspace = true`) needs the
    // workspace's manifest: that one file, never the rest of the workspace.
    let root = source_root(from);
    let mut manifests: Vec<PathBuf> = Vec::new();
    for d in &deps {
        // Up to the source root, or for the host's sandbox_abi up to its own workspace.
        let top = if d.starts_with(&root) {
            root.clone()
        } else {
            source_root(d)
        };
        for a in d.ancestors().skip(1).take_while(|a| a.starts_with(&top)) {
            let m = a.join("Cargo.toml");
            if !manifests.contains(&m)
                && std::fs::read_to_string(&m).is_ok_and(|t| has_workspace(&t))
                && std::fs::symlink_metadata(&m).is_ok_and(|m| m.is_file())
            {
                manifests.push(m);
            }
        }
    }
    binds.extend(manifests.iter().map(|m| Bind {
        src: m.clone(),
        dst: src_path(m),
        writable: false,
    }));
    // Vendored directories of the workspace (its `.cargo/config.toml`), read-only.
    if vendor_base != from {
        for (_, dir) in &vendor.directories {
            let d = vendor_base.join(dir);
            if d.is_dir() && !d.starts_with(from) {
                binds.push(Bind {
                    src: d.clone(),
                    dst: src_path(&d),
                    writable: false,
                });
            }
        }
    }
    let config_args = vendor.cargo_args(&src_path(&vendor_base));
    Ok(Staged {
        crate_inside,
        binds,
        config_args,
    })
}

/// The crate's own `.cargo/config.toml`, else its source root's (a workspace that ran `cargo
/// vendor` at its root), checked; and the directory its paths are relative to.
fn vendor_config(from: &Path) -> Result<(crate::cargo_config::VendorConfig, PathBuf), BuildError> {
    let root = source_root(from);
    let base = if crate::cargo_config::find(from).is_none()
        && from.starts_with(&root)
        && crate::cargo_config::find(&root).is_some()
    {
        root
    } else {
        from.to_path_buf()
    };
    let config = crate::cargo_config::read(&base).map_err(|e| fail(e.to_string()))?;
    Ok((config, base))
}

/// Reads the library cargo reported at in-sandbox path `inside_path` out of the host target
/// dir `target`: only a regular file directly in a profile directory (`/target/<profile>/
/// lib*.so`), opened beneath `target` without following any symlink, at most
/// [`ARTIFACT_CAP`] bytes.
pub fn take_artifact(target: &Path, inside_path: &str) -> Result<Vec<u8>, BuildError> {
    let rel = Path::new(inside_path)
        .strip_prefix(inside::TARGET)
        .map_err(|_| {
            fail(format!(
                "cargo reported a library outside the target dir: {inside_path}"
            ))
        })?;
    let parts: Vec<_> = rel.components().collect();
    let ok = parts.len() == 2
        && parts.iter().all(|c| matches!(c, Component::Normal(_)))
        && rel.extension() == Some("so".as_ref());
    if !ok {
        return Err(fail(format!(
            "cargo reported an unexpected library path: {inside_path}"
        )));
    }
    let dir = File::open(target).map_err(|e| BuildError::io(target, e))?;
    let c = std::ffi::CString::new(rel.as_os_str().as_bytes())
        .map_err(|_| fail("library path contains a NUL byte".into()))?;
    // SAFETY: open_how is plain data; all-zero is valid (and required for unknown fields).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
    how.resolve = libc::RESOLVE_BENEATH
        | libc::RESOLVE_NO_SYMLINKS
        | libc::RESOLVE_NO_MAGICLINKS
        | libc::RESOLVE_NO_XDEV;
    // SAFETY: openat2 with a live directory fd, a NUL-terminated path and a valid open_how.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &raw const how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    let full = target.join(rel);
    if fd < 0 {
        return Err(BuildError::io(&full, std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd owned by nobody else.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    let meta = file.metadata().map_err(|e| BuildError::io(&full, e))?;
    if !meta.is_file() {
        return Err(fail(format!("{} is not a regular file", full.display())));
    }
    if meta.len() > ARTIFACT_CAP {
        return Err(fail(format!(
            "{} is larger than {} MiB",
            full.display(),
            ARTIFACT_CAP >> 20
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(ARTIFACT_CAP + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| BuildError::io(&full, e))?;
    if bytes.len() as u64 > ARTIFACT_CAP {
        return Err(fail(format!("{} grew past the cap", full.display())));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crate at `<tmp>/tree/app` whose manifest names `<tmp>/outside` (a crate outside its
    /// source root) with `dependency`, a TOML spelling of `{ path = "../../outside" }`.
    fn crate_naming_outside(tmp: &Path, dependency: &str) -> PathBuf {
        let outside = tmp.join("outside");
        std::fs::create_dir_all(outside.join("src")).unwrap();
        std::fs::write(
            outside.join("Cargo.toml"),
            "[package]\nname = \"outside\"\n",
        )
        .unwrap();
        let app = tmp.join("tree").join("app");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::write(
            app.join("Cargo.toml"),
            format!("[package]\nname = \"app\"\n{dependency}\n"),
        )
        .unwrap();
        app.canonicalize().unwrap()
    }

    #[test]
    fn a_dependency_outside_the_source_root_is_refused_however_it_is_spelled() {
        // The old check scanned for `path = "`: each of these spellings slipped past it.
        for spelling in [
            "[dependencies]\nx = { path = \"../../outside\" }",
            "[dependencies]\nx = { path='../../outside' }",
            "[dependencies]\nx = {path=\"../../outside\"}",
            "[dependencies.x]\npath = \"../../outside\"",
            "[target.'cfg(unix)'.build-dependencies]\nx = { path = \"../../outside\" }",
            "[patch.crates-io]\nx = { path = \"../../outside\" }",
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let app = crate_naming_outside(tmp.path(), spelling);
            let err = path_dependencies(&app, &tmp.path().join("target"))
                .expect_err(spelling)
                .to_string();
            assert!(
                err.contains("is outside the source root"),
                "{spelling}: {err}"
            );
        }
    }

    #[test]
    fn dependencies_outside_the_source_root_are_refused() {
        let root = Path::new("/w");
        let krate = Path::new("/w/apps/x");
        let forbidden = Path::new("/w/target/apps");
        assert!(check_dependency(Path::new("/w/abi"), krate, root, forbidden).is_ok());
        for bad in [
            "/etc",
            "/w",
            "/w/apps",
            "/w/target/apps/builds/y/src",
            "/w/.git/x",
        ] {
            assert!(
                check_dependency(Path::new(bad), krate, root, forbidden).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn artifact_paths_must_be_in_a_profile_dir() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "/etc/shadow",
            "/target/../x.so",
            "/target/release/deps/x.so",
            "/target/x.so",
        ] {
            assert!(take_artifact(dir.path(), bad).is_err(), "{bad}");
        }
        std::fs::create_dir(dir.path().join("release")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("release/libx.so")).unwrap();
        assert!(take_artifact(dir.path(), "/target/release/libx.so").is_err());
        std::fs::remove_file(dir.path().join("release/libx.so")).unwrap();
        std::fs::write(dir.path().join("release/libx.so"), b"ELF").unwrap();
        assert_eq!(
            take_artifact(dir.path(), "/target/release/libx.so").unwrap(),
            b"ELF"
        );
    }
}
