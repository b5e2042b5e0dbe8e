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
    let (_app, api) = app();
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
    let huge = api.send("POST", "/applications", Some(&json!({ "name": "x".repeat(70_000) }).to_string()), &[]);
    assert_eq!(huge.status, 413);
    assert!(huge.json["error"].is_string());
    assert_eq!(api.get("/applications?per_page=0").status, 400);
    // The names stayed as they were.
    assert_eq!(api.get(&format!("/applications/{token}")).json["name"], "Real");
}
