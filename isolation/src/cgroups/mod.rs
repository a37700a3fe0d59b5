//! cgroups: one cgroup per sandbox for limits, accounting and killing.
//!
//! * v2 (`statfs("/sys/fs/cgroup") == CGROUP2_SUPER_MAGIC`): sandboxes live under a delegated
//!   subtree, which is the host's own cgroup (`0::` line of `/proc/self/cgroup`) or a given
//!   parent. See [`v2`].
//! * v1 / hybrid: one directory per hierarchy (memory, pids, cpu, cpuacct, freezer), each under
//!   `<host's own cgroup in that hierarchy>/sandbox-host`. See [`v1`].
//!
//! The root of the cgroup filesystem is injectable ([`CgroupSystem::v2_at`],
//! [`CgroupSystem::v1_at`]), and every file operation goes through the `CgroupFs` seam
//! (`fs.rs`), so the file logic is unit-tested against a fake cgroupfs in a tempdir
//! (`testing.rs`).
//!
//! Files: `error.rs` (the error type), `fs.rs` (the seam and typed file helpers), `paths.rs`
//! (`/proc/self/cgroup`, names), `limits.rs` (what v1 and v2 share when writing limits),
//! `v1.rs` and `v2/` (preparing a hierarchy and creating a sandbox's directories),
//! `cgroup.rs` (one sandbox's cgroup), `entry.rs`, `usage.rs` and `kill.rs` (entering,
//! reading and emptying it).

mod cgroup;
mod entry;
pub(crate) mod error;
mod fs;
mod kill;
mod limits;
mod paths;
mod stats;
mod usage;
pub mod v1;
pub mod v2;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use self::cgroup::{Cgroup, CgroupVersion};
pub use self::entry::CgroupEntry;
pub use self::error::{CgroupError, Result, Unavailable, UnusableHierarchy};
use self::fs::{CgroupFs, KernelCgroupFs, fs_magic, read_string};
use self::limits::Notes;
use self::paths::validate_id;
pub use self::stats::{
    CgroupStats, CpuThrottling, Pressure, PressureLine, PressureReading, V1_NO_PRESSURE,
    parse_pressure,
};
pub use self::usage::CgroupUsage;
use crate::level::Limits;

/// Where the cgroup filesystem is mounted on every Linux distribution we know.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Name prefix of each sandbox's cgroup directory.
pub const SANDBOX_PREFIX: &str = "sandbox-";

/// How this machine mounts cgroups and where this host's sandboxes go.
///
/// Detect it once per host ([`CgroupSystem::shared`]); on v2 detection enables the controllers
/// in the delegated subtree and, if needed, moves the host itself (never a process it does not
/// own) into a `host` leaf.
#[derive(Debug)]
pub struct CgroupSystem {
    kind: Kind,
    fs: Arc<dyn CgroupFs>,
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
        let self_cgroup = read_string(&KernelCgroupFs, Path::new("/proc/self/cgroup"))?;
        match fs_magic(root) {
            Some(m) if m == libc::CGROUP2_SUPER_MAGIC => {
                Self::v2_at(root, &self_cgroup, parent_override)
            }
            Some(_) => {
                let mountinfo = read_string(&KernelCgroupFs, Path::new("/proc/self/mountinfo"))?;
                let mounts = v1::parse_mountinfo(&mountinfo);
                if mounts.is_empty() {
                    // Hybrid with the controllers on the v2 side (rare, but allowed).
                    let unified = root.join("unified");
                    if fs_magic(&unified) == Some(libc::CGROUP2_SUPER_MAGIC) {
                        return Self::v2_at(&unified, &self_cgroup, parent_override);
                    }
                    let root = root.to_path_buf();
                    return Err(Unavailable::NoHierarchy { root }.into());
                }
                Self::v1_at(&mounts, &self_cgroup, parent_override)
            }
            None => Err(Unavailable::NotMounted {
                root: root.to_path_buf(),
            }
            .into()),
        }
    }

    /// [`CgroupSystem::detect`] once per `parent_override` for the whole process. A caller
    /// that can keep the value instead calls [`CgroupSystem::detect`] once and
    /// [`CgroupSystem::create`] on it.
    pub fn shared(parent_override: Option<&Path>) -> Result<Arc<Self>> {
        // Process-wide because what detection prepares is state of this process in the kernel:
        // on v2 it moves this very process into `<base>/host` and enables the controllers of
        // the subtree, which must happen once per process and parent, not once per caller. The
        // lock also keeps two threads from preparing the same subtree at once. Only this
        // convenience (and `Cgroup::create`, used by callers that hold no `CgroupSystem`)
        // reads it.
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
        let owner = v2::Owner::this_process();
        let fs = Arc::new(KernelCgroupFs);
        Self::v2_with_owner(mount, proc_self_cgroup, parent_override, fs, &owner)
    }

    /// [`CgroupSystem::v2_at`] on the cgroup filesystem `fs`, with the process that counts as
    /// "this host" injected.
    pub(crate) fn v2_with_owner(
        mount: &Path,
        proc_self_cgroup: &str,
        parent_override: Option<&Path>,
        fs: Arc<dyn CgroupFs>,
        owner: &v2::Owner,
    ) -> Result<Self> {
        let sys = v2::V2System::prepare(mount, proc_self_cgroup, parent_override, &*fs, owner)?;
        Ok(Self {
            kind: Kind::V2(sys),
            fs,
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
        let fs = Arc::new(KernelCgroupFs);
        Self::v1_with(mounts, proc_self_cgroup, parent_override, fs)
    }

    /// [`CgroupSystem::v1_at`] on the cgroup filesystem `fs`.
    pub(crate) fn v1_with(
        mounts: &[(String, PathBuf)],
        proc_self_cgroup: &str,
        parent_override: Option<&Path>,
        fs: Arc<dyn CgroupFs>,
    ) -> Result<Self> {
        let sys = v1::V1System::prepare(mounts, proc_self_cgroup, parent_override, &*fs)?;
        Ok(Self {
            kind: Kind::V1(sys),
            fs,
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
        let fs = &*self.fs;
        let dirs = match &self.kind {
            Kind::V1(s) => s.create(&name, limits, fs, &mut notes)?,
            Kind::V2(s) => s.create(&name, limits, fs, &mut notes)?,
        };
        let fs = Arc::clone(&self.fs);
        Ok(Cgroup::new(id, self.version(), dirs, notes, fs))
    }
}

impl CgroupSystem {
    /// Writes `limits` into `cgroup`, made earlier on this system without them (a prepared
    /// runner's, made before its tenant was known): what [`CgroupSystem::create`] would
    /// have written, and its report line says so. Limits left `None` stay unlimited, as
    /// they were made.
    pub fn apply_limits(&self, cgroup: &mut Cgroup, limits: &Limits) -> Result<()> {
        let fs = &*self.fs;
        let mut notes = std::mem::take(&mut cgroup.notes);
        let done = match &self.kind {
            Kind::V1(s) => s.apply(fs, &cgroup.dirs, limits, &mut notes),
            Kind::V2(s) => match cgroup.dirs.first() {
                Some(d) => s.apply(fs, &d.path, limits, &mut notes),
                None => Ok(()),
            },
        };
        cgroup.notes = notes;
        done
    }
}

impl Cgroup {
    /// [`CgroupSystem::apply_limits`] on the shared system of `parent_override`.
    pub fn apply_limits(&mut self, limits: &Limits, parent_override: Option<&Path>) -> Result<()> {
        CgroupSystem::shared(parent_override)?.apply_limits(self, limits)
    }

    /// Creates `sandbox-<id>` on the shared, detected system ([`CgroupSystem::shared`]).
    pub fn create(id: &str, limits: &Limits, parent_override: Option<&Path>) -> Result<Cgroup> {
        CgroupSystem::shared(parent_override)?.create(id, limits)
    }
}
