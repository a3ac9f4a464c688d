//! The detector and the scorer restored from a snapshot go on exactly as if they had never stopped,
//! over random streams: out of order, with references to posts seen, unseen, later and themselves,
//! copies, shared links, a window short enough to evict, and restarts at random points. No input
//! order panics, and no cascade loses what it held.

mod common;

use common::{RULES, SENTENCES, Spec, post, spec};
use echotrace_core::detector::{Detection, Detector, DetectorConfig};
use echotrace_core::link::semantic::TextEmbedding;
use echotrace_core::post::Post;
use echotrace_core::score::alerts::{AlertEvent, ScoreConfig, Scorer};
use echotrace_core::score::features::PostSignals;
use echotrace_core::score::rules::RuleSet;
use echotrace_core::state::{self, Position, SnapshotError};
use proptest::prelude::*;
use std::collections::HashMap;

/// What one post produced: its detection (none for a duplicate id) and the alert events.
type Outcome = (Option<Detection>, Vec<AlertEvent>);

struct Run {
    detector: Detector,
    scorer: Scorer,
}

impl Run {
    fn new(config: &DetectorConfig) -> Run {
        Run {
            detector: Detector::new(config.clone()),
            scorer: Scorer::new(RuleSet::from_toml(RULES).unwrap(), &score_config()),
        }
    }

    fn observe(&mut self, post: Post) -> Outcome {
        let signals = PostSignals::of(&post);
        let detection = self.detector.process(post);
        let events = detection.as_ref().map(|d| self.scorer.observe(d, &signals)).unwrap_or_default();
        (detection, events)
    }

    /// Writes a snapshot, drops everything, and reads it back.
    fn restart(self, config: &DetectorConfig, offset: usize) -> Run {
        let fingerprint = state::linking_fingerprint(config, "none");
        let positions = [Position { source: "posts".into(), partition: 0, offset: offset as i64 }];
        let bytes = state::encode(fingerprint, &self.detector, self.scorer.state(), &positions).unwrap();
        drop(self);
        let snapshot = state::read(&bytes, fingerprint).unwrap();
        assert_eq!(snapshot.positions, positions);
        let mut scorer = Scorer::new(RuleSet::from_toml(RULES).unwrap(), &score_config());
        scorer.resume(snapshot.scorer);
        Run { detector: snapshot.detector, scorer }
    }
}

fn score_config() -> ScoreConfig {
    ScoreConfig { history_secs: 1800, max_pages_per_hour: 3, ..ScoreConfig::default() }
}

fn config() -> DetectorConfig {
    // Half an hour: a four-hour stream evicts many times over.
    DetectorConfig { window_secs: 1800, ..DetectorConfig::default() }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn a_restored_detector_goes_on_as_if_it_had_never_stopped(
        specs in proptest::collection::vec(spec(), 1..70),
        restarts in proptest::collection::vec(0usize..70, 0..4),
    ) {
        let config = config();
        let posts: Vec<Post> = specs.iter().enumerate().map(|(i, s)| post(i, s)).collect();
        let mut straight = Run::new(&config);
        let expected: Vec<Outcome> = posts.iter().map(|p| straight.observe(p.clone())).collect();

        let mut restarted = Run::new(&config);
        let mut got = Vec::new();
        for (index, post) in posts.iter().enumerate() {
            if restarts.contains(&index) {
                restarted = restarted.restart(&config, index);
            }
            got.push(restarted.observe(post.clone()));
        }
        if let Some(at) = (0..got.len()).find(|&i| got[i] != expected[i]) {
            prop_assert_eq!(&got[at], &expected[at], "post {} differs after restarts at {:?}", at, restarts);
        }

        // A cascade's size only grows while the graph knows it: a smaller row under the same id
        // comes only after the cascade was forgotten, its last post older than the window.
        let window_ms = config.window_secs as i64 * 1000;
        let mut watermark = i64::MIN;
        let mut last: HashMap<&str, (u64, i64)> = HashMap::new();
        for detection in got.iter().filter_map(|(detection, _)| detection.as_ref()) {
            let cascade = &detection.cascade;
            watermark = watermark.max(detection.post.created_at.timestamp_millis());
            let seen = (cascade.size, cascade.last_seen.timestamp_millis());
            if let Some((size, last_seen)) = last.insert(&cascade.cascade_id, seen) {
                prop_assert!(
                    size <= cascade.size || last_seen < watermark - window_ms,
                    "{} shrank from {} while it was live: {:?}", cascade.cascade_id, size, cascade
                );
            }
        }
    }
}

#[test]
fn a_snapshot_is_refused_when_it_is_not_this_builds_or_this_configurations_or_whole() {
    let config = config();
    let mut run = Run::new(&config);
    for (index, sentence) in SENTENCES.iter().enumerate() {
        let spec = Spec {
            offset_secs: index as i64 * 30,
            platform: 0,
            author: index,
            sentence: index,
            edit: 0,
            reference: None,
            url: None,
        };
        assert!(sentence.len() > 10);
        run.observe(post(index, &spec));
    }
    let fingerprint = state::linking_fingerprint(&config, "none");
    let bytes = state::encode(fingerprint, &run.detector, run.scorer.state(), &[]).unwrap();
    assert!(state::read(&bytes, fingerprint).is_ok());

    let other = DetectorConfig { max_hamming: 2, ..config.clone() };
    assert!(matches!(
        state::read(&bytes, state::linking_fingerprint(&other, "none")),
        Err(SnapshotError::Configuration { .. })
    ));
    assert!(matches!(state::read(b"not a snapshot at all, clearly", fingerprint), Err(SnapshotError::NotASnapshot)));
    let mut newer = bytes.clone();
    newer[8] = 99;
    assert!(matches!(state::read(&newer, fingerprint), Err(SnapshotError::Format { found: 99, .. })));
    assert!(matches!(state::read(&bytes[..bytes.len() - 1], fingerprint), Err(SnapshotError::Corrupt(_))));
    for at in [30, bytes.len() / 2, bytes.len() - 20] {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x40;
        assert!(matches!(state::read(&flipped, fingerprint), Err(SnapshotError::Corrupt(_))), "byte {at}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any bytes after a valid header, with their checksum fixed up so they reach the decoder:
    /// an error, never a panic.
    #[test]
    fn garbage_payloads_are_errors_not_panics(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
        let fingerprint: u64 = 7;
        let mut bytes = b"ETSTATE\0".to_vec();
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&fingerprint.to_le_bytes());
        bytes.extend_from_slice(&payload);
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&payload).to_le_bytes());
        prop_assert!(state::read(&bytes, fingerprint).is_err());
    }
}

#[test]
fn the_semantic_window_survives_a_snapshot() {
    let config = DetectorConfig {
        semantic: echotrace_core::link::semantic::SemanticConfig { enabled: true, ..Default::default() },
        ..config()
    };
    let embedding = |seed: usize| {
        let vectors: Vec<f32> = (0..16).map(|i| if i == seed % 16 { 1.0 } else { 0.01 * i as f32 }).collect();
        let norm = vectors.iter().map(|v| v * v).sum::<f32>().sqrt();
        TextEmbedding { vectors: vectors.iter().map(|v| v / norm).collect(), dimension: 16, tokens: 12 }
    };
    let specs: Vec<Spec> = (0..12)
        .map(|i| Spec {
            offset_secs: i as i64 * 60,
            platform: i % 4,
            author: i % 8,
            sentence: i % 6,
            edit: i % 4,
            reference: None,
            url: None,
        })
        .collect();
    let posts: Vec<Post> = specs.iter().enumerate().map(|(i, s)| post(i, s)).collect();
    let mut straight = Detector::new(config.clone());
    let expected: Vec<_> =
        posts.iter().enumerate().map(|(i, p)| straight.process_embedded(p.clone(), Some(&embedding(i)))).collect();
    let mut first = Detector::new(config.clone());
    let mut got: Vec<_> =
        posts[..6].iter().enumerate().map(|(i, p)| first.process_embedded(p.clone(), Some(&embedding(i)))).collect();
    let fingerprint = state::linking_fingerprint(&config, "test-encoder");
    let bytes = state::encode(fingerprint, &first, &Default::default(), &[]).unwrap();
    let mut second = state::read(&bytes, fingerprint).unwrap().detector;
    assert_eq!(second.semantic_window_len(), first.semantic_window_len());
    got.extend(posts[6..].iter().enumerate().map(|(i, p)| second.process_embedded(p.clone(), Some(&embedding(i + 6)))));
    assert_eq!(got, expected);
}
