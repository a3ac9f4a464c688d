//! Links a dev stream with a given detector configuration in seconds, for fitting semantic linking.
//!
//! ```sh
//! export ORT_DYLIB_PATH=$(scripts/onnxruntime-library)
//! cargo run -p echotrace-benches --bin relink -- ../shared/data/summaries_cnn_dm.jsonl \
//!     --cache /tmp/echotrace-embeddings [--config candidate.toml] \
//!     [--links links.tsv] [--evidence evidence.tsv]
//! ```
//!
//! The model's embeddings do not depend on the linking rules, so each text is embedded once and kept
//! in `--cache` (one file per model, keyed by the detector's embedding key, a hash of the
//! normalized text, so streams that share texts share their embeddings); later runs
//! read them back and relink the whole stream in seconds instead of minutes. `--config` is an
//! `echotrace.toml` (its `[detector]` and `[embed]` sections are used, so `embed.encoder` picks the
//! encoder), so a fitted model is tried exactly as it would ship. Posts go through the detector in the replay's batches of 32.
//!
//! `--links` writes each post's primary parent (`post_id`, `parent_id`, `parent_kind`), which
//! `benches/split_scores.py` scores like a replay's Parquet output. `--evidence` writes, for every
//! post that reached the semantic stage, its best candidate by meaning and the evidence features
//! against it and against its chain's origin, which `benches/fit_semantic.py` fits on.
//! `--candidates` writes every ranked candidate of those posts with its evidence features and
//! cascade, which `benches/candidate_recall.py` reads to count how often the source is among them.

use anyhow::Context;
use echotrace::embed::EmbedConfig;
use echotrace_benches::embedding_cache::DiskEmbeddingCache;
use echotrace_core::detector::{Detector, RankedCandidate, SemanticChoice};
use echotrace_core::link::semantic::{SemanticEvidence, TextEmbedding};
use echotrace_core::post::Post;
use echotrace_core::prepare::PreparedPost;
use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

/// One evidence row's features, tab-separated, in [`EVIDENCE_COLUMNS`] order after the ids.
fn features(evidence: &SemanticEvidence) -> String {
    format!(
        "{:.6}\t{:.6}\t{:.6}\t{:.6}\t{:.6}\t{:.6}",
        evidence.cosine,
        evidence.word_overlap,
        evidence.lead_cosine,
        evidence.margin,
        evidence.length_ratio,
        evidence.score
    )
}

/// The header of `--evidence`.
const EVIDENCE_COLUMNS: &str = "post_id\tcandidate_id\tkind\tlinks\t\
    cosine\tword_overlap\tlead_cosine\tmargin\tlength_ratio\tscore\t\
    time_delta_s\torigin_id\torigin_cosine\torigin_word_overlap\torigin_lead_cosine\torigin_margin\torigin_length_ratio\t\
    origin_score";

fn evidence_row(detector: &Detector, post: &Post, choice: &SemanticChoice) -> String {
    let id_of = |key| detector.graph().node(key).map_or("?".to_owned(), |node| node.post_id.to_string());
    let (origin_id, origin_features) = match &choice.origin {
        Some((key, evidence)) => (id_of(*key), features(evidence)),
        None => ("-".to_owned(), "\t".repeat(5)),
    };
    format!(
        "{}\t{}\t{}\t{}\t{}\t{:.1}\t{origin_id}\t{origin_features}",
        post.id,
        id_of(choice.parent),
        choice.kind.as_str(),
        u8::from(choice.links),
        features(&choice.evidence),
        (post.created_at.timestamp_millis() - choice.parent_time_ms) as f64 / 1000.0,
    )
}

/// The header of `--candidates`.
const CANDIDATE_COLUMNS: &str =
    "post_id\tposition\tcandidate_id\tcascade_id\trank\tcosine\tword_overlap\tlead_cosine\tlength_ratio";

fn candidate_rows(detector: &Detector, prepared: &PreparedPost, embedding: &TextEmbedding) -> Vec<String> {
    let id_of = |key| detector.graph().node(key).map_or("?".to_owned(), |node| node.post_id.to_string());
    let post = &prepared.post;
    detector
        .semantic_candidates(prepared, embedding)
        .into_iter()
        .enumerate()
        .map(|(position, RankedCandidate { rank, neighbour, cascade })| {
            let evidence = neighbour.evidence;
            format!(
                "{}\t{position}\t{}\t{}\t{rank:.6}\t{:.6}\t{:.6}\t{:.6}\t{:.6}",
                post.id,
                id_of(neighbour.key),
                cascade.map_or("-".to_owned(), id_of),
                evidence.cosine,
                evidence.word_overlap,
                evidence.lead_cosine,
                evidence.length_ratio
            )
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut input, mut cache_dir, mut config_file, mut links_out, mut evidence_out, mut candidates_out) =
        (None, None, None, None, None, None);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--cache" => cache_dir = Some(PathBuf::from(value("--cache")?)),
            "--config" => config_file = Some(PathBuf::from(value("--config")?)),
            "--links" => links_out = Some(PathBuf::from(value("--links")?)),
            "--evidence" => evidence_out = Some(PathBuf::from(value("--evidence")?)),
            "--candidates" => candidates_out = Some(PathBuf::from(value("--candidates")?)),
            path => input = Some(PathBuf::from(path)),
        }
    }
    let input = input.context(
        "usage: relink STREAM.jsonl --cache DIR [--config echotrace.toml] [--links OUT.tsv] [--evidence OUT.tsv] \
         [--candidates OUT.tsv]",
    )?;
    let cache_dir = cache_dir.context("--cache DIR is required")?;
    let config = echotrace::config::Config::load(config_file.as_deref().as_slice())?;
    // The dev streams are dated up to 2028: posts are validated against 2100-01-01, as the
    // replay-throughput bench does, instead of the wall clock.
    let validation_time = chrono::DateTime::from_timestamp(4_102_444_800, 0).context("validation time")?;
    let mut posts = Vec::new();
    let mut invalid = 0usize;
    let file = std::fs::File::open(&input).with_context(|| input.display().to_string())?;
    for line in std::io::BufReader::new(file).lines() {
        match Post::from_json_at(line?.as_bytes(), validation_time) {
            Ok(post) => posts.push(post),
            Err(_) => invalid += 1,
        }
    }
    let embed_config = EmbedConfig { threads: 2, ..config.embed.clone() };
    let mut cache = DiskEmbeddingCache::open(&cache_dir, &embed_config)?;
    let (mut embedded_posts, mut embedded_now) = (0usize, 0u64);

    let mut detector = Detector::new(config.detector.clone());
    let mut links = Vec::with_capacity(posts.len());
    let (mut evidence_rows, mut candidate_lines) = (Vec::new(), Vec::new());
    let started = std::time::Instant::now();
    let preparer = detector.preparer();
    for batch in posts.chunks(32) {
        let batch: Vec<PreparedPost> = batch.iter().map(|post| preparer.prepare(post.clone())).collect();
        let keys: Vec<(Option<u64>, &str)> =
            batch.iter().map(|prepared| (detector.embedding_key(prepared), prepared.post.text.as_str())).collect();
        embedded_posts += keys.iter().filter(|(key, _)| key.is_some()).count();
        embedded_now += cache.ensure(&keys)?;
        let keys: Vec<Option<u64>> = keys.into_iter().map(|(key, _)| key).collect();
        for (prepared, key) in batch.into_iter().zip(keys) {
            let embedding = key.and_then(|key| cache.get(key)).map(|embedding| embedding.as_ref());
            if evidence_out.is_some()
                && let Some(embedding) = embedding
                && let Some(choice) = detector.explain_semantic(&prepared, embedding)
            {
                evidence_rows.push(evidence_row(&detector, &prepared.post, &choice));
            }
            if candidates_out.is_some()
                && let Some(embedding) = embedding
            {
                candidate_lines.extend(candidate_rows(&detector, &prepared, embedding));
            }
            if let Some(detection) = detector.process_prepared(prepared, embedding, None) {
                let kind = detection.post.parent_kind.map_or("", |kind| kind.as_str());
                links.push(format!(
                    "{}\t{}\t{kind}",
                    detection.post.post_id,
                    detection.post.parent_id.as_deref().unwrap_or("")
                ));
            }
        }
    }
    eprintln!(
        "{}: {} posts ({invalid} invalid lines left out), {embedded_posts} embedded ({embedded_now} texts run through \
         the model, the rest from the cache), linked in {:.1} s",
        input.display(),
        posts.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = links_out {
        let mut out = BufWriter::new(std::fs::File::create(&path)?);
        writeln!(out, "post_id\tparent_id\tparent_kind")?;
        for line in links {
            writeln!(out, "{line}")?;
        }
    }
    if let Some(path) = candidates_out {
        let mut out = BufWriter::new(std::fs::File::create(&path)?);
        writeln!(out, "{CANDIDATE_COLUMNS}")?;
        for line in candidate_lines {
            writeln!(out, "{line}")?;
        }
    }
    if let Some(path) = evidence_out {
        let mut out = BufWriter::new(std::fs::File::create(&path)?);
        writeln!(out, "{EVIDENCE_COLUMNS}")?;
        for line in evidence_rows {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}
