//! seccomp-bpf: the default syscall filter, compiled once in the host, shipped as bytes to the
//! runner, installed there (for all threads, TSYNC) before any app code is loaded.
//!
//! The filter is an allow list: nothing is allowed by default. The policy is data, by name, in
//! `seccomp/policy.rs` (one screen); `tables.rs` has each architecture's syscall numbers;
//! `bpf.rs` assembles one classic BPF program from them (`error.rs` has the errors):
//!
//! - non-native architectures are killed;
//! - on x86_64, the x32 ABI (syscall numbers with bit 30 set) returns `ENOSYS`;
//! - allowed syscalls pass; those with argument checks pass only with allowed arguments:
//!   `clone` without `CLONE_NEW*` flags, `ioctl` other than `TIOCSTI`/`TIOCLINUX`,
//!   `personality` query / `PER_LINUX`, `socket` for `AF_UNIX` (plus `AF_INET`/`AF_INET6` in the
//!   network variant), `socketpair` for `AF_UNIX`; refused arguments give `EPERM`, refused
//!   socket families `EAFNOSUPPORT` (what libc users expect of a family the kernel lacks);
//! - known dangerous syscalls (ptrace, mount, bpf, keyctl, unshare, setns, io_uring, ...) return
//!   `EPERM`;
//! - everything else, including `clone3` (its flags live in memory, so they cannot be checked;
//!   glibc then falls back to `clone`, which is checked) and numbers beyond the table, returns
//!   `ENOSYS`, as on a kernel that lacks the call.
//!
//! There are two variants, without and with network ([`default_filter`]`(network)`); they
//! differ only in the `socket` families.
//!
//! Wire format of [`BpfBytes`]: `b"SBPF"`, version `2`, flags (bit 0: network variant), 2 zero
//! bytes, audit arch (u32 LE), the policy's allowed and `EPERM` counts (u16 LE each, for the
//! report, so the runner need not resolve the policy again), program count (u32 LE), then per
//! program its instruction count (u32 LE) and 8 bytes per instruction (code u16 LE, jt u8, jf
//! u8, k u32 LE).

mod bpf;
pub(crate) mod error;
mod policy;
mod tables;

use std::io;
use std::sync::OnceLock;

use self::bpf::{Program, insn};
pub use self::error::{CompileError, DecodeError, SeccompError};
use self::tables::Arch;
use crate::report::{Mechanism, ReportEntry};

const MAGIC: &[u8; 4] = b"SBPF";
const VERSION: u8 = 2;
const FLAG_NETWORK: u8 = 1;

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
            .map(|d| d.programs.iter().map(Vec::len).sum())
            .unwrap_or(0)
    }

    /// Whether this is the network variant (`socket` may create `AF_INET`/`AF_INET6`).
    pub fn network(&self) -> bool {
        self.0[5] & FLAG_NETWORK != 0
    }
}

fn native() -> Result<&'static Arch, CompileError> {
    tables::native().ok_or(CompileError::UnsupportedArch {
        arch: std::env::consts::ARCH,
    })
}

fn audit_arch() -> u32 {
    tables::native().map_or(0, |a| a.audit)
}

/// A filter as decoded from [`BpfBytes`].
struct Decoded {
    network: bool,
    allowed: u16,
    eperm: u16,
    programs: Vec<Program>,
}

fn encode(arch: &Arch, network: bool, programs: &[Program]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    let flags = if network { FLAG_NETWORK } else { 0 };
    out.extend_from_slice(&[VERSION, flags, 0, 0]);
    out.extend_from_slice(&arch.audit.to_le_bytes());
    let (allowed, eperm) = bpf::counts(arch);
    out.extend_from_slice(&(allowed as u16).to_le_bytes());
    out.extend_from_slice(&(eperm as u16).to_le_bytes());
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

fn decode(b: &[u8]) -> Result<Decoded, SeccompError> {
    let u32_at = |o: usize| -> Result<u32, DecodeError> {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
            .ok_or(DecodeError::Truncated)
    };
    if b.len() < 20 || &b[..4] != MAGIC {
        return Err(DecodeError::BadMagic.into());
    }
    if b[4] != VERSION {
        return Err(DecodeError::UnknownVersion { found: b[4] }.into());
    }
    if b[5] & !FLAG_NETWORK != 0 || b[6] != 0 || b[7] != 0 {
        return Err(DecodeError::UnknownFlags.into());
    }
    let arch = u32_at(8)?;
    if arch != audit_arch() {
        return Err(SeccompError::WrongArch {
            expected: audit_arch(),
            found: arch,
        });
    }
    let counts = u32_at(12)?;
    let count = u32_at(16)? as usize;
    if count == 0 || count > 16 {
        return Err(DecodeError::BadProgramCount { count }.into());
    }
    let mut off = 20;
    let mut programs = Vec::with_capacity(count);
    for _ in 0..count {
        let n = u32_at(off)? as usize;
        off += 4;
        if n == 0 || n > 4096 {
            return Err(DecodeError::BadProgramLength { len: n }.into());
        }
        let body = b.get(off..off + n * 8).ok_or(DecodeError::Truncated)?;
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
        return Err(DecodeError::TrailingBytes.into());
    }
    Ok(Decoded {
        network: b[5] & FLAG_NETWORK != 0,
        allowed: counts as u16,
        eperm: (counts >> 16) as u16,
        programs,
    })
}

/// Compiles the default filter for this architecture, without or with network (some tens of
/// µs; prefer [`default_filter`], which does it once per variant).
pub fn compile_default_filter(network: bool) -> Result<BpfBytes, SeccompError> {
    Ok(compile(network)?)
}

fn compile(network: bool) -> Result<BpfBytes, CompileError> {
    let arch = native()?;
    let program = bpf::program(arch, network)?;
    Ok(BpfBytes(encode(arch, network, &[program])))
}

/// The default filter without or with network, each compiled once per process.
pub fn default_filter(network: bool) -> Result<&'static BpfBytes, SeccompError> {
    // Memo of a pure function of `network` and the architecture: written once, never changed.
    // It is a static because callers get a `&'static BpfBytes`.
    static FILTERS: [OnceLock<Result<BpfBytes, CompileError>>; 2] =
        [OnceLock::new(), OnceLock::new()];
    let cell = &FILTERS[usize::from(network)];
    match cell.get_or_init(|| compile(network)) {
        Ok(b) => Ok(b),
        Err(e) => Err(e.clone().into()),
    }
}

/// Installs a filter received as bytes on every thread of the calling process
/// (`SECCOMP_FILTER_FLAG_TSYNC`); sets `PR_SET_NO_NEW_PRIVS` first (required without
/// `CAP_SYS_ADMIN`). Irreversible. Returns the report line.
pub fn apply(bytes: &[u8]) -> Result<ReportEntry, SeccompError> {
    let Decoded {
        network,
        allowed,
        eperm,
        programs,
    } = decode(bytes)?;
    // SAFETY: plain prctl(2).
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        let source = io::Error::last_os_error();
        return Err(SeccompError::NoNewPrivs { source });
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
            rc if rc > 0 => return Err(SeccompError::Tsync { thread: rc }),
            _ => {
                let source = io::Error::last_os_error();
                return Err(SeccompError::Install { source });
            }
        }
    }
    Ok(ReportEntry::applied(
        Mechanism::Seccomp,
        description(network, allowed.into(), eperm.into()),
    ))
}

/// One-line description of the filter variant for the report, with this architecture's counts.
pub fn describe(network: bool) -> String {
    let (allowed, eperm) = tables::native().map_or((0, 0), bpf::counts);
    description(network, allowed, eperm)
}

fn description(network: bool, allowed: usize, eperm: usize) -> String {
    let families = if network {
        "AF_UNIX/AF_INET/AF_INET6"
    } else {
        "AF_UNIX only"
    };
    format!(
        "allow-list: {allowed} syscalls (socket: {families}; socketpair: AF_UNIX; clone, ioctl, \
         personality argument-checked), others -> ENOSYS, {eperm} -> EPERM, foreign arch -> \
         kill; all threads"
    )
}

/// Report line for a filter variant that was applied.
pub fn report_entry(network: bool) -> ReportEntry {
    ReportEntry::applied(Mechanism::Seccomp, describe(network))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_and_round_trips() {
        for network in [false, true] {
            let f = compile_default_filter(network).unwrap();
            let d = decode(f.as_bytes()).unwrap();
            assert_eq!((d.network, f.network()), (network, network));
            assert_eq!(d.programs.len(), 1);
            let (allowed, eperm) = bpf::counts(native().unwrap());
            assert_eq!((d.allowed.into(), d.eperm.into()), (allowed, eperm));
            let again = BpfBytes::from_bytes(f.clone().into_vec()).unwrap();
            assert_eq!(again, f);
            assert!(std::ptr::eq(
                default_filter(network).unwrap(),
                default_filter(network).unwrap()
            ));
            assert_eq!(default_filter(network).unwrap(), &f);
        }
        assert_ne!(
            default_filter(false).unwrap(),
            default_filter(true).unwrap()
        );
    }

    #[test]
    fn describes_counts() {
        let (allowed, eperm) = bpf::counts(native().unwrap());
        assert!(allowed > 250 && eperm > 40, "{allowed} {eperm}");
        let d = describe(false);
        assert!(d.starts_with(&format!(
            "allow-list: {allowed} syscalls (socket: AF_UNIX only"
        )));
        assert!(d.contains(&format!("{eperm} -> EPERM")), "{d}");
        assert!(describe(true).contains("AF_INET6"));
        assert_eq!(report_entry(true).mechanism, Mechanism::Seccomp);
    }

    #[test]
    fn rejects_garbage() {
        let f = compile_default_filter(false).unwrap().into_vec();
        let e = BpfBytes::from_bytes(vec![1, 2, 3]).unwrap_err();
        assert_eq!(e.to_string(), "decode seccomp filter: bad magic");
        let mut t = f.clone();
        t.pop();
        assert!(BpfBytes::from_bytes(t).is_err());
        let mut a = f.clone();
        a[8] ^= 1;
        assert!(matches!(
            BpfBytes::from_bytes(a),
            Err(SeccompError::WrongArch { .. })
        ));
        let mut v = f.clone();
        v[4] = 1;
        assert!(BpfBytes::from_bytes(v).is_err(), "version 1");
        let mut g = f.clone();
        g[5] = 2;
        assert!(BpfBytes::from_bytes(g).is_err(), "unknown flag");
        let mut x = f;
        x.push(0);
        assert!(BpfBytes::from_bytes(x).is_err());
    }
}
