//! A test app whose library initialiser hangs: loading it must time out.

fn answer(_: &str) -> Result<String, String> {
    Ok("0".into())
}

extern "C" fn hang() {
    std::thread::sleep(std::time::Duration::from_secs(30));
}

#[used]
#[unsafe(link_section = ".init_array")]
static HANG_ON_LOAD: extern "C" fn() = hang;

sandbox_abi::export_app! {
    name: "hang_load_app",
    version: "0.1.0",
    functions: { "answer" => answer },
}
