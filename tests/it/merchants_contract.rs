//! Issue 16: the merchants' API against its contract — opaque prefixed ids everywhere an object is
//! named, a malformed or unknown one treated as missing wherever it is given, and payment methods
//! the gateway does not know refused before anything is written.

use diesel::prelude::*;
use serde_json::json;
use std::sync::Arc;

use agora::payments::gateway::{SimulatedGateway, Simulation};
use agora::schema::payments;

use crate::support::api::Api;
use crate::support::fixtures;
use crate::support::TestApp;

fn shop() -> (TestApp, Api, i64, i64) {
    let app = TestApp::spawn(Arc::new(SimulatedGateway::new(Simulation::new(0.0, 0.0, Some(4)), Default::default())));
    let (north, south) = fixtures::two_merchants(&mut app.conn(), "North");
    let alice = Api::signed_in(&app.url, "alice@north.test");
    (app, alice, north, south)
}

/// An id of this kind: the prefix, then 32 lowercase hexadecimal digits.
fn assert_opaque(id: &serde_json::Value, prefix: &str) {
    let id = id.as_str().unwrap_or_else(|| panic!("{id} is not a string id"));
    let digits = id.strip_prefix(prefix).unwrap_or_else(|| panic!("{id} does not start with {prefix}"));
    assert!(digits.len() == 32 && digits.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
}

#[test]
fn every_object_is_named_by_an_opaque_prefixed_id_that_reads_back() {
    let (app, alice, north, _) = shop();
    let me = alice.get("/me").json;
    assert_opaque(&me["id"], "usr_");
    assert_opaque(&me["customers"][0], "cus_");
    let customer = me["customers"][0].as_str().unwrap().to_string();
    assert_eq!(customer, fixtures::customer_public_id(&mut app.conn(), north));

    // Two customers made one after the other have ids with nothing in common to count by.
    let first = alice.post("/customers", &json!({ "name": "First" }), None).json;
    let second = alice.post("/customers", &json!({ "name": "Second" }), None).json;
    assert_opaque(&first["id"], "cus_");
    assert_opaque(&second["id"], "cus_");
    assert_ne!(first["id"].as_str().unwrap()[4..12], second["id"].as_str().unwrap()[4..12]);
    assert_eq!(first["users"][0]["id"], me["id"], "a linked user is named by the same id as /me");

    let payment = alice.pay(&customer, 2_500, "pm_card_visa");
    assert_eq!((payment["customer"].as_str(), payment["user"].as_str()), (Some(customer.as_str()), me["id"].as_str()));
    app.drain_jobs();
    let id = payment["id"].as_str().unwrap();
    let refund = alice.post(&format!("/payments/{id}/refunds"), &json!({ "amount": 500 }), Some("r"));
    assert_opaque(&refund.json["id"], "re_");
    app.drain_jobs();
    let ledger = alice.get(&format!("/customers/{customer}/balance_transactions")).json;
    let entries = ledger["data"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_opaque(&entries[0]["id"], "txn_");
    assert_eq!(entries[0]["source"], refund.json["id"], "a refund's entry names the refund");
    assert_eq!(entries[1]["source"], payment["id"], "a payment's entry names the payment");
    assert_eq!(alice.get(&format!("/customers/{customer}/balance")).json["customer"], customer.as_str());

    // Every id works where the API takes one: paths, filters and cursors.
    let user = me["id"].as_str().unwrap();
    assert_eq!(alice.get(&format!("/customers/{customer}")).json["id"], customer.as_str());
    assert_eq!(alice.get(&format!("/payments?customer={customer}&user={user}")).ids(), [id]);
    let older = alice.get(&format!("/customers/{customer}/balance_transactions?starting_after={}", entries[0]["id"].as_str().unwrap()));
    assert_eq!(older.ids(), [entries[1]["id"].as_str().unwrap()]);
    let after_first = alice.get(&format!("/customers?limit=1&starting_after={}", second["id"].as_str().unwrap()));
    assert_eq!(after_first.ids(), [first["id"].as_str().unwrap()]);
    let refunds = alice.get(&format!("/payments/{id}/refunds?ending_before={}", refund.json["id"].as_str().unwrap()));
    assert_eq!((refunds.status, refunds.ids().len()), (200, 0));

    // The bearer token names its user the same way.
    let token = alice.token().unwrap();
    let claims = token.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: serde_json::Value = serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    assert_eq!(claims["sub"], me["id"]);
}

#[test]
fn a_malformed_or_unknown_id_is_a_missing_resource_in_the_path_the_body_and_the_filter() {
    let (app, alice, _, south) = shop();
    let theirs = fixtures::customer_public_id(&mut app.conn(), south);
    let unknown = format!("cus_{}", uuid::Uuid::new_v4().simple());
    for customer in ["cus_x", "7", "1", unknown.as_str(), theirs.as_str()] {
        let path = alice.get(&format!("/customers/{customer}"));
        assert_eq!((path.status, path.code()), (404, "resource_missing"), "path {customer}: {}", path.text);
        let filter = alice.get(&format!("/payments?customer={customer}"));
        assert_eq!((filter.status, filter.code(), filter.param()), (404, "resource_missing", Some("customer")), "filter {customer}");
        let body = alice.post("/payments", &json!({ "customer": customer, "amount": 100, "currency": "usd" }), Some(&format!("k-{customer}")));
        assert_eq!((body.status, body.code(), body.param()), (404, "resource_missing", Some("customer")), "body {customer}: {}", body.text);
    }
    let numeric = alice.post("/payments", &json!({ "customer": 1, "amount": 100, "currency": "usd" }), Some("k-number"));
    assert_eq!((numeric.status, numeric.code(), numeric.param()), (404, "resource_missing", Some("customer")));
    for user in ["usr_x", "7"] {
        let filter = alice.get(&format!("/payments?user={user}"));
        assert_eq!((filter.status, filter.code(), filter.param()), (404, "resource_missing", Some("user")), "user filter {user}");
    }
    let me = alice.get("/me").json;
    let customer = me["customers"][0].as_str().unwrap();
    for user in ["usr_x", "1", &format!("usr_{}", uuid::Uuid::new_v4().simple())] {
        let unlink = alice.send("DELETE", &format!("/customers/{customer}/users/{user}"), None, &[]);
        assert_eq!((unlink.status, unlink.code()), (404, "resource_missing"), "unlink {user}");
    }
    let count: i64 = payments::table.count().get_result(&mut app.conn()).unwrap();
    assert_eq!(count, 0, "nothing was written");
}

#[test]
fn an_unknown_payment_method_is_refused_before_anything_is_charged() {
    let (app, alice, _, _) = shop();
    let customer = alice.get("/me").json["customers"][0].as_str().unwrap().to_string();
    for method in ["pm_card_mastercard", "pm_anything", "card"] {
        let refused = alice.post("/payments", &json!({ "customer": customer, "amount": 100, "currency": "usd", "payment_method": method }), Some(method));
        assert_eq!((refused.status, refused.code(), refused.param()), (400, "resource_missing", Some("payment_method")), "{method}");
        assert!(refused.json["error"]["message"].as_str().unwrap().contains("pm_card_visa"), "the message names the methods that work");
    }
    let count: i64 = payments::table.count().get_result(&mut app.conn()).unwrap();
    assert_eq!(count, 0, "nothing was written or charged");
    // The same key later, with a method that exists, is a fresh request (the refusal was not stored).
    let accepted = alice.post("/payments", &json!({ "customer": customer, "amount": 100, "currency": "usd", "payment_method": "pm_card_visa" }), Some("card"));
    assert_eq!(accepted.status, 201, "{}", accepted.text);
}

#[test]
fn the_dashboard_links_merchants_and_staff_by_their_public_ids() {
    let (app, _, north, south) = shop();
    let client = crate::support::Client::new(&app.url);
    client.sign_in("alice@north.test", fixtures::PASSWORD);
    let (north, south) = (fixtures::customer_public_id(&mut app.conn(), north), fixtures::customer_public_id(&mut app.conn(), south));
    let balances = client.get("/dashboard/balances").body;
    assert!(balances.contains(&format!("href=\"/dashboard/balances/{north}\"")), "{balances}");
    assert_eq!(client.get(&format!("/dashboard/balances/{north}")).status, 200);
    assert_eq!(client.get(&format!("/dashboard/balances/{south}")).status, 404, "another merchant's");
    assert_eq!(client.get("/dashboard/balances/1").status, 404, "a key is not an id");
    let alice = fixtures::user_public_id(&mut app.conn(), fixtures::user_id(&mut app.conn(), "alice@north.test"));
    let customers = client.get("/dashboard/customers").body;
    assert!(customers.contains(&format!("/dashboard/customers/{north}/users/{alice}/remove")), "{customers}");
}

#[test]
fn a_newcomers_first_refund_of_a_demo_payment_reaches_gateway_sim_and_succeeds() {
    use agora::schema::refunds;
    let sim = crate::support::GatewaySim::start(Simulation::new(0.0, 0.0, Some(2)));
    let app = TestApp::spawn(sim.client());
    let mut conn = app.conn();
    agora::seed::load(&mut conn).unwrap();
    let completed: i64 = payments::table
        .filter(payments::status.eq("completed").and(payments::external_transaction_id.like("ch\\_demo\\_%")))
        .count()
        .get_result(&mut conn)
        .unwrap();
    let registered = agora::payments::demo::register_with_sim(&mut conn, &sim.url, std::time::Duration::from_secs(5)).unwrap();
    assert_eq!(registered as i64, completed, "every completed demo charge is known to the gateway");
    assert_eq!(agora::payments::demo::register_with_sim(&mut conn, &sim.url, std::time::Duration::from_secs(5)).unwrap(), 0, "again is no change");

    // Books' staff opens the newest demo payment and refunds it in full, as a newcomer would.
    let client = crate::support::Client::new(&app.url);
    client.sign_in("books@example.com", agora::seed::DEMO_PASSWORD);
    use agora::schema::customers;
    let books: i64 = customers::table.filter(customers::name.eq("Northwind Books")).select(customers::id).first(&mut conn).unwrap();
    let (reference, amount, charge): (uuid::Uuid, bigdecimal::BigDecimal, Option<String>) = payments::table
        .filter(payments::customer_id.eq(books).and(payments::status.eq("completed")))
        .order(payments::created_at.desc())
        .select((payments::reference, payments::amount, payments::external_transaction_id))
        .first(&mut conn)
        .unwrap();
    let page = client.get(&format!("/dashboard/payments/{reference}"));
    let key_marker = "name=\"idempotency_key\" value=\"";
    let start = page.body.find(key_marker).unwrap() + key_marker.len();
    let amount = amount.with_scale(2).to_string();
    let fields = [
        ("csrf_token", page.csrf_token()),
        ("idempotency_key", page.body[start..start + 36].to_string()),
        ("amount", amount.clone()),
        ("reason", "requested_by_customer".to_string()),
        ("confirm", "yes".to_string()),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(client.post_form(&format!("/dashboard/payments/{reference}/refunds"), &fields).status, 303);
    app.drain_jobs();
    let (status, failure): (String, Option<String>) = refunds::table.select((refunds::status, refunds::failure_message)).first(&mut conn).unwrap();
    assert_eq!(status, "succeeded", "{failure:?}");
    let at_gateway = sim.refunds();
    assert_eq!(at_gateway.len(), 1);
    assert_eq!((at_gateway[0]["charge"].as_str(), at_gateway[0]["amount"].as_str()), (charge.as_deref(), Some(amount.as_str())));
    assert!(client.get(&format!("/dashboard/payments/{reference}")).body.contains("succeeded"));
}
