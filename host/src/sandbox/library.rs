//! App libraries on their way into a sandbox: read once, hashed once per file identity, kept
//! once per content in the host's store, and hard-linked to a private, versioned path.
//!
//! A reload or create reads the library and gives the sandbox a path of its own for it (dlopen
//! caches by path, so every version needs its own, and the sandbox must not see later writes
//! to the original). The bytes are written once per content into the store, a directory
//! beside the sandboxes (`<state dir>.libs/<sha256>.so`, read-only, never written again), and
//! each sandbox gets a hard link: ~20 µs instead of writing 400 KB again for every sandbox and
//! every reload. Where a link cannot be made (another filesystem), the sandbox gets a copy.
//! A store entry is removed when the last sandbox linking it is destroyed.
//!
//! The sha256 identifies a version (`no_change` on an identical binary), but it is the most
//! expensive step (about 0.3 ms for a 400 KB library), so it is cached by the file's identity: device, inode, size, mtime and ctime, taken from the open file before and after
//! the read. A write changes the size or the ctime; the one blind spot, a same-size rewrite
//! within one timestamp tick on a kernel without fine-grained timestamps, needs two builds
//! within a few milliseconds, which cargo does not do.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};

use crate::sandbox::error::SandboxError;

/// A library read into memory with its sha256 (lowercase hex).
#[derive(Debug)]
pub struct LibBytes {
    /// The file's contents.
    pub bytes: Vec<u8>,
    /// sha256 of `bytes`.
    pub sha256: String,
}

/// What identifies one content of one file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }
}

/// Entries kept before the cache starts over (each is a path and a hash).
const CACHE_LIMIT: usize = 1024;

fn cache() -> &'static Mutex<HashMap<PathBuf, (FileId, String)>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, (FileId, String)>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Reads `lib` and returns it with its sha256, hashing only when the file is new or changed.
pub fn read(lib: &Path) -> Result<LibBytes, SandboxError> {
    let io = |e| SandboxError::io(lib, e);
    let mut file = File::open(lib).map_err(io)?;
    let before = FileId::of(&file.metadata().map_err(io)?);
    let mut bytes = Vec::with_capacity(before.size as usize);
    file.read_to_end(&mut bytes).map_err(io)?;
    let after = FileId::of(&file.metadata().map_err(io)?);
    let cached = cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(lib)
        .filter(|(id, _)| *id == before)
        .map(|(_, hash)| hash.clone());
    // Written to while we read: the bytes may be torn, hash them and cache nothing.
    let stable = before == after && bytes.len() as u64 == before.size;
    let sha256 = match cached {
        Some(hash) if stable => hash,
        _ => {
            let hash = sha256_hex(&bytes);
            if stable {
                let mut cache = cache().lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= CACHE_LIMIT {
                    cache.clear();
                }
                cache.insert(lib.to_owned(), (before, hash.clone()));
            }
            hash
        }
    };
    Ok(LibBytes { bytes, sha256 })
}

/// sha256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The store of a state directory: `<state dir>.libs`, beside the sandboxes' directories.
pub fn store_of(state_dir: &Path) -> PathBuf {
    let mut name = state_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".libs");
    state_dir.with_file_name(name)
}

/// Gives `app_dir` version `version` of `lib`: a hard link to the store's copy (written on
/// first use), else a copy. Returns the sandbox's path. The name is unique per version:
/// dlopen caches by path, so reusing a name would load the old code again.
///
/// `share` is false for a sandbox whose app runs with the host's own uid (level `none`): it
/// could change a file it owns, so it gets a copy of its own, never the store's inode that
/// other sandboxes map.
pub fn install(
    store: &Path,
    app_dir: &Path,
    lib: &LibBytes,
    version: u32,
    share: bool,
) -> Result<PathBuf, SandboxError> {
    use std::os::unix::fs::PermissionsExt;
    let path = app_dir.join(format!("v{version}-{}.so", &lib.sha256[..12]));
    if share
        && let Ok(stored) = stored(store, lib)
        && std::fs::hard_link(&stored, &path).is_ok()
    {
        return Ok(path);
    }
    std::fs::write(&path, &lib.bytes).map_err(|e| SandboxError::io(&path, e))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444))
        .map_err(|e| SandboxError::io(&path, e))?;
    Ok(path)
}

/// The sha256 of the file at `path`, from the cache while its identity (which any write or
/// chmod changes, through its ctime) is the one hashed; else read and hashed again.
fn current_hash(path: &Path) -> std::io::Result<String> {
    let id = FileId::of(&std::fs::symlink_metadata(path)?);
    let cached = cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(path)
        .filter(|(cached, _)| *cached == id)
        .map(|(_, hash)| hash.clone());
    match cached {
        Some(hash) => Ok(hash),
        None => read(path)
            .map(|l| l.sha256)
            .map_err(|e| std::io::Error::other(e.to_string())),
    }
}

/// The store's read-only copy of `lib`, written (to a temporary name, then renamed, so a
/// reader never sees a partial file) when it is not there yet.
fn stored(store: &Path, lib: &LibBytes) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::fs::PermissionsExt;
    let path = store.join(format!("{}.so", lib.sha256));
    // A store file is trusted by its content, not its name: it is reused only while it is a
    // read-only regular file whose hash is the name's. Anything else is replaced.
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        let sound = meta.file_type().is_file()
            && !meta.file_type().is_fifo()
            && meta.mode() & 0o7777 == 0o444
            && current_hash(&path).is_ok_and(|h| h == lib.sha256);
        if sound {
            return Ok(path);
        }
        tracing::warn!(
            "library store: {} does not match its name; replaced",
            path.display()
        );
        std::fs::remove_file(&path)?;
    }
    std::fs::create_dir_all(store)?;
    let tmp = tempfile::NamedTempFile::new_in(store)?;
    std::fs::write(tmp.path(), &lib.bytes)?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o444))?;
    tmp.persist(&path).map_err(|e| e.error)?;
    Ok(path)
}

/// Drops the store's copy of `sha256` when no sandbox links to it any more, and the store
/// itself when it is empty. A create that links it meanwhile keeps its own link, and the next
/// one writes the copy again.
pub fn release(store: &Path, sha256: &str) {
    let path = store.join(format!("{sha256}.so"));
    if std::fs::metadata(&path).is_ok_and(|m| m.nlink() == 1) {
        let _ = std::fs::remove_file(&path);
    }
    let _ = std::fs::remove_dir(store);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("lib.so");
        std::fs::write(&lib, b"first").unwrap();
        let one = read(&lib).unwrap();
        assert_eq!(one.sha256, sha256_hex(b"first"));
        assert_eq!(
            read(&lib).unwrap().sha256,
            one.sha256,
            "cached, same content"
        );
        // Rewritten in place (same inode): the cache must not answer with the old hash.
        std::fs::write(&lib, b"second").unwrap();
        let two = read(&lib).unwrap();
        assert_eq!(two.bytes, b"second");
        assert_eq!(two.sha256, sha256_hex(b"second"));
    }

    #[test]
    fn versions_are_links_to_one_read_only_copy_that_goes_with_the_last_link() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_of(&dir.path().join("sandboxes"));
        assert_eq!(store, dir.path().join("sandboxes.libs"));
        let (one, two) = (dir.path().join("one"), dir.path().join("two"));
        std::fs::create_dir_all(&one).unwrap();
        std::fs::create_dir_all(&two).unwrap();
        let lib = LibBytes {
            bytes: b"x".to_vec(),
            sha256: sha256_hex(b"x"),
        };
        let a = install(&store, &one, &lib, 1, true).unwrap();
        let b = install(&store, &one, &lib, 2, true).unwrap();
        let c = install(&store, &two, &lib, 1, true).unwrap();
        assert_ne!(a, b, "a path per version");
        assert_eq!(std::fs::read(&c).unwrap(), b"x");
        let stored = store.join(format!("{}.so", lib.sha256));
        let meta = std::fs::metadata(&stored).unwrap();
        assert_eq!(meta.nlink(), 4, "the store's copy and three links");
        assert_eq!(std::fs::metadata(&a).unwrap().ino(), meta.ino());
        assert!(meta.permissions().readonly());
        // Still linked: kept. Last link gone: the copy and the empty store go.
        release(&store, &lib.sha256);
        assert!(stored.exists());
        for p in [&a, &b, &c] {
            std::fs::remove_file(p).unwrap();
        }
        release(&store, &lib.sha256);
        assert!(!stored.exists() && !store.exists());
    }

    #[test]
    fn a_store_file_that_does_not_match_its_name_is_replaced_and_none_gets_a_copy() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = store_of(&dir.path().join("sandboxes"));
        let app = dir.path().join("app");
        std::fs::create_dir_all(&app).unwrap();
        let lib = LibBytes {
            bytes: b"good".to_vec(),
            sha256: sha256_hex(b"good"),
        };
        let first = install(&store, &app, &lib, 1, true).unwrap();
        // Someone who could chmod it rewrote the stored file in place.
        let stored = store.join(format!("{}.so", lib.sha256));
        std::fs::set_permissions(&stored, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&stored, b"evil").unwrap();
        std::fs::set_permissions(&stored, std::fs::Permissions::from_mode(0o444)).unwrap();
        let second = install(&store, &app, &lib, 2, true).unwrap();
        assert_eq!(std::fs::read(&second).unwrap(), b"good");
        assert_eq!(std::fs::read(&stored).unwrap(), b"good");
        drop(first);
        // Not shared: a copy of its own, another inode than the store's.
        let own = install(&store, &app, &lib, 3, false).unwrap();
        assert_ne!(
            std::fs::metadata(&own).unwrap().ino(),
            std::fs::metadata(&stored).unwrap().ino()
        );
        assert_eq!(std::fs::metadata(&own).unwrap().mode() & 0o777, 0o444);
    }
}
