//! A test app built against a different ABI version: the runner must refuse it.

use sandbox_abi::{AppTable, Buf};

unsafe extern "C" fn call(_: *const u8, _: usize, _: *const u8, _: usize, _: *mut Buf) -> i32 {
    0
}

unsafe extern "C" fn free_buf(_: Buf) {}

static TABLE: AppTable = AppTable {
    abi_version: 999,
    table_size: sandbox_abi::TABLE_SIZE,
    name: c"wrong_abi_app".as_ptr(),
    version: c"9.9.9".as_ptr(),
    call,
    free_buf,
    save_state: None,
    restore_state: None,
    worker: None,
    initial_workers: 0,
    configure: None,
};

/// The entry symbol, pointing at a table of the wrong version.
#[unsafe(no_mangle)]
pub extern "C" fn sandbox_app_entry() -> *const AppTable {
    &TABLE
}
