//! The contract between the sandbox runner and an app.
//!
//! An app is a Rust `cdylib` that exports one symbol, [`ENTRY_SYMBOL`], returning a pointer to
//! a static [`AppTable`]. The runner checks [`AppTable::abi_version`] and
//! [`AppTable::table_size`] before it touches anything else, so a library built against another
//! version of this crate is refused instead of being called through a wrong layout.
//!
//! Named functions take and return JSON text. Every exported entry is wrapped in
//! `catch_unwind`: a panic inside the app becomes [`Status::Panicked`] with its message, never
//! an abort of the runner (unwinding out of an `extern "C"` function aborts since Rust 1.81).
//!
//! This crate has no dependencies, so an app that only needs it rebuilds in about 0.1 s.
//!
//! # Versions
//!
//! The table only grows at its end. Each append bumps [`ABI_VERSION`]; the runner loads a
//! table of any version it knows whose `table_size` is that version's size, and reads only
//! the fields that version has (so an app built against an older version of this crate
//! still loads; a newer one than the runner knows is refused):
//!
//! | version | size | adds |
//! |---|---|---|
//! | 1 | [`TABLE_SIZE_V1`] | everything up to `initial_workers` |
//! | 2 | [`TABLE_SIZE`] | `configure`: the runner hands the app its config bytes (`host create --config FILE`) once, at load and at each reload, before any call; the app reads them with [`config`] |
//!
//! # Config
//!
//! ```
//! fn greeting(_args: &str) -> Result<String, String> {
//!     // The bytes of `host create --config FILE`, or None when none was given.
//!     let config = sandbox_abi::config().unwrap_or_default();
//!     Ok(format!("{:?}", String::from_utf8_lossy(config)))
//! }
//! # let _ = greeting("");
//! ```
//!
//! # Example
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! static CALLS: AtomicU64 = AtomicU64::new(0);
//!
//! fn answer(_args: &str) -> Result<String, String> {
//!     CALLS.fetch_add(1, Ordering::Relaxed);
//!     Ok("41".to_string())
//! }
//!
//! fn save() -> Vec<u8> {
//!     CALLS.load(Ordering::Relaxed).to_le_bytes().to_vec()
//! }
//!
//! fn restore(bytes: &[u8]) -> Result<(), String> {
//!     let raw: [u8; 8] = bytes.try_into().map_err(|_| "bad state".to_string())?;
//!     CALLS.store(u64::from_le_bytes(raw), Ordering::Relaxed);
//!     Ok(())
//! }
//!
//! fn worker(_index: u32) -> i32 {
//!     0
//! }
//!
//! sandbox_abi::export_app! {
//!     name: "example",
//!     version: "1.0.0",
//!     functions: { "answer" => answer },
//!     state: (save, restore),
//!     worker: worker,
//!     initial_workers: 1,
//! }
//! # unsafe extern "C" {
//! #     fn sandbox_app_entry() -> *const sandbox_abi::AppTable;
//! # }
//! # fn main() {
//! #     // SAFETY: the macro above exported the symbol from this very binary.
//! #     let table = unsafe { &*sandbox_app_entry() };
//! #     assert_eq!(table.abi_version, sandbox_abi::ABI_VERSION);
//! #     assert_eq!(table.initial_workers, 1);
//! # }
//! ```

use std::any::Any;
use std::ffi::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Version of the table layout and calling conventions; bumped on every append (see the
/// crate docs for what each version adds).
pub const ABI_VERSION: u32 = 2;

/// Name of the one symbol an app exports (NUL-terminated for `dlsym`).
pub const ENTRY_SYMBOL: &[u8] = b"sandbox_app_entry\0";

/// Signature of [`ENTRY_SYMBOL`].
pub type EntryFn = unsafe extern "C" fn() -> *const AppTable;

/// Outcome of an exported entry, as an integer so that it crosses the FFI boundary safely.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Success; the buffer holds the JSON result (or state bytes).
    Ok = 0,
    /// The app returned an error; the buffer holds its message.
    AppError = 1,
    /// The app panicked; the buffer holds the panic message.
    Panicked = 2,
    /// No function of that name; the buffer holds the name.
    UnknownFunction = 3,
}

impl Status {
    /// Converts a raw status code, mapping unknown codes to `None`.
    pub fn from_raw(raw: i32) -> Option<Status> {
        match raw {
            0 => Some(Status::Ok),
            1 => Some(Status::AppError),
            2 => Some(Status::Panicked),
            3 => Some(Status::UnknownFunction),
            _ => None,
        }
    }
}

/// A byte buffer allocated by the app and handed to the runner; released with
/// [`AppTable::free_buf`] so that the app's allocator frees what it allocated.
#[repr(C)]
#[derive(Debug)]
pub struct Buf {
    /// Start of the bytes (may be dangling when `len` is 0).
    pub ptr: *mut u8,
    /// Number of initialised bytes.
    pub len: usize,
    /// Allocated capacity, needed to rebuild the `Vec` on free.
    pub cap: usize,
}

impl Buf {
    /// An empty buffer that owns nothing.
    pub const EMPTY: Buf = Buf {
        ptr: std::ptr::null_mut(),
        len: 0,
        cap: 0,
    };

    /// Leaks `bytes` into a buffer; the app side of the contract.
    pub fn from_vec(bytes: Vec<u8>) -> Buf {
        let mut bytes = std::mem::ManuallyDrop::new(bytes);
        Buf {
            ptr: bytes.as_mut_ptr(),
            len: bytes.len(),
            cap: bytes.capacity(),
        }
    }

    /// Reclaims a buffer made by [`Buf::from_vec`] in the same library.
    ///
    /// # Safety
    /// `self` must come from `Buf::from_vec` of the same allocator and not be freed twice.
    pub unsafe fn into_vec(self) -> Vec<u8> {
        if self.ptr.is_null() {
            return Vec::new();
        }
        // SAFETY: the caller guarantees ptr/len/cap come from a leaked Vec<u8> of this allocator.
        unsafe { Vec::from_raw_parts(self.ptr, self.len, self.cap) }
    }
}

/// Calls a named function: `name` and `args` are UTF-8, the result is written to `out`.
pub type CallFn = unsafe extern "C" fn(
    name: *const u8,
    name_len: usize,
    args: *const u8,
    args_len: usize,
    out: *mut Buf,
) -> i32;
/// Frees a buffer the app returned.
pub type FreeBufFn = unsafe extern "C" fn(buf: Buf);
/// Serialises the app's state before a reload.
pub type SaveStateFn = unsafe extern "C" fn(out: *mut Buf) -> i32;
/// Restores state saved by an earlier version; an error message goes to `out`.
pub type RestoreStateFn = unsafe extern "C" fn(state: *const u8, len: usize, out: *mut Buf) -> i32;
/// Body of one supervised worker process; its return value is the process exit code.
pub type WorkerFn = unsafe extern "C" fn(index: u32) -> i32;
/// Hands the app its config bytes (version 2); an error message goes to `out`.
pub type ConfigureFn = unsafe extern "C" fn(config: *const u8, len: usize, out: *mut Buf) -> i32;

/// The table an app exports. Field order is part of the ABI: only append, and bump
/// [`ABI_VERSION`] for anything else.
#[repr(C)]
#[derive(Debug)]
pub struct AppTable {
    /// Must equal the runner's [`ABI_VERSION`].
    pub abi_version: u32,
    /// `size_of::<AppTable>()` as the app saw it; guards against layout drift.
    pub table_size: u32,
    /// App name, NUL-terminated, static.
    pub name: *const c_char,
    /// App version, NUL-terminated, static.
    pub version: *const c_char,
    /// Dispatches a named function.
    pub call: CallFn,
    /// Frees a returned buffer.
    pub free_buf: FreeBufFn,
    /// Optional state export used on reload.
    pub save_state: Option<SaveStateFn>,
    /// Optional state import used on reload.
    pub restore_state: Option<RestoreStateFn>,
    /// Optional worker body; the runner runs it in supervised OS processes.
    pub worker: Option<WorkerFn>,
    /// Workers the supervisor starts with the sandbox.
    pub initial_workers: u32,
    /// Version 2: takes the tenant's config bytes; called once at load, before any call.
    pub configure: Option<ConfigureFn>,
}

// SAFETY: the table only holds pointers to static strings and function pointers.
unsafe impl Sync for AppTable {}
// SAFETY: as for Sync: nothing in it is tied to a thread (the runner keeps a copy).
unsafe impl Send for AppTable {}

/// Size of [`AppTable`] as a `u32`, for [`AppTable::table_size`].
pub const TABLE_SIZE: u32 = std::mem::size_of::<AppTable>() as u32;

/// Size of a version 1 table: everything before `configure`.
pub const TABLE_SIZE_V1: u32 = std::mem::offset_of!(AppTable, configure) as u32;

/// The config bytes the runner handed this library (see [`config`]).
static CONFIG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// The tenant's config (`host create --config FILE`), or `None` when none was given. The
/// same bytes in every version loaded into the sandbox; each library has its own copy of
/// this crate, so a reloaded version is handed them again at its load.
pub fn config() -> Option<&'static [u8]> {
    CONFIG.get().map(Vec::as_slice)
}

/// Stores the config bytes for [`config`]; used by [`export_app!`]. A second call is
/// ignored (the config is the same for a library's life).
///
/// # Safety
/// `ptr..ptr+len` must be readable for the duration of the call.
#[doc(hidden)]
pub unsafe fn store_config(ptr: *const u8, len: usize) -> (Status, Vec<u8>) {
    let bytes = if len == 0 {
        Vec::new()
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec()
    };
    let _ = CONFIG.set(bytes);
    (Status::Ok, Vec::new())
}

/// Extracts a readable message from a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// Runs `f` with panics turned into [`Status::Panicked`]; used by [`export_app!`].
///
/// # Safety
/// `out` must be null or valid for a write of one [`Buf`].
#[doc(hidden)]
pub unsafe fn guarded(out: *mut Buf, f: impl FnOnce() -> (Status, Vec<u8>)) -> i32 {
    let (status, bytes) = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => (
            Status::Panicked,
            panic_message(payload.as_ref()).into_bytes(),
        ),
    };
    if !out.is_null() {
        // SAFETY: the runner passes a valid, writable Buf slot.
        unsafe { out.write(Buf::from_vec(bytes)) };
    }
    status as i32
}

/// Borrows a byte range from the runner as `&str`, replacing invalid UTF-8.
///
/// # Safety
/// `ptr..ptr+len` must be readable for the duration of the call.
#[doc(hidden)]
pub unsafe fn borrow_str<'a>(ptr: *const u8, len: usize) -> std::borrow::Cow<'a, str> {
    if len == 0 {
        return std::borrow::Cow::Borrowed("");
    }
    // SAFETY: guaranteed by the caller.
    let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
    String::from_utf8_lossy(bytes)
}

/// A named app function: JSON arguments in, JSON result (or an error message) out.
pub type AppFn = fn(&str) -> Result<String, String>;

/// Dispatches a call to one of `functions`; used by [`export_app!`].
#[doc(hidden)]
pub fn dispatch(functions: &[(&str, AppFn)], name: &str, args: &str) -> (Status, Vec<u8>) {
    match functions.iter().find(|(n, _)| *n == name) {
        Some((_, f)) => match f(args) {
            Ok(json) => (Status::Ok, json.into_bytes()),
            Err(message) => (Status::AppError, message.into_bytes()),
        },
        None => (Status::UnknownFunction, name.as_bytes().to_vec()),
    }
}

/// Exports an app: generates the entry symbol and a static [`AppTable`].
///
/// Functions have the signature `fn(&str) -> Result<String, String>`: JSON arguments in,
/// JSON result out (an `Err` is the app's error message). `state`, `worker` and
/// `initial_workers` are optional; see the crate docs for a full example.
#[macro_export]
macro_rules! export_app {
    (
        name: $name:expr,
        version: $version:expr,
        functions: { $($fname:literal => $f:path),* $(,)? }
        $(, state: ($save:path, $restore:path))?
        $(, worker: $worker:path)?
        $(, initial_workers: $initial:expr)?
        $(,)?
    ) => {
        const _: () = {
            use $crate::{AppTable, Buf, Status};

            static __SBX_FUNCTIONS: &[(&str, $crate::AppFn)] =
                &[$(($fname, $f)),*];

            unsafe extern "C" fn __sbx_call(
                name: *const u8,
                name_len: usize,
                args: *const u8,
                args_len: usize,
                out: *mut Buf,
            ) -> i32 {
                // SAFETY: the runner passes a valid output slot.
                unsafe { $crate::guarded(out, || {
                    // SAFETY: the runner passes live byte ranges for the call's duration.
                    let name = unsafe { $crate::borrow_str(name, name_len) };
                    // SAFETY: as above.
                    let args = unsafe { $crate::borrow_str(args, args_len) };
                    $crate::dispatch(__SBX_FUNCTIONS, &name, &args)
                }) }
            }

            unsafe extern "C" fn __sbx_free_buf(buf: Buf) {
                // SAFETY: buffers handed out by this library come from Buf::from_vec.
                drop(unsafe { buf.into_vec() });
            }

            #[allow(unused_mut, unused_assignments)]
            const fn __sbx_save_state() -> Option<$crate::SaveStateFn> {
                let mut f: Option<$crate::SaveStateFn> = None;
                $(
                    unsafe extern "C" fn __sbx_save(out: *mut Buf) -> i32 {
                        // SAFETY: the runner passes a valid output slot.
                        unsafe { $crate::guarded(out, || (Status::Ok, $save())) }
                    }
                    f = Some(__sbx_save);
                )?
                f
            }

            #[allow(unused_mut, unused_assignments)]
            const fn __sbx_restore_state() -> Option<$crate::RestoreStateFn> {
                let mut f: Option<$crate::RestoreStateFn> = None;
                $(
                    unsafe extern "C" fn __sbx_restore(ptr: *const u8, len: usize, out: *mut Buf) -> i32 {
                        // SAFETY: the runner passes a valid output slot.
                        unsafe { $crate::guarded(out, || {
                            let bytes: &[u8] = if len == 0 {
                                &[]
                            } else {
                                // SAFETY: the runner passes a live byte range.
                                unsafe { ::std::slice::from_raw_parts(ptr, len) }
                            };
                            match $restore(bytes) {
                                Ok(()) => (Status::Ok, Vec::new()),
                                Err(message) => (Status::AppError, String::into_bytes(message)),
                            }
                        }) }
                    }
                    f = Some(__sbx_restore);
                )?
                f
            }

            #[allow(unused_mut, unused_assignments)]
            const fn __sbx_worker() -> Option<$crate::WorkerFn> {
                let mut f: Option<$crate::WorkerFn> = None;
                $(
                    unsafe extern "C" fn __sbx_worker_entry(index: u32) -> i32 {
                        match ::std::panic::catch_unwind(|| $worker(index)) {
                            Ok(code) => code,
                            Err(_) => 101,
                        }
                    }
                    f = Some(__sbx_worker_entry);
                )?
                f
            }

            unsafe extern "C" fn __sbx_configure(ptr: *const u8, len: usize, out: *mut Buf) -> i32 {
                // SAFETY: the runner passes a live byte range and a valid output slot.
                unsafe { $crate::guarded(out, || {
                    // SAFETY: as above.
                    unsafe { $crate::store_config(ptr, len) }
                }) }
            }

            #[allow(unused_mut, unused_assignments)]
            const fn __sbx_initial_workers() -> u32 {
                let mut n: u32 = 0;
                $( n = $initial; )?
                n
            }

            static __SBX_TABLE: AppTable = AppTable {
                abi_version: $crate::ABI_VERSION,
                table_size: $crate::TABLE_SIZE,
                name: concat!($name, "\0").as_ptr().cast(),
                version: concat!($version, "\0").as_ptr().cast(),
                call: __sbx_call,
                free_buf: __sbx_free_buf,
                save_state: __sbx_save_state(),
                restore_state: __sbx_restore_state(),
                worker: __sbx_worker(),
                initial_workers: __sbx_initial_workers(),
                configure: Some(__sbx_configure),
            };

            #[unsafe(no_mangle)]
            pub extern "C" fn sandbox_app_entry() -> *const AppTable {
                &__SBX_TABLE
            }
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(_: &str) -> Result<String, String> {
        Ok("1".into())
    }
    fn boom(_: &str) -> Result<String, String> {
        panic!("kaboom")
    }

    #[test]
    fn a_version_1_table_is_the_prefix_before_configure() {
        // The layout version 1 apps were built with: nine pointer-sized slots after the two
        // u32s, then initial_workers, padded to pointer alignment.
        let ptr = std::mem::size_of::<usize>() as u32;
        assert_eq!(TABLE_SIZE_V1, 8 + 7 * ptr + ptr.max(4));
        assert_eq!(TABLE_SIZE, TABLE_SIZE_V1 + ptr);
    }

    #[test]
    fn dispatch_finds_functions_and_reports_unknown_names() {
        let fns: &[(&str, AppFn)] = &[("ok", ok)];
        assert_eq!(dispatch(fns, "ok", "null"), (Status::Ok, b"1".to_vec()));
        assert_eq!(dispatch(fns, "nope", "null").0, Status::UnknownFunction);
    }

    #[test]
    fn guarded_turns_a_panic_into_a_status_with_its_message() {
        let mut out = Buf::EMPTY;
        let fns: &[(&str, AppFn)] = &[("boom", boom)];
        // SAFETY: `out` is a live local slot.
        let status = unsafe { guarded(&mut out, || dispatch(fns, "boom", "")) };
        assert_eq!(Status::from_raw(status), Some(Status::Panicked));
        // SAFETY: `out` was filled by Buf::from_vec in this crate.
        let message = unsafe { out.into_vec() };
        assert_eq!(message, b"kaboom");
    }
}
