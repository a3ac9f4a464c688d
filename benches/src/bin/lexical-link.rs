//! The lexical path as one whole process, for `benches/compare.py` to time against Python's
//! `datasketch` and `simhash` doing the same job on the same stream.
//!
//! ```text
//! cargo build --release -p echotrace-benches --bin lexical-link
//! target/release/lexical-link --input STREAM.jsonl --pairs PAIRS.tsv [--method index|exhaustive|detector] [--threads 2 [--share-stateless]]
//! ```
//!
//! Each line of the stream is decoded (`Post::from_json_at` against a fixed clock: the dev streams are
//! dated up to 2028), its text normalized and fingerprinted (simhash and MinHash signature), looked
//! up against every earlier post, then added. A pair is written (`child<TAB>parent`, 0-based line
//! numbers) for every earlier post that is a near-duplicate by the detector's own rule: simhash
//! distance at most `max_hamming`, or an estimated Jaccard of at least `min_jaccard` with a simhash
//! distance at most `max_similar_hamming`. Nothing leaves the window: the stream is the window.
//!
//! - `index` (default): `NearDupIndex` and `MinHashIndex`, the indexes the detector links with.
//!   With `--threads 2` the process is the staged mode in small: one thread decodes, normalizes and
//!   fingerprints (the stateless stage), the other looks up and inserts (the linking stage), with
//!   batches of 1,024 posts passed between them through a bounded channel. The stateless work is
//!   about three times the linking (perf), so there the linking thread waits most of the time;
//!   with `--share-stateless` both threads prepare each batch, in chunks of 64 lines taken in
//!   turn, while one of them first links the batch before, so neither core waits on the other.
//! - `exhaustive`: the same rule checked against every earlier post, the baseline that finds every
//!   pair the rule admits (the index's recall is measured against it).
//! - `detector`: the whole `Detector` with semantic linking off (URLs, explicit ids, the cascade
//!   graph included); a pair for each near-duplicate edge it writes, which is at most one per
//!   cascade the post joins, so it finds fewer pairs than the indexes do.
//!
//! It prints posts, pairs and seconds on stdout as one JSON object.

use anyhow::Context;
use chrono::{DateTime, Utc};
use echotrace_core::detector::{Detector, DetectorConfig};
use echotrace_core::link::minhash::{self, MinHashIndex, Signature, estimated_jaccard};
use echotrace_core::link::near_dup::NearDupIndex;
use echotrace_core::post::Post;
use echotrace_core::prepare::fingerprint::Features;
use echotrace_core::prepare::normalize::normalize;
use echotrace_core::records::EdgeKind;
use std::collections::HashMap;
use std::io::{BufRead, BufWriter, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// The "now" posts are validated against: 2100-01-01T00:00:00Z, after every post of the dev streams.
const VALIDATION_TIME: i64 = 4_102_444_800;

const USAGE: &str = "usage: lexical-link --input STREAM.jsonl --pairs PAIRS.tsv [--method index|exhaustive|detector] [--threads 1|2 [--share-stateless]]";
/// Posts per batch handed from the stateless thread to the linking thread (`--threads 2`).
const BATCH: usize = 1024;
/// Lines per share of a batch's stateless work that a thread takes at a time (`--share-stateless`).
const SHARE: usize = 64;

/// How the near-duplicates of a post are found.
#[derive(Clone, Copy, PartialEq)]
enum Method {
    /// echotrace's two indexes.
    Index,
    /// Every earlier post checked by the same rule.
    Exhaustive,
    /// The whole detector, semantic linking off.
    Detector,
}

/// What the stateless stage hands the linking stage for one post with enough features (and what
/// the exhaustive scan keeps of every earlier post).
struct Prepared {
    line: u64,
    simhash: u64,
    signature: Option<Signature>,
}

/// Decodes, normalizes and fingerprints one line; `None` for an invalid post or too few features.
fn prepare(line_number: u64, line: &[u8], now: DateTime<Utc>, config: &DetectorConfig) -> Option<Prepared> {
    let post = Post::from_json_at(line, now).ok()?;
    let normalized = normalize(&post.text);
    let features = Features::of(&normalized);
    let print = features.fingerprint();
    (print.features >= config.min_features).then(|| Prepared {
        line: line_number,
        simhash: print.simhash,
        signature: minhash::signature_of(&features),
    })
}

/// The linking stage's state: both indexes.
struct Indexes {
    near_dups: NearDupIndex,
    similar_sets: MinHashIndex,
}

impl Indexes {
    /// Empty indexes with the detector's settings.
    fn new(config: &DetectorConfig) -> Indexes {
        Indexes { near_dups: NearDupIndex::new(config.max_hamming), similar_sets: MinHashIndex::new() }
    }

    /// Links one post ([`Indexes::link`]) and writes its pairs; returns how many.
    fn link_and_write(
        &mut self,
        post: Prepared,
        config: &DetectorConfig,
        parents: &mut Vec<u64>,
        pairs: &mut impl Write,
    ) -> std::io::Result<u64> {
        let child = post.line;
        self.link(post, config, parents);
        let written = write_pairs(pairs, child, parents);
        parents.clear();
        written
    }

    /// Looks one post up (its earlier near-duplicates into `parents`), then adds it.
    fn link(&mut self, post: Prepared, config: &DetectorConfig, parents: &mut Vec<u64>) {
        self.near_dups.for_each_near(post.simhash, |m| parents.push(m.payload));
        if let Some(signature) = &post.signature {
            let similar = self.similar_sets.similar(signature, config.min_jaccard);
            parents.extend(
                similar
                    .into_iter()
                    .filter(|m| (m.simhash ^ post.simhash).count_ones() <= config.max_similar_hamming)
                    .map(|m| m.payload),
            );
        }
        self.near_dups.insert(post.simhash, post.line, 0);
        if let Some(signature) = post.signature {
            self.similar_sets.insert(signature, post.simhash, post.line, 0);
        }
    }
}

/// Writes a post's pairs, deduplicated; returns how many.
fn write_pairs(pairs: &mut impl Write, child: u64, parents: &mut Vec<u64>) -> std::io::Result<u64> {
    parents.sort_unstable();
    parents.dedup();
    for parent in parents.iter() {
        writeln!(pairs, "{child}\t{parent}")?;
    }
    Ok(parents.len() as u64)
}

fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let (mut input, mut pairs_path, mut method, mut threads, mut share) = (None, None, Method::Index, 1, false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--input" => input = args.next(),
            "--pairs" => pairs_path = args.next(),
            "--method" => {
                method = match args.next().as_deref() {
                    Some("index") => Method::Index,
                    Some("exhaustive") => Method::Exhaustive,
                    Some("detector") => Method::Detector,
                    _ => anyhow::bail!(USAGE),
                }
            }
            "--threads" => threads = args.next().context(USAGE)?.parse::<usize>().context(USAGE)?,
            "--share-stateless" => share = true,
            _ => anyhow::bail!(USAGE),
        }
    }
    let (input, pairs_path) = (input.context(USAGE)?, pairs_path.context(USAGE)?);
    anyhow::ensure!(threads == 1 || (threads == 2 && method == Method::Index), "--threads 2 is for --method index");
    anyhow::ensure!(!share || threads == 2, "--share-stateless is for --threads 2");
    let now = DateTime::from_timestamp(VALIDATION_TIME, 0).context("validation time out of range")?;
    let reader = std::io::BufReader::new(std::fs::File::open(&input).with_context(|| format!("opening {input}"))?);
    let mut pairs =
        BufWriter::new(std::fs::File::create(&pairs_path).with_context(|| format!("creating {pairs_path}"))?);
    let (posts, found) = match (method, threads) {
        (Method::Index, 1) => link_indexed(reader, now, &mut pairs)?,
        (Method::Index, _) if share => link_sharing_stateless(reader, now, &mut pairs)?,
        (Method::Index, _) => link_staged(reader, now, &mut pairs)?,
        (Method::Exhaustive, _) => link_exhaustively(reader, now, &mut pairs)?,
        (Method::Detector, _) => link_by_detector(reader, now, &mut pairs)?,
    };
    pairs.flush()?;
    let seconds = started.elapsed().as_secs_f64();
    println!(r#"{{"posts": {posts}, "pairs": {found}, "seconds": {seconds:.3}}}"#);
    Ok(())
}

/// The indexes on one thread; returns posts read and pairs written.
fn link_indexed(reader: impl BufRead, now: DateTime<Utc>, pairs: &mut impl Write) -> anyhow::Result<(u64, u64)> {
    let config = DetectorConfig::default();
    let mut indexes = Indexes::new(&config);
    let (mut lines, mut found, mut parents) = (0u64, 0u64, Vec::new());
    for line in reader.split(b'\n') {
        let line = line?;
        if let Some(post) = prepare(lines, &line, now, &config) {
            found += indexes.link_and_write(post, &config, &mut parents, pairs)?;
        }
        lines += 1;
    }
    Ok((lines, found))
}

/// The indexes on this thread, fed batches of prepared posts by a second thread.
fn link_staged(reader: impl BufRead + Send, now: DateTime<Utc>, pairs: &mut impl Write) -> anyhow::Result<(u64, u64)> {
    let config = DetectorConfig::default();
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<Prepared>>(4);
    std::thread::scope(|scope| {
        let stateless = scope.spawn(|| -> anyhow::Result<u64> {
            let (mut lines, mut batch) = (0u64, Vec::with_capacity(BATCH));
            for line in reader.split(b'\n') {
                batch.extend(prepare(lines, &line?, now, &config));
                lines += 1;
                if batch.len() == BATCH {
                    sender.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))?;
                }
            }
            sender.send(batch)?;
            drop(sender);
            Ok(lines)
        });
        let mut indexes = Indexes::new(&config);
        let (mut found, mut parents) = (0u64, Vec::new());
        for batch in receiver {
            for post in batch {
                found += indexes.link_and_write(post, &config, &mut parents, pairs)?;
            }
        }
        let lines = stateless.join().map_err(|_| anyhow::anyhow!("the stateless thread panicked"))??;
        Ok((lines, found))
    })
}

/// The indexes on this thread, which links each batch while a second thread prepares the next;
/// having linked, this thread prepares what is left of the next batch beside the other.
fn link_sharing_stateless(
    mut reader: impl BufRead,
    now: DateTime<Utc>,
    pairs: &mut impl Write,
) -> anyhow::Result<(u64, u64)> {
    let config = DetectorConfig::default();
    let mut indexes = Indexes::new(&config);
    let (mut lines, mut found, mut parents) = (0u64, 0u64, Vec::new());
    let mut prepared: Vec<Prepared> = Vec::new();
    loop {
        let batch: Vec<(u64, Vec<u8>)> = (&mut reader)
            .split(b'\n')
            .take(BATCH)
            .zip(lines..)
            .map(|(line, number)| line.map(|line| (number, line)))
            .collect::<std::io::Result<_>>()?;
        lines += batch.len() as u64;
        if batch.is_empty() && prepared.is_empty() {
            return Ok((lines, found));
        }
        let next_share = AtomicUsize::new(0);
        let mut shares = std::thread::scope(|scope| -> anyhow::Result<Vec<(usize, Vec<Prepared>)>> {
            let helper = scope.spawn(|| prepare_shares(&batch, &next_share, now, &config));
            for post in prepared.drain(..) {
                found += indexes.link_and_write(post, &config, &mut parents, pairs)?;
            }
            let mut shares = prepare_shares(&batch, &next_share, now, &config);
            shares.extend(helper.join().map_err(|_| anyhow::anyhow!("the helper thread panicked"))?);
            Ok(shares)
        })?;
        shares.sort_unstable_by_key(|(share, _)| *share);
        prepared = shares.into_iter().flat_map(|(_, posts)| posts).collect();
    }
}

/// Prepares shares of `batch` ([`SHARE`] lines each) until none is left, taking the next one from
/// `next_share`; returns each share's number with its posts.
fn prepare_shares(
    batch: &[(u64, Vec<u8>)],
    next_share: &AtomicUsize,
    now: DateTime<Utc>,
    config: &DetectorConfig,
) -> Vec<(usize, Vec<Prepared>)> {
    let mut done = Vec::new();
    loop {
        let share = next_share.fetch_add(1, Ordering::Relaxed);
        let Some(lines) = batch.get(share * SHARE..).filter(|rest| !rest.is_empty()) else { return done };
        let lines = &lines[..lines.len().min(SHARE)];
        done.push((share, lines.iter().filter_map(|(number, line)| prepare(*number, line, now, config)).collect()));
    }
}

/// The detector's rule checked against every earlier post.
fn link_exhaustively(reader: impl BufRead, now: DateTime<Utc>, pairs: &mut impl Write) -> anyhow::Result<(u64, u64)> {
    let config = DetectorConfig::default();
    let mut scanned: Vec<Prepared> = Vec::new();
    let (mut lines, mut found, mut parents) = (0u64, 0u64, Vec::new());
    for line in reader.split(b'\n') {
        let line = line?;
        if let Some(post) = prepare(lines, &line, now, &config) {
            for stored in &scanned {
                let distance = (stored.simhash ^ post.simhash).count_ones();
                let similar = || match (&post.signature, &stored.signature) {
                    (Some(a), Some(b)) => {
                        distance <= config.max_similar_hamming && estimated_jaccard(a, b) >= config.min_jaccard
                    }
                    _ => false,
                };
                if distance <= config.max_hamming || similar() {
                    parents.push(stored.line);
                }
            }
            found += write_pairs(pairs, post.line, &mut parents)?;
            parents.clear();
            scanned.push(post);
        }
        lines += 1;
    }
    Ok((lines, found))
}

/// The whole detector, semantic linking off: a pair for each near-duplicate edge from the new post.
fn link_by_detector(reader: impl BufRead, now: DateTime<Utc>, pairs: &mut impl Write) -> anyhow::Result<(u64, u64)> {
    let config = DetectorConfig::default();
    let mut detector = Detector::new(DetectorConfig {
        semantic: echotrace_core::link::semantic::SemanticConfig { enabled: false, ..Default::default() },
        ..config
    });
    let mut line_of_post: HashMap<String, u64> = HashMap::new();
    let (mut lines, mut found, mut parents) = (0u64, 0u64, Vec::new());
    for line in reader.split(b'\n') {
        let line = line?;
        let line_number = lines;
        lines += 1;
        let Ok(post) = Post::from_json_at(&line, now) else { continue };
        line_of_post.insert(post.id.clone(), line_number);
        let Some(detection) = detector.process(post) else { continue };
        for edge in detection.edges.iter().filter(|edge| edge.kind == EdgeKind::NearDuplicate) {
            // A bridge may point from a later post to this one; only this post's parents count.
            if line_of_post.get(&edge.child_id) == Some(&line_number)
                && let Some(&parent) = line_of_post.get(&edge.parent_id)
            {
                parents.push(parent);
            }
        }
        found += write_pairs(pairs, line_number, &mut parents)?;
        parents.clear();
    }
    Ok((lines, found))
}
