//! What people do in a thread beyond reading it: where a new comment lands, votes and their undo,
//! deleting, starting a discussion, Markdown that cannot carry script, and forms that outlive
//! their token.

use std::sync::Arc;

use agora::payments::gateway::ScriptedGateway;

use crate::support::fixtures::{self, PASSWORD};
use crate::support::{Client, TestApp};

fn app() -> TestApp {
    TestApp::spawn(Arc::new(ScriptedGateway::succeeding()))
}

fn signed_in(app: &TestApp, email: &str) -> Client {
    let client = Client::new(&app.url);
    client.sign_in(email, PASSWORD);
    client
}

/// The part of a thread page people wrote: the post and its comments.
fn written_part(page: &str) -> &str {
    let start = page.find("id=\"post\"").expect("a thread page");
    let end = page.rfind("</section>").unwrap();
    &page[start..end]
}

#[test]
fn a_new_comment_on_a_long_thread_lands_on_the_page_that_shows_it_with_a_notice_shown_once() {
    let app = app();
    let mut conn = app.conn();
    let author = fixtures::user(&mut conn, "talker@example.com");
    let post = fixtures::post(&mut conn, author, "Long");
    fixtures::discussion(&mut conn, post, author, 2, 3, 6); // 728 comments: four pages
    let client = signed_in(&app, "talker@example.com");
    let token = client.csrf_token();
    let posted = client.post_form(&format!("/posts/{post}/comments"), &[("csrf_token", &token), ("body", "Where did it go?")]);
    assert_eq!(posted.status, 303);
    let location = posted.location.unwrap();
    assert!(location.contains("?after="), "not the first page: {location}");
    let (page_url, anchor) = location.split_once('#').unwrap();
    let page = client.get(page_url);
    assert!(page.body.contains(&format!("id=\"{anchor}\"")), "the page it lands on shows the comment");
    assert!(page.body.contains("Your comment was posted."));
    assert!(!client.get(page_url).body.contains("Your comment was posted."), "the notice shows once");
}

#[test]
fn later_pages_say_what_each_reply_answers_and_link_back_to_earlier_pages() {
    let app = app();
    let mut conn = app.conn();
    let author = fixtures::user(&mut conn, "pager@example.com");
    let post = fixtures::post(&mut conn, author, "Pages");
    fixtures::discussion(&mut conn, post, author, 2, 3, 6);
    let client = Client::new(&app.url);
    let mut url = format!("/posts/{post}");
    let mut pages = vec![url.clone()];
    loop {
        let cold = client.get(&url);
        assert_eq!(cold.queries, Some(2), "{url} cold: the post with both cursors, then the rows");
        assert_eq!(client.get(&url).queries, Some(0), "{url} warm");
        let page = cold.body;
        let Some(at) = page.find("id=\"more-comments\" href=\"") else { break };
        let rest = &page[at + 25..];
        url = rest[..rest.find('"').unwrap()].replace("&#x2f;", "/");
        pages.push(url.clone());
    }
    assert_eq!(pages.len(), 4);
    for (i, url) in pages.iter().enumerate().skip(1) {
        let page = client.get(url).body;
        assert!(page.contains(&format!("id=\"first-page\" href=\"/posts/{post}\"")));
        assert!(page.contains(&format!("id=\"previous-page\" href=\"{}\"", pages[i - 1])), "page {i} links back to page {}", i - 1);
        // A page that starts mid-thread begins with replies whose parents are on earlier pages.
        assert!(page.contains("class=\"in-reply-to\"") && page.contains(&format!("<a href=\"/posts/{post}/comments/")));
        assert!(page.contains(">pager</a>, on an earlier page"), "naming whom it answers");
    }
    assert!(!client.get(&pages[0]).body.contains("id=\"previous-page\""), "the first page has no way back");
}

#[test]
fn a_vote_can_be_undone_and_nobody_can_vote_for_themselves() {
    let app = app();
    let mut conn = app.conn();
    let author = fixtures::user(&mut conn, "writer@example.com");
    fixtures::user(&mut conn, "fan@example.com");
    let post = fixtures::post(&mut conn, author, "Votes");
    let comment = fixtures::comment(&mut conn, post, None, author, "vote for me");
    let writer = signed_in(&app, "writer@example.com");
    let token = writer.csrf_token();
    let own = writer.post_form_json(&format!("/comments/{comment}/upvote"), &[("csrf_token", &token)]);
    assert_eq!(own.status, 422);
    assert!(own.body.contains("own comment"));
    let fallback = writer.post_form(&format!("/comments/{comment}/upvote"), &[("csrf_token", &token)]);
    assert_eq!(fallback.status, 303);
    assert!(writer.get(&format!("/posts/{post}")).body.contains("You cannot vote for your own comment."));

    let fan = signed_in(&app, "fan@example.com");
    let token = fan.csrf_token();
    let up = fan.post_form_json(&format!("/comments/{comment}/upvote"), &[("csrf_token", &token)]);
    assert_eq!(up.status, 200);
    let up: serde_json::Value = serde_json::from_str(&up.body).unwrap();
    assert_eq!((up["points"].as_i64(), up["voted"].as_bool()), (Some(1), Some(true)));
    let page = fan.get(&format!("/posts/{post}")).body;
    assert!(page.contains(&format!(".unvote[data-comment=\"{comment}\"]")), "the page offers the undo");
    let undo = fan.post_form_json(&format!("/comments/{comment}/unvote"), &[("csrf_token", &token)]);
    let undo: serde_json::Value = serde_json::from_str(&undo.body).unwrap();
    assert_eq!((undo["points"].as_i64(), undo["voted"].as_bool()), (Some(0), Some(false)));
    let again = fan.post_form_json(&format!("/comments/{comment}/unvote"), &[("csrf_token", &token)]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&again.body).unwrap()["points"], 0, "undoing twice takes nothing more");
    assert!(Client::new(&app.url).get(&format!("/posts/{post}")).body.contains("0 points"));
}

#[test]
fn markdown_links_work_and_no_hostile_body_reaches_a_page() {
    let app = app();
    let mut conn = app.conn();
    fixtures::user(&mut conn, "mallory@example.com");
    let client = signed_in(&app, "mallory@example.com");
    let token = client.csrf_token();
    // Each on its own, so each meets the parser where it starts a block as well as inline.
    let hostile = [
        "<script>alert(1)</script>",
        "[x](javascript:alert(2)) and [y](JAVASCRIPT:alert(2))",
        "text <img src=x onerror=alert(3)>",
        "<a href=\"#\" onclick=\"alert(4)\">y</a>",
        "<iframe src=\"//evil.example\"></iframe>",
        "<style>body{display:none}</style>",
        "[ok](https://example.com/docs) **bold**",
    ]
    .join("\n\n");
    let hostile = hostile.as_str();
    let created = client.post_form("/posts", &[("csrf_token", &token), ("title", "Hostile post"), ("body", hostile)]);
    assert_eq!(created.status, 303, "{}", created.body);
    let post_url = created.location.unwrap();
    let post_id: i64 = post_url.trim_start_matches("/posts/").parse().unwrap();
    let commented = client.post_form(&format!("{post_url}/comments"), &[("csrf_token", &token), ("body", hostile)]);
    assert_eq!(commented.status, 303);
    for page in [client.get(&post_url).body, Client::new(&app.url).get(&post_url).body] {
        let written = written_part(&page).to_lowercase();
        // Text that was typed is escaped, so every `<` left is a tag the server made.
        for tag in written.split('<').skip(1).map(|t| &t[..t.find('>').unwrap_or(t.len())]) {
            let name = tag.split_whitespace().next().unwrap_or("");
            assert!(!["script", "img", "iframe", "style"].contains(&name), "<{tag}> reached the page");
            for attribute in ["onerror", "onclick", "javascript:", "style="] {
                assert!(!tag.contains(attribute), "<{tag}> reached the page");
            }
        }
        assert!(written.contains("&lt;script&gt;"), "typed HTML is shown as text");
        assert!(written.contains("<a href=\"https://example.com/docs\" rel=\"nofollow ugc noopener noreferrer\">ok</a>"));
        assert!(written.contains("<strong>bold</strong>"));
    }
    let _ = post_id;
}

#[test]
fn a_form_whose_token_expired_comes_back_with_the_text_and_a_fresh_token() {
    let app = app();
    let mut conn = app.conn();
    let author = fixtures::user(&mut conn, "tabs@example.com");
    let post = fixtures::post(&mut conn, author, "Tabs");
    let client = signed_in(&app, "tabs@example.com");
    let stale = client.csrf_token();
    // Signing out and in again in another tab starts a new session with a new token.
    assert_eq!(client.post_form("/logout", &[("csrf_token", &stale)]).status, 303);
    client.sign_in("tabs@example.com", PASSWORD);
    let refused = client.post_form(&format!("/posts/{post}/comments"), &[("csrf_token", &stale), ("body", "my careful words")]);
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("my careful words"), "the text is kept");
    assert!(refused.body.contains("nothing was posted yet"));
    let fresh = refused.csrf_token();
    assert_ne!(fresh, stale);
    let posted = client.post_form(&format!("/posts/{post}/comments"), &[("csrf_token", &fresh), ("body", "my careful words")]);
    assert_eq!(posted.status, 303, "the re-rendered form works");
}

#[test]
fn deleting_asks_first_and_a_new_discussion_explains_what_is_wrong() {
    let app = app();
    let mut conn = app.conn();
    let author = fixtures::user(&mut conn, "starter@example.com");
    let client = signed_in(&app, "starter@example.com");
    let token = client.csrf_token();
    let refused = client.post_form("/posts", &[("csrf_token", &token), ("title", " a "), ("body", "kept body")]);
    assert_eq!(refused.status, 422);
    assert!(refused.body.contains("at least 3 characters") && refused.body.contains("kept body"));
    let created = client.post_form("/posts", &[("csrf_token", &token), ("title", "A real title"), ("body", "Hello")]);
    let post_url = created.location.unwrap();
    let page = client.get(&post_url).body;
    assert!(page.contains("<h1>A real title</h1>") && page.contains("Your discussion is open."));
    let post: i64 = post_url.trim_start_matches("/posts/").parse().unwrap();
    let comment = fixtures::comment(&mut conn, post, None, author, "regrettable");
    let confirm = client.get(&format!("/comments/{comment}/delete"));
    assert_eq!(confirm.status, 200);
    assert!(confirm.body.contains("regrettable") && confirm.body.contains("Replies to it stay"));
    let deleted = client.post_form(&format!("/comments/{comment}/delete"), &[("csrf_token", &token)]);
    assert_eq!(deleted.status, 303);
    let page = client.get(&deleted.location.unwrap()).body;
    assert!(!page.contains("regrettable") && page.contains("Your comment was deleted."));
}
