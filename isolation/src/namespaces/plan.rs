//! Which namespaces a sandbox gets: the `clone()` flags for a level, probed on this machine,
//! with a report line for each.

use std::os::fd::BorrowedFd;

use libc::c_int;
use nix::errno::Errno;

use super::clone::probe;
use super::netns::shared_netns;
use crate::error::IsolationError;
use crate::level::Level;
use crate::report::{Mechanism, ReportEntry};

/// True when the effective uid is 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `clone()` namespace flags for `level`: pid, mount, ipc and uts; plus user when `!is_root`;
/// plus `CLONE_NEWNET` only when `!is_root && !network` (root joins [`shared_netns`] instead).
/// `Level::None` gives 0.
pub fn clone_flags(level: Level, network: bool, is_root: bool) -> c_int {
    if !level.isolates() {
        return 0;
    }
    let mut f = libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    if !is_root {
        f |= libc::CLONE_NEWUSER;
        if !network {
            f |= libc::CLONE_NEWNET;
        }
    }
    f
}

/// The namespaces a sandbox will get, decided in the parent (probed once per flag set).
#[derive(Debug, Clone)]
pub struct NamespacePlan {
    /// The isolation level it was planned for.
    pub level: Level,
    /// `clone()` flags to pass (namespace flags only; add `SIGCHLD` etc. yourself).
    pub flags: c_int,
    /// Network namespace the child joins with `setns` (the shared empty one), if any.
    pub netns: Option<BorrowedFd<'static>>,
    /// Report lines for pid/mount/ipc/uts/user/net namespaces.
    pub entries: Vec<ReportEntry>,
}

const NS_FLAGS: [(c_int, Mechanism, &str); 6] = [
    (
        libc::CLONE_NEWPID,
        Mechanism::PidNs,
        "new pid namespace (the runner is pid 1)",
    ),
    (libc::CLONE_NEWNS, Mechanism::MountNs, "new mount namespace"),
    (libc::CLONE_NEWIPC, Mechanism::IpcNs, "new ipc namespace"),
    (libc::CLONE_NEWUTS, Mechanism::UtsNs, "new uts namespace"),
    (
        libc::CLONE_NEWUSER,
        Mechanism::UserNs,
        "new user namespace, uid/gid mapped to themselves",
    ),
    (
        libc::CLONE_NEWNET,
        Mechanism::NetNs,
        "own empty network namespace (lo only, down)",
    ),
];

/// Plans the namespaces for one sandbox: [`clone_flags`], the shared netns (falling back to
/// `CLONE_NEWNET` if it cannot be created), and a probe that drops what this machine refuses
/// (e.g. unprivileged user namespaces disabled), with the reasons in `entries`. Under `Strict`
/// anything missing is an error.
pub fn plan(level: Level, network: bool, is_root: bool) -> Result<NamespacePlan, IsolationError> {
    let mut entries = Vec::new();
    if !level.isolates() {
        for (_, m, _) in NS_FLAGS {
            entries.push(ReportEntry::missing(m, "isolation level none"));
        }
        return Ok(NamespacePlan {
            level,
            flags: 0,
            netns: None,
            entries,
        });
    }
    let mut flags = clone_flags(level, network, is_root);
    let mut netns = None;
    let mut net_note = None;
    if !network && is_root {
        match shared_netns() {
            Ok(fd) => netns = Some(fd),
            Err(e) => {
                flags |= libc::CLONE_NEWNET;
                net_note = Some(format!("shared netns unavailable ({e}); "));
            }
        }
    }
    let mut refused: Vec<(c_int, Errno)> = Vec::new();
    if let Err(e) = probe(flags) {
        // Find out which flags the kernel refuses. Without root every namespace needs the
        // user namespace, so if that fails nothing else can be tried.
        if !is_root && probe(libc::CLONE_NEWUSER).is_err() {
            refused.extend(
                NS_FLAGS
                    .iter()
                    .filter(|(f, ..)| flags & f != 0)
                    .map(|(f, ..)| (*f, e)),
            );
        } else {
            let base = if is_root { 0 } else { libc::CLONE_NEWUSER };
            for (f, ..) in NS_FLAGS
                .iter()
                .filter(|(f, ..)| flags & f != 0 && *f != base)
            {
                if let Err(e) = probe(base | f) {
                    refused.push((*f, e));
                }
            }
        }
        for (f, _) in &refused {
            flags &= !f;
        }
        if flags & libc::CLONE_NEWNET != 0 && probe(flags).is_err() {
            flags = 0;
        }
    }
    for (f, m, what) in NS_FLAGS {
        let entry = if let Some((_, e)) = refused.iter().find(|(rf, _)| *rf == f) {
            let hint = if f == libc::CLONE_NEWUSER || !is_root {
                " (unprivileged user namespaces disabled? check kernel.unprivileged_userns_clone, \
                 user.max_user_namespaces, kernel.apparmor_restrict_unprivileged_userns)"
            } else {
                ""
            };
            ReportEntry::missing(m, format!("clone({}) refused: {e}{hint}", flag_name(f)))
        } else if flags & f != 0 {
            let mut d = String::new();
            if f == libc::CLONE_NEWNET
                && let Some(n) = &net_note
            {
                d.push_str(n);
            }
            d.push_str(what);
            ReportEntry::applied(m, d)
        } else if f == libc::CLONE_NEWUSER && is_root {
            ReportEntry::not_needed(m, "host runs as root: no user namespace")
        } else if f == libc::CLONE_NEWNET && network {
            ReportEntry::not_needed(m, "network requested: host network namespace")
        } else if f == libc::CLONE_NEWNET && netns.is_some() {
            ReportEntry::applied(
                m,
                "joins the shared empty network namespace (lo only, down)",
            )
        } else {
            ReportEntry::missing(m, "not available")
        };
        entries.push(entry);
    }
    let plan = NamespacePlan {
        level,
        flags,
        netns,
        entries,
    };
    for e in &plan.entries {
        e.check(level)?;
    }
    Ok(plan)
}

fn flag_name(f: c_int) -> &'static str {
    match f {
        libc::CLONE_NEWPID => "CLONE_NEWPID",
        libc::CLONE_NEWNS => "CLONE_NEWNS",
        libc::CLONE_NEWIPC => "CLONE_NEWIPC",
        libc::CLONE_NEWUTS => "CLONE_NEWUTS",
        libc::CLONE_NEWUSER => "CLONE_NEWUSER",
        libc::CLONE_NEWNET => "CLONE_NEWNET",
        _ => "?",
    }
}
