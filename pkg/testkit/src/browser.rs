//! A real browser for page tests: headless Chromium and ChromeDriver from
//! Debian (`just deps` installs `chromium` and `chromium-driver`), each under
//! the watchdog, and a small W3C WebDriver client over reqwest (the few
//! commands a page test needs: navigate, find, click, type, read, run a
//! script, take a screenshot).
//!
//! Chromium is started by the testkit, not by ChromeDriver: ChromeDriver
//! would start it detached, and a test process that dies would leave the
//! browser running. Here the watchdog kills the browser (its helpers follow
//! it) and ChromeDriver attaches to it (`debuggerAddress`).
//!
//! The browser reaches loopback only: every other host goes to a dead proxy
//! and resolves to nothing, and its background services (updates, sync,
//! safe browsing, metrics) are off.
//!
//! ```no_run
//! # async fn demo() {
//! use skyhouse_testkit::Browser;
//!
//! let browser = Browser::start();
//! let page = browser.session().await;
//! page.goto("http://127.0.0.1:8092/").await;
//! page.find("#key").await.send_keys("sh_…").await;
//! page.find("#save-key").await.click().await;
//! let rows = page
//!     .wait_for("rows", "return document.querySelectorAll('tbody tr').length || null", &[])
//!     .await;
//! let png = page.screenshot().await;
//! # }
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::process::{self, ServerSpec, Started};

/// How long a wait of a page test may take before it fails: a guard
/// against a hang, not a performance expectation.
pub const PAGE_DEADLINE: Duration = Duration::from_secs(60);

/// The poll interval of [`Session::wait_for`].
const POLL: Duration = Duration::from_millis(100);

/// The key W3C WebDriver gives an element reference under.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The browser window (and so screenshot) size, CSS pixels.
pub const WINDOW: (u32, u32) = (1280, 860);

/// Headless Chromium and a ChromeDriver attached to it, killed when this is
/// dropped or the test process ends.
#[derive(Debug)]
pub struct Browser {
    chromium: Started,
    driver: Started,
    http: reqwest::Client,
}

impl Browser {
    /// Starts Chromium and ChromeDriver on spare loopback ports.
    ///
    /// # Panics
    ///
    /// If `chromium` or `chromedriver` is missing (the message says how to
    /// install them) or does not answer within 60 s.
    pub fn start() -> Browser {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let chromium_kind = format!("chromium{n}");
        let chromium = process::start(&ServerSpec {
            binary: "chromium",
            kind: &chromium_kind,
            ports: 1,
            prepare: &chromium_args,
            // Neither server closes a connection after its answer (the
            // testkit's HTTP client reads to the end): listening is the sign.
            ready: &|ports| listening(ports[0]),
            probe: "a DevTools connection",
            logs: &["stdout.log"],
            timeout: None,
            run_as: None,
            stop_signal: None,
        })
        .unwrap_or_else(|m| panic!("{m}"));
        let driver_kind = format!("chromedriver{n}");
        let driver = process::start(&ServerSpec {
            binary: "chromedriver",
            kind: &driver_kind,
            ports: 1,
            prepare: &|_: &Path, ports: &[u16]| Ok(vec![format!("--port={}", ports[0])]),
            ready: &|ports| listening(ports[0]),
            probe: "a connection",
            logs: &["stdout.log"],
            timeout: None,
            run_as: None,
            stop_signal: None,
        })
        .unwrap_or_else(|m| panic!("{m}"));
        Browser {
            chromium,
            driver,
            http: reqwest::Client::new(),
        }
    }

    /// A WebDriver session on the browser (one at a time).
    ///
    /// # Panics
    ///
    /// If ChromeDriver refuses the session.
    pub async fn session(&self) -> Session {
        let driver = format!("http://127.0.0.1:{}", self.driver.ports[0]);
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"debuggerAddress": format!("127.0.0.1:{}", self.chromium.ports[0])},
        }}});
        let v = call(&self.http, "POST", &format!("{driver}/session"), Some(caps))
            .await
            .unwrap_or_else(|e| panic!("WebDriver new session: {e}"));
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("WebDriver new session: no sessionId in {v}"));
        Session {
            http: self.http.clone(),
            base: format!("{driver}/session/{id}"),
        }
    }
}

/// The browser's command line: headless, loopback only, no background
/// services, its profile in the watchdog's directory.
fn chromium_args(dir: &Path, ports: &[u16]) -> std::io::Result<Vec<String>> {
    let profile = dir.join("profile");
    std::fs::create_dir_all(&profile)?;
    Ok([
        "--headless=new",
        // Tests run as root in CI, where the sandbox cannot start.
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--disable-crash-reporter",
        "--disable-breakpad",
        "--no-pings",
        // Nothing leaves the machine: other hosts go to a dead proxy and
        // resolve to nothing (loopback bypasses both).
        "--proxy-server=127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--lang=en-US",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([
        format!("--window-size={},{}", WINDOW.0, WINDOW.1),
        format!("--user-data-dir={}", profile.display()),
        format!("--remote-debugging-port={}", ports[0]),
        "about:blank".to_owned(),
    ])
    .collect())
}

/// Whether `127.0.0.1:port` accepts a connection.
fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .is_ok()
}

/// One WebDriver command: its `value`, or the driver's error as one line.
async fn call(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let req = match method {
        "GET" => http.get(url),
        "DELETE" => http.delete(url),
        _ => http.post(url).json(&body.unwrap_or_else(|| json!({}))),
    };
    let resp = req
        .timeout(PAGE_DEADLINE)
        .send()
        .await
        .map_err(|e| format!("{method} {url}: {e}"))?;
    let status = resp.status();
    let v: Value = resp
        .json()
        .await
        .map_err(|e| format!("{method} {url}: not JSON: {e}"))?;
    let value = v.get("value").cloned().unwrap_or(Value::Null);
    if status.is_success() {
        Ok(value)
    } else {
        Err(format!(
            "{method} {url}: {status} {}: {}",
            value["error"].as_str().unwrap_or("?"),
            value["message"]
                .as_str()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
        ))
    }
}

/// A WebDriver session: one browser tab.
#[derive(Debug)]
pub struct Session {
    http: reqwest::Client,
    base: String,
}

impl Session {
    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        call(&self.http, method, &format!("{}{path}", self.base), body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver: {e}"))
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    /// The address bar's URL.
    pub async fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The element `css` selects, waiting up to [`PAGE_DEADLINE`] for it.
    ///
    /// # Panics
    ///
    /// If no element matches by then.
    pub async fn find(&self, css: &str) -> Element {
        let deadline = Instant::now() + PAGE_DEADLINE;
        loop {
            let found = call(
                &self.http,
                "POST",
                &format!("{}/element", self.base),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
            match found {
                Ok(v) => {
                    let id = v[ELEMENT_KEY]
                        .as_str()
                        .unwrap_or_else(|| panic!("WebDriver: no element reference in {v}"));
                    return Element {
                        http: self.http.clone(),
                        base: format!("{}/element/{id}", self.base),
                    };
                }
                Err(e) if Instant::now() >= deadline => panic!("no element {css}: {e}"),
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Runs `script` (a function body: `return …`) with `args`; its value.
    pub async fn execute(&self, script: &str, args: &[Value]) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Runs `script` until it returns something other than `null`, `false`,
    /// `0` or `""`, and returns that.
    ///
    /// # Panics
    ///
    /// After [`PAGE_DEADLINE`], naming `what` and the page's status and
    /// error lines.
    pub async fn wait_for(&self, what: &str, script: &str, args: &[Value]) -> Value {
        let deadline = Instant::now() + PAGE_DEADLINE;
        loop {
            let v = self.execute(script, args).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() >= deadline {
                let body = self
                    .execute("return document.body.innerText.slice(0, 2000)", &[])
                    .await;
                panic!(
                    "the page never showed {what} within {} s; it shows:\n{}",
                    PAGE_DEADLINE.as_secs(),
                    body.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let v = self.cmd("GET", "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("WebDriver screenshot: not base64: {e}"))
    }

    /// Ends the session (the browser stays until [`Browser`] is dropped).
    pub async fn close(self) {
        let _ = call(&self.http, "DELETE", &self.base, None).await;
    }
}

/// An element of the page.
#[derive(Debug)]
pub struct Element {
    http: reqwest::Client,
    base: String,
}

impl Element {
    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        call(&self.http, method, &format!("{}{path}", self.base), body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver: {e}"))
    }

    /// Clicks it.
    pub async fn click(&self) {
        self.cmd("POST", "/click", None).await;
    }

    /// Empties an input or text area.
    pub async fn clear(&self) {
        self.cmd("POST", "/clear", None).await;
    }

    /// Types `text` into it (WebDriver key codes such as `\u{E007}`, Enter,
    /// work too).
    pub async fn send_keys(&self, text: &str) {
        self.cmd("POST", "/value", Some(json!({ "text": text })))
            .await;
    }

    /// Its rendered text.
    pub async fn text(&self) -> String {
        self.cmd("GET", "/text", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// A DOM property (`value`, `disabled`, …).
    pub async fn property(&self, name: &str) -> Value {
        self.cmd("GET", &format!("/property/{name}"), None).await
    }
}
