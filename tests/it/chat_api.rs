//! Issue 10, first part: chat applications on the public challenge's routes and shapes.

use serde_json::{json, Value};
use std::sync::Arc;

use agora::payments::gateway::ScriptedGateway;

use crate::support::api::Api;
use crate::support::TestApp;

fn app() -> (TestApp, Api) {
    let app = TestApp::spawn(Arc::new(ScriptedGateway::succeeding()));
    let api = Api::new(&app.url);
    (app, api)
}

/// No `id` and no `*_id` anywhere in an answer, however deep.
fn no_ids(value: &Value) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                assert!(key != "id" && !key.ends_with("_id"), "{key} in {value}");
                no_ids(inner);
            }
        }
        Value::Array(items) => items.iter().for_each(no_ids),
        _ => {}
    }
}

#[test]
fn applications_are_created_shown_listed_and_renamed_on_both_prefixes() {
    let (app, _) = app();
    // Signed in (by API bearer token), so the applications are this user's and listed to them.
    crate::support::fixtures::user(&mut app.conn(), "chatter@example.com");
    let api = Api::signed_in(&app.url, "chatter@example.com");
    let mut tokens = Vec::new();
    for (prefix, body) in [
        ("/chat_applications", json!({ "chat_application": { "name": "Wrapped" } })),
        ("/applications", json!({ "application": { "name": "Alias wrapped" } })),
        ("/chat_applications", json!({ "name": "Bare", "token": "0123456789abcdef0123456789abcdef", "chats_count": 9 })),
    ] {
        let created = api.post(prefix, &body, None);
        assert_eq!(created.status, 201, "{}", created.text);
        no_ids(&created.json);
        let token = created.json["token"].as_str().unwrap().to_string();
        assert!(token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{token}");
        assert_ne!(token, "0123456789abcdef0123456789abcdef", "clients cannot choose the token");
        assert_eq!(created.json["chats_count"], 0, "nor the count");
        tokens.push(token);
    }
    // Both prefixes serve the same data.
    let shown = api.get(&format!("/applications/{}", tokens[0]));
    assert_eq!((shown.status, shown.json["name"].as_str()), (200, Some("Wrapped")));
    assert_eq!(api.get(&format!("/chat_applications/{}", tokens[1])).json["name"], "Alias wrapped");
    let all = api.get("/chat_applications");
    assert!(all.json.is_array(), "lists are bare arrays");
    assert_eq!(all.json.as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect::<Vec<_>>(), ["Wrapped", "Alias wrapped", "Bare"]);
    no_ids(&all.json);
    assert_eq!(api.get("/applications?page=2&per_page=2").json.as_array().unwrap().len(), 1);
    let after = api.get(&format!("/applications?after={}&limit=1", tokens[0]));
    assert_eq!(after.json[0]["name"], "Alias wrapped");

    for (method, prefix) in [("PUT", "/chat_applications"), ("PATCH", "/applications")] {
        let renamed = api.send(method, &format!("{prefix}/{}", tokens[2]), Some(&format!(r#"{{"name":"Renamed by {method}"}}"#)), &[]);
        assert_eq!((renamed.status, renamed.json["name"].as_str()), (200, Some(format!("Renamed by {method}").as_str())));
        assert_eq!(renamed.json["token"], tokens[2].as_str());
    }
}

#[test]
fn every_application_error_has_the_challenge_shape() {
    let (_app, api) = app();
    let token = api.post("/applications", &json!({ "name": "Real" }), None).json["token"].as_str().unwrap().to_string();
    let unknown = api.get("/chat_applications/ffffffffffffffffffffffffffffffff");
    assert_eq!(unknown.status, 404);
    assert!(unknown.json["error"].is_string(), "{}", unknown.text);
    assert_eq!(api.get("/applications/not-a-token").status, 404);
    assert_eq!(api.send("PATCH", "/applications/ffffffffffffffffffffffffffffffff", Some(r#"{"name":"x"}"#), &[]).status, 404);
    for (body, problem) in [
        (r#"{"name":""}"#, "can't be blank"),
        (r#"{"name":"   "}"#, "can't be blank"),
        (r#"{"name":123}"#, "must be a string"),
        (r#"{"chat_application":{}}"#, "can't be blank"),
        (r#"[1,2]"#, "can't be blank"),
    ] {
        let refused = api.send("POST", "/chat_applications", Some(body), &[]);
        assert_eq!((refused.status, refused.json["errors"]["name"][0].as_str()), (422, Some(problem)), "{body}: {}", refused.text);
    }
    let long = api.send("PUT", &format!("/applications/{token}"), Some(&json!({ "name": "x".repeat(256) }).to_string()), &[]);
    assert_eq!((long.status, long.json["errors"]["name"][0].as_str()), (422, Some("is too long (maximum is 255 characters)")));
    let malformed = api.send("POST", "/applications", Some(r#"{"name":"#), &[]);
    assert_eq!(malformed.status, 400);
    assert!(malformed.json["error"].is_string());
    assert_eq!(api.send("POST", "/applications", Some(""), &[]).status, 400, "an empty body where one is needed");
    let huge = api.send("POST", "/applications", Some(&json!({ "name": "x".repeat(300_000) }).to_string()), &[]);
    assert_eq!(huge.status, 413);
    assert!(huge.json["error"].is_string());
    assert_eq!(api.get("/applications?per_page=0").status, 400);
    // The names stayed as they were.
    assert_eq!(api.get(&format!("/applications/{token}")).json["name"], "Real");
}

fn application(api: &Api) -> String {
    api.post("/chat_applications", &json!({ "name": "Chatty" }), None).json["token"].as_str().unwrap().to_string()
}

#[test]
fn chats_and_messages_are_numbered_per_parent_and_served_on_both_prefixes() {
    let (_app, api) = app();
    let (first, second) = (application(&api), application(&api));
    for expected in 1..=3 {
        let chat = api.send("POST", &format!("/chat_applications/{first}/chats"), None, &[]);
        assert_eq!((chat.status, &chat.json), (201, &json!({ "number": expected, "messages_count": 0 })));
    }
    assert_eq!(api.post(&format!("/applications/{second}/chats"), &json!({ "number": 99 }), None).json["number"], 1, "each application counts its own; a body is ignored");
    for (i, body) in [json!({ "message": { "body": "wrapped" } }), json!({ "body": "bare" })].iter().enumerate() {
        let message = api.post(&format!("/applications/{first}/chats/2/messages"), body, None);
        assert_eq!(message.status, 201, "{}", message.text);
        assert_eq!(message.json["number"], i + 1);
        no_ids(&message.json);
    }
    assert_eq!(api.post(&format!("/chat_applications/{first}/chats/3/messages"), &json!({ "body": "elsewhere" }), None).json["number"], 1);
    let chats = api.get(&format!("/chat_applications/{first}/chats"));
    assert_eq!(chats.json, json!([{ "number": 1, "messages_count": 0 }, { "number": 2, "messages_count": 2 }, { "number": 3, "messages_count": 1 }]));
    assert_eq!(api.get(&format!("/applications/{first}")).json["chats_count"], 3);
    assert_eq!(api.get(&format!("/applications/{first}/chats/2")).json, json!({ "number": 2, "messages_count": 2 }));
    assert_eq!(api.get(&format!("/applications/{first}/chats/2/messages")).json, json!([{ "number": 1, "body": "wrapped" }, { "number": 2, "body": "bare" }]));
    assert_eq!(api.get(&format!("/applications/{first}/chats/2/messages/2")).json, json!({ "number": 2, "body": "bare" }));
    let edited = api.send("PATCH", &format!("/chat_applications/{first}/chats/2/messages/1"), Some(r#"{"message":{"body":"edited"}}"#), &[]);
    assert_eq!((edited.status, &edited.json), (200, &json!({ "number": 1, "body": "edited" })));
    assert_eq!(api.send("PUT", &format!("/applications/{first}/chats/2/messages/2"), Some(r#"{"body":"put"}"#), &[]).json["body"], "put");
    // Pages by page/per_page and by after/limit.
    assert_eq!(api.get(&format!("/applications/{first}/chats?page=2&per_page=2")).json, json!([{ "number": 3, "messages_count": 1 }]));
    assert_eq!(api.get(&format!("/applications/{first}/chats?after=1&limit=1")).json, json!([{ "number": 2, "messages_count": 2 }]));
}

#[test]
fn chat_and_message_errors_have_the_challenge_shape_and_use_up_no_numbers() {
    let (_app, api) = app();
    let token = application(&api);
    api.send("POST", &format!("/applications/{token}/chats"), None, &[]);
    let missing = "ffffffffffffffffffffffffffffffff";
    for (method, path, body) in [
        ("POST", format!("/applications/{missing}/chats"), None),
        ("GET", format!("/applications/{missing}/chats"), None),
        ("GET", format!("/applications/{token}/chats/9"), None),
        ("GET", format!("/applications/{token}/chats/x"), None),
        ("POST", format!("/applications/{token}/chats/9/messages"), Some(r#"{"body":"hi"}"#)),
        ("POST", format!("/applications/{missing}/chats/1/messages"), Some(r#"{"body":"hi"}"#)),
        ("GET", format!("/applications/{token}/chats/1/messages/5"), None),
        ("PATCH", format!("/applications/{token}/chats/1/messages/5"), Some(r#"{"body":"hi"}"#)),
        ("GET", format!("/applications/{token}/chats/9/messages/search?q=hi"), None),
    ] {
        let answer = api.send(method, &path, body, &[]);
        assert_eq!(answer.status, 404, "{method} {path}: {}", answer.text);
        assert!(answer.json["error"].is_string(), "{method} {path}: {}", answer.text);
    }
    for (body, problem) in [(r#"{"body":""}"#, "can't be blank"), (r#"{"message":{"body":5}}"#, "must be a string")] {
        let refused = api.send("POST", &format!("/applications/{token}/chats/1/messages"), Some(body), &[]);
        assert_eq!((refused.status, refused.json["errors"]["body"][0].as_str()), (422, Some(problem)));
    }
    let long = api.post(&format!("/applications/{token}/chats/1/messages"), &json!({ "body": "x".repeat(10_001) }), None);
    assert_eq!((long.status, long.json["errors"]["body"][0].as_str()), (422, Some("is too long (maximum is 10000 characters)")));
    assert_eq!(api.send("POST", &format!("/applications/{token}/chats/1/messages"), Some("{"), &[]).status, 400);
    assert_eq!(api.send("POST", &format!("/applications/{token}/chats/1/messages"), Some(""), &[]).status, 400);
    assert_eq!(api.get(&format!("/applications/{token}/chats/1/messages/search")).status, 400, "q is required");
    assert_eq!(api.get(&format!("/applications/{token}/chats/1/messages/search?q=%20%20")).status, 400, "and not blank");
    // None of the refusals used up a number.
    assert_eq!(api.post(&format!("/applications/{token}/chats/1/messages"), &json!({ "body": "first" }), None).json["number"], 1);
    assert_eq!(api.send("POST", &format!("/applications/{token}/chats"), None, &[]).json["number"], 2);
}

#[test]
fn concurrent_creates_number_one_to_n_with_no_gap_and_no_repeat() {
    let mut options = crate::support::app::TestAppOptions::new(Arc::new(ScriptedGateway::succeeding()));
    options.chat_rate = agora::chat::limits::RateSettings { per_second: 1_000.0, burst: 1_000, ..agora::chat::limits::RateSettings::default() };
    let app = TestApp::spawn_with(options);
    let api = Api::new(&app.url);
    let token = application(&api);
    let chats = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20).map(|_| scope.spawn(|| api.send("POST", &format!("/applications/{token}/chats"), None, &[]))).collect();
        handles.into_iter().map(|h| h.join().unwrap().json["number"].as_i64().unwrap()).collect::<Vec<_>>()
    });
    let mut numbers = chats.clone();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=20).collect::<Vec<_>>());
    // Two servers (each with its own pool, as two processes would have) post into one chat.
    let (_other, other_url) = app.sibling(agora::chat::limits::RateSettings { per_second: 1_000.0, burst: 1_000, ..agora::chat::limits::RateSettings::default() });
    let other = Api::new(&other_url);
    let messages = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..200)
            .map(|i| {
                let (api, token) = (if i % 2 == 0 { &api } else { &other }, &token);
                scope.spawn(move || (i, api.post(&format!("/applications/{token}/chats/7/messages"), &json!({ "body": format!("message {i}") }), None)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    let mut numbers: Vec<i64> = messages.iter().map(|(_, m)| m.json["number"].as_i64().unwrap()).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=200).collect::<Vec<_>>());
    // Each body is stored with the number it was given.
    for (i, answer) in messages.iter().step_by(17) {
        let stored = api.get(&format!("/applications/{token}/chats/7/messages/{}", answer.json["number"]));
        assert_eq!(stored.json["body"], format!("message {i}"));
    }
    assert_eq!(api.get(&format!("/applications/{token}/chats/7")).json["messages_count"], 200);
    assert_eq!(api.get(&format!("/applications/{token}")).json["chats_count"], 20);
}

#[test]
fn search_finds_any_part_of_a_word_in_any_case_and_script_within_one_chat() {
    let (_app, api) = app();
    let token = application(&api);
    for _ in 0..2 {
        api.send("POST", &format!("/applications/{token}/chats"), None, &[]);
    }
    for body in ["Hello World", "worldwide shipping", "50% off_today", "5000 offers", "مرحبا بالعالم", "nothing here"] {
        api.post(&format!("/applications/{token}/chats/1/messages"), &json!({ "body": body }), None);
    }
    api.post(&format!("/applications/{token}/chats/2/messages"), &json!({ "body": "another world" }), None);
    let found = |q: &str| -> Vec<String> {
        let answer = api.get(&format!("/applications/{token}/chats/1/messages/search?q={}", crate::support::api::encode(q)));
        assert_eq!(answer.status, 200, "{q}: {}", answer.text);
        answer.json.as_array().unwrap().iter().map(|m| m["body"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(found("WORLD"), ["Hello World", "worldwide shipping"], "any case, scoped to the chat");
    assert_eq!(found("Hel"), ["Hello World"], "prefix");
    assert_eq!(found("ldwi"), ["worldwide shipping"], "infix");
    assert_eq!(found("ping"), ["worldwide shipping"], "suffix");
    assert_eq!(found("0%"), ["50% off_today"], "% is literal");
    assert_eq!(found("f_t"), ["50% off_today"], "_ is literal");
    assert_eq!(found("بالعالم"), ["مرحبا بالعالم"], "Arabic");
    assert!(found("absent").is_empty());
    let alias = api.get(&format!("/applications/{token}/chats/1/messages/search?query=hello"));
    assert_eq!(alias.json.as_array().unwrap().len(), 1);
    // An edit is found by its new words, and no longer by its old ones.
    api.send("PATCH", &format!("/applications/{token}/chats/1/messages/6"), Some(r#"{"body":"now something"}"#), &[]);
    assert_eq!(found("something"), ["now something"]);
    assert!(found("nothing here").is_empty());
}

#[test]
fn a_burst_of_fifty_passes_and_a_flood_is_told_when_to_come_back() {
    // A fake clock that never moves: every request lands in the same instant.
    let clock = Arc::new(agora::clock::FakeClock::starting_now());
    let mut options = crate::support::app::TestAppOptions::new(Arc::new(ScriptedGateway::succeeding()));
    options.clock = clock.clone();
    let app = TestApp::spawn_with(options);
    let api = Api::new(&app.url);
    let token = application(&api);
    let burst: Vec<u16> = (0..50).map(|_| api.get(&format!("/applications/{token}")).status).collect();
    assert!(burst.iter().all(|s| *s == 200), "{burst:?}");
    let answer = api.get(&format!("/applications/{token}"));
    assert_eq!(answer.header("ratelimit-limit"), Some("100"));
    let flood: Vec<crate::support::api::Answer> = (0..60).map(|_| api.get(&format!("/applications/{token}/chats"))).collect();
    let refused = flood.iter().find(|a| a.status == 429).expect("a sustained flood is refused");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.header("ratelimit-remaining"), Some("0"));
    assert!(refused.json["error"].is_string());
    // Another application is not affected, and the limit recovers with time.
    let other = application(&api);
    assert_eq!(api.get(&format!("/applications/{other}")).status, 200);
    clock.tick(std::time::Duration::from_secs(1));
    assert_eq!(api.get(&format!("/applications/{token}")).status, 200);
}

#[test]
fn the_reconciliation_job_repairs_a_hand_broken_count() {
    use diesel::prelude::*;
    let (app, api) = app();
    let token = application(&api);
    api.send("POST", &format!("/applications/{token}/chats"), None, &[]);
    for _ in 0..3 {
        api.post(&format!("/applications/{token}/chats/1/messages"), &json!({ "body": "counted" }), None);
    }
    assert_eq!(api.get(&format!("/applications/{token}/chats/1")).json["messages_count"], 3, "counted with the rows");
    let mut conn = app.conn();
    diesel::sql_query("UPDATE chats SET messages_count = 42").execute(&mut conn).unwrap();
    diesel::sql_query("UPDATE chat_applications SET chats_count = 0").execute(&mut conn).unwrap();
    agora::jobs::enqueue(&mut conn, &agora::jobs::NewJob::new(agora::chat::jobs::RECONCILE_CHAT_COUNTS, json!({})), chrono::Utc::now()).unwrap();
    assert_eq!(app.drain_jobs(), 1);
    assert_eq!(api.get(&format!("/applications/{token}/chats/1")).json["messages_count"], 3);
    assert_eq!(api.get(&format!("/applications/{token}")).json["chats_count"], 1);
    assert_eq!(agora::chat::repo::reconcile_counts(&mut conn).unwrap(), (0, 0), "nothing left to repair");
}

#[test]
fn the_chat_pages_show_post_and_refuse_what_they_should() {
    let (app, api) = app();
    let token = application(&api);
    api.send("POST", &format!("/applications/{token}/chats"), None, &[]);
    let person = crate::support::Client::new(&app.url);
    let listing = person.get(&format!("/chats/{token}"));
    assert!(listing.status == 200 && listing.body.contains(&format!("href=\"/chats/{token}/1\"")), "the application's page links its chats");
    let page = person.get(&format!("/chats/{token}/1"));
    assert_eq!(page.status, 200);
    assert_eq!(person.get("/chats/ffffffffffffffffffffffffffffffff").status, 404);
    assert_eq!(person.get(&format!("/chats/{token}/2")).status, 404);
    let csrf = page.csrf_token();
    assert_eq!(person.post_form(&format!("/chats/{token}/1"), &[("csrf_token", "forged"), ("body", "hi")]).status, 403);
    let blank = person.post_form(&format!("/chats/{token}/1"), &[("csrf_token", &csrf), ("body", "   ")]);
    assert_eq!(blank.status, 422);
    assert!(blank.body.contains("The message can&#39;t be blank."), "the form comes back with the problem: {}", blank.body);
    let posted = person.post_form(&format!("/chats/{token}/1"), &[("csrf_token", &csrf), ("body", "<script>alert(1)</script>")]);
    assert_eq!((posted.status, posted.location.as_deref()), (303, Some(format!("/chats/{token}/1#m1").as_str())));
    let shown = person.get(&format!("/chats/{token}/1"));
    assert!(shown.body.contains("&#60;script&#62;alert(1)") && !shown.body.contains("<script>alert(1)"), "escaped: {}", shown.body);
    assert_eq!(api.get(&format!("/applications/{token}/chats/1/messages/1")).json["body"], "<script>alert(1)</script>", "stored as written");
}

#[test]
fn every_chat_route_answers_the_same_on_both_prefixes() {
    let (_app, api) = app();
    for prefix in ["/chat_applications", "/applications"] {
        let token = api.post(prefix, &json!({ "name": prefix }), None).json["token"].as_str().unwrap().to_string();
        let base = format!("{prefix}/{token}");
        let answers = [
            ("GET", base.clone(), None, 200),
            ("PUT", base.clone(), Some(r#"{"name":"renamed"}"#), 200),
            ("PATCH", base.clone(), Some(r#"{"application":{"name":"renamed again"}}"#), 200),
            ("POST", format!("{base}/chats"), None, 201),
            ("GET", format!("{base}/chats"), None, 200),
            ("GET", format!("{base}/chats/1"), None, 200),
            ("POST", format!("{base}/chats/1/messages"), Some(r#"{"message":{"body":"hello"}}"#), 201),
            ("GET", format!("{base}/chats/1/messages"), None, 200),
            ("GET", format!("{base}/chats/1/messages/1"), None, 200),
            ("PUT", format!("{base}/chats/1/messages/1"), Some(r#"{"body":"hello again"}"#), 200),
            ("PATCH", format!("{base}/chats/1/messages/1"), Some(r#"{"message":{"body":"hello, finally"}}"#), 200),
            ("GET", format!("{base}/chats/1/messages/search?q=FINAL"), None, 200),
            ("GET", format!("{base}/chats/1/messages/search?query=final"), None, 200),
        ];
        for (method, path, body, status) in answers {
            let answer = api.send(method, &path, body, &[]);
            assert_eq!(answer.status, status, "{method} {path}: {}", answer.text);
            no_ids(&answer.json);
        }
        assert_eq!(api.get(&format!("{base}/chats/1/messages/search?q=final")).json, json!([{ "number": 1, "body": "hello, finally" }]));
        assert_eq!(api.get(&base).json["name"], "renamed again");
    }
}
