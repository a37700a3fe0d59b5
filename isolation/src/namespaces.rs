//! Namespaces: which `clone()` flags to use, the shared empty network namespace, and the
//! async-signal-safe setup the child runs between `clone()` and `execve()`.
//!
//! * pid, mount, ipc and uts namespaces always (level `Standard`/`Strict`);
//! * a user namespace only when the host is not root (uid/gid mapped to themselves, via a pipe
//!   handshake: the child waits while the parent writes `setgroups`/`uid_map`/`gid_map`);
//! * no network: as root the child `setns()`es into one process-wide, lazily created, empty
//!   network namespace ([`shared_netns`]), which avoids the cost and the long tail of creating
//!   and tearing down a netns per sandbox. A non-root host cannot do that (joining a netns needs
//!   `CAP_SYS_ADMIN` over the user namespace that owns it, and the child's fresh user namespace
//!   has none over the helper's), so non-root sandboxes get their own `CLONE_NEWNET`.

use std::ffi::CString;
use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use libc::c_int;
use nix::errno::Errno;

use crate::error::IsolationError;
use crate::level::Level;
use crate::report::{Mechanism, ReportEntry};
use crate::root::{NewRoot, RootOptions, locked_mount_flags};

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

static SHARED_NETNS: OnceLock<Result<OwnedFd, String>> = OnceLock::new();

/// The process-wide empty network namespace (only `lo`, down), created on first use.
///
/// It is created by `unshare(CLONE_NEWNET)` in a short-lived helper thread, whose
/// `/proc/thread-self/ns/net` is kept open; the host's own threads never change namespace.
/// Needs `CAP_SYS_ADMIN` (root). A failure is remembered.
pub fn shared_netns() -> Result<BorrowedFd<'static>, IsolationError> {
    match SHARED_NETNS.get_or_init(|| create_empty_netns().map_err(|e| e.to_string())) {
        Ok(fd) => Ok(fd.as_fd()),
        Err(e) => Err(IsolationError::Sys {
            op: "create shared empty network namespace".into(),
            source: io::Error::other(e.clone()),
        }),
    }
}

fn create_empty_netns() -> io::Result<OwnedFd> {
    let helper = std::thread::Builder::new()
        .name("isolation-netns".into())
        .spawn(|| {
            // SAFETY: unshare(2) only changes this helper thread's network namespace (netns is
            // per-task, and CLONE_NEWNET does not require a single-threaded process).
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            open_cloexec(Path::new("/proc/thread-self/ns/net"), libc::O_RDONLY)
        })?;
    helper
        .join()
        .map_err(|_| io::Error::other("netns helper thread panicked"))?
}

fn open_cloexec(path: &Path, flags: c_int) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: valid NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by open(2) and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Fork-like raw `clone(2)` (no new stack; the child continues on a copy of the caller's
/// stack, like `fork`), with `flags | SIGCHLD`. Returns the child's pid in the parent and 0 in
/// the child.
///
/// # Safety
///
/// Same rules as `fork` in a multi-threaded process, but stricter since glibc's atfork
/// handlers do not run: in the child only async-signal-safe, non-allocating code may run
/// (e.g. [`crate::cgroups::Cgroup::enter_from_child`], [`ChildSetup::run_in_child`],
/// [`crate::rlimits::Rlimits::apply_in_child`]) before `execve` or `_exit`.
pub unsafe fn raw_clone(flags: c_int) -> Result<libc::pid_t, Errno> {
    let flags = (flags | libc::SIGCHLD) as u32 as libc::c_ulong;
    // SAFETY: with a null stack pointer clone(2) behaves like fork(2); the caller upholds the
    // child-side rules. Argument order differs between architectures only in the last two
    // pointers, which are both null here.
    let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(rc as libc::pid_t)
    }
}

/// Checks (once per flag set, cached) that `clone(flags)` works here by cloning a child that
/// exits immediately.
pub fn probe(flags: c_int) -> Result<(), Errno> {
    static CACHE: Mutex<Vec<(c_int, Result<(), Errno>)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, r)) = cache.iter().find(|(f, _)| *f == flags) {
        return *r;
    }
    // SAFETY: the child only calls _exit(2).
    let r = match unsafe { raw_clone(flags) } {
        Ok(0) => {
            // SAFETY: _exit is async-signal-safe; nothing else runs in the child.
            unsafe { libc::_exit(0) }
        }
        Ok(pid) => {
            let mut status = 0;
            // SAFETY: reaping our own child.
            while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 && Errno::last() == Errno::EINTR
            {
            }
            Ok(())
        }
        Err(e) => Err(e),
    };
    cache.push((flags, r));
    r
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

/// Which step of the child-side setup failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ChildStep {
    /// Writing `0` to a `cgroup.procs`.
    CgroupEnter = 1,
    /// Waiting for the parent to write the uid/gid maps.
    UserNsWait = 2,
    /// `setns()` into the shared network namespace.
    SetNetns = 3,
    /// Making `/` recursively private.
    MountPrivate = 4,
    /// Mounting a fresh `/proc`.
    MountProc = 5,
    /// Mounting a tmpfs on `/tmp`.
    MountTmp = 6,
    /// Bind-mounting the app directory.
    BindAppDir = 7,
    /// Remounting the app directory read-only.
    RemountAppDir = 8,
    /// `chdir()` into the working directory.
    Chdir = 9,
    /// `PR_SET_NO_NEW_PRIVS`.
    NoNewPrivs = 10,
    /// Dropping capabilities.
    DropCapabilities = 11,
    /// `setrlimit()`.
    Rlimit = 12,
    /// Building the sandbox's own root; [`ChildError::index`] names the step.
    Root = 13,
    /// Switching to the sandbox's unprivileged uid/gid (setgroups, setresgid, setresuid).
    SwitchIds = 14,
}

impl ChildStep {
    fn from_u8(v: u8) -> Option<Self> {
        use ChildStep::*;
        Some(match v {
            1 => CgroupEnter,
            2 => UserNsWait,
            3 => SetNetns,
            4 => MountPrivate,
            5 => MountProc,
            6 => MountTmp,
            7 => BindAppDir,
            8 => RemountAppDir,
            9 => Chdir,
            10 => NoNewPrivs,
            11 => DropCapabilities,
            12 => Rlimit,
            13 => Root,
            14 => SwitchIds,
            _ => return None,
        })
    }
}

/// A failed child-side step and its errno; `Copy` and allocation-free so the child can send it
/// to the parent as 8 bytes ([`ChildError::to_bytes`]) before `_exit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildError {
    /// The step that failed.
    pub step: ChildStep,
    /// Its errno.
    pub errno: Errno,
    /// Which sub-step failed, where the step has several ([`ChildStep::Root`]: see
    /// [`ChildSetup::describe`]); 0 otherwise.
    pub index: u16,
}

impl ChildError {
    /// Encodes as 8 bytes: step, index (u16), a zero byte, errno (native endian).
    pub fn to_bytes(self) -> [u8; 8] {
        let e = (self.errno as i32).to_ne_bytes();
        let i = self.index.to_ne_bytes();
        [self.step as u8, i[0], i[1], 0, e[0], e[1], e[2], e[3]]
    }

    /// Decodes [`ChildError::to_bytes`].
    pub fn from_bytes(b: [u8; 8]) -> Option<Self> {
        let step = ChildStep::from_u8(b[0])?;
        Some(Self {
            step,
            errno: Errno::from_raw(i32::from_ne_bytes([b[4], b[5], b[6], b[7]])),
            index: u16::from_ne_bytes([b[1], b[2]]),
        })
    }

    /// Error from the current errno.
    pub(crate) fn last(step: ChildStep) -> Self {
        Self {
            step,
            errno: Errno::last(),
            index: 0,
        }
    }
}

impl fmt::Display for ChildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sandbox child setup {:?}: {}",
            self.step,
            self.errno.desc()
        )
    }
}

impl std::error::Error for ChildError {}

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

struct UserNsSync {
    child_read: OwnedFd,
    parent_write: OwnedFd,
    uid_map: String,
    gid_map: String,
}

impl fmt::Debug for UserNsSync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserNsSync")
            .field("uid_map", &self.uid_map)
            .field("gid_map", &self.gid_map)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct AppBind {
    path: CString,
    remount_flags: libc::c_ulong,
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

/// `CLOCK_MONOTONIC` in nanoseconds (`clock_gettime` is async-signal-safe).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Everything the child needs between `clone()` and `execve()`, prepared (all strings and fds
/// allocated) in the parent. Build one per spawn with [`ChildSetup::new`].
#[derive(Debug)]
pub struct ChildSetup {
    flags: c_int,
    netns: Option<RawFd>,
    userns: Option<UserNsSync>,
    proc_mount: bool,
    tmp: Option<CString>,
    app: Option<AppBind>,
    workdir: Option<CString>,
    root: Option<NewRoot>,
    ids: Option<(u32, u32)>,
    timings: ChildTimings,
    no_new_privs: bool,
    drop_caps: bool,
    cap_last: u32,
    entries: Vec<ReportEntry>,
}

fn cstring(p: &Path) -> Result<CString, IsolationError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| IsolationError::Path {
        path: p.into(),
        reason: "contains a NUL byte".into(),
    })
}

fn cap_last_cap() -> u32 {
    fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

impl ChildSetup {
    /// Prepares the child-side setup for `plan` (pipes for the user namespace handshake,
    /// C strings for every path, mount flags read from the parent's view).
    pub fn new(plan: &NamespacePlan, opts: &ChildOptions) -> Result<Self, IsolationError> {
        let flags = plan.flags;
        let newns = flags & libc::CLONE_NEWNS != 0;
        let mut entries = plan.entries.clone();
        let userns = if flags & libc::CLONE_NEWUSER != 0 {
            let mut fds = [0; 2];
            // SAFETY: valid out-array of two fds.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
                return Err(IsolationError::last_os(
                    "pipe2 for the user namespace handshake",
                ));
            }
            // SAFETY: both fds were just created by pipe2 and are owned by nobody else.
            let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            // SAFETY: getuid/getgid cannot fail.
            let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
            Some(UserNsSync {
                child_read: r,
                parent_write: w,
                uid_map: format!("{uid} {uid} 1\n"),
                gid_map: format!("{gid} {gid} 1\n"),
            })
        } else {
            None
        };

        let mut mount_notes: Vec<String> = Vec::new();
        let mut tmp = None;
        let mut app = None;
        let mut root = None;
        if !plan.level.isolates() {
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
        } else {
            entries.push(match (&opts.root, newns) {
                (Some(o), true) => {
                    let o = RootOptions {
                        proc: flags & libc::CLONE_NEWPID != 0,
                        ..o.clone()
                    };
                    let r = NewRoot::prepare(&o)?;
                    let e = ReportEntry::applied(Mechanism::Root, r.summary());
                    root = Some(r);
                    e
                }
                (Some(_), false) => {
                    ReportEntry::missing(Mechanism::Root, "no mount namespace: the host's root")
                }
                (None, _) => {
                    ReportEntry::not_needed(Mechanism::Root, "not requested by the caller")
                }
            });
            entries.push(match &root {
                Some(r) => ReportEntry::applied(
                    Mechanism::Disk,
                    format!(
                        "/work and /tmp share one tmpfs of {} and {} inodes (ENOSPC past \
                         it; pages charged to the memory cgroup)",
                        crate::root::human_bytes(r.disk_bytes()),
                        crate::root::disk_inodes(r.disk_bytes())
                    ),
                ),
                None if opts.root.is_none() => ReportEntry::not_needed(
                    Mechanism::Disk,
                    "no own root requested: the work dir is on the host's filesystem, unbounded",
                ),
                None => ReportEntry::missing(
                    Mechanism::Disk,
                    "no own root: the work dir is on the host's filesystem, unbounded",
                ),
            });
        }
        if root.is_some() {
            mount_notes.push("/ rprivate, own root (see root)".into());
            if let Some(e) = entries
                .iter_mut()
                .find(|e| e.mechanism == Mechanism::MountNs)
            {
                e.detail = format!("{}: {}", e.detail, mount_notes.join(", "));
            }
        } else if newns {
            mount_notes.push("/ rprivate".into());
            if flags & libc::CLONE_NEWPID != 0 {
                mount_notes.push("fresh /proc".into());
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
                    let reason = String::from(
                        "lives under /tmp, which the sandbox's private tmpfs would hide; keep \
                         sandbox directories elsewhere (e.g. /var/tmp, $XDG_RUNTIME_DIR)",
                    );
                    if plan.level == Level::Strict {
                        return Err(IsolationError::Path {
                            path: p.to_path_buf(),
                            reason,
                        });
                    }
                    mount_notes.push(format!("/tmp NOT private ({} {reason})", p.display()));
                } else {
                    let mut data = String::from("mode=1777");
                    if let Some(sz) = opts.tmp_size {
                        data.push_str(&format!(",size={sz}"));
                    }
                    mount_notes.push(format!("tmpfs /tmp ({data})"));
                    tmp = Some(CString::new(data).expect("no NUL in tmpfs options"));
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
                mount_notes.push(format!("{} read-only", dir.display()));
                app = Some(AppBind {
                    path: cstring(dir)?,
                    remount_flags,
                });
            }
            if let Some(e) = entries
                .iter_mut()
                .find(|e| e.mechanism == Mechanism::MountNs)
            {
                e.detail = format!("{}: {}", e.detail, mount_notes.join(", "));
            }
        }
        let workdir = match &root {
            Some(_) => Some(cstring(Path::new(crate::root::WORK_DIR))?),
            None => opts.workdir.as_deref().map(cstring).transpose()?,
        };
        let drop_caps = opts.drop_capabilities && (is_root() || userns.is_some());
        if plan.level.isolates() {
            entries.push(if drop_caps {
                ReportEntry::applied(
                    Mechanism::Capabilities,
                    "all dropped before exec (bounding, ambient, inheritable, permitted, effective)",
                )
            } else if !opts.drop_capabilities {
                ReportEntry::missing(Mechanism::Capabilities, "not requested")
            } else {
                ReportEntry::not_needed(
                    Mechanism::Capabilities,
                    "non-root without a user namespace: holds no capabilities",
                )
            });
        }
        let ids = opts
            .switch_ids
            .filter(|_| is_root() && plan.level.isolates());
        if plan.level.isolates() {
            entries.push(match (ids, &userns) {
                (Some((uid, gid)), _) => ReportEntry::applied(
                    Mechanism::Ids,
                    format!("uid {uid}, gid {gid}, no supplementary groups"),
                ),
                (None, Some(_)) => ReportEntry::applied(
                    Mechanism::Ids,
                    // SAFETY: geteuid cannot fail.
                    format!("the host's uid {} in a user namespace", unsafe {
                        libc::geteuid()
                    }),
                ),
                (None, None) if is_root() && opts.switch_ids.is_none() => ReportEntry::not_needed(
                    Mechanism::Ids,
                    "not requested by the caller: runs as the host's root (uid 0)",
                ),
                (None, None) if is_root() => {
                    ReportEntry::missing(Mechanism::Ids, "runs as the host's root (uid 0)")
                }
                (None, None) => ReportEntry::applied(
                    Mechanism::Ids,
                    // SAFETY: geteuid cannot fail.
                    format!("the host's unprivileged uid {}", unsafe { libc::geteuid() }),
                ),
            });
        }
        Ok(Self {
            flags,
            netns: plan.netns.map(|fd| fd.as_raw_fd()),
            userns,
            proc_mount: root.is_none() && newns && flags & libc::CLONE_NEWPID != 0,
            tmp,
            app,
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
    ///
    /// The release and the abort are explicit bytes, not EOF: another child cloned meanwhile
    /// holds copies of the pipe until it `execve`s, so EOF could come late.
    pub fn parent_after_clone(&mut self, pid: libc::pid_t) -> Result<(), IsolationError> {
        let Some(sync) = self.userns.take() else {
            return Ok(());
        };
        let res = Self::write_maps(&sync, pid);
        let byte: &[u8; 1] = if res.is_ok() { b"1" } else { b"0" };
        // SAFETY: valid fd and a 1-byte static buffer.
        let n = unsafe { libc::write(sync.parent_write.as_raw_fd(), byte.as_ptr().cast(), 1) };
        res?;
        if n != 1 {
            return Err(IsolationError::last_os("release the sandbox child"));
        }
        Ok(())
    }

    fn write_maps(sync: &UserNsSync, pid: libc::pid_t) -> Result<(), IsolationError> {
        let write = |name: &str, value: &str| -> Result<(), IsolationError> {
            let path = PathBuf::from(format!("/proc/{pid}/{name}"));
            match fs::write(&path, value) {
                Ok(()) => Ok(()),
                Err(e) if name == "setgroups" && e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(IsolationError::Sys {
                    op: format!("write {:?} to {}", value.trim_end(), path.display()),
                    source,
                }),
            }
        };
        write("setgroups", "deny")?;
        write("uid_map", &sync.uid_map)?;
        write("gid_map", &sync.gid_map)
    }

    /// Child side, between `clone()` and `execve()`: waits for the uid/gid maps (user
    /// namespace), joins the shared netns, sets up mounts (mount namespace: `/` rprivate, fresh
    /// `/proc` for the new pid namespace, tmpfs on `/tmp`, app dir read-only), `chdir`s,
    /// sets no_new_privs and drops capabilities, in that order.
    ///
    /// # Safety
    ///
    /// Call only in the child of a fork-like `clone()` made with [`ChildSetup::flags`], before
    /// `execve`, and before closing inherited fds (it uses the pipe and netns fds). It only
    /// makes raw system calls on data prepared by the parent: no allocation, no locks.
    pub unsafe fn run_in_child(&self) -> Result<(), ChildError> {
        if let Some(sync) = &self.userns {
            // SAFETY: raw syscalls on fds owned by this (copied) struct; closing the child's
            // copy of the write end lets a dying parent show up as EOF.
            unsafe {
                libc::close(sync.parent_write.as_raw_fd());
                let mut b = 0u8;
                let n = loop {
                    let n = libc::read(sync.child_read.as_raw_fd(), (&raw mut b).cast(), 1);
                    if n >= 0 || Errno::last() != Errno::EINTR {
                        break n;
                    }
                };
                libc::close(sync.child_read.as_raw_fd());
                if n != 1 || b != b'1' {
                    let errno = if n < 0 {
                        Errno::last()
                    } else {
                        Errno::ECANCELED
                    };
                    return Err(ChildError {
                        step: ChildStep::UserNsWait,
                        errno,
                        index: 0,
                    });
                }
            }
        }
        if let Some(fd) = self.netns {
            // SAFETY: setns(2) on an fd the parent opened and keeps open.
            if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                return Err(ChildError::last(ChildStep::SetNetns));
            }
        }
        if self.flags & libc::CLONE_NEWNS != 0 {
            let started = monotonic_ns();
            // SAFETY: mount(2) calls with static or parent-prepared NUL-terminated strings.
            unsafe { self.mounts()? };
            if self.root.is_some() {
                self.timings.root_ns.store(
                    monotonic_ns() - started,
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
        }
        if let Some(dir) = &self.workdir {
            // SAFETY: chdir(2) with a parent-prepared C string.
            if unsafe { libc::chdir(dir.as_ptr()) } != 0 {
                return Err(ChildError::last(ChildStep::Chdir));
            }
        }
        if self.no_new_privs {
            // SAFETY: plain prctl(2).
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return Err(ChildError::last(ChildStep::NoNewPrivs));
            }
        }
        if self.drop_caps {
            // SAFETY: prctl raw syscalls with stack data.
            unsafe { drop_bounding_and_ambient(self.cap_last)? };
        }
        let ids_started = monotonic_ns();
        if let Some((uid, gid)) = self.ids {
            // SAFETY: setgroups/setresgid/setresuid raw syscalls. Groups and gid first: once
            // the uid is not 0 the process has no capability left to change them.
            unsafe {
                if libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) != 0
                    || libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0
                    || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0
                {
                    return Err(ChildError::last(ChildStep::SwitchIds));
                }
            }
        }
        if self.drop_caps {
            // SAFETY: capset raw syscall with stack data.
            unsafe { clear_capability_sets()? };
        }
        if self.ids.is_some() {
            self.timings.ids_ns.store(
                monotonic_ns() - ids_started,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        Ok(())
    }

    /// # Safety
    /// Child only; see [`ChildSetup::run_in_child`].
    unsafe fn mounts(&self) -> Result<(), ChildError> {
        let null = std::ptr::null::<libc::c_char>();
        // SAFETY: mount(2) with static strings: `/` recursively private first, so nothing
        // below propagates to the host.
        if unsafe {
            libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                null.cast(),
            )
        } != 0
        {
            return Err(ChildError::last(ChildStep::MountPrivate));
        }
        if let Some(root) = &self.root {
            // SAFETY: the prepared root steps only make raw system calls on memory owned by
            // `root`.
            return unsafe { root.build_in_child() }.map_err(|(index, errno)| ChildError {
                step: ChildStep::Root,
                errno,
                index,
            });
        }
        // SAFETY: (whole block) mount(2) with static C strings or C strings owned by `self`,
        // all NUL-terminated; null pointers where the kernel accepts them.
        unsafe {
            if self.proc_mount
                && libc::mount(
                    c"proc".as_ptr(),
                    c"/proc".as_ptr(),
                    c"proc".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    null.cast(),
                ) != 0
            {
                return Err(ChildError::last(ChildStep::MountProc));
            }
            if let Some(data) = &self.tmp
                && libc::mount(
                    c"tmpfs".as_ptr(),
                    c"/tmp".as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    data.as_ptr().cast(),
                ) != 0
            {
                return Err(ChildError::last(ChildStep::MountTmp));
            }
            if let Some(app) = &self.app {
                let p = app.path.as_ptr();
                if libc::mount(p, p, null, libc::MS_BIND | libc::MS_REC, null.cast()) != 0 {
                    return Err(ChildError::last(ChildStep::BindAppDir));
                }
                if libc::mount(null, p, null, app.remount_flags, null.cast()) != 0 {
                    return Err(ChildError::last(ChildStep::RemountAppDir));
                }
            }
        }
        Ok(())
    }
}

impl Drop for ChildSetup {
    fn drop(&mut self) {
        // Only ever runs in the parent: the child execs or _exits. Tells a child still waiting
        // for its uid/gid maps to give up.
        if let Some(sync) = self.userns.take() {
            // SAFETY: valid fd and a 1-byte static buffer; the pipe has room (or no reader).
            unsafe { libc::write(sync.parent_write.as_raw_fd(), b"0".as_ptr().cast(), 1) };
        }
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Drops the bounding set and the ambient set (needs `CAP_SETPCAP`, so before any switch of
/// ids).
///
/// # Safety
/// Raw prctl only; safe to call in a fork-like child.
unsafe fn drop_bounding_and_ambient(cap_last: u32) -> Result<(), ChildError> {
    // SAFETY: (whole block) prctl(2) with plain integer arguments.
    unsafe {
        for cap in 0..=cap_last {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0
                && Errno::last() != Errno::EINVAL
            {
                return Err(ChildError::last(ChildStep::DropCapabilities));
            }
        }
        if libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
            && Errno::last() != Errno::EINVAL
        {
            return Err(ChildError::last(ChildStep::DropCapabilities));
        }
    }
    Ok(())
}

/// Clears the permitted, effective and inheritable sets.
///
/// # Safety
/// Raw capset only; safe to call in a fork-like child.
unsafe fn clear_capability_sets() -> Result<(), ChildError> {
    let hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset(2) with stack-allocated header and data.
    if unsafe { libc::syscall(libc::SYS_capset, &raw const hdr, data.as_ptr()) } != 0 {
        return Err(ChildError::last(ChildStep::DropCapabilities));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_per_level() {
        let base = libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
        assert_eq!(clone_flags(Level::None, false, false), 0);
        assert_eq!(clone_flags(Level::Standard, false, true), base);
        assert_eq!(clone_flags(Level::Strict, true, true), base);
        assert_eq!(
            clone_flags(Level::Standard, false, false),
            base | libc::CLONE_NEWUSER | libc::CLONE_NEWNET
        );
        assert_eq!(
            clone_flags(Level::Standard, true, false),
            base | libc::CLONE_NEWUSER
        );
    }

    #[test]
    fn child_error_round_trips() {
        let e = ChildError {
            step: ChildStep::Root,
            errno: Errno::EPERM,
            index: 300,
        };
        assert_eq!(ChildError::from_bytes(e.to_bytes()), Some(e));
        assert_eq!(ChildError::from_bytes([0; 8]), None);
        assert!(e.to_string().contains("Root"));
    }

    #[test]
    fn level_none_plans_nothing() {
        let p = plan(Level::None, false, true).unwrap();
        assert_eq!(p.flags, 0);
        assert!(p.netns.is_none());
        assert!(p.entries.iter().all(|e| !e.applied));
    }
}
