//! What a client sends by descriptor, copied into the daemon's own staging directory before
//! anything uses it, so the daemon never opens a path a client names with its own rights.
//!
//! * A library: [`stage_library`] copies the descriptor's regular file (streamed, at most
//!   `--max-lib-size` bytes) to `<staging>/<pid>-<n>.so`.
//! * A crate directory: [`stage_crate_from_fd`] walks the directory descriptor with
//!   `openat(O_NOFOLLOW)` (symbolic links, devices and FIFOs are refused; a crate's
//!   `target/` and dot-directories skipped, except `.cargo`, of which only `config.toml` and
//!   `config` are taken and then checked: source replacement only) and copies at most
//!   [`CrateLimits`] files and bytes, each file with the client's mtime (cargo fingerprints
//!   path packages by mtime). [`stage_tree_from_fd`] does the same for a workspace root sent
//!   with a member, found in the tree by device and inode. The manifest is parsed
//!   (`toml_edit`): a `path = "…"` dependency that stays inside what was sent is kept as
//!   written; any other relative one is made absolute against the directory the client named
//!   (the build allows only the host's `sandbox_abi` there); the copy is its own workspace
//!   root. Where the copy goes is [`staged_apps`](super::staged_apps)'s business.
//!
//! Staged names carry the daemon's pid (`<pid>-<n>…`), so a later daemon can tell a dead
//! daemon's leftovers from a live one's.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub use super::stage_error::StageError;
use super::staged_manifest::{check_cargo_config, rewrite_manifest};

use nix::dir::{Dir, Type};
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

use sandbox::library::{self, Libraries};

/// Bounds on a staged crate.
#[derive(Debug, Clone, Copy)]
pub struct CrateLimits {
    /// Most files.
    pub max_files: usize,
    /// Most bytes in all files.
    pub max_bytes: u64,
    /// Deepest directory nesting.
    pub max_depth: usize,
}

impl Default for CrateLimits {
    fn default() -> CrateLimits {
        CrateLimits {
            max_files: 10_000,
            max_bytes: 64 * 1024 * 1024,
            max_depth: 32,
        }
    }
}

/// The staging directory of a state directory: `<state dir>.staging`.
pub fn staging_of(state_dir: &Path) -> PathBuf {
    let mut name = state_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".staging");
    state_dir.with_file_name(name)
}

/// A fresh name in the staging directory: `<pid>-<random><suffix>` (the pid lets a later
/// daemon sweep what a dead one left; random, so no counter is shared).
pub fn fresh_name(suffix: &str) -> String {
    format!(
        "{}-{:016x}{suffix}",
        std::process::id(),
        rand::random::<u64>()
    )
}

fn make_dir(dir: &Path) -> Result<(), StageError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StageError::Io {
            path: dir.to_owned(),
            source,
        })
}

/// Copies the library `fd` (named `named` by the client) into `staging`; returns the copy.
pub fn stage_library(
    libs: &Libraries,
    fd: OwnedFd,
    named: &Path,
    staging: &Path,
) -> Result<PathBuf, StageError> {
    make_dir(staging)?;
    let dest = staging.join(fresh_name(".so"));
    libs.copy_from_fd(&File::from(fd), &dest)
        .map_err(|source| StageError::Io {
            path: named.to_owned(),
            source,
        })?;
    Ok(dest)
}

/// Copies the crate directory `dirfd` (named `named` by the client) to `dest` (which must not
/// exist), within `limits`; returns `dest`. See the module docs.
pub fn stage_crate_from_fd(
    dirfd: OwnedFd,
    named: &Path,
    dest: &Path,
    limits: CrateLimits,
) -> Result<PathBuf, StageError> {
    stage_tree_from_fd(dirfd, None, named, dest, limits)
}

/// Copies the directory `treefd` to `dest` (which must not exist), within `limits`, and
/// returns the copy of the crate to build: the tree itself, or, with `member`, the directory
/// of the tree that is the same directory as `member` (by device and inode: a workspace
/// root handed over with the member to build). `named` is the crate's path as the client
/// named it. See the module docs.
pub fn stage_tree_from_fd(
    treefd: OwnedFd,
    member: Option<OwnedFd>,
    named: &Path,
    dest: &Path,
    limits: CrateLimits,
) -> Result<PathBuf, StageError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source: io::Error| StageError::Io { path, source }
    };
    let meta = File::from(treefd.try_clone().map_err(io(named))?)
        .metadata()
        .map_err(io(named))?;
    if !meta.is_dir() {
        return Err(StageError::NotPlain {
            path: named.to_owned(),
            what: "not a directory",
        });
    }
    let find = match member {
        Some(fd) => {
            let m = File::from(fd).metadata().map_err(io(named))?;
            Some((m.dev(), m.ino()))
        }
        None => None,
    };
    if let Some(parent) = dest.parent() {
        make_dir(parent)?;
    }
    let mut budget = Budget {
        only_config: false,
        files: 0,
        bytes: 0,
        limits,
        root: named.to_owned(),
        dest_root: dest.to_owned(),
        find: find.filter(|&f| f != (meta.dev(), meta.ino())),
        found: None,
    };
    let result = copy_tree(treefd, named, dest, 0, &mut budget).and_then(|()| {
        let rel = match (budget.find, budget.found.take()) {
            (None, _) => PathBuf::new(),
            (Some(_), Some(rel)) => rel,
            (Some(_), None) => {
                return Err(StageError::Refused {
                    path: named.to_owned(),
                    why: format!(
                        "{}: the crate is not in the tree sent with it (or under a target or \
                         hidden directory of it)",
                        named.display()
                    ),
                });
            }
        };
        let krate = dest.join(&rel);
        let depth = rel.components().count();
        let manifest = krate.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).map_err(io(&named.join("Cargo.toml")))?;
        let rewritten = rewrite_manifest(&text, named, depth).map_err(|e| StageError::Refused {
            path: named.join("Cargo.toml"),
            why: format!("{}: {e}", named.join("Cargo.toml").display()),
        })?;
        let when = std::fs::metadata(&manifest).and_then(|m| m.modified());
        std::fs::write(&manifest, rewritten).map_err(io(&manifest))?;
        // The client's mtime again (cargo compares mtimes with its fingerprints').
        if let Ok(when) = when {
            let _ = File::options()
                .write(true)
                .open(&manifest)
                .and_then(|f| f.set_modified(when));
        }
        check_cargo_config(&krate, named)?;
        if depth > 0
            && let Some(tree_named) = named.ancestors().nth(depth)
        {
            check_cargo_config(dest, tree_named)?;
        }
        Ok(krate)
    });
    match result {
        Ok(krate) => Ok(krate),
        Err(e) => {
            let _ = std::fs::remove_dir_all(dest);
            Err(e)
        }
    }
}

struct Budget {
    /// Inside `.cargo`: only the config files are copied.
    only_config: bool,
    files: usize,
    bytes: u64,
    limits: CrateLimits,
    root: PathBuf,
    /// Where the copy goes.
    dest_root: PathBuf,
    /// The member directory looked for (device, inode), and where it was found.
    find: Option<(u64, u64)>,
    found: Option<PathBuf>,
}

impl Budget {
    fn too_large(&self, what: String) -> StageError {
        StageError::TooLarge {
            path: self.root.clone(),
            what,
        }
    }
}

fn copy_tree(
    dirfd: OwnedFd,
    named: &Path,
    dest: &Path,
    depth: usize,
    budget: &mut Budget,
) -> Result<(), StageError> {
    if depth > budget.limits.max_depth {
        return Err(budget.too_large(format!(
            "nested deeper than {} directories",
            budget.limits.max_depth
        )));
    }
    // Readable by the build's own uid: a workspace sibling is bound into the build sandbox
    // from here (the staging directory itself stays 0700).
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(dest)
        .map_err(|source| StageError::Io {
            path: dest.to_owned(),
            source,
        })?;
    let mut dir = Dir::from_fd(dirfd).map_err(|e| StageError::Io {
        path: named.to_owned(),
        source: e.into(),
    })?;
    let parent_fd = dir.as_raw_fd();
    let mut entries = Vec::new();
    for entry in dir.iter() {
        let entry = entry.map_err(|e| StageError::Io {
            path: named.to_owned(),
            source: e.into(),
        })?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        entries.push((entry.file_name().to_owned(), entry.file_type()));
    }
    // A crate's `target` is build output, wherever the crate sits in the tree.
    let crate_dir = entries.iter().any(|(n, _)| n.to_bytes() == b"Cargo.toml");
    for (name, kind) in entries {
        let text = String::from_utf8_lossy(name.to_bytes()).into_owned();
        let path = named.join(&text);
        let is_dir = kind == Some(Type::Directory);
        // Build output and version control are not part of a crate's source; of a hidden
        // directory only the top `.cargo` is taken, and of it only the cargo config.
        let cargo_dir = text == ".cargo";
        if is_dir && text == "target" && (depth == 0 || crate_dir)
            || is_dir && text.starts_with('.') && !cargo_dir
        {
            continue;
        }
        if budget.only_config && !appbuild::cargo_config::FILES.contains(&text.as_str()) {
            continue;
        }
        budget.files += 1;
        if budget.files > budget.limits.max_files {
            return Err(budget.too_large(format!("more than {} files", budget.limits.max_files)));
        }
        // SAFETY: `parent_fd` is the open directory of `dir`, alive for this loop.
        let parent = unsafe { std::os::fd::BorrowedFd::borrow_raw(parent_fd) };
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let fd = openat(parent, name.as_c_str(), flags, Mode::empty()).map_err(|e| {
            if e == nix::errno::Errno::ELOOP {
                StageError::NotPlain {
                    path: path.clone(),
                    what: "a symbolic link",
                }
            } else {
                StageError::Io {
                    path: path.clone(),
                    source: e.into(),
                }
            }
        })?;
        let file = File::from(fd);
        let meta = file.metadata().map_err(|source| StageError::Io {
            path: path.clone(),
            source,
        })?;
        let t = meta.file_type();
        if t.is_dir() {
            if budget.only_config {
                continue;
            }
            if budget.find == Some((meta.dev(), meta.ino())) {
                let here = dest.join(&text);
                budget.found = here
                    .strip_prefix(&budget.dest_root)
                    .ok()
                    .map(Path::to_path_buf);
            }
            budget.only_config = cargo_dir;
            let copied = copy_tree(file.into(), &path, &dest.join(&text), depth + 1, budget);
            budget.only_config = false;
            copied?;
        } else if t.is_file() {
            budget.bytes += meta.size();
            if budget.bytes > budget.limits.max_bytes {
                return Err(budget.too_large(format!(
                    "more than {} bytes of files",
                    budget.limits.max_bytes
                )));
            }
            copy_file(&file, meta.size(), &dest.join(&text)).map_err(|source| StageError::Io {
                path: path.clone(),
                source,
            })?;
        } else {
            return Err(StageError::NotPlain {
                path,
                what: "a special file",
            });
        }
    }
    Ok(())
}

/// Copies at most `size` bytes (the size fstat saw: a file that grows is cut there).
fn copy_file(from: &File, size: u64, to: &Path) -> io::Result<()> {
    let mut out = File::options()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(to)?;
    let mut limited = from
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)?
        .take(size);
    let mut buf = vec![0u8; library::CHUNK];
    loop {
        let n = limited.read(&mut buf)?;
        if n == 0 {
            // The client's mtime: cargo fingerprints path packages (a vendored dependency
            // inside the crate) by mtime, so an unchanged file must not look new.
            if let Ok(when) = from.metadata().and_then(|m| m.modified()) {
                out.set_modified(when)?;
            }
            return Ok(());
        }
        out.write_all(&buf[..n])?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_dir(path: &Path) -> OwnedFd {
        File::options()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(path)
            .unwrap()
            .into()
    }

    #[test]
    fn a_crate_is_copied_without_following_links_and_within_bounds() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("app");
        std::fs::create_dir_all(src.join("src/m")).unwrap();
        std::fs::create_dir_all(src.join("target/release")).unwrap();
        std::fs::write(
            src.join("Cargo.toml"),
            "[dependencies]\nabi = { path = \"../abi\" }\n",
        )
        .unwrap();
        std::fs::write(src.join("src/lib.rs"), "pub fn f() {}").unwrap();
        std::fs::write(src.join("src/m/x.rs"), "x").unwrap();
        std::fs::write(src.join("target/release/big"), vec![0u8; 1000]).unwrap();
        let dest = tmp.path().join("staging/one");
        stage_crate_from_fd(open_dir(&src), &src, &dest, CrateLimits::default()).unwrap();
        assert_eq!(std::fs::read(dest.join("src/m/x.rs")).unwrap(), b"x");
        assert!(!dest.join("target").exists());
        let manifest = std::fs::read_to_string(dest.join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains(&format!("{}/../abi", src.display())),
            "{manifest}"
        );
        assert!(manifest.contains("[workspace]"));

        // A link out of the crate (say, to /etc/shadow) is refused, not followed.
        std::os::unix::fs::symlink("/etc/shadow", src.join("src/secret.rs")).unwrap();
        let err = stage_crate_from_fd(
            open_dir(&src),
            &src,
            &tmp.path().join("staging/two"),
            CrateLimits::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("secret.rs: a symbolic link"),
            "{err}"
        );
        assert!(!tmp.path().join("staging/two").exists());
        std::fs::remove_file(src.join("src/secret.rs")).unwrap();

        let few = CrateLimits {
            max_files: 2,
            ..CrateLimits::default()
        };
        let err =
            stage_crate_from_fd(open_dir(&src), &src, &tmp.path().join("s3"), few).unwrap_err();
        assert!(err.to_string().contains("more than 2 files"), "{err}");
        let small = CrateLimits {
            max_bytes: 10,
            ..CrateLimits::default()
        };
        let err =
            stage_crate_from_fd(open_dir(&src), &src, &tmp.path().join("s4"), small).unwrap_err();
        assert!(err.to_string().contains("more than 10 bytes"), "{err}");
    }

    #[test]
    fn paths_inside_the_crate_its_cargo_config_and_mtimes_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("app");
        for d in ["src", "vendor/hex/src", ".cargo/nested", ".git"] {
            std::fs::create_dir_all(src.join(d)).unwrap();
        }
        std::fs::write(
            src.join("Cargo.toml"),
            "[dependencies]\nhex = {path='vendor/hex'}\nup = { path = \"vendor/../../up\" }\n",
        )
        .unwrap();
        std::fs::write(src.join("vendor/hex/src/lib.rs"), "").unwrap();
        std::fs::write(src.join("vendor/hex/.cargo-checksum.json"), "{}").unwrap();
        let config =
            "[source.crates-io]\nreplace-with = \"v\"\n[source.v]\ndirectory = \"vendor\"\n";
        std::fs::write(src.join(".cargo/config.toml"), config).unwrap();
        std::fs::write(src.join(".cargo/credentials.toml"), "token").unwrap();
        std::fs::write(src.join(".git/config"), "x").unwrap();
        let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        for f in ["vendor/hex/src/lib.rs", "Cargo.toml"] {
            File::options()
                .write(true)
                .open(src.join(f))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        let dest = tmp.path().join("staged");
        stage_crate_from_fd(open_dir(&src), &src, &dest, CrateLimits::default()).unwrap();
        let manifest = std::fs::read_to_string(dest.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("hex = {path='vendor/hex'}"), "{manifest}");
        assert!(
            manifest.contains(&format!("{}/vendor/../../up", src.display())),
            "{manifest}"
        );
        assert!(manifest.contains("[workspace]"), "{manifest}");
        assert_eq!(
            std::fs::read_to_string(dest.join(".cargo/config.toml")).unwrap(),
            config
        );
        assert!(dest.join("vendor/hex/.cargo-checksum.json").is_file());
        for gone in [".cargo/credentials.toml", ".cargo/nested", ".git"] {
            assert!(!dest.join(gone).exists(), "{gone}");
        }
        for f in ["vendor/hex/src/lib.rs", "Cargo.toml"] {
            let m = std::fs::metadata(dest.join(f)).unwrap().modified().unwrap();
            assert_eq!(m, old, "{f}");
        }

        std::fs::write(
            src.join(".cargo/config.toml"),
            "[build]\nrustc-wrapper = \"/x\"\n",
        )
        .unwrap();
        let err = stage_crate_from_fd(
            open_dir(&src),
            &src,
            &tmp.path().join("bad"),
            CrateLimits::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(&format!(
                "{}/.cargo/config.toml: `build` is not allowed",
                src.display()
            )),
            "{err}"
        );
        assert!(!tmp.path().join("bad").exists());
    }

    #[test]
    fn a_library_descriptor_is_staged_and_dev_zero_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let lib = tmp.path().join("lib.so");
        std::fs::write(&lib, b"elf").unwrap();
        let fd: OwnedFd = File::open(&lib).unwrap().into();
        let libs = Libraries::default();
        let staged = stage_library(&libs, fd, &lib, &tmp.path().join("st")).unwrap();
        assert_eq!(std::fs::read(&staged).unwrap(), b"elf");
        let name = staged.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(&format!("{}-", std::process::id())),
            "{name}"
        );
        let zero: OwnedFd = File::open("/dev/zero").unwrap().into();
        let err = stage_library(&libs, zero, Path::new("/dev/zero"), &tmp.path().join("st"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/dev/zero: not a regular file"), "{err}");
    }
}
