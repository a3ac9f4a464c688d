//! `echotrace demo`: the whole detector on one machine, no broker to install.
//!
//! An in-process Kafka (librdkafka's mock cluster) gets the topics; a producer replays the bundled
//! sample stream (`services/echotrace/demo/sample.jsonl`: background chatter on five platforms and
//! one amplification campaign, see its README) at `--speed`, with two malformed messages mixed in;
//! the detector consumes it through the very same consumer code as `echotrace run`, prints what it
//! finds as it goes (cascade milestones, and each alert as it fires or resolves), and serves `/metrics` and the API on `--listen`.

use crate::alerting::alert_url;
use crate::cli::DemoArgs;
use crate::config::Config;
use crate::pipeline::Observer;
use crate::shutdown;
use anyhow::Context;
use chrono::{DateTime, Utc};
use echotrace_core::detector::Detection;
use echotrace_core::records::CascadeRecord;
use echotrace_core::score::alerts::{AlertEvent, AlertState};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The bundled sample stream.
pub const SAMPLE: &str = include_str!("../demo/sample.jsonl");
/// Partitions of the demo's posts topic.
const PARTITIONS: i32 = 3;
/// Malformed messages the producer slips in, to show dead-lettering: (after this many posts, bytes).
const MALFORMED: [(usize, &[u8]); 2] = [
    (120, b"{\"id\": \"x:broken\", \"platform\": \"x\", \"text\": \"truncated"),
    (240, br#"{"id":"x:1","platform":"x","author":{"id":"a","handle":"a"},"created_at":"2026-11-01T09:20:00Z","text":""}"#),
];

/// Runs the demo until the sample is done (`--exit-when-done`) or Ctrl-C.
pub async fn run(mut config: Config, args: DemoArgs) -> anyhow::Result<()> {
    let cluster = MockCluster::new(1).context("cannot start the in-process Kafka")?;
    let topic = "posts";
    let outputs = [&config.kafka.dead_letter_topic, &config.kafka.edges_topic, &config.kafka.alerts_topic];
    for name in std::iter::once(topic).chain(outputs.iter().map(|t| t.as_str())) {
        if !name.is_empty() {
            cluster.create_topic(name, PARTITIONS, 1).with_context(|| format!("cannot create topic {name}"))?;
        }
    }
    config.kafka.brokers = cluster.bootstrap_servers();
    config.kafka.input_topics = vec![topic.to_owned()];
    config.kafka.group_id = "echotrace-demo".into();
    config.http.listen = args.listen;
    config.output.dir = args.out.clone();
    config.output.flush_interval_ms = config.output.flush_interval_ms.min(1000);
    // Each demo starts a new in-process cluster: a snapshot of an earlier one's offsets means nothing.
    config.state.dir = Default::default();
    // Reviews in the explorer need a reviewer's token: one for this run, unless configured.
    if config.http.reviewers.is_empty() {
        config.http.reviewers.insert("demo".into(), fresh_token()?);
    }
    println!("echotrace demo: in-process Kafka at {}, writing to {}", config.kafka.brokers, args.out.display());

    let (trigger, shutdown) = shutdown::channel();
    // The API's address is known once it listens (the port may be 0); posts come only after that.
    let api = Arc::new(OnceLock::new());
    let running = crate::run::start(config.clone(), Some(printer(api.clone())), shutdown).await?;
    api.set(format!("http://{}", running.api_address)).expect("set once");
    println!("explorer: http://{}/  (API: /cascades?top=5, /alerts, /metrics)", running.api_address);
    for (reviewer, token) in &config.http.reviewers {
        println!("reviews in the explorer: reviewer {reviewer}, token {token}");
    }

    let produced = produce_sample(&config.kafka.brokers, topic, args.speed).await?;
    // Wait until everything produced has been processed (posts may wait for an embedding batch).
    while running.metrics.messages_settled() < produced {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("sample done: {produced} messages processed or dead-lettered. Largest cascades:");
    for cascade in running.detector.lock().expect("detector lock poisoned").graph().top_cascades(3) {
        println!(
            "  {}, {} to {}",
            describe(&cascade),
            cascade.first_seen.format("%H:%M:%S"),
            cascade.last_seen.format("%H:%M:%S")
        );
    }
    println!("each cascade's view: http://{}/view/cascades/<id>", running.api_address);
    if args.exit_when_done {
        // One flush interval so the last rows are checkpointed before shutting down.
        tokio::time::sleep(Duration::from_millis(200)).await;
        trigger.fire();
    } else {
        println!("serving until Ctrl-C");
        trigger.on_signals();
    }
    running.consumer.await??;
    running.server.await?;
    drop(cluster);
    Ok(())
}

/// A reviewer's token for this demo: 128 bits from the operating system's generator.
fn fresh_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)
        .context("cannot read /dev/urandom for the demo's reviewer token")?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Produces the sample at `speed` times real time; returns the number of messages produced.
async fn produce_sample(brokers: &str, topic: &str, speed: f64) -> anyhow::Result<u64> {
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("linger.ms", "5").create()?;
    let lines: Vec<&str> = SAMPLE.lines().filter(|l| !l.trim().is_empty()).collect();
    let times: Vec<DateTime<Utc>> = lines.iter().map(|line| created_at(line)).collect::<anyhow::Result<_>>()?;
    let start = tokio::time::Instant::now();
    let mut produced = 0u64;
    for (i, (line, time)) in lines.iter().zip(&times).enumerate() {
        let offset = (*time - times[0]).to_std().unwrap_or_default().div_f64(speed.max(0.001));
        tokio::time::sleep_until(start + offset).await;
        for (after, bytes) in MALFORMED {
            if after == i {
                send(&producer, topic, b"malformed", bytes).await?;
                produced += 1;
            }
        }
        let key = serde_json::from_str::<serde_json::Value>(line)?["id"].as_str().unwrap_or_default().to_owned();
        send(&producer, topic, key.as_bytes(), line.as_bytes()).await?;
        produced += 1;
    }
    Ok(produced)
}

async fn send(producer: &FutureProducer, topic: &str, key: &[u8], payload: &[u8]) -> anyhow::Result<()> {
    producer
        .send(FutureRecord::to(topic).key(key).payload(payload), Duration::from_secs(10))
        .await
        .map_err(|(error, _)| anyhow::anyhow!("cannot produce to the in-process Kafka: {error}"))?;
    Ok(())
}

fn created_at(line: &str) -> anyhow::Result<DateTime<Utc>> {
    let value: serde_json::Value = serde_json::from_str(line)?;
    let text = value["created_at"].as_str().context("sample line without created_at")?;
    Ok(DateTime::parse_from_rfc3339(text)?.with_timezone(&Utc))
}

/// One line about a cascade: id, root, size, platforms, depth.
fn describe(cascade: &CascadeRecord) -> String {
    format!(
        "cascade {} root {}: {} posts on {} platform(s) [{}], depth {}",
        cascade.cascade_id,
        cascade.root_post_id,
        cascade.size,
        cascade.platforms.len(),
        cascade.platforms.join(", "),
        cascade.depth
    )
}

/// Prints a line when a cascade reaches a size milestone or spreads to another platform, and one
/// when an alert starts or resolves, with the alert's view in the explorer at `api`.
fn printer(api: Arc<OnceLock<String>>) -> Observer {
    let mut reported: HashMap<String, (u64, usize)> = HashMap::new();
    Box::new(move |detection: &Detection, alerts: &[AlertEvent]| {
        let cascade = &detection.cascade;
        for merge in &detection.merges {
            println!(
                "  merge: cascade {} joined {} (bridged by {})",
                merge.absorbed_cascade_id, merge.into_cascade_id, merge.bridging_post_id
            );
        }
        let (last_size, last_platforms) = reported.get(&cascade.cascade_id).copied().unwrap_or((1, 1));
        let milestone = cascade.size >= 3 && (cascade.size >= last_size * 2 || cascade.size == 3);
        let spread = cascade.platforms.len() > last_platforms;
        if milestone || spread {
            let via = detection.post.parent_kind.map_or("root", |k| k.as_str());
            println!(
                "[{}] {}; latest {} on {} via {}",
                detection.post.created_at.format("%H:%M:%S"),
                describe(cascade),
                detection.post.post_id,
                detection.post.platform,
                via
            );
            reported.insert(cascade.cascade_id.clone(), (cascade.size, cascade.platforms.len()));
        }
        for alert in alerts.iter().filter(|alert| alert.starts || alert.state == AlertState::Resolved) {
            let change = if alert.starts { "FIRING" } else { "resolved" };
            let held = if alert.held || alert.shadow { " (not paged: held or shadow)" } else { "" };
            println!(
                "[{}] alert {change}: {} ({}) on cascade {}{held}: {}",
                alert.event_time.format("%H:%M:%S"),
                alert.rule,
                alert.severity,
                alert.cascade_id,
                alert_url(api.get().map_or("", String::as_str), &alert.alert_id)
            );
        }
    })
}
