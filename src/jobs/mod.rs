//! The durable job queue in PostgreSQL, its workers, and the periodic scheduler.
//!
//! A job is enqueued in the same transaction as the rows it is about, claimed with
//! `FOR UPDATE SKIP LOCKED` under a lease, and finished only by the worker holding that lease.
//! Delivery is at least once; handlers make their effect idempotent (the payment processor does).

pub mod queue;
pub mod routes;
pub mod scheduler;
pub mod window;
pub mod worker;

use chrono::{DateTime, Utc};
use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::prelude::*;
use rand::Rng;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::schema::jobs;

pub use queue::{dead_unique_keys, enqueue, enqueue_bounded, NewJob, QueueFull, ReadyEstimate};

/// What the Jobs pages need, registered as app data by `app::mount`.
pub struct JobsState {
    pub clock: Arc<dyn crate::clock::Clock>,
    pub wake: Arc<Wake>,
    /// Gauges other areas keep in PostgreSQL, refreshed when `/metrics` is scraped.
    pub gauges: Vec<Arc<dyn crate::metrics::DatabaseGauges>>,
    /// The handlers, which say whether retrying one of their dead jobs can help.
    pub registry: Arc<Registry>,
}
pub use scheduler::{Periodic, Scheduler};
pub use worker::{Worker, WorkerPool, WorkerSettings};

#[derive(Debug, Clone, Queryable, Selectable, QueryableByName, Serialize)]
#[diesel(table_name = jobs, check_for_backend(diesel::pg::Pg))]
pub struct Job {
    pub id: i64,
    pub queue: String,
    pub kind: String,
    pub args: serde_json::Value,
    pub state: String,
    pub priority: i16,
    pub attempt: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub locked_by: Option<String>,
    pub locked_until: Option<DateTime<Utc>>,
    pub unique_key: Option<String>,
    pub errors: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Where a job's database work happens: on one connection held for the whole job (what tests
/// pass), or on connections taken from the pool for each step and given back in between — so
/// that a job waiting on another system (a gateway) holds no connection while it waits.
pub enum Conn<'a> {
    Held(&'a mut PgConnection),
    Pooled { pool: &'a crate::db::PgPool, counter: &'a crate::db::QueryCounter },
}

impl Conn<'_> {
    /// Runs one step of database work.
    pub fn run<T, E: From<diesel::result::Error>>(&mut self, work: impl FnOnce(&mut PgConnection) -> Result<T, E>) -> Result<T, E> {
        match self {
            Conn::Held(conn) => work(conn),
            Conn::Pooled { pool, counter } => {
                let mut conn = crate::db::CountedConn::checkout(pool, counter).map_err(|e| {
                    diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::ClosedConnection, Box::new(e.to_string()))
                })?;
                work(&mut conn)
            }
        }
    }
}

/// How a job attempt ended, when it did not succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt later (with backoff), while attempts remain.
    #[error("{0}")]
    Transient(String),
    /// Will never succeed: the job goes dead at once.
    #[error("{0}")]
    Permanent(String),
    /// Not now, and not the job's fault (a circuit breaker is open, another worker holds the
    /// payment): run again at `until` without using up an attempt.
    #[error("deferred until {until}: {reason}")]
    Snooze { until: DateTime<Utc>, reason: String },
}

impl From<diesel::result::Error> for JobError {
    fn from(e: diesel::result::Error) -> Self {
        JobError::Transient(format!("database: {e}"))
    }
}

/// Exponential backoff with jitter: `base · 2^(attempt-1)`, capped, ±`jitter`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base: Duration::from_secs(5), max: Duration::from_secs(3600), jitter: 0.2 }
    }
}

impl Backoff {
    /// The wait after failed attempt number `attempt` (1-based).
    pub fn delay(&self, attempt: i32) -> Duration {
        let exponent = attempt.saturating_sub(1).clamp(0, 30) as u32;
        let raw = self.base.saturating_mul(2u32.saturating_pow(exponent)).min(self.max);
        let spread = if self.jitter > 0.0 { rand::thread_rng().gen_range(-self.jitter..self.jitter) } else { 0.0 };
        raw.mul_f64(1.0 + spread)
    }
}

/// One kind of job: what it does, and what happens when it is given up on.
pub trait JobHandler: Send + Sync {
    fn kind(&self) -> &'static str;

    /// Does the work, outside any transaction: slow calls to other systems belong here.
    fn perform(&self, conn: &mut PgConnection, job: &Job) -> Result<(), JobError>;

    /// Does the work of several jobs of this kind at once (all claimed together, all to start
    /// now); one result per job, in order. Kinds whose jobs wait on other systems override it to
    /// wait for all of them together, with no connection held meanwhile.
    fn perform_batch(&self, conn: &mut Conn<'_>, jobs: &[Job]) -> Vec<Result<(), JobError>> {
        let done: QueryResult<Vec<_>> = conn.run(|conn| Ok(jobs.iter().map(|job| self.perform(conn, job)).collect()));
        done.unwrap_or_else(|e| vec![Err(JobError::from(e)); jobs.len()])
    }

    /// Begins the work of several jobs of this kind at once, for a worker that keeps several
    /// batches in flight. Kinds whose jobs wait on other systems override it to start the waiting
    /// and return at once (`Begun::Waiting`), calling `ready` when the last answer is in; the
    /// rest do the whole work here.
    fn begin_batch(&self, conn: &mut Conn<'_>, jobs: &[Job], _ready: Ready) -> Begun {
        Begun::Done(self.perform_batch(conn, jobs))
    }

    /// Runs inside the transaction that marks the job dead.
    fn on_dead(&self, _conn: &mut PgConnection, _job: &Job) -> QueryResult<()> {
        Ok(())
    }

    /// Whether retrying this dead job could help; `Err` says why not (shown to the admin who
    /// asked). By default any dead job may be retried.
    fn can_retry(&self, _conn: &mut PgConnection, _job: &Job) -> QueryResult<Result<(), String>> {
        Ok(Ok(()))
    }

    /// What Retry on a dead job of this kind will do, said next to the button before it is pressed.
    fn retry_means(&self) -> &'static str {
        RETRY_RUNS_AGAIN
    }

    fn backoff(&self) -> Backoff {
        Backoff::default()
    }
}

/// Called once, when the last answer of a begun batch is in, from whichever thread received it:
/// a notification, nothing slow.
pub type Ready = Box<dyn FnOnce() + Send>;

/// What `JobHandler::begin_batch` left: the jobs' results, or work that waits on other systems.
pub enum Begun {
    Done(Vec<Result<(), JobError>>),
    Waiting(Box<dyn Waiting>),
}

/// A begun batch whose answers are awaited.
pub trait Waiting: Send {
    /// Settles every answer and returns each job's result, in order. Called after `ready` it
    /// does not wait; called before, it waits for the answers first.
    fn finish(self: Box<Self>, conn: &mut Conn<'_>) -> Vec<Result<(), JobError>>;

    /// How many of its calls still wait for an answer: what it loads the other system with.
    fn unanswered(&self) -> usize;
}

/// Every job of a batch whose handler panicked: a bug in its jobs, not a reason to lose the
/// worker. A pooled connection the panic went through was discarded by the pool; one held for the
/// whole job is still ours, and may still be inside the handler's transaction.
pub(crate) fn panicked(conn: &mut Conn<'_>, panic: Box<dyn std::any::Any + Send>, jobs: usize) -> QueryResult<Vec<Result<(), JobError>>> {
    let why = panic.downcast_ref::<&str>().map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown".into());
    if let Conn::Held(held) = conn {
        roll_back_abandoned(held)?;
    }
    Ok(vec![Err(JobError::Transient(format!("job panicked: {why}"))); jobs])
}

/// A handler that panicked inside `conn.transaction` left that transaction open (diesel rolls
/// back on error, not on unwind). Everything the next job did on this connection would join it
/// and never commit, so it is rolled back here, savepoints and all.
fn roll_back_abandoned(conn: &mut PgConnection) -> QueryResult<()> {
    while AnsiTransactionManager::transaction_manager_status_mut(conn).transaction_depth()?.is_some() {
        AnsiTransactionManager::rollback_transaction(conn)?;
    }
    log::warn!("rolled back the transaction a panicking job left open");
    Ok(())
}

/// What Retry does unless a kind says more (and for a kind no handler knows).
pub const RETRY_RUNS_AGAIN: &str = "Runs the job again from its first attempt.";

/// The handlers a worker knows, by kind.
#[derive(Default, Clone)]
pub struct Registry {
    handlers: HashMap<&'static str, Arc<dyn JobHandler>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    pub fn register(mut self, handler: Arc<dyn JobHandler>) -> Registry {
        self.handlers.insert(handler.kind(), handler);
        self
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn JobHandler>> {
        self.handlers.get(kind)
    }
}

/// Wakes idle workers in this process as soon as a job is enqueued, instead of at their next poll.
#[derive(Default)]
pub struct Wake {
    generation: Mutex<u64>,
    signal: Condvar,
}

impl Wake {
    pub fn notify(&self) {
        *self.generation.lock().unwrap() += 1;
        self.signal.notify_all();
    }

    /// Waits for a notification or until `timeout` passes, whichever is first.
    pub fn wait(&self, timeout: Duration) {
        self.wait_unless(timeout, || false)
    }

    /// `wait`, unless `ready()` holds already. It is asked under the lock that `notify` takes, so
    /// a notification sent after it said no is never missed.
    pub fn wait_unless(&self, timeout: Duration, ready: impl Fn() -> bool) {
        let guard = self.generation.lock().unwrap();
        if ready() {
            return;
        }
        let seen = *guard;
        let _ = self.signal.wait_timeout_while(guard, timeout, |g| *g == seen);
    }
}

pub const NOOP: &str = "noop";

/// Does nothing: measures the queue itself.
pub struct Noop;

impl JobHandler for Noop {
    fn kind(&self) -> &'static str {
        NOOP
    }

    fn perform(&self, _: &mut PgConnection, _: &Job) -> Result<(), JobError> {
        Ok(())
    }
}

pub const PRUNE_JOBS: &str = "prune_jobs";

/// Forgets completed jobs after a week; dead ones stay until someone retries or discards them.
pub struct PruneJobs {
    pub clock: Arc<dyn crate::clock::Clock>,
}

impl JobHandler for PruneJobs {
    fn kind(&self) -> &'static str {
        PRUNE_JOBS
    }

    fn perform(&self, conn: &mut PgConnection, _: &Job) -> Result<(), JobError> {
        queue::prune(conn, self.clock.now() - chrono::Duration::days(7))?;
        Ok(())
    }
}

pub const PRUNE_SESSIONS: &str = "prune_sessions";

/// Forgets sign-in sessions that ended (revoked or expired) more than a day ago.
pub struct PruneSessions {
    pub clock: Arc<dyn crate::clock::Clock>,
}

impl JobHandler for PruneSessions {
    fn kind(&self) -> &'static str {
        PRUNE_SESSIONS
    }

    fn perform(&self, conn: &mut PgConnection, _: &Job) -> Result<(), JobError> {
        crate::auth::repo::prune_sessions(conn, self.clock.now() - chrono::Duration::days(1))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_within_its_jitter_and_cap() {
        let backoff = Backoff { base: Duration::from_secs(10), max: Duration::from_secs(100), jitter: 0.2 };
        for _ in 0..100 {
            let (d1, d2, d3) = (backoff.delay(1), backoff.delay(2), backoff.delay(3));
            assert!(d1 >= Duration::from_secs(8) && d1 <= Duration::from_secs(12), "{d1:?}");
            assert!(d2 > d1 && d3 > d2);
            assert!(backoff.delay(20) <= Duration::from_secs(120));
        }
        let exact = Backoff { jitter: 0.0, ..backoff };
        assert_eq!(exact.delay(3), Duration::from_secs(40));
    }
}
