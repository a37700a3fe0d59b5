//! A sandbox's supervised workers: listed and started by init, on the control plane.
use super::*;

impl Manager {
    /// Lists the sandbox's supervised workers.
    pub async fn workers(&self, id: &str) -> Result<WorkerList, SandboxError> {
        self.worker_request(id, Request::Workers).await
    }

    /// Starts `count` more supervised workers.
    pub async fn spawn_workers(&self, id: &str, count: u32) -> Result<WorkerList, SandboxError> {
        let list = self
            .worker_request(id, Request::SpawnWorkers { count })
            .await?;
        if let Ok(sb) = self.get(id) {
            sb.emit(EventKind::WorkersAdded {
                count,
                total: list.workers.len() as u32,
            });
        }
        Ok(list)
    }

    async fn worker_request(&self, id: &str, request: Request) -> Result<WorkerList, SandboxError> {
        let sb = self.get(id)?;
        let live = sb.live().await?;
        match live
            .control
            .request(request, self.inner.config.call_timeout)
            .await
        {
            Ok(Ok(value)) => {
                let mut list: WorkerList = serde_json::from_value(value)
                    .map_err(|e| SandboxError::Protocol(e.to_string()))?;
                // The runner sees its own pid namespace; callers get host pids.
                let pid = live.process.pid();
                let map = tokio::task::spawn_blocking(move || procfs::ns_pid_map(pid))
                    .await
                    .unwrap_or_default();
                if !map.is_empty() {
                    for w in &mut list.workers {
                        w.pid = map.get(&w.pid).copied().unwrap_or(0);
                    }
                }
                Ok(list)
            }
            Ok(Err(err)) if err.kind == ErrorKind::Crashed => Err(crashed(id, err.message, None)),
            Ok(Err(err)) => Err(SandboxError::AppError(err.message)),
            Err(ConnError::Timeout) => Err(SandboxError::Timeout {
                op: "workers".into(),
                ms: self.inner.config.call_timeout.as_millis() as u64,
            }),
            Err(ConnError::Closed) => Err(death_of(id, &live).await),
        }
    }
}
