//! The demo sample's links do not hang on a rounding difference.
//!
//! Its posts are run through the detector with the shipped model's embeddings, then again with
//! every vector nudged off its place by far more than any processor moves it (the shipped fp32
//! model's vectors agree to 1.3e-7 in cosine between AVX-512 VNNI and AVX2 kernels;
//! `docs/semantic-linking.md`, "The same links on every processor"). Every edge must stay as it
//! was, so no test that replays the sample asserts a decision that sits near a boundary. The
//! boundaries themselves are tested on evidence given directly, in the detector's unit tests.

mod common;

use echotrace::embed::Embedder;
use echotrace_core::detector::{Detector, DetectorConfig};
use echotrace_core::link::semantic::TextEmbedding;
use echotrace_core::post::Post;
use echotrace_core::records::EdgeKind;
use std::collections::{BTreeSet, HashMap};

/// One edge as the graph keeps it: child, parent and kind.
type Edge = (String, String, EdgeKind);

/// Runs the sample through a detector; `perturb` rewrites each embedding before it is used.
/// Returns the edges and the smallest lead of an accepted semantic edge over its model's minimum,
/// in log-odds (a lead of 0.25 is about 0.05 in cosine at the shipped weights).
fn link_sample(
    embeddings: &mut HashMap<u64, TextEmbedding>,
    embedder: &mut Embedder,
    perturb: impl Fn(u64, &TextEmbedding) -> TextEmbedding,
) -> (BTreeSet<Edge>, f32) {
    let config = DetectorConfig::default();
    let logit = common::log_odds;
    let (summary_min, paraphrase_min) =
        (logit(config.semantic.summary.min_probability), logit(config.semantic.paraphrase.min_probability));
    let mut detector = Detector::new(config);
    let mut edges = BTreeSet::new();
    let mut smallest_lead = f32::MAX;
    for line in common::SAMPLE.lines() {
        let post = detector.preparer().prepare(Post::from_json(line.as_bytes()).expect("the sample is valid"));
        let embedding = detector.embedding_key(&post).map(|key| {
            let exact =
                embeddings.entry(key).or_insert_with(|| embedder.embed(&[&post.post.text]).expect("embeds").remove(0));
            perturb(key, exact)
        });
        let Some(detection) = detector.process_prepared(post, embedding.as_ref(), None) else { continue };
        for edge in &detection.edges {
            if let Some(evidence) = &edge.semantic {
                let minimum = if edge.kind == EdgeKind::Summary { summary_min } else { paraphrase_min };
                let weakest = evidence.origin_score.map_or(evidence.score, |origin| origin.min(evidence.score));
                let lead = logit(weakest) - minimum;
                smallest_lead = smallest_lead.min(lead);
            }
            edges.insert((edge.child_id.clone(), edge.parent_id.clone(), edge.kind));
        }
    }
    (edges, smallest_lead)
}

#[test]
fn the_samples_links_survive_nudges_far_larger_than_any_processors() {
    let Some(mut embedder) = common::shipped_embedder() else { return };
    let mut embeddings = HashMap::new();
    let (exact, smallest_lead) = link_sample(&mut embeddings, &mut embedder, |_, embedding| embedding.clone());

    // The relay of bot summaries is linked by meaning alone, with room to spare.
    let semantic: Vec<&Edge> =
        exact.iter().filter(|(_, _, kind)| matches!(kind, EdgeKind::Summary | EdgeKind::Paraphrase)).collect();
    assert!(semantic.iter().filter(|(_, _, kind)| *kind == EdgeKind::Summary).count() >= 2, "{semantic:?}");
    assert!(semantic.len() >= 5, "all five bot summaries: {semantic:?}");
    assert!(smallest_lead >= 0.25, "a semantic edge passes its model by only {smallest_lead} in log-odds");

    // Cosine 0.995 to the original, a distance of 0.1: some 40,000 times the largest a processor
    // moved an fp32 vector (2.5e-6 at most, 384 components 1.3e-7 apart), and as far as the int8
    // model shipped before moved many vectors between processors.
    for seed in 1..=3 {
        let (moved, _) = link_sample(&mut embeddings, &mut embedder, |key, embedding| embedding.nudged(0.1, seed, key));
        let appeared: Vec<_> = moved.difference(&exact).collect();
        let vanished: Vec<_> = exact.difference(&moved).collect();
        assert!(appeared.is_empty() && vanished.is_empty(), "seed {seed}: +{appeared:?} -{vanished:?}");
    }
}
