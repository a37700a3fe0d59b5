//! Starting a sandbox and its runner: the sandbox directory, the library, the cgroup, then
//! the spawn (plan, clone, `init` on the control plane, `load` on the data plane) and the
//! isolation report checked against the kernel.
use super::*;

impl Manager {
    pub(super) async fn start_new(
        &self,
        sb: &Arc<Sandbox>,
        mut prepared: Option<Prepared>,
        prebuilt: Option<PathBuf>,
    ) -> Result<(), SandboxError> {
        // A prepared runner comes with its directory (the sandbox's from now on).
        if prepared.is_none() {
            std::fs::create_dir_all(&sb.dir).map_err(|e| SandboxError::io(&sb.dir, e))?;
            for sub in ["app", "work", "root"] {
                let d = sb.dir.join(sub);
                std::fs::create_dir(&d).map_err(|e| SandboxError::io(&d, e))?;
            }
            crate::tenant_files::write(&sb.dir, &sb.spec.files)?;
        }
        let built = match (&sb.spec.app, prebuilt) {
            (_, Some(lib)) => lib,
            (AppSource::Library(path), None) => path.clone(),
            (AppSource::Crate(dir), None) => self.inner.config.compiler.build(dir).await?.lib,
        };
        let started = Instant::now();
        // One hand-off to a blocking thread for the read and the link (the nested ones are
        // then free), not one each.
        let libraries = &self.inner.libraries;
        let record =
            library::blocking(|| install_version(libraries, sb, &libraries.read(&built)?, 1))?;
        let install_us = micros(started);
        sb.versions.lock().unwrap().push(record.clone());
        // A prepared runner's cgroup was made with it (its processes entered it at their
        // clone): only the tenant's limits are written now.
        if let Some(mut cg) = prepared.as_mut().and_then(|p| p.cgroup.take()) {
            let applied = match Arc::get_mut(&mut cg) {
                Some(c) => c
                    .apply_limits(&sb.spec.limits, None)
                    .map(|()| c.report_entry())
                    .unwrap_or_else(|e| ReportEntry::missing(Mechanism::Cgroup, e.to_string())),
                None => ReportEntry::missing(Mechanism::Cgroup, "the prepared cgroup is shared"),
            };
            *sb.cgroup.lock().unwrap() = Some(cg);
            applied
                .check(sb.spec.isolation)
                .map_err(SandboxError::Kernel)?;
            *sb.cgroup_entry.lock().unwrap() = Some(applied);
        } else if sb.spec.isolation.isolates() {
            let name = sb
                .dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or(&sb.id)
                .replace('.', "-");
            let entry =
                match Cgroup::create(&name, &sb.spec.limits, sb.spec.cgroup_parent.as_deref()) {
                    Ok(cg) => {
                        let entry = cg.report_entry();
                        *sb.cgroup.lock().unwrap() = Some(Arc::new(cg));
                        entry
                    }
                    Err(e) => ReportEntry::missing(Mechanism::Cgroup, e.to_string()),
                };
            entry
                .check(sb.spec.isolation)
                .map_err(SandboxError::Kernel)?;
            *sb.cgroup_entry.lock().unwrap() = Some(entry);
        }
        let fix = match sb.spec.isolation.isolates() {
            true => proto::limits::FIX,
            false => "use --isolation standard",
        };
        *sb.warnings.lock().unwrap() = limit_states::states_of(sb, Ok(None))
            .iter()
            .filter_map(|s| s.warning(fix))
            .collect();
        if !is_root() {
            // Said, not hidden: a non-root host cannot give the sandbox a uid of its own.
            sb.warnings
                .lock()
                .unwrap()
                .push(SHARED_UID_WARNING.to_string());
        }
        for warning in sb.warnings.lock().unwrap().iter() {
            tracing::warn!(sandbox = %sb.id, "{warning}");
        }
        let cgroup_us = micros(started) - install_us;
        sb.current.store(1, Ordering::Release);
        match prepared {
            Some(prepared) => self.start_prepared(sb, &record, prepared).await?,
            None => self.start_runner(sb, &record).await?,
        }
        {
            let mut startup = sb.startup.lock().unwrap();
            startup.install_us = install_us;
            startup.cgroup_us = cgroup_us;
        }
        sb.set_status(Status::Running, None);
        Ok(())
    }

    /// Spawns a runner for `record` and waits for it to be ready. Boxed because the runner's
    /// watcher, which this spawns, restarts a dead runner through this very function.
    pub(super) fn start_runner<'a>(
        &'a self,
        sb: &'a Arc<Sandbox>,
        record: &'a VersionRecord,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SandboxError>> + Send + 'a>>
    {
        Box::pin(self.start_runner_inner(sb, record))
    }

    pub(super) async fn start_runner_inner(
        &self,
        sb: &Arc<Sandbox>,
        record: &VersionRecord,
    ) -> Result<(), SandboxError> {
        let started = Instant::now();
        sb.log.before_spawn(&sb.dir);
        let plan = self.prepare_spawn(&PlanInput::tenant(sb))?;
        let prepare_us = micros(started);
        sb.own_root.store(plan.own_root, Ordering::Release);
        sb.pid_ns.store(plan.pid_ns, Ordering::Release);
        let generation = sb.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let owner: Owner = Arc::new(std::sync::OnceLock::new());
        let _ = owner.set((Arc::downgrade(sb), generation));
        let mut booted = self
            .boot(plan, sb.lib_for_runner(record), record.version, owner)
            .await?;
        booted.timings.prepare_us = prepare_us;
        self.attach(sb, record, booted).await
    }

    /// Gives a booted runner its app: `load` on the data plane, the report checked against
    /// the kernel, the initial workers; then the runner is the sandbox's live one.
    pub(super) async fn attach(
        &self,
        sb: &Arc<Sandbox>,
        record: &VersionRecord,
        mut booted: Booted,
    ) -> Result<(), SandboxError> {
        let started = Instant::now();
        let pid = booted.process.pid();
        let app_pid = booted.app_pid;
        let load = Request::Load {
            lib: sb.lib_for_runner(record),
            version: record.version,
            env: sb.spec.env.clone(),
            config: sb.spec.config.clone(),
            rlimits: booted.load_rlimits.take(),
        };
        let timeout = self.inner.config.start_timeout;
        let loaded: Loaded = match booted.data.request(load, timeout).await {
            Ok(Ok(value)) => match serde_json::from_value(value) {
                Ok(loaded) => loaded,
                Err(e) => {
                    booted.kill();
                    return Err(SandboxError::Protocol(format!("app process: {e}")));
                }
            },
            Ok(Err(err)) => {
                booted.kill();
                return Err(SandboxError::InitFailed(err.message));
            }
            Err(e) => return Err(booted.failure(e).await),
        };
        // A prepared runner's assignment requests (init's rlimits), sent before `load`: each
        // must have succeeded before the sandbox goes live (and before any worker, which the
        // control plane starts only after them).
        for (what, reply) in std::mem::take(&mut booted.pending) {
            let failed = match tokio::time::timeout(timeout, reply).await {
                Ok(Ok(Ok(_))) => None,
                Ok(Ok(Err(e))) => Some(e.message),
                Ok(Err(e)) => Some(format!("{e:?}")),
                Err(_) => Some("no answer in time".into()),
            };
            if let Some(why) = failed {
                booted.kill();
                return Err(SandboxError::Isolation(format!(
                    "give a prepared runner its sandbox: {what}: {why}"
                )));
            }
        }
        let load_round_us = micros(started);
        if let Some(r) = sb
            .versions
            .lock()
            .unwrap()
            .iter_mut()
            .find(|v| v.version == record.version)
        {
            r.app_version.clone_from(&loaded.app_version);
        }
        let applied: Vec<ReportEntry> =
            serde_json::from_value(booted.ready.restrictions.clone()).unwrap_or_default();
        let level = sb.spec.isolation;
        let mut report = std::mem::take(&mut booted.report);
        let check_started = Instant::now();
        // What the report says is what the kernel shows of init and of the app process, not
        // what init or the spawn sequence claims: an entry holds only if both show it.
        // A prepared runner was read when it was booted: it has run only the runner's code
        // since (its app process has just answered `load` on the socket only it holds, and
        // init's pidfd says it is the same process), and nothing in that code changes what
        // the view shows (ids, namespaces, mounts, the filter, no_new_privs, capabilities).
        let views = match booted.kernel_views.take() {
            Some(views) if !booted.process.exited() => views,
            _ => std::iter::once(pid)
                .chain((app_pid > 0).then_some(app_pid))
                .map(KernelView::read)
                .collect(),
        };
        let checked = report.record_all(level, applied).and_then(|()| {
            for view in &views {
                view.check(&mut report);
            }
            report.check(level)
        });
        if let Err(e) = checked {
            booted.kill();
            return Err(SandboxError::Kernel(e));
        }
        *sb.isolation.lock().unwrap() = serde_json::json!({"level": level, "mechanisms": report});
        *sb.startup.lock().unwrap() = StartupTimings {
            ready_us: booted.timings.ready_us + load_round_us,
            load_us: loaded.load_us,
            check_us: micros(check_started),
            ..booted.timings
        };
        // The app's initial workers: the count is its own word, bounded by init. Sent before
        // the sandbox is live, so a `workers` request queues behind it; not awaited, so the
        // first call does not wait for their execs.
        if !sb.spec.env.is_empty() {
            // Before any worker: the control plane serves requests in order.
            let env = Request::SetEnv {
                env: sb.spec.env.clone(),
            };
            if let Err(e) = booted.control.send(env).await {
                booted.kill();
                return Err(SandboxError::Protocol(format!("set_env: {e:?}")));
            }
        }
        if loaded.initial_workers > 0 {
            let count = loaded.initial_workers.min(MAX_INITIAL_WORKERS);
            let reply = booted.control.send(Request::SpawnWorkers { count }).await;
            let for_reply = Arc::downgrade(sb);
            tokio::spawn(async move {
                let failed = match reply {
                    Ok(reply) => match reply.await {
                        Ok(Err(e)) => Some(e.message),
                        _ => None,
                    },
                    Err(_) => None,
                };
                if let (Some(reason), Some(sb)) = (failed, for_reply.upgrade()) {
                    handle_event(
                        &sb,
                        Event::Crashed {
                            reason: format!("initial workers: {reason}"),
                        },
                    );
                }
            });
        }
        // A destroy that raced this (re)start has taken the old runner: this one must not
        // outlive it. Checked under the lock a destroy takes after setting `destroying`, so
        // either it sees this runner or this sees the destroy.
        let mut slot = sb.live.write().await;
        if sb.destroying.load(Ordering::Acquire) {
            drop(slot);
            booted.kill();
            let mut exit = booted.exit.clone();
            let _ =
                tokio::time::timeout(Duration::from_secs(2), exit.wait_for(|e| e.is_some())).await;
            self.clean_after_raced_start(sb);
            return Err(SandboxError::NotFound(sb.id.clone()));
        }
        let live = Live {
            process: booted.process,
            control: booted.control,
            data: booted.data,
            app_pid,
            app_name: loaded.app_name,
            exit: booted.exit,
        };
        *slot = Some(Arc::new(live));
        Ok(())
    }

    /// Plans the isolation of one runner (namespaces, mounts, rlimits, self-restrictions) and
    /// starts the isolation report with what the host side will apply.
    pub(super) fn prepare_spawn(&self, sb: &PlanInput<'_>) -> Result<Plan, SandboxError> {
        let iso = SandboxError::Kernel;
        let level = sb.level;
        let runner_exe = self
            .inner
            .config
            .runner_exe
            .canonicalize()
            .unwrap_or_else(|_| self.inner.config.runner_exe.clone());
        let app_dir = sb.dir.join("app");
        let work_dir = sb.dir.join("work");
        let mut report = Report::new();
        if let Some(entry) = sb.cgroup_entry.clone() {
            report.record(level, entry).map_err(iso)?;
        } else if !level.isolates() {
            report
                .record(
                    level,
                    ReportEntry::missing(Mechanism::Cgroup, "isolation level none"),
                )
                .map_err(iso)?;
        }
        let root = is_root();
        let plan = namespaces::plan(level, sb.network, root).map_err(iso)?;
        let disk_bytes = sb
            .limits
            .max_disk
            .unwrap_or(isolation::root::DEFAULT_DISK_BYTES);
        let switch_ids = (root && level.isolates()).then_some(sb.ids);
        let setup = ChildSetup::new(
            &plan,
            &ChildOptions {
                app_dir: level.isolates().then(|| app_dir.clone()),
                private_tmp: true,
                tmp_size: Some(disk_bytes),
                workdir: Some(work_dir.clone()),
                keep_visible: vec![work_dir.clone(), runner_exe.clone()],
                no_new_privs: true,
                drop_capabilities: level.isolates(),
                root: level.isolates().then(|| RootOptions {
                    mountpoint: sb.dir.join("root"),
                    runner_exe: runner_exe.clone(),
                    app_dir: Some(app_dir.clone()),
                    disk_bytes,
                    owner: switch_ids,
                    proc: true,
                    extra_binds: crate::tenant_files::binds(sb.dir, sb.files),
                }),
                switch_ids,
            },
        )
        .map_err(iso)?;
        report
            .record_all(level, setup.report_entries().iter().cloned())
            .map_err(iso)?;
        let rlimits = Rlimits::from_limits(sb.limits, root);
        if sb.tenant {
            report.record(level, rlimits.report_entry()).map_err(iso)?;
        }
        // In a root of its own the runner sees only the fixed in-sandbox paths; otherwise it
        // sees the host's.
        let own_root = setup.own_root();
        let (has_own_root, pid_ns) = (own_root.is_some(), setup.has_pid_ns());
        let paths = match own_root {
            Some(r) => SandboxPaths {
                runner_exe: isolation::root::RUNNER.into(),
                app_dir: Some(isolation::root::APP_DIR.into()),
                private_dir: isolation::root::WORK_DIR.into(),
                own_proc: setup.has_own_proc(),
                private_tmp: true,
                network: sb.network,
                own_root: Some(r.read_only_paths().iter().map(PathBuf::from).collect()),
            },
            None => SandboxPaths {
                runner_exe: runner_exe.clone(),
                app_dir: Some(app_dir),
                private_dir: work_dir.clone(),
                own_proc: setup.has_own_proc(),
                private_tmp: setup.has_private_tmp(),
                network: sb.network,
                own_root: None,
            },
        };
        let restrictions =
            RunnerRestrictions::for_level(level, LandlockPlan::for_sandbox(&paths), sb.network)
                .map_err(iso)?;
        let (runner_exe, work_dir) = if own_root.is_some() {
            (
                PathBuf::from(isolation::root::RUNNER),
                PathBuf::from(isolation::root::WORK_DIR),
            )
        } else {
            (runner_exe, work_dir)
        };
        let request = SpawnRequest {
            runner_exe,
            work_dir,
            log_path: sb.dir.join(crate::log::LOG_NAME),
            cgroup: sb
                .cgroup
                .as_ref()
                .map(|cg| cg.open_entry())
                .transpose()
                .map_err(|e| SandboxError::Kernel(e.into()))?,
            setup,
            rlimits,
        };
        Ok(Plan {
            request,
            restrictions,
            report,
            own_root: has_own_root,
            pid_ns,
        })
    }
}

/// A child-measured duration in µs, `None` when the child could not report it (0).
pub(super) fn child_us(ns: &std::sync::atomic::AtomicU64) -> Option<u64> {
    match ns.load(Ordering::Relaxed) {
        0 => None,
        n => Some(n.div_ceil(1000)),
    }
}

/// `--cgroup-parent` names a delegated cgroup v2 subtree: refuse it, clearly, where the
/// directory (an absolute path, or relative to `/sys/fs/cgroup`) is not on cgroup2.
pub(super) fn check_cgroup_parent(parent: &Path) -> Result<(), SandboxError> {
    let root = Path::new("/sys/fs/cgroup");
    let dir = if parent.is_absolute() {
        parent.to_path_buf()
    } else {
        root.join(parent)
    };
    let is_v2 = |p: &Path| {
        nix::sys::statfs::statfs(p)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
    };
    // The parent may not exist yet (the cgroup code creates it): judge by the nearest
    // directory that does.
    let existing = dir.ancestors().find(|d| d.exists()).unwrap_or(root);
    if is_v2(existing) {
        return Ok(());
    }
    let why = if is_v2(root) {
        format!(
            "{} is not a directory of the cgroup v2 hierarchy",
            dir.display()
        )
    } else {
        format!(
            "this machine has no cgroup v2 hierarchy at {} (cgroup v1)",
            root.display()
        )
    };
    Err(SandboxError::Isolation(format!(
        "--cgroup-parent {} needs a delegated cgroup v2 subtree: {why}",
        parent.display()
    )))
}

/// What a runner's plan depends on: a sandbox's, or (for the pool) no tenant's at all.
pub(super) struct PlanInput<'a> {
    pub level: isolation::Level,
    pub network: bool,
    pub limits: &'a Limits,
    /// The runner's directory (`app`, `work`, `root` inside).
    pub dir: &'a Path,
    pub ids: (u32, u32),
    pub cgroup: Option<Arc<Cgroup>>,
    pub cgroup_entry: Option<ReportEntry>,
    /// Whether the plan is a tenant's: then its rlimits are reported as applied at spawn
    /// (a prepared runner gets them from the host when it is given to a sandbox).
    pub tenant: bool,
    /// The tenant's read-only data files (`<dir>/files/<n>`, bound at their `dst`).
    pub files: &'a [proto::tenant::DataFile],
}

impl PlanInput<'_> {
    /// The plan input of sandbox `sb`.
    pub fn tenant(sb: &Sandbox) -> PlanInput<'_> {
        PlanInput {
            level: sb.spec.isolation,
            network: sb.spec.network,
            limits: &sb.spec.limits,
            dir: &sb.dir,
            ids: sb.ids,
            cgroup: sb.cgroup(),
            cgroup_entry: sb.cgroup_entry.lock().unwrap().clone(),
            tenant: true,
            files: &sb.spec.files,
        }
    }
}
