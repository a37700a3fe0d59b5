//! cgroup v2 (unified hierarchy).
//!
//! Sandboxes go under a delegated subtree `<base>`: the host's own cgroup (the `0::` line of
//! `/proc/self/cgroup`) or `--cgroup-parent`. Preparation enables `+memory +pids +cpu` in
//! `<base>/cgroup.subtree_control`. Because of the "no internal processes" rule a non-root
//! cgroup with processes cannot enable controllers for its children, so the processes of
//! `<base>` (the host, usually) are first moved into the leaf `<base>/host`. A later host started
//! from inside `<base>/host` recognises the leaf and uses its parent again.
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

/// The leaf the host's own processes move to when `<base>` must enable controllers.
pub const HOST_LEAF: &str = "host";

/// CFS period used for `cpu.max`, microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// A prepared v2 subtree.
#[derive(Debug)]
pub(crate) struct V2System {
    base: PathBuf,
    enabled: Vec<String>,
    notes: Vec<String>,
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
            let mut moved = false;
            if !is_root_cgroup && !read_pids(&base.join("cgroup.procs"))?.is_empty() {
                match move_procs_to_leaf(&base, fake) {
                    Ok(n) => {
                        moved = true;
                        notes.push(format!(
                            "moved {n} host process(es) to {}/{HOST_LEAF}",
                            base.display()
                        ));
                    }
                    Err(e) if is_denied(&e) => notes.push(format!("cannot move host: {e}")),
                    Err(e) => return Err(e),
                }
            }
            let mut res = write_file(&subtree, &value);
            let busy = matches!(&res, Err(e) if errno_of(e) == Some(libc::EBUSY));
            if busy && !moved && !is_root_cgroup {
                let n = move_procs_to_leaf(&base, fake)?;
                notes.push(format!(
                    "moved {n} host process(es) to {}/{HOST_LEAF}",
                    base.display()
                ));
                res = write_file(&subtree, &value);
            }
            match res {
                Ok(()) => {}
                Err(e) if is_denied(&e) || errno_of(&e) == Some(libc::EBUSY) => {
                    notes.push(format!("cannot enable controllers: {e}"));
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
        let why = |c: &str| format!("{c} controller not enabled in {}", self.base.display());
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

/// Moves every process of `<base>` into `<base>/host`; returns how many moved.
fn move_procs_to_leaf(base: &Path, fake: Option<FakeFs>) -> Result<usize> {
    let leaf = base.join(HOST_LEAF);
    mkdir(&leaf, fake)?;
    let procs = leaf.join("cgroup.procs");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&procs)
        .map_err(|source| CgroupError::Open {
            path: procs.clone(),
            source,
        })?;
    let mut n = 0;
    for pid in read_pids(&base.join("cgroup.procs"))? {
        // One pid per write(2), as cgroupfs requires.
        let value = format!("{pid}\n");
        match io::Write::write(&mut file, value.as_bytes()) {
            Ok(_) => n += 1,
            // Exited meanwhile, or a kernel thread / zombie that cannot move.
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
        // The fake cgroupfs does not move anything by itself.
        std::fs::write(base.join("cgroup.procs"), "").map_err(|source: io::Error| {
            CgroupError::Write {
                value: String::new(),
                path: base.join("cgroup.procs"),
                source,
            }
        })?;
    }
    Ok(n)
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

    #[test]
    fn prepares_delegated_subtree_and_moves_host_to_leaf() {
        let root = fake_root();
        let sys = CgroupSystem::v2_with(
            root.path(),
            "0::/user.slice/app.scope\n",
            None,
            Some(FAKE_V2),
        )
        .unwrap();
        assert_eq!(sys.version(), CgroupVersion::V2);
        let scope = root.path().join("user.slice/app.scope");
        // The fake file holds what was written: all three controllers in one write.
        assert_eq!(
            fs::read_to_string(scope.join("cgroup.subtree_control")).unwrap(),
            "+memory +pids +cpu"
        );
        // Both host processes were written (one per write) into the leaf.
        assert_eq!(
            fs::read_to_string(scope.join("host/cgroup.procs")).unwrap(),
            "100\n200\n"
        );
        assert!(
            sys.describe().contains("moved 2 host process(es)"),
            "{}",
            sys.describe()
        );
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
        let sys = CgroupSystem::v2_with(
            root.path(),
            "0::/user.slice/app.scope\n",
            None,
            Some(FAKE_V2),
        )
        .unwrap();
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
        let sys = CgroupSystem::v2_with(
            root.path(),
            "0::/user.slice/app.scope\n",
            None,
            Some(FAKE_V2),
        )
        .unwrap();
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
        let sys = CgroupSystem::v2_with(
            root.path(),
            "0::/user.slice/app.scope\n",
            None,
            Some(FAKE_V2),
        )
        .unwrap();
        let first = sys.create("e", &limits()).unwrap();
        std::mem::forget(first); // A crashed host leaves the directory behind.
        let again = sys.create("e", &limits()).unwrap();
        again.remove().unwrap();
    }
}
