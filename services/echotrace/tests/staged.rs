//! The staged deployment against a real broker (tansu) on loopback: three `prepare` processes in
//! their group and a `detect` process, with the shipped configuration (semantic linking on, the
//! transformer), give the same posts, edges, cascades and alerts as one `echotrace replay` of the
//! same input, although the `prepare` process that owns the input is stopped (SIGTERM) mid-stream
//! and another member of its group goes on from its last commit.
//!
//! Not yet here: a member killed with SIGKILL. On tansu its partitions stayed unowned by the
//! survivors long after its session timeout, with the eager assignors and with cooperative-sticky
//! (the same would hold for several `whole` processes in one group); Apache Kafka reassigns them
//! when the member's session expires, which no broker these tests can start has shown yet.
//!
//! The input is on one partition of the three: the `detect` stage reads each prepared partition in
//! its input partition's order, and across partitions in the order messages arrive, so a replay
//! of a file equals it only where the input's order is one order. Bad posts go to the
//! dead-letter topic from the `prepare` stage; a bad message on the prepared topic goes there from
//! the `detect` stage, which goes on with the posts after it.
//!
//! Needs tansu, kcat and ONNX Runtime, as `broker_e2e.rs` and `semantic_links.rs`.

mod common;

use common::broker::{create_topic, free_http, kcat, metric, start_tansu, tools};
use common::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The staged processes' shared configuration: the shipped one, with this broker, group and
/// output, and the model and runtime of this checkout.
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

#[test]
fn three_preparers_and_a_detector_equal_one_replay_with_a_preparer_stopped_mid_stream() {
    let Some((tansu, kcat_bin)) = tools() else { return };
    let Some(runtime) = onnxruntime_library() else { return };
    let dir = tempfile::tempdir().unwrap();
    // sqlite storage: with tansu's memory storage, a second producer's records to a partition
    // took the offsets of the first one's latest records, which were lost.
    let (_tansu, broker) = start_tansu(&tansu, "sqlite://tansu.db", free_port(), dir.path());
    for (topic, partitions) in [
        ("posts", 3),
        ("echotrace.prepared", 3),
        ("echotrace.dead-letter", 1),
        ("echotrace.edges", 1),
        ("echotrace.alerts", 1),
    ] {
        create_topic(&tansu, &broker, topic, partitions);
    }
    let config = config(dir.path(), &broker, &runtime);

    // Three preparers; the input goes to one partition, so one of them owns it.
    let preparers: Vec<(SocketAddr, Reaper)> = (0..3)
        .map(|i| {
            let http = free_http();
            (http, start(&config, "prepare", http, &dir.path().join(format!("prepare-{i}.log"))))
        })
        .collect();
    let mut preparers: Vec<(SocketAddr, Option<Reaper>)> =
        preparers.into_iter().map(|(http, process)| (http, Some(process))).collect();
    wait_for("three preparers in their group", Duration::from_secs(60), || {
        preparers.iter().all(|(http, _)| ready(*http))
    });
    let detect_http = free_http();
    let mut detect = start(&config, "detect", detect_http, &dir.path().join("detect.log"));
    wait_for("the detector in its group", Duration::from_secs(60), || ready(detect_http));

    let lines: Vec<&str> = SAMPLE.lines().collect();
    let bad = bad_messages(300 * 1024);
    let (first, second) = lines.split_at(lines.len() / 2);
    let mut input: Vec<u8> = first.iter().flat_map(|line| format!("{line}\n").into_bytes()).collect();
    for (_, bytes) in &bad {
        input.extend_from_slice(bytes);
        input.push(b'\n');
    }
    kcat(&kcat_bin, &["-P", "-b", &broker, "-t", "posts", "-p", "0"], Some(&input));

    // The owner of the input is found by what it read.
    let consumed = |http: SocketAddr| if ready(http) { metric(http, "echotrace_messages_consumed_total") } else { 0.0 };
    let mut owner = None;
    wait_for("a preparer to read the input", Duration::from_secs(120), || {
        owner = preparers.iter().position(|(http, _)| consumed(*http) > 0.0);
        owner.is_some()
    });
    let owner = owner.unwrap();
    wait_for("some prepared posts acknowledged", Duration::from_secs(120), || {
        metric(preparers[owner].0, "echotrace_posts_prepared_total") >= 64.0
    });
    // Stopped mid-stream: it sends and commits what it read, and leaves the group.
    let mut stopped = preparers[owner].1.take().unwrap();
    let pid = stopped.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(stopped.0.wait().unwrap().success(), "the preparer stops cleanly");
    // A message on the prepared topic that is not a prepared post, before the second half.
    kcat(&kcat_bin, &["-P", "-b", &broker, "-t", "echotrace.prepared", "-p", "2"], Some(b"{\"post\": 1}\n"));
    let second: Vec<u8> = second.iter().flat_map(|line| format!("{line}\n").into_bytes()).collect();
    kcat(&kcat_bin, &["-P", "-b", &broker, "-t", "posts", "-p", "0"], Some(&second));

    // A survivor takes the partition over from the last commit; the detector settles on every post.
    wait_for("every post processed by the detector", Duration::from_secs(240), || {
        metric(detect_http, "echotrace_posts_processed_total") >= lines.len() as f64
    });
    let survivors_prepared: f64 = preparers
        .iter()
        .filter(|(_, process)| process.is_some())
        .map(|(http, _)| metric(*http, "echotrace_posts_prepared_total"))
        .sum();
    assert!(survivors_prepared > 0.0, "another preparer took the partition over");
    wait_for("the bad prepared message counted", Duration::from_secs(30), || {
        metric(detect_http, "echotrace_dead_letters_total") >= 1.0
    });
    // Let the last checkpoint write the rows.
    std::thread::sleep(Duration::from_secs(2));
    let pid = detect.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(detect.0.wait().unwrap().success(), "the detector stops cleanly");

    std::fs::create_dir(dir.path().join("replay")).unwrap();
    let replayed = replay(&dir.path().join("replay"), SAMPLE);
    let staged = results(&dir.path().join("out"));
    let expected = results(&replayed);
    for ((name, staged), (_, expected)) in staged.iter().zip(&expected) {
        assert!(expected.lines().count() > 1, "the replay wrote {name}");
        assert_eq!(staged, expected, "{name} differ between the staged run and the replay");
    }

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
