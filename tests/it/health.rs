//! `GET /healthz` and the request log's query counter.

use agora::payments::gateway::ScriptedGateway;
use std::sync::Arc;

use crate::support::{Client, TestApp};

#[test]
fn healthz_reports_the_database_and_redis() {
    let app = TestApp::spawn(Arc::new(ScriptedGateway::succeeding()));
    let resp = Client::new(&app.url).get("/healthz");
    assert_eq!(resp.status, 200);
    let body: serde_json::Value = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(body["database"], "ok");
    assert_eq!(body["redis"], "ok");
}

#[test]
fn healthz_is_503_without_the_database_and_pages_fail_politely() {
    let app = TestApp::spawn(Arc::new(ScriptedGateway::succeeding()));
    let client = Client::new(&app.url);
    app.db.drop_now();
    let resp = client.get("/healthz");
    assert_eq!(resp.status, 503);
    let body: serde_json::Value = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(body["status"], "unavailable");
    let login = client.get("/login");
    assert_eq!(login.status, 200, "pages that need no database still work");
}

#[test]
fn redis_down_is_reported_but_not_fatal() {
    let app = TestApp::spawn_with(crate::support::app::TestAppOptions {
        redis: false,
        ..crate::support::app::TestAppOptions::new(Arc::new(ScriptedGateway::succeeding()))
    });
    let resp = Client::new(&app.url).get("/healthz");
    assert_eq!(resp.status, 200);
    let body: serde_json::Value = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(body["database"], "ok");
    assert!(body["redis"].as_str().unwrap().starts_with("down"));
}

#[test]
fn pages_that_touch_no_table_report_zero_queries() {
    let app = TestApp::spawn(Arc::new(ScriptedGateway::succeeding()));
    let client = Client::new(&app.url);
    assert_eq!(client.get("/login").queries, Some(0));
    assert_eq!(client.get("/").queries, Some(0), "anonymous home page");
}

/// Issue 18: readiness is separate from liveness. `/readyz` is 200 when the server should get
/// requests: database up, every migration applied, not draining. Redis is reported, not required.
#[test]
fn readyz_says_whether_to_send_requests_here() {
    let app = TestApp::spawn(Arc::new(ScriptedGateway::succeeding()));
    let client = Client::new(&app.url);
    let ready = client.get("/readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    let body: serde_json::Value = serde_json::from_str(&ready.body).unwrap();
    assert_eq!((body["ready"].as_bool(), body["migrations_pending"].as_u64(), body["redis"].as_str()), (Some(true), Some(0), Some("ok")));

    // A migration this build carries but the database lacks (as while a rollout runs ahead of
    // `agora migrate`): not ready, while still alive.
    use diesel::RunQueryDsl;
    let mut conn = app.conn();
    diesel::sql_query("DELETE FROM __diesel_schema_migrations WHERE version = (SELECT max(version) FROM __diesel_schema_migrations)").execute(&mut conn).unwrap();
    let behind = client.get("/readyz");
    assert_eq!(behind.status, 503);
    assert!(behind.body.contains("1 migrations not applied"), "{}", behind.body);
    assert_eq!(client.get("/healthz").status, 200, "alive all the same");
    agora::db::run_migrations(&mut conn).ok();

    // Draining (what SIGTERM sets): out of the proxy's rotation, still answering what it gets.
    app.draining.start();
    let draining = client.get("/readyz");
    assert_eq!(draining.status, 503);
    assert!(draining.body.contains("\"problem\":\"draining\""), "{}", draining.body);
    assert_eq!(client.get("/login").status, 200);
}

#[test]
fn readyz_is_ready_without_redis_and_not_without_the_database() {
    let app = TestApp::spawn_with(crate::support::app::TestAppOptions {
        redis: false,
        ..crate::support::app::TestAppOptions::new(Arc::new(ScriptedGateway::succeeding()))
    });
    let client = Client::new(&app.url);
    let ready = client.get("/readyz");
    assert_eq!(ready.status, 200, "slower without Redis, not wrong: {}", ready.body);
    assert!(ready.body.contains("\"redis\":\"down"));
    app.db.drop_now();
    assert_eq!(client.get("/readyz").status, 503);
}
