//! Floods through Kafka, against the normal rate measured in the same run: `echotrace run` (the
//! release build, its own process) reads synthetic posts from librdkafka's mock cluster at a normal
//! rate, then at `--factor` times that rate for `--flood-secs` with 100,000 copies of one post by
//! as many accounts in its second minute (once a backlog has built up), then at the normal rate
//! again. Every second it samples the
//! process's resident memory and its `/metrics` (lag, posts read, the window and the scorer), and
//! it times the first alert from the first copy produced.
//!
//! ```text
//! cargo build --release -p echotrace -p echotrace-benches
//! target/release/flood --echotrace target/release/echotrace --rate 1000 --factor 10 \
//!     --normal-secs 60 --flood-secs 180 --max-window-posts 500000
//! ```
//!
//! The window and the scorer are bounded alike, `--max-window-posts` posts and as many cascades.
//! Semantic linking is off (the transformer reads a few hundred posts a second on 2 cores: a flood
//! of that is measured by the lag alone). Prints one row per phase: posts produced and read per
//! second, the highest lag, peak resident memory, the window and the scorer at their largest, and
//! the ratios of the flood to the normal phase.

use anyhow::Context;
use echotrace::metrics::sum_of_family;
use echotrace_benches::SplitMix;
use echotrace_benches::instance::{Instance, get, metrics, resident_kib};
use echotrace_benches::synthetic::{Language, post_text};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Copies of the flooded post, all in the flood's second minute.
const COPIES: usize = 100_000;
/// librdkafka's mock partitions keep 5 MB each: enough partitions hold a backlog of minutes.
const PARTITIONS: i32 = 64;

struct Options {
    echotrace: String,
    rate: f64,
    factor: f64,
    normal_secs: u64,
    flood_secs: u64,
    max_window_posts: usize,
}

/// What one phase saw, sampled every second.
#[derive(Default)]
struct Phase {
    produced: u64,
    read: u64,
    seconds: f64,
    highest_lag: f64,
    peak_rss: u64,
    largest_window: f64,
    most_cascades: f64,
}

fn main() -> anyhow::Result<()> {
    let options = options()?;
    let cluster = MockCluster::new(1)?;
    let defaults = echotrace::config::Config::default().kafka;
    for topic in ["posts", &defaults.dead_letter_topic, &defaults.edges_topic, &defaults.alerts_topic] {
        cluster.create_topic(topic, PARTITIONS, 1)?;
    }
    let broker = cluster.bootstrap_servers();
    let dir = tempfile::tempdir()?;
    let http = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let config = dir.path().join("echotrace.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{broker}\"\ngroup_id = \"flood\"\ninput_topics = [\"posts\"]\n\
             [kafka.properties]\n\"statistics.interval.ms\" = \"1000\"\n\
             [detector]\nmax_window_posts = {bound}\n[detector.semantic]\nenabled = false\n\
             [alerting]\nmax_cascades = {bound}\n[http]\nlisten = \"{http}\"\n[output]\ndir = \"{}\"\n[state]\ndir = \"{}\"\n",
            dir.path().join("out").display(),
            dir.path().join("state").display(),
            bound = options.max_window_posts,
        ),
    )?;
    let mut instance = Instance(
        Command::new(&options.echotrace)
            .args(["run", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("run.log"))?)
            .spawn()
            .with_context(|| format!("cannot start {}", options.echotrace))?,
    );
    let started = Instant::now();
    let idle_rss = loop {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", instance.0.id()))
            && let Some(rss) = resident_kib(&status)
            && get(http, "/readyz").is_some()
        {
            break rss * 1024;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "the instance did not start");
        std::thread::sleep(Duration::from_millis(200));
    };
    while get(http, "/readyz").is_none_or(|response| !response.starts_with("HTTP/1.1 200")) {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "the instance did not become ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "2000000")
        .create()?;
    let mut stream = Stream { rng: SplitMix(7), next: 0, copies: 0 };
    let flood_rate = options.rate * options.factor;
    let mut time_to_alert = None;
    let mut flood_started = None;
    let phases = [
        ("normal", options.rate, options.normal_secs),
        ("flood", flood_rate, options.flood_secs),
        ("after", options.rate, options.normal_secs),
    ];
    let mut results = Vec::new();
    for (name, rate, seconds) in phases {
        let mut phase = Phase::default();
        let read_before = sample(http, instance.0.id())?.read;
        let phase_started = Instant::now();
        for second in 0..seconds {
            // Ten ticks a second, each producing its share of the second's posts.
            for tick in 0..10 {
                let due = phase_started + Duration::from_millis(second * 1000 + tick * 100);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                let background = (rate / 10.0) as usize;
                // The copies come in the flood's second minute, when its backlog has built up.
                let copies = if name == "flood" && (60..120).contains(&second) { COPIES / 600 } else { 0 };
                if copies > 0 && flood_started.is_none() {
                    flood_started = Some(Instant::now());
                }
                for (key, payload) in stream.posts(background, copies) {
                    producer.send(BaseRecord::to("posts").key(&key).payload(&payload)).map_err(|(error, _)| error)?;
                }
                phase.produced += (background + copies) as u64;
                if let (Some(flood), None) = (flood_started, time_to_alert)
                    && metrics(http).is_some_and(|m| firing_alerts(&m) > 0.0)
                {
                    time_to_alert = Some(flood.elapsed());
                }
            }
            anyhow::ensure!(instance.0.try_wait()?.is_none(), "the instance exited during the {name} phase");
            let now = sample(http, instance.0.id())?;
            phase.highest_lag = phase.highest_lag.max(now.lag);
            phase.peak_rss = phase.peak_rss.max(now.rss);
            phase.largest_window = phase.largest_window.max(now.window);
            phase.most_cascades = phase.most_cascades.max(now.cascades);
            phase.read = now.read - read_before;
        }
        phase.seconds = phase_started.elapsed().as_secs_f64();
        results.push((name, phase));
    }
    producer.flush(Duration::from_secs(60))?;
    let evicted = sum_of_family(&metrics(http).unwrap_or_default(), "echotrace_posts_evicted_early_total");
    drop(instance);

    println!(
        "posts at {} per second, then {}x for {} s with {COPIES} copies of one post in its second minute; \
         window bound {} posts; {PARTITIONS} partitions; semantic linking off",
        options.rate, options.factor, options.flood_secs, options.max_window_posts
    );
    println!(
        "{:<8} {:>12} {:>10} {:>12} {:>15} {:>14} {:>15}",
        "phase", "produced/s", "read/s", "highest lag", "peak RSS (MiB)", "window posts", "scorer cascades"
    );
    for (name, phase) in &results {
        println!(
            "{name:<8} {:>12.0} {:>10.0} {:>12.0} {:>15.0} {:>14.0} {:>15.0}",
            phase.produced as f64 / phase.seconds,
            phase.read as f64 / phase.seconds,
            phase.highest_lag,
            phase.peak_rss as f64 / f64::from(1 << 20),
            phase.largest_window,
            phase.most_cascades
        );
    }
    let (normal, flood) = (&results[0].1, &results[1].1);
    let per_second = |count: u64, phase: &Phase| count as f64 / phase.seconds;
    println!(
        "flood / normal: produced {:.1}x, read {:.1}x, peak RSS {:.2}x; posts evicted early {evicted:.0}",
        per_second(flood.produced, flood) / per_second(normal.produced, normal),
        per_second(flood.read, flood) / per_second(normal.read.max(1), normal),
        flood.peak_rss as f64 / normal.peak_rss.max(1) as f64,
    );
    let peak = results.iter().map(|(_, phase)| phase.peak_rss).max().unwrap_or(0);
    let held = results.iter().map(|(_, phase)| phase.largest_window).fold(0.0, f64::max);
    println!(
        "resident memory: {:.0} MiB before any post, {:.0} MiB at the peak: {:.1} KiB per post held (with its cascade)",
        idle_rss as f64 / f64::from(1 << 20),
        peak as f64 / f64::from(1 << 20),
        peak.saturating_sub(idle_rss) as f64 / 1024.0 / held.max(1.0)
    );
    println!(
        "first alert {} after the first copy was produced (60 s into the flood)",
        time_to_alert.map_or("never".to_owned(), |t| format!("{:.1} s", t.as_secs_f64())),
    );
    Ok(())
}

/// The synthetic stream: distinct posts, and copies of one post by fresh accounts, a third of them
/// declaring automation, across four platforms.
struct Stream {
    rng: SplitMix,
    next: u64,
    copies: u64,
}

impl Stream {
    /// `background` distinct posts and `copies` copies, as (key, JSON) pairs dated now.
    fn posts(&mut self, background: usize, copies: usize) -> Vec<(String, String)> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut posts = Vec::with_capacity(background + copies);
        for _ in 0..background {
            self.next += 1;
            let id = format!("b{}", self.next);
            let post = serde_json::json!({
                "id": id, "platform": "x", "author": {"id": format!("a{}", self.rng.below(50_000)), "handle": "h"},
                "created_at": now, "text": post_text(Language::English, &mut self.rng),
            });
            posts.push((id, post.to_string()));
        }
        for _ in 0..copies {
            self.copies += 1;
            let id = format!("c{}", self.copies);
            let platform = ["x", "bluesky", "mastodon", "reddit"][(self.copies % 4) as usize];
            let post = serde_json::json!({
                "id": id, "platform": platform,
                "author": {"id": id, "handle": "h", "declared_automated": self.copies.is_multiple_of(3)},
                "created_at": now,
                "text": "The maintainer rejected the patch out of spite and the whole project should know who runs it",
            });
            posts.push((id, post.to_string()));
        }
        posts
    }
}

/// One sample of the instance.
struct Sample {
    read: u64,
    lag: f64,
    rss: u64,
    window: f64,
    cascades: f64,
}

fn sample(http: std::net::SocketAddr, pid: u32) -> anyhow::Result<Sample> {
    let exposition = metrics(http).context("the instance's /metrics did not answer")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = resident_kib(&status).unwrap_or(0);
    Ok(Sample {
        read: sum_of_family(&exposition, "echotrace_messages_consumed_total") as u64,
        lag: sum_of_family(&exposition, "echotrace_consumer_lag_messages"),
        rss: rss_kib * 1024,
        window: sum_of_family(&exposition, "echotrace_window_posts"),
        cascades: sum_of_family(&exposition, "echotrace_scorer_cascades"),
    })
}

fn firing_alerts(exposition: &str) -> f64 {
    sum_of_family(exposition, "echotrace_alerts_firing")
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        echotrace: "target/release/echotrace".to_owned(),
        rate: 1000.0,
        factor: 10.0,
        normal_secs: 60,
        flood_secs: 180,
        max_window_posts: 500_000,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [name, value] = pair else { anyhow::bail!("{} needs a value", pair[0]) };
        match name.as_str() {
            "--echotrace" => options.echotrace = value.clone(),
            "--rate" => options.rate = value.parse()?,
            "--factor" => options.factor = value.parse()?,
            "--normal-secs" => options.normal_secs = value.parse()?,
            "--flood-secs" => options.flood_secs = value.parse()?,
            "--max-window-posts" => options.max_window_posts = value.parse()?,
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    Ok(options)
}
