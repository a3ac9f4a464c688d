//! End to end against a real Kafka-compatible broker process (tansu) on loopback, with a third-party
//! client (kcat) producing the posts and reading the output topics, and the `echotrace run` binary in
//! between, stopped with SIGTERM like a deployment would stop it.
//!
//! Needs `tansu` (`ECHOTRACE_TANSU`, default `~/.cache/echotrace/tools/bin/tansu`) and `kcat` on the
//! PATH; `.ci/run` installs both. Without them the test says so and passes, unless
//! `ECHOTRACE_E2E_REQUIRED=1` (set by `.ci/run`), where it fails.

mod common;

use common::*;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tools() -> Option<(PathBuf, PathBuf)> {
    let tansu = std::env::var_os("ECHOTRACE_TANSU").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/echotrace/tools/bin/tansu")
    });
    let kcat = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("kcat"))
        .find(|p| p.exists());
    match (tansu.exists(), kcat) {
        (true, Some(kcat)) => Some((tansu, kcat)),
        _ => {
            let required = std::env::var("ECHOTRACE_E2E_REQUIRED").is_ok_and(|v| v == "1");
            assert!(!required, "tansu ({}) or kcat missing and ECHOTRACE_E2E_REQUIRED=1", tansu.display());
            eprintln!("skipping: tansu or kcat not installed (run .ci/run to install them)");
            None
        }
    }
}

/// The librdkafka that the rdkafka build produced: Debian's kcat links an older one that cannot talk
/// to tansu, so kcat runs with this one first on its library path.
fn librdkafka_dir() -> PathBuf {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or(target);
    for profile in ["debug", "release"] {
        if let Ok(entries) = std::fs::read_dir(target.join(profile).join("build")) {
            for entry in entries.flatten() {
                let dir = entry.path().join("out/src");
                if dir.join("librdkafka.so.1").exists() {
                    return dir;
                }
            }
        }
    }
    panic!("no librdkafka.so.1 under {}", target.display());
}

fn kcat(kcat: &Path, args: &[&str], stdin: Option<&[u8]>) -> String {
    let mut child = Command::new(kcat)
        .args(args)
        .env("LD_LIBRARY_PATH", librdkafka_dir())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "kcat {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn start_run(broker: &str, out: &Path, http: SocketAddr) -> Reaper {
    Reaper(
        Command::new(env!("CARGO_BIN_EXE_echotrace"))
            .arg("run")
            .env("ECHOTRACE_KAFKA__BROKERS", broker)
            .env("ECHOTRACE_KAFKA__GROUP_ID", "e2e")
            .env("ECHOTRACE_KAFKA__INPUT_TOPICS", "[posts]")
            .env("ECHOTRACE_OUTPUT__DIR", out)
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

/// The sum of every series of a metric family (all label sets) on the instance's `/metrics`.
fn metric(address: SocketAddr, family: &str) -> f64 {
    let (_, exposition) = http_get(address, "/metrics");
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix(family))
        .filter(|rest| rest.starts_with(['{', ' ']))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn real_broker_kcat_in_echotrace_run_out() {
    let Some((tansu, kcat_bin)) = tools() else { return };
    let port = free_port();
    let broker = format!("127.0.0.1:{port}");
    let url = format!("tcp://{broker}");
    let _broker = Reaper(
        Command::new(&tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the broker to listen", Duration::from_secs(30), || std::net::TcpStream::connect(&broker).is_ok());
    for (topic, partitions) in
        [("posts", "2"), ("echotrace.dead-letter", "1"), ("echotrace.edges", "1"), ("echotrace.alerts", "1")]
    {
        let status = Command::new(&tansu)
            .args(["topic", "create", topic, "--broker", &url, "--partitions", partitions])
            .status()
            .unwrap();
        assert!(status.success(), "creating {topic}");
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
