//! `detector.link_shards`: the lexical window split into linking shards gives what one window
//! gives. The demo sample (campaign copies, shared URLs, reposts, bot summaries by meaning) is
//! replayed with one window and with three shards, and every table analysts read must hold the
//! same rows.

mod common;

use arrow_cast::display::array_value_to_string;
use common::*;
use std::path::Path;
use std::process::Command;

/// Columns that say when a row was written, not what was found.
const WALL_CLOCK_COLUMNS: [&str; 4] = ["ingested_at", "arrival", "updated_at", "emitted_at"];

/// Replays the sample into `dir/out` with `ECHOTRACE_DETECTOR__LINK_SHARDS=shards`.
fn replay_with_shards(dir: &Path, shards: u32, runtime: &Path) -> std::path::PathBuf {
    let input = dir.join("sample.jsonl");
    std::fs::write(&input, SAMPLE).unwrap();
    let out = dir.join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_echotrace"))
        .args(["replay", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .env("ECHOTRACE_DETECTOR__LINK_SHARDS", shards.to_string())
        .env("ORT_DYLIB_PATH", runtime)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    out
}

/// Every row of a table, each as its columns' values in words (wall-clock columns left out),
/// sorted.
fn rows(out: &Path, table: &str) -> Vec<String> {
    let mut rows = Vec::new();
    for batch in read_dataset(&out.join(table)) {
        let schema = batch.schema();
        let kept: Vec<usize> = (0..batch.num_columns())
            .filter(|&c| !WALL_CLOCK_COLUMNS.contains(&schema.field(c).name().as_str()))
            .collect();
        for row in 0..batch.num_rows() {
            let values: Vec<String> = kept
                .iter()
                .map(|&c| {
                    format!("{}={}", schema.field(c).name(), array_value_to_string(batch.column(c), row).unwrap())
                })
                .collect();
            rows.push(values.join(" "));
        }
    }
    rows.sort();
    rows
}

#[test]
fn three_linking_shards_give_the_rows_one_window_gives() {
    let Some(runtime) = onnxruntime_library() else {
        return; // the sample's summaries are linked by the shipped model
    };
    let (one, three) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (one, three) = (replay_with_shards(one.path(), 1, &runtime), replay_with_shards(three.path(), 3, &runtime));
    for table in ["posts", "edges", "cascades", "alerts", "cascade_merges"] {
        let (expected, got) = (rows(&one, table), rows(&three, table));
        assert!(!expected.is_empty() || table == "cascade_merges", "the sample gives {table} rows");
        let missing: Vec<&String> = expected.iter().filter(|row| !got.contains(row)).take(3).collect();
        let extra: Vec<&String> = got.iter().filter(|row| !expected.contains(row)).take(3).collect();
        assert!(missing.is_empty() && extra.is_empty(), "{table}: missing {missing:#?}, extra {extra:#?}");
        assert_eq!(got.len(), expected.len(), "{table}");
    }
    let edges = rows(&one, "edges");
    for kind in ["near_duplicate", "shared_url", "summary"] {
        assert!(edges.iter().any(|row| row.contains(&format!("kind={kind}"))), "the sample has {kind} edges");
    }
}

/// Asserts that `echotrace args` with the environment `env` fails, saying `reason`.
fn refused(args: &[&str], env: &[(&str, &str)], reason: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_echotrace")).args(args).envs(env.iter().copied()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains(reason), "{stderr}");
}

#[test]
fn no_linking_shards_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    refused(
        &["replay", "--input", "/dev/null", "--out", out.to_str().unwrap()],
        &[("ECHOTRACE_DETECTOR__LINK_SHARDS", "0")],
        "expected a nonzero u32 for key \"DETECTOR.LINK_SHARDS\"",
    );
}

#[test]
fn a_link_process_naming_no_shard_is_refused_by_name() {
    refused(
        &["run"],
        &[
            ("ECHOTRACE_STAGE__ROLE", "link"),
            ("ECHOTRACE_STAGE__LINK_SHARD", "3"),
            ("ECHOTRACE_DETECTOR__LINK_SHARDS", "3"),
        ],
        "stage.link_shard = 3 names no shard of detector.link_shards = 3",
    );
}
