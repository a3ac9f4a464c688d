//! The shape every stage of the pipeline shares: [`Stage`].
//!
//! A stage is configured by one type, takes a batch of records in and gives one output per
//! record, keeps its state in one value that a snapshot holds and a restart restores, and counts
//! what it did in one metrics value. The four stages, and where each lives:
//!
//! | stage (its folder) | type | configured by | one record in | one record out | state | metrics |
//! |---|---|---|---|---|---|---|
//! | prepare ([`crate::prepare`]) | [`Preparer`] | [`DetectorConfig`] | [`Post`] | [`PreparedPost`] | none | none |
//! | link ([`crate::link`]) | [`LexicalShard`] | [`LexicalShardConfig`] | [`ArrivedProbe`] | [`LexicalAnswer`] | the shard | [`LexicalShardStats`] |
//! | detect ([`crate::detector`]) | [`Detector`] | [`DetectorConfig`] | [`BatchPost`] | `Option<`[`Detection`]`>` | the detector | [`DetectorMetrics`] |
//! | score ([`crate::score`]) | [`Scorer`] | [`ScorerConfig`] | [`Scored`] | `Vec<`[`AlertEvent`]`>` | [`ScorerState`] | [`ScorerStats`] |
//!
//! Each stage's folder holds its code, its types and its `impl Stage`; what two stages share
//! (the input contract [`crate::post`], the output rows [`crate::records`], event time
//! [`crate::clock`]) lives beside them.
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

#[cfg(doc)]
use crate::{
    detector::{BatchPost, Detection, Detector, DetectorConfig, DetectorMetrics},
    link::lexical::LexicalAnswer,
    link::lexical_shard::{ArrivedProbe, LexicalShard, LexicalShardConfig, LexicalShardStats},
    post::Post,
    prepare::{PreparedPost, Preparer},
    score::alerts::{AlertEvent, Scorer, ScorerState},
    score::{Scored, ScorerConfig, ScorerStats},
};
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
