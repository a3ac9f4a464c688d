//! Time to alert: from the moment the post that makes a rule true is produced to Kafka, to the alert
//! reaching Alertmanager's API, through the whole service (`echotrace run` code: consumer, detector,
//! scorer, dispatcher) on an in-process Kafka, with and without background traffic.
//!
//! ```text
//! cargo run --release -p echotrace-benches --bin time-to-alert -- --rate 20000 \
//!     ../shared/data/threads_rumoureval.jsonl ../shared/data/cascades_weibo.jsonl \
//!     ../shared/data/paraphrase_tweets_train.jsonl ../shared/data/summaries_cnn_dm.jsonl
//! ```
//!
//! Phase 1 (the baseline) runs `--campaigns` synthetic amplification campaigns on an idle stream;
//! phase 2 runs as many again while the dev streams are replayed as background at `--rate` posts/s
//! (ids rewritten per pass, times set to the wall clock). A campaign posts a light edit of its text
//! every 2 s from a fresh account, across four platforms, so the page (`amplification_campaign`,
//! `for_secs = 60`) fires about a minute and a half in. The Alertmanager here is a receiver that
//! timestamps each first notification of an alert and reads the `triggered_by` annotation; the
//! latency is receipt minus the produce time of that post. Prints p50/p99/max per phase and the ratio.

use anyhow::Context;
use axum::Json;
use axum::routing::post;
use chrono::Utc;
use echotrace::config::Config;
use echotrace_benches::{SplitMix, percentile};
use echotrace_core::post::Post;
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOPIC: &str = "posts";
const PLATFORMS: [&str; 4] = ["x", "bluesky", "mastodon", "threads"];

/// Produce instants of campaign posts, and first receipt instants of alerts (by alert, with trigger).
#[derive(Default)]
struct Clock {
    produced: HashMap<String, Instant>,
    received: HashMap<String, (String, Instant)>,
}

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut option = |name: &str, default: f64| -> anyhow::Result<f64> {
        Ok(match args.iter().position(|a| a == name) {
            Some(at) => {
                let value = args.get(at + 1).with_context(|| format!("{name} needs a value"))?.parse()?;
                args.drain(at..at + 2);
                value
            }
            None => default,
        })
    };
    let rate = option("--rate", 20_000.0)?;
    let campaigns = option("--campaigns", 30.0)? as usize;
    anyhow::ensure!(!args.is_empty(), "usage: time-to-alert [--rate N] [--campaigns N] STREAM.jsonl...");
    let mut background = Vec::new();
    for path in &args {
        for line in std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?.lines() {
            let latest = chrono::DateTime::from_timestamp(4_102_444_800, 0).expect("2100") - chrono::Duration::days(1);
            background.push(Post::from_json_at(line.as_bytes(), latest).map_err(|e| anyhow::anyhow!("{e}"))?);
        }
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(bench(background, rate, campaigns))
}

async fn bench(background: Vec<Post>, rate: f64, campaigns: usize) -> anyhow::Result<()> {
    let cluster = MockCluster::new(1)?;
    let mut config = Config::default();
    for topic in [TOPIC, &config.kafka.dead_letter_topic, &config.kafka.edges_topic, &config.kafka.alerts_topic] {
        cluster.create_topic(topic, 4, 1)?;
    }
    let clock = Arc::new(Mutex::new(Clock::default()));
    let receiver = alertmanager(clock.clone()).await?;
    let out = tempfile::tempdir()?;
    config.kafka.brokers = cluster.bootstrap_servers();
    config.kafka.input_topics = vec![TOPIC.into()];
    config.http.listen = "127.0.0.1:0".parse()?;
    config.output.dir = out.path().to_owned();
    config.output.flush_interval_ms = 1000;
    // Measured without state snapshots, as its figures were; their pause is measured apart.
    config.state.dir = Default::default();
    config.alerting.alertmanager_url = receiver;
    config.alerting.resend_interval_ms = 1000;
    let (trigger, shutdown) = echotrace::shutdown::channel();
    let running = echotrace::run::start(config.clone(), None, shutdown).await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;

    let mut figures = Vec::new();
    for (phase, with_background) in [("idle", false), ("background", true)] {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let background_task = with_background.then(|| {
            let (producer, posts, stop) = (producer.clone(), background.clone(), stop.clone());
            tokio::spawn(async move { replay_background(&producer, &posts, rate, &stop).await })
        });
        let consumed_before = running.metrics.messages_consumed.get();
        let started = Instant::now();
        run_campaigns(&producer, campaigns, phase, &clock).await?;
        // Let the last alerts arrive.
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let produced_background = match background_task {
            Some(task) => task.await??,
            None => 0,
        };
        let seconds = started.elapsed().as_secs_f64();
        let consumed = running.metrics.messages_consumed.get() - consumed_before;
        let latencies = latencies(&clock, phase);
        println!(
            "{phase:>10}: {} alerts timed; time to alert p50 {:.3}s p99 {:.3}s max {:.3}s; background {:.0} posts/s offered, {:.0} messages/s consumed",
            latencies.len(),
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(f64::NAN),
            produced_background as f64 / seconds,
            consumed as f64 / seconds,
        );
        figures.push(percentile(&latencies, 0.99));
    }
    println!("p99 with background / p99 idle: {:.2}x", figures[1] / figures[0]);
    trigger.fire();
    running.consumer.await??;
    producer.flush(Duration::from_secs(10))?;
    Ok(())
}

/// A stand-in for Alertmanager's API v2 that records when each alert first arrives firing.
async fn alertmanager(clock: Arc<Mutex<Clock>>) -> anyhow::Result<String> {
    let app = axum::Router::new().route(
        "/api/v2/alerts",
        post(move |Json(alerts): Json<Vec<serde_json::Value>>| {
            let clock = clock.clone();
            async move {
                let now = Instant::now();
                let mut clock = clock.lock().expect("clock lock");
                for alert in alerts {
                    let firing = alert["endsAt"].as_str().is_some_and(|ends| ends > Utc::now().to_rfc3339().as_str());
                    let key = format!("{}/{}", alert["labels"]["cascade_id"], alert["labels"]["alertname"]);
                    let trigger = alert["annotations"]["triggered_by"].as_str().unwrap_or_default().to_owned();
                    if firing && !trigger.is_empty() {
                        clock.received.entry(key).or_insert((trigger, now));
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{address}"))
}

/// Replays the background at `rate` posts/s until `stop`; returns how many were produced.
async fn replay_background(
    producer: &FutureProducer,
    posts: &[Post],
    rate: f64,
    stop: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<u64> {
    let tick = Duration::from_millis(10);
    let per_tick = (rate * tick.as_secs_f64()).round().max(1.0) as usize;
    let mut interval = tokio::time::interval(tick);
    let mut sent = 0u64;
    let mut next = posts.iter().cycle().enumerate();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        interval.tick().await;
        for _ in 0..per_tick {
            let (i, original) = next.next().expect("cycle never ends");
            let pass = i / posts.len();
            let mut post = original.clone();
            let prefix = |id: &str| format!("bg{pass}-{id}");
            post.id = prefix(&post.id);
            for reference in [&mut post.repost_of, &mut post.quote_of, &mut post.reply_to].into_iter().flatten() {
                *reference = prefix(reference);
            }
            // Each pass gets texts of its own (made-up words, as many as the original had, up to 30):
            // replaying the same texts again would make every pass a near-duplicate of the last,
            // an amplification no real background has.
            let words = post.text.split_whitespace().count().min(30);
            if words > 0 {
                post.text = made_up_words(i as u64, words).join(" ");
            }
            post.created_at = Utc::now();
            let payload = serde_json::to_vec(&post)?;
            // Fire and forget; the producer's queue absorbs the bursts.
            let _ = producer.send_result(FutureRecord::<str, [u8]>::to(TOPIC).key(&post.id).payload(&payload));
            sent += 1;
        }
    }
    Ok(sent)
}

/// A text of made-up words, different for every campaign, so campaigns never link to each other
/// or to the background.
fn campaign_text(phase: &str, campaign: usize) -> Vec<String> {
    let seed = phase
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3));
    made_up_words(seed ^ (campaign as u64) << 40, 14)
}

/// `n` words of three syllables each, from a seed: about 10^4 distinct words, so two texts share
/// almost none.
fn made_up_words(seed: u64, n: usize) -> Vec<String> {
    let mut rng = SplitMix(seed);
    let syllables = [
        "ka", "ro", "vel", "min", "tor", "sa", "lu", "pen", "dri", "mok", "zu", "fen", "gar", "lo", "ti", "bre", "nus",
        "qua", "hil", "dem", "or",
    ];
    (0..n).map(|_| (0..3).map(|_| syllables[rng.below(syllables.len())]).collect::<String>()).collect()
}

/// Runs `count` campaigns at once: each posts a light edit of its text every 2 s for 100 s.
async fn run_campaigns(
    producer: &FutureProducer,
    count: usize,
    phase: &str,
    clock: &Mutex<Clock>,
) -> anyhow::Result<()> {
    let texts: Vec<Vec<String>> = (0..count).map(|campaign| campaign_text(phase, campaign)).collect();
    let mut interval = tokio::time::interval(Duration::from_secs(2));
    for step in 0..50 {
        interval.tick().await;
        for campaign in 0..count {
            let id = format!("{phase}-c{campaign}-p{step}");
            let platform = PLATFORMS[(step + campaign) % PLATFORMS.len()];
            // A light edit: one word of the fourteen left out, in turn.
            let words = &texts[campaign];
            let text: Vec<&str> =
                words.iter().enumerate().filter(|(i, _)| *i != step % words.len()).map(|(_, w)| w.as_str()).collect();
            let text = text.join(" ");
            let post = serde_json::json!({
                "id": format!("{platform}:{id}"),
                "platform": platform,
                "author": {"id": format!("fresh-{id}"), "handle": format!("fresh-{id}"),
                           "created_at": (Utc::now() - chrono::Duration::days(1)).to_rfc3339(),
                           "declared_automated": step % 3 == 0},
                "created_at": Utc::now().to_rfc3339(),
                "text": text,
                "urls": [format!("https://news.example.org/story-{phase}-{campaign}?utm_source=s{step}")],
            });
            let payload = serde_json::to_vec(&post)?;
            clock.lock().expect("clock lock").produced.insert(format!("{platform}:{id}"), Instant::now());
            // Not awaited one by one: a campaign post goes out as soon as it is made.
            let _ = producer.send_result(FutureRecord::<str, [u8]>::to(TOPIC).key(&id).payload(&payload));
        }
    }
    Ok(())
}

/// Seconds from produce to receipt of every alert of the phase, sorted.
fn latencies(clock: &Mutex<Clock>, phase: &str) -> Vec<f64> {
    let clock = clock.lock().expect("clock lock");
    let mut out: Vec<f64> = clock
        .received
        .values()
        .filter(|(trigger, _)| trigger.contains(&format!(":{phase}-")))
        .filter_map(|(trigger, at)| Some(at.duration_since(*clock.produced.get(trigger)?).as_secs_f64()))
        .collect();
    out.sort_by(f64::total_cmp);
    out
}
