//! Filling the daemon's cargo cache for a crate (`host deps fetch --app DIR`): builds run
//! offline and read only that cache, so an author fetches once, with the network the daemon
//! has, and builds from then on. Never part of a build.
//!
//! The crate is the attacker's, so before cargo sees it: every path dependency must lie
//! inside the crate (or be the host's own `sandbox_abi`); no dependency may name a `git`
//! repository or another registry (cargo would reach whatever host it names); the crate's
//! `.cargo/config.toml` may only replace sources ([`crate::cargo_config`]), passed as
//! `--config` while cargo runs from `/` (it reads no config from the crate's tree). `cargo
//! fetch` runs no build script. It runs as the daemon's user (it writes the daemon's
//! `CARGO_HOME`) with a cleared environment, one at a time, in a process group of its own
//! that is killed at the build wall-time limit, and keeps the last [`OUTPUT_CAP`] bytes of
//! its output.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio::io::AsyncReadExt;

use crate::Compiler;
use crate::error::BuildError;
use crate::manifest::Manifest;

/// Most bytes of cargo's output kept (the last ones).
pub const OUTPUT_CAP: usize = 64 * 1024;

/// Most crates (the crate and its path dependencies) looked at.
const MAX_CRATES: usize = 256;

/// What a fetch did.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Wall time cargo took.
    pub elapsed_ms: u64,
    /// The end of what cargo printed.
    pub output: String,
}

fn fail(d: String) -> BuildError {
    BuildError::failed(d)
}

impl Compiler {
    /// Runs `cargo fetch` for the crate at `crate_dir` into this process's `CARGO_HOME`
    /// (see the module docs).
    pub async fn fetch(&self, crate_dir: &Path) -> Result<Fetched, BuildError> {
        let toolchain = self.shared.toolchain()?;
        let home = toolchain.cargo_home.clone().ok_or_else(|| {
            fail("no cargo cache to fill: set CARGO_HOME (or HOME) for the daemon".into())
        })?;
        let canonical = crate_dir
            .canonicalize()
            .map_err(|e| fail(format!("{} is not a cargo crate: {e}", crate_dir.display())))?;
        check_crates(&canonical)?;
        // One fetch at a time: a client cannot start a cargo per connection.
        let _one = self.shared.0.fetching.lock().await;
        let vendor = crate::cargo_config::read(&canonical).map_err(|e| fail(e.to_string()))?;
        let mut cmd = tokio::process::Command::new(toolchain.sysroot.join("bin/cargo"));
        cmd.arg("fetch")
            .arg("--manifest-path")
            .arg(canonical.join("Cargo.toml"))
            .args(vendor.cargo_args(&canonical))
            .current_dir("/")
            .env_clear()
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", toolchain.sysroot.join("bin").display()),
            )
            .env("RUSTC", toolchain.sysroot.join("bin/rustc"))
            .env("CARGO_HOME", &home)
            .env("CARGO_NET_GIT_FETCH_WITH_CLI", "false")
            .env("CARGO_TERM_COLOR", "never")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for key in ["HOME", "LANG", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR"] {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            }
        }
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| BuildError::io(&toolchain.sysroot.join("bin/cargo"), e))?;
        let pid = child.id();
        let mut stderr = child.stderr.take();
        let wall = self.limits.wall;
        let run = async {
            let mut tail = Vec::new();
            if let Some(err) = stderr.as_mut() {
                read_tail(err, &mut tail).await;
            }
            (child.wait().await, tail)
        };
        let (status, tail) = match tokio::time::timeout(wall, run).await {
            Ok(done) => done,
            Err(_) => {
                if let Some(pid) = pid {
                    // SAFETY: kill(2) on the process group cargo leads (its own, set above).
                    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
                }
                return Err(fail(format!(
                    "cargo fetch was stopped at its wall-time limit of {} s (--build-timeout)",
                    wall.as_secs()
                )));
            }
        };
        let output = String::from_utf8_lossy(&tail).trim_end().to_string();
        let status = status.map_err(|e| BuildError::io(&canonical, e))?;
        if !status.success() {
            return Err(fail(format!("cargo fetch failed ({status}):\n{output}")));
        }
        Ok(Fetched {
            elapsed_ms: started.elapsed().as_millis() as u64,
            output,
        })
    }
}

/// Reads `from` to its end, keeping the last [`OUTPUT_CAP`] bytes in `tail`.
async fn read_tail(from: &mut (impl AsyncReadExt + Unpin), tail: &mut Vec<u8>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > OUTPUT_CAP {
                    let cut = tail.len() - OUTPUT_CAP;
                    tail.drain(..cut);
                }
            }
        }
    }
}

/// Checks the crate at `top` and its path dependencies for `cargo fetch`: each inside `top`
/// or the tree it was handed over in (or the host's `sandbox_abi`), none naming a git
/// repository or another registry.
fn check_crates(top: &Path) -> Result<(), BuildError> {
    let abi = crate::stage::host_abi();
    let inside = crate::stage::handed_over_tree(top).unwrap_or_else(|| top.to_path_buf());
    let mut seen: Vec<PathBuf> = vec![top.to_path_buf()];
    let mut todo = vec![top.to_path_buf()];
    while let Some(krate) = todo.pop() {
        let path = krate.join("Cargo.toml");
        let text = crate::stage::read_manifest(&krate)?;
        let mut manifest =
            Manifest::parse(&text).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        if let Some(key) = manifest.foreign_sources().first() {
            return Err(fail(format!(
                "{}: `{key}`: dependencies fetched for a build come from crates.io or the \
                 crate's vendored sources only (no git repository, no other registry)",
                path.display()
            )));
        }
        for value in manifest.dependency_paths() {
            let Ok(dep) = krate.join(&value).canonicalize() else {
                continue; // cargo reports it
            };
            if !dep.join("Cargo.toml").is_file() || seen.contains(&dep) {
                continue;
            }
            if !dep.starts_with(&inside) && abi.as_deref() != Some(dep.as_path()) {
                return Err(fail(format!(
                    "{}: path dependency {value:?} ({}) is outside the crate",
                    path.display(),
                    dep.display()
                )));
            }
            if seen.len() >= MAX_CRATES {
                return Err(fail(format!(
                    "{}: more than {MAX_CRATES} path dependencies",
                    top.display()
                )));
            }
            seen.push(dep.clone());
            todo.push(dep);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, text: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn a_crate_that_would_reach_beyond_crates_io_is_refused_before_cargo_runs() {
        for (deps, why) in [
            (
                "x = { git = \"https://example.com/x\" }",
                "`dependencies.x.git`",
            ),
            (
                "x = { version = \"1\", registry = \"evil\" }",
                "`dependencies.x.registry`",
            ),
            ("x = { path = \"../outside\" }", "is outside the crate"),
            ("x = { path = \"vendor/x\" }", "`dependencies.y.git`"),
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let app = tmp.path().join("app");
            write(
                &app.join("Cargo.toml"),
                &format!("[package]\nname = \"app\"\n[dependencies]\n{deps}\n"),
            );
            write(
                &tmp.path().join("outside/Cargo.toml"),
                "[package]\nname = \"x\"\n",
            );
            write(
                &app.join("vendor/x/Cargo.toml"),
                "[package]\nname = \"x\"\n[dependencies]\ny = { git = \"file:///etc\" }\n",
            );
            let err = check_crates(&app.canonicalize().unwrap())
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{deps}: {err}");
        }
    }
}
