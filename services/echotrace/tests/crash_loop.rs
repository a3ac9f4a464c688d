//! Crash loop: `echotrace run` against a real broker (tansu, with its sqlite storage) is killed
//! with SIGKILL at 20 random points while kcat produces the stream in parts, and restarted each
//! time. At the end, after `echotrace compact`, every post is in `posts/` once, every edge once,
//! and the cascades (membership, root, size, depth) and the alerts that started are those of one
//! uninterrupted `echotrace replay` of the same stream: the state snapshots and the offsets they
//! commit with them lose nothing, split nothing and start no alert twice.
//!
//! One partition, so the broker hands the posts over in the file's order, as `replay` reads them;
//! lexical linking only (the snapshot of the semantic window is tested in echotrace-core).
//! Needs tansu and kcat, as `broker_e2e.rs`.

mod common;

use arrow_array::{Array, RecordBatch, UInt32Array, UInt64Array};
use common::broker::{committed_offsets, create_topic, free_http, kcat, metric, start_instance, start_tansu, tools};
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const KILLS: usize = 20;
const GROUP: &str = "crash-loop";

fn config(dir: &Path, broker: &str) -> std::path::PathBuf {
    let path = dir.join("echotrace.toml");
    let toml = format!(
        r#"[kafka]
brokers = "{broker}"
group_id = "{GROUP}"
input_topics = ["posts"]
[kafka.properties]
"session.timeout.ms" = "3000"
"heartbeat.interval.ms" = "500"
[detector.semantic]
enabled = false
[output]
dir = "{out}"
flush_interval_ms = 50
[state]
dir = "{state}"
snapshot_interval_secs = 0
"#,
        out = dir.join("out").display(),
        state = dir.join("state").display()
    );
    std::fs::write(&path, toml).unwrap();
    path
}

/// Each post's cascade at the end (merges followed), and each cascade's (root, size, depth) as
/// its newest row says.
struct Outcome {
    cascades: BTreeMap<String, BTreeSet<String>>,
    shapes: BTreeMap<String, (String, u64, u32)>,
    posts: Vec<String>,
    edges: Vec<(String, String, String)>,
    alert_starts: Vec<(String, String)>,
}

fn numbers<'a, T: Array + 'static>(batches: &'a [RecordBatch], name: &str) -> Vec<&'a T> {
    batches.iter().map(|b| b.column_by_name(name).unwrap().as_any().downcast_ref::<T>().unwrap()).collect()
}

fn outcome(data: &Path) -> Outcome {
    let posts = read_dataset(&data.join("posts"));
    let (ids, cascade_ids) = (column(&posts, "post_id"), column(&posts, "cascade_id"));
    let merges = read_dataset(&data.join("cascade_merges"));
    let into: BTreeMap<String, String> = column(&merges, "absorbed_cascade_id")
        .into_iter()
        .zip(column(&merges, "into_cascade_id"))
        .map(|(a, b)| (a.unwrap(), b.unwrap()))
        .collect();
    let final_of = |mut cascade: String| {
        while let Some(next) = into.get(&cascade) {
            cascade = next.clone();
        }
        cascade
    };
    let mut cascades: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (id, cascade) in ids.iter().zip(cascade_ids) {
        cascades.entry(final_of(cascade.unwrap())).or_default().insert(id.clone().unwrap());
    }
    let rows = read_dataset(&data.join("cascades"));
    let (sizes, depths) = (numbers::<UInt64Array>(&rows, "size"), numbers::<UInt32Array>(&rows, "depth"));
    let updated = numbers::<arrow_array::TimestampMillisecondArray>(&rows, "updated_at");
    let mut shapes: BTreeMap<String, (i64, (String, u64, u32))> = BTreeMap::new();
    let (row_ids, roots) = (column(&rows, "cascade_id"), column(&rows, "root_post_id"));
    let mut at = 0;
    for (batch, ((size, depth), updated)) in rows.iter().zip(sizes.iter().zip(&depths).zip(&updated)) {
        for i in 0..batch.num_rows() {
            let id = row_ids[at + i].clone().unwrap();
            let row = (updated.value(i), (roots[at + i].clone().unwrap(), size.value(i), depth.value(i)));
            if shapes.get(&id).is_none_or(|(newest, _)| row.0 >= *newest) {
                shapes.insert(id, row);
            }
        }
        at += batch.num_rows();
    }
    let edges = read_dataset(&data.join("edges"));
    let mut edge_rows: Vec<(String, String, String)> = column(&edges, "child_id")
        .into_iter()
        .zip(column(&edges, "parent_id"))
        .zip(column(&edges, "kind"))
        .map(|((c, p), k)| (c.unwrap(), p.unwrap(), k.unwrap()))
        .collect();
    edge_rows.sort();
    let alerts = read_dataset(&data.join("alerts"));
    let (alert_ids, states) = (column(&alerts, "alert_id"), column(&alerts, "state"));
    let (events, starts) = (
        numbers::<arrow_array::TimestampMillisecondArray>(&alerts, "event_time"),
        numbers::<arrow_array::TimestampMillisecondArray>(&alerts, "started_at"),
    );
    let mut alert_starts = Vec::new();
    let mut at = 0;
    for (batch, (event, start)) in alerts.iter().zip(events.iter().zip(&starts)) {
        for i in 0..batch.num_rows() {
            if states[at + i].as_deref() == Some("firing") && event.value(i) == start.value(i) {
                alert_starts.push((alert_ids[at + i].clone().unwrap(), start.value(i).to_string()));
            }
        }
        at += batch.num_rows();
    }
    alert_starts.sort();
    let mut posts: Vec<String> = ids.into_iter().map(Option::unwrap).collect();
    posts.sort();
    Outcome {
        cascades,
        shapes: shapes.into_iter().map(|(id, (_, shape))| (id, shape)).collect(),
        posts,
        edges: edge_rows,
        alert_starts,
    }
}

#[test]
fn sigkill_at_twenty_random_points_loses_splits_and_repeats_nothing() {
    let Some((tansu, kcat_bin)) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (_tansu, broker) = start_tansu(&tansu, "sqlite://broker.db", free_port(), dir.path());
    for topic in ["posts", "echotrace.dead-letter", "echotrace.edges", "echotrace.alerts"] {
        create_topic(&tansu, &broker, topic, 1);
    }
    let config = config(dir.path(), &broker);
    let lines: Vec<&str> = SAMPLE.lines().collect();
    let parts: Vec<&[&str]> = lines.chunks(lines.len().div_ceil(KILLS)).collect();

    // Kill points drawn by a fixed seed, so a failure repeats. One kill in four lands while the
    // instance starts (restoring its snapshot, joining the group); the others once it consumes:
    // the part is produced, and the kill comes 0 to 400 ms later, while it reads, links, flushes,
    // writes its snapshot or commits (a checkpoint every 50 ms).
    let mut seed = 0x5eed_u64;
    let mut draw = |below: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % below
    };
    let deadline = Instant::now() + Duration::from_secs(420);
    for (kill, part) in parts.iter().enumerate() {
        let mut input = part.join("\n").into_bytes();
        input.push(b'\n');
        let produce = || kcat(&kcat_bin, &["-P", "-b", &broker, "-t", "posts"], Some(&input));
        let http = free_http();
        let starting = kill % 4 == 0;
        if starting {
            produce();
        }
        let mut instance = start_instance(&config, http, &dir.path().join(format!("run-{kill}.log")));
        if starting {
            std::thread::sleep(Duration::from_millis(draw(3_000)));
        } else {
            wait_for("the instance to be assigned the partition", Duration::from_secs(60), || {
                std::net::TcpStream::connect(http).is_ok() && http_get(http, "/readyz").0 == 200
            });
            produce();
            std::thread::sleep(Duration::from_millis(draw(400)));
        }
        instance.0.kill().unwrap();
        instance.0.wait().unwrap();
        assert!(Instant::now() < deadline, "the crash loop overran its time");
    }

    // Enough instances were killed while consuming: assigned, restored from a snapshot, writing.
    let logs: Vec<String> = (0..parts.len())
        .map(|kill| std::fs::read_to_string(dir.path().join(format!("run-{kill}.log"))).unwrap())
        .collect();
    let consuming = logs.iter().filter(|log| log.contains("partitions assigned")).count();
    let restored = logs.iter().filter(|log| log.contains("state restored")).count();
    assert!(consuming >= KILLS / 2 && restored >= KILLS / 2, "{consuming} killed while consuming, {restored} restored");

    // The last instance runs to the end of the input and stops cleanly.
    let http = free_http();
    let log = dir.path().join("run-last.log");
    let mut last = start_instance(&config, http, &log);
    let until = Instant::now() + Duration::from_secs(120);
    while committed_offsets(&broker, GROUP, 1)[0] < lines.len() as i64 {
        assert!(
            Instant::now() < until,
            "the group never committed the whole input ({} of {}); the last instance said:\n{}",
            committed_offsets(&broker, GROUP, 1)[0],
            lines.len(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(metric(http, "echotrace_snapshots_total") >= 1.0, "the last instance writes snapshots");
    let pid = last.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(last.0.wait().unwrap().success(), "the last instance stops cleanly");

    let data = dir.path().join("out");
    let rows = column(&read_dataset(&data.join("posts")), "post_id").len();
    eprintln!(
        "{consuming} of {KILLS} instances killed while consuming, {restored} restored from a snapshot; \
         {rows} post rows for {} posts before compaction",
        lines.len()
    );
    let compact = echotrace(&["compact", "--data", data.to_str().unwrap(), "--min-age-minutes", "0"]);
    assert!(compact.status.success(), "{}", String::from_utf8_lossy(&compact.stderr));
    let input = dir.path().join("stream.jsonl");
    std::fs::write(&input, SAMPLE).unwrap();
    let replayed = dir.path().join("replay");
    let replay = std::process::Command::new(env!("CARGO_BIN_EXE_echotrace"))
        .args(["replay", "--input", input.to_str().unwrap(), "--out", replayed.to_str().unwrap()])
        .env("ECHOTRACE_DETECTOR__SEMANTIC__ENABLED", "false")
        .output()
        .unwrap();
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));

    let (crashed, straight) = (outcome(&data), outcome(&replayed));
    let distinct: BTreeSet<&String> = crashed.posts.iter().collect();
    assert_eq!(distinct.len(), crashed.posts.len(), "a post stored twice after compaction");
    assert_eq!(crashed.posts, straight.posts, "every post once");
    let distinct_edges: BTreeSet<&(String, String, String)> = crashed.edges.iter().collect();
    assert_eq!(distinct_edges.len(), crashed.edges.len(), "an edge stored twice after compaction");
    assert_eq!(crashed.edges, straight.edges);
    assert_eq!(crashed.cascades, straight.cascades, "the same cascades, post for post");
    for cascade in straight.cascades.keys() {
        assert_eq!(crashed.shapes.get(cascade), straight.shapes.get(cascade), "cascade {cascade}");
    }
    assert!(!straight.alert_starts.is_empty(), "the sample's campaign raises alerts");
    assert_eq!(crashed.alert_starts, straight.alert_starts, "every alert started once, as in the replay");
}
