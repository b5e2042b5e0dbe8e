//! Issue 10: chats and messages accepted through Redis — numbered by INCR, persisted by a
//! consumer group, and recovered without a number handed out twice when Redis is flushed or
//! freezes.

use serde_json::json;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora::chat::intake::{ChatIntake, Item, Phase};
use agora::chat::limits::RateSettings;
use agora::payments::gateway::ScriptedGateway;

use crate::support::api::{Answer, Api};
use crate::support::redis::OwnRedis;
use crate::support::TestApp;

const FAST: RateSettings = RateSettings { per_second: 100_000.0, burst: 100_000, misses: 30, miss_window_secs: 60 };

/// Waits for a condition the intake's threads bring about: checked again each time the intake
/// signals a finished round or batch, failing the test after 20 s.
fn eventually(intake: &ChatIntake, what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < Duration::from_secs(20), "{what} did not happen within 20 s");
        intake.wait_for_change(Duration::from_secs(1));
    }
}

fn accepting(intake: &ChatIntake) -> bool {
    matches!(intake.phase(), Phase::Accepting(_))
}

fn spawn(redis: &OwnRedis) -> (TestApp, Api, Arc<ChatIntake>) {
    spawn_limited(redis, FAST)
}

fn spawn_limited(redis: &OwnRedis, rate: RateSettings) -> (TestApp, Api, Arc<ChatIntake>) {
    let mut options = crate::support::app::TestAppOptions::new(Arc::new(ScriptedGateway::succeeding()));
    options.redis_url = Some(redis.url.clone());
    options.chat_intake = true;
    options.chat_rate = rate;
    let app = TestApp::spawn_with(options);
    let intake = app.services.chat_intake.clone().expect("the intake runs");
    eventually(&intake, "the first epoch", || accepting(&intake));
    let api = Api::new(&app.url);
    (app, api, intake)
}

fn application(api: &Api) -> String {
    api.post("/chat_applications", &json!({ "name": "Intake" }), None).json["token"].as_str().unwrap().to_string()
}

/// (number, body) of every message PostgreSQL holds for the chat.
fn stored(app: &TestApp, token: &str, chat: i32) -> Vec<(i32, String)> {
    use agora::schema::{chat_applications as a, chat_messages as m, chats as c};
    use diesel::prelude::*;
    let mut conn = app.conn();
    m::table
        .inner_join(c::table.inner_join(a::table))
        .filter(a::token.eq(token).and(c::number.eq(chat)))
        .order(m::number)
        .select((m::number, m::body))
        .load(&mut conn)
        .unwrap()
}

#[test]
fn creates_are_answered_from_redis_and_persisted_with_their_counts() {
    let redis = OwnRedis::start();
    let (app, api, intake) = spawn(&redis);
    let token = application(&api);
    for expected in 1..=3 {
        assert_eq!(api.send("POST", &format!("/applications/{token}/chats"), None, &[]).json["number"], expected);
    }
    // A chat whose number just came back takes a message at once, persisted or not.
    let message = api.post(&format!("/applications/{token}/chats/3/messages"), &json!({ "body": "first" }), None);
    assert_eq!((message.status, &message.json), (201, &json!({ "number": 1, "body": "first" })));
    assert_eq!(api.post(&format!("/applications/{token}/chats/4/messages"), &json!({ "body": "x" }), None).status, 404, "chat 4 was never issued");
    // …and can be edited at once too (the edit waits the milliseconds the persister needs).
    let edited = api.send("PATCH", &format!("/applications/{token}/chats/3/messages/1"), Some(r#"{"body":"first, edited"}"#), &[]);
    assert_eq!((edited.status, &edited.json), (200, &json!({ "number": 1, "body": "first, edited" })));
    assert_eq!(api.send("PATCH", &format!("/applications/{token}/chats/3/messages/2"), Some(r#"{"body":"x"}"#), &[]).status, 404, "never issued");
    eventually(&intake, "the message persisted, edited", || stored(&app, &token, 3) == [(1, "first, edited".to_string())]);
    eventually(&intake, "the counts caught up", || api.get(&format!("/applications/{token}")).json["chats_count"] == 3);
    assert_eq!(api.get(&format!("/applications/{token}/chats/3")).json["messages_count"], 1);
    eventually(&intake, "the outbox emptied", || intake.outbox_len() == 0);
}

#[test]
fn twenty_concurrent_chats_are_numbered_one_to_twenty_through_redis() {
    let redis = OwnRedis::start();
    let (app, api, intake) = spawn(&redis);
    let token = application(&api);
    let mut numbers: Vec<i64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20).map(|_| scope.spawn(|| api.send("POST", &format!("/applications/{token}/chats"), None, &[]))).collect();
        handles.into_iter().map(|h| h.join().unwrap().json["number"].as_i64().unwrap()).collect()
    });
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=20).collect::<Vec<_>>());
    eventually(&intake, "all 20 chats persisted and counted", || api.get(&format!("/applications/{token}")).json["chats_count"] == 20);
    assert_eq!(api.get(&format!("/applications/{token}/chats?per_page=100")).json.as_array().unwrap().len(), 20);
    drop(app);
}

#[test]
fn two_servers_sharing_redis_number_two_hundred_messages_one_to_two_hundred() {
    let redis = OwnRedis::start();
    let (app, api, intake) = spawn(&redis);
    let (_server, other_url, other_services) = app.sibling_with(FAST, Some(&redis.url));
    let other_services = other_services.unwrap();
    let other_intake = other_services.chat_intake.clone().unwrap();
    eventually(&other_intake, "the second server joins the epoch", || accepting(&other_intake));
    let other = Api::new(&other_url);
    let token = application(&api);
    api.send("POST", &format!("/applications/{token}/chats"), None, &[]);
    let answers: Vec<(usize, Answer)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..200)
            .map(|i| {
                let (client, token) = (if i % 2 == 0 { &api } else { &other }, &token);
                scope.spawn(move || (i, client.post(&format!("/applications/{token}/chats/1/messages"), &json!({ "body": format!("m{i}") }), None)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut numbers: Vec<i64> = answers.iter().map(|(_, a)| a.json["number"].as_i64().unwrap_or_else(|| panic!("201 with a number: {} {}", a.status, a.text))).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=200).collect::<Vec<_>>());
    eventually(&intake, "all 200 persisted", || stored(&app, &token, 1).len() == 200);
    let rows: HashSet<(i32, String)> = stored(&app, &token, 1).into_iter().collect();
    for (i, answer) in &answers {
        assert!(rows.contains(&(answer.json["number"].as_i64().unwrap() as i32, format!("m{i}"))), "message {i} stored with its number");
    }
    eventually(&intake, "the count caught up", || api.get(&format!("/applications/{token}/chats/1")).json["messages_count"] == 200);
    other_services.chat_stop.store(true, Ordering::SeqCst);
}

/// Posts `n` messages at once while `disturb` runs once `after` of them have been answered (each
/// answer signals); returns every answer with its body.
fn posts_while(api: &Api, token: &str, n: usize, after: usize, disturb: impl FnOnce() + Send) -> Vec<(String, Answer)> {
    let answered = (std::sync::Mutex::new(0usize), std::sync::Condvar::new());
    std::thread::scope(|scope| {
        let answered = &answered;
        let handles: Vec<_> = (0..n)
            .map(|i| {
                scope.spawn(move || {
                    let body = format!("during {i}");
                    let answer = api.post(&format!("/applications/{token}/chats/1/messages"), &json!({ "body": body }), None);
                    *answered.0.lock().unwrap() += 1;
                    answered.1.notify_all();
                    (body, answer)
                })
            })
            .collect();
        scope.spawn(move || {
            let count = answered.0.lock().unwrap();
            let (count, timeout) = answered.1.wait_timeout_while(count, Duration::from_secs(20), |c| *c < after).unwrap();
            drop(count); // the posting threads go on while Redis is disturbed
            assert!(!timeout.timed_out(), "enough answers before the disturbance");
            disturb();
        });
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Every answer is 201 or 503; no number was given twice; every 201 is in PostgreSQL.
fn nothing_lost_nothing_twice(app: &TestApp, intake: &ChatIntake, token: &str, answers: &[(String, Answer)]) {
    assert!(answers.iter().all(|(_, a)| a.status == 201 || a.status == 503), "{:?}", answers.iter().map(|(_, a)| a.status).collect::<Vec<_>>());
    let accepted: Vec<(i32, String)> = answers.iter().filter(|(_, a)| a.status == 201).map(|(b, a)| (a.json["number"].as_i64().unwrap() as i32, b.clone())).collect();
    let numbers: HashSet<i32> = accepted.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers.len(), accepted.len(), "no number handed out twice");
    eventually(intake, "every accepted message persisted", || {
        let rows: HashSet<(i32, String)> = stored(app, token, 1).into_iter().collect();
        accepted.iter().all(|a| rows.contains(a))
    });
}

#[test]
fn a_flush_in_the_middle_of_creates_loses_nothing_and_repeats_no_number() {
    let redis = OwnRedis::start();
    let (app, api, intake) = spawn(&redis);
    let token = application(&api);
    api.send("POST", &format!("/applications/{token}/chats"), None, &[]);
    let url = redis.url.clone();
    let answers = posts_while(&api, &token, 500, 150, move || {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_connection().unwrap();
        let _: () = redis::cmd("FLUSHALL").query(&mut conn).unwrap();
    });
    nothing_lost_nothing_twice(&app, &intake, &token, &answers);
    eventually(&intake, "a new epoch", || accepting(&intake));
    // Numbering resumes above everything accepted before the flush.
    let next = api.post(&format!("/applications/{token}/chats/1/messages"), &json!({ "body": "after" }), None);
    let highest = stored(&app, &token, 1).iter().map(|(n, _)| *n).filter(|n| i64::from(*n) != next.json["number"].as_i64().unwrap()).max().unwrap();
    assert_eq!(next.json["number"].as_i64().unwrap(), i64::from(highest) + 1, "{}", next.text);
}

#[test]
fn a_frozen_redis_hands_creates_to_postgresql_and_numbering_resumes_after_it() {
    let redis = OwnRedis::start();
    let (app, api, intake) = spawn(&redis);
    let token = application(&api);
    api.send("POST", &format!("/applications/{token}/chats"), None, &[]);
    let answers = posts_while(&api, &token, 300, 100, || {
        redis.pause();
        eventually(&intake, "PostgreSQL numbering", || matches!(intake.phase(), Phase::Synchronous { .. }));
    });
    let during_outage = api.post(&format!("/applications/{token}/chats/1/messages"), &json!({ "body": "while frozen" }), None);
    assert_eq!(during_outage.status, 201, "Redis away: PostgreSQL numbers ({})", during_outage.text);
    redis.resume();
    eventually(&intake, "a new epoch after Redis returned", || accepting(&intake));
    let mut all = answers;
    all.push(("while frozen".to_string(), during_outage));
    all.push(("after".to_string(), api.post(&format!("/applications/{token}/chats/1/messages"), &json!({ "body": "after" }), None)));
    nothing_lost_nothing_twice(&app, &intake, &token, &all);
}

#[test]
fn entries_a_dead_persister_held_are_claimed_and_written_by_another() {
    use diesel::prelude::*;
    let redis = OwnRedis::start();
    // Two intakes with no threads of their own: this test plays their rounds by hand.
    let app = TestApp::spawn(Arc::new(ScriptedGateway::succeeding()));
    let pool = agora::db::build_pool(&app.db.url, 4).unwrap();
    let cache = || agora::cache::Cache::new(Some(&redis.url), "claim:");
    let (dying, survivor) = (ChatIntake::new(cache(), pool.clone()), ChatIntake::new(cache(), pool));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Each keeper round is played here by hand; a few rounds start the epoch and join it.
    for intake in [&dying, &survivor] {
        let rounds = (0..20).take_while(|_| {
            runtime.block_on(intake.keep());
            !accepting(intake)
        });
        assert!(rounds.count() < 19, "an epoch within a few rounds");
    }
    let api = Api::new(&app.url);
    let token = application(&api);
    let app_id: i64 = agora::schema::chat_applications::table.select(agora::schema::chat_applications::id).first(&mut app.conn()).unwrap();
    let Phase::Accepting(epoch) = dying.phase() else { unreachable!() };
    let cell = agora::chat::limits::RateLimiter::new(agora::cache::Cache::disabled(), FAST).cell(&token, "127.0.0.1", chrono::Utc::now().timestamp_millis());
    let (chat, _) = runtime.block_on(dying.accept(&epoch, Item::Chat { app: app_id, number: 0 }, Some(0), true, &cell)).unwrap();
    for i in 0..3 {
        runtime.block_on(dying.accept(&epoch, Item::Message { app: app_id, chat, number: 0, body: format!("held {i}") }, Some(0), false, &cell)).unwrap();
    }
    // The dying consumer reads the batch, then dies before writing or acknowledging it.
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let _: i64 = redis::cmd("EVAL")
        .arg("pcall(redis.call, 'XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM') return 1")
        .arg(1)
        .arg("claim:chat:stream")
        .arg("chat-persisters")
        .query(&mut conn)
        .unwrap();
    let taken: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP").arg("chat-persisters").arg(dying.node()).arg("COUNT").arg(100).arg("STREAMS").arg("claim:chat:stream").arg(">")
        .query(&mut conn)
        .unwrap();
    assert_eq!(taken.keys[0].ids.len(), 4, "the chat and three messages, now pending with the dead consumer");
    assert_eq!(runtime.block_on(survivor.persist_batch()).unwrap(), 0, "nothing new to read, and not yet idle long enough");
    survivor.claim_after(Duration::ZERO);
    assert_eq!(runtime.block_on(survivor.persist_batch()).unwrap(), 4, "claimed from the dead consumer and written");
    assert_eq!(stored(&app, &token, chat).len(), 3);
    let left: i64 = redis::cmd("XLEN").arg("claim:chat:stream").query(&mut conn).unwrap();
    assert_eq!(left, 0, "acknowledged and deleted once written");
    // Written twice (the dead one comes back and writes its batch too): nothing doubles.
    agora::chat::repo::write_items(&mut app.conn(), &[Item::Message { app: app_id, chat, number: 1, body: "held 0".into() }]).unwrap();
    assert_eq!(stored(&app, &token, chat).len(), 3);
    assert_eq!(api.get(&format!("/applications/{token}/chats/{chat}")).json["messages_count"], 3);
}

#[test]
fn the_rate_limit_is_counted_in_the_same_redis_call_as_the_create() {
    let redis = OwnRedis::start();
    let (_app, api, _intake) = spawn_limited(&redis, RateSettings { per_second: 0.5, burst: 50, ..RateSettings::default() });
    let token = application(&api);
    let chat = api.send("POST", &format!("/applications/{token}/chats"), None, &[]);
    assert_eq!(chat.status, 201);
    let burst: Vec<Answer> = (0..49).map(|i| api.post(&format!("/applications/{token}/chats/1/messages"), &json!({ "body": format!("b{i}") }), None)).collect();
    assert!(burst.iter().all(|a| a.status == 201), "a burst of 50 passes: {:?}", burst.iter().map(|a| a.status).collect::<Vec<_>>());
    assert_eq!(burst[0].header("ratelimit-limit"), Some("50"));
    let flood = api.post(&format!("/applications/{token}/chats/1/messages"), &json!({ "body": "one too many" }), None);
    assert_eq!(flood.status, 429, "{}", flood.text);
    assert!(flood.header("retry-after").is_some_and(|s| s.parse::<u64>().unwrap() >= 1));
    // A refused create used up no number: the burst's messages are 1..49.
    let mut numbers: Vec<i64> = burst.iter().map(|a| a.json["number"].as_i64().unwrap()).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=49).collect::<Vec<_>>());
}

/// Issue 18 (found by bench/scale.md): a Redis call that misses its deadline — a busy machine, a
/// moment's stall — is refused (503) but does not end the epoch for every server; only Redis
/// staying silent past the grace, or answering that the epoch is gone, does.
#[test]
fn a_moment_without_an_answer_from_redis_keeps_the_epoch() {
    let redis = OwnRedis::start();
    let (_app, api, intake) = spawn(&redis);
    let token = application(&api);
    api.send("POST", &format!("/applications/{token}/chats"), None, &[]);
    eventually(&intake, "an epoch", || accepting(&intake));
    let epoch = intake.phase();
    redis.pause();
    let unanswered = api.post(&format!("/applications/{token}/chats/1/messages"), &json!({ "body": "during a stall" }), None);
    redis.resume();
    assert_eq!(unanswered.status, 503, "{}", unanswered.text);
    assert!(unanswered.text.contains("may have been created"), "the answer is honest about a command Redis may have run: {}", unanswered.text);
    assert_eq!(intake.phase(), epoch, "the same epoch goes on");
    // Nothing rests after the late answer: the very next create goes through, in the same epoch
    // (no server drained, none waited for the others).
    let next = api.post(&format!("/applications/{token}/chats/1/messages"), &json!({ "body": "after the stall" }), None);
    assert_eq!(next.status, 201, "{}", next.text);
    assert_eq!(intake.phase(), epoch, "still the same epoch");
}
