//! The shape every stage of the pipeline shares: [`Stage`].
//!
//! A stage is configured by one type, takes a batch of records in and gives one output per
//! record, keeps its state in one value that a snapshot holds and a restart restores, and counts
//! what it did in one metrics value. The four stages, and where each lives:
//!
//! | stage | type | configured by | one record in | one record out | state | metrics |
//! |---|---|---|---|---|---|---|
//! | prepare ([`crate::prepare`]) | [`Preparer`] | [`DetectorConfig`] | [`Post`] | [`PreparedPost`] | none | none |
//! | link ([`crate::detector`]'s `shard.rs`) | [`LexicalShard`] | [`LexicalShardConfig`] | [`ArrivedProbe`] | [`LexicalAnswer`] | the shard | [`LexicalShardStats`] |
//! | detect ([`crate::detector`]) | [`Detector`] | [`DetectorConfig`] | [`BatchPost`] | `Option<`[`Detection`]`>` | the detector | [`DetectorMetrics`] |
//! | score ([`crate::score`]) | [`Scorer`] | [`ScorerConfig`] | [`Scored`] | `Vec<`[`AlertEvent`]`>` | [`ScorerState`] | [`ScorerStats`] |
//!
//! Every mode runs the same stage code: `replay`, `demo` and `whole` call them in one process,
//! the staged deployment runs prepare, link and detect as consumer groups connected by topics
//! (`services/echotrace/src/stages/`). What the services add around a stage is I/O: decoding,
//! Kafka, Parquet, the snapshot file ([`crate::state`]) and the Prometheus registry.
//!
//! **The contract** (held for every stage by `tests/stages.rs` over random streams): one output
//! per record, in order; the same outputs and metrics however the stream is cut into batches and
//! however many threads process it; and a stage restored from its state, serialized and read
//! back, goes on exactly as the stage that wrote it would have.

use crate::detector::{
    BatchPost, Detection, Detector, DetectorConfig, DetectorStats, LexicalAnswer, LexicalShard, LinkProbe,
};
use crate::link::shard::LinkShard;
use crate::post::Post;
use crate::prepare::{PreparedPost, Preparer};
use crate::score::alerts::{AlertEvent, ScoreConfig, Scorer, ScorerState};
use crate::score::features::PostSignals;
use crate::score::rules::RuleSet;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// One stage of the pipeline ([module docs](self)).
pub trait Stage: Sized {
    /// What configures the stage.
    type Config;
    /// One record in.
    type Input<'a>;
    /// What one record gives.
    type Output;
    /// Everything the stage remembers between records: what a snapshot holds.
    type State: Serialize + DeserializeOwned;
    /// What the stage has counted, for its metrics.
    type Metrics;

    /// The stage as it starts, remembering nothing.
    fn empty(config: &Self::Config) -> Self;

    /// Takes a batch of records in order and gives one output per record, in order, using at most
    /// `threads` threads: neither the batch's bounds nor the threads change the outputs.
    fn process(&mut self, batch: Vec<Self::Input<'_>>, threads: usize) -> Vec<Self::Output>;

    /// Its state, for a snapshot.
    fn state(&self) -> &Self::State;

    /// The stage going on from `state` (a snapshot's) under `config`. A state that carries the
    /// linking configuration it was written under is checked against it before
    /// ([`crate::state::read`] refuses another).
    fn restore(config: &Self::Config, state: Self::State) -> Self;

    /// What it has counted so far.
    fn metrics(&self) -> Self::Metrics;
}

impl Stage for Preparer {
    type Config = DetectorConfig;
    type Input<'a> = Post;
    type Output = PreparedPost;
    type State = ();
    type Metrics = ();

    fn empty(config: &DetectorConfig) -> Preparer {
        Preparer::new(config)
    }

    fn process(&mut self, batch: Vec<Post>, threads: usize) -> Vec<PreparedPost> {
        self.prepare_all(batch, threads)
    }

    fn state(&self) -> &() {
        &()
    }

    fn restore(config: &DetectorConfig, _: ()) -> Preparer {
        Preparer::new(config)
    }

    fn metrics(&self) {}
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

/// What the detector counts, with the sizes of what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectorMetrics {
    /// Its counters.
    pub stats: DetectorStats,
    /// Posts in the lexical window ([`Detector::window_len`]).
    pub window_posts: usize,
    /// Embedded posts in the semantic window.
    pub semantic_window_posts: usize,
    /// Cascades in the graph.
    pub cascades_live: usize,
}

impl Stage for Detector {
    type Config = DetectorConfig;
    type Input<'a> = BatchPost<'a>;
    type Output = Option<Detection>;
    type State = Detector;
    type Metrics = DetectorMetrics;

    fn empty(config: &DetectorConfig) -> Detector {
        Detector::new(config.clone())
    }

    /// [`Detector::process_batch`]: `None` for a post whose id was processed already.
    fn process(&mut self, batch: Vec<BatchPost<'_>>, threads: usize) -> Vec<Option<Detection>> {
        self.process_batch(batch, threads)
    }

    fn state(&self) -> &Detector {
        self
    }

    fn restore(_: &DetectorConfig, state: Detector) -> Detector {
        state
    }

    fn metrics(&self) -> DetectorMetrics {
        DetectorMetrics {
            stats: self.stats(),
            window_posts: self.window_len(),
            semantic_window_posts: self.semantic_window_len(),
            cascades_live: self.graph().cascade_count(),
        }
    }
}

/// What configures the scorer: its rules and its windows and bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct ScorerConfig {
    /// The rules in force.
    pub rules: RuleSet,
    /// Windows, bounds and the paging limit.
    pub score: ScoreConfig,
}

/// One detection for the scorer, with the signals of its post ([`PostSignals::of`]).
#[derive(Debug, Clone, Copy)]
pub struct Scored<'a> {
    /// What the detector made of the post.
    pub detection: &'a Detection,
    /// What the post says of its author.
    pub signals: &'a PostSignals,
}

/// What the scorer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScorerStats {
    /// Cascades forgotten before their history ran out because the scorer kept its most.
    pub forgotten_early: u64,
    /// Cascades whose activity is kept.
    pub tracked_cascades: usize,
}

impl Stage for Scorer {
    type Config = ScorerConfig;
    type Input<'a> = Scored<'a>;
    type Output = Vec<AlertEvent>;
    type State = ScorerState;
    type Metrics = ScorerStats;

    fn empty(config: &ScorerConfig) -> Scorer {
        Scorer::new(config.rules.clone(), &config.score)
    }

    /// [`Scorer::observe`] for each detection in order; the scorer's clock and sweeps run on
    /// event time, so `threads` is not used.
    fn process(&mut self, batch: Vec<Scored<'_>>, _threads: usize) -> Vec<Vec<AlertEvent>> {
        batch.into_iter().map(|scored| self.observe(scored.detection, scored.signals)).collect()
    }

    fn state(&self) -> &ScorerState {
        Scorer::state(self)
    }

    fn restore(config: &ScorerConfig, state: ScorerState) -> Scorer {
        let mut scorer = Scorer::new(config.rules.clone(), &config.score);
        scorer.resume(state);
        scorer
    }

    fn metrics(&self) -> ScorerStats {
        ScorerStats { forgotten_early: self.forgotten_early(), tracked_cascades: self.tracked_cascades() }
    }
}
