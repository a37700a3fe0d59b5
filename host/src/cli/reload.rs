//! `host reload`: its arguments and the one-shot and `--watch` forms.

use super::*;

/// Options of `host reload`.
#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// Sandbox id.
    pub id: String,
    /// App crate to build and load.
    #[arg(long, value_name = "DIR", group = "from")]
    pub app: Option<PathBuf>,
    /// Prebuilt app library (.so) to load.
    #[arg(long, value_name = "FILE", group = "from")]
    pub lib: Option<PathBuf>,
    /// New src/lib.rs for the sandbox's own crate, built in a temporary copy.
    #[arg(long, value_name = "FILE", group = "from")]
    pub source: Option<PathBuf>,
    /// Rebuild and reload on every saved change of CRATE_DIR (or --app, or the workspace's
    /// sandbox_app) until Ctrl-C.
    #[arg(
        long,
        value_name = "CRATE_DIR",
        num_args = 0..=1,
        conflicts_with_all = ["lib", "source"]
    )]
    pub watch: Option<Option<PathBuf>>,
    /// Reload as a canary: the previous version stays ready and the daemon swaps it back by
    /// itself when the sandbox is flagged within --watch-for (a crash, a worker restart, a
    /// process or memory spike against the figures before the reload, a detector anomaly,
    /// an operator warning).
    #[arg(long, conflicts_with = "watch")]
    pub canary: bool,
    /// How long a canary is watched (`30s`, `2m`, `500ms`; at most 10m).
    #[arg(long, value_name = "DURATION", requires = "canary", default_value = "30s",
          value_parser = ::watch::parse_duration)]
    pub watch_for: std::time::Duration,
    /// Client options.
    #[command(flatten)]
    pub client: ClientArgs,
}

pub(super) fn reload(a: ReloadArgs) -> ExitCode {
    let json = a.client.json;
    if let Some(watch_dir) = &a.watch {
        let dir = match watch_dir.clone().or_else(|| a.app.clone()) {
            Some(dir) => dir,
            None => match default_app() {
                Ok(dir) => dir,
                Err(e) => return failure(json, &e),
            },
        };
        let socket = socket_path::resolve(a.client.socket.as_deref());
        let e = client::watch(&socket, &a.id, &dir, json);
        return failure(json, &e);
    }
    let source = match (&a.app, &a.lib, &a.source) {
        (Some(dir), _, _) => client::absolute(dir).map(ReloadWire::Crate),
        (_, Some(lib), _) => client::absolute(lib).map(ReloadWire::Library),
        (_, _, Some(file)) => std::fs::read_to_string(file)
            .map(|lib_rs| ReloadWire::Source {
                lib_rs,
                crate_dir: None,
            })
            .map_err(|e| ClientError::Input(format!("{}: {e}", file.display()))),
        (None, None, None) => Err(ClientError::Input(
            "say what to load: --app DIR, --lib FILE or --source FILE (or --watch)".into(),
        )),
    };
    let source = match source {
        Ok(source) => source,
        Err(e) => return failure(json, &e),
    };
    let fd = match client::fds_for_reload(&source) {
        Ok(fd) => fd,
        Err(e) => return failure(json, &e),
    };
    let id = a.id.clone();
    let canary = a.canary.then_some(proto::control::CanaryWire {
        watch_for_ms: a.watch_for.as_millis() as u64,
    });
    let request = Request::Reload {
        id: a.id.clone(),
        source,
        canary,
    };
    if canary.is_some() {
        return super::canary::run(&a.client, request, fd, id);
    }
    one_request_fds(&a.client, request, fd, move |v, took| {
        Ok(client::render_reload(&id, &decode(v)?, took))
    })
}
