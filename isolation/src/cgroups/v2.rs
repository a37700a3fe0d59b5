//! cgroup v2 (unified hierarchy).
//!
//! Sandboxes go under a delegated subtree `<base>`: the host's own cgroup (the `0::` line of
//! `/proc/self/cgroup`) or `--cgroup-parent`. Preparation enables `+memory +pids +cpu` in
//! `<base>/cgroup.subtree_control`. Because of the "no internal processes" rule a non-root
//! cgroup with processes cannot enable controllers for its children, so the host first moves
//! itself (the daemon and its threads, and processes it started) into the leaf `<base>/host`.
//! It never moves a process it does not own: when `<base>` also holds others (a terminal's
//! `session-N.scope`: the shell, its siblings), nothing is moved, the controllers stay off and
//! the report says why (run under a unit with `Delegate=yes`, e.g. `systemd/`, or pass
//! `--cgroup-parent`). A later host started from inside `<base>/host` recognises the leaf and
//! uses its parent again.
//!
//! Per sandbox: `<base>/sandbox-<id>` with `memory.max`, `memory.swap.max = 0`, `pids.max` and
//! `cpu.max = "<quota> <period>"`.

use std::io;
use std::path::{Path, PathBuf};

use super::{
    CgroupError, Dir, FakeFs, Notes, Result, cpu_quota_us, mkdir, mkdir_fresh, read_pids,
    read_string, self_cgroup_path, under, write_file,
};
use crate::level::Limits;

/// Controllers a sandbox wants, in the order they are enabled.
pub const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// The leaf the host itself moves to when `<base>` must enable controllers.
pub const HOST_LEAF: &str = "host";

/// CFS period used for `cpu.max`, microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Which processes count as this host's own: itself and its descendants. The only ones it
/// may move between cgroups.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner {
    /// This process (`getpid()`).
    pub me: i32,
    /// The parent of a process, `None` when it is gone (`/proc/PID/stat`, injectable).
    pub ppid_of: fn(i32) -> Option<i32>,
}

impl Owner {
    pub(crate) fn this_process() -> Self {
        Self {
            me: std::process::id() as i32,
            ppid_of: proc_ppid,
        }
    }

    /// Whether `pid` is this process or one of its descendants.
    fn owns(&self, pid: i32) -> bool {
        let mut p = pid;
        // Bounded: a pid reused meanwhile cannot make the walk loop.
        for _ in 0..256 {
            if p == self.me {
                return true;
            }
            match (self.ppid_of)(p) {
                Some(pp) if pp > 0 && pp != p => p = pp,
                _ => return false,
            }
        }
        false
    }
}

/// The parent pid field of `/proc/PID/stat` (after the last `)`: state, then ppid).
fn proc_ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A prepared v2 subtree.
#[derive(Debug)]
pub(crate) struct V2System {
    base: PathBuf,
    enabled: Vec<String>,
    notes: Vec<String>,
    /// Why the controllers could not be enabled, for each sandbox's report.
    off_reason: Option<String>,
}

fn euid() -> u32 {
    // SAFETY: geteuid(2) cannot fail.
    unsafe { libc::geteuid() }
}

fn errno_of(e: &CgroupError) -> Option<i32> {
    match e {
        CgroupError::Write { source, .. }
        | CgroupError::Read { source, .. }
        | CgroupError::Mkdir { source, .. }
        | CgroupError::Open { source, .. } => source.raw_os_error(),
        _ => None,
    }
}

fn is_denied(e: &CgroupError) -> bool {
    matches!(errno_of(e), Some(libc::EACCES | libc::EPERM | libc::EROFS))
}

impl V2System {
    pub(crate) fn prepare(
        mount: &Path,
        proc_self_cgroup: &str,
        parent_override: Option<&Path>,
        fake: Option<FakeFs>,
        owner: &Owner,
    ) -> Result<Self> {
        let base_rel: String = match parent_override {
            Some(p) => match p.strip_prefix(mount) {
                Ok(rel) => format!("/{}", rel.display()),
                Err(_) => format!("/{}", p.display().to_string().trim_start_matches('/')),
            },
            None => {
                let own = self_cgroup_path(proc_self_cgroup, str::is_empty).ok_or_else(|| {
                    CgroupError::Unavailable("no `0::` line in /proc/self/cgroup".into())
                })?;
                // A host restarted from inside the leaf a previous host created.
                match own.rsplit_once('/') {
                    Some((parent, HOST_LEAF)) => {
                        if parent.is_empty() {
                            "/".into()
                        } else {
                            parent.into()
                        }
                    }
                    _ => own.into(),
                }
            }
        };
        let base = under(mount, &base_rel);
        let is_root_cgroup = base == mount;
        if !base.exists() {
            // Create the override path one level at a time, like `mkdir -p`.
            let mut cur = mount.to_path_buf();
            for comp in Path::new(base_rel.trim_start_matches('/')).components() {
                cur.push(comp);
                mkdir(&cur, fake).map_err(|e| {
                    if is_denied(&e) {
                        not_delegated(&base, e.to_string())
                    } else {
                        e
                    }
                })?;
            }
        }
        let available = read_string(&base.join("cgroup.controllers")).map_err(|e| {
            CgroupError::Unavailable(format!("cgroup v2 subtree {}: {e}", base.display()))
        })?;
        let available: Vec<&str> = available.split_whitespace().collect();
        let mut notes = Vec::new();
        let mut off_reason = None;
        let missing: Vec<&str> = CONTROLLERS
            .iter()
            .copied()
            .filter(|c| !available.contains(c))
            .collect();
        if !missing.is_empty() {
            notes.push(format!(
                "controllers {} not delegated to {}",
                missing.join("+"),
                base.display()
            ));
        }
        let subtree = base.join("cgroup.subtree_control");
        let enabled_now = read_string(&subtree)?;
        let to_enable: Vec<&str> = CONTROLLERS
            .iter()
            .copied()
            .filter(|c| available.contains(c) && !enabled_now.split_whitespace().any(|e| e == *c))
            .collect();
        if !to_enable.is_empty() {
            let value = to_enable
                .iter()
                .map(|c| format!("+{c}"))
                .collect::<Vec<_>>()
                .join(" ");
            // A child the host forks between reading `cgroup.procs` and the write lands in
            // `<base>` and makes it EBUSY: move again, a few rounds.
            let mut res = Ok(());
            let mut moved = 0;
            for _round in 0..4 {
                if !is_root_cgroup {
                    // Whose processes are in `<base>`: only this host's may move.
                    let pids = read_pids(&base.join("cgroup.procs"))?;
                    let (ours, foreign): (Vec<i32>, Vec<i32>) =
                        pids.into_iter().partition(|p| owner.owns(*p));
                    if !foreign.is_empty() {
                        let why = foreign_processes(&base, foreign.len());
                        off_reason = Some(why.clone());
                        notes.push(why);
                        res = Err(CgroupError::Unavailable(String::new()));
                        break;
                    }
                    if !ours.is_empty() {
                        match move_to_leaf(&base, &ours, fake) {
                            Ok(n) => moved += n,
                            Err(e) if is_denied(&e) => {
                                res = Err(e);
                                break;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                res = write_file(&subtree, &value);
                if !matches!(&res, Err(e) if errno_of(e) == Some(libc::EBUSY)) || is_root_cgroup {
                    break;
                }
            }
            if moved > 0 {
                notes.push(format!(
                    "moved the host ({moved} process(es)) into {}/{HOST_LEAF}",
                    base.display()
                ));
            }
            match res {
                Ok(()) => {}
                // Already said why.
                Err(CgroupError::Unavailable(_)) => {}
                Err(e) if is_denied(&e) || errno_of(&e) == Some(libc::EBUSY) => {
                    let why = format!("cannot enable controllers: {e}");
                    off_reason = Some(why.clone());
                    notes.push(why);
                }
                Err(e) => return Err(e),
            }
        }
        let enabled: Vec<String> = read_string(&subtree)?
            .split_whitespace()
            .map(|c| c.trim_start_matches('+').to_string())
            .filter(|c| CONTROLLERS.contains(&c.as_str()))
            .collect();
        Ok(Self {
            base,
            enabled,
            notes,
            off_reason,
        })
    }

    pub(crate) fn describe(&self) -> String {
        let mut s = format!(
            "v2 subtree {} with {}",
            self.base.display(),
            if self.enabled.is_empty() {
                "no controllers".into()
            } else {
                self.enabled.join("+")
            }
        );
        for n in &self.notes {
            s.push_str("; ");
            s.push_str(n);
        }
        s
    }

    fn has(&self, c: &str) -> bool {
        self.enabled.iter().any(|e| e == c)
    }

    pub(crate) fn create(
        &self,
        name: &str,
        limits: &Limits,
        fake: Option<FakeFs>,
        notes: &mut Notes,
    ) -> Result<Vec<Dir>> {
        let dir = self.base.join(name);
        mkdir_fresh(&dir, fake).map_err(|e| {
            if is_denied(&e) {
                not_delegated(&self.base, e.to_string())
            } else {
                e
            }
        })?;
        if let Err(e) = self.apply(&dir, limits, notes) {
            if let Some(f) = fake {
                let _ = (f.on_rmdir)(&dir);
            }
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
        Ok(vec![Dir {
            path: dir,
            controllers: self.enabled.clone(),
        }])
    }

    fn apply(&self, dir: &Path, limits: &Limits, notes: &mut Notes) -> Result<()> {
        let why = |c: &str| match &self.off_reason {
            Some(r) => format!("{c} controller not enabled in {}: {r}", self.base.display()),
            None => format!("{c} controller not enabled in {}", self.base.display()),
        };
        if let Some(m) = limits.max_memory {
            if self.has("memory") {
                write_file(&dir.join("memory.max"), &m.to_string())?;
                notes.applied.push(format!("memory.max={m}"));
                let swap = dir.join("memory.swap.max");
                if swap.exists() {
                    write_file(&swap, "0")?;
                    notes.applied.push("memory.swap.max=0".into());
                }
            } else {
                notes
                    .missing
                    .push(format!("max_memory ({})", why("memory")));
            }
        }
        if let Some(p) = limits.max_processes {
            if self.has("pids") {
                write_file(&dir.join("pids.max"), &p.to_string())?;
                notes.applied.push(format!("pids.max={p}"));
            } else {
                notes
                    .missing
                    .push(format!("max_processes ({})", why("pids")));
            }
        }
        if let Some(frac) = limits.cpu {
            if self.has("cpu") {
                let v = format!("{} {CPU_PERIOD_US}", cpu_quota_us(frac, CPU_PERIOD_US));
                write_file(&dir.join("cpu.max"), &v)?;
                notes.applied.push(format!("cpu.max={v}"));
            } else {
                notes.missing.push(format!("cpu ({})", why("cpu")));
            }
        }
        Ok(())
    }
}

fn not_delegated(base: &Path, reason: String) -> CgroupError {
    CgroupError::NotDelegated {
        path: base.to_path_buf(),
        uid: euid(),
        reason,
    }
}

fn foreign_processes(base: &Path, n: usize) -> String {
    format!(
        "controllers not enabled: {} holds {n} process(es) this host did not start (a login session's scope?); they are \
         left where they are, and while they are there the no-internal-processes rule keeps \
         controllers off for sandboxes below it: run the host in a unit of its own with \
         Delegate=yes (systemd/sandbox-host.service, or `systemd-run --user --scope -p \
         Delegate=yes host serve`), or pass --cgroup-parent",
        base.display()
    )
}

/// Moves `pids` (this host and its descendants; one write per process moves all its threads)
/// from `<base>` into `<base>/host`; returns how many moved.
fn move_to_leaf(base: &Path, pids: &[i32], fake: Option<FakeFs>) -> Result<usize> {
    let leaf = base.join(HOST_LEAF);
    mkdir(&leaf, fake)?;
    let procs = leaf.join("cgroup.procs");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(fake.is_some())
        .open(&procs)
        .map_err(|source| CgroupError::Open {
            path: procs.clone(),
            source,
        })?;
    let mut moved = Vec::new();
    for &pid in pids {
        // One pid per write(2), as cgroupfs requires.
        let value = format!("{pid}\n");
        match io::Write::write(&mut file, value.as_bytes()) {
            Ok(_) => moved.push(pid),
            // Exited meanwhile, or a zombie that cannot move.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH | libc::EINVAL)) => {}
            Err(source) => {
                return Err(CgroupError::Write {
                    value,
                    path: procs,
                    source,
                });
            }
        }
    }
    if fake.is_some() {
        // The fake cgroupfs does not move anything by itself: take the moved ones out.
        let base_procs = base.join("cgroup.procs");
        let left: String = read_pids(&base_procs)?
            .into_iter()
            .filter(|p| !moved.contains(p))
            .map(|p| format!("{p}\n"))
            .collect();
        std::fs::write(&base_procs, &left).map_err(|source| CgroupError::Write {
            value: left.clone(),
            path: base_procs.clone(),
            source,
        })?;
    }
    Ok(moved.len())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::testutil::FAKE_V2;
    use super::super::{CgroupSystem, CgroupVersion};
    use super::*;

    fn fake_root() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::write(
            r.join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma",
        )
        .unwrap();
        fs::write(r.join("cgroup.subtree_control"), "cpu memory pids").unwrap();
        fs::write(r.join("cgroup.procs"), "1\n").unwrap();
        let scope = r.join("user.slice/app.scope");
        fs::create_dir_all(&scope).unwrap();
        fs::write(scope.join("cgroup.controllers"), "cpu memory pids").unwrap();
        fs::write(scope.join("cgroup.subtree_control"), "").unwrap();
        fs::write(scope.join("cgroup.procs"), "100\n200\n").unwrap();
        d
    }

    fn limits() -> Limits {
        Limits {
            max_memory: Some(256 << 20),
            max_processes: Some(64),
            cpu: Some(0.5),
            ..Limits::default()
        }
    }

    /// Pid 100 is "this host", 200 its child; 300 (ppid 1) belongs to someone else.
    const HOST_100: Owner = Owner {
        me: 100,
        ppid_of: |p| match p {
            200 => Some(100),
            300 => Some(1),
            _ => None,
        },
    };

    fn v2(root: &Path, self_cgroup: &str, parent: Option<&Path>) -> CgroupSystem {
        CgroupSystem::v2_with_owner(root, self_cgroup, parent, Some(FAKE_V2), &HOST_100).unwrap()
    }

    #[test]
    fn prepares_delegated_subtree_and_moves_host_to_leaf() {
        let root = fake_root();
        let sys = v2(root.path(), "0::/user.slice/app.scope\n", None);
        assert_eq!(sys.version(), CgroupVersion::V2);
        let scope = root.path().join("user.slice/app.scope");
        // The fake file holds what was written: all three controllers in one write.
        assert_eq!(
            fs::read_to_string(scope.join("cgroup.subtree_control")).unwrap(),
            "+memory +pids +cpu"
        );
        // The host and its child were written (one per write) into the leaf.
        assert_eq!(
            fs::read_to_string(scope.join("host/cgroup.procs")).unwrap(),
            "100\n200\n"
        );
        assert_eq!(fs::read_to_string(scope.join("cgroup.procs")).unwrap(), "");
        assert!(
            sys.describe()
                .contains("moved the host (2 process(es)) into"),
            "{}",
            sys.describe()
        );
    }

    #[test]
    fn processes_the_host_does_not_own_are_never_moved() {
        // A terminal's session scope: the host (100), its child (200) and the shell (300).
        let root = fake_root();
        let scope = root.path().join("user.slice/app.scope");
        fs::write(scope.join("cgroup.procs"), "100\n200\n300\n").unwrap();
        let sys = v2(root.path(), "0::/user.slice/app.scope\n", None);
        // Nothing moved, no leaf made, no controller enabled.
        assert_eq!(
            fs::read_to_string(scope.join("cgroup.procs")).unwrap(),
            "100\n200\n300\n"
        );
        assert!(!scope.join(HOST_LEAF).exists());
        assert_eq!(
            fs::read_to_string(scope.join("cgroup.subtree_control")).unwrap(),
            ""
        );
        let d = sys.describe();
        assert!(
            d.contains("no controllers")
                && d.contains("1 process(es) this host did not start")
                && d.contains("Delegate=yes")
                && d.contains("--cgroup-parent"),
            "{d}"
        );
        // Sandboxes still get a cgroup (kill, accounting), with the limits reported missing.
        let cg = sys.create("f", &limits()).unwrap();
        assert_eq!(cg.missing().len(), 3, "{:?}", cg.missing());
        let e = cg.report_entry();
        assert!(
            !e.applied && e.detail.contains("did not start"),
            "{}",
            e.detail
        );
        cg.remove().unwrap();
        // A --cgroup-parent elsewhere works without touching the scope.
        let sys = v2(
            root.path(),
            "0::/user.slice/app.scope\n",
            Some(Path::new("/user.slice/sandboxes")),
        );
        assert!(
            sys.describe().contains("memory+pids+cpu"),
            "{}",
            sys.describe()
        );
        assert_eq!(
            fs::read_to_string(scope.join("cgroup.procs")).unwrap(),
            "100\n200\n300\n"
        );
    }

    #[test]
    fn the_real_owner_is_this_process_and_its_children() {
        let me = Owner::this_process();
        assert!(me.owns(std::process::id() as i32));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(me.owns(child.id() as i32));
        assert!(!me.owns(1), "pid 1 is nobody's child");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn restarted_host_inside_leaf_uses_the_parent() {
        let root = fake_root();
        let scope = root.path().join("user.slice/app.scope");
        fs::write(scope.join("cgroup.subtree_control"), "memory pids cpu").unwrap();
        fs::write(scope.join("cgroup.procs"), "").unwrap();
        let sys = CgroupSystem::v2_with(
            root.path(),
            "0::/user.slice/app.scope/host\n",
            None,
            Some(FAKE_V2),
        )
        .unwrap();
        let cg = sys.create("a", &Limits::default()).unwrap();
        assert_eq!(cg.paths(), vec![scope.join("sandbox-a")]);
        cg.remove().unwrap();
    }

    #[test]
    fn creates_sandbox_with_limits_usage_kill_remove() {
        let root = fake_root();
        let sys = v2(root.path(), "0::/user.slice/app.scope\n", None);
        let cg = sys.create("demo-1", &limits()).unwrap();
        let dir = root.path().join("user.slice/app.scope/sandbox-demo-1");
        assert_eq!(cg.paths(), vec![dir.clone()]);
        let rd = |f: &str| fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(rd("memory.max"), (256u64 << 20).to_string());
        assert_eq!(rd("memory.swap.max"), "0");
        assert_eq!(rd("pids.max"), "64");
        assert_eq!(rd("cpu.max"), "50000 100000");
        assert_eq!(cg.open_entry().unwrap().files.len(), 1);
        assert!(cg.missing().is_empty());
        let e = cg.report_entry();
        assert!(
            e.applied && e.detail.starts_with("v2 memory+pids+cpu at "),
            "{}",
            e.detail
        );

        // Parent-side add_pid goes through the files opened for a spawn.
        cg.open_entry().unwrap().add_pid(4242).unwrap();
        assert_eq!(rd("cgroup.procs"), "4242");

        fs::write(dir.join("cgroup.procs"), "4242\n4243\n").unwrap();
        let u = cg.usage().unwrap();
        assert_eq!(u.memory_bytes, Some(1234567));
        assert_eq!(u.memory_peak_bytes, Some(2345678));
        assert_eq!(u.pids, Some(3));
        assert_eq!(u.cpu_time_us, Some(777));
        assert_eq!(u.oom_kills, Some(1));
        assert_eq!(u.procs, vec![4242, 4243]);

        // kill_all uses cgroup.kill (the fake has nobody to signal).
        cg.kill_all().unwrap();
        assert_eq!(rd("cgroup.kill"), "1");

        cg.remove().unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn missing_controllers_are_reported_not_fatal() {
        let root = fake_root();
        let scope = root.path().join("user.slice/app.scope");
        fs::write(scope.join("cgroup.controllers"), "memory").unwrap();
        fs::write(scope.join("cgroup.procs"), "").unwrap();
        let sys = v2(root.path(), "0::/user.slice/app.scope\n", None);
        assert!(
            sys.describe().contains("pids+cpu not delegated"),
            "{}",
            sys.describe()
        );
        let cg = sys.create("b", &limits()).unwrap();
        assert_eq!(cg.missing().len(), 2, "{:?}", cg.missing());
        let e = cg.report_entry();
        assert!(
            !e.applied && e.detail.contains("NOT applied: max_processes"),
            "{}",
            e.detail
        );
        drop(cg); // Drop removes it.
        assert!(!scope.join("sandbox-b").exists());
    }

    #[test]
    fn parent_override_is_created_and_used() {
        let root = fake_root();
        let sys = CgroupSystem::v2_with(
            root.path(),
            "0::/whatever\n",
            Some(Path::new("/sandboxes.slice")),
            Some(FAKE_V2),
        )
        .unwrap();
        let cg = sys.create("c", &Limits::default()).unwrap();
        assert_eq!(
            cg.paths(),
            vec![root.path().join("sandboxes.slice/sandbox-c")]
        );
        // Root-cgroup rule: the root's processes were not moved, the override had none.
        assert!(!root.path().join("host").exists());
        cg.remove().unwrap();
        // An absolute path under the mount works too.
        let abs = root.path().join("sandboxes.slice");
        let sys2 =
            CgroupSystem::v2_with(root.path(), "0::/x\n", Some(&abs), Some(FAKE_V2)).unwrap();
        let cg2 = sys2.create("d", &Limits::default()).unwrap();
        assert_eq!(cg2.paths(), vec![abs.join("sandbox-d")]);
    }

    #[test]
    fn leftover_sandbox_dir_is_recreated() {
        let root = fake_root();
        let sys = v2(root.path(), "0::/user.slice/app.scope\n", None);
        let first = sys.create("e", &limits()).unwrap();
        std::mem::forget(first); // A crashed host leaves the directory behind.
        let again = sys.create("e", &limits()).unwrap();
        again.remove().unwrap();
    }
}
