//! Issue 18: real `agora` processes, stopped as a process manager stops them (SIGTERM).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::db::{redis_url, TestDb};

/// An `agora` process of this build on a test database, killed if the test ends first.
struct Agora {
    child: Child,
    url: String,
}

impl Agora {
    fn start(db: &TestDb, command: &str, env: &[(&str, &str)]) -> Agora {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(env!("CARGO_BIN_EXE_agora"))
            .arg(command)
            .env("DATABASE_URL", &db.url)
            .env("REDIS_URL", redis_url())
            .env("REDIS_PREFIX", format!("{}:", db.name))
            .env("PORT", port.to_string())
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the agora binary of this build");
        Agora { child, url: format!("http://127.0.0.1:{port}") }
    }

    /// The status of `GET path`, or `None` when nothing answers.
    fn status(&self, path: &str) -> Option<u16> {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(5)).build();
        match agent.get(&format!("{}{path}", self.url)).call() {
            Ok(response) => Some(response.status()),
            Err(ureq::Error::Status(status, _)) => Some(status),
            Err(_) => None,
        }
    }

    /// Asks until `path` answers `status` (the process's own word that it has got there).
    fn until(&self, path: &str, status: Option<u16>, within: Duration) {
        let started = Instant::now();
        while self.status(path) != status {
            assert!(started.elapsed() < within, "{path} did not answer {status:?} within {within:?}");
            std::thread::yield_now();
        }
    }

    fn terminate(&self) {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(sent.success());
    }

    /// Waits for the process to exit; past `within` it is killed (and has no exit code).
    fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let pid = self.child.id();
        let (exited, told) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if told.recv_timeout(within).is_err() {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        });
        let status = self.child.wait().unwrap();
        let _ = exited.send(());
        watchdog.join().unwrap();
        status.code()
    }
}

impl Drop for Agora {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGTERM: `/readyz` turns 503 at once (the proxy takes the server out) while requests are
/// still answered for the drain window; then the server stops and exits 0.
#[test]
fn a_server_told_to_stop_drains_then_exits_cleanly() {
    let db = TestDb::new();
    let mut server = Agora::start(&db, "serve", &[("WORKERS", "0"), ("DRAIN_SECS", "3")]);
    server.until("/readyz", Some(200), Duration::from_secs(30));
    server.terminate();
    server.until("/readyz", Some(503), Duration::from_secs(3));
    assert_eq!(server.status("/login"), Some(200), "still answering while draining");
    assert_eq!(server.exit_code(Duration::from_secs(30)), Some(0));
    assert_eq!(server.status("/readyz"), None, "gone");
}

/// Behind PgBouncer in transaction mode (Debian's 1.18 keeps no prepared statements across
/// transactions), `DATABASE_PREPARED_STATEMENTS=off` makes every query one exchange: nothing is
/// left prepared on the server connection for the next transaction to trip over.
#[test]
fn unprepared_connections_leave_no_prepared_statement_behind() {
    use agora::db::{build_pool_with, Statements};
    use diesel::prelude::*;
    let db = TestDb::new();
    let prepared_here = |statements: Statements| -> i64 {
        let pool = build_pool_with(&db.url, 1, statements).unwrap();
        let mut conn = pool.get().unwrap();
        for email in ["a@example.com", "b@example.com"] {
            agora::auth::repo::find_by_email(&mut conn, email).unwrap();
        }
        diesel::dsl::sql::<diesel::sql_types::BigInt>("SELECT count(*) FROM pg_prepared_statements").get_result(&mut conn).unwrap()
    };
    assert!(prepared_here(Statements::Prepared) > 0, "the default prepares and reuses");
    assert_eq!(prepared_here(Statements::Unprepared), 0);
}

/// With a replica (`DATABASE_READ_URL`; here another database standing in for one), the
/// dashboard's list, totals and CSV read from it, while who may see what, a payment's own page and
/// anything that decides money read the primary.
#[test]
fn the_dashboards_lists_read_from_the_replica_and_money_from_the_primary() {
    use crate::support::api::Api;
    use crate::support::fixtures;
    use agora::payments::gateway::ScriptedGateway;
    use std::sync::Arc;
    let replica = TestDb::new();
    let mut options = crate::support::app::TestAppOptions::new(Arc::new(ScriptedGateway::succeeding()));
    options.read_url = Some(replica.url.clone());
    let app = crate::support::TestApp::spawn_with(options);
    // The same staff and merchants on both (fresh databases number them alike).
    let (north, _) = fixtures::two_merchants(&mut app.conn(), "North");
    {
        use diesel::Connection;
        let mut replica_conn = diesel::PgConnection::establish(&replica.url).unwrap();
        assert_eq!(fixtures::two_merchants(&mut replica_conn, "North").0, north);
    }
    let north_id = fixtures::customer_public_id(&mut app.conn(), north);
    let api = Api::signed_in(&app.url, "alice@north.test");
    let paid = api.pay(&north_id, 4_200, "pm_card_visa");
    app.drain_jobs();
    let reference = paid["id"].as_str().unwrap().to_string();

    let person = crate::support::Client::new(&app.url);
    person.sign_in("alice@north.test", crate::support::fixtures::PASSWORD);
    let list = person.get("/dashboard/payments?from=2000-01-01").body;
    assert!(!list.contains(&reference) && list.contains("No completed payments match"), "the list is the replica's, which has not seen it: {list}");
    assert!(!person.get("/dashboard/payments.csv").body.contains(&reference), "and so is the export");
    let own = person.get(&format!("/dashboard/payments/{reference}"));
    assert_eq!(own.status, 200, "a payment's own page reads the primary");
    assert!(own.body.contains("42.00 USD"));
    let refund = api.post(&format!("/payments/{reference}/refunds"), &serde_json::json!({ "amount": 200 }), Some("from-primary"));
    assert_eq!(refund.status, 201, "money is decided on the primary: {}", refund.text);
}
