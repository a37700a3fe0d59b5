//! A crate's own `.cargo/config.toml` (what `cargo vendor` asks for), read by parsing it
//! (`toml_edit`) and allowed only where it replaces a source with a vendored directory:
//!
//! ```toml
//! [source.crates-io]
//! replace-with = "vendored-sources"
//! [source.vendored-sources]
//! directory = "vendor"
//! [net]
//! offline = true
//! ```
//!
//! Every other key (`[build] rustc-wrapper`, `[target.*] linker`, `[env]`, `[alias]`, a
//! source's `git` or `registry`, ...) is refused, naming it: such keys would run programs or
//! reach the network with the daemon's cargo. A `directory` must be relative and stay inside
//! the crate. Cargo never reads the file itself: what is allowed is passed as `--config
//! KEY=VALUE` arguments (the copy the build sees has no `.cargo` directory).

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use toml_edit::{DocumentMut, Item};

/// The file names cargo reads in a `.cargo` directory, newest spelling first.
pub const FILES: [&str; 2] = ["config.toml", "config"];

/// Largest config file read.
const MAX_BYTES: u64 = 64 * 1024;

/// Why a crate's cargo config was refused; names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("{}: does not parse: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: toml_edit::TomlError,
    },
    /// A key other than a source replacement.
    #[error(
        "{}: `{key}` is not allowed: a crate's cargo config may only replace sources with \
         vendored directories ([source.NAME] replace-with / directory, [net] offline)",
        path.display()
    )]
    Refused {
        /// The file.
        path: PathBuf,
        /// The dotted key.
        key: String,
    },
    /// A value of the wrong type or a directory outside the crate.
    #[error("{}: `{key}`: {why}", path.display())]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The dotted key.
        key: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// What a crate's cargo config asks for, checked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VendorConfig {
    /// `(source name, replace-with)`.
    pub replace: Vec<(String, String)>,
    /// `(source name, directory relative to the crate, normalised)`.
    pub directories: Vec<(String, PathBuf)>,
    /// `[net] offline`.
    pub offline: Option<bool>,
}

impl VendorConfig {
    /// The `--config KEY=VALUE` arguments for a crate that sits at `crate_dir` (as cargo
    /// sees it), each key and value written by `toml_edit`, so no name can add a key.
    pub fn cargo_args(&self, crate_dir: &Path) -> Vec<String> {
        let key = |name: &str, field: &str| {
            format!(
                "source.{}.{field}",
                toml_edit::Key::new(name).display_repr()
            )
        };
        let value = |v: &str| toml_edit::Value::from(v).to_string();
        let mut out = Vec::new();
        for (name, with) in &self.replace {
            out.push("--config".into());
            out.push(format!("{}={}", key(name, "replace-with"), value(with)));
        }
        for (name, dir) in &self.directories {
            let abs = crate_dir.join(dir);
            out.push("--config".into());
            out.push(format!(
                "{}={}",
                key(name, "directory"),
                value(&abs.to_string_lossy())
            ));
        }
        if let Some(offline) = self.offline {
            out.push("--config".into());
            out.push(format!("net.offline={offline}"));
        }
        out
    }
}

/// The config file of the crate at `dir`, if it has one (`.cargo/config.toml`, else
/// `.cargo/config`).
pub fn find(dir: &Path) -> Option<PathBuf> {
    FILES
        .iter()
        .map(|f| dir.join(".cargo").join(f))
        .find(|p| std::fs::symlink_metadata(p).is_ok())
}

/// Reads and checks the cargo config of the crate at `dir` (none: the default).
pub fn read(dir: &Path) -> Result<VendorConfig, ConfigError> {
    let Some(path) = find(dir) else {
        return Ok(VendorConfig::default());
    };
    let io = |source| ConfigError::Io {
        path: path.clone(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(io)?;
    if !f.metadata().map_err(io)?.is_file() {
        return Err(io(std::io::Error::other("not a regular file")));
    }
    let mut text = String::new();
    (&mut f)
        .take(MAX_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_BYTES {
        return Err(io(std::io::Error::other(format!(
            "larger than {} KiB",
            MAX_BYTES >> 10
        ))));
    }
    check(&text, &path)
}

/// Checks config `text` (read from `path`, named in errors).
pub fn check(text: &str, path: &Path) -> Result<VendorConfig, ConfigError> {
    let doc: DocumentMut = text.parse().map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })?;
    let refused = |key: String| ConfigError::Refused {
        path: path.to_owned(),
        key,
    };
    let bad = |key: String, why| ConfigError::BadValue {
        path: path.to_owned(),
        key,
        why,
    };
    let mut out = VendorConfig::default();
    for (top, item) in doc.iter() {
        match top {
            "source" => {
                let Some(sources) = item.as_table_like() else {
                    return Err(bad("source".into(), "must be a table"));
                };
                for (name, source) in sources.iter() {
                    let Some(source) = source.as_table_like() else {
                        return Err(bad(format!("source.{name}"), "must be a table"));
                    };
                    for (field, value) in source.iter() {
                        let key = format!("source.{name}.{field}");
                        let Some(text) = value.as_str() else {
                            return Err(match field {
                                "replace-with" | "directory" => bad(key, "must be a string"),
                                _ => refused(key),
                            });
                        };
                        match field {
                            "replace-with" => out.replace.push((name.into(), text.into())),
                            "directory" => {
                                let dir = inside(text).ok_or_else(|| {
                                    bad(key, "must be a relative path inside the crate")
                                })?;
                                out.directories.push((name.into(), dir));
                            }
                            _ => return Err(refused(key)),
                        }
                    }
                }
            }
            "net" => {
                let Some(net) = item.as_table_like() else {
                    return Err(bad("net".into(), "must be a table"));
                };
                for (field, value) in net.iter() {
                    let key = format!("net.{field}");
                    match (field, value) {
                        ("offline", Item::Value(v)) => {
                            out.offline =
                                Some(v.as_bool().ok_or_else(|| bad(key, "must be a boolean"))?)
                        }
                        _ => return Err(refused(key)),
                    }
                }
            }
            other => return Err(refused(other.into())),
        }
    }
    Ok(out)
}

/// `rel` normalised, when it is relative and never climbs out of where it starts.
fn inside(rel: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VENDOR: &str = "[source.crates-io]\nreplace-with = \"vendored-sources\"\n\n\
                          [source.vendored-sources]\ndirectory = \"vendor\"\n";

    #[test]
    fn what_cargo_vendor_writes_is_allowed() {
        let c = check(VENDOR, Path::new("c")).unwrap();
        assert_eq!(
            c.replace,
            [("crates-io".to_string(), "vendored-sources".to_string())]
        );
        assert_eq!(
            c.cargo_args(Path::new("/src/app")),
            [
                "--config",
                "source.crates-io.replace-with=\"vendored-sources\"",
                "--config",
                "source.vendored-sources.directory=\"/src/app/vendor\"",
            ]
        );
        let c = check("[net]\noffline = true\n", Path::new("c")).unwrap();
        assert_eq!(c.offline, Some(true));
    }

    #[test]
    fn anything_else_is_refused_naming_the_key() {
        for (text, key) in [
            ("[build]\nrustc-wrapper = \"/bin/sh\"\n", "`build`"),
            (
                "[target.x86_64-unknown-linux-gnu]\nlinker = \"/x\"\n",
                "`target`",
            ),
            ("[env]\nRUSTC = \"/x\"\n", "`env`"),
            ("[alias]\nb = \"run\"\n", "`alias`"),
            ("[http]\nproxy = \"x\"\n", "`http`"),
            (
                "[source.x]\ngit = \"https://example.com/x\"\n",
                "`source.x.git`",
            ),
            (
                "[source.x]\nregistry = \"https://example.com/x\"\n",
                "`source.x.registry`",
            ),
            (
                "[net]\ngit-fetch-with-cli = true\n",
                "`net.git-fetch-with-cli`",
            ),
            ("paths = [\"/etc\"]\n", "`paths`"),
        ] {
            let err = check(text, Path::new("/a/.cargo/config.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
            assert!(err.starts_with("/a/.cargo/config.toml: "), "{err}");
        }
    }

    #[test]
    fn a_directory_outside_the_crate_is_refused() {
        for dir in ["../vendor", "/vendor", "a/../../b"] {
            let text = format!("[source.v]\ndirectory = \"{dir}\"\n");
            let err = check(&text, Path::new("c")).unwrap_err().to_string();
            assert!(err.contains("inside the crate"), "{dir}: {err}");
        }
        let c = check(
            "[source.v]\ndirectory = \"./a/../vendor\"\n",
            Path::new("c"),
        )
        .unwrap();
        assert_eq!(c.directories[0].1, Path::new("vendor"));
    }

    #[test]
    fn a_source_name_cannot_add_a_key() {
        let text = "[source.'a\".b=1']\nreplace-with = \"x\\\"\\n[build]\"\n";
        let c = check(text, Path::new("c")).unwrap();
        let args = c.cargo_args(Path::new("/s"));
        let doc: DocumentMut = args[1].parse().unwrap();
        let source = doc["source"].as_table_like().unwrap();
        assert_eq!(source.len(), 1);
        assert_eq!(
            source.get("a\".b=1").unwrap()["replace-with"].as_str(),
            Some("x\"\n[build]")
        );
    }
}
