//! Issue 9: the merchants' JSON API — tokens, visibility, payments, refunds, balances, and
//! Stripe-style idempotency — over HTTP against the real database.

use diesel::prelude::*;
use serde_json::json;
use std::sync::Arc;

use agora::clock::Clock;
use agora::payments::gateway::{Simulation, SimulatedGateway};
use agora::schema::{balance_transactions, customer_balances, refunds};

use crate::support::api::Api;
use crate::support::fixtures;
use crate::support::TestApp;

/// Staff of two merchants: `alice` sees North only, `bob` South only.
struct Shop {
    app: TestApp,
    gateway: Arc<SimulatedGateway>,
    /// The merchants' keys (for the database) and the ids the API shows (`cus_…`).
    north: i64,
    south: i64,
    north_id: String,
    south_id: String,
    alice: Api,
    bob: Api,
}

fn shop() -> Shop {
    shop_on(|_| {})
}

fn shop_on(adjust: impl FnOnce(&mut crate::support::app::TestAppOptions)) -> Shop {
    // Unmarked cards are declined: every payment that completes chose pm_card_visa.
    let gateway = Arc::new(SimulatedGateway::new(Simulation::new(0.0, 0.0, Some(9)), Default::default()));
    let mut options = crate::support::app::TestAppOptions::new(gateway.clone());
    adjust(&mut options);
    let app = TestApp::spawn_with(options);
    let (north, south) = fixtures::two_merchants(&mut app.conn(), "North");
    let (north_id, south_id) = (fixtures::customer_public_id(&mut app.conn(), north), fixtures::customer_public_id(&mut app.conn(), south));
    let (alice, bob) = (Api::signed_in(&app.url, "alice@north.test"), Api::signed_in(&app.url, "bob@south.test"));
    Shop { app, gateway, north, south, north_id, south_id, alice, bob }
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
    let created = s.alice.post("/payments", &json!({ "customer": s.north_id, "amount": 2_500, "currency": "usd", "payment_method": "pm_card_visa" }), Some("first"));
    // The caller on the request's connection; the rows are written by the intake's batch statement.
    assert_eq!(created.queries, Some(1), "the caller with their links");
    let payment = created.json;
    assert_eq!((payment["object"].as_str(), payment["status"].as_str(), payment["final"].as_bool()), (Some("payment"), Some("pending"), Some(false)));
    assert_eq!((payment["amount"].as_i64(), payment["currency"].as_str()), (Some(2_500), Some("usd")));
    s.app.drain_jobs();
    let id = payment["id"].as_str().unwrap();
    let paid = s.alice.get(&format!("/payments/{id}"));
    assert_eq!(paid.json["status"], "completed", "{}", paid.text);
    assert_eq!(paid.json["final"], true);
    assert!(paid.json["transaction_id"].as_str().is_some_and(|t| t.starts_with("ch_")));

    let balance = s.alice.get(&format!("/customers/{}/balance", s.north_id));
    assert_eq!(balance.json["available"], json!([{ "amount": 2_500, "currency": "usd" }]));

    let refund = s.alice.post(&format!("/payments/{id}/refunds"), &json!({ "amount": 1_000, "reason": "requested_by_customer" }), Some("r-1"));
    assert_eq!(refund.status, 201, "{}", refund.text);
    assert_eq!((refund.json["status"].as_str(), refund.json["payment"].as_str()), (Some("pending"), Some(id)));
    s.app.drain_jobs();
    let refunds = s.alice.get(&format!("/payments/{id}/refunds"));
    assert_eq!(refunds.json["data"][0]["status"], "succeeded", "{}", refunds.text);
    let after = s.alice.get(&format!("/payments/{id}"));
    assert_eq!((after.json["amount_refunded"].as_i64(), after.json["refunded"].as_bool()), (Some(1_000), Some(false)));
    let ledger = s.alice.get(&format!("/customers/{}/balance_transactions", s.north_id));
    let types: Vec<&str> = ledger.json["data"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["refund", "payment"], "newest first");
    assert_eq!(s.alice.get(&format!("/customers/{}/balance", s.north_id)).json["available"][0]["amount"], 1_500);

    // The declining test card fails the payment, with Stripe's code, and books nothing.
    let declined = s.alice.pay(&s.north_id, 700, "pm_card_chargeDeclined");
    s.app.drain_jobs();
    let declined = s.alice.get(&format!("/payments/{}", declined["id"].as_str().unwrap()));
    assert_eq!((declined.json["status"].as_str(), declined.json["failure_code"].as_str()), (Some("failed"), Some("card_declined")));
    assert_eq!(declined.json["final"], true);
    let mut conn = s.app.conn();
    assert_eq!(ledger_sum(&mut conn, s.north), balance_of(&mut conn, s.north));
    let _ = s.south;
    let _ = &s.bob;
}

// --- 1. permissions -----------------------------------------------------------------------------

#[test]
fn staff_see_only_their_merchants_and_everything_else_is_not_found() {
    let s = shop();
    let theirs = s.bob.pay(&s.south_id, 4_000, "pm_card_visa");
    s.app.drain_jobs();
    let id = theirs["id"].as_str().unwrap();
    let south = s.south_id.clone();
    let not_found = |answer: crate::support::api::Answer, what: &str| {
        assert_eq!((answer.status, answer.code()), (404, "resource_missing"), "{what}: {}", answer.text);
        assert_eq!(answer.json["error"]["type"], "invalid_request_error");
    };
    not_found(s.alice.get(&format!("/payments/{id}")), "payment");
    not_found(s.alice.get(&format!("/payments/{id}/refunds")), "refunds");
    not_found(s.alice.post(&format!("/payments/{id}/refunds"), &json!({}), Some("steal")), "refund");
    not_found(s.alice.get(&format!("/customers/{south}")), "customer");
    not_found(s.alice.send("PATCH", &format!("/customers/{south}"), Some(r#"{"name":"Mine"}"#), &[]), "rename");
    not_found(s.alice.get(&format!("/customers/{south}/balance")), "balance");
    not_found(s.alice.get(&format!("/customers/{south}/balance_transactions")), "ledger");
    not_found(s.alice.post(&format!("/customers/{south}/users"), &json!({ "email": "alice@north.test" }), None), "self-link");
    not_found(s.alice.get("/customers/not-a-number"), "malformed id");
    not_found(s.alice.get("/payments/not-a-uuid"), "malformed reference");
    let filtered = s.alice.get(&format!("/payments?customer={south}"));
    not_found(filtered.clone(), "customer filter");
    assert_eq!(filtered.param(), Some("customer"));
    let body = json!({ "customer": south, "amount": 100, "currency": "usd" });
    let paying_them = s.alice.post("/payments", &body, Some("k"));
    assert_eq!((paying_them.status, paying_them.param()), (404, Some("customer")));
    // Filters that match nothing visible are empty lists, not errors.
    let by_user = s.alice.get(&format!("/payments?user={}", theirs["user"].as_str().unwrap()));
    assert_eq!((by_user.status, by_user.ids().len()), (200, 0));
    assert_eq!(s.alice.get(&format!("/payments?reference={id}")).ids().len(), 0);
    assert_eq!(s.alice.get("/payments").ids().len(), 0);
    // Bob sees it all; nothing was refunded by Alice's attempt.
    assert_eq!(s.bob.get(&format!("/payments/{id}")).json["amount_refunded"], 0);
    let listed = s.bob.get("/payments");
    assert_eq!(listed.ids(), [id]);
    assert_eq!(listed.queries, Some(2), "the caller with their links, then the page");
    assert_eq!(s.bob.get(&format!("/payments/{id}")).queries, Some(2));
    assert_eq!(s.bob.get("/customers").ids(), [south.to_string()]);
}

#[test]
fn unlinking_takes_effect_on_the_next_request_of_an_existing_token() {
    let s = shop();
    let mut conn = s.app.conn();
    let carol = fixtures::user(&mut conn, "carol@north.test");
    let carols_token = Api::signed_in(&s.app.url, "carol@north.test");
    assert_eq!(carols_token.get(&format!("/customers/{}", s.north_id)).status, 404);
    let linked = s.alice.post(&format!("/customers/{}/users", s.north_id), &json!({ "email": "CAROL@north.test" }), None);
    assert_eq!(linked.status, 200, "{}", linked.text);
    assert_eq!(linked.json["users"].as_array().unwrap().len(), 2);
    assert_eq!(s.alice.post(&format!("/customers/{}/users", s.north_id), &json!({ "email": "carol@north.test" }), None).json, linked.json, "twice is once");
    assert_eq!(carols_token.get(&format!("/customers/{}", s.north_id)).status, 200);
    assert_eq!(carols_token.get("/me").json["customers"], json!([s.north_id]));

    let carol = fixtures::user_public_id(&mut conn, carol);
    let unlinked = s.alice.send("DELETE", &format!("/customers/{}/users/{carol}", s.north_id), None, &[]);
    assert_eq!(unlinked.status, 200, "{}", unlinked.text);
    assert_eq!(carols_token.get(&format!("/customers/{}", s.north_id)).status, 404, "the same token, the very next request");
    assert_eq!(carols_token.get("/me").json["customers"], json!([]));

    let alice_id = s.alice.get("/me").json["id"].as_str().unwrap().to_string();
    let last = s.alice.send("DELETE", &format!("/customers/{}/users/{alice_id}", s.north_id), None, &[]);
    assert_eq!((last.status, last.code()), (409, "last_owner"));
    let unknown = s.alice.post(&format!("/customers/{}/users", s.north_id), &json!({ "email": "nobody@x.test" }), None);
    assert_eq!((unknown.status, unknown.param()), (404, Some("email")));
}

#[test]
fn the_operations_admin_sees_no_more_than_its_links() {
    let s = shop();
    let mut conn = s.app.conn();
    fixtures::make_admin(&mut conn, "ops@agora.test");
    s.bob.pay(&s.south_id, 900, "pm_card_visa");
    let ops = Api::signed_in(&s.app.url, "ops@agora.test");
    assert_eq!(ops.get("/payments").ids().len(), 0);
    assert_eq!(ops.get(&format!("/customers/{}/balance", s.south_id)).status, 404);
    assert_eq!(ops.get("/customers").ids().len(), 0);
}

#[test]
fn tokens_are_refused_when_missing_forged_expired_or_revoked() {
    let s = shop();
    let anonymous = Api::new(&s.app.url);
    let missing = anonymous.get("/payments");
    assert_eq!((missing.status, missing.code(), missing.header("www-authenticate")), (401, "token_missing", Some("Bearer")));
    assert_eq!(missing.json["error"]["type"], "authentication_error");
    anonymous.use_token(Some("not.a.jwt"));
    assert_eq!(anonymous.get("/me").code(), "token_invalid");

    let short = anonymous.send("POST", "/auth/token", Some(r#"{"email":"alice@north.test","password":"correct horse battery","expires_in":1}"#), &[]);
    assert_eq!((short.status, short.json["token_type"].as_str(), short.json["expires_in"].as_i64()), (200, Some("Bearer"), Some(1)));
    let wrong = anonymous.send("POST", "/auth/token", Some(r#"{"email":"alice@north.test","password":"nope"}"#), &[]);
    let nobody = anonymous.send("POST", "/auth/token", Some(r#"{"email":"nobody@north.test","password":"nope"}"#), &[]);
    assert_eq!((wrong.status, wrong.code()), (401, "invalid_credentials"));
    assert_eq!(wrong.json["error"]["message"], nobody.json["error"]["message"], "one message for both");

    // Expiry is checked to the second: a token that expired is refused with its own code.
    let key = agora::merchants::tokens::TokenKey::new(&s.app.services.api_token_secret).unwrap();
    let alice_id = s.alice.get("/me").json["id"].as_str().unwrap().to_string();
    let (expired, _) = key.issue(&alice_id, chrono::Utc::now() - chrono::Duration::seconds(61), 60);
    anonymous.use_token(Some(&expired));
    assert_eq!(anonymous.get("/me").code(), "token_expired");

    let revoked = s.alice.send("DELETE", "/auth/token", None, &[]);
    assert_eq!(revoked.status, 204);
    assert_eq!(s.alice.get("/me").code(), "token_revoked");
}

// --- 2. filters and cursors ---------------------------------------------------------------------

/// One generated payment, as the generator made it.
struct Made {
    reference: String,
}

/// Inserts a payment as the pipeline would leave it, `seconds` after a fixed start (several share
/// a second, so the keyset's tie-break on id is exercised).
fn insert_payment(conn: &mut PgConnection, user: i64, customer: i64, minor: i64, status: &str, seconds: i64) -> Made {
    use diesel::sql_types::{BigInt, Text, Timestamptz};
    let at = chrono::DateTime::from_timestamp(1_780_000_000 + seconds, 0).unwrap();
    let order: i64 = diesel::sql_query(
        "INSERT INTO orders (user_id, customer_id, total, currency, source, created_at) VALUES ($1, $2, $3::numeric / 100, 'USD', 'api', $4) RETURNING id",
    )
    .bind::<BigInt, _>(user)
    .bind::<BigInt, _>(customer)
    .bind::<BigInt, _>(minor)
    .bind::<Timestamptz, _>(at)
    .get_result::<OrderId>(conn)
    .unwrap()
    .id;
    let reference = uuid::Uuid::new_v4();
    diesel::sql_query(
        "INSERT INTO payments (user_id, order_id, customer_id, amount, currency, status, idempotency_key, gateway_key, reference, \
             external_transaction_id, processing_started_at, next_check_at, created_at) \
         VALUES ($1, $2, $3, $4::numeric / 100, 'USD', $5, 'gen_' || $2, 'gen_' || $2, $6, \
             CASE WHEN $5 = 'completed' THEN 'ch_gen_' || $2 END, CASE WHEN $5 = 'processing' THEN $7 END, \
             CASE WHEN $5 = 'requires_confirmation' THEN $7 END, $7)",
    )
    .bind::<BigInt, _>(user)
    .bind::<BigInt, _>(order)
    .bind::<BigInt, _>(customer)
    .bind::<BigInt, _>(minor)
    .bind::<Text, _>(status)
    .bind::<diesel::sql_types::Uuid, _>(reference)
    .bind::<Timestamptz, _>(at)
    .execute(conn)
    .unwrap();
    Made { reference: reference.to_string() }
}

#[derive(QueryableByName)]
struct OrderId {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
}

/// Every id a filtered list holds, walked page by page with `starting_after`.
fn walk(api: &Api, query: &str, limit: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let after = cursor.as_ref().map(|c| format!("&starting_after={c}")).unwrap_or_default();
        let page = api.get(&format!("/payments?limit={limit}{query}{after}"));
        assert_eq!(page.status, 200, "{query}: {}", page.text);
        let ids = page.ids();
        seen.extend(ids.iter().cloned());
        if !page.json["has_more"].as_bool().unwrap() {
            return seen;
        }
        assert_eq!(ids.len(), limit, "a page that is not the last is full");
        cursor = ids.last().cloned();
    }
}

#[test]
fn each_filter_alone_and_all_combined_return_exactly_the_matching_payments() {
    use agora::schema::payments as p;
    use rand::{Rng, SeedableRng};
    let s = shop();
    let mut conn = s.app.conn();
    let dave = fixtures::user(&mut conn, "dave@north.test");
    diesel::sql_query(format!("INSERT INTO user_customers (user_id, customer_id) VALUES ({dave}, {})", s.north)).execute(&mut conn).unwrap();
    let dave_id = fixtures::user_public_id(&mut conn, dave);
    let alice_id = fixtures::user_id(&mut conn, "alice@north.test");
    let bob_id = fixtures::user_id(&mut conn, "bob@south.test");
    // Alice also sees South, so her lists merge two merchants.
    diesel::sql_query(format!("INSERT INTO user_customers (user_id, customer_id) VALUES ({alice_id}, {})", s.south)).execute(&mut conn).unwrap();
    let statuses = ["pending", "processing", "completed", "completed", "failed", "requires_confirmation"];
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let mut made = Vec::new();
    for i in 0..400 {
        let (user, customer) = match i % 3 {
            0 => (alice_id, s.north),
            1 => (dave, s.north),
            _ => (bob_id, s.south),
        };
        let minor = rng.gen_range(50..20_000);
        made.push(insert_payment(&mut conn, user, customer, minor, statuses[rng.gen_range(0..statuses.len())], rng.gen_range(0..10 * 86_400) / 600 * 600));
    }
    let day = |n: i64| chrono::DateTime::from_timestamp(1_780_000_000 + n * 86_400, 0).unwrap().date_naive();
    let t0 = 1_780_000_000i64;
    let reference = made[17].reference.clone();
    type Narrow = Box<dyn Fn(p::BoxedQuery<'static, diesel::pg::Pg>) -> p::BoxedQuery<'static, diesel::pg::Pg>>;
    let cases: Vec<(String, Narrow)> = vec![
        (format!("&customer={}", s.north_id), Box::new(move |q| q.filter(p::customer_id.eq(s.north)))),
        (format!("&user={dave_id}"), Box::new(move |q| q.filter(p::user_id.eq(dave)))),
        (format!("&reference={reference}"), Box::new({ let r = reference.clone(); move |q| q.filter(p::reference.eq(uuid::Uuid::parse_str(&r).unwrap())) })),
        ("&status=failed".into(), Box::new(|q| q.filter(p::status.eq("failed")))),
        (format!("&created[gt]={}", t0 + 3 * 86_400), Box::new(move |q| q.filter(p::created_at.gt(chrono::DateTime::from_timestamp(t0 + 3 * 86_400, 0).unwrap())))),
        (format!("&created[gte]={}", t0 + 3 * 86_400), Box::new(move |q| q.filter(p::created_at.ge(chrono::DateTime::from_timestamp(t0 + 3 * 86_400, 0).unwrap())))),
        (format!("&created[lt]={}", t0 + 5 * 86_400), Box::new(move |q| q.filter(p::created_at.lt(chrono::DateTime::from_timestamp(t0 + 5 * 86_400, 0).unwrap())))),
        (format!("&created[lte]={}", t0 + 5 * 86_400), Box::new(move |q| q.filter(p::created_at.le(chrono::DateTime::from_timestamp(t0 + 5 * 86_400, 0).unwrap())))),
        (format!("&from={}", day(2)), Box::new(move |q| q.filter(p::created_at.ge(day(2).and_hms_opt(0, 0, 0).unwrap().and_utc())))),
        (format!("&to={}", day(6)), Box::new(move |q| q.filter(p::created_at.lt(day(7).and_hms_opt(0, 0, 0).unwrap().and_utc())))),
        ("&amount[gte]=10000".into(), Box::new(|q| q.filter(p::amount.ge(bigdecimal::BigDecimal::from(100))))),
        ("&amount[lte]=5000".into(), Box::new(|q| q.filter(p::amount.le(bigdecimal::BigDecimal::from(50))))),
        (
            format!("&customer={}&user={dave_id}&status=completed&from={}&to={}&amount[gte]=2000&amount[lte]=15000&created[lt]={}", s.north_id, day(1), day(8), t0 + 8 * 86_400),
            Box::new(move |q| {
                q.filter(p::customer_id.eq(s.north))
                    .filter(p::user_id.eq(dave))
                    .filter(p::status.eq("completed"))
                    .filter(p::created_at.ge(day(1).and_hms_opt(0, 0, 0).unwrap().and_utc()))
                    .filter(p::created_at.lt(chrono::DateTime::from_timestamp(t0 + 8 * 86_400, 0).unwrap()))
                    .filter(p::amount.ge(bigdecimal::BigDecimal::from(20)))
                    .filter(p::amount.le(bigdecimal::BigDecimal::from(150)))
            }),
        ),
    ];
    // Alice is linked to both merchants now: a fresh token is not needed, links are read per request.
    for (query, narrow) in cases {
        let expected: Vec<String> = narrow(p::table.filter(p::customer_id.eq_any([s.north, s.south])).into_boxed())
            .order((p::created_at.desc(), p::id.desc()))
            .select(p::reference)
            .load::<uuid::Uuid>(&mut conn)
            .unwrap()
            .into_iter()
            .map(|r| r.to_string())
            .collect();
        assert!(!expected.is_empty(), "{query} matches something");
        assert_eq!(walk(&s.alice, &query, 100), expected, "{query}");
    }
    // Bob, linked to South only, sees South's rows and nothing of North's.
    let bobs = walk(&s.bob, "", 100);
    assert_eq!(bobs.len(), made.len() / 3);
}

#[test]
fn cursor_pages_visit_every_payment_once_while_payments_are_added() {
    let s = shop();
    let mut conn = s.app.conn();
    let alice_id = fixtures::user_id(&mut conn, "alice@north.test");
    let mut original: Vec<String> = (0..60).map(|i| insert_payment(&mut conn, alice_id, s.north, 100 + i, "completed", i / 3)).map(|m| m.reference).collect();
    original.reverse(); // newest first (ties: higher id first, as inserted later)
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut added = 0;
    loop {
        let after = cursor.as_ref().map(|c| format!("&starting_after={c}")).unwrap_or_default();
        let page = s.alice.get(&format!("/payments?limit=7{after}"));
        seen.extend(page.ids());
        // Newer payments arrive between pages; they must not shift the walk.
        insert_payment(&mut conn, alice_id, s.north, 999, "pending", 1_000 + added);
        added += 1;
        if !page.json["has_more"].as_bool().unwrap() {
            break;
        }
        cursor = page.ids().last().cloned();
    }
    assert_eq!(seen, original, "every row once, in order, none of the newcomers");

    // Walking back with ending_before gives the newer neighbours, newest first.
    let middle = &original[30];
    let newer = s.alice.get(&format!("/payments?limit=5&customer={}&ending_before={middle}", s.north_id));
    assert_eq!(newer.ids(), original[25..30].to_vec());
    assert_eq!(newer.json["has_more"], true);
    let both = s.alice.get(&format!("/payments?starting_after={middle}&ending_before={middle}"));
    assert_eq!((both.status, both.code()), (400, "parameter_invalid"));
    let stranger = s.alice.get(&format!("/payments?starting_after={}", uuid::Uuid::new_v4()));
    assert_eq!((stranger.status, stranger.code(), stranger.param()), (404, "resource_missing", Some("starting_after")));
}

// --- 3. refund races ----------------------------------------------------------------------------

/// Sends `n` requests at once (released together by a barrier) and returns the answers.
fn at_once(n: usize, request: impl Fn(usize) -> crate::support::api::Answer + Sync) -> Vec<crate::support::api::Answer> {
    let gate = std::sync::Barrier::new(n);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n).map(|i| {
            let (gate, request) = (&gate, &request);
            scope.spawn(move || {
                gate.wait();
                request(i)
            })
        }).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn statuses(answers: &[crate::support::api::Answer], status: u16) -> usize {
    answers.iter().filter(|a| a.status == status).count()
}

fn completed_payment(s: &Shop, amount: i64) -> String {
    let payment = s.alice.pay(&s.north_id, amount, "pm_card_visa");
    s.app.drain_jobs();
    payment["id"].as_str().unwrap().to_string()
}

fn refund_rows(conn: &mut PgConnection) -> i64 {
    refunds::table.count().get_result(conn).unwrap()
}

#[test]
fn twenty_concurrent_full_refunds_make_one_refund_at_the_gateway_and_in_the_ledger() {
    let s = shop();
    let id = completed_payment(&s, 5_000);
    let answers = at_once(20, |i| s.alice.post(&format!("/payments/{id}/refunds"), &json!({}), Some(&format!("full-{i}"))));
    assert_eq!(statuses(&answers, 201), 1, "{:?}", answers.iter().map(|a| a.text.clone()).collect::<Vec<_>>());
    assert!(answers.iter().filter(|a| a.status != 201).all(|a| a.code() == "payment_already_refunded"));
    s.app.drain_jobs();
    assert_eq!(s.gateway.ledger().refunds().len(), 1);
    let mut conn = s.app.conn();
    let refunds_booked: i64 = balance_transactions::table.filter(balance_transactions::kind.eq("refund")).count().get_result(&mut conn).unwrap();
    assert_eq!(refunds_booked, 1);
    assert_eq!(balance_of(&mut conn, s.north), bigdecimal::BigDecimal::from(0));
    assert_eq!(s.alice.get(&format!("/payments/{id}")).json["refunded"], true);
}

#[test]
fn twenty_concurrent_tenth_refunds_let_exactly_ten_through() {
    let s = shop();
    let id = completed_payment(&s, 10_000);
    let answers = at_once(20, |i| s.alice.post(&format!("/payments/{id}/refunds"), &json!({ "amount": 1_000 }), Some(&format!("tenth-{i}"))));
    assert_eq!(statuses(&answers, 201), 10);
    assert!(answers.iter().filter(|a| a.status != 201).all(|a| a.code() == "payment_already_refunded" || a.code() == "amount_too_large"));
    s.app.drain_jobs();
    assert_eq!(s.gateway.ledger().refunds().len(), 10);
    let mut conn = s.app.conn();
    assert_eq!(balance_of(&mut conn, s.north), bigdecimal::BigDecimal::from(0));
    assert_eq!(ledger_sum(&mut conn, s.north), bigdecimal::BigDecimal::from(0));
}

#[test]
fn twenty_requests_with_one_idempotency_key_make_one_refund() {
    let s = shop();
    let id = completed_payment(&s, 3_000);
    let answers = at_once(20, |_| s.alice.post(&format!("/payments/{id}/refunds"), &json!({ "amount": 500 }), Some("the-same-key")));
    assert!(answers.iter().all(|a| a.status == 201 || (a.status == 409 && a.code() == "idempotency_key_in_use")), "{:?}", answers.iter().map(|a| &a.text).collect::<Vec<_>>());
    let created: Vec<&serde_json::Value> = answers.iter().filter(|a| a.status == 201).map(|a| &a.json["id"]).collect();
    assert!(!created.is_empty() && created.iter().all(|r| *r == created[0]), "every success names the same refund");
    let mut conn = s.app.conn();
    assert_eq!(refund_rows(&mut conn), 1);
    s.app.drain_jobs();
    assert_eq!(s.gateway.ledger().refunds().len(), 1);
}

// --- 4. balances --------------------------------------------------------------------------------

#[test]
fn fifty_threads_paying_and_refunding_keep_the_balance_equal_to_its_ledger_and_never_negative() {
    use rand::{Rng, SeedableRng};
    let s = shop();
    let workers = s.app.services.start_workers();
    let lowest = std::sync::Mutex::new(None::<bigdecimal::BigDecimal>);
    let done = std::sync::atomic::AtomicBool::new(false);
    let server_errors = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut conn = s.app.conn();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let now = balance_of(&mut conn, s.north);
                let mut low = lowest.lock().unwrap();
                if low.as_ref().is_none_or(|l| now < *l) {
                    *low = Some(now);
                }
            }
        });
        let threads: Vec<_> = (0..50)
            .map(|t| {
                let s = &s;
                let server_errors = &server_errors;
                scope.spawn(move || {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(t);
                    let mut mine: Vec<String> = Vec::new();
                    for step in 0..6 {
                        let answer = if mine.is_empty() || rng.gen_bool(0.5) {
                            let body = json!({ "customer": s.north_id, "amount": rng.gen_range(50..5_000), "currency": "usd", "payment_method": "pm_card_visa" });
                            let a = s.alice.post("/payments", &body, Some(&format!("pay-{t}-{step}")));
                            if a.status == 201 {
                                mine.push(a.json["id"].as_str().unwrap().to_string());
                            }
                            a
                        } else {
                            let target = &mine[rng.gen_range(0..mine.len())];
                            s.alice.post(&format!("/payments/{target}/refunds"), &json!({ "amount": rng.gen_range(1..3_000) }), Some(&format!("refund-{t}-{step}")))
                        };
                        if answer.status >= 500 {
                            server_errors.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    workers.stop();
    s.app.drain_jobs();
    assert_eq!(server_errors.into_inner(), 0);
    let mut conn = s.app.conn();
    let balance = balance_of(&mut conn, s.north);
    assert_eq!(balance, ledger_sum(&mut conn, s.north), "the balance is the sum of its ledger");
    assert!(lowest.into_inner().unwrap().unwrap_or_default() >= 0);
    let refunded: i64 = refunds::table.count().get_result(&mut conn).unwrap();
    assert!(refunded > 0, "some refunds went through");
    assert_eq!(s.gateway.ledger().refunds().len() as i64, refunds::table.filter(refunds::status.eq("succeeded")).count().get_result::<i64>(&mut conn).unwrap());
    let findings = agora::merchants::repo::check_invariants(&mut conn).unwrap();
    assert!(findings.is_empty(), "{findings:?}");
}

// --- 5. Idempotency-Key -------------------------------------------------------------------------

fn shop_with_clock(clock: Arc<agora::clock::FakeClock>) -> Shop {
    shop_on(move |options| options.clock = clock)
}

#[test]
fn an_idempotency_key_replays_refuses_other_requests_and_expires_after_a_day() {
    let clock = Arc::new(agora::clock::FakeClock::starting_now());
    let s = shop_with_clock(clock.clone());
    let north = s.north_id.clone();
    let first = s.alice.send("POST", "/payments", Some(&format!(r#"{{"customer":"{north}","amount":1234,"currency":"usd"}}"#)), &[("Idempotency-Key", "order-77")]);
    assert_eq!(first.status, 201);
    assert_eq!(first.header("idempotent-replayed"), None);
    // The same request, keys reordered and spaced differently: the stored answer, marked.
    let again = s.alice.send("POST", "/payments", Some(&format!(r#"{{ "currency": "usd", "amount": 1234, "customer": "{north}" }}"#)), &[("Idempotency-Key", "order-77")]);
    assert_eq!((again.status, again.header("idempotent-replayed")), (201, Some("true")));
    assert_eq!(again.json, first.json);
    let mut conn = s.app.conn();
    assert_eq!(fixtures::payment_count(&mut conn), 1);
    // Other parameters, or another route, under the same key: 422.
    let other = s.alice.send("POST", "/payments", Some(&format!(r#"{{"customer":"{north}","amount":9999,"currency":"usd"}}"#)), &[("Idempotency-Key", "order-77")]);
    assert_eq!((other.status, other.code()), (422, "idempotency_key_reused"));
    assert_eq!(other.json["error"]["type"], "idempotency_error");
    let elsewhere = s.alice.send("POST", "/customers", Some(r#"{"name":"Side shop"}"#), &[("Idempotency-Key", "order-77")]);
    assert_eq!(elsewhere.status, 422);
    // Keys are per user: Bob's "order-77" is his own.
    let bobs = s.bob.send("POST", "/payments", Some(&format!(r#"{{"customer":"{}","amount":1234,"currency":"usd"}}"#, s.south_id)), &[("Idempotency-Key", "order-77")]);
    assert_eq!(bobs.status, 201);

    // A request whose parameters are refused is not stored: the key is free for the fixed one.
    let invalid = s.alice.send("POST", "/payments", Some(&format!(r#"{{"customer":"{north}","amount":10,"currency":"usd"}}"#)), &[("Idempotency-Key", "fix-me")]);
    assert_eq!((invalid.status, invalid.code()), (400, "amount_too_small"));
    let fixed = s.alice.send("POST", "/payments", Some(&format!(r#"{{"customer":"{north}","amount":100,"currency":"usd"}}"#)), &[("Idempotency-Key", "fix-me")]);
    assert_eq!(fixed.status, 201, "{}", fixed.text);

    // A request still running under the key: 409, and nothing is done twice.
    let alice_id = fixtures::user_id(&mut conn, "alice@north.test");
    let now = clock.now();
    let held = agora::merchants::repo::claim_key(&mut conn, alice_id, "busy", "fingerprint of the running request", now, now + chrono::Duration::seconds(60), now - chrono::Duration::hours(24)).unwrap();
    assert_eq!(held, agora::merchants::repo::KeyState::Fresh);
    let busy = s.alice.send("POST", "/payments", Some(&format!(r#"{{"customer":"{north}","amount":100,"currency":"usd"}}"#)), &[("Idempotency-Key", "busy")]);
    // A different fingerprint is 422 even while running; the same one is 409.
    assert_eq!(busy.status, 422);
    let fingerprint = {
        use sha2::Digest;
        let body = format!(r#"{{"amount":100,"currency":"usd","customer":"{north}"}}"#);
        format!("{:x}", sha2::Sha256::digest(format!("POST /api/v1/payments\n{body}")))
    };
    diesel::sql_query(format!("UPDATE api_idempotency_keys SET fingerprint = '{fingerprint}' WHERE key = 'busy'")).execute(&mut conn).unwrap();
    let busy = s.alice.send("POST", "/payments", Some(&format!(r#"{{"customer":"{north}","amount":100,"currency":"usd"}}"#)), &[("Idempotency-Key", "busy")]);
    assert_eq!((busy.status, busy.code()), (409, "idempotency_key_in_use"));

    // After 24 hours a key is forgotten: the same key starts a new payment.
    clock.tick(std::time::Duration::from_secs(25 * 3600));
    assert_eq!(s.alice.get("/me").code(), "token_expired", "tokens live an hour by default");
    let alice = Api::signed_in(&s.app.url, "alice@north.test");
    let later = alice.send("POST", "/payments", Some(&format!(r#"{{"customer":"{north}","amount":9999,"currency":"usd"}}"#)), &[("Idempotency-Key", "order-77")]);
    assert_eq!((later.status, later.header("idempotent-replayed")), (201, None));
    assert_ne!(later.json["id"], first.json["id"]);

    let missing = alice.send("POST", "/payments", Some(&format!(r#"{{"customer":"{north}","amount":100,"currency":"usd"}}"#)), &[]);
    assert_eq!((missing.status, missing.code()), (400, "idempotency_key_missing"));
    let bad = alice.send("POST", "/payments", Some(&format!(r#"{{"customer":"{north}","amount":100,"currency":"usd"}}"#)), &[("Idempotency-Key", "tab\there")]);
    assert_eq!((bad.status, bad.code()), (400, "idempotency_key_invalid"));
}

// --- 6. bad input -------------------------------------------------------------------------------

#[test]
fn every_input_error_has_its_code_and_nothing_is_a_server_error() {
    let s = shop();
    let (north, north_key) = (s.north_id.clone(), s.north);
    let pay = |body: &str| s.alice.send("POST", "/payments", Some(body), &[("Idempotency-Key", &uuid::Uuid::new_v4().to_string())]);
    let expect = |answer: crate::support::api::Answer, status: u16, code: &str, param: Option<&str>| {
        assert_eq!((answer.status, answer.code(), answer.param()), (status, code, param), "{}", answer.text);
        let error = &answer.json["error"];
        assert!(error["type"].is_string() && error["message"].is_string() && error.get("param").is_some(), "{}", answer.text);
    };
    expect(pay("{\"customer\":"), 400, "invalid_json", None);
    expect(s.alice.send_bytes("POST", "/payments", Some(&[0x7b, 0xff, 0x7d]), &[("Idempotency-Key", "utf8")]), 400, "invalid_json", None);
    expect(pay("[1, 2]"), 400, "invalid_json", None);
    expect(pay(&format!("{{\"description\":{}{}}}", "[".repeat(100), "]".repeat(100))), 400, "invalid_json", None);
    expect(pay(r#"{"amount":100,"currency":"usd"}"#), 400, "parameter_missing", Some("customer"));
    expect(pay(&format!(r#"{{"customer":"{north}","amount":100,"currency":"usd","colour":"red"}}"#)), 400, "parameter_unknown", Some("colour"));
    expect(s.alice.get("/payments?colour=red"), 400, "parameter_unknown", Some("colour"));
    expect(s.alice.get("/payments?status=refunded"), 400, "parameter_invalid", Some("status"));
    expect(s.alice.get("/payments?limit=101"), 400, "parameter_invalid", Some("limit"));
    expect(s.alice.get("/payments?from=24-11-2026"), 400, "parameter_invalid", Some("from"));
    expect(pay(&format!(r#"{{"customer":"{north}","amount":100,"currency":"usd","description":{}}}"#, serde_json::json!("x".repeat(501)))), 400, "parameter_invalid", Some("description"));
    for amount in ["10.5", "1000.0", "1e3", "\"10\"", "true"] {
        expect(pay(&format!(r#"{{"customer":"{north}","amount":{amount},"currency":"usd"}}"#)), 400, "parameter_invalid_integer", Some("amount"));
    }
    expect(s.alice.get("/payments?limit=10.5"), 400, "parameter_invalid_integer", Some("limit"));
    expect(s.alice.get("/payments?created%5Bgt%5D=1e3"), 400, "parameter_invalid_integer", Some("created[gt]"));
    expect(pay(&format!(r#"{{"customer":"{north}","amount":49,"currency":"usd"}}"#)), 400, "amount_too_small", Some("amount"));
    expect(pay(&format!(r#"{{"customer":"{north}","amount":100000000,"currency":"usd"}}"#)), 400, "amount_too_large", Some("amount"));
    expect(pay(&format!(r#"{{"customer":"{north}","amount":100,"currency":"sek"}}"#)), 400, "currency_not_supported", Some("currency"));
    let big = format!(r#"{{"customer":"{north}","amount":100,"currency":"usd","description":"{}"}}"#, "x".repeat(70_000));
    expect(pay(&big), 413, "request_too_large", None);
    let form = s.alice.send("POST", "/payments", Some("customer=1&amount=100"), &[("Content-Type", "application/x-www-form-urlencoded"), ("Idempotency-Key", "form")]);
    expect(form, 415, "unsupported_media_type", None);
    expect(s.alice.get("/no/such/route"), 404, "resource_missing", None);
    // PostgreSQL text cannot hold NUL: refused as a parameter, never a server error.
    expect(pay(&format!(r#"{{"customer":"{north}","amount":100,"currency":"usd","description":"a\u0000b"}}"#)), 400, "parameter_invalid", Some("description"));
    let nul_login = Api::new(&s.app.url).send("POST", "/auth/token", Some(r#"{"email":"alice@north.test\u0000","password":"x"}"#), &[]);
    assert_eq!((nul_login.status, nul_login.code(), nul_login.param()), (400, "parameter_invalid", Some("email")));
    // Currency comes in any case and goes out lower case.
    let upper = pay(&format!(r#"{{"customer":"{north}","amount":100,"currency":"EUR"}}"#));
    assert_eq!((upper.status, upper.json["currency"].as_str()), (201, Some("eur")));

    // Refund refusals: not completed, more than remains, and more than the balance holds.
    let pending = upper.json["id"].as_str().unwrap().to_string();
    expect(s.alice.post(&format!("/payments/{pending}/refunds"), &json!({}), Some("r0")), 400, "payment_not_refundable", None);
    let id = completed_payment(&s, 2_000);
    expect(s.alice.post(&format!("/payments/{id}/refunds"), &json!({ "amount": 2_001 }), Some("r1")), 400, "amount_too_large", Some("amount"));
    expect(s.alice.post(&format!("/payments/{id}/refunds"), &json!({ "reason": "boredom" }), Some("r2")), 400, "parameter_invalid", Some("reason"));
    let mut conn = s.app.conn();
    // A payout took most of the balance (an adjustment, written the way the ledger is).
    diesel::sql_query(format!(
        "WITH paid_out AS (INSERT INTO balance_transactions (customer_id, type, amount, currency, source) VALUES ({north_key}, 'adjustment', -19.00, 'USD', gen_random_uuid())) \
         UPDATE customer_balances SET available = available - 19.00 WHERE customer_id = {north_key} AND currency = 'USD'"
    ))
    .execute(&mut conn)
    .unwrap();
    let short = s.alice.post(&format!("/payments/{id}/refunds"), &json!({ "amount": 1_500 }), Some("r3"));
    expect(short.clone(), 400, "balance_insufficient", Some("amount"));
    assert!(short.json["error"]["message"].as_str().unwrap().contains("1.00 USD"), "{}", short.text);
}

#[test]
fn the_openapi_document_describes_every_route_the_router_serves() {
    let s = shop();
    let anonymous = Api::new(&s.app.url);
    let spec = anonymous.get("/openapi.json");
    assert_eq!((spec.status, spec.json["openapi"].as_str()), (200, Some("3.0.3")));
    let paths = spec.json["paths"].as_object().unwrap();
    let routes = agora::web::openapi::all_routes(&agora::app::api_tables());
    for (method, path, route) in &routes {
        let documented = &paths[&format!("/api/v1{path}")][method.as_str()];
        assert!(documented.is_object(), "{method} {path} is documented");
        for field in route.query {
            assert!(documented["parameters"].as_array().unwrap().iter().any(|p| p["name"] == field.name), "{path} documents {}", field.name);
        }
        if let Some(body) = route.body {
            let schema = &documented["requestBody"]["content"]["application/json"]["schema"];
            for field in body.fields {
                assert!(schema["properties"][field.name]["type"].is_string(), "{method} {path}: {} is typed", field.name);
            }
        }
        // And the router serves it: whatever the answer, it is not "no such route".
        let concrete = path.replace("{id}", "1").replace("{user_id}", "1").replace("{token}", "t").replace("{number}", "1").replace("{message}", "1");
        let answer = s.alice.send(&method.to_uppercase(), &concrete, None, &[]);
        assert_ne!(answer.json["error"]["message"], "Unrecognized request URL.", "{method} {path} is routed");
        assert_ne!(answer.json["error"], "no such route", "{method} {path} is routed");
    }
    let served: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(served, routes.len() + 1, "every route, and the document itself");
    // Both prefixes of the chat API are the same table.
    assert_eq!(paths["/api/v1/applications/{token}/chats"], {
        let mut other = paths["/api/v1/chat_applications/{token}/chats"].clone();
        for (_, op) in other.as_object_mut().unwrap() {
            op["operationId"] = json!(op["operationId"].as_str().unwrap().replacen("_chat_applications", "_applications", 1));
        }
        other
    });
    // Typed as the handlers parse them, with the error shape of each area.
    let create = &paths["/api/v1/payments"]["post"];
    let body = &create["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(body["required"], json!(["customer", "amount", "currency"]));
    assert_eq!((body["properties"]["amount"]["type"].as_str(), body["properties"]["amount"]["minimum"].as_i64()), (Some("integer"), Some(50)));
    assert_eq!(body["additionalProperties"], false);
    let limit = paths["/api/v1/payments"]["get"]["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "limit").unwrap().clone();
    assert_eq!(limit["schema"]["type"], "integer");
    assert_eq!(paths["/api/v1/auth/token"]["delete"]["responses"]["204"], json!({ "description": "Done; no body" }));
    assert_eq!(paths["/api/v1/chat_applications/{token}/chats"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Chats");
    assert_eq!(paths["/api/v1/chat_applications"]["post"]["responses"]["default"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ChatError");
    assert_eq!(spec.json["components"]["schemas"]["Chats"]["type"], "array");
}

#[test]
fn a_method_a_path_does_not_take_is_405_with_allow_and_an_unknown_path_404_in_each_apis_shape() {
    let s = shop();
    let wrong = s.alice.send("PUT", "/payments", Some("{}"), &[]);
    assert_eq!((wrong.status, wrong.code()), (405, "method_not_allowed"));
    assert_eq!(wrong.header("Allow"), Some("GET, POST"));
    let chat = s.alice.send("DELETE", "/chat_applications", None, &[]);
    assert_eq!((chat.status, chat.header("Allow")), (405, Some("GET, POST")));
    assert!(chat.json["error"].is_string(), "the chat API's own error shape: {}", chat.text);
    assert_eq!(s.alice.get("/payments/").status, 404, "a trailing slash is not a path the API serves, whatever the method");
    let nowhere = s.alice.get("/no/such/route");
    assert_eq!((nowhere.status, nowhere.code()), (404, "resource_missing"));
    let chat_nowhere = s.alice.get("/chat_applications/t/nothing");
    assert_eq!((chat_nowhere.status, chat_nowhere.json["error"].as_str()), (404, Some("no such route")));
}

// --- load ---------------------------------------------------------------------------------------

#[test]
fn a_hundred_payments_a_second_for_ten_seconds_are_all_accepted_and_all_settle() {
    use agora::payments::gateway::Latency;
    // A gateway that answers in 200–400 ms, as real ones do.
    let latency = Latency { latency: std::time::Duration::from_millis(300), jitter: std::time::Duration::from_millis(100) };
    let gateway = Arc::new(SimulatedGateway::new(Simulation::new(0.0, 0.0, Some(1)), latency));
    let app = TestApp::spawn(gateway.clone());
    let mut conn = app.conn();
    let staff = fixtures::user(&mut conn, "load@north.test");
    let north = fixtures::merchant(&mut conn, "North", &[staff]);
    let api = Api::signed_in(&app.url, "load@north.test");
    let workers = app.services.start_workers();
    let plan = crate::support::load::Plan {
        base: app.url.clone(),
        token: api.token().unwrap(),
        customer: fixtures::customer_public_id(&mut conn, north),
        per_second: 100,
        seconds: 10,
        payment_method: Some("pm_card_visa".into()),
        settle_within: std::time::Duration::from_secs(60),
        senders: 32,
    };
    // Settled payments are noticed when the worker pool signals that it finished jobs.
    let wake = app.services.wake.clone();
    let report = crate::support::load::run(&plan, &move || wake.wait(std::time::Duration::from_secs(1)));
    workers.stop();
    eprintln!("{}", report.summary());
    assert_eq!((report.sent, report.accepted, report.refused), (1_000, 1_000, 0), "{}", report.summary());
    assert_eq!((report.completed, report.lost), (1_000, 0), "{}", report.summary());
    assert_eq!(gateway.ledger().all().len(), 1_000, "one charge each");
}

#[test]
fn the_batched_payment_writes_the_same_rows_as_the_general_path() {
    use agora::schema::{jobs, orders, payment_events, payments};
    let s = shop();
    let fast = s.alice.pay(&s.north_id, 1_500, "pm_card_visa");
    let mut conn = s.app.conn();
    let alice_id = fixtures::user_id(&mut conn, "alice@north.test");
    let limits = s.app.services.limits;
    let general = agora::orders::pipeline::start_api_payment(
        &mut conn, alice_id, s.north, &agora::payments::Money::from_minor(1_500, agora::payments::Currency::USD), None, Some("pm_card_visa"), limits, chrono::Utc::now(),
    )
    .unwrap();
    let fast: agora::payments::Payment = payments::table
        .filter(payments::reference.eq(uuid::Uuid::parse_str(fast["id"].as_str().unwrap()).unwrap()))
        .select(agora::payments::Payment::as_select())
        .first(&mut conn)
        .unwrap();
    let shape = |conn: &mut PgConnection, p: &agora::payments::Payment| {
        let order: (String, String, bool, bigdecimal::BigDecimal) =
            orders::table.find(p.order_id).select((orders::source, orders::status, orders::stock_reserved, orders::total)).first(conn).unwrap();
        let job: (String, String, serde_json::Value, i32, Option<String>) = jobs::table
            .filter(jobs::unique_key.eq(format!("charge_order:{}", p.order_id)))
            .select((jobs::queue, jobs::kind, jobs::args, jobs::max_attempts, jobs::unique_key))
            .first(conn)
            .unwrap();
        let events: Vec<(String, String)> =
            payment_events::table.filter(payment_events::payment_id.eq(p.id)).select((payment_events::to_status, payment_events::reason)).load(conn).unwrap();
        (
            p.idempotency_key == format!("payment_{}_{}", p.user_id, p.order_id),
            p.gateway_key.starts_with("pay_"),
            (p.status, p.amount.clone(), p.currency.clone(), p.payment_method.clone()),
            order,
            (job.0, job.1, job.2["user_id"].clone(), job.2["order_id"] == p.order_id, job.3),
            events.into_iter().map(|(to, why)| (to, why.replace(&p.order_id.to_string(), "N"))).collect::<Vec<_>>(),
        )
    };
    assert_eq!(shape(&mut conn, &fast), shape(&mut conn, &general));
    s.app.drain_jobs();
    assert_eq!(s.gateway.ledger().all().len(), 2, "both are charged by the pipeline");
}

#[test]
fn concurrent_payments_are_written_in_batches_and_one_key_makes_one_payment() {
    let s = shop();
    let body = json!({ "customer": s.north_id, "amount": 777, "currency": "usd", "payment_method": "pm_card_visa" });
    let same_key = at_once(20, |_| s.alice.post("/payments", &body, Some("one-key")));
    assert!(same_key.iter().all(|a| a.status == 201 || (a.status == 409 && a.code() == "idempotency_key_in_use")), "{:?}", same_key.iter().map(|a| &a.text).collect::<Vec<_>>());
    let ids: Vec<&serde_json::Value> = same_key.iter().filter(|a| a.status == 201).map(|a| &a.json["id"]).collect();
    assert!(!ids.is_empty() && ids.iter().all(|id| *id == ids[0]), "every success names the same payment");
    let distinct = at_once(40, |i| s.alice.post("/payments", &body, Some(&format!("many-{i}"))));
    assert!(distinct.iter().all(|a| a.status == 201), "{:?}", distinct.iter().map(|a| &a.text).collect::<Vec<_>>());
    let mut conn = s.app.conn();
    assert_eq!(fixtures::payment_count(&mut conn), 41);
    s.app.drain_jobs();
    assert_eq!(s.gateway.ledger().all().len(), 41, "each charged once");
    assert_eq!(s.alice.get(&format!("/customers/{}/balance", s.north_id)).json["available"][0]["amount"], 41 * 777);
}

#[test]
fn refunds_go_through_the_http_gateway_and_gateway_sim_keeps_them_in_its_ledger() {
    let sim = crate::support::GatewaySim::start(Simulation::new(0.0, 0.0, Some(2)));
    let app = TestApp::spawn(sim.client());
    let (north, _) = fixtures::two_merchants(&mut app.conn(), "North");
    let north = fixtures::customer_public_id(&mut app.conn(), north);
    let alice = Api::signed_in(&app.url, "alice@north.test");
    let payment = alice.pay(&north, 3_000, "pm_card_visa");
    let declined = alice.pay(&north, 3_000, "pm_card_chargeDeclined");
    app.drain_jobs();
    let id = payment["id"].as_str().unwrap();
    assert_eq!(alice.get(&format!("/payments/{id}")).json["status"], "completed");
    assert_eq!(alice.get(&format!("/payments/{}", declined["id"].as_str().unwrap())).json["failure_code"], "card_declined", "gateway-sim knows the test cards");
    for (key, amount) in [("http-1", 1_000), ("http-2", 2_000)] {
        assert_eq!(alice.post(&format!("/payments/{id}/refunds"), &json!({ "amount": amount }), Some(key)).status, 201);
    }
    app.drain_jobs();
    let refunds = alice.get(&format!("/payments/{id}/refunds"));
    assert!(refunds.json["data"].as_array().unwrap().iter().all(|r| r["status"] == "succeeded"), "{}", refunds.text);
    let at_gateway = sim.refunds();
    assert_eq!(at_gateway.len(), 2);
    let charge = alice.get(&format!("/payments/{id}")).json["transaction_id"].as_str().unwrap().to_string();
    assert!(at_gateway.iter().all(|r| r["charge"] == charge.as_str() && r["idempotency_key"].as_str().unwrap().starts_with("rf_")));
}
