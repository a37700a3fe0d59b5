//! What the tenant gave its sandbox beyond the app: environment variables (for the app
//! process at `load`, and for every worker init starts) and the config bytes (handed to the
//! app through the ABI at `load` and at each reload).

use std::sync::Mutex;

/// The tenant's environment for workers, set by the host's `set_env` before any worker
/// starts. Process-wide like the worker spawner that reads it (one init, one tenant).
static WORKER_ENV: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Sets the environment workers start with (from now on).
pub(crate) fn set_worker_env(env: Vec<(String, String)>) {
    *WORKER_ENV.lock().unwrap_or_else(|e| e.into_inner()) = env;
}

/// The environment workers start with.
pub(crate) fn env() -> Vec<(String, String)> {
    WORKER_ENV.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Sets the tenant's variables in this process's environment.
///
/// # Safety
/// The process must be single-threaded (the app process before its first thread starts):
/// `setenv` races with any concurrent `getenv`.
pub(crate) unsafe fn set_process_env(env: &[(String, String)]) {
    for (key, value) in env {
        // The host checked the names (no '=', no NUL, not empty); a bad one is skipped.
        if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
            continue;
        }
        // SAFETY: single-threaded, guaranteed by the caller.
        unsafe { std::env::set_var(key, value) };
    }
}
