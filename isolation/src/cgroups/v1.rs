//! cgroup v1 (legacy or hybrid hierarchy): one directory per hierarchy.
//!
//! For each of the memory, pids, cpu, cpuacct and freezer hierarchies (two of them may share a
//! mount, e.g. `cpu,cpuacct`), sandboxes go under `<mount><host's own path>/sandbox-host`, or
//! under `<mount>/<--cgroup-parent>`. Using the host's own path keeps a nested host (like this
//! machine's job runner in `memory:/process_api/<id>`) accounted where it already is.
//!
//! Per sandbox: `memory.limit_in_bytes` (+ `memory.memsw.limit_in_bytes`, same value, where swap
//! accounting exists), `pids.max`, `cpu.cfs_period_us` + `cpu.cfs_quota_us`.

use std::path::{Path, PathBuf};

use super::cgroup::Dir;
use super::error::{CgroupError, Result, Unavailable, UnusableHierarchy};
use super::fs::{CgroupFs, mkdir, mkdir_fresh, write_file};
use super::limits::{Notes, cpu_quota_us};
use super::paths::{self_cgroup_path, under};
use crate::level::Limits;

/// Controllers used on v1.
pub const CONTROLLERS: [&str; 5] = ["memory", "pids", "cpu", "cpuacct", "freezer"];

/// Name of the per-host parent directory in each hierarchy.
pub const PARENT_NAME: &str = "sandbox-host";

/// CFS period used for `cpu.cfs_period_us`, microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// (controller, mount point) of every v1 hierarchy carrying one of [`CONTROLLERS`], from the
/// text of `/proc/self/mountinfo`.
pub fn parse_mountinfo(mountinfo: &str) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for m in crate::mountinfo::parse(mountinfo.as_bytes()) {
        if m.fs_type != "cgroup" {
            continue;
        }
        for opt in &m.super_options {
            if CONTROLLERS.contains(&opt.as_str()) && !out.iter().any(|(c, _)| c == opt) {
                out.push((opt.clone(), m.mount_point.clone()));
            }
        }
    }
    out
}

#[derive(Debug)]
struct Hier {
    controllers: Vec<String>,
    parent: PathBuf,
}

/// Prepared v1 hierarchies.
#[derive(Debug)]
pub(crate) struct V1System {
    hiers: Vec<Hier>,
    unusable: Vec<UnusableHierarchy>,
}

impl V1System {
    /// Prepares `<mount><own path or parent_override>/sandbox-host` in every hierarchy of
    /// `mounts`; a hierarchy where that fails is left out (and described).
    pub(crate) fn prepare(
        mounts: &[(String, PathBuf)],
        proc_self_cgroup: &str,
        parent_override: Option<&Path>,
        fs: &dyn CgroupFs,
    ) -> Result<Self> {
        // Group controllers that share a mount (e.g. cpu,cpuacct).
        let mut groups: Vec<(PathBuf, Vec<String>)> = Vec::new();
        for (c, m) in mounts {
            match groups.iter_mut().find(|(gm, _)| gm == m) {
                Some((_, cs)) => cs.push(c.clone()),
                None => groups.push((m.clone(), vec![c.clone()])),
            }
        }
        let rank = |c: &String| {
            CONTROLLERS
                .iter()
                .position(|x| x == c)
                .unwrap_or(usize::MAX)
        };
        groups.sort_by_key(|(_, cs)| cs.iter().map(rank).min());
        let mut hiers = Vec::new();
        let mut unusable = Vec::new();
        for (mount, ctrls) in groups {
            let (rel, parent) = match parent_override {
                Some(p) => {
                    let rel = p.display().to_string();
                    let rel = format!("/{}", rel.trim_start_matches('/'));
                    (rel.clone(), under(&mount, &rel))
                }
                None => {
                    let own = self_cgroup_path(proc_self_cgroup, |cs| {
                        cs.split(',').any(|x| ctrls.iter().any(|c| c == x))
                    })
                    .unwrap_or("/");
                    let rel = format!("{}/{PARENT_NAME}", own.trim_end_matches('/'));
                    (rel.clone(), under(&mount, &rel))
                }
            };
            match mkdir_p(fs, &mount, &rel) {
                Ok(()) => hiers.push(Hier {
                    controllers: ctrls,
                    parent,
                }),
                Err(source) => unusable.push(UnusableHierarchy {
                    controllers: ctrls,
                    source,
                }),
            }
        }
        if hiers.is_empty() {
            return Err(Unavailable::NoUsableV1 { unusable }.into());
        }
        Ok(Self { hiers, unusable })
    }

    /// Where sandboxes go in each hierarchy, and the unusable ones.
    pub(crate) fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .hiers
            .iter()
            .map(|h| format!("{}={}", h.controllers.join(","), h.parent.display()))
            .collect();
        parts.extend(self.unusable.iter().map(|u| format!("unusable {u}")));
        format!("v1 {}", parts.join(", "))
    }

    fn find(&self, dirs: &[Dir], c: &str) -> Option<PathBuf> {
        dirs.iter()
            .find(|d| d.controllers.iter().any(|x| x == c))
            .map(|d| d.path.clone())
    }

    /// Creates `name` in every hierarchy and writes `limits`; on error removes what it made.
    pub(crate) fn create(
        &self,
        name: &str,
        limits: &Limits,
        fs: &dyn CgroupFs,
        notes: &mut Notes,
    ) -> Result<Vec<Dir>> {
        let mut dirs: Vec<Dir> = Vec::new();
        let cleanup = |dirs: &[Dir]| {
            for d in dirs {
                let _ = fs.remove_dir(&d.path);
            }
        };
        for h in &self.hiers {
            let path = h.parent.join(name);
            if let Err(e) = mkdir_fresh(fs, &path) {
                cleanup(&dirs);
                return Err(match e {
                    CgroupError::Mkdir { path, source }
                        if matches!(source.raw_os_error(), Some(libc::EACCES | libc::EPERM)) =>
                    {
                        // SAFETY: geteuid(2) cannot fail.
                        let uid = unsafe { libc::geteuid() };
                        CgroupError::NotPermitted { path, uid, source }
                    }
                    e => e,
                });
            }
            dirs.push(Dir {
                path,
                controllers: h.controllers.clone(),
            });
        }
        if let Err(e) = self.apply(fs, &dirs, limits, notes) {
            cleanup(&dirs);
            return Err(e);
        }
        Ok(dirs)
    }

    pub(crate) fn apply(
        &self,
        fs: &dyn CgroupFs,
        dirs: &[Dir],
        limits: &Limits,
        notes: &mut Notes,
    ) -> Result<()> {
        let why = |c: &str| format!("no v1 {c} hierarchy");
        if let Some(m) = limits.max_memory {
            match self.find(dirs, "memory") {
                Some(d) => {
                    write_file(fs, &d.join("memory.limit_in_bytes"), &m.to_string())?;
                    notes.applied.push(format!("memory.limit_in_bytes={m}"));
                    let memsw = d.join("memory.memsw.limit_in_bytes");
                    if fs.exists(&memsw) {
                        write_file(fs, &memsw, &m.to_string())?;
                        notes.applied.push("memsw=same (no swap)".into());
                    }
                }
                None => notes
                    .missing
                    .push(format!("max_memory ({})", why("memory"))),
            }
        }
        if let Some(p) = limits.max_processes {
            match self.find(dirs, "pids") {
                Some(d) => {
                    write_file(fs, &d.join("pids.max"), &p.to_string())?;
                    notes.applied.push(format!("pids.max={p}"));
                }
                None => notes
                    .missing
                    .push(format!("max_processes ({})", why("pids"))),
            }
        }
        if let Some(frac) = limits.cpu {
            match self.find(dirs, "cpu") {
                Some(d) => {
                    let q = cpu_quota_us(frac, CPU_PERIOD_US);
                    write_file(fs, &d.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    write_file(fs, &d.join("cpu.cfs_quota_us"), &q.to_string())?;
                    notes
                        .applied
                        .push(format!("cfs_quota_us={q}/{CPU_PERIOD_US}"));
                }
                None => notes.missing.push(format!("cpu ({})", why("cpu"))),
            }
        }
        Ok(())
    }
}

/// `mkdir -p <mount><rel>`, one level at a time (each level is a cgroup of its own).
fn mkdir_p(fs: &dyn CgroupFs, mount: &Path, rel: &str) -> Result<()> {
    let mut cur = mount.to_path_buf();
    for comp in Path::new(rel.trim_start_matches('/')).components() {
        cur.push(comp);
        if !fs.exists(&cur) {
            mkdir(fs, &cur)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use std::sync::Arc;

    use super::super::testing::FakeCgroupFs;
    use super::super::{CgroupSystem, CgroupUsage, CgroupVersion};
    use super::*;

    /// A v1 system on the fake hierarchies `mounts` below `root`.
    fn v1(
        root: &Path,
        mounts: &[(String, PathBuf)],
        self_cgroup: &str,
        parent: Option<&Path>,
    ) -> Result<CgroupSystem> {
        let fs = Arc::new(FakeCgroupFs::v1(root));
        CgroupSystem::v1_with(mounts, self_cgroup, parent, fs)
    }

    const MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:4 - tmpfs tmpfs ro,mode=755
33 30 0:29 / /sys/fs/cgroup/cpu rw,relatime shared:8 - cgroup cgroup rw,cpu
34 30 0:30 / /sys/fs/cgroup/cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpuacct
36 30 0:32 / /sys/fs/cgroup/memory rw,relatime shared:11 - cgroup cgroup rw,memory
38 30 0:34 / /sys/fs/cgroup/freezer rw,relatime shared:13 - cgroup cgroup rw,freezer
40 30 0:36 / /sys/fs/cgroup/pids rw,relatime shared:15 - cgroup cgroup rw,pids
41 30 0:37 / /sys/fs/cgroup/unified rw,relatime shared:16 - cgroup2 cgroup2 rw
42 30 0:38 / /sys/fs/cgroup/cpu,cpuacct\\040x rw,relatime shared:17 - cgroup cgroup rw,cpu,cpuacct
";

    #[test]
    fn mountinfo_parses_first_mount_per_controller() {
        let m = parse_mountinfo(MOUNTINFO);
        let names: Vec<&str> = m.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(names, ["cpu", "cpuacct", "memory", "freezer", "pids"]);
        assert_eq!(m[2].1, PathBuf::from("/sys/fs/cgroup/memory"));
    }

    fn fake_mounts(root: &Path, combined_cpu: bool) -> Vec<(String, PathBuf)> {
        let mut v = vec![
            ("memory".to_string(), root.join("memory")),
            ("pids".to_string(), root.join("pids")),
            ("freezer".to_string(), root.join("freezer")),
        ];
        if combined_cpu {
            v.push(("cpu".into(), root.join("cpu,cpuacct")));
            v.push(("cpuacct".into(), root.join("cpu,cpuacct")));
        } else {
            v.push(("cpu".into(), root.join("cpu")));
            v.push(("cpuacct".into(), root.join("cpuacct")));
        }
        for (_, m) in &v {
            fs::create_dir_all(m).unwrap();
        }
        fs::create_dir_all(root.join("memory/process_api/abc")).unwrap();
        v
    }

    const SELF_CGROUP: &str = "9:name=systemd:/\n8:pids:/\n6:freezer:/\n4:memory:/process_api/abc\n\
        2:cpuacct:/\n1:cpu:/\n0::/\n";

    #[test]
    fn creates_per_hierarchy_dirs_with_limits() {
        let d = tempfile::tempdir().unwrap();
        let mounts = fake_mounts(d.path(), false);
        let sys = v1(d.path(), &mounts, SELF_CGROUP, None).unwrap();
        assert_eq!(sys.version(), CgroupVersion::V1);
        let limits = Limits {
            max_memory: Some(64 << 20),
            max_processes: Some(16),
            cpu: Some(0.25),
            ..Limits::default()
        };
        let cg = sys.create("t1", &limits).unwrap();
        let mem = d
            .path()
            .join("memory/process_api/abc/sandbox-host/sandbox-t1");
        let pids = d.path().join("pids/sandbox-host/sandbox-t1");
        let cpu = d.path().join("cpu/sandbox-host/sandbox-t1");
        let paths = cg.paths();
        assert!(
            paths.contains(&mem) && paths.contains(&pids) && paths.contains(&cpu),
            "{paths:?}"
        );
        assert_eq!(paths.len(), 5);
        assert_eq!(cg.open_entry().unwrap().files.len(), 5);
        let rd = |p: &Path| fs::read_to_string(p).unwrap();
        assert_eq!(
            rd(&mem.join("memory.limit_in_bytes")),
            (64u64 << 20).to_string()
        );
        assert_eq!(
            rd(&mem.join("memory.memsw.limit_in_bytes")),
            (64u64 << 20).to_string()
        );
        assert_eq!(rd(&pids.join("pids.max")), "16");
        assert_eq!(rd(&cpu.join("cpu.cfs_quota_us")), "25000");
        assert_eq!(rd(&cpu.join("cpu.cfs_period_us")), "100000");
        let e = cg.report_entry();
        assert!(e.applied, "{}", e.detail);
        assert!(
            e.detail
                .starts_with("v1 memory+pids+cpu+cpuacct+freezer at "),
            "{}",
            e.detail
        );

        fs::write(pids.join("cgroup.procs"), "7\n8\n").unwrap();
        let usage = CgroupUsage {
            memory_bytes: Some(4096000),
            memory_peak_bytes: Some(5000000),
            pids: Some(2),
            cpu_time_us: Some(5000),
            oom_kills: Some(2),
            pids_limit_hits: Some(5),
            procs: vec![7, 8],
        };
        assert_eq!(cg.usage().unwrap(), usage);
        // Freeze -> kill (the fake takes the pids out of cgroup.procs) -> thaw.
        cg.kill_all().unwrap();
        assert!(cg.pids().unwrap().is_empty());
        assert_eq!(
            rd(&d
                .path()
                .join("freezer/sandbox-host/sandbox-t1/freezer.state")),
            "THAWED"
        );
        cg.remove().unwrap();
        assert!(!mem.exists() && !pids.exists() && !cpu.exists());
        // The shared parent stays.
        assert!(d.path().join("pids/sandbox-host").is_dir());
    }

    #[test]
    fn combined_cpu_cpuacct_mount_is_one_dir() {
        let d = tempfile::tempdir().unwrap();
        let mounts = fake_mounts(d.path(), true);
        let self_cg = "8:pids:/\n6:freezer:/\n4:memory:/\n1:cpu,cpuacct:/x\n";
        let sys = v1(d.path(), &mounts, self_cg, None).unwrap();
        let cg = sys
            .create(
                "t2",
                &Limits {
                    cpu: Some(1.0),
                    ..Limits::default()
                },
            )
            .unwrap();
        let cpu = d.path().join("cpu,cpuacct/x/sandbox-host/sandbox-t2");
        assert_eq!(cg.paths().len(), 4);
        assert_eq!(
            fs::read_to_string(cpu.join("cpu.cfs_quota_us")).unwrap(),
            "100000"
        );
        assert_eq!(cg.usage().unwrap().cpu_time_us, Some(5000));
    }

    #[test]
    fn override_and_missing_hierarchy() {
        let d = tempfile::tempdir().unwrap();
        let mounts = vec![("memory".to_string(), d.path().join("memory"))];
        fs::create_dir_all(d.path().join("memory")).unwrap();
        let sys = v1(
            d.path(),
            &mounts,
            "4:memory:/\n",
            Some(Path::new("my/parent")),
        )
        .unwrap();
        let cg = sys
            .create(
                "t3",
                &Limits {
                    max_processes: Some(5),
                    ..Limits::default()
                },
            )
            .unwrap();
        assert_eq!(
            cg.paths(),
            vec![d.path().join("memory/my/parent/sandbox-t3")]
        );
        assert_eq!(cg.missing(), ["max_processes (no v1 pids hierarchy)"]);
        assert!(!cg.report_entry().applied);
    }

    #[test]
    fn nothing_usable_is_unavailable() {
        let d = tempfile::tempdir().unwrap();
        let err = v1(d.path(), &[], "", None).unwrap_err();
        assert!(matches!(err, CgroupError::Unavailable(_)), "{err}");
        assert_eq!(
            err.to_string(),
            "cgroups unavailable: no usable v1 hierarchy: none mounted"
        );
    }
}
