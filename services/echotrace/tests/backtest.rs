//! `echotrace backtest` as a user runs it: a candidate rules file beside the shipped ones over the
//! demo sample, from the stream and from a replay's stored datasets, with the campaign labelled.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

/// The shipped rules without the dashboard rule `cross_platform_spread`, plus a looser one that
/// chatter meets too.
fn candidate_rules() -> String {
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rules.toml")).unwrap();
    let kept: Vec<&str> =
        shipped.split("[[rule]]").filter(|block| !block.contains("name = \"cross_platform_spread\"")).collect();
    assert_eq!(kept.len() + 1, shipped.split("[[rule]]").count(), "the shipped rules have cross_platform_spread");
    format!(
        "{}\n[[rule]]\nname = \"any_spread\"\nseverity = \"info\"\nsummary = \"Two platforms\"\n\
         [rule.when]\nplatforms = \">= 2\"\nsize = \">= 3\"\n",
        kept.join("[[rule]]")
    )
}

fn backtest(args: &[&str]) -> String {
    let output = echotrace(&[&["backtest"], args].concat());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn rule<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["rules"].as_array().unwrap().iter().find(|r| r["rule"] == name).unwrap_or_else(|| panic!("{name}: {report}"))
}

#[test]
fn a_candidate_is_compared_exactly_on_the_stream_and_on_a_past_runs_datasets() {
    if onnxruntime_library().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = replay_sample(dir.path());
    let input = dir.path().join("stream.jsonl");
    let rules = dir.path().join("candidate.toml");
    std::fs::write(&rules, candidate_rules()).unwrap();

    // The campaign's posts, labelled: those the replay put in the root's cascade.
    let posts = read_dataset(&data.join("posts"));
    let (ids, cascades) = (column(&posts, "post_id"), column(&posts, "cascade_id"));
    let root = ids.iter().position(|id| id.as_deref() == Some(CAMPAIGN_ROOT)).unwrap();
    let labels: Vec<String> = (0..ids.len())
        .filter(|&i| cascades[i] == cascades[root])
        .map(|i| format!("{}\tlarkspur", ids[i].as_deref().unwrap()))
        .collect();
    assert!(labels.len() > 30, "{}", labels.len());
    let labels_file = dir.path().join("labels.tsv");
    std::fs::write(&labels_file, format!("post_id\tcampaign\n{}\n", labels.join("\n"))).unwrap();

    let (rules, labels_file) = (rules.to_str().unwrap(), labels_file.to_str().unwrap());
    let on_stream = ["--rules", rules, "--input", input.to_str().unwrap(), "--labels", labels_file];
    let json = backtest(&[&on_stream[..], &["--format", "json"]].concat());
    assert_eq!(json, backtest(&[&on_stream[..], &["--format", "json"]].concat()), "the same input twice");
    let on_data = ["--rules", rules, "--data", data.to_str().unwrap(), "--labels", labels_file, "--format", "json"];
    assert_eq!(json, backtest(&on_data), "the stored posts replay as the stream did");

    let report: Value = serde_json::from_str(&json).unwrap();
    let posts = SAMPLE.lines().count() as u64;
    assert_eq!(report["posts"], posts);
    // The page is the same on both sides, and within minutes of the campaign's first post.
    let page = rule(&report, "amplification_campaign");
    assert_eq!(page["fired"], serde_json::json!([1, 1]), "{page}");
    assert!(page["added"].as_array().unwrap().is_empty() && page["removed"].as_array().unwrap().is_empty());
    for side in report["sides"].as_array().unwrap() {
        let campaign = &side["campaigns"][0];
        assert_eq!(campaign["campaign"], "larkspur");
        let after = campaign["first_page_after_secs"].as_f64().unwrap();
        assert!(after > 0.0 && after < 15.0 * 60.0, "{side}");
        assert_eq!(side["false_pages_per_million"], 0.0, "{side}");
    }
    // The removed rule's alerts are listed as removed, the new rule's as added, each with its SQL.
    let removed = rule(&report, "cross_platform_spread");
    assert_eq!(removed["fired"][1], 0);
    assert_eq!(removed["removed"].as_array().unwrap().len() as u64, removed["fired"][0].as_u64().unwrap());
    let added = rule(&report, "any_spread");
    let added_alerts = added["added"].as_array().unwrap();
    assert!(added["fired"][0] == 0 && !added_alerts.is_empty(), "{added}");
    assert!(added_alerts[0]["sql"].as_str().unwrap().contains(added_alerts[0]["cascade_id"].as_str().unwrap()));

    let table = backtest(&on_stream);
    assert!(table.contains("removed: cross_platform_spread on cascade"), "{table}");
    assert!(table.contains("added: any_spread on cascade") && table.contains("SELECT post_id"), "{table}");
}

#[test]
fn a_bad_candidate_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("bad.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"x\"\nseverity = \"critical\"\nsummary = \"s\"\n[rule.when]\nvelocity = \">= 1\"\n",
    )
    .unwrap();
    let input = dir.path().join("stream.jsonl");
    std::fs::write(&input, SAMPLE).unwrap();
    let output = echotrace(&["backtest", "--rules", rules.to_str().unwrap(), "--input", input.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown feature `velocity`") && stderr.contains("bad.toml"), "{stderr}");
}
