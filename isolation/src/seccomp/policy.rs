//! The syscall policy, by name: what the sandboxed process (the runner and the app it loads) may
//! call. [`super::tables`] turns names into each architecture's numbers; a name an architecture
//! does not have (`open`, `fork`, `poll`, `arch_prctl`, ... on aarch64) is skipped there.
//!
//! - [`ALLOW`]: allowed, with no argument checks.
//! - [`RULES`]: allowed only with certain arguments (the argument checks are in `bpf.rs`).
//! - [`EPERM`]: known dangerous: `EPERM`, so callers see a clear "not permitted".
//! - Everything else, including numbers no table has: `ENOSYS`, as on an older kernel (libc
//!   then falls back where it can, e.g. `clone3` -> `clone`).

/// Allowed syscalls, grouped by purpose.
#[rustfmt::skip]
pub(super) const ALLOW: &[(&str, &[&str])] = &[
    // Process and thread lifetime; no_new_privs is already set, so exec cannot gain privileges.
    ("process", &["exit", "exit_group", "fork", "vfork", "execve", "execveat", "wait4", "waitid",
        "set_tid_address", "set_robust_list", "get_robust_list", "rseq", "arch_prctl",
        "set_thread_area", "get_thread_area", "prctl", "restart_syscall", "getpid", "getppid",
        "gettid", "getpgid", "setpgid", "getpgrp", "getsid", "setsid"]),
    // Credentials: all capabilities are dropped, so these only move between the process's ids.
    ("credentials", &["getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid",
        "getgroups", "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid",
        "setfsuid", "setfsgid", "setgroups", "capget", "capset"]),
    // Scheduling, resource limits (cannot be raised without capabilities), system information.
    ("scheduling", &["sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getparam",
        "sched_setparam", "sched_getscheduler", "sched_setscheduler", "sched_get_priority_max",
        "sched_get_priority_min", "sched_rr_get_interval", "sched_getattr", "sched_setattr",
        "getpriority", "setpriority", "ioprio_get", "ioprio_set", "getrlimit", "setrlimit",
        "prlimit64", "getrusage", "times", "sysinfo", "uname", "getcpu", "umask", "getrandom"]),
    // Signals, and pidfds (own pid namespace: only the sandbox's processes are visible).
    ("signals", &["rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending",
        "rt_sigtimedwait", "rt_sigsuspend", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
        "sigaltstack", "kill", "tkill", "tgkill", "pause", "signalfd", "signalfd4", "pidfd_open",
        "pidfd_send_signal", "process_mrelease"]),
    // Memory of the calling process.
    ("memory", &["brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync",
        "mlock", "mlock2", "munlock", "mlockall", "munlockall", "membarrier", "remap_file_pages",
        "pkey_mprotect", "pkey_alloc", "pkey_free", "mseal", "map_shadow_stack",
        "get_mempolicy", "set_mempolicy", "mbind"]),
    // Futexes, clocks (reading only), sleeps, timers.
    ("time", &["futex", "futex_waitv", "futex_wake", "futex_wait", "futex_requeue", "nanosleep",
        "clock_nanosleep", "clock_gettime", "clock_getres", "gettimeofday", "time", "alarm",
        "getitimer", "setitimer", "timer_create", "timer_settime", "timer_gettime",
        "timer_getoverrun", "timer_delete", "timerfd_create", "timerfd_settime",
        "timerfd_gettime"]),
    // File descriptors, pipes, event fds, polling.
    ("fds", &["close", "close_range", "dup", "dup2", "dup3", "fcntl", "flock", "pipe", "pipe2",
        "eventfd", "eventfd2", "memfd_create", "select", "pselect6", "poll", "ppoll",
        "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait",
        "epoll_pwait2", "inotify_init", "inotify_init1", "inotify_add_watch",
        "inotify_rm_watch"]),
    // Reading and writing open files, including Linux AIO (not io_uring).
    ("file I/O", &["read", "write", "readv", "writev", "pread64", "pwrite64", "preadv",
        "pwritev", "preadv2", "pwritev2", "lseek", "sendfile", "splice", "tee", "vmsplice",
        "copy_file_range", "fsync", "fdatasync", "sync", "syncfs", "sync_file_range",
        "fallocate", "ftruncate", "truncate", "fadvise64", "readahead", "cachestat",
        "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents"]),
    // Paths and metadata: Landlock and the mount namespace decide which paths.
    ("paths", &["open", "openat", "openat2", "creat", "stat", "fstat", "lstat", "newfstatat",
        "statx", "statfs", "fstatfs", "access", "faccessat", "faccessat2", "getcwd", "chdir",
        "fchdir", "getdents", "getdents64", "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat",
        "rename", "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat", "readlink",
        "readlinkat", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown",
        "fchownat", "utime", "utimes", "utimensat", "futimesat", "mknod", "mknodat"]),
    // Extended attributes.
    ("xattrs", &["getxattr", "lgetxattr", "fgetxattr", "getxattrat", "listxattr", "llistxattr",
        "flistxattr", "listxattrat", "setxattr", "lsetxattr", "fsetxattr", "setxattrat",
        "removexattr", "lremovexattr", "fremovexattr", "removexattrat"]),
    // Sockets once created (creating one: `socket`/`socketpair` in RULES).
    ("sockets", &["bind", "connect", "listen", "accept", "accept4", "getsockname",
        "getpeername", "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg",
        "shutdown", "setsockopt", "getsockopt"]),
    // System V and POSIX IPC (the sandbox has its own IPC namespace).
    ("ipc", &["shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop", "semctl",
        "msgget", "msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend",
        "mq_timedreceive", "mq_notify", "mq_getsetattr"]),
    // Restricting oneself further.
    ("self-restriction", &["seccomp", "landlock_create_ruleset", "landlock_add_rule",
        "landlock_restrict_self"]),
];

/// A syscall whose verdict depends on its arguments (checked in `bpf.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Rule {
    /// `clone(flags, ..)`: any `CLONE_NEW*` flag -> `EPERM`.
    CloneNoNamespaces,
    /// `ioctl(fd, cmd, ..)`: `TIOCSTI` or `TIOCLINUX` -> `EPERM` (low 32 bits of `cmd`).
    IoctlNoTiocsti,
    /// `personality(p)`: only the query (`0xffffffff`) and `PER_LINUX` (0); else `EPERM`.
    PersonalityLinux,
    /// `socket(family, ..)`: `AF_UNIX`; `AF_INET`/`AF_INET6` only with network; else
    /// `EAFNOSUPPORT`.
    SocketFamily,
    /// `socketpair(family, ..)`: `AF_UNIX` only; else `EAFNOSUPPORT`.
    SocketpairUnix,
    /// `ENOSYS` always, named here so it is not mistaken for an omission: `clone3` keeps its
    /// flags in memory, where the filter cannot check them; glibc falls back to `clone`.
    Enosys,
}

/// Syscalls with a [`Rule`].
pub(super) const RULES: &[(&str, Rule)] = &[
    ("clone", Rule::CloneNoNamespaces),
    ("ioctl", Rule::IoctlNoTiocsti),
    ("personality", Rule::PersonalityLinux),
    ("socket", Rule::SocketFamily),
    ("socketpair", Rule::SocketpairUnix),
    ("clone3", Rule::Enosys),
];

/// Known dangerous: `EPERM`. Other processes' memory, mounts and namespaces, kernel keys,
/// modules, BPF, perf, io_uring, the clock, the machine.
#[rustfmt::skip]
pub(super) const EPERM: &[&str] = &[
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp", "process_madvise",
    "move_pages", "migrate_pages", "mount", "umount2", "pivot_root", "chroot", "fsopen",
    "fsconfig", "fsmount", "fspick", "open_tree", "open_tree_attr", "move_mount",
    "mount_setattr", "open_by_handle_at", "name_to_handle_at", "unshare", "setns",
    "sethostname", "setdomainname", "kexec_load", "kexec_file_load", "bpf", "perf_event_open",
    "fanotify_init", "fanotify_mark", "keyctl", "add_key", "request_key", "init_module",
    "finit_module", "delete_module", "reboot", "swapon", "swapoff", "acct", "quotactl",
    "quotactl_fd", "syslog", "vhangup", "lookup_dcookie", "settimeofday", "clock_settime",
    "clock_adjtime", "adjtimex", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "iopl", "ioperm", "modify_ldt", "uselib",
];

/// The `CLONE_NEW*` flags `clone` may not carry (`CLONE_NEWTIME` shares its bit with `CSIGNAL`
/// in `clone`; it only works with `clone3` and `unshare`, both refused).
pub(super) const NS_CLONE_FLAGS: [i32; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWCGROUP,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
];

/// Socket families `socket` accepts without network (`AF_UNIX`).
pub(super) const FAMILIES_LOCAL: &[i32] = &[libc::AF_UNIX];

/// Socket families `socket` accepts with network (`AF_UNIX`, `AF_INET`, `AF_INET6`).
pub(super) const FAMILIES_NETWORK: &[i32] = &[libc::AF_UNIX, libc::AF_INET, libc::AF_INET6];
