//! A small blocking HTTP client that keeps the session cookie and never follows redirects, so
//! tests see exactly what the server answered.

use std::sync::Mutex;

pub struct Client {
    base: String,
    agent: ureq::Agent,
    session: Mutex<Option<String>>,
    /// Sent as `X-Forwarded-For`: the test app trusts one proxy, so this is the client's address.
    address: Option<String>,
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub location: Option<String>,
    pub queries: Option<u64>,
    pub retry_after: Option<String>,
    pub sets_cookie: bool,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The value of the page's first CSRF token field.
    pub fn csrf_token(&self) -> String {
        let marker = "name=\"csrf_token\" value=\"";
        let start = self.body.find(marker).expect("page has a CSRF token") + marker.len();
        let end = start + self.body[start..].find('"').unwrap();
        self.body[start..end].to_string()
    }
}

impl Client {
    pub fn new(base: &str) -> Client {
        // A hung server fails the test instead of hanging it.
        let agent = ureq::AgentBuilder::new().redirects(0).timeout(std::time::Duration::from_secs(30)).build();
        Client { base: base.to_string(), agent, session: Mutex::new(None), address: None }
    }

    /// A client that reaches the app from `address` (through the one proxy the test app trusts).
    pub fn from_address(base: &str, address: &str) -> Client {
        Client { address: Some(address.to_string()), ..Client::new(base) }
    }

    /// The session cookie's value, to replay it from another client.
    pub fn cookie(&self) -> Option<String> {
        self.session.lock().unwrap().clone()
    }

    pub fn set_cookie(&self, value: Option<String>) {
        *self.session.lock().unwrap() = value;
    }

    fn finish(&self, result: Result<ureq::Response, ureq::Error>) -> Resp {
        let response = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("request failed: {e}"),
        };
        let sets_cookie = !response.all("set-cookie").is_empty();
        let headers = response
            .headers_names()
            .into_iter()
            .flat_map(|name| response.all(&name).into_iter().map(move |v| (name.clone(), v.to_string())).collect::<Vec<_>>())
            .collect();
        for cookie in response.all("set-cookie") {
            if let Some(value) = cookie.strip_prefix("agora_session=") {
                let value = value.split(';').next().unwrap_or("");
                *self.session.lock().unwrap() = (!value.is_empty()).then(|| value.to_string());
            }
        }
        Resp {
            status: response.status(),
            location: response.header("location").map(str::to_string),
            queries: response.header("x-db-queries").and_then(|q| q.parse().ok()),
            retry_after: response.header("retry-after").map(str::to_string),
            sets_cookie,
            headers,
            body: response.into_string().unwrap_or_default(),
        }
    }

    fn with_cookie(&self, request: ureq::Request) -> ureq::Request {
        let request = match &self.address {
            Some(address) => request.set("X-Forwarded-For", address),
            None => request,
        };
        match self.session.lock().unwrap().as_deref() {
            Some(value) => request.set("Cookie", &format!("agora_session={value}")),
            None => request,
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        let request = self.with_cookie(self.agent.get(&format!("{}{}", self.base, path)));
        self.finish(request.call())
    }

    pub fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Resp {
        let request = self.with_cookie(self.agent.post(&format!("{}{}", self.base, path)));
        self.finish(request.send_form(fields))
    }

    /// A form post from a page: the browser names the page in `Referer`.
    pub fn post_form_with_referer(&self, path: &str, fields: &[(&str, &str)], referer: &str) -> Resp {
        let request = self.with_cookie(self.agent.post(&format!("{}{}", self.base, path))).set("Referer", referer);
        self.finish(request.send_form(fields))
    }

    /// A form post from an API client that asks for JSON.
    pub fn post_form_json(&self, path: &str, fields: &[(&str, &str)]) -> Resp {
        let request = self.with_cookie(self.agent.post(&format!("{}{}", self.base, path))).set("Accept", "application/json");
        self.finish(request.send_form(fields))
    }

    /// Signs in through the login form; panics unless the server accepts it.
    pub fn sign_in(&self, email: &str, password: &str) {
        let token = self.get("/login").csrf_token();
        let resp = self.post_form("/login", &[("csrf_token", &token), ("email", email), ("password", password), ("next", "/")]);
        assert_eq!(resp.status, 303, "sign-in refused: {}", resp.body);
    }

    /// A CSRF token from a page of the signed-in session.
    pub fn csrf_token(&self) -> String {
        self.get("/").csrf_token()
    }
}
