//! Seed 001's tests and the job layer's guarantees: background charging, at-least-once with one
//! charge, retries with backoff into the dead-letter state, injected strategies, lease recovery,
//! graceful stop, inventory, backpressure, the circuit breaker and the periodic scheduler.

use diesel::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Condvar, Mutex};
use std::time::Duration;

use agora::clock::{Clock, FakeClock};
use agora::config::{JobSettings, PaymentSettings};
use agora::jobs::{self, Job, JobError, JobHandler, NewJob, Registry, Scheduler, WorkerPool, WorkerSettings};
use agora::orders::pipeline::{self, ChargeArgs};
use agora::payments::fraud::{FraudCheck, OrderFacts, Verdict};
use agora::payments::gateway::{DeclineCode, GatewayError, GatewayFuture, GatewayRefund, Outcome, PaymentGateway, RefundRequest, ScriptedGateway};
use agora::payments::{Charge, ChargeRequest, PayOrder, PaymentStatus};
use agora::schema::{jobs as jobs_table, payments, products};

use crate::support::app::TestAppOptions;
use crate::support::gateways::ChargeThenDie;
use crate::support::fixtures::{self, PASSWORD};
use crate::support::shopper::shopper;
use crate::support::{Client, TestApp};

fn job_rows(conn: &mut PgConnection, kind: &str) -> Vec<Job> {
    jobs_table::table.filter(jobs_table::kind.eq(kind)).order(jobs_table::id).select(Job::as_select()).load(conn).unwrap()
}

fn stock(conn: &mut PgConnection, product: i64) -> i32 {
    products::table.find(product).select(products::stock).first(conn).unwrap()
}

fn payment_status(conn: &mut PgConnection, order_id: i64) -> (PaymentStatus, bool) {
    payments::table.filter(payments::order_id.eq(order_id)).select((payments::status, payments::retryable)).first(conn).unwrap()
}

fn fake_clock_app(gateway: Arc<dyn PaymentGateway>, clock: Arc<FakeClock>, jobs: JobSettings) -> TestApp {
    TestApp::spawn_with(TestAppOptions { clock, jobs, ..TestAppOptions::new(gateway) })
}

// --- seed 001: test_background_processing --------------------------------------------------

#[test]
fn checkout_returns_at_once_with_the_order_pending_and_a_worker_makes_it_paid() {
    let gateway = Arc::new(ScriptedGateway::succeeding());
    let app = TestApp::spawn(gateway.clone());
    let me = shopper(&app, "bg@example.com");
    let mut conn = app.conn();
    let products = fixtures::catalogue(&mut conn, 2);
    let order_id = fixtures::order(&mut conn, me.user_id, &products);

    let resp = me.pay(order_id);
    assert_eq!(resp.status, 303);
    assert_eq!(fixtures::order_status(&mut conn, order_id), "pending");
    assert_eq!(payment_status(&mut conn, order_id).0, PaymentStatus::Pending);
    assert_eq!(gateway.charge_calls(), 0, "nothing is charged during the request");
    let queued = job_rows(&mut conn, pipeline::CHARGE_ORDER);
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].state, "available");
    assert_eq!(queued[0].args["order_id"], order_id);

    assert_eq!(app.drain_jobs(), 1);
    assert_eq!(fixtures::order_status(&mut conn, order_id), "paid");
    assert_eq!(payment_status(&mut conn, order_id).0, PaymentStatus::Completed);
    assert_eq!(job_rows(&mut conn, pipeline::CHARGE_ORDER)[0].state, "completed");
}

// --- seed 001: test_idempotency_no_double_charge --------------------------------------------

#[test]
fn the_same_orders_job_enqueued_twice_charges_at_most_once() {
    let gateway = Arc::new(ScriptedGateway::succeeding());
    let app = TestApp::spawn(gateway.clone());
    let mut conn = app.conn();
    let user_id = fixtures::user(&mut conn, "twice@example.com");
    let products = fixtures::catalogue(&mut conn, 1);
    let order_id = fixtures::order(&mut conn, user_id, &products);
    // Two deliveries of the same work, as at-least-once delivery may give (no unique key).
    let args = serde_json::json!(ChargeArgs { order_id, user_id });
    let now = app.services.clock.now();
    for _ in 0..2 {
        let job = NewJob::new(pipeline::CHARGE_ORDER, args.clone()).queue(pipeline::PAYMENTS_QUEUE);
        jobs::enqueue(&mut conn, &job, now).unwrap().expect("enqueued");
    }
    assert_eq!(app.drain_jobs(), 2);
    assert_eq!(gateway.charge_calls(), 1, "the second run found the order paid");
    assert!(job_rows(&mut conn, pipeline::CHARGE_ORDER).iter().all(|j| j.state == "completed"));
}

// --- seed 001: test_retries_and_dlq -----------------------------------------------------------

#[test]
fn a_gateway_failing_five_times_gets_four_attempts_with_growing_delays_then_the_order_fails() {
    let gateway = Arc::new(ScriptedGateway::script(vec![Outcome::Fail(GatewayError::Timeout); 5], Outcome::Succeed));
    let clock = Arc::new(FakeClock::starting_now());
    let settings = JobSettings { breaker_threshold: 100, ..JobSettings::default() };
    let payments = PaymentSettings { max_attempts: 4, ..PaymentSettings::default() };
    let app = TestApp::spawn_with(TestAppOptions { clock: clock.clone(), jobs: settings, payments, ..TestAppOptions::new(gateway.clone()) });
    let me = shopper(&app, "retry@example.com");
    let mut conn = app.conn();
    let products = fixtures::catalogue(&mut conn, 1);
    let stock_before = stock(&mut conn, products[0]);
    let order_id = fixtures::order(&mut conn, me.user_id, &products);
    assert_eq!(me.pay(order_id).status, 303);

    let mut delays = Vec::new();
    for attempt in 1..=4 {
        assert_eq!(app.drain_jobs(), 1, "attempt {attempt} runs when due");
        let job = job_rows(&mut conn, pipeline::CHARGE_ORDER).remove(0);
        assert_eq!(job.attempt, attempt);
        if attempt < 4 {
            assert_eq!(job.state, "available");
            let delay = job.run_at - clock.now();
            delays.push(delay);
            assert_eq!(app.drain_jobs(), 0, "nothing runs before the backoff is over");
            clock.tick(delay.to_std().unwrap());
        } else {
            assert_eq!(job.state, "dead", "after the last attempt the job is dead");
            assert_eq!(job.errors.as_array().unwrap().len(), 4, "every failure is recorded");
        }
    }
    assert!(delays[0] < delays[1] && delays[1] < delays[2], "delays grow: {delays:?}");
    assert_eq!(gateway.charge_calls(), 4);
    assert_eq!(fixtures::order_status(&mut conn, order_id), "failed");
    assert_eq!(payment_status(&mut conn, order_id), (PaymentStatus::Failed, false));
    assert_eq!(stock(&mut conn, products[0]), stock_before, "the reservation came back");
}

#[test]
fn a_declined_card_goes_dead_at_once() {
    let gateway = Arc::new(ScriptedGateway::always(GatewayError::declined(DeclineCode::InsufficientFunds)));
    let app = TestApp::spawn(gateway.clone());
    let me = shopper(&app, "broke@example.com");
    let mut conn = app.conn();
    let products = fixtures::catalogue(&mut conn, 1);
    let order_id = fixtures::order(&mut conn, me.user_id, &products);
    me.pay(order_id);
    assert_eq!(app.drain_jobs(), 1);
    let job = job_rows(&mut conn, pipeline::CHARGE_ORDER).remove(0);
    assert_eq!((job.state.as_str(), job.attempt), ("dead", 1));
    assert_eq!(gateway.charge_calls(), 1);
    assert_eq!(fixtures::order_status(&mut conn, order_id), "failed");
}

// --- seed 001: test_oop_strategies --------------------------------------------------------------

/// A gateway written here, in the test: it approves everything and remembers what it charged.
#[derive(Default)]
struct NotebookGateway {
    charged: Mutex<Vec<String>>,
}

impl PaymentGateway for NotebookGateway {
    fn charge(self: Arc<Self>, request: ChargeRequest) -> GatewayFuture<Charge> {
        Box::pin(async move {
            self.charged.lock().unwrap().push(request.idempotency_key.clone());
            Ok(Charge {
                id: format!("notebook-{}", request.idempotency_key),
                idempotency_key: request.idempotency_key,
                amount: request.money.amount().clone(),
                currency: request.money.currency().to_string(),
                created_at: chrono::Utc::now(),
            })
        })
    }

    fn lookup(self: Arc<Self>, _: String) -> GatewayFuture<Option<Charge>> {
        Box::pin(async { Ok(None) })
    }

    fn refund(self: Arc<Self>, _: RefundRequest) -> GatewayFuture<GatewayRefund> {
        Box::pin(async { Err(GatewayError::Unavailable("this notebook takes no refunds".into())) })
    }

    fn lookup_refund(self: Arc<Self>, _: String) -> GatewayFuture<Option<GatewayRefund>> {
        Box::pin(async { Ok(None) })
    }
}

/// A fraud rule written here: orders of 10.00 or more are refused.
struct SmallOrdersOnly;

impl FraudCheck for SmallOrdersOnly {
    fn check(&self, _: &mut PgConnection, facts: &OrderFacts) -> QueryResult<Verdict> {
        Ok(if facts.money.amount() >= &bigdecimal::BigDecimal::from(10) { Verdict::Reject("too big for this test".into()) } else { Verdict::Allow })
    }
}

#[test]
fn a_gateway_and_a_fraud_check_defined_in_the_test_are_injected_and_used() {
    let gateway = Arc::new(NotebookGateway::default());
    let app = TestApp::spawn_with(TestAppOptions { fraud: Arc::new(SmallOrdersOnly), ..TestAppOptions::new(gateway.clone()) });
    let me = shopper(&app, "strategy@example.com");
    let mut conn = app.conn();
    let products = fixtures::catalogue(&mut conn, 8);
    let small = fixtures::order(&mut conn, me.user_id, &products[..1]); // 1.25
    let large = fixtures::order(&mut conn, me.user_id, &products); // well above 10
    me.pay(small);
    me.pay(large);
    assert_eq!(app.drain_jobs(), 2);

    assert_eq!(*gateway.charged.lock().unwrap(), vec![fixtures::gateway_key(&mut conn, small)]);
    assert_eq!(fixtures::order_status(&mut conn, small), "paid");
    let txn: Option<String> = payments::table.filter(payments::order_id.eq(small)).select(payments::external_transaction_id).first(&mut conn).unwrap();
    assert!(txn.unwrap().starts_with("notebook-"));
    assert_eq!(fixtures::order_status(&mut conn, large), "failed");
    let page = me.client.get(&format!("/orders/{large}/checkout")).body;
    assert!(page.contains("see its status"));
    let refused: Option<String> = payments::table.filter(payments::order_id.eq(large)).select(payments::error_code).first(&mut conn).unwrap();
    assert_eq!(refused.as_deref(), Some("fraud_rejected"));
}

// --- leases -----------------------------------------------------------------------------------

#[test]
fn a_job_whose_worker_died_mid_charge_is_finished_by_another_worker_after_the_lease_with_one_charge() {
    let gateway = Arc::new(ChargeThenDie::new());
    let clock = Arc::new(FakeClock::starting_now());
    let app = fake_clock_app(gateway.clone(), clock.clone(), JobSettings::default());
    let me = shopper(&app, "lease@example.com");
    let mut conn = app.conn();
    let products = fixtures::catalogue(&mut conn, 1);
    let order_id = fixtures::order(&mut conn, me.user_id, &products);
    me.pay(order_id);

    // Worker A claims the job and dies in the middle of it: the gateway charged, nothing was saved.
    let dying = app.worker("worker-a");
    let claimed = dying.claim(&mut conn).unwrap();
    assert_eq!(claimed.len(), 1);
    let charge = app.services.registry.get(pipeline::CHARGE_ORDER).unwrap().clone();
    let (url, job) = (app.db.url.clone(), claimed[0].clone());
    let died = std::thread::spawn(move || {
        let mut own = PgConnection::establish(&url).unwrap();
        let _ = charge.perform(&mut own, &job);
    })
    .join();
    assert!(died.is_err(), "worker A is gone");
    drop(dying);
    assert_eq!(gateway.inner.ledger().all().len(), 1);

    let survivor = app.worker("worker-b");
    assert_eq!(survivor.run_once(&mut conn).unwrap(), 0, "the job is still leased to A");
    clock.tick(Duration::from_secs(31)); // past the job's lease
    assert_eq!(survivor.rescue_expired(&mut conn).unwrap(), 1);
    survivor.run_once(&mut conn).unwrap();
    // The payment's own attempt lease (60 s) has not run out yet: the job waits rather than race.
    assert_eq!(payment_status(&mut conn, order_id).0, PaymentStatus::Processing);
    clock.tick(Duration::from_secs(60));
    assert_eq!(app.drain_jobs(), 1);

    assert_eq!(fixtures::order_status(&mut conn, order_id), "paid");
    assert_eq!(gateway.inner.charge_calls(), 1, "recovered by lookup, never charged twice");
    assert_eq!(gateway.inner.ledger().all().len(), 1);
    let job = job_rows(&mut conn, pipeline::CHARGE_ORDER).remove(0);
    assert_eq!(job.state, "completed");
    assert!(job.errors.to_string().contains("lease expired"));
}

// --- graceful stop ------------------------------------------------------------------------------

/// Holds every job until the test opens the gate, and says when each one starts.
struct Gated {
    open: Arc<(Mutex<bool>, Condvar)>,
    started: mpsc::Sender<i64>,
    finished: Arc<AtomicUsize>,
}

impl JobHandler for Gated {
    fn kind(&self) -> &'static str {
        "gated"
    }

    fn perform(&self, _: &mut PgConnection, job: &Job) -> Result<(), JobError> {
        self.started.send(job.id).unwrap();
        let (lock, signal) = &*self.open;
        let _open = signal.wait_while(lock.lock().unwrap(), |open| !*open).unwrap();
        self.finished.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn stopping_the_pool_lets_all_fifty_in_flight_jobs_finish() {
    let app = TestApp::spawn(Arc::new(ScriptedGateway::succeeding()));
    let mut conn = app.conn();
    let now = app.services.clock.now();
    for i in 0..50 {
        jobs::enqueue(&mut conn, &NewJob::new("gated", serde_json::json!({ "n": i })), now).unwrap();
    }
    let open = Arc::new((Mutex::new(false), Condvar::new()));
    let (started_tx, started) = mpsc::channel();
    let finished = Arc::new(AtomicUsize::new(0));
    let registry = Arc::new(Registry::new().register(Arc::new(Gated { open: open.clone(), started: started_tx, finished: finished.clone() })));
    let pool = WorkerPool::start(
        WorkerSettings { threads: 5, batch: 10, ..WorkerSettings::default() },
        jobs::worker::PoolParts {
            pool: app.services.pool.clone(),
            registry,
            clock: app.services.clock.clone(),
            wake: Arc::new(jobs::Wake::default()),
            scheduler: None,
        },
    );
    // Each of the five workers has claimed its batch of ten and started on the first job.
    for _ in 0..5 {
        started.recv_timeout(Duration::from_secs(30)).expect("a worker started a job");
    }
    let running: i64 = jobs_table::table.filter(jobs_table::state.eq("running")).count().get_result(&mut conn).unwrap();
    assert_eq!(running, 50, "all fifty are in flight");

    pool.request_stop();
    {
        let (lock, signal) = &*open;
        *lock.lock().unwrap() = true;
        signal.notify_all();
    }
    pool.join();

    assert_eq!(finished.load(Ordering::SeqCst), 50);
    let states: Vec<String> = jobs_table::table.select(jobs_table::state).load(&mut conn).unwrap();
    assert!(states.iter().all(|s| s == "completed"), "{states:?}");
}

// --- inventory ----------------------------------------------------------------------------------

#[test]
fn a_hundred_concurrent_checkouts_for_ten_in_stock_reserve_exactly_ten_and_failures_give_stock_back() {
    let declines = vec![Outcome::Fail(GatewayError::declined(DeclineCode::InvalidCard)); 3];
    let gateway = Arc::new(ScriptedGateway::script(declines, Outcome::Succeed));
    // One shopper places them all: lift the cap on unpaid orders (tested on its own elsewhere).
    let jobs = JobSettings { max_unpaid_orders: 1000, ..JobSettings::default() };
    let app = TestApp::spawn_with(TestAppOptions { jobs, ..TestAppOptions::new(gateway.clone()) });
    let mut conn = app.conn();
    let product = fixtures::catalogue(&mut conn, 1)[0];
    diesel::update(products::table.find(product)).set(products::stock.eq(10)).execute(&mut conn).unwrap();
    let me = Arc::new(shopper(&app, "rush@example.com"));
    let barrier = Arc::new(Barrier::new(100));
    let field = format!("qty_{product}");
    let attempts: Vec<_> = (0..100)
        .map(|_| {
            let (me, barrier, field) = (me.clone(), barrier.clone(), field.clone());
            std::thread::spawn(move || {
                barrier.wait();
                me.client.post_form("/orders", &[("csrf_token", &me.token), (&field, "1")])
            })
        })
        .collect();
    let answers: Vec<_> = attempts.into_iter().map(|a| a.join().unwrap()).collect();

    let placed: Vec<i64> = answers
        .iter()
        .filter(|a| a.status == 303)
        .map(|a| a.location.as_deref().unwrap().trim_start_matches("/orders/").trim_end_matches("/checkout").parse().unwrap())
        .collect();
    assert_eq!(placed.len(), 10, "exactly ten orders got stock");
    for refused in answers.iter().filter(|a| a.status != 303) {
        assert_eq!(refused.status, 409);
        assert!(refused.body.contains("only 0 left of Product 1"), "{}", refused.body);
        assert!(refused.body.contains(&format!("name=\"{field}\" min=\"0\" max=\"1000\" value=\"1\"")) || refused.body.contains("sold out"), "the form keeps what was asked for");
    }
    assert_eq!(me.client.get("/orders").location.as_deref(), Some("/"), "a reload after a refusal lands on the orders, not a 404");
    assert_eq!(stock(&mut conn, product), 0, "never oversold");

    for order_id in &placed {
        assert_eq!(me.pay(*order_id).status, 303);
    }
    app.drain_jobs();
    let paid = placed.iter().filter(|o| fixtures::order_status(&mut conn, **o) == "paid").count();
    assert_eq!(paid, 7);
    assert_eq!(stock(&mut conn, product), 3, "the three failed orders gave their stock back, once");
    app.drain_jobs();
    assert_eq!(stock(&mut conn, product), 3);
}

#[test]
fn an_order_left_unpaid_expires_and_releases_its_stock() {
    let clock = Arc::new(FakeClock::starting_now());
    let app = fake_clock_app(Arc::new(ScriptedGateway::succeeding()), clock.clone(), JobSettings::default());
    let mut conn = app.conn();
    let user = fixtures::user(&mut conn, "idle@example.com");
    let product = fixtures::catalogue(&mut conn, 1)[0];
    let before = stock(&mut conn, product);
    let abandoned = fixtures::order(&mut conn, user, &[product]);
    let paying = fixtures::order(&mut conn, user, &[product]);
    pipeline::start_payment(&mut conn, PayOrder { user_id: user, order_id: paying }, app.services.limits, clock.now()).unwrap();
    assert_eq!(stock(&mut conn, product), before - 2);

    clock.tick(Duration::from_secs(3600));
    app.services.scheduler.tick(&mut conn).unwrap();
    app.drain_jobs();
    assert_eq!(fixtures::order_status(&mut conn, abandoned), "expired");
    assert_eq!(fixtures::order_status(&mut conn, paying), "paid", "an order being paid is never expired");
    assert_eq!(stock(&mut conn, product), before - 1);
}

// --- backpressure -------------------------------------------------------------------------------

#[test]
fn with_ten_jobs_waiting_the_eleventh_checkout_gets_503_and_leaves_nothing_behind() {
    let settings = JobSettings { max_ready: 10, ..JobSettings::default() };
    let app = TestApp::spawn_with(TestAppOptions { jobs: settings, ..TestAppOptions::new(Arc::new(ScriptedGateway::succeeding())) });
    let me = shopper(&app, "queue@example.com");
    let mut conn = app.conn();
    let products = fixtures::catalogue(&mut conn, 1);
    let orders: Vec<i64> = (0..11).map(|_| fixtures::order(&mut conn, me.user_id, &products)).collect();
    for order_id in &orders[..10] {
        assert_eq!(me.pay(*order_id).status, 303);
    }
    let refused = me.pay(orders[10]);
    assert_eq!(refused.status, 503);
    assert_eq!(refused.retry_after.as_deref(), Some("10"));
    assert!(refused.body.contains("Nothing was charged"));
    let json = me.client.post_form_json(&format!("/orders/{}/pay", orders[10]), &[("csrf_token", &me.token)]);
    assert_eq!(json.status, 503);
    assert!(json.body.contains("\"queue_full\""));

    assert_eq!(fixtures::payment_count(&mut conn), 10, "no payment for the refused order");
    assert_eq!(job_rows(&mut conn, pipeline::CHARGE_ORDER).len(), 10, "and no job");
    assert_eq!(fixtures::order_status(&mut conn, orders[10]), "pending", "the order itself is untouched");
}

// --- circuit breaker ----------------------------------------------------------------------------

#[test]
fn consecutive_timeouts_open_the_breaker_jobs_wait_without_losing_attempts_and_a_good_probe_closes_it() {
    let gateway = Arc::new(ScriptedGateway::script(vec![Outcome::Fail(GatewayError::Timeout); 3], Outcome::Succeed));
    let clock = Arc::new(FakeClock::starting_now());
    let settings = JobSettings {
        // One charge in flight per worker, so that charges go one after another: calls already in
        // flight together cannot be held back by the breaker.
        charges_in_flight: JobSettings::default().workers,
        breaker_threshold: 3,
        breaker_cooldown: Duration::from_secs(30),
        charge_backoff_base: Duration::from_secs(600),
        ..JobSettings::default()
    };
    let app = fake_clock_app(gateway.clone(), clock.clone(), settings);
    let me = shopper(&app, "breaker@example.com");
    let mut conn = app.conn();
    let products = fixtures::catalogue(&mut conn, 1);
    let orders: Vec<i64> = (0..4).map(|_| fixtures::order(&mut conn, me.user_id, &products)).collect();
    for order_id in &orders {
        me.pay(*order_id);
    }
    let breaker = |conn: &mut PgConnection| app.services.breaker.state(conn).unwrap().map(|s| s.state).unwrap_or_else(|| "closed".into());

    app.drain_jobs();
    assert_eq!(gateway.charge_calls(), 3, "three timeouts, then the fourth job was not sent");
    assert_eq!(breaker(&mut conn), "open");
    let last = job_rows(&mut conn, pipeline::CHARGE_ORDER).into_iter().find(|j| j.args["order_id"] == orders[3]).unwrap();
    assert_eq!((last.state.as_str(), last.attempt), ("available", 0), "deferred without using an attempt");
    assert_eq!(last.run_at, clock.now() + chrono::Duration::seconds(30));
    let page = Client::new(&app.url);
    fixtures::make_admin(&mut conn, "breaker-admin@example.com");
    page.sign_in("breaker-admin@example.com", PASSWORD);
    assert!(page.get("/admin/payments").body.contains("id=\"breaker\">open<"));
    assert!(page.get("/metrics").body.contains("agora_gateway_breaker_open 1"), "the breaker gauge is read from PostgreSQL");

    clock.tick(Duration::from_secs(30));
    assert_eq!(app.drain_jobs(), 1, "only the deferred job is due: it is the probe");
    assert_eq!(gateway.charge_calls(), 4);
    assert_eq!(breaker(&mut conn), "closed");
    assert_eq!(fixtures::order_status(&mut conn, orders[3]), "paid");
}

// --- periodic jobs ------------------------------------------------------------------------------

#[test]
fn two_schedulers_enqueue_each_periodic_job_once_per_bucket() {
    // A fixed start, so that a minute later is still the same ten-minute and hourly bucket.
    use chrono::TimeZone;
    let clock = Arc::new(FakeClock::new(chrono::Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, 10).unwrap()));
    let app = fake_clock_app(Arc::new(ScriptedGateway::succeeding()), clock.clone(), JobSettings::default());
    let (url_a, url_b) = (app.db.url.clone(), app.db.url.clone());
    let first = Scheduler::new(agora::app::periodic_jobs(), clock.clone());
    let second = Scheduler::new(agora::app::periodic_jobs(), clock.clone());
    let barrier = Arc::new(Barrier::new(2));
    let run = |scheduler: Scheduler, url: String, barrier: Arc<Barrier>| {
        std::thread::spawn(move || {
            let mut conn = PgConnection::establish(&url).unwrap();
            barrier.wait();
            scheduler.tick(&mut conn).unwrap() + scheduler.tick(&mut conn).unwrap()
        })
    };
    let a = run(first, url_a, barrier.clone());
    let b = run(second, url_b, barrier);
    let enqueued = a.join().unwrap() + b.join().unwrap();
    let mut conn = app.conn();
    assert_eq!(enqueued, agora::app::periodic_jobs().len(), "every periodic job, once each");
    assert_eq!(job_rows(&mut conn, pipeline::EXPIRE_ORDERS).len(), 1);

    app.drain_jobs();
    clock.tick(Duration::from_secs(60));
    let again = Scheduler::new(agora::app::periodic_jobs(), clock.clone());
    assert_eq!(again.tick(&mut conn).unwrap(), 2, "the minutely ones, for the next minute");
    assert_eq!(again.tick(&mut conn).unwrap(), 0);
    assert_eq!(job_rows(&mut conn, pipeline::EXPIRE_ORDERS).len(), 2);
}

// --- stuck payments -----------------------------------------------------------------------------

#[test]
fn the_sweeper_settles_a_stuck_payment_from_the_gateway_without_charging() {
    let gateway = Arc::new(ChargeThenDie::new());
    let clock = Arc::new(FakeClock::starting_now());
    let app = fake_clock_app(gateway.clone(), clock.clone(), JobSettings::default());
    let mut conn = app.conn();
    let user = fixtures::user(&mut conn, "stuck@example.com");
    let products = fixtures::catalogue(&mut conn, 1);
    let order_id = fixtures::order(&mut conn, user, &products);
    let (url, processor) = (app.db.url.clone(), app.services.processor.clone());
    let died = std::thread::spawn(move || {
        let mut own = PgConnection::establish(&url).unwrap();
        let _ = processor.process(&mut own, PayOrder { user_id: user, order_id });
    })
    .join();
    assert!(died.is_err());
    assert_eq!(payment_status(&mut conn, order_id).0, PaymentStatus::Processing);

    clock.tick(Duration::from_secs(180));
    app.services.scheduler.tick(&mut conn).unwrap();
    app.drain_jobs();
    assert_eq!(payment_status(&mut conn, order_id).0, PaymentStatus::Completed);
    assert_eq!(fixtures::order_status(&mut conn, order_id), "paid");
    assert_eq!(gateway.inner.charge_calls(), 1);
}

// --- the Jobs page ------------------------------------------------------------------------------

#[test]
fn admins_see_dead_jobs_and_can_retry_them_others_cannot_see_the_page() {
    let gateway = Arc::new(ScriptedGateway::script(vec![Outcome::Fail(GatewayError::declined(DeclineCode::CardDeclined))], Outcome::Succeed));
    let app = TestApp::spawn(gateway);
    let me = shopper(&app, "member@example.com");
    let mut conn = app.conn();
    let products = fixtures::catalogue(&mut conn, 1);
    let order_id = fixtures::order(&mut conn, me.user_id, &products);
    me.pay(order_id);
    app.drain_jobs();
    assert_eq!(me.client.get("/admin/jobs").status, 404, "not for members");

    fixtures::make_admin(&mut conn, "root@example.com");
    let admin = Client::new(&app.url);
    admin.sign_in("root@example.com", PASSWORD);
    let page = admin.get("/admin/jobs");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("charge_order"));
    assert!(page.body.contains("The card was declined"));
    let dead = job_rows(&mut conn, pipeline::CHARGE_ORDER).remove(0);
    assert_eq!(admin.post_form(&format!("/admin/jobs/{}/retry", dead.id), &[]).status, 403, "CSRF applies");
    // Retrying a charge whose card was declined cannot help: the admin is told so, nothing runs.
    let retried = admin.post_form(&format!("/admin/jobs/{}/retry", dead.id), &[("csrf_token", &page.csrf_token())]);
    assert_eq!(retried.status, 303);
    let told = admin.get(retried.location.as_deref().unwrap()).body;
    assert!(told.contains("Not retried: the payment failed for good (card_declined)"), "{told}");
    assert!(told.contains("content=\"10; url=/admin/jobs\""), "the notice is not repeated by the page's own refresh");
    assert_eq!(job_rows(&mut conn, pipeline::CHARGE_ORDER)[0].state, "dead");
    assert_eq!(app.drain_jobs(), 0);
    let discard = admin.post_form(&format!("/admin/jobs/{}/discard", dead.id), &[("csrf_token", &page.csrf_token())]);
    assert!(admin.get(discard.location.as_deref().unwrap()).body.contains("Job discarded."));
    let again = admin.post_form(&format!("/admin/jobs/{}/discard", dead.id), &[("csrf_token", &page.csrf_token())]);
    assert!(admin.get(again.location.as_deref().unwrap()).body.contains("no longer dead"));
}

// --- a real worker process killed with SIGKILL --------------------------------------------------

/// A Stripe-like gateway that records the charge, tells the test, and then (once) never answers:
/// the worker calling it is stuck mid-job, with the money taken.
struct StallingGateway {
    simulation: agora::payments::gateway::Simulation,
    stall: AtomicBool,
    charged: Mutex<mpsc::Sender<()>>,
}

async fn stalling_charge(
    req: actix_web::HttpRequest,
    body: actix_web::web::Json<serde_json::Value>,
    state: actix_web::web::Data<StallingGateway>,
) -> actix_web::HttpResponse {
    let key = req.headers().get("Idempotency-Key").unwrap().to_str().unwrap().to_string();
    let money = agora::payments::Money::parse(body["amount"].as_str().unwrap(), agora::payments::Currency::USD).unwrap();
    let charge = state.simulation.charge(&ChargeRequest { idempotency_key: key, money, payment_method: None }).unwrap();
    if state.stall.swap(false, Ordering::SeqCst) {
        state.charged.lock().unwrap().send(()).unwrap();
        std::future::pending::<()>().await;
    }
    actix_web::HttpResponse::Ok().json(charge)
}

async fn stalling_lookup(
    query: actix_web::web::Query<std::collections::HashMap<String, String>>,
    state: actix_web::web::Data<StallingGateway>,
) -> actix_web::HttpResponse {
    let found = state.simulation.ledger().find(&query["idempotency_key"]);
    actix_web::HttpResponse::Ok().json(serde_json::json!({ "data": found.into_iter().collect::<Vec<_>>() }))
}

#[test]
fn a_worker_process_killed_mid_job_is_replaced_after_its_lease_and_the_order_is_charged_once() {
    use agora::payments::gateway::Simulation;
    use agora::payments::gateway::HttpGateway;
    use crate::support::app::Running;

    let (charged_tx, charged) = mpsc::channel();
    let stalling = actix_web::web::Data::new(StallingGateway {
        simulation: Simulation::always_succeeding(),
        stall: AtomicBool::new(true),
        charged: Mutex::new(charged_tx),
    });
    let state = stalling.clone();
    let (_gateway_server, gateway_url) = Running::start(move |listener| {
        Ok(actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(state.clone())
                .route("/v1/charges", actix_web::web::post().to(stalling_charge))
                .route("/v1/charges", actix_web::web::get().to(stalling_lookup))
        })
        .listen(listener)?
        .run())
    });

    let clock = Arc::new(FakeClock::starting_now());
    let app = fake_clock_app(Arc::new(HttpGateway::new(&gateway_url, Duration::from_secs(5))), clock.clone(), JobSettings::default());
    let me = shopper(&app, "killed@example.com");
    let mut conn = app.conn();
    let products = fixtures::catalogue(&mut conn, 1);
    let order_id = fixtures::order(&mut conn, me.user_id, &products);
    me.pay(order_id);

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_agora"))
        .arg("worker")
        .env("DATABASE_URL", &app.db.url)
        .env("GATEWAY_URL", &gateway_url)
        .env("WORKERS", "1")
        .env("DB_POOL_SIZE", "2")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start `agora worker`");
    charged.recv_timeout(Duration::from_secs(60)).expect("the worker process reached the gateway");
    child.kill().expect("SIGKILL the worker"); // std's kill is SIGKILL on Unix
    child.wait().unwrap();
    assert_eq!(stalling.simulation.ledger().all().len(), 1, "the money was taken before the worker died");
    let job = job_rows(&mut conn, pipeline::CHARGE_ORDER).remove(0);
    assert_eq!(job.state, "running", "the dead worker still holds the job");

    // Past the job's lease and the payment attempt's lease, another worker takes over.
    clock.tick(Duration::from_secs(120));
    let survivor = app.worker("survivor");
    // (The dead process had also claimed the periodic jobs its scheduler enqueued.)
    assert!(survivor.rescue_expired(&mut conn).unwrap() >= 1);
    app.drain_jobs();
    assert_eq!(job_rows(&mut conn, pipeline::CHARGE_ORDER)[0].state, "completed");
    assert_eq!(fixtures::order_status(&mut conn, order_id), "paid");
    assert_eq!(stalling.simulation.ledger().all().len(), 1, "the gateway's ledger shows one charge");
}
