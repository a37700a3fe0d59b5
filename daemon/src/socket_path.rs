//! Where the control socket lives: `--socket PATH`, else `SANDBOX_HOST_SOCKET`, else
//! `$XDG_RUNTIME_DIR/sandbox-host/host.sock` (root: `/run/sandbox-host/host.sock`).

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The environment variable naming the socket.
pub const ENV: &str = "SANDBOX_HOST_SOCKET";

/// File name of the socket in the default directory.
pub const FILE_NAME: &str = "host.sock";

/// A resolved socket path and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketPath {
    /// The socket.
    pub path: PathBuf,
    /// Whether this is the default location (the daemon then owns its directory).
    pub is_default: bool,
}

/// The default socket for this user.
pub fn default_path() -> PathBuf {
    default_dir().join(FILE_NAME)
}

fn default_dir() -> PathBuf {
    let uid = nix::unistd::geteuid().as_raw();
    if uid == 0 {
        return PathBuf::from("/run/sandbox-host");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("sandbox-host"),
        // No runtime dir (e.g. a plain `su`): a per-user directory in the temp dir, which
        // the daemon creates 0700 and checks the owner of.
        None => std::env::temp_dir().join(format!("sandbox-host-{uid}")),
    }
}

/// Resolves the socket: `explicit` (the `--socket` flag, which clap may already have filled
/// from the environment), else `$SANDBOX_HOST_SOCKET`, else [`default_path`].
pub fn resolve(explicit: Option<&Path>) -> SocketPath {
    if let Some(path) = explicit {
        return SocketPath {
            path: path.to_owned(),
            is_default: false,
        };
    }
    if let Some(path) = std::env::var_os(ENV).filter(|p| !p.is_empty()) {
        return SocketPath {
            path: PathBuf::from(path),
            is_default: false,
        };
    }
    SocketPath {
        path: default_path(),
        is_default: true,
    }
}

/// Makes sure the socket's directory exists and is private to this user, never following a
/// symbolic link (`lstat`, `O_NOFOLLOW`): a link planted where the directory should be (e.g.
/// at the predictable `/tmp/sandbox-host-UID`) is refused.
///
/// A missing directory is created 0700 (with any missing parents). The default directory,
/// if it exists, must belong to this user and is set to 0700. A directory named with
/// `--socket` that already exists is used as it is: it may be shared (e.g. `/tmp`), so it
/// is not changed, and the returned warning says so when others can enter it. Either way
/// the socket itself is 0600 and every peer's uid is checked.
pub fn prepare_dir(socket: &SocketPath) -> io::Result<Option<String>> {
    let dir = match socket.path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let meta = match std::fs::symlink_metadata(&dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)?;
            }
            // The last step by plain mkdir: someone who made it first is found out below.
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            let meta = std::fs::symlink_metadata(&dir)?;
            let me = nix::unistd::geteuid().as_raw();
            if meta.file_type().is_dir() && meta.uid() == me && meta.mode() & 0o077 == 0 {
                return Ok(None);
            }
            meta
        }
        Err(e) => return Err(e),
        Ok(meta) => meta,
    };
    if meta.file_type().is_symlink() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is a symbolic link; refusing to use it as the socket's directory",
                dir.display()
            ),
        ));
    }
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory", dir.display()),
        ));
    }
    let me = nix::unistd::geteuid().as_raw();
    let open_to_others = meta.mode() & 0o077 != 0;
    if socket.is_default {
        if meta.uid() != me {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} belongs to uid {}, not to this user (uid {me})",
                    dir.display(),
                    meta.uid()
                ),
            ));
        }
        if open_to_others {
            // chmod through a descriptor of the directory itself, never through a link.
            let opened = std::fs::File::options()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                .open(&dir)?;
            let now = opened.metadata()?;
            if now.ino() != meta.ino() || now.dev() != meta.dev() {
                return Err(io::Error::other(format!(
                    "{} was replaced while being prepared",
                    dir.display()
                )));
            }
            opened.set_permissions(std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(None)
    } else if open_to_others {
        Ok(Some(format!(
            "{} is accessible to other users (mode {:o}); the socket is 0600 and peers \
             are checked, but a private directory is safer",
            dir.display(),
            meta.mode() & 0o7777
        )))
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_path_wins() {
        let got = resolve(Some(Path::new("/x/y.sock")));
        assert_eq!(got.path, PathBuf::from("/x/y.sock"));
        assert!(!got.is_default);
    }

    #[test]
    fn the_default_ends_in_sandbox_host() {
        let path = default_path();
        assert!(path.ends_with("host.sock"));
        let dir = path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy();
        assert!(dir.starts_with("sandbox-host"), "{}", path.display());
        if nix::unistd::geteuid().is_root() {
            assert_eq!(path, PathBuf::from("/run/sandbox-host/host.sock"));
        }
    }

    #[test]
    fn a_symbolic_link_as_the_directory_is_refused_and_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = tmp.path().join("sandbox-host-1000");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let socket = SocketPath {
            path: link.join("host.sock"),
            is_default: true,
        };
        let err = prepare_dir(&socket).unwrap_err();
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
        assert_eq!(
            std::fs::metadata(&target).unwrap().mode() & 0o777,
            0o755,
            "the link's target is untouched"
        );
    }

    #[test]
    fn a_missing_directory_is_created_private() {
        let tmp = tempfile::tempdir().unwrap();
        let socket = SocketPath {
            path: tmp.path().join("a/b/host.sock"),
            is_default: false,
        };
        assert_eq!(prepare_dir(&socket).unwrap(), None);
        let mode = std::fs::metadata(tmp.path().join("a/b")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn the_default_directory_is_made_private_and_a_shared_one_is_warned_about() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let shared = SocketPath {
            path: dir.join("host.sock"),
            is_default: false,
        };
        assert!(prepare_dir(&shared).unwrap().is_some());
        let owned = SocketPath {
            is_default: true,
            ..shared
        };
        assert_eq!(prepare_dir(&owned).unwrap(), None);
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    }
}
