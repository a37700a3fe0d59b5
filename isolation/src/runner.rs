//! What the runner applies to itself, from the host's first message, before loading app code.

use serde::{Deserialize, Serialize};

use crate::error::IsolationError;
use crate::landlock::{self as ll, LandlockPlan};
use crate::level::Level;
use crate::report::{Mechanism, ReportEntry};
use crate::seccomp;

/// Restrictions the runner applies to itself: no_new_privs, then Landlock, then seccomp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerRestrictions {
    /// Set `PR_SET_NO_NEW_PRIVS`.
    pub no_new_privs: bool,
    /// Landlock plan, if any.
    pub landlock: Option<LandlockPlan>,
    /// Serialized seccomp filter ([`crate::seccomp::BpfBytes`]), if any.
    pub seccomp: Option<Vec<u8>>,
    /// Level: under `Strict` anything not fully applied is an error.
    #[serde(default)]
    pub level: Level,
}

impl RunnerRestrictions {
    /// Everything for `level` (`None`: nothing): no_new_privs, `plan`, the default seccomp
    /// filter (compiled once per host process), its `network` variant when the sandbox has
    /// network (`socket` may then create `AF_INET`/`AF_INET6`).
    pub fn for_level(
        level: Level,
        plan: LandlockPlan,
        network: bool,
    ) -> Result<Self, IsolationError> {
        if !level.isolates() {
            return Ok(Self {
                no_new_privs: false,
                landlock: None,
                seccomp: None,
                level,
            });
        }
        Ok(Self {
            no_new_privs: true,
            landlock: Some(plan),
            seccomp: Some(seccomp::default_filter(network)?.as_bytes().to_vec()),
            level,
        })
    }

    /// Applies, in order, no_new_privs -> Landlock -> seccomp to the calling process. Call it in
    /// the runner while it is single-threaded and before it loads any app code. Returns the
    /// report lines; under `Strict` the first mechanism that is not fully applied is an error
    /// (and later ones are not attempted).
    pub fn apply_in_runner(&self) -> Result<Vec<ReportEntry>, IsolationError> {
        let mut out = Vec::new();
        let mut push = |e: ReportEntry| -> Result<(), IsolationError> {
            let r = e.check(self.level);
            out.push(e);
            r
        };
        if self.no_new_privs {
            // SAFETY: plain prctl(2).
            let e = if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } == 0 {
                ReportEntry::applied(Mechanism::NoNewPrivs, "PR_SET_NO_NEW_PRIVS")
            } else {
                let err = std::io::Error::last_os_error();
                ReportEntry::missing(Mechanism::NoNewPrivs, format!("prctl: {err}"))
            };
            push(e)?;
        // SAFETY: plain prctl(2) query.
        } else if unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) } == 1 {
            // The spawn sequence sets it before exec at every level; report what the kernel says.
            push(ReportEntry::applied(
                Mechanism::NoNewPrivs,
                "inherited: set by the spawn sequence before exec",
            ))?;
        } else {
            push(ReportEntry::missing(Mechanism::NoNewPrivs, "not requested"))?;
        }
        match &self.landlock {
            Some(plan) => {
                let e = match ll::apply(plan) {
                    Ok(st) => st.report_entry(),
                    Err(err) => ReportEntry::missing(Mechanism::Landlock, err.to_string()),
                };
                push(e)?;
            }
            None => push(ReportEntry::missing(Mechanism::Landlock, "not requested"))?,
        }
        match &self.seccomp {
            Some(bytes) => {
                let e = match seccomp::apply(bytes) {
                    Ok(entry) => entry,
                    Err(err) => ReportEntry::missing(Mechanism::Seccomp, err.to_string()),
                };
                push(e)?;
            }
            None => push(ReportEntry::missing(Mechanism::Seccomp, "not requested"))?,
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::landlock::SandboxPaths;

    #[test]
    fn serde_round_trip() {
        let r = RunnerRestrictions::for_level(
            Level::Strict,
            LandlockPlan::for_sandbox(&SandboxPaths::default()),
            false,
        )
        .unwrap();
        assert!(r.no_new_privs && r.landlock.is_some() && r.seccomp.is_some());
        let j = serde_json::to_string(&r).unwrap();
        let back: RunnerRestrictions = serde_json::from_str(&j).unwrap();
        assert_eq!(back, r);
        let none =
            RunnerRestrictions::for_level(Level::None, back.landlock.unwrap(), false).unwrap();
        assert!(none.seccomp.is_none() && none.landlock.is_none() && !none.no_new_privs);
    }
}
