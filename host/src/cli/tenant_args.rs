//! What `host create` hands the sandbox besides the app: `--env K=V`, `--config FILE` and
//! `--file SRC:DST`. The files are opened and read here, with the client's own rights (the
//! daemon opens no path of the client's); their bounds and checks are `proto::tenant`'s.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::client::{ClientError, open_for_daemon};
use proto::tenant::{self, DataFile, MAX_CONFIG_BYTES, MAX_FILE_BYTES};
use sandbox::SandboxSpec;

/// Environment, config and data files of a new sandbox.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "What the app is given")]
pub struct TenantArgs {
    /// An environment variable of the app process and its workers (repeatable). Only the
    /// values given here: nothing of the client's or the daemon's environment is passed.
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// A file whose bytes the app reads with `sandbox_abi::config()` (at most 256 KiB).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A read-only file in the sandbox at DST, an absolute path under /data/ or /config/
    /// (repeatable; at most 16 files of 256 KiB).
    #[arg(long = "file", value_name = "SRC:DST", value_parser = parse_file)]
    pub files: Vec<(PathBuf, String)>,
}

/// Parses `K=V` (the first `=` splits; the name is checked by the daemon too).
fn parse_env(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected K=V"))?;
    if !tenant::valid_env_name(key) {
        return Err(format!(
            "{key:?}: a variable name must be non-empty, without '=' or NUL"
        ));
    }
    Ok((key.to_string(), value.to_string()))
}

/// Parses `SRC:DST` (split at the last `:`, so a source path may hold one).
fn parse_file(text: &str) -> Result<(PathBuf, String), String> {
    let (src, dst) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?}: expected SRC:DST"))?;
    if !tenant::valid_file_dest(dst) {
        return Err(format!(
            "{dst:?}: DST must be an absolute path without '.' or '..' under /data/ or /config/"
        ));
    }
    Ok((PathBuf::from(src), dst.to_string()))
}

/// Reads at most `max` bytes of the regular file `path`, opened with the client's rights.
fn read_bounded(path: &Path, max: usize, flag: &str) -> Result<Vec<u8>, ClientError> {
    let file = std::fs::File::from(open_for_daemon(path, false)?);
    let meta = file.metadata().map_err(ClientError::Io)?;
    if !meta.is_file() {
        return Err(ClientError::Input(format!(
            "{flag} {}: not a regular file",
            path.display()
        )));
    }
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(ClientError::Io)?;
    if bytes.len() > max {
        return Err(ClientError::Input(format!(
            "{flag} {}: larger than {max} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

impl TenantArgs {
    /// Puts the variables and the files' bytes into `spec`.
    pub fn apply(&self, spec: &mut SandboxSpec) -> Result<(), ClientError> {
        spec.env.clone_from(&self.env);
        if let Some(path) = &self.config {
            spec.config = Some(read_bounded(path, MAX_CONFIG_BYTES, "--config")?);
        }
        for (src, dst) in &self.files {
            spec.files.push(DataFile {
                dst: dst.clone(),
                bytes: read_bounded(src, MAX_FILE_BYTES, "--file")?,
            });
        }
        tenant::check(&spec.env, spec.config.as_deref(), &spec.files)
            .map_err(|e| ClientError::Input(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_and_file_flags_are_parsed_and_checked() {
        assert_eq!(
            parse_env("A=b=c").unwrap(),
            ("A".to_string(), "b=c".to_string())
        );
        assert!(parse_env("A").is_err());
        assert!(parse_env("=v").is_err());
        assert_eq!(
            parse_file("/tmp/a:b:/data/x").unwrap(),
            (PathBuf::from("/tmp/a:b"), "/data/x".to_string())
        );
        assert!(parse_file("/tmp/a:/etc/passwd").is_err());
        assert!(parse_file("/tmp/a:/data/../proc/1").is_err());
        assert!(parse_file("/tmp/a").is_err());
    }
}
