//! A tenant's read-only data files (`--file SRC:DST`): written by the host into the sandbox's
//! directory as `files/<n>` (mode 0444, the host's), and bound read-only at `DST` in the
//! sandbox's root at every spawn. The sandbox's uid can read them, not change them; their
//! bytes were checked against `proto::tenant`'s bounds at create.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use isolation::root::Bind;
use proto::tenant::DataFile;

use crate::error::SandboxError;

/// The directory of a sandbox's data files.
const FILES_DIR: &str = "files";

/// Where data file `index` of the sandbox in `dir` is kept on the host.
fn host_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(FILES_DIR).join(index.to_string())
}

/// Writes `files` into `dir/files/` (nothing when there are none).
pub(crate) fn write(dir: &Path, files: &[DataFile]) -> Result<(), SandboxError> {
    if files.is_empty() {
        return Ok(());
    }
    let holder = dir.join(FILES_DIR);
    std::fs::create_dir(&holder).map_err(|e| SandboxError::io(&holder, e))?;
    for (index, file) in files.iter().enumerate() {
        let path = host_path(dir, index);
        let mut out = std::fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| SandboxError::io(&path, e))?;
        out.write_all(&file.bytes)
            .map_err(|e| SandboxError::io(&path, e))?;
    }
    Ok(())
}

/// The read-only binds of `files` into the root of the sandbox in `dir`.
pub(crate) fn binds(dir: &Path, files: &[DataFile]) -> Vec<Bind> {
    files
        .iter()
        .enumerate()
        .map(|(index, file)| Bind {
            src: host_path(dir, index),
            dst: PathBuf::from(&file.dst),
            writable: false,
        })
        .collect()
}
