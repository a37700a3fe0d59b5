//! A destroyed sandbox's log, kept a short while for `host logs`: its `runner.log` and
//! `runner.log.1` are moved to `<state dir>.logs/<id>/` at destroy, beside the sandboxes'
//! directories. Kept for [`RETAIN_FOR`], and only the [`RETAIN_MAX`] most recently destroyed
//! (so at most `RETAIN_MAX` x `LOG_BOUND_BYTES` on disk); `host destroy ID --purge`, or a new
//! sandbox of the same id, removes it at once. Expired ones are removed whenever a log is
//! kept or looked up.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::log::{LOG_NAME, PREVIOUS_LOG_NAME};

/// How long a destroyed sandbox's log is kept.
pub const RETAIN_FOR: Duration = Duration::from_secs(10 * 60);
/// The most destroyed sandboxes whose logs are kept.
pub const RETAIN_MAX: usize = 8;

/// Where destroyed sandboxes' logs are kept: `<state dir>.logs`.
pub fn root_of(state_dir: &Path) -> PathBuf {
    let mut name = state_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".logs");
    state_dir.with_file_name(name)
}

/// Moves the log of the sandbox `id` out of its directory `dir` before the directory goes.
pub(crate) fn keep(state_dir: &Path, id: &str, dir: &Path) {
    let root = root_of(state_dir);
    let kept = root.join(id);
    let _ = std::fs::remove_dir_all(&kept);
    if let Err(e) = std::fs::create_dir_all(&kept) {
        tracing::warn!(dir = %kept.display(), "cannot keep the destroyed sandbox's log: {e}");
        return;
    }
    for name in [PREVIOUS_LOG_NAME, LOG_NAME] {
        let _ = std::fs::rename(dir.join(name), kept.join(name));
    }
    prune(&root);
}

/// The kept log directory of a destroyed sandbox `id`, if it is still kept.
pub fn find(state_dir: &Path, id: &str) -> Option<PathBuf> {
    let root = root_of(state_dir);
    prune(&root);
    let kept = root.join(id);
    std::fs::symlink_metadata(&kept)
        .is_ok_and(|m| m.is_dir())
        .then_some(kept)
}

/// Removes the kept log of `id`; whether there was one.
pub fn purge(state_dir: &Path, id: &str) -> bool {
    std::fs::remove_dir_all(root_of(state_dir).join(id)).is_ok()
}

/// Removes kept logs past [`RETAIN_FOR`], and the oldest beyond [`RETAIN_MAX`].
fn prune(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let now = SystemTime::now();
    let mut kept: Vec<(SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    kept.sort_by_key(|k| std::cmp::Reverse(k.0));
    for (i, (at, path)) in kept.into_iter().enumerate() {
        let old = now.duration_since(at).is_ok_and(|age| age > RETAIN_FOR);
        if old || i >= RETAIN_MAX {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destroyed_sandboxs_log_is_kept_for_the_newest_few_and_purged_on_demand() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("sandboxes");
        for i in 0..RETAIN_MAX + 2 {
            let dir = tmp.path().join(format!("sb{i}"));
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join(LOG_NAME), format!("{i}")).unwrap();
            keep(&state, &format!("id{i}"), &dir);
            // Distinct times for the order (directory mtimes have a coarse clock).
            let at = SystemTime::now() - Duration::from_secs(100 - i as u64);
            let f = std::fs::File::open(root_of(&state).join(format!("id{i}"))).unwrap();
            f.set_modified(at).unwrap();
        }
        assert!(find(&state, "id0").is_none());
        assert!(find(&state, "id1").is_none());
        let kept = find(&state, "id9").unwrap();
        assert_eq!(std::fs::read_to_string(kept.join(LOG_NAME)).unwrap(), "9");
        assert!(purge(&state, "id9"));
        assert!(find(&state, "id9").is_none());
        assert!(!purge(&state, "id9"));
        // Expired.
        let f = std::fs::File::open(root_of(&state).join("id8")).unwrap();
        f.set_modified(SystemTime::now() - RETAIN_FOR - Duration::from_secs(1))
            .unwrap();
        assert!(find(&state, "id8").is_none());
        assert!(find(&state, "id7").is_some());
    }
}
