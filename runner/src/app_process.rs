//! The app process: the data plane. Forked by init once restricted; holds only the data
//! socket (fd 4), loads the app and serves calls and reloads on it.
//!
//! Requests are served leader/follower style: the serving thread that holds the socket's read
//! lock reads the next frame, releases the lock (another serving thread takes over reading)
//! and answers the frame itself, so a call runs on the thread that read it, with no hand-off
//! on its path. When every serving thread is inside a call or a reload, a new one is started
//! first, so a slow call never delays a ping or a reload. A reload runs on the serving thread
//! that read it, one at a time; only its `dlopen` is handed to the long-lived loader thread,
//! which can be abandoned when a library's initialiser hangs (`loader.rs`; one hand-off each
//! way: a reload thread in between and a loader thread started per reload cost ~100 µs of
//! wake-ups and a clone). Calls take a reference to the current version; a reload swaps the
//! reference, so calls in flight finish on the version they started on and new calls see the
//! new one.
//!
//! Nothing here is believed by the host beyond the answers to its own requests.

use std::io::BufReader;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sandbox_abi::Status;

use super::app::LoadedApp;
use super::loader::Loader;
use super::{DATA_FD, Out};
use crate::error::ReloadError;
use proto::runner::{self as protocol, Body, ErrorKind, Loaded, Reloaded, Request, RequestFrame};

/// Serving threads kept when idle; more are started while every one is inside a call.
const IDLE_SERVERS: usize = 2;

/// State shared by the reader, call and reload threads.
struct Runner {
    current: RwLock<Arc<LoadedApp>>,
    /// The loader thread: `dlopen` (and the new version's config) runs there.
    loader: Arc<Loader>,
    /// Held for the whole of a reload: one at a time.
    reloading: Mutex<()>,
    out: Out,
    /// The read side of the control socket. Its lock is the leader token: the serving thread
    /// that holds it reads the next frame.
    reader: Mutex<BufReader<UnixStream>>,
    /// Serving threads that are not inside a call (reading, or waiting to read).
    free: AtomicUsize,
    /// Serving threads made but not yet past std's thread start, which takes glibc's loader
    /// lock (it registers a thread-local destructor): a reload lets them start before its
    /// `dlopen` can hold that lock, perhaps for ever.
    starting: AtomicUsize,
}

/// Entry point of the app process (forked by init). Never returns.
pub fn main() -> ! {
    // SAFETY: fd 4 was installed by the spawn sequence as the data socket and left to this
    // process by init; we are its only owner here.
    let sock = unsafe { UnixStream::from_raw_fd(DATA_FD) };
    let out = Out(Arc::new(Mutex::new(
        sock.try_clone().expect("clone data socket"),
    )));
    let reader = BufReader::with_capacity(64 * 1024, sock);

    let runner = match load(reader, &out) {
        Some(runner) => Arc::new(runner),
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
                    eprintln!("app process: bad frame from host: {e}");
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
        if runner.free.fetch_sub(1, Ordering::AcqRel) == 1 && !runner.loader.busy() {
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
    matches!(request, Request::Call { .. } | Request::Reload { .. })
}

/// Starts one more serving thread. When none can be made (pids.max reached, say), requests
/// wait until a busy thread finishes its call: slower, but the runner lives on.
fn start_server(runner: &Arc<Runner>) {
    runner.free.fetch_add(1, Ordering::AcqRel);
    runner.starting.fetch_add(1, Ordering::AcqRel);
    let for_thread = Arc::clone(runner);
    let started = std::thread::Builder::new()
        .name("serve".into())
        .spawn(move || {
            for_thread.starting.fetch_sub(1, Ordering::AcqRel);
            serve(&for_thread, true)
        });
    if started.is_err() {
        runner.free.fetch_sub(1, Ordering::AcqRel);
        runner.starting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads `load`, opens the app and answers [`Loaded`].
fn load(mut reader: BufReader<UnixStream>, out: &Out) -> Option<Runner> {
    let frame: RequestFrame = protocol::read_frame(&mut reader).ok()??;
    let Request::Load {
        lib,
        version,
        env,
        config,
        rlimits,
    } = frame.request
    else {
        out.err(
            frame.id,
            ErrorKind::BadRequest,
            "first request must be load",
        );
        return None;
    };
    // A prepared runner's tenant rlimits, before any app code runs in this process.
    if let Some((limits, host_root)) = rlimits
        && let Err(e) = isolation::Rlimits::from_limits(&limits, host_root).apply_to(0)
    {
        out.err(frame.id, ErrorKind::InitFailed, format!("set rlimits: {e}"));
        return None;
    }
    // SAFETY: the app process is single-threaded until `load` answers (no thread has been
    // started since the fork).
    unsafe { crate::tenant::set_process_env(&env) };
    let started = Instant::now();
    let app = match LoadedApp::open(&lib, version) {
        Ok(app) => app,
        Err(e) => {
            out.err(frame.id, ErrorKind::InitFailed, e.to_string());
            return None;
        }
    };
    if let Some(config) = &config
        && let Err(e) = app.configure(config)
    {
        out.err(
            frame.id,
            ErrorKind::InitFailed,
            format!("the app refused its config: {e}"),
        );
        return None;
    }
    let load_us = started.elapsed().as_micros() as u64;
    out.ok(
        frame.id,
        &Loaded {
            app_name: app.name(),
            app_version: app.app_version(),
            load_us,
            initial_workers: app.initial_workers(),
        },
    );
    let loader = Loader::start(config).expect("start the loader thread");
    Some(Runner {
        current: RwLock::new(Arc::new(app)),
        loader,
        reloading: Mutex::new(()),
        out: out.clone(),
        reader: Mutex::new(reader),
        free: AtomicUsize::new(0),
        starting: AtomicUsize::new(0),
    })
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
            // Moving the workers to the new version is init's job; the host tells it after
            // this answer.
            let timeout = Duration::from_millis(timeout_ms);
            match reload(runner, &lib, version, timeout) {
                Ok(done) => runner.out.ok(id, &done),
                Err(reason) => runner
                    .out
                    .err(id, ErrorKind::ReloadRefused, reason.to_string()),
            }
        }
        Request::Shutdown => {
            runner.out.ok(id, &serde_json::json!({"bye": true}));
            shutdown(runner)
        }
        Request::Load { .. } => runner.out.err(id, ErrorKind::BadRequest, "already loaded"),
        Request::Init { .. }
        | Request::SetEnv { .. }
        | Request::SpawnWorkers { .. }
        | Request::Workers
        | Request::SetVersion { .. }
        | Request::SetLimits { .. } => runner.out.err(
            id,
            ErrorKind::BadRequest,
            "workers and init belong to the control plane",
        ),
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
) -> Result<Reloaded, ReloadError> {
    let _one = runner.reloading.lock().unwrap_or_else(|e| e.into_inner());
    let old = Arc::clone(&runner.current.read().unwrap_or_else(|e| e.into_inner()));
    let started = Instant::now();
    // dlopen runs the library's initialisers, which may hang: it runs on the loader thread,
    // which is abandoned then. A hung loader keeps glibc's loader lock, so later reloads are
    // refused until the sandbox is restarted; calls go on, on prestarted threads, which must
    // be past their start first (see `starting`).
    while runner.starting.load(Ordering::Acquire) > 0 && started.elapsed() < timeout / 2 {
        std::thread::sleep(Duration::from_micros(20));
    }
    let new = runner.loader.load(lib, version, started, timeout)?;

    let state = old.save_state().map_err(ReloadError::OldVersion)?;
    let state_bytes = state.as_ref().map_or(0, Vec::len);
    if let Some(state) = &state {
        new.restore_state(state).map_err(ReloadError::NewVersion)?;
    }
    let load_us = started.elapsed().as_micros() as u64;
    // Past the deadline the host has given up on this reload (and restarts us on the old
    // version): swapping now would make the two disagree on the version serving.
    if started.elapsed() > timeout {
        return Err(ReloadError::HandOverTimeout(timeout));
    }
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

fn shutdown(_runner: &Runner) -> ! {
    std::process::exit(0)
}
