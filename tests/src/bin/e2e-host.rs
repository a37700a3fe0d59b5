//! The host binary under test (same main as `host`).

fn main() -> std::process::ExitCode {
    host::maybe_run_sandbox_child();
    host::cli::main()
}
