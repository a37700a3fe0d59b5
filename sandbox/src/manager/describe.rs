//! What a sandbox looks like from outside: the list's one line each, and `info`.

use super::*;

impl Manager {
    /// Lists sandboxes, sorted by id.
    pub async fn list(&self) -> Vec<SandboxSummary> {
        let all: Vec<Arc<Sandbox>> = self
            .inner
            .sandboxes
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect();
        let mut out = Vec::with_capacity(all.len());
        for sb in all {
            let pid = sb.live.read().await.as_ref().map_or(0, |l| l.process.pid());
            let (status, reason) = sb.status.lock().unwrap().clone();
            out.push(SandboxSummary {
                id: sb.id.clone(),
                status,
                pid,
                app_version: sb.current.load(Ordering::Acquire),
                reason,
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Describes one sandbox.
    pub async fn info(&self, id: &str) -> Result<SandboxInfo, SandboxError> {
        let sb = self.get(id)?;
        let live = sb.live.read().await.clone();
        let record = sb.current_record();
        let (status, crash_reason) = sb.status.lock().unwrap().clone();
        let isolation = sb.isolation.lock().unwrap().clone();
        Ok(SandboxInfo {
            id: sb.id.clone(),
            status,
            crash_reason,
            pid: live.as_ref().map_or(0, |l| l.process.pid()),
            app_pid: live.as_ref().map_or(0, |l| l.app_pid),
            created_at: rfc3339(sb.created_at),
            restart_count: sb.restart_count.load(Ordering::Acquire),
            app: AppInfo {
                name: live
                    .as_ref()
                    .map(|l| l.app_name.clone())
                    .unwrap_or_default(),
                path: record.as_ref().map(|r| r.path.clone()).unwrap_or_default(),
                version: record.as_ref().map_or(0, |r| r.version),
                app_version: record
                    .as_ref()
                    .map(|r| r.app_version.clone())
                    .unwrap_or_default(),
                sha256: record
                    .as_ref()
                    .map(|r| r.sha256.clone())
                    .unwrap_or_default(),
                claimed_by_app: proto::info::app_claims(),
            },
            versions: sb.versions.lock().unwrap().clone(),
            limits: sb.spec.limits.clone(),
            limit_states: limit_states::states_of(
                &sb,
                limit_states::disk_shown(&sb, &isolation)
                    .as_ref()
                    .map(|d| *d)
                    .map_err(String::as_str),
            ),
            isolation,
            dir: sb.dir.clone(),
            startup: *sb.startup.lock().unwrap(),
            warnings: sb.warnings.lock().unwrap().clone(),
            log: sb.log.info(&sb.dir),
        })
    }
}
