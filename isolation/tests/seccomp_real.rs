//! The default seccomp filter on the real kernel, in a subprocess (it is irreversible).
//!
//! The allow-list tests check from inside a filtered process that what is refused is refused
//! and that an ordinary Rust program (threads, fork+exec, files, mmap, epoll, ...) still works.

mod common;

use std::io;
use std::os::fd::AsRawFd;

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
    let filter = seccomp::default_filter(false).unwrap();
    let entry = seccomp::apply(filter.as_bytes()).unwrap();
    assert!(
        entry.applied && entry.detail.starts_with("allow-list: "),
        "{entry:?}"
    );
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
    let t = std::time::Instant::now();
    let a = seccomp::compile_default_filter(false).unwrap();
    let took = t.elapsed();
    let b = seccomp::compile_default_filter(false).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, seccomp::compile_default_filter(true).unwrap());
    eprintln!(
        "filter: {} instructions, {} bytes, compiled in {took:?}",
        a.instructions(),
        a.as_bytes().len()
    );
}

/// The filter's bytes as the runner gets them.
fn filter_bytes(network: bool) -> Vec<u8> {
    seccomp::compile_default_filter(network).unwrap().into_vec()
}

/// Installs the filter in fresh forked children and reports the time `seccomp::apply` took
/// (median and minimum over 21 children). Run with `--nocapture` to see the numbers.
#[test]
fn install_time() {
    let out = std::env::temp_dir().join(format!("seccomp-install-{}.txt", std::process::id()));
    if std::env::var("SECCOMP_INSTALL_OUT").is_err() {
        // SAFETY: setting an env var before the subprocess is spawned; no other thread reads it.
        unsafe { std::env::set_var("SECCOMP_INSTALL_OUT", &out) };
    }
    if !in_subprocess("install_time", None) {
        let text = std::fs::read_to_string(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        eprintln!("{text}");
        return;
    }
    let mut lines = String::new();
    for network in [false, true] {
        let bytes = filter_bytes(network);
        let mut samples = Vec::new();
        for _ in 0..21 {
            let (r, w) = common::pipe();
            // SAFETY: the child only installs the filter, writes 8 bytes and _exits; this
            // subprocess runs a single test on one thread.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0);
            if pid == 0 {
                let t = std::time::Instant::now();
                let ok = seccomp::apply(&bytes).is_ok();
                let us = if ok {
                    t.elapsed().as_nanos() as u64
                } else {
                    u64::MAX
                };
                // SAFETY: writing a stack buffer to our pipe, then exiting without unwinding.
                unsafe {
                    libc::write(w.as_raw_fd(), us.to_le_bytes().as_ptr().cast(), 8);
                    libc::_exit(0);
                }
            }
            drop(w);
            let mut b = [0u8; 8];
            // SAFETY: reading into a stack buffer.
            let n = unsafe { libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), 8) };
            assert_eq!(n, 8);
            reap(pid);
            let ns = u64::from_le_bytes(b);
            assert_ne!(ns, u64::MAX, "apply failed");
            samples.push(ns);
        }
        samples.sort_unstable();
        lines += &format!(
            "seccomp install (network={network}, {} bytes): median {:.1} us, min {:.1} us\n",
            bytes.len(),
            samples[samples.len() / 2] as f64 / 1000.0,
            samples[0] as f64 / 1000.0,
        );
    }
    std::fs::write(std::env::var("SECCOMP_INSTALL_OUT").unwrap(), lines).unwrap();
}

#[test]
fn allow_list_without_network() {
    if in_subprocess("allow_list_without_network", None) {
        allow_list_checks(false);
    }
}

#[test]
fn allow_list_with_network() {
    if in_subprocess("allow_list_with_network", None) {
        allow_list_checks(true);
    }
}

/// `socket(family, SOCK_STREAM or SOCK_DGRAM)`: `Ok` (closed again) or the errno. `family` is
/// passed as a full 64-bit register, so the test can put garbage in its high half.
fn socket(family: u64) -> Result<(), i32> {
    let mut last = 0;
    for ty in [libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_RAW] {
        // SAFETY: plain socket(2); the fd is closed right away.
        let fd = unsafe { libc::syscall(libc::SYS_socket, family, ty | libc::SOCK_CLOEXEC, 0) };
        match errno_of(fd) {
            None => {
                // SAFETY: closing the fd we just got.
                unsafe { libc::close(fd as i32) };
                return Ok(());
            }
            Some(e) => last = e,
        }
    }
    Err(last)
}

fn allow_list_checks(network: bool) {
    let filter = seccomp::default_filter(network).unwrap();
    let entry = seccomp::apply(filter.as_bytes()).unwrap();
    eprintln!("{}", entry.detail);
    assert!(entry.detail.starts_with("allow-list: "), "{}", entry.detail);
    let af = |f: i32| f as u32 as u64;
    let refused = Err(libc::EAFNOSUPPORT);
    for (name, f) in [
        ("AF_VSOCK", libc::AF_VSOCK),
        ("AF_NETLINK", libc::AF_NETLINK),
        ("AF_PACKET", libc::AF_PACKET),
        ("AF_ALG", libc::AF_ALG),
        ("AF_BLUETOOTH", libc::AF_BLUETOOTH),
    ] {
        assert_eq!(socket(af(f)), refused, "{name}");
        // The kernel reads `int family`: garbage in the high half changes nothing.
        assert_eq!(socket(1 << 32 | af(f)), refused, "{name} | 1 << 32");
    }
    assert_eq!(socket(af(libc::AF_UNIX)), Ok(()), "AF_UNIX");
    assert_eq!(socket(0xffff_ffff << 32 | af(libc::AF_UNIX)), Ok(()));
    let inet = if network { Ok(()) } else { refused };
    assert_eq!(socket(af(libc::AF_INET)), inet, "AF_INET");
    assert_eq!(
        socket(1 << 32 | af(libc::AF_INET)),
        inet,
        "AF_INET | 1 << 32"
    );
    if network {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    } else {
        assert!(std::net::TcpListener::bind("127.0.0.1:0").is_err());
    }
    let mut sv = [0; 2];
    // SAFETY: (both) socketpair(2) into a stack array.
    let rc = unsafe { libc::socketpair(libc::AF_INET, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) };
    assert_eq!(
        errno_of(rc.into()),
        Some(libc::EAFNOSUPPORT),
        "socketpair AF_INET"
    );
    let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    {
        use std::io::{Read, Write};
        a.write_all(b"{\"frame\":1}").unwrap();
        let mut got = [0u8; 11];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"{\"frame\":1}");
    }

    // SAFETY: (whole block) raw syscalls that the filter refuses before the kernel looks at
    // the (null or harmless) arguments, and ordinary calls on our own fds and memory.
    unsafe {
        let not_there = [Some(libc::ENOSYS), Some(libc::EPERM)];
        let kcmp = errno_of(libc::syscall(libc::SYS_kcmp, 0, 0, 0, 0, 0));
        assert!(not_there.contains(&kcmp), "kcmp: {kcmp:?}");
        let secret = errno_of(libc::syscall(libc::SYS_memfd_secret, 0));
        assert!(not_there.contains(&secret), "memfd_secret: {secret:?}");
        for nr in [1000, 0xffff, 0x3fff_ffff] {
            assert_eq!(
                errno_of(libc::syscall(nr)),
                Some(libc::ENOSYS),
                "syscall {nr}"
            );
        }
        assert_eq!(
            errno_of(libc::syscall(libc::SYS_clone3, 0, 0)),
            Some(libc::ENOSYS)
        );
        assert_eq!(
            errno_of(libc::syscall(libc::SYS_ptrace, 0, 0)),
            Some(libc::EPERM)
        );

        // Ordinary things.
        let mut ts = std::mem::zeroed::<libc::timespec>();
        assert_eq!(libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts), 0);
        let mut buf = [0u8; 32];
        assert_eq!(libc::getrandom(buf.as_mut_ptr().cast(), 32, 0), 32);
        let len = 1 << 20;
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        p.cast::<u8>().write(7);
        assert_eq!(libc::mprotect(p, len, libc::PROT_READ), 0);
        assert_eq!(libc::munmap(p, len), 0);
        let mut fds = [0; 2];
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        assert!(ep >= 0);
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 5,
        };
        assert_eq!(libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fds[0], &mut ev), 0);
        assert_eq!(libc::write(fds[1], b"x".as_ptr().cast(), 1), 1);
        let mut out = [libc::epoll_event { events: 0, u64: 0 }; 4];
        assert_eq!(libc::epoll_wait(ep, out.as_mut_ptr(), 4, 1000), 1);
        assert_eq!({ out[0].u64 }, 5);
        let efd = libc::eventfd(0, libc::EFD_CLOEXEC);
        let tfd = libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC);
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        let sfd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC);
        let mfd = libc::memfd_create(c"seccomp-test".as_ptr(), libc::MFD_CLOEXEC);
        for fd in [ep, fds[0], fds[1], efd, tfd, sfd, mfd] {
            assert!(fd >= 0);
            assert_eq!(libc::close(fd), 0);
        }
        // fork + exec + wait, the raw way.
        let pid = libc::fork();
        if pid == 0 {
            let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
            libc::execv(argv[0], argv.as_ptr());
            libc::_exit(127);
        }
        let st = reap(pid);
        assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0, "{st:#x}");
    }
    // Files, /proc, threads, child processes (which inherit the filter) the std way.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("data");
    std::fs::write(&f, b"hello").unwrap();
    assert_eq!(std::fs::read(&f).unwrap(), b"hello");
    assert_eq!(std::fs::metadata(&f).unwrap().len(), 5);
    std::fs::rename(&f, dir.path().join("moved")).unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    assert!(
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .contains("Seccomp:\t2")
    );
    assert!(std::thread::available_parallelism().is_ok());
    let threads: Vec<_> = (0..4).map(|i| std::thread::spawn(move || i * 2)).collect();
    let sum: i32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(sum, 12);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(std::thread::current().id()).unwrap());
    rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
    assert!(
        std::process::Command::new("/bin/true")
            .status()
            .unwrap()
            .success()
    );
    let script = "echo hi | cat; ls / > /dev/null; sleep 0.01; date > /dev/null; \
                  t=$(mktemp); echo x > $t; cat $t; rm $t";
    let out = std::process::Command::new("/bin/sh")
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\nx\n");
}
