//! `echotrace replay`: the same pipeline over a file of posts (JSONL, optionally gzipped), for
//! backfills and evaluation. Bad lines are written to `OUT/dead_letters.jsonl` with their reason,
//! exactly as the consumer would dead-letter them, and counted.
//!
//! Lines are read up to the size of the largest message the consumer takes; a longer line is
//! skipped to its end without being held in memory, and dead-lettered as too large with its
//! length, so a file with a gigabyte on one line costs no more memory than a small one.
//!
//! One rule differs from the live consumer: a file is judged by its own content, not by today's
//! clock, so `created_at` may lie anywhere before [`REPLAY_LATEST`] (a backfill of data dated ahead of
//! the machine's clock, or a synthetic stream, replays whole; the year 3000 is still rejected).

use crate::pipeline::Pipeline;
use chrono::{DateTime, Utc};
use echotrace_core::post::{InvalidPost, Post};
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
    /// The process's peak resident memory so far, in bytes, where the system says (Linux).
    pub peak_rss_bytes: Option<u64>,
}

/// The longest line read whole: the largest message the consumer takes.
const MAX_LINE_BYTES: usize = echotrace_core::post::MAX_MESSAGE_BYTES;

/// One line of the input: its bytes, or only its length when it is longer than [`MAX_LINE_BYTES`].
enum Line {
    Whole(Vec<u8>),
    TooLong(u64),
}

/// Reads the next line (without its newline), holding at most [`MAX_LINE_BYTES`] of it; `None` at
/// the end of the input.
fn next_line(reader: &mut dyn BufRead, buffer: &mut Vec<u8>) -> std::io::Result<Option<Line>> {
    buffer.clear();
    let read = std::io::Read::take(&mut *reader, MAX_LINE_BYTES as u64 + 1).read_until(b'\n', buffer)?;
    if read == 0 {
        return Ok(None);
    }
    if buffer.last() == Some(&b'\n') {
        buffer.pop();
        return Ok(Some(Line::Whole(std::mem::take(buffer))));
    }
    if buffer.len() <= MAX_LINE_BYTES {
        return Ok(Some(Line::Whole(std::mem::take(buffer)))); // the last line, without a newline
    }
    // Too long: skip to the end of the line, keeping nothing.
    let mut length = buffer.len() as u64;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            break;
        }
        match available.iter().position(|b| *b == b'\n') {
            Some(at) => {
                length += at as u64;
                reader.consume(at + 1);
                break;
            }
            None => {
                let skipped = available.len();
                length += skipped as u64;
                reader.consume(skipped);
            }
        }
    }
    Ok(Some(Line::TooLong(length)))
}

/// The process's peak resident memory (`VmHWM` in `/proc/self/status`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
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
    let mut reader = reader;
    let mut buffer = Vec::new();
    let mut number = 0usize;
    while let Some(line) = next_line(&mut reader, &mut buffer)? {
        number += 1;
        summary.lines += 1;
        let (decoded, line) = match line {
            Line::Whole(line) => {
                bytes += line.len() as u64 + 1;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                (Post::from_json_at(&line, latest_now), line)
            }
            Line::TooLong(length) => {
                bytes += length + 1;
                let error = InvalidPost::TooLarge { field: "message", size: length as usize, limit: MAX_LINE_BYTES };
                (Err(error), Vec::new())
            }
        };
        match decoded {
            Ok(post) => {
                summary.posts += 1;
                pipeline.submit(post, None);
            }
            Err(error) => {
                summary.dead_letters += 1;
                let record = serde_json::json!({
                    "line": number,
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
    summary.peak_rss_bytes = peak_rss_bytes();
    Ok(summary)
}
