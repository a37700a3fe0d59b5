//! The sandbox side: the `host` binary re-executed in a hidden mode, as two planes.
//!
//! * [`init`] is the sandbox's init (pid 1 of its pid namespace). It holds the control socket
//!   (fd 3), applies the self-restrictions, forks the app process, supervises the workers and
//!   reports what it observes: exits with their real status, restarts, crash loops. It never
//!   loads app code, so nothing the app does can make it lie.
//! * [`app_process`] is the app process, forked by init once restricted. It holds only the
//!   data socket (fd 4), loads the app and serves calls and reloads on it. Whatever it writes
//!   can only make its own calls fail.
//! * Workers are the binary re-executed in worker mode by init ([`worker_main`]).
//!
//! No tokio and no HTTP here: plain threads and blocking I/O.

mod app;
pub mod app_process;
pub mod error;
mod init;
mod loader;
mod log;
mod log_budget;
mod restrict;
mod supervisor;
mod tenant;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use self::app::LoadedApp;
use proto::runner::{self as protocol, Body, ErrorKind, Response, RunnerError};

pub use self::init::main;

pub use proto::runner::{ABORT_EXIT, CONTROL_FD, DATA_FD, RUNNER_ARG, WORKER_ARG};

/// Shared write side of a socket to the host.
#[derive(Debug, Clone)]
struct Out(Arc<Mutex<UnixStream>>);

impl Out {
    fn send(&self, id: u64, body: Body) {
        let Ok(bytes) = protocol::encode(&Response { id, body }) else {
            return;
        };
        let mut sock = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if sock.write_all(&bytes).is_err() {
            // The host is gone; PDEATHSIG will end us, but don't wait for it.
            std::process::exit(0);
        }
    }

    fn ok<T: Serialize>(&self, id: u64, value: &T) {
        let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        self.send(id, Body::Ok(value));
    }

    fn err(&self, id: u64, kind: ErrorKind, message: impl Into<String>) {
        self.send(
            id,
            Body::Err(RunnerError {
                kind,
                message: message.into(),
            }),
        );
    }
}

fn set_cloexec(fd: i32) {
    // SAFETY: fcntl on an fd we own, integer arguments only.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
}

/// Entry point of worker mode: `WORKER_ARG LIB INDEX RUNNER_PID`. Never returns.
pub fn worker_main(args: &[String]) -> ! {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let (Some(lib), Some(index), Some(parent)) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("worker: usage: {WORKER_ARG} LIB INDEX RUNNER_PID");
        std::process::exit(2);
    };
    // The runner may have died between fork and PDEATHSIG.
    if parent.parse::<u32>().ok() != Some(std::os::unix::process::parent_id()) {
        std::process::exit(0);
    }
    let index: u32 = index.parse().unwrap_or(0);
    let app = match LoadedApp::open(&PathBuf::from(lib), 0) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("worker {index}: {e}");
            std::process::exit(3);
        }
    };
    let Some(worker) = app.worker() else {
        std::process::exit(0)
    };
    // SAFETY: the worker entry is wrapped in catch_unwind by the export macro.
    let code = unsafe { worker(index) };
    std::process::exit(code)
}
