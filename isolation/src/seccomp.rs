//! seccomp-bpf: the default syscall filter, compiled once in the host, shipped as bytes to the
//! runner, installed there (for all threads, TSYNC) before any app code is loaded.
//!
//! The filter is a deny list (default allow), made of two BPF programs:
//!
//! 1. compiled with `seccompiler`: non-native architectures are killed; [`DENIED`] syscalls,
//!    `clone` with any `CLONE_NEW*` flag, `ioctl(TIOCSTI|TIOCLINUX)` and `personality` other than
//!    a query / `PER_LINUX` return `EPERM`;
//! 2. hand-written: `clone3` returns `ENOSYS` (its flags live in memory, so they cannot be
//!    checked; glibc then falls back to `clone`, which is checked), and on x86_64 the x32 ABI
//!    (syscall numbers with bit 30 set) returns `ENOSYS`, so it cannot bypass the deny list.
//!
//! When several filters match, the kernel keeps the strictest action, so `EPERM` from 1 wins over
//! `ALLOW` from 2 and `ENOSYS` from 2 over `ALLOW` from 1. The runner can still fork, exec and
//! spawn threads.
//!
//! Wire format of [`BpfBytes`]: `b"SBPF"`, version `1`, 3 zero bytes, audit arch (u32 LE),
//! program count (u32 LE), then per program its instruction count (u32 LE) and 8 bytes per
//! instruction (code u16 LE, jt u8, jf u8, k u32 LE).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

use crate::report::{Mechanism, ReportEntry};

/// Compiling, decoding or installing a filter failed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// seccompiler refused the rules.
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
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

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

fn target_arch() -> Result<TargetArch, SeccompError> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|e| SeccompError::Compile(e.to_string()))
}

fn audit_arch() -> u32 {
    match std::env::consts::ARCH {
        "x86_64" => 62 | 0x8000_0000 | 0x4000_0000,
        "aarch64" => 183 | 0x8000_0000 | 0x4000_0000,
        "riscv64" => 243 | 0x8000_0000 | 0x4000_0000,
        _ => 0,
    }
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .map_err(|e| SeccompError::Compile(e.to_string()))
}

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(conds).map_err(|e| SeccompError::Compile(e.to_string()))
}

#[allow(clippy::unnecessary_cast)] // ioctl request constants are u64 on glibc, i32 on musl
fn deny_program() -> Result<BpfProgram, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (_, nr) in DENIED {
        rules.insert(*nr, Vec::new());
    }
    // clone(flags, ...): flags is argument 0 on x86_64, aarch64 and riscv64. A rule chain is an
    // OR; each rule is "this CLONE_NEW* bit is set".
    let clone_rules = NS_CLONE_FLAGS
        .iter()
        .map(|&f| rule(vec![cond(0, SeccompCmpOp::MaskedEq(f as u64), f as u64)?]))
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    // ioctl(fd, TIOCSTI/TIOCLINUX): the kernel truncates `cmd` to 32 bits, so compare the low
    // 32 bits only (Dword) -- the CVE-2019-10063 lesson.
    rules.insert(
        libc::SYS_ioctl,
        vec![
            rule(vec![cond(1, SeccompCmpOp::Eq, libc::TIOCSTI as u64)?])?,
            rule(vec![cond(1, SeccompCmpOp::Eq, libc::TIOCLINUX as u64)?])?,
        ],
    );
    // personality(): allow the query (0xffffffff) and PER_LINUX (0) only.
    rules.insert(
        libc::SYS_personality,
        vec![rule(vec![
            cond(0, SeccompCmpOp::Ne, 0xffff_ffff)?,
            cond(0, SeccompCmpOp::Ne, 0)?,
        ])?],
    );
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        target_arch()?,
    )
    .map_err(|e| SeccompError::Compile(e.to_string()))?;
    BpfProgram::try_from(filter).map_err(|e| SeccompError::Compile(e.to_string()))
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

fn enosys_program() -> BpfProgram {
    let enosys = RET_ERRNO | libc::ENOSYS as u32;
    #[allow(unused_mut)]
    let mut p = vec![insn(BPF_LD_W_ABS, 0, 0, 0)]; // A = seccomp_data.nr
    #[cfg(target_arch = "x86_64")]
    p.push(insn(BPF_JMP_JGE_K, 2, 0, X32_SYSCALL_BIT)); // x32 -> ENOSYS
    #[cfg(not(target_arch = "x86_64"))]
    p.push(insn(BPF_JMP_JGE_K, 2, 0, u32::MAX)); // never true: keeps the jump offsets
    p.push(insn(BPF_JMP_JEQ_K, 1, 0, libc::SYS_clone3 as u32)); // clone3 -> ENOSYS
    p.push(insn(BPF_RET_K, 0, 0, RET_ALLOW));
    p.push(insn(BPF_RET_K, 0, 0, enosys));
    p
}

fn encode(programs: &[BpfProgram]) -> Vec<u8> {
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

fn decode(b: &[u8]) -> Result<Vec<BpfProgram>, SeccompError> {
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

/// Compiles the default filter (about 20 µs in release builds; prefer [`default_filter`],
/// which does it once).
pub fn compile_default_filter() -> Result<BpfBytes, SeccompError> {
    if audit_arch() == 0 {
        return Err(SeccompError::Compile(format!(
            "unsupported architecture {}",
            std::env::consts::ARCH
        )));
    }
    Ok(BpfBytes(encode(&[deny_program()?, enosys_program()])))
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
    for p in decode(bytes)? {
        seccompiler::apply_filter_all_threads(&p)
            .map_err(|e| SeccompError::Install(e.to_string()))?;
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
        assert_eq!(progs.len(), 2);
        assert_eq!(progs[1].len(), 5);
        assert!(f.instructions() > DENIED.len());
        let again = BpfBytes::from_bytes(f.clone().into_vec()).unwrap();
        assert_eq!(again, f);
        assert!(std::ptr::eq(
            default_filter().unwrap(),
            default_filter().unwrap()
        ));
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
