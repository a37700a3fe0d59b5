//! Supervision: a runner's death (as init and the kernel report it), its restart under the
//! crash intensity, init's events, and the errors callers get when a runner died.
use super::*;

/// How a runner ended, as its watcher saw it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Exit {
    /// What the host observed: the exit status, init's word on the app process, the cgroup's
    /// OOM counter. Never the app's text, so what is read from it (the cause, the signal)
    /// cannot be the app's doing.
    pub how: String,
    /// The app's last lines in the log, escaped and labelled as its own words
    /// ([`crate::log::SandboxLog::last_words`]).
    pub last_words: Option<String>,
}

impl Exit {
    /// `how`, then the app's last words when it left some: the reason a user is shown.
    pub fn reason(&self) -> String {
        match &self.last_words {
            Some(words) => format!("{}; {words}", self.how),
            None => self.how.clone(),
        }
    }
}

/// Waits for a runner to exit, records how it died, and restarts it when the death was not
/// asked for.
///
/// Its sandbox is `owner`'s, set when the runner is given to one (a prepared runner waits
/// in the pool without); one that dies ownerless is only reaped. The manager is held weakly,
/// so watchers never keep a dropped manager (and its pool) alive.
pub(super) async fn watch_runner(
    owner: Owner,
    manager: std::sync::Weak<Inner>,
    runner: Arc<procfs::Process>,
    (closed, data_closed): (oneshot::Receiver<()>, oneshot::Receiver<()>),
    exit: watch::Sender<Option<Exit>>,
) {
    // Either plane closing ends the runner: init closes the control socket when it exits
    // (after telling how the app process died), and an app process that closes its data
    // socket but lives on can serve no call again, so init gets a moment to report, then the
    // runner is killed and restarted like any that died.
    let mut closed = closed;
    tokio::select! {
        _ = &mut closed => {}
        _ = data_closed => {
            if tokio::time::timeout(Duration::from_millis(300), &mut closed).await.is_err() {
                kill_tree(&runner);
            }
        }
    }
    let pid = runner.pid();
    let how = tokio::task::spawn_blocking(move || {
        // The socket closed: the runner is dead or broken. Give it 200 ms to exit (woken the
        // moment it does, through a pidfd), then make sure, and reap it.
        let deadline = Instant::now() + Duration::from_millis(200);
        loop {
            match waitpid(
                Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            ) {
                Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                    runner.wait_exit(deadline.saturating_duration_since(Instant::now()))
                }
                Ok(WaitStatus::StillAlive) => {
                    // Killed; wait for the exit (on the pidfd) before looking again, rather
                    // than walking /proc in a loop.
                    kill_tree(&runner);
                    runner.wait_exit(Duration::from_millis(500));
                }
                Ok(status) => return describe(status),
                Err(e) => return format!("unknown ({e})"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| "unknown".into());
    let (sb, generation) = match owner.get() {
        Some((sb, generation)) => (sb.upgrade(), *generation),
        None => (None, 0),
    };
    // How the app process died, as init saw it, says more than how init then exited.
    let how = match sb
        .as_deref()
        .and_then(|sb| sb.app_exit.lock().unwrap().take())
    {
        Some(app) => format!("app process {app}"),
        None => how,
    };
    // Killed by its memory limit: say so, from the cgroup's OOM counter.
    let how = match sb.as_deref().and_then(oom_cause) {
        Some(oom) => format!("{oom}, {how}"),
        None => how,
    };
    // The app's last lines, from this runner's part of the log; only while it is the
    // sandbox's runner (the next one may have moved the log aside already).
    let last_words = sb
        .as_deref()
        .filter(|sb| sb.generation.load(Ordering::Acquire) == generation)
        .and_then(|sb| sb.log.last_words(&sb.dir));
    let ended = Exit {
        how: how.clone(),
        last_words,
    };
    let _ = exit.send(Some(ended.clone()));
    let Some(sb) = sb else { return };
    // Marked before `destroying` is read, so a destroy sees either this mark or is seen.
    let _in_flight = RestartInFlight::enter(&sb);
    if sb.destroying.load(Ordering::Acquire) || sb.generation.load(Ordering::Acquire) != generation
    {
        return;
    }
    tracing::warn!(sandbox = %sb.id, pid, %how, "runner died");
    let reason = ended.reason();
    let cause = crash_cause(&how);
    // The runner is reaped: its pid may name another process already, so nothing is killed
    // by number. What it left behind goes with its cgroup; without one, its pid namespace or
    // its workers' PDEATHSIG took them.
    if let Some(cg) = sb.cgroup() {
        let _ = tokio::task::spawn_blocking(move || cg.kill_all()).await;
    }
    sb.live.write().await.take();
    let too_many = {
        let mut crashes = sb.crashes.lock().unwrap();
        let now = Instant::now();
        crashes.push_back(now);
        while crashes.front().is_some_and(|t| now - *t > CRASH_WINDOW) {
            crashes.pop_front();
        }
        crashes.len() > MAX_CRASHES
    };
    sb.emit(EventKind::SandboxCrashed {
        cause: cause.into(),
        how: how.clone(),
        final_: too_many,
    });
    if too_many {
        sb.set_status(
            Status::Crashed,
            Some(format!(
                "runner died more than {MAX_CRASHES} times in {}s, the last: {reason}",
                CRASH_WINDOW.as_secs()
            )),
        );
        return;
    }
    sb.set_status(Status::Restarting, Some(reason));
    sb.restart_count.fetch_add(1, Ordering::AcqRel);
    let Some(record) = sb.current_record() else {
        return;
    };
    let Some(manager) = manager.upgrade().map(|inner| Manager { inner }) else {
        return;
    };
    match manager.start_runner(&sb, &record).await {
        Ok(()) => {
            sb.set_status(Status::Running, None);
            let pid = sb.live.read().await.as_ref().map_or(0, |l| l.process.pid());
            sb.emit(EventKind::SandboxRestarted {
                pid,
                after: "crash".into(),
            });
        }
        Err(_) if sb.destroying.load(Ordering::Acquire) => manager.clean_after_raced_start(&sb),
        Err(e) => sb.set_status(
            Status::Crashed,
            Some(format!("restart after {how} failed: {e}")),
        ),
    }
}

/// What the host does with a runner's event (in the connection's reader task).
pub(super) fn handle_event(sb: &Arc<Sandbox>, event: Event) {
    match event {
        Event::WorkerRestarted {
            index,
            old_pid,
            new_pid,
            reason,
        } => {
            sb.worker_restarts.fetch_add(1, Ordering::AcqRel);
            tracing::info!(sandbox = %sb.id, index, old_pid, new_pid, %reason, "worker restarted");
            sb.emit(EventKind::WorkerRestarted { index, reason });
        }
        Event::Crashed { reason } => {
            tracing::warn!(sandbox = %sb.id, %reason, "sandbox crashed");
            stop_crashed(sb, reason);
        }
        Event::AppExited { how } => {
            *sb.app_exit.lock().unwrap() = Some(how);
        }
    }
}

/// Stops everything of a sandbox its supervisor called crashed, then says so: crashed in the
/// books is stopped in the kernel, never a tree that runs (and burns CPU) while `usage`, the
/// detector and the metrics no longer look at it, and never `crashed` shown while its
/// processes still run (a client that reads the status first and then looks must find them
/// gone). Its watcher stands down (the generation moves on), so the runner's death is not
/// taken for a crash to restart from; an explicit `restart` starts it again, and a restart or
/// destroy that comes first keeps the books (the generation moved again).
fn stop_crashed(sb: &Arc<Sandbox>, reason: String) {
    let generation = sb.generation.fetch_add(1, Ordering::AcqRel) + 1;
    let sb = Arc::clone(sb);
    tokio::spawn(async move {
        let live = sb.live.read().await.clone();
        let runner = live.as_ref().map(|l| Arc::clone(&l.process));
        let cgroup = sb.cgroup();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(runner) = runner {
                kill_tree(&runner);
            }
            if let Some(cg) = cgroup {
                let _ = cg.kill_all();
            }
        })
        .await;
        // A signal is delivered, not yet obeyed: the runner's reaped exit (its watcher still
        // reaps it) is when its pid namespace, and so its whole tree, is gone.
        if let Some(live) = live {
            let mut exit = live.exit.clone();
            let _ =
                tokio::time::timeout(Duration::from_secs(2), exit.wait_for(|e| e.is_some())).await;
        }
        if sb.destroying.load(Ordering::Acquire)
            || sb.generation.load(Ordering::Acquire) != generation
        {
            return;
        }
        sb.emit(EventKind::SandboxCrashed {
            cause: "supervisor".into(),
            how: reason.clone(),
            final_: true,
        });
        sb.set_status(Status::Crashed, Some(reason));
    });
}

/// `out of memory: limit 1 MiB` when the sandbox's cgroup counted OOM kills since the last
/// look; `None` without a cgroup, without the counter, or without a new kill.
pub(super) fn oom_cause(sb: &Sandbox) -> Option<String> {
    let kills = sb.cgroup()?.usage().ok()?.oom_kills?;
    let seen = sb.oom_seen.swap(kills, Ordering::AcqRel);
    (kills > seen).then(|| match sb.spec.limits.max_memory {
        Some(limit) => format!("out of memory: limit {}", proto::spec::format_bytes(limit)),
        None => "out of memory".to_string(),
    })
}

/// `the sandbox hit its process limit (--max-processes 16, pids.max): the kernel refused N
/// forks or threads` when the sandbox's cgroup counted refusals at `pids.max` since the last
/// look; `None` without a cgroup, without the counter, or without a new refusal. Read from
/// the kernel, so an app cannot make the host blame (or stop blaming) the limit.
pub(super) fn process_limit_note(sb: &Sandbox) -> Option<String> {
    let refused = sb.cgroup()?.usage().ok()?.pids_limit_hits?;
    let seen = sb.pids_refusals_seen.swap(refused, Ordering::AcqRel);
    (refused > seen).then(|| {
        let limit = match sb.spec.limits.max_processes {
            Some(n) => format!("--max-processes {n}, pids.max"),
            None => "pids.max".to_string(),
        };
        format!(
            "host: the sandbox hit its process limit ({limit}): the kernel refused {} fork(s) \
             or thread(s) since the last look",
            refused - seen
        )
    })
}

/// What the host observed of a death, from its own description of it (see [`describe`] and
/// [`oom_cause`]): `oom`, `signal`, `exit` or `unknown`.
pub(super) fn crash_cause(how: &str) -> &'static str {
    if how.contains("out of memory") {
        "oom"
    } else if how.contains("signal ") {
        "signal"
    } else if how.contains("exit ") {
        "exit"
    } else {
        "unknown"
    }
}

pub(super) fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, ABORT_EXIT) => {
            format!("signal SIGABRT (as pid 1 of its namespace, reported as exit {ABORT_EXIT})")
        }
        WaitStatus::Exited(_, code) => match spawn::describe_early_exit(code) {
            Some(what) => format!("exit {code} ({what})"),
            None => format!("exit {code}"),
        },
        WaitStatus::Signaled(_, sig, core) => format!(
            "signal {}{}",
            sig.as_str(),
            if core { " (core dumped)" } else { "" }
        ),
        other => format!("{other:?}"),
    }
}

pub(super) fn crashed(id: &str, reason: String, signal: Option<String>) -> SandboxError {
    SandboxError::Crashed {
        id: id.to_string(),
        reason,
        signal,
    }
}

/// The error for a request whose runner died: waits briefly for the exit status. The
/// signal is read from what the host observed, never from the app's words after it.
pub(super) async fn death_of(id: &str, live: &Live) -> SandboxError {
    let mut exit = live.exit.clone();
    let ended = tokio::time::timeout(Duration::from_secs(2), exit.wait_for(|e| e.is_some()))
        .await
        .ok()
        .and_then(|r| r.ok().and_then(|v| v.clone()))
        .unwrap_or_else(|| Exit {
            how: "runner closed its socket".into(),
            last_words: None,
        });
    let signal = ended
        .how
        .split_once("signal ")
        .map(|(_, s)| s.split([' ', ',']).next().unwrap_or(s).to_string());
    crashed(id, format!("runner died: {}", ended.reason()), signal)
}
