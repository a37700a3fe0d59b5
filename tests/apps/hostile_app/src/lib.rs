//! A hostile test app: every function attempts one attack on its host or its neighbours and
//! returns a JSON object saying what happened (errnos, counts, what a child process saw).
//!
//! The functions run on a call thread of the runner, a multi-threaded process: a forked child
//! only makes async-signal-safe system calls (no allocation, no locks) before `execve` or
//! `_exit`. The runner's reaper thread waits on any child (`waitpid(-1)`), so nothing here
//! relies on `waitpid`: children report through pipes instead, and a closed pipe means the
//! child is gone.
//!
//! Arguments are small JSON values written by the tests (`{"path":"/x","uid":65534}`, a string
//! or a number); [`field`] and [`num`] read them without a JSON library.

mod escape;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

fn answer(_: &str) -> Result<String, String> {
    Ok("1".into())
}

/// What the constructor saw, at `dlopen` time, before any call: its cgroups and its limits.
static SEEN_AT_LOAD: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Runs at `dlopen`: the earliest moment app code runs in a sandbox.
extern "C" fn look_at_load() {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_else(|e| format!("error: {e}"));
    let text = format!(
        "{{\"cgroup\":{:?},\"limits\":{:?}}}",
        read("/proc/self/cgroup"),
        read("/proc/self/limits")
    );
    let _ = SEEN_AT_LOAD.set(text);
}

#[used]
#[unsafe(link_section = ".init_array")]
static LOOK_AT_LOAD: extern "C" fn() = look_at_load;

/// What [`look_at_load`] saw: `{"cgroup": "...", "limits": "..."}`.
fn seen_at_load(_: &str) -> Result<String, String> {
    SEEN_AT_LOAD.get().cloned().ok_or_else(|| "the constructor did not run".into())
}

/// Holds a call thread for `ms` milliseconds.
fn hold(args: &str) -> Result<String, String> {
    let ms = num(args, "ms").unwrap_or(500);
    std::thread::sleep(Duration::from_millis(ms as u64));
    Ok(ms.to_string())
}

/// Forks sleeping children from the call thread until the kernel refuses `failures` times in
/// a row (or `max` children exist). `{"max": N, "failures": F}`.
fn fork_bomb(args: &str) -> Result<String, String> {
    let max = num(args, "max").unwrap_or(10_000);
    let give_up = num(args, "failures").unwrap_or(20);
    let (mut forked, mut failures, mut first_errno) = (0i64, 0i64, 0i32);
    while forked < max && failures < give_up {
        // SAFETY: the child only sleeps (nanosleep) and never returns.
        match unsafe { libc::fork() } {
            0 => sleep_forever(),
            pid if pid > 0 => {
                forked += 1;
                failures = 0;
            }
            _ => {
                if first_errno == 0 {
                    first_errno = errno();
                }
                failures += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    Ok(format!(
        r#"{{"forked":{forked},"errno":{first_errno},"gave_up_after_failures":{}}}"#,
        failures >= give_up
    ))
}

/// Forks a child that maps and touches memory in `chunk_mb` pieces until it is killed (or has
/// touched `max_mb`). Returns when the child is gone. `{"chunk_mb": C, "max_mb": M}`.
fn memory_bomb(args: &str) -> Result<String, String> {
    let chunk = (num(args, "chunk_mb").unwrap_or(4) as usize) << 20;
    let max_chunks = ((num(args, "max_mb").unwrap_or(1024) as usize) << 20) / chunk.max(1);
    let (r, w) = pipe(false)?;
    // SAFETY: the child only calls mmap, write and _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: errno {}", errno()));
    }
    if pid == 0 {
        // SAFETY: async-signal-safe system calls on our own memory.
        unsafe {
            libc::close(r);
            for _ in 0..max_chunks {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    chunk,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if p == libc::MAP_FAILED {
                    libc::write(w, b"F".as_ptr().cast(), 1);
                    libc::_exit(3);
                }
                let bytes = p.cast::<u8>();
                let mut off = 0;
                while off < chunk {
                    bytes.add(off).write_volatile(1);
                    off += 4096;
                }
                libc::write(w, b"+".as_ptr().cast(), 1);
            }
            libc::write(w, b"M".as_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    close(w);
    let out = read_all(r);
    close(r);
    let chunks = out.iter().filter(|&&b| b == b'+').count();
    Ok(format!(
        r#"{{"child_ns_pid":{pid},"touched_mb":{},"hit_max":{},"mmap_failed":{}}}"#,
        (chunks * chunk) >> 20,
        out.contains(&b'M'),
        out.contains(&b'F')
    ))
}

/// Starts `threads` threads that spin for `ms` milliseconds, and returns at once.
/// `{"threads": T, "ms": MS}`.
fn cpu_spin(args: &str) -> Result<String, String> {
    let threads = num(args, "threads").unwrap_or(2);
    let ms = num(args, "ms").unwrap_or(3000) as u64;
    let mut started = 0;
    for _ in 0..threads {
        let spawned = std::thread::Builder::new().spawn(move || {
            let end = Instant::now() + Duration::from_millis(ms);
            let mut x = 0u64;
            while Instant::now() < end {
                for i in 0..10_000u64 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                }
            }
            x
        });
        if spawned.is_ok() {
            started += 1;
        }
    }
    Ok(format!(r#"{{"threads":{started}}}"#))
}

/// Reads the file at `path` and lists its directory. `{"path": P}`.
fn read_file(args: &str) -> Result<String, String> {
    let path = field(args, "path").ok_or("no path")?;
    let read = match std::fs::read(&path) {
        Ok(bytes) => format!(
            r#"{{"ok":true,"content":"{}"}}"#,
            esc(&String::from_utf8_lossy(&bytes))
        ),
        Err(e) => io_err(&e),
    };
    let dir = std::path::Path::new(&path)
        .parent()
        .map(|d| d.to_path_buf())
        .unwrap_or_default();
    let list = match std::fs::read_dir(&dir) {
        Ok(entries) => format!(r#"{{"ok":true,"entries":{}}}"#, entries.count()),
        Err(e) => io_err(&e),
    };
    Ok(format!(r#"{{"read":{read},"list_dir":{list}}}"#))
}

/// Creates the file at `path` and writes to it. `{"path": P}`.
fn write_file(args: &str) -> Result<String, String> {
    let path = field(args, "path").ok_or("no path")?;
    Ok(
        match std::fs::write(&path, b"written from inside the sandbox") {
            Ok(()) => r#"{"ok":true}"#.into(),
            Err(e) => io_err(&e),
        },
    )
}

/// Connects to a TCP port and sends a UDP datagram to another, both on 127.0.0.1, and lists
/// the network interfaces the sandbox sees. `{"tcp": PORT, "udp": PORT}`.
fn connect_net(args: &str) -> Result<String, String> {
    use std::net::{SocketAddr, TcpStream, UdpSocket};
    let tcp_port = num(args, "tcp").ok_or("no tcp port")? as u16;
    let udp_port = num(args, "udp").ok_or("no udp port")? as u16;
    let tcp_addr = SocketAddr::from(([127, 0, 0, 1], tcp_port));
    let tcp = match TcpStream::connect_timeout(&tcp_addr, Duration::from_secs(1)) {
        Ok(_) => r#"{"ok":true}"#.into(),
        Err(e) => io_err(&e),
    };
    let udp = match UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.send_to(b"hello from the sandbox", ("127.0.0.1", udp_port)))
    {
        Ok(n) => format!(r#"{{"ok":true,"sent":{n}}}"#),
        Err(e) => io_err(&e),
    };
    let interfaces = match std::fs::read_to_string("/proc/self/net/dev") {
        Ok(text) => {
            let names: Vec<String> = text
                .lines()
                .skip(2)
                .filter_map(|l| l.split(':').next())
                .map(|n| format!("\"{}\"", esc(n.trim())))
                .collect();
            format!("[{}]", names.join(","))
        }
        Err(e) => io_err(&e),
    };
    Ok(format!(
        r#"{{"tcp":{tcp},"udp":{udp},"interfaces":{interfaces}}}"#
    ))
}

/// Tries to reach into another process: `PTRACE_ATTACH` and `process_vm_readv` on `pid` (the
/// host, as the test names it), and `PTRACE_ATTACH` on a child of our own, which nothing but a
/// syscall filter would refuse. `{"pid": PID}`.
fn ptrace(args: &str) -> Result<String, String> {
    let pid = num(args, "pid").ok_or("no pid")? as libc::pid_t;
    let attach = |target: libc::pid_t| -> i32 {
        // SAFETY: ptrace with integer arguments; on success we detach again at once.
        unsafe {
            let null = std::ptr::null_mut::<libc::c_void>();
            if libc::ptrace(libc::PTRACE_ATTACH, target, null, null) == 0 {
                libc::ptrace(libc::PTRACE_DETACH, target, null, null);
                0
            } else {
                errno()
            }
        }
    };
    let host_attach = attach(pid);
    let mut buf = [0u8; 64];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: 0x40_0000 as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: reads at most 64 bytes into `buf`, which `local` describes.
    let vm_read = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    let vm_read = if vm_read < 0 { errno() } else { 0 };
    // SAFETY: the child only sleeps.
    let child = unsafe { libc::fork() };
    if child == 0 {
        sleep_forever();
    }
    let child_attach = if child > 0 { attach(child) } else { -1 };
    if child > 0 {
        // SAFETY: our own child.
        unsafe { libc::kill(child, libc::SIGKILL) };
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let signal = if unsafe { libc::kill(pid, 0) } == 0 {
        0
    } else {
        errno()
    };
    let visible = std::path::Path::new(&format!("/proc/{pid}")).exists();
    Ok(format!(
        r#"{{"attach_errno":{host_attach},"vm_readv_errno":{vm_read},"child_attach_errno":{child_attach},"signal_errno":{signal},"pid_visible":{visible}}}"#
    ))
}

/// Forks a child that (optionally) switches to `uid`, then execs `path /proc/self/status` and
/// reports the credentials the kernel gave the new program. `{"path": P, "uid": U}`.
fn setuid_exec(args: &str) -> Result<String, String> {
    let path = field(args, "path").ok_or("no path")?;
    let uid = num(args, "uid").map(|u| u as libc::uid_t);
    let exe = std::ffi::CString::new(path).map_err(|e| e.to_string())?;
    let status = c"/proc/self/status";
    let argv = [exe.as_ptr(), status.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    let (out_r, out_w) = pipe(false)?;
    let (err_r, err_w) = pipe(true)?;
    // SAFETY: the child only calls dup2, set*id, execve, write and _exit on memory prepared
    // above.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: errno {}", errno()));
    }
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            let fail = |stage: u8| -> ! {
                let e = errno().to_le_bytes();
                let msg = [stage, e[0], e[1], e[2], e[3]];
                libc::write(err_w, msg.as_ptr().cast(), msg.len());
                libc::_exit(126);
            };
            libc::close(out_r);
            libc::close(err_r);
            if libc::dup2(out_w, 1) < 0 {
                fail(b'd');
            }
            if let Some(u) = uid {
                // Raw system calls: they change this (only) thread's credentials, unlike
                // glibc's wrappers, which signal every thread of the process.
                if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                    || libc::syscall(libc::SYS_setresgid, u, u, u) != 0
                    || libc::syscall(libc::SYS_setresuid, u, u, u) != 0
                {
                    fail(b'u');
                }
            }
            libc::execve(argv[0], argv.as_ptr(), envp.as_ptr());
            fail(b'x');
        }
    }
    close(out_w);
    close(err_w);
    let err = read_all(err_r);
    let out = read_all(out_r);
    close(err_r);
    close(out_r);
    let mut json = String::from("{");
    if err.len() == 5 {
        let e = i32::from_le_bytes([err[1], err[2], err[3], err[4]]);
        let stage = match err[0] {
            b'u' => "setuid",
            b'x' => "exec",
            _ => "dup2",
        };
        let _ = write!(json, r#""failed":"{stage}","errno":{e}"#);
    } else {
        json.push_str(r#""failed":null"#);
        let text = String::from_utf8_lossy(&out);
        for key in ["Uid", "Gid", "NoNewPrivs", "CapPrm", "CapEff", "CapBnd"] {
            let value = text
                .lines()
                .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default();
            let _ = write!(json, r#","{key}":"{}""#, esc(&value));
        }
    }
    json.push('}');
    Ok(json)
}

/// Double-forks a daemon: the grandchild calls `setsid`, reports its pid (as this sandbox's
/// pid namespace numbers it) and sleeps forever; its parent exits at once.
fn daemon(_: &str) -> Result<String, String> {
    let (r, w) = pipe(false)?;
    // SAFETY: the child forks, the grandchild calls setsid, getpid, write and nanosleep.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: errno {}", errno()));
    }
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            libc::close(r);
            if libc::fork() == 0 {
                let sid = libc::setsid();
                let me = libc::getpid();
                let msg: [i32; 2] = [me, sid];
                libc::write(w, msg.as_ptr().cast(), 8);
                libc::close(w);
                sleep_forever();
            }
            libc::_exit(0);
        }
    }
    close(w);
    let out = read_all(r);
    close(r);
    if out.len() != 8 {
        return Err(format!("daemon reported {} bytes", out.len()));
    }
    let pid = i32::from_le_bytes([out[0], out[1], out[2], out[3]]);
    let sid = i32::from_le_bytes([out[4], out[5], out[6], out[7]]);
    Ok(format!(r#"{{"ns_pid":{pid},"sid":{sid}}}"#))
}

fn sleep_forever() -> ! {
    loop {
        // SAFETY: nanosleep; async-signal-safe.
        unsafe { libc::sleep(3600) };
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn io_err(e: &std::io::Error) -> String {
    format!(
        r#"{{"ok":false,"errno":{},"error":"{}"}}"#,
        e.raw_os_error().unwrap_or(0),
        esc(&e.to_string())
    )
}

fn pipe(cloexec: bool) -> Result<(i32, i32), String> {
    let mut fds = [0; 2];
    let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
    // SAFETY: valid out-array of two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), flags) } != 0 {
        return Err(format!("pipe: errno {}", errno()));
    }
    Ok((fds[0], fds[1]))
}

fn close(fd: i32) {
    // SAFETY: closes an fd this module created and owns.
    unsafe { libc::close(fd) };
}

/// Reads `fd` until EOF (every writer closed it, e.g. because it died).
fn read_all(fd: i32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reads into our own buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            out.extend_from_slice(&buf[..n as usize]);
        } else if n == 0 || errno() != libc::EINTR {
            return out;
        }
    }
}

/// The string value of `"key":"..."` in `args`, or `args` itself when it is a JSON string.
fn field(args: &str, key: &str) -> Option<String> {
    let args = args.trim();
    let rest = match args.find(&format!("\"{key}\":")) {
        Some(at) => args[at + key.len() + 3..].trim_start(),
        None if args.starts_with('"') => args,
        None => return None,
    };
    let rest = rest.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
}

/// The number value of `"key":N` in `args`, or `args` itself when it is a number.
fn num(args: &str, key: &str) -> Option<i64> {
    let args = args.trim();
    let rest = match args.find(&format!("\"{key}\":")) {
        Some(at) => args[at + key.len() + 3..].trim_start(),
        None => args,
    };
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

sandbox_abi::export_app! {
    name: "hostile_app",
    version: "0.1.0",
    functions: {
        "answer" => answer,
        "seen_at_load" => seen_at_load,
        "hold" => hold,
        "fork_bomb" => fork_bomb,
        "memory_bomb" => memory_bomb,
        "cpu_spin" => cpu_spin,
        "read_file" => read_file,
        "write_file" => write_file,
        "connect_net" => connect_net,
        "ptrace" => ptrace,
        "setuid_exec" => setuid_exec,
        "daemon" => daemon,
        "connect_unix" => escape::connect_unix,
        "open_socket" => escape::open_socket,
        "raw_syscall" => escape::raw_syscall,
        "whoami" => escape::whoami,
        "tamper" => escape::tamper,
        "fill_disk" => escape::fill_disk,
        "many_files" => escape::many_files,
    },
}
