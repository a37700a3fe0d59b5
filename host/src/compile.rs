//! Builds an app crate, or a changed copy of its source, into a fresh `.so` with cargo.
//!
//! Every build shares one target directory, so dependencies (at least `sandbox_abi`) are
//! compiled once and a one-line change rebuilds only the app crate. Builds are serialised
//! process-wide: cargo would lock the target directory anyway, and the artifact path is
//! shared between builds of the same crate name.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use tokio::process::Command;
use tokio::sync::Mutex;

use crate::sandbox::SandboxError;

/// A library cargo produced.
#[derive(Debug, Clone)]
pub struct Built {
    /// A content-addressed copy of the `.so` under `<target>/staged/`: the file cargo wrote
    /// is overwritten by the next build of a crate of the same name (a source reload builds
    /// a copy of the crate), so callers never see cargo's own path.
    pub lib: PathBuf,
    /// Wall time cargo took.
    pub compile_ms: u64,
}

/// The cargo profile apps are built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// `cargo build`.
    Dev,
    /// `cargo build --release` (smaller library, faster copy and load).
    #[default]
    Release,
}

/// Where and how apps are built.
#[derive(Debug, Clone)]
pub struct Compiler {
    /// The shared target directory.
    pub target_dir: PathBuf,
    /// Build profile.
    pub profile: Profile,
}

static BUILD_LOCK: Mutex<()> = Mutex::const_new(());

impl Compiler {
    /// The default: `target/apps` of the source tree this binary was built from, if it
    /// still exists, else a per-user cache directory.
    pub fn default_target_dir() -> PathBuf {
        if let Ok(dir) = std::env::var("SANDBOX_APPS_TARGET_DIR") {
            return PathBuf::from(dir);
        }
        let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        if tree.join("Cargo.toml").is_file() {
            return tree.join("target").join("apps");
        }
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        cache.join("sandbox-host").join("target")
    }

    /// Builds the crate in `crate_dir` and returns its cdylib.
    pub async fn build(&self, crate_dir: &Path) -> Result<Built, SandboxError> {
        let _serial = BUILD_LOCK.lock().await;
        let mut built = self
            .for_crate(crate_dir, "crates")
            .build_unlocked(crate_dir)
            .await?;
        built.lib = self.stage(&built.lib)?;
        Ok(built)
    }

    /// The target directory for one crate directory: `<target>/<kind>/<name>-<path hash>`.
    ///
    /// Cargo names a cdylib after its package and fingerprints a crate that is its own
    /// workspace root by name and version, not by path. Two crates of the same name in one
    /// target directory would overwrite each other's library, and cargo would then call the
    /// other one fresh. A directory per crate path keeps them apart; dependencies are still
    /// built once per crate and reused by every later build of it.
    fn for_crate(&self, crate_dir: &Path, kind: &str) -> Compiler {
        use sha2::{Digest, Sha256};
        let canonical = crate_dir
            .canonicalize()
            .unwrap_or_else(|_| crate_dir.to_owned());
        let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
        let tag: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        let name = canonical
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("app");
        Compiler {
            target_dir: self.target_dir.join(kind).join(format!("{name}-{tag}")),
            profile: self.profile,
        }
    }

    async fn build_unlocked(&self, crate_dir: &Path) -> Result<Built, SandboxError> {
        let manifest = crate_dir.join("Cargo.toml");
        if !manifest.is_file() {
            return Err(SandboxError::BuildFailed {
                diagnostics: format!(
                    "{} is not a cargo crate (no Cargo.toml)",
                    crate_dir.display()
                ),
            });
        }
        let started = Instant::now();
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.arg("build")
            .arg("--lib")
            .arg("--message-format=json-render-diagnostics")
            .arg("--manifest-path")
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", &self.target_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if self.profile == Profile::Release {
            cmd.arg("--release");
        }
        let output = cmd.output().await.map_err(|e| SandboxError::BuildFailed {
            diagnostics: format!("cannot run cargo: {e}"),
        })?;
        let compile_ms = started.elapsed().as_millis() as u64;
        if !output.status.success() {
            return Err(SandboxError::BuildFailed {
                diagnostics: String::from_utf8_lossy(&output.stderr)
                    .trim_end()
                    .to_string(),
            });
        }
        let lib = find_cdylib(&String::from_utf8_lossy(&output.stdout)).ok_or_else(|| {
            SandboxError::BuildFailed {
                diagnostics: format!(
                    "{} built no cdylib (crate-type = [\"cdylib\"])",
                    manifest.display()
                ),
            }
        })?;
        Ok(Built { lib, compile_ms })
    }

    /// Copies a fresh artifact to `<target>/staged/<name>-<sha256 prefix>.so`, while the
    /// build lock is still held.
    fn stage(&self, artifact: &Path) -> Result<PathBuf, SandboxError> {
        use sha2::{Digest, Sha256};
        let bytes = std::fs::read(artifact).map_err(|e| SandboxError::io(artifact, e))?;
        let digest = Sha256::digest(&bytes);
        let tag: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let dir = self.target_dir.join("staged");
        std::fs::create_dir_all(&dir).map_err(|e| SandboxError::io(&dir, e))?;
        let stem = artifact
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("app");
        let staged = dir.join(format!("{stem}-{tag}.so"));
        if !staged.exists() {
            let tmp = dir.join(format!("{stem}-{tag}.{}.tmp", std::process::id()));
            std::fs::write(&tmp, &bytes).map_err(|e| SandboxError::io(&tmp, e))?;
            std::fs::rename(&tmp, &staged).map_err(|e| SandboxError::io(&staged, e))?;
        }
        Ok(staged)
    }

    /// Builds the crate in `crate_dir` with `src/lib.rs` replaced by `lib_rs`, in a temporary
    /// copy, so the crate on disk is untouched. The native `hot_reload_source`.
    pub async fn build_source(
        &self,
        crate_dir: &Path,
        lib_rs: &str,
    ) -> Result<Built, SandboxError> {
        // Two source reloads of one crate share its target directory and artifact path:
        // without the lock each could stage the other's `.so`.
        let _serial = BUILD_LOCK.lock().await;
        let tmp = tempfile::Builder::new()
            .prefix("sandbox-src-")
            .tempdir()
            .map_err(|e| SandboxError::io(&std::env::temp_dir(), e))?;
        let copy = tmp
            .path()
            .join(crate_dir.file_name().unwrap_or("app".as_ref()));
        copy_crate(crate_dir, &copy)?;
        let lib_path = copy.join("src").join("lib.rs");
        std::fs::write(&lib_path, lib_rs).map_err(|e| SandboxError::io(&lib_path, e))?;
        // Keyed by the original crate, so every source reload of it reuses its dependencies.
        let mut built = self
            .for_crate(crate_dir, "source-reloads")
            .build_unlocked(&copy)
            .await?;
        built.lib = self.stage(&built.lib)?;
        Ok(built)
    }
}

/// Picks the `.so` of the cdylib target from cargo's JSON messages.
fn find_cdylib(json_lines: &str) -> Option<PathBuf> {
    json_lines
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
        })
        .filter_map(|m| {
            m["filenames"]
                .as_array()?
                .iter()
                .filter_map(|f| f.as_str())
                .find(|f| f.ends_with(".so"))
                .map(PathBuf::from)
        })
        .next_back()
}

/// Copies a crate (manifest and `src/`, not `target/`) so it builds from anywhere:
/// relative `path` dependencies become absolute, and the copy is its own workspace root.
fn copy_crate(from: &Path, to: &Path) -> Result<(), SandboxError> {
    let from = from.canonicalize().map_err(|e| SandboxError::io(from, e))?;
    copy_dir(&from.join("src"), &to.join("src"))?;
    let manifest_path = from.join("Cargo.toml");
    let manifest =
        std::fs::read_to_string(&manifest_path).map_err(|e| SandboxError::io(&manifest_path, e))?;
    let mut rewritten = absolutize_paths(&manifest, &from);
    if !rewritten.contains("[workspace]") {
        rewritten.push_str("\n[workspace]\n");
    }
    let out = to.join("Cargo.toml");
    std::fs::write(&out, rewritten).map_err(|e| SandboxError::io(&out, e))?;
    for extra in ["build.rs", "Cargo.lock"] {
        let src = from.join(extra);
        if src.is_file() {
            std::fs::copy(&src, to.join(extra)).map_err(|e| SandboxError::io(&src, e))?;
        }
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), SandboxError> {
    std::fs::create_dir_all(to).map_err(|e| SandboxError::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| SandboxError::io(from, e))? {
        let entry = entry.map_err(|e| SandboxError::io(from, e))?;
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(|e| SandboxError::io(&entry.path(), e))?;
        }
    }
    Ok(())
}

/// Rewrites `path = "relative"` in a manifest to absolute paths under `base`.
fn absolutize_paths(manifest: &str, base: &Path) -> String {
    let mut out = String::with_capacity(manifest.len());
    let mut rest = manifest;
    while let Some(at) = rest.find("path = \"") {
        let start = at + "path = \"".len();
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('"') else {
            break;
        };
        let value = &rest[start..start + len];
        if Path::new(value).is_absolute() {
            out.push_str(value);
        } else {
            out.push_str(&base.join(value).to_string_lossy());
        }
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_source_build_waits_for_the_build_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let compiler = Compiler {
            target_dir: tmp.path().join("target"),
            profile: Profile::Dev,
        };
        let held = BUILD_LOCK.lock().await;
        // Fails at once (no such crate) unless it first waits for the lock, as it must.
        let missing = tmp.path().join("missing");
        let build = compiler.build_source(&missing, "");
        let waited = tokio::time::timeout(std::time::Duration::from_millis(300), build).await;
        assert!(waited.is_err(), "build_source ran without the build lock");
        drop(held);
    }

    #[test]
    fn relative_dependency_paths_become_absolute() {
        let m = "[dependencies]\nsandbox_abi = { path = \"../sandbox_abi\" }\nx = { path = \"/abs\" }\n";
        let out = absolutize_paths(m, Path::new("/src/app"));
        assert!(out.contains("path = \"/src/app/../sandbox_abi\""), "{out}");
        assert!(out.contains("path = \"/abs\""));
    }

    #[test]
    fn the_cdylib_artifact_is_found_among_cargo_messages() {
        let lines = r#"{"reason":"compiler-artifact","target":{"kind":["lib"]},"filenames":["/t/libabi.rlib"]}
{"reason":"compiler-artifact","target":{"kind":["cdylib","rlib"]},"filenames":["/t/libapp.so","/t/libapp.rlib"]}
{"reason":"build-finished","success":true}"#;
        assert_eq!(find_cdylib(lines), Some(PathBuf::from("/t/libapp.so")));
    }
}
