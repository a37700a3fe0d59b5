//! cgroups: one cgroup per sandbox for limits, accounting and killing.
//!
//! * v2 (`statfs("/sys/fs/cgroup") == CGROUP2_SUPER_MAGIC`): sandboxes live under a delegated
//!   subtree, which is the host's own cgroup (`0::` line of `/proc/self/cgroup`) or a given
//!   parent. See [`v2`].
//! * v1 / hybrid: one directory per hierarchy (memory, pids, cpu, cpuacct, freezer), each under
//!   `<host's own cgroup in that hierarchy>/sandbox-host`. See [`v1`].
//!
//! The root of the cgroup filesystem is injectable ([`CgroupSystem::v2_at`],
//! [`CgroupSystem::v1_at`]) so the file logic is unit-tested against a fake cgroupfs in a
//! tempdir.

pub mod v1;
pub mod v2;

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::level::Limits;
use crate::report::{Mechanism, ReportEntry};

/// Where the cgroup filesystem is mounted on every Linux distribution we know.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Name prefix of each sandbox's cgroup directory.
pub const SANDBOX_PREFIX: &str = "sandbox-";

/// A cgroup operation failed; every variant names the path and the cause.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Writing a control file failed.
    #[error("write {value} to {path}: {source}")]
    Write {
        /// What was written.
        value: String,
        /// The control file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Reading a control file failed.
    #[error("read {path}: {source}")]
    Read {
        /// The control file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Opening a control file failed.
    #[error("open {path}: {source}")]
    Open {
        /// The control file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Creating a cgroup directory failed.
    #[error("create cgroup {path}: {source}")]
    Mkdir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Removing a cgroup directory failed.
    #[error("remove cgroup {path}: {source}")]
    Rmdir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A control file had unexpected content.
    #[error("parse {path}: unexpected content {content:?}")]
    Parse {
        /// The control file.
        path: PathBuf,
        /// What it contained.
        content: String,
    },
    /// Processes were still alive after repeated SIGKILL rounds.
    #[error("{path} still holds processes {pids:?} after {rounds} kill rounds")]
    NotEmpty {
        /// The cgroup.
        path: PathBuf,
        /// Survivors.
        pids: Vec<i32>,
        /// How many rounds were tried.
        rounds: u32,
    },
    /// The v2 subtree is not writable by this user.
    #[error(
        "cgroup v2 subtree {path} is not delegated to uid {uid}: {reason} (run the host in a \
         delegated unit, e.g. `systemd-run --user --scope -p Delegate=yes`, or pass a writable \
         --cgroup-parent)"
    )]
    NotDelegated {
        /// The subtree.
        path: PathBuf,
        /// Effective uid of the host.
        uid: u32,
        /// What failed.
        reason: String,
    },
    /// cgroup v1 directories are not writable by this user.
    #[error(
        "no permission to create a cgroup at {path} as uid {uid}: {source} (cgroup v1 needs \
         root or a hierarchy chowned to this user)"
    )]
    NotPermitted {
        /// The directory.
        path: PathBuf,
        /// Effective uid of the host.
        uid: u32,
        /// The OS error.
        source: io::Error,
    },
    /// No usable cgroup hierarchy on this machine.
    #[error("cgroups unavailable: {0}")]
    Unavailable(String),
    /// The sandbox id cannot be used in a cgroup name.
    #[error("invalid sandbox id {0:?} (1 to 64 of [A-Za-z0-9_.-], not starting with '.')")]
    InvalidId(String),
}

/// Result alias for cgroup operations.
pub type Result<T, E = CgroupError> = std::result::Result<T, E>;

/// cgroup version in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// Legacy or hybrid hierarchy, one mount per controller.
    V1,
    /// Unified hierarchy.
    V2,
}

/// Counters read from a sandbox's cgroup; `None` when the controller is not available.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupUsage {
    /// `memory.current` (v2) / `memory.usage_in_bytes` (v1).
    pub memory_bytes: Option<u64>,
    /// `memory.peak` (v2, Linux 5.19+) / `memory.max_usage_in_bytes` (v1).
    pub memory_peak_bytes: Option<u64>,
    /// `pids.current`: processes plus threads.
    pub pids: Option<u64>,
    /// `cpu.stat usage_usec` (v2) / `cpuacct.usage / 1000` (v1).
    pub cpu_time_us: Option<u64>,
    /// `memory.events oom_kill` (v2) / `memory.oom_control oom_kill` (v1, Linux 4.13+).
    pub oom_kills: Option<u64>,
    /// Process ids in `cgroup.procs` (as seen from the host's pid namespace).
    pub procs: Vec<i32>,
}

/// Test hooks that make a plain tempdir behave like cgroupfs (the kernel creates and removes
/// the control files of a cgroup directory on `mkdir`/`rmdir`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FakeFs {
    /// Called after every `mkdir` of a cgroup directory.
    pub on_mkdir: fn(&Path) -> io::Result<()>,
    /// Called before every `rmdir` of a cgroup directory.
    pub on_rmdir: fn(&Path) -> io::Result<()>,
}

/// How this machine mounts cgroups and where this host's sandboxes go.
///
/// Detect it once per host ([`CgroupSystem::shared`]); on v2 detection enables the controllers
/// in the delegated subtree and, if needed, moves the host itself (never a process it does not
/// own) into a `host` leaf.
#[derive(Debug)]
pub struct CgroupSystem {
    kind: Kind,
    fake: Option<FakeFs>,
}

#[derive(Debug)]
enum Kind {
    V1(v1::V1System),
    V2(v2::V2System),
}

impl CgroupSystem {
    /// Detects the real system under [`CGROUP_ROOT`] and prepares the parent of sandbox
    /// cgroups (`parent_override` as with `--cgroup-parent`: a path relative to the cgroup root
    /// or an absolute path below it).
    pub fn detect(parent_override: Option<&Path>) -> Result<Self> {
        let root = Path::new(CGROUP_ROOT);
        let self_cgroup = read_string(Path::new("/proc/self/cgroup"))?;
        match fs_magic(root) {
            Some(m) if m == libc::CGROUP2_SUPER_MAGIC => {
                Self::v2_at(root, &self_cgroup, parent_override)
            }
            Some(_) => {
                let mountinfo = read_string(Path::new("/proc/self/mountinfo"))?;
                let mounts = v1::parse_mountinfo(&mountinfo);
                if mounts.is_empty() {
                    // Hybrid with the controllers on the v2 side (rare, but allowed).
                    let unified = root.join("unified");
                    if fs_magic(&unified) == Some(libc::CGROUP2_SUPER_MAGIC) {
                        return Self::v2_at(&unified, &self_cgroup, parent_override);
                    }
                    return Err(CgroupError::Unavailable(format!(
                        "{CGROUP_ROOT} is not cgroup2 and no v1 memory/pids/cpu hierarchy is \
                         mounted"
                    )));
                }
                Self::v1_at(&mounts, &self_cgroup, parent_override)
            }
            None => Err(CgroupError::Unavailable(format!(
                "{CGROUP_ROOT} is not mounted"
            ))),
        }
    }

    /// [`CgroupSystem::detect`] once per `parent_override` for the whole process.
    pub fn shared(parent_override: Option<&Path>) -> Result<Arc<Self>> {
        type Cache = Mutex<Vec<(Option<PathBuf>, Arc<CgroupSystem>)>>;
        static CACHE: Cache = Mutex::new(Vec::new());
        let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        let key = parent_override.map(Path::to_path_buf);
        if let Some((_, sys)) = cache.iter().find(|(k, _)| *k == key) {
            return Ok(sys.clone());
        }
        let sys = Arc::new(Self::detect(parent_override)?);
        cache.push((key, sys.clone()));
        Ok(sys)
    }

    /// A v2 system mounted at `mount`, with `proc_self_cgroup` the content of
    /// `/proc/self/cgroup` (injectable for tests).
    pub fn v2_at(
        mount: &Path,
        proc_self_cgroup: &str,
        parent_override: Option<&Path>,
    ) -> Result<Self> {
        Self::v2_with(mount, proc_self_cgroup, parent_override, None)
    }

    pub(crate) fn v2_with(
        mount: &Path,
        proc_self_cgroup: &str,
        parent_override: Option<&Path>,
        fake: Option<FakeFs>,
    ) -> Result<Self> {
        let owner = v2::Owner::this_process();
        Self::v2_with_owner(mount, proc_self_cgroup, parent_override, fake, &owner)
    }

    /// [`CgroupSystem::v2_with`] with the process that counts as "this host" injected.
    pub(crate) fn v2_with_owner(
        mount: &Path,
        proc_self_cgroup: &str,
        parent_override: Option<&Path>,
        fake: Option<FakeFs>,
        owner: &v2::Owner,
    ) -> Result<Self> {
        let sys = v2::V2System::prepare(mount, proc_self_cgroup, parent_override, fake, owner)?;
        Ok(Self {
            kind: Kind::V2(sys),
            fake,
        })
    }

    /// A v1 system with `mounts` = (controller, mount point) pairs as found in
    /// `/proc/self/mountinfo` (see [`v1::parse_mountinfo`]) and `proc_self_cgroup` the content of
    /// `/proc/self/cgroup`.
    pub fn v1_at(
        mounts: &[(String, PathBuf)],
        proc_self_cgroup: &str,
        parent_override: Option<&Path>,
    ) -> Result<Self> {
        Self::v1_with(mounts, proc_self_cgroup, parent_override, None)
    }

    pub(crate) fn v1_with(
        mounts: &[(String, PathBuf)],
        proc_self_cgroup: &str,
        parent_override: Option<&Path>,
        fake: Option<FakeFs>,
    ) -> Result<Self> {
        let sys = v1::V1System::prepare(mounts, proc_self_cgroup, parent_override, fake)?;
        Ok(Self {
            kind: Kind::V1(sys),
            fake,
        })
    }

    /// v1 or v2.
    pub fn version(&self) -> CgroupVersion {
        match self.kind {
            Kind::V1(_) => CgroupVersion::V1,
            Kind::V2(_) => CgroupVersion::V2,
        }
    }

    /// Human-readable description of where sandboxes go.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::V1(s) => s.describe(),
            Kind::V2(s) => s.describe(),
        }
    }

    /// Creates the cgroup `sandbox-<id>` and writes `limits`.
    pub fn create(&self, id: &str, limits: &Limits) -> Result<Cgroup> {
        validate_id(id)?;
        let name = format!("{SANDBOX_PREFIX}{id}");
        let mut notes = Notes::default();
        let dirs = match &self.kind {
            Kind::V1(s) => s.create(&name, limits, self.fake, &mut notes)?,
            Kind::V2(s) => s.create(&name, limits, self.fake, &mut notes)?,
        };
        Ok(Cgroup {
            id: id.to_string(),
            version: self.version(),
            dirs,
            notes,
            fake: self.fake,
            removed: false,
        })
    }
}

/// A cgroup's `cgroup.procs` files, opened (`O_WRONLY|O_CLOEXEC`) for one spawn: the cloned
/// child writes `"0"` to them before `execve`, so it runs no code outside the cgroup.
///
/// Opened per spawn and closed after it, not kept for the cgroup's life: every fd the host
/// holds is copied into, and closed again by, every child it clones, so fds kept per sandbox
/// make each spawn cost grow with the number of sandboxes.
#[derive(Debug)]
pub struct CgroupEntry {
    files: Vec<(PathBuf, OwnedFd)>,
}

impl CgroupEntry {
    /// Moves the calling process into the cgroup (all hierarchies).
    ///
    /// # Safety
    ///
    /// Meant for the child between `clone()` and `execve()`: it only calls `write(2)` on fds
    /// opened by the parent and reads `errno`, so it is async-signal-safe and does not allocate.
    /// The caller must ensure `self` (the parent's copy in the child's memory) is still intact,
    /// which holds after a fork-like `clone()` and while the parent waits on a vfork-like one.
    pub unsafe fn enter_from_child(&self) -> Result<(), Errno> {
        for (_, fd) in &self.files {
            // SAFETY: a valid fd and a 1-byte static buffer; write(2) is async-signal-safe.
            let n = unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) };
            if n != 1 {
                return Err(Errno::last());
            }
        }
        Ok(())
    }

    /// Moves process `pid` into the cgroup from the parent (e.g. before releasing a child that
    /// waits on a pipe).
    pub fn add_pid(&self, pid: i32) -> Result<()> {
        let value = pid.to_string();
        for (path, fd) in &self.files {
            // SAFETY: a valid fd and a live buffer of the given length.
            let n = unsafe { libc::write(fd.as_raw_fd(), value.as_ptr().cast(), value.len()) };
            if n < 0 {
                return Err(CgroupError::Write {
                    value,
                    path: path.clone(),
                    source: io::Error::last_os_error(),
                });
            }
        }
        Ok(())
    }
}

/// What was applied and what was not, while creating a cgroup.
#[derive(Debug, Default, Clone)]
pub(crate) struct Notes {
    pub applied: Vec<String>,
    pub missing: Vec<String>,
}

/// One directory of a sandbox's cgroup (v2: the only one; v1: one per hierarchy).
#[derive(Debug, Clone)]
pub(crate) struct Dir {
    pub path: PathBuf,
    pub controllers: Vec<String>,
}

impl Dir {
    fn has(&self, c: &str) -> bool {
        self.controllers.iter().any(|x| x == c)
    }
}

/// One sandbox's cgroup (v2: one directory; v1: one directory per hierarchy).
///
/// Dropping it SIGKILLs everything inside and removes the directories (best effort); call
/// [`Cgroup::kill_all`] and [`Cgroup::remove`] to see errors.
#[derive(Debug)]
pub struct Cgroup {
    id: String,
    version: CgroupVersion,
    dirs: Vec<Dir>,
    notes: Notes,
    fake: Option<FakeFs>,
    removed: bool,
}

impl Cgroup {
    /// Creates `sandbox-<id>` on the shared, detected system ([`CgroupSystem::shared`]).
    pub fn create(id: &str, limits: &Limits, parent_override: Option<&Path>) -> Result<Cgroup> {
        CgroupSystem::shared(parent_override)?.create(id, limits)
    }

    /// The sandbox id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// v1 or v2.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The cgroup directories (one on v2).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.path.clone()).collect()
    }

    /// Opens the `cgroup.procs` of every hierarchy for one spawn (see [`CgroupEntry`]).
    pub fn open_entry(&self) -> Result<CgroupEntry> {
        let files = self
            .dirs
            .iter()
            .map(|d| {
                let path = d.path.join("cgroup.procs");
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map(|f| (path.clone(), OwnedFd::from(f)))
                    .map_err(|source| CgroupError::Open { path, source })
            })
            .collect::<Result<_>>()?;
        Ok(CgroupEntry { files })
    }

    /// Limits that were requested but could not be applied (empty when all were).
    pub fn missing(&self) -> &[String] {
        &self.notes.missing
    }

    /// Human-readable summary, e.g. `v1 memory+pids+cpu at /sys/fs/cgroup/...`.
    pub fn describe(&self) -> String {
        let v = match self.version {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        };
        let mut s = String::from(v);
        let mut ctrls: Vec<&str> = Vec::new();
        for d in &self.dirs {
            for c in &d.controllers {
                if !ctrls.contains(&c.as_str()) {
                    ctrls.push(c);
                }
            }
        }
        s.push(' ');
        s.push_str(&if ctrls.is_empty() {
            "(no controllers)".into()
        } else {
            ctrls.join("+")
        });
        s.push_str(" at ");
        let paths: Vec<String> = self
            .dirs
            .iter()
            .map(|d| d.path.display().to_string())
            .collect();
        s.push_str(&paths.join(", "));
        if !self.notes.applied.is_empty() {
            s.push_str(&format!(" ({})", self.notes.applied.join(", ")));
        }
        if !self.notes.missing.is_empty() {
            s.push_str(&format!("; NOT applied: {}", self.notes.missing.join(", ")));
        }
        s
    }

    /// The report line: applied when every requested limit was written.
    pub fn report_entry(&self) -> ReportEntry {
        if self.notes.missing.is_empty() {
            ReportEntry::applied(Mechanism::Cgroup, self.describe())
        } else {
            ReportEntry::missing(Mechanism::Cgroup, self.describe())
        }
    }

    fn dir_with(&self, controller: &str) -> Option<&Dir> {
        match self.version {
            CgroupVersion::V2 => self.dirs.first(),
            CgroupVersion::V1 => self.dirs.iter().find(|d| d.has(controller)),
        }
    }

    /// Reads the cheap, size-independent counters plus `cgroup.procs`.
    pub fn usage(&self) -> Result<CgroupUsage> {
        let mut u = CgroupUsage::default();
        match self.version {
            CgroupVersion::V2 => {
                let d = &self.dirs[0].path;
                u.memory_bytes = read_opt_u64(&d.join("memory.current"))?;
                u.memory_peak_bytes = read_opt_u64(&d.join("memory.peak"))?;
                u.pids = read_opt_u64(&d.join("pids.current"))?;
                u.cpu_time_us = read_opt_keyed(&d.join("cpu.stat"), "usage_usec")?;
                u.oom_kills = read_opt_keyed(&d.join("memory.events"), "oom_kill")?;
                u.procs = read_pids(&d.join("cgroup.procs"))?;
            }
            CgroupVersion::V1 => {
                if let Some(d) = self.dir_with("memory") {
                    u.memory_bytes = read_opt_u64(&d.path.join("memory.usage_in_bytes"))?;
                    u.memory_peak_bytes = read_opt_u64(&d.path.join("memory.max_usage_in_bytes"))?;
                    u.oom_kills = read_opt_keyed(&d.path.join("memory.oom_control"), "oom_kill")?;
                }
                if let Some(d) = self.dir_with("pids") {
                    u.pids = read_opt_u64(&d.path.join("pids.current"))?;
                }
                if let Some(d) = self.dir_with("cpuacct") {
                    u.cpu_time_us =
                        read_opt_u64(&d.path.join("cpuacct.usage"))?.map(|ns| ns / 1000);
                }
                let d = self.dir_with("pids").unwrap_or(&self.dirs[0]);
                u.procs = read_pids(&d.path.join("cgroup.procs"))?;
            }
        }
        Ok(u)
    }

    /// Every pid in any of this cgroup's hierarchies.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let mut all = Vec::new();
        for d in &self.dirs {
            for p in read_pids(&d.path.join("cgroup.procs"))? {
                if !all.contains(&p) {
                    all.push(p);
                }
            }
        }
        Ok(all)
    }

    /// SIGKILLs every process in the cgroup and waits (up to about 2 s) until it is empty.
    ///
    /// v2: `cgroup.kill` (Linux 5.14+), else freeze + kill loop. v1: freeze (if the freezer
    /// hierarchy is there), SIGKILL every pid, thaw, repeat until `cgroup.procs` is empty, which
    /// also catches children forked while we were reading the list. Never signals the calling
    /// process itself.
    pub fn kill_all(&self) -> Result<()> {
        self.kill_all_within(Duration::from_secs(2))
    }

    /// [`Cgroup::kill_all`], waiting at most `within` for the cgroup to empty.
    fn kill_all_within(&self, within: Duration) -> Result<()> {
        let me = std::process::id() as i32;
        let kill_file = self.dirs[0].path.join("cgroup.kill");
        let v2_kill = self.version == CgroupVersion::V2 && kill_file.exists();
        let freezer = match self.version {
            CgroupVersion::V2 => Some(Freezer::V2(self.dirs[0].path.join("cgroup.freeze"))),
            CgroupVersion::V1 => self
                .dir_with("freezer")
                .map(|d| Freezer::V1(d.path.join("freezer.state"))),
        }
        .filter(|f| f.path().exists());
        let deadline = Instant::now() + within;
        let mut rounds = 0u32;
        loop {
            let pids: Vec<i32> = self.pids()?.into_iter().filter(|&p| p != me).collect();
            if pids.is_empty() {
                return Ok(());
            }
            if rounds > 0 && Instant::now() > deadline {
                return Err(CgroupError::NotEmpty {
                    path: self.dirs[0].path.clone(),
                    pids,
                    rounds,
                });
            }
            if v2_kill && rounds == 0 {
                write_file(&kill_file, "1")?;
            } else {
                // Frozen tasks cannot fork; SIGKILL is queued and acted on at thaw.
                let frozen = rounds < 3 && freezer.as_ref().is_some_and(|f| f.freeze().is_ok());
                for &pid in pids.iter().filter(|_| self.fake.is_none()) {
                    // SAFETY: plain kill(2) of a pid read from a real cgroup.procs (never
                    // ourselves); ESRCH for processes that already exited is fine.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                if frozen && let Some(f) = &freezer {
                    f.thaw()?;
                }
            }
            if self.fake.is_some() {
                // A fake cgroupfs has nobody to wait for.
                return Ok(());
            }
            rounds += 1;
            thread::sleep(Duration::from_millis(u64::from(rounds.min(10))));
        }
    }

    /// Removes the cgroup directories, retrying `rmdir` on `EBUSY` (exiting processes) for up
    /// to about 2 s. Does not kill: call [`Cgroup::kill_all`] first.
    pub fn remove(mut self) -> Result<()> {
        self.remove_dirs()
    }

    fn remove_dirs(&mut self) -> Result<()> {
        self.remove_dirs_within(Duration::from_secs(2))
    }

    fn remove_dirs_within(&mut self, within: Duration) -> Result<()> {
        self.removed = true;
        let mut first_err = None;
        let mut left = Vec::new();
        for d in std::mem::take(&mut self.dirs) {
            if let Some(f) = self.fake {
                let _ = (f.on_rmdir)(&d.path);
            }
            if let Err(e) = rmdir_retry_within(&d.path, within) {
                first_err.get_or_insert(e);
                left.push(d);
            }
        }
        self.dirs = left;
        first_err.map_or(Ok(()), Err)
    }
}

/// How long a drop may block its caller (which may be an async runtime's worker) before
/// it hands the rest of the kill and `rmdir` retries to a thread of its own.
const DROP_BUDGET: Duration = Duration::from_millis(25);

impl Drop for Cgroup {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        // Quick attempt: processes die and directories go within microseconds to
        // milliseconds, so almost every drop ends here.
        let killed = self.kill_all_within(DROP_BUDGET).is_ok();
        if killed && self.remove_dirs_within(DROP_BUDGET).is_ok() {
            return;
        }
        // The slow rest (up to about 4 s) never blocks the caller.
        let mut rest = Cgroup {
            id: std::mem::take(&mut self.id),
            version: self.version,
            dirs: std::mem::take(&mut self.dirs),
            notes: Notes::default(),
            fake: self.fake,
            removed: true,
        };
        self.removed = true;
        if rest.dirs.is_empty() {
            return;
        }
        let spawned = thread::Builder::new()
            .name("cgroup-drop".into())
            .spawn(move || {
                if let Err(e) = rest.kill_all() {
                    tracing::warn!(id = %rest.id, error = %e, "cgroup kill on drop");
                }
                if let Err(e) = rest.remove_dirs() {
                    tracing::warn!(id = %rest.id, error = %e, "cgroup remove on drop");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cgroup drop: no thread for the cleanup");
        }
    }
}

enum Freezer {
    V1(PathBuf),
    V2(PathBuf),
}

impl Freezer {
    fn path(&self) -> &Path {
        match self {
            Freezer::V1(p) | Freezer::V2(p) => p,
        }
    }

    fn freeze(&self) -> Result<()> {
        match self {
            Freezer::V1(p) => {
                write_file(p, "FROZEN")?;
                wait_until(|| read_string(p).map(|s| s.trim() == "FROZEN").unwrap_or(true));
            }
            Freezer::V2(p) => {
                write_file(p, "1")?;
                let events = p.with_file_name("cgroup.events");
                wait_until(|| read_opt_keyed(&events, "frozen").ok().flatten() != Some(0));
            }
        }
        Ok(())
    }

    fn thaw(&self) -> Result<()> {
        match self {
            Freezer::V1(p) => write_file(p, "THAWED"),
            Freezer::V2(p) => write_file(p, "0"),
        }
    }
}

/// Polls `done` for up to 100 ms.
fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_millis(100);
    while !done() && Instant::now() < deadline {
        thread::sleep(Duration::from_micros(200));
    }
}

fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(CgroupError::InvalidId(id.to_string()))
    }
}

/// `statfs(2)` magic of the filesystem at `path`, or `None` when it cannot be read.
pub(crate) fn fs_magic(path: &Path) -> Option<i64> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: zeroed statfs is a valid out-parameter for statfs(2).
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid NUL-terminated path and out-pointer.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    #[allow(clippy::unnecessary_cast)]
    (rc == 0).then_some(st.f_type as i64)
}

/// Writes `value` to a control file in one `write(2)`, as cgroupfs expects.
pub(crate) fn write_file(path: &Path, value: &str) -> Result<()> {
    let err = |source| CgroupError::Write {
        value: value.to_string(),
        path: path.into(),
        source,
    };
    // O_TRUNC is accepted (and ignored) by cgroupfs, like `echo 1 > file`; it keeps a fake
    // cgroupfs showing exactly what was written.
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    let n = f.write(value.as_bytes()).map_err(err)?;
    if n != value.len() {
        return Err(err(io::Error::new(io::ErrorKind::WriteZero, "short write")));
    }
    Ok(())
}

/// Reads a whole control file.
pub(crate) fn read_string(path: &Path) -> Result<String> {
    let mut s = String::new();
    fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .map_err(|source| CgroupError::Read {
            path: path.into(),
            source,
        })?;
    Ok(s)
}

/// Reads a single-number file (`max` reads as `u64::MAX`); `None` when the file is absent.
pub(crate) fn read_opt_u64(path: &Path) -> Result<Option<u64>> {
    let s = match read_string(path) {
        Ok(s) => s,
        Err(CgroupError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let t = s.trim();
    if t == "max" {
        return Ok(Some(u64::MAX));
    }
    t.parse().map(Some).map_err(|_| CgroupError::Parse {
        path: path.into(),
        content: s.clone(),
    })
}

/// Reads `key value` lines (cpu.stat, memory.events, memory.oom_control); `None` when the file
/// or the key is absent.
pub(crate) fn read_opt_keyed(path: &Path, key: &str) -> Result<Option<u64>> {
    let s = match read_string(path) {
        Ok(s) => s,
        Err(CgroupError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    for line in s.lines() {
        let mut it = line.split_whitespace();
        if it.next() == Some(key) {
            let v = it.next().unwrap_or("");
            return v.parse().map(Some).map_err(|_| CgroupError::Parse {
                path: path.into(),
                content: line.into(),
            });
        }
    }
    Ok(None)
}

/// Reads the pids of a `cgroup.procs` file.
pub(crate) fn read_pids(path: &Path) -> Result<Vec<i32>> {
    let s = read_string(path)?;
    s.split_whitespace()
        .map(|t| {
            t.parse().map_err(|_| CgroupError::Parse {
                path: path.into(),
                content: t.into(),
            })
        })
        .collect()
}

/// `mkdir` that tolerates an existing directory; runs the fake hook when testing.
pub(crate) fn mkdir(path: &Path, fake: Option<FakeFs>) -> Result<bool> {
    match fs::create_dir(path) {
        Ok(()) => {
            if let Some(f) = fake {
                (f.on_mkdir)(path).map_err(|source| CgroupError::Mkdir {
                    path: path.into(),
                    source,
                })?;
            }
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(CgroupError::Mkdir {
            path: path.into(),
            source,
        }),
    }
}

/// Creates a fresh sandbox cgroup directory; an empty leftover with the same name (from a
/// crashed host) is removed and recreated, a populated one is an error.
pub(crate) fn mkdir_fresh(path: &Path, fake: Option<FakeFs>) -> Result<()> {
    if mkdir(path, fake)? {
        return Ok(());
    }
    if let Some(f) = fake {
        let _ = (f.on_rmdir)(path);
    }
    fs::remove_dir(path).map_err(|source| CgroupError::Mkdir {
        path: path.into(),
        source: io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("exists and cannot be removed: {source}"),
        ),
    })?;
    if mkdir(path, fake)? {
        Ok(())
    } else {
        Err(CgroupError::Mkdir {
            path: path.into(),
            source: io::Error::from(io::ErrorKind::AlreadyExists),
        })
    }
}

/// `rmdir` with retries on `EBUSY`; a missing directory counts as removed.
/// `rmdir` of a cgroup directory, retried on `EBUSY` (exiting processes) for at most `within`.
pub(crate) fn rmdir_retry_within(path: &Path, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    let mut wait = Duration::from_micros(500);
    loop {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(20));
            }
            Err(source) => {
                return Err(CgroupError::Rmdir {
                    path: path.into(),
                    source,
                });
            }
        }
    }
}

/// The cgroup path of the first line of `/proc/self/cgroup` whose controller list satisfies
/// `matches` (the empty list is the v2 `0::` line).
pub(crate) fn self_cgroup_path(
    proc_self_cgroup: &str,
    matches: impl Fn(&str) -> bool,
) -> Option<&str> {
    proc_self_cgroup.lines().find_map(|line| {
        let mut it = line.splitn(3, ':');
        let _id = it.next()?;
        let ctrls = it.next()?;
        let path = it.next()?;
        matches(ctrls).then_some(path)
    })
}

/// Joins a cgroup path (`/a/b`) below a mount point.
pub(crate) fn under(mount: &Path, cgroup_path: &str) -> PathBuf {
    let rel = cgroup_path.trim_start_matches('/');
    if rel.is_empty() {
        mount.to_path_buf()
    } else {
        mount.join(rel)
    }
}

/// Limit notes shared by v1 and v2.
pub(crate) fn cpu_quota_us(fraction: f64, period_us: u64) -> u64 {
    let q = (fraction * period_us as f64).round();
    if q.is_finite() && q >= 1000.0 {
        q as u64
    } else {
        1000
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! A fake cgroupfs: plain directories whose control files the hooks create and remove.

    use std::fs;
    use std::io;
    use std::path::Path;

    use super::FakeFs;

    /// Control files a fresh fake cgroup gets, with their initial content.
    pub const V2_FILES: &[(&str, &str)] = &[
        ("cgroup.procs", ""),
        ("cgroup.controllers", "cpu memory pids"),
        ("cgroup.subtree_control", ""),
        ("cgroup.kill", ""),
        ("cgroup.freeze", "0"),
        ("memory.max", "max"),
        ("memory.swap.max", "max"),
        ("memory.current", "1234567"),
        ("memory.peak", "2345678"),
        (
            "memory.events",
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
        ),
        ("pids.max", "max"),
        ("pids.current", "3"),
        ("cpu.max", "max 100000"),
        (
            "cpu.stat",
            "usage_usec 777\nuser_usec 500\nsystem_usec 277\n",
        ),
    ];

    /// Same for v1 (all controllers' files in every hierarchy, which is harmless).
    pub const V1_FILES: &[(&str, &str)] = &[
        ("cgroup.procs", ""),
        ("tasks", ""),
        ("memory.limit_in_bytes", "9223372036854771712"),
        ("memory.memsw.limit_in_bytes", "9223372036854771712"),
        ("memory.usage_in_bytes", "4096000"),
        ("memory.max_usage_in_bytes", "5000000"),
        (
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        ),
        ("pids.max", "max"),
        ("pids.current", "2"),
        ("cpu.cfs_period_us", "100000"),
        ("cpu.cfs_quota_us", "-1"),
        ("cpuacct.usage", "5000000"),
        ("freezer.state", "THAWED"),
    ];

    fn populate(dir: &Path, files: &[(&str, &str)]) -> io::Result<()> {
        for (name, content) in files {
            fs::write(dir.join(name), content)?;
        }
        Ok(())
    }

    fn clear(dir: &Path) -> io::Result<()> {
        for e in fs::read_dir(dir)? {
            let e = e?;
            if e.file_type()?.is_file() {
                fs::remove_file(e.path())?;
            }
        }
        Ok(())
    }

    /// Hooks for a fake v2 cgroupfs.
    pub const FAKE_V2: FakeFs = FakeFs {
        on_mkdir: |d| populate(d, V2_FILES),
        on_rmdir: clear,
    };
    /// Hooks for a fake v1 cgroupfs.
    pub const FAKE_V1: FakeFs = FakeFs {
        on_mkdir: |d| populate(d, V1_FILES),
        on_rmdir: clear,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        for ok in ["a", "demo-1", "x_y.z", &"a".repeat(64)] {
            validate_id(ok).unwrap();
        }
        for bad in ["", ".hidden", "a/b", "..", "sp ace", &"a".repeat(65)] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn self_cgroup_parses() {
        let text = "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/\n0::/user.slice\n";
        assert_eq!(
            self_cgroup_path(text, |c| c.is_empty()),
            Some("/user.slice")
        );
        assert_eq!(
            self_cgroup_path(text, |c| c.split(',').any(|x| x == "memory")),
            Some("/process_api/abc")
        );
        assert_eq!(
            self_cgroup_path(text, |c| c.split(',').any(|x| x == "cpuacct")),
            Some("/")
        );
        assert_eq!(under(Path::new("/m"), "/"), PathBuf::from("/m"));
        assert_eq!(under(Path::new("/m"), "/a/b"), PathBuf::from("/m/a/b"));
    }

    #[test]
    fn cpu_quota_is_clamped() {
        assert_eq!(cpu_quota_us(0.5, 100_000), 50_000);
        assert_eq!(cpu_quota_us(2.0, 100_000), 200_000);
        assert_eq!(cpu_quota_us(0.0, 100_000), 1000);
        assert_eq!(cpu_quota_us(f64::NAN, 100_000), 1000);
    }

    #[test]
    fn keyed_and_number_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cpu.stat");
        fs::write(&p, "usage_usec 42\nuser_usec 40\n").unwrap();
        assert_eq!(read_opt_keyed(&p, "usage_usec").unwrap(), Some(42));
        assert_eq!(read_opt_keyed(&p, "nope").unwrap(), None);
        assert_eq!(read_opt_keyed(&d.path().join("absent"), "x").unwrap(), None);
        let n = d.path().join("pids.max");
        fs::write(&n, "max\n").unwrap();
        assert_eq!(read_opt_u64(&n).unwrap(), Some(u64::MAX));
        fs::write(&n, "garbage").unwrap();
        let e = read_opt_u64(&n).unwrap_err();
        assert!(e.to_string().contains("pids.max"), "{e}");
        let w = write_file(&d.path().join("absent"), "1").unwrap_err();
        assert!(w.to_string().starts_with("write 1 to "), "{w}");
    }
}
