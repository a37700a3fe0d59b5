//! What dead hosts left behind, found and removed when a daemon starts.
//!
//! Every name a host gives carries its pid: sandbox directories `<state>/<id>.<pid>-<n>`,
//! cgroups `sandbox-<id>-<pid>-<n>` (in every hierarchy), half-written store files
//! `<state>.libs/.incoming-<pid>-…` and staged copies `<state>.staging/<pid>-<n>…`. A name's
//! owner counts as alive when a process of that pid exists **and started before the thing
//! was last modified**: a pid reused by a later process (started after its owner died, so
//! after the leftover was made) does not protect it. This holds for daemons and for library
//! users of the manager alike (a `host demo`, a test), which hold no daemon lock; a live
//! owner's leftovers are never touched. Of a dead owner's cgroups, every process still inside
//! is SIGKILLed (until the cgroup is empty) and the cgroup removed; its directories and
//! staged files are removed; and store files no sandbox links any more (one link left) go.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::library;

/// What a sweep found and removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Sandbox directories removed.
    pub state_dirs: usize,
    /// Cgroups removed (one per sandbox, all its hierarchies together).
    pub cgroups: usize,
    /// Processes killed in those cgroups.
    pub processes: usize,
    /// Store files removed (unlinked copies and half-written ones).
    pub store_files: usize,
    /// Staged copies removed.
    pub staged: usize,
    /// Leftovers kept because their owner is alive.
    pub kept: usize,
    /// What could not be removed, each naming the path and the cause (at most 16).
    pub errors: Vec<String>,
}

impl std::fmt::Display for SweepReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "recovered what dead hosts left: {} sandbox dirs, {} cgroups ({} processes killed), \
             {} store files, {} staged copies removed; {} kept (owner alive); {} errors",
            self.state_dirs,
            self.cgroups,
            self.processes,
            self.store_files,
            self.staged,
            self.kept,
            self.errors.len()
        )?;
        if let Some(first) = self.errors.first() {
            write!(f, " (first: {first})")?;
        }
        Ok(())
    }
}

impl SweepReport {
    fn error(&mut self, what: &str, path: &Path, e: impl std::fmt::Display) {
        if self.errors.len() < 16 {
            self.errors.push(format!("{what} {}: {e}", path.display()));
        }
    }
}

/// The pid in a sandbox directory name `<id>.<pid>-<n>`.
pub fn pid_of_state_dir(name: &str) -> Option<i32> {
    let (_, tail) = name.rsplit_once('.')?;
    pid_dash_n(tail)
}

/// The pid in a cgroup name `sandbox-<id>-<pid>-<n>`.
pub fn pid_of_cgroup(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(isolation::cgroups::SANDBOX_PREFIX)?;
    let (head, n) = rest.rsplit_once('-')?;
    let (_, pid) = head.rsplit_once('-')?;
    pid_dash_n(&format!("{pid}-{n}"))
}

/// The pid in a name that starts `<pid>-` (staged copies) or `.incoming-<pid>-` (store).
pub fn pid_of_prefixed(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(library::INCOMING_PREFIX).unwrap_or(name);
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok().filter(|p| *p > 0)
}

fn pid_dash_n(text: &str) -> Option<i32> {
    let (pid, n) = text.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok().filter(|p| *p > 0)
}

/// When process `pid` started, or `None` when there is no such process.
pub fn process_start(pid: i32) -> Option<SystemTime> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (starttime, in clock ticks since boot), counted after the `(comm)` field,
    // which may itself hold spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    let ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let since_boot = Duration::from_millis(ticks * 1000 / hz);
    Some(boot_time()? + since_boot)
}

/// The wall-clock time of boot, to the microsecond (`CLOCK_BOOTTIME` against `now`).
fn boot_time() -> Option<SystemTime> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a live out-pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return None;
    }
    let up = Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
    SystemTime::now().checked_sub(up)
}

/// Whether the owner of a leftover last modified at `modified` may still be alive: this
/// process, or a process of that pid that started before then (see the module docs).
pub fn owner_alive(pid: i32, modified: SystemTime) -> bool {
    if pid == std::process::id() as i32 {
        return true;
    }
    match process_start(pid) {
        None => false,
        // Ticks are 10 ms; a reused pid started after its owner died, well after `modified`.
        Some(start) => start <= modified + Duration::from_millis(50),
    }
}

fn modified(meta: &fs::Metadata) -> SystemTime {
    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Sweeps what dead hosts left around `state_dir` (its sandboxes, store and staging) and
/// in every cgroup hierarchy. Blocking: run it on a blocking thread.
pub fn sweep(state_dir: &Path, staging: &Path) -> SweepReport {
    let mut report = SweepReport::default();
    sweep_cgroups(&mut report);
    sweep_entries(state_dir, pid_of_state_dir, &mut report, |r| {
        r.state_dirs += 1
    });
    sweep_entries(staging, pid_of_prefixed, &mut report, |r| r.staged += 1);
    sweep_store(&library::store_of(state_dir), &mut report);
    sweep_store(&library::none_store_of(state_dir), &mut report);
    report
}

/// Removes entries of `dir` whose name carries a dead owner's pid.
fn sweep_entries(
    dir: &Path,
    pid_of: fn(&str) -> Option<i32>,
    report: &mut SweepReport,
    count: fn(&mut SweepReport),
) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = pid_of(&name) else { continue };
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if owner_alive(pid, modified(&meta)) {
            report.kept += 1;
            continue;
        }
        let removed = if meta.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match removed {
            Ok(()) => count(report),
            Err(e) => report.error("remove", &path, e),
        }
    }
}

/// Removes the store's half-written files of dead writers and copies nothing links to.
fn sweep_store(store: &Path, report: &mut SweepReport) {
    let Ok(entries) = fs::read_dir(store) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let stale = if name.starts_with(library::INCOMING_PREFIX) {
            match pid_of_prefixed(&name) {
                Some(pid) if owner_alive(pid, modified(&meta)) => {
                    report.kept += 1;
                    false
                }
                _ => true,
            }
        } else {
            // A live host links a copy right after writing it; one that loses this race
            // falls back to a private copy.
            name.ends_with(".so") && meta.is_file() && meta.nlink() == 1
        };
        if stale {
            match fs::remove_file(&path) {
                Ok(()) => report.store_files += 1,
                Err(e) => report.error("remove", &path, e),
            }
        }
    }
    let _ = fs::remove_dir(store);
}

/// Directories that may hold sandbox cgroups: in every mounted hierarchy, this process's
/// own cgroup, its parent (v2 moves a host into a `host` leaf), and their `sandbox-host`.
fn cgroup_parents() -> Vec<PathBuf> {
    let mounts: Vec<PathBuf> = isolation::mountinfo::of("self")
        .into_iter()
        .filter(|m| m.fs_type == "cgroup" || m.fs_type == "cgroup2")
        .map(|m| m.mount_point)
        .collect();
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let own: Vec<&str> = own
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .collect();
    let mut out: Vec<PathBuf> = Vec::new();
    for mount in &mounts {
        let mut push = |p: PathBuf| {
            if !out.contains(&p) && p.is_dir() {
                out.push(p);
            }
        };
        push(mount.join(isolation::cgroups::v1::PARENT_NAME));
        for path in &own {
            let dir = mount.join(path.trim_start_matches('/'));
            push(dir.join(isolation::cgroups::v1::PARENT_NAME));
            if let Some(parent) = dir.parent().filter(|p| p.starts_with(mount)) {
                push(parent.to_path_buf());
            }
            push(dir);
        }
    }
    out
}

/// Kills what is left in dead owners' cgroups and removes them.
fn sweep_cgroups(report: &mut SweepReport) {
    let mut found: Vec<(String, Vec<PathBuf>)> = Vec::new();
    for parent in cgroup_parents() {
        let Ok(entries) = fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = pid_of_cgroup(&name) else {
                continue;
            };
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if !meta.is_dir() {
                continue;
            }
            if owner_alive(pid, modified(&meta)) {
                report.kept += 1;
                continue;
            }
            match found.iter_mut().find(|(n, _)| *n == name) {
                Some((_, dirs)) => dirs.push(path),
                None => found.push((name, vec![path])),
            }
        }
    }
    for (_, dirs) in found {
        report.processes += kill_all(&dirs);
        let mut ok = true;
        for dir in &dirs {
            if let Err(e) = rmdir_retry(dir, Duration::from_secs(2)) {
                report.error("remove cgroup", dir, e);
                ok = false;
            }
        }
        if ok {
            report.cgroups += 1;
        }
    }
}

fn pids_in(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// SIGKILLs everything in `dirs` until they are empty (up to about 2 s); returns how many
/// distinct processes were signalled.
fn kill_all(dirs: &[PathBuf]) -> usize {
    let me = std::process::id() as i32;
    let mut killed: Vec<i32> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut wait = Duration::from_millis(1);
    loop {
        let pids: Vec<i32> = dirs
            .iter()
            .flat_map(|d| pids_in(d))
            .filter(|&p| p != me && p > 0)
            .collect();
        if pids.is_empty() || Instant::now() > deadline {
            return killed.len();
        }
        for pid in pids {
            // SAFETY: kill(2) of a pid read from a dead owner's cgroup.procs, never ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            if !killed.contains(&pid) {
                killed.push(pid);
            }
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_millis(50));
    }
}

fn rmdir_retry(dir: &Path, within: Duration) -> io::Result<()> {
    let deadline = Instant::now() + within;
    let mut wait = Duration::from_millis(1);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_give_their_pid() {
        assert_eq!(pid_of_state_dir("demo.1234-0"), Some(1234));
        assert_eq!(pid_of_state_dir("a.b.77-12"), Some(77));
        assert_eq!(pid_of_state_dir("demo"), None);
        assert_eq!(pid_of_state_dir("demo.x-1"), None);
        assert_eq!(pid_of_cgroup("sandbox-demo-1234-0"), Some(1234));
        assert_eq!(pid_of_cgroup("sandbox-my-app-9-3"), Some(9));
        assert_eq!(pid_of_cgroup("other-1-2"), None);
        assert_eq!(pid_of_prefixed(".incoming-55-AbC"), Some(55));
        assert_eq!(pid_of_prefixed("66-2.so"), Some(66));
        assert_eq!(pid_of_prefixed("abc.so"), None);
    }

    #[test]
    fn a_live_owner_protects_and_a_dead_or_reused_pid_does_not() {
        let me = std::process::id() as i32;
        let now = SystemTime::now();
        assert!(owner_alive(me, now));
        // pid 1 started at boot: alive for anything made since.
        assert!(owner_alive(1, now));
        // A child that exits is dead; a live process that started after the leftover was
        // made is a reused pid.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let before = SystemTime::now() - Duration::from_secs(60);
        assert!(!owner_alive(pid, before), "started after the leftover");
        assert!(owner_alive(pid, SystemTime::now()));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!owner_alive(pid, SystemTime::now()));
    }

    #[test]
    fn dead_owners_dirs_staging_and_unlinked_store_files_go() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("sandboxes");
        let staging = tmp.path().join("sandboxes.staging");
        let store = library::store_of(&state);
        // A pid that exited: dead.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id() as i32;
        child.wait().unwrap();
        let me = std::process::id();
        for d in [
            state.join(format!("a.{dead}-0/app")),
            state.join(format!("b.{me}-1/app")),
        ] {
            fs::create_dir_all(d).unwrap();
        }
        fs::create_dir_all(&staging).unwrap();
        fs::write(staging.join(format!("{dead}-3.so")), b"x").unwrap();
        fs::write(staging.join(format!("{me}-4.so")), b"x").unwrap();
        fs::create_dir_all(&store).unwrap();
        fs::write(store.join(format!(".incoming-{dead}-xyz")), b"x").unwrap();
        fs::write(store.join("aaaa.so"), b"x").unwrap();
        fs::write(store.join("bbbb.so"), b"x").unwrap();
        fs::hard_link(
            store.join("bbbb.so"),
            state.join(format!("b.{me}-1/app/v1.so")),
        )
        .unwrap();
        // The store of `none` sandboxes is swept too.
        let none_store = library::none_store_of(&state);
        fs::create_dir_all(&none_store).unwrap();
        fs::write(none_store.join("cccc.so"), b"x").unwrap();

        let report = sweep(&state, &staging);
        assert_eq!(
            (report.state_dirs, report.staged, report.store_files),
            (1, 1, 3),
            "{report}"
        );
        assert!(!none_store.join("cccc.so").exists());
        assert!(report.errors.is_empty(), "{report}");
        assert!(!state.join(format!("a.{dead}-0")).exists());
        assert!(state.join(format!("b.{me}-1")).exists());
        assert!(staging.join(format!("{me}-4.so")).exists());
        assert!(store.join("bbbb.so").exists() && !store.join("aaaa.so").exists());
        assert!(
            report
                .to_string()
                .starts_with("recovered what dead hosts left: 1 sandbox dirs")
        );
    }
}
