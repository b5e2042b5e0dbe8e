//! The front door (issue 7): sign-in throttling, a hashing pool that cannot starve pages,
//! revocable sessions and roles, security headers, safe redirects, a Redis that hangs, thread
//! cursors that cannot fill Redis, and orders that cannot hoard stock.

use diesel::prelude::*;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use agora::payments::gateway::ScriptedGateway;
use agora::schema::users;

use crate::support::app::TestAppOptions;
use crate::support::fixtures::{self, PASSWORD};
use crate::support::redis::OwnRedis;
use crate::support::shopper::shopper;
use crate::support::{Client, TestApp};

fn app() -> TestApp {
    TestApp::spawn(Arc::new(ScriptedGateway::succeeding()))
}

fn try_sign_in(client: &Client, email: &str, password: &str) -> crate::support::http::Resp {
    let token = client.get("/login").csrf_token();
    client.post_form("/login", &[("csrf_token", &token), ("email", email), ("password", password), ("next", "/")])
}

fn eleven_wrong_passwords_then_429(app: &TestApp) {
    let attacker = Client::new(&app.url);
    for attempt in 1..=10 {
        assert_eq!(try_sign_in(&attacker, "victim@example.com", "guess").status, 401, "attempt {attempt}");
    }
    let closed = try_sign_in(&attacker, "victim@example.com", "guess");
    assert_eq!(closed.status, 429);
    let retry_after: u64 = closed.retry_after.as_deref().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    assert!(closed.body.contains("try again in 15 minutes"), "{}", closed.body);
    assert_eq!(try_sign_in(&attacker, "victim@example.com", PASSWORD).status, 429, "even the right password waits");

    // Someone else, from somewhere else, is not locked out by it.
    let bystander = Client::from_address(&app.url, "203.0.113.7");
    assert_eq!(try_sign_in(&bystander, "bystander@example.com", PASSWORD).status, 303);
}

#[test]
fn eleven_wrong_passwords_close_sign_in_for_that_account_but_not_for_others() {
    let app = app();
    fixtures::user(&mut app.conn(), "victim@example.com");
    fixtures::user(&mut app.conn(), "bystander@example.com");
    eleven_wrong_passwords_then_429(&app);
}

#[test]
fn with_redis_down_sign_in_is_still_throttled() {
    let app = TestApp::spawn_with(TestAppOptions { redis: false, ..TestAppOptions::new(Arc::new(ScriptedGateway::succeeding())) });
    fixtures::user(&mut app.conn(), "victim@example.com");
    fixtures::user(&mut app.conn(), "bystander@example.com");
    eleven_wrong_passwords_then_429(&app);
}

#[test]
fn one_address_guessing_at_many_accounts_is_stopped_too() {
    let app = app();
    let guesser = Client::from_address(&app.url, "198.51.100.4");
    for n in 0..10 {
        assert_eq!(try_sign_in(&guesser, &format!("user{n}@example.com"), "guess").status, 401);
    }
    assert_eq!(try_sign_in(&guesser, "user10@example.com", "guess").status, 429);
}

#[test]
fn sixty_four_sign_ins_at_once_wait_for_the_hashing_pool_while_pages_keep_answering() {
    // The hashing pool's backpressure, not the throttle: attempts are counted before they are
    // hashed (at most 10 in flight per account and address, see trust.rs), so this app allows
    // more than the 64 sent here.
    let mut options = crate::support::app::TestAppOptions::new(Arc::new(ScriptedGateway::succeeding()));
    options.auth.max_login_failures = 1_000;
    let app = TestApp::spawn_with(options);
    let mut conn = app.conn();
    let author = fixtures::user(&mut conn, "crowd@example.com");
    let post = fixtures::post(&mut conn, author, "Busy day");
    fixtures::comment(&mut conn, post, None, author, "still readable");

    // Every hashing thread is busy until the test says so.
    let hashing = app.services.hashing.clone();
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let (busy, started) = mpsc::channel();
    for _ in 0..hashing.threads() {
        let (gate, busy) = (gate.clone(), busy.clone());
        hashing
            .submit(move || {
                busy.send(()).unwrap();
                let (open, opened) = &*gate;
                drop(opened.wait_while(open.lock().unwrap(), |o| !*o).unwrap());
            })
            .unwrap();
    }
    for _ in 0..hashing.threads() {
        started.recv().unwrap();
    }

    // 64 sign-ins (more than the 24 database connections the test app has) queue for a hash.
    let url = app.url.clone();
    let logins: Vec<_> = (0..64)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || try_sign_in(&Client::new(&url), "crowd@example.com", PASSWORD).status)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while hashing.queued() < 64 {
        assert!(Instant::now() < deadline, "only {} sign-ins reached the hashing queue", hashing.queued());
        std::thread::yield_now();
    }

    let reader = Client::new(&app.url);
    let page = reader.get(&format!("/posts/{post}"));
    assert_eq!(page.status, 200);
    assert!(page.body.contains("still readable"));
    assert_eq!(reader.get("/healthz").status, 200);
    assert_eq!(hashing.queued(), 64, "every sign-in was still waiting while the page answered");

    let (open, opened) = &*gate;
    *open.lock().unwrap() = true;
    opened.notify_all();
    let statuses: Vec<u16> = logins.into_iter().map(|l| l.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 303), "{statuses:?}");
}

#[test]
fn signing_out_ends_the_session_wherever_its_cookie_was_copied() {
    let app = app();
    let me = shopper(&app, "careful@example.com");
    let thief = Client::new(&app.url);
    thief.set_cookie(me.client.cookie());
    assert!(thief.get("/").body.contains("Your orders"), "the copied cookie works while the session lives");

    assert_eq!(me.client.post_form("/logout", &[("csrf_token", &me.token)]).status, 303);
    let replayed = thief.get("/");
    assert!(replayed.body.contains("Welcome to Agora"), "signed out: {}", replayed.body);
    assert_eq!(thief.get("/account").status, 303, "personal pages send it to sign in");
}

#[test]
fn sign_out_everywhere_ends_every_session_of_the_account() {
    let app = app();
    let laptop = shopper(&app, "many@example.com");
    let phone = Client::new(&app.url);
    phone.sign_in("many@example.com", PASSWORD);

    let account = laptop.client.get("/account");
    assert_eq!(account.status, 200);
    assert_eq!(account.header("cache-control"), Some("no-store"));
    assert_eq!(account.body.matches("<tr><td>").count(), 2, "two devices: {}", account.body);
    assert!(account.body.contains("this device"));
    let out = laptop.client.post_form("/account/sign-out-everywhere", &[("csrf_token", &account.csrf_token())]);
    assert_eq!(out.status, 303);
    for client in [&laptop.client, &phone] {
        assert!(client.get("/").body.contains("Welcome to Agora"));
    }
}

#[test]
fn taking_the_admin_role_away_in_the_database_closes_admin_pages_on_the_next_request() {
    let app = app();
    let mut conn = app.conn();
    let admin_id = fixtures::make_admin(&mut conn, "boss@example.com");
    let admin = Client::new(&app.url);
    admin.sign_in("boss@example.com", PASSWORD);
    assert_eq!(admin.get("/admin/jobs").status, 200);
    diesel::update(users::table.find(admin_id)).set(users::is_admin.eq(false)).execute(&mut conn).unwrap();
    assert_eq!(admin.get("/admin/jobs").status, 404);
    assert_eq!(admin.get("/admin/cache").status, 404);
}

#[test]
fn pages_forbid_inline_script_and_carry_none() {
    let app = app();
    let me = shopper(&app, "csp@example.com");
    for path in ["/login", "/", "/posts", "/products", "/account"] {
        let page = me.client.get(path);
        let csp = page.header("content-security-policy").unwrap_or_default().to_string();
        assert!(csp.contains("script-src 'self'") && !csp.contains("script-src 'self' 'unsafe-inline'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"));
        assert_eq!(page.body.matches("<script").count(), page.body.matches("<script src=").count(), "{path} has inline script");
        assert!(page.header("strict-transport-security").is_none(), "no HSTS over plain HTTP");
    }
}

#[test]
fn served_over_https_cookies_are_secure_and_hsts_is_sent() {
    let app = TestApp::spawn_with(TestAppOptions { secure_cookies: true, ..TestAppOptions::new(Arc::new(ScriptedGateway::succeeding())) });
    let login = Client::new(&app.url).get("/login");
    assert!(login.header("strict-transport-security").is_some_and(|h| h.starts_with("max-age=")));
    let cookie = login.header("set-cookie").unwrap();
    assert!(cookie.contains("Secure") && cookie.contains("HttpOnly"), "{cookie}");
}

#[test]
fn a_next_with_a_control_character_or_backslash_stays_on_the_site() {
    let app = app();
    fixtures::user(&mut app.conn(), "nav@example.com");
    let client = Client::new(&app.url);
    let form = client.get("/login?next=/%09/evil.example");
    assert!(form.body.contains("name=\"next\" value=\"/\""), "{}", form.body);
    for next in ["/\t/evil.example", "/\\evil.example", "//evil.example", "https://evil.example/"] {
        let fresh = Client::new(&app.url);
        let token = fresh.get("/login").csrf_token();
        let resp = fresh.post_form("/login", &[("csrf_token", &token), ("email", "nav@example.com"), ("password", PASSWORD), ("next", next)]);
        assert_eq!(resp.location.as_deref(), Some("/"), "{next:?}");
    }
}

// --- Redis that hangs ------------------------------------------------------------------------

#[test]
fn with_redis_frozen_pages_and_health_answer_within_a_second_and_caching_resumes_after() {
    let redis = OwnRedis::start();
    let app = TestApp::spawn_with(TestAppOptions {
        redis_url: Some(redis.url.clone()),
        redis_rest: Duration::ZERO, // try Redis on every call: the worst case for a frozen one
        ..TestAppOptions::new(Arc::new(ScriptedGateway::succeeding()))
    });
    let mut conn = app.conn();
    let author = fixtures::user(&mut conn, "frozen@example.com");
    let post = fixtures::post(&mut conn, author, "Frozen");
    fixtures::comment(&mut conn, post, None, author, "while Redis sleeps");
    let reader = Client::new(&app.url);
    let member = Client::new(&app.url);
    member.sign_in("frozen@example.com", PASSWORD);
    reader.get(&format!("/posts/{post}"));
    assert_eq!(reader.get(&format!("/posts/{post}")).queries, Some(0), "cached");

    redis.pause();
    for client in [&reader, &member] {
        let started = Instant::now();
        let page = client.get(&format!("/posts/{post}"));
        assert_eq!(page.status, 200);
        assert!(page.body.contains("while Redis sleeps"));
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    }
    let started = Instant::now();
    let health = reader.get("/healthz");
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(health.status, 200);
    assert!(health.body.contains("\"redis\":\"down"), "{}", health.body);

    redis.resume();
    assert_eq!(reader.get(&format!("/posts/{post}")).queries, Some(0), "served from the cache again");
    assert!(reader.get("/healthz").body.contains("\"redis\":\"ok\""));
}

#[test]
fn one_late_answer_costs_one_call_and_only_a_redis_silent_for_half_a_second_is_rested() {
    use agora::cache::{Cache, CacheError};
    let redis = OwnRedis::start();
    let cache = Cache::with_timing(Some(&redis.url), "late:", Duration::from_millis(50), Duration::from_secs(60));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        // The first connection may take longer than a deadline to open (a debug build): ask until
        // it is there.
        let mut tries = 0;
        while cache.set("k", "v", Duration::from_secs(60)).await.is_err() {
            tries += 1;
            assert!(tries < 100, "Redis never answered");
        }
        // A moment's stall, as a saturated machine makes: that call is late, the next one is
        // asked (a rest of a minute would refuse it) and answered.
        redis.pause();
        assert!(matches!(cache.get("k").await, Err(CacheError::Late(_))));
        redis.resume();
        assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("v"), "no rest after one late answer");
        // Silent for longer than half a second: now Redis is away, and left alone.
        redis.pause();
        let mut calls = 0;
        let refused = loop {
            calls += 1;
            match cache.get("k").await {
                Err(CacheError::Late(_)) => assert!(calls < 40, "still asked after {calls} late calls"),
                Err(CacheError::Unavailable(why)) => break why,
                other => panic!("{other:?}"),
            }
        };
        assert!(refused.contains("resting"), "{refused}");
        assert!(calls >= 10, "half a second of 50 ms deadlines before resting, not {calls} calls");
        redis.resume();
    });
}

// --- thread cursors and made-up posts --------------------------------------------------------

fn redis_keys(app: &TestApp, pattern: &str) -> Vec<String> {
    let mut redis = redis::Client::open(crate::support::db::redis_url()).unwrap().get_connection().unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}:{pattern}", app.db.name)).query(&mut redis).unwrap();
    keys.sort();
    keys
}

#[test]
fn odd_spellings_of_a_cursor_and_made_up_posts_leave_nothing_in_redis() {
    let app = app();
    let mut conn = app.conn();
    let author = fixtures::user(&mut conn, "keys@example.com");
    let post = fixtures::post(&mut conn, author, "Keys");
    let first = fixtures::comment(&mut conn, post, None, author, "first");
    fixtures::comment(&mut conn, post, None, author, "second");
    let reader = Client::new(&app.url);
    assert_eq!(reader.get(&format!("/posts/{post}")).status, 200);
    let pages = redis_keys(&app, "page:*");
    assert_eq!(pages.len(), 1);

    for after in ["0", "00", "000", "1", &format!("{first}"), "000000000000", "000000999999", "+00000000001"] {
        assert_eq!(reader.get(&format!("/posts/{post}?after={after}")).status, 404, "{after}");
    }
    assert_eq!(redis_keys(&app, "page:*"), pages, "no page was cached under those");
    let canonical = format!("{first:012}");
    assert_eq!(reader.get(&format!("/posts/{post}?after={canonical}")).status, 200, "a real cursor still works");

    let before = redis_keys(&app, "*");
    assert_eq!(reader.get("/posts/999999").status, 404);
    assert_eq!(redis_keys(&app, "*"), before, "a post that does not exist creates no key");
}

// --- orders that cannot hoard stock ----------------------------------------------------------

#[test]
fn a_product_has_one_name_in_the_order_form_and_a_sixth_unpaid_order_is_refused() {
    let app = app();
    let me = shopper(&app, "hoarder@example.com");
    let mut conn = app.conn();
    let product = fixtures::catalogue(&mut conn, 1)[0];
    let other_name = format!("qty_0{product}");
    let refused = me.client.post_form("/orders", &[("csrf_token", &me.token), (&other_name, "1")]);
    assert_eq!(refused.status, 409);
    assert!(refused.body.contains("names a product that does not exist"), "{}", refused.body);
    assert_eq!(fixtures::payment_count(&mut conn), 0);

    let field = format!("qty_{product}");
    for n in 1..=5 {
        let placed = me.client.post_form("/orders", &[("csrf_token", &me.token), (&field, "1")]);
        assert_eq!(placed.status, 303, "order {n}");
    }
    let sixth = me.client.post_form("/orders", &[("csrf_token", &me.token), (&field, "1")]);
    assert_eq!(sixth.status, 409);
    assert!(sixth.body.contains("you already have 5 unpaid orders"), "{}", sixth.body);
    let unpaid: i64 = agora::schema::orders::table.count().get_result(&mut conn).unwrap();
    assert_eq!(unpaid, 5, "nothing was reserved for the sixth");
}
