//! Faults around a real broker (tansu) that `echotrace run` must ride out on its own:
//!
//! - a rebalance: a second instance joins the group mid-stream and leaves again. No post is lost,
//!   no committed offset ever goes back (which a commit by an instance that no longer owns the
//!   partition would do), and after `echotrace compact` every post is in `posts/` once;
//! - a revocation: partitions are committed before they are given up. An instance reads the whole
//!   input with no checkpoint due, a second joins, and the rebalance commits everything: the
//!   newcomer reads nothing again, and the partition the first keeps needs no rebuild;
//! - the broker gone for 30 s mid-stream and back (its sqlite storage outlives it): the instance
//!   stays up, `/readyz` says it is not ready while the broker is away and ready again after, and
//!   nothing is lost.
//!
//! Needs tansu and kcat, as `broker_e2e.rs`.

mod common;

use common::broker::{committed_offsets, create_topic, free_http, kcat, metric, start_instance, start_tansu, tools};
use common::*;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Writes an instance's configuration: its own state folder, the shared output folder.
fn config(dir: &Path, name: &str, broker: &str, group: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let toml = format!(
        r#"[kafka]
brokers = "{broker}"
group_id = "{group}"
input_topics = ["posts"]
[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"
"statistics.interval.ms" = "1000"
[detector.semantic]
enabled = false
[output]
dir = "{out}"
flush_interval_ms = 100
[state]
dir = "{state}"
snapshot_interval_secs = 1
"#,
        out = dir.join("out").display(),
        state = dir.join(format!("state-{name}")).display()
    );
    std::fs::write(&path, toml).unwrap();
    path
}

fn stop(instance: &mut Reaper) {
    let pid = instance.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(instance.0.wait().unwrap().success(), "the instance stops cleanly");
}

fn ready(http: SocketAddr) -> bool {
    std::net::TcpStream::connect(http).is_ok() && http_get(http, "/readyz").0 == 200
}

/// Produces `lines` keyed by post id, so they spread over the partitions as a platform's posts
/// would (without keys, librdkafka's sticky partitioner may put them all in one).
///
/// One message per record batch: a revocation commits at the first post the order still holds,
/// which may lie inside a batch, and tansu 0.6 answers a fetch from inside a batch with nothing
/// (Kafka returns the batch), so the partition's next owner would never read the rest of it.
fn produce(kcat_bin: &Path, broker: &str, lines: &[&str]) {
    let mut input = Vec::new();
    for line in lines {
        let id = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|post| post["id"].as_str().map(str::to_owned));
        input.extend_from_slice(format!("{}\t{line}\n", id.unwrap_or_default()).as_bytes());
    }
    kcat(kcat_bin, &["-P", "-b", broker, "-t", "posts", "-K", "\t", "-X", "batch.num.messages=1"], Some(&input));
}

fn stored_posts(dir: &Path) -> Vec<String> {
    let data = dir.join("out");
    let compact = echotrace(&["compact", "--data", data.to_str().unwrap(), "--min-age-minutes", "0"]);
    assert!(compact.status.success(), "{}", String::from_utf8_lossy(&compact.stderr));
    let mut posts: Vec<String> = column(&read_dataset(&data.join("posts")), "post_id").into_iter().flatten().collect();
    posts.sort();
    posts
}

/// A tansu broker in memory with the input topic (3 partitions) and the output topics.
fn broker_with_topics(tansu: &Path, dir: &Path) -> (Reaper, String) {
    let (process, broker) = start_tansu(tansu, "memory://tansu/", free_port(), dir);
    create_topic(tansu, &broker, "posts", 3);
    for topic in ["echotrace.dead-letter", "echotrace.edges", "echotrace.alerts"] {
        create_topic(tansu, &broker, topic, 1);
    }
    (process, broker)
}

fn sample_ids() -> Vec<String> {
    let mut ids = sample_post_ids();
    ids.sort();
    ids
}

#[test]
fn a_second_instance_joins_and_leaves_and_nothing_is_lost_or_committed_by_a_stranger() {
    let Some((tansu, kcat_bin)) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (_tansu, broker) = broker_with_topics(&tansu, dir.path());
    let group = "rebalance";
    let lines: Vec<&str> = SAMPLE.lines().collect();
    let thirds: Vec<&[&str]> = lines.chunks(lines.len().div_ceil(3)).collect();

    // Every committed offset, polled throughout: none may ever go back.
    let stop_watch = Arc::new(AtomicBool::new(false));
    let regressions = Arc::new(Mutex::new(Vec::new()));
    let watcher = {
        let (broker, stop_watch, regressions) = (broker.clone(), stop_watch.clone(), regressions.clone());
        std::thread::spawn(move || {
            let mut highest = [-1i64; 3];
            while !stop_watch.load(Ordering::Relaxed) {
                for (partition, offset) in committed_offsets(&broker, group, 3).into_iter().enumerate() {
                    if offset >= 0 && offset < highest[partition] {
                        regressions.lock().unwrap().push((partition, highest[partition], offset));
                    }
                    highest[partition] = highest[partition].max(offset);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let all_committed =
        |count: usize| committed_offsets(&broker, group, 3).iter().map(|o| (*o).max(0)).sum::<i64>() >= count as i64;

    let http_a = free_http();
    let mut a = start_instance(&config(dir.path(), "a", &broker, group), http_a, &dir.path().join("a.log"));
    wait_for("the first instance to be assigned", Duration::from_secs(60), || ready(http_a));
    produce(&kcat_bin, &broker, thirds[0]);
    wait_for("the first third committed", Duration::from_secs(60), || all_committed(thirds[0].len()));

    let http_b = free_http();
    let mut b = start_instance(&config(dir.path(), "b", &broker, group), http_b, &dir.path().join("b.log"));
    wait_for("the second instance to join", Duration::from_secs(60), || ready(http_b));
    produce(&kcat_bin, &broker, thirds[1]);
    let two_thirds = thirds[0].len() + thirds[1].len();
    wait_for("two thirds committed", Duration::from_secs(60), || all_committed(two_thirds));
    stop(&mut b);

    // The last third goes in while the group rebalances: the first instance may read some of it
    // on its own partition before it gets the others.
    produce(&kcat_bin, &broker, thirds[2]);
    let until = std::time::Instant::now() + Duration::from_secs(90);
    while !all_committed(lines.len()) {
        assert!(
            std::time::Instant::now() < until,
            "not everything committed: {:?} of {}\n--- a:\n{}\n--- b:\n{}",
            committed_offsets(&broker, group, 3),
            lines.len(),
            std::fs::read_to_string(dir.path().join("a.log")).unwrap(),
            std::fs::read_to_string(dir.path().join("b.log")).unwrap()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    stop(&mut a);
    stop_watch.store(true, Ordering::Relaxed);
    watcher.join().unwrap();

    assert!(regressions.lock().unwrap().is_empty(), "committed offsets went back: {:?}", regressions.lock().unwrap());
    let b_log = std::fs::read_to_string(dir.path().join("b.log")).unwrap();
    assert!(b_log.contains("partitions assigned"), "the second instance took partitions:\n{b_log}");
    let a_log = std::fs::read_to_string(dir.path().join("a.log")).unwrap();
    assert!(a_log.contains("partitions revoked"), "the first instance gave partitions up:\n{a_log}");
    let posts = stored_posts(dir.path());
    assert_eq!(posts.len(), posts.iter().collect::<BTreeSet<_>>().len(), "a post stored twice after compaction");
    assert_eq!(posts, sample_ids(), "every post once");
}

#[test]
fn revoked_partitions_are_committed_before_they_are_handed_over() {
    let Some((tansu, kcat_bin)) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (_tansu, broker) = broker_with_topics(&tansu, dir.path());
    let group = "revocation";
    let lines: Vec<&str> = SAMPLE.lines().collect();
    // No checkpoint falls due while the test runs: only the revocation's can commit.
    let configure = |name: &str| {
        let path = config(dir.path(), name, &broker, group);
        let toml = std::fs::read_to_string(&path)
            .unwrap()
            .replace("flush_interval_ms = 100", "flush_interval_ms = 600000")
            .replace("snapshot_interval_secs = 1", "snapshot_interval_secs = 600");
        std::fs::write(&path, toml).unwrap();
        path
    };

    let http_a = free_http();
    let mut a = start_instance(&configure("a"), http_a, &dir.path().join("a.log"));
    wait_for("the first instance to be assigned", Duration::from_secs(60), || ready(http_a));
    produce(&kcat_bin, &broker, &lines);
    // Read and processed: a post still waiting for the order across partitions at the revocation
    // keeps its partition's commit before it, and no later checkpoint would commit it here.
    wait_for("the first instance to read and process the input", Duration::from_secs(60), || {
        metric(http_a, "echotrace_messages_consumed_total") as usize == lines.len()
            && metric(http_a, "echotrace_posts_held") == 0.0
    });
    let committed = committed_offsets(&broker, group, 3);
    assert!(committed.iter().all(|offset| *offset < 0), "nothing was due to be committed yet: {committed:?}");

    let http_b = free_http();
    let mut b = start_instance(&configure("b"), http_b, &dir.path().join("b.log"));
    let logs = || {
        let log = |name: &str| std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap();
        format!("--- a:\n{}\n--- b:\n{}", log("a"), log("b"))
    };
    let all_committed = || committed_offsets(&broker, group, 3).iter().map(|o| (*o).max(0)).sum::<i64>() as usize;
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while !(ready(http_b) && ready(http_a) && all_committed() == lines.len()) {
        assert!(std::time::Instant::now() < until, "the rebalance did not commit the input\n{}", logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    let consumed_by_b = metric(http_b, "echotrace_messages_consumed_total");
    assert_eq!(consumed_by_b, 0.0, "the newcomer read nothing again\n{}", logs());
    let rebuilt_by_a = metric(http_a, "echotrace_window_rebuilds_total");
    assert_eq!(rebuilt_by_a, 0.0, "what the first kept needs no rebuild\n{}", logs());
    assert!(metric(http_b, "echotrace_window_rebuilds_total") >= 1.0, "what the newcomer got is rebuilt\n{}", logs());
    assert!(logs().contains("checkpoint taken before the partitions are revoked"), "{}", logs());
    stop(&mut b);
    stop(&mut a);
    assert_eq!(stored_posts(dir.path()), sample_ids(), "every post once");
}

#[test]
fn the_broker_gone_for_thirty_seconds_loses_nothing() {
    let Some((tansu, kcat_bin)) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (mut broker_process, broker) = start_tansu(&tansu, "sqlite://broker.db", port, dir.path());
    for topic in ["posts", "echotrace.dead-letter", "echotrace.edges", "echotrace.alerts"] {
        create_topic(&tansu, &broker, topic, 1);
    }
    let group = "outage";
    let lines: Vec<&str> = SAMPLE.lines().collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    let http = free_http();
    let mut instance = start_instance(&config(dir.path(), "solo", &broker, group), http, &dir.path().join("solo.log"));
    wait_for("the instance to be assigned", Duration::from_secs(60), || ready(http));
    produce(&kcat_bin, &broker, first);
    wait_for("the first half committed", Duration::from_secs(60), || {
        committed_offsets(&broker, group, 1)[0] >= first.len() as i64
    });

    // The broker goes away for 30 s; the instance stays up and says it is not ready.
    broker_process.0.kill().unwrap();
    broker_process.0.wait().unwrap();
    wait_for("/readyz to report the broker gone", Duration::from_secs(20), || !ready(http));
    std::thread::sleep(Duration::from_secs(30));
    assert!(instance.0.try_wait().unwrap().is_none(), "the instance exited while the broker was away");
    assert_eq!(http_get(http, "/readyz").0, 503);

    let (_back, broker) = start_tansu(&tansu, "sqlite://broker.db", port, dir.path());
    wait_for("the instance to be ready again", Duration::from_secs(90), || ready(http));
    produce(&kcat_bin, &broker, second);
    wait_for("everything committed", Duration::from_secs(90), || {
        committed_offsets(&broker, group, 1)[0] >= lines.len() as i64
    });
    stop(&mut instance);
    assert_eq!(stored_posts(dir.path()), sample_ids(), "every post once");
}
