//! Shared helpers live in tests/common; this crate's library only holds what the test
//! binaries in `src/bin` share with the tests.

use std::path::Path;

/// The host pid of the process that the pid namespace of `runner` numbers `ns_pid`.
///
/// Found from the host side by scanning `/proc`: a process in the same pid namespace as the
/// runner whose innermost pid (last `NSpid` field) is `ns_pid`. It does not rely on the
/// process still being in the runner's tree, so a process that escaped the tree is found too.
pub fn host_pid_in_sandbox(runner: i32, ns_pid: i32) -> Option<i32> {
    let ns_of = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let runner_ns = ns_of(runner)?;
    let innermost = |pid: i32| -> Option<i32> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
        line[6..].split_whitespace().last()?.parse().ok()
    };
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|&pid| innermost(pid) == Some(ns_pid) && ns_of(pid).as_ref() == Some(&runner_ns))
}

/// Whether `pid` is a live (non-zombie) process.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The sandbox's working directory as the host can reach it: through the app process's root
/// (`/proc/PID/root/work`; init is not dumpable) when the sandbox has a root of its own, else
/// its host directory.
pub fn work_dir(info: &sandbox::SandboxInfo) -> std::path::PathBuf {
    let own_root = info.isolation["mechanisms"].as_array().is_some_and(|m| {
        m.iter()
            .any(|e| e["mechanism"] == "root" && e["applied"] == true)
    });
    if own_root {
        std::path::PathBuf::from(format!("/proc/{}/root/work", info.app_pid))
    } else {
        info.dir.join("work")
    }
}
