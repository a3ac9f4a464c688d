//! The hostile-input corpus (`tests/hostile_corpus.py`, which documents each case's rule) through
//! `echotrace replay` and through the Kafka consumer: every case keeps its rule (dead-lettered with
//! its reason, or processed and linked as it says), nothing crashes, and each replay's peak
//! resident memory is printed and bounded.

mod common;

use common::*;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Deserialize)]
struct Case {
    case: String,
    rule: String,
    expect: Expect,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
struct Expect {
    posts: u64,
    dead_letters: BTreeMap<String, u64>,
    duplicates: u64,
    parents: BTreeMap<String, Option<String>>,
}

/// Writes the corpus into `dir` (without the cases too large for the mock cluster when `small`).
fn corpus(dir: &Path, small: bool) -> Vec<Case> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile_corpus.py");
    let mut command = std::process::Command::new("python3");
    command.arg(script).arg(dir);
    if small {
        command.arg("--small");
    }
    let status = command.status().expect("python3 runs the corpus script");
    assert!(status.success());
    serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap()
}

/// The number after `label` in `text` (`"… 3 posts, …"` with label `" posts"` reads backwards).
fn number_before(text: &str, label: &str) -> u64 {
    let at = text.find(label).unwrap_or_else(|| panic!("no {label:?} in {text}"));
    text[..at].rsplit(' ').next().unwrap().parse().unwrap()
}

/// Each stored post's parent and the kind of edge to it (`"x:1 repost"`), from the `posts/`
/// dataset of `out`.
fn parents(out: &Path) -> BTreeMap<String, Option<String>> {
    if !out.join("posts").exists() {
        return BTreeMap::new();
    }
    let rows = read_dataset(&out.join("posts"));
    let parents = column(&rows, "parent_id").into_iter().zip(column(&rows, "parent_kind"));
    let parents = parents.map(|(parent, kind)| parent.map(|parent| format!("{parent} {}", kind.unwrap_or_default())));
    column(&rows, "post_id").into_iter().flatten().zip(parents).collect()
}

/// The expected parents that `stored` contradicts.
fn wrong_parents(expect: &Expect, stored: &BTreeMap<String, Option<String>>) -> Vec<String> {
    expect
        .parents
        .iter()
        .filter(|(post, parent)| stored.get(*post) != Some(*parent))
        .map(|(post, parent)| format!("{post}: expected {parent:?}, stored {:?}", stored.get(post)))
        .collect()
}

#[test]
fn every_hostile_case_through_replay_keeps_its_rule_within_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let cases = corpus(dir.path(), false);
    let mut table = Vec::new();
    let mut failures = Vec::new();
    for case in &cases {
        let input = dir.path().join(format!("{}.jsonl", case.case));
        let out = dir.path().join("out").join(&case.case);
        let replay = echotrace(&["replay", "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&replay.stdout);
        assert!(replay.status.success(), "{}: {}", case.case, String::from_utf8_lossy(&replay.stderr));
        let mut dead_letters = BTreeMap::new();
        for line in std::fs::read_to_string(out.join("dead_letters.jsonl")).unwrap().lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            *dead_letters.entry(record["error_kind"].as_str().unwrap().to_owned()).or_insert(0) += 1;
        }
        let got = Expect {
            posts: number_before(&stdout, " posts,"),
            dead_letters,
            duplicates: number_before(&stdout, " duplicates"),
            parents: BTreeMap::new(),
        };
        let stored = parents(&out);
        let wrong = wrong_parents(&case.expect, &stored);
        let expected = Expect { parents: BTreeMap::new(), ..case.expect.clone() };
        if got != expected || !wrong.is_empty() {
            failures.push(format!("{} ({}): got {got:?}, expected {expected:?}; {wrong:?}", case.case, case.rule));
        }
        let peak = number_before(&stdout, " bytes (");
        table.push((case.case.clone(), got.posts, got.dead_letters.values().sum::<u64>(), peak));
    }
    println!("{:<26} {:>6} {:>13} {:>15}", "case", "posts", "dead letters", "peak RSS (MiB)");
    for (case, posts, dead, peak) in &table {
        println!("{case:<26} {posts:>6} {dead:>13} {:>15.0}", *peak as f64 / (1 << 20) as f64);
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // The model and the runtime dominate; no case may add more than 64 MiB to the smallest.
    let smallest = table.iter().map(|row| row.3).min().unwrap();
    for (case, _, _, peak) in &table {
        assert!(*peak < smallest + (64 << 20), "{case}: peak {peak} bytes against {smallest}");
    }
}

/// The same corpus through the consumer (librdkafka's mock cluster): the same dead letters, with
/// their reasons in the headers, the same posts and parents, and the consumer never stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_case_through_the_consumer_keeps_its_rule() {
    let dir = tempfile::tempdir().unwrap();
    // The replay-only limit differs: judged by today's clock, the 2150 post is out of range too.
    let cases = corpus(dir.path(), true);
    let cluster = MockCluster::new(1).unwrap();
    let mut config = echotrace::config::Config::default();
    for topic in ["posts", &config.kafka.dead_letter_topic, &config.kafka.edges_topic, &config.kafka.alerts_topic] {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    config.kafka.brokers = cluster.bootstrap_servers();
    config.kafka.input_topics = vec!["posts".into()];
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.output.flush_interval_ms = 200;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("message.max.bytes", "16777216")
        .create()
        .unwrap();
    let mut messages = 0;
    let mut expected_dead = BTreeMap::new();
    let mut expected_posts = 0;
    for case in &cases {
        let lines = std::fs::read(dir.path().join(format!("{}.jsonl", case.case))).unwrap();
        for line in lines.split(|b| *b == b'\n').filter(|line| !line.is_empty()) {
            let record = FutureRecord::<(), [u8]>::to("posts").payload(line);
            producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
            messages += 1;
        }
        for (kind, count) in &case.expect.dead_letters {
            *expected_dead.entry(kind.clone()).or_insert(0) += count;
        }
        expected_posts += case.expect.posts;
    }
    let out: PathBuf = dir.path().join("consumed");
    config.output.dir = out.clone();
    config.state.dir = out.join("state");
    let (trigger, shutdown) = echotrace::shutdown::channel();
    let running = echotrace::run::start(config.clone(), None, shutdown).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while running.metrics.messages_consumed.get() < messages {
        assert!(!running.consumer.is_finished(), "the consumer stopped");
        assert!(Instant::now() < deadline, "consumed {} of {messages}", running.metrics.messages_consumed.get());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    trigger.fire();
    running.consumer.await.unwrap().unwrap();
    running.server.await.unwrap();

    let dead = dead_letter_kinds(&config.kafka.brokers, &config.kafka.dead_letter_topic, expected_dead.values().sum());
    assert_eq!(dead, expected_dead, "dead letters by the reason in their headers");
    let stored = parents(&out);
    assert_eq!(stored.len() as u64, expected_posts, "{stored:?}");
    let wrong: Vec<String> = cases.iter().flat_map(|case| wrong_parents(&case.expect, &stored)).collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The dead letters on `topic` (at least `want`), counted by the error kind in their headers.
fn dead_letter_kinds(brokers: &str, topic: &str, want: u64) -> BTreeMap<String, u64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "hostile-dead-letters")
        .set("auto.offset.reset", "earliest")
        .set("fetch.message.max.bytes", "16777216")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut kinds = BTreeMap::new();
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while read < want && Instant::now() < deadline {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(500)) else { continue };
        let headers = message.headers().expect("dead letters carry headers");
        let kind = headers
            .iter()
            .find(|h| h.key == echotrace::sinks::kafka::ERROR_KIND_HEADER)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap();
        *kinds.entry(kind).or_insert(0) += 1;
        read += 1;
    }
    kinds
}
