//! Every probe prints `probe NAME: OK ...` when the attack worked and `probe NAME: denied ...`
//! when it failed, as a cargo warning (the test reads cargo's diagnostics). Nothing secret is
//! printed: only whether the attack worked.

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// What the test listens on and where the host's file would land: the `// probe-plan:` line
/// of the crate's `src/lib.rs` (`tcp=PORT unix=PATH host_tmp=PATH`), which the test writes.
struct Plan {
    port: u16,
    socket: String,
    host_tmp_file: String,
}

fn plan(manifest: &str) -> Plan {
    let lib = std::fs::read_to_string(format!("{manifest}/src/lib.rs")).unwrap_or_default();
    let line = lib
        .lines()
        .find_map(|l| l.strip_prefix("// probe-plan: "))
        .unwrap_or_default();
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_default()
            .to_string()
    };
    Plan {
        port: field("tcp").parse().unwrap_or(0),
        socket: field("unix"),
        host_tmp_file: field("host_tmp"),
    }
}

fn report(name: &str, r: Result<String, String>) {
    match r {
        Ok(what) => println!("cargo:warning=probe {name}: OK {what}"),
        Err(why) => println!("cargo:warning=probe {name}: denied ({why})"),
    }
}

fn main() {
    let e = |e: std::io::Error| e.to_string();
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let plan = plan(&manifest);
    println!(
        "cargo:warning=probe plan: tcp={} unix={} host_tmp={}",
        plan.port, plan.socket, plan.host_tmp_file
    );
    report(
        "shadow",
        std::fs::read("/etc/shadow").map(|b| format!("read {} bytes", b.len())).map_err(e),
    );
    report(
        "list_root",
        std::fs::read_dir("/root").map(|d| format!("{} entries", d.count())).map_err(e),
    );
    report(
        "write_host_tmp",
        std::fs::write(&plan.host_tmp_file, b"pwned").map(|()| "wrote".into()).map_err(e),
    );
    report(
        "tcp",
        TcpStream::connect_timeout(&([127, 0, 0, 1], plan.port).into(), Duration::from_secs(2))
            .and_then(|mut s| s.write_all(b"pwned"))
            .map(|()| "connected".into())
            .map_err(e),
    );
    for path in [plan.socket.as_str(), "/run/sandbox-host/host.sock"] {
        report(
            &format!("unix {path}"),
            UnixStream::connect(path)
                .and_then(|mut s| s.write_all(b"pwned"))
                .map(|()| "connected".into())
                .map_err(e),
        );
    }
    // The original crate directory, outside the build's copy (its host path).
    let original = manifest.strip_prefix("/src").unwrap_or(&manifest).to_string();
    report(
        "write_original_crate",
        std::fs::write(format!("{original}/pwned"), b"pwned").map(|()| "wrote".into()).map_err(e),
    );
    // The dependency's source (read-only) and another crate's source (not visible).
    report(
        "write_dependency",
        std::fs::write(format!("{manifest}/../../../sandbox_abi/pwned"), b"x")
            .map(|()| "wrote".into())
            .map_err(e),
    );
    let other = format!("{original}/../../../host/src/main.rs");
    report(
        "read_other_crate",
        std::fs::read(&other)
            .or_else(|_| std::fs::read(format!("/src{other}")))
            .map(|b| format!("read {} bytes", b.len()))
            .map_err(e),
    );
}
