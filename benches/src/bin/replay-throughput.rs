//! Single-thread throughput of the detection core over real streams, against the cost of decoding alone.
//!
//! ```text
//! cargo run --release -p echotrace-benches --bin replay-throughput -- ../shared/data/*.jsonl
//! ```
//!
//! Every JSONL file given on the command line is read into memory first, so no I/O is timed. Then, per
//! file, three stages are timed on one thread, each over every line of the file:
//!
//! - decode: `Post::from_json_at` alone (JSON decoding and validation), the baseline;
//! - normalize+fingerprint: `fingerprint(&normalize(text))` over the texts of the valid posts (decoded
//!   beforehand, untimed);
//! - pipeline: `Post::from_json_at` + `Detector::process` into a fresh `Detector` with the default
//!   configuration (normalization, fingerprint, MinHash signature, all three indexes, cascade graph).
//!
//! Posts are validated against a fixed clock, `VALIDATION_TIME`, instead of the wall clock that
//! `Post::from_json` uses (it is `from_json_at(bytes, Utc::now())`, the same code): the dev streams are
//! dated up to 2028, and against today's clock most of `cascades_weibo` would be rejected as
//! `timestamp_out_of_range`, leaving nothing to measure.
//!
//! Each stage runs 3 times, interleaved, and the fastest pass counts (the least disturbed by other work
//! on the machine). Posts per second are lines (or texts) divided by that time; the ratios say how many
//! times the cost of decoding the full pipeline is, and which share of it normalize+fingerprint takes.

use anyhow::Context;
use chrono::{DateTime, Utc};
use echotrace_core::detector::{Detector, DetectorConfig};
use echotrace_core::post::Post;
use echotrace_core::prepare::fingerprint::fingerprint;
use echotrace_core::prepare::normalize::normalize;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Timed passes per stage; the fastest counts.
const PASSES: usize = 3;
/// The "now" posts are validated against: 2100-01-01T00:00:00Z, after every post of the dev streams.
const VALIDATION_TIME: i64 = 4_102_444_800;

/// One input file, in memory.
struct Stream {
    name: String,
    lines: Vec<Vec<u8>>,
    /// Texts of the lines that decode to valid posts.
    texts: Vec<String>,
}

/// The fastest pass of each stage over one stream.
#[derive(Clone, Copy)]
struct Timings {
    decode: Duration,
    fingerprint: Duration,
    pipeline: Duration,
}

fn main() -> anyhow::Result<()> {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(!paths.is_empty(), "usage: replay-throughput STREAM.jsonl...");
    let now = DateTime::from_timestamp(VALIDATION_TIME, 0).context("validation time out of range")?;
    let streams = paths.iter().map(|path| load(path, now)).collect::<anyhow::Result<Vec<Stream>>>()?;

    let slowest = Timings { decode: Duration::MAX, fingerprint: Duration::MAX, pipeline: Duration::MAX };
    let mut best = vec![slowest; streams.len()];
    for _ in 0..PASSES {
        for (stream, best) in streams.iter().zip(&mut best) {
            best.decode = best.decode.min(time(|| decode(stream, now)));
            best.fingerprint = best.fingerprint.min(time(|| fingerprint_texts(stream)));
            best.pipeline = best.pipeline.min(time(|| run_pipeline(stream, now)));
        }
    }

    println!("single thread, fastest of {PASSES} passes, inputs in memory; posts per second");
    println!(
        "{:<30} {:>7} {:>7} {:>10} {:>12} {:>10} {:>16} {:>14}",
        "stream", "posts", "invalid", "decode", "norm+fprint", "pipeline", "pipeline/decode", "n+f share"
    );
    for (stream, timings) in streams.iter().zip(&best) {
        print_row(&stream.name, stream.lines.len(), stream.texts.len(), timings);
    }
    let total = Timings {
        decode: best.iter().map(|t| t.decode).sum(),
        fingerprint: best.iter().map(|t| t.fingerprint).sum(),
        pipeline: best.iter().map(|t| t.pipeline).sum(),
    };
    let lines = streams.iter().map(|s| s.lines.len()).sum();
    let texts = streams.iter().map(|s| s.texts.len()).sum();
    print_row("all", lines, texts, &total);
    println!();
    println!("pipeline/decode: how many times decoding alone the full pipeline costs per post;");
    println!("n+f share: normalize+fingerprint time as a share of pipeline time (per post).");
    Ok(())
}

/// Reads a JSONL file and decodes it once, untimed, for the texts.
fn load(path: &str, now: DateTime<Utc>) -> anyhow::Result<Stream> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    let lines: Vec<Vec<u8>> = bytes
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let texts = lines.iter().filter_map(|line| Post::from_json_at(line, now).ok()).map(|post| post.text).collect();
    let name = std::path::Path::new(path).file_name().map_or(path.into(), |n| n.to_string_lossy().into_owned());
    Ok(Stream { name, lines, texts })
}

fn time(work: impl FnOnce()) -> Duration {
    let started = Instant::now();
    work();
    started.elapsed()
}

fn decode(stream: &Stream, now: DateTime<Utc>) {
    for line in &stream.lines {
        let _ = black_box(Post::from_json_at(black_box(line), now));
    }
}

fn fingerprint_texts(stream: &Stream) {
    for text in &stream.texts {
        black_box(fingerprint(&normalize(black_box(text))));
    }
}

fn run_pipeline(stream: &Stream, now: DateTime<Utc>) {
    let mut detector = Detector::new(DetectorConfig::default());
    for line in &stream.lines {
        if let Ok(post) = Post::from_json_at(black_box(line), now) {
            black_box(detector.process(post));
        }
    }
}

fn print_row(name: &str, lines: usize, texts: usize, timings: &Timings) {
    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    let decode = rate(lines, timings.decode);
    let fingerprint = rate(texts, timings.fingerprint);
    let pipeline = rate(lines, timings.pipeline);
    println!(
        "{name:<30} {lines:>7} {:>7} {decode:>10.0} {fingerprint:>12.0} {pipeline:>10.0} {:>15.2}x {:>13.1}%",
        lines - texts,
        decode / pipeline,
        100.0 * pipeline / fingerprint
    );
}
