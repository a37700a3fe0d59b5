//! Parent side of a sandbox child's setup: everything the child will need between `clone()`
//! and `execve()`, prepared (allocated) in the parent, with the report lines; and the parent's
//! part after `clone()`. The child's part is in `child.rs`.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use libc::c_int;

use super::caps::cap_last_cap;
use super::child_error::{ChildError, ChildStep};
use super::error::{HIDDEN_BY_PRIVATE_TMP, NamespaceError};
use super::idmap::UserNsSync;
use super::plan::{NamespacePlan, is_root};
use crate::error::IsolationError;
use crate::level::Level;
use crate::report::{Mechanism, ReportEntry};
use crate::root::{self, NewRoot, RootOptions, cstring, locked_mount_flags};

/// Options for the child-side setup, given by the host.
#[derive(Debug, Clone, Default)]
pub struct ChildOptions {
    /// Bind-mount this directory read-only onto itself (when a mount namespace is used).
    pub app_dir: Option<PathBuf>,
    /// Mount a private tmpfs on `/tmp` (when a mount namespace is used).
    pub private_tmp: bool,
    /// Size of that tmpfs in bytes (default: the kernel's, half of RAM; pages are charged to
    /// the sandbox's memory cgroup either way).
    pub tmp_size: Option<u64>,
    /// `chdir()` here at the end (the sandbox's private directory).
    pub workdir: Option<PathBuf>,
    /// Paths the runner needs to see (private dir, runner binary...). With `private_tmp`, any of
    /// these or `app_dir` under `/tmp` would be hidden: `Strict` fails, `Standard` keeps the
    /// host's `/tmp` and says so.
    pub keep_visible: Vec<PathBuf>,
    /// Set `PR_SET_NO_NEW_PRIVS` before `execve` (the runner sets it again; harmless).
    pub no_new_privs: bool,
    /// Drop every capability (bounding set, ambient, inheritable, permitted, effective), so that
    /// a root host's runner has none after `execve`.
    pub drop_capabilities: bool,
    /// A root of its own ([`crate::root`]; needs a mount namespace). Replaces `app_dir`,
    /// `private_tmp` and `tmp_size`: the app dir, `/work` and `/tmp` are part of the root.
    pub root: Option<RootOptions>,
    /// Switch to these unprivileged ids (uid, gid; supplementary groups cleared) before exec.
    /// Only a root host can; a non-root host keeps its user namespace instead.
    pub switch_ids: Option<(u32, u32)>,
}

/// The app directory, bound read-only onto itself.
#[derive(Debug)]
pub(super) struct AppBind {
    /// The app directory.
    pub(super) path: CString,
    /// Flags of the read-only remount (keeping the mount's locked flags).
    pub(super) remount_flags: libc::c_ulong,
}

/// How long the child spent building its root and switching ids, in nanoseconds, written by
/// the child itself. The parent sees them only when the child shared its memory until exec
/// (vfork semantics); after a fork-like clone they stay 0.
#[derive(Debug, Default)]
pub struct ChildTimings {
    /// Building the sandbox's own root (mounts, binds, `pivot_root`).
    pub root_ns: std::sync::atomic::AtomicU64,
    /// `setgroups`, `setresgid`, `setresuid` and clearing the capability sets.
    pub ids_ns: std::sync::atomic::AtomicU64,
}

/// Everything the child needs between `clone()` and `execve()`, prepared (all strings and fds
/// allocated) in the parent. Build one per spawn with [`ChildSetup::new`].
#[derive(Debug)]
pub struct ChildSetup {
    pub(super) flags: c_int,
    pub(super) netns: Option<RawFd>,
    pub(super) userns: Option<UserNsSync>,
    pub(super) proc_mount: bool,
    pub(super) tmp: Option<CString>,
    pub(super) app: Option<AppBind>,
    pub(super) workdir: Option<CString>,
    pub(super) root: Option<NewRoot>,
    pub(super) ids: Option<(u32, u32)>,
    pub(super) timings: ChildTimings,
    pub(super) no_new_privs: bool,
    pub(super) drop_caps: bool,
    pub(super) cap_last: u32,
    entries: Vec<ReportEntry>,
}

impl ChildSetup {
    /// Prepares the child-side setup for `plan` (pipes for the user namespace handshake,
    /// C strings for every path, mount flags read from the parent's view).
    pub fn new(plan: &NamespacePlan, opts: &ChildOptions) -> Result<Self, IsolationError> {
        let flags = plan.flags;
        let newns = flags & libc::CLONE_NEWNS != 0;
        let isolates = plan.level.isolates();
        let mut entries = plan.entries.clone();
        let userns = if flags & libc::CLONE_NEWUSER != 0 {
            Some(UserNsSync::new()?)
        } else {
            None
        };
        let mut root = None;
        if isolates {
            root = own_root(plan, opts, &mut entries)?;
        } else {
            entries.push(ReportEntry::missing(
                Mechanism::Root,
                "isolation level none: the host's filesystem; only the runner and the workers \
                 it starts die with the host (PR_SET_PDEATHSIG): a process the app detaches \
                 (double fork) outlives a host killed with SIGKILL",
            ));
            entries.push(ReportEntry::missing(
                Mechanism::Ids,
                "isolation level none: the host's uid",
            ));
        }
        let mut mounts = Mounts::default();
        if root.is_some() {
            note_mounts(&mut entries, &["/ rprivate, own root (see root)".into()]);
        } else if newns {
            mounts = Mounts::prepare(plan, opts)?;
            note_mounts(&mut entries, &mounts.notes);
        }
        let workdir = match &root {
            Some(_) => Some(cstring(Path::new(root::WORK_DIR))?),
            None => opts.workdir.as_deref().map(cstring).transpose()?,
        };
        let drop_caps = opts.drop_capabilities && (is_root() || userns.is_some());
        let ids = opts.switch_ids.filter(|_| is_root() && isolates);
        if isolates {
            entries.push(capabilities_entry(opts.drop_capabilities, drop_caps));
            entries.push(ids_entry(ids, userns.is_some(), opts.switch_ids.is_some()));
        }
        Ok(Self {
            flags,
            netns: plan.netns.map(|fd| fd.as_raw_fd()),
            userns,
            proc_mount: root.is_none() && newns && flags & libc::CLONE_NEWPID != 0,
            tmp: mounts.tmp,
            app: mounts.app,
            workdir,
            root,
            ids,
            timings: ChildTimings::default(),
            no_new_privs: opts.no_new_privs,
            drop_caps,
            cap_last: cap_last_cap(),
            entries,
        })
    }

    /// The `clone()` namespace flags.
    pub fn flags(&self) -> c_int {
        self.flags
    }

    /// True when the child mounts a fresh `/proc` (own pid and mount namespace): feed it to
    /// [`crate::landlock::SandboxPaths::own_proc`].
    pub fn has_own_proc(&self) -> bool {
        self.proc_mount || (self.root.is_some() && self.flags & libc::CLONE_NEWPID != 0)
    }

    /// True when the child is the init of a pid namespace of its own: its death then takes
    /// every process of the namespace with it.
    pub fn has_pid_ns(&self) -> bool {
        self.flags & libc::CLONE_NEWPID != 0
    }

    /// The sandbox's own root, when it gets one ([`crate::root`]): then the runner sees only
    /// the fixed in-sandbox paths.
    pub fn own_root(&self) -> Option<&NewRoot> {
        self.root.as_ref()
    }

    /// What the child measured of its own setup ([`ChildTimings`]).
    pub fn timings(&self) -> &ChildTimings {
        &self.timings
    }

    /// Says which step of the child failed, with its path where it has one.
    pub fn describe(&self, err: &ChildError) -> String {
        match (&self.root, err.step) {
            (Some(root), ChildStep::Root) => format!(
                "sandbox child setup: build the sandbox root: {}: {}",
                root.describe(err.index),
                err.errno.desc()
            ),
            _ => err.to_string(),
        }
    }

    /// True when the child waits for the parent after `clone()` (the user namespace's uid/gid
    /// maps): the parent must then keep running while the child exists, so the clone cannot
    /// suspend it (`CLONE_VFORK`).
    pub fn child_waits_for_parent(&self) -> bool {
        self.userns.is_some()
    }

    /// True when the child mounts a private tmpfs on `/tmp`: feed it to
    /// [`crate::landlock::SandboxPaths::private_tmp`].
    pub fn has_private_tmp(&self) -> bool {
        self.tmp.is_some()
    }

    /// Report lines for namespaces (with mount details) and capabilities.
    pub fn report_entries(&self) -> &[ReportEntry] {
        &self.entries
    }

    /// Parent side, right after `clone()` returned `pid`: with a user namespace, writes
    /// `/proc/<pid>/setgroups` (`deny`), `uid_map` and `gid_map`, then releases the waiting
    /// child. Without one it only closes the pipe ends. On error the child is told to abort
    /// (it then fails with [`ChildStep::UserNsWait`]); the caller should reap it. Dropping a
    /// `ChildSetup` without calling this also tells a waiting child to abort.
    pub fn parent_after_clone(&mut self, pid: libc::pid_t) -> Result<(), IsolationError> {
        let Some(sync) = self.userns.take() else {
            return Ok(());
        };
        let maps = sync.write_maps(pid);
        let released = sync.release(maps.is_ok());
        maps?;
        released.map_err(|source| NamespaceError::ReleaseChild { source })?;
        Ok(())
    }
}

impl Drop for ChildSetup {
    fn drop(&mut self) {
        // Only ever runs in the parent: the child execs or _exits. Tells a child still waiting
        // for its uid/gid maps to give up.
        if let Some(sync) = self.userns.take() {
            let _ = sync.release(false);
        }
    }
}

/// The sandbox's own root, when it gets one (`opts.root` and a mount namespace), with the
/// root and disk report lines pushed to `entries`.
fn own_root(
    plan: &NamespacePlan,
    opts: &ChildOptions,
    entries: &mut Vec<ReportEntry>,
) -> Result<Option<NewRoot>, IsolationError> {
    let newns = plan.flags & libc::CLONE_NEWNS != 0;
    let root = match (&opts.root, newns) {
        (Some(o), true) => {
            let o = RootOptions {
                proc: plan.flags & libc::CLONE_NEWPID != 0,
                ..o.clone()
            };
            Some(NewRoot::prepare(&o)?)
        }
        _ => None,
    };
    entries.push(match (&root, &opts.root) {
        (Some(r), _) => ReportEntry::applied(Mechanism::Root, r.summary()),
        (None, Some(_)) => {
            ReportEntry::missing(Mechanism::Root, "no mount namespace: the host's root")
        }
        (None, None) => ReportEntry::not_needed(Mechanism::Root, "not requested by the caller"),
    });
    entries.push(match (&root, &opts.root) {
        (Some(r), _) => ReportEntry::applied(
            Mechanism::Disk,
            format!(
                "/work and /tmp share one tmpfs of {} and {} inodes (ENOSPC past it; pages \
                 charged to the memory cgroup)",
                root::human_bytes(r.disk_bytes()),
                root::disk_inodes(r.disk_bytes())
            ),
        ),
        (None, None) => ReportEntry::not_needed(
            Mechanism::Disk,
            "no own root requested: the work dir is on the host's filesystem, unbounded",
        ),
        (None, Some(_)) => ReportEntry::missing(
            Mechanism::Disk,
            "no own root: the work dir is on the host's filesystem, unbounded",
        ),
    });
    Ok(root)
}

/// The mounts of a mount namespace without an own root: what the report says, the options
/// of the private `/tmp`, the read-only app dir.
#[derive(Debug, Default)]
struct Mounts {
    notes: Vec<String>,
    tmp: Option<CString>,
    app: Option<AppBind>,
}

impl Mounts {
    fn prepare(plan: &NamespacePlan, opts: &ChildOptions) -> Result<Self, IsolationError> {
        let mut m = Mounts::default();
        m.notes.push("/ rprivate".into());
        if plan.flags & libc::CLONE_NEWPID != 0 {
            m.notes.push("fresh /proc".into());
        }
        if opts.private_tmp {
            let tmp_root = Path::new("/tmp");
            let hidden: Vec<&PathBuf> = opts
                .keep_visible
                .iter()
                .chain(opts.app_dir.iter())
                .chain(opts.workdir.iter())
                .filter(|p| {
                    let p = fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
                    p.starts_with(tmp_root)
                })
                .collect();
            if let Some(p) = hidden.first() {
                if plan.level == Level::Strict {
                    let path = p.to_path_buf();
                    return Err(NamespaceError::HiddenByPrivateTmp { path }.into());
                }
                m.notes.push(format!(
                    "/tmp NOT private ({} {HIDDEN_BY_PRIVATE_TMP})",
                    p.display()
                ));
            } else {
                let mut data = String::from("mode=1777");
                if let Some(sz) = opts.tmp_size {
                    data.push_str(&format!(",size={sz}"));
                }
                m.notes.push(format!("tmpfs /tmp ({data})"));
                m.tmp = Some(CString::new(data).expect("no NUL in tmpfs options"));
            }
        }
        if let Some(dir) = &opts.app_dir {
            let locked = locked_mount_flags(dir)?;
            let remount_flags = libc::MS_BIND
                | libc::MS_REMOUNT
                | libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | locked;
            m.notes.push(format!("{} read-only", dir.display()));
            m.app = Some(AppBind {
                path: cstring(dir)?,
                remount_flags,
            });
        }
        Ok(m)
    }
}

/// Appends the mount `notes` to the mount namespace's report line.
fn note_mounts(entries: &mut [ReportEntry], notes: &[String]) {
    if let Some(e) = entries
        .iter_mut()
        .find(|e| e.mechanism == Mechanism::MountNs)
    {
        e.detail = format!("{}: {}", e.detail, notes.join(", "));
    }
}

/// The capabilities report line: `requested` by the caller, `dropping` when the child can.
fn capabilities_entry(requested: bool, dropping: bool) -> ReportEntry {
    if dropping {
        ReportEntry::applied(
            Mechanism::Capabilities,
            "all dropped before exec (bounding, ambient, inheritable, permitted, effective)",
        )
    } else if !requested {
        ReportEntry::missing(Mechanism::Capabilities, "not requested")
    } else {
        ReportEntry::not_needed(
            Mechanism::Capabilities,
            "non-root without a user namespace: holds no capabilities",
        )
    }
}

/// The ids report line: `ids` the child switches to, whether it has a user namespace, and
/// whether the caller asked for a switch.
fn ids_entry(ids: Option<(u32, u32)>, userns: bool, requested: bool) -> ReportEntry {
    // SAFETY: geteuid(2) cannot fail.
    let euid = unsafe { libc::geteuid() };
    match (ids, userns) {
        (Some((uid, gid)), _) => ReportEntry::applied(
            Mechanism::Ids,
            format!("uid {uid}, gid {gid}, no supplementary groups"),
        ),
        (None, true) => ReportEntry::applied(
            Mechanism::Ids,
            format!("the host's uid {euid} in a user namespace"),
        ),
        (None, false) if is_root() && !requested => ReportEntry::not_needed(
            Mechanism::Ids,
            "not requested by the caller: runs as the host's root (uid 0)",
        ),
        (None, false) if is_root() => {
            ReportEntry::missing(Mechanism::Ids, "runs as the host's root (uid 0)")
        }
        (None, false) => ReportEntry::applied(
            Mechanism::Ids,
            format!("the host's unprivileged uid {euid}"),
        ),
    }
}
