//! Landlock: restrict the runner's filesystem view (and TCP, abstract unix sockets, signals)
//! before it loads app code. Best effort with ABI negotiation; `Strict` requires "fully
//! enforced" for the plan's target ABI.
//!
//! Decisions:
//! * read + execute: the runner binary, the app dir, system libraries (`/usr`, `/lib*`,
//!   `/bin`, `/sbin`), the dynamic loader's config (`/etc/ld.so.*`), `/etc/localtime`,
//!   `/sys/devices/system/cpu` (CPU count), `/dev/{urandom,random,zero}`;
//! * `/proc`: read-only, and only when the sandbox has its own pid namespace and fresh `/proc`
//!   (then it only shows the sandbox's processes); otherwise denied;
//! * read + write (no execute): the private dir, the private `/tmp` if there is one,
//!   `/dev/null`;
//! * everything else: denied, including TCP bind/connect (ABI 4+) unless the sandbox has
//!   network, and (ABI 6+) connecting to abstract unix sockets or signalling processes outside
//!   the sandbox, which also keeps sandboxes that share the empty netns apart.

pub(crate) mod error;
pub(crate) mod status;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ::landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};
use serde::{Deserialize, Serialize};

pub use self::error::LandlockError;
pub use self::status::{Enforcement, LandlockStatus};
use crate::level::Level;
use crate::report::{Mechanism, ReportEntry};

/// Default target ABI: 6 = Linux 6.12 (fs rights up to ioctl on devices, TCP, scopes).
pub const DEFAULT_TARGET_ABI: u8 = 6;

/// What the runner may touch. Build with [`LandlockPlan::for_sandbox`] and adjust.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockPlan {
    /// Readable and executable paths (directories recursively). Missing paths are skipped.
    pub read_exec: Vec<PathBuf>,
    /// Readable, writable (create, remove, rename inside) paths, without execute.
    pub read_write: Vec<PathBuf>,
    /// Readable, writable and executable paths (a build's target dir, where cargo runs the
    /// build scripts it compiled). App sandboxes have none.
    #[serde(default)]
    pub read_write_exec: Vec<PathBuf>,
    /// The newest Landlock ABI whose rights are requested; an older kernel gives "partially
    /// enforced".
    #[serde(default = "default_abi")]
    pub target_abi: u8,
    /// Deny TCP bind and connect (ABI 4+).
    #[serde(default)]
    pub deny_tcp: bool,
    /// Scope abstract unix sockets and signals to the sandbox (ABI 6+).
    #[serde(default)]
    pub scoped: bool,
}

fn default_abi() -> u8 {
    DEFAULT_TARGET_ABI
}

/// Inputs to [`LandlockPlan::for_sandbox`].
#[derive(Debug, Clone, Default)]
pub struct SandboxPaths {
    /// The runner binary (re-executed for worker processes).
    pub runner_exe: PathBuf,
    /// The app directory (read-only).
    pub app_dir: Option<PathBuf>,
    /// The sandbox's private directory (read-write).
    pub private_dir: PathBuf,
    /// The sandbox has its own pid namespace and fresh `/proc` (then `/proc` is readable).
    pub own_proc: bool,
    /// `/tmp` is the sandbox's private tmpfs (then it is writable).
    pub private_tmp: bool,
    /// The sandbox has network access (then TCP is not denied).
    pub network: bool,
    /// The sandbox lives in a root of its own ([`crate::root`]) holding these read-only
    /// paths: then the rules name the fixed in-sandbox paths only, not the host's system
    /// directories.
    pub own_root: Option<Vec<PathBuf>>,
}

/// Device nodes readable in a root of its own (`/dev/null` is read-write).
const OWN_ROOT_DEVICES: &[&str] = &["/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"];

/// Newest ABI this crate can ask for.
const HIGHEST_KNOWN_ABI: u8 = 7;

/// The ABI a plan asks for: the best the kernel offers, and never less than
/// [`DEFAULT_TARGET_ABI`] (an older kernel then reports "partially enforced", which `strict`
/// refuses).
pub fn best_target_abi() -> u8 {
    (kernel_abi().clamp(0, HIGHEST_KNOWN_ABI as i32) as u8).max(DEFAULT_TARGET_ABI)
}

/// System paths that are readable and executable in every sandbox without a root of its own.
pub const SYSTEM_READ_EXEC: &[&str] = &[
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/libx32",
    "/bin",
    "/sbin",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/ld.so.preload",
    "/etc/localtime",
    "/sys/devices/system/cpu",
    "/dev/urandom",
    "/dev/random",
    "/dev/zero",
];

impl LandlockPlan {
    /// The default plan for one sandbox (see the module docs).
    pub fn for_sandbox(p: &SandboxPaths) -> Self {
        let mut read_exec: Vec<PathBuf> = vec![p.runner_exe.clone()];
        read_exec.extend(p.app_dir.iter().cloned());
        match &p.own_root {
            Some(binds) => {
                for b in binds {
                    if !read_exec.contains(b) {
                        read_exec.push(b.clone());
                    }
                }
                read_exec.extend(OWN_ROOT_DEVICES.iter().map(PathBuf::from));
            }
            None => read_exec.extend(SYSTEM_READ_EXEC.iter().map(PathBuf::from)),
        }
        if p.own_proc {
            read_exec.push("/proc".into());
        }
        let mut read_write = vec![p.private_dir.clone(), "/dev/null".into()];
        if p.private_tmp {
            read_write.push("/tmp".into());
        }
        Self {
            read_exec,
            read_write,
            read_write_exec: Vec::new(),
            target_abi: best_target_abi(),
            deny_tcp: !p.network,
            scoped: true,
        }
    }
}

impl LandlockStatus {
    /// Report line: applied only when fully enforced.
    pub fn report_entry(&self) -> ReportEntry {
        if self.enforcement == Enforcement::Full {
            ReportEntry::applied(Mechanism::Landlock, self.to_string())
        } else {
            ReportEntry::missing(Mechanism::Landlock, self.to_string())
        }
    }
}

/// The running kernel's Landlock ABI version, 0 when unsupported or disabled.
pub fn kernel_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: landlock_create_ruleset(NULL, 0, VERSION) only returns a number.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v < 0 { 0 } else { v as i32 }
}

fn abi(v: u8) -> Result<ABI, LandlockError> {
    Ok(match v {
        1 => ABI::V1,
        2 => ABI::V2,
        3 => ABI::V3,
        4 => ABI::V4,
        5 => ABI::V5,
        6 => ABI::V6,
        7 => ABI::V7,
        8 => ABI::V8,
        9 => ABI::V9,
        10 => ABI::V10,
        _ => return Err(LandlockError::UnknownAbi(v)),
    })
}

fn open_rule(
    path: &Path,
    dir_access: BitFlags<AccessFs>,
    file_access: BitFlags<AccessFs>,
    skipped: &mut Vec<PathBuf>,
) -> Result<Option<PathBeneath<PathFd>>, LandlockError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            skipped.push(path.to_path_buf());
            return Ok(None);
        }
        Err(_) => {
            skipped.push(path.to_path_buf());
            return Ok(None);
        }
    };
    let access = if meta.is_dir() {
        dir_access
    } else {
        file_access
    };
    match PathFd::new(path) {
        Ok(fd) => Ok(Some(PathBeneath::new(fd, access))),
        Err(_) => {
            skipped.push(path.to_path_buf());
            Ok(None)
        }
    }
}

/// Restricts the calling thread (and its future children) to `plan`; also sets no_new_privs.
/// Irreversible. Call it while the runner is still single-threaded: Landlock restricts the
/// calling thread only (kernel ABI < 8).
pub fn apply(plan: &LandlockPlan) -> Result<LandlockStatus, LandlockError> {
    let target = abi(plan.target_abi)?;
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(target))?;
    if plan.deny_tcp && plan.target_abi >= 4 {
        ruleset = ruleset.handle_access(AccessNet::from_all(target))?;
    }
    if plan.scoped && plan.target_abi >= 6 {
        ruleset = ruleset.scope(Scope::from_all(target))?;
    }
    let mut created = ruleset.create()?;
    let mut skipped = Vec::new();
    let read = AccessFs::from_read(target);
    let file = AccessFs::from_file(target);
    let write_no_exec = AccessFs::from_all(target) & !AccessFs::Execute;
    for p in &plan.read_exec {
        if let Some(rule) = open_rule(p, read, read & file, &mut skipped)? {
            created = created.add_rule(rule)?;
        }
    }
    for p in &plan.read_write {
        if let Some(rule) = open_rule(p, write_no_exec, write_no_exec & file, &mut skipped)? {
            created = created.add_rule(rule)?;
        }
    }
    let all = AccessFs::from_all(target);
    for p in &plan.read_write_exec {
        if let Some(rule) = open_rule(p, all, all & file, &mut skipped)? {
            created = created.add_rule(rule)?;
        }
    }
    let status = created.restrict_self()?;
    skipped.retain(|p| !SYSTEM_READ_EXEC.iter().any(|s| p == Path::new(s)));
    let enforcement = match status.ruleset {
        RulesetStatus::FullyEnforced => Enforcement::Full,
        RulesetStatus::PartiallyEnforced => Enforcement::Partial,
        _ => Enforcement::None,
    };
    Ok(LandlockStatus {
        enforcement,
        kernel_abi: kernel_abi(),
        target_abi: plan.target_abi,
        skipped,
    })
}

/// [`apply`], then under `Strict` anything but full enforcement is an error.
pub fn apply_for_level(plan: &LandlockPlan, level: Level) -> Result<LandlockStatus, LandlockError> {
    let st = apply(plan)?;
    if level == Level::Strict && st.enforcement != Enforcement::Full {
        return Err(LandlockError::NotFullyEnforced(st));
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_for_sandbox() {
        let p = LandlockPlan::for_sandbox(&SandboxPaths {
            runner_exe: "/opt/host/bin/host".into(),
            app_dir: Some("/srv/app".into()),
            private_dir: "/var/lib/sb/1".into(),
            own_proc: true,
            private_tmp: true,
            network: false,
            own_root: None,
        });
        assert_eq!(p.read_exec[0], PathBuf::from("/opt/host/bin/host"));
        assert!(
            p.read_exec.contains(&"/usr".into()),
            "the host's system dirs"
        );
        // In a root of its own only the fixed in-sandbox paths are named.
        let own = LandlockPlan::for_sandbox(&SandboxPaths {
            runner_exe: "/runner".into(),
            app_dir: Some("/app".into()),
            private_dir: "/work".into(),
            own_proc: true,
            private_tmp: true,
            network: false,
            own_root: Some(vec!["/runner".into(), "/app".into(), "/usr/lib".into()]),
        });
        assert!(!own.read_exec.contains(&"/usr".into()), "{own:?}");
        assert!(own.read_exec.contains(&"/usr/lib".into()));
        assert_eq!(
            own.read_write,
            [PathBuf::from("/work"), "/dev/null".into(), "/tmp".into()]
        );
        assert!(own.target_abi >= DEFAULT_TARGET_ABI);
        assert!(p.read_exec.contains(&"/proc".into()));
        assert!(p.read_write.contains(&"/tmp".into()));
        assert!(p.deny_tcp && p.scoped);
        let j = serde_json::to_string(&p).unwrap();
        let back: LandlockPlan = serde_json::from_str(&j).unwrap();
        assert_eq!(back, p);
        let no_proc = LandlockPlan::for_sandbox(&SandboxPaths::default());
        assert!(!no_proc.read_exec.contains(&"/proc".into()));
    }

    #[test]
    fn status_says_how_much_is_enforced() {
        let st = LandlockStatus {
            enforcement: Enforcement::Partial,
            kernel_abi: 4,
            target_abi: 6,
            skipped: vec!["/srv/app".into()],
        };
        let detail = "partially enforced (kernel ABI 4, target ABI 6); skipped missing /srv/app";
        assert_eq!(st.report_entry().detail, detail);
        assert!(!st.report_entry().applied);
        let e = LandlockError::NotFullyEnforced(st);
        assert_eq!(e.to_string(), format!("landlock: {detail}"));
    }

    #[test]
    fn unknown_abi_is_an_error() {
        let mut p = LandlockPlan::for_sandbox(&SandboxPaths::default());
        p.target_abi = 99;
        assert!(matches!(apply(&p), Err(LandlockError::UnknownAbi(99))));
    }
}
