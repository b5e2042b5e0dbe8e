//! A client for the merchants' JSON API: raw requests (any method, body and header), answers
//! parsed as JSON.

use serde_json::Value;
use std::sync::Mutex;

use super::fixtures::PASSWORD;

pub struct Api {
    base: String,
    agent: ureq::Agent,
    token: Mutex<Option<String>>,
}

#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub json: Value,
    pub text: String,
    pub headers: Vec<(String, String)>,
    pub queries: Option<u64>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The error object's code.
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }

    pub fn param(&self) -> Option<&str> {
        self.json["error"]["param"].as_str()
    }

    /// The ids of a list's objects, as strings.
    pub fn ids(&self) -> Vec<String> {
        self.json["data"].as_array().expect("a list").iter().map(|o| id_string(&o["id"])).collect()
    }
}

pub fn id_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Api {
    pub fn new(base: &str) -> Api {
        let agent = ureq::AgentBuilder::new().redirects(0).timeout(std::time::Duration::from_secs(30)).build();
        Api { base: format!("{base}/api/v1"), agent, token: Mutex::new(None) }
    }

    /// A client signed in as this user (with the fixtures' password).
    pub fn signed_in(base: &str, email: &str) -> Api {
        let api = Api::new(base);
        let answer = api.send("POST", "/auth/token", Some(&format!(r#"{{"email":"{email}","password":"{PASSWORD}"}}"#)), &[]);
        assert_eq!(answer.status, 200, "sign-in refused: {}", answer.text);
        api.use_token(answer.json["token"].as_str());
        api
    }

    pub fn use_token(&self, token: Option<&str>) {
        *self.token.lock().unwrap() = token.map(str::to_string);
    }

    pub fn token(&self) -> Option<String> {
        self.token.lock().unwrap().clone()
    }

    /// Any request: `body` is sent as `application/json` unless a Content-Type header is given.
    pub fn send(&self, method: &str, path: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Answer {
        self.send_bytes(method, path, body.map(str::as_bytes), headers)
    }

    pub fn send_bytes(&self, method: &str, path: &str, body: Option<&[u8]>, headers: &[(&str, &str)]) -> Answer {
        let mut request = self.agent.request(method, &format!("{}{}", self.base, path));
        if let Some(token) = self.token() {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        if body.is_some() && !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-type")) {
            request = request.set("Content-Type", "application/json");
        }
        for (name, value) in headers {
            request = request.set(name, value);
        }
        let result = match body {
            Some(bytes) => request.send_bytes(bytes),
            None => request.call(),
        };
        let response = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("request failed: {e}"),
        };
        let headers = response.headers_names().into_iter().map(|n| (n.clone(), response.header(&n).unwrap_or("").to_string())).collect();
        let status = response.status();
        let queries = response.header("x-db-queries").and_then(|q| q.parse().ok());
        let text = response.into_string().unwrap_or_default();
        Answer { status, json: serde_json::from_str(&text).unwrap_or(Value::Null), text, headers, queries }
    }

    pub fn get(&self, path: &str) -> Answer {
        self.send("GET", path, None, &[])
    }

    pub fn post(&self, path: &str, body: &Value, key: Option<&str>) -> Answer {
        let headers: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
        self.send("POST", path, Some(&body.to_string()), &headers)
    }

    /// Creates a payment under a fresh key; panics unless it is accepted.
    pub fn pay(&self, customer: &str, amount: i64, method: &str) -> Value {
        let body = serde_json::json!({ "customer": customer, "amount": amount, "currency": "usd", "payment_method": method });
        let answer = self.post("/payments", &body, Some(&uuid::Uuid::new_v4().to_string()));
        assert_eq!(answer.status, 201, "payment refused: {}", answer.text);
        answer.json
    }
}

/// Percent-encodes a query value (for search terms with spaces, %, _ and non-Latin text).
pub fn encode(raw: &str) -> String {
    serde_urlencoded::to_string([("v", raw)]).unwrap().trim_start_matches("v=").to_string()
}
