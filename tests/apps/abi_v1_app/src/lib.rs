//! A test app built for ABI version 1 (before `configure` was appended): its table is the
//! version 1 layout, written out by hand. The runner must still load and call it, and never
//! read past its end (a config given to its sandbox is not handed to it).

use std::ffi::c_char;

use sandbox_abi::Buf;

/// The version 1 table, field for field.
#[repr(C)]
pub struct TableV1 {
    abi_version: u32,
    table_size: u32,
    name: *const c_char,
    version: *const c_char,
    call: sandbox_abi::CallFn,
    free_buf: sandbox_abi::FreeBufFn,
    save_state: Option<sandbox_abi::SaveStateFn>,
    restore_state: Option<sandbox_abi::RestoreStateFn>,
    worker: Option<sandbox_abi::WorkerFn>,
    initial_workers: u32,
}

// SAFETY: static strings and function pointers only.
unsafe impl Sync for TableV1 {}

unsafe extern "C" fn call(
    _name: *const u8,
    _name_len: usize,
    _args: *const u8,
    _args_len: usize,
    out: *mut Buf,
) -> i32 {
    // SAFETY: the runner passes a valid output slot.
    unsafe { out.write(Buf::from_vec(b"1".to_vec())) };
    0
}

unsafe extern "C" fn free_buf(buf: Buf) {
    // SAFETY: every buffer handed out here comes from Buf::from_vec.
    drop(unsafe { buf.into_vec() });
}

static TABLE: TableV1 = TableV1 {
    abi_version: 1,
    table_size: std::mem::size_of::<TableV1>() as u32,
    name: c"abi_v1_app".as_ptr(),
    version: c"1.0.0".as_ptr(),
    call,
    free_buf,
    save_state: None,
    restore_state: None,
    worker: None,
    initial_workers: 0,
};

/// The entry symbol, pointing at a version 1 table.
#[unsafe(no_mangle)]
pub extern "C" fn sandbox_app_entry() -> *const TableV1 {
    &TABLE
}
