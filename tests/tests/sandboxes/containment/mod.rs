//! Containment: a hostile app (tests/apps/hostile_app) attacks its host and its neighbours, and
//! each attack must fail, stopped by a mechanism that the sandbox's isolation report lists as
//! applied. The host stays responsive throughout: a second sandbox keeps answering and
//! `usage` keeps working while the attacks run.
//!
//! Root runs most tests (cgroups need it on this v1 machine); `unprivileged` runs the library
//! as uid 65534 through `e2e-attacks`, where the sandbox gets a user namespace instead of a
//! cgroup.

mod files;
mod network;
mod processes;
mod resources;
mod unprivileged;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use sandbox::Manager;
use serde_json::{Value, json};

/// Calls `function` of sandbox `id`, which must answer within 30 s.
async fn call(m: &Manager, id: &str, function: &str, args: Value) -> Value {
    m.run(id, function, args, Some(Duration::from_secs(30)))
        .await
        .unwrap_or_else(|e| panic!("{id}: {function}: {e}"))
}

/// The host is responsive: sandbox `id` answers within a second.
async fn answers(m: &Manager, id: &str) {
    let started = Instant::now();
    let answer = m
        .run(id, "answer", Value::Null, Some(Duration::from_secs(2)))
        .await
        .unwrap_or_else(|e| panic!("{id} did not answer: {e}"));
    assert_eq!(answer, json!(1));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{id} took {:?} to answer",
        started.elapsed()
    );
}

/// Runs the attack `function` of sandbox `id` in the background while `neighbour` answers
/// promptly; returns the attack's result.
async fn while_neighbour_answers(
    m: &Manager,
    id: &str,
    function: &str,
    args: Value,
    neighbour: &str,
) -> Value {
    let attack = {
        let (m, id, function) = (m.clone(), id.to_string(), function.to_string());
        tokio::spawn(async move { call(&m, &id, &function, args).await })
    };
    answers(m, neighbour).await;
    attack.await.unwrap()
}

/// Writes a world-readable secret into a world-readable scratch directory (file permissions
/// would let anyone read it); returns the directory, to keep, and the file.
fn world_readable_secret() -> (tempfile::TempDir, std::path::PathBuf) {
    let secrets = e2e::scratch_with_mode(0o755);
    let secret = secrets.path().join("secret.txt");
    std::fs::write(&secret, "the host's secret").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    (secrets, secret)
}

/// Copies `/usr/bin/cat` to `path` as a setuid-root program.
fn setuid_root_cat(path: &Path) {
    std::fs::copy("/usr/bin/cat", path).unwrap();
    std::os::unix::fs::chown(path, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o4755)).unwrap();
}
