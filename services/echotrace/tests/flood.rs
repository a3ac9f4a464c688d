//! A flood through Kafka: `echotrace run`, its own process, consumes a background stream and then
//! 100,000 copies of one post by as many accounts, produced as fast as librdkafka's mock cluster
//! takes them. The process stays up and reads every message, its windows stay within their
//! configured bounds while memory levels off, the lag shows in the metrics, and the copying alert
//! goes out during the flood. Peak resident memory, the highest lag and the time to the alert are
//! printed (figures, not assertions on speed: `benches/src/bin/flood.rs` measures the rates).

mod common;

use common::broker::{free_http, metric, start_instance};
use common::*;
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const BACKGROUND_POSTS: usize = 30_000;
const FLOOD_COPIES: usize = 100_000;
const MAX_WINDOW_POSTS: usize = 20_000;
const MAX_CASCADES: usize = 10_000;
/// librdkafka's mock partitions keep 5 MB each: 12 hold the flood while it waits to be read.
const PARTITIONS: i32 = 12;

fn config(dir: &Path, broker: &str) -> std::path::PathBuf {
    let path = dir.join("echotrace.toml");
    let toml = format!(
        r#"[kafka]
brokers = "{broker}"
group_id = "flood"
input_topics = ["posts"]
[kafka.properties]
"statistics.interval.ms" = "500"
[detector]
max_window_posts = {MAX_WINDOW_POSTS}
[detector.semantic]
enabled = false
[alerting]
max_cascades = {MAX_CASCADES}
[output]
dir = "{out}"
[state]
dir = "{state}"
"#,
        out = dir.join("out").display(),
        state = dir.join("state").display(),
    );
    std::fs::write(&path, toml).unwrap();
    path
}

/// A post of its own: words drawn from the post's number, so no two are alike.
fn background_post(i: usize, second: usize) -> String {
    let words: Vec<String> = (0..12).map(|w| format!("w{:x}", (i * 7_919 + w * 104_729) % 1_000_003)).collect();
    format!(
        r#"{{"id":"b{i}","platform":"x","author":{{"id":"b{}","handle":"h"}},"created_at":"2026-11-01T09:{:02}:{:02}Z","text":"{}"}}"#,
        i % 5_000,
        second / 60,
        second % 60,
        words.join(" ")
    )
}

/// Copy `i` of the flooded post, by account `i`, one in three declaring automation.
fn copy(i: usize, second: usize) -> String {
    format!(
        r#"{{"id":"c{i}","platform":"{}","author":{{"id":"c{i}","handle":"h","declared_automated":{}}},"created_at":"2026-11-01T09:{:02}:{:02}Z","text":"The maintainer rejected the patch out of spite and the whole project should know what kind of person runs it"}}"#,
        ["x", "bluesky", "mastodon", "reddit"][i % 4],
        i.is_multiple_of(3),
        second / 60,
        second % 60
    )
}

/// The messages the first `partitions` partitions of `topic` hold (high less low watermark):
/// fewer than were produced when the broker's retention dropped some.
fn messages_held(broker: &str, topic: &str, partitions: i32) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let reader: BaseConsumer = ClientConfig::new().set("bootstrap.servers", broker).create().unwrap();
    (0..partitions)
        .map(|partition| reader.fetch_watermarks(topic, partition, Duration::from_secs(10)).unwrap())
        .map(|(low, high)| high - low)
        .sum()
}

/// The resident memory of `pid` now and at its peak, in bytes.
fn resident_memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn a_flood_of_copies_keeps_memory_bounded_shows_lag_and_still_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = MockCluster::new(1).unwrap();
    let kafka = echotrace::config::Config::default().kafka;
    for topic in ["posts", &kafka.dead_letter_topic, &kafka.edges_topic, &kafka.alerts_topic] {
        cluster.create_topic(topic, PARTITIONS, 1).unwrap();
    }
    let broker = cluster.bootstrap_servers();
    let http = free_http();
    let mut instance = start_instance(&config(dir.path(), &broker), http, &dir.path().join("run.log"));
    let pid = instance.0.id();
    wait_for("the instance to be assigned its partitions", Duration::from_secs(60), || {
        std::net::TcpStream::connect(http).is_ok() && http_get(http, "/readyz").0 == 200
    });
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let send = |key: String, payload: String| {
        producer.send(BaseRecord::to("posts").key(&key).payload(&payload)).map_err(|(e, _)| e).unwrap();
    };
    // The background: half an hour of posts, read at the normal pace.
    for i in 0..BACKGROUND_POSTS {
        send(format!("b{i}"), background_post(i, i * 1_800 / BACKGROUND_POSTS));
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    let messages = BACKGROUND_POSTS + FLOOD_COPIES;
    wait_for("the background to be read", Duration::from_secs(300), || {
        metric(http, "echotrace_messages_consumed_total") as usize >= BACKGROUND_POSTS
    });
    let (rss_before_flood, _) = resident_memory(pid);

    // The flood: every copy within one minute of event time, all produced at once. The lag is
    // watched from the first copy on: on a quiet machine the consumer reads nearly as fast as the
    // copies are produced, and the backlog shows while they are, not after.
    let flood_started = Instant::now();
    let watching = AtomicBool::new(true);
    let mut time_to_alert = None;
    let (mut largest_window, mut most_cascades) = (0.0f64, 0.0f64);
    let highest_lag = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut highest = 0.0f64;
            while watching.load(Ordering::Relaxed) {
                highest = highest.max(metric(http, "echotrace_consumer_lag_messages"));
                std::thread::sleep(Duration::from_millis(50));
            }
            highest
        });
        for i in 0..FLOOD_COPIES {
            send(format!("c{i}"), copy(i, 1_800 + i * 60 / FLOOD_COPIES));
        }
        producer.flush(Duration::from_secs(120)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            assert!(instance.0.try_wait().unwrap().is_none(), "the instance exited during the flood");
            largest_window = largest_window.max(metric(http, "echotrace_window_posts"));
            most_cascades = most_cascades.max(metric(http, "echotrace_scorer_cascades"));
            if time_to_alert.is_none() && metric(http, "echotrace_alerts_firing") > 0.0 {
                time_to_alert = Some(flood_started.elapsed());
            }
            // Processed, not only consumed: the last posts wait for the order across partitions
            // until the others are read to their end.
            let processed = metric(http, "echotrace_posts_processed_total") as usize;
            if processed >= messages && time_to_alert.is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "processed {processed} of {messages} messages");
            std::thread::sleep(Duration::from_millis(200));
        }
        watching.store(false, Ordering::Relaxed);
        watcher.join().unwrap()
    });
    let (_, peak) = resident_memory(pid);
    let evicted = metric(http, "echotrace_posts_evicted_early_total");
    let forgotten = metric(http, "echotrace_cascades_forgotten_early_total");
    let processed = metric(http, "echotrace_posts_processed_total");
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    println!("flood of {FLOOD_COPIES} copies after {BACKGROUND_POSTS} background posts, {PARTITIONS} partitions:");
    println!("  resident memory before the flood {:.0} MiB, peak {:.0} MiB", mib(rss_before_flood), mib(peak));
    println!("  highest consumer lag {highest_lag:.0} messages; time to the first alert {time_to_alert:.1?}");
    println!("  window at most {largest_window:.0} posts (bound {MAX_WINDOW_POSTS}), {evicted:.0} evicted early");
    println!("  scorer at most {most_cascades:.0} cascades (bound {MAX_CASCADES}), {forgotten:.0} forgotten early");
    let rebuilds = metric(http, "echotrace_window_rebuilds_total");
    let consumed = metric(http, "echotrace_messages_consumed_total");
    let in_topic = messages_held(&broker, "posts", PARTITIONS);
    println!("  {in_topic} messages in the topic, {consumed} consumed");
    instance.0.kill().unwrap();
    instance.0.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join("run.log")).unwrap();
    let warnings: Vec<&str> = log.lines().filter(|line| line.contains("WARN") || line.contains("ERROR")).collect();
    println!(
        "  {rebuilds} window rebuilds; {} warnings in the log: {:#?}",
        warnings.len(),
        &warnings[..warnings.len().min(10)]
    );

    assert_eq!(in_topic as usize, messages, "the mock partitions held every message until it was read");
    assert_eq!(processed as usize, messages, "every post processed");
    assert!(highest_lag > 0.0, "the lag never showed in the metrics");
    assert!(largest_window <= MAX_WINDOW_POSTS as f64, "the window held {largest_window} posts");
    assert!(evicted > 0.0, "the flood did not reach the window's bound");
    assert!(most_cascades <= MAX_CASCADES as f64, "the scorer kept {most_cascades} cascades");
    assert!(forgotten > 0.0, "the background did not reach the scorer's bound");
    // The flood more than triples what the process had read; its memory may not follow.
    assert!(peak < rss_before_flood + (256 << 20), "peak {peak} bytes against {rss_before_flood} before the flood");
}
