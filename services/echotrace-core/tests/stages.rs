//! Every stage holds the contract of `echotrace_core::stage` over random streams: one output per
//! record in order, the same outputs and metrics however the stream is cut into batches and
//! however many threads take it, and a stage restored from its serialized state goes on as the
//! stage that wrote it.

mod common;

use common::{RULES, Spec, post, spec};
use echotrace_core::detector::{BatchPost, Detector, DetectorConfig};
use echotrace_core::link::lexical::LinkProbe;
use echotrace_core::link::lexical_shard::{ArrivedProbe, LexicalShard, LexicalShardConfig};
use echotrace_core::link::semantic::{SemanticConfig, TextEmbedding};
use echotrace_core::link::shard::LinkShard;
use echotrace_core::post::Post;
use echotrace_core::prepare::{PreparedPost, Preparer};
use echotrace_core::score::alerts::{ScoreConfig, Scorer};
use echotrace_core::score::features::PostSignals;
use echotrace_core::score::rules::RuleSet;
use echotrace_core::score::{Scored, ScorerConfig};
use echotrace_core::stage::Stage;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::fmt::Debug;
use std::num::NonZeroU32;

/// Runs `inputs` through stage `S` three ways and requires the same outputs and metrics from
/// each: in one batch on one thread; cut at `cut` into two batches on `threads` threads; and cut
/// there with the stage serialized, dropped and restored between the two.
fn holds_the_contract<'i, S: Stage>(
    config: &S::Config,
    inputs: &[S::Input<'i>],
    cut: usize,
    threads: usize,
) -> Result<(), TestCaseError>
where
    S::Input<'i>: Clone,
    S::Output: PartialEq + Debug,
    S::Metrics: PartialEq + Debug,
{
    let mut whole = S::empty(config);
    let expected = whole.process(inputs.to_vec(), 1);
    prop_assert_eq!(expected.len(), inputs.len(), "one output per record");

    let (first, rest) = inputs.split_at(cut);
    let mut batched = S::empty(config);
    let mut got = batched.process(first.to_vec(), threads);
    got.extend(batched.process(rest.to_vec(), threads));
    prop_assert_eq!(&got, &expected, "cut at {} on {} threads", cut, threads);
    prop_assert_eq!(batched.metrics(), whole.metrics());

    let mut before = S::empty(config);
    let mut got = before.process(first.to_vec(), threads);
    let bytes = postcard::to_stdvec(before.state()).expect("a state serializes");
    drop(before);
    let state = postcard::from_bytes(&bytes).expect("a serialized state reads back");
    let mut restored = S::restore(config, state);
    got.extend(restored.process(rest.to_vec(), threads));
    prop_assert_eq!(&got, &expected, "restored at {}", cut);
    prop_assert_eq!(restored.metrics(), whole.metrics());
    Ok(())
}

/// A detector whose window a two-hour stream evicts, with semantic linking on; its lexical window
/// whole or split into `link_shards`.
fn detector_config(link_shards: u32) -> DetectorConfig {
    DetectorConfig {
        window_secs: 1800,
        link_shards: NonZeroU32::new(link_shards).expect("at least one shard"),
        semantic: SemanticConfig { enabled: true, ..SemanticConfig::default() },
        ..DetectorConfig::default()
    }
}

/// [`detector_config`] with one lexical window and the semantic window split into `shards`, its
/// lexical candidates on and a bound on its posts that the stream reaches.
fn semantic_shards_config(shards: u32) -> DetectorConfig {
    let mut config = detector_config(1);
    config.semantic.shards = NonZeroU32::new(shards).expect("at least one shard");
    config.semantic.lexical_top_k = 3;
    config.semantic.max_window_posts = 12;
    config
}

/// A unit vector leaning towards one axis per story, nudged by the edit: the same story's posts
/// are close by meaning, others are not.
fn embedding(spec: &Spec) -> TextEmbedding {
    let lean = spec.sentence * 3;
    let vectors: Vec<f32> =
        (0..24).map(|axis| if axis == lean { 1.0 } else { 0.02 * ((axis + spec.edit) % 5) as f32 }).collect();
    let norm = vectors.iter().map(|v| v * v).sum::<f32>().sqrt();
    TextEmbedding { vectors: vectors.iter().map(|v| v / norm).collect(), dimension: 24, tokens: 14 }
}

/// The stream, prepared for `config`, with each post's embedding where it may be linked by meaning.
fn prepared_stream(specs: &[Spec], config: &DetectorConfig) -> Vec<(PreparedPost, Option<TextEmbedding>)> {
    let posts: Vec<Post> = specs.iter().enumerate().map(|(index, spec)| post(index, spec)).collect();
    let prepared = Preparer::new(config).prepare_all(posts, 1);
    prepared
        .into_iter()
        .zip(specs)
        .map(|(prepared, spec)| {
            let embedding = prepared.embedding_key.map(|_| embedding(spec));
            (prepared, embedding)
        })
        .collect()
}

/// The stream as the detector takes it in a batch, each post with its embedding and arrival.
fn batch_of(stream: &[(PreparedPost, Option<TextEmbedding>)]) -> Vec<BatchPost<'_>> {
    stream
        .iter()
        .enumerate()
        .map(|(index, (prepared, embedding))| BatchPost {
            prepared: prepared.clone(),
            embedding: embedding.as_ref(),
            arrived_at: arrival(index, prepared),
        })
        .collect()
}

/// When post `index` of the stream arrived: a few seconds after it was posted, or unknown (read
/// from a file) for every third post.
fn arrival(index: usize, prepared: &PreparedPost) -> Option<chrono::DateTime<chrono::Utc>> {
    (!index.is_multiple_of(3)).then(|| prepared.post.created_at + chrono::Duration::seconds((index % 7) as i64))
}

/// A stream, where to cut it, and how many threads take it.
fn stream() -> impl Strategy<Value = (Vec<Spec>, usize, usize)> {
    proptest::collection::vec(spec(), 1..60).prop_flat_map(|specs| {
        let len = specs.len();
        (Just(specs), 0..=len, 1usize..4)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_prepare_stage_holds_the_contract((specs, cut, threads) in stream()) {
        let posts: Vec<Post> = specs.iter().enumerate().map(|(index, spec)| post(index, spec)).collect();
        holds_the_contract::<Preparer>(&detector_config(1), &posts, cut, threads)?;
    }

    #[test]
    fn the_link_stage_holds_the_contract((specs, cut, threads) in stream(), shard in 0u32..3) {
        let window = detector_config(3);
        let probes: Vec<ArrivedProbe> = prepared_stream(&specs, &window)
            .iter()
            .enumerate()
            .map(|(index, (prepared, _))| ArrivedProbe {
                probe: LinkProbe::of(prepared, &window),
                arrived_at: arrival(index, prepared),
            })
            .collect();
        let config = LexicalShardConfig { shard: LinkShard::new(shard, 3).expect("a shard of three"), window };
        holds_the_contract::<LexicalShard>(&config, &probes, cut, threads)?;
    }

    #[test]
    fn the_detect_stage_holds_the_contract((specs, cut, threads) in stream(), shards in 1u32..3) {
        let config = DetectorConfig { link_shards: NonZeroU32::new(shards).expect("one or two"), ..semantic_shards_config(shards) };
        let stream = prepared_stream(&specs, &config);
        holds_the_contract::<Detector>(&config, &batch_of(&stream), cut, threads)?;
    }

    #[test]
    fn the_score_stage_holds_the_contract((specs, cut, threads) in stream()) {
        let mut detector = Detector::new(detector_config(1));
        let posts: Vec<Post> = specs.iter().enumerate().map(|(index, spec)| post(index, spec)).collect();
        let detected: Vec<_> = posts
            .into_iter()
            .filter_map(|post| {
                let signals = PostSignals::of(&post);
                detector.process(post).map(|detection| (detection, signals))
            })
            .collect();
        let scored: Vec<Scored> =
            detected.iter().map(|(detection, signals)| Scored { detection, signals }).collect();
        let config = ScorerConfig {
            rules: RuleSet::from_toml(RULES).expect("the test's rules parse"),
            score: ScoreConfig { history_secs: 1800, max_pages_per_hour: 3, max_cascades: 12, ..ScoreConfig::default() },
        };
        holds_the_contract::<Scorer>(&config, &scored, cut.min(scored.len()), threads)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The semantic window split into 2 or 3 shards links every post as one window does: the same
    /// detections, edge for edge and evidence for evidence, in batches on up to three threads.
    #[test]
    fn a_split_semantic_window_links_as_one((specs, _, threads) in stream(), shards in 2u32..4) {
        let whole = semantic_shards_config(1);
        let split = semantic_shards_config(shards);
        let stream = prepared_stream(&specs, &whole);
        let batch = batch_of(&stream);
        let expected = Detector::new(whole).process_batch(batch.clone(), 1);
        let mut detector = Detector::new(split);
        let got = detector.process_batch(batch, threads);
        prop_assert_eq!(got, expected);
    }
}
