//! The `host` binary: a thin shell over the `host` library.

fn main() -> std::process::ExitCode {
    host::maybe_run_sandbox_child();
    host::cli::main()
}
