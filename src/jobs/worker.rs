//! Workers: threads that claim jobs in batches, run them, and settle them under their lease.

use chrono::Duration as ChronoDuration;
use diesel::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::queue::{self, Reschedule};
use super::{Job, JobError, Registry, Scheduler, Wake};
use crate::clock::Clock;
use crate::db::{CountedConn, PgPool, QueryCounter};

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub threads: usize,
    pub queues: Vec<String>,
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
            batch: 20,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// One worker: claims a batch, runs it, settles it. `run_once` is the whole cycle, which tests
/// call directly under a fake clock.
pub struct Worker {
    pub id: String,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    settings: WorkerSettings,
}

fn chrono(d: Duration) -> ChronoDuration {
    ChronoDuration::from_std(d).unwrap_or(ChronoDuration::MAX)
}

impl Worker {
    pub fn new(id: String, registry: Arc<Registry>, clock: Arc<dyn Clock>, settings: WorkerSettings) -> Worker {
        Worker { id, registry, clock, settings }
    }

    /// Claims due jobs without running them (what a worker that dies right after claiming leaves).
    pub fn claim(&self, conn: &mut PgConnection) -> QueryResult<Vec<Job>> {
        let now = self.clock.now();
        queue::claim(conn, &self.id, &self.settings.queues, now, now + chrono(self.settings.lease), self.settings.batch)
    }

    /// Claims a batch and runs every job in it; returns how many ran.
    pub fn run_once(&self, conn: &mut PgConnection) -> QueryResult<usize> {
        let claimed = self.claim(conn)?;
        let mut succeeded = Vec::with_capacity(claimed.len());
        for job in &claimed {
            match self.perform(conn, job) {
                Ok(()) => succeeded.push(job.id),
                Err(error) => self.settle_failure(conn, job, error)?,
            }
        }
        queue::complete(conn, &self.id, &succeeded, self.clock.now())?;
        Ok(claimed.len())
    }

    fn perform(&self, conn: &mut PgConnection, job: &Job) -> Result<(), JobError> {
        let Some(handler) = self.registry.get(&job.kind) else {
            return Err(JobError::Permanent(format!("no handler for job kind {:?}", job.kind)));
        };
        // A panicking handler is a bug in one job, not a reason to lose the worker and its batch.
        match catch_unwind(AssertUnwindSafe(|| handler.perform(conn, job))) {
            Ok(result) => result,
            Err(panic) => {
                let why = panic.downcast_ref::<&str>().map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown".into());
                Err(JobError::Transient(format!("job panicked: {why}")))
            }
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
    wake: Arc<Wake>,
    threads: Vec<JoinHandle<()>>,
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
        let prefix = format!("{}-{}", hostname(), &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let threads = (0..settings.threads.max(1))
            .map(|n| {
                let worker = Worker::new(format!("{prefix}-{n}"), parts.registry.clone(), parts.clock.clone(), settings.clone());
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
        WorkerPool { stop, wake: parts.wake, threads }
    }

    /// Stops claiming; workers finish what they hold. Returns at once.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify();
    }

    /// Waits until every worker has finished its jobs and exited.
    pub fn join(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
        log::info!("workers stopped");
    }

    pub fn stop(self) {
        self.request_stop();
        self.join();
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "worker".into())
}

fn run_loop(
    worker: Worker,
    pool: PgPool,
    stop: Arc<AtomicBool>,
    wake: Arc<Wake>,
    scheduler: Option<Arc<Scheduler>>,
    rescuer: bool,
    poll: Duration,
) {
    let counter = QueryCounter::default();
    let mut last_housekeeping: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        let mut conn = match CountedConn::checkout(&pool, &counter) {
            Ok(conn) => conn,
            Err(e) => {
                log::warn!("worker {}: no database connection: {e}", worker.id);
                wake.wait(poll);
                continue;
            }
        };
        if last_housekeeping.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            last_housekeeping = Some(Instant::now());
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
        match worker.run_once(&mut conn) {
            Ok(0) => {
                drop(conn);
                wake.wait(poll);
            }
            Ok(_) => {}
            Err(e) => {
                log::warn!("worker {}: {e}", worker.id);
                drop(conn);
                wake.wait(poll);
            }
        }
    }
}
