//! Runs the hostile app's attacks through the library and prints what happened as one JSON
//! line. The containment tests run it as an unprivileged user (uid 65534), where the sandbox
//! gets a user namespace but no cgroup.
//!
//! * `e2e-attacks attacks LIB PLAN`: creates a `standard` sandbox from LIB and runs every
//!   attack; PLAN is JSON `{"secret": PATH, "outside_dir": DIR, "tcp": PORT, "udp": PORT,
//!   "suid": PATH}` (`suid`: a setuid-root program). The host attacked by `ptrace` is this
//!   process. Then a fork bomb in a second sandbox limited to 32 processes.
//! * `e2e-attacks strict LIB`: tries to create a `strict` sandbox from LIB.
//! * `e2e-attacks limits LIB`: creates a `standard` sandbox from LIB with `--max-memory 64M`
//!   and prints its limit warnings.
//!
//! Sandboxes live under `$XDG_RUNTIME_DIR/sandbox-host/sandboxes`; this binary is its own
//! runner (`/proc/self/exe`).

use std::path::PathBuf;
use std::time::Duration;

use sandbox::{AppSource, Level, Limits, Manager, ManagerConfig, SandboxSpec};
use serde_json::{Value, json};

fn main() {
    sandbox::maybe_run_sandbox_child();
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: e2e-attacks attacks LIB PLAN | e2e-attacks strict|limits LIB";
    let mode = args.get(1).expect(usage).clone();
    let lib = PathBuf::from(args.get(2).expect(usage));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let out = runtime.block_on(async {
        let manager = Manager::new(ManagerConfig::new("/proc/self/exe")).expect("manager");
        let out = match mode.as_str() {
            "attacks" => {
                let plan: Value =
                    serde_json::from_str(args.get(3).expect(usage)).expect("PLAN is JSON");
                attacks(&manager, lib, &plan).await
            }
            "strict" => strict(&manager, lib).await,
            "limits" => limits(&manager, lib).await,
            _ => panic!("{usage}"),
        };
        manager.destroy_all().await;
        out
    });
    println!("{out}");
}

/// Processes allowed to the fork bomb's sandbox.
const BOMB_MAX_PROCESSES: u64 = 32;

async fn attacks(manager: &Manager, lib: PathBuf, plan: &Value) -> Value {
    let id = "attacks";
    let info = manager
        .create(id, SandboxSpec::new(AppSource::Library(lib.clone())))
        .await
        .expect("create");
    let run = async |function: &str, args: Value| -> Value {
        match manager
            .run(id, function, args, Some(Duration::from_secs(10)))
            .await
        {
            Ok(v) => v,
            Err(e) => json!({ "call_error": e.to_string() }),
        }
    };
    let outside = PathBuf::from(plan["outside_dir"].as_str().expect("outside_dir"));
    let own_file = e2e::manager::work_dir(&info).join("mine.txt");
    // A program the sandbox may run: a copy of cat in its (read-only, executable) app dir.
    let cat = info.dir.join("app").join("cat");
    std::fs::copy("/usr/bin/cat", &cat).expect("copy cat into the app dir");
    let mut results = serde_json::Map::new();
    results.insert(
        "read_secret".into(),
        run("read_file", json!({ "path": plan["secret"] })).await,
    );
    results.insert(
        "write_outside".into(),
        run(
            "write_file",
            json!({ "path": outside.join("pwned-by-nobody") }),
        )
        .await,
    );
    results.insert(
        "write_sandbox_dir".into(),
        run("write_file", json!({ "path": info.dir.join("pwned") })).await,
    );
    results.insert(
        "write_own".into(),
        run("write_file", json!({"path": "/work/mine.txt"})).await,
    );
    results.insert(
        "read_shadow".into(),
        run("read_file", json!({"path": "/etc/shadow"})).await,
    );
    results.insert(
        "connect_unix".into(),
        run("connect_unix", json!({ "path": plan["unix"] })).await,
    );
    results.insert(
        "net".into(),
        run(
            "connect_net",
            json!({ "tcp": plan["tcp"], "udp": plan["udp"] }),
        )
        .await,
    );
    results.insert(
        "ptrace".into(),
        run("ptrace", json!({ "pid": std::process::id() })).await,
    );
    results.insert(
        "exec".into(),
        run("setuid_exec", json!({"path": "/app/cat"})).await,
    );
    results.insert(
        "become_root".into(),
        run("setuid_exec", json!({"path": "/app/cat", "uid": 0})).await,
    );
    results.insert(
        "suid_exec".into(),
        run("setuid_exec", json!({ "path": plan["suid"] })).await,
    );
    let daemon = run("daemon", Value::Null).await;
    let daemon_pid = daemon["ns_pid"]
        .as_i64()
        .and_then(|ns| e2e::manager::host_pid_in_sandbox(info.pid, ns as i32));
    let alive_before = daemon_pid.is_some_and(e2e::alive);
    let usage = manager.usage(id).await.map_or_else(
        |e| json!({ "error": e.to_string() }),
        |u| serde_json::to_value(u).expect("usage is JSON"),
    );
    let own_file_written = std::fs::read_to_string(&own_file).ok();
    manager.destroy(id).await.expect("destroy");
    manager.settled().await;
    e2e::wait_until_async(Duration::from_secs(3), async || {
        !daemon_pid.is_some_and(e2e::alive)
    })
    .await;
    results.insert(
        "daemon".into(),
        json!({
            "reported": daemon,
            "host_pid": daemon_pid,
            "alive_before_destroy": alive_before,
            "alive_after_destroy": daemon_pid.is_some_and(e2e::alive),
        }),
    );
    results.insert("fork_bomb".into(), fork_bomb(manager, lib).await);
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    json!({
        "uid": uid,
        "host_pid": std::process::id(),
        "isolation": info.isolation,
        "usage": usage,
        "own_file_written": own_file_written,
        "sandbox_dir_left": info.dir.exists(),
        "results": results,
    })
}

/// A fork bomb in a sandbox of [`BOMB_MAX_PROCESSES`] processes (without a cgroup, the
/// process rlimit of the sandbox's own user namespace is what holds it), then its destroy.
async fn fork_bomb(manager: &Manager, lib: PathBuf) -> Value {
    let id = "bomb";
    let spec = SandboxSpec {
        limits: Limits {
            max_processes: Some(BOMB_MAX_PROCESSES),
            ..Limits::default()
        },
        ..SandboxSpec::new(AppSource::Library(lib))
    };
    let info = manager.create(id, spec).await.expect("create the bomb");
    let bomb = manager
        .run(
            id,
            "fork_bomb",
            json!({"max": 1000, "failures": 10}),
            Some(Duration::from_secs(20)),
        )
        .await
        .unwrap_or_else(|e| json!({ "call_error": e.to_string() }));
    let answers_after = manager.run(id, "answer", Value::Null, None).await.is_ok();
    let destroyed = manager.destroy(id).await.is_ok();
    manager.settled().await;
    json!({
        "result": bomb,
        "isolation": info.isolation,
        "answers_after": answers_after,
        "destroyed": destroyed,
        "dir_left": info.dir.exists(),
        "runner_alive": e2e::alive(info.pid),
    })
}

async fn limits(manager: &Manager, lib: PathBuf) -> Value {
    let spec = SandboxSpec {
        limits: Limits {
            max_memory: Some(64 << 20),
            ..Limits::default()
        },
        ..SandboxSpec::new(AppSource::Library(lib))
    };
    match manager.create("limits", spec).await {
        Ok(info) => json!({ "created": true, "warnings": info.warnings }),
        Err(e) => json!({ "created": false, "error": e.to_string() }),
    }
}

async fn strict(manager: &Manager, lib: PathBuf) -> Value {
    let spec = SandboxSpec::new(AppSource::Library(lib)).with_isolation(Level::Strict);
    let result = manager.create("strict", spec).await;
    let left = std::fs::read_dir(&manager.config().state_dir)
        .map(|d| d.count())
        .unwrap_or(0);
    match result {
        Ok(info) => json!({ "created": true, "isolation": info.isolation }),
        Err(e) => json!({
            "created": false,
            // The wire's kind: a refused mechanism (`Isolation`) or the kernel's refusal
            // (`Kernel`, as a cgroup that cannot be made) alike.
            "isolation_error": e.kind() == "isolation",
            "error": e.to_string(),
            "sandboxes_left": manager.list().await.len(),
            "state_entries_left": left,
        }),
    }
}
