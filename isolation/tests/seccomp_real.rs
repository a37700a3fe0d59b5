//! The default seccomp filter on the real kernel, in a subprocess (it is irreversible).

mod common;

use std::io;

use common::{in_subprocess, reap};
use isolation::namespaces::raw_clone;
use isolation::seccomp;

fn errno_of(rc: i64) -> Option<i32> {
    (rc < 0).then(|| io::Error::last_os_error().raw_os_error().unwrap())
}

#[test]
fn default_filter_denies_and_allows() {
    if !in_subprocess("default_filter_denies_and_allows", None) {
        return;
    }
    let filter = seccomp::default_filter().unwrap();
    seccomp::apply(filter.as_bytes()).unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    assert!(status.lines().any(|l| l == "Seccomp:\t2"), "{status}");
    assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"));

    // SAFETY: (whole block) raw syscalls with harmless or null arguments; each is expected to be
    // refused by the filter before the kernel looks at the arguments.
    unsafe {
        let eperm = Some(libc::EPERM);
        assert_eq!(
            errno_of(libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0)),
            eperm,
            "ptrace"
        );
        assert_eq!(
            errno_of(libc::unshare(libc::CLONE_NEWUTS).into()),
            eperm,
            "unshare"
        );
        assert_eq!(errno_of(libc::setns(0, 0).into()), eperm, "setns");
        let null = std::ptr::null::<libc::c_char>();
        assert_eq!(
            errno_of(libc::mount(null, null, null, 0, null.cast()).into()),
            eperm,
            "mount"
        );
        assert_eq!(
            errno_of(libc::umount2(c"/".as_ptr(), 0).into()),
            eperm,
            "umount2"
        );
        assert_eq!(
            errno_of(libc::syscall(libc::SYS_bpf, 0, 0, 0)),
            eperm,
            "bpf"
        );
        assert_eq!(
            errno_of(libc::syscall(libc::SYS_io_uring_setup, 1, 0)),
            eperm,
            "io_uring"
        );
        assert_eq!(
            errno_of(libc::syscall(libc::SYS_keyctl, 0, 0)),
            eperm,
            "keyctl"
        );
        assert_eq!(
            errno_of(libc::syscall(libc::SYS_userfaultfd, 0)),
            eperm,
            "userfaultfd"
        );
        assert_eq!(
            errno_of(libc::syscall(libc::SYS_perf_event_open, 0, 0, 0, 0, 0)),
            eperm,
            "perf_event_open"
        );
        assert_eq!(
            errno_of(libc::syscall(libc::SYS_personality, 0x0040000)),
            eperm
        );
        assert!(
            libc::syscall(libc::SYS_personality, 0xffff_ffffu32) >= 0,
            "personality query"
        );
        // TIOCSTI, also with garbage in the upper 32 bits of the request.
        let c = b'x';
        assert_eq!(errno_of(libc::ioctl(0, libc::TIOCSTI, &c).into()), eperm);
        #[allow(clippy::unnecessary_cast)] // u64 on glibc, i32 on musl
        let hi = libc::TIOCSTI as u64 | (1u64 << 32);
        assert_eq!(errno_of(libc::syscall(libc::SYS_ioctl, 0, hi, &c)), eperm);
        // clone with a namespace flag -> EPERM; clone3 -> ENOSYS.
        assert_eq!(
            raw_clone(libc::CLONE_NEWNS).err().map(|e| e as i32),
            eperm,
            "clone NEWNS"
        );
        assert_eq!(
            raw_clone(libc::CLONE_NEWUSER).err().map(|e| e as i32),
            eperm
        );
        assert_eq!(
            errno_of(libc::syscall(
                libc::SYS_clone3,
                std::ptr::null::<u8>(),
                88usize
            )),
            Some(libc::ENOSYS),
            "clone3"
        );
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            errno_of(libc::syscall(0x4000_0000 | libc::SYS_getpid)),
            Some(libc::ENOSYS),
            "x32 getpid"
        );
        // Allowed: ordinary calls, fork, threads, fork+exec.
        assert!(libc::getpid() > 0);
        let pid = raw_clone(0).unwrap();
        if pid == 0 {
            libc::_exit(7);
        }
        let st = reap(pid);
        assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 7);
    }
    let t = std::thread::spawn(|| 41 + 1);
    assert_eq!(t.join().unwrap(), 42);
    let out = std::process::Command::new("/bin/sh")
        .args(["-c", "echo ok"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
}

#[test]
fn compile_is_cheap_and_stable() {
    let a = seccomp::compile_default_filter().unwrap();
    let b = seccomp::compile_default_filter().unwrap();
    assert_eq!(a, b);
    eprintln!(
        "filter: {} instructions, {} bytes",
        a.instructions(),
        a.as_bytes().len()
    );
}
