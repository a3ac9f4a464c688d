//! The staged deployment against the one-process mode, in the same run on the same stream: posts
//! of a JSONL stream are produced to librdkafka's mock cluster, then read by `echotrace run` (the
//! release build, its own processes) in each shape in turn:
//!
//! - `whole`: one process, every stage;
//! - `staged N`: N `prepare` processes in their group and one `detect` process, for each N of
//!   `--preparers`;
//! - `link M`: the first of `--preparers` `prepare` processes, one `detect` process and M `link`
//!   processes holding the lexical window's shards (`stage.link_stage`), for each M of
//!   `--link-shards` (none by default).
//!
//! ```text
//! cargo build --release -p echotrace -p echotrace-benches
//! target/release/staged-throughput --echotrace target/release/echotrace \
//!     --config deploy/static-encoder.toml --input /tmp/mix.jsonl --limit 40000 --preparers 1,2,3 \
//!     --link-shards 1,3
//! ```
//!
//! `--keep DIR` keeps every process's configuration, log (`<shape>-<role>-<n>.log`) and output
//! there instead of in a temporary folder, to read what a slow run did.
//!
//! Every shape reads the whole backlog from the start. Its rate is its posts over the time from
//! its first message read to its last post processed (process start-up and model loading left
//! out). Prints one row per shape: posts/s, the ratio to `whole`, texts embedded per post, the
//! peak resident memory of the detecting process, of the preparers together and of the link
//! processes together, and how many
//! posts the order across partitions linked late or let go ahead. Every process of
//! a shape shares this machine's cores, so the figures say what one machine does, not what the
//! shape does across machines; each preparer embeds on its share of the cores
//! (`embed.threads` = cores / preparers).

use anyhow::Context;
use echotrace::metrics::sum_of_family;
use echotrace_benches::instance::{Instance, metrics, ready};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// librdkafka's mock partitions keep a few MB each: prepared posts, with their embeddings, are
/// ten times the size of posts, so the backlog is spread thin.
const PARTITIONS: i32 = 64;

struct Options {
    echotrace: String,
    configs: Vec<String>,
    input: String,
    limit: usize,
    preparers: Vec<usize>,
    /// Linking shards of each `link` shape.
    link_shards: Vec<usize>,
    /// Where to keep every process's configuration, log and output; a temporary folder if none.
    keep: Option<PathBuf>,
}

/// What one shape did.
struct Outcome {
    posts_per_second: f64,
    embedded_per_post: f64,
    detect_peak_rss: u64,
    preparers_peak_rss: u64,
    links_peak_rss: u64,
    /// Posts the detecting process linked after a later one, and posts it let go ahead of the
    /// order across partitions (`stage.max_held_posts`, `stage.max_order_wait_ms`).
    out_of_order: f64,
    forced: f64,
}

fn main() -> anyhow::Result<()> {
    let options = options()?;
    let posts = read_posts(&options.input, options.limit)?;
    let cluster = MockCluster::new(1)?;
    let defaults = echotrace::config::Config::default().kafka;
    for topic in ["posts", &defaults.dead_letter_topic, &defaults.edges_topic, &defaults.alerts_topic] {
        cluster.create_topic(topic, PARTITIONS, 1)?;
    }
    for preparers in &options.preparers {
        cluster.create_topic(&format!("prepared-{preparers}"), PARTITIONS, 1)?;
    }
    for &links in &options.link_shards {
        cluster.create_topic(&format!("prepared-link-{links}"), PARTITIONS, 1)?;
        cluster.create_topic(&format!("probes-{links}"), 1, 1)?;
        cluster.create_topic(&format!("answers-{links}"), links as i32, 1)?;
    }
    let broker = cluster.bootstrap_servers();
    produce(&broker, &posts)?;
    let held = held_messages(&broker)?;
    let temporary = tempfile::tempdir()?;
    let dir = match &options.keep {
        Some(keep) => {
            std::fs::create_dir_all(keep)?;
            keep.clone()
        }
        None => temporary.path().to_owned(),
    };
    let dir = dir.as_path();

    let whole = run_shape(&options, &broker, dir, "whole", Shape::default(), held)?;
    let mut rows = vec![("whole".to_owned(), whole)];
    for &preparers in &options.preparers {
        let shape = Shape { preparers, links: 0 };
        let outcome = run_shape(&options, &broker, dir, &format!("staged-{preparers}"), shape, held)?;
        rows.push((format!("staged, {preparers} prepare + 1 detect"), outcome));
    }
    let preparers = options.preparers.first().copied().unwrap_or(1);
    for &links in &options.link_shards {
        let shape = Shape { preparers, links };
        let outcome = run_shape(&options, &broker, dir, &format!("link-{links}"), shape, held)?;
        rows.push((format!("{preparers} prepare + 1 detect + {links} link"), outcome));
    }

    println!(
        "{held} messages of {} ({} produced; the mock cluster keeps a few MB a partition), {PARTITIONS} \
         partitions, configuration {:?}, all processes on this machine; posts/s counts dead letters too",
        options.input,
        posts.len(),
        options.configs
    );
    println!(
        "{:<32} {:>10} {:>10} {:>16} {:>18} {:>22} {:>18} {:>13} {:>7}",
        "shape",
        "posts/s",
        "vs whole",
        "embedded/post",
        "detecting RSS MiB",
        "preparers' RSS MiB",
        "links' RSS MiB",
        "out of order",
        "forced"
    );
    let baseline = rows[0].1.posts_per_second;
    for (name, outcome) in &rows {
        println!(
            "{name:<32} {:>10.0} {:>9.2}x {:>16.3} {:>18.0} {:>22.0} {:>18.0} {:>13} {:>7}",
            outcome.posts_per_second,
            outcome.posts_per_second / baseline,
            outcome.embedded_per_post,
            outcome.detect_peak_rss as f64 / f64::from(1 << 20),
            outcome.preparers_peak_rss as f64 / f64::from(1 << 20),
            outcome.links_peak_rss as f64 / f64::from(1 << 20),
            outcome.out_of_order,
            outcome.forced,
        );
    }
    Ok(())
}

/// The first `limit` lines of a JSONL stream, with their post ids as keys.
fn read_posts(path: &str, limit: usize) -> anyhow::Result<Vec<(String, String)>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?;
    let mut posts = Vec::new();
    for line in std::io::BufReader::new(file).lines().take(limit) {
        let line = line?;
        let id = serde_json::from_str::<serde_json::Value>(&line)?["id"].as_str().unwrap_or_default().to_owned();
        posts.push((id, line));
    }
    Ok(posts)
}

/// Produces every post to `posts`, keyed by id, and waits for the acknowledgements.
fn produce(broker: &str, posts: &[(String, String)]) -> anyhow::Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "2000000")
        .create()?;
    for (key, payload) in posts {
        producer.send(BaseRecord::to("posts").key(key).payload(payload)).map_err(|(error, _)| error)?;
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(())
}

/// How many messages the cluster holds on `posts`: every shape reads exactly these.
fn held_messages(broker: &str) -> anyhow::Result<usize> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", broker).create()?;
    let mut held = 0;
    for partition in 0..PARTITIONS {
        let (low, high) = consumer.fetch_watermarks("posts", partition, Duration::from_secs(10))?;
        held += (high - low) as usize;
    }
    Ok(held)
}

/// The processes of a shape besides the detecting one: none for one whole process.
#[derive(Default, Clone, Copy)]
struct Shape {
    preparers: usize,
    /// `link` processes, one per shard, asked by the `detect` process (none: it holds its window).
    links: usize,
}

/// Runs one shape over the backlog: `shape.preparers` prepare processes, a detect process and
/// `shape.links` link processes, or one whole process when `shape.preparers` is 0.
fn run_shape(
    options: &Options,
    broker: &str,
    dir: &Path,
    name: &str,
    shape: Shape,
    posts: usize,
) -> anyhow::Result<Outcome> {
    let Shape { preparers, links } = shape;
    // The `link` shapes' topics (in [kafka]) and settings (sections of their own).
    let (prepared_topic, link_topics, link_settings) = match links {
        0 => (format!("prepared-{preparers}"), String::new(), String::new()),
        links => (
            format!("prepared-link-{links}"),
            format!("probe_topic = \"probes-{links}\"\nanswer_topic = \"answers-{links}\"\n"),
            format!("[stage]\nlink_stage = true\n[detector]\nlink_shards = {links}\n"),
        ),
    };
    // A short session, as in `tests/staged.rs`: with librdkafka's default 45 s, 2 runs in 6 of
    // the 2-preparer shape stalled: one preparer was given half the partitions, the other none
    // until both were given theirs 45 s later, and the `detect` stage forced its posts past the
    // unread half after `stage.max_order_wait_ms`.
    let overlay = dir.join(format!("{name}.toml"));
    std::fs::write(
        &overlay,
        format!(
            "[kafka]\nbrokers = \"{broker}\"\ngroup_id = \"{name}\"\ninput_topics = [\"posts\"]\n\
             prepared_topic = \"{prepared_topic}\"\n{link_topics}[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\
             \"heartbeat.interval.ms\" = \"1000\"\n[output]\ndir = \"{}\"\n[state]\ndir = \"{}\"\n{link_settings}",
            dir.join(name).join("out").display(),
            dir.join(name).join("state").display(),
        ),
    )?;
    let mut configs: Vec<PathBuf> = options.configs.iter().map(PathBuf::from).collect();
    configs.push(overlay);
    let start = |role: &str, index: usize| -> anyhow::Result<(SocketAddr, Instance)> {
        let http = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut command = Command::new(&options.echotrace);
        for config in &configs {
            command.arg("--config").arg(config);
        }
        if role == "prepare" {
            // The preparers share this machine's cores: each gets its share for its model (with
            // every one of them on all the cores, ONNX Runtime's threads fight over them).
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            command.env("ECHOTRACE_EMBED__THREADS", (cores / preparers).max(1).to_string());
        }
        if role == "link" {
            command.env("ECHOTRACE_STAGE__LINK_SHARD", index.to_string());
        }
        let process = command
            .arg("run")
            .env("ECHOTRACE_STAGE__ROLE", role)
            .env("ECHOTRACE_HTTP__LISTEN", http.to_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}-{role}-{index}.log")))?)
            .spawn()
            .with_context(|| format!("cannot start {}", options.echotrace))?;
        Ok((http, Instance(process)))
    };
    let mut detecting = start(if preparers == 0 { "whole" } else { "detect" }, 0)?;
    let mut preparing: Vec<(SocketAddr, Instance)> =
        (0..preparers).map(|index| start("prepare", index)).collect::<anyhow::Result<_>>()?;
    let mut linking: Vec<(SocketAddr, Instance)> =
        (0..links).map(|index| start("link", index)).collect::<anyhow::Result<_>>()?;

    let readers: Vec<SocketAddr> =
        if preparers == 0 { vec![detecting.0] } else { preparing.iter().map(|(http, _)| *http).collect() };
    let started = Instant::now();
    let mut first_read = None;
    let (mut detect_peak_rss, mut preparers_peak_rss, mut links_peak_rss) = (0u64, 0u64, 0u64);
    loop {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(3600), "{name} did not finish within an hour");
        for (_, process) in std::iter::once(&mut detecting).chain(preparing.iter_mut()).chain(linking.iter_mut()) {
            anyhow::ensure!(
                process.0.try_wait()?.is_none(),
                "a process of {name} exited (its log is in {})",
                dir.display()
            );
        }
        detect_peak_rss = detect_peak_rss.max(detecting.1.resident_bytes());
        preparers_peak_rss =
            preparers_peak_rss.max(preparing.iter().map(|(_, process)| process.resident_bytes()).sum());
        links_peak_rss = links_peak_rss.max(linking.iter().map(|(_, process)| process.resident_bytes()).sum());
        let read: f64 = readers.iter().filter_map(|http| metrics(*http)).map(|m| family(&m, "messages_consumed")).sum();
        if first_read.is_none() && read > 0.0 {
            first_read = Some(Instant::now());
        }
        let settled = metrics(detecting.0).map_or(0.0, |m| {
            family(&m, "posts_processed") + family(&m, "posts_duplicate") + family(&m, "dead_letters")
        });
        let dead_in_preparers: f64 =
            preparing.iter().filter_map(|(http, _)| metrics(*http)).map(|m| family(&m, "dead_letters")).sum();
        if settled + dead_in_preparers >= posts as f64 && ready(detecting.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let seconds = first_read.map_or(f64::NAN, |at| at.elapsed().as_secs_f64());
    let detecting_metrics = metrics(detecting.0).unwrap_or_default();
    let embedded: f64 = std::iter::once(&detecting.0)
        .chain(preparing.iter().map(|(http, _)| http))
        .filter_map(|http| metrics(*http))
        .map(|m| family(&m, "embeddings"))
        .sum();
    Ok(Outcome {
        posts_per_second: posts as f64 / seconds,
        embedded_per_post: embedded / posts as f64,
        detect_peak_rss,
        preparers_peak_rss,
        links_peak_rss,
        out_of_order: family(&detecting_metrics, "posts_out_of_order"),
        forced: family(&detecting_metrics, "order_forced"),
    })
}

/// The sum of `echotrace_<name>_total` over its label sets.
fn family(exposition: &str, name: &str) -> f64 {
    sum_of_family(exposition, &format!("echotrace_{name}_total"))
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        echotrace: "target/release/echotrace".to_owned(),
        configs: Vec::new(),
        input: String::new(),
        limit: 40_000,
        preparers: vec![1, 2, 3],
        link_shards: Vec::new(),
        keep: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [name, value] = pair else { anyhow::bail!("{} needs a value", pair[0]) };
        match name.as_str() {
            "--echotrace" => options.echotrace = value.clone(),
            "--config" => options.configs.push(value.clone()),
            "--input" => options.input = value.clone(),
            "--limit" => options.limit = value.parse()?,
            "--keep" => options.keep = Some(PathBuf::from(value)),
            "--link-shards" => {
                options.link_shards = value.split(',').map(str::parse).collect::<Result<_, _>>()?;
            }
            "--preparers" => {
                options.preparers = value.split(',').map(str::parse).collect::<Result<_, _>>()?;
            }
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    anyhow::ensure!(!options.input.is_empty(), "--input FILE (a JSONL stream of posts) is required");
    Ok(options)
}
