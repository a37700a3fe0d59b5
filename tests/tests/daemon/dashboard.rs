//! `host serve --ui`: the dashboard of a real daemon, over real HTTP and in a real headless
//! Chromium (driven by chromedriver's WebDriver API): a new sandbox listed, its process
//! chart rising with its workers, an operator notification in the timeline, the coordinator's
//! insight in its list, app-controlled
//! text shown as text (never run), its control characters as visible escapes and its name
//! labelled as its claim; the token checked; a non-loopback address refused without one. Saves a screenshot (docs/dashboard.png with UPDATE_SCREENSHOT=1).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use e2e::prelude::*;
use e2e::serve::Serve;
use serde_json::{Value, json};
use testkit::ChildGuard;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_requires_its_token_and_changes_nothing() {
    let d = Serve::start(&["--ui", "127.0.0.1:0", "--ui-token", "T0ken-for-tests"]);
    let url = d.url("dashboard").unwrap();
    let c = http();
    let get = async |url: &str, token: Option<&str>| {
        let request = c.get(url);
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
        .send()
        .await
        .unwrap()
    };
    let events = format!("{url}events");
    let wrong_query = format!("{url}?token=wrong");
    for (target, token) in [
        (&url, None),
        (&url, Some("T0ken-for-test")),
        (&wrong_query, None),
        (&events, None),
    ] {
        let refused = get(target, token).await;
        assert_eq!(refused.status(), 401, "{target} with {token:?}");
        // Refusals carry the security headers too.
        assert_eq!(
            refused.headers()["x-content-type-options"],
            "nosniff",
            "{target}"
        );
    }

    let ok = get(&url, Some("T0ken-for-tests")).await;
    assert_eq!(ok.status(), 200);
    let h = ok.headers().clone();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-content-type-options"], "nosniff");

    // ?token= once, then the cookie it sets.
    let first = get(&format!("{url}?token=T0ken-for-tests"), None).await;
    assert_eq!(first.status(), 200);
    let cookie = first.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let pair = cookie.split(';').next().unwrap().to_string();
    let js = c
        .get(format!("{url}app.js"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    let mut stream = c.get(&events).header("cookie", &pair).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let first_chunk = stream.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first_chunk).contains("event: sample"));
    drop(stream);

    // Read-only: nothing but GET.
    for method in [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let r = c
            .request(method.clone(), &url)
            .bearer_auth("T0ken-for-tests")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method}");
    }
}

#[test]
fn a_non_loopback_dashboard_needs_a_token() {
    Serve::assert_refused(&["--ui", "0.0.0.0:0"], "--ui-token");
}

/// A chromedriver with one headless Chromium session; dropping it ends both.
struct Browser {
    _driver: ChildGuard,
    base: String,
    session: String,
    client: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        // chromedriver must be told its port: a free one, taken just before it starts.
        let port = testkit::http::free_port();
        let driver = ChildGuard::new(
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let base = format!("http://127.0.0.1:{port}");
        let client = http();
        let mut browser = Browser {
            _driver: driver,
            base,
            session: String::new(),
            client,
            _profile: tempfile::Builder::new()
                .prefix("e2e-chromium-")
                .tempdir()
                .unwrap(),
        };
        let status = format!("{}/status", browser.base);
        let ready = wait_until(Duration::from_secs(20), || {
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    match browser.client.get(&status).send().await {
                        Ok(r) => r
                            .json::<Value>()
                            .await
                            .is_ok_and(|v| v["value"]["ready"] == true),
                        Err(_) => false,
                    }
                })
            })
        });
        assert!(ready, "chromedriver did not come up");
        let profile = browser._profile.path().display().to_string();
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1400,1100",
                    format!("--user-data-dir={profile}"),
                ],
            },
        }}});
        let created = browser.post("/session", caps).await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        browser
    }

    /// Sends a WebDriver request; returns the `value` of its JSON answer.
    async fn value(request: reqwest::RequestBuilder) -> Value {
        let mut answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].take()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        Browser::value(
            self.client
                .post(&url)
                .timeout(Duration::from_secs(60))
                .json(&body),
        )
        .await
    }

    async fn goto(&self, url: &str) {
        let path = format!("/session/{}/url", self.session);
        self.post(&path, json!({ "url": url })).await;
    }

    /// Runs `script` (a function body) in the page; returns its value.
    async fn eval(&self, script: &str) -> Value {
        let path = format!("/session/{}/execute/sync", self.session);
        self.post(&path, json!({ "script": script, "args": [] }))
            .await
    }

    /// Polls `script` until it returns true or `timeout` passes.
    async fn until(&self, timeout: Duration, script: &str) -> bool {
        wait_until_async(timeout, async || {
            self.eval(script).await == Value::Bool(true)
        })
        .await
    }

    async fn screenshot(&self, to: &Path) {
        let url = format!("{}/session/{}/screenshot", self.base, self.session);
        let value = Browser::value(self.client.get(&url)).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        std::fs::write(to, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // Ends Chromium; a fresh thread and runtime, since this may run inside the test's.
            let url = format!("{}/session/{}", self.base, self.session);
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async { http().delete(&url).send().await.map(|_| ()) })
            })
            .join();
        }
        // Then the driver goes with its guard.
    }
}

/// The demo app built with a name and version an attacker would pick.
async fn hostile_named_lib(dir: &Path) -> PathBuf {
    let source = std::fs::read_to_string(demo_app().join("src/lib.rs"))
        .unwrap()
        .replace(
            "name: \"sandbox_app\"",
            "name: \"<img src=x onerror=\\\"window.__pwned=1\\\">\"",
        )
        .replace(
            "version: env!(\"CARGO_PKG_VERSION\")",
            "version: \"<script>window.__pwned=2</script>\"",
        );
    assert!(source.contains("onerror"));
    let built = compiler().build_source(&demo_app(), &source).await.unwrap();
    // The target dir's file is overwritten by later builds: keep a copy.
    let copy = dir.join("hostile-name.so");
    std::fs::copy(built.lib, &copy).unwrap();
    copy
}

const LISTED: &str = "return !!document.querySelector('#sandboxes tr[data-id=\"web1\"]');";

fn last_processes(v: &Value) -> Option<f64> {
    v.as_str()
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .and_then(|m| m["web1"].as_f64())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_sandboxes_charts_and_the_timeline_in_a_browser() {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        skip(
            "chromium or chromedriver is not installed (apt-get install chromium chromium-driver)",
        );
        return;
    }
    let lib = built("sandbox_app").await;
    let scratch = scratch();
    let hostile = hostile_named_lib(scratch.path()).await;
    let liar = built("liar_app").await;
    // web1 is watched: its spike makes the detector's coordinator raise an insight.
    let d = Serve::start(&[
        "--ui",
        "127.0.0.1:0",
        "--watch-interval",
        "200ms",
        "--watch-provider",
        "mock",
        "--watch-coordinator",
    ]);
    let url = d.url("dashboard").unwrap();
    let browser = Browser::start().await;
    browser.goto(&url).await;
    assert!(
        browser
            .until(
                Duration::from_secs(5),
                "return document.getElementById('conn').dataset.state === 'open';"
            )
            .await,
        "the page did not connect its event stream"
    );

    // A new sandbox is listed within 2 s of being created.
    d.create("web1", &lib, &["--max-memory", "256M", "--watch"]);
    let created = std::time::Instant::now();
    assert!(
        browser.until(Duration::from_secs(2), LISTED).await,
        "web1 not listed"
    );
    println!("listed {:?} after create", created.elapsed());
    let timeline_has = |event: &str| {
        format!(
            "return [...document.querySelectorAll('#timeline li')].some(li => \
             li.dataset.event === '{event}' && li.textContent.includes('web1'));"
        )
    };
    assert!(
        browser
            .until(Duration::from_secs(2), &timeline_has("sandbox.created"))
            .await
    );

    // Its process chart rises with 25 more workers.
    let last = "return document.getElementById('chart-processes').dataset.last || null;";
    let has_value = "const l = document.getElementById('chart-processes').dataset.last; \
                     return !!l && JSON.parse(l).web1 !== undefined;";
    assert!(browser.until(Duration::from_secs(3), has_value).await);
    let before = last_processes(&browser.eval(last).await).expect("no process value for web1");
    d.json(&["workers", "web1", "--add", "25"]);
    let mut now = before;
    let risen = wait_until_async(Duration::from_secs(10), async || {
        now = last_processes(&browser.eval(last).await).unwrap_or(now);
        now >= before + 25.0
    })
    .await;
    assert!(risen, "process chart went from {before} to {now}");

    // The anomaly skill, offline with the mock provider, raises a warning notification.
    d.ok(&[
        "operate",
        "web1",
        "--skill",
        "anomaly",
        "--provider",
        "mock",
    ]);
    let notified = "return [...document.querySelectorAll('#timeline li')].some(li => \
                    li.dataset.event === 'operator.notification' && \
                    li.textContent.includes('warning'));";
    assert!(
        browser.until(Duration::from_secs(5), notified).await,
        "no notification shown"
    );
    assert!(
        browser
            .until(Duration::from_secs(5), &timeline_has("operator.done"))
            .await
    );
    // The detector fired on the spike too; the coordinator's insight is in the Insights list.
    let insight = "return [...document.querySelectorAll('#insights li')].some(li => \
                   li.dataset.grounded === 'true' && li.textContent.includes('process_spike in web1'));";
    assert!(
        browser.until(Duration::from_secs(20), insight).await,
        "no insight listed: {}",
        browser
            .eval("return document.getElementById('insights').textContent;")
            .await
    );

    let shot = if std::env::var_os("UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        // A picture worth committing: charts with some history.
        let points =
            "return Number(document.getElementById('chart-processes').dataset.points) >= 12;";
        assert!(browser.until(Duration::from_secs(20), points).await);
        root().join("docs").join("dashboard.png")
    } else {
        scratch.path().join("dashboard.png")
    };
    browser.screenshot(&shot).await;
    println!("screenshot: {}", shot.display());

    // App-controlled text (its self-declared name and version) is shown, never run.
    d.create("hostile1", &hostile, &[]);
    let shown = "return [...document.querySelectorAll('#sandboxes tr[data-id=\"hostile1\"] td')]\
                 .some(td => td.textContent.includes('<img src=x onerror='));";
    assert!(
        browser.until(Duration::from_secs(3), shown).await,
        "hostile name not shown"
    );
    let clean = browser
        .eval(
            "return window.__pwned === undefined && \
             document.querySelectorAll('#sandboxes img, #sandboxes script, #timeline img').length === 0;",
        )
        .await;
    assert_eq!(
        clean,
        Value::Bool(true),
        "app-controlled text was run as markup"
    );
    // Control characters in the app's words are shown as escapes, never sent to the page
    // raw, and its name and version are labelled as its claim.
    d.create("liar1", &liar, &[]);
    let visible = r#"const tds = [...document.querySelectorAll('#sandboxes tr[data-id="liar1"] td')];
        return tds.length > 0
            && tds.some(td => td.textContent.includes('"liar\\u{1b}]0;pwned\\u{7}\\n    + seccomp: FORGED')
                && td.textContent.includes("(the app's claim)"))
            && tds.every(td => !/[\u0000-\u001f\u007f-\u009f\u202e]/.test(td.textContent));"#;
    assert!(
        browser.until(Duration::from_secs(3), visible).await,
        "the liar's name not shown escaped and labelled: {}",
        browser
            .eval(r#"return document.querySelector('#sandboxes tr[data-id="liar1"]')?.textContent ?? null;"#)
            .await
    );
    d.json(&["destroy", "liar1"]);
    d.json(&["destroy", "hostile1"]);
    d.json(&["destroy", "web1"]);
    assert!(
        browser
            .until(
                Duration::from_secs(3),
                &LISTED.replace("return !!", "return !")
            )
            .await,
        "web1 still listed after destroy"
    );
}
