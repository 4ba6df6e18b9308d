//! Headless Chromium driven over WebDriver, for tests of what a person sees in a browser.
//!
//! `Browser::start()` runs chromedriver on a free loopback port (in its own process group), opens
//! one headless Chromium session through it with `fantoccini`, and hands out blocking calls (the
//! tests are plain `#[test]` functions, like the rest of tests/; each call runs on a small tokio
//! runtime the `Browser` owns). Dropping it ends the session and kills chromedriver's whole
//! process group, so no browser outlives its test, even one that panicked.
//!
//! The binaries are the Debian packages' (`chromium`, `chromium-driver`; `.ci/run` installs them
//! when missing), found on `PATH`, or named by `TINYCHAIN_CHROMIUM` and `TINYCHAIN_CHROMEDRIVER`.
//! A missing one fails the test and says what to install: a browser test never skips.

#![allow(dead_code)]

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long chromedriver and the browser get to start and open a session.
const SESSION_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one WebDriver command may take (a screenshot of a large page included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    /// chromedriver's log and the browser's profile.
    scratch: tempfile::TempDir,
}

/// The path of `name` on `PATH`, or the value of the environment variable `variable`.
fn find_program(variable: &str, name: &str, package: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(variable) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{variable}={} names no file", path.display());
        return path;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the browser tests need `{name}`, which is not on PATH: install the Debian package `{package}` \
                 (`apt-get install chromium chromium-driver`; `.ci/run` does it as root), or set {variable} to its path"
            )
        })
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    listener.local_addr().unwrap().port()
}

impl Browser {
    /// chromedriver and a headless Chromium session with a 1366×1100 window.
    pub fn start() -> Browser {
        let chromium = find_program("TINYCHAIN_CHROMIUM", "chromium", "chromium");
        let chromedriver = find_program("TINYCHAIN_CHROMEDRIVER", "chromedriver", "chromium-driver");
        let scratch = tempfile::tempdir().unwrap();
        let log_path = scratch.path().join("chromedriver.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let port = free_port();
        let mut command = Command::new(&chromedriver);
        command
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log_path.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // Its own process group, so `Drop` can end chromedriver and every browser process it started.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = command.spawn().unwrap_or_else(|error| panic!("cannot start {}: {error}", chromedriver.display()));
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let mut browser = Browser { runtime, client: None, driver, scratch };
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // Root in a container has no user namespaces for Chromium's sandbox.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--window-size=1366,1100",
                    format!("--user-data-dir={}", browser.scratch.path().join("profile").display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else { unreachable!("a JSON object literal") };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + SESSION_START_TIMEOUT;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            let attempt =
                browser.block_on(ClientBuilder::new(connector).capabilities(capabilities.clone()).connect(&url));
            match attempt {
                Ok(client) => break client,
                Err(error) => {
                    if let Ok(Some(status)) = browser.driver.try_wait() {
                        panic!(
                            "chromedriver exited ({status}) before a session opened: {error}\n{}",
                            browser.driver_log()
                        );
                    }
                    assert!(
                        Instant::now() < deadline,
                        "no browser session within {SESSION_START_TIMEOUT:?}: {error}\n{}",
                        browser.driver_log()
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        };
        browser.client = Some(client);
        browser
    }

    /// Runs one WebDriver future to its end (at most `COMMAND_TIMEOUT`).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(async {
            tokio::time::timeout(COMMAND_TIMEOUT, future)
                .await
                .unwrap_or_else(|_| panic!("a WebDriver command took over {COMMAND_TIMEOUT:?}"))
        })
    }

    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("the session is open until drop")
    }

    pub fn driver_log(&self) -> String {
        let text = std::fs::read_to_string(self.scratch.path().join("chromedriver.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!("--- chromedriver log (last 40 lines)\n{}", lines[lines.len().saturating_sub(40)..].join("\n"))
    }

    pub fn goto(&self, url: &str) {
        self.block_on(self.client().goto(url)).unwrap_or_else(|error| panic!("cannot open {url}: {error}"));
    }

    /// Runs `script` in the page (a function body: `return ...`) and gives back what it returned.
    pub fn execute(&self, script: &str, arguments: Vec<Value>) -> Value {
        self.block_on(self.client().execute(script, arguments))
            .unwrap_or_else(|error| panic!("script failed: {error}\n{script}"))
    }

    /// The attribute of the first element matching `css`; `None` if there is no such element or
    /// attribute.
    pub fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let element = self.block_on(self.client().find(Locator::Css(css))).ok()?;
        self.block_on(element.attr(name)).ok().flatten()
    }

    /// The visible text of the first element matching `css`.
    pub fn text(&self, css: &str) -> Option<String> {
        let element = self.block_on(self.client().find(Locator::Css(css))).ok()?;
        self.block_on(element.text()).ok()
    }

    /// Clears the input matching `css` and types `text` into it, as a person would.
    pub fn type_into(&self, css: &str, text: &str) {
        let element =
            self.block_on(self.client().find(Locator::Css(css))).unwrap_or_else(|error| panic!("{css}: {error}"));
        self.block_on(element.clear()).unwrap();
        self.block_on(element.send_keys(text)).unwrap();
    }

    pub fn click(&self, css: &str) {
        let element =
            self.block_on(self.client().find(Locator::Css(css))).unwrap_or_else(|error| panic!("{css}: {error}"));
        self.block_on(element.click()).unwrap_or_else(|error| panic!("clicking {css}: {error}"));
    }

    pub fn set_window_size(&self, width: u32, height: u32) {
        self.block_on(self.client().set_window_size(width, height)).unwrap();
    }

    /// A PNG of the viewport, written to `path`.
    pub fn screenshot(&self, path: &Path) {
        let png = self.block_on(self.client().screenshot()).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Polls `condition` every 100 ms until it gives a value; panics with `what` after `timeout`.
    pub fn wait_for<T>(&self, timeout: Duration, what: &str, mut condition: impl FnMut(&Browser) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = condition(self) {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}\n{}", self.driver_log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Best effort: the process group is killed below whatever the session says.
            let _ = self.runtime.block_on(async { tokio::time::timeout(Duration::from_secs(5), client.close()).await });
        }
        let group = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}
