//! One daemon per socket: the lock file next to the socket (`host.sock.lock`, holding the
//! daemon's pid, `flock`ed for the daemon's life), the stale socket of a dead daemon replaced,
//! and the new socket bound 0600.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::stat::{Mode, umask};
use tokio::net::UnixListener;

use super::socket_path::{self, SocketPath};
use super::{DaemonError, io_err};

/// The daemon's socket, bound, with the lock that makes it ours. Dropping it removes both.
#[derive(Debug)]
pub(super) struct Bound {
    pub(super) listener: UnixListener,
    socket: PathBuf,
    lock_path: PathBuf,
    lock: Option<Flock<File>>,
}

impl Bound {
    /// Removes the socket file, so new clients see no daemon (the lock is kept).
    pub(super) fn unlink_socket(&self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        self.unlink_socket();
        // Unlink while still holding the lock: a daemon that opened the old file gets it
        // and notices, by its inode, that it is no longer the file on disk.
        let _ = std::fs::remove_file(&self.lock_path);
        self.lock.take();
    }
}

/// Path of the lock file of `socket`.
pub fn lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.file_name().unwrap_or_default().to_owned();
    name.push(".lock");
    socket.with_file_name(name)
}

/// Takes the daemon lock of a socket, or says who holds it.
fn take_lock(socket: &Path) -> Result<Flock<File>, DaemonError> {
    let path = lock_path(socket);
    let orphans_deadline = Instant::now() + ORPHANS_EXIT;
    loop {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("open lock file", &path))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                // A daemon that just stopped may have unlinked this file after we opened it:
                // only the file on disk counts.
                let ours = lock.metadata().map_err(io_err("stat lock file", &path))?;
                let current = std::fs::metadata(&path).ok();
                if !current.is_some_and(|m| m.ino() == ours.ino() && m.dev() == ours.dev()) {
                    continue;
                }
                let pid = format!("{}\n", std::process::id());
                lock.set_len(0)
                    .and_then(|()| lock.rewind())
                    .and_then(|()| lock.write_all(pid.as_bytes()))
                    .map_err(io_err("write lock file", &path))?;
                return Ok(lock);
            }
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let pid: Option<i32> = text.trim().parse().ok();
                // The daemon that wrote its pid here is gone, but the lock is still held: a
                // child it was spawning when it was killed holds a copy of its descriptors
                // until its PDEATHSIG lands and its namespaces are torn down. That takes
                // milliseconds; wait for it (bounded) instead of calling it a live daemon.
                if pid.is_some_and(|p| !pid_alive(p)) && Instant::now() < orphans_deadline {
                    std::thread::sleep(LOCK_RETRY);
                    continue;
                }
                return Err(DaemonError::AlreadyRunning {
                    path: socket.to_owned(),
                    pid,
                });
            }
            Err((_, errno)) => {
                return Err(DaemonError::Io {
                    what: "lock",
                    path,
                    source: errno.into(),
                });
            }
        }
    }
}

/// How long a dead daemon's exiting children may keep its lock before a new daemon gives up.
const ORPHANS_EXIT: Duration = Duration::from_secs(5);
/// How often the lock is tried again meanwhile.
const LOCK_RETRY: Duration = Duration::from_millis(10);

/// Whether a process `pid` exists (a zombie counts: it is still someone's child).
fn pid_alive(pid: i32) -> bool {
    pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Prepares the directory, takes the lock, replaces a stale socket and binds a new one
/// (mode 0600).
pub(super) fn bind(socket: &SocketPath) -> Result<Bound, DaemonError> {
    let path = &socket.path;
    let dir = path.parent().unwrap_or(Path::new("."));
    if let Some(warning) = socket_path::prepare_dir(socket).map_err(io_err("prepare", dir))? {
        tracing::warn!("{warning}");
    }
    let lock = take_lock(path)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                // Someone listens without holding the lock (not one of ours).
                return Err(DaemonError::AlreadyRunning {
                    path: path.clone(),
                    pid: None,
                });
            }
            tracing::info!(socket = %path.display(), "replacing the stale socket of a dead daemon");
            std::fs::remove_file(path).map_err(io_err("remove stale socket", path))?;
        }
        Ok(_) => return Err(DaemonError::NotASocket(path.clone())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("stat", path)(e)),
    }
    // Create the socket 0600 from the start; the chmod after is belt and braces.
    let old_mask = umask(Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(path);
    umask(old_mask);
    let std_listener = bound.map_err(io_err("bind", path))?;
    let lock_path = lock_path(path);
    let finish = || -> io::Result<UnixListener> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        std_listener.set_nonblocking(true)?;
        UnixListener::from_std(std_listener)
    };
    match finish() {
        Ok(listener) => Ok(Bound {
            listener,
            socket: path.clone(),
            lock_path,
            lock: Some(lock),
        }),
        Err(e) => {
            let _ = std::fs::remove_file(path);
            let _ = std::fs::remove_file(&lock_path);
            Err(io_err("listen", path)(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_file_sits_next_to_the_socket() {
        assert_eq!(
            lock_path(Path::new("/run/sandbox-host/host.sock")),
            PathBuf::from("/run/sandbox-host/host.sock.lock")
        );
    }

    #[test]
    fn a_second_lock_on_one_socket_is_refused_with_the_holders_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let socket = tmp.path().join("host.sock");
        let first = take_lock(&socket).unwrap();
        match take_lock(&socket) {
            Err(DaemonError::AlreadyRunning { pid, .. }) => {
                assert_eq!(pid, Some(std::process::id() as i32));
            }
            other => panic!("{other:?}"),
        }
        drop(first);
        assert!(take_lock(&socket).is_ok());
    }
}
