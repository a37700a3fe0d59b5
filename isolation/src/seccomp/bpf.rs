//! The policy assembled into one classic BPF program for one architecture.
//!
//! ```text
//! arch != ours          -> kill
//! nr has the x32 bit    -> ENOSYS (x86_64)
//! binary search over number ranges -> ALLOW | EPERM | ENOSYS | one of the argument checks
//! argument checks (clone, ioctl, personality, socket, socketpair) -> ALLOW | EPERM | EAFNOSUPPORT
//! ```
//!
//! The search is over ranges of consecutive numbers with the same verdict, not over single
//! numbers: ~370 table entries become a few dozen ranges (the whole x86_64 program is ~105
//! instructions), and every syscall's path is about ten instructions. That matters twice: the
//! kernel builds its per-syscall action cache by running the filter for every syscall number
//! when it is installed, and every syscall the cache cannot answer (those with argument checks)
//! runs it again.

use std::collections::HashMap;

use super::error::CompileError;
use super::policy::{self, Rule};
use super::tables::Arch;

// Classic BPF opcodes (linux/bpf_common.h) and seccomp return values.
/// `BPF_LD | BPF_W | BPF_ABS`: load a 32-bit word of `struct seccomp_data`.
pub(super) const BPF_LD_W_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JA`: jump always.
pub(super) const BPF_JMP_JA: u16 = 0x05;
/// `BPF_JMP | BPF_JEQ | BPF_K`: jump if equal to the constant.
pub(super) const BPF_JMP_JEQ_K: u16 = 0x15;
/// `BPF_JMP | BPF_JGE | BPF_K`: jump if greater than or equal to the constant.
pub(super) const BPF_JMP_JGE_K: u16 = 0x35;
/// `BPF_JMP | BPF_JSET | BPF_K`: jump if any bit of the constant is set.
pub(super) const BPF_JMP_JSET_K: u16 = 0x45;
/// `BPF_RET | BPF_K`: return the constant.
pub(super) const BPF_RET_K: u16 = 0x06;
/// `SECCOMP_RET_KILL_PROCESS`.
pub(super) const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// `SECCOMP_RET_ALLOW`.
pub(super) const RET_ALLOW: u32 = 0x7fff_0000;
/// `SECCOMP_RET_ERRNO` (or the errno into its low 16 bits).
pub(super) const RET_ERRNO: u32 = 0x0005_0000;
/// `__X32_SYSCALL_BIT`: x32 ABI syscall numbers on x86_64.
pub(super) const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// Offsets in `struct seccomp_data`: nr, arch, instruction pointer, then six u64 arguments. The
// low 32 bits of an argument come first on the little-endian targets we support; the arguments
// checked here are `int` or `unsigned int` in the kernel, which ignores the high 32 bits, so
// the low word is exactly what the kernel acts on.
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
pub(super) struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// A classic BPF program.
pub(super) type Program = Vec<Insn>;

/// One instruction.
pub(super) fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

/// Where a jump goes: the next instruction or a named place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum To {
    Next,
    Allow,
    Eperm,
    Enosys,
    Eafnosupport,
    Kill,
    /// The argument check of a [`Rule`].
    Check(Rule),
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

    /// An unconditional jump (`finish` reads its target from `jt`).
    fn goto(&mut self, to: To) {
        self.code.push((BPF_JMP_JA, to, To::Next, 0));
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

    /// `ranges` are `(first number, verdict)`, sorted, each running up to the next one's first
    /// number (the last one: to the end); the accumulator is known to lie in them.
    fn search(&mut self, ranges: &[(u32, To)]) {
        match ranges {
            [] => unreachable!("the ranges cover every number"),
            [(_, to)] => self.goto(*to),
            _ if ranges.len() <= LEAF => {
                // nr >= start of the last range? Its verdict. Else the one before, ...
                for i in (1..ranges.len()).rev() {
                    let miss = if i == 1 { ranges[0].1 } else { To::Next };
                    self.jump(BPF_JMP_JGE_K, ranges[i].0, ranges[i].1, miss);
                }
            }
            _ => {
                let (low, high) = ranges.split_at(ranges.len() / 2);
                let right = self.node();
                self.jump(BPF_JMP_JGE_K, high[0].0, right, To::Next);
                self.search(low);
                self.here(right);
                self.search(high);
            }
        }
    }

    fn finish(self) -> Result<Program, CompileError> {
        let place = |i: usize, to: To| -> Result<u32, CompileError> {
            match to {
                To::Next => Ok(0),
                to => {
                    let label = || format!("{to:?}");
                    let target = *self
                        .at
                        .get(&to)
                        .ok_or_else(|| CompileError::JumpNowhere { label: label() })?;
                    target
                        .checked_sub(i + 1)
                        .map(|d| d as u32)
                        .ok_or_else(|| CompileError::BackwardJump { label: label() })
                }
            }
        };
        let short = |distance: u32| -> Result<u8, CompileError> {
            u8::try_from(distance).map_err(|_| CompileError::JumpTooFar { distance })
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

/// What the policy says about each syscall number `arch` has: `(nr, verdict)`, sorted. Every
/// name must be in some architecture's table and in the policy only once.
fn verdicts(arch: &Arch) -> Result<Vec<(u32, To)>, CompileError> {
    let named = policy::ALLOW
        .iter()
        .flat_map(|(_, names)| names.iter().map(|&n| (n, To::Allow)))
        .chain(policy::RULES.iter().map(|&(n, rule)| {
            let to = if rule == Rule::Enosys {
                To::Enosys
            } else {
                To::Check(rule)
            };
            (n, to)
        }))
        .chain(policy::EPERM.iter().map(|&n| (n, To::Eperm)));
    let all: HashMap<&str, u32> = super::tables::ALL
        .iter()
        .flat_map(|a| a.table.iter().copied())
        .collect();
    let here: HashMap<&str, u32> = arch.table.iter().copied().collect();
    let mut seen = HashMap::new();
    let mut out = Vec::new();
    for (name, to) in named {
        if !all.contains_key(name) {
            return Err(CompileError::UnknownSyscall { name });
        }
        if seen.insert(name, ()).is_some() {
            return Err(CompileError::ListedTwice { name });
        }
        if let Some(&nr) = here.get(name) {
            out.push((nr, to));
        }
    }
    out.sort_unstable_by_key(|&(nr, _)| nr);
    Ok(out)
}

/// `(allowed, EPERM)` syscall counts on `arch`; allowed includes those with argument checks.
pub(super) fn counts(arch: &Arch) -> (usize, usize) {
    let v = verdicts(arch).unwrap_or_default();
    let n = |f: fn(&To) -> bool| v.iter().filter(|(_, to)| f(to)).count();
    (
        n(|to| matches!(to, To::Allow | To::Check(_))),
        n(|to| *to == To::Eperm),
    )
}

/// The policy as one program for `arch`; `network` lets `socket` create `AF_INET`/`AF_INET6`.
#[allow(clippy::unnecessary_cast)] // ioctl request constants are u64 on glibc, i32 on musl
pub(super) fn program(arch: &Arch, network: bool) -> Result<Program, CompileError> {
    // Ranges of consecutive numbers with one verdict; gaps (and all above the table) ENOSYS.
    let mut ranges: Vec<(u32, To)> = Vec::new();
    let mut push = |start: u32, to: To| {
        if ranges.last().is_none_or(|&(_, last)| last != to) {
            ranges.push((start, to));
        }
    };
    let mut next = 0;
    for (nr, to) in verdicts(arch)? {
        if nr > next {
            push(next, To::Enosys);
        }
        push(nr, to);
        next = nr + 1;
    }
    push(next, To::Enosys);

    let mut asm = Asm::default();
    asm.load(OFF_ARCH);
    asm.jump(BPF_JMP_JEQ_K, arch.audit, To::Next, To::Kill);
    asm.load(OFF_NR);
    if arch.x32_bit {
        // Every x32 number is >= the bit (and every number >= it is unknown anyway).
        asm.jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, To::Enosys, To::Next);
    }
    asm.search(&ranges);
    // Argument checks (every leaf of the search ends in a jump, so nothing falls into them).
    // clone(flags, ...): flags is argument 0 on x86_64 and aarch64.
    let ns_flags = policy::NS_CLONE_FLAGS
        .iter()
        .fold(0u32, |all, &f| all | f as u32);
    asm.here(To::Check(Rule::CloneNoNamespaces));
    asm.load(off_arg_low(0));
    asm.jump(BPF_JMP_JSET_K, ns_flags, To::Eperm, To::Allow);
    // ioctl(fd, TIOCSTI/TIOCLINUX): the kernel truncates `cmd` to 32 bits, so compare the low
    // 32 bits only -- the CVE-2019-10063 lesson. (Same numbers on x86_64 and aarch64.)
    asm.here(To::Check(Rule::IoctlNoTiocsti));
    asm.load(off_arg_low(1));
    asm.jump(BPF_JMP_JEQ_K, libc::TIOCSTI as u32, To::Eperm, To::Next);
    asm.jump(BPF_JMP_JEQ_K, libc::TIOCLINUX as u32, To::Eperm, To::Allow);
    // personality(): allow the query (0xffffffff) and PER_LINUX (0) only.
    asm.here(To::Check(Rule::PersonalityLinux));
    asm.load(off_arg_low(0));
    asm.jump(BPF_JMP_JEQ_K, 0xffff_ffff, To::Allow, To::Next);
    asm.jump(BPF_JMP_JEQ_K, 0, To::Allow, To::Eperm);
    // socket(family, ..) / socketpair(family, ..): `int family`, so the low word decides.
    let families = if network {
        policy::FAMILIES_NETWORK
    } else {
        policy::FAMILIES_LOCAL
    };
    for (rule, families) in [
        (Rule::SocketFamily, families),
        (Rule::SocketpairUnix, policy::FAMILIES_LOCAL),
    ] {
        asm.here(To::Check(rule));
        asm.load(off_arg_low(0));
        for (i, &family) in families.iter().enumerate() {
            let miss = if i + 1 == families.len() {
                To::Eafnosupport
            } else {
                To::Next
            };
            asm.jump(BPF_JMP_JEQ_K, family as u32, To::Allow, miss);
        }
    }
    // The verdicts, last: every jump is forward.
    asm.here(To::Allow);
    asm.ret(RET_ALLOW);
    asm.here(To::Eperm);
    asm.ret(RET_ERRNO | libc::EPERM as u32);
    asm.here(To::Enosys);
    asm.ret(RET_ERRNO | libc::ENOSYS as u32);
    asm.here(To::Eafnosupport);
    asm.ret(RET_ERRNO | libc::EAFNOSUPPORT as u32);
    asm.here(To::Kill);
    asm.ret(RET_KILL_PROCESS);
    asm.finish()
}

#[cfg(test)]
mod tests {
    use super::super::tables::{AARCH64, ALL, X86_64};
    use super::*;

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
            assert!(steps <= 16, "a syscall took more than 16 steps");
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

    const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = RET_ERRNO | libc::ENOSYS as u32;
    const EAFNOSUPPORT: u32 = RET_ERRNO | libc::EAFNOSUPPORT as u32;

    #[test]
    fn every_policy_name_is_known_and_listed_once() {
        for arch in ALL {
            verdicts(arch).unwrap();
        }
        // Names each architecture lacks, to catch a policy entry that resolves nowhere useful.
        for name in ["open", "fork", "poll", "arch_prctl", "epoll_wait", "stat"] {
            assert!(
                X86_64.nr(name).is_some() && AARCH64.nr(name).is_none(),
                "{name}"
            );
        }
        let (x, a) = (counts(&X86_64), counts(&AARCH64));
        eprintln!("x86_64: {x:?}, aarch64: {a:?} (allowed, EPERM)");
        assert!(x.0 > a.0 && a.0 > 200, "{x:?} {a:?}");
    }

    /// Every case on one architecture's program (the interpreter is the same for all).
    #[allow(clippy::unnecessary_cast)] // ioctl request constants are u64 on glibc
    fn decides_every_case(arch: &Arch, network: bool) {
        let prog = program(arch, network).unwrap();
        assert!(prog.len() < 256, "{} instructions", prog.len());
        let name = arch.name;
        let nr = |n: &str| arch.nr(n).unwrap_or_else(|| panic!("{name}: no {n}"));
        let call = |n: &str, args: [u64; 6]| run(&prog, nr(n), arch.audit, args);
        let mut decided = std::collections::HashSet::new();
        for (_, names) in policy::ALLOW {
            for &n in names.iter().filter(|n| arch.nr(n).is_some()) {
                assert_eq!(call(n, [0; 6]), RET_ALLOW, "{name}: {n}");
                decided.insert(nr(n));
            }
        }
        for &n in policy::EPERM.iter().filter(|n| arch.nr(n).is_some()) {
            assert_eq!(call(n, [0; 6]), EPERM, "{name}: {n}");
            decided.insert(nr(n));
        }
        for &(n, _) in policy::RULES {
            decided.insert(nr(n));
        }
        // Every other number in and far beyond the table: ENOSYS.
        let others = (0..1100).chain([0xffff, 0x3fff_ffff, 0x7fff_ffff, u32::MAX]);
        for n in others.filter(|n| !decided.contains(n)) {
            assert_eq!(run(&prog, n, arch.audit, [0; 6]), ENOSYS, "{name}: {n}");
        }
        assert!(!decided.contains(&1000));
        assert_eq!(call("clone3", [0; 6]), ENOSYS);
        for flag in policy::NS_CLONE_FLAGS {
            let flags = flag as u64 | libc::SIGCHLD as u64;
            assert_eq!(
                call("clone", [flags, 0, 0, 0, 0, 0]),
                EPERM,
                "{name}: {flag:#x}"
            );
        }
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(call("clone", [thread, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            call("clone", [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        let tiocsti = libc::TIOCSTI as u64;
        assert_eq!(call("ioctl", [0, tiocsti, 0, 0, 0, 0]), EPERM);
        assert_eq!(
            call("ioctl", [0, tiocsti | 1 << 32, 0, 0, 0, 0]),
            EPERM,
            "garbage in the upper half of cmd"
        );
        assert_eq!(
            call("ioctl", [0, libc::TIOCLINUX as u64, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(
            call("ioctl", [0, libc::FIONREAD as u64, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(call("personality", [0xffff_ffff, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(call("personality", [0, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(call("personality", [0x0040_0000, 0, 0, 0, 0, 0]), EPERM);
        // Socket families. The kernel takes `int family`: the high 32 bits of the register are
        // ignored by it and by the filter alike, so they can neither smuggle a refused family
        // past the filter nor get an allowed one refused.
        let inet = if network { RET_ALLOW } else { EAFNOSUPPORT };
        let af = |f: i32| f as u32 as u64;
        for high in [0, 1 << 32, 0xffff_ffff << 32] {
            let sock = |f: i32| {
                call(
                    "socket",
                    [high | af(f), libc::SOCK_STREAM as u64, 0, 0, 0, 0],
                )
            };
            let pair = |f: i32| call("socketpair", [high | af(f), 1, 0, 0, 0, 0]);
            assert_eq!(sock(libc::AF_UNIX), RET_ALLOW, "{name}: AF_UNIX");
            assert_eq!(pair(libc::AF_UNIX), RET_ALLOW, "{name}: socketpair AF_UNIX");
            assert_eq!(sock(libc::AF_INET), inet, "{name}: AF_INET");
            assert_eq!(sock(libc::AF_INET6), inet, "{name}: AF_INET6");
            assert_eq!(
                pair(libc::AF_INET),
                EAFNOSUPPORT,
                "{name}: socketpair AF_INET"
            );
            for f in [
                libc::AF_NETLINK,
                libc::AF_VSOCK,
                libc::AF_PACKET,
                libc::AF_ALG,
                libc::AF_BLUETOOTH,
                libc::AF_UNSPEC,
                -1,
            ] {
                assert_eq!(sock(f), EAFNOSUPPORT, "{name}: socket family {f}");
                assert_eq!(pair(f), EAFNOSUPPORT, "{name}: socketpair family {f}");
            }
        }
        if arch.x32_bit {
            let getpid = nr("getpid");
            let x32 = run(&prog, X32_SYSCALL_BIT | getpid, arch.audit, [0; 6]);
            assert_eq!(x32, ENOSYS, "x32");
        }
        for other in ALL.iter().filter(|a| a.audit != arch.audit) {
            let r = run(&prog, nr("getpid"), other.audit, [0; 6]);
            assert_eq!(r, RET_KILL_PROCESS, "{name}: {} calls", other.name);
        }
        let r = run(&prog, nr("getpid"), arch.audit ^ 1, [0; 6]);
        assert_eq!(r, RET_KILL_PROCESS, "a foreign architecture");
    }

    #[test]
    fn x86_64_program_decides_every_case() {
        decides_every_case(&X86_64, false);
        decides_every_case(&X86_64, true);
    }

    #[test]
    fn aarch64_program_decides_every_case() {
        decides_every_case(&AARCH64, false);
        decides_every_case(&AARCH64, true);
    }

    /// Numbers are per architecture: x86_64's `socket` (41) is `pivot_root` on aarch64.
    #[test]
    fn numbers_are_per_arch() {
        assert_eq!(X86_64.nr("open"), Some(2));
        assert_eq!(AARCH64.nr("io_submit"), Some(2));
        assert_eq!(X86_64.nr("socket"), Some(41));
        assert_eq!(AARCH64.nr("socket"), Some(198));
        let prog = program(&AARCH64, false).unwrap();
        let af_inet = libc::AF_INET as u64;
        assert_eq!(
            run(&prog, 198, AARCH64.audit, [af_inet, 1, 0, 0, 0, 0]),
            EAFNOSUPPORT
        );
        assert_eq!(AARCH64.nr("pivot_root"), Some(41));
        assert_eq!(
            run(&prog, 41, AARCH64.audit, [af_inet, 1, 0, 0, 0, 0]),
            EPERM
        );
    }
}
