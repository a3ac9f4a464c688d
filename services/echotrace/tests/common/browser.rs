//! A headless Chromium driven through chromedriver (WebDriver), for end-to-end tests of web pages.

use super::{Reaper, free_port};
use fantoccini::elements::Element;
use fantoccini::{ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// chromedriver's log, beside the profile in the browser's scratch directory.
const CHROMEDRIVER_LOG: &str = "chromedriver.log";

/// How many chromedrivers are started, each on a port drawn anew, before a test gives up.
const START_ATTEMPTS: u32 = 3;
/// How long chromedriver may take to listen and Chromium to open a session.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A WebDriver session in a headless Chromium, with the chromedriver and profile it owns.
pub struct Browser {
    pub client: fantoccini::Client,
    chromedriver: Reaper,
    /// Chromium's user-data-dir (`profile/`) and chromedriver's log (`chromedriver.log`).
    scratch: tempfile::TempDir,
}

impl Browser {
    /// A new session; `None` (the caller skips) without chromedriver or chromium, unless `ECHOTRACE_E2E_REQUIRED=1`.
    pub async fn start() -> Option<Browser> {
        let (Some(chromedriver), Some(chromium)) = (on_path("chromedriver"), on_path("chromium")) else {
            let required = std::env::var("ECHOTRACE_E2E_REQUIRED").is_ok_and(|v| v == "1");
            assert!(!required, "chromium or chromedriver missing and ECHOTRACE_E2E_REQUIRED=1");
            eprintln!("skipping: chromium or chromedriver not installed (run scripts/setup --test)");
            return None;
        };
        let scratch = tempfile::tempdir().unwrap();
        let profile = scratch.path().join("profile");
        let log = scratch.path().join(CHROMEDRIVER_LOG);
        // A port drawn free may be taken by another test's server before chromedriver binds it:
        // then the session cannot open, and a new chromedriver on another port is tried.
        let mut attempt = 0;
        let (client, chromedriver) = loop {
            attempt += 1;
            let port = free_port();
            let child = Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                // Its own process group, so that dropping the browser also ends the Chromium it started.
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", chromedriver.display()));
            let chromedriver = Reaper(child);

            let address = format!("127.0.0.1:{port}");
            let deadline = Instant::now() + START_TIMEOUT;
            while tokio::net::TcpStream::connect(&address).await.is_err() {
                assert!(
                    Instant::now() < deadline,
                    "chromedriver did not listen on {address}; its log:\n{}",
                    read_log(&log)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }

            let chrome_options = serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    format!("--user-data-dir={}", profile.display()),
                    "--window-size=1280,900",
                ],
            });
            let mut capabilities = fantoccini::wd::Capabilities::new();
            capabilities.insert("goog:chromeOptions".to_owned(), chrome_options);
            let client = ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities)
                .connect(&format!("http://{address}"))
                .await;
            match client {
                Ok(client) => break (client, chromedriver),
                Err(error) if attempt < START_ATTEMPTS => {
                    eprintln!("no Chromium session on {address} (attempt {attempt}): {error}; trying another port");
                    drop(chromedriver);
                }
                Err(error) => panic!("open a Chromium session: {error}; chromedriver's log:\n{}", read_log(&log)),
            }
        };
        Some(Browser { client, chromedriver, scratch })
    }

    /// Ends the WebDriver session, which closes Chromium; chromedriver is stopped on drop.
    pub async fn close(self) {
        self.client.clone().close().await.expect("end the WebDriver session");
    }

    /// The first element matching `css`, polling until it is there; panics after `timeout`.
    pub async fn wait_for_css(&self, css: &str, timeout: Duration) -> Element {
        self.client
            .wait()
            .at_most(timeout)
            .every(Duration::from_millis(50))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element matches {css:?} after {timeout:?}: {e}"))
    }

    /// The rendered text of the first element matching `css` (panics when none does).
    pub async fn text_of(&self, css: &str) -> String {
        let element =
            self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no element matches {css:?}: {e}"));
        element.text().await.unwrap_or_else(|e| panic!("the text of {css:?}: {e}"))
    }

    /// chromedriver's log so far, for a failing test's message.
    pub fn chromedriver_log(&self) -> String {
        read_log(&self.scratch.path().join(CHROMEDRIVER_LOG))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and any Chromium left running by a test that did not close.
        let group = format!("-{}", self.chromedriver.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `name` in a directory of the PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).map(|d| d.join(name)).find(|p| p.is_file())
}
