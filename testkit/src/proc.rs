//! Processes as `/proc` shows them, and children that are stopped however a test ends.

use std::collections::HashMap;
use std::process::{Child, ExitStatus};
use std::time::Duration;

use crate::wait::wait_until;

/// Whether the tests run as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `pid` is a live (non-zombie) process.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The parent pid of `pid` (from `/proc/PID/stat`).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the `)` of the command: state, then ppid.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Every pid in `/proc`.
pub fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The direct children of `pid` (of any of its threads).
pub fn children(pid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| parent_of(p) == Some(pid))
        .collect()
}

/// Every process in the tree under `pid`, `pid` first (empty when it does not exist).
pub fn tree(pid: i32) -> Vec<i32> {
    if parent_of(pid).is_none() {
        return Vec::new();
    }
    let mut by_parent: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in all_pids() {
        if let Some(parent) = parent_of(p) {
            by_parent.entry(parent).or_default().push(p);
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = by_parent.get(&out[i]) {
            out.extend(kids.iter().copied().filter(|k| *k != pid));
        }
        i += 1;
    }
    out
}

/// The value of `key` in `/proc/PID/status` text, whitespace-normalised (`Uid`: "0 0 0 0").
pub fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A `kB` field of a `/proc` file (`VmRSS` of `/proc/PID/status`, `Pss` of `smaps_rollup`).
pub fn proc_kb(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    status_field(&text, key)
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`).
pub fn status_kb(pid: i32, key: &str) -> Option<u64> {
    proc_kb(&format!("/proc/{pid}/status"), key)
}

/// The real uid of `pid` (`None` once it is gone).
pub fn uid_of(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field(&status, "Uid")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Live processes whose real uid is `uid`.
pub fn processes_of(uid: u32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| uid_of(pid) == Some(uid) && alive(pid))
        .collect()
}

/// Sends `signal` to `pid`; false when it failed (say, the process is gone).
pub fn signal(pid: i32, signal: libc::c_int) -> bool {
    // SAFETY: kill(2) takes plain integers; no memory is involved.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Runs `start` (a spawn or an output of a freshly copied executable) again while it fails
/// with ETXTBSY: another test thread may fork while the copy is still open for writing, and
/// the child holds that descriptor until its exec.
pub fn retry_busy<T>(mut start: impl FnMut() -> std::io::Result<T>) -> T {
    for _ in 0..100 {
        match start() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(crate::wait::POLL)
            }
            other => return other.unwrap(),
        }
    }
    panic!("the executable stayed busy (ETXTBSY)");
}

/// A child process that is stopped and reaped when dropped, also when the test panics:
/// SIGTERM first and up to `grace` to exit (a daemon cleans up on the way out), then SIGKILL.
/// With no grace, SIGKILL at once.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    grace: Duration,
}

impl ChildGuard {
    /// Kills `child` with SIGKILL when dropped.
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard {
            child: Some(child),
            grace: Duration::ZERO,
        }
    }

    /// Stops `child` with SIGTERM, then SIGKILL after `grace`, when dropped.
    pub fn terminate(child: Child, grace: Duration) -> ChildGuard {
        ChildGuard {
            child: Some(child),
            grace,
        }
    }

    /// The child (until it is taken).
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("the child was taken")
    }

    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("the child was taken").id() as i32
    }

    /// Whether it has exited (reaping it if so).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child().try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.exited();
            status.is_some()
        });
        status
    }

    /// Sends `sig` and waits up to `timeout` for the exit; `None` (and SIGKILL) when it did
    /// not exit in time. The child is gone afterwards either way.
    pub fn stop_with(&mut self, sig: libc::c_int, timeout: Duration) -> Option<ExitStatus> {
        signal(self.pid(), sig);
        let status = self.wait_exit(timeout);
        let mut child = self.child.take().expect("the child was taken");
        if status.is_none() {
            let _ = child.kill();
        }
        // Reaps it (or returns the status already reaped).
        let _ = child.wait();
        status
    }

    /// Takes the child out: nothing is done to it on drop any more.
    pub fn into_inner(mut self) -> Child {
        self.child.take().expect("the child was taken")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if !self.grace.is_zero() && matches!(child.try_wait(), Ok(None)) {
            signal(child.id() as i32, libc::SIGTERM);
            wait_until(self.grace, || !matches!(child.try_wait(), Ok(None)));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_in_our_tree_alive_and_gone_after_its_guard() {
        let me = std::process::id() as i32;
        let guard = ChildGuard::new(
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap(),
        );
        let pid = guard.pid();
        assert!(alive(pid));
        assert!(tree(me).contains(&pid));
        assert!(children(me).contains(&pid));
        assert_eq!(tree(me)[0], me);
        assert_eq!(uid_of(pid), uid_of(me));
        assert!(status_kb(me, "VmRSS").is_some_and(|kb| kb > 0));
        drop(guard);
        assert!(!alive(pid));
        assert!(tree(pid).is_empty());
    }

    #[test]
    fn a_terminated_child_reports_its_signal() {
        use std::os::unix::process::ExitStatusExt;
        let mut guard = ChildGuard::terminate(
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap(),
            Duration::from_secs(5),
        );
        let status = guard
            .stop_with(libc::SIGTERM, Duration::from_secs(5))
            .unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM));
    }

    #[test]
    fn status_fields_are_normalised() {
        let text = "Name:\tx\nUid:\t0\t1\t2\t3\nVmRSS:\t  1234 kB\n";
        assert_eq!(status_field(text, "Uid"), "0 1 2 3");
        assert_eq!(status_field(text, "VmRSS"), "1234 kB");
        assert_eq!(status_field(text, "Gid"), "");
    }
}
