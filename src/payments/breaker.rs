//! A circuit breaker around the gateway whose state lives in PostgreSQL, so every worker process
//! sees the same one. Closed: calls go through. After `threshold` consecutive transient failures it
//! opens for `cooldown`: callers are told to come back later. Then one probe is let through
//! (half-open): its success closes the breaker, its failure opens it again.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text, Timestamptz};
use std::time::Duration;

use crate::schema::circuit_breakers;

#[derive(Debug, Clone)]
pub struct BreakerSettings {
    pub threshold: i32,
    pub cooldown: Duration,
    /// How long the single half-open probe may take before another caller may probe instead.
    pub probe_timeout: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings { threshold: 5, cooldown: Duration::from_secs(30), probe_timeout: Duration::from_secs(30) }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    Closed,
    /// The one call allowed through to test the gateway.
    Probe,
    Open { until: DateTime<Utc> },
}

#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = circuit_breakers, check_for_backend(diesel::pg::Pg))]
pub struct BreakerState {
    pub name: String,
    pub state: String,
    pub consecutive_failures: i32,
    pub opened_at: Option<DateTime<Utc>>,
    pub probe_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    name: String,
    settings: BreakerSettings,
}

fn chrono(d: Duration) -> ChronoDuration {
    ChronoDuration::from_std(d).unwrap_or(ChronoDuration::MAX)
}

impl CircuitBreaker {
    pub fn new(name: &str, settings: BreakerSettings) -> CircuitBreaker {
        CircuitBreaker { name: name.into(), settings }
    }

    pub fn state(&self, conn: &mut PgConnection) -> QueryResult<Option<BreakerState>> {
        circuit_breakers::table.find(&self.name).select(BreakerState::as_select()).first(conn).optional()
    }

    /// Whether a call may go to the gateway now. A closed breaker costs one read and no lock.
    pub fn admit(&self, conn: &mut PgConnection, now: DateTime<Utc>) -> QueryResult<Admission> {
        match self.state(conn)? {
            None => return Ok(Admission::Closed),
            Some(s) if s.state == "closed" => return Ok(Admission::Closed),
            Some(_) => {}
        }
        conn.transaction(|conn| {
            let Some(s) = circuit_breakers::table.find(&self.name).for_update().select(BreakerState::as_select()).first(conn).optional()? else {
                return Ok(Admission::Closed);
            };
            let probe_until = now + chrono(self.settings.probe_timeout);
            let reopen_at = s.opened_at.unwrap_or(now) + chrono(self.settings.cooldown);
            let probe_free = match s.state.as_str() {
                "open" => now >= reopen_at,
                "half_open" => s.probe_until.is_none_or(|t| t <= now),
                _ => return Ok(Admission::Closed),
            };
            if !probe_free {
                let until = if s.state == "open" { reopen_at } else { s.probe_until.unwrap_or(reopen_at) };
                return Ok(Admission::Open { until });
            }
            diesel::update(circuit_breakers::table.find(&self.name))
                .set((
                    circuit_breakers::state.eq("half_open"),
                    circuit_breakers::probe_until.eq(probe_until),
                    circuit_breakers::updated_at.eq(now),
                ))
                .execute(conn)?;
            Ok(Admission::Probe)
        })
    }

    /// The gateway answered (a charge or a decline): it is healthy.
    pub fn record_success(&self, conn: &mut PgConnection, now: DateTime<Utc>) -> QueryResult<()> {
        diesel::update(
            circuit_breakers::table
                .find(&self.name)
                .filter(circuit_breakers::state.ne("closed").or(circuit_breakers::consecutive_failures.ne(0))),
        )
        .set((
            circuit_breakers::state.eq("closed"),
            circuit_breakers::consecutive_failures.eq(0),
            circuit_breakers::opened_at.eq(None::<DateTime<Utc>>),
            circuit_breakers::probe_until.eq(None::<DateTime<Utc>>),
            circuit_breakers::updated_at.eq(now),
        ))
        .execute(conn)
        .map(drop)
    }

    /// The gateway timed out or was unavailable. Opens the breaker at the threshold, or at once
    /// when the failing call was the half-open probe.
    pub fn record_failure(&self, conn: &mut PgConnection, now: DateTime<Utc>) -> QueryResult<()> {
        self.record_failures(conn, now, 1)
    }

    /// `failures` calls in a row failed (a batch that got no good answer at all).
    pub fn record_failures(&self, conn: &mut PgConnection, now: DateTime<Utc>, failures: i32) -> QueryResult<()> {
        diesel::sql_query(
            "INSERT INTO circuit_breakers AS cb (name, state, consecutive_failures, opened_at, updated_at) \
             VALUES ($1, CASE WHEN $2 <= $4 THEN 'open' ELSE 'closed' END, $4, CASE WHEN $2 <= $4 THEN $3 END, $3) \
             ON CONFLICT (name) DO UPDATE SET \
               consecutive_failures = cb.consecutive_failures + $4, \
               state = CASE WHEN cb.state = 'half_open' OR cb.consecutive_failures + $4 >= $2 THEN 'open' ELSE cb.state END, \
               opened_at = CASE \
                 WHEN cb.state = 'half_open' OR (cb.state = 'closed' AND cb.consecutive_failures + $4 >= $2) THEN $3 \
                 ELSE cb.opened_at END, \
               probe_until = NULL, \
               updated_at = $3",
        )
        .bind::<Text, _>(&self.name)
        .bind::<Integer, _>(self.settings.threshold)
        .bind::<Timestamptz, _>(now)
        .bind::<Integer, _>(failures)
        .execute(conn)
        .map(drop)
    }
}
