//! Hot reload and rollback: the new version loaded and swapped in by the app process, then
//! the workers moved by init; any failure, a timeout included, leaves the old version serving
//! on both sides.

use super::*;

impl Manager {
    /// Reloads a new version into a running sandbox.
    pub async fn reload(
        &self,
        id: &str,
        source: ReloadSource,
    ) -> Result<ReloadReport, SandboxError> {
        let sb = self.get(id)?;
        let result = self.reload_into(&sb, source).await;
        match &result {
            Ok(r) if r.status == "reloaded" => sb.emit(EventKind::SandboxReloaded {
                from: r.from_version,
                to: r.to_version,
                load_us: r.load_us,
            }),
            Ok(_) => {}
            Err(e) => sb.emit(EventKind::SandboxReloadFailed {
                version: sb.current.load(Ordering::Acquire),
                reason: e.to_string(),
            }),
        }
        result
    }

    async fn reload_into(
        &self,
        sb: &Arc<Sandbox>,
        source: ReloadSource,
    ) -> Result<ReloadReport, SandboxError> {
        let sb = Arc::clone(sb);
        let compiler = &self.inner.config.compiler;
        let (lib, compile_ms) = match source {
            ReloadSource::Library(path) => (path, None),
            ReloadSource::Crate(dir) => {
                let built = compiler.build(&dir).await?;
                (built.lib, Some(built.compile_ms))
            }
            ReloadSource::Source { lib_rs, crate_dir } => {
                let dir = match (crate_dir, &sb.spec.app) {
                    (Some(dir), _) => dir,
                    (None, AppSource::Crate(dir)) => dir.clone(),
                    (None, AppSource::Library(_)) => {
                        return Err(SandboxError::ReloadRefused(
                            "a source reload needs a crate: this sandbox was created from a library".into(),
                        ));
                    }
                };
                let built = compiler.build_source(&dir, &lib_rs).await?;
                (built.lib, Some(built.compile_ms))
            }
        };
        let _swap = sb.swap_lock.lock().await;
        let live = sb.live().await?;
        let current = sb.current_record();
        let from = current.as_ref().map_or(0, |r| r.version);
        let next = sb
            .versions
            .lock()
            .unwrap()
            .iter()
            .map(|v| v.version)
            .max()
            .unwrap_or(0)
            + 1;
        // One hand-off to a blocking thread for the read and the link (as at create), not one
        // each.
        let libraries = &self.inner.libraries;
        let installed = library::blocking(|| {
            let lib = libraries.read(&lib)?;
            if current.as_ref().is_some_and(|r| r.sha256 == lib.sha256) {
                return Ok(None);
            }
            install_version(libraries, &sb, &lib, next).map(Some)
        })?;
        let Some(mut record) = installed else {
            return Ok(ReloadReport {
                status: "no_change".into(),
                from_version: from,
                to_version: from,
                load_us: 0,
                compile_ms,
            });
        };
        let from = sb.current.load(Ordering::Acquire);
        match self.swap(&sb, &live, &record).await {
            Ok(done) => {
                record.app_version = done.app_version.clone();
                sb.versions.lock().unwrap().push(record);
                sb.current.store(next, Ordering::Release);
                // The versions are the host's own numbers, not what the app process answered.
                Ok(ReloadReport {
                    status: "reloaded".into(),
                    from_version: from,
                    to_version: next,
                    load_us: done.load_us,
                    compile_ms,
                })
            }
            Err(e) => {
                let _ = std::fs::remove_file(&record.path);
                library::release(&sb.lib_store());
                // A destroy overtook this reload after it linked the new version into the
                // sandbox's directory: that link kept the directory past the destroy's walk.
                if sb.destroying.load(Ordering::Acquire) {
                    self.clean_after_raced_start(&sb);
                }
                Err(e)
            }
        }
    }

    pub(super) async fn swap(
        &self,
        sb: &Sandbox,
        live: &Live,
        record: &VersionRecord,
    ) -> Result<Reloaded, SandboxError> {
        let timeout = self.inner.config.reload_timeout;
        let request = Request::Reload {
            lib: sb.lib_for_runner(record),
            version: record.version,
            timeout_ms: timeout.as_millis() as u64,
        };
        match live
            .data
            .request(request, timeout + Duration::from_secs(1))
            .await
        {
            Ok(Ok(value)) => {
                let done: Reloaded = serde_json::from_value(value)
                    .map_err(|e| SandboxError::Protocol(e.to_string()))?;
                // Workers move to the new version: init's job, told on the control plane.
                // Not awaited: restarting them (an exec each) is on no reload's clock.
                sb.move_workers_to(&live.control, record).await;
                Ok(done)
            }
            Ok(Err(err)) => Err(SandboxError::ReloadRefused(err.message)),
            Err(ConnError::Timeout) => {
                // The app process may still swap after we gave up (it refuses past its own
                // deadline, but its answer can be late): then no one knows which version
                // serves. Restart it on the version the host records, which is the old one.
                tracing::warn!(sandbox = %sb.id, "reload timed out; restarting on the old version");
                kill_tree(&live.process);
                Err(SandboxError::Timeout {
                    op: "reload".into(),
                    ms: timeout.as_millis() as u64,
                })
            }
            Err(ConnError::Closed) => Err(death_of(&sb.id, live).await),
        }
    }

    /// Returns to an earlier version from the sandbox's history.
    pub async fn rollback(&self, id: &str, version: u32) -> Result<ReloadReport, SandboxError> {
        let sb = self.get(id)?;
        let _swap = sb.swap_lock.lock().await;
        let record = sb
            .versions
            .lock()
            .unwrap()
            .iter()
            .find(|v| v.version == version)
            .cloned()
            .ok_or_else(|| SandboxError::NoSuchVersion {
                id: id.to_string(),
                version,
            })?;
        let from = sb.current.load(Ordering::Acquire);
        if from == version {
            return Ok(ReloadReport {
                status: "no_change".into(),
                from_version: from,
                to_version: from,
                load_us: 0,
                compile_ms: None,
            });
        }
        let live = sb.live().await?;
        let done = self.swap(&sb, &live, &record).await?;
        sb.current.store(version, Ordering::Release);
        sb.emit(EventKind::SandboxRolledBack { from, to: version });
        Ok(ReloadReport {
            status: "reloaded".into(),
            from_version: from,
            to_version: version,
            load_us: done.load_us,
            compile_ms: None,
        })
    }
}
