//! Payments at gateway speed (issue 8): charges in flight scale with the gateway's latency, not
//! with threads, and Pay's backpressure needs no global lock.

use diesel::prelude::*;
use std::sync::Arc;

use agora::orders::pipeline;
use agora::payments::PayOrder;
use agora::schema::{jobs as jobs_table, orders, payments};

use crate::support::fixtures;
use crate::support::gateways::{HeldGateway, PacedGateway};
use crate::support::app::TestAppOptions;
use crate::support::TestApp;
use agora::config::JobSettings;

#[test]
fn three_hundred_charges_are_in_flight_at_once_and_each_settles_exactly_once() {
    let gateway = Arc::new(HeldGateway::new());
    let app = TestApp::spawn(gateway.clone());
    let mut conn = app.conn();
    let user_id = fixtures::user(&mut conn, "crowd@example.com");
    let products = fixtures::catalogue(&mut conn, 1);
    let now = app.services.clock.now();
    let orders: Vec<i64> = (0..300).map(|_| fixtures::order(&mut conn, user_id, &products)).collect();
    for &order_id in &orders {
        pipeline::start_payment(&mut conn, PayOrder { user_id, order_id }, app.services.limits, now).unwrap();
    }

    // The real worker pool: four threads, 500 charges in flight between them.
    let workers = app.services.start_workers();
    gateway.wait_for_arrivals(300);
    assert_eq!(gateway.high_water(), 300, "all 300 charges were waiting on the gateway together");
    let processing: i64 = payments::table.filter(payments::status.eq("processing")).count().get_result(&mut conn).unwrap();
    assert_eq!(processing, 300);
    // No connection is held while the charges wait. An idle worker's poll, the scheduler or the
    // heartbeat may borrow one for a moment, so look until the pool is seen fully idle; were the
    // waiting workers holding theirs, it never would be while the gateway holds the charges.
    let in_use = |state: diesel::r2d2::State| state.connections - state.idle_connections;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut idle_seen = false;
    while !idle_seen && std::time::Instant::now() < deadline {
        idle_seen = in_use(app.services.pool.state()) == 0;
        std::thread::yield_now();
    }
    assert!(idle_seen, "300 charges waiting hold no database connection");

    gateway.release();
    workers.stop(); // returns once every claimed job has finished

    let completed: i64 = payments::table.filter(payments::status.eq("completed")).count().get_result(&mut conn).unwrap();
    assert_eq!(completed, 300);
    let paid: i64 = orders::table.filter(orders::status.eq("paid")).count().get_result(&mut conn).unwrap();
    assert_eq!(paid, 300);
    assert_eq!(gateway.inner.charge_calls(), 300, "one charge per payment, never more");
    assert_eq!(gateway.inner.ledger().all().len(), 300);
    let attempts: Vec<i32> = payments::table.select(payments::attempts).load(&mut conn).unwrap();
    assert!(attempts.iter().all(|a| *a == 1), "each settled by the attempt that claimed it");
    let done: i64 = jobs_table::table
        .filter(jobs_table::kind.eq(pipeline::CHARGE_ORDER))
        .filter(jobs_table::state.eq("completed"))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(done, 300);
    assert!(orders.iter().all(|o| fixtures::order_status(&mut conn, *o) == "paid"));
}

#[test]
fn a_worker_refills_the_slots_its_answered_charges_freed_while_its_other_charges_still_wait() {
    let gateway = Arc::new(PacedGateway::new());
    // One worker thread with 8 charges in flight: 8 at once into its empty window, then 4 at a
    // time while charges are out.
    let jobs = JobSettings { workers: 1, charges_in_flight: 8, ..JobSettings::default() };
    let app = TestApp::spawn_with(TestAppOptions { jobs, ..TestAppOptions::new(gateway.clone()) });
    let mut conn = app.conn();
    let user_id = fixtures::user(&mut conn, "paced@example.com");
    let products = fixtures::catalogue(&mut conn, 1);
    let now = app.services.clock.now();
    for _ in 0..20 {
        let order_id = fixtures::order(&mut conn, user_id, &products);
        pipeline::start_payment(&mut conn, PayOrder { user_id, order_id }, app.services.limits, now).unwrap();
    }

    let workers = app.services.start_workers();
    gateway.wait_for(8, 8);
    gateway.let_go(8);
    gateway.wait_for(8, 16); // two batches of four out now
    // The four oldest answer; the other four still wait. A worker that waited for its whole
    // batch would send nothing more until those four answered too.
    gateway.let_go(4);
    gateway.wait_for(8, 20);
    assert_eq!(gateway.high_water(), 8, "never more than its 8 charges in flight");

    gateway.let_go(1_000);
    gateway.wait_for(0, 20);
    workers.stop(); // settles whatever it began before returning
    let completed: i64 = payments::table.filter(payments::status.eq("completed")).count().get_result(&mut conn).unwrap();
    assert_eq!(completed, 20);
    assert_eq!(gateway.inner.charge_calls(), 20, "one charge per payment, never more");
    assert_eq!(gateway.high_water(), 8);
    let done: i64 = jobs_table::table.filter(jobs_table::state.eq("completed")).filter(jobs_table::kind.eq(pipeline::CHARGE_ORDER)).count().get_result(&mut conn).unwrap();
    assert_eq!(done, 20, "every charge job finished");
}

#[test]
fn with_the_queue_bound_at_100_four_hundred_concurrent_pays_overshoot_by_at_most_the_connections() {
    let jobs = agora::config::JobSettings { max_ready: 100, ..agora::config::JobSettings::default() };
    let app = TestApp::spawn_with(crate::support::app::TestAppOptions {
        jobs,
        ..crate::support::app::TestAppOptions::new(Arc::new(agora::payments::gateway::ScriptedGateway::succeeding()))
    });
    let me = Arc::new(crate::support::shopper::shopper(&app, "rush@example.com"));
    let mut conn = app.conn();
    let products = fixtures::catalogue(&mut conn, 1);
    let orders: Vec<i64> = (0..400).map(|_| fixtures::order(&mut conn, me.user_id, &products)).collect();

    let start = Arc::new(std::sync::Barrier::new(orders.len()));
    let pays: Vec<_> = orders
        .iter()
        .map(|&order_id| {
            let (me, start) = (me.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                (order_id, me.pay(order_id))
            })
        })
        .collect();
    let answers: Vec<_> = pays.into_iter().map(|p| p.join().unwrap()).collect();

    let accepted: Vec<i64> = answers.iter().filter(|(_, a)| a.status == 303).map(|(o, _)| *o).collect();
    let created: i64 = jobs_table::table.filter(jobs_table::kind.eq(pipeline::CHARGE_ORDER)).count().get_result(&mut conn).unwrap();
    let connections = i64::from(app.services.pool.max_size());
    assert!(created >= 100, "the queue filled up: {created}");
    assert!(created <= 100 + connections, "{created} jobs for a bound of 100 and {connections} connections");
    assert_eq!(created, accepted.len() as i64, "one job per accepted Pay");
    for (order_id, answer) in answers.iter().filter(|(_, a)| a.status != 303) {
        assert_eq!(answer.status, 503);
        assert!(answer.retry_after.is_some());
        let payment = payments::table.filter(payments::order_id.eq(order_id)).count().get_result::<i64>(&mut conn).unwrap();
        assert_eq!(payment, 0, "a refused Pay creates nothing");
    }
    assert_eq!(fixtures::payment_count(&mut conn), created);
}

#[test]
fn metrics_are_for_operators_and_scrapers_and_show_charges_jobs_and_requests() {
    use crate::support::app::METRICS_TOKEN;
    use crate::support::Client;
    let app = TestApp::spawn(Arc::new(agora::payments::gateway::ScriptedGateway::succeeding()));
    let me = crate::support::shopper::shopper(&app, "metered@example.com");
    let mut conn = app.conn();
    let products = fixtures::catalogue(&mut conn, 1);
    let order_id = fixtures::order(&mut conn, me.user_id, &products);
    assert_eq!(me.pay(order_id).status, 303);
    app.drain_jobs();

    assert_eq!(me.client.get("/metrics").status, 404, "not for shoppers");
    assert_eq!(Client::new(&app.url).get("/metrics").status, 303, "anonymous: sign in first");
    let scraper = ureq::AgentBuilder::new().redirects(0).build();
    let forged = scraper.get(&format!("{}/metrics", app.url)).set("Authorization", "Bearer wrong").call().unwrap();
    assert_eq!(forged.status(), 303, "a wrong token is no token");

    let scraped = scraper.get(&format!("{}/metrics", app.url)).set("Authorization", &format!("Bearer {METRICS_TOKEN}")).call().unwrap();
    assert!(scraped.content_type().starts_with("text/plain"));
    let text = scraped.into_string().unwrap();
    for expected in [
        "agora_jobs{queue=\"payments\",state=\"completed\"} 1",
        "agora_gateway_answers_total{outcome=\"charged\"}",
        "agora_gateway_seconds_bucket",
        "agora_settle_seconds_count",
        "agora_charges_in_flight ",
        "agora_charges_in_flight_max ",
        "agora_gateway_breaker_open 0",
        "agora_http_requests_total{route=\"/orders/{id}/pay\",status=\"303\"}",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }

    fixtures::make_admin(&mut conn, "ops@example.com");
    let admin = Client::new(&app.url);
    admin.sign_in("ops@example.com", crate::support::fixtures::PASSWORD);
    assert_eq!(admin.get("/metrics").status, 200);
}
