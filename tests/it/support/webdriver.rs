//! Just enough of the W3C WebDriver protocol to drive Debian's headless Chromium through
//! chromedriver: open pages, type, click, double-click, read text.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process, stopped when dropped.
pub struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    pub fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (make test installs Debian's chromium-driver)");
        // chromedriver says when it is listening; wait for that line rather than for time.
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines.by_ref().map_while(Result::ok).any(|line| line.contains("started successfully"));
        assert!(ready, "chromedriver did not start");
        std::thread::spawn(move || lines.for_each(drop));
        Driver { child, url: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Browser {
    session: String,
    profile: std::path::PathBuf,
}

pub struct Element(String);

fn call(method: &str, url: &str, body: Option<Value>) -> Value {
    let request = ureq::request(method, url);
    let result = match body {
        Some(body) => request.send_json(body),
        None => request.call(),
    };
    match result {
        Ok(response) => response.into_json::<Value>().unwrap()["value"].take(),
        Err(ureq::Error::Status(code, response)) => {
            panic!("WebDriver {method} {url} answered {code}: {}", response.into_string().unwrap_or_default())
        }
        Err(e) => panic!("WebDriver {method} {url}: {e}"),
    }
}

impl Browser {
    pub fn open(driver: &Driver) -> Browser {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let profile = std::env::temp_dir()
            .join(format!("agora-chromium-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst)));
        // The flags Chromium needs on these machines: no sandbox as root, and no background
        // networking, which the closed network would refuse.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1200,900",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args }
        }}});
        let created = call("POST", &format!("{}/session", driver.url), Some(capabilities));
        let session = format!("{}/session/{}", driver.url, created["sessionId"].as_str().expect("a session id"));
        // Finding an element waits up to this long for it to appear (after a navigation, say).
        call("POST", &format!("{session}/timeouts"), Some(json!({ "implicit": 15_000, "pageLoad": 30_000, "script": 15_000 })));
        Browser { session, profile }
    }

    pub fn goto(&self, url: &str) {
        call("POST", &format!("{}/url", self.session), Some(json!({ "url": url })));
    }

    /// Resizes the window (a phone is 390 × 844).
    pub fn resize(&self, width: u32, height: u32) {
        call("POST", &format!("{}/window/rect", self.session), Some(json!({ "width": width, "height": height })));
    }

    /// Runs a script in the page and returns what it returns.
    pub fn script(&self, source: &str) -> Value {
        call("POST", &format!("{}/execute/sync", self.session), Some(json!({ "script": source, "args": [] })))
    }

    /// Waits, in the page, until `condition` (a JavaScript expression) holds: checked on every
    /// animation frame, so the test goes on as soon as the page has changed. Panics after 15 s.
    pub fn wait_until(&self, condition: &str) {
        let source = format!(
            "const done = arguments[arguments.length - 1]; \
             const check = () => {{ let ok = false; try {{ ok = !!({condition}); }} catch (_) {{}} \
             if (ok) done(true); else requestAnimationFrame(check); }}; check();"
        );
        call("POST", &format!("{}/execute/async", self.session), Some(json!({ "script": source, "args": [] })));
    }

    /// Opens a new tab and returns its handle (the current tab stays current).
    pub fn new_tab(&self) -> String {
        call("POST", &format!("{}/window/new", self.session), Some(json!({ "type": "tab" })))["handle"].as_str().unwrap().to_string()
    }

    /// The handle of the current tab.
    pub fn tab(&self) -> String {
        call("GET", &format!("{}/window", self.session), None).as_str().unwrap().to_string()
    }

    pub fn switch_to(&self, handle: &str) {
        call("POST", &format!("{}/window", self.session), Some(json!({ "handle": handle })));
    }

    /// The browser's Back button.
    pub fn back(&self) {
        call("POST", &format!("{}/back", self.session), Some(json!({})));
    }

    pub fn refresh(&self) {
        call("POST", &format!("{}/refresh", self.session), Some(json!({})));
    }

    /// The accessibility checks of `audit.js` on the current page: what they found wrong.
    pub fn audit(&self) -> Vec<String> {
        let found = self.script(include_str!("audit.js"));
        found.as_array().expect("the audit returns a list").iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect()
    }

    /// Words of the page's own text that its layout split across two lines (see `broken_words.js`).
    pub fn broken_words(&self) -> Vec<String> {
        let found = self.script(include_str!("broken_words.js"));
        found.as_array().expect("a list").iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect()
    }

    /// The elements reaching past the window's right edge (tag, class, width), to say what made a
    /// page scroll sideways.
    pub fn overflowing(&self) -> String {
        self.script(
            "return [...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)\
             .slice(0, 8).map((e) => `${e.tagName.toLowerCase()}.${e.className} ${Math.round(e.getBoundingClientRect().width)}px`);",
        )
        .to_string()
    }

    /// Whether the page is no wider than the window (nothing scrolls sideways).
    pub fn fits_width(&self) -> bool {
        self.script("return document.documentElement.scrollWidth <= window.innerWidth;") == Value::Bool(true)
    }

    pub fn current_url(&self) -> String {
        call("GET", &format!("{}/url", self.session), None).as_str().unwrap().to_string()
    }

    pub fn find(&self, css: &str) -> Element {
        let found = call("POST", &format!("{}/element", self.session), Some(json!({ "using": "css selector", "value": css })));
        Element(found[ELEMENT].as_str().expect("an element").to_string())
    }

    /// Whether nothing on the current page matches, asked at once (`count` would first wait the
    /// implicit timeout for something to appear).
    pub fn absent(&self, css: &str) -> bool {
        self.script(&format!("return document.querySelector({css:?}) === null;")) == Value::Bool(true)
    }

    /// How many elements match (waiting, up to the implicit timeout, for at least one).
    pub fn count(&self, css: &str) -> usize {
        let found = call("POST", &format!("{}/elements", self.session), Some(json!({ "using": "css selector", "value": css })));
        found.as_array().map_or(0, Vec::len)
    }

    pub fn clear(&self, css: &str) {
        let element = self.find(css);
        call("POST", &format!("{}/element/{}/clear", self.session, element.0), Some(json!({})));
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        call("POST", &format!("{}/element/{}/value", self.session, element.0), Some(json!({ "text": text })));
    }

    pub fn click(&self, css: &str) {
        let element = self.find(css);
        call("POST", &format!("{}/element/{}/click", self.session, element.0), Some(json!({})));
    }

    /// Two presses of the mouse in quick succession, as a person's double-click.
    pub fn double_click(&self, css: &str) {
        let element = self.find(css);
        let origin = json!({ ELEMENT: element.0 });
        let actions = json!({ "actions": [{
            "type": "pointer", "id": "mouse", "parameters": { "pointerType": "mouse" },
            "actions": [
                { "type": "pointerMove", "origin": origin, "x": 0, "y": 0 },
                { "type": "pointerDown", "button": 0 }, { "type": "pointerUp", "button": 0 },
                { "type": "pointerDown", "button": 0 }, { "type": "pointerUp", "button": 0 }
            ]
        }]});
        call("POST", &format!("{}/actions", self.session), Some(actions));
    }

    pub fn text(&self, css: &str) -> String {
        let element = self.find(css);
        call("GET", &format!("{}/element/{}/text", self.session, element.0), None).as_str().unwrap().to_string()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = ureq::delete(&self.session).call();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
