//! A test app that misbehaves on request: panics, crashes, hangs, lies, crash-loops.

use std::time::Duration;

fn answer(_: &str) -> Result<String, String> {
    Ok("1".into())
}

fn panic(_: &str) -> Result<String, String> {
    panic!("deliberate panic")
}

fn fail(_: &str) -> Result<String, String> {
    Err("deliberate failure".into())
}

fn segfault(_: &str) -> Result<String, String> {
    // SAFETY: not safe at all; this is the point of the test.
    unsafe { std::ptr::null_mut::<u64>().write_volatile(1) };
    Ok("unreachable".into())
}

fn abort(_: &str) -> Result<String, String> {
    std::process::abort()
}

fn sleep(args: &str) -> Result<String, String> {
    let ms: u64 = args.trim().parse().unwrap_or(1000);
    std::thread::sleep(Duration::from_millis(ms));
    Ok(ms.to_string())
}

fn bad_json(_: &str) -> Result<String, String> {
    Ok("this is not json".into())
}

/// Runs a child process of the app's own (`/runner --help`; its exit status does not matter)
/// and waits for it: `"ok"`, or an error naming why (ECHILD when something else in the app's
/// process reaped the child first).
fn child(_: &str) -> Result<String, String> {
    std::process::Command::new("/runner")
        .arg("--help")
        .output()
        .map(|_| "\"ok\"".into())
        .map_err(|e| format!("running a child: {e}"))
}

/// Starts `N` threads with `std::thread::spawn` (which panics when the kernel refuses one,
/// as a plugin author's code would), holds them until all have started, then ends them: `N`.
/// A panic part-way still ends the started ones (the guard's drop opens the gate).
fn threads(args: &str) -> Result<String, String> {
    use std::sync::{Arc, Condvar, Mutex};
    struct Gate(Arc<(Mutex<bool>, Condvar)>);
    impl Drop for Gate {
        fn drop(&mut self) {
            *self.0.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
            self.0.1.notify_all();
        }
    }
    let n: usize = args.trim().parse().unwrap_or(8);
    let gate = Gate(Arc::new((Mutex::new(false), Condvar::new())));
    let mut handles = Vec::new();
    for _ in 0..n {
        let shared = Arc::clone(&gate.0);
        handles.push(std::thread::spawn(move || {
            let (open, cv) = &*shared;
            let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
            while !*open {
                open = cv.wait(open).unwrap_or_else(|e| e.into_inner());
            }
        }));
    }
    drop(gate);
    for h in handles {
        let _ = h.join();
    }
    Ok(n.to_string())
}

fn save() -> Vec<u8> {
    Vec::new()
}

fn restore(_: &[u8]) -> Result<(), String> {
    panic!("restore_state refuses any state")
}

/// Idles, unless a file named `crashloop` exists in the working directory: then it dies.
fn worker(_: u32) -> i32 {
    loop {
        if std::path::Path::new("crashloop").exists() {
            std::thread::sleep(Duration::from_millis(20));
            std::process::abort();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

sandbox_abi::export_app! {
    name: "faulty_app",
    version: "0.1.0",
    functions: {
        "answer" => answer,
        "panic" => panic,
        "fail" => fail,
        "segfault" => segfault,
        "abort" => abort,
        "sleep" => sleep,
        "bad_json" => bad_json,
        "child" => child,
        "threads" => threads,
    },
    state: (save, restore),
    worker: worker,
    initial_workers: 1,
}
