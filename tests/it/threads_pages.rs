//! Comment threads: two queries cold, zero warm, Russian-doll invalidation, counters, Redis
//! outages, escaping.

use diesel::prelude::*;
use std::sync::Arc;

use agora::payments::gateway::ScriptedGateway;
use agora::schema::{comments, posts};

use crate::support::app::TestAppOptions;
use crate::support::fixtures::{self, PASSWORD};
use crate::support::{Client, TestApp};

fn app() -> TestApp {
    TestApp::spawn(Arc::new(ScriptedGateway::succeeding()))
}

fn rendered(app: &TestApp) -> Vec<i64> {
    let mut ids = app.services.threads.metrics.take_rendered();
    ids.sort_unstable();
    ids
}

/// The HTML of one comment's fragment, replies included, as served.
fn fragment(page: &str, id: i64) -> String {
    let at = page.find(&format!("\" id=\"c{id}\" data-author=")).expect("comment on the page");
    let start = page[..at].rfind("<article").unwrap();
    let mut depth = 0;
    let mut i = start;
    loop {
        let open = page[i..].find("<article").map(|o| i + o);
        let close = page[i..].find("</article>").map(|c| i + c).unwrap();
        match open {
            Some(o) if o < close => {
                depth += 1;
                i = o + 8;
            }
            _ => {
                depth -= 1;
                i = close + 10;
                if depth == 0 {
                    return page[start..i].to_string();
                }
            }
        }
    }
}

#[test]
fn twenty_or_five_hundred_nested_comments_cost_the_same_two_queries_cold() {
    let app = app();
    let mut conn = app.conn();
    let user = fixtures::user(&mut conn, "writer@example.com");
    let small = fixtures::post(&mut conn, user, "Small");
    fixtures::discussion(&mut conn, small, user, 20, 0, 1);
    let large = fixtures::post(&mut conn, user, "Large");
    // 2 + 6 + 18 + 54 + 162 + 486 = 728 comments, six levels deep.
    let levels = fixtures::discussion(&mut conn, large, user, 2, 3, 6);
    assert!(levels.iter().map(Vec::len).sum::<usize>() >= 500);
    let client = Client::new(&app.url);

    let small_page = client.get(&format!("/posts/{small}"));
    let large_page = client.get(&format!("/posts/{large}"));
    assert_eq!(small_page.status, 200);
    assert_eq!(small_page.body.matches("class=\"comment\"").count(), 20);
    assert_eq!(large_page.body.matches("class=\"comment\"").count(), 200, "a page shows at most 200 comments");
    assert!(large_page.body.contains("id=\"more-comments\""));
    assert_eq!(small_page.queries, large_page.queries, "the same count whatever the size");
    assert!(large_page.queries.unwrap() <= 2, "{:?} queries", large_page.queries);
    // The deepest level shown is nested five articles deep inside its root.
    let deepest = levels[5][0];
    let root_html = fragment(&large_page.body, levels[0][0]);
    assert!(root_html.contains(&format!("id=\"c{deepest}\"")));
}

#[test]
fn the_next_pages_follow_on_where_the_first_stopped() {
    let app = app();
    let mut conn = app.conn();
    let user = fixtures::user(&mut conn, "pager@example.com");
    let post = fixtures::post(&mut conn, user, "Paged");
    let levels = fixtures::discussion(&mut conn, post, user, 2, 3, 6);
    let client = Client::new(&app.url);
    let mut seen = std::collections::HashSet::new();
    let mut url = format!("/posts/{post}");
    for _ in 0..10 {
        let page = client.get(&url);
        assert_eq!(page.status, 200);
        for part in page.body.split("<article class=\"comment\" id=\"c").skip(1) {
            let id: i64 = part[..part.find('"').unwrap()].parse().unwrap();
            assert!(seen.insert(id), "comment {id} appeared twice");
        }
        match page.body.find("id=\"more-comments\" href=\"") {
            Some(i) => {
                let rest = &page.body[i + 25..];
                url = rest[..rest.find('"').unwrap()].to_string();
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), levels.iter().map(Vec::len).sum::<usize>(), "every comment, once, over the pages");
}

#[test]
fn a_warm_page_makes_no_query_and_is_the_same_html() {
    let app = app();
    let mut conn = app.conn();
    let user = fixtures::user(&mut conn, "warm@example.com");
    let post = fixtures::post(&mut conn, user, "Warm");
    fixtures::discussion(&mut conn, post, user, 3, 2, 3);
    let anonymous = Client::new(&app.url);
    let cold = anonymous.get(&format!("/posts/{post}"));
    let warm = anonymous.get(&format!("/posts/{post}"));
    assert_eq!(cold.queries, Some(2));
    assert_eq!(warm.queries, Some(0));
    assert_eq!(warm.body, cold.body);
    assert!(!cold.sets_cookie && !warm.sets_cookie, "reading needs no session: no cookie for anonymous readers");

    // Signed in too: who you are comes from the cookie, your votes from the cache.
    let member = Client::new(&app.url);
    member.sign_in("warm@example.com", PASSWORD);
    member.get(&format!("/posts/{post}"));
    assert_eq!(member.get(&format!("/posts/{post}")).queries, Some(0));

    // The cache's own account of it, for administrators only.
    assert_eq!(member.get("/admin/cache.json").status, 404);
    fixtures::make_admin(&mut conn, "cache-admin@example.com");
    let admin = Client::new(&app.url);
    admin.sign_in("cache-admin@example.com", PASSWORD);
    let metrics: serde_json::Value = serde_json::from_str(&admin.get("/admin/cache.json").body).unwrap();
    assert_eq!(metrics["page_misses"], 1, "one cold load");
    assert_eq!(metrics["page_hits"], 3, "three warm ones");
    assert_eq!(metrics["fragments_rendered"], 3 + 6 + 12, "every comment rendered once");
    assert!(admin.get("/admin/cache").body.contains("id=\"page-hits\">3<"));
}

#[test]
fn editing_a_grandchild_re_renders_it_and_its_ancestors_only() {
    let app = app();
    let mut conn = app.conn();
    let author = fixtures::user(&mut conn, "author@example.com");
    let post = fixtures::post(&mut conn, author, "Dolls");
    let grandparent = fixtures::comment(&mut conn, post, None, author, "grandparent");
    let parent = fixtures::comment(&mut conn, post, Some(grandparent), author, "parent");
    let grandchild = fixtures::comment(&mut conn, post, Some(parent), author, "grandchild");
    let cousin = fixtures::comment(&mut conn, post, Some(grandparent), author, "cousin");
    let sibling = fixtures::comment(&mut conn, post, Some(parent), author, "sibling");
    let other_root = fixtures::comment(&mut conn, post, None, author, "another thread");
    let client = Client::new(&app.url);
    client.sign_in("author@example.com", PASSWORD);

    let before = client.get(&format!("/posts/{post}")).body;
    assert_eq!(rendered(&app).len(), 6, "a cold cache renders every comment");
    let token = client.csrf_token();
    let saved = client.post_form(&format!("/comments/{grandchild}/edit"), &[("csrf_token", &token), ("body", "grandchild, edited")]);
    assert_eq!(saved.status, 303);
    let after = client.get(&format!("/posts/{post}"));
    assert!(after.body.contains("grandchild, edited"));
    assert_eq!(rendered(&app), vec![grandparent, parent, grandchild], "the edit and its ancestors, nothing else");

    for unchanged in [cousin, sibling, other_root] {
        assert_eq!(fragment(&before, unchanged), fragment(&after.body, unchanged), "comment {unchanged} came from the cache");
    }
    for changed in [grandchild, parent, grandparent] {
        assert_ne!(fragment(&before, changed), fragment(&after.body, changed), "comment {changed} changed");
    }
    assert_eq!(after.queries, Some(2), "one cold load after the write");
}

#[test]
fn an_upvote_counts_once_and_re_renders_only_its_branch() {
    let app = app();
    let mut conn = app.conn();
    let author = fixtures::user(&mut conn, "op@example.com");
    let post = fixtures::post(&mut conn, author, "Votes");
    let root = fixtures::comment(&mut conn, post, None, author, "root");
    let reply = fixtures::comment(&mut conn, post, Some(root), author, "reply");
    fixtures::comment(&mut conn, post, None, author, "bystander");
    fixtures::user(&mut conn, "voter@example.com");
    let voter = Client::new(&app.url);
    voter.sign_in("voter@example.com", PASSWORD);
    voter.get(&format!("/posts/{post}"));
    rendered(&app);
    let token = voter.csrf_token();
    for _ in 0..2 {
        assert_eq!(voter.post_form(&format!("/comments/{reply}/upvote"), &[("csrf_token", &token)]).status, 303);
    }
    let page = voter.get(&format!("/posts/{post}")).body;
    assert!(fragment(&page, reply).contains("1 point<"), "one vote, however many clicks");
    assert_eq!(rendered(&app), vec![root, reply]);
    assert!(page.contains(&format!("data-voted=\"{reply}\"")), "your vote is shown to you");
    let stranger = Client::new(&app.url).get(&format!("/posts/{post}")).body;
    assert!(!stranger.contains("data-voted"), "and to nobody else");
}

#[test]
fn a_reply_through_the_form_appears_on_the_next_load_with_its_counters() {
    let app = app();
    let mut conn = app.conn();
    let author = fixtures::user(&mut conn, "talker@example.com");
    let post = fixtures::post(&mut conn, author, "Replies");
    let root = fixtures::comment(&mut conn, post, None, author, "first");
    let client = Client::new(&app.url);
    client.sign_in("talker@example.com", PASSWORD);
    client.get(&format!("/posts/{post}"));

    let form = client.get(&format!("/comments/{root}/reply"));
    assert!(form.body.contains("first"), "the reply form quotes what you answer");
    let sent = client.post_form(&format!("/comments/{root}/replies"), &[("csrf_token", &form.csrf_token()), ("body", "second, nested")]);
    assert_eq!(sent.status, 303);
    let location = sent.location.unwrap();
    assert!(location.starts_with(&format!("/posts/{post}#c")));
    let page = client.get(&format!("/posts/{post}")).body;
    assert!(fragment(&page, root).contains("second, nested"), "the reply sits inside its parent");
    assert!(page.contains("<span id=\"comments-count\">2</span>"));

    let empty = client.post_form(&format!("/comments/{root}/replies"), &[("csrf_token", &form.csrf_token()), ("body", "   ")]);
    assert_eq!(empty.status, 422);
    assert!(empty.body.contains("cannot be empty"));
    let no_token = client.post_form(&format!("/posts/{post}/comments"), &[("body", "sneaky")]);
    assert_eq!(no_token.status, 403);
    assert_eq!(client.post_form("/comments/999999/replies", &[("csrf_token", &form.csrf_token()), ("body", "x")]).status, 404);

    let (total, children): (i32, i32) = posts::table
        .inner_join(comments::table)
        .filter(comments::id.eq(root))
        .select((posts::comments_count, comments::children_count))
        .first(&mut conn)
        .unwrap();
    assert_eq!((total, children), (2, 1));
}

#[test]
fn the_reconciliation_job_repairs_counters_broken_by_hand() {
    let app = app();
    let mut conn = app.conn();
    let author = fixtures::user(&mut conn, "counter@example.com");
    let post = fixtures::post(&mut conn, author, "Counters");
    let levels = fixtures::discussion(&mut conn, post, author, 2, 2, 2);
    let client = Client::new(&app.url);
    client.get(&format!("/posts/{post}"));
    diesel::update(posts::table.find(post)).set(posts::comments_count.eq(99)).execute(&mut conn).unwrap();
    diesel::update(comments::table.find(levels[0][0])).set(comments::children_count.eq(0)).execute(&mut conn).unwrap();

    let job = agora::jobs::NewJob::new(agora::threads::counters::RECONCILE_COUNTERS, serde_json::json!({}));
    agora::jobs::enqueue(&mut conn, &job, app.services.clock.now()).unwrap();
    assert_eq!(app.drain_jobs(), 1);
    let total: i32 = posts::table.find(post).select(posts::comments_count).first(&mut conn).unwrap();
    let children: i32 = comments::table.find(levels[0][0]).select(comments::children_count).first(&mut conn).unwrap();
    assert_eq!((total, children), (6, 2));
    assert!(client.get(&format!("/posts/{post}")).body.contains("<span id=\"comments-count\">6</span>"), "and the page shows it");
}

#[test]
fn comment_bodies_are_escaped() {
    let app = app();
    let mut conn = app.conn();
    let author = fixtures::user(&mut conn, "mallory@example.com");
    let post = fixtures::post(&mut conn, author, "<b>Title</b>");
    fixtures::comment(&mut conn, post, None, author, "<script>alert(1)</script>");
    let page = Client::new(&app.url).get(&format!("/posts/{post}")).body;
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "shown as the text that was typed");
    assert!(!page.contains("<script>alert(1)"));
    assert!(!page.contains("<b>Title</b>"));
}

#[test]
fn only_the_author_can_edit_and_a_deleted_comment_keeps_its_replies() {
    let app = app();
    let mut conn = app.conn();
    let author = fixtures::user(&mut conn, "owner@example.com");
    fixtures::user(&mut conn, "intruder@example.com");
    let post = fixtures::post(&mut conn, author, "Mine");
    let root = fixtures::comment(&mut conn, post, None, author, "original words");
    let reply = fixtures::comment(&mut conn, post, Some(root), author, "still here");
    let intruder = Client::new(&app.url);
    intruder.sign_in("intruder@example.com", PASSWORD);
    let token = intruder.csrf_token();
    assert_eq!(intruder.get(&format!("/comments/{root}/edit")).status, 404);
    assert_eq!(intruder.post_form(&format!("/comments/{root}/edit"), &[("csrf_token", &token), ("body", "defaced")]).status, 404);
    assert_eq!(intruder.post_form(&format!("/comments/{root}/delete"), &[("csrf_token", &token)]).status, 404);

    let owner = Client::new(&app.url);
    owner.sign_in("owner@example.com", PASSWORD);
    let page = owner.get(&format!("/posts/{post}")).body;
    assert!(page.contains(&format!("data-me=\"{author}\"")), "the page tells its script whose comments get edit links");
    assert_eq!(owner.post_form(&format!("/comments/{root}/delete"), &[("csrf_token", &owner.csrf_token())]).status, 303);
    let page = Client::new(&app.url).get(&format!("/posts/{post}")).body;
    let root_html = fragment(&page, root);
    assert!(root_html.contains("[deleted]") && !root_html.contains("original words"));
    assert!(fragment(&page, reply).contains("still here"));
}

#[test]
fn with_redis_stopped_pages_are_served_from_the_database_correctly() {
    let mut redis = crate::support::redis::OwnRedis::start();
    let app = TestApp::spawn_with(TestAppOptions { redis_url: Some(redis.url.clone()), ..TestAppOptions::new(Arc::new(ScriptedGateway::succeeding())) });
    let mut conn = app.conn();
    let author = fixtures::user(&mut conn, "steady@example.com");
    let post = fixtures::post(&mut conn, author, "Outage");
    let root = fixtures::comment(&mut conn, post, None, author, "before the outage");
    let client = Client::new(&app.url);
    client.sign_in("steady@example.com", PASSWORD);
    let warm = { client.get(&format!("/posts/{post}")); client.get(&format!("/posts/{post}")) };
    assert_eq!(warm.queries, Some(0), "cached while Redis runs");

    redis.stop();
    let page = client.get(&format!("/posts/{post}"));
    assert_eq!(page.status, 200);
    assert!(page.body.contains("before the outage"));
    assert_eq!(page.queries, Some(4), "from the database: your session, the post, its comments, your votes");

    let token = client.csrf_token();
    let reply = client.post_form(&format!("/comments/{root}/replies"), &[("csrf_token", &token), ("body", "during the outage")]);
    assert_eq!(reply.status, 303, "writes work without Redis");
    let page = client.get(&format!("/posts/{post}"));
    assert!(page.body.contains("during the outage"), "and show at once");
    let health: serde_json::Value = serde_json::from_str(&client.get("/healthz").body).unwrap();
    assert_eq!(health["database"], "ok");
    assert!(health["redis"].as_str().unwrap().starts_with("down"));
}

#[test]
fn a_lost_version_key_means_a_fresh_page_never_an_old_one() {
    let app = app();
    let mut conn = app.conn();
    let author = fixtures::user(&mut conn, "evicted@example.com");
    let post = fixtures::post(&mut conn, author, "Eviction");
    let comment = fixtures::comment(&mut conn, post, None, author, "as first written");
    let client = Client::new(&app.url);
    client.get(&format!("/posts/{post}"));
    assert_eq!(client.get(&format!("/posts/{post}")).queries, Some(0), "cached");

    // A committed change whose post-version bump was lost, then Redis evicts the version key.
    diesel::update(comments::table.find(comment))
        .set((comments::body.eq("changed underneath"), comments::body_html.eq(None::<String>), comments::version.eq(comments::version + 1)))
        .execute(&mut conn)
        .unwrap();
    let mut redis = redis::Client::open(crate::support::db::redis_url()).unwrap().get_connection().unwrap();
    let evicted: i64 = redis::cmd("DEL").arg(format!("{}:post:{post}:ver", app.db.name)).query(&mut redis).unwrap();
    assert_eq!(evicted, 1);

    let page = client.get(&format!("/posts/{post}"));
    assert_eq!(page.queries, Some(2), "a new version: the old page is never served");
    assert!(page.body.contains("changed underneath"));
}
