//! Command-line interface of the `host` binary.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Runs untrusted native apps in sandboxes and watches them with an AI operator.
#[derive(Debug, Parser)]
#[command(name = "host", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a sandbox from the demo app, call it, hot-reload a change, call it again.
    Example,
    /// The demo: sandbox, hot reload to 42, call, AI operator, guardrail (offline by default).
    Demo(crate::demo::DemoArgs),
    /// The anomaly demo: like `demo`, plus N extra worker processes the operator must notice.
    Anomaly {
        /// Extra supervised worker processes to start.
        #[arg(long, default_value_t = 25, allow_negative_numbers = true)]
        load: i64,
        /// Shared demo options.
        #[command(flatten)]
        args: crate::demo::DemoArgs,
    },
}

/// Parses argv and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("host: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Command::Example => runtime.block_on(crate::example::run()),
        Command::Demo(args) => {
            runtime.block_on(crate::demo::run(crate::demo::Mode::Plumbing, 0, args))
        }
        Command::Anomaly { load, args } => {
            runtime.block_on(crate::demo::run(crate::demo::Mode::Anomaly, load, args))
        }
    }
}
