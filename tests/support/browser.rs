//! Headless Chromium for browser tests, driven over WebDriver by fantoccini.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`apt-get install -y chromium chromium-driver`).
//! Each [`Browser`] owns its own chromedriver (on a free port, in its own process group) and a
//! fresh Chromium profile directory; dropping it ends both. Prefer [`Browser::close`] at the end
//! of a test, which also ends the WebDriver session cleanly.
//!
//! A test crate takes it as `support::browser` (`mod support;`).

use super::free_port;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

/// Where Debian puts the browser and its driver.
pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";
pub(crate) const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A running chromedriver + headless Chromium session.
pub(crate) struct Browser {
    pub(crate) client: Client,
    driver: Child,
    profile_dir: PathBuf,
}

/// Starts chromedriver and Chromium and opens `url` in a 1440 x 1000 window.
pub(crate) async fn open_page(url: &str) -> Browser {
    let browser = Browser::start().await;
    browser
        .client
        .goto(url)
        .await
        .unwrap_or_else(|e| panic!("navigating to {url}: {e}"));
    browser
}

fn fresh_profile_dir() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "station-browser-{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    ));
    std::fs::create_dir_all(&dir).expect("creating the Chromium profile directory");
    dir
}

impl Browser {
    /// Starts a chromedriver on a free port, waits until it answers, and opens a session.
    pub(crate) async fn start() -> Browser {
        assert!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "browser tests need Debian's chromium and chromium-driver \
             (apt-get install -y chromium chromium-driver)"
        );
        let port = free_port();
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Own process group, so dropping the Browser can end the Chromium it spawned too.
            .process_group(0)
            .spawn()
            .expect("starting chromedriver");
        let profile_dir = fresh_profile_dir();
        let webdriver = format!("http://127.0.0.1:{port}");

        // Poll /status until chromedriver is ready (never a blind sleep).
        let http = reqwest::Client::new();
        let deadline = Instant::now() + DRIVER_START_TIMEOUT;
        loop {
            if let Some(status) = driver.try_wait().expect("polling chromedriver") {
                panic!("chromedriver exited early with {status}");
            }
            let ready = match http.get(format!("{webdriver}/status")).send().await {
                Ok(r) if r.status().is_success() => r
                    .json::<serde_json::Value>()
                    .await
                    .map(|v| v["value"]["ready"].as_bool().unwrap_or(true))
                    .unwrap_or(false),
                _ => false,
            };
            if ready {
                break;
            }
            if Instant::now() > deadline {
                let _ = driver.kill();
                panic!(
                    "chromedriver did not answer on port {port} within {DRIVER_START_TIMEOUT:?}"
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }

        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".to_string(),
            "--disable-gpu".to_string(),
            "--disable-quic".to_string(),
            "--no-first-run".to_string(),
            "--disable-background-networking".to_string(),
            "--disable-component-update".to_string(),
            "--disable-sync".to_string(),
            "--disable-dev-shm-usage".to_string(),
            "--hide-scrollbars".to_string(),
            "--window-size=1440,1000".to_string(),
            format!("--user-data-dir={}", profile_dir.display()),
        ];
        let caps = json!({
            "goog:chromeOptions": { "args": args, "binary": CHROMIUM }
        });
        let caps = match caps {
            serde_json::Value::Object(map) => map,
            _ => unreachable!("a JSON object literal"),
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&webdriver)
            .await
            .unwrap_or_else(|e| panic!("opening a WebDriver session on {webdriver}: {e}"));
        Browser {
            client,
            driver,
            profile_dir,
        }
    }

    /// The text of the first element matching `css`, or `None` when there is none.
    pub(crate) async fn text(&self, css: &str) -> Option<String> {
        let element = self.client.find(Locator::Css(css)).await.ok()?;
        element.text().await.ok()
    }

    /// The texts of all elements matching `css`, in document order.
    pub(crate) async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(elements) = self.client.find_all(Locator::Css(css)).await {
            for element in elements {
                out.push(element.text().await.unwrap_or_default());
            }
        }
        out
    }

    /// How many elements match `css`.
    pub(crate) async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map(|v| v.len())
            .unwrap_or(0)
    }

    /// An attribute of the first element matching `css`.
    pub(crate) async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let element = self.client.find(Locator::Css(css)).await.ok()?;
        element.attr(name).await.ok().flatten()
    }

    /// Polls until the text of the first element matching `css` satisfies `pred`, and returns
    /// that text. Panics with the last text seen once `timeout` has passed.
    pub(crate) async fn wait_for_text<F>(&self, css: &str, timeout: Duration, pred: F) -> String
    where
        F: Fn(&str) -> bool,
    {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(text) = self.text(css).await {
                if pred(&text) {
                    return text;
                }
                last = Some(text);
            }
            if Instant::now() > deadline {
                panic!("after {timeout:?}, `{css}` text is {last:?}, which does not satisfy the condition");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Polls until at least `n` elements match `css`; returns the count.
    pub(crate) async fn wait_for_count(&self, css: &str, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let count = self.count(css).await;
            if count >= n {
                return count;
            }
            if Instant::now() > deadline {
                panic!("after {timeout:?}, `{css}` matches {count} elements, wanted {n}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Runs `script` (a function body; `return` gives the result) in the page.
    pub(crate) async fn eval(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("running script in the page: {e}"))
    }

    /// Resizes the window to the whole page height (up to 6000 px) and saves a PNG screenshot.
    pub(crate) async fn screenshot_full_page(&self, path: &Path, width: u32) {
        self.client
            .set_window_size(width, 1000)
            .await
            .expect("resizing the window");
        let height = self
            .eval("return document.documentElement.scrollHeight;")
            .await
            .as_u64()
            .unwrap_or(1000)
            .clamp(600, 6000) as u32;
        self.client
            .set_window_size(width, height)
            .await
            .expect("resizing the window");
        // The window may include a frame: grow it by what the viewport still lacks.
        let missing = self
            .eval("return document.documentElement.scrollHeight - window.innerHeight;")
            .await
            .as_i64()
            .unwrap_or(0)
            .clamp(0, 1000) as u32;
        if missing > 0 {
            self.client
                .set_window_size(width, height + missing)
                .await
                .expect("resizing the window");
        }
        let png = self.client.screenshot().await.expect("taking a screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("creating the screenshot directory");
        }
        std::fs::write(path, png).expect("writing the screenshot");
    }

    /// Ends the WebDriver session (Chromium quits), then chromedriver.
    pub(crate) async fn close(self) {
        let _ = self.client.clone().close().await;
        // Drop stops chromedriver and removes the profile directory.
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Signal the whole process group (chromedriver and any Chromium it left behind), by id.
        let pgid = self.driver.id();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile_dir);
    }
}

/// Generic check of a live dashboard at `url` (a real daemon or a fake): the grid, PV and
/// battery tiles show kW values, the SoC a percentage, every charger card a current, the
/// reasons list at least one line, and the cycle number moves on. Saves a full-page screenshot
/// to `screenshot` and returns the number of charger cards.
pub(crate) async fn assert_live_dashboard(url: &str, screenshot: &Path) -> usize {
    let wait = Duration::from_secs(20);
    let b = open_page(url).await;
    let kw_text = |t: &str| t.ends_with(" kW") && t.trim_end_matches(" kW").parse::<f64>().is_ok();
    b.wait_for_text("#grid-power", wait, kw_text).await;
    b.wait_for_text("#pv-power", wait, kw_text).await;
    b.wait_for_text("#battery-power", wait, kw_text).await;
    b.wait_for_text("#battery-soc", wait, |t| t.ends_with(" %"))
        .await;
    let cards = b.wait_for_count(".charger-card", 1, wait).await;
    let currents = b.texts(".charger-card .charger-current").await;
    assert_eq!(currents.len(), cards, "every charger card shows a current");
    b.wait_for_count("#reasons li", 1, wait).await;
    // Live: the cycle number moves on.
    let cycle = b
        .wait_for_text("#cycle", wait, |t| t.parse::<u64>().is_ok())
        .await;
    b.wait_for_text("#cycle", Duration::from_secs(30), |t| t != cycle)
        .await;
    b.screenshot_full_page(screenshot, 1440).await;
    b.close().await;
    cards
}
