//! Creates a sandbox from the library given as argv[1], waits for its initial workers,
//! prints `runner <pid>`, then waits forever: the test kills this process and checks that
//! the runner and its workers die with it.

use sandbox::{AppSource, Manager, ManagerConfig, SandboxSpec};

fn main() {
    sandbox::maybe_run_sandbox_child();
    let lib = std::env::args()
        .nth(1)
        .expect("usage: e2e-holder LIB STATE_DIR");
    let state = std::env::args()
        .nth(2)
        .expect("usage: e2e-holder LIB STATE_DIR");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut config = ManagerConfig::new("/proc/self/exe");
        config.state_dir = state.into();
        let manager = Manager::new(config).expect("manager");
        let spec = SandboxSpec::new(AppSource::Library(lib.into()));
        let info = manager.create("held", spec).await.expect("create");
        // The initial workers start after `ready`; `workers` answers once they have.
        manager.workers("held").await.expect("workers");
        println!("runner {}", info.pid);
        std::future::pending::<()>().await;
    });
}
