//! Supervises the app's worker processes, one_for_one with an OTP-style restart intensity.
//!
//! Workers are real OS processes (the runner binary re-executed in worker mode), so the process
//! count the host measures is real and `pids.max` bounds it. A worker that exits with status 0
//! is done and not restarted; one that dies by a signal or a non-zero status is restarted under
//! the same index. More than [`MAX_RESTARTS`] restarts within [`RESTART_WINDOW`] marks the
//! sandbox crashed: every worker is stopped and no more are started until the host restarts
//! the sandbox.
//!
//! The reaper thread waits on any child (`waitpid(-1)`), so it also reaps orphans that the
//! kernel re-parents to init (it is a child subreaper, or pid 1 of its namespace), and the app
//! process: when that exits, init reports how and exits too. The app's own children are the
//! app process's, never init's, so `waitpid(-1)` here cannot steal them.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, mpsc};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::error::WorkerError;
use proto::runner::{Event, WorkerInfo, WorkerList};

/// Restarts allowed within [`RESTART_WINDOW`] before the sandbox counts as crashed.
pub const MAX_RESTARTS: usize = 3;
/// The window of the restart intensity.
pub const RESTART_WINDOW: Duration = Duration::from_secs(5);
/// Upper bound on workers per sandbox, whatever the host asks for.
pub const MAX_WORKERS: usize = 4096;

/// Where events go (the control socket).
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// Told how the app process exited; init exits right after.
pub type AppExit = Box<dyn Fn(String) + Send + Sync>;

#[derive(Debug)]
struct Worker {
    index: u32,
    pid: i32,
    restarts: u32,
    version: u32,
}

#[derive(Debug, Default)]
struct State {
    workers: Vec<Worker>,
    next_index: u32,
    /// Pids we stopped on purpose; their exit is not a crash.
    retiring: HashSet<i32>,
    recent_restarts: VecDeque<Instant>,
    total_restarts: u32,
    crashed: bool,
}

/// The worker supervisor.
pub struct Supervisor {
    state: Mutex<State>,
    /// The library and version that workers start on. Apart from `state`, so that a reload
    /// sets it without waiting for processes being started under the `state` lock.
    current: Mutex<(PathBuf, u32)>,
    wake: Condvar,
    events: EventSink,
    /// The app process, and what to do when it exits.
    app: (i32, AppExit),
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// Creates the supervisor and starts its reaper thread, which also waits for the app
    /// process `app_pid` and calls `on_app_exit` when it is gone (then stops every worker and
    /// exits).
    pub fn start(
        lib: &Path,
        version: u32,
        events: EventSink,
        app_pid: i32,
        on_app_exit: AppExit,
    ) -> Arc<Supervisor> {
        let _ = worker_spawner();
        let sup = Arc::new(Supervisor {
            state: Mutex::new(State::default()),
            current: Mutex::new((lib.to_owned(), version)),
            wake: Condvar::new(),
            events,
            app: (app_pid, on_app_exit),
        });
        let reaper = Arc::clone(&sup);
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || reaper.reap_forever())
            .expect("spawn reaper thread");
        sup
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts `count` more workers on the current version.
    pub fn spawn(&self, count: u32) -> Result<WorkerList, WorkerError> {
        let mut st = self.lock();
        self.spawn_locked(&mut st, count)?;
        Ok(list(&st))
    }

    fn spawn_locked(&self, st: &mut State, count: u32) -> Result<(), WorkerError> {
        if st.crashed {
            return Err(WorkerError::Crashed);
        }
        if st.workers.len() + count as usize > MAX_WORKERS {
            return Err(WorkerError::TooMany { max: MAX_WORKERS });
        }
        let (lib, version) = self.current();
        let indices: Vec<u32> = (0..count).map(|i| st.next_index + i).collect();
        st.next_index += count;
        self.start_workers(st, &lib, version, indices)
    }

    /// Starts a worker on `lib` (version `version`) under each of `indices`.
    fn start_workers(
        &self,
        st: &mut State,
        lib: &Path,
        version: u32,
        indices: Vec<u32>,
    ) -> Result<(), WorkerError> {
        for index in indices {
            let pid = spawn_worker(lib, index).map_err(WorkerError::Spawn)?;
            st.workers.push(Worker {
                index,
                pid,
                restarts: 0,
                version,
            });
        }
        self.wake.notify_all();
        Ok(())
    }

    /// Lists the workers.
    pub fn list(&self) -> WorkerList {
        list(&self.lock())
    }

    /// Makes `lib` the version that workers start on from now on. Cheap: workers already
    /// running move later, with [`Supervisor::restart_stale`].
    pub fn set_version(&self, lib: &Path, version: u32) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = (lib.to_owned(), version);
    }

    fn current(&self) -> (PathBuf, u32) {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Moves every worker that runs an older version than the current one: stops its
    /// process and starts a new one under the same index.
    pub fn restart_stale(&self) -> Result<(), WorkerError> {
        let mut st = self.lock();
        let (lib, version) = self.current();
        let stale: Vec<(u32, i32)> = st
            .workers
            .iter()
            .filter(|w| w.version != version)
            .map(|w| (w.index, w.pid))
            .collect();
        for &(_, pid) in &stale {
            st.retiring.insert(pid);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        st.workers.retain(|w| w.version == version);
        if st.crashed {
            return Ok(());
        }
        self.start_workers(
            &mut st,
            &lib,
            version,
            stale.into_iter().map(|(i, _)| i).collect(),
        )
    }

    /// Kills every worker (on shutdown).
    pub fn stop_all(&self) {
        let mut st = self.lock();
        let pids: Vec<i32> = st.workers.drain(..).map(|w| w.pid).collect();
        for pid in pids {
            st.retiring.insert(pid);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    fn reap_forever(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), None) {
                Ok(status) => self.on_exit(status),
                Err(Errno::EINTR) => {}
                Err(_) => {
                    // No children: sleep until a worker is spawned (or re-check orphans).
                    let st = self.lock();
                    let _ = self.wake.wait_timeout(st, Duration::from_secs(1));
                }
            }
        }
    }

    fn on_exit(&self, status: WaitStatus) {
        let (pid, reason, clean) = match status {
            WaitStatus::Exited(pid, code) => (pid.as_raw(), format!("exit {code}"), code == 0),
            WaitStatus::Signaled(pid, sig, _) => (pid.as_raw(), format!("signal {sig}"), false),
            _ => return,
        };
        if pid == self.app.0 {
            (self.app.1)(reason);
            self.stop_all();
            std::process::exit(0);
        }
        let mut st = self.lock();
        if st.retiring.remove(&pid) {
            return;
        }
        let Some(pos) = st.workers.iter().position(|w| w.pid == pid) else {
            return; // an orphan we reaped, not one of ours
        };
        let worker = st.workers.swap_remove(pos);
        if clean {
            return;
        }
        let now = Instant::now();
        st.recent_restarts.push_back(now);
        while st
            .recent_restarts
            .front()
            .is_some_and(|t| now - *t > RESTART_WINDOW)
        {
            st.recent_restarts.pop_front();
        }
        if st.recent_restarts.len() > MAX_RESTARTS {
            st.crashed = true;
            let pids: Vec<i32> = st.workers.drain(..).map(|w| w.pid).collect();
            for pid in pids {
                st.retiring.insert(pid);
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let reason = format!(
                "worker {} died ({reason}); more than {MAX_RESTARTS} restarts in {}s",
                worker.index,
                RESTART_WINDOW.as_secs()
            );
            drop(st);
            (self.events)(Event::Crashed { reason });
            return;
        }
        let (lib, version) = self.current();
        match spawn_worker(&lib, worker.index) {
            Ok(new_pid) => {
                st.total_restarts += 1;
                st.workers.push(Worker {
                    index: worker.index,
                    pid: new_pid,
                    restarts: worker.restarts + 1,
                    version,
                });
                // Told before the lock is released: a `workers` answer that shows the restart
                // then goes out after the event, so the host has counted it by then.
                (self.events)(Event::WorkerRestarted {
                    index: worker.index,
                    old_pid: pid,
                    new_pid,
                    reason,
                });
                drop(st);
            }
            Err(e) => {
                st.crashed = true;
                drop(st);
                (self.events)(Event::Crashed {
                    reason: format!("cannot restart worker: {e}"),
                });
            }
        }
    }
}

fn list(st: &State) -> WorkerList {
    let mut workers: Vec<WorkerInfo> = st
        .workers
        .iter()
        .map(|w| WorkerInfo {
            index: w.index,
            pid: w.pid,
            restarts: w.restarts,
            version: w.version,
        })
        .collect();
    workers.sort_by_key(|w| w.index);
    WorkerList {
        workers,
        restarts: st.total_restarts,
        crashed: st.crashed,
    }
}

/// A worker spawn request: library, index, where the pid goes.
type SpawnJob = (PathBuf, u32, mpsc::Sender<std::io::Result<i32>>);

/// The one long-lived thread that starts every worker. A worker dies with the *thread* that
/// started it (`PR_SET_PDEATHSIG` follows the parent thread), and serving threads retire, so
/// workers are never started from them. Started with the supervisor, before any limit bites.
fn worker_spawner() -> Option<&'static Mutex<mpsc::Sender<SpawnJob>>> {
    // Process-wide because the kernel forces it: PR_SET_PDEATHSIG follows the parent thread,
    // so the one thread that starts workers must outlive every serving thread.
    static SPAWNER: OnceLock<Option<Mutex<mpsc::Sender<SpawnJob>>>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<SpawnJob>();
            std::thread::Builder::new()
                .name("worker-spawner".into())
                .spawn(move || {
                    for (lib, index, reply) in rx {
                        let _ = reply.send(spawn_worker_here(&lib, index));
                    }
                })
                .ok()
                .map(|_| Mutex::new(tx))
        })
        .as_ref()
}

/// Starts one worker on the worker-spawner thread (on this thread only when that thread
/// could not be made).
fn spawn_worker(lib: &Path, index: u32) -> std::io::Result<i32> {
    let Some(spawner) = worker_spawner() else {
        return spawn_worker_here(lib, index);
    };
    let (tx, rx) = mpsc::channel();
    let gone = || std::io::Error::other("the worker spawner thread is gone");
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((lib.to_owned(), index, tx))
        .map_err(|_| gone())?;
    rx.recv().map_err(|_| gone())?
}

/// Starts one worker: the runner binary in worker mode, with no inherited fds but stdio.
fn spawn_worker_here(lib: &Path, index: u32) -> std::io::Result<i32> {
    let mut command = Command::new("/proc/self/exe");
    command
        .arg(super::WORKER_ARG)
        .arg(lib)
        .arg(index.to_string())
        .arg(std::process::id().to_string())
        .env_clear()
        // Init's own environment (the spawn sequence's fixed PATH, LANG and TZ; init never
        // changes it), then the tenant's variables.
        .envs(std::env::vars_os())
        .envs(crate::tenant::env())
        .stdin(Stdio::null());
    // The workers' own pipes into the log (their lines are marked as the workers').
    match crate::log::worker_output() {
        Some((out, err)) => command.stdout(out).stderr(err),
        None => command.stdout(Stdio::null()),
    };
    let child = command.spawn()?;
    Ok(child.id() as i32)
}
