//! Attacks on the sandbox's walls themselves: reaching host paths and Unix sockets, the ids it
//! runs as, the library store, socket families and syscalls the filter must refuse, and the
//! disk cap. Each returns a JSON object with the errno the kernel gave (0 when it worked).

use crate::{errno, esc, field, io_err, num};

/// Connects a stream socket to the Unix socket at `path`. `{"path": P}`.
pub fn connect_unix(args: &str) -> Result<String, String> {
    let path = field(args, "path").ok_or("no path")?;
    Ok(match std::os::unix::net::UnixStream::connect(&path) {
        Ok(_) => r#"{"ok":true}"#.into(),
        Err(e) => io_err(&e),
    })
}

/// `socket(family, type, 0)`. `{"family": F, "type": T}` (type defaults to SOCK_STREAM).
pub fn open_socket(args: &str) -> Result<String, String> {
    let family = num(args, "family").ok_or("no family")? as i32;
    let kind = num(args, "type").unwrap_or(libc::SOCK_STREAM as i64) as i32;
    // SAFETY: socket(2) with integer arguments; the fd is closed right away.
    let fd = unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Ok(format!(r#"{{"ok":false,"errno":{}}}"#, errno()));
    }
    // SAFETY: closing the fd we just opened.
    unsafe { libc::close(fd) };
    Ok(r#"{"ok":true,"errno":0}"#.into())
}

/// A raw system call with all-zero arguments. `{"nr": N}`.
pub fn raw_syscall(args: &str) -> Result<String, String> {
    let nr = num(args, "nr").ok_or("no nr")?;
    // SAFETY: zero arguments; the numbers the tests pass (kcmp, memfd_secret, unknown ones)
    // either fail or create an fd that is leaked into this test process only.
    let ret = unsafe { libc::syscall(nr as libc::c_long, 0usize, 0usize, 0usize, 0usize, 0usize) };
    let e = if ret < 0 { errno() } else { 0 };
    Ok(format!(r#"{{"ret":{ret},"errno":{e}}}"#))
}

/// The ids this process runs as, from the kernel: `{"uid":R,"euid":E,"gid":G,"groups":N}`.
pub fn whoami(_: &str) -> Result<String, String> {
    let (mut r, mut e, mut s) = (0, 0, 0);
    let (mut gr, mut ge, mut gs) = (0, 0, 0);
    // SAFETY: out-pointers to locals; getgroups(0, NULL) only counts.
    let groups = unsafe {
        libc::getresuid(&mut r, &mut e, &mut s);
        libc::getresgid(&mut gr, &mut ge, &mut gs);
        libc::getgroups(0, std::ptr::null_mut())
    };
    Ok(format!(
        r#"{{"uid":{r},"euid":{e},"suid":{s},"gid":{gr},"egid":{ge},"groups":{groups}}}"#
    ))
}

/// Tries to change the file at `path` every way there is: open it for writing, chmod it,
/// rename it, and unlink it. `{"path": P}`.
pub fn tamper(args: &str) -> Result<String, String> {
    let path = field(args, "path").ok_or("no path")?;
    let cpath = std::ffi::CString::new(path.clone()).map_err(|_| "NUL in path")?;
    let moved = std::ffi::CString::new(format!("{path}.moved")).map_err(|_| "NUL in path")?;
    // SAFETY: plain system calls on NUL-terminated paths we own.
    let (write, chmod, rename, unlink) = unsafe {
        let fd = libc::open(cpath.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        let write = if fd < 0 {
            errno()
        } else {
            // Really change it (the ELF magic's first byte: nothing runs from it).
            let n = libc::pwrite(fd, b"X".as_ptr().cast(), 1, 0);
            let e = if n == 1 { 0 } else { errno() };
            libc::close(fd);
            e
        };
        let chmod = if libc::chmod(cpath.as_ptr(), 0o666) < 0 { errno() } else { 0 };
        let rename = if libc::rename(cpath.as_ptr(), moved.as_ptr()) < 0 {
            errno()
        } else {
            libc::rename(moved.as_ptr(), cpath.as_ptr());
            0
        };
        let unlink = if libc::unlink(cpath.as_ptr()) < 0 { errno() } else { 0 };
        (write, chmod, rename, unlink)
    };
    Ok(format!(
        r#"{{"write":{write},"chmod":{chmod},"rename":{rename},"unlink":{unlink},"path":"{}"}}"#,
        esc(&path)
    ))
}

/// Writes 1 MiB chunks to `dir/fill` until the kernel refuses or `max_mb` are written.
/// `{"dir": D, "max_mb": M}`.
pub fn fill_disk(args: &str) -> Result<String, String> {
    use std::io::Write;
    let dir = field(args, "dir").ok_or("no dir")?;
    let max = num(args, "max_mb").unwrap_or(1024) as u64;
    let chunk = vec![0x5au8; 1 << 20];
    let mut file = std::fs::File::create(format!("{dir}/fill")).map_err(|e| e.to_string())?;
    let mut written = 0u64;
    let mut failure = 0;
    while written < max << 20 {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) => {
                failure = e.raw_os_error().unwrap_or(-1);
                break;
            }
        }
    }
    if failure == 0
        && let Err(e) = file.sync_all()
    {
        failure = e.raw_os_error().unwrap_or(-1);
    }
    Ok(format!(r#"{{"written":{written},"errno":{failure}}}"#))
}

/// Creates empty files `dir/f<N>` until the kernel refuses or `count` exist.
/// `{"dir": D, "count": N}`.
pub fn many_files(args: &str) -> Result<String, String> {
    let dir = field(args, "dir").ok_or("no dir")?;
    let count = num(args, "count").unwrap_or(60_000);
    let mut created = 0i64;
    let mut failure = 0;
    while created < count {
        match std::fs::File::create(format!("{dir}/f{created}")) {
            Ok(_) => created += 1,
            Err(e) => {
                failure = e.raw_os_error().unwrap_or(-1);
                break;
            }
        }
    }
    Ok(format!(r#"{{"created":{created},"errno":{failure}}}"#))
}
