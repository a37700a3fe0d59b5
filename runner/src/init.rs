//! The sandbox's init: the control plane. It never loads app code.
//!
//! In order:
//! 1. Takes fd 3 (control) and fd 4 (data), both close-on-exec; becomes a child subreaper
//!    when it is not pid 1 (level `none`); makes itself not dumpable, so the app process (same
//!    uid) can neither read its memory through `/proc/1/mem` nor attach to it (seccomp refuses
//!    `ptrace` too). As pid 1 of its pid namespace it installs no signal handler, so the kernel
//!    drops every signal the app sends it, `SIGKILL` included.
//! 2. Reads `init`, applies the self-restrictions (no_new_privs, Landlock, seccomp) to itself.
//! 3. Routes stdout and stderr (the app process's, and the workers' through pipes of their
//!    own) into records of the log, with a budget ([`crate::log_budget::LOG_BYTES_PER_SEC`],
//!    and the log file never past [`proto::info::LOG_FILE_BYTES`], whatever earlier runners
//!    left in it: the host rotates it between runners), so the app cannot fill the host's
//!    disk through its log. When the app process exits, what it wrote last is copied (or, over
//!    the budget, its last bytes said in a notice) before init reports the exit.
//! 4. Forks the app process while still single-threaded: the child closes fd 3 and serves the
//!    data plane on fd 4 ([`super::app_process`]); init closes fd 4.
//! 5. Starts the worker supervisor (its reaper also waits for the app process), answers
//!    `ready`, then serves control requests one at a time.
//!
//! When the app process exits, init reports how (`app_exited`), stops the workers and exits:
//! the host restarts the sandbox as it restarts any runner that died.

use std::io::BufReader;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::supervisor::Supervisor;
use super::{CONTROL_FD, DATA_FD, Out, set_cloexec};
use proto::runner::{self as protocol, Body, ErrorKind, Event, InitReady, Request, RequestFrame};

use crate::log::LogPipe;

/// Entry point of runner mode. Never returns.
pub fn main() -> ! {
    // SAFETY: fd 3 was installed by the spawn sequence as our end of the control socketpair;
    // we are its only owner in this process.
    let sock = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    set_cloexec(CONTROL_FD);
    set_cloexec(DATA_FD);
    // SAFETY: prctl with integer arguments only.
    unsafe {
        if libc::getpid() != 1 {
            // Orphans re-parent to us, so the reaper collects them and usage sees them.
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let out = Out(Arc::new(Mutex::new(
        sock.try_clone().expect("clone control socket"),
    )));
    let mut reader = BufReader::with_capacity(64 * 1024, sock);
    let Ok(Some(frame)) = protocol::read_frame::<_, RequestFrame>(&mut reader) else {
        std::process::exit(2)
    };
    let Request::Init {
        lib,
        version,
        restrictions,
    } = frame.request
    else {
        out.err(
            frame.id,
            ErrorKind::BadRequest,
            "first request must be init",
        );
        std::process::exit(2)
    };
    let restrict_started = Instant::now();
    let applied = match crate::restrict::apply_in_runner(&restrictions) {
        Ok(applied) => applied,
        Err(e) => {
            out.err(
                frame.id,
                ErrorKind::InitFailed,
                format!("restrictions: {e}"),
            );
            std::process::exit(2)
        }
    };
    let restrict_us = restrict_started.elapsed().as_micros() as u64;
    let log = match LogPipe::install() {
        Ok(log) => log,
        Err(e) => {
            out.err(frame.id, ErrorKind::InitFailed, format!("log pipe: {e}"));
            std::process::exit(2)
        }
    };
    let fork_started = Instant::now();
    // SAFETY: init is single-threaded here (no thread has been started yet), so the child may
    // run ordinary code.
    let app_pid = match unsafe { libc::fork() } {
        -1 => {
            let e = std::io::Error::last_os_error();
            out.err(
                frame.id,
                ErrorKind::InitFailed,
                format!("fork the app process: {e}"),
            );
            std::process::exit(2)
        }
        0 => become_app_process(out, reader, log),
        pid => pid,
    };
    // SAFETY: closing init's copy of the data socket, which only the app process may hold.
    unsafe { libc::close(DATA_FD) };
    let fork_us = fork_started.elapsed().as_micros() as u64;
    let log = log.forward();
    let events_out = out.clone();
    let exit_out = out.clone();
    let supervisor = Supervisor::start(
        &lib,
        version,
        Arc::new(move |event: Event| events_out.send(0, Body::Event(event))),
        app_pid,
        Box::new(move |how: String| {
            // What the app wrote before it exited is in the log before the host hears of the
            // exit (it shows the log's last lines with the crash).
            log.finish(Duration::from_millis(500));
            exit_out.send(0, Body::Event(Event::AppExited { how }));
        }),
    );
    out.ok(
        frame.id,
        &InitReady {
            restrict_us,
            fork_us,
            restrictions: applied,
        },
    );
    serve(&mut reader, &out, &supervisor, app_pid)
}

/// The forked child: drops everything of the control plane and serves the data plane.
fn become_app_process(out: Out, reader: BufReader<UnixStream>, log: LogPipe) -> ! {
    // Every fd but stdio and the data socket goes: the control socket (fd 3 and the writer's
    // duplicate), the log file and the pipe's read end. The Rust owners are forgotten, not
    // dropped, so nothing closes those numbers again later.
    std::mem::forget((out, reader, log));
    // SAFETY: close(2)/close_range(2) and integer-argument prctls in a single-threaded
    // child; DATA_FD (4) is kept, everything from 5 up and fd 3 are closed.
    unsafe {
        libc::close(CONTROL_FD);
        libc::syscall(libc::SYS_close_range, DATA_FD as u32 + 1, u32::MAX, 0u32);
        // Dumpable again: the host reads this process's /proc files, which a non-root host
        // may only do for a dumpable process.
        libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    }
    super::app_process::main()
}

/// Control requests, one at a time, until the host closes the socket.
fn serve(
    reader: &mut BufReader<UnixStream>,
    out: &Out,
    supervisor: &Arc<Supervisor>,
    app_pid: i32,
) -> ! {
    loop {
        let frame: RequestFrame = match protocol::read_frame(reader) {
            Ok(Some(frame)) => frame,
            Ok(None) => stop(supervisor, app_pid),
            Err(e) => {
                eprintln!("init: bad frame from host: {e}");
                stop(supervisor, app_pid)
            }
        };
        let id = frame.id;
        match frame.request {
            Request::Ping => out.ok(id, &serde_json::json!({"pong": true})),
            Request::SpawnWorkers { count } => match supervisor.spawn(count) {
                Ok(list) => out.ok(id, &list),
                Err(e) if supervisor.list().crashed => {
                    out.err(id, ErrorKind::Crashed, e.to_string())
                }
                Err(e) => out.err(id, ErrorKind::BadRequest, e.to_string()),
            },
            Request::Workers => out.ok(id, &supervisor.list()),
            Request::SetEnv { env } => {
                crate::tenant::set_worker_env(env);
                out.ok(id, &serde_json::json!({"env": true}));
            }
            Request::SetVersion { lib, version } => {
                supervisor.set_version(&lib, version);
                out.ok(id, &serde_json::json!({"version": version}));
                if let Err(reason) = supervisor.restart_stale() {
                    out.send(
                        0,
                        Body::Event(Event::Crashed {
                            reason: reason.to_string(),
                        }),
                    );
                }
            }
            Request::SetLimits { limits, host_root } => {
                let rlimits = isolation::Rlimits::from_limits(&limits, host_root);
                match [0, app_pid]
                    .iter()
                    .try_for_each(|&pid| rlimits.apply_to(pid))
                {
                    Ok(()) => out.ok(id, &serde_json::json!({"limits": rlimits.describe()})),
                    Err(e) => out.err(id, ErrorKind::BadRequest, e.to_string()),
                }
            }
            Request::Shutdown => {
                out.ok(id, &serde_json::json!({"bye": true}));
                stop(supervisor, app_pid)
            }
            Request::Init { .. } => out.err(id, ErrorKind::BadRequest, "already initialised"),
            Request::Load { .. } | Request::Call { .. } | Request::Reload { .. } => out.err(
                id,
                ErrorKind::BadRequest,
                "calls and reloads go to the app process (data plane)",
            ),
        }
    }
}

/// Stops the workers and the app process, and exits.
fn stop(supervisor: &Supervisor, app_pid: i32) -> ! {
    supervisor.stop_all();
    // SAFETY: kill(2) of our own child, which only we reap.
    unsafe { libc::kill(app_pid, libc::SIGKILL) };
    std::process::exit(0)
}
