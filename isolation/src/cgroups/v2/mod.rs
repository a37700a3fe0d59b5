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

mod owner;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub(crate) use self::owner::Owner;
use super::cgroup::Dir;
use super::error::{CgroupError, Result, Unavailable};
use super::fs::{CgroupFs, mkdir, mkdir_fresh, read_pids, read_string, write_file};
use super::limits::{Notes, cpu_quota_us};
use super::paths::{self_cgroup_path, under};
use crate::level::Limits;

/// Controllers a sandbox wants, in the order they are enabled.
pub const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// The leaf the host itself moves to when `<base>` must enable controllers.
pub const HOST_LEAF: &str = "host";

/// CFS period used for `cpu.max`, microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

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
    /// Prepares the subtree sandboxes go under: `parent_override` or the host's own cgroup
    /// (from `proc_self_cgroup`), with the [`CONTROLLERS`] enabled where this host may.
    pub(crate) fn prepare(
        mount: &Path,
        proc_self_cgroup: &str,
        parent_override: Option<&Path>,
        fs: &dyn CgroupFs,
        owner: &Owner,
    ) -> Result<Self> {
        let base_rel = base_path(mount, proc_self_cgroup, parent_override)?;
        let base = under(mount, &base_rel);
        let is_root_cgroup = base == mount;
        if !fs.exists(&base) {
            // Create the override path one level at a time, like `mkdir -p`.
            let mut cur = mount.to_path_buf();
            for comp in Path::new(base_rel.trim_start_matches('/')).components() {
                cur.push(comp);
                mkdir(fs, &cur).map_err(|e| not_delegated_if_denied(&base, e))?;
            }
        }
        let available = read_string(fs, &base.join("cgroup.controllers")).map_err(|e| {
            Unavailable::Subtree {
                path: base.clone(),
                source: Box::new(e),
            }
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
        let enabled_now = read_string(fs, &subtree)?;
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
            let (moved, off) = enable_controllers(fs, &base, &value, is_root_cgroup, owner)?;
            if moved > 0 {
                notes.push(format!(
                    "moved the host ({moved} process(es)) into {}/{HOST_LEAF}",
                    base.display()
                ));
            }
            if let Some(why) = off {
                notes.push(why.clone());
                off_reason = Some(why);
            }
        }
        let enabled: Vec<String> = read_string(fs, &subtree)?
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

    /// The subtree, its enabled controllers, and what preparing it did or could not do.
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

    /// Creates `<base>/name` and writes `limits`; on error removes it.
    pub(crate) fn create(
        &self,
        name: &str,
        limits: &Limits,
        fs: &dyn CgroupFs,
        notes: &mut Notes,
    ) -> Result<Vec<Dir>> {
        let dir = self.base.join(name);
        mkdir_fresh(fs, &dir).map_err(|e| not_delegated_if_denied(&self.base, e))?;
        if let Err(e) = self.apply(fs, &dir, limits, notes) {
            let _ = fs.remove_dir(&dir);
            return Err(e);
        }
        Ok(vec![Dir {
            path: dir,
            controllers: self.enabled.clone(),
        }])
    }

    pub(crate) fn apply(
        &self,
        fs: &dyn CgroupFs,
        dir: &Path,
        limits: &Limits,
        notes: &mut Notes,
    ) -> Result<()> {
        let why = |c: &str| match &self.off_reason {
            Some(r) => format!("{c} controller not enabled in {}: {r}", self.base.display()),
            None => format!("{c} controller not enabled in {}", self.base.display()),
        };
        if let Some(m) = limits.max_memory {
            if self.has("memory") {
                write_file(fs, &dir.join("memory.max"), &m.to_string())?;
                notes.applied.push(format!("memory.max={m}"));
                let swap = dir.join("memory.swap.max");
                if fs.exists(&swap) {
                    write_file(fs, &swap, "0")?;
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
                write_file(fs, &dir.join("pids.max"), &p.to_string())?;
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
                write_file(fs, &dir.join("cpu.max"), &v)?;
                notes.applied.push(format!("cpu.max={v}"));
            } else {
                notes.missing.push(format!("cpu ({})", why("cpu")));
            }
        }
        Ok(())
    }
}

/// The cgroup path (`/a/b`) of the subtree sandboxes go under: `parent_override` (relative to
/// the mount, or an absolute path below it), else the host's own cgroup, or the parent of it
/// when the host runs in the leaf a previous host moved itself to.
fn base_path(
    mount: &Path,
    proc_self_cgroup: &str,
    parent_override: Option<&Path>,
) -> Result<String> {
    if let Some(p) = parent_override {
        return Ok(match p.strip_prefix(mount) {
            Ok(rel) => format!("/{}", rel.display()),
            Err(_) => format!("/{}", p.display().to_string().trim_start_matches('/')),
        });
    }
    let own =
        self_cgroup_path(proc_self_cgroup, str::is_empty).ok_or(Unavailable::NoUnifiedLine)?;
    // A host restarted from inside the leaf a previous host created.
    Ok(match own.rsplit_once('/') {
        Some(("", HOST_LEAF)) => "/".into(),
        Some((parent, HOST_LEAF)) => parent.into(),
        _ => own.into(),
    })
}

/// Writes `value` (`+memory +pids +cpu`) to `<base>/cgroup.subtree_control`, first moving this
/// host's own processes out of `<base>` (the no-internal-processes rule). Returns how many
/// processes moved and, when the controllers stay off, why.
fn enable_controllers(
    fs: &dyn CgroupFs,
    base: &Path,
    value: &str,
    is_root_cgroup: bool,
    owner: &Owner,
) -> Result<(usize, Option<String>)> {
    let subtree = base.join("cgroup.subtree_control");
    let mut moved = 0;
    let mut res = Ok(());
    // A child the host forks between reading `cgroup.procs` and the write lands in `<base>`
    // and makes it EBUSY: move again, a few rounds.
    for _round in 0..4 {
        if !is_root_cgroup {
            // Whose processes are in `<base>`: only this host's may move.
            let pids = read_pids(fs, &base.join("cgroup.procs"))?;
            let (ours, foreign): (Vec<i32>, Vec<i32>) =
                pids.into_iter().partition(|p| owner.owns(*p));
            if !foreign.is_empty() {
                return Ok((moved, Some(foreign_processes(base, foreign.len()))));
            }
            if !ours.is_empty() {
                match move_to_leaf(fs, base, &ours) {
                    Ok(n) => moved += n,
                    Err(e) if is_denied(&e) => {
                        res = Err(e);
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        res = write_file(fs, &subtree, value);
        if !matches!(&res, Err(e) if errno_of(e) == Some(libc::EBUSY)) || is_root_cgroup {
            break;
        }
    }
    match res {
        Ok(()) => Ok((moved, None)),
        Err(e) if is_denied(&e) || errno_of(&e) == Some(libc::EBUSY) => {
            Ok((moved, Some(format!("cannot enable controllers: {e}"))))
        }
        Err(e) => Err(e),
    }
}

/// `e`, or when it was refused, [`CgroupError::NotDelegated`] for `base`.
fn not_delegated_if_denied(base: &Path, e: CgroupError) -> CgroupError {
    if !is_denied(&e) {
        return e;
    }
    CgroupError::NotDelegated {
        path: base.to_path_buf(),
        uid: euid(),
        source: Box::new(e),
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
fn move_to_leaf(fs: &dyn CgroupFs, base: &Path, pids: &[i32]) -> Result<usize> {
    let leaf = base.join(HOST_LEAF);
    mkdir(fs, &leaf)?;
    let procs = leaf.join("cgroup.procs");
    let mut moved = 0;
    for &pid in pids {
        // One pid per write(2), as cgroupfs requires.
        let value = format!("{pid}\n");
        match fs.write(&procs, &value) {
            Ok(()) => moved += 1,
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
    Ok(moved)
}
