//! Periodic jobs: each is enqueued once per time bucket, however many schedulers are running,
//! because the bucket is claimed by a primary key in the same transaction as the enqueue.

use chrono::{DateTime, TimeZone, Utc};
use diesel::prelude::*;
use std::sync::Arc;
use std::time::Duration;

use super::queue::{enqueue, NewJob};
use crate::clock::Clock;
use crate::schema::periodic_runs;

/// A job kind run once per `every`, with no arguments.
pub struct Periodic {
    pub kind: &'static str,
    pub every: Duration,
}

pub struct Scheduler {
    entries: Vec<Periodic>,
    clock: Arc<dyn Clock>,
}

/// The start of the bucket `now` falls in.
pub fn bucket(now: DateTime<Utc>, every: Duration) -> DateTime<Utc> {
    let step = every.as_secs().max(1) as i64;
    let start = now.timestamp().div_euclid(step) * step;
    Utc.timestamp_opt(start, 0).single().unwrap_or(now)
}

impl Scheduler {
    pub fn new(entries: Vec<Periodic>, clock: Arc<dyn Clock>) -> Scheduler {
        Scheduler { entries, clock }
    }

    /// Enqueues every periodic job whose current bucket has no run yet; returns how many.
    pub fn tick(&self, conn: &mut PgConnection) -> QueryResult<usize> {
        let now = self.clock.now();
        let mut enqueued = 0;
        for entry in &self.entries {
            let at = bucket(now, entry.every);
            let created = conn.transaction(|conn| {
                let claimed = diesel::insert_into(periodic_runs::table)
                    .values((periodic_runs::name.eq(entry.kind), periodic_runs::bucket.eq(at), periodic_runs::job_id.eq(0)))
                    .on_conflict_do_nothing()
                    .execute(conn)?;
                if claimed == 0 {
                    return Ok(false);
                }
                let job = NewJob::new(entry.kind, serde_json::json!({})).unique(format!("periodic:{}", entry.kind));
                let job_id = enqueue(conn, &job, now)?;
                diesel::update(periodic_runs::table.find((entry.kind, at)))
                    .set(periodic_runs::job_id.eq(job_id.unwrap_or(0)))
                    .execute(conn)?;
                Ok::<_, diesel::result::Error>(true)
            })?;
            enqueued += usize::from(created);
        }
        Ok(enqueued)
    }
}
