//! The `sandboxes` test binary: the sandbox library (`sandbox::Manager`) in the test process,
//! driving real sandboxes of the test apps (namespaces, cgroups, seccomp, Landlock): their
//! lifecycle, faults, the two planes, the runner pool, start failures, containment of a
//! hostile app, escapes, batch operations, and regressions.
//!
//! Why one binary of its own: every test here runs the manager in process, so its sandboxes
//! are the test process's children (killed with it, found in its process tree), and the test
//! apps are built once for all of them. It builds no crate while another test watches the
//! process tree for builds (that is `builds`), and runs no daemon or CLI flow (`daemon`,
//! `demo`). `scripts/cgroup-v2-test.sh` runs its `containment::`, `escape::` and one
//! `lifecycle::` test in a cgroup v2 guest.

mod app_config;
mod batch;
mod containment;
mod coordinator;
mod defects;
mod escape;
mod faults;
mod lifecycle;
mod limits_said;
mod logs;
mod planes;
mod pool;
mod skills;
mod start_failures;
mod tenants;

/// The library finds the binaries cargo built for these tests.
#[test]
fn the_library_runs_the_binaries_cargo_built() {
    let canonical = |p: &std::path::Path| p.canonicalize().unwrap();
    assert_eq!(
        canonical(e2e::bins::host()),
        canonical(std::path::Path::new(env!("CARGO_BIN_EXE_e2e-host")))
    );
}
