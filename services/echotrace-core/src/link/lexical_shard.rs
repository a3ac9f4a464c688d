//! The link stage: the lexical window split into linking shards ([`super::shard`]), each owning
//! the near-duplicate, word-set and shared-URL indexes under its keys, apart from the graph.
//!
//! A [`LexicalShard`] reads every post of the stream in the detector's order, and for each one
//! answers what it holds under the post's keys ([`LexicalAnswer`]), then enters the post under the
//! keys it owns. It needs nothing from the graph: it keeps its own event clock over the same posts
//! and evicts by it at the detector's cutoffs, and it stores each post under a hash of its id
//! ([`super::lexical::post_key`]) rather than the graph's node key. The detector gathers one
//! answer per shard, merges them, and resolves each match's post key to a live node
//! (`detector::sharded_window`).
//!
//! With `detector.link_shards = N` the shards live in the detector's process and answer a batch
//! across threads, one shard per thread; the staged deployment runs the same [`LexicalShard`] as
//! its own consumer group (`docs/scaling.md`).

use super::lexical::{LexicalAnswer, LexicalIndexes, LinkProbe};
use super::shard::LinkShard;
use crate::clock::EventClock;
use crate::detector::{DetectorConfig, eviction_cutoff};
use crate::stage::Stage;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One linking shard of the lexical window: its indexes, and the event clock that evicts them.
#[derive(Clone, Serialize, Deserialize)]
pub struct LexicalShard {
    config: DetectorConfig,
    indexes: LexicalIndexes,
    clock: EventClock,
    evicted_to_ms: i64,
}

impl LexicalShard {
    /// An empty shard `shard` of the window `config` describes.
    pub fn new(config: &DetectorConfig, shard: LinkShard) -> LexicalShard {
        LexicalShard {
            indexes: LexicalIndexes::new(config.max_hamming, shard),
            clock: config.event_clock(),
            evicted_to_ms: i64::MIN,
            config: config.clone(),
        }
    }

    /// Fingerprints in this shard's near-duplicate tables.
    pub fn len(&self) -> usize {
        self.indexes.len()
    }

    /// Whether this shard holds no fingerprint.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What this shard holds under a post's keys now, changing nothing (to decide whether the
    /// post needs an embedding before it is answered).
    pub fn lookup(&self, probe: &LinkProbe) -> LexicalAnswer {
        self.indexes.answer(probe, &self.config)
    }

    /// Takes the next post of the stream, whose message arrived at `arrived_at`: moves event time,
    /// evicts what left the window, answers what the shard holds under the post's keys, and enters
    /// the post under the keys it owns, unless it holds it already (a duplicate delivery).
    pub fn answer(&mut self, probe: &LinkProbe, arrived_at: Option<DateTime<Utc>>) -> LexicalAnswer {
        self.clock.observe(probe.created_at_ms, arrived_at.map(|time| time.timestamp_millis()));
        if let Some(cutoff) = eviction_cutoff(&self.config, &self.clock, &mut self.evicted_to_ms) {
            self.indexes.evict_before(cutoff);
        }
        let answer = self.indexes.answer(probe, &self.config);
        if !answer.holds(probe.post_key, probe.created_at_ms) {
            self.indexes.insert(probe.post_key, probe);
        }
        answer
    }
}

/// What configures one linking shard: the window it is a shard of, and which shard.
#[derive(Debug, Clone, PartialEq)]
pub struct LexicalShardConfig {
    /// The detector's configuration, whose window the shards split.
    pub window: DetectorConfig,
    /// Which shard of `window.link_shards`.
    pub shard: LinkShard,
}

/// A post's probe for the linking shards, with when its message arrived (its Kafka timestamp;
/// `None` when read from a file), which bounds how far it moves the shard's event time.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrivedProbe {
    /// The probe.
    pub probe: LinkProbe,
    /// When its message arrived.
    pub arrived_at: Option<DateTime<Utc>>,
}

/// What a linking shard counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LexicalShardStats {
    /// Fingerprints in its near-duplicate tables: the posts of its window.
    pub fingerprints: usize,
}

impl Stage for LexicalShard {
    type Config = LexicalShardConfig;
    type Input<'a> = ArrivedProbe;
    type Output = LexicalAnswer;
    type State = LexicalShard;
    type Metrics = LexicalShardStats;

    fn empty(config: &LexicalShardConfig) -> LexicalShard {
        LexicalShard::new(&config.window, config.shard)
    }

    /// A shard answers its posts one after the other, each against what the ones before it
    /// entered: `threads` is not used (the shards of one process run side by side instead).
    fn process(&mut self, batch: Vec<ArrivedProbe>, _threads: usize) -> Vec<LexicalAnswer> {
        batch.iter().map(|post| self.answer(&post.probe, post.arrived_at)).collect()
    }

    fn state(&self) -> &LexicalShard {
        self
    }

    fn restore(_: &LexicalShardConfig, state: LexicalShard) -> LexicalShard {
        state
    }

    fn metrics(&self) -> LexicalShardStats {
        LexicalShardStats { fingerprints: self.len() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::post::Post;
    use crate::prepare::Preparer;

    /// The probe of a post of fourteen words sharing one URL, in a window of two shards.
    fn probe_and_config() -> (LinkProbe, DetectorConfig) {
        let config = DetectorConfig { link_shards: std::num::NonZeroU32::new(2).unwrap(), ..DetectorConfig::default() };
        let words: Vec<String> = (0..14).map(|w| format!("s0w{w}")).collect();
        let json = format!(
            r#"{{"id":"p:0","platform":"p0","author":{{"id":"a0","handle":"h0"}},"created_at":"2026-11-01T09:00:00Z","text":"{}","urls":["https://example.org/0"]}}"#,
            words.join(" ")
        );
        let post = Post::from_json(json.as_bytes()).unwrap();
        (LinkProbe::of(&Preparer::new(&config).prepare(post), &config), config)
    }

    #[test]
    fn a_shard_enters_a_redelivered_post_once() {
        let (probe, config) = probe_and_config();
        let mut shards: Vec<LexicalShard> = LinkShard::all(2).map(|shard| LexicalShard::new(&config, shard)).collect();
        let first: Vec<LexicalAnswer> = shards.iter_mut().map(|shard| shard.answer(&probe, None)).collect();
        assert!(first.iter().all(|answer| *answer == LexicalAnswer::default()), "nothing before it");
        let held: Vec<usize> = shards.iter().map(LexicalShard::len).collect();
        let again: Vec<LexicalAnswer> = shards.iter_mut().map(|shard| shard.answer(&probe, None)).collect();
        assert!(again.iter().any(|answer| answer.holds(probe.post_key, probe.created_at_ms)), "it finds itself");
        for answer in again {
            let bytes = postcard::to_allocvec(&answer).unwrap();
            assert_eq!(
                postcard::from_bytes::<LexicalAnswer>(&bytes).unwrap(),
                answer,
                "an answer goes on the wire whole"
            );
        }
        assert_eq!(shards.iter().map(LexicalShard::len).collect::<Vec<_>>(), held, "and is not entered again");
    }

    #[test]
    fn a_probe_is_a_small_part_of_the_prepared_post() {
        let (probe, _) = probe_and_config();
        assert!(probe.signature.is_some() && probe.url_keys.len() == 1);
        let bytes = postcard::to_allocvec(&probe).unwrap();
        assert!(bytes.len() <= 135, "{} bytes", bytes.len());
        assert_eq!(postcard::from_bytes::<LinkProbe>(&bytes).unwrap(), probe);
    }
}
