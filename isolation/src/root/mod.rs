//! A root of its own: the sandbox's filesystem is a fresh tmpfs that holds only read-only binds
//! of what the runner and the app need, entered with `pivot_root`; the host's root is detached,
//! so no host path (and so no host Unix socket) can be named from inside. The model is
//! bubblewrap (a new root on an invisible tmpfs, only what is bound is visible) and the
//! firecracker jailer (fixed in-jail paths, `pivot_root`, then a switch of ids).
//!
//! Layout inside every sandbox (fixed paths, the same for every sandbox):
//!
//! | path | what |
//! |---|---|
//! | `/runner` | the runner binary, read-only bind |
//! | `/app` | the app's library directory, read-only bind |
//! | `/work`, `/tmp` | writable: one tmpfs capped in bytes and inodes ("disk"), charged to the sandbox's memory cgroup |
//! | `/usr/lib`, `/usr/lib64`, `/lib`, ... | the shared-library directories, read-only binds (or the host's symlinks) |
//! | `/etc/ld.so.cache` | the dynamic loader's cache, read-only bind, if the host has one |
//! | `/proc` | a fresh proc of the sandbox's own pid namespace |
//! | `/dev/{null,zero,full,random,urandom}` | binds of the host's nodes; `/dev/fd`, `stdin`, ... symlinks |
//!
//! The root tmpfs itself is remounted read-only at the end. Nothing else exists: not `/etc`
//! (beyond the loader cache), `/run`, `/var`, `/home`, `/root`, `/sys`, the host's `/tmp`, other
//! sandboxes' directories or the library store.
//!
//! The parent prepares every step as raw values ([`NewRoot::prepare`]); the child runs them
//! between `clone()` and `execve()` ([`NewRoot::build_in_child`]), async-signal-safe, without
//! allocating. A failed step reports its index, which [`NewRoot::describe`] turns back into
//! "bind /usr/lib onto …".
//!
//! Files: this one (the fixed layout), `plan.rs` (the step builder: directories, binds,
//! symlinks, mount flags), `ops.rs` (the steps and the system calls of each), `error.rs`.

pub(crate) mod error;
mod ops;
mod plan;
#[cfg(test)]
mod tests;

use std::fs;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

pub use self::error::RootError;
use self::ops::Op;
use self::plan::Plan;
pub(crate) use self::plan::{cstring, locked_mount_flags};
use crate::error::IsolationError;

/// The runner binary inside the sandbox.
pub const RUNNER: &str = "/runner";
/// The app's library directory inside the sandbox.
pub const APP_DIR: &str = "/app";
/// The sandbox's writable working directory inside the sandbox.
pub const WORK_DIR: &str = "/work";
/// The sandbox's private `/tmp` (on the same capped tmpfs as [`WORK_DIR`]).
pub const TMP_DIR: &str = "/tmp";

/// Shared-library directories bound read-only when the host has them (a symlink is recreated
/// as the same symlink, as merged-`/usr` systems have `/lib -> usr/lib`).
const LIB_DIRS: &[&str] = &[
    "/usr/lib",
    "/usr/lib64",
    "/usr/lib32",
    "/usr/libx32",
    "/lib",
    "/lib64",
    "/lib32",
    "/libx32",
];

/// Device nodes bound from the host's `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// Files glibc's loader reads, bound read-only when present.
const ETC_FILES: &[&str] = &["/etc/ld.so.cache"];

/// Default size of the sandbox's disk (`/work` and `/tmp` together): 64 MiB.
pub const DEFAULT_DISK_BYTES: u64 = 64 << 20;

/// Bytes of disk per inode the cap allows by default (so 64 MiB gives 16 384 inodes).
const BYTES_PER_INODE: u64 = 4096;

/// One more bind into the root, beyond the fixed layout (the build sandbox's toolchain, crate
/// and target dirs). A `src` that is a symlink is recreated as the same symlink at `dst`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// The host path.
    pub src: PathBuf,
    /// The absolute in-sandbox path.
    pub dst: PathBuf,
    /// Read-write (`nosuid,nodev`) instead of read-only.
    pub writable: bool,
}

/// What goes into one sandbox's root.
#[derive(Debug, Clone, Default)]
pub struct RootOptions {
    /// An empty host directory the root tmpfs is mounted on (in the child's private mount
    /// namespace only; the host never sees the mount).
    pub mountpoint: PathBuf,
    /// The runner binary, bound at [`RUNNER`].
    pub runner_exe: PathBuf,
    /// The app's library directory, bound at [`APP_DIR`] (none: no `/app`).
    pub app_dir: Option<PathBuf>,
    /// Bytes the sandbox may write to `/work` and `/tmp` together.
    pub disk_bytes: u64,
    /// Owner of `/work` (the sandbox's ids when the host switches to them).
    pub owner: Option<(u32, u32)>,
    /// Mount a fresh `/proc` (the sandbox has its own pid namespace).
    pub proc: bool,
    /// More binds, made after the library directories, in order (app sandboxes: none).
    pub extra_binds: Vec<Bind>,
}

/// The inode cap for a disk of `bytes`.
pub fn disk_inodes(bytes: u64) -> u64 {
    (bytes / BYTES_PER_INODE).max(256)
}

/// A sandbox root, prepared in the parent for the child to build.
#[derive(Debug)]
pub struct NewRoot {
    ops: Vec<(Op, String)>,
    summary: String,
    binds: Vec<String>,
    disk_bytes: u64,
}

impl NewRoot {
    /// Prepares the steps that build the root described by `o` (reads the host's library
    /// directories and mount flags now).
    pub fn prepare(o: &RootOptions) -> Result<Self, IsolationError> {
        let root = o.mountpoint.clone();
        let mut p = Plan::new(root.clone());
        let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
        p.mount(
            Some(Path::new("tmpfs")),
            &root,
            Some("tmpfs"),
            nosuid_nodev,
            Some("mode=0755,size=1m,nr_inodes=4096"),
            "mount the root tmpfs".into(),
        )?;

        // The disk: one capped tmpfs, mounted on a scratch directory, its two subdirectories
        // bound at /work and /tmp, then the scratch mount detached (the binds keep it alive).
        let inodes = disk_inodes(o.disk_bytes);
        let scratch = "/.disk";
        p.mkdir(scratch)?;
        let data = format!("mode=0755,size={},nr_inodes={inodes}", o.disk_bytes);
        let scratch_host = p.at(scratch);
        p.mount(
            Some(Path::new("tmpfs")),
            &scratch_host,
            Some("tmpfs"),
            nosuid_nodev,
            Some(&data),
            format!("mount the disk tmpfs ({data})"),
        )?;
        for (sub, dst, mode) in [("work", WORK_DIR, 0o700), ("tmp", TMP_DIR, 0o1777)] {
            let inner = scratch_host.join(sub);
            p.push(
                Op::Mkdir(cstring(&inner)?),
                format!("mkdir the disk's {sub}"),
            );
            p.push(
                Op::Chmod(cstring(&inner)?, mode),
                format!("chmod the disk's {sub}"),
            );
            if let Some((uid, gid)) = o.owner.filter(|_| sub == "work") {
                p.push(
                    Op::Chown {
                        path: cstring(&inner)?,
                        uid,
                        gid,
                    },
                    format!("chown {dst} to {uid}:{gid}"),
                );
            }
            p.mkdir(dst)?;
            let target = p.at(dst);
            p.mount(
                Some(&inner),
                &target,
                None,
                libc::MS_BIND,
                None,
                format!("bind the disk's {sub} onto {dst}"),
            )?;
        }
        p.push(
            Op::Detach(cstring(&scratch_host)?),
            "detach the disk's scratch mount".into(),
        );
        p.push(
            Op::Rmdir(cstring(&scratch_host)?),
            "remove the disk's scratch dir".into(),
        );

        let mut binds = vec![format!("{RUNNER}")];
        p.bind_ro(&o.runner_exe, RUNNER, false)?;
        if let Some(app_dir) = &o.app_dir {
            p.bind_ro(app_dir, APP_DIR, false)?;
            binds.push(APP_DIR.to_string());
        }
        for dir in LIB_DIRS {
            let host = Path::new(dir);
            let Ok(meta) = fs::symlink_metadata(host) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                p.symlink_like(host, dir)?;
            } else if meta.is_dir() {
                p.bind_ro(host, dir, false)?;
                binds.push(dir.to_string());
            }
        }
        for file in ETC_FILES {
            if Path::new(file).is_file() {
                p.bind_ro(Path::new(file), file, true)?;
                binds.push(file.to_string());
            }
        }
        let mut writable = Vec::new();
        for b in &o.extra_binds {
            let dst = b.dst.to_string_lossy().into_owned();
            if !b.dst.is_absolute() {
                let path = b.dst.clone();
                return Err(RootError::RelativeBindTarget { path }.into());
            }
            let is_link = fs::symlink_metadata(&b.src).is_ok_and(|m| m.file_type().is_symlink());
            if is_link {
                p.symlink_like(&b.src, &dst)?;
            } else {
                p.bind(&b.src, &dst, false, b.writable)?;
                if b.writable {
                    writable.push(dst);
                } else {
                    binds.push(dst);
                }
            }
        }
        p.mkdir("/dev")?;
        let mut devices = Vec::new();
        for dev in DEVICES {
            let host = Path::new("/dev").join(dev);
            if !host.exists() {
                continue;
            }
            let inside = format!("/dev/{dev}");
            let path = p.at(&inside);
            p.push(Op::Touch(cstring(&path)?), format!("create {inside}"));
            p.mount(
                Some(&host),
                &path,
                None,
                libc::MS_BIND,
                None,
                format!("bind {} onto {inside}", host.display()),
            )?;
            devices.push(*dev);
        }
        for (name, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            let path = p.at(&format!("/dev/{name}"));
            p.push(
                Op::Symlink {
                    target: cstring(Path::new(target))?,
                    path: cstring(&path)?,
                },
                format!("symlink /dev/{name}"),
            );
        }
        p.mkdir("/proc")?;
        if o.proc {
            // Before the old root goes: a new proc may only be mounted where a full proc is
            // already visible in the mount namespace (the kernel's mount_too_revealing check).
            let target = p.at("/proc");
            p.mount(
                Some(Path::new("proc")),
                &target,
                Some("proc"),
                nosuid_nodev | libc::MS_NOEXEC,
                None,
                "mount a fresh /proc".into(),
            )?;
        }
        p.push(
            Op::Pivot(cstring(&root)?),
            "pivot_root into the new root".into(),
        );
        p.mount(
            None,
            Path::new("/"),
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | nosuid_nodev,
            None,
            "remount / read-only".into(),
        )?;
        let rw = if writable.is_empty() {
            String::new()
        } else {
            format!("; read-write {}", writable.join(" "))
        };
        let summary = format!(
            "pivot_root into a tmpfs; read-only {}{rw}; /work and /tmp on a {} tmpfs ({inodes} \
             inodes); /dev {}; {}; host root detached",
            binds.join(" "),
            human_bytes(o.disk_bytes),
            devices.join(" "),
            if o.proc { "fresh /proc" } else { "no /proc" },
        );
        Ok(NewRoot {
            ops: p.into_ops(),
            summary,
            binds,
            disk_bytes: o.disk_bytes,
        })
    }

    /// One line saying what the root holds, for the isolation report.
    pub fn summary(&self) -> &str {
        &self.summary
    }

    /// The in-sandbox paths bound read-only (runner, app, library dirs, loader cache).
    pub fn read_only_paths(&self) -> &[String] {
        &self.binds
    }

    /// The disk cap in bytes.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    /// What step `index` did, for an error message.
    pub fn describe(&self, index: u16) -> &str {
        self.ops
            .get(index as usize)
            .map_or("an unknown step", |(_, what)| what.as_str())
    }

    /// Runs every step, in order. Returns the index of the failed step and its errno.
    ///
    /// # Safety
    ///
    /// Call only in a freshly cloned child with its own mount namespace, whose `/` was made
    /// recursively private, before `execve`. Only raw system calls on data prepared by
    /// [`NewRoot::prepare`]: no allocation, no locks.
    pub unsafe fn build_in_child(&self) -> Result<(), (u16, Errno)> {
        for (i, (op, _)) in self.ops.iter().enumerate() {
            // SAFETY: the caller's contract is the one `Op::run` needs.
            if !unsafe { op.run() } {
                return Err((i as u16, Errno::last()));
            }
        }
        Ok(())
    }
}

/// `64 MiB`, `512 KiB`, `1000 B`.
pub fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}
