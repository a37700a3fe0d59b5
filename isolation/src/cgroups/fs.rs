//! The seam between the cgroup logic and the cgroup filesystem.
//!
//! [`CgroupFs`] is the handful of file operations the cgroup code makes; [`KernelCgroupFs`] is
//! the real cgroupfs, and the unit tests run the same logic against a fake one in a tempdir
//! (`testing.rs`). On top of it, helpers that name the path and the cause of every failure
//! ([`CgroupError`]).

use std::ffi::CString;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::error::{CgroupError, Result};

/// The file operations the cgroup code makes on a cgroup filesystem.
///
/// A cgroup filesystem is not an ordinary one: `mkdir` creates a directory full of control
/// files, `rmdir` removes a directory that still holds them, writing a pid to `cgroup.procs`
/// moves that process out of its old cgroup, and a killed process leaves every `cgroup.procs`.
/// A test implementation has to behave the same way.
pub(crate) trait CgroupFs: fmt::Debug + Send + Sync {
    /// Reads a whole control file.
    fn read(&self, path: &Path) -> io::Result<String>;

    /// Writes `value` to a control file in one `write(2)`, as cgroupfs expects. Writing a pid
    /// to a `cgroup.procs` moves that process (one per write).
    fn write(&self, path: &Path, value: &str) -> io::Result<()>;

    /// Opens a control file (`cgroup.procs`) for writing, close-on-exec, to be written later
    /// through the raw fd (by a cloned child).
    fn open_write(&self, path: &Path) -> io::Result<OwnedFd>;

    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> bool;

    /// Creates a cgroup directory; `AlreadyExists` when there is one.
    fn create_dir(&self, path: &Path) -> io::Result<()>;

    /// Removes a cgroup directory that holds no process and no child cgroup.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;

    /// Sends `SIGKILL` to process `pid` (read from a `cgroup.procs`); one that already exited
    /// is no error.
    fn kill(&self, pid: i32);
}

/// The real cgroup filesystem, through the kernel.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KernelCgroupFs;

impl CgroupFs for KernelCgroupFs {
    fn read(&self, path: &Path) -> io::Result<String> {
        let mut s = String::new();
        fs::File::open(path)?.read_to_string(&mut s)?;
        Ok(s)
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        // O_TRUNC is accepted (and ignored) by cgroupfs, like `echo 1 > file`.
        let mut f = OpenOptions::new().write(true).truncate(true).open(path)?;
        let n = f.write(value.as_bytes())?;
        if n != value.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short write"));
        }
        Ok(())
    }

    fn open_write(&self, path: &Path) -> io::Result<OwnedFd> {
        // std opens with O_CLOEXEC.
        OpenOptions::new().write(true).open(path).map(OwnedFd::from)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }

    fn kill(&self, pid: i32) {
        // SAFETY: plain kill(2) of a pid read from a real cgroup.procs (the caller never passes
        // its own pid); ESRCH for a process that already exited is fine.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Writes `value` to a control file ([`CgroupFs::write`]).
pub(crate) fn write_file(fs: &dyn CgroupFs, path: &Path, value: &str) -> Result<()> {
    fs.write(path, value).map_err(|source| CgroupError::Write {
        value: value.to_string(),
        path: path.into(),
        source,
    })
}

/// Reads a whole control file.
pub(crate) fn read_string(fs: &dyn CgroupFs, path: &Path) -> Result<String> {
    fs.read(path).map_err(|source| CgroupError::Read {
        path: path.into(),
        source,
    })
}

/// Reads a control file; `None` when it is absent (the controller is not there).
fn read_if_present(fs: &dyn CgroupFs, path: &Path) -> Result<Option<String>> {
    match read_string(fs, path) {
        Ok(s) => Ok(Some(s)),
        Err(CgroupError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Reads a single-number file (`max` reads as `u64::MAX`); `None` when the file is absent.
pub(crate) fn read_opt_u64(fs: &dyn CgroupFs, path: &Path) -> Result<Option<u64>> {
    let Some(s) = read_if_present(fs, path)? else {
        return Ok(None);
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
pub(crate) fn read_opt_keyed(fs: &dyn CgroupFs, path: &Path, key: &str) -> Result<Option<u64>> {
    let Some(s) = read_if_present(fs, path)? else {
        return Ok(None);
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
pub(crate) fn read_pids(fs: &dyn CgroupFs, path: &Path) -> Result<Vec<i32>> {
    let s = read_string(fs, path)?;
    s.split_whitespace()
        .map(|t| {
            t.parse().map_err(|_| CgroupError::Parse {
                path: path.into(),
                content: t.into(),
            })
        })
        .collect()
}

/// `mkdir` that tolerates an existing directory; true when it created one.
pub(crate) fn mkdir(fs: &dyn CgroupFs, path: &Path) -> Result<bool> {
    match fs.create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(CgroupError::Mkdir {
            path: path.into(),
            source,
        }),
    }
}

/// Creates a fresh sandbox cgroup directory; an empty leftover with the same name (from a
/// crashed host) is removed and recreated, a populated one is an error.
pub(crate) fn mkdir_fresh(fs: &dyn CgroupFs, path: &Path) -> Result<()> {
    if mkdir(fs, path)? {
        return Ok(());
    }
    fs.remove_dir(path)
        .map_err(|source| CgroupError::Leftover {
            path: path.into(),
            source,
        })?;
    if mkdir(fs, path)? {
        Ok(())
    } else {
        Err(CgroupError::Mkdir {
            path: path.into(),
            source: io::Error::from(io::ErrorKind::AlreadyExists),
        })
    }
}

/// `rmdir` of a cgroup directory, retried on `EBUSY` (exiting processes) for at most `within`;
/// a missing directory counts as removed.
pub(crate) fn rmdir_retry_within(fs: &dyn CgroupFs, path: &Path, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    let mut wait = Duration::from_micros(500);
    loop {
        match fs.remove_dir(path) {
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
