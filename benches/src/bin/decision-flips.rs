//! How many linking decisions a processor's rounding could flip on a stream.
//!
//! ```sh
//! export ORT_DYLIB_PATH=$(scripts/onnxruntime-library)
//! cargo run -p echotrace-benches --bin decision-flips -- ../shared/data/summaries_cnn_dm.jsonl \
//!     [--nudge 0.000001,0.0058,0.051,0.155,0.28] [--seeds 3]
//! ```
//!
//! The stream is linked once with the shipped model's embeddings, in the replay's batches of 32,
//! then again for each nudge size and seed with every chunk vector moved by that size at right
//! angles, in a pseudo-random direction ([`TextEmbedding::nudged`]; cosine to the original
//! 1 / sqrt(1 + size²)). Lines that are not valid posts are counted and left out, as the replay
//! dead-letters them. It prints, per size, how many posts got another parent or edge kind.
//! The default sizes match the cross-kernel drift that `models/all-MiniLM-L6-v2/measure-kernels`
//! measured: 1e-6 the shipped fp32 model's (components differ by at most 1.3e-7), 0.0058 and 0.051
//! the int8 per-token variant's mean and worst (1 - cosine 1.7e-5 and 1.3e-3), 0.155 and 0.28 the
//! int8 model shipped before (0.012 and 0.038). A processor moves vectors in directions of its own,
//! not at random, so these are estimates of the flip rate, not observations of it.

use anyhow::Context;
use echotrace::embed::{EmbedConfig, Embedder};
use echotrace_core::detector::{Detector, DetectorConfig};
use echotrace_core::link::semantic::TextEmbedding;
use echotrace_core::post::Post;
use echotrace_core::prepare::PreparedPost;
use echotrace_core::records::EdgeKind;
use std::collections::HashMap;
use std::io::BufRead;

/// Each post's primary parent and edge kind, in stream order.
type Links = Vec<(Option<String>, Option<EdgeKind>)>;

/// Links `posts` in batches of 32 as the replay does; `embedding` gives the vectors of a batch's
/// texts by their embedding keys.
fn link(
    posts: &[Post],
    mut embedding: impl FnMut(&[(u64, &str)]) -> anyhow::Result<HashMap<u64, TextEmbedding>>,
) -> anyhow::Result<Links> {
    let mut detector = Detector::new(DetectorConfig::default());
    let mut links = Vec::with_capacity(posts.len());
    let preparer = detector.preparer();
    for batch in posts.chunks(32) {
        let batch: Vec<PreparedPost> = batch.iter().map(|post| preparer.prepare(post.clone())).collect();
        let keys: Vec<Option<u64>> = batch.iter().map(|prepared| detector.embedding_key(prepared)).collect();
        let wanted: Vec<(u64, &str)> = keys
            .iter()
            .zip(&batch)
            .filter_map(|(key, prepared)| key.map(|key| (key, prepared.post.text.as_str())))
            .collect();
        let vectors = embedding(&wanted)?;
        for (prepared, key) in batch.into_iter().zip(keys) {
            let detection = detector.process_prepared(prepared, key.and_then(|key| vectors.get(&key)), None);
            links.push(detection.map_or((None, None), |d| (d.post.parent_id, d.post.parent_kind)));
        }
    }
    Ok(links)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut input, mut sizes, mut seeds) = (None, vec![0.000001f32, 0.0058, 0.051, 0.155, 0.28], 3u64);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--nudge" => {
                sizes = args.next().context("--nudge SIZES")?.split(',').map(str::parse).collect::<Result<_, _>>()?
            }
            "--seeds" => seeds = args.next().context("--seeds N")?.parse()?,
            path => input = Some(path.to_owned()),
        }
    }
    let input = input.context("usage: decision-flips STREAM.jsonl [--nudge SIZES] [--seeds N]")?;
    let (mut posts, mut invalid) = (Vec::new(), 0usize);
    for line in std::io::BufReader::new(std::fs::File::open(&input).with_context(|| input.clone())?).lines() {
        match Post::from_json(line?.as_bytes()) {
            Ok(post) => posts.push(post),
            Err(_) => invalid += 1,
        }
    }
    let config = EmbedConfig { threads: 2, ..EmbedConfig::default() };
    let mut embedder = Embedder::new(&config)?;
    let mut exact: HashMap<u64, TextEmbedding> = HashMap::new();
    let reference = link(&posts, |wanted| {
        let missing: Vec<&(u64, &str)> = wanted.iter().filter(|(key, _)| !exact.contains_key(key)).collect();
        let texts: Vec<&str> = missing.iter().map(|(_, text)| *text).collect();
        for ((key, _), embedding) in missing.iter().zip(embedder.embed(&texts)?) {
            exact.insert(*key, embedding);
        }
        Ok(wanted.iter().map(|(key, _)| (*key, exact[key].clone())).collect())
    })?;
    let semantic = reference.iter().filter(|(_, kind)| matches!(kind, Some(EdgeKind::Summary | EdgeKind::Paraphrase)));
    println!(
        "{input}: {} posts ({invalid} invalid lines left out), {} embedded texts, {} semantic edges",
        posts.len(),
        exact.len(),
        semantic.count()
    );
    println!(
        "| nudge | cosine to the original | posts with another parent or kind, per seed | share of embedded texts |"
    );
    println!("|---:|---:|---|---:|");
    for size in sizes {
        let mut flips = Vec::new();
        for seed in 1..=seeds {
            let moved = link(&posts, |wanted| {
                Ok(wanted.iter().map(|(key, _)| (*key, exact[key].nudged(size, seed, *key))).collect())
            })?;
            flips.push(moved.iter().zip(&reference).filter(|(a, b)| a != b).count());
        }
        let mean = flips.iter().sum::<usize>() as f64 / flips.len() as f64;
        println!(
            "| {size} | {:.6} | {} | {:.4}% |",
            1.0 / (1.0 + (size as f64).powi(2)).sqrt(),
            flips.iter().map(usize::to_string).collect::<Vec<_>>().join(", "),
            100.0 * mean / exact.len().max(1) as f64
        );
    }
    Ok(())
}
