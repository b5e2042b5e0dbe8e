//! Issue 9: the merchants' dashboard pages and CSV export, over HTTP with the cookie sign-in.

use diesel::prelude::*;
use std::sync::Arc;

use agora::payments::gateway::{Simulation, SimulatedGateway};
use agora::schema::refunds;

use crate::support::api::Api;
use crate::support::fixtures::{self, PASSWORD};
use crate::support::{Client, TestApp};

struct Desk {
    app: TestApp,
    /// The merchants, by the ids the dashboard and API show (`cus_…`).
    north: String,
    south: String,
    alice: Client,
    bob_api: Api,
    alice_api: Api,
}

fn desk() -> Desk {
    desk_with(Arc::new(SimulatedGateway::new(Simulation::new(0.0, 0.0, Some(3)), Default::default())))
}

fn desk_with(gateway: Arc<dyn agora::payments::PaymentGateway>) -> Desk {
    let app = TestApp::spawn(gateway);
    let (north, south) = fixtures::two_merchants(&mut app.conn(), "North, \"the original\"");
    let (north, south) = (fixtures::customer_public_id(&mut app.conn(), north), fixtures::customer_public_id(&mut app.conn(), south));
    let client = Client::new(&app.url);
    client.sign_in("alice@north.test", PASSWORD);
    let (alice_api, bob_api) = (Api::signed_in(&app.url, "alice@north.test"), Api::signed_in(&app.url, "bob@south.test"));
    Desk { app, north, south, alice: client, bob_api, alice_api }
}

fn paid(d: &Desk, api: &Api, customer: &str, amount: i64, description: Option<&str>) -> String {
    let body = serde_json::json!({ "customer": customer, "amount": amount, "currency": "usd", "payment_method": "pm_card_visa", "description": description });
    let answer = api.post("/payments", &body, Some(&uuid::Uuid::new_v4().to_string()));
    assert_eq!(answer.status, 201, "{}", answer.text);
    d.app.drain_jobs();
    answer.json["id"].as_str().unwrap().to_string()
}

#[test]
fn every_dashboard_page_of_another_merchant_is_not_found() {
    let d = desk();
    let theirs = paid(&d, &d.bob_api, &d.south, 3_000, None);
    let south = d.south.clone();
    for path in [
        format!("/dashboard/payments/{theirs}"),
        format!("/dashboard/payments?customer={south}"),
        format!("/dashboard/payments.csv?customer={south}"),
        format!("/dashboard/balances/{south}"),
        "/dashboard/payments/not-a-uuid".to_string(),
    ] {
        assert_eq!(d.alice.get(&path).status, 404, "{path}");
    }
    let token = d.alice.csrf_token();
    let refund = d.alice.post_form(
        &format!("/dashboard/payments/{theirs}/refunds"),
        &[("csrf_token", &token), ("idempotency_key", "k"), ("amount", "30.00"), ("confirm", "yes")],
    );
    assert_eq!(refund.status, 404);
    assert_eq!(d.alice.post_form(&format!("/dashboard/customers/{south}"), &[("csrf_token", &token), ("name", "Mine now")]).status, 404);
    let list = d.alice.get("/dashboard/payments?limit=50");
    assert_eq!(list.status, 200);
    assert!(!list.body.contains(&theirs), "another merchant's payment is not listed");
    let csv = d.alice.get("/dashboard/payments.csv");
    assert!(!csv.body.contains(&theirs));
    let mut conn = d.app.conn();
    assert_eq!(refunds::table.count().get_result::<i64>(&mut conn).unwrap(), 0);
}

#[test]
fn the_csv_export_streams_every_matching_row_with_defused_cells() {
    let d = desk();
    let risky = paid(&d, &d.alice_api, &d.north, 1_000, Some("=HYPERLINK(\"http://evil\")"));
    let plain = paid(&d, &d.alice_api, &d.north, 2_550, Some("two, with a comma"));
    let csv = d.alice.get("/dashboard/payments.csv");
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let mut lines = csv.body.lines();
    assert_eq!(lines.next(), Some("id,created,customer_id,customer_name,user_email,amount,currency,amount_refunded,status,transaction_id,description"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2);
    assert!(rows[0].starts_with(&format!("{plain},")), "newest first: {}", rows[0]);
    assert!(rows[0].contains(",25.50,usd,0.00,completed,ch_"), "{}", rows[0]);
    assert!(rows[0].ends_with(",\"two, with a comma\""));
    assert!(rows[0].contains(",\"North, \"\"the original\"\"\","), "quotes are doubled: {}", rows[0]);
    assert!(rows[1].starts_with(&format!("{risky},")));
    assert!(rows[1].ends_with(",\"'=HYPERLINK(\"\"http://evil\"\")\""), "a formula is defused: {}", rows[1]);

    let filtered = d.alice.get("/dashboard/payments.csv?amount%5Bgte%5D=2000");
    assert_eq!(filtered.body.lines().count(), 2, "the header and one row");
    // A bearer token works too; neither is sent to sign in.
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let by_token = agent
        .get(&format!("{}/dashboard/payments.csv", d.app.url))
        .set("Authorization", &format!("Bearer {}", d.alice_api.token().unwrap()))
        .call()
        .unwrap();
    assert_eq!(by_token.into_string().unwrap().lines().count(), 3);
    let anonymous = Client::new(&d.app.url).get("/dashboard/payments.csv");
    assert_eq!((anonymous.status, anonymous.location.as_deref()), (303, Some("/login?next=/dashboard/payments.csv")));
    let forged = agent.get(&format!("{}/dashboard/payments.csv", d.app.url)).set("Authorization", "Bearer nope").call();
    assert!(matches!(forged, Err(ureq::Error::Status(401, _))));
}

#[test]
fn a_refund_is_reviewed_then_confirmed_and_a_double_submit_makes_one() {
    let d = desk();
    let payment = paid(&d, &d.alice_api, &d.north, 4_000, None);
    let page = d.alice.get(&format!("/dashboard/payments/{payment}"));
    assert_eq!(page.status, 200);
    assert!(page.body.contains("value=\"40.00\""), "the form offers what remains");
    let key_marker = "name=\"idempotency_key\" value=\"";
    let start = page.body.find(key_marker).unwrap() + key_marker.len();
    let key = page.body[start..start + 36].to_string();
    let token = page.csrf_token();
    let fields = |confirm: &'static str, amount: &'static str| {
        vec![("csrf_token", token.clone()), ("idempotency_key", key.clone()), ("amount", amount.to_string()), ("reason", "requested_by_customer".to_string()), ("confirm", confirm.to_string())]
    };
    let too_much = d.alice.post_form(&format!("/dashboard/payments/{payment}/refunds"), &refs(&fields("", "40.01")));
    assert_eq!(too_much.status, 400);
    assert!(too_much.body.contains("At most 40.00 USD remains"), "the form is shown again with the problem");
    let review = d.alice.post_form(&format!("/dashboard/payments/{payment}/refunds"), &refs(&fields("", "15.00")));
    assert_eq!(review.status, 200);
    assert!(review.body.contains("Confirm refund of 15.00 USD"));
    let mut conn = d.app.conn();
    assert_eq!(refunds::table.count().get_result::<i64>(&mut conn).unwrap(), 0, "reviewing makes nothing");
    let first = d.alice.post_form(&format!("/dashboard/payments/{payment}/refunds"), &refs(&fields("yes", "15.00")));
    let second = d.alice.post_form(&format!("/dashboard/payments/{payment}/refunds"), &refs(&fields("yes", "15.00")));
    assert_eq!((first.status, second.status), (303, 303));
    assert_eq!(refunds::table.count().get_result::<i64>(&mut conn).unwrap(), 1, "one refund for the double submit");
    d.app.drain_jobs();
    let after = d.alice.get(first.location.as_deref().unwrap());
    assert!(after.body.contains("Refund of 15.00 USD requested."));
    assert!(!d.alice.get(first.location.as_deref().unwrap()).body.contains("requested."), "the notice shows once");
    let crafted = d.alice.get(&format!("/dashboard/payments/{payment}?notice=Your+account+is+locked"));
    assert!(!crafted.body.contains("account is locked"), "a link cannot put words on the page");
    assert!(after.body.contains("succeeded"));
    assert!(after.body.contains("value=\"25.00\""), "what remains is offered next");
    let balances = d.alice.get("/dashboard/balances");
    assert!(balances.body.contains("25.00 USD"), "{}", balances.body);
    let ledger = d.alice.get(&format!("/dashboard/balances/{}", d.north));
    assert!(ledger.body.contains("-15.00 USD") && ledger.body.contains("40.00 USD"));
}

#[test]
fn the_payments_page_filters_totals_and_pages_in_a_constant_number_of_queries() {
    let d = desk();
    for amount in [1_000, 2_000, 3_000] {
        paid(&d, &d.alice_api, &d.north, amount, None);
    }
    let page = d.alice.get("/dashboard/payments?limit=2");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Gross of 3 completed payments") && page.body.contains("60.00 USD"), "totals of the whole filtered set");
    assert!(page.body.contains("<svg") && page.body.contains("<rect"), "the chart is drawn on the server");
    assert!(page.body.contains("rel=\"next\""));
    assert!(!page.body.contains("rel=\"prev\""));
    let few = page.queries.expect("query count header");
    let filtered = d.alice.get("/dashboard/payments?status=completed&amount%5Bgte%5D=1500");
    assert!(filtered.body.contains("Gross of 2 completed payments") && filtered.body.contains("50.00 USD"), "{}", filtered.body);
    for _ in 0..20 {
        paid(&d, &d.alice_api, &d.north, 500, None);
    }
    let many = d.alice.get("/dashboard/payments?limit=2").queries.unwrap();
    assert_eq!(few, many, "the page's queries do not grow with the rows");
    assert!(many <= 8, "{many} queries");
    let bad = d.alice.get("/dashboard/payments?from=yesterday");
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("from"), "the page says which filter is wrong");
    let older = page.body.split("rel=\"next\"").next().unwrap();
    let href = older.rsplit("href=\"").next().unwrap().split('"').next().unwrap().replace("&amp;", "&");
    assert_eq!(d.alice.get(&href).status, 200);
}

fn refs<'a>(fields: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    fields.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

#[test]
fn the_demo_data_gives_each_staff_member_their_merchants_and_loads_twice_as_once() {
    let app = TestApp::spawn(Arc::new(agora::payments::gateway::ScriptedGateway::succeeding()));
    let mut conn = app.conn();
    let first = agora::seed::load(&mut conn).unwrap();
    assert_eq!(first.payments_created, 362, "a month of history and the planted double charge");
    let again = agora::seed::load(&mut conn).unwrap();
    assert_eq!((again.orders_created, again.payments_created), (0, 0), "a second load adds nothing");
    let first_token = again.chat_token.clone();
    assert_eq!(agora::seed::load(&mut conn).unwrap().chat_token, first_token, "one demo chat application");
    let chats = Api::new(&app.url).get(&format!("/chat_applications/{first_token}/chats"));
    assert_eq!(chats.json, serde_json::json!([{ "number": 1, "messages_count": 1000 }, { "number": 2, "messages_count": 1000 }, { "number": 3, "messages_count": 1000 }]));
    assert_eq!(agora::chat::repo::reconcile_counts(&mut conn).unwrap(), (0, 0), "its counts are right");
    assert!(agora::merchants::repo::check_invariants(&mut conn).unwrap().is_empty(), "the demo ledger balances");
    let sign_in = |email: &str| {
        let client = Client::new(&app.url);
        client.sign_in(email, agora::seed::DEMO_PASSWORD);
        client
    };
    let books = sign_in("books@example.com").get("/dashboard/payments?limit=100");
    assert!(books.body.contains("Northwind Books") && !books.body.contains("Acme Coffee Roasters</td>"), "books staff see books only");
    let finance = sign_in("finance@example.com");
    let both = finance.get("/dashboard/payments?limit=100");
    assert!(both.body.contains("Northwind Books</td>") && both.body.contains("Acme Coffee Roasters</td>"));
    assert!(both.body.contains("id=\"double-charges\""), "the demo's double charge is flagged");
    let balances = finance.get("/dashboard/balances");
    assert_eq!(balances.body.matches("class=\"balance\"").count(), 2);
    // The money checks run on an administrator's demand, and the dashboard shows their last result.
    assert!(both.body.contains("have not run yet"));
    let admin = sign_in("admin@example.com");
    let checked = admin.post_form("/dashboard/invariants/check", &[("csrf_token", &admin.get("/dashboard/payments?limit=1").csrf_token())]);
    assert_eq!(checked.status, 303);
    let bare = finance.get("/dashboard/payments");
    let last_month = bare.location.expect("the bare page shows the last 30 days");
    assert!(last_month.starts_with("/dashboard/payments?from="), "{last_month}");
    assert!(finance.get(&last_month).body.contains("Money checks of your merchants passed"));
    // One click refunds the second of a double charge, once however often it is clicked.
    let page = finance.get(&last_month);
    let form = page.body.split("class=\"inline\">").find(|f| f.contains("refund-duplicate")).unwrap().to_string();
    let field = |name: &str| {
        let marker = format!("name=\"{name}\" value=\"");
        let start = form.find(&marker).unwrap() + marker.len();
        form[start..start + form[start..].find('"').unwrap()].to_string()
    };
    let action = page.body.split("<form method=\"post\" action=\"").find(|f| f.contains("refund-duplicate")).unwrap().split('"').next().unwrap().to_string();
    let fields = [("csrf_token", field("csrf_token")), ("idempotency_key", field("idempotency_key")), ("amount", field("amount")), ("reason", "duplicate".into()), ("confirm", "yes".into())];
    for _ in 0..2 {
        let clicked = finance.post_form(&action, &refs(&fields));
        assert_eq!(clicked.status, 303, "a second click finds the first click's refund");
    }
    let refunds: i64 = refunds::table.count().get_result(&mut conn).unwrap();
    assert_eq!(refunds, 1);
    let reason: Option<String> = refunds::table.select(refunds::reason).first(&mut conn).unwrap();
    assert_eq!(reason.as_deref(), Some("duplicate"));
}

#[test]
fn an_installation_is_bootstrapped_from_the_command_line_functions() {
    use agora::merchants::admin;
    let app = TestApp::spawn(Arc::new(agora::payments::gateway::ScriptedGateway::succeeding()));
    let mut conn = app.conn();
    assert!(admin::create_user(&mut conn, "owner@shop.test", "Owner", "short", false).is_err(), "passwords are long");
    admin::create_user(&mut conn, "owner@shop.test", "Owner", "a long enough secret", false).unwrap();
    assert!(admin::create_user(&mut conn, "OWNER@shop.test", "Again", "a long enough secret", false).is_err(), "one account per email");
    let created = admin::link(&mut conn, "owner@shop.test", "Brand New Shop").unwrap();
    assert_eq!(admin::link(&mut conn, "owner@shop.test", &created.to_string()).unwrap(), created, "by id, linking again changes nothing");
    let owner = Client::new(&app.url);
    owner.sign_in("owner@shop.test", "a long enough secret");
    assert!(owner.get("/dashboard/customers").body.contains("Brand New Shop"));
}

/// A desk whose gateway is scripted: refunds that lose their answers, charges that never answer.
fn scripted_desk() -> (Desk, Arc<agora::payments::gateway::ScriptedGateway>) {
    let gateway = Arc::new(agora::payments::gateway::ScriptedGateway::succeeding());
    (desk_with(gateway.clone()), gateway)
}

#[test]
fn a_refund_whose_answer_was_lost_is_looked_up_before_anything_is_sent_again() {
    use agora::payments::gateway::Outcome;
    let (d, gateway) = scripted_desk();
    let payment = paid(&d, &d.alice_api, &d.north, 2_000, None);
    // The gateway refunds, then the answer is lost on the way back, and nobody can look it up.
    gateway.script_refunds(vec![Outcome::ChargeThenTimeout]);
    gateway.set_lookups_down(true);
    let refund = d.alice_api.post(&format!("/payments/{payment}/refunds"), &serde_json::json!({}), Some("lost-answer"));
    assert_eq!(refund.status, 201);
    d.app.drain_jobs();
    let waiting = d.alice_api.get(&format!("/payments/{payment}/refunds"));
    assert_eq!(waiting.json["data"][0]["status"], "pending", "unknown is not failed: {}", waiting.text);
    assert_eq!(d.alice_api.get(&format!("/payments/{payment}")).json["amount_refunded"], 2_000, "still reserved");
    // The job's next attempt (run here directly rather than waiting out its backoff).
    gateway.set_lookups_down(false);
    let mut conn = d.app.conn();
    let refund_id: i64 = refunds::table.select(refunds::id).first(&mut conn).unwrap();
    let settled = d.app.services.processor.process_refund(&mut conn, refund_id).unwrap().unwrap();
    assert_eq!(settled.status, "succeeded");
    assert_eq!(gateway.refund_calls(), 1, "looked up, never sent twice");
    assert_eq!(gateway.ledger().refunds().len(), 1);
    let history = d.alice.get(&format!("/dashboard/payments/{payment}"));
    assert!(history.body.contains("has no answer yet") && history.body.contains("succeeded, gateway refund re_"), "both steps are in the history");
}

#[test]
fn a_payment_nobody_could_confirm_is_settled_by_hand_with_a_note_in_the_audit_log() {
    let (d, _) = scripted_desk();
    let mut conn = d.app.conn();
    let body = serde_json::json!({ "customer": d.north, "amount": 1_200, "currency": "usd" });
    let stuck = d.alice_api.post("/payments", &body, Some("stuck"));
    let id = stuck.json["id"].as_str().unwrap().to_string();
    // As the processor leaves a payment whose last attempt and lookups all went unanswered.
    diesel::sql_query(format!(
        "UPDATE payments SET status = 'requires_confirmation', next_check_at = now() + interval '1 hour', retryable = false WHERE reference = '{id}'"
    ))
    .execute(&mut conn)
    .unwrap();
    let page = d.alice.get(&format!("/dashboard/payments/{id}"));
    assert!(page.body.contains("This payment needs a decision"));
    let token = page.csrf_token();
    let no_note = d.alice.post_form(&format!("/dashboard/payments/{id}/settle"), &[("csrf_token", &token), ("action", "succeeded"), ("gateway_id", "ch_seen_at_gateway")]);
    assert_eq!(no_note.status, 400, "a note is required");
    let settled = d.alice.post_form(
        &format!("/dashboard/payments/{id}/settle"),
        &[("csrf_token", &token), ("action", "succeeded"), ("gateway_id", "ch_seen_at_gateway"), ("note", "found in the gateway's dashboard")],
    );
    assert_eq!(settled.status, 303);
    let api = d.alice_api.get(&format!("/payments/{id}"));
    assert_eq!((api.json["status"].as_str(), api.json["transaction_id"].as_str()), (Some("completed"), Some("ch_seen_at_gateway")));
    assert_eq!(d.alice_api.get(&format!("/customers/{}/balance", d.north)).json["available"][0]["amount"], 1_200, "credited as any completion");
    let audit: Vec<(String, String)> =
        agora::schema::audit_log::table.select((agora::schema::audit_log::action, agora::schema::audit_log::note)).load(&mut conn).unwrap();
    assert!(audit.contains(&("payment_succeeded".to_string(), "found in the gateway's dashboard".to_string())), "{audit:?}");
    let _ = &d.bob_api;
}

/// Issue 17, item 11: the totals say they are the gross of completed payments with the net of
/// refunds beside it, the chart has dated and priced axes, and the amount filters take amounts as
/// the table shows them.
#[test]
fn totals_say_what_they_add_up_the_chart_has_axes_and_amounts_filter_in_major_units() {
    use agora::payments::gateway::{DeclineCode, GatewayError, Outcome, ScriptedGateway};
    let gateway = Arc::new(ScriptedGateway::script(
        vec![Outcome::Succeed, Outcome::Succeed, Outcome::Fail(GatewayError::declined(DeclineCode::CardDeclined))],
        Outcome::Succeed,
    ));
    let d = desk_with(gateway);
    let big = paid(&d, &d.alice_api, &d.north, 2_000, None);
    paid(&d, &d.alice_api, &d.north, 1_000, None);
    paid(&d, &d.alice_api, &d.north, 7_700, Some("declined"));
    assert_eq!(d.alice_api.post(&format!("/payments/{big}/refunds"), &serde_json::json!({ "amount": 500 }), Some("r")).status, 201);
    d.app.drain_jobs();

    let page = d.alice.get("/dashboard/payments?status=&from=2000-01-01").body;
    assert!(page.contains("Gross of 2 completed payments (USD)<b class=\"gross\">30.00 USD</b>"), "the declined 77.00 is not in it: {page}");
    assert!(page.contains("Net of refunds (USD)<b class=\"net\">25.00 USD</b>"), "{page}");
    let chart = &page[page.find("<figure class=\"chart\">").expect("a chart")..];
    let chart = &chart[..chart.find("</figure>").unwrap()];
    assert_eq!(chart.matches("<text class=\"axis\"").count(), 6, "three amounts up the side, three dates along the bottom: {chart}");
    assert!(chart.contains(">30.00</text>") && chart.contains(">15.00</text>") && chart.contains(">0.00</text>"), "the highest day (both payments), half and zero: {chart}");
    assert!(chart.contains("Gross of completed payments per day"), "{chart}");

    // Amounts as the table shows them.
    let filtered = d.alice.get("/dashboard/payments?amount_min=15.00&from=2000-01-01").body;
    assert!(filtered.contains(&format!("/dashboard/payments/{big}")), "{filtered}");
    assert!(filtered.contains("20.00 USD") && !filtered.contains(">10.00 USD<"), "{filtered}");
    assert!(filtered.contains("value=\"15.00\""), "the form keeps what was typed");
    assert!(filtered.contains("payments.csv?") && filtered.contains("amount%5Bgte%5D=1500"), "the export gets it in minor units: {filtered}");
    let refused = d.alice.get("/dashboard/payments?amount_min=twelve");
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("an amount such as 12.50"));
}

/// Issue 17, item 9: suspected double charges are grouped (one row per payer, merchant, amount
/// and short window, one refund button per extra payment), separate purchases minutes apart are
/// not flagged, a group can be called "not a duplicate" (audited, until another payment joins
/// it), and the oldest unresolved groups stay reachable however many there are.
#[test]
fn double_charges_are_grouped_dismissable_and_the_oldest_stay_reachable() {
    let d = desk();
    let mut conn = d.app.conn();
    let rows = |body: &str| body.matches("class=\"duplicate-group\"").count();
    // Three charges of 42.00 seconds apart: one group of three.
    let triple: Vec<String> = (0..3).map(|_| paid(&d, &d.alice_api, &d.north, 4_200, None)).collect();
    // The same amount again, but ten minutes earlier: a separate purchase.
    let earlier = paid(&d, &d.alice_api, &d.north, 4_200, Some("an earlier purchase"));
    diesel::sql_query(format!("UPDATE payments SET created_at = created_at - interval '10 minutes' WHERE reference = '{earlier}'")).execute(&mut conn).unwrap();
    let page = d.alice.get("/dashboard/payments?status=completed").body;
    assert_eq!(rows(&page), 1, "{page}");
    assert_eq!(page.matches("class=\"refund-duplicate\"").count(), 2, "one refund button per extra payment");
    assert!(triple.iter().all(|p| page.contains(p.as_str())) && !page.contains(&format!("<code class=\"id\">{earlier}")), "{page}");

    // Not a duplicate: the group goes, the audit log says who decided; a fourth payment joining it
    // brings it back.
    let token = d.alice.get("/dashboard/duplicates").csrf_token();
    let dismissed = d.alice.post_form(&format!("/dashboard/duplicates/{}/dismiss", triple[0]), &[("csrf_token", &token), ("seen", "3"), ("back", "/dashboard/duplicates")]);
    assert_eq!(dismissed.status, 303);
    assert_eq!(rows(&d.alice.get("/dashboard/duplicates").body), 0);
    let audited: Vec<String> = agora::schema::audit_log::table.select(agora::schema::audit_log::action).load(&mut conn).unwrap();
    assert_eq!(audited, ["dismiss_duplicate"]);
    let bob = Client::new(&d.app.url);
    bob.sign_in("bob@south.test", PASSWORD);
    let theirs = bob.post_form(&format!("/dashboard/duplicates/{}/dismiss", triple[0]), &[("csrf_token", &bob.get("/dashboard/duplicates").csrf_token()), ("seen", "9")]);
    assert_eq!(theirs.status, 404, "another merchant's payment");
    paid(&d, &d.alice_api, &d.north, 4_200, None);
    let back = d.alice.get("/dashboard/duplicates").body;
    assert_eq!(rows(&back), 1);
    assert!(back.contains("4 payments"), "{back}");

    // Twelve more groups: the payments page lists the ten oldest and links to the rest; the
    // oldest, forty days back, stays on the full list.
    let mut firsts = Vec::new();
    for amount in 0..12 {
        firsts.push(paid(&d, &d.alice_api, &d.north, 1_000 + amount, None));
        paid(&d, &d.alice_api, &d.north, 1_000 + amount, None);
    }
    diesel::sql_query(format!("UPDATE payments SET created_at = created_at - interval '40 days' WHERE amount = 10.00")).execute(&mut conn).unwrap();
    let page = d.alice.get("/dashboard/payments?status=completed").body;
    assert_eq!(rows(&page), 10, "ten on the payments page");
    assert!(page.contains("id=\"all-duplicates\""), "and a way to the rest");
    let all = d.alice.get("/dashboard/duplicates").body;
    assert_eq!(rows(&all), 13);
    let oldest = all.find(&firsts[0]).expect("the forty-day-old group is listed");
    assert!(oldest < all.find(&firsts[1]).unwrap(), "oldest first");
}

/// Issue 17, item 10: a merchant reads "refunded" and "partially refunded" wherever a payment's
/// state is shown (list, detail, CSV, API), a pending refund updates in place, and a retry is
/// said in the shopper's plain words.
#[test]
fn refunded_payments_say_so_everywhere_and_a_pending_refund_updates_in_place() {
    use agora::payments::gateway::{GatewayError, Outcome, ScriptedGateway};
    let gateway = Arc::new(ScriptedGateway::script(vec![Outcome::Succeed, Outcome::Succeed, Outcome::Fail(GatewayError::Unavailable("down".into()))], Outcome::Succeed));
    let d = desk_with(gateway);
    let partly = paid(&d, &d.alice_api, &d.north, 2_000, Some("partly"));
    let fully = paid(&d, &d.alice_api, &d.north, 1_000, Some("fully"));
    let retried = paid(&d, &d.alice_api, &d.north, 500, Some("retried"));
    let part = d.alice_api.post(&format!("/payments/{partly}/refunds"), &serde_json::json!({ "amount": 500 }), Some("part"));
    assert_eq!(part.status, 201, "{}", part.text);
    // Before its job runs, the refund is pending: its status asks for updates.
    let detail = d.alice.get(&format!("/dashboard/payments/{partly}")).body;
    let refund = part.json["id"].as_str().unwrap();
    let status_url = format!("/dashboard/payments/{partly}/refunds/{refund}/status");
    assert!(detail.contains(&format!("data-status-url=\"{status_url}\"")), "{detail}");
    assert_eq!(d.alice.get(&status_url).body, r#"{"final":false,"word":"pending"}"#);
    assert_eq!(d.bob_api.get(&format!("/payments/{partly}")).status, 404);
    let bob = Client::new(&d.app.url);
    bob.sign_in("bob@south.test", PASSWORD);
    assert_eq!(bob.get(&status_url).status, 404, "another merchant's refund");
    assert_eq!(d.alice_api.post(&format!("/payments/{fully}/refunds"), &serde_json::json!({}), Some("all")).status, 201);
    d.app.drain_jobs();
    assert_eq!(d.alice.get(&status_url).body, r#"{"final":true,"word":"succeeded"}"#);

    let list = d.alice.get("/dashboard/payments?status=completed").body;
    assert!(list.contains(">partially refunded</span>") && list.contains(">refunded</span>"), "{list}");
    assert!(d.alice.get(&format!("/dashboard/payments/{fully}")).body.contains("id=\"payment-status\">refunded</span>"));
    let csv = d.alice.get("/dashboard/payments.csv?status=completed").body;
    assert!(csv.lines().any(|l| l.contains("partly") && l.contains(",partially_refunded,")), "{csv}");
    assert!(csv.lines().any(|l| l.contains("fully") && l.contains(",refunded,")), "{csv}");
    let api = d.alice_api.get(&format!("/payments/{partly}")).json;
    assert_eq!((api["status"].as_str(), api["refunded"].as_bool(), api["amount_refunded"].as_i64()), (Some("partially_refunded"), Some(false), Some(500)));
    let api = d.alice_api.get(&format!("/payments/{fully}")).json;
    assert_eq!((api["status"].as_str(), api["refunded"].as_bool()), (Some("refunded"), Some(true)));

    // The third payment's provider was down: it will be tried again, and says so plainly.
    let page = d.alice.get(&format!("/dashboard/payments/{retried}")).body;
    assert!(page.contains("id=\"payment-status\">retrying</span>") && page.contains("No answer in time: we will try again"), "{page}");
    assert!(!page.contains("<td>failed</td>"), "{page}");
}

/// Issue 17, item 7: a payment a worker could still finish is not settled by hand, and the audit
/// log holds an entry exactly for each hand settlement that changed something.
#[test]
fn only_a_stuck_payment_is_settled_by_hand_and_only_a_real_settlement_is_audited() {
    let (d, _) = scripted_desk();
    let mut conn = d.app.conn();
    let audited = |conn: &mut diesel::PgConnection| -> Vec<(String, String)> {
        agora::schema::audit_log::table.select((agora::schema::audit_log::action, agora::schema::audit_log::subject)).load(conn).unwrap()
    };
    let body = serde_json::json!({ "customer": d.north, "amount": 900, "currency": "usd" });
    // Pending, with its charge job waiting for a worker: not stuck.
    let waiting = d.alice_api.post("/payments", &body, Some("waiting")).json["id"].as_str().unwrap().to_string();
    let token = d.alice.get(&format!("/dashboard/payments/{waiting}")).csrf_token();
    let settle = |id: &str, action: &str| {
        d.alice.post_form(
            &format!("/dashboard/payments/{id}/settle"),
            &[("csrf_token", &token), ("action", action), ("gateway_id", "ch_claimed"), ("note", "told by the gateway")],
        )
    };
    let refused = settle(&waiting, "failed");
    assert_eq!(refused.status, 303);
    let page = d.alice.get(&format!("/dashboard/payments/{waiting}")).body;
    assert!(page.contains("still being worked on") && page.contains("nothing changed"), "{page}");
    assert_eq!(d.alice_api.get(&format!("/payments/{waiting}")).json["status"], "pending", "the worker may still charge it");
    assert_eq!(settle(&waiting, "replay").status, 303);
    assert_eq!(audited(&mut conn), vec![], "nothing happened, so nothing is in the audit log");

    // Unconfirmed: stuck. Settled once (audited once); settling it again changes nothing.
    let unknown = d.alice_api.post("/payments", &body, Some("unknown")).json["id"].as_str().unwrap().to_string();
    diesel::sql_query(format!("UPDATE payments SET status = 'requires_confirmation', next_check_at = now() + interval '1 hour', retryable = false WHERE reference = '{unknown}'"))
        .execute(&mut conn)
        .unwrap();
    assert_eq!(settle(&unknown, "succeeded").status, 303);
    assert_eq!(d.alice_api.get(&format!("/payments/{unknown}")).json["status"], "completed");
    assert_eq!(settle(&unknown, "failed").status, 303);
    assert_eq!(d.alice_api.get(&format!("/payments/{unknown}")).json["status"], "completed", "a completed payment stays completed");
    assert_eq!(audited(&mut conn), vec![("payment_succeeded".to_string(), format!("payment {unknown}"))]);
}

#[test]
fn a_scripts_csv_is_refused_in_json_and_tab_or_return_led_cells_are_defused() {
    let d = desk();
    paid(&d, &d.alice_api, &d.north, 1_000, Some("\t=HYPERLINK(\"http://evil\")"));
    paid(&d, &d.alice_api, &d.north, 1_100, Some("\r=1+2"));
    let csv = d.alice.get("/dashboard/payments.csv");
    assert!(csv.body.contains("\"'\t=HYPERLINK(\"\"http://evil\"\")\""), "a tab-led formula is defused: {}", csv.body);
    assert!(csv.body.contains("\"'\r=1+2\""), "a return-led formula is defused");

    // A script with a token is answered in the API's error object, not with a page.
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let token = format!("Bearer {}", d.alice_api.token().unwrap());
    for (query, status, code) in [(format!("customer={}", d.south), 404, "resource_missing"), ("status=nonsense".to_string(), 400, "parameter_invalid")] {
        let refused = agent.get(&format!("{}/dashboard/payments.csv?{query}", d.app.url)).set("Authorization", &token).call();
        let Err(ureq::Error::Status(got, answer)) = refused else { panic!("{query} was not refused") };
        assert_eq!(got, status, "{query}");
        assert!(answer.content_type().starts_with("application/json"), "{query}: {}", answer.content_type());
        let body: serde_json::Value = answer.into_json().unwrap();
        assert_eq!(body["error"]["code"], code, "{query}: {body}");
    }
    // A person still gets the page.
    assert!(d.alice.get(&format!("/dashboard/payments.csv?customer={}", d.south)).body.contains("<html"));
}
