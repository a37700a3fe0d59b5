//! What a build occupies on the host's disk: the allocated blocks of the directories it may
//! write (its target dir and its copy of the crate), plus the files its processes hold open or
//! mapped after deleting them; and removing such a tree whatever the build did to its modes.
//!
//! The walk is written against a hostile tree: it never follows a symlink, opens each
//! directory relative to its parent (`openat`, `O_NOFOLLOW`, so no path grows past `PATH_MAX`
//! and no rename above it redirects it), counts each inode once (hard links), and stops with
//! an error past [`MAX_ENTRIES`] entries or [`MAX_DEPTH`] levels, either of which is a build
//! over its disk budget (nothing a build of a crate needs comes near them).

use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};

/// Most files and directories a build's writable directories may hold together.
pub const MAX_ENTRIES: u64 = 250_000;

/// Deepest nesting of directories below a writable directory.
pub const MAX_DEPTH: usize = 128;

/// Most bytes of one build process's `/proc/PID/maps` the measure reads. The build chooses
/// how many mappings it has (up to `vm.max_map_count`, with paths of its choosing), and the
/// host reads them on every check: past this (20 times what rustc or a linker maps) the
/// build is over its budget rather than a cost to the host.
pub const MAX_MAPS_BYTES: u64 = 8 << 20;

/// Why a tree is over its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// More allocated bytes than the budget.
    Bytes,
    /// More than [`MAX_ENTRIES`] entries (files in the trees, plus the descriptors and
    /// mappings of its processes looked at), or a process's mappings past [`MAX_MAPS_BYTES`].
    Entries,
    /// Directories nested deeper than [`MAX_DEPTH`].
    Depth,
}

/// What a set of trees occupies, counted so far.
#[derive(Debug, Default)]
pub struct Tally {
    /// Allocated bytes (`st_blocks` × 512), each inode once.
    pub bytes: u64,
    /// Files, directories and other entries seen.
    pub entries: u64,
    /// The filesystems the walked trees are on.
    pub devs: Vec<u64>,
    /// Inodes with more than one link (or found through a process), counted already.
    seen: HashSet<(u64, u64)>,
    /// Stop once `bytes` exceeds this.
    budget: u64,
}

fn blocks_bytes(st: &FileStat) -> u64 {
    (st.st_blocks as u64).saturating_mul(512)
}

#[allow(clippy::unnecessary_cast)] // dev_t and ino_t differ between targets
fn dev(st: &FileStat) -> u64 {
    st.st_dev as u64
}

#[allow(clippy::unnecessary_cast)]
fn ino(st: &FileStat) -> u64 {
    st.st_ino as u64
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

impl Tally {
    /// An empty tally that stops at `budget` bytes.
    pub fn new(budget: u64) -> Tally {
        Tally {
            budget,
            ..Tally::default()
        }
    }

    /// Counts one thing looked at (an inode, a descriptor, a mapping); `Err` past
    /// [`MAX_ENTRIES`], so what a build makes the host look at is bounded too.
    fn look(&mut self) -> Result<(), Over> {
        self.entries += 1;
        if self.entries > MAX_ENTRIES {
            return Err(Over::Entries);
        }
        Ok(())
    }

    /// Counts one inode; `Err` once a bound is passed.
    fn add(&mut self, st: &FileStat) -> Result<(), Over> {
        self.look()?;
        let is_dir = kind(st) == SFlag::S_IFDIR;
        if (st.st_nlink > 1 && !is_dir) && !self.seen.insert((dev(st), ino(st))) {
            return Ok(());
        }
        self.bytes = self.bytes.saturating_add(blocks_bytes(st));
        self.check()
    }

    fn check(&self) -> Result<(), Over> {
        if self.bytes > self.budget {
            Err(Over::Bytes)
        } else {
            Ok(())
        }
    }

    /// Counts the tree at `root` (a missing root counts nothing).
    pub fn walk(&mut self, root: &Path) -> Result<(), Over> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let Ok(top) = Dir::open(root, flags, Mode::empty()) else {
            return Ok(());
        };
        let Ok(st) = fstat(top.as_fd()) else {
            return Ok(());
        };
        if !self.devs.contains(&dev(&st)) {
            self.devs.push(dev(&st));
        }
        self.add(&st)?;
        // Each level: the directory (its fd) and the names read from it, listed before any
        // is visited (nix's iterator rewinds when dropped).
        let mut stack: Vec<(Dir, Vec<CString>)> = Vec::new();
        let names = self.list(top)?;
        stack.push(names);
        loop {
            let depth = stack.len();
            let Some((dir, names)) = stack.last_mut() else {
                break;
            };
            let Some(name) = names.pop() else {
                stack.pop();
                continue;
            };
            // Gone since the listing (a build still running): nothing to count.
            let Ok(st) = fstatat(dir.as_fd(), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
                continue;
            };
            self.add(&st)?;
            if kind(&st) != SFlag::S_IFDIR {
                continue;
            }
            if depth >= MAX_DEPTH {
                return Err(Over::Depth);
            }
            let Ok(sub) = Dir::openat(dir.as_fd(), name.as_c_str(), flags, Mode::empty()) else {
                continue;
            };
            let listed = self.list(sub)?;
            stack.push(listed);
        }
        Ok(())
    }

    /// The names in `dir` (not `.` and `..`).
    fn list(&mut self, mut dir: Dir) -> Result<(Dir, Vec<CString>), Over> {
        let mut names = Vec::new();
        for entry in dir.iter() {
            let Ok(entry) = entry else { break };
            let name = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            names.push(name.to_owned());
            if self.entries + names.len() as u64 > MAX_ENTRIES {
                return Err(Over::Entries);
            }
        }
        Ok((dir, names))
    }

    /// Counts the files that processes `pids` hold open or mapped after deleting them, on the
    /// filesystems of the trees walked so far: they take disk space that no walk sees.
    /// Processes that are gone, or whose `/proc` entries cannot be read, count nothing.
    pub fn held(&mut self, pids: &[i32]) -> Result<(), Over> {
        for &pid in pids {
            if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
                for fd in fds.flatten() {
                    self.look()?;
                    if let Ok(st) = nix::sys::stat::stat(&fd.path()) {
                        self.add_deleted(&st)?;
                    }
                }
            }
            let mut maps = Vec::new();
            let read = std::fs::File::open(format!("/proc/{pid}/maps"))
                .and_then(|f| f.take(MAX_MAPS_BYTES + 1).read_to_end(&mut maps));
            if read.is_err() {
                continue;
            }
            if maps.len() as u64 > MAX_MAPS_BYTES {
                return Err(Over::Entries);
            }
            for line in maps.split(|&b| b == b'\n') {
                self.look()?;
                let Some(m) = DeletedMapping::parse(line) else {
                    continue;
                };
                if !self.devs.contains(&m.dev) {
                    continue;
                }
                // The mapped file itself where /proc lets us (root); else the mapping's length.
                let file = format!("/proc/{pid}/map_files/{}", m.range);
                match nix::sys::stat::stat(Path::new(&file)) {
                    Ok(st) => self.add_deleted(&st)?,
                    Err(_) => self.add_deleted_estimate(m.dev, m.ino, m.len)?,
                }
            }
        }
        Ok(())
    }

    /// Counts `st` if it is a deleted regular file on one of our filesystems, once.
    fn add_deleted(&mut self, st: &FileStat) -> Result<(), Over> {
        if kind(st) != SFlag::S_IFREG || st.st_nlink != 0 || !self.devs.contains(&dev(st)) {
            return Ok(());
        }
        if self.seen.insert((dev(st), ino(st))) {
            self.bytes = self.bytes.saturating_add(blocks_bytes(st));
        }
        self.check()
    }

    fn add_deleted_estimate(&mut self, dev: u64, ino: u64, len: u64) -> Result<(), Over> {
        if self.seen.insert((dev, ino)) {
            self.bytes = self.bytes.saturating_add(len);
        }
        self.check()
    }
}

/// A line of `/proc/PID/maps` that maps a deleted file.
#[derive(Debug, PartialEq, Eq)]
struct DeletedMapping {
    /// `start-end`, as `map_files` names it.
    range: String,
    len: u64,
    dev: u64,
    ino: u64,
}

impl DeletedMapping {
    /// `start-end perms offset major:minor inode path (deleted)`.
    fn parse(line: &[u8]) -> Option<DeletedMapping> {
        if !line.ends_with(b" (deleted)") {
            return None;
        }
        let line = std::str::from_utf8(line).ok()?;
        let mut fields = line.split_ascii_whitespace();
        let range = fields.next()?;
        let (start, end) = range.split_once('-')?;
        let len = u64::from_str_radix(end, 16)
            .ok()?
            .checked_sub(u64::from_str_radix(start, 16).ok()?)?;
        let _perms = fields.next()?;
        let _offset = fields.next()?;
        let (major, minor) = fields.next()?.split_once(':')?;
        let dev = libc::makedev(
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
        );
        let ino = fields.next()?.parse().ok()?;
        (ino != 0).then(|| DeletedMapping {
            range: range.to_string(),
            len,
            dev,
            ino,
        })
    }
}

/// Allocated bytes of the tree at `root`, without a byte budget (a missing tree is 0).
pub fn usage(root: &Path) -> Result<u64, Over> {
    let mut t = Tally::new(u64::MAX);
    t.walk(root)?;
    Ok(t.bytes)
}

/// Levels of directories [`remove_tree`] holds open at once; a deeper directory is moved up
/// to the top of the tree (a rename) and removed from there.
const REMOVE_DEPTH: usize = 32;

/// Removes the tree at `path` (nothing when it is missing) whatever the build did to it: a
/// directory it made unreadable or unwritable is given back to its owner first, and a tree
/// nested deeper than any path or stack allows is removed with a bounded number of open
/// directories and no recursion (directories past [`REMOVE_DEPTH`] levels are moved up to the
/// top). Never follows a symlink.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    use nix::sys::stat::{FchmodatFlags, fchmodat};
    use nix::unistd::{UnlinkatFlags, unlinkat};
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return std::fs::remove_file(path);
    }
    let _ = fchmodat(
        nix::fcntl::AT_FDCWD,
        path,
        Mode::S_IRWXU,
        FchmodatFlags::NoFollowSymlink,
    );
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut top = Dir::open(path, flags, Mode::empty())?;
    let names = names_of(&mut top);
    // Each level: the directory, the names left to remove in it, its own name in its parent.
    let mut stack: Vec<(Dir, Vec<CString>, CString)> = vec![(top, names, CString::default())];
    let mut moved = 0u64;
    let mut relisted = 0u32;
    loop {
        let depth = stack.len();
        let Some((dir, names, own)) = stack.last_mut() else {
            break;
        };
        let Some(name) = names.pop() else {
            if depth == 1 {
                // Entries made since the listing (none once the build is over): list again.
                let again = names_of(dir);
                if !again.is_empty() && relisted < 8 {
                    relisted += 1;
                    *names = again;
                    continue;
                }
                break;
            }
            let own = std::mem::take(own);
            stack.pop();
            if let Some((parent, names, _)) = stack.last_mut()
                && unlinkat(parent.as_fd(), own.as_c_str(), UnlinkatFlags::RemoveDir)
                    == Err(nix::errno::Errno::ENOTEMPTY)
                && relisted < 8
            {
                relisted += 1;
                names.push(own);
            }
            continue;
        };
        let Ok(st) = fstatat(dir.as_fd(), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        if kind(&st) != SFlag::S_IFDIR {
            let _ = unlinkat(dir.as_fd(), name.as_c_str(), UnlinkatFlags::NoRemoveDir);
            continue;
        }
        let _ = fchmodat(
            dir.as_fd(),
            OsStr::from_bytes(name.to_bytes()),
            Mode::S_IRWXU,
            FchmodatFlags::NoFollowSymlink,
        );
        if depth >= REMOVE_DEPTH {
            // Too deep to hold open: move it up to the top and remove it from there.
            for _ in 0..16 {
                moved += 1;
                let up = CString::new(format!(".removing-{moved}")).unwrap_or_default();
                let (top_fd, from) = (stack[0].0.as_fd(), stack[depth - 1].0.as_fd());
                match rename_noreplace(from, &name, top_fd, &up) {
                    Ok(()) => {
                        stack[0].1.push(up);
                        break;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(_) => break,
                }
            }
            continue;
        }
        match Dir::openat(dir.as_fd(), name.as_c_str(), flags, Mode::empty()) {
            Ok(mut sub) => {
                let names = names_of(&mut sub);
                stack.push((sub, names, name));
            }
            Err(_) => {
                let _ = unlinkat(dir.as_fd(), name.as_c_str(), UnlinkatFlags::RemoveDir);
            }
        }
    }
    drop(stack);
    match std::fs::remove_dir(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// `renameat2(RENAME_NOREPLACE)`.
fn rename_noreplace(
    from: std::os::fd::BorrowedFd<'_>,
    name: &CString,
    to: std::os::fd::BorrowedFd<'_>,
    new: &CString,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: renameat2 with live directory fds and NUL-terminated names.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            from.as_raw_fd(),
            name.as_ptr(),
            to.as_raw_fd(),
            new.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn names_of(dir: &mut Dir) -> Vec<CString> {
    dir.iter()
        .map_while(Result::ok)
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.to_bytes() != b"." && n.to_bytes() != b"..")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(path: &Path, bytes: usize) {
        let mut f = std::fs::File::create(path).unwrap();
        f.write_all(&vec![7u8; bytes]).unwrap();
        f.sync_all().unwrap();
    }

    #[test]
    fn allocated_blocks_are_counted_once_per_inode_and_symlinks_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("t");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        write(&root.join("a/b/one"), 1 << 20);
        std::fs::hard_link(root.join("a/b/one"), root.join("a/two")).unwrap();
        // A symlink to a big tree elsewhere counts as the link alone.
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        write(&elsewhere.join("big"), 4 << 20);
        std::os::unix::fs::symlink(&elsewhere, root.join("link")).unwrap();
        let bytes = usage(&root).unwrap();
        assert!(bytes >= 1 << 20, "{bytes}");
        assert!(bytes < (2 << 20), "the hard link counted twice: {bytes}");
        assert_eq!(usage(&tmp.path().join("missing")).unwrap(), 0);
    }

    #[test]
    fn a_walk_stops_at_its_budget_and_its_depth() {
        let tmp = tempfile::tempdir().unwrap();
        write(&tmp.path().join("f"), 2 << 20);
        let mut t = Tally::new(1 << 20);
        assert_eq!(t.walk(tmp.path()), Err(Over::Bytes));
        // Deeper than the walk goes.
        let deep = tmp.path().join("deep");
        nest(&deep, MAX_DEPTH + 2);
        assert_eq!(usage(&deep), Err(Over::Depth));
        // And it can still be removed, moved up a level at a time past REMOVE_DEPTH.
        remove_tree(&deep).unwrap();
        assert!(!deep.exists());
    }

    /// Makes `levels` nested directories with long names under `top` (no path to the bottom
    /// fits in PATH_MAX); puts a file at the bottom.
    fn nest(top: &Path, levels: usize) {
        std::fs::create_dir(top).unwrap();
        let mut dir = std::fs::File::open(top).unwrap();
        let long = "d".repeat(200);
        for _ in 0..levels {
            nix::sys::stat::mkdirat(dir.as_fd(), long.as_str(), Mode::S_IRWXU).unwrap();
            let next = nix::fcntl::openat(
                dir.as_fd(),
                long.as_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY,
                Mode::empty(),
            )
            .unwrap();
            dir = std::fs::File::from(next);
        }
        let f = nix::fcntl::openat(
            dir.as_fd(),
            "f",
            OFlag::O_WRONLY | OFlag::O_CREAT,
            Mode::S_IRUSR,
        )
        .unwrap();
        drop(f);
        // The bottom directory unwritable and unsearchable, as a build may leave it.
        nix::sys::stat::fchmod(dir.as_fd(), Mode::empty()).unwrap();
    }

    #[test]
    fn a_tree_deeper_than_any_path_is_removed_without_recursion() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("deep");
        nest(&deep, 3000);
        remove_tree(&deep).unwrap();
        assert!(!deep.exists());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_deleted_file_a_process_holds_open_is_counted() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("held");
        write(&path, 1 << 20);
        let held = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut t = Tally::new(u64::MAX);
        t.walk(tmp.path()).unwrap();
        let walked = t.bytes;
        t.held(&[std::process::id() as i32]).unwrap();
        assert!(t.bytes >= walked + (1 << 20), "{} after {walked}", t.bytes);
        drop(held);
    }

    #[test]
    fn what_a_build_makes_the_host_look_at_is_bounded_too() {
        // Descriptors and mappings count against the same bound as files: a build with
        // enough of them is over its budget, not a cost to the host on every check.
        let mut t = Tally::new(u64::MAX);
        t.entries = MAX_ENTRIES;
        assert_eq!(t.held(&[std::process::id() as i32]), Err(Over::Entries));
        let mut t = Tally::new(u64::MAX);
        assert_eq!(t.held(&[std::process::id() as i32]), Ok(()));
        assert!(
            t.entries > 0,
            "the descriptors and mappings looked at are counted"
        );
    }

    #[test]
    fn a_deleted_mapping_is_parsed() {
        let line = b"7f00a000-7f00c000 rw-s 00000000 fd:01 1234 /target/x (deleted)";
        let m = DeletedMapping::parse(line).unwrap();
        assert_eq!(m.range, "7f00a000-7f00c000");
        assert_eq!(m.len, 0x2000);
        assert_eq!(m.dev, libc::makedev(0xfd, 1));
        assert_eq!(m.ino, 1234);
        assert!(DeletedMapping::parse(b"7f00a000-7f00c000 r-xp 0 fd:01 1234 /usr/lib/x").is_none());
    }

    #[test]
    fn a_tree_the_build_locked_itself_out_of_is_removed() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("t");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        write(&root.join("a/b/f"), 10);
        std::fs::set_permissions(root.join("a/b"), std::fs::Permissions::from_mode(0o0)).unwrap();
        std::fs::set_permissions(root.join("a"), std::fs::Permissions::from_mode(0o500)).unwrap();
        remove_tree(&root).unwrap();
        assert!(!root.exists());
        remove_tree(&root).unwrap();
    }
}
