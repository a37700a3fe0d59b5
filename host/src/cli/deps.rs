//! `host deps fetch --app DIR`: has the daemon fill its own cargo cache with the crate's
//! dependencies (builds run offline and read only that cache). The client opens the crate
//! with its own rights and sends the descriptor, as for `create --app`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::client::{self, ClientArgs};
use crate::output::untrusted;
use proto::control::Request;

/// `host deps ...`.
#[derive(Debug, Args)]
pub struct DepsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: DepsCommand,
}

/// The `deps` subcommands.
#[derive(Debug, Subcommand)]
pub enum DepsCommand {
    /// Download the crate's dependencies into the daemon's cargo cache (`cargo fetch`, run by
    /// the daemon with its network; builds stay offline).
    Fetch {
        /// The app crate.
        #[arg(long, value_name = "DIR")]
        app: PathBuf,
        /// Client options.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Runs `host deps ...`.
pub fn run(a: DepsArgs) -> ExitCode {
    match a.command {
        DepsCommand::Fetch { app, client: args } => {
            let dir = match client::absolute(&app) {
                Ok(dir) => dir,
                Err(e) => return client::failure(args.json, &e),
            };
            let fd = match client::fds_for_crate(&dir) {
                Ok(fd) => fd,
                Err(e) => return client::failure(args.json, &e),
            };
            let shown = dir.clone();
            super::one_request_fds(
                &args,
                Request::DepsFetch { crate_dir: dir },
                fd,
                move |value, _| {
                    let ms = value["ms"].as_u64().unwrap_or(0);
                    Ok(format!(
                        "fetched the dependencies of {} into the daemon's cargo cache in {}",
                        untrusted(&shown.to_string_lossy()),
                        client::fmt_ms(ms as f64)
                    ))
                },
            )
        }
    }
}
