//! Issue 11's numbered problems, each as the path a person takes in headless Chromium, asserting
//! what they see. (Problem 2, Pay on an expired order, and problem 9's first pages are in
//! `browser.rs`.)

use std::sync::Arc;

use agora::payments::gateway::{DeclineCode, GatewayError, ScriptedGateway};

use crate::support::app::TestAppOptions;
use crate::support::fixtures::{self, PASSWORD};
use crate::support::webdriver::{Browser, Driver};
use crate::support::TestApp;

fn app() -> TestApp {
    TestApp::spawn(Arc::new(ScriptedGateway::succeeding()))
}

fn sign_in(browser: &Browser, app: &TestApp, email: &str, next: &str) {
    browser.goto(&format!("{}/login?next={next}", app.url));
    browser.type_into("input[name=email]", email);
    browser.type_into("input[name=password]", PASSWORD);
    browser.click("form[action='/login'] button[type=submit]");
    browser.find("header .who");
}

/// A shopper (`email`, the fixtures' password) with an unpaid order of `items` products.
fn shopper_with_order(app: &TestApp, email: &str, items: usize) -> i64 {
    let mut conn = app.conn();
    let me = fixtures::user(&mut conn, email);
    let products = fixtures::catalogue(&mut conn, items);
    fixtures::order(&mut conn, me, &products)
}

/// Presses Pay on the open checkout, lets a worker run the charge, and reloads the payment page.
fn pay_and_settle(browser: &Browser, app: &TestApp) {
    browser.click("#pay");
    browser.find("#payment-status"); // the payment page, answered before the charge
    app.drain_jobs();
    browser.refresh();
}

/// Whether the element is on screen: its top within the window.
fn on_screen(browser: &Browser, css: &str) -> bool {
    let script = format!("const r = document.querySelector({css:?}).getBoundingClientRect(); return r.top >= 0 && r.top < window.innerHeight;");
    browser.script(&script) == serde_json::Value::Bool(true)
}

/// A page that is not reloaded keeps this mark; a reload loses it.
fn mark_page(browser: &Browser) {
    browser.script("window.agoraMark = 1; return null;");
}

fn page_was_kept(browser: &Browser) -> bool {
    browser.script("return window.agoraMark === 1;") == serde_json::Value::Bool(true)
}

#[test]
fn problem_01_a_new_comment_on_page_four_is_shown_scrolled_to_highlighted_and_announced() {
    let app = app();
    let mut conn = app.conn();
    let me = fixtures::user(&mut conn, "poster@example.com");
    let post = fixtures::post(&mut conn, me, "A thread of 728 comments");
    fixtures::discussion(&mut conn, post, me, 2, 3, 6);

    let driver = Driver::start();
    let browser = Browser::open(&driver);
    sign_in(&browser, &app, "poster@example.com", &format!("/posts/{post}"));
    browser.type_into("form.new-comment textarea[name=body]", "Does this one vanish?");
    browser.click("form.new-comment button[type=submit]");
    assert_eq!(browser.text("#flash"), "Your comment was posted.");
    let url = browser.current_url();
    assert!(url.contains("?after=") && url.contains("#c"), "on a later page, at the comment: {url}");
    assert!(browser.text(".comment:target .text").contains("Does this one vanish?"));
    assert!(on_screen(&browser, ".comment:target"), "scrolled to the new comment");
    assert!(on_screen(&browser, "#flash"), "and the notice is in view with it");
    let highlight = browser.script("return getComputedStyle(document.querySelector('.comment:target')).backgroundColor;");
    assert_ne!(highlight, "rgba(0, 0, 0, 0)", "highlighted");
}

/// Issue 17, item 16: on a phone, where the one-time notice takes two lines, it does not cover the
/// comment it points to.
#[test]
fn problem_18_the_notice_does_not_cover_the_comment_it_points_to() {
    let app = app();
    let mut conn = app.conn();
    let me = fixtures::user(&mut conn, "narrow@example.com");
    let post = fixtures::post(&mut conn, me, "A thread read on a phone");
    fixtures::discussion(&mut conn, post, me, 3, 3, 3);
    let driver = Driver::start();
    let browser = Browser::open(&driver);
    browser.resize(360, 740);
    sign_in(&browser, &app, "narrow@example.com", &format!("/posts/{post}"));
    browser.type_into("form.new-comment textarea[name=body]", "Where did it go?");
    browser.click("form.new-comment button[type=submit]");
    browser.find("#flash");
    let url = browser.current_url();
    assert!(url.contains("#c"), "{url}");
    let gap = browser.script(
        "const f = document.getElementById('flash').getBoundingClientRect(); const c = document.querySelector('.comment:target').getBoundingClientRect(); \
         return [f.height, c.top - f.bottom];",
    );
    assert!(gap[1].as_f64().unwrap() >= 0.0, "the notice (height, gap) covers the comment: {gap}");
    assert!(on_screen(&browser, ".comment:target") && on_screen(&browser, "#flash"));
    // A longer notice, two lines at this width: deleting a reply lands on it.
    let target = browser.script("return document.querySelector('.comment:target').id.slice(1);");
    browser.goto(&format!("{}/comments/{}/delete", app.url, target.as_str().unwrap()));
    browser.click("main form button[type=submit]");
    assert_eq!(browser.text("#flash"), "Your comment was deleted. Replies to it stay.");
    let gap = browser.script(
        "const f = document.getElementById('flash').getBoundingClientRect(); const c = document.querySelector('.comment:target').getBoundingClientRect(); \
         return [f.height, c.top - f.bottom];",
    );
    assert!(gap[0].as_f64().unwrap() > 60.0, "two lines: {gap}");
    assert!(gap[1].as_f64().unwrap() >= 0.0, "the notice (height, gap) covers the comment: {gap}");
}

#[test]
fn problem_03_a_payment_being_retried_says_retrying_everywhere_and_never_failed() {
    use agora::clock::FakeClock;
    let clock = Arc::new(FakeClock::starting_now());
    let app = TestApp::spawn_with(TestAppOptions { clock: clock.clone(), ..TestAppOptions::new(Arc::new(ScriptedGateway::timing_out_first(1))) });
    let order_id = shopper_with_order(&app, "retry@example.com", 1);

    let driver = Driver::start();
    let browser = Browser::open(&driver);
    sign_in(&browser, &app, "retry@example.com", &format!("/orders/{order_id}/checkout"));
    pay_and_settle(&browser, &app); // the first attempt times out; the retry waits for its backoff
    assert_eq!(browser.text("#payment-status"), "retrying");
    assert!(browser.absent(".problem"), "nothing in red");
    assert!(browser.text("#events").contains("No answer in time: we will try again"));
    assert!(!browser.text("main").to_lowercase().contains("failed"));
    browser.goto(&format!("{}/", app.url));
    assert!(browser.text("#orders").contains("payment retrying"));
    assert!(!browser.text("#orders").contains("failed"));
}

#[test]
fn problem_04_a_declined_card_offers_try_again_which_opens_a_new_checkout() {
    let app = TestApp::spawn(Arc::new(ScriptedGateway::always(GatewayError::declined(DeclineCode::CardDeclined))));
    let order_id = shopper_with_order(&app, "declined@example.com", 2);

    let driver = Driver::start();
    let browser = Browser::open(&driver);
    sign_in(&browser, &app, "declined@example.com", &format!("/orders/{order_id}/checkout"));
    pay_and_settle(&browser, &app);
    browser.find("#payment-final");
    assert!(browser.text("main").contains("No money was taken"));
    browser.click("#try-again");
    browser.find("#pay");
    assert!(browser.current_url().ends_with("/checkout"));
    assert!(!browser.current_url().contains(&format!("/orders/{order_id}/")), "a new order");
    assert_eq!(browser.count("#items tbody tr"), 2, "with the same items");
}

#[test]
fn problem_05_back_after_paying_or_signing_out_shows_no_stale_page() {
    let app = app();
    let order_id = shopper_with_order(&app, "back@example.com", 1);

    let driver = Driver::start();
    let browser = Browser::open(&driver);
    sign_in(&browser, &app, "back@example.com", &format!("/orders/{order_id}/checkout"));
    browser.click("#pay");
    browser.find("#payment-status");
    let payment = browser.current_url();
    browser.back();
    browser.find("#payment-link");
    assert!(browser.absent("#pay"), "Back shows the order as it is now: paid for, no Pay button");

    browser.goto(&payment);
    browser.click("header form[action='/logout'] button");
    browser.find("header a[href='/login']");
    browser.back();
    browser.find("input[name=email]");
    assert!(browser.current_url().contains("/login?next=/payments/"), "Back after signing out asks to sign in");
    assert!(!browser.text("header").contains("Sign out"));
}

#[test]
fn problem_06_later_pages_of_a_big_thread_keep_the_tree_and_link_back() {
    let app = app();
    let mut conn = app.conn();
    let me = fixtures::user(&mut conn, "reader@example.com");
    let post = fixtures::post(&mut conn, me, "Big thread");
    fixtures::discussion(&mut conn, post, me, 2, 3, 6);

    let driver = Driver::start();
    let browser = Browser::open(&driver);
    let first = format!("{}/posts/{post}", app.url);
    browser.goto(&first);
    browser.click("#more-comments");
    browser.find("#previous-page");
    let second = browser.current_url();
    assert!(browser.text(".orphan .in-reply-to").starts_with("↳ in reply to"), "a reply says what it answers");
    assert!(browser.count(".orphan .comment .replies .comment") > 0, "and keeps its own replies nested");
    // Pages 2 and 3 look alike to a selector: open page 3 by its address, then wait for the
    // address that "previous" leads to.
    let third = browser.script("return document.querySelector('#more-comments').href;");
    browser.goto(third.as_str().unwrap());
    browser.click("#previous-page");
    browser.wait_until(&format!("location.href === {second:?}"));
    browser.click("#first-page");
    browser.wait_until(&format!("location.href === {first:?}"));
    assert!(browser.absent("#previous-page"), "the first page has no way back");
    // The context link opens the parent with its replies.
    browser.goto(&second);
    browser.click(".orphan .in-reply-to a");
    browser.wait_until("location.pathname.includes('/comments/')");
    assert!(browser.text("#post h1").ends_with("comment and its replies"));
    assert!(!browser.absent("#context a"), "with a way back to the post");
}

#[test]
fn problem_07_expired_forms_keep_the_text_sign_in_returns_and_refused_orders_keep_quantities() {
    let app = app();
    let mut conn = app.conn();
    let me = fixtures::user(&mut conn, "tabs@example.com");
    let post = fixtures::post(&mut conn, me, "Two tabs");
    let products = fixtures::catalogue(&mut conn, 2);
    let order_id = fixtures::order(&mut conn, me, &products);

    let driver = Driver::start();
    let browser = Browser::open(&driver);
    sign_in(&browser, &app, "tabs@example.com", &format!("/posts/{post}"));
    browser.type_into("form.new-comment textarea", "Words I took care over");
    // In another tab: sign out and in again, which gives the session a new token.
    let first_tab = browser.tab();
    let other = browser.new_tab();
    browser.switch_to(&other);
    browser.goto(&format!("{}/account", app.url));
    browser.click("header form[action='/logout'] button");
    browser.find("header a[href='/login']");
    sign_in(&browser, &app, "tabs@example.com", "/");
    browser.switch_to(&first_tab);
    browser.click("form.new-comment button[type=submit]");
    assert!(browser.text("[role=alert]").contains("nothing was posted yet"));
    assert_eq!(browser.script("return document.querySelector('textarea[name=body]').value;"), "Words I took care over", "the text is kept");
    browser.click("form button.primary[type=submit]");
    assert_eq!(browser.text("#flash"), "Your comment was posted.");

    // The session ends on the server while the checkout is open.
    browser.goto(&format!("{}/orders/{order_id}/checkout", app.url));
    let revoked = agora::auth::repo::revoke_all_sessions(&mut conn, me, chrono::Utc::now()).unwrap();
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(app.services.sessions.ended(&revoked));
    browser.click("#pay");
    assert!(browser.text("#flash").contains("Your session has ended"), "sign-in says why");
    browser.type_into("input[name=email]", "tabs@example.com");
    browser.type_into("input[name=password]", PASSWORD);
    browser.click("form[action='/login'] button[type=submit]");
    browser.find("#pay");
    assert_eq!(browser.current_url(), format!("{}/orders/{order_id}/checkout", app.url), "back at the checkout");

    // Stock that runs out while the catalogue is open: the refusal keeps every quantity asked for.
    browser.goto(&format!("{}/products", app.url));
    browser.clear(&format!("input[name=qty_{}]", products[0]));
    browser.type_into(&format!("input[name=qty_{}]", products[0]), "3");
    browser.clear(&format!("input[name=qty_{}]", products[1]));
    browser.type_into(&format!("input[name=qty_{}]", products[1]), "500");
    {
        use diesel::prelude::*;
        use agora::schema::products as p;
        diesel::update(p::table.find(products[1])).set(p::stock.eq(10)).execute(&mut conn).unwrap();
    }
    browser.click("form[action='/orders'] button[type=submit]");
    assert!(browser.text("[role=alert]").contains("Sorry"));
    assert_eq!(browser.script(&format!("return document.querySelector('input[name=qty_{}]').value;", products[0])), "3");
    assert_eq!(browser.script(&format!("return document.querySelector('input[name=qty_{}]').value;", products[1])), "500");
    browser.goto(&format!("{}/orders", app.url));
    browser.find("#orders");
    assert_eq!(browser.current_url(), format!("{}/", app.url), "the address of the refusal leads to the orders, not a 404");
}

#[test]
fn problem_08_error_pages_know_who_is_looking() {
    let app = app();
    fixtures::user(&mut app.conn(), "lost@example.com");
    let driver = Driver::start();
    let browser = Browser::open(&driver);
    browser.goto(&format!("{}/posts/999999", app.url));
    assert!(browser.text("main").contains("Back to the home page"), "a visitor is not offered 'your orders'");
    assert!(browser.text("header").contains("Sign in"));
    sign_in(&browser, &app, "lost@example.com", "/");
    browser.goto(&format!("{}/orders/999999/checkout", app.url));
    assert!(browser.text("main").contains("Back to your orders"));
    assert!(browser.text("header").contains("Sign out") && browser.text("header").contains("lost"), "still signed in");
}

#[test]
fn problem_09_deep_threads_and_admin_pages_fit_a_phone() {
    let app = app();
    let tour = Tour::new(&app);
    let driver = Driver::start();
    let browser = Browser::open(&driver);
    sign_in(&browser, &app, TOUR_EMAIL, "/");
    for (width, height) in [(390, 844), (360, 740)] {
        browser.resize(width, height);
        for path in &tour.pages {
            browser.goto(&format!("{}{path}", app.url));
            browser.find("main");
            let widths = browser.script("return [document.documentElement.scrollWidth, window.innerWidth];");
            assert_eq!(widths[1], width, "the window is as narrow as a phone");
            assert!(browser.fits_width(), "{path} scrolls sideways at {width} px: {widths}: {}", browser.overflowing());
        }
    }
    browser.goto(&format!("{}{}", app.url, tour.deep_thread));
    browser.find("main");
    assert!(browser.fits_width(), "the deepest thread page fits 360 px");
    let narrowest = browser.script("return Math.min(...[...document.querySelectorAll('.comment .text')].map((t) => t.getBoundingClientRect().width));");
    assert!(narrowest.as_f64().unwrap() >= 150.0, "deep replies keep room to read: {narrowest}");
}

#[test]
fn problem_10_thread_controls_vote_undo_collapse_delete_permalink_and_start_a_discussion() {
    let app = app();
    let mut conn = app.conn();
    let author = fixtures::user(&mut conn, "author@example.com");
    fixtures::user(&mut conn, "voter@example.com");
    let post = fixtures::post(&mut conn, author, "Controls");
    let theirs = fixtures::comment(&mut conn, post, None, author, "See [the docs](https://example.com/docs) *now*");
    let reply = fixtures::comment(&mut conn, post, Some(theirs), author, "A reply under it");

    let driver = Driver::start();
    let browser = Browser::open(&driver);
    sign_in(&browser, &app, "voter@example.com", &format!("/posts/{post}"));
    assert_eq!(browser.script(&format!("return document.querySelector('#c{theirs} .text a').href;")), "https://example.com/docs", "a Markdown link is a link");
    mark_page(&browser);
    browser.click(&format!("#c{theirs} > .controls .vote"));
    browser.wait_until(&format!("document.querySelector('#c{theirs} > .meta .points').textContent === '1 point'"));
    assert!(page_was_kept(&browser), "voting does not reload the page");
    browser.click(&format!("#c{theirs} > .controls .unvote"));
    browser.wait_until(&format!("document.querySelector('#c{theirs} > .meta .points').textContent === '0 points'"));
    assert!(page_was_kept(&browser));
    // Collapse the replies without script: <details>.
    browser.click(&format!("#c{theirs} > details.replies > summary"));
    assert_eq!(browser.script(&format!("return document.querySelector('#c{reply}').checkVisibility();")), false, "the reply is hidden");
    // The permalink opens the comment's own page, whose box answers that comment.
    browser.click(&format!("#c{theirs} > .controls a[href$='/comments/{theirs}']"));
    assert_eq!(browser.text("#post h1"), "author's comment and its replies");
    browser.type_into("form.new-comment textarea", "Answering the permalink");
    browser.click("form.new-comment button[type=submit]");
    browser.find("#flash"); // the page after the post
    assert!(browser.text(&format!("#c{theirs} .replies")).contains("Answering the permalink"), "the reply went to that comment");

    // Your own comment: no vote, but delete (asked first).
    browser.goto(&format!("{}/posts/{post}", app.url));
    let mine = browser.script("return [...document.querySelectorAll('.comment > .text')].find((t) => t.textContent.includes('Answering the permalink')).parentElement.id;");
    let mine = mine.as_str().unwrap().to_string();
    assert_eq!(browser.script(&format!("return document.querySelector('#{mine} > .controls .vote');")), serde_json::Value::Null, "no vote on your own words");
    browser.click(&format!("#{mine} > .controls .delete-link"));
    browser.click("#confirm-delete");
    assert!(browser.text("#flash").contains("deleted"));
    assert!(browser.text(&format!("#{mine} .text")).contains("[deleted]"));

    // Start a discussion.
    browser.goto(&format!("{}/posts", app.url));
    browser.click("#new-post");
    browser.type_into("input[name=title]", "A new discussion");
    browser.type_into("textarea[name=body]", "What do you **think**?");
    browser.click("form[action='/posts'] button[type=submit]");
    assert_eq!(browser.text("#post h1"), "A new discussion");
    assert_eq!(browser.text("#post .text strong"), "think");
}

#[test]
fn problem_11_retry_on_a_declined_charge_says_what_it_does_and_refuses_once() {
    let app = TestApp::spawn(Arc::new(ScriptedGateway::always(GatewayError::declined(DeclineCode::CardDeclined))));
    let mut conn = app.conn();
    let shopper = crate::support::shopper::shopper(&app, "shop@example.com");
    let products = fixtures::catalogue(&mut conn, 1);
    let order_id = fixtures::order(&mut conn, shopper.user_id, &products);
    shopper.pay(order_id);
    app.drain_jobs();
    fixtures::make_admin(&mut conn, "admin@example.com");

    let driver = Driver::start();
    let browser = Browser::open(&driver);
    sign_in(&browser, &app, "admin@example.com", "/admin/jobs");
    assert!(browser.text("#dead").contains("refused when the card was declined"), "Retry says what it will do before it is pressed");
    browser.click("#dead button[aria-label^='Retry job']");
    assert!(browser.text("#flash").starts_with("Not retried: the payment failed for good"));
    assert_eq!(app.drain_jobs(), 0, "nothing ran");
    browser.goto(&format!("{}/admin/jobs", app.url));
    browser.find("#dead");
    assert!(browser.absent("#flash"), "the notice shows once");
}

#[test]
fn problem_12_pages_speak_plainly_and_are_titled() {
    let app = app();
    let order_id = shopper_with_order(&app, "words@example.com", 1);

    let driver = Driver::start();
    let browser = Browser::open(&driver);
    browser.goto(&format!("{}/", app.url));
    browser.find("main h1");
    assert_eq!(browser.script("return document.title;"), "Welcome · Agora");
    sign_in(&browser, &app, "words@example.com", &format!("/orders/{order_id}/checkout"));
    pay_and_settle(&browser, &app);
    browser.find("#payment-final");
    let title = browser.script("return document.title;");
    assert!(title.as_str().unwrap().starts_with("Payment of ") && title.as_str().unwrap().contains("USD"), "{title}");
    let page = browser.text("main");
    for internal in ["Gateway transaction", "Attempts", "→", "attempt 2 of", "processing"] {
        assert!(!page.contains(internal), "a shopper sees {internal:?}");
    }
    browser.goto(&format!("{}/orders/{order_id}", app.url));
    assert_eq!(browser.text("main h1"), format!("Order #{order_id}"), "a paid order is not headed Checkout");
    browser.find("#receipt");
    browser.goto(&format!("{}/", app.url));
    assert!(browser.text("#orders tbody td").contains("UTC"), "orders have dates");
    let aligned = browser.script("const th = [...document.querySelectorAll('#orders th')].find((t) => t.textContent === 'Total'); return getComputedStyle(th).textAlign;");
    assert_eq!(aligned, "right", "the Total header sits over its numbers");
}

/// Issue 17, item 12: the dashboard's and administrators' tables on a phone (390 px) are stacked
/// cards and on a desktop (1280 px) use the width; at both nothing scrolls sideways, no word is
/// broken across lines, and the accessibility checks pass.
#[test]
fn problem_17_dashboard_and_admin_tables_fit_phones_and_desktops_without_breaking_words() {
    let app = app();
    let tour = Tour::new(&app);
    let driver = Driver::start();
    let browser = Browser::open(&driver);
    sign_in(&browser, &app, TOUR_EMAIL, "/");
    let staff_pages: Vec<&String> = tour.pages.iter().filter(|p| p.starts_with("/dashboard") || p.starts_with("/admin")).collect();
    assert!(staff_pages.len() >= 8, "{staff_pages:?}");
    for (width, height) in [(390, 844), (1280, 900)] {
        browser.resize(width, height);
        for path in &staff_pages {
            browser.goto(&format!("{}{path}", app.url));
            browser.find("main");
            assert!(browser.fits_width(), "{path} scrolls sideways at {width} px: {}", browser.overflowing());
            assert_eq!(browser.broken_words(), Vec::<String>::new(), "{path} at {width} px breaks words");
            assert_eq!(browser.audit(), Vec::<String>::new(), "{path} at {width} px");
            let rows = browser.script("return [...document.querySelectorAll('table.list tbody tr')].map((tr) => getComputedStyle(tr).display);");
            let rows: Vec<&str> = rows.as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
            let expected = if width < 640 { "block" } else { "table-row" };
            assert!(rows.iter().all(|d| *d == expected), "{path} at {width} px: rows are {rows:?}, not {expected}");
        }
    }
    // Item 16: the account page names this session by its browser and system, not the raw string.
    browser.goto(&format!("{}/account", app.url));
    let sessions = browser.text("#sessions");
    assert!(sessions.contains("Chrome on Linux") && !sessions.contains("Mozilla/5.0"), "{sessions}");
}

#[test]
fn problem_13_every_page_passes_the_accessibility_checks() {
    let app = app();
    let tour = Tour::new(&app);
    let driver = Driver::start();
    let browser = Browser::open(&driver);
    let visitor_pages = ["/", "/login", "/signup", "/products", "/posts"].map(String::from);
    for path in visitor_pages.iter().chain(&tour.chat_pages) {
        browser.goto(&format!("{}{path}", app.url));
        browser.find("main");
        assert_eq!(browser.audit(), Vec::<String>::new(), "{path} as a visitor");
    }
    sign_in(&browser, &app, TOUR_EMAIL, "/");
    for path in &tour.pages {
        browser.goto(&format!("{}{path}", app.url));
        browser.find("main");
        assert_eq!(browser.audit(), Vec::<String>::new(), "{path}");
    }
    // The skip link is the first thing a keyboard reaches, and it leads to the content.
    browser.goto(&format!("{}/", app.url));
    browser.script("document.querySelector('a.skip').focus(); return null;");
    assert!(on_screen(&browser, "a.skip"), "the skip link shows when focused");
    // The payment page's status is a live region, so updates are announced without a reload.
    browser.goto(&format!("{}{}", app.url, tour.payment));
    assert_eq!(browser.script("return document.querySelector('#payment-status').closest('[aria-live]').getAttribute('aria-live');"), "polite");
}

const TOUR_EMAIL: &str = "tour@example.com";

/// A person who shops, writes, runs a merchant's dashboard and administers the site, with
/// something on every page: the pages the phone-width and accessibility checks visit.
struct Tour {
    pages: Vec<String>,
    /// A chat application's pages, public to anyone with its token.
    chat_pages: Vec<String>,
    deep_thread: String,
    payment: String,
}

impl Tour {
    fn new(app: &TestApp) -> Tour {
        let mut conn = app.conn();
        let me = fixtures::make_admin(&mut conn, TOUR_EMAIL);
        let merchant = fixtures::merchant(&mut conn, "Tour Goods", &[me]);
        let products = fixtures::catalogue(&mut conn, 3);
        let unpaid = fixtures::order(&mut conn, me, &products);
        let paid = fixtures::order(&mut conn, me, &products);
        let client = crate::support::Client::new(&app.url);
        client.sign_in(TOUR_EMAIL, PASSWORD);
        let token = client.csrf_token();
        let payment = client.post_form(&format!("/orders/{paid}/pay"), &[("csrf_token", &token)]).location.unwrap();
        let api = crate::support::api::Api::signed_in(&app.url, TOUR_EMAIL);
        api.pay(&fixtures::customer_public_id(&mut conn, merchant), 2_500, "pm_card_visa");
        app.drain_jobs();
        let post = fixtures::post(&mut conn, me, "A deep thread, read on a phone");
        let levels = fixtures::discussion(&mut conn, post, me, 1, 1, 20);
        let deep = levels[8][0];
        let reference: uuid::Uuid = {
            use diesel::prelude::*;
            agora::schema::payments::table
                .filter(agora::schema::payments::customer_id.eq(merchant))
                .select(agora::schema::payments::reference)
                .first(&mut conn)
                .unwrap()
        };
        let deep_thread = format!("/posts/{post}/comments/{deep}");
        let chat = crate::support::api::Api::new(&app.url);
        let token = chat.post("/chat_applications", &serde_json::json!({ "name": "Tour chat" }), None).json["token"].as_str().unwrap().to_string();
        chat.send("POST", &format!("/chat_applications/{token}/chats"), None, &[]);
        chat.post(&format!("/chat_applications/{token}/chats/1/messages"), &serde_json::json!({ "body": "A message long enough to wrap on a phone, with a_very_long_unbroken_identifier_that_must_wrap_too" }), None);
        let chat_pages = vec![format!("/chats/{token}"), format!("/chats/{token}/1")];
        let pages = [
            "/".to_string(),
            format!("/orders/{unpaid}/checkout"),
            format!("/orders/{paid}"),
            payment.clone(),
            "/products".into(),
            "/posts".into(),
            "/posts/new".into(),
            format!("/posts/{post}"),
            deep_thread.clone(),
            format!("/comments/{}/reply", levels[3][0]),
            "/account".into(),
            "/admin/jobs".into(),
            "/admin/payments".into(),
            "/admin/cache".into(),
            "/dashboard/payments".into(),
            format!("/dashboard/payments/{reference}"),
            "/dashboard/balances".into(),
            format!("/dashboard/balances/{merchant}"),
            "/dashboard/customers".into(),
            "/dashboard/duplicates".into(),
        ]
        .to_vec();
        let pages = pages.into_iter().chain(chat_pages.iter().cloned()).collect();
        Tour { pages, chat_pages, deep_thread, payment }
    }
}
