//! Signing in and out.

use agora::payments::gateway::ScriptedGateway;
use std::sync::Arc;

use crate::support::fixtures::{self, PASSWORD};
use crate::support::{Client, TestApp};

fn app_with_user() -> TestApp {
    let app = TestApp::spawn(Arc::new(ScriptedGateway::succeeding()));
    fixtures::user(&mut app.conn(), "member@example.com");
    app
}

#[test]
fn a_wrong_password_re_renders_the_form_with_the_problem() {
    let app = app_with_user();
    let client = Client::new(&app.url);
    let token = client.get("/login").csrf_token();
    let resp = client.post_form("/login", &[("csrf_token", &token), ("email", "member@example.com"), ("password", "nope"), ("next", "/")]);
    assert_eq!(resp.status, 401);
    assert!(resp.body.contains("match an account"));
    assert!(resp.body.contains("value=\"member@example.com\""), "the email is kept");
    let unknown = client.post_form("/login", &[("csrf_token", &token), ("email", "ghost@example.com"), ("password", "x")]);
    assert_eq!(unknown.status, 401);
    assert!(client.get("/").body.contains("Sign in"), "still signed out");
}

#[test]
fn signing_in_is_case_insensitive_on_email_and_returns_to_the_page_asked_for() {
    let app = app_with_user();
    let client = Client::new(&app.url);
    let asked = client.get("/orders/7/checkout");
    assert_eq!(asked.status, 303);
    assert_eq!(asked.location.as_deref(), Some("/login?next=/orders/7/checkout"));
    let form = client.get("/login?next=/orders/7/checkout");
    assert!(form.body.contains("value=\"/orders/7/checkout\""));
    let resp = client.post_form(
        "/login",
        &[("csrf_token", &form.csrf_token()), ("email", "Member@Example.COM"), ("password", PASSWORD), ("next", "/orders/7/checkout")],
    );
    assert_eq!(resp.status, 303);
    assert_eq!(resp.location.as_deref(), Some("/orders/7/checkout"));
    assert!(client.get("/").body.contains("Your orders"));
}

#[test]
fn login_and_logout_need_their_csrf_token() {
    let app = app_with_user();
    let client = Client::new(&app.url);
    client.get("/login");
    let resp = client.post_form("/login", &[("email", "member@example.com"), ("password", PASSWORD)]);
    assert_eq!(resp.status, 403);
    assert!(resp.body.contains("value=\"member@example.com\""), "the form comes back with the email");
    assert!(client.get("/").body.contains("Welcome to Agora"), "and nobody was signed in");
    let again = client.post_form("/login", &[("csrf_token", &resp.csrf_token()), ("email", "member@example.com"), ("password", PASSWORD)]);
    assert_eq!(again.status, 303, "its fresh token works");
    let client = Client::new(&app.url);
    client.sign_in("member@example.com", PASSWORD);
    assert_eq!(client.post_form("/logout", &[("csrf_token", "wrong")]).status, 403);
    assert!(client.get("/").body.contains("Your orders"), "still signed in");
    let token = client.csrf_token();
    assert_eq!(client.post_form("/logout", &[("csrf_token", &token)]).status, 303);
    assert!(client.get("/").body.contains("Welcome to Agora"));
}

#[test]
fn text_from_users_is_escaped() {
    let app = TestApp::spawn(Arc::new(ScriptedGateway::succeeding()));
    let mut conn = app.conn();
    use agora::schema::users;
    use diesel::prelude::*;
    let id = fixtures::user(&mut conn, "xss@example.com");
    diesel::update(users::table.find(id)).set(users::name.eq("<script>alert(1)</script>")).execute(&mut conn).unwrap();
    let client = Client::new(&app.url);
    client.sign_in("xss@example.com", PASSWORD);
    let home = client.get("/").body;
    assert!(home.contains("&#60;script&#62;alert(1)"), "{home}");
    assert!(!home.contains("<script>alert(1)"));
}

#[test]
fn pages_made_for_a_signed_in_person_are_never_cached() {
    use agora::payments::gateway::ScriptedGateway;
    let app = crate::support::TestApp::spawn(std::sync::Arc::new(ScriptedGateway::succeeding()));
    let mut conn = app.conn();
    let user_id = crate::support::fixtures::user(&mut conn, "private@example.com");
    let products = crate::support::fixtures::catalogue(&mut conn, 2);
    let order_id = crate::support::fixtures::order(&mut conn, user_id, &products);
    let visitor = crate::support::Client::new(&app.url);
    let public = visitor.get("/posts");
    assert_eq!(public.status, 200);
    assert_ne!(public.header("cache-control"), Some("no-store"), "public pages may be cached");
    visitor.sign_in("private@example.com", crate::support::fixtures::PASSWORD);
    for path in ["/".to_string(), format!("/orders/{order_id}/checkout"), "/posts".to_string(), "/account".to_string()] {
        let page = visitor.get(&path);
        assert_eq!((page.status, page.header("cache-control")), (200, Some("no-store")), "{path}: Back must ask the server again");
        assert!(!page.sets_cookie, "{path}: a page that changes nothing in the session sends no new cookie");
    }
}

#[test]
fn error_pages_know_who_is_signed_in() {
    use agora::payments::gateway::ScriptedGateway;
    let app = crate::support::TestApp::spawn(std::sync::Arc::new(ScriptedGateway::succeeding()));
    crate::support::fixtures::user(&mut app.conn(), "lost@example.com");
    let visitor = crate::support::Client::new(&app.url);
    let anonymous = visitor.get("/orders/999/checkout/nowhere");
    assert_eq!(anonymous.status, 404);
    assert!(anonymous.body.contains("Back to the home page") && !anonymous.body.contains("your orders"));
    visitor.sign_in("lost@example.com", crate::support::fixtures::PASSWORD);
    let missing = visitor.get("/orders/999999/checkout");
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("Sign out") && missing.body.contains("lost"), "the header still shows who is signed in");
    assert!(missing.body.contains("Back to your orders"));
    assert_eq!(missing.header("cache-control"), Some("no-store"));
}

#[test]
fn the_catalogue_is_open_to_visitors_who_are_asked_to_sign_in_to_order() {
    use agora::payments::gateway::ScriptedGateway;
    let app = crate::support::TestApp::spawn(std::sync::Arc::new(ScriptedGateway::succeeding()));
    crate::support::fixtures::catalogue(&mut app.conn(), 2);
    let page = crate::support::Client::new(&app.url).get("/products");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Product 1") && page.body.contains("formaction=\"/products/sign-in\""), "{}", page.body);
    assert!(!page.body.contains("Place order with"));
}

#[test]
fn a_new_person_signs_up_and_is_signed_in_and_a_taken_email_is_explained() {
    let app = app_with_user();
    let client = Client::new(&app.url);
    let form = client.get("/signup?next=/products");
    let token = form.csrf_token();
    let short = client.post_form(
        "/signup",
        &[("csrf_token", &token), ("name", "Ann"), ("email", "ann@example.com"), ("password", "short"), ("password_again", "short"), ("next", "/products")],
    );
    assert_eq!(short.status, 422);
    assert!(short.body.contains("at least 8 characters") && short.body.contains("value=\"ann@example.com\""));
    assert!(!short.body.contains("value=\"short\""), "a password is never sent back");
    let taken = client.post_form(
        "/signup",
        &[("csrf_token", &token), ("name", "Imposter"), ("email", "MEMBER@example.com"), ("password", "long enough"), ("password_again", "long enough")],
    );
    assert_eq!(taken.status, 409);
    assert!(taken.body.contains("already exists"));
    let made = client.post_form(
        "/signup",
        &[("csrf_token", &token), ("name", "Ann"), ("email", "ann@example.com"), ("password", "long enough"), ("password_again", "long enough"), ("next", "/products")],
    );
    assert_eq!((made.status, made.location.as_deref()), (303, Some("/products")), "back where sign-up was asked from");
    let page = client.get("/products").body;
    assert!(page.contains("Welcome to Agora") && page.contains("Sign out"), "signed in");
    let again = Client::new(&app.url);
    again.sign_in("ann@example.com", "long enough");
}

#[test]
fn changing_the_password_needs_the_current_one_and_signs_out_every_other_device() {
    let app = app_with_user();
    let laptop = Client::new(&app.url);
    laptop.sign_in("member@example.com", PASSWORD);
    let phone = Client::new(&app.url);
    phone.sign_in("member@example.com", PASSWORD);
    let token = laptop.csrf_token();
    let wrong = laptop.post_form("/account/password", &[("csrf_token", &token), ("current", "not it"), ("new", "a new secret"), ("new_again", "a new secret")]);
    assert_eq!(wrong.status, 422);
    assert!(wrong.body.contains("current password was not right"));
    let changed = laptop.post_form("/account/password", &[("csrf_token", &token), ("current", PASSWORD), ("new", "a new secret"), ("new_again", "a new secret")]);
    assert_eq!(changed.status, 303);
    assert!(laptop.get("/account").body.contains("Your password was changed"), "this device stays signed in");
    assert_eq!(phone.get("/account").status, 303, "the other device is signed out");
    let login = Client::new(&app.url);
    let token = login.get("/login").csrf_token();
    assert_eq!(login.post_form("/login", &[("csrf_token", &token), ("email", "member@example.com"), ("password", PASSWORD)]).status, 401);
    login.sign_in("member@example.com", "a new secret");
}

#[test]
fn a_form_sent_after_the_session_ended_signs_in_and_returns_to_its_page_with_a_reason() {
    let app = app_with_user();
    let client = Client::new(&app.url);
    client.sign_in("member@example.com", PASSWORD);
    let token = client.csrf_token();
    // The session ends elsewhere (another device signs out everywhere) while the checkout is open.
    let other_device = Client::new(&app.url);
    other_device.set_cookie(client.cookie());
    assert_eq!(other_device.post_form("/account/sign-out-everywhere", &[("csrf_token", &token)]).status, 303);
    let referer = format!("{}/orders/7/checkout", app.url);
    let sent = client.post_form_with_referer("/orders/7/pay", &[("csrf_token", &token)], &referer);
    assert_eq!(sent.status, 303);
    assert_eq!(sent.location.as_deref(), Some("/login?next=/orders/7/checkout"), "back to the checkout, not to the POST");
    let login = client.get("/login?next=/orders/7/checkout").body;
    assert!(login.contains("Your session has ended. Please sign in again."));
    // A foreign Referer is never followed.
    let elsewhere = client.post_form_with_referer("/orders/7/pay", &[("csrf_token", &token)], "https://evil.example/orders/7/checkout");
    assert_eq!(elsewhere.location.as_deref(), Some("/login"));
}
