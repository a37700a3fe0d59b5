//! The isolation mechanisms, by name: what reports list and errors name. Its own module so
//! that `error` and `report` need not import each other.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One isolation mechanism, as named in reports (`snake_case` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// cgroup v2 or v1 limits and accounting.
    Cgroup,
    /// PID namespace.
    PidNs,
    /// Mount namespace (private `/proc`, `/tmp`, read-only app dir).
    MountNs,
    /// IPC namespace.
    IpcNs,
    /// UTS namespace.
    UtsNs,
    /// User namespace.
    UserNs,
    /// Network namespace (shared empty one, or a private one).
    NetNs,
    /// seccomp-bpf syscall filter.
    Seccomp,
    /// Landlock filesystem (and network/scope) restrictions.
    Landlock,
    /// setrlimit limits.
    Rlimits,
    /// `PR_SET_NO_NEW_PRIVS`.
    NoNewPrivs,
    /// Dropping all capabilities (bounding, ambient, inheritable, effective, permitted).
    Capabilities,
    /// A root of its own (`pivot_root` into a tmpfs of read-only binds).
    Root,
    /// Unprivileged ids: never the host's uid 0.
    Ids,
    /// The capped writable disk (`/work` and `/tmp`).
    Disk,
}

impl Mechanism {
    /// The wire name, e.g. `"pid_ns"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Cgroup => "cgroup",
            Mechanism::PidNs => "pid_ns",
            Mechanism::MountNs => "mount_ns",
            Mechanism::IpcNs => "ipc_ns",
            Mechanism::UtsNs => "uts_ns",
            Mechanism::UserNs => "user_ns",
            Mechanism::NetNs => "net_ns",
            Mechanism::Seccomp => "seccomp",
            Mechanism::Landlock => "landlock",
            Mechanism::Rlimits => "rlimits",
            Mechanism::NoNewPrivs => "no_new_privs",
            Mechanism::Capabilities => "capabilities",
            Mechanism::Root => "root",
            Mechanism::Ids => "ids",
            Mechanism::Disk => "disk",
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
