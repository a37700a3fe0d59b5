//! The crate's private copy in its build directory, brought up to date for a build: a file
//! whose content is unchanged is left as it is (with its mtime), a changed or new one is
//! written afresh (its mtime now), and whatever the source no longer has (or the last build
//! wrote there) is removed.
//!
//! Why not copy the source's mtimes instead: cargo fingerprints path packages by mtime, and a
//! source that goes back to an older file (a build of a changed `lib.rs`, then of the crate
//! as it is on disk) would then look older than the last build and not be compiled again.
//! Content decides; mtimes only ever move forward.
//!
//! The copy is writable by the previous build: nothing in it is followed. A symlink or other
//! non-regular entry where a file or directory belongs is removed; files are compared through
//! `O_NOFOLLOW` opens.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::BuildError;

/// What is left of the copy's bounds: bytes, entries.
pub type Budget = (u64, usize);

/// Sets `p`'s owner, when there is one to set.
pub fn chown(p: &Path, owner: Option<(u32, u32)>) -> Result<(), BuildError> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(|e| BuildError::io(p, e))?;
    }
    Ok(())
}

/// Writes `bytes` to `p` unless it already holds exactly them; owned by `owner`.
pub fn write_owned(p: &Path, bytes: &[u8], owner: Option<(u32, u32)>) -> Result<(), BuildError> {
    let same = open_plain(p).is_some_and(|f| same_content(f, &mut &bytes[..]).unwrap_or(false));
    if !same {
        remove_any(p)?;
        std::fs::write(p, bytes).map_err(|e| BuildError::io(p, e))?;
    }
    chown(p, owner)
}

/// Brings the copy `to` of directory `from` up to date (see the module docs), skipping
/// `.git` everywhere and, at the top (`top`), `target` and `.cargo`.
pub fn sync_tree(
    from: &Path,
    to: &Path,
    top: bool,
    owner: Option<(u32, u32)>,
    budget: &mut Budget,
    cap: Budget,
) -> Result<(), BuildError> {
    if !std::fs::symlink_metadata(to).is_ok_and(|m| m.is_dir()) {
        remove_any(to)?;
        std::fs::create_dir(to).map_err(|e| BuildError::io(to, e))?;
    }
    chown(to, owner)?;
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(from).map_err(|e| BuildError::io(from, e))? {
        let entry = entry.map_err(|e| BuildError::io(from, e))?;
        let name = entry.file_name();
        // No cargo config either: what of it is allowed goes to cargo as `--config`.
        if name == ".git" || (top && (name == "target" || name == ".cargo")) {
            continue;
        }
        budget.1 = budget.1.checked_sub(1).ok_or_else(|| {
            BuildError::failed(format!("{} has more than {} files", from.display(), cap.1))
        })?;
        let src = entry.path();
        let dst = to.join(&name);
        let kind = entry.file_type().map_err(|e| BuildError::io(&src, e))?;
        if kind.is_symlink() {
            let target = std::fs::read_link(&src).map_err(|e| BuildError::io(&src, e))?;
            let same = std::fs::symlink_metadata(&dst).is_ok_and(|m| m.is_symlink())
                && std::fs::read_link(&dst).is_ok_and(|t| t == target);
            if !same {
                remove_any(&dst)?;
                std::os::unix::fs::symlink(&target, &dst).map_err(|e| BuildError::io(&dst, e))?;
            }
            chown(&dst, owner)?;
        } else if kind.is_dir() {
            sync_tree(&src, &dst, false, owner, budget, cap)?;
        } else if kind.is_file() {
            sync_file(&src, &dst, owner, budget, cap)?;
        } else {
            continue;
        }
        seen.push(name);
    }
    for entry in std::fs::read_dir(to).map_err(|e| BuildError::io(to, e))? {
        let entry = entry.map_err(|e| BuildError::io(to, e))?;
        if !seen.contains(&entry.file_name()) {
            remove_any(&entry.path())?;
        }
    }
    Ok(())
}

fn sync_file(
    src: &Path,
    dst: &Path,
    owner: Option<(u32, u32)>,
    budget: &mut Budget,
    cap: Budget,
) -> Result<(), BuildError> {
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(src)
            .map_err(|e| BuildError::io(src, e))
    };
    let input = open()?;
    let meta = input.metadata().map_err(|e| BuildError::io(src, e))?;
    budget.0 = budget.0.checked_sub(meta.len()).ok_or_else(|| {
        BuildError::failed(format!(
            "{} is larger than {} MiB",
            src.parent().unwrap_or(src).display(),
            cap.0 >> 20
        ))
    })?;
    let same = open_plain(dst).is_some_and(|f| {
        f.metadata().is_ok_and(|m| m.len() == meta.len())
            && same_content(f, &mut (&input).take(meta.len())).unwrap_or(false)
    });
    if !same {
        remove_any(dst)?;
        let mut output = File::create(dst).map_err(|e| BuildError::io(dst, e))?;
        // At most the size fstat saw: a file that grows is cut there.
        std::io::copy(&mut open()?.take(meta.len()), &mut output)
            .map_err(|e| BuildError::io(dst, e))?;
    }
    let mode = meta.permissions().mode() & 0o755;
    std::fs::set_permissions(dst, PermissionsExt::from_mode(mode))
        .map_err(|e| BuildError::io(dst, e))?;
    chown(dst, owner)
}

/// `p` opened without following a symlink, when it is a regular file.
fn open_plain(p: &Path) -> Option<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(p)
        .ok()?;
    f.metadata().ok()?.is_file().then_some(f)
}

/// Whether `a` and `b` hold the same bytes.
fn same_content(mut a: File, b: &mut impl Read) -> std::io::Result<bool> {
    let mut x = vec![0u8; 64 * 1024];
    let mut y = vec![0u8; 64 * 1024];
    loop {
        let n = read_full(&mut a, &mut x)?;
        let m = read_full(b, &mut y)?;
        if n != m || x[..n] != y[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Removes whatever is at `p` (a directory with its contents, never following a link).
fn remove_any(p: &Path) -> Result<(), BuildError> {
    match std::fs::symlink_metadata(p) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => crate::disk::remove_tree(p).map_err(|e| BuildError::io(p, e)),
        Ok(_) => std::fs::remove_file(p).map_err(|e| BuildError::io(p, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    const CAP: Budget = (1 << 20, 100);

    #[test]
    fn only_what_changed_is_written_and_mtimes_never_go_back() {
        let tmp = tempfile::tempdir().unwrap();
        let (from, to) = (tmp.path().join("from"), tmp.path().join("to"));
        std::fs::create_dir_all(from.join("src")).unwrap();
        std::fs::create_dir_all(from.join("target")).unwrap();
        std::fs::write(from.join("src/lib.rs"), "v1").unwrap();
        std::fs::write(from.join("src/keep.rs"), "same").unwrap();
        std::os::unix::fs::symlink("keep.rs", from.join("src/link.rs")).unwrap();
        sync_tree(&from, &to, true, None, &mut CAP.clone(), CAP).unwrap();
        assert!(!to.join("target").exists());
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for f in ["src/lib.rs", "src/keep.rs"] {
            File::options()
                .write(true)
                .open(to.join(f))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        // What the last build left, and a link it put where a file belongs.
        std::fs::write(to.join("src/generated.rs"), "x").unwrap();
        std::fs::remove_file(to.join("src/keep.rs")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", to.join("src/keep.rs")).unwrap();
        // The source goes back to an older file: still written, with a new mtime.
        std::fs::write(from.join("src/lib.rs"), "v0").unwrap();
        File::options()
            .write(true)
            .open(from.join("src/lib.rs"))
            .unwrap()
            .set_modified(old - Duration::from_secs(10))
            .unwrap();
        std::fs::write(from.join("src/untouched.rs"), "u").unwrap();
        sync_tree(&from, &to, true, None, &mut CAP.clone(), CAP).unwrap();
        let mtime = |f: &str| std::fs::metadata(to.join(f)).unwrap().modified().unwrap();
        assert_eq!(
            std::fs::read_to_string(to.join("src/lib.rs")).unwrap(),
            "v0"
        );
        assert!(mtime("src/lib.rs") > old);
        assert!(
            !std::fs::symlink_metadata(to.join("src/keep.rs"))
                .unwrap()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read_to_string(to.join("src/keep.rs")).unwrap(),
            "same"
        );
        assert!(!to.join("src/generated.rs").exists());
        // An unchanged file keeps its mtime.
        std::fs::write(to.join("src/untouched.rs"), "u").unwrap();
        File::options()
            .write(true)
            .open(to.join("src/untouched.rs"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        sync_tree(&from, &to, true, None, &mut CAP.clone(), CAP).unwrap();
        assert_eq!(mtime("src/untouched.rs"), old);
        assert_eq!(
            std::fs::read_link(to.join("src/link.rs")).unwrap(),
            Path::new("keep.rs")
        );
    }
}
