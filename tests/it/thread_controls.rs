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
    assert!(page.contains(&format!("data-voted=\"{comment}\"")), "the page tells its script to offer the undo");
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

/// A 200-comment discussion (one page), its comments a sentence or two long: 40 at the top, 120
/// replies to them and 40 replies to those.
fn two_hundred_comments(app: &TestApp) -> i64 {
    let mut conn = app.conn();
    let author = fixtures::user(&mut conn, "busy@example.com");
    let post = fixtures::post(&mut conn, author, "Two hundred comments");
    let mut ids = Vec::new();
    for i in 0..200 {
        let body = format!("Comment {i}: the delivery estimate was right, and the packaging kept everything dry all the way here.");
        let parent = match i {
            0..40 => None,
            40..160 => Some(ids[i % 40]),
            _ => Some(ids[40 + i % 120]),
        };
        ids.push(fixtures::comment(&mut conn, post, parent, author, &body));
    }
    post
}

#[test]
fn a_comment_costs_at_most_600_bytes_of_the_page_with_its_controls_still_reachable() {
    let app = app();
    let post = two_hundred_comments(&app);
    fixtures::user(&mut app.conn(), "reader@example.com");
    let visitor = Client::new(&app.url).get(&format!("/posts/{post}")).body;
    let reader = signed_in(&app, "reader@example.com").get(&format!("/posts/{post}")).body;
    for (who, page) in [("a visitor", &visitor), ("someone signed in", &reader)] {
        assert_eq!(page.matches("<article class=\"comment").count(), 200, "{who} sees every comment");
        assert!(page.len() <= 200 * 600, "{who}'s whole page is {} bytes: {} a comment", page.len(), page.len() / 200);
    }
    // Every comment keeps its link (its own page, with its controls) and, for people signed in,
    // reply; the script draws vote, edit and delete from who is looking.
    assert_eq!(reader.matches("class=\"reply-link\"").count(), 200);
    assert!(reader.contains("data-me=\"") && reader.contains("id=\"vote-form\""));
}

#[test]
fn without_script_a_comments_own_page_offers_its_vote_or_its_edit_and_delete() {
    let app = app();
    let mut conn = app.conn();
    let author = fixtures::user(&mut conn, "author@example.com");
    fixtures::user(&mut conn, "reader@example.com");
    let post = fixtures::post(&mut conn, author, "Controls");
    let comment = fixtures::comment(&mut conn, post, None, author, "Vote on me");
    let own_page = format!("/posts/{post}/comments/{comment}");

    let reader = signed_in(&app, "reader@example.com");
    let page = reader.get(&own_page).body;
    assert!(page.contains(&format!("formaction=\"/comments/{comment}/upvote\"")), "an upvote button");
    let token = reader.csrf_token();
    assert_eq!(reader.post_form(&format!("/comments/{comment}/upvote"), &[("csrf_token", &token)]).status, 303);
    let page = reader.get(&own_page).body;
    assert!(page.contains(&format!("formaction=\"/comments/{comment}/unvote\"")), "then its undo");
    assert!(!page.contains(&format!("/comments/{comment}/edit\">")), "no edit for a comment not yours");

    let own = signed_in(&app, "author@example.com").get(&own_page).body;
    assert!(own.contains(&format!("href=\"/comments/{comment}/edit\"")) && own.contains(&format!("href=\"/comments/{comment}/delete\"")));
    assert!(!own.contains(&format!("formaction=\"/comments/{comment}/upvote\"")), "no vote for your own words");
    assert!(!Client::new(&app.url).get(&own_page).body.contains("/upvote\""), "nothing for a visitor");
}

/// A page as a client that accepts `encoding` receives it: the bytes on the wire and the
/// `Content-Encoding` header.
fn fetched(url: &str, encoding: &str) -> (Vec<u8>, Option<String>) {
    let response = ureq::get(url).set("Accept-Encoding", encoding).call().unwrap();
    let coding = response.header("Content-Encoding").map(str::to_string);
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut response.into_reader(), &mut bytes).unwrap();
    (bytes, coding)
}

#[test]
fn the_200_comment_page_travels_compressed_in_30_kib() {
    let app = app();
    let post = two_hundred_comments(&app);
    let url = format!("{}/posts/{post}", app.url);
    let (plain, none) = fetched(&url, "identity");
    assert_eq!(none, None);
    for encoding in ["br", "gzip", "zstd"] {
        let (sent, coding) = fetched(&url, encoding);
        assert_eq!(coding.as_deref(), Some(encoding));
        assert!(sent.len() <= 30 * 1024, "{encoding}: {} bytes on the wire (of {})", sent.len(), plain.len());
    }
}

#[test]
fn a_visitor_revalidates_public_pages_with_an_etag_and_personal_pages_are_never_stored() {
    let app = app();
    let mut conn = app.conn();
    let author = fixtures::user(&mut conn, "author@example.com");
    let post = fixtures::post(&mut conn, author, "Cached by browsers");
    fixtures::comment(&mut conn, post, None, author, "first");
    for path in [format!("/posts/{post}"), "/products".to_string(), "/posts".to_string()] {
        let first = ureq::get(&format!("{}{path}", app.url)).call().unwrap();
        assert_eq!(first.header("Cache-Control"), Some("public, no-cache"), "{path}");
        let tag = first.header("ETag").unwrap_or_else(|| panic!("{path} has an ETag")).to_string();
        let again = ureq::get(&format!("{}{path}", app.url)).set("If-None-Match", &tag).call().unwrap();
        assert_eq!(again.status(), 304, "{path}: the browser's copy is still good");
        assert_eq!(again.into_string().unwrap(), "");
    }
    // A new comment changes the page, and so its tag.
    let page = format!("{}/posts/{post}", app.url);
    let tag = ureq::get(&page).call().unwrap().header("ETag").unwrap().to_string();
    fixtures::user(&mut conn, "reader@example.com");
    let reader = signed_in(&app, "reader@example.com");
    let token = reader.csrf_token();
    assert_eq!(reader.post_form(&format!("/posts/{post}/comments"), &[("csrf_token", &token), ("body", "second")]).status, 303);
    let changed = ureq::get(&page).set("If-None-Match", &tag).call().unwrap();
    assert_eq!(changed.status(), 200);
    assert!(changed.into_string().unwrap().contains("second"));
    // Signed in, the same page is theirs alone.
    let personal = reader.get(&format!("/posts/{post}"));
    assert_eq!(personal.header("Cache-Control"), Some("no-store"));
    assert_eq!(personal.header("ETag"), None);
}

#[test]
fn static_files_are_named_by_their_content_and_kept_for_a_year() {
    let app = app();
    let home = Client::new(&app.url).get("/posts").body;
    let css = home.split("rel=\"stylesheet\" href=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let js = home.split("<script src=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    for (path, kind) in [(&css, "text/css"), (&js, "text/javascript")] {
        assert!(path.starts_with("/static/app.") && path.matches('.').count() == 2, "{path} carries a digest");
        let file = ureq::get(&format!("{}{path}", app.url)).call().unwrap();
        assert_eq!(file.header("Cache-Control"), Some("public, max-age=31536000, immutable"));
        assert!(file.content_type().starts_with(kind));
    }
    // Another build's name (a page from a server not yet restarted) still gets a file, not kept.
    let stale = ureq::get(&format!("{}/static/app.000000000000.css", app.url)).call().unwrap();
    assert_eq!(stale.header("Cache-Control"), Some("public, no-cache"));
    assert_eq!(ureq::get(&format!("{}/static/other.css", app.url)).call().unwrap_err().kind(), ureq::ErrorKind::HTTP);
}
