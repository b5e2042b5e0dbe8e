//! Seed 000's payment tests, the race of 32 workers, and the crash between charging and saving —
//! all against the real database.

use diesel::prelude::*;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use agora::clock::{Clock, FakeClock, SystemClock};
use agora::config::PaymentSettings;
use agora::payments::gateway::{DeclineCode, GatewayError, PaymentGateway, ScriptedGateway};
use agora::payments::{PayOrder, Payment, PaymentProcessor, PaymentStatus};
use agora::schema::{payment_events, payments};

use crate::support::fixtures;
use crate::support::gateways::ChargeThenDie;
use crate::support::TestDb;

struct Setup {
    db: TestDb,
    conn: PgConnection,
    user_id: i64,
    order_id: i64,
}

fn setup() -> Setup {
    let db = TestDb::new();
    let mut conn = db.connect();
    let user_id = fixtures::user(&mut conn, "payer@example.com");
    let products = fixtures::catalogue(&mut conn, 3);
    let order_id = fixtures::order(&mut conn, user_id, &products);
    Setup { db, conn, user_id, order_id }
}

fn processor(gateway: Arc<dyn PaymentGateway>) -> PaymentProcessor {
    agora::orders::pipeline::payment_processor(gateway, Arc::new(SystemClock), PaymentSettings::default())
}

fn transitions(conn: &mut PgConnection, payment_id: i64) -> Vec<(Option<String>, String)> {
    payment_events::table
        .filter(payment_events::payment_id.eq(payment_id))
        .order(payment_events::id)
        .select((payment_events::from_status, payment_events::to_status))
        .load(conn)
        .unwrap()
}

fn pair(from: Option<&str>, to: &str) -> (Option<String>, String) {
    (from.map(str::to_string), to.to_string())
}

#[test]
fn happy_path_charges_the_order_total_and_marks_the_order_paid() {
    let mut s = setup();
    let gateway = Arc::new(ScriptedGateway::succeeding());
    let payment = processor(gateway.clone()).process(&mut s.conn, PayOrder { user_id: s.user_id, order_id: s.order_id }).unwrap();

    assert_eq!(payment.status, PaymentStatus::Completed);
    let charge = &gateway.ledger().all()[0];
    assert_eq!(payment.external_transaction_id.as_deref(), Some(charge.id.as_str()));
    assert_eq!(charge.amount, fixtures::order_total(&mut s.conn, s.order_id));
    assert_eq!(payment.amount, charge.amount);
    assert_eq!(payment.idempotency_key, format!("payment_{}_{}", s.user_id, s.order_id));
    assert_eq!(fixtures::order_status(&mut s.conn, s.order_id), "paid");
    assert_eq!(
        transitions(&mut s.conn, payment.id),
        vec![pair(None, "pending"), pair(Some("pending"), "processing"), pair(Some("processing"), "completed")]
    );
}

#[test]
fn processing_twice_makes_one_payment_and_one_charge() {
    let mut s = setup();
    let gateway = Arc::new(ScriptedGateway::succeeding());
    let order = PayOrder { user_id: s.user_id, order_id: s.order_id };
    let first = processor(gateway.clone()).process(&mut s.conn, order).unwrap();
    let second = processor(gateway.clone()).process(&mut s.conn, order).unwrap();

    assert_eq!(first.id, second.id);
    assert_eq!(second.status, PaymentStatus::Completed);
    assert_eq!(fixtures::payment_count(&mut s.conn), 1);
    assert_eq!(gateway.charge_calls(), 1, "the gateway was asked to charge once");
}

#[test]
fn a_timeout_is_retried_and_then_succeeds_without_a_second_charge() {
    let mut s = setup();
    let gateway = Arc::new(ScriptedGateway::timing_out_first(1));
    let processor = processor(gateway.clone());
    let order = PayOrder { user_id: s.user_id, order_id: s.order_id };

    let first = processor.process(&mut s.conn, order).unwrap();
    assert_eq!(first.status, PaymentStatus::Failed);
    assert!(first.retryable, "a timeout is transient");
    assert_eq!(first.retry_count, 1);
    assert_eq!(first.error_code.as_deref(), Some("gateway_timeout"));
    assert_eq!(fixtures::order_status(&mut s.conn, s.order_id), "pending");

    let second = processor.process(&mut s.conn, order).unwrap();
    assert_eq!(second.status, PaymentStatus::Completed);
    assert_eq!(second.error_message, None);
    // The timed-out attempt might have reached the gateway, so the retry looked before charging.
    assert_eq!(gateway.lookup_calls(), 1);
    assert_eq!(gateway.charge_calls(), 2);
    assert_eq!(gateway.ledger().all().len(), 1);
    assert_eq!(fixtures::order_status(&mut s.conn, s.order_id), "paid");
}

#[test]
fn after_max_retries_it_gives_up_and_stops_calling_the_gateway() {
    let mut s = setup();
    let gateway = Arc::new(ScriptedGateway::always(GatewayError::Timeout));
    let processor = processor(gateway.clone());
    let order = PayOrder { user_id: s.user_id, order_id: s.order_id };

    let mut last = None;
    for _ in 0..8 {
        last = Some(processor.process(&mut s.conn, order).unwrap());
    }
    let last = last.unwrap();
    assert_eq!(gateway.charge_calls(), 5, "MAX_RETRIES is 5");
    assert_eq!(last.status, PaymentStatus::Failed);
    assert!(!last.retryable);
    assert_eq!(last.retry_count, 5);
    assert!(last.error_message.unwrap().contains("gave up after 5 attempts"));
    assert_eq!(fixtures::order_status(&mut s.conn, s.order_id), "failed");
}

#[test]
fn a_permanent_failure_is_not_retried() {
    let mut s = setup();
    let gateway = Arc::new(ScriptedGateway::always(GatewayError::declined(DeclineCode::InvalidCard)));
    let processor = processor(gateway.clone());
    let order = PayOrder { user_id: s.user_id, order_id: s.order_id };

    let first = processor.process(&mut s.conn, order).unwrap();
    let again = processor.process(&mut s.conn, order).unwrap();
    assert_eq!(first.status, PaymentStatus::Failed);
    assert!(!first.retryable);
    assert_eq!(first.error_message.as_deref(), Some("Invalid card number"));
    assert_eq!(first.retry_count, 0, "a decline is not a retry");
    assert_eq!(again.id, first.id);
    assert_eq!(gateway.charge_calls(), 1);
    assert_eq!(fixtures::order_status(&mut s.conn, s.order_id), "failed");
}

#[test]
fn someone_elses_order_cannot_be_paid() {
    let mut s = setup();
    let stranger = fixtures::user(&mut s.conn, "stranger@example.com");
    let gateway = Arc::new(ScriptedGateway::succeeding());
    let result = processor(gateway.clone()).process(&mut s.conn, PayOrder { user_id: stranger, order_id: s.order_id });
    assert!(matches!(result, Err(agora::payments::PaymentError::OrderNotFound)));
    assert_eq!(fixtures::payment_count(&mut s.conn), 0);
    assert_eq!(gateway.charge_calls(), 0);
}

#[test]
fn someone_elses_pending_payment_is_never_claimed_or_charged() {
    let mut s = setup();
    let owner = PayOrder { user_id: s.user_id, order_id: s.order_id };
    let limits = agora::orders::pipeline::QueueLimits { max_ready: 100, charge_attempts: 5 };
    agora::orders::pipeline::start_payment(&mut s.conn, owner, limits, chrono::Utc::now()).unwrap();
    let stranger = fixtures::user(&mut s.conn, "intruder@example.com");
    let gateway = Arc::new(ScriptedGateway::succeeding());
    let result = processor(gateway.clone()).process(&mut s.conn, PayOrder { user_id: stranger, order_id: s.order_id });
    assert!(matches!(result, Err(agora::payments::PaymentError::OrderNotFound)));
    let status: PaymentStatus = payments::table.filter(payments::order_id.eq(s.order_id)).select(payments::status).first(&mut s.conn).unwrap();
    assert_eq!(status, PaymentStatus::Pending, "the owner's payment is untouched");
    assert_eq!(gateway.charge_calls(), 0);
}

#[test]
fn a_completed_payment_cannot_be_changed_even_by_hand() {
    let mut s = setup();
    let gateway = Arc::new(ScriptedGateway::succeeding());
    let payment = processor(gateway).process(&mut s.conn, PayOrder { user_id: s.user_id, order_id: s.order_id }).unwrap();
    let reopened = diesel::update(payments::table.find(payment.id)).set(payments::status.eq("processing")).execute(&mut s.conn);
    assert!(reopened.is_err(), "the database refuses to move a completed payment");
    let erased = diesel::delete(payment_events::table).execute(&mut s.conn);
    assert!(erased.is_err(), "the audit log is append-only");
    let deleted = diesel::delete(payments::table.find(payment.id)).execute(&mut s.conn);
    assert!(deleted.is_err(), "payments are never deleted");
}

/// 32 threads, each with its own connection, process one order at the same instant; 20 rounds.
#[test]
fn thirty_two_concurrent_workers_charge_an_order_exactly_once() {
    const THREADS: usize = 32;
    const ROUNDS: usize = 20;
    let db = TestDb::new();
    let mut conn = db.connect();
    let user_id = fixtures::user(&mut conn, "racer@example.com");
    let products = fixtures::catalogue(&mut conn, 2);
    let orders: Vec<i64> = (0..ROUNDS).map(|_| fixtures::order(&mut conn, user_id, &products)).collect();
    let gateway = Arc::new(ScriptedGateway::succeeding());
    let processor = Arc::new(processor(gateway.clone()));
    let barrier = Arc::new(Barrier::new(THREADS));
    let orders = Arc::new(orders);

    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (url, processor, barrier, orders) = (db.url.clone(), processor.clone(), barrier.clone(), orders.clone());
            std::thread::spawn(move || {
                let mut conn = PgConnection::establish(&url).unwrap();
                // Every thread reaches every barrier, whatever happens, so a failure is reported
                // instead of leaving the others waiting.
                let mut errors = Vec::new();
                for &order_id in orders.iter() {
                    barrier.wait();
                    if let Err(e) = processor.process(&mut conn, PayOrder { user_id, order_id }) {
                        errors.push(e.to_string());
                    }
                }
                errors
            })
        })
        .collect();
    let errors: Vec<String> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert!(errors.is_empty(), "{errors:?}");

    assert_eq!(gateway.charge_calls(), ROUNDS, "one charge per order, never more");
    for &order_id in orders.iter() {
        let rows: Vec<Payment> = payments::table
            .filter(payments::order_id.eq(order_id))
            .select(Payment::as_select())
            .load(&mut conn)
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].status, PaymentStatus::Completed);
        assert_eq!(rows[0].attempts, 1);
        assert_eq!(gateway.ledger().all().iter().filter(|c| c.idempotency_key == rows[0].gateway_key).count(), 1);
    }
}

#[test]
fn a_crash_after_charging_is_recovered_from_the_gateway_without_charging_again() {
    let mut s = setup();
    let gateway = Arc::new(ChargeThenDie::new());
    let clock = Arc::new(FakeClock::starting_now());
    let settings = PaymentSettings::default();
    let lease = settings.processing_lease;
    let processor = Arc::new(agora::orders::pipeline::payment_processor(gateway.clone(), clock.clone() as Arc<dyn Clock>, settings));
    let order = PayOrder { user_id: s.user_id, order_id: s.order_id };

    let (url, crashing) = (s.db.url.clone(), processor.clone());
    let crashed = std::thread::spawn(move || {
        let mut conn = PgConnection::establish(&url).unwrap();
        crashing.process(&mut conn, order)
    })
    .join();
    assert!(crashed.is_err(), "the worker died mid-payment, its connection with it");
    assert_eq!(gateway.inner.ledger().all().len(), 1, "the money was taken");

    // While the lost attempt's lease runs, others leave it alone.
    let meanwhile = processor.process(&mut s.conn, order).unwrap();
    assert_eq!(meanwhile.status, PaymentStatus::Processing);
    assert_eq!(gateway.inner.charge_calls(), 1);

    clock.tick(lease + Duration::from_secs(1));
    let recovered = processor.process(&mut s.conn, order).unwrap();
    assert_eq!(recovered.status, PaymentStatus::Completed);
    assert_eq!(recovered.external_transaction_id.as_deref(), Some(gateway.inner.ledger().all()[0].id.as_str()));
    assert_eq!(gateway.inner.charge_calls(), 1, "recovered through lookup, not a second charge");
    assert_eq!(gateway.inner.lookup_calls(), 1);
    assert_eq!(fixtures::order_status(&mut s.conn, s.order_id), "paid");
}
