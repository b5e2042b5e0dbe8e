//! Two servers of one installation (same database, same Redis prefix, as `sibling` makes them)
//! agree on what must be shared: a request gets the same answer whichever server it lands on.
//! (Sessions across real processes with one `SESSION_SECRET`: `processes.rs`.)

use std::sync::Arc;

use agora::payments::gateway::ScriptedGateway;

use crate::support::fixtures::{self, PASSWORD};
use crate::support::{Client, TestApp};

fn try_sign_in(client: &Client, email: &str, password: &str) -> u16 {
    let token = client.get("/login").csrf_token();
    client.post_form("/login", &[("csrf_token", &token), ("email", email), ("password", password), ("next", "/")]).status
}

#[test]
fn wrong_passwords_sent_to_two_servers_add_up_to_one_limit() {
    let app = TestApp::spawn(Arc::new(ScriptedGateway::succeeding()));
    fixtures::user(&mut app.conn(), "victim@example.com");
    let (_other, other_url) = app.sibling(agora::chat::limits::RateSettings::default());
    let (on_a, on_b) = (Client::from_address(&app.url, "198.51.100.9"), Client::from_address(&other_url, "198.51.100.9"));
    for attempt in 0..10 {
        let server = if attempt % 2 == 0 { &on_a } else { &on_b };
        assert_eq!(try_sign_in(server, "victim@example.com", "guess"), 401, "attempt {attempt}");
    }
    // Five on each server: neither alone has seen ten, together they have.
    assert_eq!(try_sign_in(&on_a, "victim@example.com", PASSWORD), 429, "server A counts B's failures");
    assert_eq!(try_sign_in(&on_b, "victim@example.com", PASSWORD), 429, "server B counts A's failures");
}

#[test]
fn a_comment_made_on_one_server_is_on_the_others_cached_page() {
    let app = TestApp::spawn(Arc::new(ScriptedGateway::succeeding()));
    let mut conn = app.conn();
    let author = fixtures::user(&mut conn, "author@example.com");
    let post = fixtures::post(&mut conn, author, "Two servers");
    fixtures::comment(&mut conn, post, None, author, "the first word");
    let (_other, other_url) = app.sibling(agora::chat::limits::RateSettings::default());
    let visitor = Client::new(&other_url);
    let page = format!("/posts/{post}");
    visitor.get(&page);
    let warm = visitor.get(&page);
    assert_eq!(warm.queries, Some(0), "server B serves the page from Redis");

    let person = Client::new(&app.url);
    person.sign_in("author@example.com", PASSWORD);
    let token = person.get(&page).csrf_token();
    assert_eq!(person.post_form(&format!("/posts/{post}/comments"), &[("csrf_token", &token), ("body", "a second word, on server A")]).status, 303);

    let after = visitor.get(&page);
    assert!(after.body.contains("a second word, on server A"), "server B's cached page learnt of A's comment");
    assert!(after.body.contains("the first word"));
}
