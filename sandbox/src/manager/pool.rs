//! Prepared runners: booted in advance with everything that is no tenant's, handed out one
//! per sandbox at create.
//!
//! A prepared runner has done steps 1–16 of `docs/spawn.md` for a `standard` sandbox without
//! network: cloned with every namespace, its own root built on a directory of its own
//! (`<state>/pool.<pid>-<n>`), its uid/gid taken from the sandbox id range, exec'd, Landlock
//! and the seccomp allow-list installed (the rules name only fixed in-sandbox paths, so they
//! are the same for every sandbox), the app process forked and waiting for `load`. No app
//! code has run in it.
//!
//! At create, what is the tenant's is applied from the host, in this order, before the app
//! library is named to it: the sandbox's cgroup is created and both processes are moved in
//! (there are exactly two: init forks workers only when told), the tenant's rlimits are set
//! on both with `prlimit`, the library is linked into the runner's `/app` (a bind of its
//! host directory, so the link shows inside), and only then `load` runs the app's
//! constructors. Then the report is checked against the kernel, as for any runner.
//!
//! A prepared runner serves exactly one sandbox: it leaves the pool by value and is never
//! put back. One that died waiting is discarded at take. The pool holds only runners of
//! this daemon's process (their `PR_SET_PDEATHSIG` kills them with it), and a crash leaves
//! their directories to the next daemon's sweep.
//!
//! Only a root host uses the pool (moving processes between cgroups and raising another
//! process's limits need it), and only for specs it fits: `standard` or `none`, no network,
//! default ids, the default disk size, no `--file` (its binds are part of the root, which a
//! prepared runner has built already). Everything else takes the ordinary spawn, as does
//! every restart. `--env` and `--config` are the tenant's and come at take: the app process
//! gets them with `load`, init the workers' environment with `set_env`.
//!
//! Each level has a queue of its own ([`Kind`]). The `standard` one is filled when the daemon
//! starts; the `none` one only after the first `none` create that found it empty, because
//! most hosts never make one and every prepared runner costs memory while it waits. A
//! prepared `none` runner is what an ordinary `none` spawn makes (the daemon's user, the
//! host's filesystem, no cgroup), rlimits again applied at take: it shares nothing with
//! another tenant either.
use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::*;

/// How long the refill stays out of the way of a create (and of the calls right after it).
const REFILL_BACKOFF: Duration = Duration::from_millis(5);

/// Prepared runners kept by default: one per core, at most 4.
pub fn default_pool_size() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// The pool size from `SANDBOX_HOST_POOL` (a number; 0 turns the pool off), else
/// [`default_pool_size`].
pub fn pool_size_from_env() -> usize {
    std::env::var("SANDBOX_HOST_POOL")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(default_pool_size)
}

/// What the pool holds and has done.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolStats {
    /// The size it refills to (0: off).
    pub target: usize,
    /// Prepared `standard` runners waiting now.
    pub ready: usize,
    /// Prepared `none` runners waiting now (kept only once a `none` create asked for one).
    #[serde(default)]
    pub ready_none: usize,
    /// Sandboxes that got a prepared runner.
    pub served: u64,
    /// Creates that fit the pool but found it empty.
    pub missed: u64,
    /// Prepared runners found dead at take, or that failed to prepare.
    pub discarded: u64,
    /// Microseconds the last refill took to prepare one runner.
    pub last_prepare_us: u64,
    /// Why the pool stopped refilling, if it did.
    pub disabled: Option<String>,
}

/// The kinds of prepared runner, one queue each: the isolation level it was booted at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `standard`: every namespace, its own root and uid, a cgroup made with it.
    Standard = 0,
    /// `none`: a plain runner process of the daemon's user.
    None = 1,
}

impl Kind {
    /// Every kind, in the order a refill serves them.
    const ALL: [Kind; 2] = [Kind::Standard, Kind::None];

    /// The level its runners are booted at.
    fn level(self) -> isolation::Level {
        match self {
            Kind::Standard => isolation::Level::Standard,
            Kind::None => isolation::Level::None,
        }
    }

    /// The queue of a sandbox of `spec`, if a prepared runner can serve it (see the module
    /// docs).
    pub(super) fn of(spec: &SandboxSpec) -> Option<Kind> {
        let kind = match spec.isolation {
            isolation::Level::Standard => Kind::Standard,
            isolation::Level::None => Kind::None,
            _ => return None,
        };
        (!spec.network
            && spec.uid.is_none()
            && spec.gid.is_none()
            && spec.limits.max_disk.is_none()
            && spec.files.is_empty()
            && spec.cgroup_parent.is_none()
            && is_root())
        .then_some(kind)
    }
}

/// The pool of one manager.
#[derive(Debug, Default)]
pub(super) struct Pool {
    /// The prepared runners of each [`Kind`], by its index.
    ready: Mutex<[VecDeque<Prepared>; 2]>,
    /// Whether a `none` create has found its queue empty: only then is it kept full.
    none_wanted: AtomicBool,
    refilling: AtomicBool,
    closed: AtomicBool,
    /// Creates in flight: the refill waits until there are none (it is background work, and
    /// a prepare competes with them for the cores).
    pub(super) creating: AtomicUsize,
    stats: Mutex<PoolStats>,
}

/// A booted runner waiting for a sandbox. Dropped unused, it is killed and its directory
/// removed.
#[derive(Debug)]
pub(super) struct Prepared {
    booted: Option<Booted>,
    pub dir: PathBuf,
    pub ids: (u32, u32),
    /// The lease of its uid, moved to the sandbox that takes it.
    pub uid_lease: Option<crate::uids::Leased>,
    /// Its cgroup, made before its clone and entered by the child before anything ran,
    /// without limits until its sandbox writes its own (none where cgroups fail: the
    /// sandbox then makes one and moves the runner in).
    pub cgroup: Option<Arc<Cgroup>>,
    /// Whether its processes were born in `cgroup` (then nothing is moved at take).
    pub entered_cgroup: bool,
}

impl Prepared {
    /// Whether its runner still lives (a dead one is never handed out).
    fn alive(&self) -> bool {
        self.booted
            .as_ref()
            .is_some_and(|b| b.exit.borrow().is_none() && !b.process.exited())
    }

    /// Takes the runner out, for the one sandbox it will serve.
    fn into_booted(mut self) -> Booted {
        self.booted.take().expect("a prepared runner is taken once")
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if let Some(booted) = self.booted.take() {
            booted.kill();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Pool {
    /// How many prepared runners of `kind` the refill keeps, for a pool of `size`.
    fn target(&self, kind: Kind, size: usize) -> usize {
        match kind {
            Kind::Standard => size,
            Kind::None if self.none_wanted.load(Ordering::Acquire) => size,
            Kind::None => 0,
        }
    }

    /// The first kind with fewer prepared runners than its target, if any.
    fn short(&self, size: usize) -> Option<Kind> {
        let ready = self.ready.lock().unwrap();
        Kind::ALL
            .into_iter()
            .find(|&k| ready[k as usize].len() < self.target(k, size))
    }

    /// Takes every prepared runner out (to be dropped, which kills them).
    fn drain(&self) -> Vec<Prepared> {
        let mut ready = self.ready.lock().unwrap();
        ready.iter_mut().flat_map(|q| q.drain(..)).collect()
    }
}

impl Manager {
    /// The pool's figures.
    pub fn pool_stats(&self) -> PoolStats {
        let pool = &self.inner.pool;
        let mut stats = pool.stats.lock().unwrap().clone();
        stats.target = self.inner.config.pool_size;
        let ready = pool.ready.lock().unwrap();
        stats.ready = ready[Kind::Standard as usize].len();
        stats.ready_none = ready[Kind::None as usize].len();
        stats
    }

    /// The host pids of every process of the prepared runners (init and app process each),
    /// to measure what the pool costs.
    pub fn pool_pids(&self) -> Vec<i32> {
        self.inner
            .pool
            .ready
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .filter_map(|p| p.booted.as_ref())
            .flat_map(|b| [b.process.pid(), b.app_pid])
            .collect()
    }

    /// Fills the pool now (the daemon calls this at start) and waits until it is full or
    /// cannot fill; without a pool (size 0, not root) it returns at once.
    pub async fn warm_pool(&self) {
        if self.inner.config.pool_size == 0 || !is_root() {
            return;
        }
        self.refill_pool();
        let pool = &self.inner.pool;
        while pool.refilling.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops refilling, waits for a refill in progress to stand down, and kills every
    /// prepared runner and removes its directory (shutdown).
    pub(super) async fn close_pool(&self) {
        let pool = &self.inner.pool;
        pool.closed.store(true, Ordering::Release);
        while pool.refilling.load(Ordering::Acquire) {
            tokio::time::sleep(REFILL_BACKOFF).await;
        }
        drop(pool.drain());
    }

    /// A live prepared runner for a sandbox of `spec`, if the pool has one and `spec` fits.
    pub(super) fn take_prepared(&self, spec: &SandboxSpec) -> Option<Prepared> {
        let kind = Kind::of(spec)?;
        if self.inner.config.pool_size == 0 {
            return None;
        }
        let pool = &self.inner.pool;
        if kind == Kind::None {
            // Asked for once: the refill after this create keeps them from now on.
            pool.none_wanted.store(true, Ordering::Release);
        }
        let taken = loop {
            let next = pool.ready.lock().unwrap()[kind as usize].pop_front();
            match next {
                Some(p) if p.alive() => break Some(p),
                Some(dead) => {
                    pool.stats.lock().unwrap().discarded += 1;
                    drop(dead);
                }
                None => break None,
            }
        };
        let mut stats = pool.stats.lock().unwrap();
        match taken {
            Some(_) => stats.served += 1,
            None => stats.missed += 1,
        }
        taken
    }

    /// Starts refilling the pool in the background, one runner at a time, unless a refill
    /// runs already.
    pub(super) fn refill_pool(&self) {
        let target = self.inner.config.pool_size;
        let pool = &self.inner.pool;
        if target == 0
            || !is_root()
            || pool.closed.load(Ordering::Acquire)
            || pool.stats.lock().unwrap().disabled.is_some()
            || pool.refilling.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let manager = self.clone();
        tokio::spawn(async move {
            let pool = &manager.inner.pool;
            loop {
                while let Some(kind) = pool.short(target)
                    && !pool.closed.load(Ordering::Acquire)
                {
                    // Low priority by yielding: after a create, its first calls come next.
                    while pool.creating.load(Ordering::Acquire) > 0 {
                        tokio::time::sleep(REFILL_BACKOFF).await;
                    }
                    tokio::time::sleep(REFILL_BACKOFF).await;
                    if pool.closed.load(Ordering::Acquire) {
                        break;
                    }
                    let started = Instant::now();
                    match manager.prepare_runner(kind).await {
                        Ok(p) => {
                            pool.stats.lock().unwrap().last_prepare_us = micros(started);
                            pool.ready.lock().unwrap()[kind as usize].push_back(p);
                        }
                        Err(e) => {
                            // A runner that cannot be prepared now will not be the next
                            // time either (a missing mechanism, a full disk): stop, and let
                            // creates take the ordinary spawn, which reports the cause.
                            tracing::warn!("the runner pool stops refilling: {e}");
                            let mut stats = pool.stats.lock().unwrap();
                            stats.discarded += 1;
                            stats.disabled = Some(e.to_string());
                            break;
                        }
                    }
                }
                pool.refilling.store(false, Ordering::Release);
                // A take between the last check and the flag's reset would leave the pool
                // short until the next create: look once more.
                let short = pool.short(target).is_some()
                    && !pool.closed.load(Ordering::Acquire)
                    && pool.stats.lock().unwrap().disabled.is_none();
                if !short || pool.refilling.swap(true, Ordering::AcqRel) {
                    break;
                }
            }
            // Closed while this one was being prepared: it must not stay.
            if pool.closed.load(Ordering::Acquire) {
                drop(pool.drain());
            }
        });
    }

    /// Boots one runner of `kind` for the pool: its own directory and ids, the plan without
    /// network, default limits (the tenant's are applied at take), and for `standard` its
    /// cgroup, without limits yet.
    async fn prepare_runner(&self, kind: Kind) -> Result<Prepared, SandboxError> {
        let started = Instant::now();
        let dir = self
            .inner
            .config
            .state_dir
            .join(format!("pool.{}", nonce()));
        for d in [
            dir.clone(),
            dir.join("app"),
            dir.join("work"),
            dir.join("root"),
        ] {
            std::fs::create_dir(&d).map_err(|e| SandboxError::io(&d, e))?;
        }
        let (id, uid_lease) = self.take_uid()?;
        let ids = (id, id);
        let limits = Limits::default();
        // The cgroup it will serve in, made now without limits (the default parent; a spec
        // with `--cgroup-parent` does not fit), so that a create only writes the tenant's.
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("pool")
            .replace('.', "-");
        let cgroup = match kind {
            Kind::Standard => Cgroup::create(&name, &limits, None).ok().map(Arc::new),
            Kind::None => None,
        };
        let booted = async {
            let plan = self.prepare_spawn(&PlanInput {
                level: kind.level(),
                network: false,
                limits: &limits,
                dir: &dir,
                ids,
                cgroup: cgroup.clone(),
                cgroup_entry: None,
                tenant: false,
                files: &[],
            })?;
            let prepare_us = micros(started);
            // Workers start on the version the sandbox names at take (`set_version`).
            let placeholder = match kind {
                Kind::Standard => Path::new(isolation::root::APP_DIR).join(".none"),
                Kind::None => dir.join("app").join(".none"),
            };
            let owner: Owner = Arc::new(std::sync::OnceLock::new());
            let mut booted = self.boot(plan, placeholder, 0, owner).await?;
            booted.timings.prepare_us = prepare_us;
            // The kernel's view of both, once here instead of at every take (see `attach`).
            let pids = [booted.process.pid(), booted.app_pid];
            booted.kernel_views = Some(
                pids.iter()
                    .filter(|&&p| p > 0)
                    .map(|&p| KernelView::read(p))
                    .collect(),
            );
            Ok::<_, SandboxError>(booted)
        }
        .await;
        match booted {
            Ok(booted) => Ok(Prepared {
                booted: Some(booted),
                dir,
                ids,
                uid_lease,
                entered_cgroup: cgroup.is_some(),
                cgroup,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// Gives prepared runner `prepared` to sandbox `sb` (whose directory is the runner's):
    /// cgroup, rlimits and version first, then `load` (see the module docs).
    pub(super) async fn start_prepared(
        &self,
        sb: &Arc<Sandbox>,
        record: &VersionRecord,
        prepared: Prepared,
    ) -> Result<(), SandboxError> {
        let started = Instant::now();
        let entered = prepared.entered_cgroup;
        let mut booted = prepared.into_booted();
        if let Err(e) = self.assign(sb, record, &mut booted, entered).await {
            booted.kill();
            return Err(e);
        }
        booted.timings.assign_us = Some(micros(started));
        booted.timings.pooled = true;
        // 4. The app.
        self.attach(sb, record, booted).await
    }

    /// Steps 1–3 of [`Manager::start_prepared`]; on an error the caller kills the runner.
    async fn assign(
        &self,
        sb: &Arc<Sandbox>,
        record: &VersionRecord,
        booted: &mut Booted,
        entered: bool,
    ) -> Result<(), SandboxError> {
        let level = sb.spec.isolation;
        let iso = SandboxError::Kernel;
        let pids = [booted.process.pid(), booted.app_pid];
        let refuse = |why: String| {
            SandboxError::Isolation(format!("give a prepared runner its sandbox: {why}"))
        };
        if booted.app_pid <= 0 {
            return Err(refuse("its app process was not found".into()));
        }
        // 1. The cgroup, before any app code runs: both processes, then a check that they
        //    are all there is (nothing forks in a prepared runner until told).
        let entry = sb.cgroup_entry.lock().unwrap().clone();
        if let Some(entry) = entry {
            booted.report.record(level, entry).map_err(iso)?;
        }
        // Born in it (entered by the child before its exec; every later process is forked
        // from those), nothing moves.
        if let Some(cg) = sb.cgroup().filter(|_| !entered) {
            let moved = cg.open_entry().and_then(|e| {
                pids.iter().try_for_each(|&pid| e.add_pid(pid))?;
                cg.pids()
            });
            match moved {
                Ok(inside) => {
                    let tree: Vec<i32> = procfs::tree(pids[0]).iter().map(|p| p.pid).collect();
                    if let Some(out) = tree.iter().find(|p| !inside.contains(p)) {
                        return Err(refuse(format!("pid {out} is not in its cgroup")));
                    }
                }
                Err(e) => return Err(refuse(format!("enter the cgroup: {e}"))),
            }
        }
        // 2. The tenant's rlimits, on both (workers inherit init's), before any app code
        //    runs: init sets its own (a root host without CAP_SYS_RESOURCE may not touch
        //    another uid's), the app process its own as the first step of `load`. Init's
        //    answer is awaited with `load`'s; a refused `prlimit`/`setrlimit` fails either,
        //    and nothing but the runner's code has run in them, so nothing is read back.
        let set = Request::SetLimits {
            limits: sb.spec.limits.clone(),
            host_root: is_root(),
        };
        match booted.control.send(set).await {
            Ok(reply) => booted.pending.push(("set rlimits", reply)),
            Err(e) => return Err(refuse(format!("set rlimits: {e:?}"))),
        }
        booted.load_rlimits = Some((sb.spec.limits.clone(), is_root()));
        let rlimits = Rlimits::from_limits(&sb.spec.limits, is_root());
        let mut entry = rlimits.report_entry();
        entry
            .detail
            .push_str(" (set before the app was loaded, by init and the app process)");
        booted.report.record(level, entry).map_err(iso)?;
        // 3. Its owner and the version its workers start on.
        sb.own_root.store(booted.own_root, Ordering::Release);
        sb.pid_ns.store(booted.pid_ns, Ordering::Release);
        let generation = sb.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let _ = booted.owner.set((Arc::downgrade(sb), generation));
        sb.move_workers_to(&booted.control, record).await;
        Ok(())
    }
}

/// Counts a create in flight for as long as it lives.
pub(super) struct Creating<'a>(&'a AtomicUsize);

impl<'a> Creating<'a> {
    /// Counts one more create.
    pub fn enter(counter: &'a AtomicUsize) -> Creating<'a> {
        counter.fetch_add(1, Ordering::AcqRel);
        Creating(counter)
    }
}

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
