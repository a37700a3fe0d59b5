//! App libraries on their way into a sandbox: streamed, hashed once per file identity, kept
//! once per content in the host's store, and hard-linked to a private, versioned path.
//!
//! A reload or create opens the library and gives the sandbox a path of its own for it (dlopen
//! caches by path, so every version needs its own, and the sandbox must not see later writes
//! to the original). The bytes are written once per content into the store, a directory
//! beside the sandboxes (`<state dir>.libs/<sha256>.so`, read-only, never written again), and
//! each sandbox gets a hard link: ~20 µs instead of writing 400 KB again for every sandbox and
//! every reload. Where a link cannot be made (another filesystem), the sandbox gets a copy.
//! Sandboxes at level `none`, whose apps run with the daemon's own uid, have a store of their
//! own (`<state dir>.libs-none`): one of them writing the file it links changes only what other
//! `none` apps (which it can reach anyway: same uid) map, never what an isolated sandbox maps.
//! An entry no sandbox links any more is kept while it is among the [`KEEP_UNLINKED`] most
//! recently released (a create after a destroy of the same version, the commonest churn, then
//! links instead of writing and hashing the bytes again); older ones are removed, and the
//! daemon's sweep removes every unlinked one when it starts and when it stops.
//!
//! A library is never read whole into memory: it is opened once (`O_NONBLOCK`, so a FIFO
//! cannot hang the host), checked with `fstat` to be a regular file of at most
//! [`Libraries::max_size`] bytes (default [`DEFAULT_MAX_SIZE`], `--max-lib-size`), and copied in
//! [`CHUNK`]-byte pieces while hashing; a copy whose hash is not the one read first (the file
//! changed in between) is refused. A half-written store file has a temporary name that
//! carries the writer's pid (`.incoming-<pid>-…`), so a later daemon can sweep it.
//!
//! A store file is checked against its name (hashed) once per identity: device, inode, size,
//! mtime and mode. Not its ctime, which every link and unlink of a sandbox changes (with it,
//! every create would hash the store's copy again). Only the daemon's uid can write the store
//! (root-owned, 0444; a sandbox at `none`, which runs as the host's uid, links into the `none`
//! store), so the check guards against a leftover of a crash or of another build of the
//! daemon, not against a writer that could also set the mtime back.
//!
//! The sha256 identifies a version (`no_change` on an identical binary), but it is the most
//! expensive step (about 0.3 ms for a 400 KB library), so it is cached by the file's identity:
//! device, inode, size, mtime and ctime, taken from the open file before and after the read. A
//! write changes the size or the ctime; the one blind spot, a same-size rewrite within one
//! timestamp tick on a kernel without fine-grained timestamps, needs two builds within a few
//! milliseconds, which cargo does not do. Hashing runs through `block_in_place` on a
//! multi-threaded runtime, so it never stalls other tasks.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::error::SandboxError;

/// The default largest library, in bytes (256 MiB).
pub const DEFAULT_MAX_SIZE: u64 = 256 * 1024 * 1024;

/// Bytes copied or hashed per read.
pub const CHUNK: usize = 64 * 1024;

/// Prefix of a store file still being written (followed by the writer's pid and a dash).
pub const INCOMING_PREFIX: &str = ".incoming-";

/// A library, opened and hashed, ready to be installed; holds its file open so that what is
/// installed is what was hashed (checked again while copying).
#[derive(Debug)]
pub struct LibBytes {
    /// The path it was opened by.
    pub path: PathBuf,
    file: File,
    /// Its size in bytes.
    pub size: u64,
    /// sha256 of its contents (lowercase hex).
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
    mode: u32,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            mode: meta.mode(),
        }
    }

    /// The identity of a store file once checked: without the ctime, which every link and
    /// unlink of a sandbox changes (see the module docs).
    fn of_store_file(meta: &std::fs::Metadata) -> FileId {
        FileId {
            ctime_ns: 0,
            ..FileId::of(meta)
        }
    }
}

/// Entries kept before the cache starts over (each is a path and a hash).
const CACHE_LIMIT: usize = 1024;

/// Store entries no sandbox links that are kept (the most recently released).
pub const KEEP_UNLINKED: usize = 8;

/// The host's libraries: the size cap (`--max-lib-size`) and the hashes already computed, by
/// file identity. One per manager (so per daemon), shared by its sandboxes; never global, so
/// two managers in one process (tests, an embedding program) keep their own caps.
#[derive(Debug)]
pub struct Libraries {
    max_size: u64,
    hashes: Mutex<HashMap<PathBuf, (FileId, String)>>,
    /// Store files whose content was checked against their name, by identity.
    verified: Mutex<HashMap<PathBuf, FileId>>,
}

impl Default for Libraries {
    fn default() -> Self {
        Libraries::new(DEFAULT_MAX_SIZE)
    }
}

impl Libraries {
    /// Libraries of at most `max_size` bytes.
    pub fn new(max_size: u64) -> Libraries {
        Libraries {
            max_size,
            hashes: Mutex::default(),
            verified: Mutex::default(),
        }
    }

    /// The largest library accepted, in bytes.
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// Opens `lib` and returns it with its sha256, hashing only when the file is new or changed.
    /// Refuses anything but a regular file of at most [`Libraries::max_size`] bytes.
    pub fn read(&self, lib: &Path) -> Result<LibBytes, SandboxError> {
        blocking(|| self.read_blocking(lib))
    }

    fn read_blocking(&self, lib: &Path) -> Result<LibBytes, SandboxError> {
        let io = |e| SandboxError::io(lib, e);
        let max = self.max_size;
        let file = open_lib(lib).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        check_file(&meta, max).map_err(io)?;
        let before = FileId::of(&meta);
        let cached = self
            .hashes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(lib)
            .filter(|(id, _)| *id == before)
            .map(|(_, hash)| hash.clone());
        if let Some(sha256) = cached {
            return Ok(LibBytes {
                path: lib.to_owned(),
                file,
                size: before.size,
                sha256,
            });
        }
        let (size, sha256) = stream(&file, max, |_| Ok(())).map_err(io)?;
        let after = FileId::of(&file.metadata().map_err(io)?);
        // Written to while we read: the hash may be of torn bytes; cache nothing (the install
        // checks the hash again while it copies).
        if before == after && size == before.size {
            self.cache(lib, before, sha256.clone());
        }
        Ok(LibBytes {
            path: lib.to_owned(),
            file,
            size,
            sha256,
        })
    }

    /// Copies the library `fd` (a descriptor a client opened) into a new file `dest`, streamed
    /// and capped at [`Libraries::max_size`] bytes; refuses anything but a regular file. Returns the bytes
    /// copied. The hash computed on the way is cached for `dest`'s identity, so the create or
    /// reload that installs it next does not read it again.
    pub fn copy_from_fd(&self, fd: &File, dest: &Path) -> io::Result<u64> {
        blocking(|| {
            let max = self.max_size;
            check_file(&fd.metadata()?, max)?;
            let mut out = File::options()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(dest)?;
            let copied = stream(fd, max, |chunk| out.write_all(chunk));
            match copied {
                Ok((n, sha256)) => {
                    if let Ok(meta) = out.metadata() {
                        self.cache(dest, FileId::of(&meta), sha256);
                    }
                    Ok(n)
                }
                Err(e) => {
                    let _ = std::fs::remove_file(dest);
                    Err(e)
                }
            }
        })
    }

    /// Writes `lib` to a new file `path` (mode 0444), streamed; fails, removing it, when the
    /// bytes are not those hashed.
    fn write_copy(&self, lib: &LibBytes, path: &Path) -> io::Result<()> {
        let mut out = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        let result =
            stream(&lib.file, self.max_size, |chunk| out.write_all(chunk)).and_then(|(_, sha)| {
                if sha == lib.sha256 {
                    out.set_permissions(std::fs::Permissions::from_mode(0o444))
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} changed while it was being installed",
                            lib.path.display()
                        ),
                    ))
                }
            });
        if result.is_err() {
            let _ = std::fs::remove_file(path);
        }
        result
    }

    /// Gives `app_dir` version `version` of `lib`: a hard link to the store's copy (written on
    /// first use), else a copy. Returns the sandbox's path. The name is unique per version:
    /// dlopen caches by path, so reusing a name would load the old code again.
    ///
    /// `store` is [`store_of`] or, for a sandbox at level `none`, [`none_store_of`].
    pub fn install(
        &self,
        store: &Path,
        app_dir: &Path,
        lib: &LibBytes,
        version: u32,
    ) -> Result<PathBuf, SandboxError> {
        blocking(|| {
            let path = app_dir.join(format!("v{version}-{}.so", &lib.sha256[..12]));
            if let Ok(stored) = self.stored(store, lib)
                && std::fs::hard_link(&stored, &path).is_ok()
            {
                return Ok(path);
            }
            self.write_copy(lib, &path)
                .map_err(|e| SandboxError::io(&path, e))?;
            Ok(path)
        })
    }

    /// The sha256 of the file at `path`, from the cache while its identity (which any write or
    /// chmod changes, through its ctime) is the one hashed; else read and hashed again.
    fn current_hash(&self, path: &Path) -> io::Result<String> {
        let id = FileId::of(&std::fs::symlink_metadata(path)?);
        let cached = self
            .hashes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .filter(|(cached, _)| *cached == id)
            .map(|(_, hash)| hash.clone());
        match cached {
            Some(hash) => Ok(hash),
            None => self
                .read_blocking(path)
                .map(|l| l.sha256)
                .map_err(|e| io::Error::other(e.to_string())),
        }
    }

    /// The store's read-only copy of `lib`, written (to a temporary name carrying this pid, then
    /// renamed, so a reader never sees a partial file) when it is not there yet.
    fn stored(&self, store: &Path, lib: &LibBytes) -> io::Result<PathBuf> {
        let path = store.join(format!("{}.so", lib.sha256));
        // A store file is trusted by its content, not its name: it is reused only while it is a
        // read-only regular file whose hash is the name's. Anything else is replaced.
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            let id = FileId::of_store_file(&meta);
            let checked = self
                .verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&path)
                == Some(&id);
            let sound = meta.file_type().is_file()
                && meta.mode() & 0o7777 == 0o444
                && (checked || self.current_hash(&path).is_ok_and(|h| h == lib.sha256));
            if sound {
                self.remember(&path, id);
                return Ok(path);
            }
            tracing::warn!(
                "library store: {} does not match its name; replaced",
                path.display()
            );
            std::fs::remove_file(&path)?;
        }
        std::fs::create_dir_all(store)?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{INCOMING_PREFIX}{}-", std::process::id()))
            .make_in(store, |p| self.write_copy(lib, p))?;
        tmp.persist(&path).map_err(|e| e.error)?;
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            self.remember(&path, FileId::of_store_file(&meta));
        }
        Ok(path)
    }

    /// Records `sha256` as the hash of `path` while it is the file `id` identifies.
    fn cache(&self, path: &Path, id: FileId, sha256: String) {
        let mut cache = self.hashes.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(path.to_owned(), (id, sha256));
    }

    /// Records that the store file `path`, as `id` identifies it, matches its name.
    fn remember(&self, path: &Path, id: FileId) {
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= CACHE_LIMIT {
            verified.clear();
        }
        verified.insert(path.to_owned(), id);
    }
}

/// Runs blocking file work without stalling the async runtime: through `block_in_place` on
/// a multi-threaded tokio runtime, directly elsewhere.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Why a file cannot be a library: not a regular file (with what it is), or too large.
fn check_file(meta: &std::fs::Metadata, max: u64) -> io::Result<()> {
    let t = meta.file_type();
    let what = if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    };
    if let Some(what) = what {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file ({what}); a library must be a regular file"),
        ));
    }
    if meta.size() > max {
        return Err(too_large(meta.size(), max));
    }
    Ok(())
}

fn too_large(size: u64, max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!(
            "{} bytes is more than the largest library accepted, {max} bytes (--max-lib-size)",
            size
        ),
    )
}

/// Opens a library without blocking on a FIFO and without a controlling tty.
fn open_lib(path: &Path) -> io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

/// Streams `file` from offset 0 through `sink`, at most `max` bytes; returns (bytes, sha256).
fn stream(
    file: &File,
    max: u64,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let n = match file.read_at(&mut buf, offset) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        offset += n as u64;
        if offset > max {
            return Err(too_large(offset, max));
        }
        hasher.update(&buf[..n]);
        sink(&buf[..n])?;
    }
    Ok((offset, hex(&hasher.finalize())))
}

fn hex(digest: &[u8]) -> String {
    use std::fmt::Write;
    digest.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// sha256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The store of a state directory: `<state dir>.libs`, beside the sandboxes' directories.
pub fn store_of(state_dir: &Path) -> PathBuf {
    beside(state_dir, ".libs")
}

/// The store of the sandboxes at level `none` (their apps run with the daemon's uid, which
/// could write what they link): `<state dir>.libs-none`, never linked by an isolated sandbox.
pub fn none_store_of(state_dir: &Path) -> PathBuf {
    beside(state_dir, ".libs-none")
}

fn beside(state_dir: &Path, suffix: &str) -> PathBuf {
    let mut name = state_dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    state_dir.with_file_name(name)
}

/// Called when a sandbox let go of its link to the store's copy of a version: of the copies no
/// sandbox links any more, keeps the [`KEEP_UNLINKED`] released last (by ctime, which the
/// last unlink set) and removes the others, then the store itself when it is empty. A create
/// that links a copy meanwhile keeps its own link, and the next one writes the copy again.
pub fn release(store: &Path) {
    let Ok(entries) = std::fs::read_dir(store) else {
        return;
    };
    let mut unlinked: Vec<(i128, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".so"))
        .filter_map(|e| {
            let meta = std::fs::symlink_metadata(e.path()).ok()?;
            (meta.is_file() && meta.nlink() == 1).then(|| {
                let ctime =
                    i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec());
                (ctime, e.path())
            })
        })
        .collect();
    if unlinked.len() > KEEP_UNLINKED {
        unlinked.sort_unstable_by_key(|u| std::cmp::Reverse(u.0));
        for (_, path) in &unlinked[KEEP_UNLINKED..] {
            let _ = std::fs::remove_file(path);
        }
    }
    let _ = std::fs::remove_dir(store);
}

#[cfg(test)]
#[path = "library_tests.rs"]
mod tests;
