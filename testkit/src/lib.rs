//! Test support shared by the workspace's tests and the bench, with no dependency on the
//! product crates (so that every crate can take it as a dev-dependency):
//!
//! * [`skip`]: a test that cannot run here says so, in the format the scripts count;
//! * [`wait`]: the one way to wait for a condition (sync and async), never a bare sleep;
//! * [`scratch`]: unique ids and scratch directories;
//! * [`proc`]: processes: liveness, trees, `/proc` fields, children stopped on drop;
//! * [`cgroup`]: cgroup v2 detection, a process's cgroups, the tests' cgroup parent;
//! * [`http`]: a minimal HTTP/1.1 request reader and responder for stand-in servers.

pub mod cgroup;
pub mod http;
pub mod proc;
pub mod scratch;
pub mod skip;
pub mod wait;

pub use cgroup::cgroup_v2;
pub use proc::{ChildGuard, alive, is_root, tree};
pub use scratch::{scratch, scratch_with_mode, unique_id};
pub use skip::skip;
pub use wait::{wait_until, wait_until_async};
