//! A start that fails after the runner was spawned must not leave the runner behind.

mod common;

use std::time::Duration;

use common::*;
use sandbox::{AppSource, Level, Manager, ManagerConfig, SandboxError, SandboxSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_whose_ready_does_not_parse_is_killed_not_leaked() {
    let state = scratch();
    let mut config = ManagerConfig::new(env!("CARGO_BIN_EXE_e2e-fake-runner"));
    config.state_dir = state.path().join("sandboxes");
    config.start_timeout = Duration::from_secs(5);
    let m = Manager::new(config).unwrap();
    let spec = SandboxSpec::new(AppSource::Library(built("sandbox_app").await))
        .with_isolation(Level::None);
    let err = m.create("fake", spec).await.unwrap_err();
    assert!(matches!(err, SandboxError::Protocol(_)), "{err:?}");
    let pid: i32 = std::fs::read_to_string(state.path().join("fake-runner.pid"))
        .expect("the fake runner ran")
        .trim()
        .parse()
        .unwrap();
    let gone = eventually(Duration::from_secs(5), async || !e2e::alive(pid)).await;
    assert!(
        gone,
        "the runner {pid} was left running after its start failed"
    );
}
