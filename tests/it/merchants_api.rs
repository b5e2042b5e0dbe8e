//! Issue 9: the merchants' JSON API — tokens, visibility, payments, refunds, balances, and
//! Stripe-style idempotency — over HTTP against the real database.

use diesel::prelude::*;
use serde_json::json;
use std::sync::Arc;

use agora::payments::gateway::{Simulation, SimulatedGateway};
use agora::schema::{balance_transactions, customer_balances, refunds};

use crate::support::api::Api;
use crate::support::fixtures;
use crate::support::TestApp;

fn app() -> TestApp {
    // Unmarked cards are declined: every payment that completes chose pm_card_visa.
    TestApp::spawn(Arc::new(SimulatedGateway::new(Simulation::new(0.0, 0.0, Some(9)), Default::default())))
}

/// Staff of two merchants: `alice` sees North only, `bob` South only.
struct Shop {
    app: TestApp,
    north: i64,
    south: i64,
    alice: Api,
    bob: Api,
}

fn shop() -> Shop {
    let app = app();
    let mut conn = app.conn();
    let alice = fixtures::user(&mut conn, "alice@north.test");
    let bob = fixtures::user(&mut conn, "bob@south.test");
    let north = fixtures::merchant(&mut conn, "North", &[alice]);
    let south = fixtures::merchant(&mut conn, "South", &[bob]);
    let (alice, bob) = (Api::signed_in(&app.url, "alice@north.test"), Api::signed_in(&app.url, "bob@south.test"));
    Shop { app, north, south, alice, bob }
}

fn ledger_sum(conn: &mut PgConnection, customer: i64) -> bigdecimal::BigDecimal {
    balance_transactions::table
        .filter(balance_transactions::customer_id.eq(customer))
        .select(balance_transactions::amount)
        .load::<bigdecimal::BigDecimal>(conn)
        .unwrap()
        .into_iter()
        .sum()
}

fn balance_of(conn: &mut PgConnection, customer: i64) -> bigdecimal::BigDecimal {
    customer_balances::table
        .filter(customer_balances::customer_id.eq(customer))
        .select(customer_balances::available)
        .first(conn)
        .optional()
        .unwrap()
        .unwrap_or_default()
}

#[test]
fn a_payment_is_charged_refunded_and_booked_through_the_api() {
    let s = shop();
    let payment = s.alice.pay(s.north, 2_500, "pm_card_visa");
    assert_eq!((payment["object"].as_str(), payment["status"].as_str(), payment["final"].as_bool()), (Some("payment"), Some("pending"), Some(false)));
    assert_eq!((payment["amount"].as_i64(), payment["currency"].as_str()), (Some(2_500), Some("usd")));
    s.app.drain_jobs();
    let id = payment["id"].as_str().unwrap();
    let paid = s.alice.get(&format!("/payments/{id}"));
    assert_eq!(paid.json["status"], "completed", "{}", paid.text);
    assert_eq!(paid.json["final"], true);
    assert!(paid.json["transaction_id"].as_str().is_some_and(|t| t.starts_with("ch_")));

    let balance = s.alice.get(&format!("/customers/{}/balance", s.north));
    assert_eq!(balance.json["available"], json!([{ "amount": 2_500, "currency": "usd" }]));

    let refund = s.alice.post(&format!("/payments/{id}/refunds"), &json!({ "amount": 1_000, "reason": "requested_by_customer" }), Some("r-1"));
    assert_eq!(refund.status, 201, "{}", refund.text);
    assert_eq!((refund.json["status"].as_str(), refund.json["payment"].as_str()), (Some("pending"), Some(id)));
    s.app.drain_jobs();
    let refunds = s.alice.get(&format!("/payments/{id}/refunds"));
    assert_eq!(refunds.json["data"][0]["status"], "succeeded", "{}", refunds.text);
    let after = s.alice.get(&format!("/payments/{id}"));
    assert_eq!((after.json["amount_refunded"].as_i64(), after.json["refunded"].as_bool()), (Some(1_000), Some(false)));
    let ledger = s.alice.get(&format!("/customers/{}/balance_transactions", s.north));
    let types: Vec<&str> = ledger.json["data"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["refund", "payment"], "newest first");
    assert_eq!(s.alice.get(&format!("/customers/{}/balance", s.north)).json["available"][0]["amount"], 1_500);

    // The declining test card fails the payment, with Stripe's code, and books nothing.
    let declined = s.alice.pay(s.north, 700, "pm_card_chargeDeclined");
    s.app.drain_jobs();
    let declined = s.alice.get(&format!("/payments/{}", declined["id"].as_str().unwrap()));
    assert_eq!((declined.json["status"].as_str(), declined.json["failure_code"].as_str()), (Some("failed"), Some("card_declined")));
    assert_eq!(declined.json["final"], true);
    let mut conn = s.app.conn();
    assert_eq!(ledger_sum(&mut conn, s.north), balance_of(&mut conn, s.north));
    let _ = s.south;
    let _ = &s.bob;
}
