//! Planning a root: each step as an [`Op`] with a description for error messages, from the
//! host paths it reads now (metadata, symlinks, mount flags).

use std::collections::HashSet;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::error::RootError;
use super::ops::Op;

/// `p` as a C string for a system call.
pub(crate) fn cstring(p: &Path) -> Result<CString, RootError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| RootError::NulInPath { path: p.into() })
}

/// `statvfs` flags of the mount holding `path`, as `MS_*` flags that must be kept on a
/// remount (in a user namespace, dropping a locked flag is `EPERM`).
pub(crate) fn locked_mount_flags(path: &Path) -> Result<libc::c_ulong, RootError> {
    let cp = cstring(path)?;
    // SAFETY: zeroed statvfs is a valid out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid NUL-terminated path and out-pointer.
    if unsafe { libc::statvfs(cp.as_ptr(), &mut st) } != 0 {
        return Err(RootError::Statvfs {
            path: path.into(),
            source: io::Error::last_os_error(),
        });
    }
    let map = [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    Ok(map
        .iter()
        .filter(|(st_f, _)| st.f_flag & st_f != 0)
        .fold(0, |acc, (_, ms)| acc | ms))
}

/// Collects the steps, with a description of each for error messages.
pub(super) struct Plan {
    root: PathBuf,
    ops: Vec<(Op, String)>,
    dirs: HashSet<PathBuf>,
}

impl Plan {
    /// An empty plan for a root mounted at `root` (a host path).
    pub(super) fn new(root: PathBuf) -> Self {
        Self {
            root,
            ops: Vec::new(),
            dirs: HashSet::from([PathBuf::from("/")]),
        }
    }

    /// The steps, in order, each with its description.
    pub(super) fn into_ops(self) -> Vec<(Op, String)> {
        self.ops
    }

    /// `p` (an in-sandbox absolute path) under the root mountpoint.
    pub(super) fn at(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    /// Appends step `op`, described as `what`.
    pub(super) fn push(&mut self, op: Op, what: String) {
        self.ops.push((op, what));
    }

    /// `mkdir -p` of an in-sandbox directory (each directory once).
    pub(super) fn mkdir(&mut self, p: &str) -> Result<(), RootError> {
        let mut acc = PathBuf::from("/");
        for part in Path::new(p).components().skip(1) {
            acc.push(part);
            if self.dirs.insert(acc.clone()) {
                let host = self.at(&acc.to_string_lossy());
                self.push(
                    Op::Mkdir(cstring(&host)?),
                    format!("mkdir {}", acc.display()),
                );
            }
        }
        Ok(())
    }

    /// `mkdir -p` of the parent of in-sandbox path `p`.
    pub(super) fn parent_dir(&mut self, p: &str) -> Result<(), RootError> {
        if let Some(parent) = Path::new(p).parent().filter(|d| *d != Path::new("/")) {
            self.mkdir(&parent.to_string_lossy())?;
        }
        Ok(())
    }

    /// A `mount(2)` of `src` (or none) on host path `target`.
    pub(super) fn mount(
        &mut self,
        src: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
        what: String,
    ) -> Result<(), RootError> {
        let cs = |s: &str| CString::new(s).expect("static mount strings have no NUL");
        let op = Op::Mount {
            src: src.map(cstring).transpose()?,
            target: cstring(target)?,
            fstype: fstype.map(cs),
            flags,
            data: data.map(cs),
        };
        self.push(op, what);
        Ok(())
    }

    /// Binds host path `src` read-only at in-sandbox path `dst` (a directory or a file).
    pub(super) fn bind_ro(&mut self, src: &Path, dst: &str, noexec: bool) -> Result<(), RootError> {
        self.bind(src, dst, noexec, false)
    }

    /// Binds host path `src` at in-sandbox path `dst`, read-only unless `writable`.
    pub(super) fn bind(
        &mut self,
        src: &Path,
        dst: &str,
        noexec: bool,
        writable: bool,
    ) -> Result<(), RootError> {
        let meta = fs::metadata(src).map_err(|source| RootError::Stat {
            path: src.into(),
            source,
        })?;
        if meta.is_dir() {
            self.mkdir(dst)?;
        } else {
            self.parent_dir(dst)?;
            let host = self.at(dst);
            self.push(Op::Touch(cstring(&host)?), format!("create {dst}"));
        }
        let target = self.at(dst);
        self.mount(
            Some(src),
            &target,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
            format!("bind {} onto {dst}", src.display()),
        )?;
        let mut flags = libc::MS_BIND
            | libc::MS_REMOUNT
            | if writable { 0 } else { libc::MS_RDONLY }
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | locked_mount_flags(src)?;
        if noexec {
            flags |= libc::MS_NOEXEC;
        }
        self.mount(
            None,
            &target,
            None,
            flags,
            None,
            if writable {
                format!("remount {dst} nosuid,nodev")
            } else {
                format!("remount {dst} read-only")
            },
        )
    }

    /// Recreates host symlink `host` at in-sandbox path `dst`.
    pub(super) fn symlink_like(&mut self, host: &Path, dst: &str) -> Result<(), RootError> {
        let target = fs::read_link(host).map_err(|source| RootError::Readlink {
            path: host.into(),
            source,
        })?;
        self.parent_dir(dst)?;
        let path = self.at(dst);
        self.push(
            Op::Symlink {
                target: cstring(&target)?,
                path: cstring(&path)?,
            },
            format!("symlink {dst} -> {}", target.display()),
        );
        Ok(())
    }
}
