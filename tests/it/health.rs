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
