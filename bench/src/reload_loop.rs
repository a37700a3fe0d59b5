//! `reload_loop_ms`: edit → `scripts/rebuild-and-reload.sh` → new version serving, driven
//! against a real `host serve`. Every step that is missing or fails makes the result
//! `{"skipped": reason}`; nothing is estimated.

use anyhow::Context;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;

use crate::serve::{Serve, release_host};
use crate::stats::{Pct, blocking};

/// Measures the script `n` times, or says why it could not.
pub async fn measure(root: &Path, n: usize) -> Value {
    let root = root.to_path_buf();
    blocking("reload loop", move || try_measure(&root, n)).await
}

fn try_measure(root: &Path, n: usize) -> anyhow::Result<Value> {
    let script = root.join("scripts/rebuild-and-reload.sh");
    if !script.is_file() {
        return Err(anyhow::anyhow!(
            "scripts/rebuild-and-reload.sh does not exist yet"
        ));
    }
    let host = release_host(root)?;
    let serve_help = Command::new(&host)
        .args(["serve", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {}", host.display()))?;
    if !serve_help.success() {
        return Err(anyhow::anyhow!(
            "`host serve` is not implemented yet (the script needs it)"
        ));
    }
    let tmp = tempfile::Builder::new()
        .prefix("sandbox-bench-loop-")
        .tempdir()
        .context("temp dir")?;
    let crate_dir = tmp.path().join("sandbox_app");
    copy_app(&root.join("sandbox_app"), &crate_dir)?;
    let serve = Serve::start(&host, "sandbox-bench-loop-", "info", &[])?;
    let host_cmd = |args: &[&str]| {
        let mut c = serve.client(&host);
        c.args(args);
        c
    };
    let id = "bench-loop";
    let crate_arg = crate_dir.to_string_lossy().into_owned();
    run_ok(
        host_cmd(&["create", id, "--app", &crate_arg]),
        "host create",
    )?;
    let lib_rs = crate_dir.join("src/lib.rs");
    let original = std::fs::read_to_string(&lib_rs)?;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let answer = if i % 2 == 0 { 42 } else { 41 };
        let edited = original.replace(
            "pub const ANSWER: i64 = 41;",
            &format!("pub const ANSWER: i64 = {answer};"),
        );
        std::fs::write(&lib_rs, edited)?;
        let mut cmd = Command::new(&script);
        cmd.arg(id)
            .arg(&crate_dir)
            .env("SANDBOX_HOST_SOCKET", &serve.socket);
        let t = Instant::now();
        run_ok(cmd, "rebuild-and-reload.sh")?;
        samples.push(t.elapsed());
    }
    let _ = host_cmd(&["destroy", id]).output();
    Ok(Pct::of_ms(&samples).to_json())
}

fn run_ok(mut cmd: Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| what.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Copies the demo app's manifest and sources so they build from `to`, with the path to
/// `sandbox_abi` made absolute and the package renamed.
fn copy_app(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to.join("src"))?;
    std::fs::copy(from.join("src/lib.rs"), to.join("src/lib.rs"))?;
    let manifest = std::fs::read_to_string(from.join("Cargo.toml"))?;
    let abi = from.join("../sandbox_abi");
    // Renamed: a crate named `sandbox_app` at another path, built in the shared apps target
    // directory, would overwrite the real one's `libsandbox_app.so`, which cargo then
    // considers fresh.
    let manifest = manifest
        .replace(
            "path = \"../sandbox_abi\"",
            &format!("path = \"{}\"", abi.display()),
        )
        .replace("name = \"sandbox_app\"", "name = \"bench_loop_app\"");
    std::fs::write(to.join("Cargo.toml"), manifest).map_err(anyhow::Error::from)
}
