//! Reading a sandbox's processes from `/proc`: the tree under the runner, CPU time, memory,
//! threads, open fds and mapped app copies. The host reads these itself; the app's own word
//! is never used.
//!
//! This kernel has no `/proc/PID/task/TID/children`, so the tree is found by one pass over
//! every `/proc/N/stat` (one read per process), keeping the descendants of the runner. The
//! runner is a child subreaper (or pid 1 of its namespace), so a double-forked daemon stays
//! in the tree.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::Read;
use std::path::Path;

/// One process's figures from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcStat {
    /// Process id.
    pub pid: i32,
    /// Parent process id.
    pub ppid: i32,
    /// User + system CPU ticks of the process itself.
    pub cpu_ticks: u64,
    /// CPU ticks of its reaped children.
    pub child_cpu_ticks: u64,
    /// Number of threads.
    pub threads: u64,
    /// Resident set in pages.
    pub rss_pages: u64,
    /// Exited but not yet reaped.
    pub zombie: bool,
}

/// Parses the contents of `/proc/PID/stat`. The command name may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat(pid: i32, text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // f[0] is field 3 (state); field k is f[k - 3].
    let num = |k: usize| f.get(k - 3).and_then(|v| v.parse::<u64>().ok());
    Some(ProcStat {
        pid,
        ppid: f.get(1)?.parse().ok()?,
        cpu_ticks: num(14)? + num(15)?,
        child_cpu_ticks: num(16)? + num(17)?,
        threads: num(20)?,
        rss_pages: num(24)?,
        zombie: *f.first()? == "Z",
    })
}

/// Reads `/proc/PID/stat` into `buf` and parses it.
pub fn read_stat(pid: i32, buf: &mut String) -> Option<ProcStat> {
    buf.clear();
    File::open(format!("/proc/{pid}/stat"))
        .ok()?
        .read_to_string(buf)
        .ok()?;
    parse_stat(pid, buf)
}

/// Every live process in the tree rooted at `root` (the root first).
///
/// Follows `/proc/PID/task/TID/children` down from the root, so the cost grows with the
/// tree, not with the machine; falls back to one pass over all of `/proc` where the kernel
/// has no `children` files (`CONFIG_PROC_CHILDREN`).
pub fn tree(root: i32) -> Vec<ProcStat> {
    let mut buf = String::with_capacity(512);
    let Some(root_stat) = read_stat(root, &mut buf) else {
        return Vec::new();
    };
    if !Path::new(&format!("/proc/{root}/task/{root}/children")).exists() {
        return tree_by_scan(root_stat, &mut buf);
    }
    let mut out = vec![root_stat];
    let mut seen = HashSet::from([root]);
    let mut i = 0;
    while i < out.len() {
        for child in children(out[i].pid) {
            if seen.insert(child)
                && let Some(stat) = read_stat(child, &mut buf)
            {
                out.push(stat);
            }
        }
        i += 1;
    }
    out
}

/// The direct children of `pid` (host pids), however the kernel lets them be found.
pub fn children_of(pid: i32) -> Vec<i32> {
    tree(pid)
        .into_iter()
        .filter(|p| p.ppid == pid)
        .map(|p| p.pid)
        .collect()
}

/// The direct children of `pid`, from the `children` file of each of its threads.
fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    let mut text = String::new();
    for task in tasks.flatten() {
        text.clear();
        let path = task.path().join("children");
        if File::open(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .is_ok()
        {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// [`tree`] from one pass over every process in `/proc`, grouped by parent.
fn tree_by_scan(root_stat: ProcStat, buf: &mut String) -> Vec<ProcStat> {
    let root = root_stat.pid;
    let mut by_parent: HashMap<i32, Vec<ProcStat>> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if pid == root {
                continue;
            }
            if let Some(stat) = read_stat(pid, buf) {
                by_parent.entry(stat.ppid).or_default().push(stat);
            }
        }
    }
    let mut out = vec![root_stat];
    let mut i = 0;
    while i < out.len() {
        if let Some(children) = by_parent.remove(&out[i].pid) {
            out.extend(children);
        }
        i += 1;
    }
    out
}

/// Reads the given pids (e.g. from `cgroup.procs`), skipping ones that exited.
pub fn stats_of(pids: &[i32]) -> Vec<ProcStat> {
    let mut buf = String::with_capacity(512);
    pids.iter()
        .filter_map(|&pid| read_stat(pid, &mut buf))
        .collect()
}

/// Number of open fds of `pid` (0 when it is gone).
pub fn open_fds(pid: i32) -> u64 {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

/// How many distinct files under `dir` are mapped into `pid` (loaded app copies).
pub fn mapped_copies(pid: i32, dir: &Path) -> usize {
    let Ok(maps) = fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return 0;
    };
    let prefix = dir.to_string_lossy();
    maps.lines()
        .filter_map(|line| line.find('/').map(|at| &line[at..]))
        .filter(|path| path.starts_with(&*prefix))
        .collect::<HashSet<_>>()
        .len()
}

/// Bytes and files in use on the filesystem that holds `path` as process `pid` sees it
/// (through `/proc/PID/root`): the sandbox's capped disk.
pub fn disk_usage(pid: i32, path: &str) -> Option<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(
        Path::new(&format!("/proc/{pid}/root"))
            .join(path.trim_start_matches('/'))
            .as_path(),
    )
    .ok()?;
    let bytes = (st.blocks() - st.blocks_free()) * st.fragment_size();
    Some((bytes, st.files() - st.files_free()))
}

/// Clock ticks per second, for converting `stat` CPU times.
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Page size in bytes.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

/// Maps pids as seen inside the runner's pid namespace to host pids, for the runner's tree.
/// Empty when the runner shares the host's pid namespace (then the pids are the same).
pub fn ns_pid_map(root: i32) -> HashMap<i32, i32> {
    let inner_pid = |pid: i32| -> Option<(usize, i32)> {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
        let ids: Vec<i32> = line[6..]
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        Some((ids.len(), *ids.last()?))
    };
    match inner_pid(root) {
        Some((depth, _)) if depth > 1 => {}
        _ => return HashMap::new(),
    }
    tree(root)
        .iter()
        .filter_map(|p| inner_pid(p.pid).map(|(_, inner)| (inner, p.pid)))
        .collect()
}

/// One process, by pid and, where the kernel has pidfds (Linux 5.3+), by a handle that keeps
/// naming it after it is reaped, when its number may already name another process.
#[derive(Debug)]
pub struct Process {
    pid: i32,
    fd: Option<std::os::fd::OwnedFd>,
}

impl Process {
    /// Opens `pid`. Call it while the process cannot have been reaped yet.
    pub fn open(pid: i32) -> Process {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open(2) with integer arguments.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        // SAFETY: a non-negative result of pidfd_open is a new fd that nobody else owns.
        let fd = (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) });
        Process { pid, fd }
    }

    /// Its pid in the host's namespace.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// True once it has exited (it may be reaped since). Always false without a pidfd: then
    /// nobody can tell.
    pub fn exited(&self) -> bool {
        self.poll(0)
    }

    /// Waits until it exits or `timeout` passes (without a pidfd: 2 ms at most).
    pub fn wait_exit(&self, timeout: std::time::Duration) {
        if self.fd.is_none() {
            std::thread::sleep(timeout.min(std::time::Duration::from_millis(2)));
            return;
        }
        self.poll(timeout.as_millis().min(i32::MAX as u128) as i32);
    }

    /// SIGKILLs exactly this process (by number only without a pidfd).
    pub fn kill(&self) {
        use std::os::fd::AsRawFd;
        match &self.fd {
            // SAFETY: pidfd_send_signal(2) with a valid pidfd and no siginfo.
            Some(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            },
            // SAFETY: kill(2) with integer arguments.
            None => unsafe {
                libc::kill(self.pid, libc::SIGKILL);
            },
        }
    }

    /// Polls the pidfd for the exit for up to `ms`; true when it has exited.
    fn poll(&self, ms: i32) -> bool {
        use std::os::fd::AsRawFd;
        let Some(fd) = &self.fd else { return false };
        let mut fds = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one valid pollfd that lives for the call.
        unsafe { libc::poll(&mut fds, 1, ms) == 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_spaces_and_parens_in_the_name() {
        let text = "42 (a b) c)) S 7 42 42 0 -1 4194304 100 0 0 0 11 22 3 4 20 0 5 0 100 \
                    1000000 33 18446744073709551615";
        let s = parse_stat(42, text).unwrap();
        assert_eq!(
            (
                s.ppid,
                s.cpu_ticks,
                s.child_cpu_ticks,
                s.threads,
                s.rss_pages
            ),
            (7, 33, 7, 5, 33)
        );
    }

    #[test]
    fn the_tree_of_this_process_includes_a_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        let tree = tree(me);
        assert!(tree.iter().any(|s| s.pid == child.id() as i32));
        assert_eq!(tree[0].pid, me);
        // The fallback pass over all of /proc finds the same child.
        let mut buf = String::new();
        let scanned = tree_by_scan(read_stat(me, &mut buf).unwrap(), &mut buf);
        assert!(scanned.iter().any(|s| s.pid == child.id() as i32));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
