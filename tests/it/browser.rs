//! A person in a real browser: headless Chromium driven through chromedriver.

use agora::payments::gateway::Simulation;

use crate::support::fixtures::{self, PASSWORD};
use crate::support::webdriver::{Browser, Driver};
use crate::support::{GatewaySim, TestApp};

#[test]
fn a_shopper_signs_in_double_clicks_pay_and_is_charged_once() {
    let sim = GatewaySim::start(Simulation::always_succeeding());
    let app = TestApp::spawn(sim.client());
    let mut conn = app.conn();
    let user_id = fixtures::user(&mut conn, "browser@example.com");
    let products = fixtures::catalogue(&mut conn, 3);
    let order_id = fixtures::order(&mut conn, user_id, &products);

    let driver = Driver::start();
    let browser = Browser::open(&driver);
    browser.goto(&format!("{}/orders/{order_id}/checkout", app.url));
    // Not signed in: the checkout sends us to sign in first, and back afterwards.
    browser.type_into("input[name=email]", "browser@example.com");
    browser.type_into("input[name=password]", PASSWORD);
    browser.click("button[type=submit]");
    assert!(browser.text("#total").ends_with("USD"));
    assert_eq!(browser.current_url(), format!("{}/orders/{order_id}/checkout", app.url));

    browser.double_click("#pay");
    // Pay answers at once; the charge happens in the background and the page refreshes itself.
    assert_eq!(browser.text("#payment-status"), "pending");
    assert!(browser.current_url().starts_with(&format!("{}/payments/", app.url)));
    assert_eq!(app.drain_jobs(), 1, "one job for the double click");
    browser.find("#payment-final"); // appears when the page has refreshed itself to a final state
    assert_eq!(browser.text("#payment-status"), "completed");
    assert!(browser.text("#transaction").starts_with("ch_"));

    let charges = sim.charges_for(&fixtures::gateway_key(&mut app.conn(), order_id));
    assert_eq!(charges.len(), 1, "the ledger holds one charge for the order");
    assert_eq!(sim.charges().len(), 1, "and nothing else was charged");
}

#[test]
fn a_member_replies_to_a_nested_comment_and_sees_the_reply_in_place() {
    use agora::payments::gateway::ScriptedGateway;
    let app = TestApp::spawn(std::sync::Arc::new(ScriptedGateway::succeeding()));
    let mut conn = app.conn();
    let user = fixtures::user(&mut conn, "reader@example.com");
    let post = fixtures::post(&mut conn, user, "A lively thread");
    let root = fixtures::comment(&mut conn, post, None, user, "Top of the thread");
    let nested = fixtures::comment(&mut conn, post, Some(root), user, "A nested thought");

    let driver = Driver::start();
    let browser = Browser::open(&driver);
    browser.goto(&format!("{}/login?next=/posts/{post}", app.url));
    browser.type_into("input[name=email]", "reader@example.com");
    browser.type_into("input[name=password]", PASSWORD);
    browser.click("button[type=submit]");
    browser.click(&format!("#c{nested} > .controls .reply-link"));
    assert!(browser.text("blockquote").contains("A nested thought"), "the form shows what is answered");
    browser.type_into("textarea[name=body]", "A reply, deep in the thread");
    browser.click("form button[type=submit].primary");

    browser.find(&format!("#c{nested} .replies .comment")); // waits for the redirected page
    assert!(browser.text(&format!("#c{nested} .replies .comment .text")).contains("A reply, deep in the thread"));
    assert!(browser.current_url().contains(&format!("/posts/{post}#c")));
}

#[test]
fn a_merchant_filters_the_dashboard_and_refunds_part_of_a_payment_with_a_double_click() {
    use agora::payments::gateway::SimulatedGateway;
    let app = TestApp::spawn(std::sync::Arc::new(SimulatedGateway::new(Simulation::new(0.0, 0.0, Some(5)), Default::default())));
    let mut conn = app.conn();
    let staff = fixtures::user(&mut conn, "staff@north.test");
    let north = fixtures::merchant(&mut conn, "North", &[staff]);
    let api = crate::support::api::Api::signed_in(&app.url, "staff@north.test");
    let north_id = fixtures::customer_public_id(&mut conn, north);
    api.pay(&north_id, 2_000, "pm_card_visa");
    api.pay(&north_id, 700, "pm_card_chargeDeclined");
    app.drain_jobs();

    let driver = Driver::start();
    let browser = Browser::open(&driver);
    browser.goto(&format!("{}/login?next=/dashboard/payments", app.url));
    browser.type_into("input[name=email]", "staff@north.test");
    browser.type_into("input[name=password]", PASSWORD);
    browser.click("button[type=submit]");
    assert_eq!(browser.count("#payments tbody tr"), 2);
    browser.click("select[name=status] option[value=completed]");
    browser.click("#filters button[type=submit]");
    // The server marks the chosen status on the page it answers with: wait for that page.
    browser.find("select[name=status] option[value=completed][selected]");
    let filtered = browser.current_url();
    assert!(filtered.contains("status=completed"), "the filter is in the URL: {filtered}");
    assert_eq!(browser.count("#payments tbody tr"), 1);
    browser.click("#payments tbody tr a");
    browser.clear("#refund-amount");
    browser.type_into("#refund-amount", "5.00");
    browser.click("#review-refund");
    assert!(browser.text("#confirm-refund").contains("5.00 USD"));
    browser.double_click("#confirm-refund");
    assert_eq!(browser.text("#flash"), "Refund of 5.00 USD requested.");
    assert_eq!(app.drain_jobs(), 1, "one refund job for the double click");
    browser.goto(&browser.current_url());
    assert_eq!(browser.count("#refunds tbody tr"), 1, "one refund in the history");
    assert!(browser.text("#refunds").contains("succeeded"));
    assert_eq!(browser.text("#refunded"), "5.00 USD");
    browser.goto(&format!("{}/dashboard/balances", app.url));
    assert_eq!(browser.text("#balances .balance"), "15.00 USD");
}

#[test]
fn a_person_posts_in_a_chat_page_and_sees_new_messages_appear_with_their_numbers() {
    use agora::payments::gateway::ScriptedGateway;
    // Creates go through Redis, as in production: the page shows them once persisted, or its
    // polling appends them.
    let redis = crate::support::redis::OwnRedis::start();
    let mut options = crate::support::app::TestAppOptions::new(std::sync::Arc::new(ScriptedGateway::succeeding()));
    options.redis_url = Some(redis.url.clone());
    options.chat_intake = true;
    let app = TestApp::spawn_with(options);
    let intake = app.services.chat_intake.clone().unwrap();
    let started = std::time::Instant::now();
    while !matches!(intake.phase(), agora::chat::intake::Phase::Accepting(_)) {
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "no epoch");
        intake.wait_for_change(std::time::Duration::from_secs(1));
    }
    let api = crate::support::api::Api::new(&app.url);
    let token = api.post("/chat_applications", &serde_json::json!({ "name": "Browser chat" }), None).json["token"].as_str().unwrap().to_string();
    api.send("POST", &format!("/chat_applications/{token}/chats"), None, &[]);
    api.post(&format!("/chat_applications/{token}/chats/1/messages"), &serde_json::json!({ "body": "Welcome" }), None);

    let driver = Driver::start();
    let browser = Browser::open(&driver);
    browser.goto(&format!("{}/chats/{token}/1", app.url));
    assert_eq!((browser.text("#m1 .num"), browser.text("#m1 .text")), ("#1".to_string(), "Welcome".to_string()));
    browser.type_into("textarea[name=body]", "Hello from a real browser");
    browser.click("#post button[type=submit]");
    assert_eq!((browser.text("#m2 .num"), browser.text("#m2 .text")), ("#2".to_string(), "Hello from a real browser".to_string()), "the posted message, with its number");
    // A message posted elsewhere appears in the open page by itself, with when it came.
    api.post(&format!("/chat_applications/{token}/chats/1/messages"), &serde_json::json!({ "body": "<b>from the API</b>" }), None);
    assert_eq!(browser.text("#m3 .text"), "<b>from the API</b>", "appended as text, never as markup");
    assert!(browser.text("#m3 time.when").ends_with(" UTC"));
    // The search box finds it.
    browser.type_into("input[name=q]", "REAL BROWSER");
    browser.click("form.search button");
    assert!(browser.text("#results").starts_with("1 message contains"));
    assert_eq!(browser.count("#messages li"), 1);
}

#[test]
fn at_phone_width_no_page_scrolls_sideways() {
    use agora::payments::gateway::ScriptedGateway;
    let app = TestApp::spawn(std::sync::Arc::new(ScriptedGateway::succeeding()));
    let mut conn = app.conn();
    let shopper = crate::support::shopper::shopper(&app, "phone@example.com");
    let user_id = shopper.user_id;
    let products = fixtures::catalogue(&mut conn, 3);
    let order_id = fixtures::order(&mut conn, user_id, &products);
    let paid = fixtures::order(&mut conn, user_id, &products);
    let post = fixtures::post(&mut conn, user_id, "A deep thread to read on a phone");
    fixtures::discussion(&mut conn, post, user_id, 1, 1, 8);
    let payment = shopper.pay(paid).location.expect("Pay answers with the payment page");
    app.drain_jobs();

    let driver = Driver::start();
    let browser = Browser::open(&driver);
    browser.goto(&format!("{}/login", app.url));
    browser.type_into("input[name=email]", "phone@example.com");
    browser.type_into("input[name=password]", PASSWORD);
    browser.click("button[type=submit]");
    browser.find("#orders");
    browser.resize(390, 844);
    for path in ["/".to_string(), format!("/orders/{order_id}/checkout"), payment, format!("/posts/{post}"), "/products".to_string(), "/account".to_string()] {
        browser.goto(&format!("{}{path}", app.url));
        browser.find("main");
        let fits = browser.script("return document.documentElement.scrollWidth <= window.innerWidth;");
        let widths = browser.script("return [document.documentElement.scrollWidth, window.innerWidth];");
        assert_eq!(fits, serde_json::Value::Bool(true), "{path} scrolls sideways: {widths}");
    }
}

#[test]
fn pay_on_an_order_that_expired_meanwhile_explains_and_offers_the_same_items_again() {
    use agora::payments::gateway::ScriptedGateway;
    let app = TestApp::spawn(std::sync::Arc::new(ScriptedGateway::succeeding()));
    let mut conn = app.conn();
    let user_id = fixtures::user(&mut conn, "slow@example.com");
    let products = fixtures::catalogue(&mut conn, 2);
    let order_id = fixtures::order(&mut conn, user_id, &products);

    let driver = Driver::start();
    let browser = Browser::open(&driver);
    browser.goto(&format!("{}/login?next=/orders/{order_id}/checkout", app.url));
    browser.type_into("input[name=email]", "slow@example.com");
    browser.type_into("input[name=password]", PASSWORD);
    browser.click("button[type=submit]");
    assert!(browser.text("#pay-form + p").contains("held for 30 minutes"), "the checkout says how long stock is held");
    // The person steps away; the order expires and gives its stock back.
    agora::orders::repo::close_unpaid(&mut conn, order_id, "expired", chrono::Utc::now()).unwrap();
    browser.click("#pay");
    assert!(browser.text("#notice").contains("can no longer be paid"), "not a bare 404");
    assert!(browser.text("#closed").contains("No money was taken"));
    assert!(browser.text("header").contains("Sign out"), "still signed in");
    browser.click("#reorder");
    browser.find("#pay");
    let url = browser.current_url();
    assert!(url.ends_with("/checkout") && !url.contains(&format!("/orders/{order_id}/")), "a new order: {url}");
    assert_eq!(browser.count("#items tbody tr"), 2, "with the same items");
    assert_eq!(fixtures::payment_count(&mut conn), 0, "nothing was charged");
}

/// Issue 17, item 15: a chat page is like a chat — it opens at the newest message with the box in
/// view, Enter sends and Shift+Enter starts a new line, every message says when it was sent, and
/// a new chat can be started from the pages.
#[test]
fn a_chat_opens_at_its_newest_message_enter_sends_and_a_new_chat_can_be_started() {
    use agora::payments::gateway::ScriptedGateway;
    let app = TestApp::spawn(std::sync::Arc::new(ScriptedGateway::succeeding()));
    let api = crate::support::api::Api::new(&app.url);
    let token = api.post("/chat_applications", &serde_json::json!({ "name": "Busy chat" }), None).json["token"].as_str().unwrap().to_string();
    api.send("POST", &format!("/chat_applications/{token}/chats"), None, &[]);
    for i in 1..=60 {
        api.post(&format!("/chat_applications/{token}/chats/1/messages"), &serde_json::json!({ "body": format!("Message number {i}") }), None);
    }
    let driver = Driver::start();
    let browser = Browser::open(&driver);
    browser.resize(390, 844);
    browser.goto(&format!("{}/chats/{token}/1", app.url));
    browser.find("#m60");
    let in_view = |css: &str| -> bool {
        browser.script(&format!(
            "const r = document.querySelector('{css}').getBoundingClientRect(); const box = document.getElementById('conversation').getBoundingClientRect(); \
             return r.top >= Math.max(0, box.top) - 1 && r.bottom <= Math.min(window.innerHeight, box.bottom) + 1;"
        )) == serde_json::Value::Bool(true)
    };
    assert!(in_view("#m60"), "the newest message is in view");
    assert!(!in_view("#m1"), "the oldest is scrolled away");
    let box_visible = browser.script("const r = document.querySelector('#post textarea').getBoundingClientRect(); return r.top >= 0 && r.bottom <= window.innerHeight;");
    assert_eq!(box_visible, serde_json::Value::Bool(true), "the message box is in view");
    assert_eq!(browser.count("#messages li time.when"), browser.count("#messages li"), "every message says when");

    // Shift+Enter is a new line; Enter sends.
    browser.type_into("#post textarea", "first line\u{E008}\u{E007}\u{E000}second line\u{E007}");
    browser.wait_until("document.getElementById('m61') !== null");
    assert_eq!(browser.text("#m61 .text"), "first line\nsecond line");
    assert!(in_view("#m61"), "and the page is at the newest message again");

    // A new chat from the application's page.
    browser.goto(&format!("{}/chats/{token}", app.url));
    browser.click("#new-chat");
    browser.find("#no-messages");
    assert!(browser.current_url().contains(&format!("/chats/{token}/2")), "{}", browser.current_url());
    assert_eq!(browser.text("main h1"), "Chat #2");
}
