//! The e2e package's library: everything its test binaries (`tests/*/main.rs`) and its helper
//! binaries (`src/bin`) share, compiled once instead of once per test binary. What needs no
//! product crate (skips, waiting, scratch dirs, processes, cgroups) is in `testkit`; this
//! library adds what needs the product: the binaries under test, the test apps, managers,
//! isolation reports, and a real `host serve`.

pub mod apps;
pub mod bins;
pub mod manager;
pub mod report;
pub mod serve;

pub use testkit::{
    alive, cgroup_v2, is_root, scratch, scratch_with_mode, skip, tree, wait_until, wait_until_async,
};

/// What most test modules use: `use e2e::prelude::*;`.
pub mod prelude {
    pub use crate::apps::{
        built, compiler, demo_app, demo_lib_answering, demo_source_answering, root, test_app,
    };
    pub use crate::bins::host;
    pub use crate::manager::{Managed, hostile, in_test_cgroup, manager, manager_with, work_dir};
    pub use testkit::{
        alive, cgroup_v2, is_root, scratch, scratch_with_mode, skip, tree, wait_until,
        wait_until_async,
    };
}
