//! Workers: threads that claim jobs in batches, run them, and settle them under their lease.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use diesel::prelude::*;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::queue::{self, Reschedule};
use super::window::Window;
use super::{panicked, Begun, Conn, Job, JobError, Ready, Registry, Scheduler, Waiting, Wake};
use crate::clock::Clock;
use crate::db::{CountedConn, PgPool, QueryCounter};

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub threads: usize,
    pub queues: Vec<String>,
    /// Queues whose jobs wait on other systems (a gateway), with how many a worker takes at once:
    /// they are claimed only into an otherwise empty batch and all started together
    /// (`JobHandler::perform_batch`), so none waits in a worker's hand behind another.
    pub in_flight: Vec<(String, i64)>,
    /// Jobs claimed at once: what a worker holds in memory, and how claims and completions batch.
    pub batch: i64,
    /// How long a claimed job is presumed alive without its worker finishing it.
    pub lease: Duration,
    /// How long an idle worker waits before looking again (an enqueue here wakes it sooner).
    pub poll_interval: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            threads: 4,
            queues: vec!["default".into()],
            in_flight: Vec::new(),
            batch: 20,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// One worker: claims a batch, runs it, settles it. `run_once` is the whole cycle, which tests
/// call directly under a fake clock, as they call `heartbeat` for the pool's heartbeat thread.
/// The pool's threads run the same steps overlapped (`turn`, in `window.rs`), keeping several
/// batches of jobs that wait on a gateway in flight at once.
pub struct Worker {
    pub id: String,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    settings: WorkerSettings,
    /// The jobs this worker holds and until when its lease on each runs, as last confirmed by the
    /// database (at the claim, then at each heartbeat). Before the lease runs out nobody else may
    /// take a job, so a job whose lease is still ahead can be started without asking again.
    held: Mutex<HashMap<i64, DateTime<Utc>>>,
}

fn chrono(d: Duration) -> ChronoDuration {
    ChronoDuration::from_std(d).unwrap_or(ChronoDuration::MAX)
}

impl Worker {
    pub fn new(id: String, registry: Arc<Registry>, clock: Arc<dyn Clock>, settings: WorkerSettings) -> Worker {
        Worker { id, registry, clock, settings, held: Mutex::new(HashMap::new()) }
    }

    /// Claims due jobs without running them (what a worker that dies right after claiming leaves).
    pub fn claim(&self, conn: &mut PgConnection) -> QueryResult<Vec<Job>> {
        self.claim_into(conn, &self.settings.in_flight)
    }

    /// Claims a batch and runs every job in it that it still holds — jobs of one kind that
    /// follow each other together, through their handler's `perform_batch` — then settles them,
    /// all on this one connection. Returns how many it claimed.
    pub fn run_once(&self, conn: &mut PgConnection) -> QueryResult<usize> {
        self.cycle(&mut Conn::Held(conn))
    }

    fn cycle(&self, conn: &mut Conn<'_>) -> QueryResult<usize> {
        let began = Instant::now();
        let claimed = conn.run(|conn| self.claim(conn))?;
        let claiming = began.elapsed();
        let mut succeeded = Vec::with_capacity(claimed.len());
        for group in self.startable_groups(&claimed) {
            let results = match self.begin(conn, &group, Box::new(|| {}))? {
                Begun::Done(results) => results,
                Begun::Waiting(waiting) => self.finish(conn, waiting, group.len())?,
            };
            self.conclude(conn, &group, results, &mut succeeded)?;
        }
        let completing = Instant::now();
        self.complete(conn, &succeeded)?;
        if !claimed.is_empty() {
            log::debug!(
                "worker {}: {} jobs, claimed in {} ms, whole cycle {} ms, completing {} ms",
                self.id,
                claimed.len(),
                claiming.as_millis(),
                began.elapsed().as_millis(),
                completing.elapsed().as_millis()
            );
        }
        Ok(claimed.len())
    }

    /// Claims due jobs, with room for at most `rooms` more of each queue whose jobs wait on
    /// other systems (the pool's threads keep a window of those in flight).
    pub(super) fn claim_into(&self, conn: &mut PgConnection, rooms: &[(String, i64)]) -> QueryResult<Vec<Job>> {
        let now = self.clock.now();
        let claimed = queue::claim(conn, &self.id, &self.settings.queues, rooms, now, now + chrono(self.settings.lease), self.settings.batch)?;
        let mut held = self.held.lock().unwrap();
        for job in &claimed {
            held.insert(job.id, job.locked_until.unwrap_or(now));
        }
        Ok(claimed)
    }

    pub(super) fn settings(&self) -> &WorkerSettings {
        &self.settings
    }

    /// The claimed jobs in runs of one kind, each run without the jobs whose lease ran out while
    /// earlier ones ran (another worker may be running them now: they are let go).
    pub(super) fn startable_groups(&self, claimed: &[Job]) -> Vec<Vec<Job>> {
        let mut groups = Vec::new();
        let mut rest: &[Job] = claimed;
        while let Some(first) = rest.first() {
            let same_kind = rest.iter().take_while(|j| j.kind == first.kind).count();
            let (group, tail) = rest.split_at(same_kind);
            rest = tail;
            let (startable, lost): (Vec<Job>, Vec<Job>) = group.iter().cloned().partition(|job| self.still_holds(job.id));
            for job in lost {
                log::warn!("job {} ({}): lease lost before it started; left to whoever holds it", job.id, job.kind);
                self.release(job.id);
            }
            if !startable.is_empty() {
                groups.push(startable);
            }
        }
        groups
    }

    /// Settles these jobs' failures and lets go of them all; the ones that succeeded are added to
    /// `succeeded`, for the caller to complete.
    pub(super) fn conclude(&self, conn: &mut Conn<'_>, jobs: &[Job], results: Vec<Result<(), JobError>>, succeeded: &mut Vec<i64>) -> QueryResult<()> {
        let failed: Vec<(&Job, JobError)> = jobs
            .iter()
            .zip(results)
            .filter_map(|(job, result)| match result {
                Ok(()) => {
                    succeeded.push(job.id);
                    None
                }
                Err(error) => Some((job, error)),
            })
            .collect();
        // Let go first: should the database fail below, the jobs' leases run out and the rescuer
        // puts them back, rather than the heartbeat holding them for ever.
        for job in jobs {
            self.release(job.id);
        }
        if !failed.is_empty() {
            conn.run(|conn| failed.into_iter().try_for_each(|(job, error)| self.settle_failure(conn, job, error)))?;
        }
        Ok(())
    }

    pub(super) fn complete(&self, conn: &mut Conn<'_>, succeeded: &[i64]) -> QueryResult<usize> {
        conn.run(|conn| queue::complete(conn, &self.id, succeeded, self.clock.now()))
    }

    fn still_holds(&self, job_id: i64) -> bool {
        let now = self.clock.now();
        self.held.lock().unwrap().get(&job_id).is_some_and(|until| now < *until)
    }

    pub(super) fn release(&self, job_id: i64) {
        self.held.lock().unwrap().remove(&job_id);
    }

    /// Extends the lease of every job this worker holds, so that a job that runs long (a slow
    /// gateway) is not taken for abandoned; forgets the ones it no longer holds. Returns how many
    /// it still holds.
    pub fn heartbeat(&self, conn: &mut PgConnection) -> QueryResult<usize> {
        let ids: Vec<i64> = self.held.lock().unwrap().keys().copied().collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let until = self.clock.now() + chrono(self.settings.lease);
        let kept = queue::extend_leases(conn, &self.id, &ids, until)?;
        let mut held = self.held.lock().unwrap();
        held.retain(|id, _| kept.contains(id));
        for id in &kept {
            // A job that finished while the heartbeat ran is not brought back.
            if let Some(lease) = held.get_mut(id) {
                *lease = until;
            }
        }
        Ok(held.len())
    }

    /// Begins the handler's work on these jobs (all of one kind). The outer error means the
    /// connection could not be made clean again after a panic: the caller must stop using it.
    pub(super) fn begin(&self, conn: &mut Conn<'_>, jobs: &[Job], ready: Ready) -> QueryResult<Begun> {
        let Some(handler) = self.registry.get(&jobs[0].kind) else {
            let unknown = JobError::Permanent(format!("no handler for job kind {:?}", jobs[0].kind));
            return Ok(Begun::Done(vec![Err(unknown); jobs.len()]));
        };
        match catch_unwind(AssertUnwindSafe(|| handler.begin_batch(conn, jobs, ready))) {
            Ok(begun) => Ok(begun),
            Err(panic) => Ok(Begun::Done(panicked(conn, panic, jobs.len())?)),
        }
    }

    /// Settles begun work (waiting for its answers if they are not all in): one result per job.
    pub(super) fn finish(&self, conn: &mut Conn<'_>, waiting: Box<dyn Waiting>, jobs: usize) -> QueryResult<Vec<Result<(), JobError>>> {
        match catch_unwind(AssertUnwindSafe(|| waiting.finish(conn))) {
            Ok(results) => Ok(results),
            Err(panic) => panicked(conn, panic, jobs),
        }
    }

    fn settle_failure(&self, conn: &mut PgConnection, job: &Job, error: JobError) -> QueryResult<()> {
        let now = self.clock.now();
        let handler = self.registry.get(&job.kind);
        let (next, message) = match &error {
            JobError::Snooze { until, reason } => (Reschedule::Snooze { at: *until }, reason.clone()),
            JobError::Transient(m) if job.attempt < job.max_attempts => {
                let backoff = handler.as_ref().map(|h| h.backoff()).unwrap_or_default();
                (Reschedule::Retry { at: now + chrono(backoff.delay(job.attempt)) }, m.clone())
            }
            JobError::Transient(m) => (Reschedule::Dead, format!("{m} (after {} attempts)", job.attempt)),
            JobError::Permanent(m) => (Reschedule::Dead, m.clone()),
        };
        conn.transaction(|conn| self.reschedule(conn, &self.id, job, &next, &message, now))
    }

    /// Moves a job `holder` holds to `next`; a job that dies runs its kind's `on_dead` hook in
    /// the caller's transaction.
    fn reschedule(
        &self,
        conn: &mut PgConnection,
        holder: &str,
        job: &Job,
        next: &Reschedule,
        message: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> QueryResult<()> {
        let held = queue::reschedule(conn, holder, job, next, message, now)?;
        if held && matches!(next, Reschedule::Dead) {
            log::warn!("job {} ({}) is dead: {message}", job.id, job.kind);
            if let Some(handler) = self.registry.get(&job.kind) {
                handler.on_dead(conn, job)?;
            }
        }
        Ok(())
    }

    /// Puts back jobs whose worker vanished; those out of attempts go dead (with their hook).
    pub fn rescue_expired(&self, conn: &mut PgConnection) -> QueryResult<usize> {
        let now = self.clock.now();
        conn.transaction(|conn| {
            let expired = queue::expired_leases(conn, now, 100)?;
            for job in &expired {
                // The vanished worker still holds the row; the rescuer acts in its name.
                let holder = job.locked_by.as_deref().unwrap_or_default();
                let message = format!("lease expired: worker {holder} stopped answering");
                let next = if job.attempt < job.max_attempts { Reschedule::Retry { at: now } } else { Reschedule::Dead };
                self.reschedule(conn, holder, job, &next, &message, now)?;
            }
            Ok(expired.len())
        })
    }
}

/// A pool of worker threads sharing a stop flag. `stop()` stops claiming, lets every claimed job
/// finish, and returns when all threads have.
pub struct WorkerPool {
    stop: Arc<AtomicBool>,
    /// Wakes the heartbeat thread when the pool is asked to stop.
    stopping: Arc<Wake>,
    wake: Arc<Wake>,
    threads: Vec<JoinHandle<()>>,
    heartbeat: Option<JoinHandle<()>>,
}

pub struct PoolParts {
    pub pool: PgPool,
    pub registry: Arc<Registry>,
    pub clock: Arc<dyn Clock>,
    pub wake: Arc<Wake>,
    pub scheduler: Option<Arc<Scheduler>>,
}

impl WorkerPool {
    pub fn start(settings: WorkerSettings, parts: PoolParts) -> WorkerPool {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::new(Wake::default());
        let prefix = format!("{}-{}", hostname(), &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let workers: Vec<Arc<Worker>> = (0..settings.threads.max(1))
            .map(|n| Arc::new(Worker::new(format!("{prefix}-{n}"), parts.registry.clone(), parts.clock.clone(), settings.clone())))
            .collect();
        let heartbeat = {
            let (workers, pool, stop, stopping, every) =
                (workers.clone(), parts.pool.clone(), stop.clone(), stopping.clone(), settings.lease / 3);
            std::thread::Builder::new()
                .name("worker-heartbeat".into())
                .spawn(move || beat(workers, pool, stop, stopping, every))
                .expect("spawn the heartbeat thread")
        };
        let threads = workers
            .into_iter()
            .enumerate()
            .map(|(n, worker)| {
                let (pool, stop, wake) = (parts.pool.clone(), stop.clone(), parts.wake.clone());
                // The first thread also keeps time for the scheduler and the lease rescuer.
                let scheduler = if n == 0 { parts.scheduler.clone() } else { None };
                let poll = settings.poll_interval;
                std::thread::Builder::new()
                    .name(format!("worker-{n}"))
                    .spawn(move || run_loop(worker, pool, stop, wake, scheduler, n == 0, poll))
                    .expect("spawn a worker thread")
            })
            .collect();
        log::info!("{} workers started ({prefix})", settings.threads.max(1));
        WorkerPool { stop, stopping, wake: parts.wake, threads, heartbeat: Some(heartbeat) }
    }

    /// Stops claiming; workers finish what they hold. Returns at once.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify();
        self.stopping.notify();
    }

    /// Waits until every worker has finished its jobs and exited.
    pub fn join(mut self) {
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        // Beats until the last job is finished, then sees the stop flag.
        if let Some(heartbeat) = self.heartbeat.take() {
            let _ = heartbeat.join();
        }
        log::info!("workers stopped");
    }

    pub fn stop(self) {
        self.request_stop();
        self.join();
    }
}

/// Extends the leases of the jobs every worker of the pool holds, every `every` (a third of the
/// lease, so two beats can be missed before anyone takes a job for abandoned). Stops with the pool.
fn beat(workers: Vec<Arc<Worker>>, pool: PgPool, stop: Arc<AtomicBool>, stopping: Arc<Wake>, every: Duration) {
    let counter = QueryCounter::default();
    loop {
        // While the pool stops, look often for the moment its last job is done.
        let stopping_now = stop.load(Ordering::SeqCst);
        stopping.wait(if stopping_now { every.min(Duration::from_millis(50)) } else { every });
        if stop.load(Ordering::SeqCst) && workers.iter().all(|w| w.held.lock().unwrap().is_empty()) {
            return;
        }
        let Ok(mut conn) = CountedConn::checkout(&pool, &counter) else { continue };
        for worker in &workers {
            if let Err(e) = worker.heartbeat(&mut conn) {
                log::warn!("heartbeat for {} failed: {e}", worker.id);
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "worker".into())
}

fn run_loop(
    worker: Arc<Worker>,
    pool: PgPool,
    stop: Arc<AtomicBool>,
    wake: Arc<Wake>,
    scheduler: Option<Arc<Scheduler>>,
    rescuer: bool,
    poll: Duration,
) {
    let counter = QueryCounter::default();
    let mut last_housekeeping: Option<Instant> = None;
    let mut window = Window::default();
    while !stop.load(Ordering::SeqCst) {
        if last_housekeeping.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            last_housekeeping = Some(Instant::now());
            match CountedConn::checkout(&pool, &counter) {
                Ok(mut conn) => {
                    if rescuer {
                        if let Err(e) = worker.rescue_expired(&mut conn) {
                            log::warn!("lease rescue failed: {e}");
                        }
                    }
                    if let Some(scheduler) = &scheduler {
                        if let Err(e) = scheduler.tick(&mut conn) {
                            log::warn!("scheduler tick failed: {e}");
                        }
                    }
                }
                Err(e) => log::warn!("worker {}: no database connection: {e}", worker.id),
            }
        }
        // Connections are taken for each step, never held while jobs wait.
        match worker.turn(&mut window, &mut Conn::Pooled { pool: &pool, counter: &counter }) {
            Ok(turn) => {
                if turn.finished > 0 {
                    // Whoever waits on the pool's progress (an idle sibling, a test) looks.
                    wake.notify();
                }
                if turn.claimed_all_asked || turn.finished > 0 {
                    continue;
                }
                if window.is_empty() {
                    wake.wait(poll);
                } else {
                    // Jobs enqueued meanwhile are claimed when the next flight lands.
                    window.wait(poll);
                }
            }
            Err(e) => {
                log::warn!("worker {}: {e}", worker.id);
                wake.wait(poll);
            }
        }
    }
    worker.land(&mut window, &mut Conn::Pooled { pool: &pool, counter: &counter }, poll);
}
