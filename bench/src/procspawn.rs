//! The floor and the peers: spawn a command with raw `posix_spawn` and wait for it.

use std::ffi::{CString, c_char};
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Pointers to `strings` followed by a null pointer, as `posix_spawn` takes argv and envp.
fn null_terminated(strings: &[CString]) -> Vec<*mut c_char> {
    strings
        .iter()
        .map(|a| a.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect()
}

/// A command ready to be spawned many times.
#[derive(Debug)]
pub struct Cmd {
    argv: Vec<CString>,
    envp: Vec<CString>,
}

impl Cmd {
    /// `argv[0]` must be an absolute path; the environment is only a standard `PATH`.
    pub fn new(argv: &[&str]) -> io::Result<Cmd> {
        let c = |s: &str| CString::new(s).map_err(io::Error::other);
        Ok(Cmd {
            argv: argv.iter().map(|a| c(a)).collect::<io::Result<_>>()?,
            envp: vec![c(
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )?],
        })
    }

    /// Spawns the command with `posix_spawn`, waits for it, and returns the wall time.
    /// Fails unless it exits with status 0.
    pub fn spawn_wait(&self) -> io::Result<Duration> {
        let (argv, envp) = (null_terminated(&self.argv), null_terminated(&self.envp));
        let started = Instant::now();
        let mut pid: libc::pid_t = 0;
        // SAFETY: the path, argv and envp are NUL-terminated strings kept alive by `self`,
        // and both arrays end with a null pointer; null file actions and attributes mean
        // the defaults.
        let rc = unsafe {
            libc::posix_spawn(
                &mut pid,
                self.argv[0].as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                argv.as_ptr(),
                envp.as_ptr(),
            )
        };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let mut status = 0;
        loop {
            // SAFETY: waits for the child just spawned; `status` is a valid out pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            if r == pid {
                break;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
        let elapsed = started.elapsed();
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            return Err(io::Error::other(format!(
                "{:?} ended with wait status {status:#x}",
                self.argv[0]
            )));
        }
        Ok(elapsed)
    }

    /// `n` timed runs after `warmup` untimed ones.
    pub fn sample(&self, warmup: usize, n: usize) -> io::Result<Vec<Duration>> {
        for _ in 0..warmup {
            self.spawn_wait()?;
        }
        (0..n).map(|_| self.spawn_wait()).collect()
    }
}

/// The absolute path `which` finds for `name`, or `None`.
pub fn which(name: &str) -> Option<PathBuf> {
    let out = std::process::Command::new("which")
        .arg(name)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!path.is_empty()).then(|| PathBuf::from(path))
}
