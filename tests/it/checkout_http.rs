//! The checkout over HTTP: the real server, the real gateway-sim, a signed-in session.

use std::sync::{Arc, Barrier};

use agora::payments::gateway::Simulation;

use crate::support::fixtures::{self, PASSWORD};
use crate::support::{Client, GatewaySim, TestApp};

struct Shop {
    app: TestApp,
    sim: GatewaySim,
    user_id: i64,
    products: Vec<i64>,
}

fn shop() -> Shop {
    let sim = GatewaySim::start(Simulation::always_succeeding());
    let app = TestApp::spawn(sim.client());
    let mut conn = app.conn();
    let user_id = fixtures::user(&mut conn, "shopper@example.com");
    let products = fixtures::catalogue(&mut conn, 12);
    Shop { app, sim, user_id, products }
}

fn signed_in(shop: &Shop) -> Client {
    let client = Client::new(&shop.app.url);
    client.sign_in("shopper@example.com", PASSWORD);
    client
}

#[test]
fn twenty_concurrent_pay_posts_from_one_session_charge_once() {
    let shop = shop();
    let order_id = fixtures::order(&mut shop.app.conn(), shop.user_id, &shop.products[..3]);
    let client = Arc::new(signed_in(&shop));
    let token = client.csrf_token();
    let barrier = Arc::new(Barrier::new(20));
    let posts: Vec<_> = (0..20)
        .map(|_| {
            let (client, token, barrier) = (client.clone(), token.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                client.post_form(&format!("/orders/{order_id}/pay"), &[("csrf_token", &token)])
            })
        })
        .collect();
    let answers: Vec<_> = posts.into_iter().map(|p| p.join().unwrap()).collect();
    assert_eq!(shop.app.drain_jobs(), 1, "one charge job for twenty clicks");

    let first = answers[0].location.clone().expect("a redirect to the payment page");
    assert!(first.starts_with("/payments/"));
    for answer in &answers {
        assert_eq!(answer.status, 303, "{answer:?}");
        assert_eq!(answer.location.as_deref(), Some(first.as_str()), "every click lands on the same payment");
    }
    let key = fixtures::gateway_key(&mut shop.app.conn(), order_id);
    assert_eq!(shop.sim.charges_for(&key).len(), 1, "the gateway's ledger holds one charge");
    assert_eq!(fixtures::payment_count(&mut shop.app.conn()), 1);

    let page = client.get(&first);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"payment-status\">completed<"), "{}", page.body);
}

#[test]
fn the_amount_charged_comes_from_the_order_not_the_form() {
    let shop = shop();
    let order_id = fixtures::order(&mut shop.app.conn(), shop.user_id, &shop.products[..2]);
    let client = signed_in(&shop);
    let token = client.csrf_token();
    let resp = client.post_form(&format!("/orders/{order_id}/pay"), &[("csrf_token", &token), ("amount", "0.01")]);
    assert_eq!(resp.status, 303);
    shop.app.drain_jobs();
    let charges = shop.sim.charges_for(&fixtures::gateway_key(&mut shop.app.conn(), order_id));
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0].amount, fixtures::order_total(&mut shop.app.conn(), order_id));
    let page = client.get(resp.location.as_deref().unwrap());
    assert!(page.body.contains(&format!("{} USD", charges[0].amount.with_scale(2))));
}

#[test]
fn a_pay_without_its_csrf_token_is_refused_and_charges_nothing() {
    let shop = shop();
    let order_id = fixtures::order(&mut shop.app.conn(), shop.user_id, &shop.products[..1]);
    let client = signed_in(&shop);
    let missing = client.post_form(&format!("/orders/{order_id}/pay"), &[]);
    let forged = client.post_form(&format!("/orders/{order_id}/pay"), &[("csrf_token", "forged")]);
    for resp in [&missing, &forged] {
        assert_eq!(resp.status, 403);
        assert!(resp.body.contains("This form has expired"), "{}", resp.body);
    }
    assert_eq!(fixtures::payment_count(&mut shop.app.conn()), 0);
    assert!(shop.sim.charges().is_empty());
}

#[test]
fn unknown_malformed_and_foreign_ids_are_not_found() {
    let shop = shop();
    let mut conn = shop.app.conn();
    let other_user = fixtures::user(&mut conn, "other@example.com");
    let foreign_order = fixtures::order(&mut conn, other_user, &shop.products[..1]);
    let client = signed_in(&shop);
    let token = client.csrf_token();

    for path in ["/orders/999999/checkout", "/orders/abc/checkout", "/orders/-1/checkout", "/orders/99999999999999999999/checkout"] {
        let resp = client.get(path);
        assert_eq!(resp.status, 404, "{path}");
        assert!(resp.body.contains("find that page"), "{path}");
    }
    assert_eq!(client.get(&format!("/orders/{foreign_order}/checkout")).status, 404, "someone else's order");
    assert_eq!(client.post_form(&format!("/orders/{foreign_order}/pay"), &[("csrf_token", &token)]).status, 404);
    assert_eq!(client.post_form("/orders/xyz/pay", &[("csrf_token", &token)]).status, 404);
    assert_eq!(client.get("/payments/not-a-uuid").status, 404);
    assert_eq!(client.get(&format!("/payments/{}", uuid::Uuid::new_v4())).status, 404);
    assert_eq!(client.get("/no/such/page").status, 404);
    assert_eq!(fixtures::payment_count(&mut conn), 0, "nothing was created for a foreign order");
    assert!(shop.sim.charges().is_empty());
}

#[test]
fn someone_elses_payment_page_is_not_found() {
    let shop = shop();
    let order_id = fixtures::order(&mut shop.app.conn(), shop.user_id, &shop.products[..1]);
    let owner = signed_in(&shop);
    let token = owner.csrf_token();
    let location = owner.post_form(&format!("/orders/{order_id}/pay"), &[("csrf_token", &token)]).location.unwrap();
    assert_eq!(owner.get(&location).status, 200);

    fixtures::user(&mut shop.app.conn(), "nosy@example.com");
    let nosy = Client::new(&shop.app.url);
    nosy.sign_in("nosy@example.com", PASSWORD);
    assert_eq!(nosy.get(&location).status, 404);
}

#[test]
fn the_checkout_page_costs_the_same_few_queries_whatever_its_size() {
    let shop = shop();
    let small = fixtures::order(&mut shop.app.conn(), shop.user_id, &shop.products[..1]);
    let large = fixtures::order(&mut shop.app.conn(), shop.user_id, &shop.products);
    let client = signed_in(&shop);

    let small_page = client.get(&format!("/orders/{small}/checkout"));
    let large_page = client.get(&format!("/orders/{large}/checkout"));
    assert_eq!(small_page.status, 200);
    assert_eq!(large_page.status, 200);
    assert_eq!(large_page.body.matches("<tr><td>Product ").count(), 12, "all twelve items are listed");
    let (small_q, large_q) = (small_page.queries.unwrap(), large_page.queries.unwrap());
    assert_eq!(small_q, large_q, "the query count does not grow with the items");
    assert!(large_q <= 3, "checkout made {large_q} queries");
    assert!(large_page.body.contains(&format!("{} USD", fixtures::order_total(&mut shop.app.conn(), large).with_scale(2))));
}

#[test]
fn a_paid_order_shows_its_payment_instead_of_a_pay_button() {
    let shop = shop();
    let order_id = fixtures::order(&mut shop.app.conn(), shop.user_id, &shop.products[..1]);
    let client = signed_in(&shop);
    assert!(client.get(&format!("/orders/{order_id}/checkout")).body.contains("id=\"pay\""));
    let token = client.csrf_token();
    let location = client.post_form(&format!("/orders/{order_id}/pay"), &[("csrf_token", &token)]).location.unwrap();
    let page = client.get(&format!("/orders/{order_id}/checkout")).body;
    assert!(!page.contains("id=\"pay\""));
    assert!(page.contains(&format!("href=\"{location}\"")));
}

#[test]
fn a_declined_card_says_why_and_what_to_do() {
    let sim = GatewaySim::start(Simulation::new(0.0, 0.0, Some(1)));
    let app = TestApp::spawn(sim.client());
    let mut conn = app.conn();
    let user_id = fixtures::user(&mut conn, "declined@example.com");
    let products = fixtures::catalogue(&mut conn, 1);
    let order_id = fixtures::order(&mut conn, user_id, &products);
    let client = Client::new(&app.url);
    client.sign_in("declined@example.com", PASSWORD);
    let token = client.csrf_token();
    let location = client.post_form(&format!("/orders/{order_id}/pay"), &[("csrf_token", &token)]).location.unwrap();
    app.drain_jobs();
    let page = client.get(&location).body;
    assert!(page.contains("Payment failed"));
    assert!(page.contains("No money was taken"));
    // Issue 17, item 14: the checkout asks for no card, so the page does not talk about one; the
    // support it points to is on the page.
    for card_words in ["card details", "Invalid card number", "your bank", "another card"] {
        assert!(!page.contains(card_words), "{card_words}: {page}");
    }
    assert!(page.contains("write to support (below)") && page.contains("id=\"support\"") && page.contains("mailto:support@agora.example"), "{page}");
    assert!(!page.contains("http-equiv=\"refresh\""), "a final page stops refreshing");
    assert_eq!(fixtures::order_status(&mut conn, order_id), "failed");
    // The page offers to try again, and trying again opens a fresh order of the same items.
    assert!(page.contains("id=\"try-again\""), "{page}");
    let again = client.post_form(&format!("/orders/{order_id}/reorder"), &[("csrf_token", &token)]);
    let checkout = again.location.expect("a new order's checkout");
    assert!(checkout.ends_with("/checkout") && checkout != format!("/orders/{order_id}/checkout"), "{checkout}");
    assert!(client.get(&checkout).body.contains("id=\"pay\""));
    // Someone else's order cannot be re-ordered.
    let stranger = crate::support::shopper::shopper(&app, "stranger@example.com");
    assert_eq!(stranger.client.post_form(&format!("/orders/{order_id}/reorder"), &[("csrf_token", &stranger.token)]).status, 404);
}

#[test]
fn a_timed_out_payment_is_retried_in_the_background_and_completes() {
    use agora::clock::FakeClock;
    use agora::payments::gateway::ScriptedGateway;
    let gateway = Arc::new(ScriptedGateway::timing_out_first(1));
    let clock = Arc::new(FakeClock::starting_now());
    let app = TestApp::spawn_with(crate::support::app::TestAppOptions {
        clock: clock.clone(),
        ..crate::support::app::TestAppOptions::new(gateway.clone())
    });
    let mut conn = app.conn();
    let user_id = fixtures::user(&mut conn, "patient@example.com");
    let products = fixtures::catalogue(&mut conn, 1);
    let order_id = fixtures::order(&mut conn, user_id, &products);
    let client = Client::new(&app.url);
    client.sign_in("patient@example.com", PASSWORD);
    let token = client.csrf_token();

    let location = client.post_form(&format!("/orders/{order_id}/pay"), &[("csrf_token", &token)]).location.unwrap();
    let page = client.get(&location).body;
    assert!(page.contains("id=\"payment-status\">pending<"), "the answer comes before the charge");
    assert!(page.contains("http-equiv=\"refresh\""), "and the page keeps itself up to date");
    assert!(page.contains("aria-live=\"polite\"") && page.contains("data-status-url=\"/payments/"), "in place, with a live region, when JavaScript runs");

    app.drain_jobs();
    let page = client.get(&location).body;
    assert!(page.contains("Retrying"), "{page}");
    assert!(page.contains("No answer in time: we will try again"), "the history in plain words");
    assert!(!page.contains("Gateway timeout") && !page.contains("attempt 1 of"), "not the operators' words");
    // While it is being retried nothing says "failed": not the status, not a problem in red, not
    // the orders list.
    assert!(page.contains("id=\"payment-status\">retrying<"), "{page}");
    assert!(!page.contains("class=\"problem\""));
    let orders = client.get("/").body;
    assert!(orders.contains("payment retrying") && !orders.contains("payment failed"), "{orders}");
    assert_eq!(app.drain_jobs(), 0, "the retry waits for its backoff");

    clock.tick(std::time::Duration::from_secs(60));
    assert_eq!(app.drain_jobs(), 1);
    let page = client.get(&location).body;
    assert!(page.contains("id=\"payment-status\">completed<"));
    assert!(!page.contains("http-equiv=\"refresh\""));
    assert_eq!(gateway.ledger().all().len(), 1);
    let status: serde_json::Value = serde_json::from_str(&client.get(&format!("{location}/status")).body).unwrap();
    assert_eq!(status["status"], "completed");
    assert_eq!(status["final"], true);
}

#[test]
fn a_paid_order_has_a_page_with_its_items_dates_status_and_receipt_for_its_owner_only() {
    let shop = shop();
    let order_id = fixtures::order(&mut shop.app.conn(), shop.user_id, &shop.products[..2]);
    let client = signed_in(&shop);
    let unpaid = client.get(&format!("/orders/{order_id}"));
    assert_eq!(unpaid.status, 200);
    assert!(unpaid.body.contains("id=\"pay\"") && !unpaid.body.contains("id=\"receipt\""), "unpaid: Pay, no receipt");
    let token = client.csrf_token();
    client.post_form(&format!("/orders/{order_id}/pay"), &[("csrf_token", &token)]);
    shop.app.drain_jobs();
    let page = client.get(&format!("/orders/{order_id}"));
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<title>Receipt · order #"));
    assert!(page.body.contains("id=\"receipt-number\""));
    let total = format!("{} USD", fixtures::order_total(&mut shop.app.conn(), order_id).with_scale(2));
    assert!(page.body.contains(&format!("<dd id=\"receipt-paid\">{total}</dd>")));
    assert_eq!(page.body.matches("<tr><td>Product ").count(), 2, "the items are listed");
    assert!(page.body.contains("placed ") && page.body.contains(" UTC"), "with dates");
    assert!(page.queries.unwrap() <= 3, "the order page made {:?} queries: the receipt comes with the order", page.queries);
    assert!(client.get("/").body.contains(&format!("href=\"/orders/{order_id}\"")), "the orders list links to it");

    fixtures::user(&mut shop.app.conn(), "other@example.com");
    let other = Client::new(&shop.app.url);
    other.sign_in("other@example.com", PASSWORD);
    assert_eq!(other.get(&format!("/orders/{order_id}")).status, 404, "someone else's order is not found");
}

#[test]
fn an_order_form_from_an_earlier_sign_in_comes_back_with_its_quantities_and_orders_nothing() {
    let shop = shop();
    let client = signed_in(&shop);
    let field = format!("qty_{}", shop.products[0]);
    let refused = client.post_form("/orders", &[("csrf_token", "from-an-earlier-sign-in"), (&field, "4")]);
    assert_eq!(refused.status, 409);
    assert!(refused.body.contains("nothing was ordered yet"));
    assert!(refused.body.contains(&format!("name=\"{field}\" min=\"0\" max=\"1000\" value=\"4\"")), "the quantity is kept");
    let placed = client.post_form("/orders", &[("csrf_token", &refused.csrf_token()), (&field, "4")]);
    assert_eq!(placed.status, 303, "the re-rendered form's token works");
    use diesel::prelude::*;
    let orders: i64 = agora::schema::orders::table.count().get_result(&mut shop.app.conn()).unwrap();
    assert_eq!(orders, 1, "one order, from the second try");
}

#[test]
fn forty_pays_of_twenty_orders_at_once_make_twenty_payments_each_found_by_both_its_clicks() {
    let shop = shop();
    let orders: Vec<i64> = (0..20).map(|_| fixtures::order(&mut shop.app.conn(), shop.user_id, &shop.products[..2])).collect();
    let client = Arc::new(signed_in(&shop));
    let token = client.csrf_token();
    let barrier = Arc::new(Barrier::new(40));
    let posts: Vec<_> = (0..40)
        .map(|i| {
            let (client, token, barrier, order_id) = (client.clone(), token.clone(), barrier.clone(), orders[i % 20]);
            std::thread::spawn(move || {
                barrier.wait();
                (order_id, client.post_form(&format!("/orders/{order_id}/pay"), &[("csrf_token", &token)]))
            })
        })
        .collect();
    let answers: Vec<(i64, _)> = posts.into_iter().map(|p| p.join().unwrap()).collect();
    for order_id in &orders {
        let locations: Vec<_> = answers.iter().filter(|(o, _)| o == order_id).map(|(_, a)| (a.status, a.location.clone())).collect();
        assert_eq!(locations.len(), 2);
        assert_eq!(locations[0].0, 303);
        assert_eq!(locations[0], locations[1], "both clicks on order {order_id} land on one payment");
    }
    assert_eq!(fixtures::payment_count(&mut shop.app.conn()), 20);
    assert_eq!(shop.app.drain_jobs(), 20, "one charge job an order");
    for order_id in &orders {
        assert_eq!(shop.sim.charges_for(&fixtures::gateway_key(&mut shop.app.conn(), *order_id)).len(), 1);
    }
}

#[test]
fn a_batch_of_pays_in_one_statement_makes_what_pay_alone_makes_and_nothing_for_the_unpayable() {
    use agora::orders::batches::{start_payments, PayStarted};
    use agora::payments::PayOrder;
    use diesel::prelude::*;

    let shop = shop();
    let mut conn = shop.app.conn();
    let stranger = fixtures::user(&mut conn, "stranger@example.com");
    let fresh: Vec<i64> = (0..2).map(|_| fixtures::order(&mut conn, shop.user_id, &shop.products[..1])).collect();
    let already = fixtures::order(&mut conn, shop.user_id, &shop.products[..1]);
    let limits = agora::orders::pipeline::QueueLimits { max_ready: 100, charge_attempts: 5 };
    let earlier = agora::orders::pipeline::start_payment(&mut conn, PayOrder { user_id: shop.user_id, order_id: already }, limits, chrono::Utc::now()).unwrap();
    let theirs = fixtures::order(&mut conn, stranger, &shop.products[..1]);
    let batch: Vec<PayOrder> = [fresh[0], fresh[1], already, theirs].iter().map(|&order_id| PayOrder { user_id: shop.user_id, order_id }).collect();

    let started = conn.transaction(|conn| start_payments(conn, &batch, 5, chrono::Utc::now())).unwrap();

    let payment = |s: &PayStarted| match s {
        PayStarted::Payment(p) => p.clone(),
        PayStarted::NotPayable => panic!("expected a payment"),
    };
    for (s, order_id) in started[..2].iter().zip(&fresh) {
        let p = payment(s);
        assert_eq!((p.order_id, p.amount.clone()), (*order_id, fixtures::order_total(&mut conn, *order_id)));
    }
    assert_eq!(payment(&started[2]).reference, earlier.reference, "Pay pressed again finds the payment it made");
    assert!(matches!(started[3], PayStarted::NotPayable), "someone else's order is nobody's to pay here");
    assert_eq!(fixtures::payment_count(&mut conn), 3);
    // Each new payment has its first event and its charge job, as the single path writes them.
    for order_id in &fresh {
        let events: i64 = agora::schema::payment_events::table
            .inner_join(agora::schema::payments::table)
            .filter(agora::schema::payments::order_id.eq(order_id))
            .count()
            .get_result(&mut conn)
            .unwrap();
        assert_eq!(events, 1);
    }
    assert_eq!(shop.app.drain_jobs(), 3, "three charge jobs: the earlier payment's and the two new ones");
}
