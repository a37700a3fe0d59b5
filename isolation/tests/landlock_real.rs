//! Landlock and the runner's restriction sequence on the real kernel, in subprocesses.

mod common;

use std::fs;
use std::io::ErrorKind;
use std::path::PathBuf;

use common::in_subprocess;
use isolation::landlock::{self, Enforcement, LandlockPlan, SYSTEM_READ_EXEC};
use isolation::{IsolationError, Level, Mechanism, RunnerRestrictions};

struct Dirs {
    _base: tempfile::TempDir,
    ro: PathBuf,
    rw: PathBuf,
    outside: PathBuf,
}

fn dirs() -> Dirs {
    let base = tempfile::tempdir().unwrap();
    let ro = base.path().join("app");
    let rw = base.path().join("private");
    let outside = base.path().join("outside");
    for d in [&ro, &rw, &outside] {
        fs::create_dir(d).unwrap();
    }
    fs::write(ro.join("app.txt"), "app").unwrap();
    fs::write(outside.join("secret.txt"), "secret").unwrap();
    Dirs {
        _base: base,
        ro,
        rw,
        outside,
    }
}

fn plan(d: &Dirs) -> LandlockPlan {
    let mut read_exec = vec![d.ro.clone(), "/proc".into()];
    read_exec.extend(SYSTEM_READ_EXEC.iter().map(PathBuf::from));
    LandlockPlan {
        read_exec,
        read_write: vec![d.rw.clone(), "/dev/null".into()],
        read_write_exec: Vec::new(),
        target_abi: landlock::DEFAULT_TARGET_ABI,
        deny_tcp: true,
        scoped: true,
    }
}

#[test]
fn landlock_confines_reads_and_writes() {
    if !in_subprocess("landlock_confines_reads_and_writes", None) {
        return;
    }
    let d = dirs();
    let st = landlock::apply(&plan(&d)).unwrap();
    eprintln!("{st:?}");
    if landlock::kernel_abi() == 0 {
        common::skip("no Landlock in this kernel");
        assert_eq!(st.enforcement, Enforcement::None);
        return;
    }
    if landlock::kernel_abi() >= i32::from(landlock::DEFAULT_TARGET_ABI) {
        assert_eq!(st.enforcement, Enforcement::Full);
    }
    // Reading outside: EACCES. Reading the app dir: fine.
    let e = fs::read_to_string(d.outside.join("secret.txt")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(fs::read_dir(&d.outside).is_err());
    assert!(fs::read_to_string("/etc/hostname").is_err());
    assert_eq!(fs::read_to_string(d.ro.join("app.txt")).unwrap(), "app");
    // Writing the app dir or anywhere else: EACCES. The private dir: fine.
    let e = fs::write(d.ro.join("new.txt"), "x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(fs::write(d.outside.join("new.txt"), "x").is_err());
    fs::write(d.rw.join("a.txt"), "x").unwrap();
    fs::create_dir(d.rw.join("sub")).unwrap();
    fs::rename(d.rw.join("a.txt"), d.rw.join("sub/b.txt")).unwrap();
    assert_eq!(fs::read_to_string(d.rw.join("sub/b.txt")).unwrap(), "x");
    fs::remove_file(d.rw.join("sub/b.txt")).unwrap();
    fs::write("/dev/null", "x").unwrap();
    // Executing system binaries still works (and the child inherits the domain).
    let out = std::process::Command::new("/bin/cat")
        .arg(d.outside.join("secret.txt"))
        .output();
    let out = out.unwrap();
    assert!(!out.status.success(), "child could read outside");
    // TCP connect is denied by Landlock (EACCES), not refused by the peer.
    if landlock::kernel_abi() >= 4 {
        let e = std::net::TcpStream::connect("127.0.0.1:9").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    }
}

#[test]
fn runner_restrictions_apply_in_order() {
    if !in_subprocess("runner_restrictions_apply_in_order", None) {
        return;
    }
    let d = dirs();
    let r = RunnerRestrictions::for_level(Level::Standard, plan(&d), false).unwrap();
    let entries = r.apply_in_runner().unwrap();
    let order: Vec<Mechanism> = entries.iter().map(|e| e.mechanism).collect();
    assert_eq!(
        order,
        [
            Mechanism::NoNewPrivs,
            Mechanism::Landlock,
            Mechanism::Seccomp
        ]
    );
    assert!(entries[0].applied && entries[2].applied, "{entries:?}");
    eprintln!("{entries:#?}");
    let status = fs::read_to_string("/proc/self/status").unwrap();
    assert!(status.contains("NoNewPrivs:\t1") && status.contains("Seccomp:\t2"));
    // Both are in force.
    assert!(fs::read_to_string(d.outside.join("secret.txt")).is_err());
    // SAFETY: a denied syscall with harmless arguments.
    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWUTS) }, -1);
}

#[test]
fn strict_fails_when_landlock_is_partial() {
    if !in_subprocess("strict_fails_when_landlock_is_partial", None) {
        return;
    }
    let d = dirs();
    let mut p = plan(&d);
    // Ask for more than any kernel this crate knows can have today: partially enforced.
    p.target_abi = 10;
    if landlock::kernel_abi() >= 10 {
        common::skip("kernel has Landlock ABI 10");
        return;
    }
    let r = RunnerRestrictions::for_level(Level::Strict, p, false).unwrap();
    match r.apply_in_runner() {
        Err(IsolationError::Missing {
            mechanism: Mechanism::Landlock,
            detail,
        }) => {
            assert!(detail.contains("enforced"), "{detail}");
        }
        other => panic!("expected Missing(landlock), got {other:?}"),
    }
}
