//! Crates sent by clients, staged at a stable place per *app key*, so that every build of
//! one author's crate uses the same build directory and cargo compiles its dependencies once.
//!
//! The key is the client's uid (the tenant) with a hash of the path the client named and
//! the package name: `<staging>/apps/u<uid>-<hash>/<dir name>`. A tenant can therefore never
//! reach another tenant's staged copy, nor the build directory keyed by its path. Each
//! request copies the client's tree afresh (with the client's mtimes, see
//! [`staging`](super::staging)) and swaps it in under the key's lock (`apps/<key>.lock`),
//! which it holds until its answer is written: requests of one key are serialised, so a
//! build never sees its tree replaced under it. At most [`MAX_APPS`] keys are kept; past
//! that the least recently used whose lock is free are removed.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::staging::{self, CrateLimits, StageError};

/// Most app keys kept staged.
pub const MAX_APPS: usize = 16;

/// A crate staged under its key, and the key's lock (held while it lives).
#[derive(Debug)]
pub struct StagedApp {
    /// The crate's copy.
    pub dir: PathBuf,
    /// The key, `u<uid>-<hash>`.
    pub key: String,
    _lock: Flock<File>,
}

/// The app key of package `package` handed over by uid `uid` as `named`.
pub fn app_key(uid: u32, named: &Path, package: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(uid.to_le_bytes());
    h.update((named.as_os_str().len() as u64).to_le_bytes());
    h.update(named.as_os_str().as_encoded_bytes());
    h.update(package.as_bytes());
    let tag: String = h
        .finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("u{uid}-{tag}")
}

/// The directory holding every key: `<staging>/apps`.
pub fn apps_dir(staging: &Path) -> PathBuf {
    staging.join("apps")
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StageError + '_ {
    move |source| StageError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Copies the crate directory `dirfd` (named `named` by uid `uid`) to its key's place under
/// `staging`, waiting for that key's lock; with `tree`, the whole tree `tree` opens (a
/// workspace root), in which `dirfd` is the crate to build. Blocking.
pub fn stage(
    dirfd: OwnedFd,
    tree: Option<OwnedFd>,
    named: &Path,
    uid: u32,
    staging: &Path,
    limits: CrateLimits,
) -> Result<StagedApp, StageError> {
    let top = match &tree {
        Some(_) => "tree".to_string(),
        None => plain_name(named),
    };
    let holder = staging.join(staging::fresh_name(".crate"));
    let fresh = holder.join(&top);
    let staged = match tree {
        Some(tree) => staging::stage_tree_from_fd(tree, Some(dirfd), named, &fresh, limits),
        None => staging::stage_crate_from_fd(dirfd, named, &fresh, limits),
    }
    .and_then(|krate| {
        let rel = krate
            .strip_prefix(&fresh)
            .unwrap_or(Path::new(""))
            .to_owned();
        swap_in(&fresh, &top, &rel, named, uid, staging)
    });
    let _ = std::fs::remove_dir_all(&holder);
    let app = staged?;
    evict(&apps_dir(staging), &app.key);
    Ok(app)
}

/// The client's directory name when it is plain (letters, digits, `_`, `-`, not starting
/// with a dot), else `app`: it names the copy and the build directory.
fn plain_name(named: &Path) -> String {
    named
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| {
            !n.is_empty()
                && n.len() <= 64
                && !n.starts_with(['.', '-'])
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
        .unwrap_or("app")
        .to_string()
}

fn swap_in(
    fresh: &Path,
    top: &str,
    rel: &Path,
    named: &Path,
    uid: u32,
    staging: &Path,
) -> Result<StagedApp, StageError> {
    let package = package_name(&fresh.join(rel).join("Cargo.toml"));
    let key = app_key(uid, named, &package);
    let apps = apps_dir(staging);
    std::fs::create_dir_all(&apps).map_err(io(&apps))?;
    let lock_path = apps.join(format!("{key}.lock"));
    let lock = lock(&lock_path, FlockArg::LockExclusive)?;
    let keyed = apps.join(&key);
    std::fs::create_dir_all(&keyed).map_err(io(&keyed))?;
    // The tree below is the source root of its crates (appbuild's `source_root`).
    let marker = keyed.join(appbuild::stage::TREE_MARKER);
    std::fs::write(&marker, b"").map_err(io(&marker))?;
    let place = keyed.join(top);
    if std::fs::symlink_metadata(&place).is_ok() {
        let old = staging.join(staging::fresh_name(".old"));
        std::fs::rename(&place, &old).map_err(io(&place))?;
        let _ = std::fs::remove_dir_all(&old);
    }
    std::fs::rename(fresh, &place).map_err(io(&place))?;
    // Its mtime says when the key was last used.
    let _ = File::open(&keyed).and_then(|f| f.set_modified(std::time::SystemTime::now()));
    Ok(StagedApp {
        dir: place.join(rel),
        key,
        _lock: lock,
    })
}

fn lock(path: &Path, how: FlockArg) -> Result<Flock<File>, StageError> {
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io(path))?;
    Flock::lock(f, how).map_err(|(_, e)| StageError::Io {
        path: path.to_owned(),
        source: e.into(),
    })
}

/// The `[package] name` of a manifest ("" when it has none).
fn package_name(manifest: &Path) -> String {
    std::fs::read_to_string(manifest)
        .ok()
        .and_then(|t| appbuild::manifest::Manifest::parse(&t).ok())
        .and_then(|m| m.package_name().map(str::to_owned))
        .unwrap_or_default()
}

/// Removes the least recently used keys past [`MAX_APPS`], never `keep` nor one whose lock
/// is held.
fn evict(apps: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(apps) else {
        return;
    };
    let mut keys: Vec<(std::time::SystemTime, String)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let used = e.metadata().and_then(|m| m.modified()).ok()?;
            Some((used, e.file_name().to_str()?.to_owned()))
        })
        .collect();
    if keys.len() <= MAX_APPS {
        return;
    }
    keys.sort();
    let mut over = keys.len() - MAX_APPS;
    for (_, key) in keys {
        if over == 0 {
            break;
        }
        if key == keep {
            continue;
        }
        let lock_path = apps.join(format!("{key}.lock"));
        let Ok(_held) = lock(&lock_path, FlockArg::LockExclusiveNonblock) else {
            continue;
        };
        if std::fs::remove_dir_all(apps.join(&key)).is_ok() {
            let _ = std::fs::remove_file(&lock_path);
            over -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    fn open_dir(path: &Path) -> OwnedFd {
        File::options()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(path)
            .unwrap()
            .into()
    }

    #[test]
    fn the_key_is_per_tenant_path_and_package() {
        let p = Path::new("/home/a/app");
        assert_ne!(app_key(1000, p, "app"), app_key(1001, p, "app"));
        assert_ne!(app_key(1000, p, "app"), app_key(1000, p, "other"));
        assert_ne!(
            app_key(1000, p, "app"),
            app_key(1000, Path::new("/home/a/ap"), "papp")
        );
        assert_eq!(app_key(1000, p, "app"), app_key(1000, p, "app"));
        assert!(app_key(1000, p, "app").starts_with("u1000-"));
    }

    #[test]
    fn a_crate_lands_at_one_place_per_key_and_two_tenants_never_share_it() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("app");
        std::fs::create_dir_all(src.join("src")).unwrap();
        std::fs::write(src.join("Cargo.toml"), "[package]\nname = \"app\"\n").unwrap();
        std::fs::write(src.join("src/lib.rs"), "// v1").unwrap();
        let staging = tmp.path().join("staging");
        let limits = CrateLimits::default();
        let first = stage(open_dir(&src), None, &src, 1000, &staging, limits).unwrap();
        let first_dir = first.dir.clone();
        drop(first);
        std::fs::write(src.join("src/lib.rs"), "// v2").unwrap();
        let second = stage(open_dir(&src), None, &src, 1000, &staging, limits).unwrap();
        assert_eq!(second.dir, first_dir);
        assert_eq!(
            std::fs::read_to_string(second.dir.join("src/lib.rs")).unwrap(),
            "// v2"
        );
        drop(second);
        let other = stage(open_dir(&src), None, &src, 1001, &staging, limits).unwrap();
        assert_ne!(other.dir, first_dir);
        assert!(other.key.starts_with("u1001-"));
        // Nothing but the keys and their locks is left in the staging directory.
        let left: Vec<_> = std::fs::read_dir(&staging)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["apps"]);
    }

    #[test]
    fn keys_past_the_bound_are_evicted_oldest_first_but_not_a_locked_one() {
        let tmp = tempfile::tempdir().unwrap();
        let apps = tmp.path();
        for i in 0..MAX_APPS + 3 {
            let d = apps.join(format!("u0-{i:03}"));
            std::fs::create_dir(&d).unwrap();
            let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i as u64);
            File::open(&d).unwrap().set_modified(when).unwrap();
        }
        let held = lock(&apps.join("u0-000.lock"), FlockArg::LockExclusive).unwrap();
        evict(apps, "u0-001");
        for (name, kept) in [
            ("u0-000", true),
            ("u0-001", true),
            ("u0-002", false),
            ("u0-003", false),
            ("u0-004", false),
            ("u0-005", true),
        ] {
            assert_eq!(apps.join(name).exists(), kept, "{name}");
        }
        drop(held);
    }
}
