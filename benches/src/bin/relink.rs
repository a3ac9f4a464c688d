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

use anyhow::Context;
use echotrace::embed::{EmbedConfig, Embedder, Encoder};
use echotrace_core::detector::{Detector, SemanticChoice};
use echotrace_core::link::semantic::{SemanticEvidence, TextEmbedding};
use echotrace_core::post::Post;
use std::collections::HashMap;
use std::io::{BufRead, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Embeddings by embedding key, read from and appended to one cache file.
struct EmbeddingCache {
    path: PathBuf,
    vectors: HashMap<u64, TextEmbedding>,
}

impl EmbeddingCache {
    /// Reads the cache of `model` in `dir`, empty if there is none yet.
    fn open(dir: &Path, model: &str) -> anyhow::Result<EmbeddingCache> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{model}.embeddings"));
        let mut vectors = HashMap::new();
        if let Ok(bytes) = std::fs::read(&path) {
            let mut reader = bytes.as_slice();
            // Records: key u64, tokens u32, dimension u32, values u32, then the f32 values.
            while !reader.is_empty() {
                let mut header = [0u8; 20];
                reader.read_exact(&mut header).context("truncated embedding cache")?;
                let key = u64::from_le_bytes(header[0..8].try_into()?);
                let tokens = u32::from_le_bytes(header[8..12].try_into()?);
                let dimension = u32::from_le_bytes(header[12..16].try_into()?) as usize;
                let values = u32::from_le_bytes(header[16..20].try_into()?) as usize;
                let mut raw = vec![0u8; values * 4];
                reader.read_exact(&mut raw).context("truncated embedding cache")?;
                let vectors_of = raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")));
                vectors.insert(key, TextEmbedding { vectors: vectors_of.collect(), dimension, tokens });
            }
        }
        Ok(EmbeddingCache { path, vectors })
    }

    /// Appends new embeddings to the file.
    fn append(&mut self, new: Vec<(u64, TextEmbedding)>) -> anyhow::Result<()> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        let mut out = BufWriter::new(file);
        for (key, embedding) in new {
            out.write_all(&key.to_le_bytes())?;
            out.write_all(&embedding.tokens.to_le_bytes())?;
            out.write_all(&(embedding.dimension as u32).to_le_bytes())?;
            out.write_all(&(embedding.vectors.len() as u32).to_le_bytes())?;
            for value in &embedding.vectors {
                out.write_all(&value.to_le_bytes())?;
            }
            self.vectors.insert(key, embedding);
        }
        out.flush()?;
        Ok(())
    }
}

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

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut input, mut cache_dir, mut config_file, mut links_out, mut evidence_out) = (None, None, None, None, None);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--cache" => cache_dir = Some(PathBuf::from(value("--cache")?)),
            "--config" => config_file = Some(PathBuf::from(value("--config")?)),
            "--links" => links_out = Some(PathBuf::from(value("--links")?)),
            "--evidence" => evidence_out = Some(PathBuf::from(value("--evidence")?)),
            path => input = Some(PathBuf::from(path)),
        }
    }
    let input = input.context(
        "usage: relink STREAM.jsonl --cache DIR [--config echotrace.toml] [--links OUT.tsv] [--evidence OUT.tsv]",
    )?;
    let cache_dir = cache_dir.context("--cache DIR is required")?;
    let config = echotrace::config::Config::load(config_file.as_deref())?;
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
    let model = match config.embed.encoder {
        Encoder::Static => "static".to_owned(),
        Encoder::Transformer => config.embed.model_file.trim_end_matches(".onnx").to_owned(),
    };
    let mut cache = EmbeddingCache::open(&cache_dir, &format!("{model}-{}", config.embed.chunk_tokens))?;
    let (mut embedded_posts, mut embedded_now) = (0usize, 0usize);
    let mut embedder: Option<Embedder> = None;
    let embed_config = EmbedConfig { threads: 2, ..config.embed.clone() };

    let mut detector = Detector::new(config.detector.clone());
    let mut links = Vec::with_capacity(posts.len());
    let mut evidence_rows = Vec::new();
    let started = std::time::Instant::now();
    for batch in posts.chunks(32) {
        let keys: Vec<Option<u64>> = batch.iter().map(|post| detector.embedding_key(post)).collect();
        let missing: Vec<(u64, &str)> = keys
            .iter()
            .zip(batch)
            .filter_map(|(key, post)| {
                key.filter(|key| !cache.vectors.contains_key(key)).map(|key| (key, post.text.as_str()))
            })
            .collect();
        embedded_posts += keys.iter().flatten().count();
        embedded_now += missing.len();
        if !missing.is_empty() {
            let embedder = match &mut embedder {
                Some(embedder) => embedder,
                None => embedder.insert(Embedder::new(&embed_config)?),
            };
            let texts: Vec<&str> = missing.iter().map(|(_, text)| *text).collect();
            let embedded = embedder.embed(&texts)?;
            cache.append(missing.iter().map(|(key, _)| *key).zip(embedded).collect())?;
        }
        for (post, key) in batch.iter().zip(keys) {
            let embedding = key.and_then(|key| cache.vectors.get(&key));
            if evidence_out.is_some()
                && let Some(embedding) = embedding
                && let Some(choice) = detector.explain_semantic(post, embedding)
            {
                evidence_rows.push(evidence_row(&detector, post, &choice));
            }
            if let Some(detection) = detector.process_embedded(post.clone(), embedding) {
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
    if let Some(path) = evidence_out {
        let mut out = BufWriter::new(std::fs::File::create(&path)?);
        writeln!(out, "{EVIDENCE_COLUMNS}")?;
        for line in evidence_rows {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}
