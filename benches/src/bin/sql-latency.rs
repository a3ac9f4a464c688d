//! Analyst query latency over ten million stored posts: the lineage of one cascade (its alert's
//! SQL), the lineage of one post (`lineage()`, and the recursive CTE it replaces) and the top
//! cascades of the last hour, on the files as the live sink writes them (one per checkpoint) and
//! after `echotrace compact`, against a full scan of the posts measured in the same run.
//!
//! ```text
//! cargo run --release -p echotrace-benches --bin sql-latency -- --posts 10000000 --out /tmp/sql-bench \
//!     ../shared/data/threads_rumoureval.jsonl ../shared/data/cascades_weibo.jsonl \
//!     ../shared/data/paraphrase_tweets_train.jsonl ../shared/data/summaries_cnn_dm.jsonl
//! ```
//!
//! The streams are replayed through `Detector` and the Parquet sink as one stream, copy after copy,
//! each copy with its ids prefixed and detected by a fresh `Detector`: the copies repeat the same
//! texts word for word, which one detector would link into a single cascade of every copy (a live
//! feed does not repeat itself so). Event times are laid anew at `--rate` posts per second in
//! stream order (the dev streams span years; a live feed of this size spans hours), and the sink
//! checkpoints every `--checkpoint-secs` of event time, as `echotrace run` does every 5 s of wall
//! clock. Semantic linking is off (it would take hours of embedding on two cores and changes no
//! table's shape). `--reuse` queries an existing `--out` without writing it again.
//!
//! Each query is timed five times (median), from a new session each time, as `echotrace query`
//! runs; the recursive CTE, which takes minutes at ten million posts, once.

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use echotrace::alerting::alert_sql;
use echotrace::compact::{CompactOptions, compact};
use echotrace::sinks::parquet::ParquetSink;
use echotrace_core::detector::{Detector, DetectorConfig};
use echotrace_core::post::Post;
use std::path::{Path, PathBuf};
use std::time::Instant;

struct Args {
    posts: usize,
    rate: f64,
    checkpoint_secs: i64,
    out: PathBuf,
    reuse: bool,
    streams: Vec<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        posts: 10_000_000,
        rate: 250.0,
        checkpoint_secs: 5,
        out: PathBuf::from("/tmp/echotrace-sql-bench"),
        reuse: false,
        streams: Vec::new(),
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut value = || words.next().with_context(|| format!("{word} needs a value"));
        match word.as_str() {
            "--posts" => args.posts = value()?.parse()?,
            "--rate" => args.rate = value()?.parse()?,
            "--checkpoint-secs" => args.checkpoint_secs = value()?.parse()?,
            "--out" => args.out = value()?.into(),
            "--reuse" => args.reuse = true,
            _ => args.streams.push(word),
        }
    }
    anyhow::ensure!(
        args.reuse || !args.streams.is_empty(),
        "usage: sql-latency [--posts N] [--rate R] [--out DIR] STREAM.jsonl..."
    );
    Ok(args)
}

/// Writes `posts` posts of the streams, re-timed, into `out`; returns the event time of the last.
fn generate(args: &Args) -> anyhow::Result<DateTime<Utc>> {
    let mut background: Vec<Post> = Vec::new();
    for path in &args.streams {
        for line in std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?.lines() {
            // Judged like `echotrace replay`: by the file's content, not by today's clock.
            let latest = echotrace::replay::REPLAY_LATEST - echotrace_core::post::MAX_FUTURE_SKEW;
            background.push(Post::from_json_at(line.as_bytes(), latest).map_err(|e| anyhow::anyhow!("{path}: {e}"))?);
        }
    }
    background.sort_by_key(|p| p.created_at);
    let _ = std::fs::remove_dir_all(&args.out);
    let mut sink = ParquetSink::new(&args.out)?;
    let mut config = DetectorConfig::default();
    config.semantic.enabled = false;
    let mut detector = Detector::new(config.clone());
    let start: DateTime<Utc> = "2026-11-01T00:00:00Z".parse()?;
    let step_us = (1e6 / args.rate) as i64;
    let mut next_checkpoint = start + Duration::seconds(args.checkpoint_secs);
    let started = Instant::now();
    let mut last = start;
    for i in 0..args.posts {
        let copy = i / background.len();
        if i % background.len() == 0 && copy > 0 {
            detector = Detector::new(config.clone());
        }
        let mut post = background[i % background.len()].clone();
        let prefix = |id: &str| format!("c{copy}-{id}");
        post.id = prefix(&post.id);
        for reference in [&mut post.repost_of, &mut post.quote_of, &mut post.reply_to].into_iter().flatten() {
            *reference = prefix(reference);
        }
        post.created_at = start + Duration::microseconds(step_us * i as i64);
        last = post.created_at;
        if post.created_at >= next_checkpoint {
            sink.flush()?;
            next_checkpoint += Duration::seconds(args.checkpoint_secs);
        }
        if let Some(detection) = detector.process(post) {
            sink.push(detection, None);
        }
        if i % 1_000_000 == 0 && i > 0 {
            eprintln!("  {i} posts written ({:.0} posts/s)", i as f64 / started.elapsed().as_secs_f64());
        }
    }
    sink.flush()?;
    println!(
        "wrote {} posts ({} copies of {} stream posts) in {:.0} s, event time {} to {}",
        args.posts,
        args.posts.div_ceil(background.len()),
        background.len(),
        started.elapsed().as_secs_f64(),
        start,
        last
    );
    Ok(last)
}

/// The median of `runs` runs of `sql`, in seconds, and its row count.
async fn time(data: &Path, sql: &str, runs: usize) -> anyhow::Result<(f64, usize)> {
    let mut seconds = Vec::new();
    let mut rows = 0;
    for _ in 0..runs {
        let started = Instant::now();
        let session = echotrace::query::session(data).await?;
        let batches = echotrace::query::run(&session, sql).await?;
        seconds.push(started.elapsed().as_secs_f64());
        rows = batches.iter().map(|b| b.num_rows()).sum();
    }
    seconds.sort_by(f64::total_cmp);
    Ok((seconds[runs / 2], rows))
}

/// A single string from a one-row result.
async fn scalar(data: &Path, sql: &str) -> anyhow::Result<String> {
    let session = echotrace::query::session(data).await?;
    let batches = echotrace::query::run(&session, sql).await?;
    let column = arrow_cast::cast(batches[0].column(0), &arrow_schema::DataType::Utf8)?;
    let column = column.as_any().downcast_ref::<arrow_array::StringArray>().context("a string")?;
    Ok(column.value(0).to_owned())
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| if e.path().is_dir() { count_files(&e.path()) } else { 1 }).sum())
        .unwrap_or(0)
}

async fn measure(data: &Path, label: &str) -> anyhow::Result<()> {
    println!("\n{label}: {} files under posts/", count_files(&data.join("posts")));
    let largest = scalar(
        data,
        "SELECT cascade_id FROM (SELECT cascade_id, size, row_number() OVER (PARTITION BY cascade_id ORDER BY updated_at DESC) AS rn FROM cascades) WHERE rn = 1 ORDER BY size DESC LIMIT 1",
    )
    .await?;
    let deepest = scalar(data, "SELECT post_id FROM posts ORDER BY generation DESC, post_id LIMIT 1").await?;
    let last_seen = scalar(data, "SELECT CAST(max(last_seen) AS VARCHAR) FROM cascades").await?;
    let cascade_of_deepest = scalar(data, &format!("SELECT cascade_id FROM posts WHERE post_id = '{deepest}'")).await?;
    let lineage_cte = format!(
        "WITH RECURSIVE lineage(post_id, parent_id, depth) AS (
            SELECT post_id, parent_id, 0 FROM posts WHERE post_id = '{deepest}'
            UNION ALL
            SELECT p.post_id, p.parent_id, l.depth + 1 FROM posts p JOIN lineage l ON p.post_id = l.parent_id)
         SELECT depth, post_id FROM lineage ORDER BY depth"
    );
    let lineage_function = format!("SELECT * FROM lineage('{deepest}') ORDER BY depth");
    let top_last_hour = format!(
        "SELECT cascade_id, root_post_id, size, platform_count, depth FROM
           (SELECT *, row_number() OVER (PARTITION BY cascade_id ORDER BY updated_at DESC) AS rn FROM cascades
            WHERE last_seen >= TIMESTAMP '{last_seen}' - INTERVAL '1 hour')
         WHERE rn = 1 ORDER BY size DESC LIMIT 10"
    );
    let full_scan = "SELECT count(*) FROM posts WHERE text LIKE '%no such words anywhere%'";
    let (baseline, _) = time(data, full_scan, 5).await?;
    println!("  {:<58} {:>9} {:>7} {:>9}", "query", "median s", "rows", "÷ scan");
    println!("  {:<58} {:>9.3} {:>7} {:>9}", "baseline: full scan of posts.text", baseline, 1, "1.00");
    for (name, sql, runs) in [
        ("cascade of the deepest post (its alert's SQL)", alert_sql(&cascade_of_deepest), 5),
        ("largest cascade (its alert's SQL)", alert_sql(&largest), 5),
        ("lineage of the deepest post: lineage()", lineage_function, 5),
        ("lineage of the deepest post: recursive CTE (1 run)", lineage_cte, 1),
        ("top cascades of the last hour", top_last_hour, 5),
    ] {
        let (seconds, rows) = time(data, &sql, runs).await?;
        println!("  {name:<58} {seconds:>9.3} {rows:>7} {:>9.3}", seconds / baseline);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    if !args.reuse {
        generate(&args)?;
    }
    measure(&args.out, "as the sink writes them").await?;
    let started = Instant::now();
    let options = CompactOptions { min_age: Duration::zero(), ..Default::default() };
    let summary = compact(&args.out, &options, Utc::now()).await?;
    println!(
        "\ncompacted {} partitions ({} files, {} rows) in {:.0} s",
        summary.partitions,
        summary.files_in,
        summary.rows_out,
        started.elapsed().as_secs_f64()
    );
    measure(&args.out, "after echotrace compact").await
}
