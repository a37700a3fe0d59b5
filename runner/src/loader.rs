//! The loader thread and its hand-off with reloads: `dlopen` (which runs a library's
//! initialisers, and so may hang) runs on one long-lived thread that a reload can give up on.
//!
//! The hand-off is a mutex and a condvar, not a channel, for a reason found in CI: std's
//! channels register a thread-local destructor the first time a thread blocks on one, and
//! glibc's `__cxa_thread_atexit_impl` takes the loader lock (`dl_load_lock`) to do it. A
//! hung initialiser holds that lock for ever, so a reload whose serving thread had never
//! blocked on a channel before blocked there, past its own deadline, instead of answering
//! "took longer" (the host then timed out and restarted the sandbox). Nothing a reload does
//! while it waits may touch glibc's loader: a futex mutex and condvar do not.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::app::LoadedApp;
use crate::error::{LoadError, ReloadError};

/// The loader thread's side of a load: the library, its version, and its outcome.
#[derive(Default)]
struct Slot {
    /// The load the loader thread has yet to start.
    job: Option<(PathBuf, u32)>,
    /// The finished load, until its reload takes it.
    done: Option<Result<LoadedApp, LoadError>>,
    /// A reload is waiting for `done` (false once it gave up: the loader drops the result).
    awaited: bool,
}

/// One loader thread and its hand-off (shared by the serving threads; reloads are one at a
/// time, the caller's lock).
pub(crate) struct Loader {
    slot: Mutex<Slot>,
    wake: Condvar,
    /// Set from before a job is handed over until the loader finished it, if ever. Still set
    /// when the next reload starts: the earlier load outlived its deadline and may hang holding
    /// glibc's loader lock, so another `dlopen` (or a new thread) could block too.
    busy: AtomicBool,
}

impl Loader {
    /// Starts the loader thread; every version it opens gets `config`.
    pub(crate) fn start(config: Option<Vec<u8>>) -> std::io::Result<Arc<Loader>> {
        let loader = Arc::new(Loader {
            slot: Mutex::default(),
            wake: Condvar::new(),
            busy: AtomicBool::new(false),
        });
        let for_thread = Arc::clone(&loader);
        std::thread::Builder::new()
            .name("loader".into())
            .spawn(move || for_thread.run(config))?;
        Ok(loader)
    }

    /// Whether a load is under way (or hung).
    pub(crate) fn busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    /// Opens `lib` on the loader thread and waits for it until `timeout` after `since`.
    /// Refused at once while an earlier load has not ended.
    pub(crate) fn load(
        &self,
        lib: &Path,
        version: u32,
        since: Instant,
        timeout: Duration,
    ) -> Result<LoadedApp, ReloadError> {
        let mut slot = self.lock();
        if self.busy() {
            return Err(ReloadError::LoaderStuck);
        }
        self.busy.store(true, Ordering::Release);
        *slot = Slot {
            job: Some((lib.to_owned(), version)),
            done: None,
            awaited: true,
        };
        self.wake.notify_all();
        let (mut slot, _) = self
            .wake
            .wait_timeout_while(slot, timeout.saturating_sub(since.elapsed()), |s| {
                s.done.is_none()
            })
            .unwrap_or_else(|e| e.into_inner());
        match slot.done.take() {
            Some(opened) => Ok(opened?),
            None => {
                // The loader drops the library when (if ever) it is done with it.
                slot.awaited = false;
                Err(ReloadError::LoadTimeout {
                    path: lib.to_owned(),
                    timeout,
                })
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The loader thread: opens each library it is given (running its initialisers) and
    /// gives it its config. A hung initialiser keeps it for ever.
    fn run(&self, config: Option<Vec<u8>>) {
        loop {
            let (path, version) = {
                let slot = self.lock();
                let mut slot = self
                    .wake
                    .wait_while(slot, |s| s.job.is_none())
                    .unwrap_or_else(|e| e.into_inner());
                slot.job.take().expect("woken with a job")
            };
            let opened = LoadedApp::open(&path, version).and_then(|app| match &config {
                Some(config) => {
                    app.configure(config)
                        .map(|_| app)
                        .map_err(|reason| LoadError::Configure {
                            path: path.clone(),
                            reason,
                        })
                }
                None => Ok(app),
            });
            let unwanted = {
                let mut slot = self.lock();
                // Cleared before the result is handed over, so the reload that takes it (and
                // the next one it lets the host send) finds the loader free.
                self.busy.store(false, Ordering::Release);
                if slot.awaited {
                    slot.done = Some(opened);
                    self.wake.notify_all();
                    None
                } else {
                    Some(opened)
                }
            };
            // Its reload gave up on it: the library is closed again, outside the lock.
            drop(unwanted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::AtomicBool;

    /// A C library whose initialiser blocks until a byte arrives on `fifo`: opening the fifo
    /// for writing returns once the initialiser runs, that is once glibc's loader lock is held.
    fn hanging_library(dir: &Path, fifo: &Path) -> Option<PathBuf> {
        let source = dir.join("hang.c");
        std::fs::write(
            &source,
            format!(
                "#include <fcntl.h>\n#include <unistd.h>\n\
                 __attribute__((constructor)) static void hang(void) {{\n\
                 char c; int fd = open({:?}, O_RDONLY); if (fd >= 0) {{ read(fd, &c, 1); close(fd); }}\n}}\n",
                fifo.to_str().unwrap()
            ),
        )
        .unwrap();
        let lib = dir.join("libhang.so");
        let built = std::process::Command::new("cc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&lib)
            .arg(&source)
            .status();
        matches!(built, Ok(s) if s.success()).then_some(lib)
    }

    #[test]
    fn a_load_waited_for_on_a_fresh_thread_times_out_while_another_initialiser_hangs() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("release");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let Some(lib) = hanging_library(dir.path(), &fifo) else {
            testkit::skip("no C compiler (cc) to build a library whose initialiser hangs");
            return;
        };
        // Every thread is made before the loader lock is taken: making one may need it.
        let loader = Loader::start(None).unwrap();
        let go = Arc::new(AtomicBool::new(false));
        let waited = Arc::new(Mutex::new(None));
        let ready = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (go, waited, loader) = (go.clone(), waited.clone(), loader.clone());
            let ready = ready.clone();
            let missing = dir.path().join("missing.so");
            std::thread::spawn(move || {
                ready.store(true, Ordering::Release);
                while !go.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let started = Instant::now();
                let outcome = loader.load(&missing, 2, started, Duration::from_millis(200));
                *waited.lock().unwrap() = Some((started.elapsed(), outcome.err()));
            })
        };
        // A Rust thread's own start takes the loader lock (std registers a thread-local
        // destructor): the waiter and the loader must be past theirs. The loader is once it
        // answered a load.
        let first = loader.load(
            &dir.path().join("absent.so"),
            1,
            Instant::now(),
            Duration::from_secs(10),
        );
        assert!(matches!(first, Err(ReloadError::Load(_))), "{first:?}");
        while !ready.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let holder = std::thread::spawn(move || {
            // SAFETY: the library's only code is its initialiser above.
            unsafe { libloading::Library::new(&lib) }.map(drop)
        });
        // Returns once the initialiser opened the fifo: the loader lock is held from here.
        let mut release = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        go.store(true, Ordering::Release);
        let deadline = Instant::now() + Duration::from_secs(5);
        while waited.lock().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let outcome = waited.lock().unwrap().take();
        release.write_all(b"x").unwrap();
        drop(release);
        holder.join().unwrap().unwrap();
        waiter.join().unwrap();
        let (took, err) = outcome.expect("the load's waiter blocked past its deadline");
        assert!(
            matches!(err, Some(ReloadError::LoadTimeout { .. })),
            "{err:?}"
        );
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
}
