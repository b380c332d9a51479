//! Test harness for real-browser tests: headless Chromium driven through chromedriver
//! (WebDriver) with fantoccini, plus helpers that wait for visible content and save screenshots
//! under `target/screenshots/`.
//!
//! Include it with `#[path = "support/browser.rs"] mod browser;`. Debian's `chromium` and
//! `chromium-driver` packages provide the binaries (`scripts/test` installs them when missing).
#![allow(dead_code)]

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};

/// Names the chromedriver binary (default `/usr/bin/chromedriver`).
pub const CHROMEDRIVER_ENV: &str = "KEYWARD_TEST_CHROMEDRIVER";
/// Names the Chromium binary (default `/usr/bin/chromium`).
pub const CHROMIUM_ENV: &str = "KEYWARD_TEST_CHROMIUM";
/// Set to `1` to skip browser tests on a machine without Chromium (ignored when `CI` is set).
pub const SKIP_ENV: &str = "KEYWARD_TEST_SKIP_BROWSER";
/// How long to wait for anything in the page (an element, a text, a navigation).
pub const WAIT: Duration = Duration::from_secs(15);
/// How long chromedriver may take to answer after start.
const DRIVER_START: Duration = Duration::from_secs(20);

/// A headless Chromium session. chromedriver (and the Chromium it started, in the same process
/// group) is killed when this is dropped, even when the test panics.
pub struct Browser {
    pub client: Client,
    driver: Driver,
    _profile: tempfile::TempDir,
}

/// The chromedriver child, leader of its own process group.
struct Driver {
    child: Child,
    log: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver leads its own process group (see `Browser::start`), and Chromium with its
        // helpers stay in it: one signal to the group stops them all, including after a panic
        // that skipped `Browser::close`.
        let pgid = self.child.id();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

/// The binaries a browser test needs, or why they are missing.
fn binaries() -> Result<(PathBuf, PathBuf), String> {
    let driver = std::env::var_os(CHROMEDRIVER_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"));
    let chromium = std::env::var_os(CHROMIUM_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let missing: Vec<String> = [&driver, &chromium]
        .into_iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        Ok((driver, chromium))
    } else {
        Err(format!(
            "browser tests need Chromium and chromedriver, and {} missing.\n\
             Install them with `scripts/chromium install` (Debian's chromium and \
             chromium-driver packages; `scripts/test` runs it), or point {CHROMIUM_ENV} / {CHROMEDRIVER_ENV} at them.\n\
             To skip browser tests on this machine only, set {SKIP_ENV}=1 (CI never does).",
            missing.join(" and ") + if missing.len() == 1 { " is" } else { " are" }
        ))
    }
}

impl Browser {
    /// Starts chromedriver and a fresh headless Chromium profile. `None` only when the binaries
    /// are missing and `KEYWARD_TEST_SKIP_BROWSER=1` says to skip; missing binaries otherwise
    /// fail the test with the way to install them.
    pub async fn start() -> Option<Browser> {
        let (driver_bin, chromium) = match binaries() {
            Ok(found) => found,
            // CI must run it: the skip is for a developer's machine only.
            Err(why)
                if std::env::var(SKIP_ENV).is_ok_and(|v| v == "1")
                    && std::env::var("CI").is_err() =>
            {
                eprintln!("skipping browser test ({SKIP_ENV}=1): {why}");
                return None;
            }
            Err(why) => panic!("{why}"),
        };
        // chromedriver cannot report a port it chose, so take one from the kernel and pass it on
        // (one attempt, no scanning; loopback ports are rarely taken in between).
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("bind a free loopback port")
            .port();
        let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chromedriver-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("create the chromedriver log");
        let mut command = Command::new(&driver_bin);
        command
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                log_file.try_clone().expect("clone the log handle"),
            ))
            .stderr(Stdio::from(log_file));
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", driver_bin.display()));
        let mut driver = Driver { child, log };
        driver.wait_until_ready(port);

        let profile = tempfile::Builder::new()
            .prefix("keyward-chromium-")
            .tempdir()
            .expect("a temporary Chromium profile");
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--no-first-run".into(),
            "--disable-quic".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "args": args, "binary": chromium }),
        );
        // Both ring and aws-lc-rs are in the build, so rustls cannot choose a process-wide
        // provider itself, and fantoccini's connector asks for one (an error only means another
        // test of this process installed it first).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = ClientBuilder::rustls()
            .expect("rustls connector")
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "start a Chromium session through chromedriver: {e}\n{}",
                    driver.log()
                )
            });
        Some(Browser {
            client,
            driver,
            _profile: profile,
        })
    }

    /// Ends the WebDriver session (Chromium quits); chromedriver stops on drop.
    pub async fn close(self) {
        let Browser { client, driver, .. } = self;
        let _ = client.close().await;
        drop(driver);
    }

    /// chromedriver's log so far, for failure messages.
    pub fn driver_log(&self) -> String {
        self.driver.log()
    }

    /// Opens `url` and waits until the document has loaded.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The visible text of the whole page.
    pub async fn body_text(&self) -> String {
        self.client
            .find(Locator::Css("body"))
            .await
            .expect("a body")
            .text()
            .await
            .expect("the body's text")
    }

    /// Waits for the first element matching `css`.
    pub async fn wait_css(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => self.fail(&format!("no element matches {css:?}: {e}")).await,
        }
    }

    /// Waits for the first element matching the XPath `xpath`.
    pub async fn wait_xpath(&self, xpath: &str, what: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::XPath(xpath))
            .await
        {
            Ok(e) => e,
            Err(e) => self.fail(&format!("no {what} ({xpath}): {e}")).await,
        }
    }

    /// Waits until `text` is visible somewhere in the page (whitespace normalised).
    pub async fn wait_text(&self, text: &str) -> Element {
        let xpath = format!(
            "//body//*[not(self::script) and not(self::style) and contains(normalize-space(.), {})]",
            xpath_literal(text)
        );
        let deadline = Instant::now() + WAIT;
        loop {
            match self.client.find_all(Locator::XPath(&xpath)).await {
                Ok(found) => {
                    // The innermost match is the last in document order among its ancestors;
                    // any displayed one will do.
                    for e in found.into_iter().rev() {
                        if e.is_displayed().await.unwrap_or(false) {
                            return e;
                        }
                    }
                }
                Err(e) => self.fail(&format!("look for {text:?}: {e}")).await,
            }
            if Instant::now() > deadline {
                self.fail(&format!("the text {text:?} never appeared"))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the current URL's path (and query) starts with `prefix`.
    pub async fn wait_path(&self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let url = self.client.current_url().await.expect("the current URL");
            let path = match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_string(),
            };
            if path.starts_with(prefix) {
                return url.to_string();
            }
            if Instant::now() > deadline {
                self.fail(&format!("never reached {prefix:?} (still at {url})"))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The `<button>`, submit `<input>`, link or `<summary>` whose visible text (or value)
    /// starts with `label` ("Propose fix" finds "Propose fix…").
    pub async fn control(&self, label: &str) -> Element {
        self.wait_xpath(&control_xpath(label), &format!("button or link {label:?}"))
            .await
    }

    /// Clicks the button or link labelled `label`.
    pub async fn click(&self, label: &str) {
        let control = self.control(label).await;
        if let Err(e) = control.click().await {
            self.fail(&format!("click {label:?}: {e}")).await;
        }
    }

    /// True when a button or link labelled `label` is on the page now (no waiting).
    pub async fn has_control(&self, label: &str) -> bool {
        !self
            .client
            .find_all(Locator::XPath(&control_xpath(label)))
            .await
            .expect("look for a control")
            .is_empty()
    }

    /// The form field whose `<label>` contains `label` (by `for=`, or wrapped in the label),
    /// else the field named `label`.
    pub async fn field(&self, label: &str) -> Element {
        let l = xpath_literal(label);
        let fields = "self::input or self::textarea or self::select";
        let xpath = format!(
            "//*[({fields}) and @id = //label[contains(normalize-space(.), {l})]/@for] \
             | //label[contains(normalize-space(.), {l})]//*[{fields}] \
             | //*[({fields}) and @name = {l}]"
        );
        self.wait_xpath(&xpath, &format!("form field {label:?}"))
            .await
    }

    /// Types `value` into the field labelled `label`, replacing what it held.
    pub async fn fill(&self, label: &str, value: &str) {
        let field = self.field(label).await;
        field.clear().await.ok();
        if let Err(e) = field.send_keys(value).await {
            self.fail(&format!("type into {label:?}: {e}")).await;
        }
    }

    /// Chooses the option shown as `option` in the `<select>` labelled `label`.
    pub async fn select(&self, label: &str, option: &str) {
        let field = self.field(label).await;
        if let Err(e) = field.select_by_label(option).await {
            self.fail(&format!("choose {option:?} in {label:?}: {e}"))
                .await;
        }
    }

    /// Accepts the confirmation dialog (`confirm()`) a click opened, once it shows.
    pub async fn accept_confirm(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.client.accept_alert().await {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => {
                    self.fail(&format!("no confirmation dialog: {e}")).await
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Waits until the element matching `css` reads exactly `text` (whitespace trimmed), as
    /// after an in-place (htmx) update.
    pub async fn wait_css_text(&self, css: &str, text: &str) {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await {
                last = e.text().await.unwrap_or_default();
                if last.trim() == text {
                    return;
                }
            }
            if Instant::now() > deadline {
                self.fail(&format!("{css} never read {text:?} (last {last:?})"))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG of the top of the page (1280×900) as `target/screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        self.client
            .execute("window.scrollTo(0, 0);", vec![])
            .await
            .expect("scroll to the top");
        self.capture(name).await
    }

    /// Saves a PNG of the page scrolled to `element` as `target/screenshots/<name>.png`.
    pub async fn screenshot_at(&self, name: &str, element: &Element) -> PathBuf {
        let element = serde_json::to_value(element).expect("an element reference");
        self.client
            .execute("arguments[0].scrollIntoView();", vec![element])
            .await
            .expect("scroll to the element");
        self.capture(name).await
    }

    async fn capture(&self, name: &str) -> PathBuf {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Fails the test with what the page showed, after saving it as `failure-*.png`.
    pub async fn fail(&self, why: &str) -> ! {
        let url = self
            .client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default();
        let text = match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let shot = match self.client.screenshot().await {
            Ok(png) => {
                let path = screenshot_dir().join("failure.png");
                std::fs::write(&path, png).ok();
                path.display().to_string()
            }
            Err(e) => format!("(no screenshot: {e})"),
        };
        panic!("{why}\nat {url}, screenshot {shot}\npage text:\n{text}");
    }
}

impl Driver {
    fn wait_until_ready(&mut self, port: u16) {
        let deadline = Instant::now() + DRIVER_START;
        while Instant::now() < deadline {
            if status_ready(port) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("chromedriver exited ({status}):\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "chromedriver did not answer on port {port} within {DRIVER_START:?}:\n{}",
            self.log()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `target/screenshots/` of this crate, created if missing.
pub fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Buttons, submit inputs, links and `<summary>` elements whose text starts with `label`.
fn control_xpath(label: &str) -> String {
    let l = xpath_literal(label);
    format!(
        "//button[starts-with(normalize-space(.), {l})] \
         | //input[(@type='submit' or @type='button') and starts-with(normalize-space(@value), {l})] \
         | //a[starts-with(normalize-space(.), {l})] \
         | //summary[starts-with(normalize-space(.), {l})]"
    )
}

/// `s` as an XPath 1.0 string literal (XPath has no escapes: quotes need `concat`).
pub fn xpath_literal(s: &str) -> String {
    if !s.contains('\'') {
        format!("'{s}'")
    } else if !s.contains('"') {
        format!("\"{s}\"")
    } else {
        let parts: Vec<String> = s.split('\'').map(|p| format!("'{p}'")).collect();
        format!("concat({})", parts.join(", \"'\", "))
    }
}

/// True when chromedriver's `/status` (HTTP/1.1 only) answers `"ready": true`.
fn status_ready(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    use std::io::Write;
    if stream
        .write_all(
            format!("GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.contains("\"ready\":true") || answer.contains("\"ready\": true")
}
