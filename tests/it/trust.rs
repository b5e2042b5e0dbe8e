//! Issue 17: what a careful attacker still met — each test failed before its fix.

use diesel::RunQueryDsl;
use std::sync::Arc;
use std::time::Duration;

use agora::clock::FakeClock;
use agora::payments::gateway::{SimulatedGateway, Simulation};

use crate::support::api::Api;
use crate::support::fixtures::{self, PASSWORD};
use crate::support::{Client, TestApp};

fn app_with_clock() -> (TestApp, Arc<FakeClock>) {
    let clock = Arc::new(FakeClock::starting_now());
    let mut options = crate::support::app::TestAppOptions::new(Arc::new(SimulatedGateway::new(Simulation::always_succeeding(), Default::default())));
    options.clock = clock.clone();
    // Every count reaches Redis even on a loaded machine: a missed 50 ms deadline would count that
    // attempt in this process's fallback instead and split the tally between the two.
    options.redis_deadline = Duration::from_secs(5);
    (TestApp::spawn_with(options), clock)
}

/// Item 2: every bearer token ends when its owner changes the password or signs out everywhere.
#[test]
fn a_password_change_or_signing_out_everywhere_ends_every_api_token() {
    let (app, clock) = app_with_clock();
    fixtures::two_merchants(&mut app.conn(), "North");
    let script = Api::signed_in(&app.url, "alice@north.test");
    assert_eq!(script.get("/me").status, 200);

    // The password changes on the account page: the script's token ends with the other sessions.
    let person = Client::new(&app.url);
    person.sign_in("alice@north.test", PASSWORD);
    let token = person.get("/account").csrf_token();
    let new_password = "a brand new secret";
    let changed = person.post_form("/account/password", &[("csrf_token", &token), ("current", PASSWORD), ("new", new_password), ("new_again", new_password)]);
    assert_eq!(changed.status, 303);
    let refused = script.get("/me");
    assert_eq!((refused.status, refused.code()), (401, "token_revoked"), "{}", refused.text);

    // A token asked for afterwards works, until its owner signs out everywhere.
    clock.tick(Duration::from_secs(1));
    let fresh = Api::new(&app.url);
    let issued = fresh.send("POST", "/auth/token", Some(&format!(r#"{{"email":"alice@north.test","password":"{new_password}"}}"#)), &[]);
    assert_eq!(issued.status, 200, "{}", issued.text);
    let bearer = format!("Bearer {}", issued.json["token"].as_str().unwrap());
    assert_eq!(fresh.send("GET", "/me", None, &[("Authorization", &bearer)]).status, 200);
    clock.tick(Duration::from_secs(1));
    let token = person.get("/account").csrf_token();
    assert_eq!(person.post_form("/account/sign-out-everywhere", &[("csrf_token", &token)]).status, 303);
    let after = fresh.send("GET", "/me", None, &[("Authorization", &bearer)]);
    assert_eq!((after.status, after.code()), (401, "token_revoked"));
}

/// Item 4: an attempt is counted before its password is hashed, so a parallel burst of wrong
/// passwords cannot slip past the limit.
#[test]
fn fifty_parallel_wrong_passwords_let_at_most_ten_reach_the_hash() {
    let (app, _) = app_with_clock();
    fixtures::user(&mut app.conn(), "target@example.com");
    let before = app.services.hashing.ran();
    let answers: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let url = app.url.clone();
                scope.spawn(move || {
                    let body = format!(r#"{{"email":"target@example.com","password":"guess {i}"}}"#);
                    Api::new(&url).send("POST", "/auth/token", Some(&body), &[]).status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let hashed = app.services.hashing.ran() - before;
    assert!(hashed <= 10, "{hashed} wrong passwords reached the hash");
    assert_eq!(answers.iter().filter(|s| **s == 401).count(), hashed, "each one hashed was refused as wrong: {answers:?}");
    assert!(answers.iter().all(|s| *s == 401 || *s == 429), "{answers:?}");
    // The right password is refused too while the account is closed; a right one before the limit
    // gives its place back (see front_door.rs for the windows).
    assert_eq!(Api::new(&app.url).send("POST", "/auth/token", Some(&format!(r#"{{"email":"target@example.com","password":"{PASSWORD}"}}"#)), &[]).status, 429);
}

/// Item 3: a refund's key belongs to its payment; the same key on another payment is refused
/// (before, it answered with the first payment's refund and made none).
#[test]
fn a_refund_key_used_again_for_another_payment_is_refused_on_both_faces() {
    use agora::schema::refunds;
    use diesel::prelude::*;
    let (app, clock) = app_with_clock();
    let (north, _) = fixtures::two_merchants(&mut app.conn(), "North");
    let north = fixtures::customer_public_id(&mut app.conn(), north);
    let api = Api::signed_in(&app.url, "alice@north.test");
    let [a, b, c] = [2_000, 3_000, 4_000].map(|amount| api.pay(&north, amount, "pm_card_visa")["id"].as_str().unwrap().to_string());
    app.drain_jobs();
    let refunds_made = |app: &TestApp| refunds::table.count().get_result::<i64>(&mut app.conn()).unwrap();

    // The dashboard: a form's key, sent for payment A and then, crafted, for payment B.
    let person = Client::new(&app.url);
    person.sign_in("alice@north.test", PASSWORD);
    let token = person.get(&format!("/dashboard/payments/{a}")).csrf_token();
    let fields = |amount: &'static str| [("csrf_token", token.clone()), ("idempotency_key", "form-key-1".to_string()), ("amount", amount.to_string()), ("reason", String::new()), ("confirm", "yes".to_string())];
    let refs = |f: &[(&'static str, String)]| f.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>();
    let first = person.post_form(&format!("/dashboard/payments/{a}/refunds"), &refs(&fields("5.00")).iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>());
    assert_eq!(first.status, 303);
    let again = person.post_form(&format!("/dashboard/payments/{b}/refunds"), &refs(&fields("5.00")).iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>());
    assert_eq!(again.status, 303);
    let told = person.get(again.location.as_deref().unwrap()).body;
    assert!(told.contains("used for a refund of another payment") && !told.contains(" requested."), "the merchant is told, not reassured: {told}");
    assert_eq!(refunds_made(&app), 1, "nothing was made for B, and nothing claimed");

    // The API: once the stored answer has expired (24 hours), the key still cannot move.
    assert_eq!(api.post(&format!("/payments/{a}/refunds"), &serde_json::json!({ "amount": 100 }), Some("api-key-1")).status, 201);
    clock.tick(Duration::from_secs(25 * 3600));
    let api = Api::signed_in(&app.url, "alice@north.test"); // a day later: a new token
    let moved = api.post(&format!("/payments/{c}/refunds"), &serde_json::json!({ "amount": 100 }), Some("api-key-1"));
    assert_eq!((moved.status, moved.code()), (422, "idempotency_key_reused"), "{}", moved.text);
    assert_eq!(refunds_made(&app), 2);
}

// --- item 1: chat tokens ----------------------------------------------------------------------

fn names_and_tokens(answer: &crate::support::api::Answer) -> Vec<(String, String)> {
    answer.json.as_array().unwrap_or_else(|| panic!("a list: {}", answer.text)).iter().map(|a| (a["name"].as_str().unwrap().to_string(), a["token"].as_str().unwrap().to_string())).collect()
}

/// Item 1: an application belongs to whoever made it. The list shows a caller only their own
/// (an anonymous caller none), and only the owner may rename an owned application.
#[test]
fn chat_tokens_are_listed_only_to_their_owners_and_renaming_needs_the_owner() {
    let (app, _) = app_with_clock();
    let mut conn = app.conn();
    fixtures::user(&mut conn, "maker@example.com");
    fixtures::user(&mut conn, "stranger@example.com");
    let maker = Api::signed_in(&app.url, "maker@example.com");
    let stranger = Api::signed_in(&app.url, "stranger@example.com");
    let anonymous = Api::new(&app.url);

    let made = maker.post("/chat_applications", &serde_json::json!({ "name": "Maker's support desk" }), None);
    assert_eq!(made.status, 201, "{}", made.text);
    let token = made.json["token"].as_str().unwrap().to_string();
    let theirs = stranger.post("/chat_applications", &serde_json::json!({ "name": "Stranger's" }), None);
    let anon = anonymous.post("/chat_applications", &serde_json::json!({ "name": "Nobody's" }), None);
    assert_eq!((theirs.status, anon.status), (201, 201));
    let anon_token = anon.json["token"].as_str().unwrap().to_string();

    // The big page that once listed every token to anyone.
    let listed = anonymous.get("/chat_applications?per_page=1000");
    assert_eq!((listed.status, listed.json.clone()), (200, serde_json::json!([])), "an anonymous caller owns nothing");
    assert_eq!(names_and_tokens(&maker.get("/chat_applications?per_page=1000")), vec![("Maker's support desk".to_string(), token.clone())]);
    let strangers = names_and_tokens(&stranger.get("/applications?per_page=1000"));
    assert_eq!(strangers.len(), 1);
    assert!(strangers.iter().all(|(_, t)| *t != token && *t != anon_token), "{strangers:?}");
    // Nor can a page start after someone else's token.
    assert_eq!(stranger.get(&format!("/chat_applications?after={token}")).status, 404);

    // A stranger holding the token may chat, but not rename it; nor may an anonymous holder.
    assert_eq!(stranger.send("POST", &format!("/chat_applications/{token}/chats"), None, &[]).status, 201);
    for who in [&stranger, &anonymous] {
        let renamed = who.send("PUT", &format!("/chat_applications/{token}"), Some(r#"{"name":"Taken over"}"#), &[]);
        assert_eq!(renamed.status, 403, "{}", renamed.text);
        assert!(renamed.json["error"].as_str().unwrap().contains("owner"), "{}", renamed.text);
    }
    assert_eq!(anonymous.get(&format!("/chat_applications/{token}")).json["name"], "Maker's support desk");
    let renamed = maker.send("PATCH", &format!("/chat_applications/{token}"), Some(r#"{"name":"Maker's desk"}"#), &[]);
    assert_eq!((renamed.status, renamed.json["name"].as_str()), (200, Some("Maker's desk")));
    // An application made anonymously has only its token to prove who made it.
    assert_eq!(anonymous.send("PUT", &format!("/chat_applications/{anon_token}"), Some(r#"{"name":"Still nobody's"}"#), &[]).status, 200);

    // A signed-in person's session makes and lists applications as their bearer token does.
    let person = Client::new(&app.url);
    person.sign_in("maker@example.com", PASSWORD);
    let mine = person.get("/api/v1/chat_applications");
    assert_eq!(mine.status, 200);
    assert!(mine.body.contains(&token) && !mine.body.contains(&anon_token), "{}", mine.body);
    // A token that is no longer good is refused, not taken as anonymous.
    let revoked = Api::new(&app.url);
    revoked.use_token(Some("not.a.token"));
    assert_eq!(revoked.get("/chat_applications").status, 401);
}

fn redis_keys(app: &TestApp) -> Vec<String> {
    let mut redis = redis::Client::open(crate::support::db::redis_url()).unwrap().get_connection().unwrap();
    redis::cmd("KEYS").arg(format!("{}:*", app.db.name)).query(&mut redis).unwrap()
}

/// Item 1: guessing tokens is limited per client address — past the allowance every request from
/// that address is refused, a right guess included — and a miss leaves nothing of the guessed
/// token in Redis.
#[test]
fn guessing_chat_tokens_is_limited_per_address_and_a_miss_leaves_nothing_in_redis() {
    let mut options = crate::support::app::TestAppOptions::new(Arc::new(SimulatedGateway::new(Simulation::always_succeeding(), Default::default())));
    options.redis_deadline = Duration::from_secs(5);
    options.chat_rate = agora::chat::limits::RateSettings { misses: 5, miss_window_secs: 600, ..Default::default() };
    let app = TestApp::spawn_with(options);
    let owner = Api::new(&app.url);
    let token = owner.post("/chat_applications", &serde_json::json!({ "name": "Guarded" }), None).json["token"].as_str().unwrap().to_string();
    let before = redis_keys(&app);

    let guesser = Client::from_address(&app.url, "203.0.113.7");
    let guesses: Vec<String> = (0..10).map(|i| format!("{}{i:02}", &token[..token.len() - 2])).filter(|g| *g != token).take(5).collect();
    for guess in &guesses {
        assert_eq!(guesser.get(&format!("/api/v1/chat_applications/{guess}/chats")).status, 404);
    }
    let sixth = guesser.get(&format!("/api/v1/chat_applications/{}ff/chats", &token[..token.len() - 2]));
    assert_eq!(sixth.status, 429, "{}", sixth.body);
    assert!(sixth.header("retry-after").is_some());
    let right = guesser.get(&format!("/api/v1/chat_applications/{token}/chats"));
    assert_eq!(right.status, 429, "a right guess from a blocked address looks like the rest");
    assert_eq!(guesser.get(&format!("/chats/{token}")).status, 429, "the chat pages too");
    // Everyone else is unaffected.
    assert_eq!(Client::from_address(&app.url, "198.51.100.9").get(&format!("/api/v1/chat_applications/{token}/chats")).status, 200);

    let after = redis_keys(&app);
    for guess in &guesses {
        assert!(after.iter().all(|k| !k.contains(guess.as_str())), "a miss left {after:?}");
    }
    let new: Vec<&String> = after.iter().filter(|k| !before.contains(k)).collect();
    assert!(new.iter().filter(|k| k.contains("203.0.113.7")).count() <= 1, "one counter for the address: {new:?}");
}

// --- item 6: the money checks -------------------------------------------------------------------

/// Item 6: running the platform-wide money checks is for administrators; a merchant's staff see
/// only what the checks found at their own merchants.
#[test]
fn money_checks_are_run_by_administrators_and_merchants_see_only_their_own_findings() {
    let (app, _) = app_with_clock();
    let mut conn = app.conn();
    let (_north, south) = fixtures::two_merchants(&mut conn, "North");
    fixtures::user(&mut conn, "shopper@example.com");
    fixtures::make_admin(&mut conn, "root@example.com");
    // South's balance no longer matches its ledger.
    diesel::sql_query("INSERT INTO customer_balances (customer_id, currency, available) VALUES ($1, 'USD', 5)")
        .bind::<diesel::sql_types::BigInt, _>(south)
        .execute(&mut conn)
        .unwrap();
    let checks = || -> i64 { diesel::sql_query("SELECT count(*) AS n FROM invariant_checks").get_result::<Count>(&mut app.conn()).unwrap().n };

    // A shopper (a valid CSRF token of their own) and a merchant's staff cannot run them.
    for email in ["shopper@example.com", "alice@north.test"] {
        let person = Client::new(&app.url);
        person.sign_in(email, PASSWORD);
        let token = person.get("/account").csrf_token();
        assert_eq!(person.post_form("/dashboard/invariants/check", &[("csrf_token", &token)]).status, 404, "{email}");
    }
    assert_eq!(checks(), 0, "nothing ran");

    let admin = Client::new(&app.url);
    admin.sign_in("root@example.com", PASSWORD);
    let page = admin.get("/dashboard/payments?status=completed");
    assert!(page.body.contains("Check now"), "{}", page.body);
    assert_eq!(admin.post_form("/dashboard/invariants/check", &[("csrf_token", &page.csrf_token())]).status, 303);
    assert_eq!(checks(), 1);
    let platform = admin.get("/dashboard/payments?status=completed").body;
    assert!(platform.contains("across every merchant found problems") && platform.contains("South: every balance equals"), "{platform}");

    // North's staff see that their merchants passed, and nothing of South's.
    let north = Client::new(&app.url);
    north.sign_in("alice@north.test", PASSWORD);
    let theirs = north.get("/dashboard/payments?status=completed").body;
    assert!(theirs.contains("Money checks of your merchants passed"), "{theirs}");
    assert!(!theirs.contains("South") && !theirs.contains("Check now"), "{theirs}");
    // South's staff see their own problem.
    let south_staff = Client::new(&app.url);
    south_staff.sign_in("bob@south.test", PASSWORD);
    assert!(south_staff.get("/dashboard/payments?status=completed").body.contains("of your merchants found problems"));
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

// --- item 8: owners and members ----------------------------------------------------------------

/// Item 8: owners manage a merchant's staff and details; members see and refund but manage
/// nothing (they may leave); the last owner cannot leave or step down; the person linked sees
/// the link on their account page.
#[test]
fn owners_manage_staff_members_do_not_and_the_last_owner_stays() {
    let (app, _) = app_with_clock();
    let mut conn = app.conn();
    let (north, _) = fixtures::two_merchants(&mut conn, "North");
    fixtures::user(&mut conn, "carol@north.test");
    let dave = fixtures::user(&mut conn, "dave@north.test");
    let north_id = fixtures::customer_public_id(&mut conn, north);
    let alice = fixtures::user_id(&mut conn, "alice@north.test");
    let alice_id = fixtures::user_public_id(&mut conn, alice);
    let dave_id = fixtures::user_public_id(&mut conn, dave);

    // Alice (an owner) links Carol on the dashboard: a member unless she says otherwise.
    let alice = Client::new(&app.url);
    alice.sign_in("alice@north.test", PASSWORD);
    let token = alice.get("/dashboard/customers").csrf_token();
    assert_eq!(alice.post_form(&format!("/dashboard/customers/{north_id}/users"), &[("csrf_token", &token), ("email", "carol@north.test")]).status, 303);
    let carol_page = Client::new(&app.url);
    carol_page.sign_in("carol@north.test", PASSWORD);
    let account = carol_page.get("/account").body;
    assert!(account.contains("id=\"account-merchants\"") && account.contains("North <span class=\"muted\">(member)</span>"), "{account}");
    let customers = carol_page.get("/dashboard/customers").body;
    assert!(!customers.contains("Link a user by email") && !customers.contains(&format!("/users/{alice_id}/remove")), "a member manages nothing");

    // As a member, Carol sees the merchant but manages nothing, by API either.
    let carol = Api::signed_in(&app.url, "carol@north.test");
    assert_eq!(carol.get(&format!("/customers/{north_id}")).status, 200);
    let refused = [
        carol.post(&format!("/customers/{north_id}/users"), &serde_json::json!({ "email": "dave@north.test" }), None),
        carol.send("DELETE", &format!("/customers/{north_id}/users/{alice_id}"), None, &[]),
        carol.send("PATCH", &format!("/customers/{north_id}"), Some(r#"{"name":"Carol's now"}"#), &[]),
        carol.post(&format!("/customers/{north_id}/users"), &serde_json::json!({ "email": "carol@north.test", "role": "owner" }), None),
    ];
    for answer in &refused {
        assert_eq!((answer.status, answer.code()), (403, "owner_required"), "{}", answer.text);
    }
    let north_now = carol.get(&format!("/customers/{north_id}")).json;
    assert_eq!(north_now["name"], "North");
    assert_eq!(north_now["users"].as_array().unwrap().iter().map(|u| (u["email"].as_str().unwrap(), u["role"].as_str().unwrap())).collect::<Vec<_>>(), [
        ("alice@north.test", "owner"),
        ("carol@north.test", "member")
    ]);
    // A member may leave.
    let carol_id = north_now["users"][1]["id"].as_str().unwrap().to_string();
    assert_eq!(carol.send("DELETE", &format!("/customers/{north_id}/users/{carol_id}"), None, &[]).status, 200);
    assert_eq!(carol.get(&format!("/customers/{north_id}")).status, 404);

    // The last owner can neither leave nor step down.
    let owner = Api::signed_in(&app.url, "alice@north.test");
    let leave = owner.send("DELETE", &format!("/customers/{north_id}/users/{alice_id}"), None, &[]);
    assert_eq!((leave.status, leave.code()), (409, "last_owner"));
    let step_down = owner.post(&format!("/customers/{north_id}/users"), &serde_json::json!({ "email": "alice@north.test", "role": "member" }), None);
    assert_eq!((step_down.status, step_down.code()), (409, "last_owner"));
    // With another owner she can.
    assert_eq!(owner.post(&format!("/customers/{north_id}/users"), &serde_json::json!({ "email": "dave@north.test", "role": "owner" }), None).status, 200);
    assert_eq!(owner.send("DELETE", &format!("/customers/{north_id}/users/{alice_id}"), None, &[]).status, 200);
    let dave_api = Api::signed_in(&app.url, "dave@north.test");
    let last = dave_api.send("DELETE", &format!("/customers/{north_id}/users/{dave_id}"), None, &[]);
    assert_eq!((last.status, last.code()), (409, "last_owner"));
}

// --- item 13: who sees "Dashboard" ------------------------------------------------------------

/// Item 13: the navigation offers the dashboard only to a merchant's staff and administrators;
/// to anyone else its pages do not exist (rather than an empty merchant's page).
#[test]
fn only_staff_and_administrators_are_offered_the_dashboard_and_others_get_not_found() {
    let (app, _) = app_with_clock();
    let mut conn = app.conn();
    fixtures::two_merchants(&mut conn, "North");
    fixtures::user(&mut conn, "shopper@example.com");
    fixtures::make_admin(&mut conn, "root@example.com");
    let nav_link = "<a href=\"/dashboard\">Dashboard</a>";
    for (email, offered) in [("shopper@example.com", false), ("alice@north.test", true), ("root@example.com", true)] {
        let person = Client::new(&app.url);
        person.sign_in(email, PASSWORD);
        assert_eq!(person.get("/account").body.contains(nav_link), offered, "{email}");
        for page in ["/dashboard/payments?status=completed", "/dashboard/balances", "/dashboard/customers", "/dashboard/payments.csv"] {
            let status = person.get(page).status;
            assert_eq!(status == 404, !offered, "{email} {page}: {status}");
        }
    }
}

// --- item 16: smaller things ------------------------------------------------------------------

/// Item 16: deleting a reply lowers the discussion's comment count, on its page and in the list.
#[test]
fn a_deleted_reply_lowers_the_comment_count() {
    let (app, _) = app_with_clock();
    let mut conn = app.conn();
    let author = fixtures::user(&mut conn, "author@example.com");
    let post = fixtures::post(&mut conn, author, "Counting");
    let first = fixtures::comment(&mut conn, post, None, author, "First.");
    let reply = fixtures::comment(&mut conn, post, Some(first), author, "A reply.");
    let person = Client::new(&app.url);
    person.sign_in("author@example.com", PASSWORD);
    assert!(person.get(&format!("/posts/{post}")).body.contains("<span id=\"comments-count\">2</span> comments"));
    let token = person.get(&format!("/comments/{reply}/delete")).csrf_token();
    assert_eq!(person.post_form(&format!("/comments/{reply}/delete"), &[("csrf_token", &token)]).status, 303);
    assert!(person.get(&format!("/posts/{post}")).body.contains("<span id=\"comments-count\">1</span> comment<"), "the page");
    assert!(person.get("/posts").body.contains("1 comment<"), "the list");
    // The hourly reconciliation agrees with the count kept by the delete.
    assert!(agora::threads::repo::reconcile_counters(&mut conn).unwrap().is_empty());
}

/// Item 16: `/favicon.ico`, where browsers ask for it, is an icon.
#[test]
fn the_site_has_a_favicon() {
    let (app, _) = app_with_clock();
    let icon = Client::new(&app.url).get("/favicon.ico");
    assert_eq!((icon.status, icon.header("content-type")), (200, Some("image/x-icon")));
    assert!(Client::new(&app.url).get("/posts").body.contains("rel=\"icon\" href=\"/favicon.ico\""));
}

/// Item 16: quantities a visitor picked survive "Sign in to order": the sign-in comes back to the
/// catalogue with them filled in.
#[test]
fn a_visitors_quantities_survive_signing_in_to_order() {
    let (app, _) = app_with_clock();
    let mut conn = app.conn();
    fixtures::user(&mut conn, "visitor@example.com");
    let products = fixtures::catalogue(&mut conn, 2);
    let visitor = Client::new(&app.url);
    assert!(visitor.get("/products").body.contains("formaction=\"/products/sign-in\""), "the button carries the form's quantities");
    let asked = visitor.get(&format!("/products/sign-in?csrf_token=&qty_{}=2&qty_{}=0", products[0], products[1]));
    assert_eq!(asked.status, 303);
    let login = asked.location.unwrap();
    let back = format!("/products?qty_{}=2", products[0]);
    assert_eq!(login, format!("/login?next={}", back.replace('?', "%3F").replace('=', "%3D")));
    let form = visitor.get(&login);
    assert!(form.body.contains(&format!("value=\"{back}\"")), "{}", form.body);
    let signed_in = visitor.post_form("/login", &[("csrf_token", &form.csrf_token()), ("email", "visitor@example.com"), ("password", PASSWORD), ("next", &back)]);
    assert_eq!(signed_in.location.as_deref(), Some(back.as_str()));
    let catalogue = visitor.get(&back).body;
    let field = format!("name=\"qty_{}\" min=\"0\" max=\"1000\" value=\"2\"", products[0]);
    assert!(catalogue.contains(&field) && catalogue.contains("Place order with"), "{catalogue}");
}

/// Item 16: a discussion's author can edit it and delete it; deleting keeps its replies; nobody
/// else can do either. Markdown headings render (below the page's own).
#[test]
fn the_author_edits_and_deletes_their_discussion_and_headings_render() {
    let (app, _) = app_with_clock();
    let mut conn = app.conn();
    let author = fixtures::user(&mut conn, "author@example.com");
    let other = fixtures::user(&mut conn, "other@example.com");
    let post = fixtures::post(&mut conn, author, "First title");
    fixtures::comment(&mut conn, post, None, other, "A reply that must stay.");
    let lonely = fixtures::post(&mut conn, author, "Nobody answered");
    let writer = Client::new(&app.url);
    writer.sign_in("author@example.com", PASSWORD);
    let stranger = Client::new(&app.url);
    stranger.sign_in("other@example.com", PASSWORD);

    // The author is offered the controls (shown by the page's per-person style), others not.
    let page = writer.get(&format!("/posts/{post}")).body;
    assert!(page.contains(&format!("href=\"/posts/{post}/edit\"")) && page.contains(&format!(".post[data-author=\"{author}\"] > .post-controls a")), "{page}");
    assert_eq!(stranger.get(&format!("/posts/{post}/edit")).status, 404);
    let token = stranger.get("/posts").csrf_token();
    assert_eq!(stranger.post_form(&format!("/posts/{post}/edit"), &[("csrf_token", &token), ("title", "Taken"), ("body", "Mine now")]).status, 404);
    assert_eq!(stranger.post_form(&format!("/posts/{post}/delete"), &[("csrf_token", &token)]).status, 404);

    // Edit: the form comes filled in; a heading in the new text renders as one.
    let form = writer.get(&format!("/posts/{post}/edit"));
    assert!(form.body.contains("value=\"First title\"") && form.body.contains("Post body."), "{}", form.body);
    let saved = writer.post_form(&format!("/posts/{post}/edit"), &[("csrf_token", &form.csrf_token()), ("title", "Better title"), ("body", "# Big news\n\nDetails.")]);
    assert_eq!(saved.status, 303);
    let page = writer.get(&format!("/posts/{post}")).body;
    assert!(page.contains("<h1>Better title</h1>") && page.contains("<h3>Big news</h3>"), "{page}");
    let bad = writer.post_form(&format!("/posts/{post}/edit"), &[("csrf_token", &form.csrf_token()), ("title", "x"), ("body", "Kept text")]);
    assert_eq!(bad.status, 422);
    assert!(bad.body.contains("Kept text"), "the form keeps what was typed");

    // Delete: the replies stay under "A deleted discussion"; one without replies leaves the list.
    let token = writer.get(&format!("/posts/{post}/delete")).csrf_token();
    assert_eq!(writer.post_form(&format!("/posts/{post}/delete"), &[("csrf_token", &token)]).status, 303);
    assert_eq!(writer.post_form(&format!("/posts/{lonely}/delete"), &[("csrf_token", &token)]).status, 303);
    let thread = stranger.get(&format!("/posts/{post}")).body;
    assert!(thread.contains("A deleted discussion") && thread.contains("A reply that must stay.") && !thread.contains("Big news"), "{thread}");
    let list = stranger.get("/posts").body;
    assert!(list.contains(&format!("/posts/{post}\">A deleted discussion</a>")) && !list.contains("Nobody answered"), "{list}");
    assert_eq!(writer.get(&format!("/posts/{post}/edit")).status, 404, "a deleted discussion is not edited");
}

/// Item 16: sign-up keeps the name and email on a password mismatch (never the passwords).
#[test]
fn sign_up_keeps_what_it_can_on_a_mismatch() {
    let (app, _) = app_with_clock();
    let visitor = Client::new(&app.url);
    let token = visitor.get("/signup").csrf_token();
    let again = visitor.post_form(
        "/signup",
        &[("csrf_token", &token), ("name", "Nia"), ("email", "nia@example.com"), ("password", "first secret"), ("password_again", "other secret")],
    );
    assert_eq!(again.status, 422);
    assert!(again.body.contains("value=\"Nia\"") && again.body.contains("value=\"nia@example.com\""), "{}", again.body);
    assert!(!again.body.contains("first secret"));
}
