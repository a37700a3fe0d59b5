//! The build cache: `<target>/builds/`, one build directory per crate, bounded.
//!
//! A build directory is in use while a build holds the `flock` on its `lock` file; the lock
//! file's mtime is set each time a build takes it, so it says when the directory was last
//! used. After each build its directory's size on disk is written to `usage` (the host's file,
//! beside `target/`, out of the build's reach). Then the cache is trimmed: newest first, the
//! directories past [`BuildCache::max_dirs`] or past [`BuildCache::max_bytes`] together are
//! removed, least recently used first, except one in use (its lock cannot be taken) and the
//! one just built. A directory is removed under its lock, after a rename out of the way, so a
//! build that was waiting for that lock sees its lock file is no longer the directory's and
//! starts over in a fresh one.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg};

/// Bounds of the build cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildCache {
    /// Most build directories kept. Default 16.
    pub max_dirs: usize,
    /// Most bytes on disk of all build directories together. Default 8 GiB.
    pub max_bytes: u64,
    /// Libraries kept in a build directory's `staged/` (the newest). Default 4.
    pub max_staged: usize,
}

impl Default for BuildCache {
    fn default() -> Self {
        BuildCache {
            max_dirs: 16,
            max_bytes: 8 << 30,
            max_staged: 4,
        }
    }
}

/// The file in a build directory that holds its size on disk after its last build.
pub const USAGE_FILE: &str = "usage";

/// Name prefix of a directory being removed (renamed out of the way first).
const EVICTING: &str = ".evicting-";

/// `f` locked exclusively without waiting, or `f` back when another build holds the lock.
pub(crate) fn lock_now(f: std::fs::File) -> Result<Flock<std::fs::File>, std::fs::File> {
    Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(f, _)| f)
}

/// Takes `lock` without waiting; `None` when another build holds it.
pub(crate) fn try_lock(path: &Path) -> Option<Flock<std::fs::File>> {
    let f = std::fs::File::options().write(true).open(path).ok()?;
    lock_now(f).ok()
}

/// Whether the lock file `f` we hold is still the one at `path` (not removed or replaced by
/// an eviction while we waited for it).
pub(crate) fn still_current(f: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Records the size of build directory `dir` for later trims.
pub(crate) fn record_usage(dir: &Path, bytes: u64) {
    let path = dir.join(USAGE_FILE);
    if let Err(e) = std::fs::write(&path, bytes.to_string()) {
        tracing::warn!("build cache: {}: {e}", path.display());
    }
}

/// One build directory as the trim sees it.
#[derive(Debug)]
struct Entry {
    dir: PathBuf,
    used: SystemTime,
    bytes: u64,
}

fn entry(dir: PathBuf) -> Entry {
    let used = std::fs::metadata(dir.join("lock"))
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let bytes = std::fs::read_to_string(dir.join(USAGE_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| crate::disk::usage(&dir).unwrap_or(u64::MAX));
    Entry { dir, used, bytes }
}

/// Trims the cache under `builds` to `policy`, keeping `current`; returns what it removed.
///
/// The directories in use count first (they cannot go), then the others newest first; those
/// that no longer fit are removed.
pub fn trim(builds: &Path, current: &Path, policy: &BuildCache) -> Vec<PathBuf> {
    let Ok(read) = std::fs::read_dir(builds) else {
        return Vec::new();
    };
    let mut dirs = 1;
    let mut bytes = entry(current.to_path_buf()).bytes;
    let mut free = Vec::new();
    for e in read.flatten() {
        let name = e.file_name();
        let path = e.path();
        if name.to_string_lossy().starts_with(EVICTING) {
            // Left by a trim that was interrupted.
            let _ = crate::disk::remove_tree(&path);
            continue;
        }
        if path == current || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let lock = path.join("lock");
        let held = match try_lock(&lock) {
            Some(f) if still_current(&f, &lock) => Some(f),
            Some(_) => continue,
            None if lock.exists() => {
                // In use: it stays, and counts.
                let e = entry(path);
                dirs += 1;
                bytes = bytes.saturating_add(e.bytes);
                continue;
            }
            None => None,
        };
        free.push((entry(path), held));
    }
    free.sort_by_key(|e| std::cmp::Reverse(e.0.used));
    let mut removed = Vec::new();
    for (e, held) in free {
        if dirs < policy.max_dirs && bytes.saturating_add(e.bytes) <= policy.max_bytes {
            dirs += 1;
            bytes = bytes.saturating_add(e.bytes);
            continue;
        }
        match evict(builds, &e.dir, held) {
            Ok(()) => removed.push(e.dir),
            Err(err) => tracing::warn!("build cache: remove {}: {err}", e.dir.display()),
        }
    }
    removed
}

/// Removes build directory `dir`, whose lock (if it has one) the caller holds: moved out of
/// the way first, then the lock let go, then removed.
fn evict(builds: &Path, dir: &Path, held: Option<Flock<std::fs::File>>) -> std::io::Result<()> {
    let aside = builds.join(format!(
        "{EVICTING}{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::rename(dir, &aside)?;
    drop(held);
    crate::disk::remove_tree(&aside)
}

/// Keeps the newest `keep` libraries of `staged`, and always `current`.
pub(crate) fn prune_staged(staged: &Path, current: &Path, keep: usize) {
    let Ok(read) = std::fs::read_dir(staged) else {
        return;
    };
    let mut libs: Vec<(SystemTime, PathBuf)> = read
        .flatten()
        .map(|e| e.path())
        .filter(|p| p != current)
        .map(|p| {
            let t = std::fs::symlink_metadata(&p)
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            (t, p)
        })
        .collect();
    libs.sort_by_key(|l| std::cmp::Reverse(l.0));
    for (_, p) in libs.into_iter().skip(keep.saturating_sub(1)) {
        let _ = std::fs::remove_file(&p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn build_dir(builds: &Path, name: &str, used_secs: u64, bytes: u64) -> PathBuf {
        let dir = builds.join(name);
        std::fs::create_dir_all(dir.join("target")).unwrap();
        let lock = std::fs::File::create(dir.join("lock")).unwrap();
        lock.set_modified(UNIX_EPOCH + Duration::from_secs(used_secs))
            .unwrap();
        record_usage(&dir, bytes);
        dir
    }

    #[test]
    fn one_in_use_stays_and_counts_and_the_least_recently_used_go_first() {
        let tmp = tempfile::tempdir().unwrap();
        let builds = tmp.path().join("builds");
        let current = build_dir(&builds, "current", 100, 10);
        let newer = build_dir(&builds, "newer", 90, 10);
        let older = build_dir(&builds, "older", 80, 10);
        let oldest = build_dir(&builds, "oldest", 70, 10);
        let policy = BuildCache {
            max_dirs: 2,
            ..BuildCache::default()
        };
        // `oldest` is being built: its lock is held.
        let in_use = try_lock(&oldest.join("lock")).unwrap();
        let mut removed = trim(&builds, &current, &policy);
        removed.sort();
        assert_eq!(removed, vec![newer.clone(), older.clone()]);
        assert!(current.is_dir() && oldest.is_dir());
        drop(in_use);
        build_dir(&builds, "newest", 95, 10);
        let removed = trim(&builds, &current, &policy);
        assert_eq!(removed, vec![oldest.clone()]);
        // Nothing of an eviction is left beside the build directories.
        let left: Vec<_> = std::fs::read_dir(&builds)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }

    #[test]
    fn the_cache_keeps_to_its_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let builds = tmp.path().join("builds");
        let current = build_dir(&builds, "current", 100, 600);
        let a = build_dir(&builds, "a", 90, 300);
        let b = build_dir(&builds, "b", 80, 300);
        let policy = BuildCache {
            max_bytes: 1000,
            ..BuildCache::default()
        };
        assert_eq!(trim(&builds, &current, &policy), vec![b]);
        assert!(a.is_dir());
    }

    #[test]
    fn a_waiting_build_sees_its_directory_was_evicted() {
        let tmp = tempfile::tempdir().unwrap();
        let builds = tmp.path().join("builds");
        let current = build_dir(&builds, "current", 100, 1);
        let old = build_dir(&builds, "old", 1, 1);
        // A build that opened the old lock file before the eviction.
        let waiting = std::fs::File::options()
            .write(true)
            .open(old.join("lock"))
            .unwrap();
        let policy = BuildCache {
            max_dirs: 1,
            ..BuildCache::default()
        };
        assert_eq!(trim(&builds, &current, &policy), vec![old.clone()]);
        assert!(!still_current(&waiting, &old.join("lock")));
    }

    #[test]
    fn staged_keeps_the_newest_libraries_and_the_current_one() {
        let tmp = tempfile::tempdir().unwrap();
        let staged = tmp.path();
        let mut libs = Vec::new();
        for i in 0..6u64 {
            let p = staged.join(format!("lib-{i}.so"));
            let f = std::fs::File::create(&p).unwrap();
            f.set_modified(UNIX_EPOCH + Duration::from_secs(100 + i))
                .unwrap();
            libs.push(p);
        }
        // The current library is the oldest file (its content was built before).
        prune_staged(staged, &libs[0], 3);
        let left: Vec<bool> = libs.iter().map(|p| p.exists()).collect();
        assert_eq!(left, [true, false, false, false, true, true]);
    }
}
