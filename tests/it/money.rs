//! Money you can trust (issue 7): an outcome nobody knows is never reported as a failure, an
//! order's fate follows its payment, gateway keys are unique everywhere, a charge that does not
//! match its payment is held for review, and a panicking job leaves no transaction open.

use diesel::prelude::*;
use std::sync::Arc;
use std::time::Duration;

use agora::clock::{Clock, FakeClock};
use agora::config::{JobSettings, PaymentSettings};
use agora::db::{CountedConn, QueryCounter};
use agora::jobs::{self, Job, JobError, JobHandler, NewJob, Registry, Worker, WorkerSettings};
use agora::orders::pipeline;
use agora::payments::gateway::{GatewayError, Outcome, ScriptedGateway, Simulation};
use agora::payments::{ChargeRequest, PayOrder, Payment, PaymentStatus};
use agora::schema::{customers, jobs as jobs_table, payments, products};

use crate::support::app::TestAppOptions;
use crate::support::fixtures::{self, PASSWORD};
use crate::support::gateways::HeldGateway;
use crate::support::shopper::shopper;
use crate::support::{Client, GatewaySim, TestApp};

fn payment_of(conn: &mut PgConnection, order_id: i64) -> Payment {
    payments::table.filter(payments::order_id.eq(order_id)).select(Payment::as_select()).first(conn).unwrap()
}

fn stock(conn: &mut PgConnection, product: i64) -> i32 {
    products::table.find(product).select(products::stock).first(conn).unwrap()
}

fn charge_jobs(conn: &mut PgConnection) -> Vec<Job> {
    jobs_table::table.filter(jobs_table::kind.eq(pipeline::CHARGE_ORDER)).order(jobs_table::id).select(Job::as_select()).load(conn).unwrap()
}

/// Runs every due job; when none is due, moves the fake clock to the next one's time. Stops when
/// no job is waiting at all.
fn run_jobs_until_idle(app: &TestApp, clock: &FakeClock) {
    let mut conn = app.conn();
    for _ in 0..50 {
        if app.drain_jobs() > 0 {
            continue;
        }
        let next: Option<chrono::DateTime<chrono::Utc>> = jobs_table::table
            .filter(jobs_table::state.eq("available"))
            .select(diesel::dsl::min(jobs_table::run_at))
            .first(&mut conn)
            .unwrap();
        match next {
            Some(at) if at > clock.now() => clock.tick((at - clock.now()).to_std().unwrap()),
            Some(_) => {}
            None => return,
        }
    }
    panic!("jobs kept coming");
}

/// Unavailable three times, then the money is taken and the answer lost on the fourth and last.
fn unlucky_gateway() -> Arc<ScriptedGateway> {
    let unavailable = Outcome::Fail(GatewayError::Unavailable("HTTP 503".into()));
    Arc::new(ScriptedGateway::script(vec![unavailable.clone(), unavailable.clone(), unavailable, Outcome::ChargeThenTimeout], Outcome::Succeed))
}

fn four_attempt_app(gateway: Arc<ScriptedGateway>, clock: Arc<FakeClock>) -> TestApp {
    TestApp::spawn_with(TestAppOptions {
        clock,
        jobs: JobSettings { breaker_threshold: 100, ..JobSettings::default() },
        payments: PaymentSettings { max_attempts: 4, ..PaymentSettings::default() },
        ..TestAppOptions::new(gateway)
    })
}

#[test]
fn a_charge_taken_on_the_last_attempt_whose_answer_was_lost_is_found_by_lookup_and_the_order_is_paid() {
    let gateway = unlucky_gateway();
    let clock = Arc::new(FakeClock::starting_now());
    let app = four_attempt_app(gateway.clone(), clock.clone());
    let me = shopper(&app, "unlucky@example.com");
    let mut conn = app.conn();
    let products = fixtures::catalogue(&mut conn, 1);
    let order_id = fixtures::order(&mut conn, me.user_id, &products);
    let page = me.pay(order_id).location.unwrap();

    run_jobs_until_idle(&app, &clock);

    let payment = payment_of(&mut conn, order_id);
    assert_eq!(payment.status, PaymentStatus::Completed, "{:?}", payment.error_message);
    assert_eq!(fixtures::order_status(&mut conn, order_id), "paid");
    assert_eq!(gateway.charge_calls(), 4, "four attempts, as configured");
    assert_eq!(gateway.ledger().all().len(), 1, "one charge");
    assert_eq!(payment.external_transaction_id.as_deref(), Some(gateway.ledger().all()[0].id.as_str()));
    let body = me.client.get(&page).body;
    assert!(body.contains("<h1>Paid</h1>"), "{body}");
    assert!(!body.contains("No money was taken"));
}

#[test]
fn with_lookups_failing_too_the_payment_awaits_confirmation_keeps_its_stock_and_completes_when_the_gateway_answers() {
    let gateway = unlucky_gateway();
    gateway.set_lookups_down(true);
    let clock = Arc::new(FakeClock::starting_now());
    let app = four_attempt_app(gateway.clone(), clock.clone());
    let me = shopper(&app, "patient@example.com");
    let mut conn = app.conn();
    let products = fixtures::catalogue(&mut conn, 1);
    let before = stock(&mut conn, products[0]);
    let order_id = fixtures::order(&mut conn, me.user_id, &products);
    let page = me.pay(order_id).location.unwrap();

    run_jobs_until_idle(&app, &clock);
    let parked = payment_of(&mut conn, order_id);
    assert_eq!(parked.status, PaymentStatus::RequiresConfirmation);
    assert_eq!(fixtures::order_status(&mut conn, order_id), "pending", "the order stays open");
    assert_eq!(stock(&mut conn, products[0]), before - 1, "and keeps its stock");
    assert_eq!(charge_jobs(&mut conn)[0].state, "completed", "the charging is over; asking is the reconciler's");
    let body = me.client.get(&page).body;
    assert!(body.contains("Confirming with the payment provider"), "{body}");
    assert!(body.contains("You will not be charged twice"));
    assert!(!body.contains("No money was taken"));
    assert!(!body.contains("class=\"problem\""), "an open question is not shown as a problem");
    let status: serde_json::Value = serde_json::from_str(&me.client.get(&format!("{page}/status")).body).unwrap();
    assert_eq!((status["status"].as_str(), status["final"].as_bool()), (Some("requires_confirmation"), Some(false)));

    // The first check, a minute later: still no answer; the next one waits twice as long.
    clock.tick(Duration::from_secs(60));
    app.services.scheduler.tick(&mut conn).unwrap();
    app.drain_jobs();
    let unanswered = payment_of(&mut conn, order_id);
    assert_eq!((unanswered.status, unanswered.confirmation_checks), (PaymentStatus::RequiresConfirmation, 1));
    assert_eq!(unanswered.next_check_at, Some(clock.now() + chrono::Duration::seconds(120)));

    // An administrator sees it, and "Check now" asks at once (still no answer).
    fixtures::make_admin(&mut conn, "ops@example.com");
    let admin = Client::new(&app.url);
    admin.sign_in("ops@example.com", PASSWORD);
    let jobs_page = admin.get("/admin/payments");
    assert!(jobs_page.body.contains(&parked.reference.to_string()), "{}", jobs_page.body);
    let check = format!("/admin/payments/{}/check", parked.reference);
    assert_eq!(admin.post_form(&check, &[("csrf_token", "forged")]).status, 403);
    assert_eq!(me.client.post_form(&check, &[("csrf_token", &me.token)]).status, 404, "operators only");
    let asked = admin.post_form(&check, &[("csrf_token", &jobs_page.csrf_token())]);
    assert_eq!(asked.status, 303);
    app.drain_jobs();
    assert_eq!(payment_of(&mut conn, order_id).confirmation_checks, 2);

    // The gateway answers again: the next scheduled check completes the payment.
    gateway.set_lookups_down(false);
    let due = payment_of(&mut conn, order_id).next_check_at.unwrap();
    clock.tick((due - clock.now()).to_std().unwrap());
    app.services.scheduler.tick(&mut conn).unwrap();
    app.drain_jobs();
    assert_eq!(payment_of(&mut conn, order_id).status, PaymentStatus::Completed);
    assert_eq!(fixtures::order_status(&mut conn, order_id), "paid");
    assert_eq!(gateway.ledger().all().len(), 1, "one charge, never a second");
    assert_eq!(gateway.charge_calls(), 4, "confirming never charges");
    assert!(admin.get("/admin/payments").body.contains("id=\"no-unconfirmed\""));
}

#[test]
fn a_confirmed_absence_of_any_charge_fails_the_payment_and_gives_the_stock_back() {
    let gateway = Arc::new(ScriptedGateway::always(GatewayError::Timeout));
    gateway.set_lookups_down(true);
    let clock = Arc::new(FakeClock::starting_now());
    let app = four_attempt_app(gateway.clone(), clock.clone());
    let me = shopper(&app, "nothing@example.com");
    let mut conn = app.conn();
    let products = fixtures::catalogue(&mut conn, 1);
    let before = stock(&mut conn, products[0]);
    let order_id = fixtures::order(&mut conn, me.user_id, &products);
    me.pay(order_id);
    run_jobs_until_idle(&app, &clock);
    assert_eq!(payment_of(&mut conn, order_id).status, PaymentStatus::RequiresConfirmation);

    gateway.set_lookups_down(false);
    clock.tick(Duration::from_secs(60));
    app.services.scheduler.tick(&mut conn).unwrap();
    app.drain_jobs();
    let payment = payment_of(&mut conn, order_id);
    assert_eq!((payment.status, payment.retryable), (PaymentStatus::Failed, false));
    assert!(payment.error_message.unwrap().contains("confirmed that no charge was made"));
    assert_eq!(fixtures::order_status(&mut conn, order_id), "failed");
    assert_eq!(stock(&mut conn, products[0]), before);
}

// --- an order's fate follows its payment ------------------------------------------------------

fn held_app(gateway: Arc<HeldGateway>, clock: Arc<FakeClock>, payments: PaymentSettings, order_ttl: Duration) -> TestApp {
    TestApp::spawn_with(TestAppOptions {
        clock,
        jobs: JobSettings { order_ttl, ..JobSettings::default() },
        payments,
        ..TestAppOptions::new(gateway)
    })
}

/// Worker A claims the charge job on its own thread and is held inside the gateway.
fn start_charging(app: &TestApp, gateway: &HeldGateway) -> (Arc<Worker>, std::thread::JoinHandle<usize>) {
    let a = Arc::new(app.worker("worker-a"));
    let (url, runner) = (app.db.url.clone(), a.clone());
    let charging = std::thread::spawn(move || runner.run_once(&mut PgConnection::establish(&url).unwrap()).unwrap());
    gateway.wait_for_arrivals(1);
    (a, charging)
}

#[test]
fn a_slow_charge_keeps_its_job_by_heartbeat_and_its_order_is_never_expired_while_in_flight() {
    let gateway = Arc::new(HeldGateway::new());
    let clock = Arc::new(FakeClock::starting_now());
    let app = held_app(gateway.clone(), clock.clone(), PaymentSettings::default(), Duration::from_secs(30));
    let me = shopper(&app, "slow@example.com");
    let mut conn = app.conn();
    let products = fixtures::catalogue(&mut conn, 1);
    let paying = fixtures::order(&mut conn, me.user_id, &products);
    let abandoned = fixtures::order(&mut conn, me.user_id, &products);
    me.pay(paying);

    let (a, charging) = start_charging(&app, &gateway);

    clock.tick(Duration::from_secs(20));
    assert_eq!(a.heartbeat(&mut conn).unwrap(), 1, "worker A still holds its job");
    clock.tick(Duration::from_secs(20)); // 40 s after the claim: past the first 30 s lease
    let b = app.worker("worker-b");
    assert_eq!(b.rescue_expired(&mut conn).unwrap(), 0, "the heartbeat kept the lease");
    assert_eq!(b.run_once(&mut conn).unwrap(), 0, "nobody else runs the job");

    // Both orders are past their 30 s hold; only the one nobody is paying for expires.
    app.services.scheduler.tick(&mut conn).unwrap();
    app.drain_jobs();
    assert_eq!(fixtures::order_status(&mut conn, abandoned), "expired");
    assert_eq!(fixtures::order_status(&mut conn, paying), "pending", "a payment is in flight");

    gateway.release();
    assert_eq!(charging.join().unwrap(), 1);
    assert_eq!(fixtures::order_status(&mut conn, paying), "paid");
    assert_eq!(gateway.inner.charge_calls(), 1);
    let job = charge_jobs(&mut conn).remove(0);
    assert_eq!((job.state.as_str(), job.attempt), ("completed", 1), "run once");
}

#[test]
fn a_job_that_dies_while_its_charge_is_in_flight_does_not_close_the_order() {
    let gateway = Arc::new(HeldGateway::new());
    let clock = Arc::new(FakeClock::starting_now());
    let one_attempt = PaymentSettings { max_attempts: 1, ..PaymentSettings::default() };
    let app = held_app(gateway.clone(), clock.clone(), one_attempt, Duration::from_secs(1800));
    let me = shopper(&app, "inflight@example.com");
    let mut conn = app.conn();
    let products = fixtures::catalogue(&mut conn, 1);
    let before = stock(&mut conn, products[0]);
    let order_id = fixtures::order(&mut conn, me.user_id, &products);
    me.pay(order_id);

    // Worker A is stuck in the gateway and misses its heartbeats: its job's lease runs out, and
    // with its only attempt used the job dies.
    let (_a, charging) = start_charging(&app, &gateway);
    clock.tick(Duration::from_secs(31));
    assert_eq!(app.worker("rescuer").rescue_expired(&mut conn).unwrap(), 1);
    assert_eq!(charge_jobs(&mut conn)[0].state, "dead");
    assert_eq!(payment_of(&mut conn, order_id).status, PaymentStatus::Processing);
    assert_eq!(fixtures::order_status(&mut conn, order_id), "pending", "never closed under a live charge");
    assert_eq!(stock(&mut conn, products[0]), before - 1);

    gateway.release();
    charging.join().unwrap();
    assert_eq!(payment_of(&mut conn, order_id).status, PaymentStatus::Completed);
    assert_eq!(fixtures::order_status(&mut conn, order_id), "paid");
    assert_eq!(gateway.inner.ledger().all().len(), 1);
}

// --- gateway keys -------------------------------------------------------------------------------

#[test]
fn two_databases_sharing_one_gateway_never_complete_an_order_from_the_others_charge() {
    let sim = GatewaySim::start(Simulation::always_succeeding());
    let first = TestApp::spawn(sim.client());
    let second = TestApp::spawn(sim.client());
    let mut paid = Vec::new();
    for app in [&first, &second] {
        let mut conn = app.conn();
        let user_id = fixtures::user(&mut conn, "same@example.com");
        let products = fixtures::catalogue(&mut conn, 1);
        let order_id = fixtures::order(&mut conn, user_id, &products);
        let payment = app.services.processor.process(&mut conn, PayOrder { user_id, order_id }).unwrap();
        assert_eq!(payment.status, PaymentStatus::Completed);
        paid.push((user_id, order_id, payment));
    }
    let ((u1, o1, p1), (u2, o2, p2)) = (&paid[0], &paid[1]);
    assert_eq!((u1, o1), (u2, o2), "the same user and order ids in both databases");
    assert_ne!(p1.external_transaction_id, p2.external_transaction_id, "each order has its own charge");
    assert_eq!(sim.charges().len(), 2, "and the money moved twice");
}

#[test]
fn a_charge_whose_amount_differs_from_the_payment_is_held_for_review_not_completed() {
    let gateway = Arc::new(ScriptedGateway::succeeding());
    let app = TestApp::spawn(gateway.clone());
    let mut conn = app.conn();
    let user_id = fixtures::user(&mut conn, "odd@example.com");
    let products = fixtures::catalogue(&mut conn, 2);
    let order_id = fixtures::order(&mut conn, user_id, &products);
    let pay = PayOrder { user_id, order_id };
    pipeline::start_payment(&mut conn, pay, app.services.limits, app.services.clock.now()).unwrap();
    // The gateway already holds a charge under this payment's key, for another amount.
    let key = fixtures::gateway_key(&mut conn, order_id);
    gateway.ledger().record(&ChargeRequest { idempotency_key: key, money: agora::payments::Money::from_minor(100, agora::payments::Currency::USD), payment_method: None });

    let payment = app.services.processor.process(&mut conn, pay).unwrap();
    assert_eq!(payment.status, PaymentStatus::RequiresConfirmation);
    assert_eq!(payment.error_code.as_deref(), Some("charge_mismatch"));
    assert!(payment.error_message.unwrap().contains("held for review"));
    assert_eq!(fixtures::order_status(&mut conn, order_id), "pending");
}

// --- panics ---------------------------------------------------------------------------------------

struct PanicsInsideATransaction;

impl JobHandler for PanicsInsideATransaction {
    fn kind(&self) -> &'static str {
        "panics"
    }

    fn perform(&self, conn: &mut PgConnection, _: &Job) -> Result<(), JobError> {
        conn.transaction::<(), diesel::result::Error, _>(|conn| {
            diesel::insert_into(customers::table).values(customers::name.eq("written by the panicking job")).execute(conn)?;
            panic!("boom");
        })?;
        Ok(())
    }
}

struct WritesACustomer;

impl JobHandler for WritesACustomer {
    fn kind(&self) -> &'static str {
        "writes"
    }

    fn perform(&self, conn: &mut PgConnection, _: &Job) -> Result<(), JobError> {
        diesel::insert_into(customers::table).values(customers::name.eq("written after the panic")).execute(conn)?;
        Ok(())
    }
}

#[test]
fn a_job_that_panics_inside_a_transaction_leaves_no_open_transaction_on_its_pooled_connection() {
    let app = TestApp::spawn(Arc::new(ScriptedGateway::succeeding()));
    let mut conn = app.conn();
    let now = app.services.clock.now();
    jobs::enqueue(&mut conn, &NewJob::new("panics", serde_json::json!({})), now).unwrap();
    jobs::enqueue(&mut conn, &NewJob::new("writes", serde_json::json!({})), now).unwrap();
    let registry = Registry::new().register(Arc::new(PanicsInsideATransaction)).register(Arc::new(WritesACustomer));
    let worker = Worker::new("panicky".into(), Arc::new(registry), app.services.clock.clone(), WorkerSettings::default());

    let mut pooled = CountedConn::checkout(&app.services.pool, &QueryCounter::default()).unwrap();
    assert_eq!(worker.run_once(&mut pooled).unwrap(), 2, "both jobs ran, on one connection");
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    let depth = AnsiTransactionManager::transaction_manager_status_mut(&mut *pooled).transaction_depth().unwrap();
    assert_eq!(depth, None, "no transaction left open");
    drop(pooled);

    // Seen from another connection: the panicking job's write was rolled back, the next job's
    // write was committed, and the panic is recorded for a retry.
    let names: Vec<String> = customers::table.select(customers::name).load(&mut conn).unwrap();
    assert!(!names.contains(&"written by the panicking job".to_string()), "{names:?}");
    assert!(names.contains(&"written after the panic".to_string()), "{names:?}");
    let panicked: Job = jobs_table::table.filter(jobs_table::kind.eq("panics")).select(Job::as_select()).first(&mut conn).unwrap();
    assert_eq!(panicked.state, "available");
    assert!(panicked.errors.to_string().contains("job panicked: boom"));
}
