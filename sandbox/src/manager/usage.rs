//! Usage: a sandbox measured from its cgroup and `/proc`, never from the app.
use super::*;

impl Manager {
    /// Measures a sandbox's usage from `/proc`.
    pub async fn usage(&self, id: &str) -> Result<Usage, SandboxError> {
        let sb = self.get(id)?;
        let live = sb.live().await?;
        let pid = live.process.pid();
        let app_dir = if sb.own_root.load(Ordering::Acquire) {
            PathBuf::from(isolation::root::APP_DIR)
        } else {
            sb.app_dir()
        };
        let cgroup = sb.cgroup();
        let own_root = sb.own_root.load(Ordering::Acquire);
        // Through the app process's root: init is not dumpable, so a non-root host may not
        // look into its /proc files.
        let app_pid = live.app_pid;
        let sample = tokio::task::spawn_blocking(move || {
            let disk = own_root
                .then(|| procfs::disk_usage(app_pid, isolation::root::WORK_DIR))
                .flatten();
            sample(pid, app_pid, cgroup.as_deref(), Some(&app_dir)).map(|s| (s, disk))
        })
        .await
        .map_err(|e| SandboxError::Protocol(format!("usage task: {e}")))?;
        let Some((sample, disk)) = sample else {
            return Err(death_of(&sb.id, &live).await);
        };
        let cpu_time_ms = sample.cpu_time_ms;
        let now = Instant::now();
        let cpu_percent = {
            let mut prev = sb.cpu_prev.lock().unwrap();
            let (since, before) = prev.unwrap_or((sb.created, 0));
            *prev = Some((now, cpu_time_ms));
            let wall_ms = now.duration_since(since).as_secs_f64() * 1000.0;
            if wall_ms > 0.0 {
                (cpu_time_ms.saturating_sub(before) as f64 / wall_ms * 100.0 * 10.0).round() / 10.0
            } else {
                0.0
            }
        };
        Ok(Usage {
            sandbox_id: sb.id.clone(),
            pid,
            processes: sample.processes,
            threads: sample.threads,
            memory_bytes: sample.memory_bytes,
            memory_peak_bytes: sample.memory_peak_bytes,
            oom_kills: sample.oom_kills,
            cpu_time_ms,
            cpu_percent,
            open_fds: sample.open_fds,
            uptime_ms: sb.created.elapsed().as_millis() as u64,
            restart_count: sb.restart_count.load(Ordering::Acquire),
            worker_restarts: sb.worker_restarts.load(Ordering::Acquire),
            app_version: sb.current.load(Ordering::Acquire),
            mapped_app_copies: sample.mapped_copies,
            disk_bytes: disk.map(|d| d.0),
            disk_files: disk.map(|d| d.1),
            source: sample.source.into(),
        })
    }
}

/// The figures a watcher samples often: what [`Usage`] counts, without the dear parts (the
/// app's mapped copies, the disk) and without touching the `cpu_percent` window other
/// callers share (a watcher derives its own rate from `cpu_time_ms`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gauges {
    /// Live processes.
    pub processes: u64,
    /// Threads.
    pub threads: u64,
    /// Memory in bytes, as [`Usage::memory_bytes`].
    pub memory_bytes: u64,
    /// CPU time in milliseconds, including reaped children.
    pub cpu_time_ms: u64,
    /// Open file descriptors.
    pub open_fds: u64,
}

impl Manager {
    /// [`Gauges`] of each live sandbox of `ids`, read in one blocking pass (one thread
    /// hand-off per call, not per sandbox); sandboxes gone, crashed or restarting are left out.
    pub async fn gauges(&self, ids: &[String]) -> Vec<(String, Gauges)> {
        let mut targets = Vec::with_capacity(ids.len());
        for id in ids {
            let Ok(sb) = self.get(id) else { continue };
            let Ok(live) = sb.live().await else { continue };
            targets.push((id.clone(), live.process.pid(), live.app_pid, sb.cgroup()));
        }
        tokio::task::spawn_blocking(move || {
            targets
                .into_iter()
                .filter_map(|(id, pid, app_pid, cgroup)| {
                    let s = sample(pid, app_pid, cgroup.as_deref(), None)?;
                    Some((
                        id,
                        Gauges {
                            processes: s.processes,
                            threads: s.threads,
                            memory_bytes: s.memory_bytes,
                            cpu_time_ms: s.cpu_time_ms,
                            open_fds: s.open_fds,
                        },
                    ))
                })
                .collect()
        })
        .await
        .unwrap_or_default()
    }
}

/// One usage sample, read on a blocking thread.
struct Sample {
    processes: u64,
    threads: u64,
    memory_bytes: u64,
    memory_peak_bytes: Option<u64>,
    oom_kills: Option<u64>,
    cpu_time_ms: u64,
    open_fds: u64,
    mapped_copies: usize,
    source: &'static str,
}

/// Largest sandbox whose open fds are counted process by process; above it only the runner's
/// fds are counted, so one usage read stays cheap for a sandbox of thousands of processes.
const FD_COUNT_LIMIT: usize = 100;

/// Reads usage of the sandbox whose init is `pid` and app process `app_pid` from the
/// cgroup's counters when there is a cgroup (cheap and independent of
/// the number of processes; the cgroup's memory figure, not summed RSS, which counts shared
/// pages once per process), else from one pass over `/proc`.
/// `app_dir` absent: the mapped copies are not counted (reading `maps` is most of the cost).
fn sample(
    pid: i32,
    app_pid: i32,
    cgroup: Option<&Cgroup>,
    app_dir: Option<&Path>,
) -> Option<Sample> {
    // The app's copies are mapped by the app process (init never loads it).
    let mapped_copies = app_dir.map_or(0, |dir| procfs::mapped_copies(app_pid, dir));
    if let Some(u) = cgroup.and_then(|cg| cg.usage().ok())
        && !u.procs.is_empty()
    {
        let open_fds = if u.procs.len() <= FD_COUNT_LIMIT {
            u.procs.iter().map(|&p| procfs::open_fds(p)).sum()
        } else {
            procfs::open_fds(pid)
        };
        let threads = match u.pids {
            Some(tasks) => tasks,
            None => procfs::stats_of(&u.procs).iter().map(|p| p.threads).sum(),
        };
        let memory_bytes = match u.memory_bytes {
            Some(m) => m,
            None => {
                procfs::stats_of(&u.procs)
                    .iter()
                    .map(|p| p.rss_pages)
                    .sum::<u64>()
                    * procfs::page_size()
            }
        };
        return Some(Sample {
            processes: u.procs.len() as u64,
            threads,
            memory_bytes,
            memory_peak_bytes: u.memory_peak_bytes,
            oom_kills: u.oom_kills,
            cpu_time_ms: u.cpu_time_us.map(|us| us / 1000).unwrap_or(0),
            open_fds,
            mapped_copies,
            source: "cgroup",
        });
    }
    let procs = procfs::tree(pid);
    let root = procs.first()?;
    let tick_ms = 1000 / procfs::ticks_per_second().max(1);
    Some(Sample {
        processes: procs.len() as u64,
        threads: procs.iter().map(|p| p.threads).sum(),
        memory_bytes: procs.iter().map(|p| p.rss_pages).sum::<u64>() * procfs::page_size(),
        memory_peak_bytes: None,
        oom_kills: None,
        cpu_time_ms: (procs.iter().map(|p| p.cpu_ticks).sum::<u64>() + root.child_cpu_ticks)
            * tick_ms,
        open_fds: procs
            .iter()
            .take(FD_COUNT_LIMIT)
            .map(|p| procfs::open_fds(p.pid))
            .sum(),
        mapped_copies,
        source: "proc",
    })
}
