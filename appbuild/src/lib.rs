//! Builds an app crate, or a changed copy of its source, into a fresh `.so` with cargo, in
//! the build sandbox ([`sandbox`]): cargo never runs with the daemon's rights.
//!
//! Each crate directory gets a build directory of its own, `<target>/builds/<name>-<hash>/`:
//! `src/` (the crate's private copy, which the build may write), `target/` (cargo's target
//! dir, kept between builds, so dependencies such as `sandbox_abi` are compiled once and a
//! source reload rebuilds only the app crate), `staged/` (the libraries taken out, which the
//! build cannot write), `root/` (the sandbox root's mountpoint), `lock` (one build of a
//! crate at a time, across processes too; its mtime says when the directory was last used)
//! and `usage` (its size on disk after its last build). Builds are also serialised
//! process-wide.
//!
//! Bounded: a build may hold at most `--build-disk` in `target/` and `src/` together
//! ([`sandbox`]'s watcher, and a measure once it is over); a build over it has both removed.
//! After each build the cache is trimmed ([`cache`]).

pub mod cache;
pub mod cargo_config;
pub mod disk;
pub mod error;
pub mod fetch;
pub mod inside;
pub mod manifest;
pub mod sandbox;
pub mod stage;
pub mod sync;
pub mod toolchain;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

pub use self::cache::BuildCache;
pub use self::sandbox::BuildLimits;
use self::sandbox::{BUILD_UID, Job};
use self::toolchain::Toolchain;
use crate::error::BuildError;

/// A library cargo produced.
#[derive(Debug, Clone)]
pub struct Built {
    /// A content-addressed copy of the `.so` under the crate's `staged/` directory, outside
    /// anything the build can write.
    pub lib: PathBuf,
    /// Wall time the sandboxed build took.
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
    /// The directory holding every crate's build directory.
    pub target_dir: PathBuf,
    /// Build profile.
    pub profile: Profile,
    /// The host binary, re-executed as the build sandbox's shim (`None`: this process's own
    /// executable, which must be the `host` binary or call [`sandbox::maybe_run_sandbox_child`]).
    pub shim_exe: Option<PathBuf>,
    /// The build sandbox's limits.
    pub limits: BuildLimits,
    /// Bounds of the build cache under `<target_dir>/builds`.
    pub cache: BuildCache,
    /// What this compiler and its clones share: one build at a time, the toolchain found once.
    pub shared: Shared,
}

/// What a [`Compiler`] and its clones share (a fresh one per `Compiler::default()`): builds
/// run one at a time (each is a whole cargo with up to `--build-memory`), and the toolchain
/// is looked up once.
#[derive(Debug, Clone, Default)]
pub struct Shared(Arc<SharedInner>);

#[derive(Debug, Default)]
struct SharedInner {
    serial: Mutex<()>,
    /// One `cargo fetch` at a time ([`fetch`]).
    fetching: Mutex<()>,
    toolchain: std::sync::OnceLock<Toolchain>,
}

impl Shared {
    /// The toolchain, looked up on first use.
    fn toolchain(&self) -> Result<Toolchain, BuildError> {
        if let Some(t) = self.0.toolchain.get() {
            return Ok(t.clone());
        }
        let found = Toolchain::find()?;
        Ok(self.0.toolchain.get_or_init(|| found).clone())
    }
}

impl Default for Compiler {
    fn default() -> Self {
        Compiler {
            target_dir: Compiler::default_target_dir(),
            profile: Profile::default(),
            shim_exe: None,
            limits: BuildLimits::default(),
            cache: BuildCache::default(),
            shared: Shared::default(),
        }
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

impl Compiler {
    /// The default: `$SANDBOX_APPS_TARGET_DIR`, else `target/apps` of the source tree this
    /// binary was built from if it still exists and belongs to this user, else a per-user
    /// cache directory (`$XDG_CACHE_HOME/sandbox-host/target`, `~/.cache/...`).
    pub fn default_target_dir() -> PathBuf {
        use std::os::unix::fs::MetadataExt;
        if let Ok(dir) = std::env::var("SANDBOX_APPS_TARGET_DIR") {
            return PathBuf::from(dir);
        }
        let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let in_tree = tree.join("target").join("apps");
        // The nearest existing directory of target/apps decides: a tree built by another user
        // (root's checkout, run by a copied binary) is not ours to write.
        let owner = in_tree
            .ancestors()
            .find_map(|a| std::fs::metadata(a).ok())
            .map(|m| m.uid());
        if tree.join("Cargo.toml").is_file() && owner == Some(euid()) {
            return in_tree;
        }
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        cache.join("sandbox-host").join("target")
    }

    /// Builds the crate in `crate_dir` and returns its cdylib.
    pub async fn build(&self, crate_dir: &Path) -> Result<Built, BuildError> {
        self.build_in_sandbox(crate_dir, None).await
    }

    /// Builds the crate in `crate_dir` with `src/lib.rs` replaced by `lib_rs`, in the crate's
    /// private copy, so the crate on disk is untouched. The native `hot_reload_source`.
    pub async fn build_source(&self, crate_dir: &Path, lib_rs: &str) -> Result<Built, BuildError> {
        self.build_in_sandbox(crate_dir, Some(lib_rs)).await
    }

    /// The build directory of one crate directory: `<target>/builds/<name>-<path hash>`.
    ///
    /// Cargo names a cdylib after its package and fingerprints a crate that is its own
    /// workspace root by name and version, not by path: a directory per crate path keeps two
    /// crates of the same name apart.
    pub fn build_dir(&self, canonical: &Path) -> PathBuf {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
        let tag: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
        let name = canonical
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("app");
        self.target_dir.join("builds").join(format!("{name}-{tag}"))
    }

    async fn build_in_sandbox(
        &self,
        crate_dir: &Path,
        lib_rs: Option<&str>,
    ) -> Result<Built, BuildError> {
        let fail = |d: String| BuildError::failed(d);
        let toolchain = self.shared.toolchain()?;
        let canonical = crate_dir
            .canonicalize()
            .map_err(|e| fail(format!("{} is not a cargo crate: {e}", crate_dir.display())))?;
        let _serial = self.shared.0.serial.lock().await;
        let dir = self.build_dir(&canonical);
        let _lock = lock_dir(&dir).await?;
        let built = self
            .build_locked(&toolchain, &canonical, &dir, lib_rs)
            .await;
        self.after_build(&dir).await;
        built
    }

    /// Records what the build directory `dir` holds now and trims the cache (errors are
    /// logged: a build's result does not depend on them).
    async fn after_build(&self, dir: &Path) {
        let dir = dir.to_path_buf();
        let builds = self.target_dir.join("builds");
        let policy = self.cache;
        let trimmed = tokio::task::spawn_blocking(move || {
            cache::record_usage(&dir, disk::usage(&dir).unwrap_or(u64::MAX));
            cache::trim(&builds, &dir, &policy)
        })
        .await;
        if let Ok(removed) = trimmed
            && !removed.is_empty()
        {
            tracing::info!("build cache: removed {removed:?}");
        }
    }

    async fn build_locked(
        &self,
        toolchain: &Toolchain,
        canonical: &Path,
        dir: &Path,
        lib_rs: Option<&str>,
    ) -> Result<Built, BuildError> {
        let fail = |d: String| BuildError::failed(d);
        let owner = isolation::namespaces::is_root().then_some((BUILD_UID, BUILD_UID));
        let target = dir.join("target");
        prepare_target(&target, owner)?;
        let root = dir.join("root");
        std::fs::create_dir_all(&root).map_err(|e| BuildError::io(&root, e))?;
        let forbidden = self
            .target_dir
            .canonicalize()
            .unwrap_or_else(|_| self.target_dir.clone());
        let staged = stage::stage(canonical, &dir.join("src"), lib_rs, owner, &forbidden)?;
        let manifest = staged.crate_inside.join("Cargo.toml");
        let mut args: Vec<String> = [
            "build",
            "--lib",
            "--offline",
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(manifest.to_string_lossy().into_owned());
        args.extend(staged.config_args.iter().cloned());
        if self.profile == Profile::Release {
            args.push("--release".into());
        }
        let shim_exe = match &self.shim_exe {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .map_err(|e| BuildError::io(Path::new("/proc/self/exe"), e))?,
        };
        let shim_exe = shim_exe.canonicalize().unwrap_or(shim_exe);
        let job = Job {
            shim_exe,
            mountpoint: root,
            target_dir: target.clone(),
            writable: vec![staged.crate_inside.clone()],
            measure: vec![dir.join("src")],
            binds: staged.binds,
            args,
            limits: self.limits,
        };
        let out = sandbox::run(job, toolchain).await?;
        if out.over_disk {
            // Not kept: what the build wrote past its budget must not stay on the host.
            for sub in [&target, &dir.join("src")] {
                if let Err(e) = disk::remove_tree(sub) {
                    tracing::warn!("build cache: remove {}: {e}", sub.display());
                }
            }
        }
        let compile_ms = out.elapsed.as_millis() as u64;
        let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
        if let Some(limit) = &out.limit {
            return Err(fail(format!("{limit}\n{stderr}").trim_end().to_string()));
        }
        if out.code != Some(0) {
            return Err(fail(explain_offline(stderr)));
        }
        let reported = find_cdylib(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
            fail(format!(
                "{} built no cdylib (crate-type = [\"cdylib\"])",
                canonical.join("Cargo.toml").display()
            ))
        })?;
        let bytes = stage::take_artifact(&target, &reported.to_string_lossy())?;
        let stem = reported
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("app")
            .to_string();
        let staged_dir = dir.join("staged");
        let lib = store(&staged_dir, &stem, &bytes)?;
        cache::prune_staged(&staged_dir, &lib, self.cache.max_staged);
        Ok(Built { lib, compile_ms })
    }
}

/// Adds a hint to cargo's error when a dependency is missing offline.
fn explain_offline(stderr: String) -> String {
    if stderr.contains("offline") && stderr.contains("no matching package") {
        format!(
            "{stderr}\nbuilds run offline: a registry dependency must already be in the \
             daemon's cargo cache or be vendored in the crate (`cargo vendor` with its \
             .cargo/config.toml); fill the daemon's cache with `host deps fetch --app DIR`"
        )
    } else {
        stderr
    }
}

/// Takes the build directory's `lock` file (waits while another process builds the same
/// crate), creating the directory; marks the directory used now. A lock file an eviction took
/// away while we waited is let go, and the directory made again.
async fn lock_dir(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, BuildError> {
    let path = dir.join("lock");
    loop {
        std::fs::create_dir_all(dir).map_err(|e| BuildError::io(dir, e))?;
        let mut f = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| BuildError::io(&path, e))?;
        let f = loop {
            match cache::lock_now(f) {
                Ok(locked) => break locked,
                Err(back) => f = back,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if cache::still_current(&f, &path) {
            f.set_modified(std::time::SystemTime::now())
                .map_err(|e| BuildError::io(&path, e))?;
            return Ok(f);
        }
    }
}

/// Creates the target dir, owned by the build's ids (re-owned when it is not).
fn prepare_target(target: &Path, owner: Option<(u32, u32)>) -> Result<(), BuildError> {
    use std::os::unix::fs::MetadataExt;
    std::fs::create_dir_all(target).map_err(|e| BuildError::io(target, e))?;
    let Some((uid, gid)) = owner else {
        return Ok(());
    };
    let meta = std::fs::symlink_metadata(target).map_err(|e| BuildError::io(target, e))?;
    if meta.uid() != uid || meta.gid() != gid {
        chown_tree(target, uid, gid)?;
    }
    Ok(())
}

fn chown_tree(p: &Path, uid: u32, gid: u32) -> Result<(), BuildError> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(|e| BuildError::io(p, e))?;
    let meta = std::fs::symlink_metadata(p).map_err(|e| BuildError::io(p, e))?;
    if meta.is_dir() {
        for e in std::fs::read_dir(p).map_err(|e| BuildError::io(p, e))? {
            let e = e.map_err(|e| BuildError::io(p, e))?;
            chown_tree(&e.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Writes `bytes` to `<dir>/<stem>-<sha256 prefix>.so` (once per content).
fn store(dir: &Path, stem: &str, bytes: &[u8]) -> Result<PathBuf, BuildError> {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(bytes);
    let tag: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(dir).map_err(|e| BuildError::io(dir, e))?;
    let staged = dir.join(format!("{stem}-{tag}.so"));
    if staged.exists() {
        // Newest again, for the pruning of `staged/`.
        let _ =
            std::fs::File::open(&staged).and_then(|f| f.set_modified(std::time::SystemTime::now()));
    } else {
        let tmp = dir.join(format!("{stem}-{tag}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, bytes).map_err(|e| BuildError::io(&tmp, e))?;
        std::fs::rename(&tmp, &staged).map_err(|e| BuildError::io(&staged, e))?;
    }
    Ok(staged)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_source_build_waits_for_the_build_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let compiler = Compiler {
            target_dir: tmp.path().join("target"),
            profile: Profile::Dev,
            ..Compiler::default()
        };
        let held = compiler.shared.0.serial.lock().await;
        // Fails at once (not a crate) unless it first waits for the lock, as it must.
        let not_a_crate = tmp.path().join("empty");
        std::fs::create_dir_all(&not_a_crate).unwrap();
        let build = compiler.build_source(&not_a_crate, "");
        let waited = tokio::time::timeout(std::time::Duration::from_millis(300), build).await;
        assert!(waited.is_err(), "build_source ran without the build lock");
        drop(held);
    }

    #[test]
    fn the_cdylib_artifact_is_found_among_cargo_messages() {
        let lines = r#"{"reason":"compiler-artifact","target":{"kind":["lib"]},"filenames":["/t/libabi.rlib"]}
{"reason":"compiler-artifact","target":{"kind":["cdylib","rlib"]},"filenames":["/t/libapp.so","/t/libapp.rlib"]}
{"reason":"build-finished","success":true}"#;
        assert_eq!(find_cdylib(lines), Some(PathBuf::from("/t/libapp.so")));
    }
}
