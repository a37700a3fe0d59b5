//! What the child reports when a step between `clone()` and `execve()` fails: a step and an
//! errno, in 8 bytes, without allocating.

use std::fmt;

use nix::errno::Errno;

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
    /// [`super::ChildSetup::describe`]); 0 otherwise.
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
