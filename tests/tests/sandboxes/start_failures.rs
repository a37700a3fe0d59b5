//! A start that fails after the runner was spawned must not leave the runner behind.

use std::time::Duration;

use e2e::prelude::*;
use sandbox::{AppSource, Level, SandboxError, SandboxSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_whose_ready_does_not_parse_is_killed_not_leaked() {
    let m = manager_with(|c| {
        c.runner_exe = env!("CARGO_BIN_EXE_e2e-fake-runner").into();
        c.start_timeout = Duration::from_secs(5);
    });
    let spec = SandboxSpec::new(AppSource::Library(built("sandbox_app").await))
        .with_isolation(Level::None);
    let err = m.create("fake", spec).await.unwrap_err();
    assert!(matches!(err, SandboxError::Protocol(_)), "{err:?}");
    let pid: i32 = std::fs::read_to_string(m.state.path().join("fake-runner.pid"))
        .expect("the fake runner ran")
        .trim()
        .parse()
        .unwrap();
    let gone = wait_until_async(Duration::from_secs(5), async || !alive(pid)).await;
    assert!(
        gone,
        "the runner {pid} was left running after its start failed"
    );
}
