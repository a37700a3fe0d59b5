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

use std::collections::HashSet;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

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

#[derive(Debug)]
enum Op {
    Mount {
        src: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    Mkdir(CString),
    Touch(CString),
    Symlink {
        target: CString,
        path: CString,
    },
    Chown {
        path: CString,
        uid: u32,
        gid: u32,
    },
    Chmod(CString, libc::mode_t),
    Detach(CString),
    Rmdir(CString),
    /// `chdir(dir)`, `pivot_root(".", ".")`, `umount2(".", MNT_DETACH)`, `chdir("/")`: the
    /// old root is stacked under the new one and then detached (runc's trick; no `put_old`
    /// directory is left inside the sandbox).
    Pivot(CString),
}

/// A sandbox root, prepared in the parent for the child to build.
#[derive(Debug)]
pub struct NewRoot {
    ops: Vec<(Op, String)>,
    summary: String,
    binds: Vec<String>,
    disk_bytes: u64,
}

fn c(p: &Path) -> Result<CString, IsolationError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| IsolationError::Path {
        path: p.into(),
        reason: "contains a NUL byte".into(),
    })
}

/// `statvfs` flags of the mount holding `path`, as `MS_*` flags that must be kept on a
/// remount (in a user namespace, dropping a locked flag is `EPERM`).
pub(crate) fn locked_mount_flags(path: &Path) -> Result<libc::c_ulong, IsolationError> {
    let cp = c(path)?;
    // SAFETY: zeroed statvfs is a valid out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid NUL-terminated path and out-pointer.
    if unsafe { libc::statvfs(cp.as_ptr(), &mut st) } != 0 {
        return Err(IsolationError::last_os(format!(
            "statvfs {}",
            path.display()
        )));
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
struct Plan {
    root: PathBuf,
    ops: Vec<(Op, String)>,
    dirs: HashSet<PathBuf>,
}

impl Plan {
    /// `p` (an in-sandbox absolute path) under the root mountpoint.
    fn at(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    fn push(&mut self, op: Op, what: String) {
        self.ops.push((op, what));
    }

    /// `mkdir -p` of an in-sandbox directory (each directory once).
    fn mkdir(&mut self, p: &str) -> Result<(), IsolationError> {
        let mut acc = PathBuf::from("/");
        for part in Path::new(p).components().skip(1) {
            acc.push(part);
            if self.dirs.insert(acc.clone()) {
                let host = self.at(&acc.to_string_lossy());
                self.push(Op::Mkdir(c(&host)?), format!("mkdir {}", acc.display()));
            }
        }
        Ok(())
    }

    fn parent_dir(&mut self, p: &str) -> Result<(), IsolationError> {
        if let Some(parent) = Path::new(p).parent().filter(|d| *d != Path::new("/")) {
            self.mkdir(&parent.to_string_lossy())?;
        }
        Ok(())
    }

    fn mount(
        &mut self,
        src: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
        what: String,
    ) -> Result<(), IsolationError> {
        let cs = |s: &str| CString::new(s).expect("static mount strings have no NUL");
        let op = Op::Mount {
            src: src.map(c).transpose()?,
            target: c(target)?,
            fstype: fstype.map(cs),
            flags,
            data: data.map(cs),
        };
        self.push(op, what);
        Ok(())
    }

    /// Binds host path `src` read-only at in-sandbox path `dst` (a directory or a file).
    fn bind_ro(&mut self, src: &Path, dst: &str, noexec: bool) -> Result<(), IsolationError> {
        self.bind(src, dst, noexec, false)
    }

    /// Binds host path `src` at in-sandbox path `dst`, read-only unless `writable`.
    fn bind(
        &mut self,
        src: &Path,
        dst: &str,
        noexec: bool,
        writable: bool,
    ) -> Result<(), IsolationError> {
        let meta = fs::metadata(src).map_err(|e| IsolationError::Sys {
            op: format!("stat {} for the sandbox root", src.display()),
            source: e,
        })?;
        if meta.is_dir() {
            self.mkdir(dst)?;
        } else {
            self.parent_dir(dst)?;
            let host = self.at(dst);
            self.push(Op::Touch(c(&host)?), format!("create {dst}"));
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
    fn symlink_like(&mut self, host: &Path, dst: &str) -> Result<(), IsolationError> {
        let target = fs::read_link(host).map_err(|e| IsolationError::Sys {
            op: format!("readlink {}", host.display()),
            source: e,
        })?;
        self.parent_dir(dst)?;
        let path = self.at(dst);
        self.push(
            Op::Symlink {
                target: c(&target)?,
                path: c(&path)?,
            },
            format!("symlink {dst} -> {}", target.display()),
        );
        Ok(())
    }
}

impl NewRoot {
    /// Prepares the steps that build the root described by `o` (reads the host's library
    /// directories and mount flags now).
    pub fn prepare(o: &RootOptions) -> Result<Self, IsolationError> {
        let mut p = Plan {
            root: o.mountpoint.clone(),
            ops: Vec::new(),
            dirs: HashSet::new(),
        };
        let root = o.mountpoint.clone();
        let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
        p.mount(
            Some(Path::new("tmpfs")),
            &root,
            Some("tmpfs"),
            nosuid_nodev,
            Some("mode=0755,size=1m,nr_inodes=4096"),
            "mount the root tmpfs".into(),
        )?;
        p.dirs.insert(PathBuf::from("/"));

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
            p.push(Op::Mkdir(c(&inner)?), format!("mkdir the disk's {sub}"));
            p.push(
                Op::Chmod(c(&inner)?, mode),
                format!("chmod the disk's {sub}"),
            );
            if let Some((uid, gid)) = o.owner.filter(|_| sub == "work") {
                p.push(
                    Op::Chown {
                        path: c(&inner)?,
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
            Op::Detach(c(&scratch_host)?),
            "detach the disk's scratch mount".into(),
        );
        p.push(
            Op::Rmdir(c(&scratch_host)?),
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
                return Err(IsolationError::Path {
                    path: b.dst.clone(),
                    reason: "an in-sandbox bind target must be absolute".into(),
                });
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
            p.push(Op::Touch(c(&path)?), format!("create {inside}"));
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
                    target: c(Path::new(target))?,
                    path: c(&path)?,
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
        p.push(Op::Pivot(c(&root)?), "pivot_root into the new root".into());
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
            ops: p.ops,
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
        let null = std::ptr::null::<libc::c_char>();
        let opt = |s: &Option<CString>| s.as_ref().map_or(null, |s| s.as_ptr());
        for (i, (op, _)) in self.ops.iter().enumerate() {
            // SAFETY: (whole block) plain system calls with NUL-terminated strings owned by
            // `self`, or null where the kernel accepts it.
            let ok = unsafe {
                match op {
                    Op::Mount {
                        src,
                        target,
                        fstype,
                        flags,
                        data,
                    } => {
                        libc::mount(
                            opt(src),
                            target.as_ptr(),
                            opt(fstype),
                            *flags,
                            opt(data).cast(),
                        ) == 0
                    }
                    Op::Mkdir(p) => {
                        libc::mkdir(p.as_ptr(), 0o755) == 0 || Errno::last() == Errno::EEXIST
                    }
                    Op::Touch(p) => {
                        let fd = libc::open(
                            p.as_ptr(),
                            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                            0o444,
                        );
                        fd >= 0 && libc::close(fd) == 0
                    }
                    Op::Symlink { target, path } => {
                        libc::symlink(target.as_ptr(), path.as_ptr()) == 0
                    }
                    Op::Chown { path, uid, gid } => libc::chown(path.as_ptr(), *uid, *gid) == 0,
                    Op::Chmod(p, mode) => libc::chmod(p.as_ptr(), *mode) == 0,
                    Op::Detach(p) => libc::umount2(p.as_ptr(), libc::MNT_DETACH) == 0,
                    Op::Rmdir(p) => libc::rmdir(p.as_ptr()) == 0,
                    Op::Pivot(dir) => {
                        let dot = c".".as_ptr();
                        libc::chdir(dir.as_ptr()) == 0
                            && libc::syscall(libc::SYS_pivot_root, dot, dot) == 0
                            && libc::umount2(dot, libc::MNT_DETACH) == 0
                            && libc::chdir(c"/".as_ptr()) == 0
                    }
                }
            };
            if !ok {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path) -> RootOptions {
        RootOptions {
            mountpoint: dir.join("root"),
            runner_exe: std::env::current_exe().unwrap(),
            app_dir: Some(dir.to_path_buf()),
            disk_bytes: DEFAULT_DISK_BYTES,
            owner: Some((1234, 1234)),
            proc: true,
            extra_binds: Vec::new(),
        }
    }

    #[test]
    fn plans_the_layout_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = NewRoot::prepare(&options(dir.path())).unwrap();
        let steps: Vec<&str> = root.ops.iter().map(|(_, w)| w.as_str()).collect();
        let pos = |needle: &str| {
            steps
                .iter()
                .position(|s| s.contains(needle))
                .unwrap_or_else(|| panic!("no step {needle:?} in {steps:#?}"))
        };
        assert_eq!(pos("mount the root tmpfs"), 0);
        assert!(pos("mount the disk tmpfs") < pos("bind the disk's work onto /work"));
        assert!(pos("chown /work to 1234:1234") < pos("bind the disk's work"));
        assert!(pos("onto /runner") < pos("remount /runner read-only"));
        assert!(pos("mount a fresh /proc") < pos("pivot_root"));
        assert_eq!(*steps.last().unwrap(), "remount / read-only");
        assert!(pos("bind /dev/null onto /dev/null") < pos("pivot_root"));
        // Nothing of the host beyond the fixed list.
        for s in steps.iter().filter_map(|s| s.split_once(" onto ")) {
            for hidden in ["/etc/shadow", "/run", "/var", "/home", "/root", "/sys"] {
                let target = s.1;
                assert!(
                    target != hidden && !target.starts_with(&format!("{hidden}/")),
                    "{s:?}"
                );
            }
        }
        assert!(root.summary().contains("64 MiB tmpfs (16384 inodes)"));
        assert_eq!(root.describe(0), "mount the root tmpfs");
        assert_eq!(root.describe(u16::MAX), "an unknown step");
    }

    #[test]
    fn extra_binds_follow_the_library_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = options(dir.path());
        o.app_dir = None;
        o.extra_binds = vec![
            Bind {
                src: dir.path().to_path_buf(),
                dst: "/target".into(),
                writable: true,
            },
            Bind {
                src: "/usr".into(),
                dst: "/usr".into(),
                writable: false,
            },
        ];
        let root = NewRoot::prepare(&o).unwrap();
        let steps: Vec<&str> = root.ops.iter().map(|(_, w)| w.as_str()).collect();
        assert!(
            !steps.iter().any(|s| s.ends_with("onto /app")),
            "{steps:#?}"
        );
        assert!(
            steps.contains(&"remount /target nosuid,nodev"),
            "{steps:#?}"
        );
        assert!(steps.contains(&"remount /usr read-only"), "{steps:#?}");
        assert!(root.summary().contains("read-write /target"));
        assert!(root.read_only_paths().contains(&"/usr".to_string()));
        o.extra_binds[0].dst = "relative".into();
        assert!(NewRoot::prepare(&o).is_err());
    }

    #[test]
    fn inode_cap_scales_with_the_disk() {
        assert_eq!(disk_inodes(64 << 20), 16384);
        assert_eq!(disk_inodes(1 << 20), 256);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(1 << 30), "1 GiB");
        assert_eq!(human_bytes(1000), "1000 B");
    }
}
