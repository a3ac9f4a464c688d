//! `echotrace compact` over a replay written in many small checkpoint files: one sorted file per
//! closed hour, the same answers to every query, the rows a redelivery wrote twice kept once, and
//! an interrupted run finished by the next.

mod common;

use common::*;
use std::path::Path;

fn query(data: &Path, sql: &str) -> Vec<serde_json::Value> {
    let output = echotrace(&["query", "--data", data.to_str().unwrap(), "--format", "json", sql]);
    assert!(output.status.success(), "{sql}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn compact(data: &Path) -> String {
    let output = echotrace(&["compact", "--data", data.to_str().unwrap(), "--min-age-minutes", "0"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// What an analyst would look at: counts, the current cascades, the campaign's posts, the edges.
fn answers(data: &Path) -> Vec<Vec<serde_json::Value>> {
    [
        "SELECT count(*) AS n, count(DISTINCT post_id) AS ids FROM posts",
        "SELECT cascade_id, size, depth, summary_depth FROM
           (SELECT *, row_number() OVER (PARTITION BY cascade_id ORDER BY updated_at DESC) AS rn FROM cascades)
         WHERE rn = 1 ORDER BY cascade_id",
        "SELECT post_id, parent_id, parent_kind, generation FROM posts ORDER BY post_id",
        "SELECT child_id, parent_id, kind, is_primary FROM edges ORDER BY child_id, parent_id, kind",
        "SELECT alert_id, state, event_time FROM alerts ORDER BY alert_id, event_time, state",
    ]
    .iter()
    .map(|sql| query(data, sql))
    .collect()
}

#[test]
fn compaction_keeps_every_answer_in_one_file_per_hour() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("sample.jsonl");
    std::fs::write(&input, SAMPLE).unwrap();
    let data = dir.path().join("out");
    let replay = std::process::Command::new(env!("CARGO_BIN_EXE_echotrace"))
        .args(["replay", "--input", input.to_str().unwrap(), "--out", data.to_str().unwrap()])
        .env("ECHOTRACE_OUTPUT__FLUSH_ROWS", "20")
        .output()
        .unwrap();
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    let before = answers(&data);
    let small_files = dataset_files(&data.join("posts"));
    assert!(small_files.len() >= 10, "a checkpoint every embedding batch: {}", small_files.len());

    // A redelivery after a restart writes some posts again.
    let redelivered = small_files[3].with_file_name("part-redelivered.parquet");
    std::fs::copy(&small_files[3], &redelivered).unwrap();
    let doubled = query(&data, "SELECT count(*) AS n FROM posts");
    assert!(doubled[0]["n"].as_u64().unwrap() > SAMPLE.lines().count() as u64);
    let kept_aside = std::fs::read(&small_files[0]).unwrap();

    let printed = compact(&data);
    assert!(printed.contains("0 files of an interrupted run"), "{printed}");
    for dataset in ["posts", "edges", "cascades", "alerts"] {
        let files = dataset_files(&data.join(dataset));
        let mut partitions: Vec<_> = files.iter().map(|f| f.parent().unwrap().to_owned()).collect();
        partitions.dedup();
        assert_eq!(files.len(), partitions.len(), "{dataset}: one file per partition: {files:?}");
        assert!(files.iter().all(|f| f.file_name().unwrap().to_string_lossy().starts_with("compacted-")));
    }
    assert_eq!(answers(&data), before, "compaction changes no answer and drops the redelivered copies");
    let alert = query(&data, "SELECT sql FROM alerts WHERE rule = 'amplification_campaign' LIMIT 1");
    assert_eq!(query(&data, alert[0]["sql"].as_str().unwrap()).len(), 46);
    // Each compacted file is sorted by cascade, so a cascade's rows sit in few row groups.
    for file in dataset_files(&data.join("posts")) {
        let batches = read_dataset(file.parent().unwrap());
        let ids: Vec<String> = column(&batches, "cascade_id").into_iter().map(Option::unwrap).collect();
        assert!(ids.windows(2).all(|w| w[0] <= w[1]), "{} sorted by cascade_id", file.display());
    }

    // A run stopped after its new file was in place but before it removed an input: the next run
    // removes the input first, and nothing is counted twice.
    std::fs::write(&small_files[0], &kept_aside).unwrap();
    let printed = compact(&data);
    assert!(
        printed.contains("compacted 0 partitions") && printed.contains("1 files of an interrupted run"),
        "{printed}"
    );
    assert_eq!(answers(&data), before);
    assert!(compact(&data).contains("compacted 0 partitions"), "nothing left to do");
}

#[test]
fn open_hours_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = replay_sample(dir.path());
    let files = dataset_files(&data.join("posts"));
    // The sample's hours ended in 2026; a minimum age of a thousand years keeps them all open.
    let output = echotrace(&["compact", "--data", data.to_str().unwrap(), "--min-age-minutes", "525600000"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("compacted 0 partitions"));
    assert_eq!(dataset_files(&data.join("posts")), files);
}
