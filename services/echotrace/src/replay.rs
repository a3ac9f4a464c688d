//! `echotrace replay`: the same pipeline over a file of posts (JSONL, optionally gzipped), for
//! backfills and evaluation. Bad lines are written to `OUT/dead_letters.jsonl` with their reason,
//! exactly as the consumer would dead-letter them, and counted.
//!
//! One rule differs from the live consumer: a file is judged by its own content, not by today's
//! clock, so `created_at` may lie anywhere before [`REPLAY_LATEST`] (a backfill of data dated ahead of
//! the machine's clock, or a synthetic stream, replays whole; the year 3000 is still rejected).

use crate::pipeline::Pipeline;
use chrono::{DateTime, Utc};
use echotrace_core::post::Post;
use flate2::read::MultiGzDecoder;
use indicatif::{ProgressBar, ProgressStyle};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

/// The latest `created_at` a replay accepts.
pub const REPLAY_LATEST: DateTime<Utc> =
    DateTime::from_timestamp(4_102_444_800, 0).expect("2100-01-01 is a valid time");

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct ReplaySummary {
    /// Lines read.
    pub lines: u64,
    /// Posts processed.
    pub posts: u64,
    /// Lines that were not valid posts.
    pub dead_letters: u64,
    /// Posts dropped as duplicates.
    pub duplicates: u64,
    /// Seconds taken.
    pub seconds: f64,
}

/// Opens a JSONL file, gunzipping it when it is gzipped (by magic bytes, not by name); says which.
pub fn open_input(path: &Path) -> std::io::Result<(Box<dyn BufRead>, bool)> {
    let mut file = BufReader::new(File::open(path)?);
    let gzipped = file.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gzipped { (Box::new(BufReader::new(MultiGzDecoder::new(file))), true) } else { (Box::new(file), false) })
}

/// Replays `input` through `pipeline`, flushing every `flush_rows` posts and at the end.
pub fn replay(
    input: &Path,
    pipeline: &mut Pipeline,
    flush_rows: usize,
    out_dir: &Path,
) -> anyhow::Result<ReplaySummary> {
    let started = Instant::now();
    let size = std::fs::metadata(input)?.len();
    let (reader, gzipped) = open_input(input)?;
    // Bytes read are known only for plain files; a gzipped one shows a spinner with the post count.
    let progress = if gzipped { ProgressBar::new_spinner() } else { ProgressBar::new(size) };
    progress.set_style(
        ProgressStyle::with_template("{spinner} {bytes}/{total_bytes} [{bar:30}] {msg} ({eta})")?.progress_chars("=> "),
    );
    let mut dead_letters = BufWriter::new(File::create(out_dir.join("dead_letters.jsonl"))?);
    let mut summary = ReplaySummary::default();
    let latest_now = REPLAY_LATEST - echotrace_core::post::MAX_FUTURE_SKEW;
    let mut bytes = 0u64;
    for (number, line) in reader.split(b'\n').enumerate() {
        let line = line?;
        bytes += line.len() as u64 + 1;
        summary.lines += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match Post::from_json_at(&line, latest_now) {
            Ok(post) => {
                summary.posts += 1;
                pipeline.submit(post, None);
            }
            Err(error) => {
                summary.dead_letters += 1;
                let record = serde_json::json!({
                    "line": number + 1,
                    "error": error.to_string(),
                    "error_kind": error.kind(),
                    "original": String::from_utf8_lossy(&line),
                });
                writeln!(dead_letters, "{record}")?;
            }
        }
        if pipeline.buffered_posts() >= flush_rows {
            pipeline.run_batch();
            pipeline.flush()?;
        }
        if summary.lines % 1024 == 0 {
            progress.set_position(bytes.min(size));
            progress.set_message(format!("{} posts", summary.posts));
        }
    }
    pipeline.run_batch();
    pipeline.flush()?;
    summary.duplicates = pipeline.duplicates();
    summary.posts -= summary.duplicates;
    dead_letters.flush()?;
    progress.finish_and_clear();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}
