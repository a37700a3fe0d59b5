//! Namespaces: which `clone()` flags to use, the shared empty network namespace, and the
//! async-signal-safe setup the child runs between `clone()` and `execve()`.
//!
//! * pid, mount, ipc and uts namespaces always (level `Standard`/`Strict`);
//! * a user namespace only when the host is not root (uid/gid mapped to themselves, via a pipe
//!   handshake: the child waits while the parent writes `setgroups`/`uid_map`/`gid_map`);
//! * no network: as root the child `setns()`es into one process-wide, lazily created, empty
//!   network namespace ([`shared_netns`]), which avoids the cost and the long tail of creating
//!   and tearing down a netns per sandbox. A non-root host cannot do that (joining a netns needs
//!   `CAP_SYS_ADMIN` over the user namespace that owns it, and the child's fresh user namespace
//!   has none over the helper's), so non-root sandboxes get their own `CLONE_NEWNET`.
//!
//! Files: `plan.rs` (which flags, probed), `clone.rs` (raw `clone`, the probe), `netns.rs` (the
//! shared netns), `setup.rs` (the parent's side of a child's setup), `child.rs` (the child's
//! side), `idmap.rs` (the user namespace handshake), `caps.rs` (dropping capabilities),
//! `child_error.rs` (what a failed child step reports) and `error.rs` (the parent's errors).

mod caps;
mod child;
mod child_error;
mod clone;
pub(crate) mod error;
mod idmap;
mod netns;
mod plan;
mod setup;
#[cfg(test)]
mod tests;

pub use self::child_error::{ChildError, ChildStep};
pub use self::clone::{probe, raw_clone};
pub use self::error::NamespaceError;
pub use self::netns::shared_netns;
pub use self::plan::{NamespacePlan, clone_flags, is_root, plan};
pub use self::setup::{ChildOptions, ChildSetup, ChildTimings};
