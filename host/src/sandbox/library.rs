//! App libraries on their way into a sandbox: read once, hashed once per file identity, and
//! copied to a private, versioned path.
//!
//! A reload or create reads the library and writes a private copy (dlopen caches by path, so
//! every version needs a path of its own, and the sandbox must not see later writes to the
//! original). The sha256 identifies a version (`no_change` on an identical binary), but it is
//! the most expensive step (about 0.3 ms for a 400 KB library), so it is cached by the file's
//! identity: device, inode, size, mtime and ctime, taken from the open file before and after
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

/// Writes `lib` as version `version` into `app_dir` and returns the copy's path. The name is
/// unique per version: dlopen caches by path, so reusing a name would load the old code again.
pub fn install(app_dir: &Path, lib: &LibBytes, version: u32) -> Result<PathBuf, SandboxError> {
    let path = app_dir.join(format!("v{version}-{}.so", &lib.sha256[..12]));
    std::fs::write(&path, &lib.bytes).map_err(|e| SandboxError::io(&path, e))?;
    Ok(path)
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
    fn install_names_each_version_apart() {
        let dir = tempfile::tempdir().unwrap();
        let lib = LibBytes {
            bytes: b"x".to_vec(),
            sha256: sha256_hex(b"x"),
        };
        let a = install(dir.path(), &lib, 1).unwrap();
        let b = install(dir.path(), &lib, 2).unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::read(&b).unwrap(), b"x");
    }
}
