//! What a tenant hands its sandbox besides the app: environment variables (`--env K=V`),
//! config bytes (`--config FILE`) and read-only data files (`--file SRC:DST`), with their
//! bounds and checks. The client reads the files with its own rights and sends their bytes;
//! the daemon opens no path of the tenant's.

use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

/// The most `--env` variables a sandbox takes.
pub const MAX_ENV_VARS: usize = 64;
/// The most bytes of all `--env` names and values together.
pub const MAX_ENV_BYTES: usize = 32 * 1024;
/// The most bytes of a `--config`.
pub const MAX_CONFIG_BYTES: usize = 256 * 1024;
/// The most `--file`s a sandbox takes.
pub const MAX_FILES: usize = 16;
/// The most bytes of one `--file`.
pub const MAX_FILE_BYTES: usize = 256 * 1024;
/// The most bytes of the config and every file together (they travel in one request line,
/// base64-encoded, under the daemon's 1 MiB request bound).
pub const MAX_TENANT_BYTES: usize = 512 * 1024;
/// Where in the sandbox a `--file` may go.
pub const FILE_DIRS: &[&str] = &["/data", "/config"];

/// One read-only data file: its bytes, bound at `dst` inside the sandbox's root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    /// Absolute, clean path inside the sandbox, under one of [`FILE_DIRS`].
    pub dst: String,
    /// The file's contents (base64 on the wire).
    #[serde(with = "b64")]
    pub bytes: Vec<u8>,
}

/// A tenant input the host refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    /// A bad `--env` name.
    #[error(
        "--env {0:?}: a variable name must be non-empty, without '=' or NUL, at most 256 bytes"
    )]
    EnvName(String),
    /// A value with a NUL byte.
    #[error("--env {0}: its value has a NUL byte")]
    EnvValue(String),
    /// Too many variables or bytes.
    #[error("--env: at most {MAX_ENV_VARS} variables of {MAX_ENV_BYTES} bytes in all")]
    EnvTooBig,
    /// A name given twice.
    #[error("--env {0}: given twice")]
    EnvTwice(String),
    /// A config over [`MAX_CONFIG_BYTES`].
    #[error("--config of {0} bytes: at most {MAX_CONFIG_BYTES}")]
    ConfigTooBig(usize),
    /// A bad `--file` destination.
    #[error(
        "--file destination {0:?}: must be an absolute path without '.' or '..' under /data/ \
         or /config/"
    )]
    FileDest(String),
    /// Too many files, or one too big.
    #[error("--file: at most {MAX_FILES} files of {MAX_FILE_BYTES} bytes each")]
    FileTooBig,
    /// Two files at one path.
    #[error("--file destination {0}: given twice")]
    FileTwice(String),
    /// Everything together too big for one request.
    #[error("--config and --file: at most {MAX_TENANT_BYTES} bytes together")]
    TooBig,
    /// Files need a root of the sandbox's own.
    #[error("--file needs a root of the sandbox's own: not at --isolation none")]
    FilesWithoutRoot,
}

/// Checks one `--env` name.
pub fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 256 && !name.contains(['=', '\0'])
}

/// Checks a `--file` destination: absolute, every component a plain name, under one of
/// [`FILE_DIRS`] (and not that directory itself).
pub fn valid_file_dest(dst: &str) -> bool {
    let path = Path::new(dst);
    if !path.is_absolute() || dst.len() > 1024 || dst.contains('\0') || dst.ends_with('/') {
        return false;
    }
    let plain = path
        .components()
        .skip(1)
        .all(|c| matches!(c, Component::Normal(_)));
    // `Path::components` drops "." and doubled slashes: compare with the text as given.
    let clean = !dst.contains("//") && !dst.contains("/./") && !dst.ends_with("/.");
    plain
        && clean
        && FILE_DIRS.iter().any(|d| {
            dst.strip_prefix(d)
                .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/'))
        })
}

/// Checks everything a tenant hands a sandbox against the bounds above.
pub fn check(
    env: &[(String, String)],
    config: Option<&[u8]>,
    files: &[DataFile],
) -> Result<(), TenantError> {
    if env.len() > MAX_ENV_VARS
        || env.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > MAX_ENV_BYTES
    {
        return Err(TenantError::EnvTooBig);
    }
    for (i, (key, value)) in env.iter().enumerate() {
        if !valid_env_name(key) {
            return Err(TenantError::EnvName(key.clone()));
        }
        if value.contains('\0') {
            return Err(TenantError::EnvValue(key.clone()));
        }
        if env[..i].iter().any(|(k, _)| k == key) {
            return Err(TenantError::EnvTwice(key.clone()));
        }
    }
    let config_len = config.map_or(0, <[u8]>::len);
    if config_len > MAX_CONFIG_BYTES {
        return Err(TenantError::ConfigTooBig(config_len));
    }
    if files.len() > MAX_FILES || files.iter().any(|f| f.bytes.len() > MAX_FILE_BYTES) {
        return Err(TenantError::FileTooBig);
    }
    for (i, file) in files.iter().enumerate() {
        if !valid_file_dest(&file.dst) {
            return Err(TenantError::FileDest(file.dst.clone()));
        }
        // Neither the same path nor one inside another file's.
        let clash = files[..i].iter().any(|f| {
            f.dst == file.dst
                || file.dst.starts_with(&format!("{}/", f.dst))
                || f.dst.starts_with(&format!("{}/", file.dst))
        });
        if clash {
            return Err(TenantError::FileTwice(file.dst.clone()));
        }
    }
    if config_len + files.iter().map(|f| f.bytes.len()).sum::<usize>() > MAX_TENANT_BYTES {
        return Err(TenantError::TooBig);
    }
    Ok(())
}

/// Bytes as base64 text in JSON.
pub mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `bytes` as one base64 string.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    /// Reads one base64 string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// Optional bytes as base64 text in JSON.
pub mod b64_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `Some(bytes)` as one base64 string, `None` as null.
    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => super::b64::serialize(bytes, s),
            None => s.serialize_none(),
        }
    }

    /// Reads a base64 string or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::b64")] Vec<u8>);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dst: &str) -> DataFile {
        DataFile {
            dst: dst.into(),
            bytes: b"x".to_vec(),
        }
    }

    #[test]
    fn file_destinations_are_clean_paths_under_data_or_config() {
        for good in ["/data/a.csv", "/config/app/settings.toml", "/data/.hidden"] {
            assert!(valid_file_dest(good), "{good}");
        }
        for bad in [
            "/data",
            "/data/",
            "data/a",
            "/data/a/.",
            "/data/../etc/x",
            "/data/./a",
            "/data//a",
            "/proc/x",
            "/runner",
            "/app/lib.so",
            "/work/a",
            "/datax/a",
            "/",
            "",
            "/data/a\0b",
        ] {
            assert!(!valid_file_dest(bad), "{bad:?}");
        }
    }

    #[test]
    fn env_names_and_bounds_are_checked() {
        let env = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert_eq!(check(&env("GREETING", "hé=llo"), None, &[]), Ok(()));
        for bad in ["", "A=B", "A\0", &"x".repeat(257)] {
            assert!(matches!(
                check(&env(bad, "v"), None, &[]),
                Err(TenantError::EnvName(_))
            ));
        }
        assert!(matches!(
            check(&env("A", "a\0b"), None, &[]),
            Err(TenantError::EnvValue(_))
        ));
        let many: Vec<_> = (0..65).map(|i| (format!("K{i}"), String::new())).collect();
        assert_eq!(check(&many, None, &[]), Err(TenantError::EnvTooBig));
        let twice = [env("A", "1"), env("A", "2")].concat();
        assert!(matches!(
            check(&twice, None, &[]),
            Err(TenantError::EnvTwice(_))
        ));
    }

    #[test]
    fn config_and_files_are_bounded_and_may_not_overlap() {
        let big = vec![0u8; MAX_CONFIG_BYTES + 1];
        assert!(matches!(
            check(&[], Some(&big), &[]),
            Err(TenantError::ConfigTooBig(_))
        ));
        let files = [file("/data/a"), file("/data/a/b")];
        assert!(matches!(
            check(&[], None, &files),
            Err(TenantError::FileTwice(_))
        ));
        let files: Vec<_> = (0..17).map(|i| file(&format!("/data/{i}"))).collect();
        assert_eq!(check(&[], None, &files), Err(TenantError::FileTooBig));
        let mut f = file("/data/a");
        f.bytes = vec![0; MAX_FILE_BYTES];
        let mut g = file("/data/b");
        g.bytes = vec![0; MAX_FILE_BYTES];
        assert_eq!(check(&[], Some(b"c"), &[f, g]), Err(TenantError::TooBig));
    }

    #[test]
    fn bytes_travel_as_base64() {
        let f = DataFile {
            dst: "/data/x".into(),
            bytes: vec![0, 255, b'a'],
        };
        let text = serde_json::to_string(&f).unwrap();
        assert_eq!(text, r#"{"dst":"/data/x","bytes":"AP9h"}"#);
        assert_eq!(serde_json::from_str::<DataFile>(&text).unwrap(), f);
    }
}
