//! The runner pool: a prepared runner serves exactly one sandbox; a sandbox made from one is
//! in its own cgroup with its own limits before its app's first constructor runs, and is as
//! contained as one spawned for it; a killed daemon leaves no prepared runner behind.

use std::time::Duration;

use e2e::prelude::*;
use e2e::report::first_entry;
use e2e::serve::Serve;
use sandbox::{Level, Limits, Manager, SandboxInfo};
use serde_json::{Value, json};
use testkit::proc::{children, uid_of};

/// A manager whose pool keeps `size` prepared runners, filled before it returns.
async fn pooled_manager(size: usize) -> Managed {
    let m = manager_with(|c| c.pool_size = size);
    m.warm_pool().await;
    m
}

fn needs_root() -> bool {
    if !is_root() {
        skip("the runner pool serves only a root host");
        return false;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_runner_serves_exactly_one_sandbox() {
    if !needs_root() {
        return;
    }
    let m = pooled_manager(2).await;
    assert_eq!(m.pool_stats().ready, 2, "{:?}", m.pool_stats());
    let mut seen: Vec<(i32, u32)> = Vec::new();
    let mut pooled = 0;
    for round in 0..6 {
        let id = format!("pooled-{round}");
        let info = hostile(&m, &id, Limits::default(), Level::Standard).await;
        pooled += u32::from(info.startup.pooled);
        let uid = uid_of(info.pid).unwrap();
        for (pid, other) in &seen {
            assert_ne!(*pid, info.pid, "round {round}: a runner served twice");
            assert_ne!(*other, uid, "round {round}: two sandboxes share uid {uid}");
        }
        assert_eq!(
            m.run(&id, "answer", Value::Null, None).await.unwrap(),
            json!(1)
        );
        seen.push((info.pid, uid));
        // Every other round, the sandbox goes before the next one comes: its runner, now
        // dead, must not come back to serve another.
        if round % 2 == 0 {
            m.destroy(&id).await.unwrap();
        }
        // The refill is in the background: wait for it, so each create can take one.
        m.warm_pool().await;
    }
    let stats = m.pool_stats();
    assert!(pooled >= 5, "{pooled} of 6 creates were pooled: {stats:?}");
    assert_eq!(u64::from(pooled), stats.served, "{stats:?}");
}

/// What the hostile app's constructor saw of its cgroups and limits.
async fn seen_at_load(m: &Manager, id: &str) -> (String, String) {
    let seen = m.run(id, "seen_at_load", Value::Null, None).await.unwrap();
    let seen: Value = match seen {
        Value::String(s) => serde_json::from_str(&s).unwrap(),
        v => v,
    };
    (
        seen["cgroup"].as_str().unwrap().to_string(),
        seen["limits"].as_str().unwrap().to_string(),
    )
}

/// The soft and hard `Max open files` of a `/proc/PID/limits` text.
fn max_open_files(limits: &str) -> Vec<String> {
    let row = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no Max open files in {limits}"));
    row.split_whitespace()
        .skip(3)
        .take(2)
        .map(str::to_string)
        .collect()
}

/// The directory names of the sandbox's cgroups, from where its runner is.
fn cgroup_names(info: &SandboxInfo) -> Vec<String> {
    let text = std::fs::read_to_string(format!("/proc/{}/cgroup", info.pid)).unwrap();
    text.lines()
        .filter_map(|l| l.rsplit('/').next())
        .filter(|n| n.contains("pool"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_sandbox_has_its_cgroup_and_limits_before_its_constructor_runs() {
    if !needs_root() {
        return;
    }
    let m = pooled_manager(1).await;
    let limits = Limits {
        max_open_files: Some(123),
        max_processes: Some(40),
        max_memory: Some(96 << 20),
        ..Limits::default()
    };
    let info = hostile(&m, "limited", limits, Level::Standard).await;
    assert!(info.startup.pooled, "{:?}", info.startup);
    let names = cgroup_names(&info);
    assert!(
        !names.is_empty(),
        "the runner is in no cgroup of its sandbox"
    );
    let (cgroup, rlimits) = seen_at_load(&m, "limited").await;
    for name in &names {
        assert!(
            cgroup.contains(name.as_str()),
            "the constructor ran outside cgroup {name}: {cgroup}"
        );
    }
    assert_eq!(
        max_open_files(&rlimits),
        ["123", "123"],
        "the constructor ran with {rlimits}"
    );
    let mechanisms = info.isolation["mechanisms"].to_string();
    assert!(mechanisms.contains("nofile=123"), "{mechanisms}");
    // The neighbour from the pool gets its own cgroup, not this one's.
    let other = hostile(&m, "neighbour", Limits::default(), Level::Standard).await;
    let (other_cgroup, _) = seen_at_load(&m, "neighbour").await;
    for name in &names {
        assert!(!other_cgroup.contains(name.as_str()), "{other_cgroup}");
    }
    drop(other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_sandbox_is_as_contained_as_a_spawned_one() {
    if !needs_root() {
        return;
    }
    let m = pooled_manager(1).await;
    let info = hostile(&m, "walls", Limits::default(), Level::Standard).await;
    assert!(info.startup.pooled, "{:?}", info.startup);
    let call = async |f: &str, args: Value| m.run("walls", f, args, None).await.unwrap();
    let who = call("whoami", Value::Null).await;
    assert_eq!(
        who["uid"].as_u64(),
        uid_of(info.app_pid).map(u64::from),
        "{who}"
    );
    assert_ne!(who["uid"], json!(0), "{who}");
    for path in [
        "/etc/shadow",
        "/root/.profile",
        "/run/sandbox-host/x",
        "/sys/fs/cgroup/x",
    ] {
        let r = call("read_file", json!({ "path": path })).await.to_string();
        assert!(!r.contains("\"content\""), "{path} was readable: {r}");
    }
    let net = call("open_socket", json!({ "family": libc::AF_NETLINK })).await;
    assert_eq!(net["ok"], json!(false), "{net}");
    // Every mechanism the kernel shows, as for a spawned runner.
    for mechanism in [
        "pid_ns",
        "mount_ns",
        "seccomp",
        "no_new_privs",
        "root",
        "ids",
    ] {
        let entry = first_entry(&info.isolation, mechanism);
        assert_eq!(entry["applied"], true, "{entry}");
    }
}

#[test]
fn killing_the_daemon_leaves_no_prepared_runner() {
    if !needs_root() {
        return;
    }
    let mut d = Serve::start(&["--pool", "2"]);
    // The daemon logs once the pool is full.
    assert!(
        d.wait_log("runner pool filled", Duration::from_secs(30)),
        "the pool never filled:\n{}",
        d.log()
    );
    let prepared: Vec<i32> = children(d.pid()).into_iter().flat_map(tree).collect();
    assert!(
        prepared.len() >= 4,
        "init and app process each: {prepared:?}"
    );
    d.crash();
    let gone = wait_until(Duration::from_secs(5), || {
        prepared.iter().all(|&p| !alive(p))
    });
    assert!(
        gone,
        "prepared runners outlived their daemon: {:?}",
        prepared.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
    );
}

/// The file `name` of the sandbox's cgroup directory that has `controller` (v1: its own
/// hierarchy; v2: the one directory), found from where its runner is.
fn cgroup_file(info: &SandboxInfo, controller: &str, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{}/cgroup", info.pid)).unwrap();
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let dir = match controllers {
            "" => format!("/sys/fs/cgroup{path}"),
            c if c.split(',').any(|x| x == controller) => {
                format!("/sys/fs/cgroup/{c}{path}")
            }
            _ => return None,
        };
        std::fs::read_to_string(format!("{dir}/{name}"))
            .ok()
            .map(|s| s.trim().to_string())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_runners_own_cgroup_gets_exactly_its_tenants_limits() {
    if !needs_root() {
        return;
    }
    // The cgroup is made with the prepared runner, before its tenant is known: the tenant's
    // limits must be the ones in force, and a neighbour's must not inherit them.
    let m = pooled_manager(2).await;
    let tight = Limits {
        max_processes: Some(40),
        ..Limits::default()
    };
    let info = hostile(&m, "tight", tight, Level::Standard).await;
    assert!(info.startup.pooled, "{:?}", info.startup);
    assert_eq!(
        cgroup_file(&info, "pids", "pids.max").as_deref(),
        Some("40"),
        "pids.max of the tenant's cgroup"
    );
    // Every process of the runner's tree is in that cgroup: born there, never moved.
    let procs = cgroup_file(&info, "pids", "cgroup.procs").unwrap();
    for pid in tree(info.pid) {
        assert!(
            procs.lines().any(|p| p == pid.to_string()),
            "pid {pid} is outside the sandbox's cgroup: {procs}"
        );
    }
    // A fork bomb stops at the tenant's limit, not at whatever the pool made.
    let bomb = m
        .run(
            "tight",
            "fork_bomb",
            json!({ "max": 200, "failures": 5 }),
            None,
        )
        .await
        .unwrap();
    let bomb: Value = match bomb {
        Value::String(s) => serde_json::from_str(&s).unwrap(),
        v => v,
    };
    let forked = bomb["forked"].as_i64().unwrap();
    assert!(forked < 40, "{forked} forks under pids.max 40: {bomb}");
    assert_eq!(bomb["errno"], json!(libc::EAGAIN), "{bomb}");
    m.warm_pool().await;
    let loose = hostile(&m, "loose", Limits::default(), Level::Standard).await;
    assert!(loose.startup.pooled, "{:?}", loose.startup);
    assert_eq!(
        cgroup_file(&loose, "pids", "pids.max").as_deref(),
        Some("max"),
        "a neighbour inherited a limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_sandboxes_get_a_queue_of_their_own_once_one_is_asked_for() {
    if !needs_root() {
        return;
    }
    let m = pooled_manager(1).await;
    // Nothing is kept for a level nobody asked for.
    assert_eq!(m.pool_stats().ready_none, 0, "{:?}", m.pool_stats());
    let limits = Limits {
        max_open_files: Some(123),
        ..Limits::default()
    };
    let first = hostile(&m, "plain-0", limits.clone(), Level::None).await;
    assert!(!first.startup.pooled, "{:?}", first.startup);
    m.warm_pool().await;
    let stats = m.pool_stats();
    assert_eq!((stats.ready, stats.ready_none), (1, 1), "{stats:?}");
    let mut pids = vec![first.pid];
    for round in 1..4 {
        let id = format!("plain-{round}");
        let info = hostile(&m, &id, limits.clone(), Level::None).await;
        assert!(info.startup.pooled, "round {round}: {:?}", info.startup);
        assert!(
            !pids.contains(&info.pid),
            "round {round}: a runner served twice"
        );
        pids.push(info.pid);
        // The tenant's rlimits were in force before its constructor ran.
        let (_, rlimits) = seen_at_load(&m, &id).await;
        assert_eq!(
            max_open_files(&rlimits),
            ["123", "123"],
            "round {round}: the constructor ran with {rlimits}"
        );
        let mechanisms = info.isolation["mechanisms"].to_string();
        assert!(mechanisms.contains("nofile=123"), "{mechanisms}");
        assert_eq!(
            m.run(&id, "answer", Value::Null, None).await.unwrap(),
            json!(1)
        );
        if round % 2 == 1 {
            m.destroy(&id).await.unwrap();
        }
        m.warm_pool().await;
    }
    // `none` creates took nothing from the `standard` queue.
    let stats = m.pool_stats();
    assert_eq!((stats.ready, stats.ready_none), (1, 1), "{stats:?}");
    let standard = hostile(&m, "walled", Limits::default(), Level::Standard).await;
    assert!(standard.startup.pooled, "{:?}", standard.startup);
    assert_ne!(uid_of(standard.app_pid), Some(0));
}
