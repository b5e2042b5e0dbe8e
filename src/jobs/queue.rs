//! Every query the job queue makes.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Jsonb, Nullable, SmallInt, Text, Timestamptz};
use serde_json::json;

use super::Job;
use crate::schema::jobs;

#[derive(Debug, Clone)]
pub struct NewJob {
    pub queue: String,
    pub kind: String,
    pub args: serde_json::Value,
    pub priority: i16,
    pub max_attempts: i32,
    pub run_at: Option<DateTime<Utc>>,
    pub unique_key: Option<String>,
}

impl NewJob {
    pub fn new(kind: &str, args: serde_json::Value) -> NewJob {
        NewJob {
            queue: "default".into(),
            kind: kind.into(),
            args,
            priority: 0,
            max_attempts: 4,
            run_at: None,
            unique_key: None,
        }
    }

    pub fn queue(mut self, queue: &str) -> NewJob {
        self.queue = queue.into();
        self
    }

    pub fn max_attempts(mut self, n: i32) -> NewJob {
        self.max_attempts = n.max(1);
        self
    }

    pub fn run_at(mut self, at: DateTime<Utc>) -> NewJob {
        self.run_at = Some(at);
        self
    }

    /// At most one job with this key is waiting or running at any time.
    pub fn unique(mut self, key: impl Into<String>) -> NewJob {
        self.unique_key = Some(key.into());
        self
    }
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Enqueues a job, due at its `run_at` or else at `now` (the caller's clock, so that tests under a
/// fake clock see it due); `None` when an equal unique job is already waiting or running.
pub fn enqueue(conn: &mut PgConnection, job: &NewJob, now: DateTime<Utc>) -> QueryResult<Option<i64>> {
    insert(conn, job, now, None)
}

/// The one INSERT of a job; with a bound, it inserts only while fewer than `bound` jobs are
/// ready in the job's queue, checked in the same statement.
fn insert(conn: &mut PgConnection, job: &NewJob, now: DateTime<Utc>, bound: Option<i64>) -> QueryResult<Option<i64>> {
    let only_below_bound = match bound {
        Some(_) => "WHERE (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE state = 'available' AND queue = $1 LIMIT $8) ready) < $8",
        None => "",
    };
    let query = diesel::sql_query(format!(
        "INSERT INTO jobs (queue, kind, args, priority, max_attempts, run_at, unique_key) \
         SELECT $1, $2, $3, $4, $5, $6, $7 {only_below_bound} \
         ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'running') \
         DO NOTHING RETURNING id"
    ))
    .bind::<Text, _>(&job.queue)
    .bind::<Text, _>(&job.kind)
    .bind::<Jsonb, _>(&job.args)
    .bind::<SmallInt, _>(job.priority)
    .bind::<Integer, _>(job.max_attempts)
    .bind::<Timestamptz, _>(job.run_at.unwrap_or(now))
    .bind::<Nullable<Text>, _>(&job.unique_key);
    let rows: Vec<Id> = match bound {
        Some(limit) => query.bind::<BigInt, _>(limit).load(conn)?,
        None => query.load(conn)?,
    };
    Ok(rows.first().map(|r| r.id))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {limit}-job queue is full")]
pub struct QueueFull {
    pub limit: i64,
}

/// Enqueues unless the queue already holds `limit` ready jobs. The bound is approximate on
/// purpose: ready jobs are counted without any lock, so concurrent callers do not wait for each
/// other (an advisory lock here once made every Pay run one after another). Each caller sees every
/// job committed before it counted, so the queue can overshoot `limit` only by the enqueues still
/// uncommitted at that moment — at most one per concurrent caller, and there are never more of
/// those than database connections. Call it inside the transaction that creates the job's rows: on
/// `QueueFull` that transaction must roll back, leaving nothing behind.
pub fn enqueue_bounded(
    conn: &mut PgConnection,
    job: &NewJob,
    limit: i64,
    now: DateTime<Utc>,
) -> QueryResult<Result<Option<i64>, QueueFull>> {
    if let Some(id) = insert(conn, job, now, Some(limit))? {
        return Ok(Ok(Some(id)));
    }
    // No row: the queue is full, or an equal job is already waiting.
    let duplicate = match &job.unique_key {
        Some(key) => diesel::select(diesel::dsl::exists(
            jobs::table.filter(jobs::unique_key.eq(key)).filter(jobs::state.eq_any(["available", "running"])),
        ))
        .get_result::<bool>(conn)?,
        None => false,
    };
    Ok(if duplicate { Ok(None) } else { Err(QueueFull { limit }) })
}

/// Claims up to `limit` due jobs for `worker` until `lease_until`, skipping rows other workers hold.
/// Queues are asked one at a time, in order: with a single queue the ready index hands rows over
/// already sorted and the scan stops at `limit` (an `= ANY(queues)` would sort every ready row).
/// A queue in `in_flight` gives up to its own number of jobs, and only to an otherwise empty batch.
pub fn claim(
    conn: &mut PgConnection,
    worker: &str,
    queues: &[String],
    in_flight: &[(String, i64)],
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> QueryResult<Vec<Job>> {
    let mut claimed: Vec<Job> = Vec::new();
    for queue in queues {
        let wanted = match in_flight.iter().find(|(q, _)| q == queue) {
            Some((_, at_once)) if claimed.is_empty() => *at_once,
            Some(_) => continue,
            None => limit - claimed.len() as i64,
        };
        if wanted <= 0 {
            continue;
        }
        let mut batch: Vec<Job> = diesel::sql_query(
            "UPDATE jobs SET state = 'running', attempt = attempt + 1, locked_by = $1, locked_until = $2 \
             WHERE id IN ( \
                 SELECT id FROM jobs \
                 WHERE state = 'available' AND queue = $3 AND run_at <= $4 \
                 ORDER BY priority DESC, run_at, id \
                 LIMIT $5 FOR UPDATE SKIP LOCKED) \
             RETURNING *",
        )
        .bind::<Text, _>(worker)
        .bind::<Timestamptz, _>(lease_until)
        .bind::<Text, _>(queue)
        .bind::<Timestamptz, _>(now)
        .bind::<BigInt, _>(wanted)
        .load(conn)?;
        batch.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.run_at.cmp(&b.run_at)).then(a.id.cmp(&b.id)));
        claimed.append(&mut batch);
    }
    Ok(claimed)
}

/// Marks finished the jobs this worker still holds; a job whose lease was lost is left alone.
pub fn complete(conn: &mut PgConnection, worker: &str, ids: &[i64], now: DateTime<Utc>) -> QueryResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    diesel::update(jobs::table.filter(jobs::id.eq_any(ids)).filter(jobs::state.eq("running")).filter(jobs::locked_by.eq(worker)))
        .set((
            jobs::state.eq("completed"),
            jobs::finished_at.eq(now),
            jobs::locked_by.eq(None::<String>),
            jobs::locked_until.eq(None::<DateTime<Utc>>),
        ))
        .execute(conn)
}

/// Extends the lease of those of `ids` that `worker` still holds; returns their ids.
pub fn extend_leases(conn: &mut PgConnection, worker: &str, ids: &[i64], until: DateTime<Utc>) -> QueryResult<Vec<i64>> {
    diesel::update(jobs::table.filter(jobs::id.eq_any(ids)).filter(jobs::state.eq("running")).filter(jobs::locked_by.eq(worker)))
        .set(jobs::locked_until.eq(until))
        .returning(jobs::id)
        .get_results(conn)
}

fn error_entry(job: &Job, kind: &str, message: &str, now: DateTime<Utc>) -> serde_json::Value {
    json!([{ "attempt": job.attempt, "at": now, "kind": kind, "error": message }])
}

/// What to do with a job that did not succeed.
pub enum Reschedule {
    Retry { at: DateTime<Utc> },
    /// Run again at `at` and give the attempt back.
    Snooze { at: DateTime<Utc> },
    Dead,
}

/// Applies `next` to a job this worker holds; `false` if the lease was lost meanwhile.
pub fn reschedule(
    conn: &mut PgConnection,
    worker: &str,
    job: &Job,
    next: &Reschedule,
    message: &str,
    now: DateTime<Utc>,
) -> QueryResult<bool> {
    let held = jobs::table.find(job.id).filter(jobs::state.eq("running")).filter(jobs::locked_by.eq(worker));
    let unlock = (jobs::locked_by.eq(None::<String>), jobs::locked_until.eq(None::<DateTime<Utc>>));
    let updated = match next {
        Reschedule::Retry { at } => diesel::update(held)
            .set((jobs::state.eq("available"), jobs::run_at.eq(at), jobs::errors.eq(jobs::errors.concat(error_entry(job, "retry", message, now))), unlock))
            .execute(conn)?,
        Reschedule::Snooze { at } => diesel::update(held)
            .set((jobs::state.eq("available"), jobs::run_at.eq(at), jobs::attempt.eq(jobs::attempt - 1), unlock))
            .execute(conn)?,
        Reschedule::Dead => diesel::update(held)
            .set((
                jobs::state.eq("dead"),
                jobs::finished_at.eq(now),
                jobs::errors.eq(jobs::errors.concat(error_entry(job, "dead", message, now))),
                unlock,
            ))
            .execute(conn)?,
    };
    Ok(updated == 1)
}

/// Jobs whose worker stopped answering (killed, machine lost): their lease ran out.
pub fn expired_leases(conn: &mut PgConnection, now: DateTime<Utc>, limit: i64) -> QueryResult<Vec<Job>> {
    jobs::table
        .filter(jobs::state.eq("running"))
        .filter(jobs::locked_until.lt(now))
        .order(jobs::locked_until)
        .limit(limit)
        .for_update()
        .skip_locked()
        .select(Job::as_select())
        .load(conn)
}

/// A dead job back in the queue with a fresh set of attempts.
pub fn retry_dead(conn: &mut PgConnection, id: i64, now: DateTime<Utc>) -> QueryResult<bool> {
    diesel::update(jobs::table.find(id).filter(jobs::state.eq("dead")))
        .set((jobs::state.eq("available"), jobs::attempt.eq(0), jobs::run_at.eq(now), jobs::finished_at.eq(None::<DateTime<Utc>>)))
        .execute(conn)
        .map(|n| n == 1)
}

pub fn discard_dead(conn: &mut PgConnection, id: i64) -> QueryResult<bool> {
    diesel::delete(jobs::table.find(id).filter(jobs::state.eq("dead"))).execute(conn).map(|n| n == 1)
}

/// Forgets finished jobs older than `before`.
pub fn prune(conn: &mut PgConnection, before: DateTime<Utc>) -> QueryResult<usize> {
    diesel::delete(jobs::table.filter(jobs::state.eq("completed")).filter(jobs::finished_at.lt(before))).execute(conn)
}

#[derive(Debug, QueryableByName)]
pub struct StateCount {
    #[diesel(sql_type = Text)]
    pub queue: String,
    #[diesel(sql_type = Text)]
    pub state: String,
    #[diesel(sql_type = BigInt)]
    pub count: i64,
}

pub fn counts(conn: &mut PgConnection) -> QueryResult<Vec<StateCount>> {
    diesel::sql_query("SELECT queue, state, count(*) AS count FROM jobs GROUP BY queue, state ORDER BY queue, state").load(conn)
}

#[derive(Debug, QueryableByName)]
pub struct Latency {
    #[diesel(sql_type = Nullable<diesel::sql_types::Double>)]
    pub seconds: Option<f64>,
}

/// How long the oldest due job has been waiting: the queue's latency.
pub fn oldest_ready_age(conn: &mut PgConnection, now: DateTime<Utc>) -> QueryResult<Option<f64>> {
    let row: Latency = diesel::sql_query(
        "SELECT EXTRACT(EPOCH FROM ($1 - min(run_at)))::float8 AS seconds FROM jobs WHERE state = 'available' AND run_at <= $1",
    )
    .bind::<Timestamptz, _>(now)
    .get_result(conn)?;
    Ok(row.seconds)
}

#[derive(Debug, QueryableByName)]
pub struct MinuteCount {
    #[diesel(sql_type = Timestamptz)]
    pub minute: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    pub count: i64,
}

/// Jobs completed per minute over the last `minutes` minutes.
pub fn throughput(conn: &mut PgConnection, now: DateTime<Utc>, minutes: i32) -> QueryResult<Vec<MinuteCount>> {
    diesel::sql_query(
        "SELECT date_trunc('minute', finished_at) AS minute, count(*) AS count FROM jobs \
         WHERE state = 'completed' AND finished_at > $1 - make_interval(mins => $2) \
         GROUP BY 1 ORDER BY 1",
    )
    .bind::<Timestamptz, _>(now)
    .bind::<Integer, _>(minutes)
    .load(conn)
}

pub fn dead(conn: &mut PgConnection, limit: i64) -> QueryResult<Vec<Job>> {
    jobs::table
        .filter(jobs::state.eq("dead"))
        .order((jobs::finished_at.desc(), jobs::id.desc()))
        .limit(limit)
        .select(Job::as_select())
        .load(conn)
}

/// Which of these unique keys belong to a job that died (and has not been replaced by a live one).
pub fn dead_unique_keys(conn: &mut PgConnection, keys: &[String]) -> QueryResult<Vec<String>> {
    let dead: Vec<Option<String>> = jobs::table
        .filter(jobs::unique_key.eq_any(keys).and(jobs::state.eq("dead")))
        .select(jobs::unique_key)
        .load(conn)?;
    let live: Vec<Option<String>> = jobs::table
        .filter(jobs::unique_key.eq_any(keys).and(jobs::state.eq_any(["available", "running"])))
        .select(jobs::unique_key)
        .load(conn)?;
    Ok(dead.into_iter().flatten().filter(|k| !live.contains(&Some(k.clone()))).collect())
}

/// What a group-commit writer gets when it asks for room for a batch.
pub enum Admission {
    /// Room, and the connection to write the batch on.
    Admitted(crate::db::PooledConn),
    Full,
    /// No connection, or the count failed (logged): the batch is not written.
    Unavailable,
}

/// How many jobs are ready in a queue, at most `limit`, read from the database at most once per
/// `fresh_for` and shared by every caller in between. For bounds that only need to be
/// approximate: counting the ready jobs on every request costs up to `limit` index entries each
/// time — exactly when the queue is backed up and the database has the least to spare.
pub struct ReadyEstimate {
    queue: String,
    limit: i64,
    fresh_for: std::time::Duration,
    last: std::sync::Mutex<Option<(std::time::Instant, i64)>>,
}

impl ReadyEstimate {
    pub fn new(queue: &str, limit: i64, fresh_for: std::time::Duration) -> ReadyEstimate {
        ReadyEstimate { queue: queue.to_string(), limit, fresh_for, last: std::sync::Mutex::new(None) }
    }

    /// Whether the queue has room for `n` more jobs, by the latest estimate (refreshed here when it
    /// is stale); if so they are counted in it. A batch is let in whole while the queue is below
    /// its limit, so the queue can exceed it by at most one batch per writer. Jobs admitted since
    /// the last count are added to it (jobs finished since are not taken off until the next
    /// count): the estimate errs towards full.
    pub fn admit(&self, conn: &mut PgConnection, n: usize) -> QueryResult<bool> {
        let known = *self.last.lock().unwrap();
        if !known.is_some_and(|(at, _)| at.elapsed() < self.fresh_for) {
            // Counted without the lock held: the other writers go on meanwhile.
            let ready = count_ready(conn, &self.queue, self.limit)?;
            *self.last.lock().unwrap() = Some((std::time::Instant::now(), ready));
        }
        let mut last = self.last.lock().unwrap();
        let Some((_, ready)) = last.as_mut() else { return Ok(true) };
        if *ready >= self.limit {
            return Ok(false);
        }
        *ready += n as i64;
        Ok(true)
    }

    /// A connection from `pool` and room for `n` jobs (`admit`), for the writer named `who`.
    pub fn admit_from(&self, pool: &crate::db::PgPool, n: usize, who: &str) -> Admission {
        let mut conn = match pool.get() {
            Ok(conn) => conn,
            Err(e) => {
                log::warn!("{who}: no connection ({e})");
                return Admission::Unavailable;
            }
        };
        match self.admit(&mut conn, n) {
            Ok(true) => Admission::Admitted(conn),
            Ok(false) => Admission::Full,
            Err(e) => {
                log::warn!("{who}: {e}");
                Admission::Unavailable
            }
        }
    }
}

fn count_ready(conn: &mut PgConnection, queue: &str, limit: i64) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct Ready {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    diesel::sql_query("SELECT count(*) AS n FROM (SELECT 1 FROM jobs WHERE state = 'available' AND queue = $1 LIMIT $2) ready")
        .bind::<Text, _>(queue)
        .bind::<BigInt, _>(limit)
        .get_result::<Ready>(conn)
        .map(|r| r.n)
}

pub fn find(conn: &mut PgConnection, id: i64) -> QueryResult<Option<crate::jobs::Job>> {
    jobs::table.find(id).select(crate::jobs::Job::as_select()).first(conn).optional()
}
