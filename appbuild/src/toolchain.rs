//! Finds the host's Rust toolchain for the build sandbox.

use std::path::{Path, PathBuf};

use crate::error::BuildError;
use crate::inside;

/// The message when no cargo can be found.
pub const NO_CARGO: &str =
    "building an app needs a Rust toolchain (cargo); or pass a prebuilt library with --lib";

/// The host's Rust toolchain (a `Compiler` looks it up once).
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// `rustc --print sysroot` on the host.
    pub sysroot: PathBuf,
    /// The host's `CARGO_HOME` (`$CARGO_HOME`, else `~/.cargo`).
    pub cargo_home: Option<PathBuf>,
}

impl Toolchain {
    /// Finds cargo (`$CARGO`, else `PATH`) and its sysroot (the real toolchain behind a
    /// rustup proxy).
    pub fn find() -> Result<Toolchain, BuildError> {
        let fail = |d: String| BuildError::failed(d);
        let cargo = std::env::var_os("CARGO")
            .map(PathBuf::from)
            .filter(|p| p.is_file())
            .or_else(|| search_path("cargo"))
            .ok_or_else(|| fail(NO_CARGO.into()))?;
        let real = cargo.canonicalize().unwrap_or_else(|_| cargo.clone());
        let dir = real.parent().unwrap_or(Path::new("/"));
        let sysroot = if real.file_name() == Some("cargo".as_ref())
            && dir.join("rustc").is_file()
            && dir.join("../lib/rustlib").is_dir()
        {
            dir.join("..")
                .canonicalize()
                .unwrap_or_else(|_| dir.join(".."))
        } else {
            let rustc = cargo.with_file_name("rustc");
            let rustc = if rustc.is_file() {
                rustc
            } else {
                search_path("rustc").ok_or_else(|| fail(NO_CARGO.into()))?
            };
            let out = std::process::Command::new(&rustc)
                .args(["--print", "sysroot"])
                .current_dir("/")
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| fail(format!("{NO_CARGO} ({}: {e})", rustc.display())))?;
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        };
        if !sysroot.join("bin/cargo").is_file() {
            return Err(fail(format!(
                "{NO_CARGO} (the toolchain at {} has no bin/cargo)",
                sysroot.display()
            )));
        }
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
            .filter(|p| p.is_dir());
        Ok(Toolchain {
            sysroot,
            cargo_home,
        })
    }

    /// The sysroot as the build sees it (a sysroot under `/usr` is seen where it is).
    pub(crate) fn sysroot_inside(&self) -> PathBuf {
        if self.sysroot.starts_with("/usr") {
            self.sysroot.clone()
        } else {
            PathBuf::from(inside::TOOLCHAIN)
        }
    }
}

fn search_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
