//! N processes give the result of one: three `prepare` processes in their group and a `detect`
//! process, with the shipped configuration (semantic linking on, the transformer), give the same
//! posts, edges, cascades and alerts as one `echotrace replay` of the same input, whatever happens
//! to a process mid-stream:
//!
//! - against a real broker (tansu) on loopback, a `prepare` process is stopped (SIGTERM) and
//!   another member of its group goes on with its partition from its last commit;
//! - against librdkafka's mock cluster, served on loopback by this test's process, a `prepare`
//!   process is killed (SIGKILL), a survivor takes its partition over when its session expires and
//!   prepares again what it had not committed, and the `detect` process is killed too and started
//!   again from its snapshot and commits. tansu cannot run this one: a member killed with SIGKILL
//!   kept its partitions there long after its session timeout (eager assignors and
//!   cooperative-sticky alike), where Apache Kafka and the mock cluster reassign them.
//!
//! In both, the input is spread over three partitions, one post to each in turn, as live traffic:
//! each post is dated when it is sent. The `detect` stage receives the partitions interleaved as
//! the preparers happen to send them, and merges them by time and post id before it links them
//! (idle markers from the preparers, `stage.max_arrival_delay_ms`); the replay reads the posts in
//! the order they were sent, which is that order. Live dating matters: a preparer that has read
//! its partition to its end says so with the wall-clock time, which promises nothing about posts
//! dated a month back that arrive later (`docs/scaling.md`, "One order across partitions"). Bad
//! posts go to the dead-letter topic from the `prepare` stage; a bad message on the prepared topic
//! goes there from the `detect` stage, which goes on with the posts after it.
//!
//! A third test gives one `whole` process a backfill loaded on three partitions before it starts:
//! it receives them a partition's batch at a time, and merges them as the `detect` stage does.
//!
//! Two more run three processes in every stage: `prepare`, `link` (the lexical window,
//! `stage.link_stage`) and `detect`, with the prepared topic on one partition, so that one
//! detector is active and two stand by. On tansu, a `link` process is killed (SIGKILL) once it
//! has written a snapshot, kept down for twice `max.poll.interval.ms` (the active detector keeps
//! its partition while it waits) and started again, and the active detector is stopped
//! (SIGTERM); on the
//! mock cluster, a preparer and the active detector are killed (SIGKILL). Either way a standby
//! takes over from the snapshot the active one left, and the result equals the replay.
//!
//! Two more run the scorer apart, on the mock cluster and on tansu: a `detect` process routing the
//! scorer's records (`stage.score_stage`) to three `score` processes, the owners of cascades, and
//! a `gate` process writing the alerts; an owner is killed (SIGKILL) and started again
//! mid-stream, and the rows equal one replay's, every row once.
//!
//! A last test runs three `detect` processes over a prepared topic of three partitions: each logs
//! that it owns only part of it.
//!
//! Needs ONNX Runtime, as `semantic_links.rs`; the tansu test also needs tansu and kcat, as
//! `broker_e2e.rs`.

mod common;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
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
/// output, the model and runtime of this checkout, a snapshot (with its commit) every second so
/// that a restarted detector has state to restore, and an order that waits out a killed
/// preparer's session (6 s) and its takeover rather than let posts go ahead after 15 s.
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
[stage]
max_order_wait_ms = 60000
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
    start_with(config, role, http, log, &[])
}

/// [`start`] with more configuration from the environment.
fn start_with(config: &Path, role: &str, http: SocketAddr, log: &Path, env: &[(&str, String)]) -> Reaper {
    Reaper(
        Command::new(env!("CARGO_BIN_EXE_echotrace"))
            .args(["run", "--config", config.to_str().unwrap()])
            .envs(env.iter().map(|(key, value)| (key, value)))
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

/// How many times a run wrote each row.
#[derive(Clone, Copy, PartialEq)]
enum Rows {
    /// Once: nothing was processed twice.
    Once,
    /// At least once: a killed detector's successor wrote again, identically, what its
    /// predecessor had written after its last commit. Readers deduplicate (`schemas/README.md`).
    AtLeastOnce,
}

/// What a dataset holds, as CSV lines sorted, leaving out wall-clock columns and the floats that
/// a different batch of the same model may round differently in the last bit; each row once where
/// `rows` says rows may be written again.
fn results(data: &Path, rows: Rows) -> Vec<(String, String)> {
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
            let sql = match rows {
                Rows::AtLeastOnce if *name != "cascades" => sql.replacen("SELECT ", "SELECT DISTINCT ", 1),
                _ => sql.to_string(),
            };
            let output = echotrace(&["query", "--data", data.to_str().unwrap(), "--format", "csv", &sql]);
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

/// librdkafka's mock cluster, served on loopback by this test's process, with [`TOPICS`], the
/// prepared topic with `prepared_partitions`; and its address.
fn mock_cluster(prepared_partitions: i32) -> (MockCluster<'static, DefaultProducerContext>, String) {
    let cluster = MockCluster::new(1).unwrap();
    for (topic, partitions) in TOPICS {
        let partitions = if topic == "echotrace.prepared" { prepared_partitions } else { partitions };
        cluster.create_topic(topic, partitions, 1).unwrap();
    }
    let broker = cluster.bootstrap_servers();
    (cluster, broker)
}

/// A working folder, the mock cluster of [`mock_cluster`], its address and the staged processes'
/// configuration there; `None` without ONNX Runtime.
fn on_mock_cluster(
    prepared_partitions: i32,
) -> Option<(tempfile::TempDir, MockCluster<'static, DefaultProducerContext>, String, PathBuf)> {
    let runtime = onnxruntime_library()?;
    let dir = tempfile::tempdir().unwrap();
    let (cluster, broker) = mock_cluster(prepared_partitions);
    let config = config(dir.path(), &broker, &runtime);
    Some((dir, cluster, broker, config))
}

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

/// The first preparer found reading the input, once it has sent `prepared` posts on.
fn a_busy_preparer(preparers: &[(SocketAddr, Option<Reaper>)], prepared: f64) -> usize {
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

/// One message of the input.
#[derive(Clone)]
enum Line {
    /// A post of the sample, dated when it is sent.
    Post(&'static str),
    /// A bad message, sent as it is.
    Bad(Vec<u8>),
}

/// The input: the sample's first half followed by every bad message, then its second half.
fn input_halves(bad: &[(&'static str, Vec<u8>)]) -> (Vec<Line>, Vec<Line>) {
    let lines: Vec<Line> = SAMPLE.lines().map(Line::Post).collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    let bad = bad.iter().map(|(_, bytes)| Line::Bad(bytes.clone()));
    (first.iter().cloned().chain(bad).collect(), second.to_vec())
}

/// Posts a second live input is sent at.
const POSTS_PER_SECOND: u32 = 40;

/// How the input is sent.
#[derive(Clone, Copy, PartialEq)]
enum Sending {
    /// At [`POSTS_PER_SECOND`], each post dated as it is sent (strictly later than the one before).
    Live,
    /// All at once, as written: a backfill.
    Backfill,
}

/// Sends `lines` to the partitions of `posts` in turn, the first to `first_partition`, from a
/// thread of its own; the thread returns the posts as sent.
fn send(
    broker: &str,
    lines: Vec<Line>,
    first_partition: usize,
    sending: Sending,
) -> std::thread::JoinHandle<Vec<String>> {
    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("message.max.bytes", "16777216")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let mut last: Option<DateTime<Utc>> = None;
        let mut sent = Vec::new();
        for (index, line) in lines.into_iter().enumerate() {
            if sending == Sending::Backfill {
                let payload = match line {
                    Line::Bad(bytes) => bytes,
                    Line::Post(json) => {
                        sent.push(json.to_owned());
                        json.as_bytes().to_vec()
                    }
                };
                let partition = ((first_partition + index) % 3) as i32;
                producer
                    .send(BaseRecord::<(), [u8]>::to("posts").partition(partition).payload(&payload))
                    .map_err(|(error, _)| error)
                    .unwrap();
                continue;
            }
            std::thread::sleep(
                (started + Duration::from_secs(1) * index as u32 / POSTS_PER_SECOND)
                    .saturating_duration_since(std::time::Instant::now()),
            );
            let payload = match line {
                Line::Bad(bytes) => bytes,
                Line::Post(json) => {
                    let now = Utc::now().max(last.map_or(Utc::now(), |last| last + TimeDelta::milliseconds(1)));
                    last = Some(now);
                    let mut post: serde_json::Value = serde_json::from_str(json).unwrap();
                    post["created_at"] = now.to_rfc3339_opts(SecondsFormat::Millis, true).into();
                    let post = post.to_string();
                    sent.push(post.clone());
                    post.into_bytes()
                }
            };
            let partition = ((first_partition + index) % 3) as i32;
            producer
                .send(BaseRecord::<(), [u8]>::to("posts").partition(partition).payload(&payload))
                .map_err(|(error, _)| error)
                .unwrap();
        }
        producer.flush(Duration::from_secs(60)).unwrap();
        sent
    })
}

/// Asserts that the staged run's datasets under `dir/out`, written `rows` times, equal one replay
/// of `sent`, the posts in the order they were sent.
fn assert_equal_to_replay(dir: &Path, sent: &[String], rows: Rows) {
    std::fs::create_dir(dir.join("replay")).unwrap();
    let replayed = replay(&dir.join("replay"), &(sent.join("\n") + "\n"));
    let staged = results(&dir.join("out"), rows);
    let expected = results(&replayed, Rows::Once);
    for ((name, staged), (_, expected)) in staged.iter().zip(&expected) {
        assert!(expected.lines().count() > 1, "the replay wrote {name}");
        if staged != expected {
            let first_difference =
                staged.lines().zip(expected.lines()).position(|(staged, expected)| staged != expected);
            let around = |text: &str| {
                let at = first_difference.unwrap_or(0).saturating_sub(1);
                text.lines().skip(at).take(3).collect::<Vec<_>>().join("\n")
            };
            panic!(
                "{name} differ between the staged run ({} lines) and the replay ({} lines), first at line {:?}\n\
                 staged:\n{}\nreplayed:\n{}\nthe detect processes' partitions and checkpoints:\n{}",
                staged.lines().count(),
                expected.lines().count(),
                first_difference,
                around(staged),
                around(expected),
                detectors_lifecycle(dir),
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
    // Three preparers, one partition each.
    let mut preparers = start_preparers(&config, dir.path());
    let (detect_http, detect) = start_detect(&config, dir.path(), "detect");

    let bad = bad_messages(300 * 1024);
    let (first, second) = input_halves(&bad);
    let next_partition = first.len();
    let sending = send(&broker, first, 0, Sending::Live);

    // Stopped mid-stream: it sends and commits what it read, and leaves the group.
    let busy = a_busy_preparer(&preparers, 24.0);
    stop(preparers[busy].1.take().unwrap(), "preparer");
    let mut sent = sending.join().unwrap();
    // A message on the prepared topic that is not a prepared post, before the second half.
    kcat(&kcat_bin, &["-P", "-b", &broker, "-t", "echotrace.prepared", "-p", "2"], Some(b"{\"post\": 1}\n"));
    sent.extend(send(&broker, second, next_partition, Sending::Live).join().unwrap());

    // A survivor takes the partition over from the last commit; the detector settles on every post.
    wait_for("every post processed by the detector", Duration::from_secs(240), || {
        metric(detect_http, "echotrace_posts_processed_total") >= SAMPLE.lines().count() as f64
    });
    assert!(prepared_by_survivors(&preparers) > 0.0, "another preparer took the partition over");
    wait_for("the bad prepared message counted", Duration::from_secs(30), || {
        metric(detect_http, "echotrace_dead_letters_total") >= 1.0
    });
    assert_eq!(metric(detect_http, "echotrace_posts_out_of_order_total"), 0.0, "the order held every post");
    assert_eq!(metric(detect_http, "echotrace_order_forced_total"), 0.0);
    // Let the last checkpoint write the rows.
    std::thread::sleep(Duration::from_secs(2));
    stop(detect, "detector");
    assert_equal_to_replay(dir.path(), &sent, Rows::Once);

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
    preparer_and_detector_killed_mid_stream(false);
}

/// Three processes in every stage: three `prepare` processes, the lexical window in three `link`
/// processes, and three `detect` processes, one active and two standing by, since the prepared
/// topic has one partition. A preparer and the active detector are killed mid-stream; a standby
/// takes the prepared partition over when the dead one's session expires, restores the snapshot
/// it left, and asks the shards again for what it links again, which they answer as before.
#[test]
fn three_processes_per_stage_with_a_preparer_and_the_active_detector_killed_change_nothing() {
    preparer_and_detector_killed_mid_stream(true);
}

/// How many `detect` processes the three-per-stage test runs.
const DETECTORS: usize = 3;

fn preparer_and_detector_killed_mid_stream(three_per_stage: bool) {
    let Some(runtime) = onnxruntime_library() else { return };
    let dir = tempfile::tempdir().unwrap();
    // The broker lives in this test's process and the stages reach it over loopback, so killing
    // a stage leaves the broker, its commits and its groups as they were.
    let (cluster, broker) = mock_cluster(if three_per_stage { 1 } else { 3 });
    let config = config(dir.path(), &broker, &runtime);
    let _shards: Vec<(SocketAddr, Reaper)> = if three_per_stage {
        with_link_stage(&config);
        cluster.create_topic("echotrace.probes", 1, 1).unwrap();
        cluster.create_topic("echotrace.answers", LINK_SHARDS as i32, 1).unwrap();
        (0..LINK_SHARDS).map(|shard| start_link(&config, dir.path(), shard, &format!("link-{shard}"))).collect()
    } else {
        Vec::new()
    };
    let mut preparers = start_preparers(&config, dir.path());
    let mut detectors = if three_per_stage {
        start_standing_by(&config, dir.path())
    } else {
        let (http, process) = start_detect(&config, dir.path(), "detect");
        vec![(http, Some(process))]
    };
    let active = the_active(&detectors);
    let detect_http = detectors[active].0;

    // librdkafka's mock broker stalls a partition on a 10 MB message; 1 MB is over the text limit.
    let bad = bad_messages(1024 * 1024);
    let (first, second) = input_halves(&bad);
    let next_partition = first.len();
    let sending = send(&broker, first, 0, Sending::Live);

    // A preparer dies without sending, committing or leaving; its session expires after 6 s and
    // a survivor prepares again what was read since the last commit. Meanwhile the detector holds
    // the other partitions' posts: the dead one's partition has not gone past them.
    let busy = a_busy_preparer(&preparers, 24.0);
    drop(preparers[busy].1.take());
    let mut sent = sending.join().unwrap();
    // The detector dies too, once it has linked some posts and committed a snapshot of them.
    wait_for("some posts detected", Duration::from_secs(120), || {
        metric(detect_http, "echotrace_posts_processed_total") >= 32.0
    });
    // The next snapshot may have been taken before them; the one after holds them.
    let snapshots = metric(detect_http, "echotrace_snapshots_total");
    wait_for("a snapshot of them", Duration::from_secs(30), || {
        metric(detect_http, "echotrace_snapshots_total") >= snapshots + 2.0
    });
    drop(detectors[active].1.take());
    // Started again (one process) or a standby taking over (three), it goes on from that
    // snapshot and the committed offsets.
    if !three_per_stage {
        let (http, process) = start_detect(&config, dir.path(), "detect-again");
        detectors.push((http, Some(process)));
    }
    let active = the_active(&detectors);
    let detect_http = detectors[active].0;
    assert!(metric(detect_http, "echotrace_window_posts") >= 32.0, "the detector restored its window");
    assert!(metric(detect_http, "echotrace_state_takeovers_total") >= 1.0, "the snapshot, taken over");
    sent.extend(send(&broker, second, next_partition, Sending::Live).join().unwrap());

    // The detector's count goes on from its snapshot's, so it reaches every post once.
    wait_for("every post processed by the detector", Duration::from_secs(240), || {
        metric(detect_http, "echotrace_posts_processed_total") >= SAMPLE.lines().count() as f64
    });
    assert!(prepared_by_survivors(&preparers) > 0.0, "another preparer took the partition over");
    // No post was linked out of order or went ahead of the order. (Copies the survivor sends
    // again are dropped by the detector and not counted; the restarted detector need not see
    // any.)
    assert_eq!(metric(detect_http, "echotrace_posts_out_of_order_total"), 0.0);
    assert_eq!(metric(detect_http, "echotrace_order_forced_total"), 0.0);
    // Let the last checkpoint write the rows.
    std::thread::sleep(Duration::from_secs(2));
    stop_detectors_that_stood_by(detectors, detect_http, if three_per_stage { 1.0 } else { 3.0 });
    // The posts are dated this hour, which compaction leaves open: the comparison reads each row
    // once, as readers do.
    assert_equal_to_replay(dir.path(), &sent, Rows::AtLeastOnce);

    let dead = dead_letter_kinds(&broker);
    for (kind, _) in &bad {
        assert!(dead.iter().any(|dead| dead == kind), "no {kind} dead letter in {dead:?}");
    }
}

/// Asserts that the `detect` process serving `http` owns every partition of the prepared topic if
/// it is the `active` one and none otherwise, and, unless it is the active one, processed nothing
/// while it stood by: what it processed, it processed after taking a snapshot over (a rebalance
/// under load may move the partition mid-stream, as a session expiry would).
fn assert_stood_by(http: SocketAddr, active: SocketAddr, prepared_partitions: f64) {
    let owned = metric(http, "echotrace_partitions_owned");
    assert_eq!(owned, if http == active { prepared_partitions } else { 0.0 }, "prepared partitions owned");
    let processed = metric(http, "echotrace_posts_processed_total");
    let took_over = metric(http, "echotrace_state_takeovers_total");
    assert!(http == active || processed == 0.0 || took_over >= 1.0, "a standby processed {processed} posts");
}

/// Asserts [`assert_stood_by`] of every running detector, then stops them all. All are checked
/// before any stops: a stopped active one hands its partitions to a standby.
/// What the detect processes' logs under `dir` say of their partitions and checkpoints, for a
/// failure's message: which process owned the prepared partition when, and how each gave it up.
fn detectors_lifecycle(dir: &Path) -> String {
    const EVENTS: [&str; 8] = [
        "partitions assigned",
        "partitions revoked",
        "checkpoint taken before",
        "no checkpoint before",
        "assignment lost",
        "state restored",
        "not taken over",
        "shutting down",
    ];
    let mut logs: Vec<_> =
        std::fs::read_dir(dir).map(|entries| entries.flatten().map(|entry| entry.path()).collect()).unwrap_or_default();
    logs.retain(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("detect")));
    logs.sort();
    let mut lines = Vec::new();
    for log in logs {
        let name = log.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let events = text.lines().filter(|line| EVENTS.iter().any(|event| line.contains(event)));
        lines.extend(events.map(|line| format!("{name}: {}", line.chars().take(300).collect::<String>())));
    }
    lines.join("\n")
}

/// Revocations a process met without a checkpoint before them: each lets its partitions' next
/// owner write again the rows since the last commit.
fn unchecked_revocations(http: SocketAddr) -> f64 {
    metric(http, "echotrace_revocations_without_checkpoint_total")
}

fn stop_detectors_that_stood_by(
    detectors: Vec<(SocketAddr, Option<Reaper>)>,
    active: SocketAddr,
    prepared_partitions: f64,
) {
    for (http, process) in &detectors {
        if process.is_some() {
            assert_stood_by(*http, active, prepared_partitions);
        }
    }
    for (_, process) in detectors {
        let Some(process) = process else { continue };
        stop(process, "detector");
    }
}

/// [`DETECTORS`] `detect` processes in one group, each serving its API (one is ready: the one the
/// group assigned the prepared topic's one partition).
fn start_standing_by(config: &Path, dir: &Path) -> Vec<(SocketAddr, Option<Reaper>)> {
    let detectors: Vec<(SocketAddr, Option<Reaper>)> = (0..DETECTORS)
        .map(|i| {
            let http = free_http();
            (http, Some(start(config, "detect", http, &dir.join(format!("detect-{i}.log")))))
        })
        .collect();
    wait_for("every detector serving its API", Duration::from_secs(60), || {
        detectors.iter().all(|(http, _)| std::net::TcpStream::connect(http).is_ok())
    });
    detectors
}

/// The one running `detect` process that the group has assigned the prepared partition, once
/// every running one has joined the group (had an assignment, empty or not) and the group has
/// settled on it (the same one ready three times running).
fn the_active(detectors: &[(SocketAddr, Option<Reaper>)]) -> usize {
    let running = || detectors.iter().filter(|(_, process)| process.is_some());
    wait_for("every detector in the group", Duration::from_secs(90), || {
        running().all(|(http, _)| metric(*http, "echotrace_assignments_total") >= 1.0)
    });
    let mut settled = (None, 0);
    wait_for("one detector active, the others standing by", Duration::from_secs(90), || {
        let ready: Vec<usize> = detectors
            .iter()
            .enumerate()
            .filter(|(_, (http, process))| process.is_some() && ready(*http))
            .map(|(i, _)| i)
            .collect();
        let active = (ready.len() == 1).then(|| ready[0]);
        settled = if active.is_some() && active == settled.0 { (active, settled.1 + 1) } else { (active, 0) };
        settled.1 >= 3
    });
    settled.0.unwrap()
}

/// [`DETECTORS`] `detect` processes in one group over a prepared topic of three partitions split
/// it, and each would link only its own: each says so in its log, as an error naming what to do,
/// once the preparer's idle markers reach its partition.
#[test]
fn detect_processes_that_split_a_prepared_topic_say_so() {
    let Some((dir, _cluster, _broker, config)) = on_mock_cluster(3) else { return };
    let detectors = start_standing_by(&config, dir.path());
    wait_for("each detector owning a part of the prepared topic", Duration::from_secs(90), || {
        detectors.iter().all(|(http, _)| metric(*http, "echotrace_partitions_owned") == 1.0)
    });
    let preparer = start(&config, "prepare", free_http(), &dir.path().join("prepare.log"));
    let said = |i: usize| std::fs::read_to_string(dir.path().join(format!("detect-{i}.log"))).unwrap_or_default();
    wait_for("each detector saying that it owns only part", Duration::from_secs(90), || {
        (0..DETECTORS).all(|i| said(i).contains("owns only part of the prepared topic"))
    });
    stop(preparer, "preparer");
    for (_, process) in detectors {
        stop(process.expect("running"), "detector");
    }
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

#[test]
fn one_whole_process_reading_three_partitions_equals_one_replay() {
    let Some((dir, _cluster, broker, config)) = on_mock_cluster(3) else { return };
    // A backfill of the sample as written, loaded before the process reads it: the consumer
    // receives the partitions a batch at a time, far from the order of the posts' times.
    let sent = send(&broker, SAMPLE.lines().map(Line::Post).collect(), 0, Sending::Backfill).join().unwrap();
    let http = free_http();
    let process = start(&config, "whole", http, &dir.path().join("whole.log"));
    wait_for("every post processed", Duration::from_secs(240), || {
        ready(http) && metric(http, "echotrace_posts_processed_total") >= sent.len() as f64
    });
    assert_eq!(metric(http, "echotrace_posts_out_of_order_total"), 0.0, "the order held every post");
    assert_eq!(metric(http, "echotrace_order_forced_total"), 0.0);
    // Let the last checkpoint write the rows.
    std::thread::sleep(Duration::from_secs(2));
    stop(process, "whole process");
    assert_equal_to_replay(dir.path(), &sent, Rows::Once);
}

/// The linking shards of the `link`-stage test.
const LINK_SHARDS: u32 = 3;

/// Turns the `link` stage on in the configuration [`config`] wrote: the `detect` process asks
/// [`LINK_SHARDS`] `link` processes.
fn with_link_stage(config: &Path) {
    let mut toml = std::fs::read_to_string(config).unwrap();
    // The configuration ends in its [stage] section.
    toml.push_str(&format!("link_stage = true\n[detector]\nlink_shards = {LINK_SHARDS}\n"));
    std::fs::write(config, toml).unwrap();
}

/// A `link` process holding shard `shard`, ready, logging to `dir/<name>.log`.
fn start_link(config: &Path, dir: &Path, shard: u32, name: &str) -> (SocketAddr, Reaper) {
    start_numbered(config, dir, ("link", "ECHOTRACE_STAGE__LINK_SHARD", shard), name)
}

/// A process of `role` whose number (`variable`) is `n`, ready on its partition, logging to
/// `dir/<name>.log`.
fn start_numbered(
    config: &Path,
    dir: &Path,
    (role, variable, n): (&str, &str, u32),
    name: &str,
) -> (SocketAddr, Reaper) {
    let http = free_http();
    let process = start_with(config, role, http, &dir.join(format!("{name}.log")), &[(variable, n.to_string())]);
    wait_for(&format!("the {role} process {n} on its partition"), Duration::from_secs(60), || ready(http));
    (http, process)
}

/// How long librdkafka lets the `link`-stage test's processes go without polling their consumer
/// before it takes them out of their group (`max.poll.interval.ms`).
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(9);

/// Three processes in every stage against tansu: a `link` process killed (SIGKILL), kept down
/// for twice `max.poll.interval.ms` (the active detector, waiting for its answers, keeps its
/// partition all the while) and started again, and the active `detect` process stopped (SIGTERM)
/// so that a standby takes over.
#[test]
fn three_processes_per_stage_on_a_real_broker_with_a_shard_killed_and_the_detector_stopped() {
    let Some((tansu, kcat_bin)) = tools() else { return };
    let Some(runtime) = onnxruntime_library() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (_tansu, broker) = start_tansu(&tansu, "sqlite://tansu.db", free_port(), dir.path());
    let link_topics = [("echotrace.probes", 1), ("echotrace.answers", LINK_SHARDS as i32)];
    for (topic, partitions) in TOPICS.into_iter().chain(link_topics) {
        // One prepared partition: one detector active, two standing by.
        let partitions = if topic == "echotrace.prepared" { 1 } else { partitions };
        create_topic(&tansu, &broker, topic, partitions as u32);
    }
    // The lexical window in three `link` processes, asked by the `detect` process over Kafka.
    let config = config(dir.path(), &broker, &runtime);
    with_link_stage(&config);
    let toml = std::fs::read_to_string(&config).unwrap().replace(
        "[kafka.properties]\n",
        &format!("[kafka.properties]\n\"max.poll.interval.ms\" = \"{}\"\n", MAX_POLL_INTERVAL.as_millis()),
    );
    std::fs::write(&config, toml).unwrap();
    let preparers = start_preparers(&config, dir.path());
    let mut shards: Vec<(SocketAddr, Reaper)> =
        (0..LINK_SHARDS).map(|shard| start_link(&config, dir.path(), shard, &format!("link-{shard}"))).collect();
    let mut detectors = start_standing_by(&config, dir.path());
    let active = the_active(&detectors);
    let detect_http = detectors[active].0;

    let (first, second) = input_halves(&[]);
    let next_partition = first.len();
    let sending = send(&broker, first, 0, Sending::Live);
    // A message on the probe topic that is not a probe batch: every shard dead-letters it.
    kcat(&kcat_bin, &["-P", "-b", &broker, "-t", "echotrace.probes", "-p", "0"], Some(b"not a probe batch\n"));

    // A shard dies without committing or writing more, once it has answered some posts and
    // written a snapshot of them; the detector waits for its answers meanwhile.
    wait_for("some posts detected", Duration::from_secs(120), || {
        metric(detect_http, "echotrace_posts_processed_total") >= 32.0
    });
    let snapshots = metric(shards[1].0, "echotrace_snapshots_total");
    wait_for("a snapshot of the shard", Duration::from_secs(30), || {
        metric(shards[1].0, "echotrace_snapshots_total") >= snapshots + 1.0
    });
    let takeovers = |detectors: &[(SocketAddr, Option<Reaper>)]| -> Vec<f64> {
        detectors.iter().map(|(http, _)| metric(*http, "echotrace_state_takeovers_total")).collect()
    };
    let takeovers_before = takeovers(&detectors);
    let (_, killed) = shards.remove(1);
    drop(killed);
    let mut sent = sending.join().unwrap();
    // Down for twice the poll interval: the active detector, whose batch waits for the shard,
    // pauses its partition and polls its consumer, and stays in the group with it.
    let active_log = dir.path().join(format!("detect-{active}.log"));
    wait_for("the active detector keeping its partition while it waits", Duration::from_secs(60), || {
        std::fs::read_to_string(&active_log).unwrap_or_default().contains("a batch waits long for the linking shards")
    });
    std::thread::sleep(2 * MAX_POLL_INTERVAL);
    for (http, _) in &detectors {
        assert_stood_by(*http, detect_http, 1.0);
    }
    assert_eq!(takeovers(&detectors), takeovers_before, "no detector took the partition over");
    // Started again, it restores its snapshot, takes what it had answered since without
    // answering, and answers on.
    shards.insert(1, start_link(&config, dir.path(), 1, "link-1-again"));
    let sending = send(&broker, second, next_partition, Sending::Live);
    // The active detector is stopped mid-stream, as an orchestrator stops it: it writes its last
    // snapshot, commits and leaves, and a standby takes over from that snapshot.
    wait_for("posts of the second half detected", Duration::from_secs(120), || {
        metric(detect_http, "echotrace_posts_processed_total") >= (next_partition + 24) as f64
    });
    let mut unchecked = unchecked_revocations(detect_http);
    stop(detectors[active].1.take().unwrap(), "active detector");
    let active = the_active(&detectors);
    let detect_http = detectors[active].0;
    assert!(metric(detect_http, "echotrace_state_takeovers_total") >= 1.0, "the snapshot, taken over");
    sent.extend(sending.join().unwrap());

    wait_for("every post processed by the detector", Duration::from_secs(240), || {
        metric(detect_http, "echotrace_posts_processed_total") >= SAMPLE.lines().count() as f64
    });
    assert_eq!(metric(detect_http, "echotrace_posts_out_of_order_total"), 0.0, "the order held every post");
    let restarted_log = std::fs::read_to_string(dir.path().join("link-1-again.log")).unwrap();
    assert!(restarted_log.contains("linking shard restored"), "{restarted_log}");
    assert!(metric(shards[1].0, "echotrace_probes_answered_total") > 0.0, "the restarted shard answers");
    for shard in [0, 2] {
        assert_eq!(
            metric(shards[shard].0, "echotrace_dead_letters_total"),
            1.0,
            "the bad probe message, dead-lettered"
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    unchecked += detectors
        .iter()
        .filter(|(_, process)| process.is_some())
        .map(|(http, _)| unchecked_revocations(*http))
        .sum::<f64>();
    stop_detectors_that_stood_by(detectors, detect_http, 1.0);
    // The restarted shard holds what a shard that read every probe holds: a fresh one, in a
    // group of its own and without a snapshot, reads the probe topic from its beginning.
    let held = metric(shards[1].0, "echotrace_window_posts");
    assert!(held > 0.0);
    for (shard, (_, process)) in shards.into_iter().enumerate() {
        stop(process, &format!("linking shard {shard}"));
    }
    drop(preparers);
    let http = free_http();
    let env = [
        ("ECHOTRACE_STAGE__LINK_SHARD", "1".to_owned()),
        ("ECHOTRACE_KAFKA__GROUP_ID", "rebuilt".to_owned()),
        ("ECHOTRACE_STATE__DIR", dir.path().join("rebuilt-state").display().to_string()),
    ];
    let _rebuilt = start_with(&config, "link", http, &dir.path().join("link-1-rebuilt.log"), &env);
    wait_for("a shard rebuilt from every probe to hold as much", Duration::from_secs(60), || {
        ready(http) && metric(http, "echotrace_window_posts") == held
    });
    // The stopped detector committed what it wrote: every row once, unless a detector lost its
    // partition without a checkpoint (fenced out when a loaded machine kept it from polling within
    // its session or `max.poll.interval.ms`), whose successor wrote its last rows again.
    let rows = if unchecked == 0.0 {
        Rows::Once
    } else {
        eprintln!("{unchecked} revocations without a checkpoint: rows compared at least once");
        Rows::AtLeastOnce
    };
    assert_equal_to_replay(dir.path(), &sent, rows);
}

/// How many owners of cascades the `score`-stage test runs, each a process.
const OWNERS: u32 = 3;

/// The owners of cascades as the `score` stage, their alert events through a `gate` process.
fn with_score_stage(config: &Path) {
    let mut toml = std::fs::read_to_string(config).unwrap();
    // The configuration ends in its [stage] section.
    toml.push_str(&format!("score_stage = true\n[alerting]\ncascade_owners = {OWNERS}\n"));
    std::fs::write(config, toml).unwrap();
}

/// A `score` process, owner `owner` of the cascades, ready, logging to `dir/<name>.log`.
fn start_owner(config: &Path, dir: &Path, owner: u32, name: &str) -> (SocketAddr, Reaper) {
    start_numbered(config, dir, ("score", "ECHOTRACE_STAGE__SCORE_OWNER", owner), name)
}

/// The scorer apart from the `detect` process: three `prepare` processes, a `detect` process
/// that routes the scorer's records, three `score` processes owning the cascades, and a `gate`
/// process writing and sending the alerts, on the mock cluster. An owner is killed (SIGKILL) once
/// it has written a snapshot, and started again: it restores the snapshot, takes again what it had
/// taken since without sending it, and goes on. The posts, edges and cascades the `detect` process
/// writes, and the alerts the gate writes, equal one replay's, every row once.
#[test]
fn the_scorer_as_three_owners_and_a_gate_with_an_owner_killed_equals_one_replay() {
    let Some((dir, cluster, broker, config)) = on_mock_cluster(3) else { return };
    cluster.create_topic("echotrace.owners", OWNERS as i32, 1).unwrap();
    cluster.create_topic("echotrace.gate", 1, 1).unwrap();
    scorer_apart_with_an_owner_killed(dir.path(), &broker, &config);
}

/// The same against a real broker (tansu) on loopback. The owners and the gate read assigned
/// partitions, outside any group's rebalance, so an owner killed with SIGKILL leaves nothing that
/// tansu would keep (its members' partitions outlive their sessions there).
#[test]
fn the_scorer_as_three_owners_and_a_gate_on_a_real_broker_with_an_owner_killed_equals_one_replay() {
    let Some((tansu, _)) = tools() else { return };
    let Some(runtime) = onnxruntime_library() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (_tansu, broker) = start_tansu(&tansu, "sqlite://tansu.db", free_port(), dir.path());
    let scorer_topics = [("echotrace.owners", OWNERS as i32), ("echotrace.gate", 1)];
    for (topic, partitions) in TOPICS.into_iter().chain(scorer_topics) {
        create_topic(&tansu, &broker, topic, partitions as u32);
    }
    let config = config(dir.path(), &broker, &runtime);
    scorer_apart_with_an_owner_killed(dir.path(), &broker, &config);
}

/// What both runs do on `broker`, whose topics exist, with the staged configuration `config`
/// in `dir`.
fn scorer_apart_with_an_owner_killed(dir: &Path, broker: &str, config: &Path) {
    with_score_stage(config);
    let mut owners: Vec<(SocketAddr, Reaper)> =
        (0..OWNERS).map(|owner| start_owner(config, dir, owner, &format!("score-{owner}"))).collect();
    let gate_http = free_http();
    let gate = start(config, "gate", gate_http, &dir.join("gate.log"));
    wait_for("the gate on its partition", Duration::from_secs(60), || ready(gate_http));
    let _preparers = start_preparers(config, dir);
    let (detect_http, detect) = start_detect(config, dir, "detect");

    // A message on the owner topic that is not an owner message, and one on the gate topic that
    // is not a gate message: each is dead-lettered, and its reader goes on.
    let producer: ThreadedProducer<DefaultProducerContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", broker).create().unwrap();
    for topic in ["echotrace.owners", "echotrace.gate"] {
        let record = BaseRecord::<(), [u8]>::to(topic).partition(0).payload(b"not a message of the scorer".as_slice());
        producer.send(record).map_err(|(error, _)| error).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let (first, second) = input_halves(&[]);
    let next_partition = first.len();
    let mut sent = send(broker, first, 0, Sending::Live).join().unwrap();
    // An owner dies without committing or writing more, once it has taken records and written
    // a snapshot of them.
    wait_for("records taken by owner 1", Duration::from_secs(120), || {
        metric(owners[1].0, "echotrace_messages_consumed_total") >= 4.0
    });
    let snapshots = metric(owners[1].0, "echotrace_snapshots_total");
    wait_for("a snapshot of owner 1", Duration::from_secs(30), || {
        metric(owners[1].0, "echotrace_snapshots_total") >= snapshots + 1.0
    });
    let (_, killed) = owners.remove(1);
    drop(killed);
    let sending = send(broker, second, next_partition, Sending::Live);
    std::thread::sleep(Duration::from_secs(2));
    owners.insert(1, start_owner(config, dir, 1, "score-1-again"));
    sent.extend(sending.join().unwrap());

    let posts = SAMPLE.lines().count() as f64;
    wait_for("every post processed by the detector", Duration::from_secs(240), || {
        metric(detect_http, "echotrace_posts_processed_total") >= posts
    });
    wait_for("every post's alert events through the gate", Duration::from_secs(120), || {
        metric(gate_http, "echotrace_gate_through_post") >= posts
    });
    let restarted_log = std::fs::read_to_string(dir.join("score-1-again.log")).unwrap();
    assert!(restarted_log.contains("owner of cascades restored"), "{restarted_log}");
    assert!(metric(owners[1].0, "echotrace_scorer_cascades") > 0.0, "the restarted owner holds cascades");
    assert_eq!(metric(detect_http, "echotrace_alert_transitions_total"), 0.0, "the detector raises no alert itself");
    assert!(metric(gate_http, "echotrace_alert_transitions_total") > 0.0, "the gate raises them");
    assert_eq!(metric(owners[0].0, "echotrace_dead_letters_total"), 1.0, "the bad owner message, dead-lettered");
    assert_eq!(metric(gate_http, "echotrace_dead_letters_total"), 1.0, "the bad gate message, dead-lettered");
    assert!(dead_letter_kinds(broker).iter().filter(|kind| *kind == "exchange_version").count() >= 2);
    std::thread::sleep(Duration::from_secs(2));
    stop(detect, "detector");
    stop(gate, "gate");
    for (owner, (_, process)) in owners.into_iter().enumerate() {
        stop(process, &format!("owner {owner}"));
    }
    assert_equal_to_replay(dir, &sent, Rows::Once);
}
