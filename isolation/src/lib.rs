//! Linux isolation primitives for one sandbox: cgroups, namespaces, rlimits, seccomp, Landlock.
//!
//! One module per kernel concept: [`cgroups`] (v1 and v2), [`namespaces`], [`rlimits`],
//! [`seccomp`], [`landlock`], plus [`level`] (what to apply), [`report`] (what was applied, what
//! was not, and why) and [`runner`] (what the runner applies to itself).
//!
//! # Spawn sequence
//!
//! Names in `code` are this crate's API; "host:" steps are the caller's own code. `?` under
//! `Strict` means: a mechanism that could not be applied fails the spawn with
//! [`IsolationError::Missing`]; under `Standard` it is only reported.
//!
//! ## Host, once per process
//!
//! 1. [`seccomp::default_filter`]`(network)` compiles the seccomp allow-list once per variant
//!    (without and with network).
//! 2. As root: [`namespaces::shared_netns()`] creates the shared empty network namespace.
//!    Optional: the first [`namespaces::plan`] also does it.
//! 3. [`cgroups::CgroupSystem::shared`]`(parent)` detects v1 or v2 and prepares the parent of
//!    all sandbox cgroups. Optional: the first [`Cgroup::create`] also does it. On v2 this may
//!    move the host's processes into `<parent>/host`.
//!
//! ## Host, per sandbox, before `clone()` (may allocate)
//!
//! 4. `let mut report = Report::new();`
//! 5. Unless the level is `None`: [`Cgroup::create`]`(id, &limits, parent)`. Record
//!    `cg.report_entry()`, or on `Err(e)` record `ReportEntry::missing(Mechanism::Cgroup,
//!    e.to_string())`. Then `report.record(level, ..)?`.
//! 6. `let ns = `[`namespaces::plan`]`(level, network, `[`namespaces::is_root`]`())?;`
//! 7. `let setup = `[`ChildSetup::new`]`(&ns, &ChildOptions { app_dir, private_tmp: true,
//!    workdir: Some(private_dir), keep_visible: vec![private_dir, runner_exe], no_new_privs:
//!    true, drop_capabilities: true, .. })?;` then
//!    `report.record_all(level, setup.report_entries().iter().cloned())?`. Keep sandbox
//!    directories out of `/tmp`: the private tmpfs would hide them.
//! 8. `let rl = `[`Rlimits::from_limits`]`(&limits, is_root());` then
//!    `report.record(level, rl.report_entry())?`.
//! 9. host: prepare everything the child needs: the control socketpair, an error pipe
//!    (`O_CLOEXEC`), and the `argv`/`envp` C strings for `execve`.
//!
//! ## `clone()`
//!
//! 10. `let pid = unsafe { `[`namespaces::raw_clone`]`(setup.flags()) }`. Or use the host's
//!     own fork-like `clone(setup.flags() | SIGCHLD)`, made from a thread that lives as long as
//!     the sandbox: `PR_SET_PDEATHSIG` fires when the creating *thread* exits.
//!
//! ## Child (pid 0), async-signal-safe only
//!
//! Nothing here allocates or takes locks. On any error, write `err.to_bytes()`
//! ([`ChildError`]) to the error pipe and `_exit(127)`.
//!
//! 11. `unsafe { entry.enter_from_child() }` (`entry = cg.open_entry()?`, opened by the parent
//!     for this spawn): writes `"0"` to each `cgroup.procs`, before any app code and with no
//!     race. An errno maps to `ChildStep::CgroupEnter`. (Alternative: the parent calls
//!     `entry.add_pid(pid)` before step 15 releases a child that waits for its user-namespace
//!     maps.)
//! 12. `unsafe { setup.run_in_child() }`:
//!     * waits for the uid/gid maps (user namespace);
//!     * `setns` into the shared netns;
//!     * mount namespace: `/` rprivate, fresh `/proc`, tmpfs `/tmp`, app dir read-only;
//!     * `chdir(private_dir)`, no_new_privs, drops all capabilities.
//!
//!     It uses inherited fds, so run it before closing fds.
//! 13. `unsafe { rl.apply_in_child() }`: core=0, AS, NOFILE, FSIZE, CPU, and NPROC when
//!     non-root.
//! 14. host:
//!     * `setsid()`;
//!     * `prctl(PR_SET_PDEATHSIG, SIGKILL)`. In a new pid namespace `getppid()` is 0, so
//!       check for parent death via the control socket instead.
//!     * `dup2` the control socket to fd 3, then `close_range(4, ~0U, 0)`;
//!     * `execve(runner, argv, clean envp)`.
//!
//! ## Parent, after `clone()`
//!
//! 15. `setup.parent_after_clone(pid)?`: with a user namespace, writes `setgroups`, `uid_map`
//!     and `gid_map`, then releases the child. On error: `kill(pid, SIGKILL)` and `waitpid`.
//! 16. host: read the error pipe. EOF (the pipe was closed by `execve`) means the runner is
//!     running; 8 bytes are a [`ChildError`] (`ChildError::from_bytes`).
//! 17. host: the first message to the runner carries
//!     [`RunnerRestrictions::for_level`]`(level, `[`LandlockPlan::for_sandbox`]`(&SandboxPaths {
//!     runner_exe, app_dir, private_dir, own_proc: setup.has_own_proc(), private_tmp:
//!     setup.has_private_tmp(), network }), network)`. (Call those two before step 15 consumes
//!     `setup`.)
//!
//! ## Runner, before loading any app code (still single-threaded)
//!
//! 18. `let entries = restrictions.apply_in_runner()?;` applies no_new_privs, then Landlock,
//!     then seccomp (TSYNC). Send `entries` back. The host records them with
//!     `report.record_all(level, entries)?`. Under `Strict` it destroys the sandbox on error.
//! 19. Only now `dlopen` the app. Hot-reloaded `.so` copies must live under a readable path
//!     (app dir or private dir).
//!
//! ## Teardown
//!
//! 20. `cg.kill_all()?` (v2 `cgroup.kill`; v1 freeze, SIGKILL, thaw, repeat), then host:
//!     `waitpid(pid)`, then `cg.remove()?` (rmdir, retried on `EBUSY`). Dropping a
//!     [`Cgroup`] does both best effort.
//!
//! Usage while running: [`Cgroup::usage`] reads size-independent counters (memory, peak, pids,
//! CPU time, OOM kills) and `cgroup.procs`.

#![warn(missing_docs)]

pub mod cgroups;
pub mod error;
pub mod fds;
pub mod landlock;
pub mod level;
pub mod mechanism;
pub mod mountinfo;
pub mod namespaces;
pub mod report;
pub mod rlimits;
pub mod root;
pub mod runner;
pub mod seccomp;

pub use cgroups::{Cgroup, CgroupEntry, CgroupError, CgroupSystem, CgroupUsage, CgroupVersion};
pub use error::IsolationError;

pub use landlock::{Enforcement, LandlockError, LandlockPlan, LandlockStatus, SandboxPaths};
pub use level::{Level, Limits, parse_size};
pub use namespaces::{
    ChildError, ChildOptions, ChildSetup, ChildStep, NamespaceError, NamespacePlan, clone_flags,
    is_root, shared_netns,
};
pub use report::{Mechanism, Report, ReportEntry};
pub use rlimits::Rlimits;
pub use root::{NewRoot, RootError, RootOptions};
pub use runner::RunnerRestrictions;
pub use seccomp::{BpfBytes, SeccompError};
