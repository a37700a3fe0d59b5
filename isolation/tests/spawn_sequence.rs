//! The whole spawn sequence of the crate docs, end to end: cgroup + namespaces + rlimits in the
//! cloned child, `execve` of a "runner" (this test binary, running `runner_side`), which applies
//! `RunnerRestrictions` received from the host and reports back.

mod common;

use std::ffi::CStr;
use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;

use common::{cs, pipe, reap, spawn_exec_env, unique_id};
use isolation::landlock::SandboxPaths;
use isolation::namespaces::{self, ChildError, ChildOptions, ChildSetup, ChildStep};
use isolation::{
    Cgroup, LandlockPlan, Level, Limits, Mechanism, Report, ReportEntry, Rlimits,
    RunnerRestrictions, is_root,
};

const RESTRICTIONS_ENV: &str = "ISOLATION_TEST_RESTRICTIONS";

/// The runner side: only does something when exec'd by `full_spawn_sequence`.
#[test]
fn runner_side() {
    let Ok(json) = std::env::var(RESTRICTIONS_ENV) else {
        return;
    };
    let r: RunnerRestrictions = serde_json::from_str(&json).unwrap();
    let entries = r.apply_in_runner().unwrap();
    println!("\nENTRIES:{}", serde_json::to_string(&entries).unwrap());
    // SAFETY: getpid cannot fail.
    assert_eq!(unsafe { libc::getpid() }, 1, "runner is not pid 1");
    // No capabilities survived execve, even for a root host.
    let status = fs::read_to_string("/proc/self/status").unwrap();
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("CapPrm:\t0000000000000000"), "{status}");
    // Private dir (cwd) writable; outside not readable; namespace syscalls denied.
    fs::write("state.bin", b"ok").unwrap();
    assert!(fs::read_to_string("/etc/hostname").is_err());
    // SAFETY: a denied syscall with harmless arguments.
    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNS) }, -1);
    // Workers can still be forked and exec'd.
    let out = std::process::Command::new("/bin/sh")
        .args(["-c", "echo worker"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"worker\n");
}

#[test]
fn full_spawn_sequence() {
    if std::env::var(RESTRICTIONS_ENV).is_ok() {
        return;
    }
    run_full_sequence();
}

#[test]
fn full_spawn_sequence_nonroot() {
    if std::env::var(RESTRICTIONS_ENV).is_ok() {
        return;
    }
    // As uid 65534 when we are root, else as ourselves: user namespace path, no cgroup on v1.
    if common::in_subprocess(
        "full_spawn_sequence_nonroot",
        common::root().then_some(65534),
    ) {
        run_full_sequence();
    }
}

fn run_full_sequence() {
    let level = Level::Standard;
    let limits = Limits {
        max_memory: Some(128 << 20),
        max_processes: Some(32),
        cpu: Some(1.0),
        max_open_files: Some(256),
        ..Limits::default()
    };
    let (_base, app, private) = common::work_dirs("isolation-spawn-");
    let runner = std::env::current_exe().unwrap();

    // 4-8: host side, before clone.
    let mut report = Report::new();
    let cg = match Cgroup::create(&unique_id("spawn"), &limits, None) {
        Ok(cg) => {
            report.record(level, cg.report_entry()).unwrap();
            Some(cg)
        }
        Err(e) => {
            report
                .record(
                    level,
                    ReportEntry::missing(Mechanism::Cgroup, e.to_string()),
                )
                .unwrap();
            None
        }
    };
    let ns = namespaces::plan(level, false, is_root()).unwrap();
    let mut setup = ChildSetup::new(
        &ns,
        &ChildOptions {
            app_dir: Some(app.clone()),
            private_tmp: true,
            tmp_size: Some(32 << 20),
            workdir: Some(private.clone()),
            keep_visible: vec![private.clone(), runner.clone()],
            no_new_privs: true,
            drop_capabilities: true,
            root: None,
            switch_ids: None,
        },
    )
    .unwrap();
    report
        .record_all(level, setup.report_entries().iter().cloned())
        .unwrap();
    let rl = Rlimits::from_limits(&limits, is_root());
    report.record(level, rl.report_entry()).unwrap();

    let restrictions = RunnerRestrictions::for_level(
        level,
        LandlockPlan::for_sandbox(&SandboxPaths {
            runner_exe: runner.clone(),
            app_dir: Some(app.clone()),
            private_dir: private.clone(),
            own_proc: setup.has_own_proc(),
            private_tmp: setup.has_private_tmp(),
            network: false,
            own_root: None,
        }),
        false,
    )
    .unwrap();
    // (A real host sends this as the first message on the control socket.)
    let env_kv = cs(&format!(
        "{RESTRICTIONS_ENV}={}",
        serde_json::to_string(&restrictions).unwrap()
    ));
    let env_sel = cs("ISOLATION_TEST_SUBPROCESS=runner_side");
    let args = [
        cs(runner.to_str().unwrap()),
        cs("runner_side"),
        cs("--exact"),
        cs("--nocapture"),
        cs("--test-threads=1"),
    ];
    let argv: Vec<&CStr> = args.iter().map(|c| c.as_c_str()).collect();
    let (out_r, out_w) = pipe();
    let out_fd = out_w.as_raw_fd();

    // 10-14: clone; the child enters the cgroup, sets up namespaces, rlimits, stdout, execs.
    let entry = cg.as_ref().map(|cg| cg.open_entry().unwrap());
    let pre = || -> Result<(), ChildError> {
        if let Some(entry) = &entry {
            // SAFETY: child side, raw writes only.
            unsafe { entry.enter_from_child() }.map_err(|errno| ChildError {
                step: ChildStep::CgroupEnter,
                errno,
                index: 0,
            })?;
        }
        // SAFETY: child side; async-signal-safe by contract.
        unsafe {
            setup.run_in_child()?;
            rl.apply_in_child()?;
            libc::dup2(out_fd, 1);
            libc::dup2(out_fd, 2);
        }
        Ok(())
    };
    // SAFETY: `pre` only calls the crate's child-side functions and dup2.
    let pid = unsafe { spawn_exec_env(setup.flags(), &argv, &[&env_kv, &env_sel], pre) };
    drop(out_w);
    // 15: parent side of the user-namespace handshake (a no-op as root).
    setup.parent_after_clone(pid).unwrap();

    // 16-18: the runner reports back.
    let mut out = String::new();
    fs::File::from(out_r).read_to_string(&mut out).unwrap();
    let status = reap(pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{status:#x}\n{out}"
    );
    assert!(out.contains("1 passed"), "{out}");
    let json = out
        .lines()
        .find_map(|l| l.strip_prefix("ENTRIES:"))
        .unwrap_or_else(|| panic!("no entries line:\n{out}"));
    let entries: Vec<ReportEntry> = serde_json::from_str(json).unwrap();
    report.record_all(level, entries).unwrap();
    eprintln!("{report}");
    for m in [
        Mechanism::PidNs,
        Mechanism::MountNs,
        Mechanism::NetNs,
        Mechanism::Seccomp,
    ] {
        assert!(report.is_applied(m), "{m} not applied:\n{report}");
    }
    assert!(
        report.is_applied(Mechanism::Landlock)
            || !report.get(Mechanism::Landlock).unwrap().required
    );
    assert_eq!(fs::read(private.join("state.bin")).unwrap(), b"ok");

    // 20: teardown.
    if let Some(cg) = cg {
        let u = cg.usage().unwrap();
        assert!(u.procs.is_empty(), "{u:?}");
        assert!(u.cpu_time_us.unwrap_or(1) > 0);
        cg.kill_all().unwrap();
        cg.remove().unwrap();
    }
}
