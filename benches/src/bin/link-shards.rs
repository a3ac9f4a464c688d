//! The detector with its lexical window split into linking shards (`detector.link_shards`)
//! against one window, on real streams: posts per second and whether every detection is the same.
//!
//! ```text
//! cargo run --release -p echotrace-benches --bin link-shards -- ../shared/data/*.jsonl
//! ```
//!
//! Every file is read and prepared first (the stateless stage, untimed). Then the detector links
//! it (linking, graph and placement; no scoring, no Parquet) with one window and with 2 and 4
//! shards, semantic linking off so that the lexical window is the work:
//!
//! - one by one (`Detector::process_prepared`), as `replay` runs without semantic linking: the
//!   shards answer in turn on the calling thread;
//! - in batches of 256 on 2 threads (`Detector::process_batch`), as the pipeline runs with
//!   semantic linking on: the shards answer a batch side by side, one thread each.
//!
//! Each configuration runs 3 times, interleaved, and the fastest pass counts. Ratios are against
//! one window linking the same way in the same run. Every sharded run's detections are compared
//! with one window's, post by post.

use anyhow::Context;
use chrono::DateTime;
use echotrace_core::detector::{BatchPost, Detection, Detector, DetectorConfig};
use echotrace_core::post::Post;
use echotrace_core::prepare::PreparedPost;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

/// Timed passes per configuration; the fastest counts.
const PASSES: usize = 3;
/// The "now" posts are validated against: 2100-01-01T00:00:00Z, after every post of the dev streams.
const VALIDATION_TIME: i64 = 4_102_444_800;
/// Posts per batch in the batched runs, and the threads a batch's shards answer on.
const BATCH: usize = 256;
const THREADS: usize = 2;

/// How a run feeds the detector.
#[derive(Clone, Copy, PartialEq)]
enum Feed {
    OneByOne,
    Batches,
}

fn main() -> anyhow::Result<()> {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(!paths.is_empty(), "usage: link-shards STREAM.jsonl...");
    let now = DateTime::from_timestamp(VALIDATION_TIME, 0).context("validation time out of range")?;
    println!(
        "fastest of {PASSES} passes, posts prepared beforehand; posts per second (ratio to one window, same feed)"
    );
    println!(
        "{:<28} {:>7} {:>12} {:>8} {:>10} {:>7}  same detections",
        "stream", "posts", "feed", "shards", "posts/s", "ratio"
    );
    for path in &paths {
        let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
        let posts: Vec<Post> =
            bytes.split(|&b| b == b'\n').filter_map(|line| Post::from_json_at(line, now).ok()).collect();
        let preparer = Detector::new(config(1)).preparer();
        let prepared: Vec<PreparedPost> = posts.into_iter().map(|post| preparer.prepare(post)).collect();
        let name = std::path::Path::new(path).file_name().map_or(path.into(), |n| n.to_string_lossy().into_owned());
        for feed in [Feed::OneByOne, Feed::Batches] {
            let mut best = [Duration::MAX; 3];
            let mut detections: [Vec<Option<Detection>>; 3] = Default::default();
            for _ in 0..PASSES {
                for (i, shards) in [1, 2, 4].into_iter().enumerate() {
                    let (took, found) = link(&prepared, shards, feed);
                    best[i] = best[i].min(took);
                    detections[i] = found;
                }
            }
            for (i, shards) in [1, 2, 4].into_iter().enumerate() {
                let rate = prepared.len() as f64 / best[i].as_secs_f64();
                let ratio = best[0].as_secs_f64() / best[i].as_secs_f64();
                let feed = if feed == Feed::OneByOne { "one by one" } else { "batches" };
                let same = if i == 0 {
                    "-"
                } else if detections[i] == detections[0] {
                    "yes"
                } else {
                    "NO"
                };
                println!("{name:<28} {:>7} {feed:>12} {shards:>8} {rate:>10.0} {ratio:>7.2}  {same}", prepared.len());
            }
        }
    }
    Ok(())
}

/// One window, or `shards` linking shards, semantic linking off.
fn config(shards: u32) -> DetectorConfig {
    let mut config =
        DetectorConfig { link_shards: NonZeroU32::new(shards).expect("at least one"), ..Default::default() };
    config.semantic.enabled = false;
    config
}

/// Links the stream with a fresh detector; returns the time taken and the detections.
fn link(prepared: &[PreparedPost], shards: u32, feed: Feed) -> (Duration, Vec<Option<Detection>>) {
    let posts = prepared.to_vec(); // copied before the clock starts
    let mut detector = Detector::new(config(shards));
    let started = Instant::now();
    let detections = match feed {
        Feed::OneByOne => posts.into_iter().map(|post| detector.process_prepared(post, None, None)).collect(),
        Feed::Batches => {
            let mut posts = posts.into_iter().map(|prepared| BatchPost { prepared, embedding: None, arrived_at: None });
            let mut detections = Vec::with_capacity(prepared.len());
            loop {
                let batch: Vec<BatchPost> = posts.by_ref().take(BATCH).collect();
                if batch.is_empty() {
                    break detections;
                }
                detections.extend(detector.process_batch(batch, THREADS));
            }
        }
    };
    (started.elapsed(), detections)
}
