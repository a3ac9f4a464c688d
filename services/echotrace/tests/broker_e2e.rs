//! End to end against a real Kafka-compatible broker process (tansu) on loopback, with a third-party
//! client (kcat) producing the posts and reading the output topics, and the `echotrace run` binary in
//! between, stopped with SIGTERM like a deployment would stop it.
//!
//! Needs `tansu` (`ECHOTRACE_TANSU`, default `~/.cache/echotrace/tools/bin/tansu`) and `kcat` on the
//! PATH; `.ci/run` installs both. Without them the test says so and passes, unless
//! `ECHOTRACE_E2E_REQUIRED=1` (set by `.ci/run`), where it fails.

mod common;

use common::broker::{create_topic, kcat, metric, start_tansu, tools};
use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn start_run(broker: &str, out: &Path, http: SocketAddr) -> Reaper {
    Reaper(
        Command::new(env!("CARGO_BIN_EXE_echotrace"))
            .arg("run")
            .env("ECHOTRACE_KAFKA__BROKERS", broker)
            .env("ECHOTRACE_KAFKA__GROUP_ID", "e2e")
            .env("ECHOTRACE_KAFKA__INPUT_TOPICS", "[posts]")
            .env("ECHOTRACE_OUTPUT__DIR", out)
            .env("ECHOTRACE_STATE__DIR", out.join("state"))
            .env("ECHOTRACE_OUTPUT__FLUSH_INTERVAL_MS", "300")
            .env("ECHOTRACE_HTTP__LISTEN", http.to_string())
            .spawn()
            .unwrap(),
    )
}

fn stop(run: &mut Reaper) {
    let pid = run.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = run.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "echotrace did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "echotrace exited with {status}");
}

#[test]
fn real_broker_kcat_in_echotrace_run_out() {
    let Some((tansu, kcat_bin)) = tools() else { return };
    let (_broker, broker) = start_tansu(&tansu, "memory://tansu/", free_port(), &std::env::temp_dir());
    for (topic, partitions) in
        [("posts", 2), ("echotrace.dead-letter", 1), ("echotrace.edges", 1), ("echotrace.alerts", 1)]
    {
        create_topic(&tansu, &broker, topic, partitions);
    }

    // kcat produces the sample and every kind of bad input, one message per line.
    let mut input = SAMPLE.as_bytes().to_vec();
    let bad = bad_messages(10 * 1024 * 1024);
    for (_, bytes) in &bad {
        input.extend_from_slice(bytes);
        input.push(b'\n');
    }
    let messages = SAMPLE.lines().count() + bad.len();
    kcat(&kcat_bin, &["-P", "-b", &broker, "-t", "posts", "-X", "message.max.bytes=16777216"], Some(&input));

    let out = tempfile::tempdir().unwrap();
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut run = start_run(&broker, out.path(), http);
    wait_for("the API", Duration::from_secs(30), || std::net::TcpStream::connect(http).is_ok());
    wait_for("every message consumed", Duration::from_secs(90), || {
        metric(http, "echotrace_messages_consumed_total") >= messages as f64
    });
    // Settled, not just consumed: the last posts may still wait for their embedding batch.
    wait_for("every message processed or dead-lettered", Duration::from_secs(30), || {
        let settled =
            ["echotrace_posts_processed_total", "echotrace_posts_duplicate_total", "echotrace_dead_letters_total"];
        settled.iter().map(|family| metric(http, family)).sum::<f64>() >= messages as f64
    });

    // The campaign: one cascade over four platforms, with lineage back to its root.
    let (_, top) = http_get(http, "/cascades?top=1");
    let top: serde_json::Value = serde_json::from_str(&top).unwrap();
    assert_eq!(top[0]["root_post_id"], CAMPAIGN_ROOT, "{top}");
    assert_eq!(top[0]["platforms"].as_array().unwrap().len(), 4, "{top}");
    let (status, readiness) = http_get(http, "/readyz");
    assert_eq!(status, 200, "{readiness}");

    // SIGTERM: a graceful stop with a last checkpoint.
    stop(&mut run);

    let posts = read_dataset(&out.path().join("posts"));
    assert_eq!(column(&posts, "post_id").len(), SAMPLE.lines().count());

    // kcat reads what echotrace produced: dead letters with their reasons, and edges.
    let dead = kcat(
        &kcat_bin,
        &[
            "-C",
            "-b",
            &broker,
            "-t",
            "echotrace.dead-letter",
            "-o",
            "beginning",
            "-e",
            "-X",
            "fetch.message.max.bytes=16777216",
            "-f",
            "%h\n",
        ],
        None,
    );
    for (kind, _) in &bad {
        assert!(dead.contains(&format!("echotrace-error-kind={kind}")), "no {kind} dead letter in {dead}");
    }
    let edges = kcat(&kcat_bin, &["-C", "-b", &broker, "-t", "echotrace.edges", "-o", "beginning", "-e"], None);
    assert!(edges.lines().any(|l| l.contains("\"kind\":\"near_duplicate\"")), "{edges}");
    let alerts = kcat(&kcat_bin, &["-C", "-b", &broker, "-t", "echotrace.alerts", "-o", "beginning", "-e"], None);
    assert!(alerts.lines().any(|l| l.contains("\"rule\":\"amplification_campaign\"")), "{alerts}");

    // The group's committed offsets reached the end of the input: a restart re-reads nothing.
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut rerun = start_run(&broker, out.path(), http);
    wait_for("the restarted consumer to be assigned partitions", Duration::from_secs(60), || {
        std::net::TcpStream::connect(http).is_ok() && http_get(http, "/readyz").0 == 200
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(metric(http, "echotrace_messages_consumed_total"), 0.0, "a restart re-read committed messages");
    stop(&mut rerun);
}
