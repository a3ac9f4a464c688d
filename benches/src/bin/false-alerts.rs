//! False amplification alerts per million posts of background traffic, under the shipped rules
//! (`deploy/rules.toml`) and the shipped linking, sentence embeddings included, with the true
//! positive measured in the same run as the baseline.
//!
//! ```text
//! cargo run --release -p echotrace-benches --bin false-alerts -- --copies 12 \
//!     ../shared/data/threads_rumoureval.jsonl ../shared/data/cascades_weibo.jsonl \
//!     ../shared/data/paraphrase_tweets_train.jsonl ../shared/data/summaries_cnn_dm.jsonl
//! ```
//!
//! The streams hold no amplification campaign (reply threads, repost cascades, news and the tweets
//! that share it), so every alert they raise is a false one. They are replayed `--copies` times, each
//! copy with its ids prefixed and its times shifted past the previous copy and the linking window, so
//! that a million and more posts go through the same [`Pipeline`] as `echotrace replay` (detector,
//! embedding batches, scorer, Parquet sink) as one stream. The demo's sample (a campaign in chatter,
//! with LLM summaries of summaries) runs through the same code first: it must raise the page, and
//! `recursive_summarisation` when embeddings are on.
//!
//! The streams say nothing of their accounts' age or automation, so no background post looks
//! automated to the rules. `--automated-accounts SHARE` marks that share of the background's
//! accounts (picked by a hash of the account id, the same ones in every copy) as declaring
//! automation, to measure the rules against a background with organic bots in it (news
//! aggregators, feeds), which a platform's traffic has.
//!
//! `--no-embed` turns semantic linking off (lexical links only; the model is not loaded). With
//! embeddings on, the model and ONNX Runtime are found as by `echotrace replay` (`ORT_DYLIB_PATH`,
//! the repository's `models/`). The embedding cache is made large enough to hold every distinct text
//! of one copy, so each copy after the first reuses the first one's embeddings: the copies are an
//! artefact of the benchmark, and embedding the same text twelve times would measure nothing more.

use anyhow::Context;
use chrono::Duration;
use echotrace::config::Config;
use echotrace::metrics::Metrics;
use echotrace::pipeline::Processed;
use echotrace::sinks::parquet::ParquetSink;
use echotrace_core::detector::Detector;
use echotrace_core::post::Post;
use echotrace_core::score::alerts::AlertState;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

const SAMPLE: &str = include_str!("../../../services/echotrace/demo/sample.jsonl");

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut copies = 12usize;
    if let Some(at) = args.iter().position(|a| a == "--copies") {
        copies = args.get(at + 1).context("--copies needs a number")?.parse()?;
        args.drain(at..at + 2);
    }
    let mut automated_accounts = 0.0f64;
    if let Some(at) = args.iter().position(|a| a == "--automated-accounts") {
        let share = args.get(at + 1).context("--automated-accounts needs a share")?;
        automated_accounts = share.parse().with_context(|| format!("--automated-accounts {share}: not a number"))?;
        anyhow::ensure!((0.0..=1.0).contains(&automated_accounts), "--automated-accounts is a share, 0 to 1");
        args.drain(at..at + 2);
    }
    let embed = match args.iter().position(|a| a == "--no-embed") {
        Some(at) => {
            args.remove(at);
            false
        }
        None => true,
    };
    anyhow::ensure!(
        !args.is_empty(),
        "usage: false-alerts [--copies N] [--automated-accounts SHARE] [--no-embed] STREAM.jsonl..."
    );
    let mut config = Config::default();
    config.detector.semantic.enabled = embed;
    println!("semantic linking (sentence embeddings): {}", if embed { "on" } else { "off" });
    println!("background accounts marked as declaring automation: {:.0}%", automated_accounts * 100.0);

    let sample: Vec<Post> = SAMPLE.lines().map(parse).collect::<anyhow::Result<_>>()?;
    let baseline = run(&config, sample.into_iter())?;
    println!("baseline: demo sample, {} posts, alerts fired: {:?}", baseline.posts, baseline.fired);
    anyhow::ensure!(baseline.fired.contains_key("amplification_campaign"), "the sample's campaign was not detected");
    anyhow::ensure!(
        !embed || baseline.fired.contains_key("recursive_summarisation"),
        "the sample's summaries of summaries were not detected"
    );

    let mut background: Vec<Post> = Vec::new();
    for path in &args {
        for line in std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?.lines() {
            let mut post = parse(line)?;
            if picked(&post.author.id, automated_accounts) {
                post.author.declared_automated = Some(true);
            }
            background.push(post);
        }
    }
    background.sort_by_key(|p| p.created_at);
    let span = background.last().map(|p| p.created_at).unwrap_or_default() - background[0].created_at;
    let shift = span + Duration::days(1);
    config.embed.cache_entries = config.embed.cache_entries.max(background.len());
    let stream = (0..copies).flat_map(|copy| {
        background.iter().map(move |post| {
            let prefix = |id: &str| format!("c{copy}-{id}");
            let mut post = post.clone();
            post.id = prefix(&post.id);
            for reference in [&mut post.repost_of, &mut post.quote_of, &mut post.reply_to].into_iter().flatten() {
                *reference = prefix(reference);
            }
            post.created_at += shift * copy as i32;
            post
        })
    });
    let started = Instant::now();
    let background = run(&config, stream)?;
    let total: u64 = background.fired.values().sum();
    println!(
        "background: {} posts ({} streams x {copies} copies) in {:.1}s, {} texts embedded; alerts fired: {:?}",
        background.posts,
        args.len(),
        started.elapsed().as_secs_f64(),
        background.embedded,
        background.fired
    );
    let per_million = |count: u64| count as f64 * 1e6 / background.posts as f64;
    println!(
        "false alerts per million posts: {:.2} (all rules), {:.2} (amplification_campaign, the page)",
        per_million(total),
        per_million(background.fired.get("amplification_campaign").copied().unwrap_or(0))
    );
    for (rule, count) in &background.fired {
        println!("  {rule}: {count} ({:.2} per million)", per_million(*count));
    }
    Ok(())
}

/// Whether an account falls in the `share` picked by a hash of its id (xxh3, stable across builds,
/// so every run and every toolchain marks the same accounts).
fn picked(account_id: &str, share: f64) -> bool {
    (xxhash_rust::xxh3::xxh3_64(account_id.as_bytes()) as f64 / u64::MAX as f64) < share
}

fn parse(line: &str) -> anyhow::Result<Post> {
    // Judged like a replay: by the stream's own times, not the wall clock.
    let latest = echotrace::replay::REPLAY_LATEST - echotrace_core::post::MAX_FUTURE_SKEW;
    Post::from_json_at(line.as_bytes(), latest).map_err(|e| anyhow::anyhow!("{e}: {line}"))
}

/// What one run through the pipeline gave.
struct Outcome {
    /// Posts processed (duplicates left out).
    posts: u64,
    /// Texts the model embedded.
    embedded: u64,
    /// Alerts that started firing, by rule.
    fired: BTreeMap<String, u64>,
}

/// Runs posts through a fresh pipeline, its Parquet output in a temporary folder, as a replay does.
fn run(config: &Config, posts: impl Iterator<Item = Post>) -> anyhow::Result<Outcome> {
    let out = tempfile::tempdir()?;
    let metrics = Arc::new(Metrics::new());
    let detector = Arc::new(Mutex::new(Detector::new(config.detector.clone())));
    let sink = ParquetSink::new(out.path())?;
    let mut pipeline = echotrace::pipeline::from_config(config, detector, sink, metrics.clone())?;
    let mut fired = BTreeMap::new();
    let mut count = |processed: Vec<Processed>| {
        for alert in processed.into_iter().flat_map(|p| p.alerts) {
            if alert.state == AlertState::Firing && alert.started_at == alert.event_time {
                *fired.entry(alert.rule).or_default() += 1;
            }
        }
    };
    for post in posts {
        count(pipeline.submit(post, None));
        if pipeline.buffered_posts() >= config.output.flush_rows {
            count(pipeline.run_batch());
            pipeline.flush().context("writing Parquet")?;
        }
    }
    count(pipeline.run_batch());
    pipeline.flush().context("writing Parquet")?;
    Ok(Outcome { posts: metrics.posts_processed.get(), embedded: metrics.embeddings.get(), fired })
}
