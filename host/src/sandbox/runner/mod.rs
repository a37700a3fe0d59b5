//! The sandbox's init process: the `host` binary re-executed in a hidden mode.
//!
//! It owns fd 3, one end of a Unix socketpair whose other end the host holds. It applies its
//! self-restrictions, loads the app, starts the app's workers and then serves requests.
//!
//! Requests are served leader/follower style: the serving thread that holds the socket's read
//! lock reads the next frame, releases the lock (another serving thread takes over reading)
//! and answers the frame itself, so a call runs on the thread that read it, with no hand-off
//! on its path. When every serving thread is inside a call, a new one is started first, so a
//! slow call never delays a ping, a usage read or a reload; reloads run on a thread of their
//! own. Calls take a reference to the current version; a reload swaps the reference, so calls
//! in flight finish on the version they started on and new calls see the new one.
//!
//! No tokio and no HTTP here: the runner is plain threads and blocking I/O.

mod app;
mod supervisor;

use std::io::{BufReader, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sandbox_abi::Status;
use serde::Serialize;

use self::app::LoadedApp;
use self::supervisor::Supervisor;
use crate::sandbox::protocol::{
    self, Body, ErrorKind, Event, Ready, Reloaded, Request, RequestFrame, Response, RunnerError,
};

/// argv[1] that selects runner mode.
pub const RUNNER_ARG: &str = "__sandbox_runner";
/// argv[1] that selects worker mode.
pub const WORKER_ARG: &str = "__sandbox_worker";
/// The control socket's fd in the runner.
pub const CONTROL_FD: i32 = 3;
/// Exit status of a runner that raised `SIGABRT` while pid 1 of its pid namespace: `ABORT_EXIT`.
///
/// The kernel ignores a signal that a namespace's init sends itself unless it has a handler,
/// so glibc's `abort()` would fall back to a fault and the crash would read as SIGSEGV. As
/// pid 1 the runner therefore handles SIGABRT by exiting with this status, which the host
/// reports as the signal it was. (Faults such as a real SIGSEGV are forced by the kernel and
/// kill pid 1 as they kill anyone.)
pub const ABORT_EXIT: i32 = 200 + libc::SIGABRT;

/// A queued reload: request id, library, version, timeout.
type ReloadJob = (u64, PathBuf, u32, Duration);

/// Serving threads kept when idle; more are started while every one is inside a call.
const IDLE_SERVERS: usize = 2;

/// Shared write side of the control socket.
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

/// State shared by the reader, call and reload threads.
struct Runner {
    current: RwLock<Arc<LoadedApp>>,
    /// Reloads run one at a time on this long-lived thread (never behind calls).
    reloads: Mutex<mpsc::Sender<ReloadJob>>,
    /// Set when a load hung: glibc's loader lock is then held forever, so another `dlopen`
    /// (or a new thread) would block too.
    loader_stuck: std::sync::atomic::AtomicBool,
    supervisor: Arc<Supervisor>,
    out: Out,
    /// The read side of the control socket. Its lock is the leader token: the serving thread
    /// that holds it reads the next frame.
    reader: Mutex<BufReader<UnixStream>>,
    /// Serving threads that are not inside a call (reading, or waiting to read).
    free: AtomicUsize,
}

/// Entry point of runner mode. Never returns.
pub fn main() -> ! {
    // SAFETY: fd 3 was installed by the spawn sequence as our end of the socketpair; we are
    // its only owner in this process.
    let sock = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    set_cloexec(CONTROL_FD);
    // Orphans re-parent to us, so the reaper collects them and usage sees them.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if std::process::id() == 1 {
        report_aborts_as_pid_1();
    }
    let out = Out(Arc::new(Mutex::new(
        sock.try_clone().expect("clone control socket"),
    )));
    let reader = BufReader::with_capacity(64 * 1024, sock);

    let runner = match init(reader, &out) {
        Some((runner, reloads)) => {
            let runner = Arc::new(runner);
            let for_reloads = Arc::clone(&runner);
            std::thread::Builder::new()
                .name("reload".into())
                .spawn(move || reload_loop(for_reloads, reloads))
                .expect("start the reload thread");
            runner
        }
        None => std::process::exit(2),
    };
    // Serving threads are started now, not on demand: while a hung library initialiser holds
    // the loader lock, creating a thread blocks, and requests must still be served.
    for _ in 1..IDLE_SERVERS {
        start_server(&runner);
    }
    runner.free.fetch_add(1, Ordering::AcqRel);
    serve(&runner, false);
    unreachable!("the main serving thread never retires")
}

/// One serving thread: reads a frame while holding the read lock, then answers it. Returns
/// when the thread retires (more than [`IDLE_SERVERS`] idle and `may_retire`).
fn serve(runner: &Arc<Runner>, may_retire: bool) {
    loop {
        let frame: RequestFrame = {
            let mut reader = runner.reader.lock().unwrap_or_else(|e| e.into_inner());
            match protocol::read_frame(&mut *reader) {
                Ok(Some(frame)) => frame,
                Ok(None) => shutdown(runner),
                Err(e) => {
                    eprintln!("runner: bad frame from host: {e}");
                    shutdown(runner)
                }
            }
        };
        if !is_slow(&frame.request) {
            dispatch(runner, frame);
            continue;
        }
        // This thread is busy until the request is answered; if it was the last free one,
        // start another so the socket is still read meanwhile.
        if runner.free.fetch_sub(1, Ordering::AcqRel) == 1
            && !runner.loader_stuck.load(Ordering::Acquire)
        {
            start_server(runner);
        }
        dispatch(runner, frame);
        if runner.free.fetch_add(1, Ordering::AcqRel) + 1 > IDLE_SERVERS && may_retire {
            runner.free.fetch_sub(1, Ordering::AcqRel);
            return;
        }
    }
}

/// Requests that may take long: answered with the thread marked busy.
fn is_slow(request: &Request) -> bool {
    matches!(
        request,
        Request::Call { .. } | Request::SpawnWorkers { .. } | Request::Workers
    )
}

/// Starts one more serving thread. When none can be made (pids.max reached, say), requests
/// wait until a busy thread finishes its call: slower, but the runner lives on.
fn start_server(runner: &Arc<Runner>) {
    runner.free.fetch_add(1, Ordering::AcqRel);
    let for_thread = Arc::clone(runner);
    let started = std::thread::Builder::new()
        .name("serve".into())
        .spawn(move || serve(&for_thread, true));
    if started.is_err() {
        runner.free.fetch_sub(1, Ordering::AcqRel);
    }
}

fn init(
    mut reader: BufReader<UnixStream>,
    out: &Out,
) -> Option<(Runner, mpsc::Receiver<ReloadJob>)> {
    let frame: RequestFrame = protocol::read_frame(&mut reader).ok()??;
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
        return None;
    };
    let restrict_started = Instant::now();
    let applied = match crate::sandbox::restrict::apply_in_runner(&restrictions) {
        Ok(applied) => applied,
        Err(e) => {
            out.err(
                frame.id,
                ErrorKind::InitFailed,
                format!("restrictions: {e}"),
            );
            return None;
        }
    };
    let restrict_us = restrict_started.elapsed().as_micros() as u64;
    let started = Instant::now();
    let app = match LoadedApp::open(&lib, version) {
        Ok(app) => app,
        Err(e) => {
            out.err(frame.id, ErrorKind::InitFailed, e.to_string());
            return None;
        }
    };
    let load_us = started.elapsed().as_micros() as u64;
    let events_out = out.clone();
    let supervisor = Supervisor::start(
        &lib,
        version,
        Arc::new(move |event: Event| events_out.send(0, Body::Event(event))),
    );
    let ready = Ready {
        app_name: app.name(),
        app_version: app.app_version(),
        load_us,
        restrict_us,
        restrictions: applied,
    };
    out.ok(frame.id, &ready);
    // The app answers calls from here on. Its workers start on a thread of their own, so
    // the first call does not wait for their exec; a `workers` request waits for them.
    supervisor.spawn_initial(app.initial_workers());
    let (reload_tx, reload_rx) = mpsc::channel();
    let runner = Runner {
        current: RwLock::new(Arc::new(app)),
        reloads: Mutex::new(reload_tx),
        loader_stuck: Default::default(),
        supervisor,
        out: out.clone(),
        reader: Mutex::new(reader),
        free: AtomicUsize::new(0),
    };
    Some((runner, reload_rx))
}

/// The reload thread: takes reload requests in order.
fn reload_loop(runner: Arc<Runner>, requests: mpsc::Receiver<ReloadJob>) {
    let restarts = start_worker_mover(&runner);
    for (id, lib, version, timeout) in requests {
        match reload(&runner, &lib, version, timeout) {
            Ok(done) => {
                // Workers started from now on run the new version; those running move after
                // the answer, on a thread of their own: the swap is done and calls already see
                // the new code, and restarting processes (an exec each) is on neither this
                // reload's clock nor the next's.
                runner.supervisor.set_version(&lib, version);
                runner.out.ok(id, &done);
                match &restarts {
                    Some(tx) => {
                        let _ = tx.send(());
                    }
                    None => move_workers(&runner),
                }
            }
            Err(reason) => runner.out.err(id, ErrorKind::ReloadRefused, reason),
        }
    }
}

/// Starts the thread that moves running workers to the newest version; queued requests
/// collapse into one. `None` when no thread could be made (reloads then move them inline).
fn start_worker_mover(runner: &Arc<Runner>) -> Option<mpsc::Sender<()>> {
    let (tx, rx) = mpsc::channel::<()>();
    let runner = Arc::clone(runner);
    std::thread::Builder::new()
        .name("worker-mover".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                while rx.try_recv().is_ok() {}
                move_workers(&runner);
            }
        })
        .ok()
        .map(|_| tx)
}

/// Restarts every worker on an older version; a failure shows up as a crash event.
fn move_workers(runner: &Runner) {
    if let Err(e) = runner.supervisor.restart_stale() {
        runner
            .out
            .send(0, Body::Event(Event::Crashed { reason: e }));
    }
}

fn dispatch(runner: &Arc<Runner>, frame: RequestFrame) {
    let id = frame.id;
    match frame.request {
        Request::Ping => runner.out.ok(id, &serde_json::json!({"pong": true})),
        Request::Call { function, args } => {
            let app = Arc::clone(&runner.current.read().unwrap_or_else(|e| e.into_inner()));
            answer_call(&runner.out, id, &app, &function, &args);
        }
        Request::Reload {
            lib,
            version,
            timeout_ms,
        } => {
            let timeout = Duration::from_millis(timeout_ms);
            let queued = runner
                .reloads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send((id, lib, version, timeout));
            if queued.is_err() {
                runner
                    .out
                    .err(id, ErrorKind::ReloadRefused, "the reload thread is gone");
            }
        }
        Request::SpawnWorkers { count } => match runner.supervisor.spawn(count) {
            Ok(list) => runner.out.ok(id, &list),
            Err(e) if runner.supervisor.list().crashed => runner.out.err(id, ErrorKind::Crashed, e),
            Err(e) => runner.out.err(id, ErrorKind::BadRequest, e),
        },
        Request::Workers => runner.out.ok(id, &runner.supervisor.list()),
        Request::Shutdown => {
            runner.out.ok(id, &serde_json::json!({"bye": true}));
            shutdown(runner)
        }
        Request::Init { .. } => runner
            .out
            .err(id, ErrorKind::BadRequest, "already initialised"),
    }
}

fn answer_call(out: &Out, id: u64, app: &LoadedApp, function: &str, args: &str) {
    let result = app.call(function, args);
    match result.status {
        Status::Ok => match serde_json::from_str::<serde_json::Value>(&result.payload) {
            Ok(value) => out.send(id, Body::Ok(value)),
            Err(e) => out.err(
                id,
                ErrorKind::AppError,
                format!("app returned invalid JSON: {e}"),
            ),
        },
        Status::AppError => out.err(id, ErrorKind::AppError, result.payload),
        Status::Panicked => out.err(id, ErrorKind::Panicked, result.payload),
        Status::UnknownFunction => out.err(
            id,
            ErrorKind::UnknownFunction,
            format!("no function {function:?}"),
        ),
    }
}

/// Loads `lib`, moves state across and swaps it in; any failure leaves the old version.
fn reload(
    runner: &Runner,
    lib: &Path,
    version: u32,
    timeout: Duration,
) -> Result<Reloaded, String> {
    if runner.loader_stuck.load(Ordering::Acquire) {
        return Err(
            "an earlier load hung and holds the loader lock: restart the sandbox to reload again"
                .into(),
        );
    }
    let old = Arc::clone(&runner.current.read().unwrap_or_else(|e| e.into_inner()));
    let started = Instant::now();

    // dlopen runs the library's initialisers, which may hang: do it on a thread we can
    // abandon. A hung loader keeps glibc's loader lock, so later reloads are refused until
    // the sandbox is restarted; calls go on, on prestarted threads.
    let (tx, rx) = mpsc::channel();
    let path = lib.to_owned();
    std::thread::Builder::new()
        .name("loader".into())
        .spawn(move || {
            let _ = tx.send(LoadedApp::open(&path, version));
        })
        .map_err(|e| format!("cannot start a loader thread: {e}"))?;
    let new = match rx.recv_timeout(timeout) {
        Ok(Ok(app)) => app,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => {
            return Err(format!(
                "loading {} took longer than {timeout:?}",
                lib.display()
            ));
        }
    };

    let state = old.save_state().map_err(|e| format!("old version: {e}"))?;
    let state_bytes = state.as_ref().map_or(0, Vec::len);
    if let Some(state) = &state {
        new.restore_state(state)
            .map_err(|e| format!("new version: {e}"))?;
    }
    let load_us = started.elapsed().as_micros() as u64;
    let app_version = new.app_version();
    *runner.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
    Ok(Reloaded {
        from_version: old.version,
        to_version: version,
        load_us,
        app_version,
        state_bytes,
    })
}

fn shutdown(runner: &Runner) -> ! {
    runner.supervisor.stop_all();
    std::process::exit(0)
}

/// See [`ABORT_EXIT`].
fn report_aborts_as_pid_1() {
    extern "C" fn on_abort(_: libc::c_int) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(ABORT_EXIT) }
    }
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask"; the handler only calls
    // _exit.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_abort as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigaction(libc::SIGABRT, &action, std::ptr::null_mut());
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
