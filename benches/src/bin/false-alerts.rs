//! False amplification alerts per million posts of background traffic, under the shipped rules
//! (`deploy/rules.toml`), with the true positive measured in the same run as the baseline.
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
//! that a million and more posts go through `Detector` and `Scorer` as one stream. The demo's
//! sample (a campaign in chatter) runs through the same code first: it must raise the page.

use anyhow::Context;
use chrono::Duration;
use echotrace_core::detector::{Detector, DetectorConfig};
use echotrace_core::post::Post;
use echotrace_core::score::alerts::{AlertState, ScoreConfig, Scorer};
use echotrace_core::score::features::PostSignals;
use echotrace_core::score::rules::RuleSet;
use std::collections::BTreeMap;

const RULES: &str = include_str!("../../../deploy/rules.toml");
const SAMPLE: &str = include_str!("../../../services/echotrace/demo/sample.jsonl");

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut copies = 12usize;
    if let Some(at) = args.iter().position(|a| a == "--copies") {
        copies = args.get(at + 1).context("--copies needs a number")?.parse()?;
        args.drain(at..at + 2);
    }
    anyhow::ensure!(!args.is_empty(), "usage: false-alerts [--copies N] STREAM.jsonl...");

    let sample: Vec<Post> = SAMPLE.lines().map(parse).collect::<anyhow::Result<_>>()?;
    let (posts, fired) = run(sample.into_iter());
    println!("baseline: demo sample, {posts} posts, alerts fired: {fired:?}");
    anyhow::ensure!(fired.contains_key("amplification_campaign"), "the sample's campaign was not detected");

    let mut background: Vec<Post> = Vec::new();
    for path in &args {
        for line in std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?.lines() {
            background.push(parse(line)?);
        }
    }
    background.sort_by_key(|p| p.created_at);
    let span = background.last().map(|p| p.created_at).unwrap_or_default() - background[0].created_at;
    let shift = span + Duration::days(1);
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
    let started = std::time::Instant::now();
    let (posts, fired) = run(stream);
    let total: u64 = fired.values().sum();
    println!(
        "background: {posts} posts ({} streams x {copies} copies) in {:.1}s; alerts fired: {fired:?}",
        args.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "false alerts per million posts: {:.2} (all rules), {:.2} (amplification_campaign, the page)",
        total as f64 * 1e6 / posts as f64,
        fired.get("amplification_campaign").copied().unwrap_or(0) as f64 * 1e6 / posts as f64
    );
    Ok(())
}

fn parse(line: &str) -> anyhow::Result<Post> {
    // Judged like a replay: by the stream's own times, not the wall clock.
    let latest = chrono::DateTime::from_timestamp(4_102_444_800, 0).expect("2100-01-01") - Duration::days(1);
    Post::from_json_at(line.as_bytes(), latest).map_err(|e| anyhow::anyhow!("{e}: {line}"))
}

/// Runs posts through the detector and scorer; returns the posts processed and alerts fired by rule.
fn run(posts: impl Iterator<Item = Post>) -> (u64, BTreeMap<String, u64>) {
    let mut detector = Detector::new(DetectorConfig::default());
    let mut scorer = Scorer::new(RuleSet::from_toml(RULES).expect("shipped rules are valid"), &ScoreConfig::default());
    let mut fired = BTreeMap::new();
    let mut count = 0;
    for post in posts {
        let signals = PostSignals {
            author_id: post.author.id.clone(),
            declared_automated: post.author.declared_automated.unwrap_or(false),
            author_created_at: post.author.created_at,
            mentions: post.mentions.clone(),
        };
        let Some(detection) = detector.process(post) else { continue };
        count += 1;
        for alert in scorer.observe(&detection, &signals) {
            if alert.state == AlertState::Firing && alert.started_at == alert.event_time {
                *fired.entry(alert.rule).or_default() += 1;
            }
        }
    }
    (count, fired)
}
