//! The host binary under test (same main as `host`).

fn main() -> std::process::ExitCode {
    sandbox::maybe_run_sandbox_child();
    host::cli::main()
}
