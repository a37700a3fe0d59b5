//! Sandbox uids, unique on the machine.
//!
//! Kernel limits are counted per uid (inotify instances and watches, user namespaces, POSIX
//! message queues, `RLIMIT_NPROC`, keyrings), so two sandboxes that share a uid share them: one
//! could exhaust what the other needs. A root host therefore gives each sandbox a uid of its
//! own from [`FIRST`]`..`[`FIRST`]` + `[`SPAN`], and two daemons on one machine must never hand
//! out the same one.
//!
//! The range is cut into [`BLOCK`]-uid blocks. A daemon leases a block by taking an exclusive
//! `flock` on `<dir>/<block>.lock` (`dir` is machine-wide: [`DEFAULT_DIR`]), holds it for its
//! whole life, and hands out uids only from blocks it holds; the kernel drops the lock when
//! the daemon dies, however it dies, so a dead daemon's blocks come back by themselves. A block
//! is taken only when no process runs as any of its uids (a dead daemon's sandbox may still be
//! exiting): its uids are never reused while anything of their previous holder runs. Within a
//! daemon a uid is handed out again only after its sandbox's processes are dead, and then the
//! least recently returned first.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::fcntl::{Flock, FlockArg};

/// The first uid (and gid) of the sandbox range; none is the host's root.
pub const FIRST: u32 = 1_600_000_000;
/// How many uids the range holds.
pub const SPAN: u32 = 1 << 16;
/// Uids per leased block.
pub const BLOCK: u32 = 256;
/// Where root hosts keep the block locks: one directory for the whole machine, whatever each
/// daemon's state directory is.
pub const DEFAULT_DIR: &str = "/run/sandbox-host/uids";

/// Why no uid could be handed out.
#[derive(Debug, thiserror::Error)]
pub enum UidError {
    /// The lease directory could not be made or a lock file opened.
    #[error("uid leases: {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Every block is leased by a live daemon or still has processes running.
    #[error(
        "no sandbox uid is free: all {} blocks of {BLOCK} uids from {FIRST} are leased by live \
         daemons or still run processes",
        SPAN / BLOCK
    )]
    Exhausted,
}

/// The uids this daemon may hand out. Cheap to share (`Arc` inside).
#[derive(Debug, Clone)]
pub struct Uids(Arc<Mutex<State>>);

#[derive(Debug)]
struct State {
    dir: PathBuf,
    /// Leased blocks: their first uid and the lock that holds them.
    blocks: Vec<(u32, Flock<File>)>,
    /// Uids of leased blocks that no sandbox holds, least recently returned first.
    free: VecDeque<u32>,
    /// Uids handed out and not returned.
    taken: HashSet<u32>,
}

/// One uid handed out; it goes back to its [`Uids`] when this is dropped (after the last
/// process that ran as it is dead: the manager drops it with the sandbox's record, after the
/// kill).
#[derive(Debug)]
pub struct Leased {
    uid: u32,
    owner: Uids,
}

impl Leased {
    /// The uid (and gid).
    pub fn uid(&self) -> u32 {
        self.uid
    }
}

impl Drop for Leased {
    fn drop(&mut self) {
        let mut st = self.owner.0.lock().unwrap_or_else(|e| e.into_inner());
        if st.taken.remove(&self.uid) {
            st.free.push_back(self.uid);
        }
    }
}

impl Uids {
    /// Leases from `dir` (made 0700 when missing).
    pub fn new(dir: impl Into<PathBuf>) -> Uids {
        Uids(Arc::new(Mutex::new(State {
            dir: dir.into(),
            blocks: Vec::new(),
            free: VecDeque::new(),
            taken: HashSet::new(),
        })))
    }

    /// A uid no other daemon holds and no process runs as.
    pub fn take(&self) -> Result<Leased, UidError> {
        let mut st = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if st.free.is_empty() {
            let first = lease_block(&mut st)?;
            st.free.extend(first..first + BLOCK);
        }
        let uid = st.free.pop_front().ok_or(UidError::Exhausted)?;
        st.taken.insert(uid);
        Ok(Leased {
            uid,
            owner: self.clone(),
        })
    }

    /// The first uids of the blocks this daemon holds.
    pub fn blocks(&self) -> Vec<u32> {
        let st = self.0.lock().unwrap_or_else(|e| e.into_inner());
        st.blocks.iter().map(|(first, _)| *first).collect()
    }
}

/// Leases one more block: the first, counting from a place that differs between daemons,
/// whose lock is free and whose uids no process runs as.
fn lease_block(st: &mut State) -> Result<u32, UidError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| UidError::Io { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&st.dir)
        .map_err(io(&st.dir))?;
    let running = uids_running();
    let blocks = SPAN / BLOCK;
    let start = std::process::id() % blocks;
    for i in 0..blocks {
        let block = (start + i) % blocks;
        let first = FIRST + block * BLOCK;
        if st.blocks.iter().any(|(f, _)| *f == first) {
            continue;
        }
        let path = st.dir.join(format!("{block}.lock"));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(io(&path))?;
        let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            continue; // a live daemon holds it
        };
        if running.iter().any(|u| (first..first + BLOCK).contains(u)) {
            continue; // a dead holder's processes are still exiting: not yet
        }
        st.blocks.push((first, lock));
        return Ok(first);
    }
    Err(UidError::Exhausted)
}

/// The real uids of every process on the machine (from `/proc/PID/status`).
fn uids_running() -> HashSet<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return HashSet::new();
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter_map(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_leases_on_one_directory_never_share_a_uid() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Uids::new(dir.path()), Uids::new(dir.path()));
        let mut seen = HashSet::new();
        let mut held = Vec::new();
        for _ in 0..(BLOCK + 3) {
            for uids in [&a, &b] {
                let l = uids.take().unwrap();
                assert!(seen.insert(l.uid()), "uid {} handed out twice", l.uid());
                assert!((FIRST..FIRST + SPAN).contains(&l.uid()));
                held.push(l);
            }
        }
        let (ba, bb) = (a.blocks(), b.blocks());
        assert_eq!(ba.len(), 2, "a second block once the first is used up");
        assert!(ba.iter().all(|x| !bb.contains(x)), "{ba:?} {bb:?}");
    }

    #[test]
    fn a_returned_uid_comes_back_last_and_a_dead_leases_block_is_free_again() {
        let dir = tempfile::tempdir().unwrap();
        let a = Uids::new(dir.path());
        let first = a.take().unwrap();
        let uid = first.uid();
        drop(first);
        let next = a.take().unwrap();
        assert_ne!(next.uid(), uid, "the least recently returned first");
        let block = a.blocks()[0];
        drop((a, next));
        // The holder is gone: its lock with it, and its block may be leased again.
        let b = Uids::new(dir.path());
        let _l = b.take().unwrap();
        assert!(b.blocks().contains(&block) || b.blocks().len() == 1);
    }
}
