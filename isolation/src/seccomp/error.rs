//! The seccomp module's error types. A leaf, so the crate error ([`crate::error`]) can wrap
//! them without importing the filter logic.

use std::io;

/// Compiling, decoding or installing a filter failed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The filter could not be assembled (unsupported architecture, a bad policy name, or a
    /// jump too far).
    #[error("compile seccomp filter: {0}")]
    Compile(#[from] CompileError),
    /// The bytes are not a filter produced by [`super::compile_default_filter`].
    #[error("decode seccomp filter: {0}")]
    Decode(#[from] DecodeError),
    /// The filter was compiled for another architecture.
    #[error("seccomp filter is for audit arch {found:#x}, this process is {expected:#x}")]
    WrongArch {
        /// This process's audit arch.
        expected: u32,
        /// The filter's.
        found: u32,
    },
    /// `prctl(PR_SET_NO_NEW_PRIVS)`, which installing a filter needs, failed.
    #[error("install seccomp filter: PR_SET_NO_NEW_PRIVS: {source}")]
    NoNewPrivs {
        /// The OS error.
        source: io::Error,
    },
    /// `seccomp(SECCOMP_SET_MODE_FILTER, TSYNC)` could not synchronise a thread.
    #[error("install seccomp filter: thread {thread} could not be synchronised (TSYNC)")]
    Tsync {
        /// The thread that kept the filter from being installed.
        thread: libc::c_long,
    },
    /// `seccomp(SECCOMP_SET_MODE_FILTER, TSYNC)` failed.
    #[error("install seccomp filter: {source}")]
    Install {
        /// The OS error.
        source: io::Error,
    },
}

/// Why the policy could not be assembled into a program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// No syscall table for this architecture.
    #[error("unsupported architecture {arch}")]
    UnsupportedArch {
        /// `std::env::consts::ARCH`.
        arch: &'static str,
    },
    /// The policy names a syscall no architecture's table has.
    #[error("unknown syscall {name}")]
    UnknownSyscall {
        /// The name.
        name: &'static str,
    },
    /// The policy names a syscall twice.
    #[error("{name} listed twice")]
    ListedTwice {
        /// The name.
        name: &'static str,
    },
    /// A jump to a label that was never placed (an assembler bug).
    #[error("jump to {label}, which is nowhere")]
    JumpNowhere {
        /// The label.
        label: String,
    },
    /// A jump backwards, which classic BPF cannot do (an assembler bug).
    #[error("backward jump to {label}")]
    BackwardJump {
        /// The label.
        label: String,
    },
    /// A conditional jump further than 255 instructions.
    #[error("jump of {distance} > 255")]
    JumpTooFar {
        /// The distance in instructions.
        distance: u32,
    },
}

/// Why bytes are not a serialized filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Too short, or not starting with `SBPF`.
    #[error("bad magic")]
    BadMagic,
    /// A format version this crate does not read.
    #[error("unknown version {found}")]
    UnknownVersion {
        /// The version in the bytes.
        found: u8,
    },
    /// Flag bits this crate does not know.
    #[error("unknown flags")]
    UnknownFlags,
    /// The bytes end inside a field or a program.
    #[error("truncated")]
    Truncated,
    /// No program, or more than 16.
    #[error("bad program count {count}")]
    BadProgramCount {
        /// The count in the bytes.
        count: usize,
    },
    /// An empty program, or one over 4096 instructions.
    #[error("bad program length {len}")]
    BadProgramLength {
        /// The length in the bytes.
        len: usize,
    },
    /// Bytes after the last program.
    #[error("trailing bytes")]
    TrailingBytes,
}
