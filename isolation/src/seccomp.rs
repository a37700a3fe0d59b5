//! seccomp-bpf: the default syscall filter, compiled once in the host, shipped as bytes to the
//! runner, installed there (for all threads, TSYNC) before any app code is loaded.
//!
//! The filter is a deny list (default allow), one classic BPF program assembled here:
//!
//! - non-native architectures are killed;
//! - on x86_64, the x32 ABI (syscall numbers with bit 30 set) returns `ENOSYS`, so it cannot
//!   bypass the list;
//! - [`DENIED`] syscalls, `clone` with any `CLONE_NEW*` flag, `ioctl(TIOCSTI|TIOCLINUX)` and
//!   `personality` other than a query / `PER_LINUX` return `EPERM`;
//! - `clone3` returns `ENOSYS` (its flags live in memory, so they cannot be checked; glibc then
//!   falls back to `clone`, which is checked).
//!
//! The syscall number is looked up in a binary search tree, not a linear chain. That matters
//! twice: the kernel builds its per-syscall action cache by running the filter for every
//! syscall number when it is installed (a linear chain of ~50 comparisons made installing it
//! cost ~300 µs of every sandbox start, measured), and every syscall the cache cannot answer
//! runs the filter again. The runner can still fork, exec and spawn threads.
//!
//! Wire format of [`BpfBytes`]: `b"SBPF"`, version `1`, 3 zero bytes, audit arch (u32 LE),
//! program count (u32 LE), then per program its instruction count (u32 LE) and 8 bytes per
//! instruction (code u16 LE, jt u8, jf u8, k u32 LE).

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::report::{Mechanism, ReportEntry};

/// Compiling, decoding or installing a filter failed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The filter could not be assembled (unsupported architecture, or a jump too far).
    #[error("compile seccomp filter: {0}")]
    Compile(String),
    /// The bytes are not a filter produced by [`compile_default_filter`].
    #[error("decode seccomp filter: {0}")]
    Decode(String),
    /// The filter was compiled for another architecture.
    #[error("seccomp filter is for audit arch {found:#x}, this process is {expected:#x}")]
    WrongArch {
        /// This process's audit arch.
        expected: u32,
        /// The filter's.
        found: u32,
    },
    /// `seccomp(SECCOMP_SET_MODE_FILTER, TSYNC)` failed.
    #[error("install seccomp filter: {0}")]
    Install(String),
}

/// Syscalls that return `EPERM` (in addition to the conditional rules).
pub const DENIED: &[(&str, i64)] = &[
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("fanotify_init", libc::SYS_fanotify_init),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("acct", libc::SYS_acct),
    ("quotactl", libc::SYS_quotactl),
    ("syslog", libc::SYS_syslog),
    ("vhangup", libc::SYS_vhangup),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    #[cfg(target_arch = "x86_64")]
    ("iopl", libc::SYS_iopl),
    #[cfg(target_arch = "x86_64")]
    ("ioperm", libc::SYS_ioperm),
    #[cfg(target_arch = "x86_64")]
    ("uselib", libc::SYS_uselib),
];

const NS_CLONE_FLAGS: [i32; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWCGROUP,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
];

const MAGIC: &[u8; 4] = b"SBPF";
const VERSION: u8 = 1;

// Classic BPF opcodes (linux/bpf_common.h) and seccomp return values.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JA: u16 = 0x05;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_JMP_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// Offsets in `struct seccomp_data`: nr, arch, instruction pointer, then six u64 arguments. The
// low 32 bits of an argument come first on the little-endian targets we support.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg_low(i: u32) -> u32 {
    16 + 8 * i
}
#[cfg(not(target_endian = "little"))]
compile_error!("the seccomp filter reads argument words little-endian");

/// Longest linear run of comparisons at the leaves of the search tree.
const LEAF: usize = 4;

/// One classic BPF instruction, laid out as the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

/// A classic BPF program.
type Program = Vec<Insn>;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

/// A compiled filter, serialized (see the module docs for the format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfBytes(Vec<u8>);

impl BpfBytes {
    /// The serialized bytes, to send to the runner.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The serialized bytes, owned.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }

    /// Validates bytes received from the host.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, SeccompError> {
        decode(&bytes)?;
        Ok(Self(bytes))
    }

    /// Number of BPF instructions over all programs.
    pub fn instructions(&self) -> usize {
        decode(&self.0)
            .map(|p| p.iter().map(Vec::len).sum())
            .unwrap_or(0)
    }
}

fn audit_arch() -> u32 {
    match std::env::consts::ARCH {
        "x86_64" => 62 | 0x8000_0000 | 0x4000_0000,
        "aarch64" => 183 | 0x8000_0000 | 0x4000_0000,
        "riscv64" => 243 | 0x8000_0000 | 0x4000_0000,
        _ => 0,
    }
}

/// Where a jump goes: the next instruction or a named place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum To {
    Next,
    Allow,
    Eperm,
    Enosys,
    Kill,
    /// The argument check of `clone`.
    Clone,
    /// The argument check of `ioctl`.
    Ioctl,
    /// The argument check of `personality`.
    Personality,
    /// The right half of a search-tree node.
    Node(usize),
}

/// A tiny assembler: instructions with symbolic forward jumps, resolved at the end.
#[derive(Default)]
struct Asm {
    code: Vec<(u16, To, To, u32)>,
    at: HashMap<To, usize>,
    nodes: usize,
}

impl Asm {
    fn load(&mut self, offset: u32) {
        self.code.push((BPF_LD_W_ABS, To::Next, To::Next, offset));
    }

    fn jump(&mut self, op: u16, k: u32, jt: To, jf: To) {
        self.code.push((op, jt, jf, k));
    }

    fn ret(&mut self, value: u32) {
        self.code.push((BPF_RET_K, To::Next, To::Next, value));
    }

    fn here(&mut self, place: To) {
        self.at.insert(place, self.code.len());
    }

    fn node(&mut self) -> To {
        self.nodes += 1;
        To::Node(self.nodes)
    }

    /// Syscall numbers in `keys` (sorted) jump to their place; any other goes to `Allow`.
    fn search(&mut self, keys: &[(u32, To)]) {
        if keys.len() <= LEAF {
            for (i, &(nr, to)) in keys.iter().enumerate() {
                let miss = if i + 1 == keys.len() {
                    To::Allow
                } else {
                    To::Next
                };
                self.jump(BPF_JMP_JEQ_K, nr, to, miss);
            }
            if keys.is_empty() {
                // `finish` reads an unconditional jump's target from its `jt`.
                self.code.push((BPF_JMP_JA, To::Allow, To::Next, 0));
            }
            return;
        }
        let (low, high) = keys.split_at(keys.len() / 2);
        let right = self.node();
        self.jump(BPF_JMP_JGE_K, high[0].0, right, To::Next);
        self.search(low);
        self.here(right);
        self.search(high);
    }

    fn finish(self) -> Result<Program, SeccompError> {
        let place = |i: usize, to: To| -> Result<u32, SeccompError> {
            match to {
                To::Next => Ok(0),
                to => {
                    let target = *self.at.get(&to).ok_or_else(|| {
                        SeccompError::Compile(format!("jump to {to:?}, which is nowhere"))
                    })?;
                    target
                        .checked_sub(i + 1)
                        .map(|d| d as u32)
                        .ok_or_else(|| SeccompError::Compile(format!("backward jump to {to:?}")))
                }
            }
        };
        let short = |d: u32| -> Result<u8, SeccompError> {
            u8::try_from(d).map_err(|_| SeccompError::Compile(format!("jump of {d} > 255")))
        };
        self.code
            .iter()
            .enumerate()
            .map(|(i, &(code, jt, jf, k))| {
                if code == BPF_JMP_JA {
                    return Ok(insn(code, 0, 0, place(i, jt)?));
                }
                Ok(insn(code, short(place(i, jt)?)?, short(place(i, jf)?)?, k))
            })
            .collect()
    }
}

/// The default filter as one program (see the module docs).
#[allow(clippy::unnecessary_cast)] // ioctl request constants are u64 on glibc, i32 on musl
fn default_program() -> Result<Program, SeccompError> {
    let mut keys: Vec<(u32, To)> = DENIED
        .iter()
        .map(|&(_, nr)| (nr as u32, To::Eperm))
        .collect();
    keys.push((libc::SYS_clone as u32, To::Clone));
    keys.push((libc::SYS_ioctl as u32, To::Ioctl));
    keys.push((libc::SYS_personality as u32, To::Personality));
    keys.push((libc::SYS_clone3 as u32, To::Enosys));
    keys.sort_unstable_by_key(|&(nr, _)| nr);
    if let Some(w) = keys.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(SeccompError::Compile(format!(
            "syscall {} listed twice",
            w[0].0
        )));
    }
    let ns_flags = NS_CLONE_FLAGS.iter().fold(0u32, |all, &f| all | f as u32);

    let mut asm = Asm::default();
    asm.load(OFF_ARCH);
    asm.jump(BPF_JMP_JEQ_K, audit_arch(), To::Next, To::Kill);
    asm.load(OFF_NR);
    #[cfg(target_arch = "x86_64")]
    asm.jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, To::Enosys, To::Next);
    asm.search(&keys);
    // Argument checks (every leaf of the search ends in a jump, so nothing falls into them).
    // clone(flags, ...): flags is argument 0 on x86_64, aarch64 and riscv64.
    asm.here(To::Clone);
    asm.load(off_arg_low(0));
    asm.jump(BPF_JMP_JSET_K, ns_flags, To::Eperm, To::Allow);
    // ioctl(fd, TIOCSTI/TIOCLINUX): the kernel truncates `cmd` to 32 bits, so compare the low
    // 32 bits only -- the CVE-2019-10063 lesson.
    asm.here(To::Ioctl);
    asm.load(off_arg_low(1));
    asm.jump(BPF_JMP_JEQ_K, libc::TIOCSTI as u32, To::Eperm, To::Next);
    asm.jump(BPF_JMP_JEQ_K, libc::TIOCLINUX as u32, To::Eperm, To::Allow);
    // personality(): allow the query (0xffffffff) and PER_LINUX (0) only.
    asm.here(To::Personality);
    asm.load(off_arg_low(0));
    asm.jump(BPF_JMP_JEQ_K, 0xffff_ffff, To::Allow, To::Next);
    asm.jump(BPF_JMP_JEQ_K, 0, To::Allow, To::Eperm);
    // The verdicts, last: every jump is forward.
    asm.here(To::Allow);
    asm.ret(RET_ALLOW);
    asm.here(To::Eperm);
    asm.ret(RET_ERRNO | libc::EPERM as u32);
    asm.here(To::Enosys);
    asm.ret(RET_ERRNO | libc::ENOSYS as u32);
    asm.here(To::Kill);
    asm.ret(RET_KILL_PROCESS);
    asm.finish()
}

fn encode(programs: &[Program]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[VERSION, 0, 0, 0]);
    out.extend_from_slice(&audit_arch().to_le_bytes());
    out.extend_from_slice(&(programs.len() as u32).to_le_bytes());
    for p in programs {
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        for i in p {
            out.extend_from_slice(&i.code.to_le_bytes());
            out.push(i.jt);
            out.push(i.jf);
            out.extend_from_slice(&i.k.to_le_bytes());
        }
    }
    out
}

fn decode(b: &[u8]) -> Result<Vec<Program>, SeccompError> {
    let bad = |m: &str| SeccompError::Decode(m.to_string());
    let u32_at = |o: usize| -> Result<u32, SeccompError> {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
            .ok_or_else(|| bad("truncated"))
    };
    if b.len() < 16 || &b[..4] != MAGIC {
        return Err(bad("bad magic"));
    }
    if b[4] != VERSION {
        return Err(bad("unknown version"));
    }
    let arch = u32_at(8)?;
    if arch != audit_arch() {
        return Err(SeccompError::WrongArch {
            expected: audit_arch(),
            found: arch,
        });
    }
    let count = u32_at(12)? as usize;
    if count == 0 || count > 16 {
        return Err(bad("bad program count"));
    }
    let mut off = 16;
    let mut programs = Vec::with_capacity(count);
    for _ in 0..count {
        let n = u32_at(off)? as usize;
        off += 4;
        if n == 0 || n > 4096 {
            return Err(bad("bad program length"));
        }
        let body = b.get(off..off + n * 8).ok_or_else(|| bad("truncated"))?;
        programs.push(
            body.chunks_exact(8)
                .map(|c| {
                    insn(
                        u16::from_le_bytes([c[0], c[1]]),
                        c[2],
                        c[3],
                        u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
                    )
                })
                .collect(),
        );
        off += n * 8;
    }
    if off != b.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(programs)
}

/// Compiles the default filter (a few µs; prefer [`default_filter`], which does it once).
pub fn compile_default_filter() -> Result<BpfBytes, SeccompError> {
    if audit_arch() == 0 {
        return Err(SeccompError::Compile(format!(
            "unsupported architecture {}",
            std::env::consts::ARCH
        )));
    }
    Ok(BpfBytes(encode(&[default_program()?])))
}

/// The default filter, compiled once per process.
pub fn default_filter() -> Result<&'static BpfBytes, SeccompError> {
    static FILTER: OnceLock<Result<BpfBytes, String>> = OnceLock::new();
    match FILTER.get_or_init(|| compile_default_filter().map_err(|e| e.to_string())) {
        Ok(b) => Ok(b),
        Err(e) => Err(SeccompError::Compile(e.clone())),
    }
}

/// Installs a filter received as bytes on every thread of the calling process
/// (`SECCOMP_FILTER_FLAG_TSYNC`); sets `PR_SET_NO_NEW_PRIVS` first (required without
/// `CAP_SYS_ADMIN`). Irreversible.
pub fn apply(bytes: &[u8]) -> Result<(), SeccompError> {
    let programs = decode(bytes)?;
    // SAFETY: plain prctl(2).
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(SeccompError::Install(format!(
            "PR_SET_NO_NEW_PRIVS: {}",
            std::io::Error::last_os_error()
        )));
    }
    for p in programs {
        let prog = libc::sock_fprog {
            len: p.len() as u16,
            filter: p.as_ptr().cast_mut().cast(),
        };
        // SAFETY: seccomp(2) reads `prog` and the instructions it points to, which outlive the
        // call; `Insn` has the layout of `struct sock_filter`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_TSYNC,
                &raw const prog,
            )
        };
        match rc {
            0 => {}
            rc if rc > 0 => {
                return Err(SeccompError::Install(format!(
                    "thread {rc} could not be synchronised (TSYNC)"
                )));
            }
            _ => {
                return Err(SeccompError::Install(
                    std::io::Error::last_os_error().to_string(),
                ));
            }
        }
    }
    Ok(())
}

/// One-line description for the report.
pub fn describe() -> String {
    format!(
        "deny list: {} syscalls + clone(CLONE_NEW*) + ioctl(TIOCSTI) + personality -> EPERM, \
         clone3/x32 -> ENOSYS, foreign arch -> kill; all threads",
        DENIED.len()
    )
}

/// Report line after [`apply`] succeeded.
pub fn report_entry() -> ReportEntry {
    ReportEntry::applied(Mechanism::Seccomp, describe())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_and_round_trips() {
        let f = compile_default_filter().unwrap();
        let progs = decode(f.as_bytes()).unwrap();
        assert_eq!(progs.len(), 1);
        assert!(f.instructions() > DENIED.len());
        let again = BpfBytes::from_bytes(f.clone().into_vec()).unwrap();
        assert_eq!(again, f);
        assert!(std::ptr::eq(
            default_filter().unwrap(),
            default_filter().unwrap()
        ));
    }

    /// Runs a classic BPF program the way the kernel does, on one syscall.
    fn run(prog: &[Insn], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::new();
        data.extend_from_slice(&nr.to_le_bytes());
        data.extend_from_slice(&arch.to_le_bytes());
        data.extend_from_slice(&0u64.to_le_bytes());
        for a in args {
            data.extend_from_slice(&a.to_le_bytes());
        }
        let (mut acc, mut pc, mut steps) = (0u32, 0usize, 0);
        loop {
            let i = prog[pc];
            pc += 1;
            steps += 1;
            assert!(steps < 64, "the search took more than 64 steps");
            let cond = |taken: bool| usize::from(if taken { i.jt } else { i.jf });
            match i.code {
                BPF_LD_W_ABS => {
                    let o = i.k as usize;
                    acc = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
                }
                BPF_JMP_JA => pc += i.k as usize,
                BPF_JMP_JEQ_K => pc += cond(acc == i.k),
                BPF_JMP_JGE_K => pc += cond(acc >= i.k),
                BPF_JMP_JSET_K => pc += cond(acc & i.k != 0),
                BPF_RET_K => return i.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    #[test]
    #[allow(clippy::unnecessary_cast)] // ioctl request constants are u64 on glibc
    fn the_program_decides_every_case() {
        let f = compile_default_filter().unwrap();
        let prog = &decode(f.as_bytes()).unwrap()[0];
        let arch = audit_arch();
        let eperm = RET_ERRNO | libc::EPERM as u32;
        let enosys = RET_ERRNO | libc::ENOSYS as u32;
        let call = |nr: i64, args: [u64; 6]| run(prog, nr as u32, arch, args);
        for (name, nr) in DENIED {
            assert_eq!(call(*nr, [0; 6]), eperm, "{name}");
        }
        // Every other syscall number (up to 600, covering this architecture's table) is
        // allowed, except the ones with argument checks.
        let special = [
            libc::SYS_clone,
            libc::SYS_ioctl,
            libc::SYS_personality,
            libc::SYS_clone3,
        ];
        for nr in 0..600 {
            if DENIED.iter().any(|(_, d)| *d == nr) || special.contains(&nr) {
                continue;
            }
            assert_eq!(call(nr, [0; 6]), RET_ALLOW, "syscall {nr}");
        }
        assert_eq!(call(libc::SYS_clone3, [0; 6]), enosys);
        for flag in NS_CLONE_FLAGS {
            let flags = flag as u64 | libc::SIGCHLD as u64;
            assert_eq!(call(libc::SYS_clone, [flags, 0, 0, 0, 0, 0]), eperm);
        }
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(call(libc::SYS_clone, [thread, 0, 0, 0, 0, 0]), RET_ALLOW);
        let tiocsti = libc::TIOCSTI as u64;
        assert_eq!(call(libc::SYS_ioctl, [0, tiocsti, 0, 0, 0, 0]), eperm);
        assert_eq!(
            call(libc::SYS_ioctl, [0, tiocsti | 1 << 32, 0, 0, 0, 0]),
            eperm,
            "garbage in the upper half of cmd"
        );
        assert_eq!(
            call(libc::SYS_ioctl, [0, libc::TIOCLINUX as u64, 0, 0, 0, 0]),
            eperm
        );
        assert_eq!(
            call(libc::SYS_ioctl, [0, libc::FIONREAD as u64, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            call(libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(call(libc::SYS_personality, [0, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            call(libc::SYS_personality, [0x0040_0000, 0, 0, 0, 0, 0]),
            eperm
        );
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            call(X32_SYSCALL_BIT as i64 | libc::SYS_getpid, [0; 6]),
            enosys,
            "x32"
        );
        assert_eq!(
            run(prog, libc::SYS_getpid as u32, arch ^ 1, [0; 6]),
            RET_KILL_PROCESS,
            "a foreign architecture"
        );
    }

    #[test]
    fn rejects_garbage() {
        let f = compile_default_filter().unwrap().into_vec();
        assert!(BpfBytes::from_bytes(vec![1, 2, 3]).is_err());
        let mut t = f.clone();
        t.pop();
        assert!(BpfBytes::from_bytes(t).is_err());
        let mut a = f.clone();
        a[8] ^= 1;
        assert!(matches!(
            BpfBytes::from_bytes(a),
            Err(SeccompError::WrongArch { .. })
        ));
        let mut x = f;
        x.push(0);
        assert!(BpfBytes::from_bytes(x).is_err());
    }
}
