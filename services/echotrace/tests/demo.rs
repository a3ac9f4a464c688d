//! `echotrace demo --exit-when-done`, the README's first command: it consumes the bundled sample,
//! prints the explorer's URL, the campaign's alerts as they fire and resolve with the alert's view
//! in the explorer, lists the largest cascades and exits cleanly.

mod common;

use common::*;
use echotrace_core::detector::graph::cascade_id_for;

#[test]
fn the_demo_prints_each_alert_as_it_fires_and_resolves() {
    let Some(runtime) = onnxruntime_library() else { return };
    let dir = tempfile::tempdir().unwrap();
    let demo = std::process::Command::new(env!("CARGO_BIN_EXE_echotrace"))
        .args(["demo", "--exit-when-done", "--speed", "120", "--listen", "127.0.0.1:0", "--out"])
        .arg(dir.path().join("data"))
        .env("ORT_DYLIB_PATH", runtime)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&demo.stdout);
    assert!(demo.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&demo.stderr));
    let campaign = cascade_id_for(CAMPAIGN_ROOT);
    let api = stdout
        .lines()
        .find_map(|line| line.strip_prefix("explorer: "))
        .and_then(|rest| rest.split('/').nth(2))
        .unwrap_or_else(|| panic!("no API address in {stdout}"));
    let view = format!("http://{api}/view/alerts/");
    let mut alert_ids = Vec::new();
    for change in ["FIRING: amplification_campaign (critical)", "resolved: amplification_campaign (critical)"] {
        let line = format!("alert {change} on cascade {campaign}: {view}");
        let found = stdout.lines().find_map(|l| l.split_once(&line).map(|(_, id)| id.to_owned()));
        alert_ids.push(found.unwrap_or_else(|| panic!("no line {line:?} in\n{stdout}")));
    }
    assert_eq!(alert_ids[0], alert_ids[1], "the page resolves the alert it started");
    let fired = stdout.lines().filter(|line| line.contains("alert FIRING: amplification_campaign")).count();
    assert_eq!(fired, 1, "one start, however the cascade grows");
    assert!(stdout.contains(&format!("cascade {campaign} root {CAMPAIGN_ROOT}")), "{stdout}");
}
