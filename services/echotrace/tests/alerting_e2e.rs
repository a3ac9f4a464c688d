//! Paging end to end, with the real servers from Debian's packages: `echotrace demo` (its campaign in
//! background chatter) → a real Prometheus scraping it and evaluating `deploy/prometheus` rules → a
//! real Alertmanager with `deploy/alertmanager/alertmanager.yml` → a webhook receiver here, which must
//! get the campaign's page with its labels and annotations, and then its resolution. Every panel
//! query of the Grafana dashboards in `dashboards/` must then return data from that Prometheus.
//! A shadow rule runs beside the shipped ones (a copy of the campaign rule on trial): its alert must
//! be counted and stored, marked shadow, and never reach Alertmanager.
//!
//! Needs `prometheus` and `prometheus-alertmanager` (`scripts/setup --test` installs them); without
//! them the test says so and passes, unless `ECHOTRACE_E2E_REQUIRED=1`, where it fails.

mod common;

use arrow_array::BooleanArray;
use common::{Reaper, free_port, wait_for};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
/// The rule on trial beside the shipped ones.
const TRIAL_RULE: &str = "amplification_campaign_trial";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What the webhook receiver got: (path, JSON body) of each post.
type Received = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// Accepts webhook posts and keeps (path, body) of each.
fn webhook_receiver() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut length = 0;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
                if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let path = request_line.split_whitespace().nth(1).unwrap_or_default().to_owned();
            if let Ok(json) = serde_json::from_slice(&body) {
                sink.lock().unwrap().push((path, json));
            }
            let _ = reader.get_mut().write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, received)
}

fn get_json(address: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = common::http_get(address, path);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every `expr` of every panel target in the dashboards.
fn dashboard_queries() -> Vec<(String, String)> {
    let mut queries = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(repo().join("dashboards")).unwrap().flatten().map(|e| e.path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    assert!(!files.is_empty(), "no dashboards");
    for file in files {
        let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let mut panels: Vec<serde_json::Value> = dashboard["panels"].as_array().cloned().unwrap_or_default();
        while let Some(panel) = panels.pop() {
            panels.extend(panel["panels"].as_array().cloned().unwrap_or_default());
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    queries.push((panel["title"].as_str().unwrap_or_default().to_owned(), expr.to_owned()));
                }
            }
        }
    }
    queries
}

#[test]
fn the_demo_campaign_pages_through_alertmanager_and_resolves() {
    if !Path::new(PROMETHEUS).exists() || !Path::new(ALERTMANAGER).exists() {
        let required = std::env::var("ECHOTRACE_E2E_REQUIRED").is_ok_and(|v| v == "1");
        assert!(!required, "prometheus or alertmanager missing and ECHOTRACE_E2E_REQUIRED=1");
        eprintln!("skipping: prometheus/alertmanager not installed (scripts/setup --test installs them)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (hook_port, received) = webhook_receiver();

    // Alertmanager with the shipped routing, its receivers pointed at this test.
    let am_port = free_port();
    let am_config = std::fs::read_to_string(repo().join("deploy/alertmanager/alertmanager.yml"))
        .unwrap()
        .replace("127.0.0.1:9095", &format!("127.0.0.1:{hook_port}"))
        .replace("127.0.0.1:9096", &format!("127.0.0.1:{hook_port}"))
        .replace("127.0.0.1:9097", &format!("127.0.0.1:{hook_port}"));
    std::fs::write(dir.path().join("alertmanager.yml"), am_config).unwrap();
    let _alertmanager = Reaper(
        Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", dir.path().join("alertmanager.yml").display()))
            .arg(format!("--storage.path={}", dir.path().join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // The shipped rules and one on trial that the campaign also meets.
    let rules = format!(
        "{}\n[[rule]]\nname = \"{TRIAL_RULE}\"\nseverity = \"critical\"\nshadow = true\nsummary = \"On trial\"\n\
         [rule.when]\nposts_per_minute = \">= 1\"\nplatforms = \">= 2\"\n",
        std::fs::read_to_string(repo().join("deploy/rules.toml")).unwrap()
    );
    std::fs::write(dir.path().join("rules.toml"), rules).unwrap();

    // The demo, pushing its alerts to that Alertmanager.
    let api_port = free_port();
    let api: SocketAddr = format!("127.0.0.1:{api_port}").parse().unwrap();
    let mut demo = Reaper(
        Command::new(env!("CARGO_BIN_EXE_echotrace"))
            .args(["demo", "--speed", "30", "--listen", &api.to_string(), "--out"])
            .arg(dir.path().join("demo-data"))
            .env("ECHOTRACE_ALERTING__ALERTMANAGER_URL", format!("http://127.0.0.1:{am_port}"))
            .env("ECHOTRACE_ALERTING__RESEND_INTERVAL_MS", "1000")
            .env("ECHOTRACE_ALERTING__RULES_FILE", dir.path().join("rules.toml"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Prometheus with the shipped rules, scraping the demo every second.
    let prometheus_port = free_port();
    let prometheus: SocketAddr = format!("127.0.0.1:{prometheus_port}").parse().unwrap();
    let config_dir = repo().join("deploy/prometheus");
    let prometheus_config = std::fs::read_to_string(config_dir.join("prometheus.yml"))
        .unwrap()
        .replace("127.0.0.1:9464", &api.to_string())
        .replace("127.0.0.1:9093", &format!("127.0.0.1:{am_port}"))
        .replace("scrape_interval: 5s", "scrape_interval: 1s")
        .replace("scrape_timeout: 4s", "scrape_timeout: 900ms")
        .replace("recording-rules.yml", &config_dir.join("recording-rules.yml").display().to_string())
        .replace("alert-rules.yml", &config_dir.join("alert-rules.yml").display().to_string());
    std::fs::write(dir.path().join("prometheus.yml"), prometheus_config).unwrap();
    let _prometheus = Reaper(
        Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("prom-data").display()))
            .arg(format!("--web.listen-address={prometheus}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // The page: the campaign's alert, routed to on-call, with what on-call needs to act.
    let page = |status: &str| {
        received.lock().unwrap().iter().find_map(|(path, body)| {
            let alerts = body["alerts"].as_array()?;
            alerts
                .iter()
                .find(|a| a["labels"]["alertname"] == "amplification_campaign" && a["status"] == status)
                .map(|a| (path.clone(), a.clone()))
        })
    };
    wait_for("the campaign's page", Duration::from_secs(120), || page("firing").is_some());
    let (path, alert) = page("firing").unwrap();
    assert_eq!(path, "/page", "critical alerts go to the pager receiver");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["service"], "echotrace");
    let cascade_id = alert["labels"]["cascade_id"].as_str().unwrap().to_owned();
    assert_eq!(alert["annotations"]["root_post_id"], common::CAMPAIGN_ROOT);
    assert!(alert["annotations"]["cascade_url"].as_str().unwrap().ends_with(&format!("/view/cascades/{cascade_id}")));
    assert!(alert["annotations"]["sql"].as_str().unwrap().contains(&cascade_id));
    assert!(alert["annotations"]["platforms"].as_str().unwrap().split(',').count() >= 2);
    let view = get_json(api, &format!("/cascades/{cascade_id}"));
    assert_eq!(view["cascade"]["root_post_id"], common::CAMPAIGN_ROOT);

    // The trial rule fired too, in shadow: counted apart, absent from Alertmanager.
    let (_, exposition) = common::http_get(api, "/metrics");
    let shadow_firing = format!(
        "echotrace_shadow_alert_transitions_total{{rule=\"{TRIAL_RULE}\",severity=\"critical\",state=\"firing\"}} "
    );
    assert!(exposition.lines().any(|l| l.starts_with(&shadow_firing) && !l.ends_with(" 0")), "{exposition}");
    assert!(!exposition.contains(&format!("echotrace_alerts_firing{{rule=\"{TRIAL_RULE}\"")));
    let in_alertmanager = get_json(format!("127.0.0.1:{am_port}").parse().unwrap(), "/api/v2/alerts");
    let names: Vec<&str> =
        in_alertmanager.as_array().unwrap().iter().filter_map(|a| a["labels"]["alertname"].as_str()).collect();
    assert!(names.contains(&"amplification_campaign") && !names.contains(&TRIAL_RULE), "{names:?}");

    wait_for("the campaign's alert to resolve", Duration::from_secs(180), || page("resolved").is_some());
    // Only the campaign pages: chatter cascades raise nothing on the pager.
    for (path, body) in received.lock().unwrap().iter().filter(|(path, _)| path == "/page") {
        for alert in body["alerts"].as_array().unwrap() {
            assert_eq!(alert["labels"]["cascade_id"], cascade_id.as_str(), "unexpected page on {path}: {alert}");
        }
    }

    // Every dashboard panel's query returns data from the Prometheus that scraped the demo.
    let queries = dashboard_queries();
    wait_for("every dashboard query to return data", Duration::from_secs(60), || {
        queries.iter().all(|(_, expr)| {
            let result = get_json(prometheus, &format!("/api/v1/query?query={}", url_encode(expr)));
            result["data"]["result"].as_array().is_some_and(|r| !r.is_empty())
        })
    });
    // The exposition passes Prometheus's own linter.
    let (_, exposition) = common::http_get(api, "/metrics");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let lint = promtool.wait_with_output().unwrap();
    assert!(
        lint.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    let rules = get_json(prometheus, "/api/v1/rules");
    assert!(rules["data"]["groups"].as_array().is_some_and(|g| !g.is_empty()), "the shipped rules loaded");

    let pid = demo.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(demo.0.wait().unwrap().success(), "the demo stops cleanly on SIGTERM");

    // No webhook ever carried the trial rule; its alerts are in `alerts/`, marked shadow.
    for (path, body) in received.lock().unwrap().iter() {
        for alert in body["alerts"].as_array().unwrap() {
            assert_ne!(alert["labels"]["alertname"], TRIAL_RULE, "a shadow alert reached {path}");
        }
    }
    let alerts = common::read_dataset(&dir.path().join("demo-data/alerts"));
    let rules = common::column(&alerts, "rule");
    let shadow: Vec<bool> = alerts
        .iter()
        .flat_map(|b| {
            let column = b.column_by_name("shadow").unwrap().as_any().downcast_ref::<BooleanArray>().unwrap().clone();
            (0..column.len()).map(move |i| column.value(i))
        })
        .collect();
    let trial_rows = rules.iter().zip(&shadow).filter(|(rule, _)| rule.as_deref() == Some(TRIAL_RULE));
    assert!(trial_rows.clone().count() >= 1, "the trial rule's alerts are stored");
    assert!(trial_rows.clone().all(|(_, shadow)| *shadow), "and marked shadow");
    assert!(rules.iter().zip(&shadow).filter(|(rule, _)| rule.as_deref() != Some(TRIAL_RULE)).all(|(_, s)| !s));
}
