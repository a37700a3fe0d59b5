//! Which processes this host owns: the only ones it may move between cgroups.

/// Which processes count as this host's own: itself and its descendants. The only ones it
/// may move between cgroups.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner {
    /// This process (`getpid()`).
    pub me: i32,
    /// The parent of a process, `None` when it is gone (`/proc/PID/stat`, injectable).
    pub ppid_of: fn(i32) -> Option<i32>,
}

impl Owner {
    /// This process and its descendants.
    pub(crate) fn this_process() -> Self {
        Self {
            me: std::process::id() as i32,
            ppid_of: proc_ppid,
        }
    }

    /// Whether `pid` is this process or one of its descendants.
    pub(super) fn owns(&self, pid: i32) -> bool {
        let mut p = pid;
        // Bounded: a pid reused meanwhile cannot make the walk loop.
        for _ in 0..256 {
            if p == self.me {
                return true;
            }
            match (self.ppid_of)(p) {
                Some(pp) if pp > 0 && pp != p => p = pp,
                _ => return false,
            }
        }
        false
    }
}

/// The parent pid field of `/proc/PID/stat` (after the last `)`: state, then ppid).
fn proc_ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
