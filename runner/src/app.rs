//! One loaded version of an app: the `dlopen`ed library and its checked function table.

use std::ffi::CStr;
use std::path::Path;

use crate::error::{LoadError, StateError};
use sandbox_abi::{
    ABI_VERSION, AppTable, Buf, ENTRY_SYMBOL, EntryFn, Status, TABLE_SIZE, TABLE_SIZE_V1,
};

/// A loaded app version. Dropping it `dlclose`s the library (best effort: glibc keeps a
/// library mapped when it registered TLS destructors; usage reports mapped copies).
#[derive(Debug)]
pub struct LoadedApp {
    /// A copy of the app's table: the fields of its version, the later ones empty.
    table: AppTable,
    /// Host-assigned version number.
    pub version: u32,
    // Declared last so it is dropped after every use of `table`.
    _library: libloading::Library,
}

/// Result of a call into the app.
#[derive(Debug)]
pub struct CallOutcome {
    /// The app's status.
    pub status: Status,
    /// JSON result, or an error/panic message.
    pub payload: String,
}

impl LoadedApp {
    /// Opens `path` with `RTLD_NOW | RTLD_LOCAL` and checks its table.
    pub fn open(path: &Path, version: u32) -> Result<LoadedApp, LoadError> {
        let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL;
        // SAFETY: loading a library runs its initialisers, which is the point of this sandbox:
        // the code is untrusted but confined to this process, and the path is a private copy.
        let library =
            unsafe { libloading::os::unix::Library::open(Some(path), flags) }.map_err(|e| {
                LoadError::Open {
                    path: path.to_owned(),
                    reason: e.to_string(),
                }
            })?;
        let library = libloading::Library::from(library);
        // SAFETY: the symbol's type is fixed by the ABI; we only call it after the lookup.
        let entry: libloading::Symbol<EntryFn> =
            unsafe { library.get(ENTRY_SYMBOL) }.map_err(|_| LoadError::NoEntry {
                path: path.to_owned(),
            })?;
        // SAFETY: calling the entry returns a pointer to the app's static table (or garbage
        // for a hostile app, which at worst crashes this disposable process).
        let raw = unsafe { entry() };
        if raw.is_null() {
            return Err(LoadError::NoEntry {
                path: path.to_owned(),
            });
        }
        // SAFETY: the first two u32 fields are read before anything else and are present in
        // every ABI version; the rest is only read after the version and size checks pass.
        let (found, size) = unsafe { ((*raw).abi_version, (*raw).table_size) };
        let known = match found {
            1 => size == TABLE_SIZE_V1,
            ABI_VERSION => size == TABLE_SIZE,
            _ => false,
        };
        if !known {
            return Err(LoadError::AbiMismatch {
                path: path.to_owned(),
                found,
                size,
            });
        }
        // SAFETY: checked above: the table holds every field of its version, read one by one
        // (no reference to the whole struct, which a version 1 table is shorter than); the
        // pointers in it stay valid while `_library` is loaded, which outlives the copy.
        let table = unsafe {
            AppTable {
                abi_version: found,
                table_size: size,
                name: (*raw).name,
                version: (*raw).version,
                call: (*raw).call,
                free_buf: (*raw).free_buf,
                save_state: (*raw).save_state,
                restore_state: (*raw).restore_state,
                worker: (*raw).worker,
                initial_workers: (*raw).initial_workers,
                configure: if found >= 2 { (*raw).configure } else { None },
            }
        };
        Ok(LoadedApp {
            table,
            version,
            _library: library,
        })
    }

    /// The app's name from its table.
    pub fn name(&self) -> String {
        // SAFETY: the macro stores a static NUL-terminated string.
        unsafe { CStr::from_ptr(self.table.name) }
            .to_string_lossy()
            .into_owned()
    }

    /// The app's own version string.
    pub fn app_version(&self) -> String {
        // SAFETY: as for `name`.
        unsafe { CStr::from_ptr(self.table.version) }
            .to_string_lossy()
            .into_owned()
    }

    /// Workers to start with the sandbox.
    pub fn initial_workers(&self) -> u32 {
        if self.table.worker.is_some() {
            self.table.initial_workers
        } else {
            0
        }
    }

    /// The worker entry, if the app has one.
    pub fn worker(&self) -> Option<sandbox_abi::WorkerFn> {
        self.table.worker
    }

    /// Calls a named function with JSON arguments.
    pub fn call(&self, function: &str, args: &str) -> CallOutcome {
        let mut out = Buf::EMPTY;
        // SAFETY: pointers and lengths describe live slices; `out` is a valid slot.
        let raw = unsafe {
            (self.table.call)(
                function.as_ptr(),
                function.len(),
                args.as_ptr(),
                args.len(),
                &mut out,
            )
        };
        let payload = self.take(out);
        let status = Status::from_raw(raw).unwrap_or(Status::AppError);
        CallOutcome {
            status,
            payload: String::from_utf8_lossy(&payload).into_owned(),
        }
    }

    /// Hands the app its config bytes (ABI version 2); `Ok(false)` when the app is older
    /// and cannot take them.
    pub fn configure(&self, config: &[u8]) -> Result<bool, String> {
        let Some(configure) = self.table.configure else {
            return Ok(false);
        };
        let mut out = Buf::EMPTY;
        // SAFETY: `config` is a live slice and `out` a valid slot.
        let raw = unsafe { configure(config.as_ptr(), config.len(), &mut out) };
        let message = self.take(out);
        match Status::from_raw(raw) {
            Some(Status::Ok) => Ok(true),
            _ => Err(String::from_utf8_lossy(&message).into_owned()),
        }
    }

    /// Serialises state, if the app exports `save_state`.
    pub fn save_state(&self) -> Result<Option<Vec<u8>>, StateError> {
        let Some(save) = self.table.save_state else {
            return Ok(None);
        };
        let mut out = Buf::EMPTY;
        // SAFETY: `out` is a valid slot for the app to fill.
        let raw = unsafe { save(&mut out) };
        let bytes = self.take(out);
        match Status::from_raw(raw) {
            Some(Status::Ok) => Ok(Some(bytes)),
            _ => Err(StateError::SaveFailed(
                String::from_utf8_lossy(&bytes).into_owned(),
            )),
        }
    }

    /// Restores state saved by another version; `Ok(false)` when the app has no hook.
    pub fn restore_state(&self, state: &[u8]) -> Result<bool, StateError> {
        let Some(restore) = self.table.restore_state else {
            return Ok(false);
        };
        let mut out = Buf::EMPTY;
        // SAFETY: `state` is a live slice and `out` a valid slot.
        let raw = unsafe { restore(state.as_ptr(), state.len(), &mut out) };
        let message = self.take(out);
        match Status::from_raw(raw) {
            Some(Status::Ok) => Ok(true),
            Some(Status::Panicked) => Err(StateError::RestorePanicked(
                String::from_utf8_lossy(&message).into_owned(),
            )),
            _ => Err(StateError::RestoreFailed(
                String::from_utf8_lossy(&message).into_owned(),
            )),
        }
    }

    /// Copies a returned buffer and hands it back to the app's allocator.
    fn take(&self, buf: Buf) -> Vec<u8> {
        if buf.ptr.is_null() {
            return Vec::new();
        }
        // SAFETY: the app filled `buf` with a live allocation of `len` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) }.to_vec();
        // SAFETY: each buffer is freed exactly once, by the library that allocated it.
        unsafe { (self.table.free_buf)(buf) };
        bytes
    }
}
