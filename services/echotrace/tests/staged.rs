//! The staged deployment: three `prepare` processes in their group and a `detect` process, with
//! the shipped configuration (semantic linking on, the transformer), give the same posts, edges,
//! cascades and alerts as one `echotrace replay` of the same input, whatever happens to a process
//! mid-stream:
//!
//! - against a real broker (tansu) on loopback, the `prepare` process that owns the input is
//!   stopped (SIGTERM) and another member of its group goes on from its last commit;
//! - against librdkafka's mock cluster, served on loopback by this test's process, the owner of the
//!   input is killed (SIGKILL), a survivor takes its partition over when its session expires and
//!   prepares again what it had not committed, and the `detect` process is killed too and started
//!   again from its snapshot and commits. tansu cannot run this one: a member killed with SIGKILL
//!   kept its partitions there long after its session timeout (eager assignors and
//!   cooperative-sticky alike), where Apache Kafka and the mock cluster reassign them.
//!
//! The input is on one partition of the three: the `detect` stage reads each prepared partition in
//! its input partition's order, and across partitions in the order messages arrive, so a replay
//! of a file equals it only where the input's order is one order. Bad posts go to the
//! dead-letter topic from the `prepare` stage; a bad message on the prepared topic goes there from
//! the `detect` stage, which goes on with the posts after it.
//!
//! Needs ONNX Runtime, as `semantic_links.rs`; the tansu test also needs tansu and kcat, as
//! `broker_e2e.rs`.

mod common;

use common::broker::{create_topic, free_http, kcat, metric, start_tansu, tools};
use common::*;
use echotrace::sinks::kafka::ERROR_KIND_HEADER;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The staged processes' shared configuration: the shipped one, with this broker, group and
/// output, the model and runtime of this checkout, and a snapshot (with its commit) every second
/// so that a restarted detector has state to restore.
fn config(dir: &Path, broker: &str, runtime: &Path) -> PathBuf {
    let path = dir.join("staged.toml");
    let toml = format!(
        r#"[kafka]
brokers = "{broker}"
group_id = "staged"
input_topics = ["posts"]
[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"
[embed]
model_dir = "{model}"
runtime_library = "{runtime}"
batch_latency_ms = 20
[output]
dir = "{out}"
flush_interval_ms = 200
[state]
dir = "{state}"
snapshot_interval_secs = 1
"#,
        model = model_dir().display(),
        runtime = runtime.display(),
        out = dir.join("out").display(),
        state = dir.join("state").display(),
    );
    std::fs::write(&path, toml).unwrap();
    path
}

fn start(config: &Path, role: &str, http: SocketAddr, log: &Path) -> Reaper {
    Reaper(
        Command::new(env!("CARGO_BIN_EXE_echotrace"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env("ECHOTRACE_STAGE__ROLE", role)
            .env("ECHOTRACE_HTTP__LISTEN", http.to_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

fn ready(http: SocketAddr) -> bool {
    std::net::TcpStream::connect(http).is_ok() && http_get(http, "/readyz").0 == 200
}

/// What a dataset holds, as CSV lines sorted, leaving out wall-clock columns and the floats that
/// a different batch of the same model may round differently in the last bit.
fn results(data: &Path) -> Vec<(String, String)> {
    let queries = [
        (
            "posts",
            "SELECT post_id, cascade_id, parent_id, parent_kind, generation, summary_depth, simhash FROM posts ORDER BY post_id",
        ),
        (
            "edges",
            "SELECT child_id, parent_id, kind, is_primary, cascade_id, evidence FROM edges ORDER BY child_id, parent_id, kind",
        ),
        (
            "cascades",
            "SELECT cascade_id, root_post_id, size, platform_count, depth, summary_depth, first_seen, last_seen FROM \
             (SELECT *, row_number() OVER (PARTITION BY cascade_id ORDER BY updated_at DESC, size DESC) AS rn FROM cascades) \
             WHERE rn = 1 ORDER BY cascade_id",
        ),
        (
            "alerts",
            "SELECT alert_id, rule, state, cascade_id, event_time, started_at, triggered_by FROM alerts ORDER BY alert_id, event_time, state",
        ),
    ];
    queries
        .iter()
        .map(|(name, sql)| {
            let output = echotrace(&["query", "--data", data.to_str().unwrap(), "--format", "csv", sql]);
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            (name.to_string(), String::from_utf8(output.stdout).unwrap())
        })
        .collect()
}

/// The topics and their partitions, as `deploy/README.md` documents them.
const TOPICS: [(&str, i32); 5] = [
    ("posts", 3),
    ("echotrace.prepared", 3),
    ("echotrace.dead-letter", 1),
    ("echotrace.edges", 1),
    ("echotrace.alerts", 1),
];

/// Three `prepare` processes, each ready in its group; a slot is emptied when its process stops.
fn start_preparers(config: &Path, dir: &Path) -> Vec<(SocketAddr, Option<Reaper>)> {
    let preparers: Vec<(SocketAddr, Option<Reaper>)> = (0..3)
        .map(|i| {
            let http = free_http();
            (http, Some(start(config, "prepare", http, &dir.join(format!("prepare-{i}.log")))))
        })
        .collect();
    wait_for("three preparers in their group", Duration::from_secs(60), || {
        preparers.iter().all(|(http, _)| ready(*http))
    });
    preparers
}

/// A `detect` process, ready in its group, logging to `dir/<name>.log`.
fn start_detect(config: &Path, dir: &Path, name: &str) -> (SocketAddr, Reaper) {
    let http = free_http();
    let process = start(config, "detect", http, &dir.join(format!("{name}.log")));
    wait_for("the detector in its group", Duration::from_secs(60), || ready(http));
    (http, process)
}

/// The preparer that owns the input, found by what it read, once it has sent `prepared` posts on.
fn owner_of_input(preparers: &[(SocketAddr, Option<Reaper>)], prepared: f64) -> usize {
    let consumed = |http: SocketAddr| if ready(http) { metric(http, "echotrace_messages_consumed_total") } else { 0.0 };
    let mut owner = None;
    wait_for("a preparer to read the input", Duration::from_secs(120), || {
        owner = preparers.iter().position(|(http, _)| consumed(*http) > 0.0);
        owner.is_some()
    });
    let owner = owner.unwrap();
    wait_for("some prepared posts acknowledged", Duration::from_secs(120), || {
        metric(preparers[owner].0, "echotrace_posts_prepared_total") >= prepared
    });
    owner
}

/// What the surviving preparers sent on: more than nothing once one took the input over.
fn prepared_by_survivors(preparers: &[(SocketAddr, Option<Reaper>)]) -> f64 {
    preparers
        .iter()
        .filter(|(_, process)| process.is_some())
        .map(|(http, _)| metric(*http, "echotrace_posts_prepared_total"))
        .sum()
}

/// Stops a process as an orchestrator does (SIGTERM) and asserts that it stopped cleanly.
fn stop(mut process: Reaper, what: &str) {
    let pid = process.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(process.0.wait().unwrap().success(), "the {what} stops cleanly");
}

/// The input: the sample's first half followed by every bad message, then its second half, as
/// message payloads.
fn input_halves<'a>(bad: &'a [(&'static str, Vec<u8>)]) -> (Vec<&'a [u8]>, Vec<&'a [u8]>) {
    let lines: Vec<&'static [u8]> = SAMPLE.lines().map(str::as_bytes).collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    (first.iter().copied().chain(bad.iter().map(|(_, bytes)| bytes.as_slice())).collect(), second.to_vec())
}

/// JSON lines as one Kafka-ready byte stream.
fn jsonl<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    lines.into_iter().flat_map(|line| line.iter().copied().chain([b'\n'])).collect()
}

/// Asserts that the staged run's datasets under `dir/out` equal one replay of the sample.
fn assert_equal_to_replay(dir: &Path) {
    std::fs::create_dir(dir.join("replay")).unwrap();
    let replayed = replay(&dir.join("replay"), SAMPLE);
    let staged = results(&dir.join("out"));
    let expected = results(&replayed);
    for ((name, staged), (_, expected)) in staged.iter().zip(&expected) {
        assert!(expected.lines().count() > 1, "the replay wrote {name}");
        if staged != expected {
            let only_in = |these: &str, those: &str| {
                let those: Vec<&str> = those.lines().collect();
                these.lines().filter(|line| !those.contains(line)).take(10).collect::<Vec<_>>().join("\n")
            };
            panic!(
                "{name} differ between the staged run ({} rows) and the replay ({} rows)\n\
                 only staged:\n{}\nonly replayed:\n{}",
                staged.lines().count(),
                expected.lines().count(),
                only_in(staged, expected),
                only_in(expected, staged),
            );
        }
    }
}

#[test]
fn three_preparers_and_a_detector_equal_one_replay_with_a_preparer_stopped_mid_stream() {
    let Some((tansu, kcat_bin)) = tools() else { return };
    let Some(runtime) = onnxruntime_library() else { return };
    let dir = tempfile::tempdir().unwrap();
    // sqlite storage: with tansu's memory storage, a second producer's records to a partition
    // took the offsets of the first one's latest records, which were lost.
    let (_tansu, broker) = start_tansu(&tansu, "sqlite://tansu.db", free_port(), dir.path());
    for (topic, partitions) in TOPICS {
        create_topic(&tansu, &broker, topic, partitions as u32);
    }
    let config = config(dir.path(), &broker, &runtime);
    // Three preparers; the input goes to one partition, so one of them owns it.
    let mut preparers = start_preparers(&config, dir.path());
    let (detect_http, detect) = start_detect(&config, dir.path(), "detect");

    let bad = bad_messages(300 * 1024);
    let (first, second) = input_halves(&bad);
    kcat(&kcat_bin, &["-P", "-b", &broker, "-t", "posts", "-p", "0"], Some(&jsonl(first)));

    // Stopped mid-stream: it sends and commits what it read, and leaves the group.
    let owner = owner_of_input(&preparers, 64.0);
    stop(preparers[owner].1.take().unwrap(), "preparer");
    // A message on the prepared topic that is not a prepared post, before the second half.
    kcat(&kcat_bin, &["-P", "-b", &broker, "-t", "echotrace.prepared", "-p", "2"], Some(b"{\"post\": 1}\n"));
    kcat(&kcat_bin, &["-P", "-b", &broker, "-t", "posts", "-p", "0"], Some(&jsonl(second)));

    // A survivor takes the partition over from the last commit; the detector settles on every post.
    wait_for("every post processed by the detector", Duration::from_secs(240), || {
        metric(detect_http, "echotrace_posts_processed_total") >= SAMPLE.lines().count() as f64
    });
    assert!(prepared_by_survivors(&preparers) > 0.0, "another preparer took the partition over");
    wait_for("the bad prepared message counted", Duration::from_secs(30), || {
        metric(detect_http, "echotrace_dead_letters_total") >= 1.0
    });
    // Let the last checkpoint write the rows.
    std::thread::sleep(Duration::from_secs(2));
    stop(detect, "detector");
    assert_equal_to_replay(dir.path());

    // Every bad post was dead-lettered by the preparers, and the bad prepared message by the
    // detector, each with its kind.
    let dead = kcat(
        &kcat_bin,
        &["-C", "-b", &broker, "-t", "echotrace.dead-letter", "-o", "beginning", "-e", "-f", "%h\n"],
        None,
    );
    for kind in bad.iter().map(|(kind, _)| *kind).chain(["invalid_prepared"]) {
        assert!(dead.contains(&format!("echotrace-error-kind={kind}")), "no {kind} dead letter in {dead}");
    }
}

#[test]
fn a_preparer_and_the_detector_killed_mid_stream_change_nothing() {
    let Some(runtime) = onnxruntime_library() else { return };
    let dir = tempfile::tempdir().unwrap();
    // The broker lives in this test's process and the stages reach it over loopback, so killing
    // a stage leaves the broker, its commits and its groups as they were.
    let cluster = MockCluster::new(1).unwrap();
    for (topic, partitions) in TOPICS {
        cluster.create_topic(topic, partitions, 1).unwrap();
    }
    let broker = cluster.bootstrap_servers();
    let config = config(dir.path(), &broker, &runtime);
    let mut preparers = start_preparers(&config, dir.path());
    let (detect_http, detect) = start_detect(&config, dir.path(), "detect");

    // librdkafka's mock broker stalls a partition on a 10 MB message; 1 MB is over the text limit.
    let bad = bad_messages(1024 * 1024);
    let (first, second) = input_halves(&bad);
    produce(&broker, first);

    // The owner dies without sending, committing or leaving; its session expires after 6 s and
    // a survivor prepares again what was read since the last commit.
    let owner = owner_of_input(&preparers, 64.0);
    drop(preparers[owner].1.take());
    // The detector dies too, once it has linked some posts and committed a snapshot of them, and
    // starts again from that snapshot and its committed offsets.
    wait_for("some posts detected and a snapshot taken", Duration::from_secs(120), || {
        metric(detect_http, "echotrace_posts_processed_total") >= 32.0
            && metric(detect_http, "echotrace_snapshots_total") >= 1.0
    });
    drop(detect);
    let (detect_http, detect) = start_detect(&config, dir.path(), "detect-again");
    assert!(metric(detect_http, "echotrace_window_posts") >= 32.0, "the detector restored its window");
    produce(&broker, second);

    // The detector's count goes on from its snapshot's, so it reaches every post once.
    wait_for("every post processed by the detector", Duration::from_secs(240), || {
        metric(detect_http, "echotrace_posts_processed_total") >= SAMPLE.lines().count() as f64
    });
    assert!(prepared_by_survivors(&preparers) > 0.0, "another preparer took the partition over");
    // Let the last checkpoint write the rows.
    std::thread::sleep(Duration::from_secs(2));
    stop(detect, "detector");
    // Rows are written at least once: a killed detector's successor writes again what came after
    // the last commit, and compaction keeps one of each, as in `crash_loop.rs`.
    let data = dir.path().join("out");
    let compact = echotrace(&["compact", "--data", data.to_str().unwrap(), "--min-age-minutes", "0"]);
    assert!(compact.status.success(), "{}", String::from_utf8_lossy(&compact.stderr));
    assert_equal_to_replay(dir.path());

    let dead = dead_letter_kinds(&broker);
    for (kind, _) in &bad {
        assert!(dead.iter().any(|dead| dead == kind), "no {kind} dead letter in {dead:?}");
    }
}

/// Sends each line to partition 0 of `posts` and waits for the acknowledgements.
fn produce<'a>(broker: &str, lines: impl IntoIterator<Item = &'a [u8]>) {
    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("message.max.bytes", "16777216")
        .create()
        .unwrap();
    for line in lines {
        producer
            .send(BaseRecord::<(), [u8]>::to("posts").partition(0).payload(line))
            .map_err(|(error, _)| error)
            .unwrap();
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// The error kind of every message on the dead-letter topic.
fn dead_letter_kinds(broker: &str) -> Vec<String> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", "dead-letter-reader")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut partitions = rdkafka::TopicPartitionList::new();
    partitions.add_partition_offset("echotrace.dead-letter", 0, rdkafka::Offset::Beginning).unwrap();
    consumer.assign(&partitions).unwrap();
    let mut kinds = Vec::new();
    loop {
        match consumer.poll(Duration::from_secs(10)).expect("the dead-letter topic answers") {
            Ok(message) => kinds.extend(message.headers().into_iter().flat_map(|headers| {
                headers
                    .iter()
                    .filter(|header| header.key == ERROR_KIND_HEADER)
                    .filter_map(|header| header.value.map(|value| String::from_utf8_lossy(value).into_owned()))
                    .collect::<Vec<_>>()
            })),
            Err(rdkafka::error::KafkaError::PartitionEOF(_)) => return kinds,
            Err(error) => panic!("reading the dead letters: {error}"),
        }
    }
}
