//! PostgreSQL: the pool, the embedded migrations, the request-scoped query counter, and group
//! commit (`group_commit`).

pub mod group_commit;

use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel::Connection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub type PgPool = Pool<ConnectionManager<PgConnection>>;
pub type PooledConn = PooledConnection<ConnectionManager<PgConnection>>;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

pub fn build_pool(database_url: &str, max_size: u32) -> Result<PgPool, diesel::r2d2::PoolError> {
    build_pool_with(database_url, max_size, Statements::Prepared)
}

/// How the pool's connections send queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statements {
    /// Each distinct query prepared once per connection and reused: the fastest, straight to
    /// PostgreSQL (or through a pooler in session mode).
    Prepared,
    /// Each query sent whole with its parameters in one exchange (diesel's unnamed statements,
    /// `PQsendQueryParams`): what a pooler in transaction mode needs, since the next transaction
    /// may run on another server connection that never saw a statement prepared on this one.
    /// PgBouncer learned to carry prepared statements across (`max_prepared_statements`) in 1.21;
    /// Debian 12 ships 1.18 (`DATABASE_PREPARED_STATEMENTS=off`).
    Unprepared,
}

#[derive(Debug)]
struct SendWhole;

impl diesel::r2d2::CustomizeConnection<PgConnection, diesel::r2d2::Error> for SendWhole {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        conn.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
        Ok(())
    }
}

pub fn build_pool_with(database_url: &str, max_size: u32, statements: Statements) -> Result<PgPool, diesel::r2d2::PoolError> {
    let builder = Pool::builder().max_size(max_size).min_idle(Some(1)).connection_timeout(Duration::from_secs(5));
    let builder = match statements {
        Statements::Prepared => builder,
        Statements::Unprepared => builder.connection_customizer(Box::new(SendWhole)),
    };
    builder.build(ConnectionManager::new(database_url))
}

/// How many of the migrations this build carries are not applied to the database.
pub fn pending_migrations(conn: &mut PgConnection) -> Result<usize, String> {
    conn.pending_migrations(MIGRATIONS).map(|pending| pending.len()).map_err(|e| e.to_string())
}

pub fn run_migrations(conn: &mut PgConnection) -> Result<usize, String> {
    conn.run_pending_migrations(MIGRATIONS).map(|done| done.len()).map_err(|e| e.to_string())
}

/// Counts the statements a unit of work (a request, a job) sends to the database. Transaction
/// control (BEGIN, COMMIT, savepoints) is left out: it is not a query a reader of the code wrote.
#[derive(Debug, Clone, Default)]
pub struct QueryCounter(Arc<AtomicU64>);

impl QueryCounter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

struct Counting(QueryCounter);

fn is_transaction_control(sql: &str) -> bool {
    let head = sql.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
    matches!(head.as_str(), "BEGIN" | "COMMIT" | "ROLLBACK" | "SAVEPOINT" | "RELEASE")
}

impl Instrumentation for Counting {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            if !is_transaction_control(&query.to_string()) {
                self.0 .0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A pooled connection whose queries are charged to one counter. When it goes back to the pool
/// the counter is detached, so the pool's own health checks are never charged to anybody.
pub struct CountedConn {
    conn: PooledConn,
}

impl CountedConn {
    pub fn checkout(pool: &PgPool, counter: &QueryCounter) -> Result<CountedConn, diesel::r2d2::PoolError> {
        let mut conn = pool.get()?;
        conn.set_instrumentation(Counting(counter.clone()));
        Ok(CountedConn { conn })
    }
}

impl Drop for CountedConn {
    fn drop(&mut self) {
        self.conn.set_instrumentation(|_: InstrumentationEvent<'_>| {});
    }
}

impl Deref for CountedConn {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for CountedConn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

/// Opens a connection outside any pool (CLI commands, tests that need one connection per thread).
pub fn connect(database_url: &str) -> Result<PgConnection, diesel::ConnectionError> {
    PgConnection::establish(database_url)
}

#[cfg(test)]
mod tests {
    use super::is_transaction_control;

    #[test]
    fn transaction_control_is_not_counted_as_a_query() {
        for sql in ["BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT diesel_savepoint_1", "  begin isolation level serializable"] {
            assert!(is_transaction_control(sql), "{sql}");
        }
        for sql in ["SELECT 1", "INSERT INTO payments DEFAULT VALUES", "UPDATE orders SET status = 'paid'"] {
            assert!(!is_transaction_control(sql), "{sql}");
        }
    }
}
