//! `host logs` on the manager's side: where a sandbox's log is (its directory while it
//! lives, the kept copy for a while after destroy: `crate::log_retain`), and its purge.
use super::*;

/// A sandbox's log, found.
#[derive(Debug, Clone)]
pub struct LogPlace {
    /// The directory holding `runner.log` (and `runner.log.1`).
    pub dir: PathBuf,
    /// Whether the sandbox still lives (a follower of a destroyed one's log gets nothing new).
    pub live: bool,
}

impl Manager {
    /// Where the log of sandbox `id` is: a live sandbox's, or a destroyed one's still kept.
    pub fn log_place(&self, id: &str) -> Result<LogPlace, SandboxError> {
        if let Some(sb) = self.inner.sandboxes.lock().unwrap().get(id) {
            return Ok(LogPlace {
                dir: sb.dir.clone(),
                live: true,
            });
        }
        crate::log_retain::find(&self.inner.config.state_dir, id)
            .map(|dir| LogPlace { dir, live: false })
            .ok_or_else(|| SandboxError::NotFound(id.to_string()))
    }

    /// Removes the kept log of a destroyed sandbox `id`; whether there was one.
    pub fn purge_log(&self, id: &str) -> bool {
        crate::log_retain::purge(&self.inner.config.state_dir, id)
    }

    /// Keeps the log of `sb`, being destroyed, for `host logs` (before its directory goes).
    pub(super) fn keep_log(&self, sb: &Sandbox) {
        crate::log_retain::keep(&self.inner.config.state_dir, &sb.id, &sb.dir);
    }
}
